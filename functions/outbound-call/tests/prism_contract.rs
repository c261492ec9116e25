//! Contract test: the requests the function sends are judged by Prism serving Twilio's own
//! OpenAPI document (`twilio_api_v2010.json` from `@twilio-alpha/mcp`), which answers 422 to
//! anything off-spec and 401 to a request without Basic auth.

mod common;

use std::time::Duration;

use common::SID;
use outbound_call::handler::{App, handle};
use twilio_voice::calls::{Deadline, HttpTimeouts, RetryPolicy};

#[tokio::test]
#[ignore = "needs Prism (make test runs it)"]
async fn every_sample_event_is_accepted_by_twilios_published_schema() {
    let prism = test_support::prism_twilio();
    let ssm = test_support::ssm_with(common::CREDENTIALS);
    let base = prism.url();
    let config = common::config(&base, &[]);
    let timeouts = HttpTimeouts {
        connect: Duration::from_secs(2),
        total: Duration::from_secs(20),
    };
    let app = App::init_with(config, ssm, timeouts, RetryPolicy::default())
        .await
        .unwrap();

    for name in [
        "outbound-call-url.json",
        "outbound-call-twiml.json",
        "outbound-call-say-ja.json",
        "outbound-call-schedule.json",
    ] {
        let out = handle(test_support::event(name), &app, Deadline::NONE)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            out["call_sid"].as_str().unwrap().starts_with("CA"),
            "{name}: {out}"
        );
    }
    let http = handle(
        test_support::event("outbound-call-http-api.json"),
        &app,
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(http["statusCode"], 201, "{http}");

    // The stand-in does refuse what breaks the schema: the test above could fail.
    let client = reqwest::Client::new();
    let url = format!("{base}/2010-04-01/Accounts/{SID}/Calls.json");
    let missing_to = client
        .post(&url)
        .basic_auth(SID, Some("t"))
        .form(&[("From", "+15005550006"), ("Url", "https://e.com/x")])
        .send()
        .await
        .unwrap();
    assert_eq!(missing_to.status(), 422);
    let bad_method = client
        .post(&url)
        .basic_auth(SID, Some("t"))
        .form(&[
            ("To", "+81312345678"),
            ("From", "+15005550006"),
            ("Url", "https://e.com/x"),
            ("StatusCallbackMethod", "PATCH"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad_method.status(), 422);
    let no_auth = client
        .post(&url)
        .form(&[
            ("To", "+81312345678"),
            ("From", "+15005550006"),
            ("Url", "https://e.com/x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(no_auth.status(), 401);
}

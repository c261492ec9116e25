//! The Calls-list walk behind the stale-claim lookup, against wiremock: it follows Twilio's
//! `next_page_uri` within its bound, says when the bound cut it short, and never sends the
//! credentials anywhere but Twilio's own list.

use std::time::{Duration, SystemTime};

use serde_json::json;
use twilio_voice::calls::{CallsClient, HttpTimeouts, RetryPolicy};
use twilio_voice::credentials::{ApiCredentials, Secret};
use twilio_voice::phone::PhoneNumber;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const LIST: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json";

fn creds() -> ApiCredentials {
    ApiCredentials {
        account_sid: ACCOUNT.into(),
        username: ACCOUNT.into(),
        password: Secret::new("token"),
    }
}

fn client(twilio: &MockServer) -> CallsClient {
    let timeouts = HttpTimeouts {
        connect: Duration::from_secs(1),
        total: Duration::from_secs(2),
    };
    CallsClient::new(&twilio.uri(), timeouts, RetryPolicy::default()).unwrap()
}

/// A page with one call created now, pointing at `next`.
fn page(sid: &str, next: Option<String>) -> ResponseTemplate {
    let now = aws_smithy_types::DateTime::from(SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::HttpDate)
        .unwrap()
        .replace(" GMT", " +0000");
    ResponseTemplate::new(200).set_body_json(json!({
        "calls": [{"sid": sid, "status": "queued", "date_created": now}],
        "next_page_uri": next,
    }))
}

#[tokio::test]
async fn the_walk_stops_at_its_bound_and_says_so() {
    let twilio = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(page(
            "CA1",
            Some(format!("{LIST}?To=x&Page=1&PageToken=PA")),
        ))
        .mount(&twilio)
        .await;
    let to = PhoneNumber::parse("+81312345678").unwrap();
    let since = SystemTime::now() - Duration::from_secs(300);
    let found = client(&twilio)
        .calls_since(&creds(), &to, since, 3)
        .await
        .unwrap();
    assert_eq!(found.calls.len(), 3);
    assert!(!found.complete, "more pages were left");
    assert_eq!(twilio.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_next_page_elsewhere_is_not_followed() {
    let twilio = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(LIST))
        .respond_with(page(
            "CA1",
            Some("/2010-04-01/Accounts/ACother/Calls.json?x=1".into()),
        ))
        .mount(&twilio)
        .await;
    let to = PhoneNumber::parse("+81312345678").unwrap();
    let found = client(&twilio)
        .calls_since(&creds(), &to, SystemTime::now(), 3)
        .await
        .unwrap();
    assert_eq!(found.calls.len(), 1);
    assert!(!found.complete, "the rest of the list is unknown");
    assert_eq!(twilio.received_requests().await.unwrap().len(), 1);
}

/// One call's resource, read (`status`) and cancelled (`cancel`): a call Twilio does not know
/// (404) is `None`, not an error, so that an expiry message for it is done with; any other
/// refusal is an error, so that it is tried again.
#[tokio::test]
async fn one_call_is_read_and_cancelled_and_an_unknown_one_is_none() {
    const SID: &str = "CA0123456789abcdef0123456789abcdef";
    const GONE: &str = "CAffffffffffffffffffffffffffffffff";
    let call = |sid: &str| format!("/2010-04-01/Accounts/{ACCOUNT}/Calls/{sid}.json");
    let twilio = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(call(SID)))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"sid": SID, "status": "ringing"})),
        )
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path(call(SID)))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"sid": SID, "status": "canceled"})),
        )
        .mount(&twilio)
        .await;
    Mock::given(path(call(GONE)))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"code": 20404, "message": "not found"})),
        )
        .mount(&twilio)
        .await;
    let c = client(&twilio);
    assert_eq!(
        c.status(&creds(), SID).await.unwrap().as_deref(),
        Some("ringing")
    );
    assert_eq!(
        c.cancel(&creds(), SID).await.unwrap().as_deref(),
        Some("canceled")
    );
    assert_eq!(c.status(&creds(), GONE).await.unwrap(), None);
    assert_eq!(c.cancel(&creds(), GONE).await.unwrap(), None);
    // Not a SID: nothing is sent.
    assert!(c.status(&creds(), "../Calls").await.is_err());
    let sent = twilio.received_requests().await.unwrap();
    assert_eq!(sent.len(), 4);
    let form = String::from_utf8(sent[1].body.clone()).unwrap();
    assert_eq!(form, "Status=canceled");
}

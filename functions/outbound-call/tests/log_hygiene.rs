//! Every log line outbound-call writes, through success, refusals and every Twilio failure, at
//! DEBUG (more than Lambda's default INFO): no secret, no unmasked phone number.

mod common;

use outbound_call::handler::{App, handle};
use serde_json::json;
use test_support::LogCapture;
use twilio_voice::calls::Deadline;
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "s3cr3t-auth-token-value";
const KEY_SECRET: &str = "api-key-s3cr3t-value";

async fn app(server: &MockServer, api_key: bool) -> App {
    let key: &[(&str, &str)] = if api_key {
        &[
            ("TWILIO_API_KEY_SID_PARAMETER", "/key"),
            ("TWILIO_API_KEY_SECRET_PARAMETER", "/key-secret"),
        ]
    } else {
        &[]
    };
    let config = common::config(&server.uri(), key);
    let ssm = test_support::ssm_with(&[
        ("/twilio/account-sid", common::SID),
        ("/twilio/auth-token", SECRET),
        ("/key", "SK0123456789abcdef0123456789abcdef"),
        ("/key-secret", KEY_SECRET),
    ]);
    App::init(config, ssm).await.unwrap()
}

fn twilio_error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"code": code, "message": message, "status": status}))
}

#[tokio::test]
async fn no_secret_or_phone_number_reaches_the_logs() {
    let (capture, _guard) = LogCapture::install(tracing::Level::DEBUG);

    let server = MockServer::start().await;
    let created = ResponseTemplate::new(201)
        .set_body_json(json!({"sid": "CA0123456789abcdef0123456789abcdef", "status": "queued"}));
    Mock::given(method("POST"))
        .and(body_string_contains("To=%2B81312345678"))
        .respond_with(created)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("To=%2B14155550100"))
        .respond_with(twilio_error(
            400,
            21211,
            "The 'To' number +14155550100 is not a valid phone number.",
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("To=%2B14155550101"))
        .respond_with(twilio_error(
            401,
            20003,
            "Authentication Error - invalid username",
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("To=%2B14155550102"))
        .respond_with(twilio_error(
            500,
            20500,
            "Internal error calling +14155550102",
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_string_contains("To=%2B14155550103"))
        .respond_with(twilio_error(
            429,
            20429,
            "Too many requests for +14155550103",
        ))
        .mount(&server)
        .await;

    for api_key in [false, true] {
        let app = app(&server, api_key).await;
        let events = [
            json!({"to": "+81312345678", "say": {"text": "テスト", "language": "ja-JP"}}),
            json!({"to": "+14155550100", "say": "x"}),
            json!({"to": "+14155550101", "say": "x"}),
            json!({"to": "+14155550102", "say": "x"}),
            json!({"to": "+14155550103", "say": "x"}),
            json!({"to": "+442071838750", "say": "x"}),
            json!({"to": "+81 90 9876 5432", "say": "x"}),
            json!({"to": "+81312345678", "from": "+15557654321x", "say": "x"}),
        ];
        for event in events {
            let _ = handle(event, &app, Deadline::NONE).await;
        }
        let mut http: serde_json::Value = test_support::event("outbound-call-http-api.json");
        let _ = handle(http.clone(), &app, Deadline::NONE).await;
        http["body"] = json!(r#"{"to": "+442071838751", "say": "x"}"#);
        let _ = handle(http, &app, Deadline::NONE).await;
    }

    let lines = capture.assert_clean(&[
        SECRET,
        KEY_SECRET,
        "1312345678",
        "4155550100",
        "4155550101",
        "4155550102",
        "4155550103",
        "2071838750",
        "2071838751",
        "90 9876 5432",
        "5557654321",
        "Authorization",
        "Basic ",
    ]);
    let text = capture.text();
    assert!(lines > 20, "the scenarios logged ({lines} lines)");
    assert!(
        text.contains("call placed") && text.contains("CA0123456789abcdef0123456789abcdef"),
        "{text}"
    );
    assert!(
        text.contains("to=+81*******78") && text.contains("to=+14*******00"),
        "masked numbers are logged: {text}"
    );
    assert!(text.contains("outcome unknown"), "{text}");
}

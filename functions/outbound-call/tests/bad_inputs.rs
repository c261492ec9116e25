//! The outbound bad-input table, for every way in (direct invoke and HTTP API): one row per
//! bad *event* (its shape, types, numbers, instructions, the `say` rules), plus one row for each
//! lower layer's refusal to show it reaches the caller as `NonRetryable.InvalidEvent`. Each row
//! gets its clear error with no phone number unmasked, and not one request reaches the Twilio
//! stand-in. The lower layers keep their own tables: bad call specs (Twilio's limits) in
//! `twilio_voice::calls`, toll-fraud TwiML in `twilio_voice::twiml::inspect`. Twilio and SSM
//! faults are in faults.rs.

mod common;

use outbound_call::handler::{App, handle};
use serde_json::{Value, json};
use twilio_voice::calls::Deadline;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const TO: &str = "+81312345678";
/// The digits of every number in the rows: none may appear unmasked in an error.
const NUMBER_DIGITS: &[&str] = &["1312345678", "2071838750", "1631234567", "882130000000"];

/// (what is wrong, the event, a phrase the error must contain)
fn rows() -> Vec<(&'static str, Value, &'static str)> {
    let say = json!("テスト");
    vec![
        (
            "full-width plus",
            json!({"to": "＋81312345678", "say": say}),
            "E.164",
        ),
        (
            "Arabic-Indic digits",
            json!({"to": "+٨١٣١٢٣٤٥٦٧٨", "say": say}),
            "E.164",
        ),
        (
            "full-width digits",
            json!({"to": "+８１３１２３４５６７８", "say": say}),
            "E.164",
        ),
        (
            "spaces",
            json!({"to": "+81 3 1234 5678", "say": say}),
            "E.164",
        ),
        (
            "dashes",
            json!({"to": "+81-3-1234-5678", "say": say}),
            "E.164",
        ),
        (
            "sip: URI",
            json!({"to": "sip:alice@example.com", "say": say}),
            "E.164",
        ),
        (
            "client: identity",
            json!({"to": "client:alice", "say": say}),
            "E.164",
        ),
        ("no plus", json!({"to": "81312345678", "say": say}), "E.164"),
        (
            "leading zero",
            json!({"to": "+081312345678", "say": say}),
            "E.164",
        ),
        (
            "16 digits",
            json!({"to": "+8131234567890123", "say": say}),
            "E.164",
        ),
        ("1 digit", json!({"to": "+8", "say": say}), "E.164"),
        ("empty to", json!({"to": "", "say": say}), "E.164"),
        (
            "trailing newline",
            json!({"to": "+81312345678\n", "say": say}),
            "E.164",
        ),
        (
            "outside the allow-list (+44)",
            json!({"to": "+442071838750", "say": say}),
            "allowed prefixes",
        ),
        (
            "premium satellite range",
            json!({"to": "+881631234567", "say": say}),
            "allowed prefixes",
        ),
        (
            "to as a number",
            json!({"to": 81312345678_u64, "say": say}),
            "invalid type",
        ),
        ("to missing", json!({"say": say}), "missing field `to`"),
        (
            "bad from",
            json!({"to": TO, "from": "anonymous", "say": say}),
            "from",
        ),
        ("no instructions", json!({"to": TO}), "exactly one"),
        (
            "twiml and url",
            json!({"to": TO, "twiml": "<Response/>", "url": "https://e.com/x"}),
            "exactly one",
        ),
        (
            "say and twiml",
            json!({"to": TO, "twiml": "<Response/>", "say": say}),
            "exactly one",
        ),
        (
            "say rendering over 4000 characters",
            json!({"to": TO, "say": "あ".repeat(3990)}),
            "4000",
        ),
        (
            "a 1 MB twiml",
            json!({"to": TO, "twiml": "a".repeat(1 << 20)}),
            "4000",
        ),
        (
            "comma-joined callback events",
            json!({"to": TO, "say": say, "status_callback_events": ["initiated,completed"]}),
            "unknown variant",
        ),
        (
            "unknown callback event",
            json!({"to": TO, "say": say, "status_callback_events": ["busy"]}),
            "unknown variant",
        ),
        (
            "callback events as a string",
            json!({"to": TO, "say": say, "status_callback_events": "completed"}),
            "invalid type",
        ),
        (
            "negative timeout",
            json!({"to": TO, "say": say, "timeout": -1}),
            "invalid value",
        ),
        (
            "time limit over 4 hours",
            json!({"to": TO, "say": say, "time_limit": 14401}),
            "time_limit",
        ),
        (
            "machine detection value",
            json!({"to": TO, "say": say, "machine_detection": "Maybe"}),
            "unknown variant",
        ),
        (
            "record as a string",
            json!({"to": TO, "say": say, "record": "yes"}),
            "invalid type",
        ),
        (
            "unknown field",
            json!({"to": TO, "say": say, "priority": "high"}),
            "unknown field",
        ),
        ("empty say", json!({"to": TO, "say": " "}), "empty"),
        (
            "say with an unknown field",
            json!({"to": TO, "say": {"text": "x", "speed": 2}}),
            "did not match",
        ),
        (
            "empty caller_id",
            json!({"to": TO, "say": say, "caller_id": " "}),
            "caller_id",
        ),
        ("an array", json!([{"to": TO, "say": say}]), "invalid type"),
        (
            "from as a number",
            json!({"to": TO, "from": 81312345678_u64, "say": say}),
            "invalid type",
        ),
        (
            "caller_id not E.164",
            json!({"to": TO, "say": say, "caller_id": "client:alice"}),
            "caller_id",
        ),
        (
            "say loop 0 (forever)",
            json!({"to": TO, "say": {"text": "x", "loop": 0}}),
            "say.loop",
        ),
        (
            "say loop 11",
            json!({"to": TO, "say": {"text": "x", "loop": 11}}),
            "say.loop",
        ),
        (
            "machine detection given a number",
            json!({"to": TO, "say": say, "machine_detection": "+81312345678"}),
            "unknown variant",
        ),
        // One row per lower layer: its refusal becomes InvalidEvent, nothing sent.
        (
            "calls: TwiML dials a premium range",
            json!({"to": TO, "twiml": "<Response><Dial>+882130000000</Dial></Response>"}),
            "allowed prefixes",
        ),
        (
            "calls: url outside ALLOWED_TWIML_URL_PREFIXES",
            json!({"to": TO, "url": "https://evil.example/twiml"}),
            "ALLOWED_TWIML_URL_PREFIXES",
        ),
        ("null", Value::Null, "invalid type"),
    ]
}

async fn app(server: &MockServer) -> App {
    let config = common::config(&server.uri(), &[]);
    App::init(config, test_support::ssm_with(common::CREDENTIALS))
        .await
        .unwrap()
}

fn assert_masked(what: &str, message: &str) {
    for digits in NUMBER_DIGITS {
        assert!(
            !message.contains(digits),
            "{what}: a number leaks: {message}"
        );
    }
}

async fn posts(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count()
}

#[tokio::test]
async fn every_bad_event_is_refused_and_nothing_is_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let app = app(&server).await;
    let rows = rows();
    assert!(rows.len() >= 40, "{} rows", rows.len());
    for (what, event, phrase) in rows {
        let err = handle(event, &app, Deadline::NONE).await.expect_err(what);
        assert_eq!(
            err.error_type(),
            "NonRetryable.InvalidEvent",
            "{what}: {err}"
        );
        assert!(err.to_string().contains(phrase), "{what}: {err}");
        assert_masked(what, &err.to_string());
    }
    assert_eq!(posts(&server).await, 0, "no request reached Twilio");
}

#[tokio::test]
async fn bad_http_api_bodies_get_400_and_nothing_is_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let app = app(&server).await;
    let base = || -> Value { test_support::event("outbound-call-http-api.json") };
    let mut cases: Vec<(&str, Value)> = Vec::new();
    for (what, event, _) in rows() {
        let mut e = base();
        e["body"] = json!(event.to_string());
        cases.push((what, e));
    }
    let mut not_base64 = base();
    not_base64["isBase64Encoded"] = json!(true);
    not_base64["body"] = json!("%%% not base64 %%%");
    cases.push(("body not base64", not_base64));
    let mut not_json = base();
    not_json["body"] = json!("to=+81312345678&say=hi");
    cases.push(("form body", not_json));
    let mut empty = base();
    empty["body"] = Value::Null;
    cases.push(("no body", empty));
    let mut truncated = base();
    truncated["body"] = json!(r#"{"to": "+8131234"#);
    cases.push(("truncated JSON", truncated));
    let mut oversized = base();
    let padding = " ".repeat(outbound_call::handler::MAX_EVENT_BYTES);
    oversized["body"] = json!(format!(r#"{{"to": "+81312345678", "say": "hi"{padding}}}"#));
    cases.push(("body over the size limit", oversized));

    for (what, event) in cases {
        let out = handle(event, &app, Deadline::NONE).await.unwrap();
        assert_eq!(out["statusCode"], 400, "{what}: {out}");
        let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["error"]["type"], "NonRetryable.InvalidEvent", "{what}");
        assert_eq!(body["error"]["retry"], "pointless", "{what}");
        assert_eq!(body["error"]["retry_safe"], true, "{what}");
        assert_masked(what, out["body"].as_str().unwrap());
    }
    assert_eq!(posts(&server).await, 0, "no request reached Twilio");
}

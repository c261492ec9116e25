//! Status callbacks and voicemails through signed webhooks, with the call ledger and the event
//! bus on moto_server: the ledger keeps the newest callback, `Call Completed` is published once
//! at the final status, a voicemail once per recording.

use std::borrow::Cow;

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use incoming_call::config::Config;
use incoming_call::webhook::{App, handle};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use serde_json::json;
use twilio_voice::credentials::AuthToken;
use twilio_voice::ledger::{CallStatus, Ledger};
use twilio_voice::signature;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const HOST: &str = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.ap-northeast-1.on.aws";
const SID: &str = "CA0123456789abcdef0123456789abcdef";

/// A webhook Twilio signed for `path_and_query` with `params`.
fn webhook(path_and_query: &str, params: &[(&str, &str)]) -> ApiGatewayV2httpRequest {
    test_support::signed_webhook(&format!("{HOST}{path_and_query}"), params, TOKEN)
}

struct Stack {
    app: App,
    inbox: test_support::EventInbox,
    _moto: test_support::StandIn,
}

async fn stack() -> Stack {
    let moto = test_support::moto_server();
    let aws = test_support::aws_config(&moto.url());
    test_support::create_ledger_table(&twilio_voice::aws::dynamodb(&aws), "ledger").await;
    let inbox = test_support::EventInbox::subscribe(&aws, "default").await;
    let config = Config::from_lookup(test_support::vars(&[
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/token"),
        (
            "CALL_FLOW",
            r#"{"greeting": "お電話ありがとうございます。", "then": {"voicemail": {}}}"#,
        ),
        ("CALL_LEDGER_TABLE", "ledger"),
        ("EVENT_BUS_NAME", "default"),
    ]))
    .unwrap();
    let app = App::init(config.clone(), test_support::ssm_with(&[("/token", TOKEN)]))
        .await
        .unwrap()
        .with_outcomes(&config, &aws);
    Stack {
        app,
        inbox,
        _moto: moto,
    }
}

fn callback<'a>(status: &'a str, seq: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CallSid", SID),
        ("CallStatus", status),
        ("SequenceNumber", seq),
        ("From", "+81312345678"),
        ("To", "+81501234567"),
    ]
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn status_callbacks_out_of_order_end_completed_and_announce_it_once() {
    let s = stack().await;
    let mut completed = callback("completed", "3");
    completed.extend([("CallDuration", "42"), ("AnsweredBy", "human")]);
    for params in [
        completed.clone(),
        callback("ringing", "1"),
        callback("in-progress", "2"),
        completed,
        callback("initiated", "0"),
    ] {
        let response = handle(webhook("/status", &params), &s.app).await;
        assert_eq!(response.status_code, 204, "{params:?}");
    }
    let events = s.inbox.take().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail-type"], "Call Completed");
    assert_eq!(
        events[0]["detail"],
        json!({"call_sid": SID, "outcome": "completed", "answered_by": "human", "duration_seconds": 42})
    );
    let ledger = s.app.outcomes.as_ref().unwrap().ledger.clone();
    let call = ledger.call(SID).await.unwrap().unwrap();
    assert_eq!(call.call_status, Some(CallStatus::Completed));
    assert_eq!(call.sequence_number, Some(3));
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_voicemail_webhook_publishes_exactly_one_voicemail_recorded() {
    let s = stack().await;
    let recording = [
        ("CallSid", SID),
        ("From", "+81312345678"),
        ("To", "+81501234567"),
        (
            "RecordingUrl",
            "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/RE0123456789abcdef0123456789abcdef",
        ),
        ("RecordingSid", "RE0123456789abcdef0123456789abcdef"),
        ("RecordingDuration", "17"),
    ];
    for _ in 0..2 {
        let response = handle(webhook("/voicemail?at=0m", &recording), &s.app).await;
        assert_eq!(response.status_code, 200);
    }
    let events = s.inbox.take().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail-type"], "Voicemail Recorded");
    assert_eq!(events[0]["detail"]["caller"], "+81312345678");
    assert_eq!(
        events[0]["detail"]["recording_sid"],
        "RE0123456789abcdef0123456789abcdef"
    );
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_status_callback_the_ledger_cannot_take_gets_503() {
    let mut s = stack().await;
    let throttled = mock!(aws_sdk_dynamodb::Client::update_item).then_error(|| {
        UpdateItemError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder().build(),
        )
    });
    let outcomes = s.app.outcomes.as_mut().unwrap();
    outcomes.ledger = Ledger::new(
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&throttled]),
        "ledger",
    );
    let response = handle(webhook("/status", &callback("completed", "3")), &s.app).await;
    assert_eq!(response.status_code, 503);
    // A malformed one is taken (204): sending it again would not mend it.
    let response = handle(webhook("/status", &callback("answered", "3")), &s.app).await;
    assert_eq!(response.status_code, 204);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_callers_own_status_callback_gets_each_callback_signed_for_it() {
    use twilio_voice::signature::Payload;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let s = stack().await;
    let theirs = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/their-status"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&theirs)
        .await;
    let target = format!("{}/their-status", theirs.uri());
    // As outbound-call builds it: ours, the caller's URL in the signed query.
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("forward", &target)
        .finish();
    let mut params = callback("completed", "3");
    params.push(("CallDuration", "42"));
    // INIT leaves the forwarding client unbuilt (it reads the system trust store): the first
    // forward builds it.
    assert!(!s.app.forwarder.is_built());
    let response = handle(webhook(&format!("/status?{query}"), &params), &s.app).await;
    assert_eq!(response.status_code, 204);
    assert!(s.app.forwarder.is_built());

    // Recorded and announced here ...
    assert_eq!(s.inbox.take().await.len(), 1);
    // ... and passed on, with a signature the caller can check as Twilio's.
    let received = theirs.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let got: Vec<(Cow<'_, str>, Cow<'_, str>)> =
        form_urlencoded::parse(&received[0].body).collect();
    let sent: Vec<(Cow<'_, str>, Cow<'_, str>)> = params
        .iter()
        .map(|(k, v)| (Cow::Borrowed(*k), Cow::Borrowed(*v)))
        .collect();
    assert_eq!(got, sent);
    let sig = received[0]
        .headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    signature::validate(
        &target,
        Payload::Params(&got),
        sig,
        [&AuthToken::new(TOKEN)],
    )
    .expect("a valid signature for the caller's URL");

    // Without ?forward= nothing is passed on.
    handle(webhook("/status", &callback("completed", "4")), &s.app).await;
    assert_eq!(theirs.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_callers_own_status_callback_still_gets_it_when_our_ledger_fails() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let mut s = stack().await;
    let throttled = mock!(aws_sdk_dynamodb::Client::update_item).then_error(|| {
        UpdateItemError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder().build(),
        )
    });
    s.app.outcomes.as_mut().unwrap().ledger = Ledger::new(
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&throttled]),
        "ledger",
    );
    let theirs = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/their-status"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&theirs)
        .await;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("forward", &format!("{}/their-status", theirs.uri()))
        .finish();
    let response = handle(
        webhook(&format!("/status?{query}"), &callback("completed", "3")),
        &s.app,
    )
    .await;
    // Ours failed (503: not recorded, nothing published) ...
    assert_eq!(response.status_code, 503);
    assert!(s.inbox.take().await.is_empty());
    // ... theirs was passed on all the same.
    let received = theirs.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let got: Vec<(String, String)> = form_urlencoded::parse(&received[0].body)
        .into_owned()
        .collect();
    assert!(got.contains(&("CallStatus".to_owned(), "completed".to_owned())));
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_transcribed_voicemail_announces_its_text_exactly_once() {
    let mut s = stack().await;
    // A flow whose voicemail is transcribed: the Record names our signed callback route.
    let config = Config::from_lookup(test_support::vars(&[
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/token"),
        (
            "CALL_FLOW",
            r#"{"greeting": "hi", "then": {"voicemail": {"transcribe": true}}}"#,
        ),
    ]))
    .unwrap();
    let outcomes = s.app.outcomes.take();
    s.app = App::init(config, test_support::ssm_with(&[("/token", TOKEN)]))
        .await
        .unwrap();
    s.app.outcomes = outcomes;
    let answer = handle(webhook("/voice", &callback("ringing", "0")), &s.app).await;
    let twiml = match &answer.body {
        Some(lambda_http::Body::Text(t)) => t.clone(),
        other => panic!("{other:?}"),
    };
    assert!(
        twiml.contains(&format!(r#"transcribeCallback="{HOST}/transcription""#)),
        "{twiml}"
    );

    let recording_url = "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/RE0123456789abcdef0123456789abcdef";
    let recording = [
        ("CallSid", SID),
        ("From", "+81312345678"),
        ("RecordingUrl", recording_url),
        ("RecordingSid", "RE0123456789abcdef0123456789abcdef"),
        ("RecordingDuration", "17"),
    ];
    let mut transcribed = recording[..4].to_vec();
    transcribed.extend([
        ("TranscriptionSid", "TR0123456789abcdef0123456789abcdef"),
        ("TranscriptionStatus", "completed"),
        ("TranscriptionText", "佐藤です。折り返しお願いします。"),
    ]);
    assert_eq!(
        handle(webhook("/voicemail?at=0m", &recording), &s.app)
            .await
            .status_code,
        200
    );
    for _ in 0..2 {
        let response = handle(webhook("/transcription", &transcribed), &s.app).await;
        assert_eq!(response.status_code, 204);
    }
    let events = s.inbox.take().await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["detail-type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["Voicemail Recorded", "Voicemail Transcribed"],
        "{events:?}"
    );
    assert!(events[0]["detail"].get("transcription").is_none());
    assert_eq!(
        events[1]["detail"]["transcription"],
        "佐藤です。折り返しお願いします。"
    );
    assert_eq!(events[1]["detail"]["caller"], "+81312345678");

    // A recording whose own webhook could not publish: its transcription callback does.
    let other = "RE00000000000000000000000000000000";
    let second = [
        ("CallSid", SID),
        ("From", "+81312345678"),
        ("RecordingUrl", recording_url),
        ("RecordingSid", other),
        ("TranscriptionStatus", "failed"),
    ];
    assert_eq!(
        handle(webhook("/transcription", &second), &s.app)
            .await
            .status_code,
        204
    );
    let events = s.inbox.take().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail-type"], "Voicemail Recorded");
    assert_eq!(events[0]["detail"]["recording_sid"], other);
}

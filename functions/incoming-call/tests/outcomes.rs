//! Status callbacks and voicemails on their way to the ledger and the event bus, on moto_server
//! (DynamoDB, EventBridge, and an SQS queue as a subscriber).

use incoming_call::outcomes::Outcomes;
use serde_json::{Value, json};
use twilio_voice::events::EventBus;
use twilio_voice::ledger::{CallStatus, Ledger};

const SID: &str = "CA0123456789abcdef0123456789abcdef";

async fn outcomes(moto: &test_support::StandIn) -> (Outcomes, test_support::EventInbox) {
    let config = test_support::aws_config(&moto.url());
    let dynamodb = twilio_voice::aws::dynamodb(&config);
    test_support::create_ledger_table(&dynamodb, "ledger").await;
    let inbox = test_support::EventInbox::subscribe(&config, "default").await;
    let outcomes = Outcomes {
        ledger: Ledger::new(dynamodb, "ledger"),
        bus: EventBus::new(twilio_voice::aws::eventbridge(&config), "default"),
    };
    (outcomes, inbox)
}

fn params<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
    move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn callbacks_out_of_order_and_twice_announce_the_outcome_once() {
    let moto = test_support::moto_server();
    let (outcomes, inbox) = outcomes(&moto).await;
    let completed = [
        ("CallSid", SID),
        ("CallStatus", "no-answer"),
        ("SequenceNumber", "2"),
        ("CallDuration", "0"),
        ("SipResponseCode", "487"),
    ];
    for pairs in [
        &[
            ("CallSid", SID),
            ("CallStatus", "initiated"),
            ("SequenceNumber", "0"),
        ][..],
        &completed[..],
        &[
            ("CallSid", SID),
            ("CallStatus", "ringing"),
            ("SequenceNumber", "1"),
        ][..],
        &completed[..],
        // The number's own status callback (no SequenceNumber) for the same call.
        &[
            ("CallSid", SID),
            ("CallStatus", "completed"),
            ("CallDuration", "0"),
        ][..],
    ] {
        outcomes.status(params(pairs)).await.unwrap();
    }
    let events = inbox.take().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail-type"], "Call Completed");
    assert_eq!(
        events[0]["detail"],
        json!({"call_sid": SID, "outcome": "no-answer", "duration_seconds": 0, "sip_response_code": 487})
    );
    let call = outcomes.ledger.call(SID).await.unwrap().unwrap();
    assert_eq!(call.final_status, Some(CallStatus::NoAnswer));
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_voicemail_delivered_twice_is_announced_once() {
    let moto = test_support::moto_server();
    let (outcomes, inbox) = outcomes(&moto).await;
    let recording = [
        ("CallSid", SID),
        ("From", "+81312345678"),
        (
            "RecordingUrl",
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
        ),
        ("RecordingSid", "RE0123456789abcdef0123456789abcdef"),
        ("RecordingDuration", "17"),
    ];
    assert!(outcomes.voicemail(params(&recording)).await.unwrap());
    assert!(!outcomes.voicemail(params(&recording)).await.unwrap());
    let events: Vec<Value> = inbox.take().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail-type"], "Voicemail Recorded");
    assert_eq!(events[0]["detail"]["caller"], "+81312345678");
    assert_eq!(events[0]["detail"]["duration_seconds"], 17);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn an_event_whose_publish_failed_is_published_by_the_redelivery_and_only_once() {
    let moto = test_support::moto_server();
    let (outcomes, inbox) = outcomes(&moto).await;
    let config = test_support::aws_config(&moto.url());
    // The same ledger, and a bus that does not exist: EventBridge refuses every event.
    let broken = Outcomes {
        ledger: outcomes.ledger.clone(),
        bus: EventBus::new(twilio_voice::aws::eventbridge(&config), "no-such-bus"),
    };
    let completed = [
        ("CallSid", SID),
        ("CallStatus", "completed"),
        ("SequenceNumber", "3"),
        ("CallDuration", "42"),
    ];
    let recording = [
        ("CallSid", SID),
        ("From", "+81312345678"),
        (
            "RecordingUrl",
            "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1",
        ),
        ("RecordingSid", "RE0123456789abcdef0123456789abcdef"),
    ];
    assert!(broken.status(params(&completed)).await.is_err());
    assert!(broken.voicemail(params(&recording)).await.is_err());
    assert!(inbox.take().await.is_empty());

    // Delivered again once the bus answers: published now ...
    assert!(outcomes.status(params(&completed)).await.unwrap().is_some());
    assert!(outcomes.voicemail(params(&recording)).await.unwrap());
    // ... and never again.
    assert!(outcomes.status(params(&completed)).await.unwrap().is_none());
    assert!(!outcomes.voicemail(params(&recording)).await.unwrap());
    // The number's own final callback (no SequenceNumber) is applied, and announces nothing.
    let own = [("CallSid", SID), ("CallStatus", "completed")];
    assert!(outcomes.status(params(&own)).await.unwrap().is_none());
    let types: Vec<Value> = inbox
        .take()
        .await
        .into_iter()
        .map(|e| e["detail-type"].clone())
        .collect();
    assert_eq!(
        types,
        [json!("Call Completed"), json!("Voicemail Recorded")]
    );
}

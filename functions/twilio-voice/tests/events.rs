//! Domain events through the real aws-sdk-eventbridge: published on `moto_server` and read back
//! the way a subscriber gets them (a rule on the bus, an SQS queue as its target), and the
//! examples in `events/` checked against the shapes this crate builds.

use aws_sdk_eventbridge::operation::put_events::PutEventsOutput;
use aws_sdk_eventbridge::types::PutEventsResultEntry;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use serde_json::Value;
use twilio_voice::events::{DomainEvent, EventBus, EventsError, SOURCE};

const EXAMPLES: &[&str] = &[
    "call-completed.json",
    "call-failed.json",
    "voicemail-recorded.json",
    "voicemail-transcribed.json",
];

/// An example envelope and the event its detail parses to.
fn example(name: &str) -> (Value, DomainEvent) {
    let envelope: Value = test_support::event(name);
    let event = DomainEvent::parse(
        envelope["detail-type"].as_str().unwrap(),
        envelope["detail"].clone(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    (envelope, event)
}

#[test]
fn the_examples_are_exactly_what_is_published() {
    for name in EXAMPLES {
        let (envelope, event) = example(name);
        assert_eq!(envelope["source"], SOURCE, "{name}");
        assert_eq!(envelope["detail-type"], event.detail_type(), "{name}");
        // Built again, the detail is the example's, field for field.
        let rebuilt: Value = serde_json::from_str(&event.detail()).unwrap();
        assert_eq!(rebuilt, envelope["detail"], "{name}");
    }
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn events_reach_a_subscriber_through_a_rule_on_the_bus() {
    let moto = test_support::moto_server();
    let config = test_support::aws_config(&moto.url());
    // A custom bus: an event put on the default one instead would never reach the inbox.
    let inbox = test_support::EventInbox::subscribe(&config, "calls").await;
    let bus = EventBus::new(twilio_voice::aws::eventbridge(&config), "calls");
    let mut published = Vec::new();
    for name in EXAMPLES {
        let (_, event) = example(name);
        bus.publish(&event).await.unwrap();
        published.push(event);
    }

    let received: Vec<DomainEvent> = inbox
        .take()
        .await
        .into_iter()
        .map(|envelope| {
            assert_eq!(envelope["source"], SOURCE);
            DomainEvent::parse(
                envelope["detail-type"].as_str().unwrap(),
                envelope["detail"].clone(),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(received, published);
}

#[tokio::test]
async fn a_failed_entry_is_an_error_even_on_http_200() {
    for (code, retryable) in [("ThrottlingException", true), ("MalformedDetail", false)] {
        let rule = mock!(aws_sdk_eventbridge::Client::put_events).then_output(move || {
            PutEventsOutput::builder()
                .failed_entry_count(1)
                .entries(
                    PutEventsResultEntry::builder()
                        .error_code(code)
                        .error_message("entry failed")
                        .build(),
                )
                .build()
        });
        let client = mock_client!(aws_sdk_eventbridge, RuleMode::MatchAny, [&rule]);
        let (_, event) = example("call-failed.json");
        let err = EventBus::new(client, "default")
            .publish(&event)
            .await
            .unwrap_err();
        assert_eq!(err.is_retryable(), retryable, "{code}: {err:?}");
        let expected = if retryable {
            EventsError::Unavailable(code.into())
        } else {
            EventsError::Refused(code.into())
        };
        assert_eq!(err, expected);
    }
}

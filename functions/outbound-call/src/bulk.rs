//! The SQS way in: a batch of call events, one per message, placed one after another at the
//! account's pace, answered with the messages that were not placed (`ReportBatchItemFailures`)
//! so that SQS redelivers only those, and moves them to the dead-letter queue after
//! `maxReceiveCount`. A redelivered message never dials twice: its idempotency key (the body's,
//! else the message ID) finds the ledger's record of the first delivery.
//!
//! The event's shape is read here with a few fields of our own rather than `aws_lambda_events`,
//! whose SQS module pulls in `serde_with` for fields this function never reads.

use std::future::Future;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use twilio_voice::pacing::Pace;

/// `{"Records": [...]}` as the event source mapping delivers it.
#[derive(Debug, Clone, Deserialize)]
pub struct SqsEvent {
    #[serde(rename = "Records")]
    pub records: Vec<SqsMessage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsMessage {
    pub message_id: String,
    #[serde(default)]
    pub body: String,
}

impl SqsEvent {
    /// Whether a raw event came from SQS (every record says `"eventSource": "aws:sqs"`).
    pub fn recognise(event: &Value) -> bool {
        event
            .get("Records")
            .and_then(Value::as_array)
            .is_some_and(|records| {
                !records.is_empty()
                    && records
                        .iter()
                        .all(|r| r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs"))
            })
    }
}

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Placed now or by an earlier delivery: delete it.
    Placed,
    /// Not placed (refused, failed, outcome unknown): report it, SQS decides what follows.
    NotPlaced,
}

/// Places each message in turn, each that is `paced` (one that places a call) in its own slot
/// of `pace`. A message whose slot would start after `deadline` is not attempted (reported, so
/// it comes back later) instead of being cut off by the function's timeout. Returns the
/// `batchItemFailures` answer.
pub async fn process<F, Fut>(
    event: SqsEvent,
    pace: &Pace,
    deadline: Instant,
    paced: impl Fn(&SqsMessage) -> bool,
    mut place: F,
) -> Value
where
    F: FnMut(SqsMessage) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut failures = Vec::new();
    for message in event.records {
        let id = message.message_id.clone();
        if paced(&message) && !pace.slot_before(deadline).await {
            failures.push(id);
            continue;
        }
        if place(message).await == Outcome::NotPlaced {
            failures.push(id);
        }
    }
    json!({
        "batchItemFailures": failures
            .into_iter()
            .map(|id| json!({"itemIdentifier": id}))
            .collect::<Vec<_>>()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn batch(n: usize) -> SqsEvent {
        let records: Vec<Value> = (0..n)
            .map(|i| json!({"messageId": format!("m{i}"), "body": "{}", "eventSource": "aws:sqs"}))
            .collect();
        let event = json!({ "Records": records });
        assert!(SqsEvent::recognise(&event));
        serde_json::from_value(event).unwrap()
    }

    fn failures(answer: &Value) -> Vec<&str> {
        answer["batchItemFailures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["itemIdentifier"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn only_sqs_events_are_recognised() {
        assert!(!SqsEvent::recognise(&json!({"to": "+81312345678"})));
        assert!(!SqsEvent::recognise(&json!({"Records": []})));
        assert!(!SqsEvent::recognise(
            &json!({"Records": [{"eventSource": "aws:sns"}]})
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn each_message_gets_its_own_slot_and_only_failures_are_reported() {
        let pace = Pace::new(Duration::from_secs(2));
        let start = Instant::now();
        let mut placed_at = Vec::new();
        let answer = process(
            batch(5),
            &pace,
            start + Duration::from_secs(60),
            |_| true,
            |m| {
                placed_at.push(Instant::now() - start);
                async move {
                    if m.message_id == "m1" || m.message_id == "m3" {
                        Outcome::NotPlaced
                    } else {
                        Outcome::Placed
                    }
                }
            },
        )
        .await;
        assert_eq!(failures(&answer), ["m1", "m3"]);
        assert_eq!(placed_at, [0, 2, 4, 6, 8].map(Duration::from_secs));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_that_places_no_call_takes_no_slot() {
        let pace = Pace::new(Duration::from_secs(2));
        let start = Instant::now();
        let mut handled_at = Vec::new();
        let paced = |m: &SqsMessage| m.message_id != "m1" && m.message_id != "m2";
        let answer = process(
            batch(4),
            &pace,
            start + Duration::from_secs(60),
            paced,
            |_| {
                handled_at.push(Instant::now() - start);
                async { Outcome::Placed }
            },
        )
        .await;
        assert!(failures(&answer).is_empty());
        // m0 takes the slot at 0 s; m1 and m2 wait for none; m3 gets the next slot, at 2 s.
        assert_eq!(handled_at, [0, 0, 0, 2].map(Duration::from_secs));
    }

    #[tokio::test(start_paused = true)]
    async fn messages_past_the_deadline_are_left_for_a_later_delivery() {
        let pace = Pace::new(Duration::from_secs(2));
        let start = Instant::now();
        let mut attempted = 0;
        let answer = process(
            batch(10),
            &pace,
            start + Duration::from_secs(5),
            |_| true,
            |_| {
                attempted += 1;
                async { Outcome::Placed }
            },
        )
        .await;
        // Slots at 0, 2 and 4 s fit; the next one (6 s) does not.
        assert_eq!(attempted, 3);
        assert_eq!(
            failures(&answer),
            ["m3", "m4", "m5", "m6", "m7", "m8", "m9"]
        );
    }
}

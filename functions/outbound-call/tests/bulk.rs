//! The SQS way in, played by a simulated event source mapping on moto_server's SQS.

use std::sync::Arc;
use std::time::Duration;

use outbound_call::bulk::{Outcome, SqsEvent, process};
use twilio_voice::pacing::Pace;

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn reported_messages_come_back_and_end_in_the_dead_letter_queue() {
    let moto = test_support::moto_server();
    let config = test_support::aws_config(&moto.url());
    let sqs = aws_sdk_sqs::Client::new(&config);
    let (url, arn, dlq) = test_support::bulk_queue(&sqs, "bulk", 3).await;
    for i in 0..10 {
        let body = if i % 5 == 0 {
            "bad".to_owned()
        } else {
            format!("good-{i}")
        };
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let clock = Arc::new(test_support::SimulatedClock::default());
    let pace = Pace::with_clock(Duration::from_secs(1), clock.clone());
    let placed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let pace = &pace;
    let drained = test_support::drain_queue(&sqs, &url, &arn, 10, |event| {
        let event: SqsEvent = serde_json::from_value(event).unwrap();
        let deadline = pace.now() + Duration::from_secs(28);
        let placed = placed.clone();
        async move {
            process(
                event,
                pace,
                deadline,
                |_| true,
                |m| {
                    let ok = m.body != "bad";
                    if ok {
                        placed.lock().unwrap().push(m.body);
                    }
                    async move {
                        if ok {
                            Outcome::Placed
                        } else {
                            Outcome::NotPlaced
                        }
                    }
                },
            )
            .await
        }
    })
    .await;
    let placed = placed.lock().unwrap().clone();
    assert_eq!(placed.len(), 8);
    assert_eq!(drained.deleted, 8);
    // Each bad message is received maxReceiveCount times, then moved.
    assert_eq!(drained.reported, 2 * 3, "{drained:?}");
    let dead = sqs
        .receive_message()
        .queue_url(&dlq)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert_eq!(dead.messages().len(), 2);
    // Every attempt had its own slot, one second apart on the simulated clock.
    let waits = clock.waits();
    assert_eq!(waits.len(), 8 + 2 * 3);
    assert!(
        waits
            .windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_secs(1))
    );
}

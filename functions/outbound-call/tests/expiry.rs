//! The stale-call guard for calls Twilio holds in its queue: a call placed with `not_after`
//! leaves an expiry message on the bulk-calls queue (moto_server's SQS), delayed until then,
//! and that message cancels the call if Twilio (wiremock) still has it waiting. The function's
//! clock is moved by hand; nothing waits for real time. The delay SQS was asked for is read
//! from moto's own record of each message (`delayed_until - sent_timestamp`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::CREDENTIALS;
use outbound_call::handler::{App, handle};
use serde_json::{Value, json};
use twilio_voice::calls::{Deadline, HttpTimeouts, RetryPolicy};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CALLS_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json";
const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
const CALL_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls/CA0123456789abcdef0123456789abcdef.json";
/// 2026-11-25T00:00:00Z: where the function's clock starts.
const T0: u64 = 1_795_564_800;

struct Stack {
    twilio: MockServer,
    app: App,
    clock: Arc<Mutex<SystemTime>>,
    moto: test_support::StandIn,
}

/// The function as deployed (ledger, bulk-calls queue) with Twilio saying the call is
/// `twilio_status` when asked; `queue` names another queue on the same stand-in.
async fn stack(twilio_status: &str, queue: Option<&str>) -> Stack {
    let moto = test_support::moto_server();
    let aws = test_support::aws_config(&moto.url());
    test_support::create_ledger_table(&twilio_voice::aws::dynamodb(&aws), "ledger").await;
    let (url, _, _) =
        test_support::bulk_queue(&twilio_voice::aws::sqs(&aws), "bulk-calls", 3).await;
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(json!({"sid": CALL_SID, "status": "queued"})),
        )
        .mount(&twilio)
        .await;
    Mock::given(method("GET"))
        .and(path(CALL_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"sid": CALL_SID, "status": twilio_status})),
        )
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path(CALL_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"sid": CALL_SID, "status": "canceled"})),
        )
        .mount(&twilio)
        .await;
    let queue = queue.map_or(url, |name| format!("{}/123456789012/{name}", moto.url()));
    let config = common::config(
        &twilio.uri(),
        &[
            ("CALL_LEDGER_TABLE", "ledger"),
            ("BULK_CALLS_QUEUE_URL", queue.as_str()),
        ],
    );
    let timeouts = HttpTimeouts {
        connect: Duration::from_secs(1),
        total: Duration::from_secs(2),
    };
    let mut app = App::init_with(
        config.clone(),
        test_support::ssm_with(CREDENTIALS),
        timeouts,
        RetryPolicy::default(),
    )
    .await
    .unwrap()
    .with_outcomes(&config, &aws);
    let clock = Arc::new(Mutex::new(UNIX_EPOCH + Duration::from_secs(T0)));
    let read = clock.clone();
    app.clock = Arc::new(move || *read.lock().unwrap());
    Stack {
        twilio,
        app,
        clock,
        moto,
    }
}

impl Stack {
    fn at(&self, seconds_after_t0: u64) {
        *self.clock.lock().unwrap() = UNIX_EPOCH + Duration::from_secs(T0 + seconds_after_t0);
    }

    /// The requests Twilio got for `method` on `path`.
    async fn requests(&self, method: &str, path: &str) -> Vec<wiremock::Request> {
        self.twilio
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.method.as_str() == method && r.url.path() == path)
            .collect()
    }

    /// Every expiry message sent to the queue so far, oldest first, with the delay it was
    /// sent with, from moto's record of its messages.
    async fn expiry_messages(&self) -> Vec<(Value, u64)> {
        let data: Value = reqwest::get(format!("{}/moto-api/data.json", self.moto.url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        data["sqs"]["Message"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|m| {
                let body: Value = serde_json::from_str(m["body"].as_str()?).ok()?;
                body.get("expire_call")?;
                let delay_ms = m["delayed_until"].as_f64()? - m["sent_timestamp"].as_f64()?;
                Some((body, (delay_ms / 1000.0).round() as u64))
            })
            .collect()
    }

    /// The message delivered by the event source mapping; the batch's answer.
    async fn deliver(&self, body: &Value) -> Value {
        let event = json!({"Records": [{
            "messageId": "expiry-1",
            "receiptHandle": "r",
            "body": body.to_string(),
            "attributes": {},
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:ap-northeast-1:123456789012:bulk-calls",
            "awsRegion": "ap-northeast-1",
        }]});
        handle(event, &self.app, Deadline::NONE).await.unwrap()
    }
}

fn event(not_after: Option<&str>) -> Value {
    let mut event: Value = test_support::event("outbound-call-say-ja.json");
    event["idempotency_key"] = json!("expiry-test");
    if let Some(not_after) = not_after {
        event["not_after"] = json!(not_after);
    }
    event
}

fn reported(answer: &Value) -> usize {
    answer["batchItemFailures"].as_array().unwrap().len()
}

async fn place(s: &Stack, not_after: Option<&str>) {
    let placed = handle(event(not_after), &s.app, Deadline::NONE)
        .await
        .expect("the call is placed");
    assert_eq!(placed["call_sid"], CALL_SID);
    assert_eq!(s.requests("POST", CALLS_PATH).await.len(), 1);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_call_still_queued_at_not_after_is_cancelled_once() {
    let s = stack("queued", None).await;
    place(&s, Some("2026-11-25T09:02:00+09:00")).await;
    let messages = s.expiry_messages().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (body, delay) = &messages[0];
    assert_eq!(*delay, 120, "delayed until not_after");
    assert_eq!(
        body,
        &json!({"expire_call": {"call_sid": CALL_SID, "not_after": "2026-11-25T09:02:00+09:00",
                                "idempotency_key": "expiry-test"}})
    );

    s.at(120);
    let answer = s.deliver(body).await;
    assert_eq!(reported(&answer), 0, "{answer}");
    assert_eq!(s.requests("GET", CALL_PATH).await.len(), 1);
    let cancels = s.requests("POST", CALL_PATH).await;
    assert_eq!(cancels.len(), 1);
    let form: Vec<(String, String)> = form_urlencoded::parse(&cancels[0].body)
        .into_owned()
        .collect();
    assert_eq!(form, [("Status".to_owned(), "canceled".to_owned())]);
    // Nothing dialled again, nothing more queued.
    assert_eq!(s.requests("POST", CALLS_PATH).await.len(), 1);
    assert_eq!(s.expiry_messages().await.len(), 1);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn an_answered_or_ended_call_is_left_alone() {
    for status in ["in-progress", "completed"] {
        let s = stack(status, None).await;
        place(&s, Some("2026-11-25T00:02:00Z")).await;
        let (body, _) = s.expiry_messages().await.remove(0);
        s.at(121);
        let answer = s.deliver(&body).await;
        assert_eq!(reported(&answer), 0, "{status}: {answer}");
        assert_eq!(s.requests("GET", CALL_PATH).await.len(), 1, "{status}");
        assert_eq!(s.requests("POST", CALL_PATH).await.len(), 0, "{status}");
    }
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_far_not_after_is_reached_in_delays_of_at_most_900_s() {
    let s = stack("queued", None).await;
    place(&s, Some("2026-11-25T01:00:00Z")).await;
    let sent = s.expiry_messages().await;
    assert_eq!(sent.iter().map(|m| m.1).collect::<Vec<_>>(), [900]);

    // Each early arrival asks Twilio nothing and is sent again with the time left.
    for (now, left) in [(900, 900), (3000, 600)] {
        s.at(now);
        let (body, _) = s.expiry_messages().await.pop().unwrap();
        let answer = s.deliver(&body).await;
        assert_eq!(reported(&answer), 0, "{answer}");
        let sent = s.expiry_messages().await;
        assert_eq!(sent.last().unwrap().1, left, "at T0+{now}: {sent:?}");
        assert_eq!(sent.last().unwrap().0, body, "the same message");
        assert!(s.requests("GET", CALL_PATH).await.is_empty());
    }
    assert_eq!(s.expiry_messages().await.len(), 3);

    s.at(3600);
    let (body, _) = s.expiry_messages().await.pop().unwrap();
    assert_eq!(reported(&s.deliver(&body).await), 0);
    assert_eq!(s.requests("POST", CALL_PATH).await.len(), 1);
    assert_eq!(s.expiry_messages().await.len(), 3, "not sent again");
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_call_without_not_after_gets_no_expiry_message() {
    let s = stack("queued", None).await;
    place(&s, None).await;
    assert_eq!(s.expiry_messages().await, []);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn an_expiry_message_that_cannot_be_sent_does_not_fail_the_call() {
    let s = stack("queued", Some("no-such-queue")).await;
    place(&s, Some("2026-11-25T00:02:00Z")).await;
    assert_eq!(s.expiry_messages().await, []);
    // A redelivery answers from the ledger: still one call.
    handle(event(Some("2026-11-25T00:02:00Z")), &s.app, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(s.requests("POST", CALLS_PATH).await.len(), 1);
}

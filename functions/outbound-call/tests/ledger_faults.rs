//! Every request dials at most once, whatever delivers it how often: the function with its call
//! ledger on moto_server (DynamoDB, EventBridge), Twilio as wiremock counting the requests that
//! reach it, SSM as aws-smithy-mocks.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use common::CREDENTIALS;
use outbound_call::handler::{App, OutboundError, handle};
use serde_json::{Value, json};
use twilio_voice::calls::{Deadline, ErrorClass, HttpTimeouts, RetryPolicy};
use twilio_voice::ledger::{Ledger, STALE_AFTER};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CALLS_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json";
const CALL_SID: &str = "CA0123456789abcdef0123456789abcdef";
const OUR_STATUS_URL: &str =
    "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.ap-northeast-1.on.aws/status";

fn created() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({"sid": CALL_SID, "status": "queued"}))
}

struct Stack {
    twilio: MockServer,
    app: App,
    clock: Arc<Mutex<SystemTime>>,
    inbox: test_support::EventInbox,
    _moto: test_support::StandIn,
}

/// The function as deployed: ledger and bus on moto, Twilio answering `answer` to call requests.
async fn stack(answer: ResponseTemplate) -> Stack {
    let moto = test_support::moto_server();
    let aws = test_support::aws_config(&moto.url());
    test_support::create_ledger_table(&twilio_voice::aws::dynamodb(&aws), "ledger").await;
    let inbox = test_support::EventInbox::subscribe(&aws, "default").await;
    let (queue, _, _) =
        test_support::bulk_queue(&twilio_voice::aws::sqs(&aws), "bulk-calls", 3).await;
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .respond_with(answer)
        .mount(&twilio)
        .await;
    let config = common::config(
        &twilio.uri(),
        &[
            ("CALL_LEDGER_TABLE", "ledger"),
            ("BULK_CALLS_QUEUE_URL", queue.as_str()),
            ("EVENT_BUS_NAME", "default"),
            ("STATUS_CALLBACK_URL", OUR_STATUS_URL),
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
    // The ledger's clock, moved by hand to make a claim stale.
    let clock = Arc::new(Mutex::new(SystemTime::now()));
    let read = clock.clone();
    app.ledger = app
        .ledger
        .take()
        .map(|l| l.with_clock(Arc::new(move || *read.lock().unwrap())));
    Stack {
        twilio,
        app,
        clock,
        inbox,
        _moto: moto,
    }
}

impl Stack {
    async fn posts(&self) -> Vec<wiremock::Request> {
        self.twilio
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path() == CALLS_PATH)
            .collect()
    }
}

fn keyed(key: &str) -> Value {
    let mut event: Value = test_support::event("outbound-call-say-ja.json");
    event["idempotency_key"] = json!(key);
    event
}

fn form(request: &wiremock::Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&request.body).into_owned().collect()
}

fn class(result: Result<Value, OutboundError>) -> ErrorClass {
    result.expect_err("an error").class()
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn the_same_event_twice_at_the_same_moment_dials_once() {
    let s = stack(created().set_delay(Duration::from_millis(300))).await;
    let (a, b) = tokio::join!(
        handle(keyed("twice"), &s.app, Deadline::NONE),
        handle(keyed("twice"), &s.app, Deadline::NONE)
    );
    assert_eq!(s.posts().await.len(), 1);
    let (ok, other) = if a.is_ok() { (a, b) } else { (b, a) };
    assert_eq!(ok.unwrap()["call_sid"], CALL_SID);
    // The second found the first in flight: never a second dial.
    assert_eq!(class(other), ErrorClass::CallMayExist);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn again_after_success_returns_the_same_sid_without_a_request() {
    let s = stack(created()).await;
    let first = handle(keyed("again"), &s.app, Deadline::NONE)
        .await
        .unwrap();
    let second = handle(keyed("again"), &s.app, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(second["call_sid"], CALL_SID);
    assert_eq!(s.posts().await.len(), 1);
    // Our status callback on the call, so that the ledger learns its outcome.
    assert!(form(&s.posts().await[0]).contains(&("StatusCallback".into(), OUR_STATUS_URL.into())));
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn after_a_500_the_outcome_is_unknown_until_the_calls_list_finds_the_call() {
    let s = stack(ResponseTemplate::new(500)).await;
    assert_eq!(
        class(handle(keyed("k500"), &s.app, Deadline::NONE).await),
        ErrorClass::CallMayExist
    );
    assert_eq!(
        class(handle(keyed("k500"), &s.app, Deadline::NONE).await),
        ErrorClass::CallMayExist
    );
    assert_eq!(s.posts().await.len(), 1);

    // Five minutes on, Twilio's Calls list has the call: the request is resolved with its SID.
    let claimed = *s.clock.lock().unwrap();
    *s.clock.lock().unwrap() += STALE_AFTER;
    let created_at = aws_smithy_types::DateTime::from(claimed + Duration::from_secs(1))
        .fmt(aws_smithy_types::date_time::Format::HttpDate)
        .unwrap()
        .replace(" GMT", " +0000");
    Mock::given(method("GET"))
        .and(path(CALLS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "calls": [{"sid": CALL_SID, "status": "completed", "date_created": created_at}],
            "page": 0, "page_size": 50
        })))
        .mount(&s.twilio)
        .await;
    let resolved = handle(keyed("k500"), &s.app, Deadline::NONE).await.unwrap();
    assert_eq!(resolved["call_sid"], CALL_SID);
    assert_eq!(s.posts().await.len(), 1);
    let lookups: Vec<_> = s
        .twilio
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "GET")
        .collect();
    assert_eq!(lookups.len(), 1);
    let query: Vec<(String, String)> = lookups[0].url.query_pairs().into_owned().collect();
    assert!(
        query.contains(&("To".into(), "+81312345678".into())),
        "{query:?}"
    );
    // No StartTime filter: a call still queued at Twilio has no start time and must be found.
    assert!(
        !query.iter().any(|(k, _)| k.starts_with("StartTime")),
        "{query:?}"
    );
    // The ambiguous failure was announced once, as Call Failed.
    let events = s.inbox.take().await;
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["detail-type"] == "Call Failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(
        failed[0]["detail"]["error_type"],
        "OutcomeUnknown.CallMayExist"
    );
    assert_eq!(failed[0]["detail"]["idempotency_key"], "k500");
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn dynamodb_throttled_places_no_call_and_is_retryable() {
    let mut s = stack(created()).await;
    let throttled = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
        PutItemError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder().build(),
        )
    });
    s.app.ledger = Some(Ledger::new(
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&throttled]),
        "ledger",
    ));
    let err = handle(keyed("throttled"), &s.app, Deadline::NONE)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "Retryable.LedgerUnavailable");
    assert!(err.retry().cannot_duplicate());
    assert_eq!(s.posts().await.len(), 0);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_delivery_after_not_after_places_nothing() {
    let s = stack(created()).await;
    let mut late = keyed("late");
    late["not_after"] = json!("2026-01-01T09:00:00+09:00");
    assert_eq!(
        class(handle(late, &s.app, Deadline::NONE).await),
        ErrorClass::Expired
    );
    assert_eq!(s.posts().await.len(), 0);
    let events = s.inbox.take().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["detail"]["error_type"], "NonRetryable.Expired");

    let mut in_time = keyed("in-time");
    in_time["not_after"] = json!("2999-01-01T00:00:00Z");
    // A caller's own status callback rides on ours, which passes each callback on.
    in_time["status_callback"] = json!("https://example.com/their-status?id=7");
    handle(in_time, &s.app, Deadline::NONE).await.unwrap();
    let posts = s.posts().await;
    assert_eq!(posts.len(), 1);
    let expected =
        format!("{OUR_STATUS_URL}?forward=https%3A%2F%2Fexample.com%2Ftheir-status%3Fid%3D7");
    assert!(
        form(&posts[0]).contains(&("StatusCallback".into(), expected.clone())),
        "{expected} in {:?}",
        form(&posts[0])
    );
}

fn sqs_event(bodies: &[(String, String)]) -> Value {
    let records: Vec<Value> = bodies
        .iter()
        .map(|(id, body)| {
            json!({"messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
                   "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                   "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:ap-northeast-1:123456789012:bulk",
                   "awsRegion": "ap-northeast-1"})
        })
        .collect();
    json!({ "Records": records })
}

fn reported(answer: &Value) -> Vec<String> {
    answer["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_batch_of_ten_with_two_bad_messages_places_eight_and_reports_two() {
    let mut s = stack(created()).await;
    // One call a millisecond: this test is about the answer, the pace has its own tests.
    s.app.pace = twilio_voice::pacing::Pace::new(Duration::from_millis(1));
    let mut bodies = Vec::new();
    for i in 0..10 {
        let body = match i {
            3 => "not json".to_owned(),
            // Outside ALLOWED_DESTINATION_PREFIXES.
            7 => json!({"to": "+442079460000", "say": "許可されていない番号"}).to_string(),
            _ => json!({"to": format!("+8131234{i:04}"), "say": "訓練です"}).to_string(),
        };
        bodies.push((format!("m{i}"), body));
    }
    let answer = handle(sqs_event(&bodies), &s.app, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(reported(&answer), ["m3", "m7"]);
    assert_eq!(s.posts().await.len(), 8);
    // The whole batch again (a lost answer): nothing dials twice.
    let again = handle(sqs_event(&bodies), &s.app, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(reported(&again), ["m3", "m7"]);
    assert_eq!(s.posts().await.len(), 8);
    // Each bad message is announced once, not once per receive.
    let failed: Vec<Value> = s
        .inbox
        .take()
        .await
        .into_iter()
        .filter(|e| e["detail-type"] == "Call Failed")
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|e| e["detail"]["error_type"] == "NonRetryable.InvalidEvent")
    );
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_thousand_queued_calls_drain_at_the_pace_with_no_duplicate_and_no_loss() {
    let mut s = stack(created()).await;
    let clock = Arc::new(test_support::SimulatedClock::default());
    // CallsPerSecond 1 shared by BulkMaxConcurrency 2: one call every 2 s per instance.
    let interval = Duration::from_secs(2);
    s.app.pace = twilio_voice::pacing::Pace::with_clock(interval, clock.clone());
    let aws = test_support::aws_config(&format!("http://127.0.0.1:{}", s._moto.port));
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let (url, arn, dlq) = test_support::bulk_queue(&sqs, "bulk", 5).await;
    const CALLS: usize = 1000;
    for chunk in (0..CALLS).collect::<Vec<_>>().chunks(10) {
        let mut batch = sqs.send_message_batch().queue_url(&url);
        for i in chunk {
            batch = batch.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("e{i}"))
                    .message_body(
                        json!({"to": format!("+8131234{i:04}"), "say": "避難訓練です"}).to_string(),
                    )
                    .build()
                    .unwrap(),
            );
        }
        batch.send().await.unwrap();
    }
    // Every fourth invocation's answer is lost (as after a crash): its whole batch comes back.
    let mut invocation = 0;
    let app = &s.app;
    let drained = test_support::drain_queue(&sqs, &url, &arn, 5, |event| {
        invocation += 1;
        let lost = invocation % 4 == 0;
        async move {
            let ids: Vec<Value> = event["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| json!({"itemIdentifier": r["messageId"]}))
                .collect();
            let answer = handle(event, app, Deadline::NONE).await.unwrap();
            if lost {
                json!({ "batchItemFailures": ids })
            } else {
                answer
            }
        }
    })
    .await;
    let posts = s.posts().await;
    let mut to: Vec<String> = posts
        .iter()
        .map(|p| form(p).into_iter().find(|(k, _)| k == "To").unwrap().1)
        .collect();
    to.sort();
    to.dedup();
    assert_eq!((posts.len(), to.len()), (CALLS, CALLS), "{drained:?}");
    assert!(drained.reported > 0, "some answers were lost: {drained:?}");
    let dead = sqs.receive_message().queue_url(&dlq).send().await.unwrap();
    assert!(dead.messages().is_empty());
    // The pace, read off the simulated clock: each slot 2 s after the one before.
    let waits = clock.waits();
    assert!(waits.len() >= CALLS);
    assert!(waits.windows(2).all(|w| w[1] - w[0] >= interval));
    assert!(waits[waits.len() - 1] - waits[0] >= interval * (CALLS as u32 - 1));
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_redelivered_invocation_or_schedule_run_dials_once() {
    use outbound_call::handler::handle_invocation;
    let s = stack(created()).await;
    // The same asynchronous invocation delivered twice (same request ID), no key of its own.
    let plain: Value = test_support::event("outbound-call-say-ja.json");
    for _ in 0..2 {
        handle_invocation(plain.clone(), &s.app, Deadline::NONE, Some("req-1"))
            .await
            .unwrap();
    }
    assert_eq!(s.posts().await.len(), 1);
    // Another invocation is another request.
    handle_invocation(plain, &s.app, Deadline::NONE, Some("req-2"))
        .await
        .unwrap();
    assert_eq!(s.posts().await.len(), 2);

    // A schedule run delivered twice (two invocations: Scheduler's retry): one call; the next
    // run: another.
    let run: Value = test_support::event("outbound-call-schedule.json");
    for request_id in ["req-3", "req-3-retry"] {
        handle_invocation(run.clone(), &s.app, Deadline::NONE, Some(request_id))
            .await
            .unwrap();
    }
    assert_eq!(s.posts().await.len(), 3);
    let mut next = run.clone();
    next["schedule"]["time"] = json!("2026-11-26T00:00:00Z");
    handle_invocation(next, &s.app, Deadline::NONE, Some("req-4"))
        .await
        .unwrap();
    assert_eq!(s.posts().await.len(), 4);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_call_failed_whose_publish_failed_is_published_by_the_next_delivery_once() {
    let refused = ResponseTemplate::new(400).set_body_json(json!({
        "code": 21211, "message": "invalid To", "status": 400,
        "more_info": "https://www.twilio.com/docs/errors/21211"
    }));
    let mut s = stack(refused).await;
    let aws = test_support::aws_config(&s._moto.url());
    let working = s.app.bus.replace(twilio_voice::events::EventBus::new(
        twilio_voice::aws::eventbridge(&aws),
        "no-such-bus",
    ));
    let event = keyed("refused-once");
    assert_eq!(
        class(handle(event.clone(), &s.app, Deadline::NONE).await),
        ErrorClass::TwilioRejected
    );
    assert!(s.inbox.take().await.is_empty());
    // The bus answers again: the next delivery (refused from the ledger, nothing sent)
    // announces the failure, and the one after it does not.
    s.app.bus = working;
    for _ in 0..2 {
        assert_eq!(
            class(handle(event.clone(), &s.app, Deadline::NONE).await),
            ErrorClass::TwilioRejected
        );
    }
    assert_eq!(s.posts().await.len(), 1);
    let failed = s.inbox.take().await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["detail-type"], "Call Failed");
    assert_eq!(failed[0]["detail"]["twilio_code"], 21211);
    assert_eq!(failed[0]["detail"]["idempotency_key"], "refused-once");
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_stale_claim_is_not_resolved_with_another_requests_call_to_the_same_number() {
    use wiremock::matchers::query_param;
    const OTHER_SID: &str = "CAffffffffffffffffffffffffffffffff";
    let s = stack(ResponseTemplate::new(500)).await;
    assert_eq!(
        class(handle(keyed("mine"), &s.app, Deadline::NONE).await),
        ErrorClass::CallMayExist
    );
    // Another request placed a call to the same number seconds later, and recorded it.
    let ledger = s.app.ledger.clone().unwrap();
    let other = twilio_voice::ledger::IdempotencyKey::new("theirs").unwrap();
    let to = twilio_voice::phone::PhoneNumber::parse("+81312345678").unwrap();
    let twilio_voice::ledger::ClaimOutcome::Won(claim) = ledger.claim(&other, &to).await.unwrap()
    else {
        panic!("a fresh key is won");
    };
    ledger
        .record_placed(&claim, OTHER_SID, "queued")
        .await
        .unwrap();

    let claimed = *s.clock.lock().unwrap();
    *s.clock.lock().unwrap() += STALE_AFTER;
    let at = |secs| {
        aws_smithy_types::DateTime::from(claimed + Duration::from_secs(secs))
            .fmt(aws_smithy_types::date_time::Format::HttpDate)
            .unwrap()
            .replace(" GMT", " +0000")
    };
    // Newest first: theirs on the first page, ours on the second (Twilio's next_page_uri).
    let next = format!("{CALLS_PATH}?To=%2B81312345678&PageSize=1&Page=1&PageToken=PACA1");
    Mock::given(method("GET"))
        .and(path(CALLS_PATH))
        .and(query_param("Page", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "calls": [{"sid": CALL_SID, "status": "completed", "date_created": at(1)}],
            "next_page_uri": null
        })))
        .with_priority(1)
        .mount(&s.twilio)
        .await;
    Mock::given(method("GET"))
        .and(path(CALLS_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "calls": [{"sid": OTHER_SID, "status": "in-progress", "date_created": at(30)}],
            "next_page_uri": next
        })))
        .mount(&s.twilio)
        .await;
    let resolved = handle(keyed("mine"), &s.app, Deadline::NONE).await.unwrap();
    assert_eq!(resolved["call_sid"], CALL_SID);
    assert_eq!(s.posts().await.len(), 1);
    let gets = s
        .twilio
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "GET")
        .count();
    assert_eq!(gets, 2);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_delivery_past_not_after_cancels_the_call_an_earlier_one_left_waiting() {
    use twilio_voice::ledger::{CallStatus, StatusUpdate};
    let s = stack(created()).await;
    let cancel_path = format!("{}/{CALL_SID}.json", CALLS_PATH.trim_end_matches(".json"));
    Mock::given(method("POST"))
        .and(path(cancel_path.as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"sid": CALL_SID, "status": "canceled"})),
        )
        .mount(&s.twilio)
        .await;
    let cancels = || async {
        s.twilio
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.url.path() == cancel_path)
            .map(|r| form(&r))
            .collect::<Vec<_>>()
    };
    let mut event = keyed("late-call");
    event["not_after"] = json!("2999-01-01T00:00:00Z");
    handle(event.clone(), &s.app, Deadline::NONE).await.unwrap();
    assert_eq!(s.posts().await.len(), 1);

    // Delivered again after its deadline, the call still queued at Twilio: cancelled.
    event["not_after"] = json!("2026-01-01T00:00:00Z");
    assert_eq!(
        class(handle(event.clone(), &s.app, Deadline::NONE).await),
        ErrorClass::Expired
    );
    assert_eq!(
        cancels().await,
        [vec![("Status".to_owned(), "canceled".to_owned())]]
    );
    assert_eq!(s.posts().await.len(), 1);

    // Once the call is answered (its status callback in the ledger), it is left alone.
    let ledger = s.app.ledger.clone().unwrap();
    ledger
        .record_status(&StatusUpdate {
            call_sid: CALL_SID.into(),
            call_status: CallStatus::InProgress,
            sequence_number: 2,
            call_duration: None,
            answered_by: None,
            sip_response_code: None,
        })
        .await
        .unwrap();
    assert_eq!(
        class(handle(event, &s.app, Deadline::NONE).await),
        ErrorClass::Expired
    );
    assert_eq!(cancels().await.len(), 1);
}

//! The call ledger through the real aws-sdk-dynamodb: on `moto_server` for the conditional
//! writes themselves, with aws-smithy-mocks for the faults moto cannot produce (throttling).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::error::{
    ProvisionedThroughputExceededException, ResourceNotFoundException,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use twilio_voice::ledger::{
    CallStatus, ClaimOutcome, Duplicate, IdempotencyKey, Ledger, LedgerError, RequestState,
    Resolution, STALE_AFTER, StatusRecorded, StatusUpdate,
};
use twilio_voice::phone::PhoneNumber;

const TABLE: &str = "call-ledger";
const SID: &str = "CA0123456789abcdef0123456789abcdef";

fn to() -> PhoneNumber {
    PhoneNumber::parse("+81312345678").unwrap()
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

/// A clock the test moves by hand.
#[derive(Clone)]
struct TestClock(Arc<Mutex<SystemTime>>);

impl TestClock {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(
            UNIX_EPOCH + Duration::from_secs(1_795_000_000),
        )))
    }
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
    fn ledger(&self, client: aws_sdk_dynamodb::Client) -> Ledger {
        let clock = self.0.clone();
        Ledger::new(client, TABLE).with_clock(Arc::new(move || *clock.lock().unwrap()))
    }
}

/// A ledger on a fresh moto table. `AWS_ENDPOINT_URL` points nowhere: only the DynamoDB
/// override reaches moto, which proves `aws::sdk_config` honours it.
async fn moto_ledger(moto: &test_support::StandIn, clock: &TestClock) -> Ledger {
    let config = test_support::aws_config_with(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_ENDPOINT_URL_DYNAMODB", &moto.url()),
    ]);
    let client = twilio_voice::aws::dynamodb(&config);
    test_support::create_ledger_table(&client, TABLE).await;
    clock.ledger(client)
}

fn won(outcome: ClaimOutcome) -> twilio_voice::ledger::Claim {
    match outcome {
        ClaimOutcome::Won(claim) => claim,
        other => panic!("expected to win the claim, got {other:?}"),
    }
}

fn duplicate(outcome: ClaimOutcome) -> Duplicate {
    match outcome {
        ClaimOutcome::Duplicate(record) => record.duplicate(),
        other => panic!("expected a duplicate, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs moto_server (make test runs it)"]
async fn concurrent_claims_of_one_key_have_exactly_one_winner() {
    let moto = test_support::moto_server();
    let ledger = moto_ledger(&moto, &TestClock::new()).await;
    let mut claims = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let ledger = ledger.clone();
        claims.spawn(async move { ledger.claim(&key("same-event"), &to()).await.unwrap() });
    }
    let (mut winners, mut in_flight) = (0, 0);
    while let Some(outcome) = claims.join_next().await {
        match outcome.unwrap() {
            ClaimOutcome::Won(_) => winners += 1,
            ClaimOutcome::Duplicate(record) => {
                assert_eq!(record.state, RequestState::Claimed);
                assert_eq!(record.duplicate(), Duplicate::OutcomeUnknown);
                in_flight += 1;
            }
        }
    }
    assert_eq!((winners, in_flight), (1, 15));
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_placed_request_answers_every_later_delivery_with_its_sid() {
    let moto = test_support::moto_server();
    let ledger = moto_ledger(&moto, &TestClock::new()).await;
    let claim = won(ledger.claim(&key("k1"), &to()).await.unwrap());
    ledger.record_placed(&claim, SID, "queued").await.unwrap();

    for _ in 0..2 {
        assert_eq!(
            duplicate(ledger.claim(&key("k1"), &to()).await.unwrap()),
            Duplicate::Placed {
                call_sid: SID.into(),
                call_status: "queued".into()
            }
        );
    }
    let call = ledger.call(SID).await.unwrap().expect("the call item");
    assert_eq!(call.request_key.as_deref(), Some("k1"));
    let request = ledger.request(&key("k1")).await.unwrap().unwrap();
    assert_eq!(request.to, Some(to()));
    // Another key is another request.
    won(ledger.claim(&key("k2"), &to()).await.unwrap());
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn failures_released_refused_and_unknown_answer_differently() {
    let moto = test_support::moto_server();
    let ledger = moto_ledger(&moto, &TestClock::new()).await;

    // Nothing reached Twilio: the next delivery may try again.
    let claim = won(ledger.claim(&key("released"), &to()).await.unwrap());
    ledger.release(&claim).await.unwrap();
    let again = won(ledger.claim(&key("released"), &to()).await.unwrap());
    // The first holder lost its claim when it released it: it may not record over the second.
    assert_eq!(
        ledger.record_placed(&claim, SID, "queued").await,
        Err(LedgerError::ClaimLost)
    );
    ledger.record_placed(&again, SID, "queued").await.unwrap();

    let claim = won(ledger.claim(&key("refused"), &to()).await.unwrap());
    ledger
        .record_failed(&claim, "NonRetryable.TwilioRejected", Some(21211))
        .await
        .unwrap();
    assert_eq!(
        duplicate(ledger.claim(&key("refused"), &to()).await.unwrap()),
        Duplicate::Failed {
            error_type: "NonRetryable.TwilioRejected".into(),
            twilio_code: Some(21211)
        }
    );

    let claim = won(ledger.claim(&key("unknown"), &to()).await.unwrap());
    ledger.record_unknown(&claim).await.unwrap();
    assert_eq!(
        duplicate(ledger.claim(&key("unknown"), &to()).await.unwrap()),
        Duplicate::OutcomeUnknown
    );
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_stale_claim_is_resolved_by_what_the_calls_list_found() {
    let moto = test_support::moto_server();
    let clock = TestClock::new();
    let ledger = moto_ledger(&moto, &clock).await;

    // Sent, then no answer; found in Twilio's Calls list later.
    let claim = won(ledger.claim(&key("found"), &to()).await.unwrap());
    ledger.record_unknown(&claim).await.unwrap();
    // Lost, and never sent: not found.
    won(ledger.claim(&key("lost"), &to()).await.unwrap());

    let found = ledger.request(&key("found")).await.unwrap().unwrap();
    assert!(!found.is_stale(clock.now(), STALE_AFTER));
    clock.advance(STALE_AFTER);
    let found = ledger.request(&key("found")).await.unwrap().unwrap();
    let lost = ledger.request(&key("lost")).await.unwrap().unwrap();
    assert!(found.is_stale(clock.now(), STALE_AFTER));
    assert!(lost.is_stale(clock.now(), STALE_AFTER));

    let resolution = Resolution::Found {
        call_sid: SID.into(),
        call_status: "completed".into(),
    };
    ledger.resolve(&found, &resolution).await.unwrap();
    assert_eq!(
        duplicate(ledger.claim(&key("found"), &to()).await.unwrap()),
        Duplicate::Placed {
            call_sid: SID.into(),
            call_status: "completed".into()
        }
    );
    assert_eq!(
        ledger
            .call(SID)
            .await
            .unwrap()
            .unwrap()
            .request_key
            .as_deref(),
        Some("found")
    );
    // Resolving again from the same (now outdated) read changes nothing.
    assert_eq!(
        ledger.resolve(&found, &Resolution::NotFound).await,
        Err(LedgerError::ClaimLost)
    );

    ledger.resolve(&lost, &Resolution::NotFound).await.unwrap();
    won(ledger.claim(&key("lost"), &to()).await.unwrap());

    // The holder recorded an outcome after the stale read: the resolution must not undo it.
    let late = won(ledger.claim(&key("late"), &to()).await.unwrap());
    clock.advance(STALE_AFTER);
    let stale = ledger.request(&key("late")).await.unwrap().unwrap();
    ledger
        .record_failed(&late, "NonRetryable.TwilioRejected", Some(21211))
        .await
        .unwrap();
    assert_eq!(
        ledger.resolve(&stale, &Resolution::NotFound).await,
        Err(LedgerError::ClaimLost)
    );
    assert!(matches!(
        duplicate(ledger.claim(&key("late"), &to()).await.unwrap()),
        Duplicate::Failed { .. }
    ));
}

fn status(seq: u32, status: CallStatus) -> StatusUpdate {
    StatusUpdate {
        call_sid: SID.into(),
        call_status: status,
        sequence_number: seq,
        call_duration: status.is_final().then_some(42),
        answered_by: status.is_final().then(|| "human".to_owned()),
        sip_response_code: status.is_final().then_some(200),
    }
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn status_callbacks_out_of_order_end_in_the_final_state_announced_once() {
    let moto = test_support::moto_server();
    let ledger = moto_ledger(&moto, &TestClock::new()).await;

    // A callback may arrive before the SID is recorded; the link is added to the same item.
    let applied = ledger
        .record_status(&status(1, CallStatus::Ringing))
        .await
        .unwrap();
    assert!(matches!(
        applied,
        StatusRecorded::Applied {
            reached_final: false,
            ..
        }
    ));
    let claim = won(ledger.claim(&key("k"), &to()).await.unwrap());
    ledger.record_placed(&claim, SID, "queued").await.unwrap();

    let mut finals = 0;
    for (seq, s) in [
        (3, CallStatus::Completed),
        (0, CallStatus::Initiated),
        (2, CallStatus::InProgress),
        (3, CallStatus::Completed),
        (1, CallStatus::Ringing),
    ] {
        match ledger.record_status(&status(seq, s)).await.unwrap() {
            StatusRecorded::Applied {
                reached_final,
                call,
            } => {
                assert_eq!((seq, s), (3, CallStatus::Completed), "{call:?}");
                finals += usize::from(reached_final);
            }
            StatusRecorded::Stale => {}
        }
    }
    // A second final status with a higher number (the number's own status callback, without
    // SequenceNumber, arrives as the newest): applied, but neither the outcome nor announced.
    match ledger
        .record_status(&status(u32::MAX, CallStatus::Canceled))
        .await
        .unwrap()
    {
        StatusRecorded::Applied {
            reached_final,
            call,
        } => {
            assert!(!reached_final);
            assert_eq!(call.final_status, Some(CallStatus::Completed));
        }
        StatusRecorded::Stale => panic!("a newer callback is applied"),
    }
    assert_eq!(finals, 1);
    let call = ledger.call(SID).await.unwrap().unwrap();
    assert_eq!(call.call_status, Some(CallStatus::Canceled));
    assert_eq!(call.final_status, Some(CallStatus::Completed));
    assert_eq!(call.sequence_number, Some(u32::MAX));
    assert_eq!(call.call_duration, Some(42));
    assert_eq!(call.answered_by.as_deref(), Some("human"));
    assert_eq!(call.sip_response_code, Some(200));
    assert_eq!(call.request_key.as_deref(), Some("k"));
}

#[tokio::test]
async fn throttled_dynamodb_is_a_retryable_error() {
    let throttled = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
        PutItemError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder()
                .message("Rate of requests exceeds the allowed throughput")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&throttled]);
    let err = Ledger::new(client, TABLE)
        .claim(&key("k"), &to())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::Unavailable { reason, .. } if reason == "ProvisionedThroughputExceededException"),
        "{err:?}"
    );
    assert!(err.is_retryable());

    let missing = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
        PutItemError::ResourceNotFoundException(
            ResourceNotFoundException::builder()
                .message("Requested resource not found")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&missing]);
    let err = Ledger::new(client, TABLE)
        .claim(&key("k"), &to())
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Refused { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_marker_is_new_exactly_once() {
    let moto = test_support::moto_server();
    let ledger = moto_ledger(&moto, &TestClock::new()).await;
    let mut firsts = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let ledger = ledger.clone();
        firsts.spawn(async move { ledger.first_time("voicemail#RE1").await.unwrap() });
    }
    let mut new = 0;
    while let Some(first) = firsts.join_next().await {
        new += usize::from(first.unwrap());
    }
    assert_eq!(new, 1);
    assert!(ledger.first_time("voicemail#RE2").await.unwrap());
}

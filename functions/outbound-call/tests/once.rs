//! At most one call per request, whatever delivers it how often: `once::place_once` with the
//! ledger on moto_server and a counting stand-in for the request to Twilio.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use outbound_call::once::{Fate, OnceError, Placement, place_once};
use twilio_voice::calls::CallCreated;
use twilio_voice::ledger::{Duplicate, IdempotencyKey, Ledger, Resolution, STALE_AFTER};
use twilio_voice::phone::PhoneNumber;

const SID: &str = "CA0123456789abcdef0123456789abcdef";

#[derive(Debug, PartialEq)]
enum Failure {
    Unreachable,
    ServerError,
    Rejected,
}

fn fate(f: &Failure) -> Fate {
    match f {
        Failure::Unreachable => Fate::NothingPlaced,
        Failure::ServerError => Fate::MayExist,
        Failure::Rejected => Fate::Refused {
            error_type: "NonRetryable.TwilioRejected",
            twilio_code: Some(21211),
        },
    }
}

/// Twilio as far as these tests need it: counts requests, answers what it is told.
#[derive(Clone, Default)]
struct Twilio {
    requests: Arc<AtomicUsize>,
    lookups: Arc<AtomicUsize>,
}

impl Twilio {
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
    async fn send(&self, answer: Result<(), Failure>) -> Result<CallCreated, Failure> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        answer.map(|()| CallCreated {
            sid: SID.into(),
            status: "queued".into(),
        })
    }
}

struct Setup {
    ledger: Ledger,
    clock: Arc<Mutex<SystemTime>>,
    twilio: Twilio,
    _moto: test_support::StandIn,
}

async fn setup() -> Setup {
    let moto = test_support::moto_server();
    let config = test_support::aws_config(&moto.url());
    let dynamodb = twilio_voice::aws::dynamodb(&config);
    test_support::create_ledger_table(&dynamodb, "ledger").await;
    let clock = Arc::new(Mutex::new(UNIX_EPOCH + Duration::from_secs(1_795_000_000)));
    let read = clock.clone();
    Setup {
        ledger: Ledger::new(dynamodb, "ledger").with_clock(Arc::new(move || *read.lock().unwrap())),
        clock,
        twilio: Twilio::default(),
        _moto: moto,
    }
}

impl Setup {
    async fn deliver(
        &self,
        key: &str,
        answer: Result<(), Failure>,
        found: Option<Resolution>,
    ) -> Result<Placement, OnceError<Failure>> {
        let twilio = self.twilio.clone();
        let lookups = self.twilio.lookups.clone();
        place_once(
            &self.ledger,
            &IdempotencyKey::new(key).unwrap(),
            &PhoneNumber::parse("+81312345678").unwrap(),
            || async move { twilio.send(answer).await },
            fate,
            |_| async move {
                lookups.fetch_add(1, Ordering::SeqCst);
                found
            },
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs moto_server (make test runs it)"]
async fn the_same_event_twice_at_once_dials_once() {
    let s = Arc::new(setup().await);
    let (a, b) = tokio::join!(
        {
            let s = s.clone();
            async move { s.deliver("same", Ok(()), None).await }
        },
        {
            let s = s.clone();
            async move { s.deliver("same", Ok(()), None).await }
        }
    );
    assert_eq!(s.twilio.requests(), 1);
    let (placed, other) = if a.is_ok() { (a, b) } else { (b, a) };
    assert!(placed.unwrap().new);
    // The other saw the claim in flight, or (had it come later) the recorded SID: never a dial.
    match other {
        Err(OnceError::Earlier(Duplicate::OutcomeUnknown)) => {}
        Ok(Placement {
            created,
            new: false,
        }) => assert_eq!(created.sid, SID),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn again_after_success_answers_the_same_sid_without_a_request() {
    let s = setup().await;
    assert!(s.deliver("k", Ok(()), None).await.unwrap().new);
    let again = s.deliver("k", Ok(()), None).await.unwrap();
    assert_eq!((again.created.sid.as_str(), again.new), (SID, false));
    assert_eq!(s.twilio.requests(), 1);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn after_a_5xx_the_outcome_is_unknown_until_the_calls_list_decides() {
    let s = setup().await;
    assert!(matches!(
        s.deliver("k", Err(Failure::ServerError), None).await,
        Err(OnceError::Attempt(Failure::ServerError))
    ));
    // Redelivered at once: never a second request, and no lookup yet.
    assert!(matches!(
        s.deliver("k", Ok(()), None).await,
        Err(OnceError::Earlier(Duplicate::OutcomeUnknown))
    ));
    assert_eq!(s.twilio.lookups.load(Ordering::SeqCst), 0);
    // Stale: the Calls list found the call.
    *s.clock.lock().unwrap() += STALE_AFTER;
    let found = Resolution::Found {
        call_sid: SID.into(),
        call_status: "completed".into(),
    };
    let resolved = s.deliver("k", Ok(()), Some(found)).await.unwrap();
    assert_eq!((resolved.created.sid.as_str(), resolved.new), (SID, false));
    assert_eq!(s.twilio.requests(), 1);
    assert_eq!(s.twilio.lookups.load(Ordering::SeqCst), 1);
    // From then on the recorded SID answers, without a lookup.
    s.deliver("k", Ok(()), None).await.unwrap();
    assert_eq!(s.twilio.lookups.load(Ordering::SeqCst), 1);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_stale_claim_not_in_the_calls_list_is_placed_once_more() {
    let s = setup().await;
    let _ = s.deliver("k", Err(Failure::ServerError), None).await;
    *s.clock.lock().unwrap() += STALE_AFTER;
    let placed = s
        .deliver("k", Ok(()), Some(Resolution::NotFound))
        .await
        .unwrap();
    assert!(placed.new);
    assert_eq!(s.twilio.requests(), 2);
    // ... and recorded under the same key: the next delivery gets it.
    let again = s.deliver("k", Ok(()), None).await.unwrap();
    assert!(!again.new);
    assert_eq!(s.twilio.requests(), 2);
    // Unanswered lookup: nothing decided, nothing sent.
    let _ = s.deliver("j", Err(Failure::ServerError), None).await;
    *s.clock.lock().unwrap() += STALE_AFTER;
    assert!(matches!(
        s.deliver("j", Ok(()), None).await,
        Err(OnceError::Earlier(Duplicate::OutcomeUnknown))
    ));
    assert_eq!(s.twilio.requests(), 3);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn nothing_sent_is_tried_again_and_a_refusal_is_repeated() {
    let s = setup().await;
    assert!(
        s.deliver("u", Err(Failure::Unreachable), None)
            .await
            .is_err()
    );
    assert!(s.deliver("u", Ok(()), None).await.unwrap().new);
    assert_eq!(s.twilio.requests(), 2);

    assert!(s.deliver("r", Err(Failure::Rejected), None).await.is_err());
    match s.deliver("r", Ok(()), None).await {
        Err(OnceError::Earlier(Duplicate::Failed {
            error_type,
            twilio_code,
        })) => assert_eq!(
            (error_type.as_str(), twilio_code),
            ("NonRetryable.TwilioRejected", Some(21211))
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.twilio.requests(), 3);
}

#[tokio::test]
async fn dynamodb_throttled_sends_nothing_and_is_retryable() {
    let throttled = mock!(aws_sdk_dynamodb::Client::put_item).then_error(|| {
        PutItemError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder().build(),
        )
    });
    let ledger = Ledger::new(
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&throttled]),
        "ledger",
    );
    let twilio = Twilio::default();
    let sender = twilio.clone();
    let result = place_once(
        &ledger,
        &IdempotencyKey::new("k").unwrap(),
        &PhoneNumber::parse("+81312345678").unwrap(),
        || async move { sender.send(Ok(())).await },
        fate,
        |_| async { None },
    )
    .await;
    match result {
        Err(OnceError::Ledger(e)) => assert!(e.is_retryable(), "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(twilio.requests(), 0);
}

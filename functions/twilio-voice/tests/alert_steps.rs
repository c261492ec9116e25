//! Alert steps in the call ledger, on `moto_server`: the acknowledgement and the close are each
//! decided once by a conditional write, on the ledger's clock.

use std::num::NonZeroU8;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use twilio_voice::ledger::{
    AckOutcome, AlertStep, ClaimOutcome, Contact, Ledger, RequestState, Speech,
};
use twilio_voice::phone::PhoneNumber;
use twilio_voice::stepfunctions::TaskToken;

const TABLE: &str = "call-ledger";
const SID: &str = "CA0123456789abcdef0123456789abcdef";
const OTHER_SID: &str = "CAffffffffffffffffffffffffffffffff";
const START: u64 = 1_795_000_000;

struct Fixture {
    ledger: Ledger,
    clock: Arc<Mutex<SystemTime>>,
    _moto: test_support::StandIn,
}

impl Fixture {
    async fn new() -> Self {
        let moto = test_support::moto_server();
        let client = twilio_voice::aws::dynamodb(&test_support::aws_config(&moto.url()));
        test_support::create_ledger_table(&client, TABLE).await;
        let clock = Arc::new(Mutex::new(UNIX_EPOCH + Duration::from_secs(START)));
        let read = clock.clone();
        let ledger = Ledger::new(client, TABLE).with_clock(Arc::new(move || *read.lock().unwrap()));
        Self {
            ledger,
            clock,
            _moto: moto,
        }
    }

    fn advance(&self, secs: u64) {
        *self.clock.lock().unwrap() += Duration::from_secs(secs);
    }
}

fn step(attempt: u32) -> AlertStep {
    AlertStep {
        alert_id: "alarm-db-cpu-1a2b3c4d".into(),
        attempt,
        contact: Contact {
            name: Some("山田".into()),
            number: PhoneNumber::parse("+815012345678").unwrap(),
        },
        speech: Speech {
            message: "データベースの CPU 使用率が高い状態です".into(),
            language: "ja-JP".into(),
            voice: Some("Polly.Takumi".into()),
        },
        max_prompts: NonZeroU8::new(3).unwrap(),
        task_token: TaskToken::new("AAAA-token-of-step".repeat(20)).unwrap(),
        step_deadline: START + 120,
    }
}

async fn claimed(f: &Fixture, step: &AlertStep) {
    let key = step.key().unwrap();
    let ClaimOutcome::Won(claim) = f.ledger.claim_alert(&key, step).await.unwrap() else {
        panic!("first claim must win");
    };
    f.ledger.record_placed(&claim, SID, "queued").await.unwrap();
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn the_step_round_trips_and_a_second_delivery_is_a_duplicate() {
    let f = Fixture::new().await;
    let step = step(1);
    let key = step.key().unwrap();
    claimed(&f, &step).await;
    let record = f.ledger.alert_step(&key).await.unwrap().unwrap();
    assert_eq!(record.step, step);
    assert_eq!(record.state, RequestState::Placed);
    assert_eq!(record.call_sid.as_deref(), Some(SID));
    assert!(record.acknowledged.is_none() && !record.closed);
    assert!(matches!(
        f.ledger.claim_alert(&key, &step).await.unwrap(),
        ClaimOutcome::Duplicate(_)
    ));
    // A plain request is not an alert step.
    let plain = twilio_voice::ledger::IdempotencyKey::new("plain").unwrap();
    f.ledger.claim(&plain, &step.contact.number).await.unwrap();
    assert_eq!(f.ledger.alert_step(&plain).await.unwrap(), None);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn the_first_key_acknowledges_and_a_replay_does_not_again() {
    let f = Fixture::new().await;
    let step = step(1);
    let key = step.key().unwrap();
    claimed(&f, &step).await;
    f.advance(30);
    let AckOutcome::First(first) = f.ledger.acknowledge(&key, SID).await.unwrap() else {
        panic!("the first key acknowledges");
    };
    let ack = first.acknowledged.clone().unwrap();
    assert_eq!((ack.at, ack.call_sid.as_str()), (START + 30, SID));
    assert!(!first.delivered);
    f.advance(1);
    // A replay (or the SDK's retry of a write whose answer was lost) finds it acknowledged and
    // not delivered: the caller must still send it.
    match f.ledger.acknowledge(&key, SID).await.unwrap() {
        AckOutcome::Already(again) => {
            assert_eq!(again.acknowledged, Some(ack.clone()));
            assert!(!again.delivered);
        }
        other => panic!("a replay is Already, got {other:?}"),
    }
    // Acknowledged: nobody may close it any more.
    assert_eq!(f.ledger.close_alert_step(&key).await.unwrap(), None);
    f.ledger.mark_delivered(&key).await.unwrap();
    f.advance(1);
    f.ledger.mark_delivered(&key).await.unwrap();
    match f.ledger.acknowledge(&key, SID).await.unwrap() {
        AckOutcome::Already(again) => {
            assert!(again.delivered);
            assert_eq!(again.acknowledged, Some(ack));
        }
        other => panic!("a replay is Already, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn only_an_acknowledged_step_can_be_delivered() {
    let f = Fixture::new().await;
    let step = step(1);
    let key = step.key().unwrap();
    claimed(&f, &step).await;
    assert!(f.ledger.mark_delivered(&key).await.is_err());
    let record = f.ledger.alert_step(&key).await.unwrap().unwrap();
    assert!(!record.delivered && record.acknowledged.is_none());
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_key_after_the_deadline_or_from_another_call_counts_for_nothing() {
    let f = Fixture::new().await;
    let step = step(2);
    let key = step.key().unwrap();
    claimed(&f, &step).await;
    assert_eq!(
        f.ledger.acknowledge(&key, OTHER_SID).await.unwrap(),
        AckOutcome::OtherCall
    );
    f.advance(120);
    assert!(matches!(
        f.ledger.acknowledge(&key, SID).await.unwrap(),
        AckOutcome::TimedOut(_)
    ));
    let unknown = twilio_voice::ledger::IdempotencyKey::new("alert:nothing:1").unwrap();
    assert_eq!(
        f.ledger.acknowledge(&unknown, SID).await.unwrap(),
        AckOutcome::Unknown
    );
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_step_is_closed_once_and_a_closed_step_cannot_be_acknowledged() {
    let f = Fixture::new().await;
    let step = step(1);
    let key = step.key().unwrap();
    claimed(&f, &step).await;
    let closed = f.ledger.close_alert_step(&key).await.unwrap().unwrap();
    assert!(closed.closed);
    assert_eq!(closed.step.task_token, step.task_token);
    assert_eq!(f.ledger.close_alert_step(&key).await.unwrap(), None);
    assert!(matches!(
        f.ledger.acknowledge(&key, SID).await.unwrap(),
        AckOutcome::TimedOut(_)
    ));
}

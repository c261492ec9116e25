//! Phone alerts end to end, on loopback, without Docker: moto_server runs the repository's state
//! machine (`statemachine/alert-escalation.asl.json`) with SQS, DynamoDB and EventBridge; this
//! test plays Lambda's SQS event source mapping for outbound-call; the Twilio simulator
//! (`.ci/twilio_sim.py`) plays the callees, fetching incoming-call's TwiML from its handler served
//! over HTTP in this process, pressing keys, and signing every webhook with the auth token.
//!
//! Each scenario asserts the calls the simulator received, in order, and the one event the
//! escalation published (read from a rule's queue target, as any subscriber gets it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sfn::types::ExecutionStatus;
use outbound_call::config::Config;
use outbound_call::handler::{self, App};
use serde_json::{Value, json};
use test_support::{EventInbox, StandIn, TwilioSim};
use twilio_voice::calls::Deadline;
use twilio_voice::events::DomainEvent;
use twilio_voice::ledger::{IdempotencyKey, Ledger};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const ACCOUNT: &str = "AC00000000000000000000000000000000";
const FROM: &str = "+815000000000";
const A: &str = "+819000000001";
const B: &str = "+819000000002";
const C: &str = "+819000000003";
const ASL: &str = include_str!("../../../statemachine/alert-escalation.asl.json");

/// Everything one scenario runs on; dropped at its end (the pump stops, the stand-ins die).
struct Stack {
    outbound: Arc<App>,
    sfn: aws_sdk_sfn::Client,
    state_machine_arn: String,
    inbox: EventInbox,
    ledger: Ledger,
    sim: TwilioSim,
    incoming_port: u16,
    pump: tokio::task::JoinHandle<()>,
    _moto: StandIn,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

struct Setup {
    /// The simulator's scripts, by number.
    numbers: Value,
    /// The escalation policy `oncall` (contacts, rounds, ...).
    policy: Value,
    /// Real seconds per simulated second (0: calls take no time).
    time_scale: f64,
}

async fn stack(setup: Setup) -> Stack {
    // Both functions' log lines, shown for a failing scenario.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_test_writer()
        .try_init();
    let moto = test_support::moto_server_running_state_machines();
    let aws = test_support::aws_config(&moto.url());
    let ddb = twilio_voice::aws::dynamodb(&aws);
    test_support::create_ledger_table(&ddb, "ledger").await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let (queue_url, queue_arn, _dlq) = test_support::bulk_queue(&sqs, "calls", 5).await;
    let inbox = EventInbox::subscribe(&aws, "default").await;
    let ssm = test_support::ssm_client(&moto.url()).await;
    test_support::put_secure(&ssm, "/twilio/account-sid", ACCOUNT).await;
    test_support::put_secure(&ssm, "/twilio/auth-token", TOKEN).await;
    let policies = json!({"default": "oncall", "policies": {"oncall": setup.policy}});
    test_support::put_secure(&ssm, "/alerts/policies", &policies.to_string()).await;

    let sfn = aws_sdk_sfn::Client::new(&aws);
    let definition = ASL
        .replace("${AlertQueueUrl}", &queue_url)
        .replace("${EventBusName}", "default")
        .replace("${EventSource}", twilio_voice::events::SOURCE);
    let state_machine_arn = sfn
        .create_state_machine()
        .name("alert-escalation")
        .definition(definition)
        .role_arn("arn:aws:iam::123456789012:role/alert-escalation")
        .send()
        .await
        .expect("create_state_machine")
        .state_machine_arn;

    let incoming_port = serve_incoming(&moto.url(), &state_machine_arn, &aws).await;
    let sim = TwilioSim::start(&json!({
        "account_sid": ACCOUNT,
        "auth_token": TOKEN,
        "numbers": setup.numbers,
        "default_script": {"answer": "no-answer"},
        "plain_http": true,
        "time_scale": setup.time_scale,
    }));

    let status_callback = format!("https://127.0.0.1:{incoming_port}/status");
    let sim_url = sim.url();
    let vars = [
        ("TWILIO_ACCOUNT_SID_PARAMETER", "/twilio/account-sid"),
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/twilio/auth-token"),
        ("ALLOWED_DESTINATION_PREFIXES", "+81"),
        ("TWILIO_FROM_NUMBER", FROM),
        ("TWILIO_API_BASE_URL", sim_url.as_str()),
        ("CALL_LEDGER_TABLE", "ledger"),
        ("BULK_CALLS_QUEUE_URL", queue_url.as_str()),
        ("EVENT_BUS_NAME", "default"),
        ("STATUS_CALLBACK_URL", status_callback.as_str()),
        ("CALLS_PER_SECOND", "100"),
        ("BULK_MAX_CONCURRENCY", "2"),
        ("ALERT_STATE_MACHINE_ARN", state_machine_arn.as_str()),
        ("ESCALATION_POLICIES_PARAMETER", "/alerts/policies"),
    ];
    let config = Config::from_lookup(test_support::vars(&vars)).expect("outbound-call's config");
    let outbound = Arc::new(
        App::init(config.clone(), ssm.clone())
            .await
            .expect("outbound-call starts")
            .with_outcomes(&config, &aws)
            .with_alerts(&config, &aws, ssm)
            .await
            .expect("the escalation policies are valid"),
    );
    let pump = tokio::spawn(event_source_mapping(
        sqs,
        queue_url,
        queue_arn,
        outbound.clone(),
    ));
    Stack {
        outbound,
        sfn,
        state_machine_arn,
        inbox,
        ledger: Ledger::new(ddb, "ledger"),
        sim,
        incoming_port,
        pump,
        _moto: moto,
    }
}

/// incoming-call, as its Function URL would run it, on a loopback port.
async fn serve_incoming(moto: &str, state_machine_arn: &str, aws: &aws_types::SdkConfig) -> u16 {
    use incoming_call::config::Config;
    use incoming_call::webhook::{App, handle};
    let vars = [
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/twilio/auth-token"),
        ("CALL_LEDGER_TABLE", "ledger"),
        ("EVENT_BUS_NAME", "default"),
        ("ALERT_STATE_MACHINE_ARN", state_machine_arn),
    ];
    let config = Config::from_lookup(test_support::vars(&vars)).expect("incoming-call's config");
    let ssm = test_support::ssm_client(moto).await;
    let app = Arc::new(
        App::init(config.clone(), ssm)
            .await
            .expect("incoming-call starts")
            .with_outcomes(&config, aws)
            .with_alerts(&config, aws),
    );
    test_support::serve_function_url(move |event| {
        let app = app.clone();
        async move { handle(event, &app).await }
    })
    .await
}

/// Lambda's SQS event source mapping for outbound-call: batches of up to 10, what the answer
/// does not report is deleted.
async fn event_source_mapping(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    app: Arc<App>,
) {
    loop {
        test_support::drain_queue(&sqs, &queue_url, &queue_arn, 10, |event| {
            let app = app.clone();
            async move {
                handler::handle(event, &app, Deadline::NONE)
                    .await
                    .expect("an SQS batch is always answered")
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Stack {
    /// Starts an escalation as the EventBridge rule does: the sample alarm event, with its
    /// state-change time set to `time`.
    async fn alarm(&self, time: &str) -> Value {
        let mut event: Value = test_support::event("outbound-call-alarm.json");
        event["detail"]["state"]["timestamp"] = json!(time);
        handler::handle(event, &self.outbound, Deadline::NONE)
            .await
            .expect("the alarm starts an escalation")
    }

    /// `POST /alerts` with `body`: the status and the answer.
    async fn post_alert(&self, body: Value, key: Option<&str>) -> (u64, Value) {
        let mut event: Value = test_support::event("outbound-call-http-api.json");
        event["rawPath"] = json!("/alerts");
        event["routeKey"] = json!("POST /alerts");
        event["requestContext"]["http"]["path"] = json!("/alerts");
        event["body"] = json!(body.to_string());
        event["isBase64Encoded"] = json!(false);
        if let Some(key) = key {
            event["headers"]["idempotency-key"] = json!(key);
        }
        let answer = handler::handle(event, &self.outbound, Deadline::NONE)
            .await
            .unwrap();
        let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
        (answer["statusCode"].as_u64().unwrap(), body)
    }

    /// Waits for the execution to end; its status.
    async fn finished(&self, execution_arn: &str) -> ExecutionStatus {
        let start = Instant::now();
        loop {
            let out = self
                .sfn
                .describe_execution()
                .execution_arn(execution_arn)
                .send()
                .await
                .expect("describe_execution");
            if out.status != ExecutionStatus::Running {
                return out.status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the escalation still runs after 120 s; the simulator said:\n{}",
                self.sim.transcript().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// How each `Call` step of the execution ended: the error it failed with (`States.Timeout`
    /// for a step that timed out), or `succeeded`.
    async fn call_step_endings(&self, execution_arn: &str) -> Vec<String> {
        use aws_sdk_sfn::types::HistoryEventType as T;
        let history = self
            .sfn
            .get_execution_history()
            .execution_arn(execution_arn)
            .max_results(1000)
            .send()
            .await
            .expect("get_execution_history");
        history
            .events()
            .iter()
            .filter_map(|e| match e.r#type() {
                T::TaskFailed => e
                    .task_failed_event_details()
                    .filter(|d| d.resource_type() == "sqs")
                    .map(|d| d.error().unwrap_or("?").to_owned()),
                T::TaskTimedOut => e
                    .task_timed_out_event_details()
                    .filter(|d| d.resource_type() == "sqs")
                    .map(|_| "States.Timeout".to_owned()),
                T::TaskSucceeded => e
                    .task_succeeded_event_details()
                    .filter(|d| d.resource_type() == "sqs")
                    .map(|_| "succeeded".to_owned()),
                _ => None,
            })
            .skip(1) // the Plan step
            .collect()
    }

    /// The numbers called, in order, and how each call ended.
    async fn calls(&self) -> Vec<(String, String)> {
        let log = self.sim.idle_log().await;
        log["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .map(|c| {
                (
                    c["to"].as_str().unwrap_or_default().to_owned(),
                    c["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// The alert events published so far.
    async fn alert_events(&self) -> Vec<DomainEvent> {
        self.inbox
            .take()
            .await
            .into_iter()
            .filter_map(|envelope| {
                let detail_type = envelope["detail-type"].as_str()?.to_owned();
                detail_type.starts_with("Alert ").then(|| {
                    DomainEvent::parse(&detail_type, envelope["detail"].clone())
                        .expect("an alert event parses")
                })
            })
            .collect()
    }

    /// Runs the alarm to the end of its escalation; the calls and the events.
    async fn escalate(&self) -> (String, Vec<(String, String)>, Vec<DomainEvent>) {
        let started = self.alarm("2026-11-25T05:00:12.345+0000").await;
        assert_eq!(started["started"], true, "{started}");
        let arn = started["execution_arn"].as_str().unwrap().to_owned();
        assert_eq!(self.finished(&arn).await, ExecutionStatus::Succeeded);
        let calls = self.calls().await;
        eprintln!("simulator:\n{}", self.sim.transcript().join("\n"));
        // The event is put as the execution ends; give the rule's target a moment.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let events = self.alert_events().await;
        (
            started["alert_id"].as_str().unwrap().to_owned(),
            calls,
            events,
        )
    }
}

fn to(numbers: &[(&str, &str)]) -> Vec<(String, String)> {
    numbers
        .iter()
        .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
        .collect()
}

fn policy(contacts: &[&str], rounds: u32) -> Value {
    json!({
        "contacts": contacts.iter().enumerate().map(|(i, n)| json!({"name": format!("contact-{}", i + 1), "number": n})).collect::<Vec<_>>(),
        "rounds": rounds,
        "round_delay_seconds": 1,
        "ring_timeout_seconds": 20,
        "step_timeout_seconds": 60,
        "language": "ja-JP",
        "max_prompts": 2
    })
}

fn acknowledged_by(events: &[DomainEvent], number: &str, calls: u32) {
    match events {
        [DomainEvent::AlertAcknowledged(ack)] => {
            assert_eq!(ack.acknowledged_by.number.as_str(), number);
            assert_eq!(ack.calls, calls);
            assert!(ack.call_sid.starts_with("CA"), "{ack:?}");
        }
        other => panic!("expected one Alert Acknowledged, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server and the Twilio simulator (make test-deps)"]
async fn the_first_contact_presses_1() {
    let stack = stack(Setup {
        numbers: json!({A: {"answer": "human", "keys": ["1"]}}),
        policy: policy(&[A, B], 1),
        time_scale: 0.0,
    })
    .await;
    let (_, calls, events) = stack.escalate().await;
    assert_eq!(calls, to(&[(A, "completed")]));
    acknowledged_by(&events, A, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server and the Twilio simulator (make test-deps)"]
async fn no_answer_then_the_second_contact_presses_1() {
    let stack = stack(Setup {
        numbers: json!({A: {"answer": "no-answer"}, B: {"answer": "human", "keys": ["1"]}}),
        policy: policy(&[A, B, C], 1),
        time_scale: 0.0,
    })
    .await;
    let (_, calls, events) = stack.escalate().await;
    assert_eq!(calls, to(&[(A, "no-answer"), (B, "completed")]));
    acknowledged_by(&events, B, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server and the Twilio simulator (make test-deps)"]
async fn busy_then_a_machine_then_star_and_1() {
    let stack = stack(Setup {
        numbers: json!({
            A: {"answer": "busy"},
            B: {"answer": "machine"},
            C: {"answer": "human", "keys": ["*", "1"]},
        }),
        policy: policy(&[A, B, C], 1),
        time_scale: 0.0,
    })
    .await;
    let (_, calls, events) = stack.escalate().await;
    assert_eq!(
        calls,
        to(&[(A, "busy"), (B, "completed"), (C, "completed")])
    );
    acknowledged_by(&events, C, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server and the Twilio simulator (make test-deps)"]
async fn nobody_in_two_rounds_of_three() {
    let stack = stack(Setup {
        numbers: json!({A: {"answer": "no-answer"}, B: {"answer": "busy"}, C: {"answer": "human", "keys": []}}),
        policy: policy(&[A, B, C], 2),
        time_scale: 0.0,
    })
    .await;
    let (alert_id, calls, events) = stack.escalate().await;
    assert_eq!(
        calls,
        to(&[
            (A, "no-answer"),
            (B, "busy"),
            (C, "completed"),
            (A, "no-answer"),
            (B, "busy"),
            (C, "completed")
        ])
    );
    match events.as_slice() {
        [DomainEvent::AlertUnacknowledged(un)] => {
            assert_eq!(
                (un.alert_id.as_str(), un.calls, un.rounds),
                (alert_id.as_str(), 6, 2)
            );
        }
        other => panic!("expected one Alert Unacknowledged, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server and the Twilio simulator (make test-deps)"]
async fn the_same_alarm_twice_is_one_escalation() {
    // A's phone rings 15 simulated seconds, 3 real ones: the escalation still runs when the
    // later state change arrives (milliseconds after the first), which is what the check is
    // about. (The alarm's long message is spoken at the same scale.)
    let stack = stack(Setup {
        numbers: json!({A: {"answer": "human", "ring_seconds": 15, "keys": ["1"]}}),
        policy: policy(&[A, B], 1),
        time_scale: 0.2,
    })
    .await;
    let time = "2026-11-25T05:00:12.345+0000";
    let first = stack.alarm(time).await;
    // The same state change delivered again, and a later state change of the same alarm while
    // its escalation runs.
    let again = stack.alarm(time).await;
    let later = stack.alarm("2026-11-25T05:03:12.345+0000").await;
    assert_eq!(first["started"], true);
    for other in [&again, &later] {
        assert_eq!(other["started"], false, "{other}");
        assert_eq!(other["execution_arn"], first["execution_arn"], "{other}");
    }
    let arn = first["execution_arn"].as_str().unwrap();
    assert_eq!(stack.finished(arn).await, ExecutionStatus::Succeeded);
    let executions = stack
        .sfn
        .list_executions()
        .state_machine_arn(&stack.state_machine_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(executions.executions().len(), 1);
    assert_eq!(stack.calls().await, to(&[(A, "completed")]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    acknowledged_by(&stack.alert_events().await, A, 1);
    // An OK state change starts nothing.
    let mut ok: Value = test_support::event("outbound-call-alarm.json");
    ok["detail"]["state"]["value"] = json!("OK");
    let answer = handler::handle(ok, &stack.outbound, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(answer["started"], false);
}

/// The Gather's digits, as Twilio posts them, to the step of `key`; signed with `token`.
async fn post_keys(port: u16, key: &IdempotencyKey, call_sid: &str, token: &str) -> u16 {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("key", key.as_str())
        .append_pair("prompt", "1")
        .finish();
    let signed = format!("https://127.0.0.1:{port}/alert-keys?{query}");
    let params = [
        ("AccountSid", ACCOUNT),
        ("CallSid", call_sid),
        ("Digits", "1"),
        ("From", FROM),
        ("To", A),
    ];
    let pairs: Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> = params
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let signature = twilio_voice::signature::sign(
        &signed,
        &pairs,
        &twilio_voice::credentials::AuthToken::new(token),
    );
    reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/alert-keys?{query}"))
        .header("x-twilio-signature", signature)
        .form(&params)
        .send()
        .await
        .expect("incoming-call answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server and the Twilio simulator (make test-deps)"]
async fn a_forged_acknowledgement_is_refused() {
    // A rings for 3 real seconds, then answers and hangs up without a key.
    let stack = stack(Setup {
        numbers: json!({A: {"answer": "human", "ring_seconds": 3, "hangup_after_gathers": 0}}),
        policy: policy(&[A], 1),
        time_scale: 1.0,
    })
    .await;
    let (_, started) = stack
        .post_alert(json!({"message": "テストです"}), None)
        .await;
    let alert_id = started["alert_id"].as_str().unwrap();
    let key = IdempotencyKey::new(format!("alert:{alert_id}:1")).unwrap();
    // While it rings: the step is waiting, and its call is known.
    let call_sid = loop {
        if let Some(sid) = stack.sim.log().await["calls"][0]["sid"].as_str() {
            break sid.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let forged = post_keys(
        stack.incoming_port,
        &key,
        &call_sid,
        "ffffffffffffffffffffffffffffffff",
    )
    .await;
    assert_eq!(forged, 403);
    let arn = started["execution_arn"].as_str().unwrap();
    assert_eq!(stack.finished(arn).await, ExecutionStatus::Succeeded);
    let step = stack
        .ledger
        .alert_step(&key)
        .await
        .unwrap()
        .expect("the step");
    assert_eq!(step.acknowledged, None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        stack.alert_events().await.as_slice(),
        [DomainEvent::AlertUnacknowledged(un)] if un.calls == 1
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server and the Twilio simulator (make test-deps)"]
async fn a_replayed_acknowledgement_acknowledges_nothing_more() {
    let stack = stack(Setup {
        numbers: json!({A: {"answer": "human", "keys": ["1"]}}),
        policy: policy(&[A, B], 1),
        time_scale: 0.0,
    })
    .await;
    let (alert_id, calls, events) = stack.escalate().await;
    assert_eq!(calls, to(&[(A, "completed")]));
    acknowledged_by(&events, A, 1);
    let key = IdempotencyKey::new(format!("alert:{alert_id}:1")).unwrap();
    let first = stack.ledger.alert_step(&key).await.unwrap().unwrap();
    let log = stack.sim.log().await;
    let gather = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["kind"] == "webhook"
                && e["purpose"] == "gather"
                && e["params"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|kv| kv[0] == "Digits" && kv[1] == "1"))
        })
        .expect("the keypress's webhook");
    let replayed = stack.sim.replay(gather["n"].as_u64().unwrap()).await;
    assert_eq!(replayed["status"], 200, "{replayed}");
    assert_eq!(
        replayed["response"], gather["response"],
        "the caller hears the same confirmation"
    );
    let after = stack.ledger.alert_step(&key).await.unwrap().unwrap();
    assert_eq!(after.acknowledged, first.acknowledged);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        stack.alert_events().await.is_empty(),
        "no second acknowledgement"
    );
    // Step Functions took one success for the call's step.
    let arn = execution_arn_of(&stack, &alert_id).await;
    assert_eq!(stack.call_step_endings(&arn).await, ["succeeded"]);
}

/// The ARN of the execution named `alert_id`.
async fn execution_arn_of(stack: &Stack, alert_id: &str) -> String {
    stack
        .sfn
        .list_executions()
        .state_machine_arn(&stack.state_machine_arn)
        .send()
        .await
        .unwrap()
        .executions()
        .iter()
        .find(|e| e.name() == alert_id)
        .expect("the execution")
        .execution_arn()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server and the Twilio simulator (make test-deps)"]
async fn a_key_after_the_step_timed_out_does_not_acknowledge() {
    // In real seconds: the step times out 8 s after it starts, so a key counts until 6 s (the
    // ledger keeps 2 s before Step Functions' timeout); A's phone rings 3 s, the short message
    // and the prompt are spoken, and A hesitates 4 s more before pressing 1 (the Gather waits
    // 5 s). B does not answer.
    let mut p = policy(&[A, B], 1);
    p["ring_timeout_seconds"] = json!(5);
    p["step_timeout_seconds"] = json!(8);
    let stack = stack(Setup {
        numbers: json!({
            A: {"answer": "human", "ring_seconds": 3, "keys": [{"digits": "1", "after": 4}]},
            B: {"answer": "no-answer"},
        }),
        policy: p,
        time_scale: 1.0,
    })
    .await;
    let (status, started) = stack
        .post_alert(json!({"message": "テストです"}), None)
        .await;
    assert_eq!(status, 202, "{started}");
    let arn = started["execution_arn"].as_str().unwrap();
    assert_eq!(stack.finished(arn).await, ExecutionStatus::Succeeded);
    assert_eq!(
        stack.calls().await,
        to(&[(A, "completed"), (B, "no-answer")])
    );
    let key =
        IdempotencyKey::new(format!("alert:{}:1", started["alert_id"].as_str().unwrap())).unwrap();
    let step = stack.ledger.alert_step(&key).await.unwrap().unwrap();
    assert_eq!(step.acknowledged, None);
    // A pressed 1, and heard that it came too late.
    let log = stack.sim.log().await;
    let keys = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["kind"] == "webhook"
                && e["purpose"] == "gather"
                && e["params"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|kv| kv[0] == "Digits" && kv[1] == "1"))
        })
        .unwrap_or_else(|| panic!("A pressed 1: {}", stack.sim.transcript().join("\n")));
    let heard = keys["response"].as_str().unwrap();
    assert!(heard.contains("応答期限が過ぎた"), "{heard}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        stack.alert_events().await.as_slice(),
        [DomainEvent::AlertUnacknowledged(un)] if un.calls == 2
    ));
}

// ---------------------------------------------------------------- outbound-call's part alone

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server and the Twilio simulator (make test-deps)"]
async fn a_call_twilio_refuses_moves_on_at_once() {
    // The step timeout is a minute: the second contact rings within seconds only if the
    // refusal failed the first step at once.
    let stack = stack(Setup {
        numbers: json!({
            A: {"api_error": {"status": 400, "code": 21215, "message": "Account not authorized to call this number"}},
            B: {"answer": "no-answer"},
        }),
        policy: policy(&[A, B], 1),
        time_scale: 0.0,
    })
    .await;
    let started = stack.alarm("2026-11-25T05:00:12.345+0000").await;
    let arn = started["execution_arn"].as_str().unwrap();
    assert_eq!(stack.finished(arn).await, ExecutionStatus::Succeeded);
    assert_eq!(stack.calls().await, to(&[(B, "no-answer")]));
    let refused = stack.sim.log().await["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "api" && e["status"] == 400)
        .count();
    assert_eq!(refused, 1, "A's call was asked for once");
    // How each Call step ended, from the execution's history: A's failed with the refusal
    // (at once), not with the step's timeout.
    assert_eq!(
        stack.call_step_endings(arn).await,
        ["Alert.CallFailed", "Alert.NotAcknowledged"]
    );
}

/// An `alert_call` message as the state machine sends it.
/// Its step started `ago` (`None`: the message does not say when).
fn alert_call_body(alert_id: &str, attempt: u32, number: &str) -> String {
    alert_call_started(alert_id, attempt, number, Some(Duration::ZERO))
}

fn alert_call_started(alert_id: &str, attempt: u32, number: &str, ago: Option<Duration>) -> String {
    let mut body = json!({"alert_call": {
        "alert_id": alert_id, "attempt": attempt, "round": 1,
        "contact": {"name": "山田", "number": number},
        "speech": {"message": "テストです", "language": "ja-JP"},
        "max_prompts": 2, "ring_timeout_seconds": 20, "step_timeout_seconds": 60,
    }, "task_token": "not-a-real-token"});
    if let Some(ago) = ago {
        let started = aws_smithy_types::DateTime::from(std::time::SystemTime::now() - ago)
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap();
        body["alert_call"]["step_started_at"] = json!(started);
    }
    body.to_string()
}

fn sqs_event(bodies: &[(&str, &str)]) -> Value {
    json!({"Records": bodies.iter().map(|(id, body)| json!({
        "messageId": id, "receiptHandle": id, "body": body, "attributes": {},
        "messageAttributes": {}, "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:ap-northeast-1:123456789012:calls", "awsRegion": "ap-northeast-1"
    })).collect::<Vec<_>>()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server and the Twilio simulator (make test-deps)"]
async fn a_redelivered_alert_call_never_dials_twice() {
    let stack = stack(Setup {
        numbers: json!({A: {"answer": "no-answer"}}),
        policy: policy(&[A], 1),
        time_scale: 0.0,
    })
    .await;
    let body = alert_call_body("direct-1", 1, A);
    // Twice in one batch, then once more in another (SQS redelivers; two messages can carry it).
    for event in [
        sqs_event(&[("m1", &body), ("m2", &body)]),
        sqs_event(&[("m3", &body)]),
    ] {
        let answer = handler::handle(event, &stack.outbound, Deadline::NONE)
            .await
            .unwrap();
        assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    }
    let log = stack.sim.idle_log().await;
    let asked = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "api" && e["method"] == "POST")
        .count();
    assert_eq!(asked, 1, "{}", stack.sim.transcript().join("\n"));
    let key = IdempotencyKey::new("alert:direct-1:1").unwrap();
    let step = stack
        .ledger
        .alert_step(&key)
        .await
        .unwrap()
        .expect("the step");
    assert_eq!(step.step.task_token.expose(), "not-a-real-token");
    assert_eq!(step.call_sid.as_deref(), log["calls"][0]["sid"].as_str());
    // What the call fetches: incoming-call's /alert for this step, and machine detection.
    let form = &log["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "api")
        .unwrap()["form"];
    let field = |name: &str| {
        form.as_array()
            .unwrap()
            .iter()
            .find(|kv| kv[0] == name)
            .map(|kv| kv[1].as_str().unwrap().to_owned())
    };
    assert_eq!(
        field("Url").unwrap(),
        format!(
            "https://127.0.0.1:{}/alert?key=alert%3Adirect-1%3A1&prompt=1",
            stack.incoming_port
        )
    );
    assert_eq!(field("MachineDetection").as_deref(), Some("Enable"));
    assert_eq!(field("Timeout").as_deref(), Some("20"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server and the Twilio simulator (make test-deps)"]
async fn an_alert_call_past_its_steps_deadline_is_not_dialled() {
    let stack = stack(Setup {
        numbers: json!({A: {"answer": "no-answer"}}),
        policy: policy(&[A], 1),
        time_scale: 0.0,
    })
    .await;
    // Delayed in the bulk queue past its 60 s step; another due within the dial margin
    // (60 - 2 s of the ledger's margin - 57 s: 1 s left); one without its start time.
    let late = alert_call_started("late", 1, A, Some(Duration::from_secs(600)));
    let nearly = alert_call_started("nearly", 1, A, Some(Duration::from_secs(57)));
    let unbounded = alert_call_started("unbounded", 1, A, None);
    let answer = handler::handle(
        sqs_event(&[("m1", &late), ("m2", &nearly), ("m3", &unbounded)]),
        &stack.outbound,
        Deadline::NONE,
    )
    .await
    .unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "deleted: {answer}");
    let log = stack.sim.idle_log().await;
    let asked = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "api" && e["method"] == "POST")
        .count();
    assert_eq!(asked, 0, "{}", stack.sim.transcript().join("\n"));
    for id in ["late", "nearly"] {
        let key = IdempotencyKey::new(format!("alert:{id}:1")).unwrap();
        let step = stack
            .ledger
            .alert_step(&key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id}: the step is recorded"));
        assert!(step.closed, "{id}: closed");
        assert_eq!(step.call_sid, None, "{id}");
    }
    let key = IdempotencyKey::new("alert:unbounded:1").unwrap();
    assert!(stack.ledger.alert_step(&key).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server and the Twilio simulator (make test-deps)"]
async fn alerts_over_the_http_api_and_a_direct_start_with_an_unknown_policy() {
    let stack = stack(Setup {
        numbers: json!({}),
        policy: policy(&[A], 1),
        time_scale: 0.0,
    })
    .await;
    let alert = json!({"message": "バッチ処理が止まっています", "language": "ja"});
    let (status, first) = stack
        .post_alert(alert.clone(), Some("batch-2026-11-25"))
        .await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = stack
        .post_alert(alert.clone(), Some("batch-2026-11-25"))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["execution_arn"], first["execution_arn"]);
    // The same key with another alert is not that escalation: a conflict, nothing started.
    let (status, other) = stack
        .post_alert(
            json!({"message": "別のアラートです"}),
            Some("batch-2026-11-25"),
        )
        .await;
    assert_eq!(status, 409, "{other}");
    assert_eq!(other["error"]["type"], "NonRetryable.AlertConflict");
    let executions = stack
        .sfn
        .list_executions()
        .state_machine_arn(&stack.state_machine_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(executions.executions().len(), 1);
    let (status, refused) = stack
        .post_alert(json!({"message": "x", "policy": "weekend"}), None)
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["type"], "NonRetryable.InvalidEvent");

    // A direct StartExecution is not checked before it starts: its plan fails.
    let direct = stack
        .sfn
        .start_execution()
        .state_machine_arn(&stack.state_machine_arn)
        .name("direct-unknown-policy")
        .input(json!({"alert": {"message": "x", "policy": "weekend"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        stack.finished(&direct.execution_arn).await,
        ExecutionStatus::Failed
    );
    let described = stack
        .sfn
        .describe_execution()
        .execution_arn(&direct.execution_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(described.error(), Some("Alert.InvalidPlan"));
    // ... and says so on the bus, nobody having been called. (The escalation started over
    // HTTP above runs on and may announce its own end meanwhile.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failed: Vec<_> = stack
        .alert_events()
        .await
        .into_iter()
        .filter_map(|e| match e {
            DomainEvent::AlertFailed(f) => Some((f.alert_id, f.error)),
            _ => None,
        })
        .collect();
    assert_eq!(
        failed,
        [(
            "direct-unknown-policy".to_owned(),
            "Alert.InvalidPlan".to_owned()
        )]
    );
}

#[tokio::test]
async fn an_invalid_escalation_policy_stops_the_start_naming_its_parameter() {
    const POLICIES: &str = "/alerts/policies";
    let vars = [
        ("TWILIO_ACCOUNT_SID_PARAMETER", "/twilio/account-sid"),
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/twilio/auth-token"),
        ("ALLOWED_DESTINATION_PREFIXES", "+81"),
        ("TWILIO_FROM_NUMBER", FROM),
        ("TWILIO_API_BASE_URL", "http://127.0.0.1:1"),
        ("CALL_LEDGER_TABLE", "ledger"),
        (
            "BULK_CALLS_QUEUE_URL",
            "http://127.0.0.1:1/123456789012/calls",
        ),
        ("STATUS_CALLBACK_URL", "https://fn.example/status"),
        (
            "ALERT_STATE_MACHINE_ARN",
            "arn:aws:states:ap-northeast-1:123456789012:stateMachine:alerts",
        ),
        ("ESCALATION_POLICIES_PARAMETER", POLICIES),
    ];
    let config = Config::from_lookup(test_support::vars(&vars)).unwrap();
    let aws = test_support::aws_config("http://127.0.0.1:1");
    for (document, why) in [
        (
            r#"{"default": "oncall", "policies": {"oncall": {"contacts": [{"number": "+14155550100"}]}}}"#,
            "policies.oncall.contacts.0.number",
        ),
        (r#"{"default": "oncall", "policies": {}}"#, "default names"),
        ("not json", "not an escalation policy document"),
    ] {
        let values: &'static [(&'static str, &'static str)] = Box::leak(Box::new([
            ("/twilio/account-sid", ACCOUNT),
            ("/twilio/auth-token", TOKEN),
            (POLICIES, document),
        ]));
        let ssm = test_support::ssm_with(values);
        let app = App::init(config.clone(), ssm.clone()).await.unwrap();
        let err = match app.with_alerts(&config, &aws, ssm).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{document}: the start went on"),
        };
        assert!(err.contains(POLICIES) && err.contains(why), "{err}");
        assert!(!err.contains("+14155550100"), "{err}");
    }
}

//! Phone alerts through signed webhooks, against a real Step Functions execution on moto_server:
//! a one-state machine whose only step is a `sqs:sendMessage.waitForTaskToken` task, its token
//! taken from the queue and claimed into the ledger as outbound-call would, then incoming-call's
//! `/alert`, `/alert-keys` and `/status` driven as Twilio drives them.
//!
//! moto accepts a second `SendTaskSuccess` (and one after the step timed out), so "sent once" is
//! counted on the wire: every Step Functions request incoming-call makes passes an interceptor.

use std::num::NonZeroU8;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sfn::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_sfn::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sfn::types::HistoryEventType;
use aws_smithy_runtime_api::box_error::BoxError;
use incoming_call::config::Config;
use incoming_call::webhook::{App, handle};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use serde_json::{Value, json};
use twilio_voice::ledger::{AlertStep, ClaimOutcome, Contact, Ledger, Speech};
use twilio_voice::phone::PhoneNumber;
use twilio_voice::stepfunctions::{Escalations, TaskToken};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const HOST: &str = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.ap-northeast-1.on.aws";
const SID: &str = "CA0123456789abcdef0123456789abcdef";
const CALLEE: &str = "+815012345678";

/// A webhook signed for `path_and_query` with `params`, with `token`.
fn signed(path_and_query: &str, params: &[(&str, &str)], token: &str) -> ApiGatewayV2httpRequest {
    test_support::signed_webhook(&format!("{HOST}{path_and_query}"), params, token)
}

/// Records the Step Functions requests sent: `X-Amz-Target: AWSStepFunctions.<Operation>` and
/// the JSON body.
#[derive(Debug, Default, Clone)]
struct Wire(Arc<Mutex<Vec<(String, Value)>>>);

impl Wire {
    fn sent(&self, operation: &str) -> Vec<Value> {
        let target = format!("AWSStepFunctions.{operation}");
        let sent = self.0.lock().unwrap();
        sent.iter()
            .filter(|(t, _)| *t == target)
            .map(|(_, body)| body.clone())
            .collect()
    }

    fn count(&self, operation: &str) -> usize {
        self.sent(operation).len()
    }
}

impl Intercept for Wire {
    fn name(&self) -> &'static str {
        "RecordStepFunctionsRequests"
    }
    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        if let Some(target) = request.headers().get("x-amz-target") {
            let body = request
                .body()
                .bytes()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            self.0.lock().unwrap().push((target.to_owned(), body));
        }
        Ok(())
    }
}

struct Stack {
    app: App,
    sfn: aws_sdk_sfn::Client,
    wire: Wire,
    ledger: Ledger,
    execution: String,
    key: twilio_voice::ledger::IdempotencyKey,
    task_token: String,
    _moto: test_support::StandIn,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One execution waiting on its step; the step claimed in the ledger with `deadline`
/// (epoch seconds) and placed as call `SID`, as outbound-call leaves it.
async fn stack(name: &str, language: &str, deadline: u64) -> Stack {
    let moto = test_support::moto_server_running_state_machines();
    let aws = test_support::aws_config(&moto.url());
    test_support::create_ledger_table(&twilio_voice::aws::dynamodb(&aws), "ledger").await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue = sqs
        .create_queue()
        .queue_name("alert-calls")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let definition = json!({
        "StartAt": "Call",
        "States": {"Call": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            "Parameters": {"QueueUrl": queue, "MessageBody": {"task_token.$": "$$.Task.Token"}},
            "TimeoutSeconds": 300,
            "End": true
        }}
    });
    let sfn = aws_sdk_sfn::Client::new(&aws);
    let machine = sfn
        .create_state_machine()
        .name("alert-escalation")
        .definition(definition.to_string())
        .role_arn("arn:aws:iam::123456789012:role/alert-escalation")
        .send()
        .await
        .unwrap()
        .state_machine_arn;
    let execution = sfn
        .start_execution()
        .state_machine_arn(&machine)
        .name(name)
        .input("{}")
        .send()
        .await
        .unwrap()
        .execution_arn;
    let token = receive_token(&sqs, &queue).await;

    let ledger = Ledger::new(twilio_voice::aws::dynamodb(&aws), "ledger");
    let step = AlertStep {
        alert_id: name.into(),
        attempt: 1,
        contact: Contact {
            name: Some("山田".into()),
            number: PhoneNumber::parse(CALLEE).unwrap(),
        },
        speech: Speech {
            message: "データベースの CPU 使用率が高い状態です。".into(),
            language: language.into(),
            voice: Some("Polly.Takumi".into()),
        },
        max_prompts: NonZeroU8::new(3).unwrap(),
        task_token: TaskToken::new(token.clone()).unwrap(),
        step_deadline: deadline,
    };
    let key = step.key().unwrap();
    let ClaimOutcome::Won(claim) = ledger.claim_alert(&key, &step).await.unwrap() else {
        panic!("the step was claimed before");
    };
    ledger.record_placed(&claim, SID, "queued").await.unwrap();

    let config = Config::from_lookup(test_support::vars(&[
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/token"),
        ("CALL_LEDGER_TABLE", "ledger"),
        ("EVENT_BUS_NAME", "default"),
        ("ALERT_STATE_MACHINE_ARN", &machine),
    ]))
    .unwrap();
    let mut app = App::init(config.clone(), test_support::ssm_with(&[("/token", TOKEN)]))
        .await
        .unwrap()
        .with_outcomes(&config, &aws)
        .with_alerts(&config, &aws);
    let wire = Wire::default();
    let counted = aws_sdk_sfn::config::Builder::from(&aws)
        .interceptor(wire.clone())
        .build();
    app.alerts.as_mut().expect("alerts configured").escalations =
        Escalations::new(aws_sdk_sfn::Client::from_conf(counted));
    Stack {
        app,
        sfn,
        wire,
        ledger,
        execution,
        key,
        task_token: token,
        _moto: moto,
    }
}

async fn receive_token(sqs: &aws_sdk_sqs::Client, queue: &str) -> String {
    for _ in 0..30 {
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        if let Some(message) = out.messages.unwrap_or_default().into_iter().next() {
            let body: Value = serde_json::from_str(message.body.as_deref().unwrap()).unwrap();
            return body["task_token"].as_str().unwrap().to_owned();
        }
    }
    panic!("the step's message never reached the queue");
}

impl Stack {
    async fn post(&self, path_and_query: &str, params: &[(&str, &str)]) -> (i64, String) {
        self.post_signed(path_and_query, params, TOKEN).await
    }

    async fn post_signed(
        &self,
        path_and_query: &str,
        params: &[(&str, &str)],
        token: &str,
    ) -> (i64, String) {
        let r = handle(signed(path_and_query, params, token), &self.app).await;
        (r.status_code, body_text(&r.body))
    }

    fn path(&self, route: &str, prompt: u8) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("key", self.key.as_str())
            .append_pair("prompt", &prompt.to_string())
            .finish();
        format!("/{route}?{query}")
    }

    /// The execution once it has ended (or still running after `within`).
    async fn execution_after(
        &self,
        within: Duration,
    ) -> aws_sdk_sfn::operation::describe_execution::DescribeExecutionOutput {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let out = self
                .sfn
                .describe_execution()
                .execution_arn(&self.execution)
                .send()
                .await
                .unwrap();
            if out.status.as_str() != "RUNNING" || tokio::time::Instant::now() > deadline {
                return out;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn history(&self) -> Vec<aws_sdk_sfn::types::HistoryEvent> {
        self.sfn
            .get_execution_history()
            .execution_arn(&self.execution)
            .send()
            .await
            .unwrap()
            .events
    }
}

fn body_text(body: &Option<lambda_http::Body>) -> String {
    match body {
        Some(lambda_http::Body::Text(t)) => t.clone(),
        Some(lambda_http::Body::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

fn keys(digits: &str) -> Vec<(&str, &str)> {
    vec![
        ("CallSid", SID),
        ("Digits", digits),
        ("From", "+81312345678"),
        ("To", CALLEE),
    ]
}

fn status(
    call_status: &str,
    seq: &str,
    answered_by: Option<&'static str>,
) -> Vec<(&'static str, String)> {
    let mut p = vec![
        ("CallSid", SID.to_owned()),
        ("CallStatus", call_status.to_owned()),
        ("SequenceNumber", seq.to_owned()),
    ];
    if let Some(a) = answered_by {
        p.push(("AnsweredBy", a.to_owned()));
    }
    p
}

fn pairs<'a>(p: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    p.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn key_1_acknowledges_once_and_a_replay_sends_nothing() {
    let s = stack("alarm-db-cpu-1", "ja-JP", now() + 120).await;
    let (logs, _guard) = test_support::LogCapture::install(tracing::Level::DEBUG);

    let (code, twiml) = s
        .post(
            &s.path("alert", 1),
            &[("CallSid", SID), ("AnsweredBy", "human")],
        )
        .await;
    assert_eq!(code, 200, "{twiml}");
    assert!(
        twiml.contains("<Gather") && twiml.contains("データベースの CPU"),
        "{twiml}"
    );
    assert!(twiml.contains("確認した場合は1を"), "{twiml}");

    let (code, twiml) = s.post(&s.path("alert-keys", 1), &keys("1")).await;
    assert_eq!(code, 200);
    assert!(twiml.contains("確認を受け付けました"), "{twiml}");
    let done = s.execution_after(Duration::from_secs(30)).await;
    assert_eq!(done.status.as_str(), "SUCCEEDED");
    let output: Value = serde_json::from_str(done.output.as_deref().unwrap()).unwrap();
    let at = output["acknowledged_at"].as_str().unwrap().to_owned();
    assert_eq!(
        output,
        json!({
            "acknowledged_by": {"name": "山田", "number": CALLEE},
            "acknowledged_at": at,
            "call_sid": SID,
            "attempt": 1
        })
    );
    assert!(at.len() == 20 && at.ends_with('Z'), "{at}");
    assert_eq!(s.wire.count("SendTaskSuccess"), 1);

    // Twilio delivers the same Gather result again, then the call ends.
    let (code, twiml) = s.post(&s.path("alert-keys", 1), &keys("1")).await;
    assert_eq!(code, 200);
    assert!(twiml.contains("確認を受け付けました"), "{twiml}");
    let (code, _) = s
        .post("/status", &pairs(&status("completed", "5", Some("human"))))
        .await;
    assert_eq!(code, 204);
    assert_eq!(s.wire.count("SendTaskSuccess"), 1, "a replay sent it again");
    assert_eq!(
        s.wire.count("SendTaskFailure"),
        0,
        "an acknowledged call failed its step"
    );
    // The task token is a bearer credential, the callee's number personal data.
    let lines = logs.assert_clean(&[&s.task_token, "5012345678"]);
    assert!(lines > 3, "{}", logs.text());
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_forged_key_is_refused_and_acknowledges_nothing() {
    let s = stack("alarm-db-cpu-2", "en-US", now() + 120).await;
    let (code, _) = s
        .post_signed(
            &s.path("alert-keys", 1),
            &keys("1"),
            "ffffffffffffffffffffffffffffffff",
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(s.wire.count("SendTaskSuccess"), 0);
    let record = s.ledger.alert_step(&s.key).await.unwrap().unwrap();
    assert_eq!(record.acknowledged, None);
    assert_eq!(
        s.execution_after(Duration::ZERO).await.status.as_str(),
        "RUNNING"
    );
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_key_after_the_step_deadline_does_not_acknowledge_and_says_so() {
    // The ledger's deadline has passed; moto's own step is still waiting, and would take a
    // SendTaskSuccess: only our ledger keeps the late key from acknowledging.
    let s = stack("alarm-db-cpu-3", "en-US", now() - 1).await;
    let (code, twiml) = s.post(&s.path("alert-keys", 2), &keys("1")).await;
    assert_eq!(code, 200);
    assert!(
        twiml.contains("This alert step has timed out. Your key did not acknowledge the alert."),
        "{twiml}"
    );
    assert!(twiml.ends_with("<Hangup/></Response>"), "{twiml}");
    assert_eq!(s.wire.count("SendTaskSuccess"), 0);
    let record = s.ledger.alert_step(&s.key).await.unwrap().unwrap();
    assert_eq!(record.acknowledged, None);
    // The prompt itself is not offered after the deadline either.
    let (_, twiml) = s.post(&s.path("alert", 2), &[("CallSid", SID)]).await;
    assert!(
        !twiml.contains("<Gather") && twiml.contains("timed out"),
        "{twiml}"
    );
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn an_unacknowledged_final_status_fails_the_step_at_once() {
    let s = stack("alarm-db-cpu-4", "ja-JP", now() + 120).await;
    let (code, twiml) = s.post(&s.path("alert-keys", 1), &keys("*")).await;
    assert_eq!(code, 200);
    assert!(
        twiml.contains("prompt=2") && twiml.contains("<Gather"),
        "{twiml}"
    );

    for params in [
        status("in-progress", "2", Some("human")),
        status("completed", "4", None),
        // Sent again: the step is closed already, nothing more goes out.
        status("completed", "4", None),
    ] {
        let (code, _) = s.post("/status", &pairs(&params)).await;
        assert_eq!(code, 204, "{params:?}");
    }
    let done = s.execution_after(Duration::from_secs(30)).await;
    assert_eq!(done.status.as_str(), "FAILED");
    let failed: Vec<_> = s
        .history()
        .await
        .into_iter()
        .filter(|e| e.r#type == HistoryEventType::TaskFailed)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let details = failed[0].task_failed_event_details.as_ref().unwrap();
    assert_eq!(details.error.as_deref(), Some("Alert.NotAcknowledged"));
    // moto keeps no cause in the history: it is read from the request sent.
    let sent = s.wire.sent("SendTaskFailure");
    let cause: Value = serde_json::from_str(sent[0]["cause"].as_str().unwrap()).unwrap();
    assert_eq!(
        cause,
        json!({"call_status": "completed", "answered_by": "human"})
    );
    assert_eq!(s.wire.count("SendTaskFailure"), 1);
    assert_eq!(s.wire.count("SendTaskSuccess"), 0);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_machine_hears_a_notice_and_never_acknowledges() {
    let s = stack("alarm-db-cpu-5", "en-US", now() + 120).await;
    let (code, twiml) = s
        .post(
            &s.path("alert", 1),
            &[("CallSid", SID), ("AnsweredBy", "machine_end_beep")],
        )
        .await;
    assert_eq!(code, 200);
    assert!(!twiml.contains("<Gather"), "{twiml}");
    assert!(twiml.contains("automated alert call"), "{twiml}");
    let (code, _) = s
        .post(
            "/status",
            &pairs(&status("completed", "3", Some("machine_end_beep"))),
        )
        .await;
    assert_eq!(code, 204);
    let done = s.execution_after(Duration::from_secs(30)).await;
    assert_eq!(done.status.as_str(), "FAILED");
    assert_eq!(s.wire.count("SendTaskSuccess"), 0);
    let failed = s
        .history()
        .await
        .into_iter()
        .find_map(|e| e.task_failed_event_details)
        .unwrap();
    assert_eq!(failed.error.as_deref(), Some("Alert.NotAcknowledged"));
    let sent = s.wire.sent("SendTaskFailure");
    assert_eq!(sent.len(), 1);
    let cause: Value = serde_json::from_str(sent[0]["cause"].as_str().unwrap()).unwrap();
    assert_eq!(cause["answered_by"], "machine_end_beep");
}

/// Escalations whose every request fails to connect (nothing listens on port 9 of loopback).
fn unreachable_step_functions() -> Escalations {
    let down = test_support::aws_config("http://127.0.0.1:9");
    Escalations::new(twilio_voice::aws::stepfunctions(&down))
}

/// Escalations on mocked Step Functions that retries as the shared configuration does.
fn mocked_step_functions(rules: &[&aws_smithy_mocks::Rule]) -> Escalations {
    Escalations::new(aws_smithy_mocks::mock_client!(
        aws_sdk_sfn,
        aws_smithy_mocks::RuleMode::MatchAny,
        rules,
        |c| c.retry_config(
            aws_sdk_sfn::config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
        )
    ))
}

fn error_code(code: &str) -> aws_smithy_types::error::ErrorMetadata {
    aws_smithy_types::error::ErrorMetadata::builder()
        .code(code)
        .build()
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn step_functions_unavailable_keeps_the_key_and_the_next_key_delivers_it() {
    let mut s = stack("alarm-db-cpu-6", "en-US", now() + 120).await;
    let working = s.app.alerts.as_ref().unwrap().escalations.clone();
    s.app.alerts.as_mut().unwrap().escalations = unreachable_step_functions();

    for _ in 0..2 {
        let (code, twiml) = s.post(&s.path("alert-keys", 2), &keys("1")).await;
        assert_eq!(code, 200);
        assert!(
            twiml.contains("could not be confirmed. Please press 1 again."),
            "{twiml}"
        );
        assert!(
            twiml.contains("<Gather") && !twiml.contains("has been acknowledged"),
            "{twiml}"
        );
        // Kept, undelivered: a key 1 while Step Functions is still down never hears a
        // confirmation.
        let record = s.ledger.alert_step(&s.key).await.unwrap().unwrap();
        assert!(record.acknowledged.is_some() && !record.delivered);
    }

    s.app.alerts.as_mut().unwrap().escalations = working;
    let (_, twiml) = s.post(&s.path("alert-keys", 2), &keys("1")).await;
    assert!(twiml.contains("has been acknowledged"), "{twiml}");
    let done = s.execution_after(Duration::from_secs(30)).await;
    assert_eq!(done.status.as_str(), "SUCCEEDED");
    assert_eq!(s.wire.count("SendTaskSuccess"), 1);
    assert!(
        s.ledger
            .alert_step(&s.key)
            .await
            .unwrap()
            .unwrap()
            .delivered
    );
    // Delivered: a replay sends nothing.
    let (_, twiml) = s.post(&s.path("alert-keys", 2), &keys("1")).await;
    assert!(twiml.contains("has been acknowledged"), "{twiml}");
    assert_eq!(s.wire.count("SendTaskSuccess"), 1);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn an_acknowledgement_whose_answer_was_lost_is_still_delivered() {
    let s = stack("alarm-db-cpu-7", "en-US", now() + 120).await;
    // The ledger took key 1 but its answer never came back (the SDK's retry is then refused by
    // the condition): the item is acknowledged and nothing was sent.
    s.ledger.acknowledge(&s.key, SID).await.unwrap();

    let (code, twiml) = s.post(&s.path("alert-keys", 1), &keys("1")).await;
    assert_eq!(code, 200);
    assert!(twiml.contains("has been acknowledged"), "{twiml}");
    let done = s.execution_after(Duration::from_secs(30)).await;
    assert_eq!(done.status.as_str(), "SUCCEEDED");
    assert_eq!(s.wire.count("SendTaskSuccess"), 1);
    assert!(
        s.ledger
            .alert_step(&s.key)
            .await
            .unwrap()
            .unwrap()
            .delivered
    );
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_key_then_a_hang_up_while_step_functions_was_down_is_delivered_at_the_final_status() {
    let mut s = stack("alarm-db-cpu-8", "ja-JP", now() + 120).await;
    let working = s.app.alerts.as_ref().unwrap().escalations.clone();
    s.app.alerts.as_mut().unwrap().escalations = unreachable_step_functions();
    let (_, twiml) = s.post(&s.path("alert-keys", 1), &keys("1")).await;
    assert!(twiml.contains("もう一度1を押してください"), "{twiml}");

    s.app.alerts.as_mut().unwrap().escalations = working;
    for _ in 0..2 {
        let (code, _) = s
            .post("/status", &pairs(&status("completed", "5", Some("human"))))
            .await;
        assert_eq!(code, 204);
    }
    let done = s.execution_after(Duration::from_secs(30)).await;
    assert_eq!(done.status.as_str(), "SUCCEEDED");
    assert_eq!(
        s.wire.count("SendTaskSuccess"),
        1,
        "sent once, not per callback"
    );
    assert_eq!(s.wire.count("SendTaskFailure"), 0);
    assert!(
        s.ledger
            .alert_step(&s.key)
            .await
            .unwrap()
            .unwrap()
            .delivered
    );
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_send_whose_answer_was_lost_asks_again_and_never_says_too_late() {
    use aws_sdk_sfn::operation::send_task_success::SendTaskSuccessError;
    use aws_sdk_sfn::types::error::TaskTimedOut;
    let mut s = stack("alarm-db-cpu-9", "en-US", now() + 120).await;
    // The first SendTaskSuccess lands, its answer is lost (a 500 stands for it); Step Functions
    // would answer a second one TaskTimedOut.
    let rule = aws_smithy_mocks::mock!(aws_sdk_sfn::Client::send_task_success)
        .sequence()
        .http_status(500, None)
        .error(|| {
            SendTaskSuccessError::TaskTimedOut(
                TaskTimedOut::builder()
                    .meta(error_code("TaskTimedOut"))
                    .build(),
            )
        })
        .build();
    s.app.alerts.as_mut().unwrap().escalations = mocked_step_functions(&[&rule]);
    let (code, twiml) = s.post(&s.path("alert-keys", 1), &keys("1")).await;
    assert_eq!(code, 200);
    assert!(
        twiml.contains("Please press 1 again") && !twiml.contains("timed out"),
        "{twiml}"
    );
    assert_eq!(rule.num_calls(), 1);
    let record = s.ledger.alert_step(&s.key).await.unwrap().unwrap();
    assert!(record.acknowledged.is_some() && !record.delivered);
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn step_functions_refusing_the_key_ends_the_call_instead_of_asking_forever() {
    use aws_sdk_sfn::operation::send_task_success::SendTaskSuccessError;
    let mut s = stack("alarm-db-cpu-10", "en-US", now() + 120).await;
    let rule = aws_smithy_mocks::mock!(aws_sdk_sfn::Client::send_task_success)
        .then_error(|| SendTaskSuccessError::generic(error_code("AccessDeniedException")));
    s.app.alerts.as_mut().unwrap().escalations = mocked_step_functions(&[&rule]);
    let (logs, _guard) = test_support::LogCapture::install(tracing::Level::INFO);
    let (code, twiml) = s.post(&s.path("alert-keys", 1), &keys("1")).await;
    assert_eq!(code, 200);
    assert!(
        twiml.contains("could not be recorded. The alert was not acknowledged."),
        "{twiml}"
    );
    assert!(
        !twiml.contains("<Gather") && twiml.ends_with("<Hangup/></Response>"),
        "{twiml}"
    );
    assert!(logs.text().contains("ERROR"), "{}", logs.text());
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn the_ledger_unavailable_on_the_prompt_apologises_and_comes_back_bounded() {
    let mut s = stack("alarm-db-cpu-11", "en-US", now() + 120).await;
    let down = test_support::aws_config("http://127.0.0.1:9");
    s.app.alerts.as_mut().unwrap().ledger =
        Ledger::new(twilio_voice::aws::dynamodb(&down), "ledger");
    let (code, twiml) = s.post(&s.path("alert", 1), &[("CallSid", SID)]).await;
    assert_eq!(code, 200, "{twiml}");
    assert!(
        twiml.contains("could not be read") && twiml.contains("prompt=2</Redirect>"),
        "{twiml}"
    );
    let (code, twiml) = s.post(&s.path("alert", 5), &[("CallSid", SID)]).await;
    assert_eq!(code, 200);
    assert!(
        !twiml.contains("<Redirect") && twiml.ends_with("<Hangup/></Response>"),
        "{twiml}"
    );
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn a_slow_ledger_delays_neither_the_forward_nor_the_alert_step() {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};
    let mut s = stack("alarm-db-cpu-12", "en-US", now() + 120).await;
    // A ledger that takes connections and never answers: the outcomes' work lasts its whole
    // operation timeout. It counts the connections the SDK still holds open, so the forward
    // can tell whether it overtook the ledger's work (ordering, not timing).
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hole.local_addr().unwrap());
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let held = open.clone();
    std::thread::spawn(move || {
        for conn in hole.incoming() {
            let Ok(mut conn) = conn else { return };
            held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let held = held.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 4096];
                // Read until the SDK gives up and closes the connection.
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                held.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    let slow = twilio_voice::aws::sdk_config(
        test_support::vars(&[
            ("AWS_REGION", "ap-northeast-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_ENDPOINT_URL", &endpoint),
        ]),
        twilio_voice::aws::Resilience::default(),
    )
    .unwrap();
    s.app.outcomes.as_mut().unwrap().ledger =
        Ledger::new(twilio_voice::aws::dynamodb(&slow), "ledger");
    let theirs = MockServer::start().await;
    // How many ledger connections were still waiting when the forward arrived.
    let pending_at_forward: Arc<Mutex<Option<usize>>> = Arc::default();
    let seen = pending_at_forward.clone();
    let counted = open.clone();
    Mock::given(method("POST"))
        .respond_with(move |_: &wiremock::Request| {
            *seen.lock().unwrap() = Some(counted.load(std::sync::atomic::Ordering::SeqCst));
            ResponseTemplate::new(204)
        })
        .mount(&theirs)
        .await;
    let path = format!(
        "/status?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("forward", &format!("{}/their-status", theirs.uri()))
            .finish()
    );
    let (code, _) = s.post(&path, &pairs(&status("completed", "4", None))).await;
    // Ours failed: 503, as before.
    assert_eq!(code, 503);
    let pending = pending_at_forward.lock().unwrap().expect("forwarded");
    assert!(
        pending > 0,
        "the forward waited until the ledger's work had given up"
    );
    // The alert step was failed too, on its own (fast) ledger.
    assert_eq!(s.wire.count("SendTaskFailure"), 1);
}

#[test]
fn the_wire_counter_tells_operations_apart() {
    let wire = Wire::default();
    wire.0.lock().unwrap().extend([
        ("AWSStepFunctions.SendTaskSuccess".to_owned(), json!({})),
        (
            "AWSStepFunctions.SendTaskFailure".to_owned(),
            json!({"error": "x"}),
        ),
    ]);
    assert_eq!(wire.sent("SendTaskFailure"), vec![json!({"error": "x"})]);
    assert_eq!(wire.count("SendTaskSuccess"), 1);
    assert_eq!(wire.count("StartExecution"), 0);
}

//! Phone alerts, outbound-call's part (README, "Phone alerts"):
//!
//! - **starting** an escalation: a CloudWatch "Alarm State Change" event whose new state is
//!   `ALARM` (an EventBridge rule), or `POST /alerts` on the HTTP API → `StartExecution`, named
//!   so that the same alarm state change or the same idempotency key starts one escalation;
//! - the state machine's **`alert_plan`** message → the plan from the escalation policies
//!   (SSM) → `SendTaskSuccess(plan)`, or `SendTaskFailure(Alert.InvalidPlan)`;
//! - its **`alert_call`** message → the ledger's claim (with the task token) → the call to
//!   incoming-call's `/alert`; a refusal by Twilio fails the step at once (`Alert.CallFailed`).
//!   A redelivered message never dials twice.
//!
//! A second state change of an alarm while its escalation runs starts nothing: the running
//! executions are listed first. Two state changes delivered at the same instant can both find
//! none running and start two escalations; Step Functions has no conditional start to close
//! that window (the same state change delivered twice is still one, by its name).

use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{Instrument, error, info, warn};
use twilio_voice::alerts::{
    Alarm, Alert, AlertCall, AlertMessage, AlertOrigin, CALL_FAILED, EscalationPolicies,
    ExecutionInput, INVALID_PLAN, NOT_ACKNOWLEDGED, PlanRequest, alarm_prefix, execution_name,
};
use twilio_voice::calls::{
    CallOptions, CallPolicy, CallRequest, CallSpec, Deadline, Instructions, MachineDetection,
    StatusCallbackEvent,
};
use twilio_voice::credentials::{
    CredentialSpec, CredentialStore, CredentialsError, DEFAULT_TTL, Parameters,
};
use twilio_voice::http_event;
use twilio_voice::ledger::{AlertStep, ClaimOutcome, Duplicate, IdempotencyKey, Ledger};
use twilio_voice::limits::TIME_LIMIT_SECONDS;
use twilio_voice::phone::{AllowList, mask_digits};
use twilio_voice::stepfunctions::{self, Escalations, Persistence, SfnError, TaskToken};
use twilio_voice::twiml::inspect::{self, UrlPrefixes};

use crate::bulk::Outcome;
use crate::config::AlertsConfig;
use crate::delivery;
use crate::event::EventError;
use crate::handler::{self, App, MAX_EVENT_BYTES, OutboundError};
use crate::once::{Fate, OnceError, place_once_claiming};

/// How long an alert call may outlast its step (`TimeLimit`), to tell a late key it is late.
const LATE_KEY_SECONDS: u32 = 120;

/// A step whose deadline is this close is not dialled: the phone could not even ring before a
/// key stops counting. Small, since steps may be short (a ring timeout of 5 s allows a step of
/// 6 s, whose ledger deadline is 4 s after it starts).
const DIAL_MARGIN_SECONDS: u64 = 1;

/// The ledger's `error_type` of an alert call never placed because its step had timed out.
const STEP_EXPIRED: &str = "Alert.StepExpired";

/// What alerts hold between invocations.
pub struct Alerts {
    pub escalations: Escalations,
    pub state_machine_arn: String,
    /// The escalation policies, read like a credential (cached, read again after the TTL).
    pub policies: CredentialStore<PolicySpec>,
    /// Where an alert call may go: the allow-list, and incoming-call's `/alert` as its only URL.
    pub call_policy: CallPolicy,
    /// incoming-call's `/alert`.
    pub webhook: url::Url,
}

impl Alerts {
    /// Builds the alert side and reads the policies once: a missing or invalid document stops
    /// the start, naming the parameter.
    pub async fn init(
        config: &AlertsConfig,
        call_policy: &CallPolicy,
        ssm: aws_sdk_ssm::Client,
        sfn: aws_sdk_sfn::Client,
    ) -> Result<Self, CredentialsError> {
        let policies = CredentialStore::new(
            ssm,
            PolicySpec {
                parameter: config.policies_parameter.clone(),
                destinations: call_policy.reach.destinations.clone(),
            },
            DEFAULT_TTL,
        );
        policies.prefetch().await?;
        let urls = UrlPrefixes::parse(config.webhook.as_str()).map_err(|reason| {
            CredentialsError::Invalid {
                name: "STATUS_CALLBACK_URL".to_owned(),
                reason,
            }
        })?;
        Ok(Self {
            escalations: Escalations::new(sfn),
            state_machine_arn: config.state_machine_arn.clone(),
            policies,
            call_policy: CallPolicy {
                reach: inspect::Policy {
                    destinations: call_policy.reach.destinations.clone(),
                    urls,
                    gated: Default::default(),
                },
                default_time_limit: call_policy.default_time_limit,
            },
            webhook: config.webhook.clone(),
        })
    }
}

/// The escalation policies in SSM, parsed and checked against the allow-list on every read.
#[derive(Debug, Clone)]
pub struct PolicySpec {
    pub parameter: String,
    pub destinations: AllowList,
}

impl CredentialSpec for PolicySpec {
    type Output = EscalationPolicies;
    fn what(&self) -> &'static str {
        "escalation policies"
    }
    fn parameter_names(&self) -> Vec<&str> {
        vec![self.parameter.as_str()]
    }
    fn assemble(&self, values: &mut Parameters) -> Result<EscalationPolicies, CredentialsError> {
        let json = values.take_text(&self.parameter)?;
        EscalationPolicies::from_json(&json, &self.destinations).map_err(|e| {
            CredentialsError::Invalid {
                name: self.parameter.clone(),
                reason: e.to_string(),
            }
        })
    }
}

// ---------------------------------------------------------------- the state machine's messages

/// One message of the state machine; `Placed` when it is done with (delete it), `NotPlaced`
/// when it should come back (Step Functions or the ledger did not answer).
pub async fn handle_message(message: AlertMessage, app: &App, deadline: Deadline) -> Outcome {
    let Some(alerts) = &app.alerts else {
        warn!(
            "an alert message, but alerts are not configured (ALERT_STATE_MACHINE_ARN); reported"
        );
        return Outcome::NotPlaced;
    };
    match message {
        AlertMessage::Plan(request, token) => plan(request, token, alerts).await,
        AlertMessage::Call(call, token) => call_contact(call, token, app, alerts, deadline).await,
    }
}

async fn plan(request: PlanRequest, token: TaskToken, alerts: &Alerts) -> Outcome {
    let alert_id = request.alert_id.clone();
    let policies = match alerts.policies.get().await {
        Ok(policies) => policies,
        Err(e) if e.is_transient() => {
            warn!(alert_id, error = %e, "escalation policies unavailable; the plan request comes back");
            return Outcome::NotPlaced;
        }
        Err(e) => {
            return settled(
                alerts
                    .escalations
                    .fail(&token, INVALID_PLAN, &e.to_string())
                    .await,
            );
        }
    };
    let planned = serde_json::from_value::<Alert>(request.alert)
        .map_err(|e| format!("alert: {}", mask_digits(&e.to_string())))
        .and_then(|alert| {
            policies
                .plan(&request.alert_id, &alert)
                .map_err(|e| e.to_string())
        });
    let sent = match planned {
        Ok(plan) => {
            info!(
                alert_id,
                calls = plan.attempts.len(),
                rounds = plan.rounds,
                "alert planned"
            );
            let output = serde_json::to_string(&plan).expect("a plan serializes");
            alerts.escalations.succeed(&token, &output).await
        }
        Err(why) => {
            warn!(alert_id, reason = %why, "alert refused; the escalation fails");
            alerts.escalations.fail(&token, INVALID_PLAN, &why).await
        }
    };
    settled(sent)
}

/// Whether the step has heard from us. A closed step (timed out, its execution over) has
/// nothing left to hear.
fn settled(sent: Result<(), SfnError>) -> Outcome {
    match sent {
        Ok(()) => Outcome::Placed,
        Err(SfnError::StepClosed(code)) => {
            info!(code, "the step is closed already; nothing to resume");
            Outcome::Placed
        }
        Err(e) => {
            warn!(error = %e, "Step Functions was not told; the message comes back");
            Outcome::NotPlaced
        }
    }
}

async fn call_contact(
    call: AlertCall,
    token: TaskToken,
    app: &App,
    alerts: &Alerts,
    deadline: Deadline,
) -> Outcome {
    let span = tracing::info_span!("alert_call", alert_id = %call.alert_id, attempt = call.attempt);
    place_alert_call(call, token, app, alerts, deadline)
        .instrument(span)
        .await
}

/// A call can end (busy, failed, no answer) before Twilio's answer to the create request has
/// reached us and the call's SID is linked to its step: its final status callback then finds
/// no step, and the step would wait for its timeout. Whoever comes second ends it: here, if the
/// call item already holds a final status, the step is closed (first closer wins, so a
/// callback that did find it sends nothing more) and failed, as incoming-call would have.
async fn ended_before_linked(
    ledger: &Ledger,
    key: &IdempotencyKey,
    call_sid: &str,
    alerts: &Alerts,
) {
    let call = match ledger.call(call_sid).await {
        Ok(Some(call)) => call,
        Ok(None) => return,
        Err(e) => {
            warn!(call_sid, error = %e, "could not check whether the alert call already ended");
            return;
        }
    };
    let Some(final_status) = call.final_status else {
        return;
    };
    let record = match ledger.close_alert_step(key).await {
        Ok(Some(record)) => record,
        Ok(None) => return,
        Err(e) => {
            warn!(call_sid, error = %e, "could not close the step of an alert call that already ended");
            return;
        }
    };
    let cause = json!({
        "call_status": final_status.as_str(),
        "answered_by": call.answered_by,
    })
    .to_string();
    match alerts
        .escalations
        .fail(&record.step.task_token, NOT_ACKNOWLEDGED, &cause)
        .await
    {
        Ok(()) | Err(SfnError::StepClosed(_)) => {
            info!(
                call_sid,
                call_status = final_status.as_str(),
                "alert call ended before it was linked: next contact"
            );
        }
        // The step's TimeoutSeconds is the backstop.
        Err(e) => {
            error!(call_sid, error = %e, "could not fail the step of an alert call that ended")
        }
    }
}

async fn place_alert_call(
    call: AlertCall,
    token: TaskToken,
    app: &App,
    alerts: &Alerts,
    deadline: Deadline,
) -> Outcome {
    let Some(ledger) = &app.ledger else {
        // Config refuses alerts without CALL_LEDGER_TABLE.
        error!("an alert call without a call ledger; reported");
        return Outcome::NotPlaced;
    };
    let key = match call.key() {
        Ok(key) => key,
        Err(e) => {
            return settled(
                alerts
                    .escalations
                    .fail(&token, CALL_FAILED, &e.to_string())
                    .await,
            );
        }
    };
    // The step's deadline comes from when Step Functions started its timer; without it the
    // step cannot be bounded, and is failed rather than left to its timeout.
    let step = match call.step(token.clone()) {
        Ok(step) => step,
        Err(e) => {
            warn!(error = %e, "alert call without its step's start time; the next contact is called");
            let cause = json!({"error_type": CALL_FAILED, "message": e.to_string()});
            return settled(
                alerts
                    .escalations
                    .fail(&token, CALL_FAILED, &cause.to_string())
                    .await,
            );
        }
    };
    // Alert messages wait in the bulk queue behind its backlog and pace: one can arrive after
    // its step timed out, when Step Functions has moved on to the next contact. Dialling then
    // would ring a person whose key can no longer acknowledge.
    let now = ledger
        .time()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if step.step_deadline <= now + DIAL_MARGIN_SECONDS {
        return expired(ledger, &key, &step, &token, alerts).await;
    }
    let request = match alert_request(&call, &key, app, alerts) {
        Ok(request) => request,
        Err(e) => {
            warn!(error = %e, "alert call refused before sending; the next contact is called");
            let cause = json!({"error_type": e.error_type(), "message": e.to_string()});
            return settled(
                alerts
                    .escalations
                    .fail(&token, CALL_FAILED, &cause.to_string())
                    .await,
            );
        }
    };
    let outcome = place_once_claiming(
        ledger,
        || ledger.claim_alert(&key, &step),
        || handler::create(&request, app, deadline),
        handler::fate,
        |record| handler::look_up(app, record),
    )
    .await;
    match outcome {
        Ok(placed) if placed.new => {
            info!(call_sid = %placed.created.sid, to = %request.to(), "alert call placed");
            ended_before_linked(ledger, &key, &placed.created.sid, alerts).await;
            Outcome::Placed
        }
        Ok(placed) => {
            info!(call_sid = %placed.created.sid, "alert call placed by an earlier delivery; not dialled again");
            Outcome::Placed
        }
        Err(OnceError::Attempt(e)) => match handler::fate(&e) {
            Fate::Refused {
                error_type,
                twilio_code,
            } => {
                warn!(error_type, error = %e, to = %request.to(), "Twilio refused the alert call; the next contact is called");
                refused(ledger, &key, &token, alerts, error_type, twilio_code).await
            }
            Fate::MayExist => {
                error!(error = %e, "alert call outcome unknown; its status callback or the step's timeout decides");
                Outcome::Placed
            }
            Fate::NothingPlaced => {
                warn!(error = %e, "alert call not placed; the message comes back");
                Outcome::NotPlaced
            }
        },
        Err(OnceError::Ledger(e)) => {
            warn!(error = %e, "call ledger unavailable; nothing sent; the message comes back");
            Outcome::NotPlaced
        }
        Err(OnceError::Earlier(Duplicate::Failed {
            error_type,
            twilio_code,
        })) => {
            // The delivery that was refused may not have reached Step Functions: say it again
            // (a closed step answers StepClosed).
            info!(
                error_type,
                "an earlier delivery was refused by Twilio; failing the step"
            );
            let cause = json!({"error_type": error_type, "twilio_code": twilio_code});
            settled(
                alerts
                    .escalations
                    .fail(&token, CALL_FAILED, &cause.to_string())
                    .await,
            )
        }
        Err(OnceError::Earlier(_)) => {
            info!(
                "an earlier delivery of this alert call is in flight or its outcome unknown; not dialled again"
            );
            Outcome::Placed
        }
    }
}

/// The step's deadline is (nearly) past before the call was placed: nothing is dialled. The
/// step is claimed, recorded as never placed and closed, so the ledger says why no call exists;
/// Step Functions is told in case its timer has not run out yet (a closed step answers
/// `StepClosed`). An earlier delivery's claim is left alone: its call decides the step. The
/// message is deleted either way; a redelivery would find the deadline past again.
async fn expired(
    ledger: &Ledger,
    key: &IdempotencyKey,
    step: &AlertStep,
    token: &TaskToken,
    alerts: &Alerts,
) -> Outcome {
    warn!(
        step_deadline = step.step_deadline,
        "alert call arrived after its step's deadline; not dialled"
    );
    match ledger.claim_alert(key, step).await {
        Ok(ClaimOutcome::Won(claim)) => {
            if let Err(e) = ledger.record_failed(&claim, STEP_EXPIRED, None).await {
                warn!(error = %e, "the expired alert step's claim was not recorded as failed");
            }
            if let Err(e) = ledger.close_alert_step(key).await {
                warn!(error = %e, "the expired alert step was not closed in the ledger");
            }
        }
        Ok(ClaimOutcome::Duplicate(_)) => {
            info!("an earlier delivery claimed this step; its call decides it");
            return Outcome::Placed;
        }
        Err(e) => warn!(error = %e, "call ledger unavailable; the expired step is not recorded"),
    }
    let cause = json!({"error_type": STEP_EXPIRED});
    if let Err(e) = alerts
        .escalations
        .fail(token, CALL_FAILED, &cause.to_string())
        .await
    {
        info!(error = %e, "the expired step was not failed; its own timeout ends it");
    }
    Outcome::Placed
}

/// Twilio refused the call: no call exists, so nobody can acknowledge it; the step is closed
/// (first closer wins) and failed at once rather than left to its timeout.
async fn refused(
    ledger: &Ledger,
    key: &IdempotencyKey,
    token: &TaskToken,
    alerts: &Alerts,
    error_type: &str,
    twilio_code: Option<u32>,
) -> Outcome {
    if let Err(e) = ledger.close_alert_step(key).await {
        warn!(error = %e, "the refused alert step was not closed in the ledger");
    }
    let cause = json!({"error_type": error_type, "twilio_code": twilio_code});
    settled(
        alerts
            .escalations
            .fail(token, CALL_FAILED, &cause.to_string())
            .await,
    )
}

/// The call of one step: incoming-call's `/alert` for this key, answering-machine detection
/// (a machine never acknowledges), the plan's ring timeout, every status event to our
/// callback (a final status without a key fails the step).
fn alert_request(
    call: &AlertCall,
    key: &IdempotencyKey,
    app: &App,
    alerts: &Alerts,
) -> Result<CallRequest, OutboundError> {
    let from = app.from.clone().ok_or(EventError::NoFrom)?;
    let mut url = alerts.webhook.clone();
    url.query_pairs_mut()
        .append_pair("key", key.as_str())
        .append_pair("prompt", "1");
    let spec = CallSpec {
        to: call.contact.number.clone(),
        from,
        instructions: Instructions::Url(url.into()),
        options: CallOptions {
            status_callback: app.status_callback.clone(),
            status_callback_events: vec![
                StatusCallbackEvent::Initiated,
                StatusCallbackEvent::Ringing,
                StatusCallbackEvent::Answered,
                StatusCallbackEvent::Completed,
            ],
            timeout: Some(call.ring_timeout_seconds),
            machine_detection: Some(MachineDetection::Enable),
            // Bounded, yet longer than the step: a key pressed after the step timed out is
            // answered "too late" instead of the line going dead mid-message.
            time_limit: Some(
                (call.step_timeout_seconds + LATE_KEY_SECONDS).min(*TIME_LIMIT_SECONDS.end()),
            ),
            ..CallOptions::default()
        },
    };
    Ok(spec
        .validate(&alerts.call_policy)
        .map_err(EventError::from)?)
}

// ---------------------------------------------------------------- starting an escalation

/// An EventBridge event of CloudWatch about an alarm.
pub fn is_alarm_event(event: &Value) -> bool {
    event.get("source").and_then(Value::as_str) == Some("aws.cloudwatch")
        && event.get("detail-type").and_then(Value::as_str) == Some("CloudWatch Alarm State Change")
}

#[derive(Deserialize)]
struct AlarmEvent {
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    region: Option<String>,
    detail: AlarmDetail,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlarmDetail {
    alarm_name: String,
    state: AlarmState,
    #[serde(default)]
    configuration: Option<AlarmConfiguration>,
}

#[derive(Deserialize)]
struct AlarmState {
    value: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Deserialize)]
struct AlarmConfiguration {
    #[serde(default)]
    description: Option<String>,
}

/// What starting an escalation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    pub alert_id: String,
    pub execution_arn: String,
    /// `false`: it was running (or had run) already; nothing new started.
    pub started: bool,
}

impl Escalation {
    fn to_json(&self) -> Value {
        json!({"alert_id": self.alert_id, "execution_arn": self.execution_arn, "started": self.started})
    }
}

/// A CloudWatch alarm's state change: `ALARM` starts the escalation named after the alarm and
/// the time of the change; any other state is logged and ignored.
pub async fn handle_alarm_event(
    event: Value,
    app: &App,
    deadline: Deadline,
) -> Result<Value, OutboundError> {
    let event: AlarmEvent = serde_json::from_value(event).map_err(EventError::json)?;
    let detail = event.detail;
    if detail.state.value != "ALARM" {
        info!(alarm = %detail.alarm_name, state = %detail.state.value, "alarm state change is not ALARM; no alert");
        return Ok(
            json!({"started": false, "reason": format!("state {} is not ALARM", detail.state.value)}),
        );
    }
    let alert = Alert {
        alarm: Some(Alarm {
            name: detail.alarm_name,
            description: detail.configuration.and_then(|c| c.description),
            state: detail.state.value,
            reason: detail.state.reason,
            time: detail.state.timestamp.or(event.time),
            region: event.region,
        }),
        ..Alert::default()
    };
    Ok(escalate(alert, None, app, deadline).await?.to_json())
}

/// `POST /alerts`: the alert's fields, and optionally `idempotency_key` (or the
/// `Idempotency-Key` header).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertRequest {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    alarm: Option<Alarm>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// `POST /alerts`: 202 with the execution when it started, 200 when it was running already.
pub async fn handle_http(
    request: &ApiGatewayV2httpRequest,
    app: &App,
    deadline: Deadline,
) -> ApiGatewayV2httpResponse {
    let result = async {
        let bytes = http_event::body_bytes(request, MAX_EVENT_BYTES)
            .map_err(|e| EventError::Json(e.to_string()))?;
        let body: AlertRequest = serde_json::from_slice(&bytes).map_err(EventError::json)?;
        let header = request
            .headers
            .get(delivery::HEADER)
            .and_then(|v| v.to_str().ok());
        let key =
            delivery::http(header, body.idempotency_key.as_deref()).map_err(EventError::from)?;
        let alert = Alert {
            message: body.message,
            alarm: body.alarm,
            policy: body.policy,
            language: body.language,
        };
        escalate(alert, key, app, deadline).await
    }
    .await;
    match result {
        Ok(escalation) => http_event::json(
            if escalation.started { 202 } else { 200 },
            &escalation.to_json(),
        ),
        Err(e) => handler::error_response(&e),
    }
}

/// Starts the escalation of `alert` unless it runs already: named after `key`, else after the
/// alarm (and, for an alarm, not while another escalation of the same alarm runs).
async fn escalate(
    alert: Alert,
    key: Option<IdempotencyKey>,
    app: &App,
    deadline: Deadline,
) -> Result<Escalation, OutboundError> {
    let alerts = app.alerts.as_ref().ok_or(OutboundError::AlertsOff)?;
    alert.check().map_err(EventError::from)?;
    if let Ok(policies) = alerts.policies.get().await {
        // The policy is judged again when the plan is made; an unknown name is the caller's
        // mistake, and better answered now.
        policies
            .get(alert.policy.as_deref())
            .map_err(EventError::from)?;
    }
    let (name, prefix) = match (&key, &alert.alarm) {
        (Some(key), _) => (execution_name(&AlertOrigin::Key(key.as_str())), None),
        (None, Some(alarm)) => (
            execution_name(&AlertOrigin::Alarm {
                name: &alarm.name,
                time: alarm.time.as_deref(),
            }),
            Some(alarm_prefix(&alarm.name)),
        ),
        (None, None) => (
            format!(
                "alert-{}-{:016x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                fastrand::u64(..)
            ),
            None,
        ),
    };
    // Each request below is safe to repeat (reads, and a start by name), and the alarm rule
    // invokes this function once (MaximumRetryAttempts 0): a Step Functions blip is waited
    // out within this invocation rather than losing the page.
    let policy = Persistence::default();
    if let Some(prefix) = prefix
        && let Some(running) = stepfunctions::persist(policy, deadline, || {
            alerts
                .escalations
                .running(&alerts.state_machine_arn, &prefix)
        })
        .await
        .map_err(OutboundError::Escalation)?
        && !running.ends_with(&format!(":{name}"))
    {
        info!(alert_id = %name, running = %running, "this alarm's escalation is running already; not started again");
        return Ok(Escalation {
            alert_id: running.rsplit(':').next().unwrap_or_default().to_owned(),
            execution_arn: running,
            started: false,
        });
    }
    let input = serde_json::to_string(&ExecutionInput { alert }).expect("an alert serializes");
    let arn = execution_arn(&alerts.state_machine_arn, &name);
    // StartExecution answers a running execution's name and input with that execution, as if
    // it had started it: asked first, the answer can say it did not. The same name with
    // another input is another alert under a key already used.
    let existing = stepfunctions::persist(policy, deadline, || alerts.escalations.describe(&arn))
        .await
        .map_err(OutboundError::Escalation)?;
    match existing {
        Some(execution)
            if execution
                .input
                .as_deref()
                .is_none_or(|i| same_input(i, &input)) =>
        {
            info!(alert_id = %name, running = execution.running, "this alert's escalation was started before; not started again");
            return Ok(Escalation {
                alert_id: name,
                execution_arn: arn,
                started: false,
            });
        }
        Some(_) => return Err(OutboundError::AlertConflict(name)),
        None => {}
    }
    match stepfunctions::persist(policy, deadline, || {
        alerts
            .escalations
            .start(&alerts.state_machine_arn, &name, &input)
    })
    .await
    {
        Ok(started) => {
            info!(alert_id = %name, "escalation started");
            Ok(Escalation {
                alert_id: name,
                execution_arn: started.execution_arn,
                started: true,
            })
        }
        // Started in between with another input.
        Err(SfnError::NameTaken) => Err(OutboundError::AlertConflict(name)),
        Err(e) => Err(OutboundError::Escalation(e)),
    }
}

/// Whether an execution's input is `ours`: compared as JSON, not as text.
fn same_input(theirs: &str, ours: &str) -> bool {
    match (
        serde_json::from_str::<Value>(theirs),
        serde_json::from_str::<Value>(ours),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => theirs == ours,
    }
}

/// An execution's ARN from its state machine's and its name.
fn execution_arn(state_machine_arn: &str, name: &str) -> String {
    format!(
        "{}:{name}",
        state_machine_arn.replacen(":stateMachine:", ":execution:", 1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudwatch_alarm_events_are_recognised() {
        let event: Value =
            serde_json::from_str(include_str!("../../../events/outbound-call-alarm.json")).unwrap();
        assert!(is_alarm_event(&event));
        assert!(!is_alarm_event(&json!({"to": "+815012345678"})));
        assert!(!is_alarm_event(
            &json!({"source": "aws.cloudwatch", "detail-type": "EBS Snapshot Notification"})
        ));
        let parsed: AlarmEvent = serde_json::from_value(event).unwrap();
        assert_eq!(parsed.detail.state.value, "ALARM");
        assert!(parsed.detail.state.timestamp.is_some());
    }

    #[test]
    fn execution_arns_follow_the_state_machines() {
        assert_eq!(
            execution_arn(
                "arn:aws:states:ap-northeast-1:123456789012:stateMachine:alerts",
                "alarm-x-1"
            ),
            "arn:aws:states:ap-northeast-1:123456789012:execution:alerts:alarm-x-1"
        );
    }
}

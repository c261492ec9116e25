//! One handler for four ways in. An HTTP API request (payload 2.0, it carries
//! `requestContext`) is answered with an HTTP response; an SQS batch (`Records` from `aws:sqs`)
//! with the messages not placed (`batchItemFailures`); a direct invoke (the call event itself) or
//! a schedule's input (`{"schedule": {"arn", "time"}, "call": <call event>}`) gets the created
//! call, or an error whose type says whether an automated retry is safe.
//!
//! With a call ledger (`CALL_LEDGER_TABLE`), every way in carries an idempotency key (see
//! `delivery`) and `once::place_once` makes each request dial at most once.

use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::http::Method;
use lambda_runtime::Diagnostic;
use serde_json::{Value, json};
use std::time::{Duration, UNIX_EPOCH};
use tracing::{error, info, warn};

use serde::Deserialize;
use twilio_voice::alerts::AlertMessage;
use twilio_voice::calls::{
    CallCreated, CallError, CallPolicy, CallRequest, CallsClient, Deadline, ErrorClass, InvalidCall,
};
use twilio_voice::credentials::{ApiCredentialSpec, CredentialStore, CredentialsError};
use twilio_voice::events::{CallFailed, DomainEvent, EventBus};
use twilio_voice::http_event;
use twilio_voice::ledger::{
    CallStatus, Duplicate, IdempotencyKey, Ledger, LedgerError, RequestRecord, Resolution,
    STALE_AFTER,
};
use twilio_voice::pacing::Pace;
use twilio_voice::phone::PhoneNumber;

use crate::bulk::{self, SqsEvent};
use crate::delivery;
use crate::event::{CallEvent, EventError};
use crate::expiry::ExpireCall;
use crate::once::{Fate, OnceError, Placement, ours_among, place_once};

pub use twilio_voice::calls::Retry;

/// A call event is a few kB (inline TwiML is at most 4000 characters); anything near this is
/// not one.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// What the function holds between invocations.
pub struct App {
    pub calls: CallsClient,
    pub credentials: CredentialStore<ApiCredentialSpec>,
    pub from: Option<PhoneNumber>,
    pub policy: CallPolicy,
    /// Makes each request dial at most once; without it, every delivery dials.
    pub ledger: Option<Ledger>,
    /// Where `Call Failed` goes.
    pub bus: Option<EventBus>,
    /// Set on every call that names no status callback of its own.
    pub status_callback: Option<String>,
    /// Spaces the calls of an SQS batch.
    pub pace: Pace,
    /// Phone alerts: starting escalations, and the state machine's messages.
    pub alerts: Option<crate::alerts::Alerts>,
    /// Where a call placed with `not_after` gets its expiry message (see `expiry`).
    pub expiry: Option<crate::expiry::ExpiryQueue>,
    /// What `not_after` is compared with; tests move it instead of waiting.
    pub clock: twilio_voice::ledger::Clock,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("only POST places a call; nothing sent")]
    MethodNotAllowed,
    #[error("invalid call event, nothing sent: {0}")]
    Event(#[from] EventError),
    #[error("Twilio credentials unavailable, nothing sent: {0}")]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("delivered after not_after ({0}); nothing sent")]
    Expired(String),
    #[error("call ledger: {0}; nothing sent")]
    Ledger(#[from] LedgerError),
    /// An alert arrived, but alerts are not configured.
    #[error("alerts are not configured (ALERT_STATE_MACHINE_ARN); no escalation started")]
    AlertsOff,
    #[error("the alert's escalation was not started: {0}")]
    Escalation(twilio_voice::stepfunctions::SfnError),
    /// The alert's name (its idempotency key) is an escalation of another alert.
    #[error(
        "execution {0} was started with another alert; nothing started (a new idempotency key starts this one)"
    )]
    AlertConflict(String),
    /// An earlier delivery of the same request: its recorded refusal, or an unknown outcome.
    #[error("{message}")]
    Earlier {
        class: ErrorClass,
        message: String,
        twilio_code: Option<u32>,
    },
}

impl OutboundError {
    /// The class, whose one table (`ErrorClass::describe`) gives the Lambda error type, the HTTP
    /// status and the retry advice.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::MethodNotAllowed => ErrorClass::MethodNotAllowed,
            Self::Event(_) => ErrorClass::InvalidEvent,
            Self::Credentials(CredentialsError::Unavailable(_)) => {
                ErrorClass::CredentialsUnavailable
            }
            Self::Credentials(_) => ErrorClass::CredentialsMisconfigured,
            Self::Call(e) => e.class(),
            Self::Expired(_) => ErrorClass::Expired,
            Self::Ledger(e) if e.is_retryable() => ErrorClass::LedgerUnavailable,
            Self::Ledger(_) => ErrorClass::LedgerMisconfigured,
            Self::Earlier { class, .. } => *class,
            Self::Escalation(e) if e.is_retryable() => ErrorClass::EscalationUnavailable,
            Self::Escalation(_) | Self::AlertsOff => ErrorClass::EscalationMisconfigured,
            Self::AlertConflict(_) => ErrorClass::AlertConflict,
        }
    }

    /// `Retryable.*`, `NonRetryable.*` or `OutcomeUnknown.*`: the Lambda error type, also used in
    /// HTTP error bodies.
    pub fn error_type(&self) -> &'static str {
        self.class().error_type()
    }

    pub fn retry(&self) -> Retry {
        self.class().retry()
    }

    fn twilio_code(&self) -> Option<u32> {
        match self {
            Self::Call(e) => e.twilio_code(),
            Self::Earlier { twilio_code, .. } => *twilio_code,
            _ => None,
        }
    }
}

impl From<OutboundError> for Diagnostic {
    fn from(e: OutboundError) -> Self {
        Diagnostic {
            error_type: e.error_type().to_owned(),
            error_message: e.to_string(),
        }
    }
}

/// The function's entry: recognises the trigger and shapes the answer for it. No request to
/// Twilio starts that could outlive `deadline` (the invocation's).
pub async fn handle(event: Value, app: &App, deadline: Deadline) -> Result<Value, OutboundError> {
    handle_invocation(event, app, deadline, None).await
}

/// [`handle`] for a Lambda invocation: `request_id` keys a direct invoke without a key of its
/// own (Lambda keeps the ID when it retries or redelivers an asynchronous event).
pub async fn handle_invocation(
    event: Value,
    app: &App,
    deadline: Deadline,
    request_id: Option<&str>,
) -> Result<Value, OutboundError> {
    if crate::alerts::is_alarm_event(&event) {
        return crate::alerts::handle_alarm_event(event, app, deadline).await;
    }
    if event.get("requestContext").is_some() {
        let response = match serde_json::from_value::<ApiGatewayV2httpRequest>(event) {
            Ok(request) if is_alerts_route(&request) => {
                crate::alerts::handle_http(&request, app, deadline).await
            }
            Ok(request) => handle_http(request, app, deadline).await,
            Err(e) => error_response(&EventError::json(e).into()),
        };
        return Ok(serde_json::to_value(response).expect("a response serializes"));
    }
    if SqsEvent::recognise(&event) {
        return handle_sqs(event, app, deadline).await;
    }
    let (call, key) = if event.get("schedule").is_some() && event.get("call").is_some() {
        let scheduled: Scheduled = serde_json::from_value(event).map_err(EventError::json)?;
        let call = CallEvent::from_value(scheduled.call)?;
        let key = delivery::schedule(
            call.idempotency_key.as_deref(),
            &scheduled.schedule.arn,
            &scheduled.schedule.time,
        )
        .map_err(EventError::from)?;
        (call, Some(key))
    } else {
        let call = CallEvent::from_value(event)?;
        let key = delivery::direct(call.idempotency_key.as_deref(), request_id)
            .map_err(EventError::from)?;
        (call, key)
    };
    let placed = place(call, app, deadline, key).await?;
    Ok(json!({"call_sid": placed.created.sid, "status": placed.created.status}))
}

/// `POST /alerts` (every other route is `/calls`): the API's route key, which a stage name or a
/// custom domain's base path does not change; the path where no route key is given.
fn is_alerts_route(request: &ApiGatewayV2httpRequest) -> bool {
    match request.route_key.as_deref() {
        Some("POST /alerts") => true,
        Some(key) if key.starts_with("POST /") || key.starts_with("ANY /") => false,
        _ => {
            request.request_context.http.method == Method::POST
                && request
                    .raw_path
                    .as_deref()
                    .or(request.request_context.http.path.as_deref())
                    == Some("/alerts")
        }
    }
}

/// A schedule's input: Scheduler fills in `<aws.scheduler.schedule-arn>` and
/// `<aws.scheduler.scheduled-time>` (the same on its retries), which key the request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scheduled {
    schedule: ScheduleContext,
    call: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleContext {
    arn: String,
    time: String,
}

/// An SQS batch: each message one call event, placed in its own slot of the pace; those not
/// placed are reported so that only they come back.
async fn handle_sqs(event: Value, app: &App, deadline: Deadline) -> Result<Value, OutboundError> {
    let batch: SqsEvent = serde_json::from_value(event).map_err(EventError::json)?;
    // The last slot must leave room for its attempt before the invocation ends.
    let far = app.pace.now() + Duration::from_secs(24 * 3600);
    let last_slot = deadline.instant().map_or(far, |d| {
        d.checked_sub(app.calls.attempt_budget()).unwrap_or(d)
    });
    // An expiry message places no call: it takes no slot of the pace.
    let paced = |m: &bulk::SqsMessage| ExpireCall::recognise(&m.body).is_none();
    let answer = bulk::process(batch, &app.pace, last_slot, paced, |message| async move {
        match ExpireCall::recognise(&message.body) {
            Some(Ok(expire)) => return crate::expiry::handle_message(expire, app, deadline).await,
            Some(Err(e)) => {
                warn!(message_id = %message.message_id, error = %e, "malformed expiry message; reported");
                return bulk::Outcome::NotPlaced;
            }
            None => {}
        }
        match AlertMessage::recognise(&message.body) {
            Some(Ok(alert)) => return crate::alerts::handle_message(alert, app, deadline).await,
            Some(Err(e)) => {
                // Not from our state machine as we know it: kept for the dead-letter queue.
                warn!(message_id = %message.message_id, error = %e, "malformed alert message; reported");
                return bulk::Outcome::NotPlaced;
            }
            None => {}
        }
        let placed = match CallEvent::from_json(message.body.as_bytes()) {
            Ok(call) => match delivery::sqs(call.idempotency_key.as_deref(), &message.message_id) {
                Ok(key) => place(call, app, deadline, Some(key)).await.is_ok(),
                Err(e) => {
                    let e = OutboundError::from(EventError::from(e));
                    let key = delivery::sqs(None, &message.message_id).ok();
                    announce_failure(app, &e, key.as_ref()).await;
                    false
                }
            },
            Err(e) => {
                warn!(message_id = %message.message_id, error = %e, "bulk message is not a call event; reported");
                let key = delivery::sqs(None, &message.message_id).ok();
                announce_failure(app, &e.into(), key.as_ref()).await;
                false
            }
        };
        if placed {
            bulk::Outcome::Placed
        } else {
            bulk::Outcome::NotPlaced
        }
    })
    .await;
    Ok(answer)
}

async fn handle_http(
    request: ApiGatewayV2httpRequest,
    app: &App,
    deadline: Deadline,
) -> ApiGatewayV2httpResponse {
    if request.request_context.http.method != Method::POST {
        return error_response(&OutboundError::MethodNotAllowed);
    }
    let bytes = match http_event::body_bytes(&request, MAX_EVENT_BYTES) {
        Ok(bytes) => bytes,
        Err(e) => return error_response(&EventError::Json(e.to_string()).into()),
    };
    let header = request
        .headers
        .get(delivery::HEADER)
        .and_then(|v| v.to_str().ok());
    let result = match CallEvent::from_json(&bytes) {
        Ok(event) => match delivery::http(header, event.idempotency_key.as_deref()) {
            Ok(key) => place(event, app, deadline, key).await,
            Err(e) => Err(EventError::from(e).into()),
        },
        Err(e) => Err(e.into()),
    };
    match result {
        // A request placed by an earlier delivery is answered as it was then.
        Ok(placed) => http_event::json(
            201,
            &json!({"call_sid": placed.created.sid, "status": placed.created.status}),
        ),
        Err(e) => error_response(&e),
    }
}

/// Validates the event, then places at most one call for `key` (every call without a ledger or
/// a key). A 20003 answer re-reads the credentials once (they may have just been rotated) and
/// tries once more: 401 means nothing was processed. A failure that no automatic retry will
/// mend is announced as `Call Failed`.
pub async fn place(
    event: CallEvent,
    app: &App,
    deadline: Deadline,
    key: Option<IdempotencyKey>,
) -> Result<Placement, OutboundError> {
    let not_after = event.not_after.clone();
    let result = place_checked(event, app, deadline, key.as_ref()).await;
    match (&result, not_after) {
        (Ok(placed), Some(not_after)) => {
            crate::expiry::schedule(app, &placed.created.sid, &not_after, key.as_ref()).await;
        }
        (Ok(_), None) => {}
        (Err(e), _) => announce_failure(app, e, key.as_ref()).await,
    }
    result
}

async fn place_checked(
    mut event: CallEvent,
    app: &App,
    deadline: Deadline,
    key: Option<&IdempotencyKey>,
) -> Result<Placement, OutboundError> {
    if let Some(raw) = event.not_after.clone() {
        let limit = delivery::not_after(&raw).map_err(EventError::from)?;
        if (app.clock)() > limit {
            warn!(not_after = %raw, "call event delivered too late; nothing sent");
            cancel_late_call(app, key).await;
            return Err(OutboundError::Expired(raw));
        }
    }
    if let Some(ours) = &app.status_callback {
        event.status_callback = Some(match event.status_callback.take() {
            None => ours.clone(),
            Some(theirs) => forwarding(ours, &theirs)?,
        });
    }
    let request = event
        .into_request(app.from.as_ref(), &app.policy)
        .inspect_err(|e| {
            warn!(error = %e, "call event refused; nothing sent");
        })?;
    let (Some(ledger), Some(key)) = (&app.ledger, key) else {
        let result = create(&request, app, deadline).await;
        return match result {
            Ok(created) => {
                info!(call_sid = %created.sid, status = %created.status, to = %request.to(), "call placed");
                Ok(Placement { created, new: true })
            }
            Err(e) => {
                log_failure(&e, &request);
                Err(e)
            }
        };
    };
    let outcome = place_once(
        ledger,
        key,
        request.to(),
        || create(&request, app, deadline),
        fate,
        |record| look_up(app, record),
    )
    .await;
    match outcome {
        Ok(placed) => {
            if placed.new {
                info!(call_sid = %placed.created.sid, status = %placed.created.status, to = %request.to(), "call placed");
            } else {
                info!(call_sid = %placed.created.sid, "already placed by an earlier delivery; nothing sent");
            }
            Ok(placed)
        }
        Err(OnceError::Attempt(e)) => {
            log_failure(&e, &request);
            Err(e)
        }
        Err(OnceError::Ledger(e)) => {
            warn!(error = %e, "call ledger unavailable; nothing sent");
            Err(OutboundError::Ledger(e))
        }
        Err(OnceError::Earlier(duplicate)) => {
            info!(
                ?duplicate,
                "an earlier delivery of this request decides; nothing sent"
            );
            Err(earlier(duplicate))
        }
    }
}

/// Twilio takes one status callback per call: ours, carrying the caller's in its signed query
/// (`?forward=`), so that incoming-call records the outcome and passes the callback on.
fn forwarding(ours: &str, theirs: &str) -> Result<String, EventError> {
    if !twilio_voice::limits::is_https_url(theirs) {
        return Err(InvalidCall::NotHttps {
            field: "status_callback",
        }
        .into());
    }
    let mut url = url::Url::parse(ours).map_err(|e| EventError::Json(e.to_string()))?;
    url.query_pairs_mut().append_pair("forward", theirs);
    Ok(url.into())
}

/// What a failed attempt means for a later delivery of the same request.
pub(crate) fn fate(e: &OutboundError) -> Fate {
    match e.class() {
        ErrorClass::TwilioRejected => Fate::Refused {
            error_type: e.error_type(),
            twilio_code: e.twilio_code(),
        },
        ErrorClass::CallMayExist => Fate::MayExist,
        // Nothing was placed: a later delivery (after a fix, or when Twilio answers) may try.
        _ => Fate::NothingPlaced,
    }
}

/// An earlier delivery's answer, as this one's error.
fn earlier(duplicate: Duplicate) -> OutboundError {
    match duplicate {
        Duplicate::Failed {
            error_type,
            twilio_code,
        } => OutboundError::Earlier {
            class: ErrorClass::ALL
                .into_iter()
                .find(|c| c.error_type() == error_type)
                .unwrap_or(ErrorClass::TwilioRejected),
            message: format!("an earlier delivery of this request failed: {error_type}"),
            twilio_code,
        },
        Duplicate::OutcomeUnknown | Duplicate::Placed { .. } => OutboundError::Earlier {
            class: ErrorClass::CallMayExist,
            message: "an earlier delivery of this request is in flight or its outcome is unknown; \
                      not dialled again"
                .to_owned(),
            twilio_code: None,
        },
    }
}

/// A delivery past `not_after` places nothing, and cancels what an earlier delivery of the same
/// request left waiting at Twilio (queued behind the account's CPS, or ringing): a call that
/// would ring after its deadline. This is outbound-call's to do, not incoming-call's, though it
/// sees the status callbacks: every request to Twilio leaves from here (DESIGN.md), and only
/// a delivery of the request carries its `not_after`.
async fn cancel_late_call(app: &App, key: Option<&IdempotencyKey>) {
    let (Some(ledger), Some(key)) = (&app.ledger, key) else {
        return;
    };
    let record = match ledger.request(key).await {
        Ok(Some(record)) => record,
        Ok(None) => return,
        Err(e) => {
            warn!(error = %e, "call ledger unavailable; a late call is not looked for");
            return;
        }
    };
    let call_sid = match &record.call_sid {
        Some(sid) => sid.clone(),
        // Sent without an answer, long enough ago: Twilio's Calls list knows.
        None if record.is_stale(ledger.time(), STALE_AFTER) => {
            match look_up(app, record.clone()).await {
                Some(found @ Resolution::Found { .. }) => {
                    if let Err(e) = ledger.resolve(&record, &found).await {
                        warn!(error = %e, "stale claim not resolved in the ledger");
                    }
                    let Resolution::Found { call_sid, .. } = found else {
                        unreachable!("matched above")
                    };
                    call_sid
                }
                _ => return,
            }
        }
        None => return,
    };
    // Waiting as far as the ledger knows: no callback yet, or queued / initiated / ringing.
    match ledger.call(&call_sid).await {
        Ok(Some(call))
            if call.final_status.is_some() || call.call_status == Some(CallStatus::InProgress) =>
        {
            return;
        }
        Ok(_) => {}
        Err(e) => {
            warn!(call_sid = %call_sid, error = %e, "call ledger unavailable; a late call is not cancelled");
            return;
        }
    }
    let Ok(credentials) = app.credentials.get().await else {
        return;
    };
    match app.calls.cancel(&credentials, &call_sid).await {
        Ok(Some(status)) => {
            info!(call_sid = %call_sid, status = %status, "a call still waiting past not_after was cancelled")
        }
        Ok(None) => info!(call_sid = %call_sid, "Twilio knows no such call; nothing to cancel"),
        Err(e) => {
            warn!(call_sid = %call_sid, error = %e, "a call past not_after could not be cancelled")
        }
    }
}

/// Pages of Twilio's Calls list read for one stale claim (50 calls a page): more calls than
/// that to one number within minutes of a claim is not a use this system serves.
const LOOKUP_PAGES: usize = 4;

/// A stale claim: does Twilio's Calls list have this request's call (to that number, since the
/// claim, not tied to another request in the ledger)? `None` when Twilio or the ledger could
/// not be asked, or the list was longer than [`LOOKUP_PAGES`] (the outcome stays unknown).
pub(crate) async fn look_up(app: &App, record: RequestRecord) -> Option<Resolution> {
    let to = record.to.as_ref()?;
    let ledger = app.ledger.as_ref()?;
    let credentials = app.credentials.get().await.ok()?;
    let since = UNIX_EPOCH + Duration::from_secs(record.claimed_at);
    let found = match app
        .calls
        .calls_since(&credentials, to, since, LOOKUP_PAGES)
        .await
    {
        Ok(found) => found,
        Err(e) => {
            warn!(error = %e, "Twilio's Calls list could not be read; outcome still unknown");
            return None;
        }
    };
    match ours_among(ledger, &record.key, found.calls).await {
        Ok(Some(call)) => Some(Resolution::Found {
            call_sid: call.sid,
            call_status: call.status,
        }),
        Ok(None) if found.complete => Some(Resolution::NotFound),
        Ok(None) => {
            warn!(
                pages = LOOKUP_PAGES,
                "Twilio's Calls list is longer than the lookup reads; outcome still unknown"
            );
            None
        }
        Err(e) => {
            warn!(error = %e, "call ledger unavailable; outcome still unknown");
            None
        }
    }
}

/// `Call Failed` for a failure no automatic retry will mend (not for a retryable one): once per
/// request when the ledger can tell (an SQS message refused on each of its receives is
/// announced once). Published first, marked (`once#call-failed#<key>`) after: a failed publish
/// is tried again by the next delivery of the request, which gets the earlier delivery's
/// recorded refusal (an SQS receive, a Lambda retry). An earlier delivery whose outcome is
/// unknown is not announced from a later one: it may still be in flight.
async fn announce_failure(app: &App, e: &OutboundError, key: Option<&IdempotencyKey>) {
    let Some(bus) = &app.bus else { return };
    let in_flight =
        matches!(e, OutboundError::Earlier { class, .. } if *class == ErrorClass::CallMayExist);
    if in_flight || e.retry() == Retry::Safe {
        return;
    }
    let marker = key.map(|key| format!("call-failed#{key}"));
    let ledger = app.ledger.as_ref().zip(marker.as_deref());
    if let Some((ledger, marker)) = ledger {
        match ledger.marked(marker).await {
            Ok(false) => {}
            Ok(true) => return,
            // Better twice than never.
            Err(le) => warn!(error = %le, "call ledger unavailable; announcing the failure anyway"),
        }
    }
    let event = DomainEvent::CallFailed(CallFailed {
        error_type: e.error_type().to_owned(),
        twilio_code: e.twilio_code(),
        idempotency_key: key.map(|k| k.as_str().to_owned()),
    });
    if let Err(publish) = bus.publish(&event).await {
        warn!(error = %publish, error_type = e.error_type(), "Call Failed not published");
        return;
    }
    if let Some((ledger, marker)) = ledger
        && let Err(le) = ledger.first_time(marker).await
    {
        warn!(error = %le, "Call Failed published, but not marked: a redelivery may publish it again");
    }
}

pub(crate) async fn create(
    request: &CallRequest,
    app: &App,
    deadline: Deadline,
) -> Result<CallCreated, OutboundError> {
    let credentials = app.credentials.get().await?;
    match app.calls.create(&credentials, request, deadline).await {
        Err(CallError::Authentication(first)) => {
            // The re-read and the second attempt obey the deadline like any retry.
            if !app.calls.attempt_fits(deadline, std::time::Duration::ZERO) {
                return Err(CallError::RateLimited {
                    attempts: 1,
                    last: Some(first),
                    out_of_time: true,
                }
                .into());
            }
            warn!(code = ?first.code, "Twilio refused the credentials; reading them again from SSM once");
            let fresh = app.credentials.refresh().await?;
            Ok(app.calls.create(&fresh, request, deadline).await?)
        }
        other => Ok(other?),
    }
}

fn log_failure(e: &OutboundError, request: &CallRequest) {
    let error_type = e.error_type();
    match e.retry() {
        Retry::Unsafe => {
            error!(error_type, error = %e, to = %request.to(), "call outcome unknown; not retried")
        }
        Retry::Safe | Retry::Pointless => {
            warn!(error_type, error = %e, to = %request.to(), "call not placed")
        }
    }
}

pub(crate) fn error_response(e: &OutboundError) -> ApiGatewayV2httpResponse {
    let class = e.class();
    let retry = class.retry();
    let mut error = json!({
        "type": class.error_type(),
        "message": e.to_string(),
        "retry_safe": retry.cannot_duplicate(),
        "retry": retry.as_str(),
    });
    if let Some(code) = e.twilio_code() {
        error["twilio_code"] = json!(code);
    }
    http_event::json(class.http_status(), &json!({ "error": error }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_have_their_own_route() {
        let request = |route_key: Option<&str>, path: &str| {
            let mut e: ApiGatewayV2httpRequest =
                serde_json::from_str(include_str!("../../../events/outbound-call-http-api.json"))
                    .unwrap();
            e.route_key = route_key.map(str::to_owned);
            e.raw_path = Some(path.to_owned());
            e
        };
        assert!(is_alerts_route(&request(
            Some("POST /alerts"),
            "/prod/alerts"
        )));
        assert!(!is_alerts_route(&request(Some("POST /calls"), "/calls")));
        assert!(!is_alerts_route(&request(Some("POST /calls"), "/alerts")));
        assert!(is_alerts_route(&request(Some("$default"), "/alerts")));
        assert!(!is_alerts_route(&request(None, "/calls")));
    }

    /// README's error table is the contract callers read: it lists every class of the one table
    /// (`ErrorClass::describe`) with the same type and status, and nothing else.
    #[test]
    fn readme_error_table_matches_the_classes() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<(String, u16)> = readme
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let kind = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                let known = ["NonRetryable.", "Retryable.", "OutcomeUnknown."];
                if !known.iter().any(|p| kind.starts_with(p)) {
                    return None;
                }
                Some((kind.to_owned(), cells.get(2)?.parse().ok()?))
            })
            .collect();
        let classes: Vec<(String, u16)> = ErrorClass::ALL
            .iter()
            .map(|c| (c.error_type().to_owned(), c.http_status()))
            .collect();
        assert_eq!(rows, classes);
    }
}

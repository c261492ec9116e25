//! One handler for three ways in. An HTTP API request (payload 2.0, it carries
//! `requestContext`) is answered with an HTTP response; a direct invoke or a schedule's input is
//! the call event itself and gets the created call, or an error whose type says whether an
//! automated retry is safe.

use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::http::Method;
use lambda_runtime::Diagnostic;
use serde_json::{Value, json};
use tracing::{error, info, warn};
use twilio_voice::calls::{
    CallCreated, CallError, CallPolicy, CallRequest, CallsClient, Deadline, ErrorClass,
};
use twilio_voice::credentials::{ApiCredentialSpec, CredentialStore, CredentialsError};
use twilio_voice::http_event;
use twilio_voice::phone::PhoneNumber;

use crate::event::{CallEvent, EventError};

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
    if event.get("requestContext").is_some() {
        let response = match serde_json::from_value::<ApiGatewayV2httpRequest>(event) {
            Ok(request) => handle_http(request, app, deadline).await,
            Err(e) => error_response(&EventError::json(e).into()),
        };
        return Ok(serde_json::to_value(response).expect("a response serializes"));
    }
    let created = place(CallEvent::from_value(event)?, app, deadline).await?;
    Ok(json!({"call_sid": created.sid, "status": created.status}))
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
    let result = match CallEvent::from_json(&bytes) {
        Ok(event) => place(event, app, deadline).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(created) => http_event::json(
            201,
            &json!({"call_sid": created.sid, "status": created.status}),
        ),
        Err(e) => error_response(&e),
    }
}

/// Validates the event, then places exactly one call. A 20003 answer re-reads the credentials
/// once (they may have just been rotated) and tries once more: 401 means nothing was processed.
pub async fn place(
    event: CallEvent,
    app: &App,
    deadline: Deadline,
) -> Result<CallCreated, OutboundError> {
    let request = event
        .into_request(app.from.as_ref(), &app.policy)
        .inspect_err(|e| {
            warn!(error = %e, "call event refused; nothing sent");
        })?;
    let result = create(&request, app, deadline).await;
    match &result {
        Ok(created) => {
            info!(call_sid = %created.sid, status = %created.status, to = %request.to(), "call placed")
        }
        Err(e) => log_failure(e, &request),
    }
    result
}

async fn create(
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

fn error_response(e: &OutboundError) -> ApiGatewayV2httpResponse {
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

//! The stale-call guard's second half: a call placed with `not_after` that Twilio still holds
//! at that moment (queued behind the account's CPS, where Twilio keeps calls for up to 24 h, or
//! ringing) is cancelled, whether or not its request is ever delivered again.
//!
//! Placing such a call also sends `{"expire_call": {"call_sid", "not_after", "idempotency_key"?}}`
//! to the queue outbound-call consumes (`BULK_CALLS_QUEUE_URL`), delayed until `not_after`. SQS
//! delays a message by at most 900 s, so one that arrives before `not_after` is sent again with
//! the time left. One that arrives at or after it asks Twilio for the call and cancels it if it
//! is still `queued`, `initiated` or `ringing`; an answered or ended call (or one Twilio does not
//! know) is left alone. This module is the one place that builds and reads that message.

use std::time::{Duration, SystemTime};

use aws_sdk_sqs::error::DisplayErrorContext;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};
use twilio_voice::calls::{Deadline, is_call_sid};
use twilio_voice::ledger::IdempotencyKey;
use twilio_voice::phone::mask_digits;

use crate::bulk::Outcome;
use crate::delivery;
use crate::handler::App;

/// The longest delay SQS gives a message.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// Twilio's statuses of a call that has not been answered yet: cancelling stops it ringing.
const WAITING: [&str; 3] = ["queued", "initiated", "ringing"];

/// The body of an expiry message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireCall {
    pub call_sid: String,
    /// As the call event gave it (RFC 3339).
    pub not_after: String,
    /// The request's key, for the logs: which request the call belonged to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    expire_call: ExpireCall,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error("malformed expire_call message: {0}")]
    Malformed(String),
    #[error("the expiry message was not sent: {0}")]
    NotSent(String),
}

impl ExpireCall {
    /// `None` when `body` is not an expiry message at all (a call event, an alert message);
    /// else the message, or why it is malformed.
    pub fn recognise(body: &str) -> Option<Result<Self, ExpiryError>> {
        let value: Value = serde_json::from_str(body).ok()?;
        value.as_object()?.get("expire_call")?;
        let malformed =
            |e: &dyn std::fmt::Display| ExpiryError::Malformed(mask_digits(&e.to_string()));
        Some(
            serde_json::from_value::<Envelope>(value)
                .map_err(|e| malformed(&e))
                .and_then(|Envelope { expire_call }| {
                    if !is_call_sid(&expire_call.call_sid) {
                        return Err(malformed(&"call_sid is not a call SID"));
                    }
                    expire_call.limit().map_err(|e| malformed(&e))?;
                    Ok(expire_call)
                }),
        )
    }

    /// The message's body.
    pub fn body(&self) -> String {
        serde_json::to_string(&Envelope {
            expire_call: self.clone(),
        })
        .expect("an expiry message serializes")
    }

    /// `not_after` as an instant.
    pub fn limit(&self) -> Result<SystemTime, delivery::DeliveryError> {
        delivery::not_after(&self.not_after)
    }
}

/// The delay that brings a message sent at `now` to `limit`: rounded up to whole seconds, so
/// that it does not arrive before it, and at most [`MAX_DELAY`].
pub fn delay_until(limit: SystemTime, now: SystemTime) -> Duration {
    let left = limit.duration_since(now).unwrap_or_default();
    let seconds = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    Duration::from_secs(seconds).min(MAX_DELAY)
}

/// Where expiry messages go: the queue outbound-call consumes.
#[derive(Debug, Clone)]
pub struct ExpiryQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl ExpiryQueue {
    pub fn new(sqs: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            sqs,
            url: url.into(),
        }
    }

    /// Sends `message`, delayed until its `not_after` (at most [`MAX_DELAY`]) as seen at `now`.
    /// Returns the delay given.
    pub async fn send(
        &self,
        message: &ExpireCall,
        now: SystemTime,
    ) -> Result<Duration, ExpiryError> {
        let limit = message
            .limit()
            .map_err(|e| ExpiryError::Malformed(e.to_string()))?;
        let delay = delay_until(limit, now);
        self.sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(message.body())
            .delay_seconds(i32::try_from(delay.as_secs()).expect("at most 900"))
            .send()
            .await
            .map_err(|e| ExpiryError::NotSent(DisplayErrorContext(e).to_string()))?;
        Ok(delay)
    }
}

/// After a call with `not_after` was placed (now, or by an earlier delivery of the request:
/// a second message for the same call only asks Twilio twice). A failure is logged and nothing
/// more: the call exists, and failing the request now would have it dialled again. Such a call
/// is then cancelled only if its request is delivered again after `not_after` (the handler's
/// `cancel_late_call`).
pub async fn schedule(app: &App, call_sid: &str, not_after: &str, key: Option<&IdempotencyKey>) {
    let Some(queue) = &app.expiry else {
        return;
    };
    let message = ExpireCall {
        call_sid: call_sid.to_owned(),
        not_after: not_after.to_owned(),
        idempotency_key: key.map(|k| k.as_str().to_owned()),
    };
    match queue.send(&message, (app.clock)()).await {
        Ok(delay) => {
            info!(
                call_sid,
                not_after,
                delay_s = delay.as_secs(),
                "expiry message sent"
            )
        }
        Err(e) => warn!(
            call_sid,
            not_after,
            error = %e,
            "expiry message not sent: if Twilio still holds this call at not_after, only a \
             redelivery of its request cancels it"
        ),
    }
}

/// An expiry message: too early, sent again with the time left; else the call is cancelled if
/// Twilio still holds it. `Placed` (deleted) once that is settled; `NotPlaced` (received again
/// after the queue's visibility timeout, then the dead-letter queue) when Twilio or SQS could
/// not be asked.
pub async fn handle_message(message: ExpireCall, app: &App, deadline: Deadline) -> Outcome {
    let call_sid = message.call_sid.as_str();
    let key = message.idempotency_key.as_deref().unwrap_or("");
    let Ok(limit) = message.limit() else {
        // `recognise` checked it.
        return Outcome::NotPlaced;
    };
    let now = (app.clock)();
    if now < limit {
        let Some(queue) = &app.expiry else {
            warn!(
                call_sid,
                "an early expiry message, and BULK_CALLS_QUEUE_URL is not set to send it again; reported"
            );
            return Outcome::NotPlaced;
        };
        return match queue.send(&message, now).await {
            Ok(delay) => {
                info!(
                    call_sid,
                    delay_s = delay.as_secs(),
                    "expiry message early; sent again"
                );
                Outcome::Placed
            }
            Err(e) => {
                warn!(call_sid, error = %e, "early expiry message not sent again; reported");
                Outcome::NotPlaced
            }
        };
    }
    // Two requests to Twilio: both must end before the invocation does.
    if !app.calls.attempt_fits(deadline, app.calls.attempt_budget()) {
        return Outcome::NotPlaced;
    }
    let credentials = match app.credentials.get().await {
        Ok(c) => c,
        Err(e) => {
            warn!(call_sid, error = %e, "credentials unavailable; expiry message reported");
            return Outcome::NotPlaced;
        }
    };
    let status = match app.calls.status(&credentials, call_sid).await {
        Ok(Some(status)) => status,
        Ok(None) => {
            info!(call_sid, "Twilio knows no such call; nothing to cancel");
            return Outcome::Placed;
        }
        Err(e) => {
            warn!(call_sid, error = %e, "Twilio not asked about an expired call; reported");
            return Outcome::NotPlaced;
        }
    };
    if !WAITING.contains(&status.as_str()) {
        info!(
            call_sid,
            status, "call past not_after already answered or over; left alone"
        );
        return Outcome::Placed;
    }
    match app.calls.cancel(&credentials, call_sid).await {
        Ok(after) => {
            info!(call_sid, idempotency_key = key, was = status, now = ?after, "call still waiting past not_after cancelled");
            Outcome::Placed
        }
        Err(e) => {
            warn!(call_sid, error = %e, "call past not_after not cancelled; reported");
            Outcome::NotPlaced
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use serde_json::json;

    use super::*;

    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    #[test]
    fn the_message_reads_back_as_built_and_nothing_else_is_taken_for_one() {
        let m = ExpireCall {
            call_sid: SID.into(),
            not_after: "2026-11-25T09:05:00+09:00".into(),
            idempotency_key: Some("line-7".into()),
        };
        assert_eq!(ExpireCall::recognise(&m.body()), Some(Ok(m.clone())));
        let bare = ExpireCall {
            idempotency_key: None,
            ..m
        };
        assert_eq!(
            serde_json::from_str::<Value>(&bare.body()).unwrap(),
            json!({"expire_call": {"call_sid": SID, "not_after": "2026-11-25T09:05:00+09:00"}})
        );
        for other in [
            r#"{"to": "+819011112222", "say": "hi"}"#,
            r#"{"alert_call": {}, "task_token": "t"}"#,
            "not json",
        ] {
            assert_eq!(ExpireCall::recognise(other), None, "{other}");
        }
        for bad in [
            json!({"expire_call": {"call_sid": "CA1", "not_after": "2026-11-25T00:00:00Z"}}),
            json!({"expire_call": {"call_sid": SID, "not_after": "tomorrow"}}),
            json!({"expire_call": {"call_sid": SID}}),
            json!({"expire_call": {"call_sid": SID, "not_after": "2026-11-25T00:00:00Z", "x": 1}}),
        ] {
            assert!(
                matches!(
                    ExpireCall::recognise(&bad.to_string()),
                    Some(Err(ExpiryError::Malformed(_)))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_delay_reaches_not_after_rounded_up_and_at_most_900_s() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64, ms: u64| now + Duration::from_secs(s) + Duration::from_millis(ms);
        assert_eq!(delay_until(at(120, 0), now), Duration::from_secs(120));
        assert_eq!(delay_until(at(119, 1), now), Duration::from_secs(120));
        assert_eq!(delay_until(at(900, 0), now), MAX_DELAY);
        assert_eq!(delay_until(at(3600, 0), now), MAX_DELAY);
        assert_eq!(delay_until(now, at(5, 0)), Duration::ZERO);
    }
}

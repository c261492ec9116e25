//! What a delivery of a call request carries besides the call: the idempotency key that makes
//! its redeliveries recognisable, and how late it may still be placed.
//!
//! Every way in is at least once, so each gets a key that is the same on every delivery of the
//! same request:
//!
//! | way in | key |
//! |---|---|
//! | direct invoke | the event's `idempotency_key`, else `lambda:<request ID>` (Lambda keeps the ID when it retries or redelivers an asynchronous event) |
//! | HTTP API | the `Idempotency-Key` header (or the body's `idempotency_key`); without either, **none** |
//! | schedule | `schedule:<schedule ARN>@<scheduled time>` (the same on Scheduler's retries), unless the call event has its own |
//! | SQS | the body's `idempotency_key`, else `sqs:<message ID>` (the same on every redelivery) |
//!
//! An HTTP request without a key is placed without a claim: each request is a new call, since
//! nothing tells a client's retry from a second, deliberate call. A client that may retry sends
//! `Idempotency-Key`.

use std::time::SystemTime;

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use twilio_voice::ledger::{IdempotencyKey, InvalidKey};

/// The HTTP header carrying a client's key.
pub const HEADER: &str = "idempotency-key";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("idempotency_key: {0}")]
    Key(#[from] InvalidKey),
    #[error("the Idempotency-Key header and the body's idempotency_key differ")]
    ConflictingKeys,
    #[error("not_after is not an RFC 3339 date-time: {0}")]
    NotAfter(String),
}

fn key(raw: &str) -> Result<IdempotencyKey, DeliveryError> {
    Ok(IdempotencyKey::new(raw)?)
}

/// A direct invoke: the event's key, else the invocation's request ID (none outside Lambda).
pub fn direct(
    field: Option<&str>,
    request_id: Option<&str>,
) -> Result<Option<IdempotencyKey>, DeliveryError> {
    match (field, request_id) {
        (Some(k), _) => key(k).map(Some),
        (None, Some(id)) => key(&format!("lambda:{id}")).map(Some),
        (None, None) => Ok(None),
    }
}

/// An HTTP API request: the header, else the body's key, else none.
pub fn http(
    header: Option<&str>,
    field: Option<&str>,
) -> Result<Option<IdempotencyKey>, DeliveryError> {
    match (header, field) {
        (Some(h), Some(f)) if h != f => Err(DeliveryError::ConflictingKeys),
        (Some(k), _) | (None, Some(k)) => key(k).map(Some),
        (None, None) => Ok(None),
    }
}

/// A schedule's delivery: the call event's own key, else the schedule and its scheduled time.
pub fn schedule(
    field: Option<&str>,
    schedule_arn: &str,
    scheduled_time: &str,
) -> Result<IdempotencyKey, DeliveryError> {
    match field {
        Some(k) => key(k),
        None => key(&format!("schedule:{schedule_arn}@{scheduled_time}")),
    }
}

/// An SQS message: the body's key, else the message ID.
pub fn sqs(field: Option<&str>, message_id: &str) -> Result<IdempotencyKey, DeliveryError> {
    match field {
        Some(k) => key(k),
        None => key(&format!("sqs:{message_id}")),
    }
}

/// `not_after` read as an instant (RFC 3339, `Z` or an offset such as `+09:00`).
pub fn not_after(raw: &str) -> Result<SystemTime, DeliveryError> {
    DateTime::from_str(raw, Format::DateTimeWithOffset)
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
        .ok_or_else(|| DeliveryError::NotAfter(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn each_way_in_has_a_stable_key() {
        assert_eq!(
            direct(None, Some("r-1")).unwrap().unwrap().as_str(),
            "lambda:r-1"
        );
        assert_eq!(
            direct(Some("mine"), Some("r-1")).unwrap().unwrap().as_str(),
            "mine"
        );
        assert_eq!(direct(None, None), Ok(None));
        assert_eq!(
            schedule(None, "arn:aws:scheduler:x", "2026-11-25T00:00:00Z")
                .unwrap()
                .as_str(),
            "schedule:arn:aws:scheduler:x@2026-11-25T00:00:00Z"
        );
        assert_eq!(sqs(None, "m-1").unwrap().as_str(), "sqs:m-1");
        assert_eq!(sqs(Some("line-7"), "m-1").unwrap().as_str(), "line-7");
    }

    #[test]
    fn http_keys_come_from_the_header_or_the_body_and_must_agree() {
        assert_eq!(http(None, None), Ok(None));
        assert_eq!(http(Some("h"), None).unwrap().unwrap().as_str(), "h");
        assert_eq!(http(None, Some("b")).unwrap().unwrap().as_str(), "b");
        assert_eq!(http(Some("k"), Some("k")).unwrap().unwrap().as_str(), "k");
        assert_eq!(
            http(Some("h"), Some("b")),
            Err(DeliveryError::ConflictingKeys)
        );
        assert!(matches!(http(Some(""), None), Err(DeliveryError::Key(_))));
    }

    #[test]
    fn not_after_accepts_rfc3339_with_an_offset() {
        let utc = not_after("2026-11-25T00:00:00Z").unwrap();
        assert_eq!(utc, UNIX_EPOCH + Duration::from_secs(1_795_564_800));
        assert_eq!(not_after("2026-11-25T09:00:00+09:00").unwrap(), utc);
        for bad in ["2026-11-25", "tomorrow", "2026-11-25 00:00:00"] {
            assert!(not_after(bad).is_err(), "{bad}");
        }
    }
}

//! The domain events the system publishes on EventBridge, built here and nowhere else: what
//! happened to a call, for rules to route to SNS, e-mail, a queue or anyone's own code.
//!
//! Every event has `source` [`SOURCE`] and one of these `detail-type`s:
//!
//! | detail-type | when | detail |
//! |---|---|---|
//! | `Call Completed` | a call reached its final status | `call_sid`, `outcome` (`completed`, `busy`, `no-answer`, `failed`, `canceled`), `answered_by` (`human`, `machine`, `unknown`; absent without answering-machine detection), `duration_seconds`, `sip_response_code`, `idempotency_key` (the request's, when we placed it) |
//! | `Call Failed` | a request was not placed | `error_type` (the README's error table, e.g. `NonRetryable.TwilioRejected`), `twilio_code`, `idempotency_key` |
//! | `Voicemail Recorded` | a caller left a message | `call_sid`, `caller` (E.164, absent when withheld), `recording_url`, `recording_sid`, `duration_seconds` |
//! | `Voicemail Transcribed` | Twilio transcribed it (flows with `transcribe`) | `call_sid`, `caller`, `recording_url`, `recording_sid`, `transcription` |
//! | `Alert Acknowledged` | a contact pressed 1 on an alert call | `alert_id` (the execution's name), `acknowledged_by` (`name`, `number`), `acknowledged_at` (RFC 3339), `call_sid`, `calls` (placed for the alert, this one included) |
//! | `Alert Unacknowledged` | every call of every round went unacknowledged | `alert_id`, `calls`, `rounds` |
//! | `Alert Failed` | no plan could be made: nobody was called | `alert_id`, `error` |
//!
//! The transcription is an event of its own rather than a field that `Voicemail Recorded` waits
//! for: Twilio transcribes minutes later, or never (a failed or too long recording), and the
//! voicemail must reach its reader without waiting on that.
//!
//! Examples of the call and voicemail events, as a rule's target receives them, are in `events/call-*.json` and
//! `events/voicemail-*.json`. The caller's number is in `Voicemail Recorded` because its
//! recipient needs it to call back; it is never logged (`Debug` masks it). The three alert events
//! are published by the state machine itself (`statemachine/alert-escalation.asl.json`), not by
//! [`EventBus`]; their types here are what a subscriber parses, and a test holds the two together.

use std::fmt;

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde::{Deserialize, Serialize};

use crate::alerts::Contact;
use crate::ledger::{CallRecord, CallStatus};
use crate::phone::mask;

/// The `source` of every event this system publishes.
pub const SOURCE: &str = "twilio-lambda-rs";

/// The bus events go to unless `EVENT_BUS_NAME` names another.
pub const DEFAULT_BUS: &str = "default";

/// A call's final status, as `Call Completed` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

impl Outcome {
    /// The outcome of a final status; `None` while the call is still going.
    pub fn of(status: CallStatus) -> Option<Self> {
        match status {
            CallStatus::Completed => Some(Self::Completed),
            CallStatus::Busy => Some(Self::Busy),
            CallStatus::NoAnswer => Some(Self::NoAnswer),
            CallStatus::Failed => Some(Self::Failed),
            CallStatus::Canceled => Some(Self::Canceled),
            CallStatus::Queued
            | CallStatus::Initiated
            | CallStatus::Ringing
            | CallStatus::InProgress => None,
        }
    }
}

/// Who answered, from Twilio's `AnsweredBy` (answering-machine detection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnsweredBy {
    Human,
    Machine,
    Unknown,
}

impl AnsweredBy {
    /// `human`; `machine_start`, `machine_end_*` and `fax` are machines; anything else unknown.
    pub fn from_twilio(answered_by: &str) -> Self {
        match answered_by {
            "human" => Self::Human,
            "fax" => Self::Machine,
            a if a.starts_with("machine_") => Self::Machine,
            _ => Self::Unknown,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallCompleted {
    pub call_sid: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredBy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_response_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl CallCompleted {
    /// The event for a call the ledger holds at its final status; `None` before that.
    pub fn from_call(call: &CallRecord) -> Option<Self> {
        Some(Self {
            call_sid: call.call_sid.clone(),
            outcome: Outcome::of(call.final_status?)?,
            answered_by: call.answered_by.as_deref().map(AnsweredBy::from_twilio),
            duration_seconds: call.call_duration,
            sip_response_code: call.sip_response_code,
            idempotency_key: call.request_key.clone(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallFailed {
    /// The error type of the README's table (`NonRetryable.TwilioRejected`, ...).
    pub error_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twilio_code: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoicemailRecorded {
    pub call_sid: String,
    /// E.164; absent when the caller withheld the number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    pub recording_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u32>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoicemailTranscribed {
    pub call_sid: String,
    /// E.164; absent when the caller withheld the number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    pub recording_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_sid: Option<String>,
    pub transcription: String,
}

impl fmt::Debug for VoicemailTranscribed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VoicemailTranscribed")
            .field("call_sid", &self.call_sid)
            .field("caller", &self.caller.as_deref().map(mask))
            .field("recording_url", &self.recording_url)
            .field("recording_sid", &self.recording_sid)
            .field("transcription", &"…")
            .finish()
    }
}

impl fmt::Debug for VoicemailRecorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VoicemailRecorded")
            .field("call_sid", &self.call_sid)
            .field("caller", &self.caller.as_deref().map(mask))
            .field("recording_url", &self.recording_url)
            .field("recording_sid", &self.recording_sid)
            .field("duration_seconds", &self.duration_seconds)
            .finish()
    }
}

/// An alert's escalation ended with a keypress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertAcknowledged {
    pub alert_id: String,
    /// Who pressed 1 (`Debug` masks the number).
    pub acknowledged_by: Contact,
    /// RFC 3339.
    pub acknowledged_at: String,
    pub call_sid: String,
    /// Calls placed for the alert, the acknowledged one included.
    pub calls: u32,
}

/// Nobody acknowledged an alert in any round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertUnacknowledged {
    pub alert_id: String,
    pub calls: u32,
    pub rounds: u32,
}

/// An alert's escalation could not start calling: no plan (an unknown policy or an invalid
/// alert, `Alert.InvalidPlan`; the plan not made in time, `States.Timeout`; the queue refused,
/// `SQS.*`). Nobody was called. Its own type rather than `Alert Unacknowledged` with 0 calls:
/// "nobody answered" and "nobody was asked" call for different actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertFailed {
    pub alert_id: String,
    /// The step's error name.
    pub error: String,
}

/// One event, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEvent {
    CallCompleted(CallCompleted),
    CallFailed(CallFailed),
    VoicemailRecorded(VoicemailRecorded),
    VoicemailTranscribed(VoicemailTranscribed),
    AlertAcknowledged(AlertAcknowledged),
    AlertUnacknowledged(AlertUnacknowledged),
    AlertFailed(AlertFailed),
}

impl DomainEvent {
    pub fn detail_type(&self) -> &'static str {
        match self {
            Self::CallCompleted(_) => "Call Completed",
            Self::CallFailed(_) => "Call Failed",
            Self::VoicemailRecorded(_) => "Voicemail Recorded",
            Self::VoicemailTranscribed(_) => "Voicemail Transcribed",
            Self::AlertAcknowledged(_) => "Alert Acknowledged",
            Self::AlertUnacknowledged(_) => "Alert Unacknowledged",
            Self::AlertFailed(_) => "Alert Failed",
        }
    }

    /// The `detail` as JSON.
    pub fn detail(&self) -> String {
        let json = match self {
            Self::CallCompleted(d) => serde_json::to_string(d),
            Self::CallFailed(d) => serde_json::to_string(d),
            Self::VoicemailRecorded(d) => serde_json::to_string(d),
            Self::VoicemailTranscribed(d) => serde_json::to_string(d),
            Self::AlertAcknowledged(d) => serde_json::to_string(d),
            Self::AlertUnacknowledged(d) => serde_json::to_string(d),
            Self::AlertFailed(d) => serde_json::to_string(d),
        };
        json.expect("plain structs serialize")
    }

    /// Reads an event back from its `detail-type` and `detail` (what a rule's target gets).
    pub fn parse(detail_type: &str, detail: serde_json::Value) -> Result<Self, serde_json::Error> {
        use serde::de::Error;
        Ok(match detail_type {
            "Call Completed" => Self::CallCompleted(serde_json::from_value(detail)?),
            "Call Failed" => Self::CallFailed(serde_json::from_value(detail)?),
            "Voicemail Recorded" => Self::VoicemailRecorded(serde_json::from_value(detail)?),
            "Voicemail Transcribed" => Self::VoicemailTranscribed(serde_json::from_value(detail)?),
            "Alert Acknowledged" => Self::AlertAcknowledged(serde_json::from_value(detail)?),
            "Alert Unacknowledged" => Self::AlertUnacknowledged(serde_json::from_value(detail)?),
            "Alert Failed" => Self::AlertFailed(serde_json::from_value(detail)?),
            other => {
                return Err(serde_json::Error::custom(format!(
                    "unknown detail-type {other:?}"
                )));
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    /// Throttled, an internal failure, a timeout or no connection: publishing again may work.
    #[error("EventBridge is unavailable ({0}); the event was not published")]
    Unavailable(String),
    /// The bus is missing, access is denied, or the event is invalid.
    #[error("EventBridge refused the event ({0})")]
    Refused(String),
}

impl EventsError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Publishes domain events on one bus.
#[derive(Debug, Clone)]
pub struct EventBus {
    client: Client,
    name: String,
}

/// Error codes (of the call or of an entry) after which publishing again may work.
const TRANSIENT: &[&str] = &[
    "ThrottlingException",
    "InternalException",
    "InternalFailure",
    "ServiceUnavailable",
];

impl EventBus {
    /// `name` is a bus name or ARN (`default` for the account's default bus).
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One `PutEvents` with one entry. EventBridge answers 200 even when the entry failed, so
    /// the entry's own error is checked too.
    pub async fn publish(&self, event: &DomainEvent) -> Result<(), EventsError> {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.name)
            .source(SOURCE)
            .detail_type(event.detail_type())
            .detail(event.detail())
            .build();
        let out = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(classify)?;
        if out.failed_entry_count() == 0 {
            return Ok(());
        }
        let code = out
            .entries()
            .iter()
            .find_map(|e| e.error_code())
            .unwrap_or("unknown")
            .to_owned();
        Err(if TRANSIENT.contains(&code.as_str()) {
            EventsError::Unavailable(code)
        } else {
            EventsError::Refused(code)
        })
    }
}

fn classify<E: ProvideErrorMetadata>(
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> EventsError {
    match err {
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or("unknown").to_owned();
            if TRANSIENT.contains(&code.as_str()) || e.raw().status().is_server_error() {
                EventsError::Unavailable(code)
            } else {
                EventsError::Refused(code)
            }
        }
        SdkError::TimeoutError(_) => EventsError::Unavailable("timed out".to_owned()),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            EventsError::Unavailable("no answer".to_owned())
        }
        _ => EventsError::Refused("request not built".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_by_folds_detection_results() {
        for (twilio, ours) in [
            ("human", AnsweredBy::Human),
            ("machine_start", AnsweredBy::Machine),
            ("machine_end_beep", AnsweredBy::Machine),
            ("machine_end_silence", AnsweredBy::Machine),
            ("machine_end_other", AnsweredBy::Machine),
            ("fax", AnsweredBy::Machine),
            ("unknown", AnsweredBy::Unknown),
        ] {
            assert_eq!(AnsweredBy::from_twilio(twilio), ours, "{twilio}");
        }
    }

    #[test]
    fn only_a_final_call_completes() {
        let mut call = CallRecord {
            call_sid: "CA1".into(),
            request_key: Some("k".into()),
            call_status: Some(CallStatus::InProgress),
            sequence_number: Some(2),
            final_status: None,
            call_duration: None,
            answered_by: None,
            sip_response_code: None,
        };
        assert_eq!(CallCompleted::from_call(&call), None);
        call.final_status = Some(CallStatus::NoAnswer);
        let event = CallCompleted::from_call(&call).unwrap();
        assert_eq!(event.outcome, Outcome::NoAnswer);
        assert_eq!(
            DomainEvent::CallCompleted(event).detail(),
            r#"{"call_sid":"CA1","outcome":"no-answer","idempotency_key":"k"}"#
        );
    }

    #[test]
    fn debug_masks_the_caller() {
        let event = VoicemailRecorded {
            call_sid: "CA1".into(),
            caller: Some("+81312345678".into()),
            recording_url: "https://api.twilio.com/x".into(),
            recording_sid: None,
            duration_seconds: Some(5),
        };
        let debug = format!("{:?}", DomainEvent::VoicemailRecorded(event));
        assert!(!debug.contains("+81312345678"), "{debug}");
        let event = VoicemailTranscribed {
            call_sid: "CA1".into(),
            caller: Some("+81312345678".into()),
            recording_url: "https://api.twilio.com/x".into(),
            recording_sid: None,
            transcription: "折り返しお願いします".into(),
        };
        let debug = format!("{:?}", DomainEvent::VoicemailTranscribed(event));
        assert!(!debug.contains("+81312345678"), "{debug}");
        assert!(!debug.contains("折り返し"), "{debug}");
    }

    /// The state machine's `putEvents` entries and these types are one contract: each alert
    /// state's `DetailType` parses, with a detail holding exactly the fields its template sets
    /// (the JSONPath templates filled with a sample of each type), and its `Source` is ours.
    #[test]
    fn the_state_machines_alert_events_parse() {
        let asl: serde_json::Value = serde_json::from_str(include_str!(
            "../../../statemachine/alert-escalation.asl.json"
        ))
        .unwrap();
        let samples = [
            serde_json::json!({"alert_id": "alarm-x", "acknowledged_by": {"name": "山田", "number": "+819011112222"},
                "acknowledged_at": "2026-11-25T05:01:00Z", "call_sid": "CA1", "calls": 2}),
            serde_json::json!({"alert_id": "alarm-x", "calls": 6, "rounds": 2}),
            serde_json::json!({"alert_id": "alarm-x", "error": "Alert.InvalidPlan"}),
        ];
        let mut seen = Vec::new();
        for state in asl["States"].as_object().unwrap().values() {
            if state["Resource"] != "arn:aws:states:::events:putEvents" {
                continue;
            }
            let entry = &state["Parameters"]["Entries"][0];
            assert_eq!(entry["Source"], "${EventSource}");
            assert_eq!(entry["EventBusName"], "${EventBusName}");
            let detail_type = entry["DetailType"].as_str().unwrap();
            let fields: Vec<&str> = entry["Detail"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.strip_suffix(".$").unwrap_or(k))
                .collect();
            let sample = samples
                .iter()
                .find(|s| {
                    let mut keys: Vec<&str> =
                        s.as_object().unwrap().keys().map(String::as_str).collect();
                    let mut want = fields.clone();
                    keys.sort_unstable();
                    want.sort_unstable();
                    keys == want
                })
                .unwrap_or_else(|| panic!("{detail_type}: no type has exactly {fields:?}"));
            let event = DomainEvent::parse(detail_type, sample.clone()).unwrap();
            assert_eq!(event.detail_type(), detail_type);
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&event.detail()).unwrap(),
                *sample
            );
            seen.push(detail_type);
        }
        seen.sort_unstable();
        assert_eq!(
            seen,
            ["Alert Acknowledged", "Alert Failed", "Alert Unacknowledged"]
        );
    }

    #[test]
    fn debug_masks_who_acknowledged() {
        let event = DomainEvent::parse(
            "Alert Acknowledged",
            serde_json::json!({"alert_id": "a", "acknowledged_by": {"number": "+819011112222"},
                "acknowledged_at": "2026-11-25T05:01:00Z", "call_sid": "CA1", "calls": 1}),
        )
        .unwrap();
        assert!(!format!("{event:?}").contains("+819011112222"));
    }
}

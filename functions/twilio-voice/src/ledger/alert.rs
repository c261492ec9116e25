//! Alert steps: the request item of a phone alert's call also carries the Step Functions step
//! waiting for it, so that the signed webhooks of that call can resume it.
//!
//! **An alert step** is a request item (`pk = "request#alert:<alert id>:<attempt>"`) with, in
//! addition to a request's attributes:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `task_token` | S | the step's `$$.Task.Token`: a bearer credential, never logged, never in a URL |
//! | `alert_step` | S | JSON: alert ID, attempt, contact, speech, prompts (what the call says) |
//! | `step_deadline` | N | epoch seconds after which the step has timed out: a key pressed later does not acknowledge |
//! | `acknowledged_at`, `acknowledged_call_sid` | N, S | set once, by the first key `1` before the deadline; never removed |
//! | `delivered_at` | N | set once Step Functions took the acknowledgement (`SendTaskSuccess` answered): until then, every key `1` and the call's final status send it again |
//! | `closed_at` | N | set once, by whoever ended the step without an acknowledgement (a final status, a refused call) |
//!
//! The webhooks' request names the item (`key` in the signed URL), so the call's first webhook
//! finds its step even before `outbound-call` has recorded the call SID.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{ReturnValue, ReturnValuesOnConditionCheckFailure};
use std::num::NonZeroU8;

use serde::{Deserialize, Serialize};

use super::{
    ClaimOutcome, IdempotencyKey, Item, Ledger, LedgerError, REQUEST, RequestState, get_n, get_s,
    n, request_record, s, sdk_error, service_error,
};
use crate::phone::PhoneNumber;
use crate::stepfunctions::TaskToken;

/// The prefix of every alert step's idempotency key.
pub const ALERT_KEY_PREFIX: &str = "alert:";

/// Who an alert call goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub number: PhoneNumber,
}

/// What an alert call says, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Speech {
    pub message: String,
    /// A BCP 47 tag Twilio's `<Say language>` takes: `ja-JP`, `en-US`.
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
}

/// One call of an escalation, and the step of the execution waiting for its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertStep {
    /// The execution's name.
    pub alert_id: String,
    /// 1 for the first call of the escalation, counting across rounds.
    pub attempt: u32,
    pub contact: Contact,
    pub speech: Speech,
    /// How many times the message is offered before the call hangs up unacknowledged (at least
    /// once: a step that never offers the key could never be acknowledged).
    pub max_prompts: NonZeroU8,
    pub task_token: TaskToken,
    /// Epoch seconds.
    pub step_deadline: u64,
}

impl AlertStep {
    /// `alert:<alert id>:<attempt>`: every delivery of this step's message claims this key.
    pub fn key(&self) -> Result<IdempotencyKey, super::InvalidKey> {
        IdempotencyKey::new(format!(
            "{ALERT_KEY_PREFIX}{}:{}",
            self.alert_id, self.attempt
        ))
    }

    /// Whether a request key (a call item's `request_key`) is an alert step's.
    pub fn is_alert_key(key: &str) -> bool {
        key.starts_with(ALERT_KEY_PREFIX)
    }
}

/// The part of a step stored as one JSON attribute (the token and deadline are attributes of
/// their own: conditions read them).
#[derive(Serialize, Deserialize)]
struct StepDocument {
    alert_id: String,
    attempt: u32,
    contact: Contact,
    speech: Speech,
    max_prompts: NonZeroU8,
}

/// The first key `1` before the deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledgement {
    /// Epoch seconds.
    pub at: u64,
    pub call_sid: String,
}

/// An alert step as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    pub key: IdempotencyKey,
    pub step: AlertStep,
    pub state: RequestState,
    pub call_sid: Option<String>,
    pub acknowledged: Option<Acknowledgement>,
    /// Step Functions took the acknowledgement (`delivered_at`). An acknowledgement that is
    /// not delivered yet is sent again by the next key `1` or the call's final status.
    pub delivered: bool,
    /// Ended without an acknowledgement (a final status, a refused call).
    pub closed: bool,
}

/// The answer to [`Ledger::acknowledge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// This key acknowledged the step: resume it.
    First(AlertRecord),
    /// Acknowledged before (a replayed webhook, or a retry of this write whose first answer was
    /// lost): send it on unless it is `delivered`.
    Already(AlertRecord),
    /// The deadline passed, or the step ended without an acknowledgement: the key counts for
    /// nothing.
    TimedOut(AlertRecord),
    /// The step records another call: this call is not the one that was placed for it.
    OtherCall,
    /// No such step.
    Unknown,
}

impl Ledger {
    /// [`Ledger::claim`] for an alert step: the same conditional write, carrying the step (its
    /// token and deadline included) so that it is stored before anything is sent.
    pub async fn claim_alert(
        &self,
        key: &IdempotencyKey,
        step: &AlertStep,
    ) -> Result<ClaimOutcome, LedgerError> {
        let document = serde_json::to_string(&StepDocument {
            alert_id: step.alert_id.clone(),
            attempt: step.attempt,
            contact: step.contact.clone(),
            speech: step.speech.clone(),
            max_prompts: step.max_prompts,
        })
        .map_err(|_| LedgerError::Malformed("alert_step"))?;
        self.put_claim(
            key,
            &step.contact.number,
            vec![
                ("task_token", s(step.task_token.expose())),
                ("alert_step", s(document)),
                ("step_deadline", n(step.step_deadline)),
            ],
        )
        .await
    }

    /// The alert step stored under `key`, read consistently; `None` if there is none (or the
    /// request is not an alert step).
    pub async fn alert_step(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<AlertRecord>, LedgerError> {
        match self.request_item(key).await? {
            Some(item) if item.contains_key("task_token") => alert_record(key, &item).map(Some),
            _ => Ok(None),
        }
    }

    /// Records a key `1` from `call_sid`, once: one conditional update that succeeds only if the
    /// step is not acknowledged, not closed, its deadline (judged on the ledger's clock) has
    /// not passed, and it records no other call.
    pub async fn acknowledge(
        &self,
        key: &IdempotencyKey,
        call_sid: &str,
    ) -> Result<AckOutcome, LedgerError> {
        let now = self.now();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("{REQUEST}{key}")))
            .update_expression("SET acknowledged_at = :now, acknowledged_call_sid = :sid")
            .condition_expression(
                "attribute_exists(task_token) AND attribute_not_exists(acknowledged_at) \
                 AND attribute_not_exists(closed_at) AND step_deadline > :now \
                 AND (attribute_not_exists(call_sid) OR call_sid = :sid)",
            )
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":sid", s(call_sid))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => Ok(AckOutcome::First(alert_record(
                key,
                &out.attributes.unwrap_or_default(),
            )?)),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                UpdateItemError::ConditionalCheckFailedException(failed) => {
                    let Some(item) = failed.item.filter(|i| i.contains_key("task_token")) else {
                        return Ok(AckOutcome::Unknown);
                    };
                    let record = alert_record(key, &item)?;
                    Ok(match (&record.acknowledged, &record.call_sid) {
                        (Some(_), _) => AckOutcome::Already(record),
                        (None, Some(sid)) if sid != call_sid => AckOutcome::OtherCall,
                        _ => AckOutcome::TimedOut(record),
                    })
                }
                other => Err(service_error("UpdateItem", other)),
            },
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }

    /// Records that Step Functions took the acknowledgement (`SendTaskSuccess` answered), so
    /// that later keys and the final status send nothing. Setting it again changes nothing.
    pub async fn mark_delivered(&self, key: &IdempotencyKey) -> Result<(), LedgerError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("{REQUEST}{key}")))
            .update_expression("SET delivered_at = if_not_exists(delivered_at, :now)")
            .condition_expression("attribute_exists(acknowledged_at)")
            .expression_attribute_values(":now", n(self.now()))
            .send()
            .await
            .map(drop)
            .map_err(|e| match e {
                SdkError::ServiceError(e) if e.err().is_conditional_check_failed_exception() => {
                    LedgerError::Malformed("acknowledged_at")
                }
                e => sdk_error("UpdateItem", e),
            })
    }

    /// Ends the step without an acknowledgement, once: `Some(record)` for the one caller that
    /// closed it (and must now fail the step in Step Functions), `None` if it was acknowledged
    /// or closed already, or is not an alert step.
    pub async fn close_alert_step(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<AlertRecord>, LedgerError> {
        let now = self.now();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("{REQUEST}{key}")))
            .update_expression("SET closed_at = :now")
            .condition_expression(
                "attribute_exists(task_token) AND attribute_not_exists(acknowledged_at) \
                 AND attribute_not_exists(closed_at)",
            )
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => alert_record(key, &out.attributes.unwrap_or_default()).map(Some),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(None)
            }
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }
}

fn alert_record(key: &IdempotencyKey, item: &Item) -> Result<AlertRecord, LedgerError> {
    let request = request_record(key, item)?;
    let document: StepDocument = get_s(item, "alert_step")
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or(LedgerError::Malformed("alert_step"))?;
    let task_token = get_s(item, "task_token")
        .and_then(|t| TaskToken::new(t).ok())
        .ok_or(LedgerError::Malformed("task_token"))?;
    let acknowledged = match (
        get_n::<u64>(item, "acknowledged_at")?,
        get_s(item, "acknowledged_call_sid"),
    ) {
        (Some(at), Some(sid)) => Some(Acknowledgement {
            at,
            call_sid: sid.to_owned(),
        }),
        (None, None) => None,
        _ => return Err(LedgerError::Malformed("acknowledged_at")),
    };
    Ok(AlertRecord {
        key: key.clone(),
        step: AlertStep {
            alert_id: document.alert_id,
            attempt: document.attempt,
            contact: document.contact,
            speech: document.speech,
            max_prompts: document.max_prompts,
            task_token,
            step_deadline: get_n(item, "step_deadline")?
                .ok_or(LedgerError::Malformed("step_deadline"))?,
        },
        state: request.state,
        call_sid: request.call_sid,
        delivered: acknowledged.is_some() && item.contains_key("delivered_at"),
        acknowledged,
        closed: item.contains_key("closed_at"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_alert_and_the_attempt() {
        let step = AlertStep {
            alert_id: "alarm-db-cpu-1a2b3c4d".into(),
            attempt: 3,
            contact: Contact {
                name: Some("山田".into()),
                number: PhoneNumber::parse("+815012345678").unwrap(),
            },
            speech: Speech {
                message: "データベースの CPU が高い状態です".into(),
                language: "ja-JP".into(),
                voice: None,
            },
            max_prompts: NonZeroU8::new(3).unwrap(),
            task_token: TaskToken::new("secret-token").unwrap(),
            step_deadline: 0,
        };
        let key = step.key().unwrap();
        assert_eq!(key.as_str(), "alert:alarm-db-cpu-1a2b3c4d:3");
        assert!(AlertStep::is_alert_key(key.as_str()));
        assert!(!AlertStep::is_alert_key("arn:aws:scheduler:x@2026"));
        let debug = format!("{step:?}");
        assert!(!debug.contains("secret-token"), "{debug}");
        assert!(!debug.contains("+815012345678"), "{debug}");
    }
}

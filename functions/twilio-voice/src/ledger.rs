//! The call ledger in DynamoDB: every outbound request claimed once before anything is sent to
//! Twilio, the call SID it produced, and the call's progress from its status callbacks.
//!
//! Twilio's Calls API has no idempotency key, and Lambda's async queue, EventBridge Scheduler and
//! SQS all deliver at least once. A conditional write decides which delivery may dial; every
//! other delivery is answered from what the first one recorded, never by a second request.
//!
//! # Items (one table, string partition key `pk`, no sort key, TTL on `expires_at`)
//!
//! **A request**, `pk = "request#<idempotency key>"`:
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `state` | S | `claimed` (a delivery owns it; nothing known yet), `placed` (Twilio answered with `call_sid`), `unknown` (sent, then no answer: the call may exist), `failed` (refused for good; `error_type`), `released` (nothing was placed: the next delivery may claim it again) |
//! | `claim_id` | S | random, per claim: only the delivery holding it may record the outcome |
//! | `claimed_at` | N | epoch seconds of the claim; a claim without a SID older than a few minutes is *stale* and gets resolved from Twilio's Calls list |
//! | `to` | S | the destination (E.164), for that Calls-list lookup; never logged |
//! | `call_sid`, `call_status` | S | once placed: the SID and the status Twilio answered with |
//! | `error_type`, `twilio_code` | S, N | once failed: the error type of the README's table, Twilio's code |
//! | `updated_at`, `expires_at` | N | epoch seconds; `expires_at` is the TTL |
//!
//! **A call**, `pk = "call#<CallSid>"`: the lookup by call SID, written when a request records its
//! SID and by every status callback (incoming calls included, which have no request):
//!
//! | attribute | type | meaning |
//! |---|---|---|
//! | `request_key` | S | the idempotency key of the request that placed it, when it was ours |
//! | `call_status` | S | Twilio's `CallStatus` of the newest callback applied |
//! | `sequence_number` | N | that callback's `SequenceNumber`: an older or equal one is ignored |
//! | `final_status` | S | `completed`, `busy`, `no-answer`, `failed` or `canceled`, once reached |
//! | `call_duration`, `answered_by`, `sip_response_code` | N, S, N | as Twilio reported them |
//! | `updated_at`, `expires_at` | N | as above |
//!
//! **An alert step** is a request item with the Step Functions step waiting for its call: see
//! the `alert` submodule ([`AlertStep`]).
//!
//! **A marker**, `pk = "once#<what>"` (`updated_at`, `expires_at`): written by
//! [`Ledger::first_time`] *after* an event announced from a webhook Twilio may deliver twice
//! (a call's outcome, a voicemail's recording) was published, and read first with
//! [`Ledger::marked`]: a delivery after a successful publish publishes nothing, a delivery after
//! a failed one publishes. (Two deliveries at the same moment may both publish: at least once,
//! never lost, is the promise.)
//!
//! A second item keyed by SID, rather than a global secondary index on `call_sid`, keeps the
//! lookup strongly consistent (a status callback can arrive milliseconds after the SID is
//! recorded) and lets a callback for a call we did not place (an incoming one) be recorded too.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use crate::phone::PhoneNumber;

mod alert;
pub use alert::{
    ALERT_KEY_PREFIX, AckOutcome, Acknowledgement, AlertRecord, AlertStep, Contact, Speech,
};

/// How long items are kept (the TTL): redeliveries and redrives happen within hours, a month
/// leaves room to look a call up.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A claim without a SID older than this is resolved from Twilio's Calls list: the first
/// delivery has either placed the call or died (a function runs at most 15 minutes, ours 28 s).
pub const STALE_AFTER: Duration = Duration::from_secs(5 * 60);

/// The clock the ledger stamps items with; tests pass a fixed one.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What identifies one request across its deliveries: 1–256 bytes, no control characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an idempotency key is 1 to 256 bytes without control characters")]
pub struct InvalidKey;

impl IdempotencyKey {
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidKey> {
        let key = key.into();
        if key.is_empty() || key.len() > 256 || key.chars().any(char::is_control) {
            return Err(InvalidKey);
        }
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", self.0)
    }
}

/// Twilio's `CallStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallStatus {
    Queued,
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown CallStatus {0:?}")]
pub struct UnknownStatus(pub String);

impl CallStatus {
    pub const ALL: [CallStatus; 9] = [
        Self::Queued,
        Self::Initiated,
        Self::Ringing,
        Self::InProgress,
        Self::Completed,
        Self::Busy,
        Self::NoAnswer,
        Self::Failed,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::NoAnswer => "no-answer",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// Twilio sends nothing after these.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Busy | Self::NoAnswer | Self::Failed | Self::Canceled
        )
    }
}

impl std::str::FromStr for CallStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request stands (the `state` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestState {
    Claimed,
    Placed,
    Unknown,
    Failed,
    Released,
}

impl RequestState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Placed => "placed",
            Self::Unknown => "unknown",
            Self::Failed => "failed",
            Self::Released => "released",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Claimed,
            Self::Placed,
            Self::Unknown,
            Self::Failed,
            Self::Released,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// A request item as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub key: IdempotencyKey,
    pub state: RequestState,
    pub claim_id: String,
    /// Epoch seconds.
    pub claimed_at: u64,
    pub to: Option<PhoneNumber>,
    pub call_sid: Option<String>,
    pub call_status: Option<String>,
    pub error_type: Option<String>,
    pub twilio_code: Option<u32>,
}

impl RequestRecord {
    /// Claimed or sent long enough ago, and still no SID: the delivery that claimed it is gone.
    pub fn is_stale(&self, now: SystemTime, after: Duration) -> bool {
        matches!(self.state, RequestState::Claimed | RequestState::Unknown)
            && self.call_sid.is_none()
            && self.claimed_at.saturating_add(after.as_secs()) <= epoch(now)
    }

    /// What another delivery of this request gets.
    pub fn duplicate(&self) -> Duplicate {
        match (self.state, &self.call_sid) {
            (_, Some(sid)) => Duplicate::Placed {
                call_sid: sid.clone(),
                call_status: self.call_status.clone().unwrap_or_default(),
            },
            (RequestState::Failed, None) => Duplicate::Failed {
                error_type: self.error_type.clone().unwrap_or_default(),
                twilio_code: self.twilio_code,
            },
            _ => Duplicate::OutcomeUnknown,
        }
    }
}

/// The answer to a second delivery of a request: never a second dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Duplicate {
    /// The first delivery placed the call.
    Placed {
        call_sid: String,
        call_status: String,
    },
    /// The first delivery was refused for good (the same answer again).
    Failed {
        error_type: String,
        twilio_code: Option<u32>,
    },
    /// In flight, or sent without an answer: `OutcomeUnknown.CallMayExist`.
    OutcomeUnknown,
}

/// The right to send a request, held by the one delivery whose claim won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: IdempotencyKey,
    claim_id: String,
}

/// The answer to [`Ledger::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This delivery may send the request.
    Won(Claim),
    /// Another delivery claimed it first: what it recorded (see [`RequestRecord::duplicate`]).
    Duplicate(RequestRecord),
}

/// What a Calls-list lookup found for a stale claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Found {
        call_sid: String,
        call_status: String,
    },
    /// No call to that number since the claim: the request may be claimed and sent again.
    NotFound,
}

/// One status callback, as Twilio sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    pub call_sid: String,
    pub call_status: CallStatus,
    pub sequence_number: u32,
    pub call_duration: Option<u32>,
    pub answered_by: Option<String>,
    pub sip_response_code: Option<u16>,
}

/// A call item as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub call_sid: String,
    pub request_key: Option<String>,
    pub call_status: Option<CallStatus>,
    pub sequence_number: Option<u32>,
    pub final_status: Option<CallStatus>,
    pub call_duration: Option<u32>,
    pub answered_by: Option<String>,
    pub sip_response_code: Option<u16>,
}

/// The answer to [`Ledger::record_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusRecorded {
    /// The callback was the newest so far; `reached_final` when it brought the call's first
    /// final status: the moment to announce the outcome, once.
    Applied {
        call: CallRecord,
        reached_final: bool,
    },
    /// An older or equal `SequenceNumber` than one already applied: ignored.
    Stale,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Throttled, a 5xx, a timeout or no connection, after the SDK's bounded retries.
    #[error("the call ledger is unavailable ({operation}: {reason}); retry later")]
    Unavailable {
        operation: &'static str,
        reason: String,
    },
    /// The table is missing, access is denied, or the request is invalid: a deployment fault.
    #[error("the call ledger refused {operation}: {reason}")]
    Refused {
        operation: &'static str,
        reason: String,
    },
    /// The claim was resolved or released by someone else; this delivery must not record.
    #[error("the claim on this request is no longer held")]
    ClaimLost,
    #[error("a ledger item is malformed: {0}")]
    Malformed(&'static str),
}

impl LedgerError {
    /// Nothing was decided: a later delivery of the same request may try again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// The ledger on one table.
#[derive(Clone)]
pub struct Ledger {
    client: Client,
    table: String,
    retention: Duration,
    clock: Clock,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("table", &self.table)
            .finish()
    }
}

const REQUEST: &str = "request#";
const CALL: &str = "call#";
const ONCE: &str = "once#";

impl Ledger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            retention: DEFAULT_RETENTION,
            clock: Arc::new(SystemTime::now),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The ledger's clock (stale claims are judged on it).
    pub fn time(&self) -> SystemTime {
        (self.clock)()
    }

    fn now(&self) -> u64 {
        epoch(self.time())
    }

    fn expires_at(&self, now: u64) -> AttributeValue {
        n(now + self.retention.as_secs())
    }

    /// Claims `key` for this delivery before anything is sent. One conditional `PutItem`: it
    /// succeeds for a new key, a released one or one past its TTL that DynamoDB has not deleted
    /// yet; otherwise the existing item comes back on the error (`ALL_OLD`), without a read.
    pub async fn claim(
        &self,
        key: &IdempotencyKey,
        to: &PhoneNumber,
    ) -> Result<ClaimOutcome, LedgerError> {
        self.put_claim(key, to, Vec::new()).await
    }

    /// The claim's conditional `PutItem`, with `extra` attributes written in the same request.
    async fn put_claim(
        &self,
        key: &IdempotencyKey,
        to: &PhoneNumber,
        extra: Vec<(&'static str, AttributeValue)>,
    ) -> Result<ClaimOutcome, LedgerError> {
        let now = self.now();
        let claim_id = claim_id();
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("{REQUEST}{key}")))
            .item("state", s(RequestState::Claimed.as_str()))
            .item("claim_id", s(&claim_id))
            .item("claimed_at", n(now))
            .item("to", s(to.as_str()))
            .item("updated_at", n(now))
            .item("expires_at", self.expires_at(now));
        for (name, value) in extra {
            put = put.item(name, value);
        }
        let result = put
            .condition_expression(
                "attribute_not_exists(pk) OR #state = :released OR expires_at < :now",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":released", s(RequestState::Released.as_str()))
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(ClaimOutcome::Won(Claim {
                key: key.clone(),
                claim_id,
            })),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(failed) => {
                    let item = failed
                        .item
                        .ok_or(LedgerError::Malformed("a failed claim returned no item"))?;
                    Ok(ClaimOutcome::Duplicate(request_record(key, &item)?))
                }
                other => Err(service_error("PutItem", other)),
            },
            Err(e) => Err(sdk_error("PutItem", e)),
        }
    }

    /// Twilio created the call: the request is placed, and the call item points back at it.
    pub async fn record_placed(
        &self,
        claim: &Claim,
        call_sid: &str,
        call_status: &str,
    ) -> Result<(), LedgerError> {
        let now = self.now();
        let request = self
            .owned_update(claim, now)
            .update_expression(
                "SET #state = :placed, call_sid = :sid, call_status = :status, updated_at = :now",
            )
            .expression_attribute_values(":placed", s(RequestState::Placed.as_str()))
            .expression_attribute_values(":sid", s(call_sid))
            .expression_attribute_values(":status", s(call_status))
            .build()
            .map_err(|_| LedgerError::Malformed("request update"))?;
        self.transact(vec![request, self.call_link(call_sid, &claim.key, now)?])
            .await
    }

    /// The request was sent and no answer came back (5xx, timeout, reset): the call may exist.
    pub async fn record_unknown(&self, claim: &Claim) -> Result<(), LedgerError> {
        self.set_state(claim, RequestState::Unknown, &[]).await
    }

    /// Refused for good (an invalid request, Twilio's 4xx): later deliveries get the same answer.
    pub async fn record_failed(
        &self,
        claim: &Claim,
        error_type: &str,
        twilio_code: Option<u32>,
    ) -> Result<(), LedgerError> {
        let mut extra = vec![("error_type", s(error_type))];
        if let Some(code) = twilio_code {
            extra.push(("twilio_code", n(code)));
        }
        self.set_state(claim, RequestState::Failed, &extra).await
    }

    /// Nothing reached Twilio (rate limited, unreachable, credentials unavailable): the next
    /// delivery may claim the request again.
    pub async fn release(&self, claim: &Claim) -> Result<(), LedgerError> {
        self.set_state(claim, RequestState::Released, &[]).await
    }

    /// The request item, read consistently.
    pub async fn request(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<RequestRecord>, LedgerError> {
        self.request_item(key)
            .await?
            .map(|item| request_record(key, &item))
            .transpose()
    }

    /// The raw request item, read consistently.
    async fn request_item(&self, key: &IdempotencyKey) -> Result<Option<Item>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("{REQUEST}{key}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(out.item)
    }

    /// Records what a Calls-list lookup found for a stale claim, if nobody recorded an outcome
    /// since `seen` was read (its claim ID and state are the condition).
    /// `Found` places the request with that SID; `NotFound` releases it.
    pub async fn resolve(
        &self,
        seen: &RequestRecord,
        found: &Resolution,
    ) -> Result<(), LedgerError> {
        let now = self.now();
        let claim = Claim {
            key: seen.key.clone(),
            claim_id: seen.claim_id.clone(),
        };
        let update = self
            .owned_update(&claim, now)
            .condition_expression("claim_id = :claim AND #state = :seen")
            .expression_attribute_values(":seen", s(seen.state.as_str()));
        match found {
            Resolution::Found {
                call_sid,
                call_status,
            } => {
                let request = update
                    .update_expression(
                        "SET #state = :placed, call_sid = :sid, call_status = :status, \
                         updated_at = :now",
                    )
                    .expression_attribute_values(":placed", s(RequestState::Placed.as_str()))
                    .expression_attribute_values(":sid", s(call_sid))
                    .expression_attribute_values(":status", s(call_status))
                    .build()
                    .map_err(|_| LedgerError::Malformed("request update"))?;
                self.transact(vec![request, self.call_link(call_sid, &seen.key, now)?])
                    .await
            }
            Resolution::NotFound => {
                let request = update
                    .update_expression("SET #state = :released, updated_at = :now")
                    .expression_attribute_values(":released", s(RequestState::Released.as_str()))
                    .build()
                    .map_err(|_| LedgerError::Malformed("request update"))?;
                self.transact(vec![request]).await
            }
        }
    }

    /// Applies a status callback unless one with an equal or higher `SequenceNumber` was
    /// applied already (Twilio may deliver them out of order, and more than once).
    pub async fn record_status(
        &self,
        update: &StatusUpdate,
    ) -> Result<StatusRecorded, LedgerError> {
        let now = self.now();
        let mut set = vec![
            "call_status = :status",
            "sequence_number = :seq",
            "updated_at = :now",
            "expires_at = :expires",
        ];
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("{CALL}{}", update.call_sid)))
            .condition_expression("attribute_not_exists(sequence_number) OR sequence_number < :seq")
            .expression_attribute_values(":status", s(update.call_status.as_str()))
            .expression_attribute_values(":seq", n(update.sequence_number))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":expires", self.expires_at(now))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::None);
        if update.call_status.is_final() {
            // The first final status stays: a second one (another callback of the same call)
            // neither changes the outcome nor announces it again.
            set.push("final_status = if_not_exists(final_status, :status)");
        }
        if let Some(duration) = update.call_duration {
            set.push("call_duration = :duration");
            request = request.expression_attribute_values(":duration", n(duration));
        }
        if let Some(answered_by) = &update.answered_by {
            set.push("answered_by = :answered_by");
            request = request.expression_attribute_values(":answered_by", s(answered_by));
        }
        if let Some(code) = update.sip_response_code {
            set.push("sip_response_code = :sip");
            request = request.expression_attribute_values(":sip", n(code));
        }
        let result = request
            .update_expression(format!("SET {}", set.join(", ")))
            .send()
            .await;
        match result {
            Ok(out) => {
                // The item before this update (none for a new call), and the update on top.
                let mut call = call_record(&update.call_sid, &out.attributes.unwrap_or_default())?;
                let reached_final = update.call_status.is_final() && call.final_status.is_none();
                if reached_final {
                    call.final_status = Some(update.call_status);
                }
                call.call_status = Some(update.call_status);
                call.sequence_number = Some(update.sequence_number);
                call.call_duration = update.call_duration.or(call.call_duration);
                call.answered_by = update.answered_by.clone().or(call.answered_by);
                call.sip_response_code = update.sip_response_code.or(call.sip_response_code);
                Ok(StatusRecorded::Applied {
                    call,
                    reached_final,
                })
            }
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(StatusRecorded::Stale)
            }
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }

    /// `true` the first time `marker` is seen, `false` ever after (until its TTL): one
    /// conditional `PutItem` on `pk = "once#<marker>"`, so that a webhook Twilio delivers twice
    /// announces its event once.
    pub async fn first_time(&self, marker: &str) -> Result<bool, LedgerError> {
        let now = self.now();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("{ONCE}{marker}")))
            .item("updated_at", n(now))
            .item("expires_at", self.expires_at(now))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(false)
            }
            Err(e) => Err(sdk_error("PutItem", e)),
        }
    }

    /// Whether [`Ledger::first_time`] has written `marker` (a consistent `GetItem`).
    pub async fn marked(&self, marker: &str) -> Result<bool, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("{ONCE}{marker}")))
            .projection_expression("pk")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        Ok(out.item.is_some())
    }

    /// The call item for `call_sid`, read consistently.
    pub async fn call(&self, call_sid: &str) -> Result<Option<CallRecord>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("{CALL}{call_sid}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        out.item
            .map(|item| call_record(call_sid, &item))
            .transpose()
    }

    /// An update of the request item that only the claim's holder may make.
    fn owned_update(
        &self,
        claim: &Claim,
        now: u64,
    ) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        Update::builder()
            .table_name(&self.table)
            .key("pk", s(format!("{REQUEST}{}", claim.key)))
            .condition_expression("claim_id = :claim")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":claim", s(&claim.claim_id))
            .expression_attribute_values(":now", n(now))
    }

    /// The call item's link back to its request, created if no callback created it first.
    fn call_link(
        &self,
        call_sid: &str,
        key: &IdempotencyKey,
        now: u64,
    ) -> Result<Update, LedgerError> {
        Update::builder()
            .table_name(&self.table)
            .key("pk", s(format!("{CALL}{call_sid}")))
            .update_expression("SET request_key = :key, updated_at = :now, expires_at = :expires")
            .expression_attribute_values(":key", s(key.as_str()))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":expires", self.expires_at(now))
            .build()
            .map_err(|_| LedgerError::Malformed("call update"))
    }

    async fn set_state(
        &self,
        claim: &Claim,
        state: RequestState,
        extra: &[(&str, AttributeValue)],
    ) -> Result<(), LedgerError> {
        let now = self.now();
        let mut expression = String::from("SET #state = :state, updated_at = :now");
        let mut update = self
            .owned_update(claim, now)
            .expression_attribute_values(":state", s(state.as_str()));
        for (name, value) in extra {
            expression.push_str(&format!(", {name} = :{name}"));
            update = update.expression_attribute_values(format!(":{name}"), value.clone());
        }
        let update = update
            .update_expression(expression)
            .build()
            .map_err(|_| LedgerError::Malformed("request update"))?;
        self.transact(vec![update]).await
    }

    async fn transact(&self, updates: Vec<Update>) -> Result<(), LedgerError> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(
                updates
                    .into_iter()
                    .map(|u| TransactWriteItem::builder().update(u).build())
                    .collect(),
            ))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => {
                let err = e.into_err();
                // The first item is the request, conditional on the claim: its failure means
                // the claim was taken over, not that the ledger is broken.
                if let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
                    cancelled,
                ) = &err
                    && cancelled
                        .cancellation_reasons()
                        .iter()
                        .any(|r| r.code() == Some("ConditionalCheckFailed"))
                {
                    return Err(LedgerError::ClaimLost);
                }
                Err(service_error("TransactWriteItems", err))
            }
            Err(e) => Err(sdk_error("TransactWriteItems", e)),
        }
    }
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn claim_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

type Item = HashMap<String, AttributeValue>;

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n<T: std::str::FromStr>(item: &Item, name: &'static str) -> Result<Option<T>, LedgerError> {
    item.get(name)
        .map(|v| {
            v.as_n()
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(LedgerError::Malformed(name))
        })
        .transpose()
}

fn request_record(key: &IdempotencyKey, item: &Item) -> Result<RequestRecord, LedgerError> {
    Ok(RequestRecord {
        key: key.clone(),
        state: get_s(item, "state")
            .and_then(RequestState::parse)
            .ok_or(LedgerError::Malformed("state"))?,
        claim_id: get_s(item, "claim_id")
            .ok_or(LedgerError::Malformed("claim_id"))?
            .to_owned(),
        claimed_at: get_n(item, "claimed_at")?.ok_or(LedgerError::Malformed("claimed_at"))?,
        to: get_s(item, "to")
            .map(|to| PhoneNumber::parse(to).map_err(|_| LedgerError::Malformed("to")))
            .transpose()?,
        call_sid: get_s(item, "call_sid").map(str::to_owned),
        call_status: get_s(item, "call_status").map(str::to_owned),
        error_type: get_s(item, "error_type").map(str::to_owned),
        twilio_code: get_n(item, "twilio_code")?,
    })
}

fn status(item: &Item, name: &'static str) -> Result<Option<CallStatus>, LedgerError> {
    get_s(item, name)
        .map(|v| v.parse().map_err(|_| LedgerError::Malformed(name)))
        .transpose()
}

fn call_record(call_sid: &str, item: &Item) -> Result<CallRecord, LedgerError> {
    Ok(CallRecord {
        call_sid: call_sid.to_owned(),
        request_key: get_s(item, "request_key").map(str::to_owned),
        call_status: status(item, "call_status")?,
        sequence_number: get_n(item, "sequence_number")?,
        final_status: status(item, "final_status")?,
        call_duration: get_n(item, "call_duration")?,
        answered_by: get_s(item, "answered_by").map(str::to_owned),
        sip_response_code: get_n(item, "sip_response_code")?,
    })
}

/// Error codes after which nothing was decided and a later attempt may succeed (for a service
/// error the SDK's model does not name, read by its code).
const TRANSIENT: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "ReplicatedWriteConflictException",
];

fn service_error(operation: &'static str, err: impl Into<aws_sdk_dynamodb::Error>) -> LedgerError {
    use aws_sdk_dynamodb::Error as E;
    let err = err.into();
    let named = match &err {
        E::ProvisionedThroughputExceededException(_) => "ProvisionedThroughputExceededException",
        E::ThrottlingException(_) => "ThrottlingException",
        E::RequestLimitExceeded(_) => "RequestLimitExceeded",
        E::InternalServerError(_) => "InternalServerError",
        E::TransactionConflictException(_) => "TransactionConflictException",
        E::TransactionInProgressException(_) => "TransactionInProgressException",
        E::ReplicatedWriteConflictException(_) => "ReplicatedWriteConflictException",
        _ => err.code().unwrap_or("unknown"),
    };
    let reason = named.to_owned();
    if TRANSIENT.contains(&named) {
        LedgerError::Unavailable { operation, reason }
    } else {
        LedgerError::Refused { operation, reason }
    }
}

fn sdk_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> LedgerError
where
    E: Into<aws_sdk_dynamodb::Error>,
{
    match err {
        SdkError::ServiceError(e) => service_error(operation, e.into_err()),
        SdkError::TimeoutError(_) => LedgerError::Unavailable {
            operation,
            reason: "timed out".to_owned(),
        },
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => LedgerError::Unavailable {
            operation,
            reason: "no answer".to_owned(),
        },
        _ => LedgerError::Refused {
            operation,
            reason: "request not built".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_only_the_last_five_are_final() {
        for status in CallStatus::ALL {
            assert_eq!(status.as_str().parse::<CallStatus>(), Ok(status));
        }
        let finals: Vec<_> = CallStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(
            finals,
            [
                CallStatus::Completed,
                CallStatus::Busy,
                CallStatus::NoAnswer,
                CallStatus::Failed,
                CallStatus::Canceled
            ]
        );
        assert!("answered".parse::<CallStatus>().is_err());
    }

    #[test]
    fn keys_are_bounded_and_printable() {
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("a".repeat(257)).is_err());
        assert!(IdempotencyKey::new("a\nb").is_err());
        assert!(IdempotencyKey::new("a".repeat(256)).is_ok());
        assert!(
            IdempotencyKey::new(
                "arn:aws:scheduler:ap-northeast-1:123456789012:schedule/default/x@2026-11-25T00:00:00Z"
            )
            .is_ok()
        );
    }

    fn record(state: RequestState, sid: Option<&str>, claimed_at: u64) -> RequestRecord {
        RequestRecord {
            key: IdempotencyKey::new("k").unwrap(),
            state,
            claim_id: "c".into(),
            claimed_at,
            to: None,
            call_sid: sid.map(str::to_owned),
            call_status: sid.map(|_| "queued".to_owned()),
            error_type: (state == RequestState::Failed)
                .then(|| "NonRetryable.TwilioRejected".into()),
            twilio_code: None,
        }
    }

    #[test]
    fn a_duplicate_never_gets_a_second_dial() {
        let sid = "CA0123456789abcdef0123456789abcdef";
        assert_eq!(
            record(RequestState::Placed, Some(sid), 0).duplicate(),
            Duplicate::Placed {
                call_sid: sid.into(),
                call_status: "queued".into()
            }
        );
        assert_eq!(
            record(RequestState::Claimed, None, 0).duplicate(),
            Duplicate::OutcomeUnknown
        );
        assert_eq!(
            record(RequestState::Unknown, None, 0).duplicate(),
            Duplicate::OutcomeUnknown
        );
        assert!(matches!(
            record(RequestState::Failed, None, 0).duplicate(),
            Duplicate::Failed { .. }
        ));
    }

    #[test]
    fn only_an_old_claim_without_a_sid_is_stale() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let after = Duration::from_secs(300);
        assert!(record(RequestState::Claimed, None, 700).is_stale(now, after));
        assert!(record(RequestState::Unknown, None, 600).is_stale(now, after));
        assert!(!record(RequestState::Claimed, None, 701).is_stale(now, after));
        assert!(!record(RequestState::Placed, Some("CA1"), 0).is_stale(now, after));
        assert!(!record(RequestState::Failed, None, 0).is_stale(now, after));
    }
}

//! Phone alerts (README, "Phone alerts"): who is called for an alert, in what order, saying
//! what. The escalation itself runs on Step Functions (`statemachine/alert-escalation.asl.json`);
//! this module owns the shapes that pass between it and `outbound-call`:
//!
//! - the **alert**, the execution's input `{"alert": {...}}` ([`Alert`]);
//! - the **escalation policies**, JSON in SSM, checked whole at start-up ([`EscalationPolicies`]);
//! - the **plan** the state machine loops over ([`Plan`]), built from a policy and an alert;
//! - the two **SQS messages** the state machine sends with a task token ([`AlertMessage`]);
//! - the **execution names** that keep one alarm to one escalation ([`execution_name`]).

use std::collections::BTreeMap;
use std::num::NonZeroU8;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ledger::{ALERT_KEY_PREFIX, AlertStep, IdempotencyKey, InvalidKey};
use crate::phone::{AllowList, PhoneError, PhoneNumber};
use crate::stepfunctions::TaskToken;

/// `SendTaskFailure` error of a plan that cannot be made (unknown policy, empty alert).
pub const INVALID_PLAN: &str = "Alert.InvalidPlan";
/// `SendTaskFailure` error of a call Twilio refused: the next contact is called at once.
pub const CALL_FAILED: &str = "Alert.CallFailed";
/// `SendTaskFailure` error of a call that ended without key 1 (what the state machine's `Catch`
/// sees): the next contact is called at once.
pub const NOT_ACKNOWLEDGED: &str = "Alert.NotAcknowledged";

/// Most contacts in one policy.
pub const MAX_CONTACTS: usize = 10;
/// Rounds through the contacts.
pub const ROUNDS: std::ops::RangeInclusive<u32> = 1..=5;
/// Delay before each round after the first, in seconds.
pub const ROUND_DELAY_SECONDS: std::ops::RangeInclusive<u32> = 0..=3_600;
/// How long a contact's phone rings (`Timeout`).
pub const RING_TIMEOUT_SECONDS: std::ops::RangeInclusive<u32> = 5..=120;
/// How long one call may take before the next contact is called (the task's timeout).
pub const STEP_TIMEOUT_SECONDS: std::ops::RangeInclusive<u32> = 1..=3_600;
/// Times the message is played before the call hangs up unacknowledged.
pub const MAX_PROMPTS: std::ops::RangeInclusive<u8> = 1..=5;
/// Longest spoken message, in characters: an alert is a sentence or two, not a log.
pub const MAX_MESSAGE_CHARS: usize = 1_000;
/// Time allowed per prompt when a policy names no step timeout: the message, the Gather, a
/// confirmation.
const SECONDS_PER_PROMPT: u32 = 60;

/// The spoken language of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Japanese,
    English,
}

impl Language {
    /// `ja`, `ja-JP`, `en`, `en-US` (case-insensitive).
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.to_ascii_lowercase().as_str() {
            "ja" | "ja-jp" => Some(Self::Japanese),
            "en" | "en-us" => Some(Self::English),
            _ => None,
        }
    }

    /// The `<Say language>` tag.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Japanese => "ja-JP",
            Self::English => "en-US",
        }
    }
}

pub use crate::ledger::{Contact, Speech};

// ---------------------------------------------------------------- the alert

/// An execution's input, `{"alert": ...}`: from an alarm, `POST /alerts` or a direct
/// `StartExecution`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionInput {
    pub alert: Alert,
}

/// What happened, and optionally which policy and language. A `message` is spoken as given;
/// else the `alarm` is read out.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<Alarm>,
    /// A policy's name; the document's `default` without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// `ja` or `en`: overrides the policy's language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// A CloudWatch alarm's state change, as much of it as is spoken and keys the escalation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alarm {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `ALARM`, `OK` or `INSUFFICIENT_DATA`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the state changed (the event's `time`): with the name, it keys the escalation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("an alert needs a message or an alarm")]
    Empty,
    #[error("alert.language must be ja or en, not {0:?}")]
    Language(String),
    #[error("alert.message is empty")]
    EmptyMessage,
    #[error("alert.alarm.name is empty")]
    EmptyAlarmName,
    #[error("no escalation policy named {0:?}")]
    UnknownPolicy(String),
}

impl Alert {
    /// The alert's own rules; the policy is checked when the plan is made.
    pub fn check(&self) -> Result<(), AlertError> {
        match (&self.message, &self.alarm) {
            (None, None) => return Err(AlertError::Empty),
            (Some(m), _) if m.trim().is_empty() => return Err(AlertError::EmptyMessage),
            (_, Some(a)) if a.name.trim().is_empty() => return Err(AlertError::EmptyAlarmName),
            _ => {}
        }
        if let Some(l) = &self.language
            && Language::parse(l).is_none()
        {
            return Err(AlertError::Language(l.clone()));
        }
        Ok(())
    }

    /// The words spoken, in `language`: the message as given, else the alarm read out.
    pub fn render(&self, language: Language) -> String {
        let text = match (&self.message, &self.alarm) {
            (Some(message), _) => message.trim().to_owned(),
            (None, Some(alarm)) => alarm.render(language),
            (None, None) => String::new(),
        };
        truncate(&text, MAX_MESSAGE_CHARS)
    }
}

impl Alarm {
    fn render(&self, language: Language) -> String {
        let description = self
            .description
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty());
        let reason = self
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        let name = self.name.trim();
        match language {
            Language::Japanese => {
                let state = match self.state.as_str() {
                    "ALARM" => "アラーム",
                    "OK" => "正常",
                    "INSUFFICIENT_DATA" => "データ不足",
                    other => other,
                };
                let mut text = format!("CloudWatch アラーム、{name}、が{state}状態になりました。");
                if let Some(d) = description {
                    text.push_str(&format!("{}。", d.trim_end_matches('。')));
                }
                if let Some(r) = reason {
                    text.push_str(&format!("理由、{r}"));
                }
                text
            }
            Language::English => {
                let state = match self.state.as_str() {
                    "ALARM" => "ALARM",
                    "OK" => "OK",
                    "INSUFFICIENT_DATA" => "insufficient data",
                    other => other,
                };
                let mut text = format!("CloudWatch alarm {name} is in state {state}.");
                if let Some(d) = description {
                    text.push_str(&format!(" {}.", d.trim_end_matches('.')));
                }
                if let Some(r) = reason {
                    text.push_str(&format!(" Reason: {r}"));
                }
                text
            }
        }
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max_chars - 1).collect();
    cut.push('…');
    cut
}

// ---------------------------------------------------------------- the policies

/// The escalation policies in SSM (`ESCALATION_POLICIES_PARAMETER`):
///
/// ```json
/// {"default": "oncall", "policies": {"oncall": {"contacts": [{"name": "山田", "number": "+81..."}],
///  "rounds": 2, "round_delay_seconds": 300, "ring_timeout_seconds": 30, "language": "ja-JP",
///  "voice": "Polly.Takumi", "max_prompts": 3}}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationPolicies {
    default: String,
    policies: BTreeMap<String, EscalationPolicy>,
}

/// One policy: whom to call, how often, for how long, in which language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationPolicy {
    pub contacts: Vec<Contact>,
    pub rounds: u32,
    pub round_delay_seconds: u32,
    pub ring_timeout_seconds: u32,
    pub step_timeout_seconds: u32,
    pub language: Language,
    pub voice: Option<String>,
    pub max_prompts: NonZeroU8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoliciesDocument {
    default: String,
    policies: BTreeMap<String, PolicyDocument>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDocument {
    contacts: Vec<ContactDocument>,
    #[serde(default = "one")]
    rounds: u32,
    #[serde(default = "five_minutes")]
    round_delay_seconds: u32,
    #[serde(default = "thirty")]
    ring_timeout_seconds: u32,
    #[serde(default)]
    step_timeout_seconds: Option<u32>,
    #[serde(default = "japanese")]
    language: String,
    #[serde(default)]
    voice: Option<String>,
    #[serde(default = "three")]
    max_prompts: u8,
}

/// A contact as written: the number is checked after parsing, so that its error names the
/// contact instead of repeating the number.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactDocument {
    #[serde(default)]
    name: Option<String>,
    number: String,
}

fn one() -> u32 {
    1
}
fn five_minutes() -> u32 {
    300
}
fn thirty() -> u32 {
    30
}
fn three() -> u8 {
    3
}
fn japanese() -> String {
    "ja-JP".to_owned()
}

/// Why the policy document is refused; the message names the policy and field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("not an escalation policy document: {0}")]
    Json(String),
    #[error("default names {0:?}, which is not in policies")]
    NoDefault(String),
    #[error("policies.{policy}.{field}: {reason}")]
    Field {
        policy: String,
        field: String,
        reason: String,
    },
}

impl EscalationPolicies {
    /// Parses and checks the whole document: every contact E.164 and in `destinations` (the
    /// allow-list every outbound call obeys), every bound.
    pub fn from_json(json: &str, destinations: &AllowList) -> Result<Self, PolicyError> {
        let doc: PoliciesDocument = serde_json::from_str(json)
            .map_err(|e| PolicyError::Json(crate::phone::mask_digits(&e.to_string())))?;
        let mut policies = BTreeMap::new();
        for (name, p) in doc.policies {
            let policy = EscalationPolicy::check(&name, p, destinations)?;
            policies.insert(name, policy);
        }
        if !policies.contains_key(&doc.default) {
            return Err(PolicyError::NoDefault(doc.default));
        }
        Ok(Self {
            default: doc.default,
            policies,
        })
    }

    /// The policy named `name`, or the default.
    pub fn get(&self, name: Option<&str>) -> Result<&EscalationPolicy, AlertError> {
        let name = name.unwrap_or(&self.default);
        self.policies
            .get(name)
            .ok_or_else(|| AlertError::UnknownPolicy(name.to_owned()))
    }

    /// The plan of the escalation `alert_id` for `alert`.
    pub fn plan(&self, alert_id: &str, alert: &Alert) -> Result<Plan, AlertError> {
        alert.check()?;
        let policy = self.get(alert.policy.as_deref())?;
        Ok(policy.plan(alert_id, alert))
    }
}

impl EscalationPolicy {
    fn check(
        name: &str,
        doc: PolicyDocument,
        destinations: &AllowList,
    ) -> Result<Self, PolicyError> {
        let field = |field: &str, reason: String| PolicyError::Field {
            policy: name.to_owned(),
            field: field.to_owned(),
            reason,
        };
        let range = |f: &str, v: u32, r: &std::ops::RangeInclusive<u32>| {
            if r.contains(&v) {
                Ok(v)
            } else {
                Err(field(
                    f,
                    format!("{v} is not between {} and {}", r.start(), r.end()),
                ))
            }
        };
        if doc.contacts.is_empty() || doc.contacts.len() > MAX_CONTACTS {
            return Err(field(
                "contacts",
                format!(
                    "give 1 to {MAX_CONTACTS} contacts, not {}",
                    doc.contacts.len()
                ),
            ));
        }
        let mut contacts = Vec::with_capacity(doc.contacts.len());
        for (i, c) in doc.contacts.into_iter().enumerate() {
            let number = PhoneNumber::parse(&c.number)
                .and_then(|n| destinations.check(&n).map(|()| n))
                .map_err(|e: PhoneError| field(&format!("contacts.{i}.number"), e.to_string()))?;
            let name = c
                .name
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty());
            contacts.push(Contact { name, number });
        }
        let rounds = range("rounds", doc.rounds, &ROUNDS)?;
        let round_delay_seconds = range(
            "round_delay_seconds",
            doc.round_delay_seconds,
            &ROUND_DELAY_SECONDS,
        )?;
        let ring_timeout_seconds = range(
            "ring_timeout_seconds",
            doc.ring_timeout_seconds,
            &RING_TIMEOUT_SECONDS,
        )?;
        if !MAX_PROMPTS.contains(&doc.max_prompts) {
            return Err(field(
                "max_prompts",
                format!(
                    "{} is not between {} and {}",
                    doc.max_prompts,
                    MAX_PROMPTS.start(),
                    MAX_PROMPTS.end()
                ),
            ));
        }
        let step_timeout_seconds = match doc.step_timeout_seconds {
            Some(t) => {
                let t = range("step_timeout_seconds", t, &STEP_TIMEOUT_SECONDS)?;
                if t <= ring_timeout_seconds {
                    return Err(field(
                        "step_timeout_seconds",
                        format!(
                            "{t} leaves no time to answer after ringing {ring_timeout_seconds} s"
                        ),
                    ));
                }
                t
            }
            None => ring_timeout_seconds + SECONDS_PER_PROMPT * u32::from(doc.max_prompts) + 30,
        };
        let language = Language::parse(&doc.language).ok_or_else(|| {
            field(
                "language",
                format!("{:?} is not ja-JP or en-US", doc.language),
            )
        })?;
        let voice = doc
            .voice
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        Ok(Self {
            contacts,
            rounds,
            round_delay_seconds,
            ring_timeout_seconds,
            step_timeout_seconds,
            language,
            voice,
            max_prompts: NonZeroU8::new(doc.max_prompts).expect("checked above: 1 to 5"),
        })
    }

    /// Every contact in order, round after round; the round delay before the first call of
    /// each round after the first.
    pub fn plan(&self, alert_id: &str, alert: &Alert) -> Plan {
        let language = alert
            .language
            .as_deref()
            .and_then(Language::parse)
            .unwrap_or(self.language);
        // The policy's voice speaks the policy's language; another language gets Twilio's
        // default voice for it.
        let voice = (language == self.language)
            .then(|| self.voice.clone())
            .flatten();
        let mut attempts = Vec::new();
        for round in 1..=self.rounds {
            for (i, contact) in self.contacts.iter().enumerate() {
                attempts.push(Attempt {
                    attempt: u32::try_from(attempts.len()).unwrap_or(u32::MAX) + 1,
                    round,
                    contact: contact.clone(),
                    wait_seconds: if round > 1 && i == 0 {
                        self.round_delay_seconds
                    } else {
                        0
                    },
                    ring_timeout_seconds: self.ring_timeout_seconds,
                    step_timeout_seconds: self.step_timeout_seconds,
                });
            }
        }
        Plan {
            alert_id: alert_id.to_owned(),
            speech: Speech {
                message: alert.render(language),
                language: language.tag().to_owned(),
                voice,
            },
            max_prompts: self.max_prompts,
            rounds: self.rounds,
            attempts,
        }
    }
}

// ---------------------------------------------------------------- the plan

/// What the state machine loops over (`SendTaskSuccess` output of the `Plan` task).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub alert_id: String,
    pub speech: Speech,
    pub max_prompts: NonZeroU8,
    /// For `Alert Unacknowledged`.
    pub rounds: u32,
    pub attempts: Vec<Attempt>,
}

/// One call of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    /// 1, 2, ... across rounds.
    pub attempt: u32,
    pub round: u32,
    pub contact: Contact,
    /// Seconds to wait before this call (the round delay, or 0).
    pub wait_seconds: u32,
    pub ring_timeout_seconds: u32,
    pub step_timeout_seconds: u32,
}

// ---------------------------------------------------------------- the SQS messages

/// A message of the state machine on the queue `outbound-call` consumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertMessage {
    /// `{"alert_plan": {...}, "task_token"}`: make the plan.
    Plan(PlanRequest, TaskToken),
    /// `{"alert_call": {...}, "task_token"}`: place one call of it.
    Call(AlertCall, TaskToken),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub alert_id: String,
    /// Kept raw: an alert that does not parse is the plan's failure, reported to the
    /// execution, not a message to redeliver.
    pub alert: serde_json::Value,
}

/// One call of the escalation, as the `Call` task sends it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertCall {
    pub alert_id: String,
    pub attempt: u32,
    pub round: u32,
    pub contact: Contact,
    pub speech: Speech,
    pub max_prompts: NonZeroU8,
    pub ring_timeout_seconds: u32,
    pub step_timeout_seconds: u32,
    /// `$$.State.EnteredTime`: when the task's timeout started. Required for a call to be
    /// placed ([`AlertCall::step_deadline`]); parsed as optional so that its absence fails the
    /// step (`Alert.CallFailed`) instead of leaving it to time out.
    #[serde(default)]
    pub step_started_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(default)]
    alert_plan: Option<PlanRequest>,
    #[serde(default)]
    alert_call: Option<AlertCall>,
    task_token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an alert message from the state machine: {0}")]
pub struct AlertMessageError(String);

impl AlertMessage {
    /// `None` when `body` is not an alert message at all (a call event); else the message, or
    /// why it is malformed.
    pub fn recognise(body: &str) -> Option<Result<Self, AlertMessageError>> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        let object = value.as_object()?;
        if !object.contains_key("alert_plan") && !object.contains_key("alert_call") {
            return None;
        }
        let parsed = serde_json::from_value::<Envelope>(value)
            .map_err(|e| AlertMessageError(crate::phone::mask_digits(&e.to_string())))
            .and_then(|e| {
                let token = TaskToken::new(e.task_token)
                    .map_err(|invalid| AlertMessageError(invalid.to_string()))?;
                Ok((e.alert_plan, e.alert_call, token))
            })
            .and_then(|(plan, call, token)| match (plan, call) {
                (Some(plan), None) => Ok(Self::Plan(plan, token)),
                (None, Some(call)) => Ok(Self::Call(call, token)),
                _ => Err(AlertMessageError(
                    "exactly one of alert_plan and alert_call".to_owned(),
                )),
            });
        Some(parsed)
    }
}

impl AlertCall {
    /// The step the ledger keeps for this call (claimed before it is placed).
    pub fn step(&self, task_token: TaskToken) -> Result<AlertStep, StepTimeError> {
        Ok(AlertStep {
            alert_id: self.alert_id.clone(),
            attempt: self.attempt,
            contact: self.contact.clone(),
            speech: self.speech.clone(),
            max_prompts: self.max_prompts,
            task_token,
            step_deadline: self.step_deadline()?,
        })
    }

    /// The ledger key of this call: `alert:<alert_id>:<attempt>` ([`AlertStep::key`]).
    pub fn key(&self) -> Result<IdempotencyKey, InvalidKey> {
        IdempotencyKey::new(format!(
            "{ALERT_KEY_PREFIX}{}:{}",
            self.alert_id, self.attempt
        ))
    }

    /// Epoch seconds after which key 1 no longer acknowledges: when Step Functions' timer for
    /// the task runs out (`step_started_at` + the step timeout), less
    /// [`STEP_DEADLINE_MARGIN_SECONDS`], so that a key the ledger takes is never one Step
    /// Functions has already timed out. Without the task's start time there is no such
    /// deadline: the processing time is later than the timer's start, and would let a late key
    /// in.
    pub fn step_deadline(&self) -> Result<u64, StepTimeError> {
        let raw = self
            .step_started_at
            .as_deref()
            .ok_or(StepTimeError::Missing)?;
        let started = DateTime::from_str(raw, Format::DateTimeWithOffset)
            .ok()
            .and_then(|t| SystemTime::try_from(t).ok())
            .ok_or_else(|| StepTimeError::Invalid(raw.chars().take(40).collect()))?;
        let deadline = (started + Duration::from_secs(u64::from(self.step_timeout_seconds)))
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(deadline.saturating_sub(STEP_DEADLINE_MARGIN_SECONDS))
    }
}

/// Seconds the ledger's step deadline keeps before Step Functions' own timeout: clocks and the
/// time a `SendTaskSuccess` takes to land.
pub const STEP_DEADLINE_MARGIN_SECONDS: u64 = 2;

/// An `alert_call` without a usable task start time: the step cannot be bounded, so it fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepTimeError {
    #[error("alert_call.step_started_at is missing")]
    Missing,
    #[error("alert_call.step_started_at is not an RFC 3339 time: {0:?}")]
    Invalid(String),
}

// ---------------------------------------------------------------- execution names

/// Step Functions names: 1–80 characters; we keep to `A-Z a-z 0-9 - _` (CloudWatch Logs asks
/// for the same).
fn slug(raw: &str, max: usize) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(max)
        .collect()
}

/// 64 bits (16 hex digits): two names colliding would silently merge two alerts into one
/// escalation (the second answered "already started"); at 32 bits that is likely after some
/// tens of thousands of names, at 64 bits not in practice.
fn short_hash(raw: &str) -> String {
    hex::encode(&Sha256::digest(raw.as_bytes())[..8])
}

/// What names an escalation: the same alarm state change (or the same client key) always gets
/// the same execution name, so Step Functions starts it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertOrigin<'a> {
    /// An alarm and the time its state changed.
    Alarm {
        name: &'a str,
        time: Option<&'a str>,
    },
    /// An `idempotency_key` or `Idempotency-Key`.
    Key(&'a str),
}

/// The execution name for `origin`. An alarm without a time (only `POST /alerts` can send
/// one) gets a fresh suffix: nothing tells its second sending from a new state change, and the
/// running-execution check ([`alarm_prefix`]) is what keeps it to one escalation.
pub fn execution_name(origin: &AlertOrigin<'_>) -> String {
    match origin {
        AlertOrigin::Alarm { name, time } => {
            let tail = match time {
                Some(t) => short_hash(t),
                None => format!("{:016x}", fastrand::u64(..)),
            };
            format!("{}{tail}", alarm_prefix(name))
        }
        AlertOrigin::Key(key) => format!("key-{}-{}", slug(key, 48), short_hash(key)),
    }
}

/// The prefix every execution name of alarm `name` starts with: 6 + 40 + 1 + 16 + 1
/// characters, leaving 16 for the tail within Step Functions' 80.
pub fn alarm_prefix(name: &str) -> String {
    format!("alarm-{}-{}-", slug(name, 40), short_hash(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn allow() -> AllowList {
        AllowList::parse("+81,+1").unwrap()
    }

    const DOC: &str = r#"{"default": "oncall", "policies": {
        "oncall": {"contacts": [{"name": "山田", "number": "+819011112222"}, {"number": "+819033334444"}],
                   "rounds": 2, "round_delay_seconds": 300, "ring_timeout_seconds": 30,
                   "language": "ja-JP", "voice": "Polly.Takumi", "max_prompts": 3},
        "night": {"contacts": [{"name": "Sam", "number": "+14155550100"}], "language": "en-US",
                  "step_timeout_seconds": 90}}}"#;

    fn policies() -> EscalationPolicies {
        EscalationPolicies::from_json(DOC, &allow()).unwrap()
    }

    fn alarm() -> Alert {
        Alert {
            alarm: Some(Alarm {
                name: "api-5xx".into(),
                description: Some("API の 5xx が増えています".into()),
                state: "ALARM".into(),
                reason: Some("Threshold Crossed".into()),
                time: Some("2026-11-25T05:00:00Z".into()),
                region: None,
            }),
            ..Alert::default()
        }
    }

    #[test]
    fn the_plan_calls_every_contact_round_after_round() {
        let plan = policies().plan("alarm-x", &alarm()).unwrap();
        let calls: Vec<_> = plan
            .attempts
            .iter()
            .map(|a| {
                (
                    a.attempt,
                    a.round,
                    a.contact.number.as_str(),
                    a.wait_seconds,
                )
            })
            .collect();
        assert_eq!(
            calls,
            [
                (1, 1, "+819011112222", 0),
                (2, 1, "+819033334444", 0),
                (3, 2, "+819011112222", 300),
                (4, 2, "+819033334444", 0)
            ]
        );
        assert_eq!(plan.rounds, 2);
        assert_eq!(plan.max_prompts.get(), 3);
        assert_eq!(plan.attempts[0].step_timeout_seconds, 30 + 3 * 60 + 30);
        assert_eq!(plan.speech.language, "ja-JP");
        assert_eq!(plan.speech.voice.as_deref(), Some("Polly.Takumi"));
        assert_eq!(
            plan.speech.message,
            "CloudWatch アラーム、api-5xx、がアラーム状態になりました。API の 5xx が増えています。理由、Threshold Crossed"
        );
        // What the state machine reads: the shape of the contract.
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            json["attempts"][0],
            json!({"attempt": 1, "round": 1, "contact": {"name": "山田", "number": "+819011112222"},
                   "wait_seconds": 0, "ring_timeout_seconds": 30, "step_timeout_seconds": 240})
        );
        assert_eq!(
            json["attempts"][1]["contact"],
            json!({"number": "+819033334444"})
        );
    }

    #[test]
    fn a_named_policy_and_the_alerts_language_are_honoured() {
        let mut alert = alarm();
        alert.policy = Some("night".into());
        let plan = policies().plan("a", &alert).unwrap();
        assert_eq!(plan.attempts.len(), 1);
        assert_eq!(plan.attempts[0].step_timeout_seconds, 90);
        assert_eq!(plan.speech.language, "en-US");
        assert_eq!(
            plan.speech.message,
            "CloudWatch alarm api-5xx is in state ALARM. API の 5xx が増えています. Reason: Threshold Crossed"
        );
        // English asked of a Japanese policy: not its Japanese voice.
        let mut alert = Alert {
            message: Some("Disk full on db-1".into()),
            language: Some("en".into()),
            ..Alert::default()
        };
        let plan = policies().plan("a", &alert).unwrap();
        assert_eq!(
            (plan.speech.language.as_str(), plan.speech.voice.as_deref()),
            ("en-US", None)
        );
        assert_eq!(plan.speech.message, "Disk full on db-1");
        alert.policy = Some("weekend".into());
        assert_eq!(
            policies().plan("a", &alert),
            Err(AlertError::UnknownPolicy("weekend".into()))
        );
        for bad in [
            Alert::default(),
            Alert {
                message: Some(" ".into()),
                ..Alert::default()
            },
            Alert {
                message: Some("x".into()),
                language: Some("fr".into()),
                ..Alert::default()
            },
        ] {
            assert!(policies().plan("a", &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_messages_are_cut() {
        let alert = Alert {
            message: Some("あ".repeat(MAX_MESSAGE_CHARS + 5)),
            ..Alert::default()
        };
        let text = alert.render(Language::Japanese);
        assert_eq!(text.chars().count(), MAX_MESSAGE_CHARS);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn every_policy_rule_names_its_field() {
        let with = |policy: serde_json::Value| {
            let doc = json!({"default": "p", "policies": {"p": policy}}).to_string();
            EscalationPolicies::from_json(&doc, &allow())
        };
        let c = json!([{"number": "+819011112222"}]);
        for (policy, field) in [
            (json!({"contacts": []}), "contacts"),
            (
                json!({"contacts": [{"number": "09011112222"}]}),
                "contacts.0.number",
            ),
            (
                json!({"contacts": [{"number": "+449011112222"}]}),
                "contacts.0.number",
            ),
            (json!({"contacts": c, "rounds": 0}), "rounds"),
            (json!({"contacts": c, "rounds": 6}), "rounds"),
            (
                json!({"contacts": c, "round_delay_seconds": 3601}),
                "round_delay_seconds",
            ),
            (
                json!({"contacts": c, "ring_timeout_seconds": 4}),
                "ring_timeout_seconds",
            ),
            (json!({"contacts": c, "max_prompts": 0}), "max_prompts"),
            (
                json!({"contacts": c, "step_timeout_seconds": 30}),
                "step_timeout_seconds",
            ),
            (json!({"contacts": c, "language": "fr-FR"}), "language"),
        ] {
            match with(policy.clone()) {
                Err(PolicyError::Field {
                    policy: p,
                    field: f,
                    ..
                }) => {
                    assert_eq!((p.as_str(), f.as_str()), ("p", field), "{policy}")
                }
                other => panic!("{policy}: {other:?}"),
            }
        }
        let many: Vec<_> = (0..=MAX_CONTACTS)
            .map(|_| json!({"number": "+819011112222"}))
            .collect();
        assert!(with(json!({"contacts": many})).is_err());
        assert!(matches!(
            EscalationPolicies::from_json(r#"{"default": "x", "policies": {}}"#, &allow()),
            Err(PolicyError::NoDefault(_))
        ));
        assert!(matches!(
            EscalationPolicies::from_json(
                r#"{"default": "p", "policies": {"p": {"contacts": [], "extra": 1}}}"#,
                &allow()
            ),
            Err(PolicyError::Json(_))
        ));
        // A refused number is masked in the error.
        let err = with(json!({"contacts": [{"number": "+449011112222"}]})).unwrap_err();
        assert!(!err.to_string().contains("+449011112222"), "{err}");
    }

    #[test]
    fn messages_from_the_state_machine_are_told_apart_from_call_events() {
        assert_eq!(
            AlertMessage::recognise(r#"{"to": "+819011112222", "say": "hi"}"#),
            None
        );
        assert_eq!(AlertMessage::recognise("not json"), None);
        let plan = json!({"alert_plan": {"alert_id": "a", "alert": {"message": "m"}}, "task_token": "secret-token"});
        match AlertMessage::recognise(&plan.to_string()) {
            Some(Ok(AlertMessage::Plan(p, token))) => {
                assert_eq!(p.alert_id, "a");
                assert_eq!(token.expose(), "secret-token");
                assert!(!format!("{token:?}").contains("secret"));
            }
            other => panic!("{other:?}"),
        }
        let call = json!({"alert_call": {"alert_id": "a", "attempt": 2, "round": 1,
            "contact": {"number": "+819011112222"}, "speech": {"message": "m", "language": "ja-JP", "voice": null},
            "max_prompts": 3, "ring_timeout_seconds": 30, "step_timeout_seconds": 240,
            "step_started_at": "2026-11-25T14:22:29.442995+00:00"}, "task_token": "T"});
        match AlertMessage::recognise(&call.to_string()) {
            Some(Ok(AlertMessage::Call(c, _))) => {
                assert_eq!(c.key().unwrap().as_str(), "alert:a:2");
                // moto's EnteredTime (microseconds, +00:00) and AWS's (milliseconds, Z); the
                // ledger's deadline is Step Functions' timeout less the margin.
                let timeout_at = 1_795_616_549 + 240;
                assert_eq!(c.step_deadline(), Ok(timeout_at - 2));
                let aws = AlertCall {
                    step_started_at: Some("2026-11-25T14:22:29.442Z".into()),
                    ..c.clone()
                };
                assert_eq!(aws.step_deadline(), Ok(timeout_at - 2));
                assert_eq!(
                    aws.step(TaskToken::new("T").unwrap())
                        .unwrap()
                        .step_deadline,
                    timeout_at - 2
                );
                // No start time, or one that does not parse: no deadline, no step (never the
                // processing time, which is later than Step Functions' timer).
                let none = AlertCall {
                    step_started_at: None,
                    ..c.clone()
                };
                assert_eq!(none.step_deadline(), Err(StepTimeError::Missing));
                assert!(none.step(TaskToken::new("T").unwrap()).is_err());
                let bad = AlertCall {
                    step_started_at: Some("yesterday".into()),
                    ..c
                };
                assert!(matches!(
                    bad.step_deadline(),
                    Err(StepTimeError::Invalid(_))
                ));
            }
            other => panic!("{other:?}"),
        }
        let without_start = json!({"alert_call": {"alert_id": "a", "attempt": 2, "round": 1,
            "contact": {"number": "+819011112222"}, "speech": {"message": "m", "language": "ja-JP", "voice": null},
            "max_prompts": 3, "ring_timeout_seconds": 30, "step_timeout_seconds": 240}, "task_token": "T"});
        assert!(
            matches!(
                AlertMessage::recognise(&without_start.to_string()),
                Some(Ok(AlertMessage::Call(..)))
            ),
            "a call without a start time is still a call, whose step is failed"
        );
        let both = json!({"alert_plan": {"alert_id": "a", "alert": {}}, "alert_call": {}, "task_token": "T"});
        assert!(matches!(
            AlertMessage::recognise(&both.to_string()),
            Some(Err(_))
        ));
        let no_token = json!({"alert_plan": {"alert_id": "a", "alert": {}}});
        assert!(matches!(
            AlertMessage::recognise(&no_token.to_string()),
            Some(Err(_))
        ));
    }

    #[test]
    fn execution_names_are_stable_valid_and_per_alarm() {
        let at = |t| AlertOrigin::Alarm {
            name: "本番 API 5xx / ap-northeast-1",
            time: Some(t),
        };
        let first = execution_name(&at("2026-11-25T05:00:00Z"));
        assert_eq!(first, execution_name(&at("2026-11-25T05:00:00Z")));
        assert_ne!(first, execution_name(&at("2026-11-25T06:00:00Z")));
        assert!(first.starts_with(&alarm_prefix("本番 API 5xx / ap-northeast-1")));
        assert!(first.starts_with("alarm-API5xxap-northeast-1-"), "{first}");
        let untimed = AlertOrigin::Alarm {
            name: "x",
            time: None,
        };
        assert_ne!(execution_name(&untimed), execution_name(&untimed));
        let long = "a".repeat(300);
        for name in [
            first,
            execution_name(&AlertOrigin::Alarm {
                name: &long,
                time: Some(&long),
            }),
            execution_name(&AlertOrigin::Key(&long)),
            execution_name(&AlertOrigin::Key("deploy#42 ✓")),
        ] {
            assert!(name.len() <= 80, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{name}"
            );
        }
        assert_ne!(
            execution_name(&AlertOrigin::Key("a")),
            execution_name(&AlertOrigin::Key("b"))
        );
    }

    #[test]
    fn execution_names_carry_64_bit_hashes() {
        // A 32-bit hash collides after tens of thousands of names, and a collision merges two
        // alerts into one escalation: every hash and random tail is 16 hex digits, and the
        // longest names still fit Step Functions' 80 characters.
        let hex16 = |part: &str| part.len() == 16 && part.chars().all(|c| c.is_ascii_hexdigit());
        let long = "a".repeat(300);
        let alarm = execution_name(&AlertOrigin::Alarm {
            name: &long,
            time: Some("2026-11-25T05:00:00Z"),
        });
        let parts: Vec<&str> = alarm.rsplitn(3, '-').collect();
        assert!(hex16(parts[0]) && hex16(parts[1]), "{alarm}");
        assert_eq!(alarm.len(), 80, "{alarm}");
        let untimed = execution_name(&AlertOrigin::Alarm {
            name: &long,
            time: None,
        });
        assert!(hex16(untimed.rsplit('-').next().unwrap()), "{untimed}");
        assert!(untimed.len() <= 80, "{untimed}");
        let key = execution_name(&AlertOrigin::Key(&long));
        assert!(hex16(key.rsplit('-').next().unwrap()), "{key}");
        assert!(key.len() <= 80, "{key}");
    }
}

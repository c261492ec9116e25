//! The Twilio Calls API client: `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`.
//!
//! Its errors tell the truth about whether a call may exist. Twilio's Calls API has no
//! idempotency key, so after a 5xx, a timeout or a reset once the request was sent, the call may
//! have been placed: that is reported as [`CallError::OutcomeUnknown`] and never retried. Only
//! 429 (the request was never processed) is retried, with exponential backoff and jitter.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::credentials::ApiCredentials;
use crate::limits::{
    RING_TIMEOUT_SECONDS, SEND_DIGITS_MAX, TIME_LIMIT_SECONDS, TWIML_MAX_CHARS, is_https_url,
};
use crate::phone::{PhoneError, PhoneNumber, mask_digits};
use crate::twiml::inspect::{self, Refusal, UrlRefused};

pub const DEFAULT_API_BASE_URL: &str = "https://api.twilio.com";

/// One outbound call as asked for, not yet checked: [`CallSpec::validate`] turns it into the
/// [`CallRequest`] that [`CallsClient::create`] accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSpec {
    pub to: PhoneNumber,
    pub from: PhoneNumber,
    pub instructions: Instructions,
    pub options: CallOptions,
}

/// One outbound call that passed every check. Only [`CallSpec::validate`] makes one, so nothing
/// unchecked can reach Twilio.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRequest(CallSpec);

/// What Twilio does when the call is answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Instructions {
    /// Fetch TwiML from this URL.
    Url(String),
    /// Run this TwiML document.
    Twiml(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallOptions {
    pub status_callback: Option<String>,
    pub status_callback_events: Vec<StatusCallbackEvent>,
    pub timeout: Option<u32>,
    pub machine_detection: Option<MachineDetection>,
    pub record: Option<bool>,
    pub time_limit: Option<u32>,
    pub caller_id: Option<PhoneNumber>,
    pub send_digits: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusCallbackEvent {
    Initiated,
    Ringing,
    Answered,
    Completed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MachineDetection {
    Enable,
    DetectMessageEnd,
}

impl StatusCallbackEvent {
    fn as_str(self) -> &'static str {
        match self {
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::Answered => "answered",
            Self::Completed => "completed",
        }
    }
}

impl MachineDetection {
    fn as_str(self) -> &'static str {
        match self {
            Self::Enable => "Enable",
            Self::DetectMessageEnd => "DetectMessageEnd",
        }
    }
}

/// Where calls may go and what they may cost: the operator's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPolicy {
    /// The destinations (`to` and every `<Dial>` target), TwiML URL prefixes and gated elements.
    pub reach: inspect::Policy,
    /// `TimeLimit` for a call that names none.
    pub default_time_limit: u32,
}

/// Why a [`CallSpec`] cannot be sent; checked before anything leaves the function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCall {
    #[error("to: {0}")]
    Destination(PhoneError),
    #[error("inline TwiML is {0} characters; Twilio accepts at most 4000 (error 32018)")]
    TwimlTooLong(usize),
    #[error("inline TwiML refused: {0}")]
    Twiml(Refusal),
    #[error("url: {0}")]
    TwimlUrl(UrlRefused),
    #[error("{field} must be an https:// URL")]
    NotHttps { field: &'static str },
    #[error("{field} must be between {min} and {max}")]
    OutOfRange {
        field: &'static str,
        min: u32,
        max: u32,
    },
    #[error("send_digits may hold at most 32 of 0-9, *, #, w, W")]
    BadSendDigits,
}

impl CallSpec {
    /// Checks the destination allow-list, what the TwiML can reach and Twilio's published limits,
    /// so that a request bound to fail, or to reach a party it should not, is never sent. A call
    /// without a `TimeLimit` gets the policy's.
    pub fn validate(mut self, policy: &CallPolicy) -> Result<CallRequest, InvalidCall> {
        policy
            .reach
            .destinations
            .check(&self.to)
            .map_err(InvalidCall::Destination)?;
        match &self.instructions {
            Instructions::Url(url) => {
                if !is_https_url(url) {
                    return Err(InvalidCall::NotHttps { field: "url" });
                }
                policy
                    .reach
                    .urls
                    .check(url)
                    .map_err(InvalidCall::TwimlUrl)?;
            }
            Instructions::Twiml(twiml) => {
                let chars = twiml.chars().count();
                if chars > TWIML_MAX_CHARS {
                    return Err(InvalidCall::TwimlTooLong(chars));
                }
                inspect::inspect(twiml, &policy.reach).map_err(InvalidCall::Twiml)?;
            }
        }
        let o = &mut self.options;
        if o.status_callback
            .as_deref()
            .is_some_and(|url| !is_https_url(url))
        {
            return Err(InvalidCall::NotHttps {
                field: "status_callback",
            });
        }
        if let Some(t) = o.timeout {
            in_range("timeout", t, &RING_TIMEOUT_SECONDS)?;
        }
        let time_limit = *o.time_limit.get_or_insert(policy.default_time_limit);
        in_range("time_limit", time_limit, &TIME_LIMIT_SECONDS)?;
        if let Some(d) = &o.send_digits {
            let ok = !d.is_empty()
                && d.len() <= SEND_DIGITS_MAX
                && d.bytes()
                    .all(|b| b.is_ascii_digit() || b"*#wW".contains(&b));
            if !ok {
                return Err(InvalidCall::BadSendDigits);
            }
        }
        Ok(CallRequest(self))
    }
}

impl CallRequest {
    pub fn to(&self) -> &PhoneNumber {
        &self.0.to
    }

    pub fn from(&self) -> &PhoneNumber {
        &self.0.from
    }

    pub fn instructions(&self) -> &Instructions {
        &self.0.instructions
    }

    pub fn options(&self) -> &CallOptions {
        &self.0.options
    }

    /// The form body, `StatusCallbackEvent` repeated once per event (Twilio refuses a
    /// comma-joined list with 21626).
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let call = &self.0;
        let mut form = vec![
            ("To", call.to.as_str().to_owned()),
            ("From", call.from.as_str().to_owned()),
        ];
        match &call.instructions {
            Instructions::Url(url) => form.push(("Url", url.clone())),
            Instructions::Twiml(twiml) => form.push(("Twiml", twiml.clone())),
        }
        let o = &call.options;
        if let Some(url) = &o.status_callback {
            form.push(("StatusCallback", url.clone()));
            form.push(("StatusCallbackMethod", "POST".to_owned()));
        }
        for event in &o.status_callback_events {
            form.push(("StatusCallbackEvent", event.as_str().to_owned()));
        }
        if let Some(t) = o.timeout {
            form.push(("Timeout", t.to_string()));
        }
        if let Some(m) = o.machine_detection {
            form.push(("MachineDetection", m.as_str().to_owned()));
        }
        if let Some(r) = o.record {
            form.push(("Record", r.to_string()));
        }
        if let Some(t) = o.time_limit {
            form.push(("TimeLimit", t.to_string()));
        }
        if let Some(c) = &o.caller_id {
            form.push(("CallerId", c.as_str().to_owned()));
        }
        if let Some(d) = &o.send_digits {
            form.push(("SendDigits", d.clone()));
        }
        form
    }
}

fn in_range(
    field: &'static str,
    value: u32,
    range: &std::ops::RangeInclusive<u32>,
) -> Result<(), InvalidCall> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(InvalidCall::OutOfRange {
            field,
            min: *range.start(),
            max: *range.end(),
        })
    }
}

/// Whether `sid` has the shape of a Twilio call SID (`CA` + 32 hex digits).
pub fn is_call_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("CA") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Twilio's answer to a created call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCreated {
    pub sid: String,
    pub status: String,
}

/// Twilio's error document (`{"code", "message", "more_info", "status"}`). Phone numbers that
/// Twilio echoes in `message` are masked on the way in, so the error can be logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TwilioError {
    pub status: u16,
    pub code: Option<u32>,
    pub message: String,
    pub more_info: Option<String>,
}

impl fmt::Display for TwilioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "HTTP {} code {}: {}", self.status, code, self.message),
            None => write!(f, "HTTP {}: {}", self.status, self.message),
        }
    }
}

impl TwilioError {
    fn from_response(status: u16, body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Raw {
            code: Option<u32>,
            message: Option<String>,
            more_info: Option<String>,
            // RFC 7807 problem documents (proxies, API stand-ins) explain themselves here.
            detail: Option<String>,
        }
        let raw: Option<Raw> = serde_json::from_slice(body).ok();
        let (code, message, more_info) = match raw {
            Some(r) => (r.code, r.message.or(r.detail), r.more_info),
            None => (None, None, None),
        };
        Self {
            status,
            code,
            message: mask_digits(&message.unwrap_or_else(|| "no Twilio error document".to_owned())),
            more_info,
        }
    }
}

/// What went wrong placing a call, and whether trying again could place it twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Twilio refused the request (4xx other than 401/429). Retrying sends the same refusal.
    #[error("Twilio refused the call: {0}")]
    Rejected(TwilioError),
    /// 401 / 20003: the credentials are wrong (or were just rotated).
    #[error("Twilio refused the credentials: {0}")]
    Authentication(TwilioError),
    /// Nothing was processed: 429 / 20429 on every attempt, or no time left before the
    /// invocation's deadline for another attempt.
    #[error("{}", rate_limited_message(*attempts, last.as_ref(), *out_of_time))]
    RateLimited {
        attempts: usize,
        last: Option<TwilioError>,
        out_of_time: bool,
    },
    /// The request never reached Twilio (DNS, connect, TLS).
    #[error("could not reach Twilio: {0}")]
    Unreachable(String),
    /// The request was sent and then something failed: the call may exist.
    #[error("outcome unknown, the call may have been placed; not retried: {0}")]
    OutcomeUnknown(String),
}

fn rate_limited_message(attempts: usize, last: Option<&TwilioError>, out_of_time: bool) -> String {
    let why = if out_of_time {
        "stopped: too little time left before the function's deadline for another attempt"
    } else {
        "Twilio kept answering 429"
    };
    match last {
        Some(last) => format!("{why} after {attempts} attempts, nothing processed: {last}"),
        None => format!("{why} after {attempts} attempts, nothing sent"),
    }
}

impl CallError {
    /// The Twilio error code, when Twilio gave one.
    pub fn twilio_code(&self) -> Option<u32> {
        match self {
            Self::Rejected(e) | Self::Authentication(e) => e.code,
            Self::RateLimited { last, .. } => last.as_ref().and_then(|e| e.code),
            Self::Unreachable(_) | Self::OutcomeUnknown(_) => None,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Rejected(_) => ErrorClass::TwilioRejected,
            Self::Authentication(_) => ErrorClass::TwilioAuthentication,
            Self::RateLimited { .. } => ErrorClass::RateLimited,
            Self::Unreachable(_) => ErrorClass::TwilioUnreachable,
            Self::OutcomeUnknown(_) => ErrorClass::CallMayExist,
        }
    }
}

/// Every way placing a call can fail, as callers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The HTTP API was called with another method than POST.
    MethodNotAllowed,
    InvalidEvent,
    TwilioRejected,
    TwilioAuthentication,
    CredentialsMisconfigured,
    RateLimited,
    TwilioUnreachable,
    CredentialsUnavailable,
    CallMayExist,
    /// A delivery later than the event's `not_after`: nothing sent.
    Expired,
    /// The call ledger did not answer (throttled, a timeout): nothing sent.
    LedgerUnavailable,
    /// The call ledger refused (table missing, access denied): nothing sent.
    LedgerMisconfigured,
    /// Step Functions did not answer a request to start an alert's escalation.
    EscalationUnavailable,
    /// Step Functions refused it (state machine missing, access denied).
    EscalationMisconfigured,
    /// An alert's name (its idempotency key) started an escalation with another alert.
    AlertConflict,
}

/// Whether the same request may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing reached Twilio, or Twilio did not process it: trying again cannot dial twice.
    Safe,
    /// Cannot dial twice either, but will fail the same way until the event or setup changes.
    Pointless,
    /// The call may exist: never retry blindly.
    Unsafe,
}

impl Retry {
    /// Whether trying again cannot place a second call.
    pub fn cannot_duplicate(self) -> bool {
        self != Retry::Unsafe
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Retry::Safe => "safe",
            Retry::Pointless => "pointless",
            Retry::Unsafe => "unsafe",
        }
    }
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 15] = [
        ErrorClass::MethodNotAllowed,
        ErrorClass::InvalidEvent,
        ErrorClass::TwilioRejected,
        ErrorClass::TwilioAuthentication,
        ErrorClass::CredentialsMisconfigured,
        ErrorClass::RateLimited,
        ErrorClass::TwilioUnreachable,
        ErrorClass::CredentialsUnavailable,
        ErrorClass::CallMayExist,
        ErrorClass::Expired,
        ErrorClass::LedgerUnavailable,
        ErrorClass::LedgerMisconfigured,
        ErrorClass::EscalationUnavailable,
        ErrorClass::EscalationMisconfigured,
        ErrorClass::AlertConflict,
    ];

    /// The one table: Lambda `errorType` (also the HTTP body's `error.type`), HTTP status and
    /// retry advice of each class. README's error table says the same.
    pub const fn describe(self) -> (&'static str, u16, Retry) {
        match self {
            Self::MethodNotAllowed => ("NonRetryable.MethodNotAllowed", 405, Retry::Pointless),
            Self::InvalidEvent => ("NonRetryable.InvalidEvent", 400, Retry::Pointless),
            Self::TwilioRejected => ("NonRetryable.TwilioRejected", 422, Retry::Pointless),
            Self::TwilioAuthentication => {
                ("NonRetryable.TwilioAuthentication", 502, Retry::Pointless)
            }
            Self::CredentialsMisconfigured => (
                "NonRetryable.CredentialsMisconfigured",
                500,
                Retry::Pointless,
            ),
            Self::RateLimited => ("Retryable.RateLimited", 503, Retry::Safe),
            Self::TwilioUnreachable => ("Retryable.TwilioUnreachable", 503, Retry::Safe),
            Self::CredentialsUnavailable => ("Retryable.CredentialsUnavailable", 503, Retry::Safe),
            Self::CallMayExist => ("OutcomeUnknown.CallMayExist", 502, Retry::Unsafe),
            Self::Expired => ("NonRetryable.Expired", 410, Retry::Pointless),
            Self::LedgerUnavailable => ("Retryable.LedgerUnavailable", 503, Retry::Safe),
            Self::LedgerMisconfigured => {
                ("NonRetryable.LedgerMisconfigured", 500, Retry::Pointless)
            }
            Self::EscalationUnavailable => ("Retryable.EscalationUnavailable", 503, Retry::Safe),
            Self::EscalationMisconfigured => (
                "NonRetryable.EscalationMisconfigured",
                500,
                Retry::Pointless,
            ),
            Self::AlertConflict => ("NonRetryable.AlertConflict", 409, Retry::Pointless),
        }
    }

    pub const fn error_type(self) -> &'static str {
        self.describe().0
    }

    pub const fn http_status(self) -> u16 {
        self.describe().1
    }

    pub const fn retry(self) -> Retry {
        self.describe().2
    }
}

/// When the invocation must have answered (Lambda's deadline). No request to Twilio starts
/// unless its whole timeout, plus a margin, fits before it: Lambda would otherwise kill the
/// function mid-request, and the caller would not learn whether the call exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// No deadline (tools and tests that are not a Lambda invocation).
    pub const NONE: Deadline = Deadline(None);

    pub fn at(instant: Instant) -> Self {
        Self(Some(instant))
    }

    /// From Lambda's deadline (milliseconds since the Unix epoch) read at `now`. Lambda always
    /// sets one. A value before 2001 is not a deadline Lambda would send but what an invocation
    /// without one carries (0 in `lambda_runtime`'s default context; `cargo lambda watch` sends
    /// its 10-minute timeout, 600000, as if it were a date): no deadline is known then.
    pub fn from_epoch_millis(deadline_ms: u64, now: SystemTime) -> Self {
        const PLAUSIBLE_EPOCH_MS: u64 = 978_307_200_000; // 2001-01-01T00:00:00Z
        if deadline_ms < PLAUSIBLE_EPOCH_MS {
            return Self::NONE;
        }
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        Self(Some(Instant::now() + left))
    }

    /// The instant itself, if there is one.
    pub fn instant(&self) -> Option<Instant> {
        self.0
    }

    /// Time left before the deadline (`None`: no deadline).
    pub fn left(&self) -> Option<Duration> {
        self.0
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// Whether `needed` fits before the deadline, starting now.
    pub fn allows(&self, needed: Duration) -> bool {
        self.0
            .is_none_or(|deadline| Instant::now() + needed < deadline)
    }
}

/// Backoff for 429 answers.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub attempts: usize,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Time kept in hand after an attempt's whole timeout before the deadline, to answer.
    pub deadline_margin: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
            deadline_margin: Duration::from_secs(1),
        }
    }
}

/// Timeouts for the Twilio connection; both well inside the function's own timeout.
#[derive(Debug, Clone, Copy)]
pub struct HttpTimeouts {
    pub connect: Duration,
    pub total: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            total: Duration::from_secs(10),
        }
    }
}

/// What [`CallsClient::calls_since`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallsSince {
    /// Newest first.
    pub calls: Vec<CallCreated>,
    /// `false` when the page bound stopped the walk before the list reached `since`: a call
    /// not among `calls` may still exist.
    pub complete: bool,
}

/// TLS for the Calls API: Mozilla's root certificates as `webpki-roots` compiles them in, already
/// parsed. reqwest's default verifier reads and parses the system store instead, file by file,
/// when the client is built: about 3 ms of CPU in every cold start of outbound-call, more than
/// the rest of it (bench/README.md). api.twilio.com chains to a public root, which Mozilla's
/// programme includes.
fn tls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("aws-lc-rs supports TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

/// The Calls API client. Cheap to share; holds the connection pool.
#[derive(Debug, Clone)]
pub struct CallsClient {
    http: reqwest::Client,
    base_url: String,
    retry: RetryPolicy,
    attempt_timeout: Duration,
}

enum Attempt {
    Throttled(TwilioError),
    Final(CallError),
}

impl CallsClient {
    pub fn new(
        base_url: &str,
        timeouts: HttpTimeouts,
        retry: RetryPolicy,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config())
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.total)
            .pool_idle_timeout(Duration::from_secs(300))
            .user_agent(concat!("twilio-lambda-rs/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            retry,
            attempt_timeout: timeouts.total,
        })
    }

    /// Opens the connection (TCP + TLS) during INIT so the first call after a cold start pays no
    /// handshake. Any answer will do; failures are left for the real request to report.
    pub async fn warm_up(&self) {
        let result = self
            .http
            .head(format!("{}/2010-04-01", self.base_url))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "warm-up request to Twilio failed");
        }
    }

    /// Whether one more attempt, `delay` from now, would end before `deadline` with time to
    /// answer. The handler asks it too before re-reading credentials after a 20003.
    /// How long before the deadline the last attempt must start: its timeout plus the margin.
    pub fn attempt_budget(&self) -> Duration {
        self.attempt_timeout + self.retry.deadline_margin
    }

    pub fn attempt_fits(&self, deadline: Deadline, delay: Duration) -> bool {
        deadline.allows(delay + self.attempt_timeout + self.retry.deadline_margin)
    }

    /// Places one call. 429 is retried with backoff while attempts remain and the next one fits
    /// before `deadline`; nothing else is retried.
    pub async fn create(
        &self,
        creds: &ApiCredentials,
        call: &CallRequest,
        deadline: Deadline,
    ) -> Result<CallCreated, CallError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Calls.json",
            self.base_url, creds.account_sid
        );
        let form = call.form();
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.retry.first_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.attempts.saturating_sub(1))
            .with_jitter()
            .build();
        let mut attempts = 0;
        let mut delay = Duration::ZERO;
        let mut last = None;
        loop {
            if !self.attempt_fits(deadline, delay) {
                tracing::warn!(
                    attempts,
                    left_ms = deadline.left().map(|d| d.as_millis() as u64),
                    "no time left for another attempt before the deadline"
                );
                return Err(CallError::RateLimited {
                    attempts,
                    last,
                    out_of_time: true,
                });
            }
            // Not for the first attempt: tokio's timer rounds even a zero sleep up to its next
            // millisecond tick, which cost every call about 1 ms before it was sent.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            attempts += 1;
            match self.attempt(&url, creds, &form).await {
                Ok(created) => return Ok(created),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Throttled(e)) => match delays.next() {
                    Some(next) => {
                        tracing::warn!(code = ?e.code, delay_ms = next.as_millis() as u64, "Twilio answered 429; backing off");
                        delay = next;
                        last = Some(e);
                    }
                    None => {
                        return Err(CallError::RateLimited {
                            attempts,
                            last: Some(e),
                            out_of_time: false,
                        });
                    }
                },
            }
        }
    }

    /// The calls to `to` created at or after `since` (less a minute of clock skew), newest
    /// first, from Twilio's Calls list (`GET .../Calls.json?To=...`), following `next_page_uri`
    /// for at most `max_pages` pages: how a request whose outcome is unknown learns whether its
    /// call exists. No retry (it is asked again later).
    pub async fn calls_since(
        &self,
        creds: &ApiCredentials,
        to: &PhoneNumber,
        since: SystemTime,
        max_pages: usize,
    ) -> Result<CallsSince, CallError> {
        #[derive(Deserialize)]
        struct Listed {
            sid: String,
            status: String,
            date_created: Option<String>,
        }
        #[derive(Deserialize)]
        struct Page {
            calls: Vec<Listed>,
            #[serde(default)]
            next_page_uri: Option<String>,
        }
        // No `StartTime` filter: Twilio sets a call's start time only when it is dialled, so a
        // call still waiting in Twilio's queue (CPS) would be missed, and "not found" would
        // place the request a second time. The newest calls to `to` come first; the walk stops
        // at the first one created before `since`.
        let list = format!("/2010-04-01/Accounts/{}/Calls.json", creds.account_sid);
        let mut url = url::Url::parse_with_params(
            &format!("{}{list}", self.base_url),
            &[("To", to.as_str()), ("PageSize", "50")],
        )
        .map_err(|e| CallError::Unreachable(e.to_string()))?
        .to_string();
        // A call to the same number created before the claim (less a minute of clock skew) is
        // not ours.
        let since = since - Duration::from_secs(60);
        let mut found = CallsSince {
            calls: Vec::new(),
            complete: false,
        };
        for _ in 0..max_pages {
            let page: Page = self.get_list_page(&url, creds).await?;
            let mut older = false;
            for call in page.calls {
                let created = call.date_created.as_deref().and_then(rfc2822);
                if created.is_some_and(|created| created < since) {
                    older = true;
                    break;
                }
                found.calls.push(CallCreated {
                    sid: call.sid,
                    status: call.status,
                });
            }
            match page.next_page_uri {
                // The list ended, or went past `since`: nothing more to find.
                None => {
                    found.complete = true;
                    break;
                }
                Some(_) if older => {
                    found.complete = true;
                    break;
                }
                // Followed only on Twilio's own host and list: the credentials go with it.
                Some(next) if next.starts_with(&format!("{list}?")) => {
                    url = format!("{}{next}", self.base_url);
                }
                // Not a page we follow: what it holds stays unknown.
                Some(_) => break,
            }
        }
        Ok(found)
    }

    /// A call's own URL (`.../Calls/{CallSid}.json`); the SID goes into the path, so only
    /// Twilio's shape of one (CA + 32 hex digits) is accepted.
    fn call_url(&self, creds: &ApiCredentials, call_sid: &str) -> Result<String, CallError> {
        if !is_call_sid(call_sid) {
            return Err(CallError::Unreachable("not a call SID".into()));
        }
        Ok(format!(
            "{}/2010-04-01/Accounts/{}/Calls/{call_sid}.json",
            self.base_url, creds.account_sid
        ))
    }

    /// A call's status now (`GET .../Calls/{CallSid}.json`): `queued`, `initiated`, `ringing`,
    /// `in-progress` or a final one; `None` when Twilio knows no such call (404). One request,
    /// no retry.
    pub async fn status(
        &self,
        creds: &ApiCredentials,
        call_sid: &str,
    ) -> Result<Option<String>, CallError> {
        let url = self.call_url(creds, call_sid)?;
        let request = self.http.get(url);
        self.call_resource(request, creds).await
    }

    /// Cancels a call still queued or ringing at Twilio (`POST .../Calls/{CallSid}.json`,
    /// `Status=canceled`); Twilio leaves a call that is already answered or over as it is and
    /// answers with its status. One request, no retry. Returns the call's status after it, or
    /// `None` when Twilio knows no such call (404).
    pub async fn cancel(
        &self,
        creds: &ApiCredentials,
        call_sid: &str,
    ) -> Result<Option<String>, CallError> {
        let url = self.call_url(creds, call_sid)?;
        let request = self.http.post(url).form(&[("Status", "canceled")]);
        self.call_resource(request, creds).await
    }

    /// Sends a request for one call resource and reads its `status`.
    async fn call_resource(
        &self,
        request: reqwest::RequestBuilder,
        creds: &ApiCredentials,
    ) -> Result<Option<String>, CallError> {
        #[derive(Deserialize)]
        struct Call {
            status: String,
        }
        let response = request
            .basic_auth(&creds.username, Some(creds.password.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| CallError::Unreachable(without_url(&e)))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| CallError::Unreachable(without_url(&e)))?;
        match status {
            200..=299 => {}
            404 => return Ok(None),
            401 => {
                return Err(CallError::Authentication(TwilioError::from_response(
                    status, &body,
                )));
            }
            _ => {
                return Err(CallError::Unreachable(
                    TwilioError::from_response(status, &body).to_string(),
                ));
            }
        }
        serde_json::from_slice::<Call>(&body)
            .map(|c| Some(c.status))
            .map_err(|_| CallError::Unreachable("Twilio's answer is not a call".into()))
    }

    async fn get_list_page<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        creds: &ApiCredentials,
    ) -> Result<T, CallError> {
        let response = self
            .http
            .get(url)
            .basic_auth(&creds.username, Some(creds.password.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| CallError::Unreachable(without_url(&e)))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| CallError::Unreachable(without_url(&e)))?;
        if !(200..=299).contains(&status) {
            let error = TwilioError::from_response(status, &body);
            return Err(match status {
                401 => CallError::Authentication(error),
                429 => CallError::RateLimited {
                    attempts: 1,
                    last: Some(error),
                    out_of_time: false,
                },
                _ => CallError::Unreachable(error.to_string()),
            });
        }
        serde_json::from_slice(&body)
            .map_err(|_| CallError::Unreachable("the Calls list is not a page of calls".into()))
    }

    async fn attempt(
        &self,
        url: &str,
        creds: &ApiCredentials,
        form: &[(&str, String)],
    ) -> Result<CallCreated, Attempt> {
        let response = self
            .http
            .post(url)
            .basic_auth(&creds.username, Some(creds.password.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(form)
            .send()
            .await
            .map_err(|e| Attempt::Final(send_error(e)))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            Attempt::Final(CallError::OutcomeUnknown(format!(
                "HTTP {status} with an unreadable body: {}",
                without_url(&e)
            )))
        })?;
        match status {
            200..=299 => serde_json::from_slice::<CallCreated>(&body).map_err(|e| {
                // serde repeats values from the body: mask any phone number among them.
                Attempt::Final(CallError::OutcomeUnknown(mask_digits(&format!(
                    "HTTP {status} but the body is not a call resource: {e}"
                ))))
            }),
            429 => Err(Attempt::Throttled(TwilioError::from_response(
                status, &body,
            ))),
            _ => {
                let error = TwilioError::from_response(status, &body);
                Err(Attempt::Final(match (status, error.code) {
                    (401, _) | (_, Some(20003)) => CallError::Authentication(error),
                    (_, Some(20429)) => return Err(Attempt::Throttled(error)),
                    (400..=499, _) => CallError::Rejected(error),
                    _ => CallError::OutcomeUnknown(error.to_string()),
                }))
            }
        }
    }
}

/// Twilio's `date_created` (`Wed, 25 Nov 2026 00:00:01 +0000`, always UTC) as an instant.
fn rfc2822(raw: &str) -> Option<SystemTime> {
    let http_date = raw.strip_suffix(" +0000")?.to_owned() + " GMT";
    aws_smithy_types::DateTime::from_str(&http_date, aws_smithy_types::date_time::Format::HttpDate)
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
}

fn send_error(e: reqwest::Error) -> CallError {
    if e.is_connect() {
        CallError::Unreachable(without_url(&e))
    } else if e.is_timeout() {
        CallError::OutcomeUnknown("no answer within the client timeout".to_owned())
    } else {
        CallError::OutcomeUnknown(without_url(&e))
    }
}

/// The error's chain of causes without the request URL (it names the account SID).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    text.push_str(if e.is_connect() {
        "connect error"
    } else {
        "request error"
    });
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod list_tests {
    use super::*;

    #[test]
    fn twilio_dates_are_read() {
        assert_eq!(
            rfc2822("Wed, 25 Nov 2026 00:00:01 +0000"),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_564_801))
        );
        assert_eq!(rfc2822("2026-11-25T00:00:01Z"), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phone::AllowList;
    use crate::twiml::inspect::{GatedElements, UrlPrefixes};

    fn policy() -> CallPolicy {
        CallPolicy {
            reach: inspect::Policy {
                destinations: AllowList::parse("+81,+1").unwrap(),
                urls: UrlPrefixes::parse("https://example.com/").unwrap(),
                gated: GatedElements::default(),
            },
            default_time_limit: 3600,
        }
    }

    fn spec() -> CallSpec {
        CallSpec {
            to: "+81312345678".parse().unwrap(),
            from: "+15005550006".parse().unwrap(),
            instructions: Instructions::Url("https://example.com/twiml".into()),
            options: CallOptions::default(),
        }
    }

    fn with(change: impl FnOnce(&mut CallSpec)) -> CallSpec {
        let mut spec = spec();
        change(&mut spec);
        spec
    }

    #[test]
    fn form_repeats_status_callback_events() {
        let c = with(|c| {
            c.options = CallOptions {
                status_callback: Some("https://example.com/status".into()),
                status_callback_events: vec![
                    StatusCallbackEvent::Initiated,
                    StatusCallbackEvent::Completed,
                ],
                timeout: Some(30),
                machine_detection: Some(MachineDetection::Enable),
                record: Some(false),
                time_limit: Some(120),
                caller_id: Some("+15005550006".parse().unwrap()),
                send_digits: Some("1234#".into()),
            }
        })
        .validate(&policy())
        .unwrap();
        let form = c.form();
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            form,
            [
                ("To", "+81312345678"),
                ("From", "+15005550006"),
                ("Url", "https://example.com/twiml"),
                ("StatusCallback", "https://example.com/status"),
                ("StatusCallbackMethod", "POST"),
                ("StatusCallbackEvent", "initiated"),
                ("StatusCallbackEvent", "completed"),
                ("Timeout", "30"),
                ("MachineDetection", "Enable"),
                ("Record", "false"),
                ("TimeLimit", "120"),
                ("CallerId", "+15005550006"),
                ("SendDigits", "1234#"),
            ]
        );
    }

    #[test]
    fn a_call_without_a_time_limit_gets_the_policys() {
        let request = spec().validate(&policy()).unwrap();
        assert_eq!(request.options().time_limit, Some(3600));
        assert!(request.form().contains(&("TimeLimit", "3600".to_owned())));
        let mut short = policy();
        short.default_time_limit = 60;
        assert_eq!(
            spec().validate(&short).unwrap().options().time_limit,
            Some(60)
        );
    }

    #[test]
    fn twiml_length_counts_characters() {
        let ok = with(|c| {
            c.instructions = Instructions::Twiml(format!(
                "<Response><Say>{}</Say></Response>",
                "あ".repeat(3968)
            ))
        });
        assert!(
            ok.validate(&policy()).is_ok(),
            "4000 characters, 12000 bytes"
        );
    }

    /// The domain layer's bad-input table: specs an event cannot always express (typed numbers,
    /// a policy), one row per rule of `CallSpec::validate`. Bad *events* are in
    /// outbound-call's tests/bad_inputs.rs; bad *TwiML* in twiml::inspect.
    #[test]
    fn every_rule_refuses_with_its_reason() {
        let rows: Vec<(&str, CallSpec, &str)> = vec![
            (
                "to outside the allow-list",
                with(|c| c.to = "+442071838750".parse().unwrap()),
                "allowed prefixes",
            ),
            (
                "TwiML over 4000 characters",
                with(|c| c.instructions = Instructions::Twiml("a".repeat(4001))),
                "4000",
            ),
            (
                "TwiML dialling outside the allow-list",
                with(|c| {
                    c.instructions = Instructions::Twiml(
                        "<Response><Dial>+442071838750</Dial></Response>".into(),
                    )
                }),
                "allowed prefixes",
            ),
            (
                "url over http",
                with(|c| c.instructions = Instructions::Url("http://example.com/twiml".into())),
                "url must be an https",
            ),
            (
                "url with a leading space",
                with(|c| c.instructions = Instructions::Url(" https://example.com/twiml".into())),
                "url must be an https",
            ),
            (
                "url outside the prefixes",
                with(|c| c.instructions = Instructions::Url("https://evil.example/twiml".into())),
                "ALLOWED_TWIML_URL_PREFIXES",
            ),
            (
                "status callback over ftp",
                with(|c| c.options.status_callback = Some("ftp://example.com".into())),
                "status_callback must be an https",
            ),
            (
                "ring timeout 0",
                with(|c| c.options.timeout = Some(0)),
                "timeout must be between 1 and 600",
            ),
            (
                "ring timeout 601",
                with(|c| c.options.timeout = Some(601)),
                "timeout must be between 1 and 600",
            ),
            (
                "time limit 0",
                with(|c| c.options.time_limit = Some(0)),
                "time_limit must be between 1 and 14400",
            ),
            (
                "time limit over 4 hours",
                with(|c| c.options.time_limit = Some(14_401)),
                "time_limit must be between 1 and 14400",
            ),
            (
                "empty send_digits",
                with(|c| c.options.send_digits = Some(String::new())),
                "send_digits",
            ),
            (
                "letters in send_digits",
                with(|c| c.options.send_digits = Some("12a".into())),
                "send_digits",
            ),
            (
                "33 send_digits",
                with(|c| c.options.send_digits = Some("1".repeat(33))),
                "send_digits",
            ),
        ];
        for (what, spec, phrase) in rows {
            let err = spec.validate(&policy()).expect_err(what).to_string();
            assert!(err.contains(phrase), "{what}: {err}");
        }
        let mut no_prefixes = policy();
        no_prefixes.reach.urls = UrlPrefixes::none();
        let err = spec().validate(&no_prefixes).unwrap_err().to_string();
        assert!(
            err.contains("ALLOWED_TWIML_URL_PREFIXES is not set"),
            "{err}"
        );
    }

    #[test]
    fn twilio_errors_are_parsed_and_masked() {
        let body = br#"{"code": 21211, "message": "The 'To' number +81312345678 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        let e = TwilioError::from_response(400, body);
        assert_eq!(e.code, Some(21211));
        assert_eq!(
            e.more_info.as_deref(),
            Some("https://www.twilio.com/docs/errors/21211")
        );
        assert!(!e.message.contains("312345678"), "{}", e.message);
        assert!(e.message.contains("+81*******78"), "{}", e.message);
        let e = TwilioError::from_response(502, b"<html>bad gateway</html>");
        assert_eq!((e.code, e.status), (None, 502));
    }

    #[test]
    fn each_error_has_its_class() {
        let e = TwilioError::from_response(400, b"{}");
        let cases = [
            (CallError::Rejected(e.clone()), ErrorClass::TwilioRejected),
            (
                CallError::Authentication(e.clone()),
                ErrorClass::TwilioAuthentication,
            ),
            (
                CallError::RateLimited {
                    attempts: 5,
                    last: Some(e),
                    out_of_time: false,
                },
                ErrorClass::RateLimited,
            ),
            (
                CallError::Unreachable("x".into()),
                ErrorClass::TwilioUnreachable,
            ),
            (
                CallError::OutcomeUnknown("x".into()),
                ErrorClass::CallMayExist,
            ),
        ];
        for (error, class) in cases {
            assert_eq!(error.class(), class, "{error}");
        }
        // Only a call that may exist is unsafe to try again; only what was not processed is
        // worth trying again.
        for class in ErrorClass::ALL {
            let retry = class.retry();
            assert_eq!(
                retry.cannot_duplicate(),
                class != ErrorClass::CallMayExist,
                "{class:?}"
            );
            assert_eq!(
                retry == Retry::Safe,
                class.error_type().starts_with("Retryable."),
                "{class:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_counts_from_lambdas_epoch_milliseconds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let deadline = Deadline::from_epoch_millis(1_800_000_000_000 + 5_000, now);
        assert!(deadline.allows(Duration::from_millis(4_900)));
        assert!(!deadline.allows(Duration::from_millis(5_000)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!deadline.allows(Duration::from_millis(3_000)));
        assert!(Deadline::NONE.allows(Duration::from_secs(86_400)));
        let past = Deadline::from_epoch_millis(1_700_000_000_000, now);
        assert!(!past.allows(Duration::ZERO));
        // No deadline given (a default context; cargo lambda watch's 600000): none is enforced.
        assert_eq!(Deadline::from_epoch_millis(0, now), Deadline::NONE);
        assert_eq!(Deadline::from_epoch_millis(600_000, now), Deadline::NONE);
    }
}

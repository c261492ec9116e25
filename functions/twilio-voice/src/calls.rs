//! The Twilio Calls API client: `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`.
//!
//! Its errors tell the truth about whether a call may exist. Twilio's Calls API has no
//! idempotency key, so after a 5xx, a timeout or a reset once the request was sent, the call may
//! have been placed: that is reported as [`CallError::OutcomeUnknown`] and never retried. Only
//! 429 (the request was never processed) is retried, with exponential backoff and jitter.

use std::fmt;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde::{Deserialize, Serialize};

use crate::credentials::ApiCredentials;
use crate::phone::{PhoneNumber, mask_digits};

/// Twilio refuses inline TwiML longer than this (error 32018).
pub const MAX_TWIML_CHARS: usize = 4000;
/// Twilio refuses `SendDigits` longer than this.
pub const MAX_SEND_DIGITS: usize = 32;
/// Twilio's ring timeout range, in seconds.
pub const MAX_RING_TIMEOUT: u32 = 600;
/// Twilio's longest call (`TimeLimit`), in seconds.
pub const MAX_TIME_LIMIT: u32 = 14_400;

pub const DEFAULT_API_BASE_URL: &str = "https://api.twilio.com";

/// One outbound call, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRequest {
    pub to: PhoneNumber,
    pub from: PhoneNumber,
    pub instructions: Instructions,
    pub options: CallOptions,
}

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
    pub caller_id: Option<String>,
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

/// Why a [`CallRequest`] cannot be sent; checked before anything leaves the function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCall {
    #[error("inline TwiML is {0} characters; Twilio accepts at most 4000 (error 32018)")]
    TwimlTooLong(usize),
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
    #[error("caller_id must not be empty")]
    EmptyCallerId,
}

impl CallRequest {
    /// Checks Twilio's published limits, so that a request bound to fail is never sent.
    pub fn validate(&self) -> Result<(), InvalidCall> {
        match &self.instructions {
            Instructions::Url(url) => require_https("url", url)?,
            Instructions::Twiml(twiml) => {
                let chars = twiml.chars().count();
                if chars > MAX_TWIML_CHARS {
                    return Err(InvalidCall::TwimlTooLong(chars));
                }
            }
        }
        let o = &self.options;
        if let Some(url) = &o.status_callback {
            require_https("status_callback", url)?;
        }
        if let Some(t) = o.timeout {
            in_range("timeout", t, 1, MAX_RING_TIMEOUT)?;
        }
        if let Some(t) = o.time_limit {
            in_range("time_limit", t, 1, MAX_TIME_LIMIT)?;
        }
        if let Some(d) = &o.send_digits {
            let ok = !d.is_empty()
                && d.len() <= MAX_SEND_DIGITS
                && d.bytes()
                    .all(|b| b.is_ascii_digit() || b"*#wW".contains(&b));
            if !ok {
                return Err(InvalidCall::BadSendDigits);
            }
        }
        if o.caller_id.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(InvalidCall::EmptyCallerId);
        }
        Ok(())
    }

    /// The form body, `StatusCallbackEvent` repeated once per event (Twilio refuses a
    /// comma-joined list with 21626).
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut form = vec![
            ("To", self.to.as_str().to_owned()),
            ("From", self.from.as_str().to_owned()),
        ];
        match &self.instructions {
            Instructions::Url(url) => form.push(("Url", url.clone())),
            Instructions::Twiml(twiml) => form.push(("Twiml", twiml.clone())),
        }
        let o = &self.options;
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
            form.push(("CallerId", c.clone()));
        }
        if let Some(d) = &o.send_digits {
            form.push(("SendDigits", d.clone()));
        }
        form
    }
}

fn require_https(field: &'static str, url: &str) -> Result<(), InvalidCall> {
    // The URL goes to Twilio as written: the parser's leniency (trimmed spaces, dropped tabs)
    // must not let through what Twilio would refuse.
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidCall::NotHttps { field });
    }
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => Ok(()),
        _ => Err(InvalidCall::NotHttps { field }),
    }
}

fn in_range(field: &'static str, value: u32, min: u32, max: u32) -> Result<(), InvalidCall> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(InvalidCall::OutOfRange { field, min, max })
    }
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
    /// 429 / 20429 on every attempt: Twilio never processed the request.
    #[error("Twilio kept answering 429 after {attempts} attempts: {last}")]
    RateLimited { attempts: usize, last: TwilioError },
    /// The request never reached Twilio (DNS, connect, TLS).
    #[error("could not reach Twilio: {0}")]
    Unreachable(String),
    /// The request was sent and then something failed: the call may exist.
    #[error("outcome unknown, the call may have been placed; not retried: {0}")]
    OutcomeUnknown(String),
}

impl CallError {
    /// Whether sending the same request again cannot place a second call.
    pub fn retry_safe(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unreachable(_))
    }

    /// The Twilio error code, when Twilio gave one.
    pub fn twilio_code(&self) -> Option<u32> {
        match self {
            Self::Rejected(e) | Self::Authentication(e) | Self::RateLimited { last: e, .. } => {
                e.code
            }
            Self::Unreachable(_) | Self::OutcomeUnknown(_) => None,
        }
    }
}

/// Backoff for 429 answers.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub attempts: usize,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
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

/// The Calls API client. Cheap to share; holds the connection pool.
#[derive(Debug, Clone)]
pub struct CallsClient {
    http: reqwest::Client,
    base_url: String,
    retry: RetryPolicy,
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
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.total)
            .pool_idle_timeout(Duration::from_secs(300))
            .user_agent(concat!("twilio-lambda-rs/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            retry,
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

    /// Places one call. 429 is retried with backoff; nothing else is.
    pub async fn create(
        &self,
        creds: &ApiCredentials,
        call: &CallRequest,
    ) -> Result<CallCreated, CallError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Calls.json",
            self.base_url, creds.account_sid
        );
        let form = call.form();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.first_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.attempts.saturating_sub(1))
            .with_jitter();
        let mut attempts = 0;
        let result = (|| {
            attempts += 1;
            self.attempt(&url, creds, &form)
        })
        .retry(backoff)
        .when(|a| matches!(a, Attempt::Throttled(_)))
        .notify(|a, delay| {
            if let Attempt::Throttled(e) = a {
                tracing::warn!(code = ?e.code, delay_ms = delay.as_millis() as u64, "Twilio answered 429; backing off");
            }
        })
        .await;
        result.map_err(|a| match a {
            Attempt::Throttled(last) => CallError::RateLimited { attempts, last },
            Attempt::Final(e) => e,
        })
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
                Attempt::Final(CallError::OutcomeUnknown(format!(
                    "HTTP {status} but the body is not a call resource: {e}"
                )))
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
mod tests {
    use super::*;

    fn call() -> CallRequest {
        CallRequest {
            to: "+81312345678".parse().unwrap(),
            from: "+15005550006".parse().unwrap(),
            instructions: Instructions::Url("https://example.com/twiml".into()),
            options: CallOptions::default(),
        }
    }

    #[test]
    fn form_repeats_status_callback_events() {
        let mut c = call();
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
            caller_id: Some("+15005550006".into()),
            send_digits: Some("1234#".into()),
        };
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
    fn validate_enforces_twilio_limits() {
        assert_eq!(call().validate(), Ok(()));
        let mut c = call();
        c.instructions = Instructions::Twiml("あ".repeat(4000));
        assert_eq!(
            c.validate(),
            Ok(()),
            "the limit counts characters, not bytes"
        );
        c.instructions = Instructions::Twiml("a".repeat(4001));
        assert_eq!(c.validate(), Err(InvalidCall::TwimlTooLong(4001)));

        let mut c = call();
        c.instructions = Instructions::Url("http://example.com/twiml".into());
        assert_eq!(c.validate(), Err(InvalidCall::NotHttps { field: "url" }));
        let mut c = call();
        c.instructions = Instructions::Url(" https://example.com/twiml".into());
        assert_eq!(c.validate(), Err(InvalidCall::NotHttps { field: "url" }));
        let mut c = call();
        c.options.status_callback = Some("ftp://example.com".into());
        assert_eq!(
            c.validate(),
            Err(InvalidCall::NotHttps {
                field: "status_callback"
            })
        );
        let mut c = call();
        c.options.timeout = Some(601);
        assert!(matches!(
            c.validate(),
            Err(InvalidCall::OutOfRange {
                field: "timeout",
                ..
            })
        ));
        let mut c = call();
        c.options.time_limit = Some(0);
        assert!(matches!(
            c.validate(),
            Err(InvalidCall::OutOfRange {
                field: "time_limit",
                ..
            })
        ));
        for digits in ["", "12a", &"1".repeat(33)] {
            let mut c = call();
            c.options.send_digits = Some(digits.to_owned());
            assert_eq!(c.validate(), Err(InvalidCall::BadSendDigits), "{digits:?}");
        }
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
    fn retry_safety_follows_the_policy() {
        let e = TwilioError::from_response(400, b"{}");
        assert!(!CallError::Rejected(e.clone()).retry_safe());
        assert!(!CallError::Authentication(e.clone()).retry_safe());
        assert!(!CallError::OutcomeUnknown("x".into()).retry_safe());
        assert!(
            CallError::RateLimited {
                attempts: 5,
                last: e
            }
            .retry_safe()
        );
        assert!(CallError::Unreachable("x".into()).retry_safe());
    }
}

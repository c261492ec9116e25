//! Function URL event (payload 2.0) → route → signature check → call flow → TwiML.
//!
//! The event is read raw rather than through `lambda_http::Request`: the signed URL must be
//! exactly `https://` + Host + rawPath + `?` + rawQueryString, and a malformed event (a body that
//! is not base64, an odd Host) must become a 400, not a panic that the Function URL turns into 502.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::http::{HeaderMap, Method, header};
use tracing::{debug, info, warn};
use twilio_voice::credentials::{AuthToken, CredentialStore, WebhookTokenSpec, WebhookTokens};
use twilio_voice::http_event::{self, BodyError};
use twilio_voice::phone::mask;
use twilio_voice::signature::{self, Payload, SignatureError};

use crate::FlowStore;
use crate::flow::{Call, CallFlow, Entry, Links};
use crate::outcomes::Outcomes;
use crate::route::{Route, RouteError};
use crate::schedule::Clock;

/// Twilio's parameters are a few kB; anything near this is not Twilio.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// At most one token refresh a minute is triggered by signatures that do not match.
const MISMATCH_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Longest piece of a refused request's path that is logged (it is attacker-controlled).
const LOGGED_PATH_CHARS: usize = 64;

/// What the function holds between invocations.
pub struct App {
    pub tokens: CredentialStore<WebhookTokenSpec>,
    pub flows: FlowStore,
    pub public_base_url: Option<String>,
    pub answers: AnswerCache,
    /// Read once per call to pick the schedule's branch.
    pub clock: Clock,
    /// The call ledger and the event bus: status callbacks and voicemails are passed on there.
    pub outcomes: Option<Outcomes>,
    /// Passes a status callback on to the caller's own URL (`/status?forward=`).
    pub forwarder: crate::Forwarder,
    /// Phone alerts, when configured: the `/alert` routes, and alert calls' final statuses.
    pub alerts: Option<crate::alert::Alerts>,
}

/// Most answers kept: one per (base URL, number, branch) in use; more means something odd.
const ANSWER_SLOTS: usize = 16;

/// The answer to a new call is the same TwiML for every call with the same base URL, flow
/// document, number and branch (open / after hours / holiday / anonymous), so it is rendered
/// once per such key and reused. The flow document's id is part of the key: a flow re-read
/// from SSM is never answered with TwiML rendered from the one before.
#[derive(Default)]
pub struct AnswerCache(Mutex<Vec<(AnswerKey, String)>>);

#[derive(PartialEq, Eq)]
struct AnswerKey {
    flow_id: u64,
    entry: Entry,
    base: String,
}

impl AnswerCache {
    /// The flow's answer for `entry` under `links`, rendered on first use.
    pub fn answer(&self, flow: &CallFlow, entry: Entry, links: &Links) -> String {
        let mut slots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, xml)) = slots
            .iter()
            .find(|(k, _)| k.flow_id == flow.id() && k.entry == entry && k.base == links.base)
        {
            return xml.clone();
        }
        let xml = flow.answer(entry, None, links).to_xml();
        slots.retain(|(k, _)| k.flow_id == flow.id());
        if slots.len() >= ANSWER_SLOTS {
            slots.remove(0);
        }
        slots.push((
            AnswerKey {
                flow_id: flow.id(),
                entry,
                base: links.base.clone(),
            },
            xml.clone(),
        ));
        xml
    }
}

/// Why a request gets no TwiML.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("no route for this path")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("signature rejected: {0}")]
    Forbidden(SignatureError),
    #[error("auth token or call flow unavailable: {0}")]
    Unavailable(String),
    #[error("callback not recorded: {0}")]
    NotRecorded(String),
}

impl Rejection {
    /// The HTTP status and the plain-text body that says it.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Self::NotFound => (404, "Not Found"),
            Self::MethodNotAllowed => (405, "Method Not Allowed"),
            Self::BadRequest(_) => (400, "Bad Request"),
            Self::TooLarge => (413, "Payload Too Large"),
            Self::Forbidden(_) => (403, "Forbidden"),
            Self::Unavailable(_) | Self::NotRecorded(_) => (503, "Service Unavailable"),
        }
    }
}

/// Answers one webhook. Never fails: every outcome is an HTTP response, because an `Err` becomes
/// a 502 at the Function URL, which Twilio records as an application error.
pub async fn handle(event: ApiGatewayV2httpRequest, app: &App) -> ApiGatewayV2httpResponse {
    match answer(&event, app).await {
        Ok(Some(twiml)) => http_event::response(200, "text/xml; charset=utf-8", twiml),
        Ok(None) => http_event::empty(204),
        Err(rejection) => {
            let (status, text) = rejection.status();
            match &rejection {
                // The token store logs each failed SSM read itself; one line per request
                // would turn a flood into a flood of errors.
                Rejection::Unavailable(_) => {
                    debug!(status, reason = %rejection, "webhook failed closed")
                }
                _ => {
                    let path = loggable(event.raw_path.as_deref().unwrap_or(""));
                    warn!(status, reason = %rejection, path = %path, "webhook rejected")
                }
            }
            http_event::response(status, "text/plain; charset=utf-8", text.to_owned())
        }
    }
}

/// A webhook as Twilio sent it: the URL it signed, what it signed besides, and the signature.
/// Reading it needs no I/O, so it can be fuzzed and tested on its own. (No `Debug`: it holds
/// the caller's number.)
pub struct Webhook {
    route: Route,
    /// Scheme, host and path prefix that the TwiML links back to.
    links_base: String,
    url: String,
    body: Vec<u8>,
    is_json: bool,
    /// The call's parameters: the form body of a POST, the query of a GET.
    params: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    signature: String,
    is_get: bool,
}

type Pairs = Vec<(Cow<'static, str>, Cow<'static, str>)>;

fn parse_pairs(bytes: &[u8]) -> Pairs {
    form_urlencoded::parse(bytes)
        .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
        .collect()
}

impl Webhook {
    /// Everything about the request that can be refused before the signature is checked.
    pub fn read(
        event: &ApiGatewayV2httpRequest,
        public_base_url: Option<&str>,
    ) -> Result<Self, Rejection> {
        let method = &event.request_context.http.method;
        if method != Method::POST && method != Method::GET {
            return Err(Rejection::MethodNotAllowed);
        }
        let raw_path = event.raw_path.as_deref().unwrap_or("/");
        let query = event.raw_query_string.clone().unwrap_or_default();
        let (route, prefix) = Route::parse(raw_path, &query).map_err(|e| match e {
            RouteError::NotFound => Rejection::NotFound,
            RouteError::BadQuery => Rejection::BadRequest("malformed query"),
        })?;
        let base = match public_base_url {
            Some(base) => base.to_owned(),
            None => format!("https://{}", host(event)?),
        };
        let url = if query.is_empty() {
            format!("{base}{raw_path}")
        } else {
            format!("{base}{raw_path}?{query}")
        };
        let body = http_event::body_bytes(event, MAX_BODY_BYTES).map_err(|e| match e {
            BodyError::TooLarge { .. } => Rejection::TooLarge,
            BodyError::NotBase64 => Rejection::BadRequest("body is not valid base64"),
        })?;
        let is_json = header_str(&event.headers, header::CONTENT_TYPE).is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
        let is_get = method == Method::GET;
        let params = if is_get {
            parse_pairs(query.as_bytes())
        } else if is_json {
            Vec::new()
        } else {
            std::str::from_utf8(&body).map_err(|_| Rejection::BadRequest("body is not UTF-8"))?;
            parse_pairs(&body)
        };
        // No signature, or not the shape of one: refused here, before the token store is asked,
        // so a flood of junk never becomes a flood of SSM calls.
        let signature = signature_header(&event.headers)?
            .filter(|s| well_formed_signature(s))
            .ok_or(Rejection::Forbidden(SignatureError::Malformed))?
            .to_owned();
        Ok(Self {
            route,
            links_base: format!("{base}{prefix}"),
            url,
            body,
            is_json,
            params,
            signature,
            is_get,
        })
    }

    /// The URL Twilio signed.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn payload(&self) -> Payload<'_> {
        match (self.is_json, self.is_get) {
            (true, _) => Payload::Body(&self.body),
            // A GET's parameters are in the signed URL already.
            (false, true) => Payload::Params(&[]),
            (false, false) => Payload::Params(&self.params),
        }
    }

    /// Checks the signature against the given tokens.
    pub fn verify<'t>(
        &self,
        tokens: impl IntoIterator<Item = &'t AuthToken>,
    ) -> Result<(), SignatureError> {
        signature::validate(&self.url, self.payload(), Some(&self.signature), tokens)
    }

    /// The caller's own status callback that outbound-call put in the query of ours
    /// (`?forward=`). It needs no check of its own: it is part of the URL Twilio signed, which
    /// only the holder of the auth token (outbound-call, having checked it is https) can make.
    fn forward_to(&self) -> Option<String> {
        if self.is_get || self.is_json {
            return None;
        }
        url::Url::parse(&self.url)
            .ok()?
            .query_pairs()
            .find(|(k, _)| k == "forward")
            .map(|(_, v)| v.into_owned())
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// An HMAC-SHA1 in base64: 28 characters decoding to 20 bytes.
fn well_formed_signature(header: &str) -> bool {
    header.len() == 28
        && base64::engine::general_purpose::STANDARD
            .decode(header)
            .is_ok_and(|bytes| bytes.len() == 20)
}

/// A refused request's path as logged: at most [`LOGGED_PATH_CHARS`] characters, control
/// characters escaped (no forged log lines).
fn loggable(path: &str) -> String {
    let mut out: String = path
        .chars()
        .take(LOGGED_PATH_CHARS)
        .flat_map(char::escape_default)
        .collect();
    if path.chars().count() > LOGGED_PATH_CHARS {
        out.push('…');
    }
    out
}

/// The TwiML document for a verified webhook; `None` for a status callback.
async fn answer(event: &ApiGatewayV2httpRequest, app: &App) -> Result<Option<String>, Rejection> {
    let webhook = Webhook::read(event, app.public_base_url.as_deref())?;
    let tokens = app
        .tokens
        .get()
        .await
        .map_err(|e| Rejection::Unavailable(e.to_string()))?;
    verify(&webhook, &tokens, app).await?;

    // Verified: the flow may now read the call's parameters.
    let param = |name: &str| webhook.param(name);
    let call_sid = param("CallSid").unwrap_or("");
    if let Route::Status = webhook.route {
        info!(
            call_sid,
            call_status = param("CallStatus").unwrap_or(""),
            call_duration = param("CallDuration").unwrap_or(""),
            "call status"
        );
        // Ours, the alert step's and the caller's own callback at once: each is bounded by its
        // client's timeouts (about 3 s), and none waits behind another's slow dependency.
        let recorded = async {
            match &app.outcomes {
                Some(outcomes) => outcomes.status(param).await,
                None => Ok(None),
            }
        };
        // An alert call's final status moves its escalation on.
        let alert = async {
            match &app.alerts {
                Some(alerts) => alert_status(alerts, &param).await,
                None => Ok(()),
            }
        };
        // The caller's own callback gets it whatever becomes of ours: their endpoint does not
        // depend on our ledger, bus or state machine.
        let forwarded = async {
            if let Some(target) = webhook.forward_to() {
                forward(app, &webhook, &target, &tokens.current).await;
            }
        };
        let (recorded, alert, ()) = tokio::join!(recorded, alert, forwarded);
        alert?;
        match recorded {
            Ok(Some(completed)) => {
                info!(call_sid, outcome = ?completed.outcome, "Call Completed published");
            }
            Ok(None) => {}
            // A malformed callback will not improve when sent again: take it, say so.
            Err(e) if !e.is_ours() => {
                warn!(call_sid, error = %e, "status callback not recorded")
            }
            // Ours: 503. Twilio does not retry a status callback unless its URL asks to
            // (connection overrides, `#rp=5xx`), but records the failure; nothing was
            // marked, so a redelivery publishes the outcome.
            Err(e) => return Err(Rejection::NotRecorded(e.to_string())),
        }
        return Ok(None);
    }
    if let Route::Transcription = webhook.route {
        info!(
            call_sid,
            recording_sid = param("RecordingSid").unwrap_or(""),
            transcription_status = param("TranscriptionStatus").unwrap_or(""),
            "voicemail transcribed"
        );
        if let Some(outcomes) = &app.outcomes {
            match outcomes.transcription(param).await {
                Ok(_) => {}
                Err(e) if !e.is_ours() => {
                    warn!(call_sid, error = %e, "transcription not announced")
                }
                // Nobody is on the line: 503, so that Twilio records the failure (and sends it
                // again where it retries this callback); nothing was marked.
                Err(e) => return Err(Rejection::NotRecorded(e.to_string())),
            }
        }
        return Ok(None);
    }
    let links = Links {
        base: webhook.links_base.clone(),
    };
    if let Route::Alert { key, prompt } | Route::AlertKeys { key, prompt } = &webhook.route {
        // Not configured: these routes do not exist.
        let alerts = app.alerts.as_ref().ok_or(Rejection::NotFound)?;
        let twiml = match &webhook.route {
            Route::Alert { .. } => {
                alerts
                    .call(key, *prompt, param("AnsweredBy"), call_sid, &links)
                    .await
            }
            _ => {
                info!(
                    call_sid,
                    digits = param("Digits").unwrap_or(""),
                    prompt,
                    "alert key"
                );
                alerts
                    .key(key, *prompt, param("Digits"), call_sid, &links)
                    .await
            }
        };
        return Ok(Some(twiml.to_xml()));
    }
    let flow = app
        .flows
        .get()
        .await
        .map_err(|e| Rejection::Unavailable(e.to_string()))?;
    let from = param("From");
    let twiml = match &webhook.route {
        Route::Answer => {
            let entry = flow.entry(&Call {
                from,
                to: param("To"),
                now: (app.clock)(),
            });
            info!(
                call_sid,
                from = %mask(from.unwrap_or("")),
                to = %mask(param("To").unwrap_or("")),
                branch = ?entry.branch,
                "incoming call answered"
            );
            if flow.rejects(entry, from) {
                info!(call_sid, "caller rejected");
            } else if flow.answer_is_shared(entry) {
                return Ok(Some(app.answers.answer(&flow, entry, &links)));
            }
            flow.answer(entry, from, &links)
        }
        Route::Menu { at, tries } => {
            info!(
                call_sid,
                digits = param("Digits").unwrap_or(""),
                tries,
                "menu choice"
            );
            flow.menu(at, *tries, param("Digits"), from, &links)
        }
        Route::DialResult { at, hunt } => {
            let status = param("DialCallStatus");
            info!(
                call_sid,
                hunt,
                dial_call_status = status.unwrap_or(""),
                dial_bridged = param("DialBridged").unwrap_or(""),
                "forwarded call ended"
            );
            flow.dial_result(at, *hunt, status, param("DialBridged"), from, &links)
        }
        Route::Screen { at, caller } => {
            info!(call_sid, "screening a forwarded call");
            flow.screen(at, caller, &links)
        }
        Route::ScreenResult => {
            info!(
                call_sid,
                digits = param("Digits").unwrap_or(""),
                "screening answered"
            );
            CallFlow::screen_result(param("Digits"))
        }
        Route::Voicemail { at } => {
            info!(
                call_sid,
                recording_sid = param("RecordingSid").unwrap_or(""),
                recording_duration = param("RecordingDuration").unwrap_or(""),
                "voicemail recorded"
            );
            // The caller is still on the line: a failure to announce is logged, not answered
            // (a 5xx would play them Twilio's error message, and Twilio does not retry an
            // `action` on one). Nothing was marked: the transcription callback, when enabled,
            // publishes it.
            if let Some(outcomes) = &app.outcomes
                && let Err(e) = outcomes.voicemail(param).await
            {
                tracing::error!(call_sid, error = %e, "Voicemail Recorded not published");
            }
            flow.voicemail_done(at)
        }
        Route::Status | Route::Transcription => unreachable!("answered above"),
        Route::Alert { .. } | Route::AlertKeys { .. } => unreachable!("answered above"),
    };
    Ok(Some(twiml.to_xml()))
}

/// A status callback of an alert call: its final status without key 1 ends the step
/// (`alert.rs`). A malformed callback is left to the outcomes' handling, which reports it.
async fn alert_status<'a>(
    alerts: &crate::alert::Alerts,
    param: &impl Fn(&str) -> Option<&'a str>,
) -> Result<(), Rejection> {
    let Ok(update) = crate::outcomes::status_update(param) else {
        return Ok(());
    };
    alerts
        .status(
            &update.call_sid,
            update.call_status,
            update.answered_by.as_deref(),
        )
        .await
        .map(drop)
        // Ours: 503, and a callback sent again finds the step still open.
        .map_err(|e| Rejection::NotRecorded(e.to_string()))
}

/// Passes a status callback on, signed as Twilio signs it (for the target URL, with the
/// account's auth token), so that the caller's endpoint can check it like any webhook. A failure
/// is logged: their endpoint's trouble is not a reason for Twilio to send the callback again.
async fn forward(app: &App, webhook: &Webhook, target: &str, token: &AuthToken) {
    let client = match app.forwarder.client() {
        Ok(client) => client,
        Err(e) => {
            warn!(error = e, "no HTTP client to pass the status callback on");
            return;
        }
    };
    let signature = signature::sign(target, &webhook.params, token);
    let sent = client
        .post(target)
        .header("x-twilio-signature", signature)
        .form(&webhook.params)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => {
            debug!(
                status = response.status().as_u16(),
                "status callback passed on"
            );
        }
        Ok(response) => {
            warn!(
                status = response.status().as_u16(),
                "the caller's status callback refused it"
            );
        }
        Err(e) => warn!(
            timeout = e.is_timeout(),
            "the caller's status callback could not be reached"
        ),
    }
}

/// Checks the signature with the cached tokens, and once more with fresh ones when the cached
/// ones fail and have not been refreshed for a while (a token rotation under way).
async fn verify(
    webhook: &Webhook,
    tokens: &Arc<WebhookTokens>,
    app: &App,
) -> Result<(), Rejection> {
    match webhook.verify(tokens.iter()) {
        Ok(()) => Ok(()),
        Err(SignatureError::Mismatch) => {
            let fresh = app
                .tokens
                .refresh_if_older(MISMATCH_REFRESH_INTERVAL)
                .await
                .map_err(|e| Rejection::Unavailable(e.to_string()))?;
            match fresh {
                Some(fresh) => webhook.verify(fresh.iter()).map_err(Rejection::Forbidden),
                None => Err(Rejection::Forbidden(SignatureError::Mismatch)),
            }
        }
        Err(other) => Err(Rejection::Forbidden(other)),
    }
}

fn host(event: &ApiGatewayV2httpRequest) -> Result<&str, Rejection> {
    let host =
        header_str(&event.headers, header::HOST).or(event.request_context.domain_name.as_deref());
    match host {
        Some(h)
            if !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) =>
        {
            Ok(h)
        }
        _ => Err(Rejection::BadRequest("no valid Host")),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The signature header; more than one is refused rather than guessed between.
fn signature_header(headers: &HeaderMap) -> Result<Option<&str>, Rejection> {
    let mut all = headers.get_all("x-twilio-signature").iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(Rejection::Forbidden(SignatureError::Malformed));
    }
    first
        .map(|v| {
            v.to_str()
                .map_err(|_| Rejection::Forbidden(SignatureError::Malformed))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Branch;

    #[test]
    fn answers_are_cached_per_base_entry_and_flow() {
        let flow = CallFlow::from_json(r#"{"greeting": "hi", "then": {"voicemail": {}}}"#).unwrap();
        let cache = AnswerCache::default();
        let links = |base: &str| Links {
            base: base.to_owned(),
        };
        let main = Entry {
            flow: 0,
            branch: Branch::Main,
        };
        let a = cache.answer(&flow, main, &links("https://a.example"));
        assert_eq!(
            a,
            flow.answer(main, None, &links("https://a.example"))
                .to_xml()
        );
        assert!(a.contains("https://a.example/voicemail?at=0m"), "{a}");
        assert_eq!(cache.answer(&flow, main, &links("https://a.example")), a);
        let b = cache.answer(&flow, main, &links("https://b.example/prefix"));
        assert!(b.contains("https://b.example/prefix/voicemail"), "{b}");
        assert!(!b.contains("a.example"), "{b}");
        // A new document (re-read from SSM) is rendered afresh, even under the same key.
        let changed =
            CallFlow::from_json(r#"{"greeting": "changed", "then": {"voicemail": {}}}"#).unwrap();
        let c = cache.answer(&changed, main, &links("https://a.example"));
        assert!(c.contains("changed"), "{c}");
    }

    #[test]
    fn refused_paths_are_logged_short_and_escaped() {
        assert_eq!(loggable("/voice"), "/voice");
        let long = format!("/{}", "a".repeat(500));
        assert_eq!(loggable(&long).chars().count(), LOGGED_PATH_CHARS + 1);
        assert_eq!(loggable("/x\n\u{1b}[31m"), "/x\\n\\u{1b}[31m");
        assert!(!loggable("/a\nINFO forged").contains('\n'));
    }

    #[test]
    fn only_a_signature_shaped_header_reaches_the_token_store() {
        assert!(well_formed_signature("RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        for bad in [
            "",
            "AAAA",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8",
            " RSOYDt4T1cUTdK1PDd93/VVr8B8=",
            "RSOYDt4T1cUTdK1PDd93*VVr8B8=",
        ] {
            assert!(!well_formed_signature(bad), "{bad:?}");
        }
    }
}

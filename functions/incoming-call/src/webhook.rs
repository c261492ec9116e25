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
use lambda_http::aws_lambda_events::encodings::Body;
use lambda_http::http::{HeaderMap, HeaderValue, Method, header};
use tracing::{error, info, warn};
use twilio_voice::credentials::{AuthToken, CredentialStore, WebhookTokenSpec, WebhookTokens};
use twilio_voice::phone::mask;
use twilio_voice::signature::{self, Payload, SignatureError};

use crate::flow::{CallFlow, Links};

/// Twilio's parameters are a few kB; anything near this is not Twilio.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// At most one token refresh a minute is triggered by signatures that do not match.
const MISMATCH_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// What the function holds between invocations.
pub struct App {
    pub tokens: CredentialStore<WebhookTokenSpec>,
    pub flow: CallFlow,
    pub public_base_url: Option<String>,
    pub answers: AnswerCache,
}

/// The answer to a new call is the same TwiML for every call to the same URL, so it is rendered
/// once per base URL and reused (one slot: a function is called under one base URL).
#[derive(Default)]
pub struct AnswerCache(Mutex<Option<(String, String)>>);

impl AnswerCache {
    /// The flow's answer for `links`, rendered on first use.
    pub fn answer(&self, flow: &CallFlow, links: &Links) -> String {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((base, xml)) = slot.as_ref()
            && *base == links.base
        {
            return xml.clone();
        }
        let xml = flow.answer(links).to_xml();
        *slot = Some((links.base.clone(), xml.clone()));
        xml
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Answer,
    Menu,
    DialResult,
    Voicemail,
    Status,
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
    #[error("auth token unavailable: {0}")]
    Unavailable(String),
}

impl Rejection {
    pub fn status(&self) -> i64 {
        match self {
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::BadRequest(_) => 400,
            Self::TooLarge => 413,
            Self::Forbidden(_) => 403,
            Self::Unavailable(_) => 503,
        }
    }
}

/// Answers one webhook. Never fails: every outcome is an HTTP response, because an `Err` becomes
/// a 502 at the Function URL, which Twilio records as an application error.
pub async fn handle(event: ApiGatewayV2httpRequest, app: &App) -> ApiGatewayV2httpResponse {
    match answer(&event, app).await {
        Ok(Some(twiml)) => respond(200, Some(("text/xml; charset=utf-8", twiml))),
        Ok(None) => respond(204, None),
        Err(rejection) => {
            let status = rejection.status();
            match &rejection {
                Rejection::Unavailable(_) => {
                    error!(status, reason = %rejection, "webhook failed closed")
                }
                _ => {
                    warn!(status, reason = %rejection, path = event.raw_path.as_deref().unwrap_or(""), "webhook rejected")
                }
            }
            let text = match status {
                400 => "Bad Request",
                403 => "Forbidden",
                404 => "Not Found",
                405 => "Method Not Allowed",
                413 => "Payload Too Large",
                _ => "Service Unavailable",
            };
            respond(status, Some(("text/plain; charset=utf-8", text.to_owned())))
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
    query: String,
    body: Vec<u8>,
    is_json: bool,
    /// The call's parameters: the form body of a POST, the query of a GET.
    params: Vec<(Cow<'static, str>, Cow<'static, str>)>,
    signature: Option<String>,
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
        let (route, prefix) = route(raw_path).ok_or(Rejection::NotFound)?;
        let base = match public_base_url {
            Some(base) => base.to_owned(),
            None => format!("https://{}", host(event)?),
        };
        let query = event.raw_query_string.clone().unwrap_or_default();
        let url = if query.is_empty() {
            format!("{base}{raw_path}")
        } else {
            format!("{base}{raw_path}?{query}")
        };
        let body = body(event)?;
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
        let signature = signature_header(&event.headers)?.map(str::to_owned);
        Ok(Self {
            route,
            links_base: format!("{base}{prefix}"),
            url,
            query,
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
        signature::validate(&self.url, self.payload(), self.signature.as_deref(), tokens)
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }

    fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
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
    let links = Links {
        base: webhook.links_base.clone(),
    };
    let choice = webhook.query_param("choice");
    let route = webhook.route;

    let twiml = match route {
        Route::Answer => {
            info!(
                call_sid,
                from = %mask(param("From").unwrap_or("")),
                to = %mask(param("To").unwrap_or("")),
                "incoming call answered"
            );
            return Ok(Some(app.answers.answer(&app.flow, &links)));
        }
        Route::Menu => {
            info!(
                call_sid,
                digits = param("Digits").unwrap_or(""),
                "menu choice"
            );
            app.flow.choose(param("Digits"), &links)
        }
        Route::DialResult => {
            let status = param("DialCallStatus");
            info!(
                call_sid,
                dial_call_status = status.unwrap_or(""),
                "forwarded call ended"
            );
            app.flow.dial_result(choice.as_deref(), status, &links)
        }
        Route::Voicemail => {
            info!(
                call_sid,
                recording_sid = param("RecordingSid").unwrap_or(""),
                recording_duration = param("RecordingDuration").unwrap_or(""),
                "voicemail recorded"
            );
            app.flow.voicemail_done(choice.as_deref())
        }
        Route::Status => {
            info!(
                call_sid,
                call_status = param("CallStatus").unwrap_or(""),
                call_duration = param("CallDuration").unwrap_or(""),
                "call status"
            );
            return Ok(None);
        }
    };
    Ok(Some(twiml.to_xml()))
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

/// The route named by the path's last segment, and the path before it (kept in the links so a
/// function served under a prefix links back to itself).
fn route(raw_path: &str) -> Option<(Route, &str)> {
    let trimmed = raw_path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Some((Route::Answer, ""));
    }
    let (prefix, last) = trimmed.rsplit_once('/')?;
    let route = match last {
        "voice" => Route::Answer,
        "menu" => Route::Menu,
        "dial-result" => Route::DialResult,
        "voicemail" => Route::Voicemail,
        "status" => Route::Status,
        _ => return None,
    };
    Some((route, prefix))
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

fn body(event: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, Rejection> {
    let raw = event.body.as_deref().unwrap_or("");
    // base64 is 4/3 of the bytes it carries.
    if raw.len() > MAX_BODY_BYTES * 4 / 3 + 4 {
        return Err(Rejection::TooLarge);
    }
    let bytes = if event.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|_| Rejection::BadRequest("body is not valid base64"))?
    } else {
        raw.as_bytes().to_vec()
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(Rejection::TooLarge);
    }
    Ok(bytes)
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

fn respond(status: i64, body: Option<(&'static str, String)>) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = status;
    if let Some((content_type, text)) = body {
        response
            .headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response.body = Some(Body::Text(text));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_rendered_for_the_base_it_is_asked_for() {
        let flow = CallFlow::from_json(r#"{"greeting": "hi", "then": {"voicemail": {}}}"#).unwrap();
        let cache = AnswerCache::default();
        let links = |base: &str| Links {
            base: base.to_owned(),
        };
        let a = cache.answer(&flow, &links("https://a.example"));
        assert_eq!(a, flow.answer(&links("https://a.example")).to_xml());
        assert!(a.contains("https://a.example/voicemail"), "{a}");
        assert_eq!(cache.answer(&flow, &links("https://a.example")), a);
        let b = cache.answer(&flow, &links("https://b.example/prefix"));
        assert!(b.contains("https://b.example/prefix/voicemail"), "{b}");
        assert!(!b.contains("a.example"), "{b}");
    }

    #[test]
    fn routes_by_last_segment() {
        assert_eq!(route("/"), Some((Route::Answer, "")));
        assert_eq!(route(""), Some((Route::Answer, "")));
        assert_eq!(route("/voice"), Some((Route::Answer, "")));
        assert_eq!(route("/menu"), Some((Route::Menu, "")));
        assert_eq!(route("/twilio/status/"), Some((Route::Status, "/twilio")));
        assert_eq!(route("/dial-result"), Some((Route::DialResult, "")));
        assert_eq!(route("/voicemail"), Some((Route::Voicemail, "")));
        assert_eq!(route("/admin"), None);
        assert_eq!(route("/voice/extra"), None);
    }
}

//! The outbound function against an HTTP mock of Twilio (wiremock) with injected faults, SSM as
//! aws-smithy-mocks. What matters: exactly one call where one is due, never a second request
//! after an ambiguous failure, and no request that could outlive the invocation's deadline.
//! Bad events are bad_inputs.rs's table, not repeated here.

mod common;

use std::time::Duration;

use aws_sdk_ssm::Client;
use aws_sdk_ssm::operation::get_parameters::GetParametersOutput;
use aws_sdk_ssm::types::Parameter;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use common::{CREDENTIALS, SID, TOKEN};
use outbound_call::handler::{App, OutboundError, Retry, handle};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use twilio_voice::calls::{CallError, Deadline, HttpTimeouts, RetryPolicy};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CALLS_PATH: &str = "/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Calls.json";

fn created() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({
        "sid": "CA0123456789abcdef0123456789abcdef", "status": "queued",
        "queue_time": "0", "to": "+81312345678", "from": "+15005550006"
    }))
}

fn twilio_error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code, "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status
    }))
}

fn ssm_rule() -> Rule {
    test_support::ssm_rule(CREDENTIALS)
}

/// Fast backoff, so that five attempts take milliseconds.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 5,
        first_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        deadline_margin: Duration::from_millis(500),
    }
}

async fn app_for(base_url: &str, ssm: Client, total_timeout: Duration) -> App {
    app_with(base_url, ssm, total_timeout, fast_retry()).await
}

async fn app_with(base_url: &str, ssm: Client, total_timeout: Duration, retry: RetryPolicy) -> App {
    let timeouts = HttpTimeouts {
        connect: Duration::from_secs(1),
        total: total_timeout,
    };
    App::init_with(common::config(base_url, &[]), ssm, timeouts, retry)
        .await
        .expect("app starts")
}

async fn app(server: &MockServer) -> App {
    app_for(
        &server.uri(),
        test_support::ssm_with(CREDENTIALS),
        Duration::from_secs(2),
    )
    .await
}

fn event(name: &str) -> Value {
    test_support::event(name)
}

/// A Twilio stand-in answering every call request with `response`, and the app pointed at it.
async fn twilio_answering(response: ResponseTemplate) -> (MockServer, App) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .respond_with(response)
        .mount(&server)
        .await;
    let app = app(&server).await;
    (server, app)
}

/// Requests that reached the Calls endpoint (the INIT warm-up is a HEAD elsewhere).
async fn calls_received(server: &MockServer) -> Vec<wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == CALLS_PATH)
        .collect()
}

fn form(request: &wiremock::Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&request.body).into_owned().collect()
}

#[tokio::test]
async fn each_sample_event_sends_one_correct_request() {
    let (server, app) = twilio_answering(created()).await;

    let out = handle(event("outbound-call-say-ja.json"), &app, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"call_sid": "CA0123456789abcdef0123456789abcdef", "status": "queued"})
    );
    let received = calls_received(&server).await;
    assert_eq!(received.len(), 1);
    let auth = received[0]
        .headers
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap();
    use base64::Engine as _;
    assert_eq!(
        auth,
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"))
        )
    );
    assert_eq!(
        form(&received[0]),
        [
            ("To".to_owned(), "+81312345678".to_owned()),
            ("From".to_owned(), "+15005550006".to_owned()),
            (
                "Twiml".to_owned(),
                r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say language="ja-JP" voice="Polly.Mizuki" loop="2">こちらは監視システムです。本番サーバーが応答していません。至急確認してください。</Say></Response>"#.to_owned()
            ),
            ("Timeout".to_owned(), "45".to_owned()),
            ("Record".to_owned(), "false".to_owned()),
            ("TimeLimit".to_owned(), "3600".to_owned()),
        ]
    );

    handle(event("outbound-call-url.json"), &app, Deadline::NONE)
        .await
        .unwrap();
    let received = calls_received(&server).await;
    let url_form = form(&received[1]);
    let events: Vec<&str> = url_form
        .iter()
        .filter(|(k, _)| k == "StatusCallbackEvent")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        events,
        ["initiated", "ringing", "answered", "completed"],
        "repeated, never comma-joined"
    );
    assert!(url_form.contains(&(
        "Url".into(),
        "https://demo.twilio.com/docs/voice.xml".into()
    )));

    handle(event("outbound-call-twiml.json"), &app, Deadline::NONE)
        .await
        .unwrap();
    handle(event("outbound-call-schedule.json"), &app, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(calls_received(&server).await.len(), 4);
}

#[tokio::test]
async fn http_api_event_gets_201_and_bad_body_400() {
    let (server, app) = twilio_answering(created()).await;

    let out = handle(event("outbound-call-http-api.json"), &app, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(out["statusCode"], 201);
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"call_sid": "CA0123456789abcdef0123456789abcdef", "status": "queued"})
    );

    let mut bad = event("outbound-call-http-api.json");
    bad["body"] = json!(r#"{"to": "+442071838750", "say": "hi"}"#);
    let out = handle(bad, &app, Deadline::NONE).await.unwrap();
    assert_eq!(out["statusCode"], 400);
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "NonRetryable.InvalidEvent");
    assert!(
        !body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2071838750"),
        "number masked"
    );

    let mut get = event("outbound-call-http-api.json");
    get["requestContext"]["http"]["method"] = json!("GET");
    assert_eq!(
        handle(get, &app, Deadline::NONE).await.unwrap()["statusCode"],
        405
    );
    assert_eq!(
        calls_received(&server).await.len(),
        1,
        "only the valid request reached Twilio"
    );
}

#[tokio::test]
async fn rate_limited_three_times_then_created_places_exactly_one_call() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .respond_with(twilio_error(429, 20429, "Too Many Requests"))
        .up_to_n_times(3)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .respond_with(created())
        .mount(&server)
        .await;
    let app = app(&server).await;
    let out = handle(event("outbound-call-url.json"), &app, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(out["call_sid"], "CA0123456789abcdef0123456789abcdef");
    assert_eq!(
        calls_received(&server).await.len(),
        4,
        "three refused attempts and one call"
    );
}

#[tokio::test]
async fn rate_limited_every_time_gives_up_retry_safe() {
    let (server, app) = twilio_answering(twilio_error(429, 20429, "Too Many Requests")).await;
    let err = handle(event("outbound-call-url.json"), &app, Deadline::NONE)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "Retryable.RateLimited");
    assert_eq!(err.retry(), Retry::Safe);
    assert_eq!(
        calls_received(&server).await.len(),
        5,
        "bounded by the retry policy"
    );
}

#[tokio::test]
async fn server_error_after_the_call_was_recorded_is_never_retried() {
    let (server, app) = twilio_answering(twilio_error(500, 20500, "Internal Server Error")).await;
    let err = handle(event("outbound-call-url.json"), &app, Deadline::NONE)
        .await
        .unwrap_err();
    assert!(
        matches!(err, OutboundError::Call(CallError::OutcomeUnknown(_))),
        "{err}"
    );
    assert_eq!(err.error_type(), "OutcomeUnknown.CallMayExist");
    assert!(err.to_string().contains("may have been placed"), "{err}");
    assert_eq!(calls_received(&server).await.len(), 1);
}

#[tokio::test]
async fn answer_slower_than_the_client_timeout_is_outcome_unknown() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .respond_with(created().set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let rule = ssm_rule();
    let app = app_for(
        &server.uri(),
        test_support::mock_ssm(&[&rule]),
        Duration::from_millis(500),
    )
    .await;
    let err = handle(event("outbound-call-url.json"), &app, Deadline::NONE)
        .await
        .unwrap_err();
    assert_eq!(err.retry(), Retry::Unsafe, "{err}");
    assert_eq!(calls_received(&server).await.len(), 1);
}

#[tokio::test]
async fn invalid_number_is_rejected_once_with_twilios_code() {
    let (server, app) = twilio_answering(twilio_error(
        400,
        21211,
        "The 'To' number +81312345678 is not a valid phone number.",
    ))
    .await;
    let err = handle(event("outbound-call-url.json"), &app, Deadline::NONE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OutboundError::Call(CallError::Rejected(e)) if e.code == Some(21211)),
        "{err}"
    );
    assert_eq!(err.error_type(), "NonRetryable.TwilioRejected");
    assert!(
        err.to_string().contains("21211") && !err.to_string().contains("1312345678"),
        "{err}"
    );
    assert_eq!(calls_received(&server).await.len(), 1);

    let mut http = event("outbound-call-http-api.json");
    http["body"] = json!(r#"{"to": "+81312345678", "say": "hi"}"#);
    let out = handle(http, &app, Deadline::NONE).await.unwrap();
    assert_eq!(out["statusCode"], 422);
    let body: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (
            body["error"]["twilio_code"].as_u64(),
            body["error"]["retry"].as_str()
        ),
        (Some(21211), Some("pointless"))
    );
}

#[tokio::test]
async fn authentication_failure_rereads_credentials_once_then_fails() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .respond_with(twilio_error(401, 20003, "Authenticate"))
        .mount(&server)
        .await;
    let rule = ssm_rule();
    let app = app_for(
        &server.uri(),
        test_support::mock_ssm(&[&rule]),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(rule.num_calls(), 1, "credentials read during INIT");
    let err = handle(event("outbound-call-url.json"), &app, Deadline::NONE)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "NonRetryable.TwilioAuthentication");
    assert_eq!(rule.num_calls(), 2, "exactly one refresh");
    assert_eq!(
        calls_received(&server).await.len(),
        2,
        "one attempt per credential read"
    );
}

#[tokio::test]
async fn rotated_credentials_succeed_after_the_refresh() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .and(header(
            "authorization",
            format!("Basic {}", b64(&format!("{SID}:new-token"))),
        ))
        .respond_with(created())
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .respond_with(twilio_error(401, 20003, "Authenticate"))
        .mount(&server)
        .await;
    let rule = mock!(Client::get_parameters)
        .sequence()
        .output(|| creds("old-token"))
        .output(|| creds("new-token"))
        .build();
    let app = app_for(
        &server.uri(),
        mock_client!(aws_sdk_ssm, RuleMode::Sequential, [&rule]),
        Duration::from_secs(2),
    )
    .await;
    let out = handle(event("outbound-call-url.json"), &app, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(out["status"], "queued");
    assert_eq!(calls_received(&server).await.len(), 2);
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn creds(token: &'static str) -> GetParametersOutput {
    GetParametersOutput::builder()
        .parameters(
            Parameter::builder()
                .name("/twilio/account-sid")
                .value(SID)
                .build(),
        )
        .parameters(
            Parameter::builder()
                .name("/twilio/auth-token")
                .value(token)
                .build(),
        )
        .build()
}

#[tokio::test]
async fn malformed_created_body_is_outcome_unknown() {
    let (server, app) =
        twilio_answering(ResponseTemplate::new(201).set_body_string("<html>")).await;
    let err = handle(event("outbound-call-url.json"), &app, Deadline::NONE)
        .await
        .unwrap_err();
    assert_eq!(err.retry(), Retry::Unsafe, "{err}");
    assert_eq!(calls_received(&server).await.len(), 1);
}

#[tokio::test]
async fn connection_reset_after_the_body_was_sent_is_outcome_unknown() {
    // A server that reads the whole request, then closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request(&mut socket, &mut buf).await {
                    if head.starts_with("HEAD") {
                        let _ = socket
                            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        continue;
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return; // drop: the connection closes with the request unanswered
                }
            });
        }
    });
    let rule = ssm_rule();
    let app = app_for(
        &base,
        test_support::mock_ssm(&[&rule]),
        Duration::from_secs(2),
    )
    .await;
    let err = handle(event("outbound-call-url.json"), &app, Deadline::NONE)
        .await
        .unwrap_err();
    assert_eq!(err.retry(), Retry::Unsafe, "{err}");
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "never sent twice"
    );
}

#[tokio::test]
async fn unreachable_twilio_is_retry_safe() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rule = ssm_rule();
    let app = app_for(
        &format!("http://127.0.0.1:{port}"),
        test_support::mock_ssm(&[&rule]),
        Duration::from_secs(2),
    )
    .await;
    let err = handle(event("outbound-call-url.json"), &app, Deadline::NONE)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "Retryable.TwilioUnreachable", "{err}");
}

#[tokio::test]
async fn diagnostics_carry_the_retry_class() {
    let server = MockServer::start().await;
    let app = app(&server).await;
    let err = handle(
        json!({"to": "+442071838750", "say": "x"}),
        &app,
        Deadline::NONE,
    )
    .await
    .unwrap_err();
    let diagnostic: lambda_runtime::Diagnostic = err.into();
    assert_eq!(diagnostic.error_type, "NonRetryable.InvalidEvent");
    assert!(
        diagnostic.error_message.contains("allowed prefixes"),
        "{}",
        diagnostic.error_message
    );
    assert!(
        server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .all(|r| r.method.as_str() != "POST")
    );
}

/// Reads one whole HTTP/1.1 request (head, then a Content-Length body) and removes it from
/// `buf`; returns its head, or `None` once the peer has closed.
async fn read_request(socket: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                buf.drain(..end + 4 + length);
                return Some(text[..end].to_owned());
            }
        }
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A keep-alive HTTP/1.1 Twilio stand-in that counts the TCP connections it accepts.
async fn counting_twilio() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request(&mut socket, &mut buf).await {
                    let answer = if head.starts_with("POST") {
                        let body =
                            r#"{"sid": "CA0123456789abcdef0123456789abcdef", "status": "queued"}"#;
                        format!(
                            "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_owned()
                    };
                    socket.write_all(answer.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (base, accepted)
}

#[tokio::test]
async fn the_first_call_reuses_the_connection_opened_during_init() {
    use std::sync::atomic::Ordering;
    let (base, accepted) = counting_twilio().await;
    let app = app_for(
        &base,
        test_support::ssm_with(CREDENTIALS),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "INIT opened the connection"
    );
    let out = handle(event("outbound-call-url.json"), &app, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(out["status"], "queued");
    handle(event("outbound-call-say-ja.json"), &app, Deadline::NONE)
        .await
        .unwrap();
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the calls went over the connection from INIT: no handshake on the request path"
    );
}

/// Backoff slower than the time left: a second attempt could not finish before the deadline.
fn slow_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 5,
        first_delay: Duration::from_secs(20),
        max_delay: Duration::from_secs(30),
        deadline_margin: Duration::from_millis(500),
    }
}

#[tokio::test]
async fn rate_limited_retries_stop_before_the_deadline() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .respond_with(twilio_error(429, 20429, "Too Many Requests"))
        .mount(&server)
        .await;
    let app = app_with(
        &server.uri(),
        test_ssm(),
        Duration::from_secs(2),
        slow_retry(),
    )
    .await;
    // Room for one attempt (2 s timeout + 0.5 s margin, 7.5 s to spare), never for a backoff of
    // 20 s or more and another: no timing of the machine changes the count.
    let deadline = Deadline::at(Instant::now() + Duration::from_secs(10));
    let err = handle(event("outbound-call-url.json"), &app, deadline)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "Retryable.RateLimited", "{err}");
    assert_eq!(err.retry(), Retry::Safe);
    assert!(err.to_string().contains("deadline"), "{err}");
    assert_eq!(
        calls_received(&server).await.len(),
        1,
        "one attempt, then stop"
    );
}

#[tokio::test]
async fn no_attempt_starts_that_could_outlive_the_deadline() {
    let (server, app) = twilio_answering(created()).await;
    // A 2 s client timeout does not fit in 1 s: nothing is sent, and saying so is retry-safe.
    let deadline = Deadline::at(Instant::now() + Duration::from_secs(1));
    let err = handle(event("outbound-call-url.json"), &app, deadline)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "Retryable.RateLimited", "{err}");
    assert!(err.to_string().contains("nothing sent"), "{err}");
    assert!(calls_received(&server).await.is_empty());
}

#[tokio::test]
async fn the_credentials_reread_obeys_the_deadline() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CALLS_PATH))
        .respond_with(twilio_error(401, 20003, "Authenticate").set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let rule = ssm_rule();
    let app = app_with(
        &server.uri(),
        test_support_mock(&rule),
        Duration::from_secs(5),
        fast_retry(),
    )
    .await;
    // The first attempt fits (5.5 s needed of 8 s); after its 3 s answer a second cannot (at
    // most 5 s are left, and a slower machine only leaves less).
    let deadline = Deadline::at(Instant::now() + Duration::from_secs(8));
    let err = handle(event("outbound-call-url.json"), &app, deadline)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "Retryable.RateLimited", "{err}");
    assert_eq!(rule.num_calls(), 1, "no re-read: only INIT read SSM");
    assert_eq!(calls_received(&server).await.len(), 1);
}

fn test_ssm() -> Client {
    test_support::ssm_with(CREDENTIALS)
}

fn test_support_mock(rule: &Rule) -> Client {
    test_support::mock_ssm(&[rule])
}

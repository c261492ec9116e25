//! A flood of forged webhooks while SSM is throttled or hanging: the real aws-sdk-ssm client,
//! built by `twilio_voice::ssm::client`, against a wiremock stand-in that answers SSM's JSON
//! protocol and counts the requests it receives. The bound is exact: one read (of
//! `ssm::MAX_ATTEMPTS` attempts) per `FAILURE_MEMO`, whatever the number of requests.

use std::time::Duration;

use aws_sdk_ssm::config::{AsyncSleep, Sleep};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use incoming_call::config::Config;
use incoming_call::webhook::{App, handle};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::http::HeaderValue;
use test_support::LogCapture;
use twilio_voice::credentials::{DEFAULT_TTL, FAILURE_MEMO};
use twilio_voice::ssm::MAX_ATTEMPTS;
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PARAMETER: &str = "/twilio/auth-token";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const FLOOD: usize = 150;
const READ_FAILED: &str = "reading from SSM failed";
const ATTEMPTS: usize = MAX_ATTEMPTS as usize;

fn get_parameters() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(header("x-amz-target", "AmazonSSM.GetParameters"))
}

fn ssm_json(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_owned(), "application/x-amz-json-1.1")
}

fn throttled() -> ResponseTemplate {
    ssm_json(
        400,
        r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
    )
}

fn the_token() -> ResponseTemplate {
    ssm_json(
        200,
        &format!(
            r#"{{"Parameters":[{{"Name":"{PARAMETER}","Type":"SecureString","Value":"{TOKEN}","Version":1}}],"InvalidParameters":[]}}"#
        ),
    )
}

/// The SDK's timers (attempt and operation timeouts, retry backoff) on the wall clock. The
/// test runs on tokio's paused clock, which jumps to the next timer whenever the runtime waits
/// for a socket: the SDK's timeouts would then fire before wiremock's answer arrived.
#[derive(Debug)]
struct WallClock;

impl AsyncSleep for WallClock {
    fn sleep(&self, duration: Duration) -> Sleep {
        let (done, wait) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            let _ = done.send(());
        });
        Sleep::new(async move {
            let _ = wait.await;
        })
    }
}

/// `ssm::client` as the function builds it, pointed at `server`.
fn ssm(server: &MockServer) -> aws_sdk_ssm::Client {
    let client = twilio_voice::ssm::client(test_support::vars(&[
        ("AWS_REGION", "ap-northeast-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_ENDPOINT_URL", &server.uri()),
    ]))
    .unwrap();
    let config = client.config().to_builder().sleep_impl(WallClock).build();
    aws_sdk_ssm::Client::from_conf(config)
}

async fn app(server: &MockServer) -> App {
    let config = Config::from_lookup(test_support::vars(&[(
        "TWILIO_AUTH_TOKEN_PARAMETER",
        PARAMETER,
    )]))
    .unwrap();
    App::init(config, ssm(server)).await.expect("app starts")
}

/// A well-formed signature (28 characters of base64) that is not the right one.
fn forged(i: usize) -> ApiGatewayV2httpRequest {
    let mut event: ApiGatewayV2httpRequest = test_support::event("incoming-call.json");
    let signature = BASE64.encode((i as u32).to_be_bytes().repeat(5));
    assert_eq!(signature.len(), 28);
    event.headers.insert(
        "x-twilio-signature",
        HeaderValue::from_str(&signature).unwrap(),
    );
    event
}

/// Sends `n` forged webhooks and returns their status codes, deduplicated.
async fn flood(app: &App, n: usize) -> Vec<i64> {
    let mut statuses = Vec::new();
    for i in 0..n {
        let status = handle(forged(i), app).await.status_code;
        if !statuses.contains(&status) {
            statuses.push(status);
        }
    }
    statuses
}

async fn ssm_requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

fn read_failures(capture: &LogCapture) -> usize {
    capture
        .text()
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains(READ_FAILED))
        .count()
}

#[tokio::test(start_paused = true)]
async fn throttled_ssm_is_read_once_per_memo_window_whatever_the_flood() {
    let server = MockServer::start().await;
    get_parameters()
        .respond_with(throttled())
        .mount(&server)
        .await;
    let (capture, _guard) = LogCapture::install(tracing::Level::INFO);

    // INIT reads once, fails, and starts anyway.
    let app = app(&server).await;
    assert_eq!(ssm_requests(&server).await, ATTEMPTS);

    assert_eq!(flood(&app, FLOOD).await, [503], "the token was never read");
    assert_eq!(
        ssm_requests(&server).await,
        ATTEMPTS,
        "answered from the memo"
    );

    tokio::time::advance(FAILURE_MEMO).await;
    assert_eq!(flood(&app, FLOOD).await, [503]);
    assert_eq!(
        ssm_requests(&server).await,
        2 * ATTEMPTS,
        "exactly one more read once the window is over"
    );
    assert_eq!(
        read_failures(&capture),
        2,
        "one ERROR per read, not per request"
    );
}

#[tokio::test(start_paused = true)]
async fn a_known_token_answers_forgeries_with_403_through_the_grace_period() {
    let server = MockServer::start().await;
    get_parameters()
        .respond_with(the_token())
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    get_parameters()
        .respond_with(throttled())
        .mount(&server)
        .await;
    let (capture, _guard) = LogCapture::install(tracing::Level::INFO);

    let app = app(&server).await;
    assert_eq!(ssm_requests(&server).await, 1, "the token, read at INIT");
    assert_eq!(flood(&app, FLOOD).await, [403]);
    assert_eq!(
        ssm_requests(&server).await,
        1,
        "a fresh token is not read again"
    );

    // Past the TTL, SSM is throttled: the token stays in use, forgeries stay 403.
    tokio::time::advance(DEFAULT_TTL).await;
    assert_eq!(flood(&app, FLOOD).await, [403]);
    assert_eq!(ssm_requests(&server).await, 1 + ATTEMPTS);
    tokio::time::advance(FAILURE_MEMO).await;
    assert_eq!(flood(&app, FLOOD).await, [403]);
    assert_eq!(ssm_requests(&server).await, 1 + 2 * ATTEMPTS);
    assert_eq!(read_failures(&capture), 2, "{}", capture.text());

    // The genuine webhook still gets its TwiML.
    let genuine = handle(test_support::event("incoming-call.json"), &app).await;
    assert_eq!(genuine.status_code, 200);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_ssm_is_abandoned_at_the_timeouts() {
    let server = MockServer::start().await;
    // Far past the operation timeout: wiremock holds each request, the SDK gives up.
    get_parameters()
        .respond_with(the_token().set_delay(Duration::from_secs(60)))
        .mount(&server)
        .await;
    let (capture, _guard) = LogCapture::install(tracing::Level::INFO);

    let app = app(&server).await;
    assert_eq!(
        ssm_requests(&server).await,
        ATTEMPTS,
        "each attempt timed out"
    );
    assert_eq!(flood(&app, FLOOD).await, [503]);
    assert_eq!(ssm_requests(&server).await, ATTEMPTS);

    tokio::time::advance(FAILURE_MEMO).await;
    assert_eq!(flood(&app, FLOOD).await, [503]);
    assert_eq!(ssm_requests(&server).await, 2 * ATTEMPTS);
    assert_eq!(read_failures(&capture), 2, "{}", capture.text());
    assert!(capture.text().contains("timeout"), "{}", capture.text());
}

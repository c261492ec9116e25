//! Test support for the workspace's tests, a dev-dependency only (never in a bootstrap): real
//! stand-ins on loopback (`moto_server` for SSM, Prism serving Twilio's OpenAPI spec, installed into the
//! repository by `make test-deps`; each is a child process killed when its handle drops), an
//! SSM mock, the sample events, configuration from pairs, and a log capture.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root (this crate lives in `functions/test-support`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child process listening on a loopback port; killed on drop.
pub struct StandIn {
    child: Child,
    pub port: u16,
}

impl StandIn {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn tool(relative: &str) -> PathBuf {
    let path = repo_root().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run `make test-deps` (or `make test`) to install the stand-ins",
        path.display()
    );
    path
}

fn spawn(mut command: Command, port: u16, what: &str, ready_within: Duration) -> StandIn {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + ready_within;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} in time"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    StandIn { child, port }
}

/// `moto_server` from the repository's venv, on a free port.
pub fn moto_server() -> StandIn {
    let port = free_port();
    let mut command = Command::new(tool(".venv/bin/moto_server"));
    command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    spawn(command, port, "moto_server", Duration::from_secs(30))
}

/// `moto_server` that runs Step Functions executions (phone alerts): `MOTO_PORT` lets a task call
/// back into the server (SQS, EventBridge), and `/moto-api/config` switches execution on.
pub fn moto_server_running_state_machines() -> StandIn {
    use std::io::{Read, Write};
    let port = free_port();
    let mut command = Command::new(tool(".venv/bin/moto_server"));
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("MOTO_PORT", port.to_string());
    let moto = spawn(command, port, "moto_server", Duration::from_secs(30));
    let body = r#"{"stepfunctions": {"execute_state_machine": true}}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("moto_server is listening");
    write!(
        stream,
        "POST /moto-api/config HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("config request sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("config answered");
    assert!(
        response.starts_with("HTTP/1.1 20") || response.starts_with("HTTP/1.0 20"),
        "moto_server refused its configuration: {response}"
    );
    moto
}

/// Twilio's API v2010 OpenAPI document (from `@twilio-alpha/mcp`) as Prism serves it: see
/// `.ci/prism_spec.py` for the one default it writes out.
pub fn twilio_api_spec() -> PathBuf {
    tool(".ci/node_modules/twilio_api_v2010.prism.json")
}

/// Prism mocking Twilio's API from its own spec: off-spec requests get 422.
pub fn prism_twilio() -> StandIn {
    let port = free_port();
    let mut command = Command::new(tool(".ci/node_modules/.bin/prism"));
    command.args(["mock", "-h", "127.0.0.1", "-p", &port.to_string()]);
    command.arg(twilio_api_spec());
    spawn(command, port, "prism", Duration::from_secs(120))
}

/// An SSM client for a stand-in endpoint, with throwaway credentials, built the way the
/// functions build theirs (`ssm::client`), so every moto test goes through that path too.
pub async fn ssm_client(endpoint: &str) -> aws_sdk_ssm::Client {
    twilio_voice::ssm::client(vars(&[
        ("AWS_REGION", "ap-northeast-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_ENDPOINT_URL", endpoint),
    ]))
    .expect("an SSM client for the stand-in")
}

/// The shared SDK configuration for a stand-in endpoint (every service on it), built the way
/// the functions build theirs (`aws::sdk_config`).
pub fn aws_config(endpoint: &str) -> aws_types::SdkConfig {
    aws_config_with(&[("AWS_ENDPOINT_URL", endpoint)])
}

/// The same with more settings (per-service endpoints, ...) on top of throwaway credentials.
pub fn aws_config_with(extra: &[(&str, &str)]) -> aws_types::SdkConfig {
    let mut pairs = vec![
        ("AWS_REGION", "ap-northeast-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    pairs.extend_from_slice(extra);
    // A fresh moto_server loads each backend on its first request, which can outlast the
    // functions' budget on a busy machine: tests get generous timeouts (they test behaviour).
    let patient = twilio_voice::aws::Resilience {
        operation_timeout: Duration::from_secs(60),
        attempt_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(10),
        max_attempts: 3,
    };
    twilio_voice::aws::sdk_config(vars(&pairs), patient)
        .expect("an SDK configuration for the stand-in")
}

/// Creates the ledger's table as template.yaml declares it (string key `pk`, on demand).
pub async fn create_ledger_table(ddb: &aws_sdk_dynamodb::Client, name: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    ddb.create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create_table on the stand-in");
}

/// A subscriber on a stand-in: a queue that a rule on `bus` (created unless `default`) fills with
/// every event of twilio-lambda-rs, as a rule's target receives them.
pub struct EventInbox {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
}

impl EventInbox {
    pub async fn subscribe(config: &aws_types::SdkConfig, bus: &str) -> Self {
        use aws_sdk_sqs::types::QueueAttributeName;
        let eventbridge = aws_sdk_eventbridge::Client::new(config);
        let sqs = aws_sdk_sqs::Client::new(config);
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("inbox-{bus}"))
            .send()
            .await
            .expect("create_queue")
            .queue_url
            .expect("a queue URL");
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("get_queue_attributes")
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .expect("the queue ARN");
        if bus != "default" {
            eventbridge
                .create_event_bus()
                .name(bus)
                .send()
                .await
                .expect("create_event_bus");
        }
        eventbridge
            .put_rule()
            .event_bus_name(bus)
            .name("inbox")
            .event_pattern(r#"{"source": ["twilio-lambda-rs"]}"#)
            .send()
            .await
            .expect("put_rule");
        eventbridge
            .put_targets()
            .event_bus_name(bus)
            .rule("inbox")
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("inbox")
                    .arn(queue_arn)
                    .build()
                    .expect("a target"),
            )
            .send()
            .await
            .expect("put_targets");
        Self { sqs, queue_url }
    }

    /// Every envelope delivered so far (the stand-in delivers as the event is put), deleted
    /// from the queue as it is read.
    pub async fn take(&self) -> Vec<serde_json::Value> {
        let mut envelopes = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive_message");
            if out.messages().is_empty() {
                return envelopes;
            }
            for message in out.messages() {
                envelopes.push(
                    serde_json::from_str(message.body().unwrap_or_default())
                        .expect("an event envelope"),
                );
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("delete_message");
            }
        }
    }
}

/// Stores a SecureString parameter. The first request to a fresh moto_server loads its SSM
/// backend, which can take longer than the functions' 3 s SSM budget on a busy machine: seeding
/// gets a generous timeout of its own, so that the reads under test then meet a warm stand-in.
pub async fn put_secure(ssm: &aws_sdk_ssm::Client, name: &str, value: &str) {
    let seeding = aws_sdk_ssm::config::timeout::TimeoutConfig::builder()
        .operation_timeout(Duration::from_secs(60))
        .operation_attempt_timeout(Duration::from_secs(60))
        .build();
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .customize()
        .config_override(aws_sdk_ssm::Config::builder().timeout_config(seeding))
        .send()
        .await
        .expect("put_parameter on the stand-in");
}

/// Log lines captured from `tracing`, for tests that check what reaches the logs.
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Fails, naming the line, if any line holds one of `forbidden`; returns the line count.
    pub fn assert_clean(&self, forbidden: &[&str]) -> usize {
        let text = self.text();
        for line in text.lines() {
            for f in forbidden {
                assert!(!line.contains(f), "log line leaks {f:?}: {line}");
            }
        }
        text.lines().count()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Captures this thread's `tracing` output at `level` until the guard drops (a
    /// `#[tokio::test]` runs on one thread).
    pub fn install(level: tracing::Level) -> (Self, tracing::subscriber::DefaultGuard) {
        let capture = Self::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(level)
            .with_ansi(false)
            .finish();
        (capture, tracing::subscriber::set_default(subscriber))
    }
}

/// A settings lookup over fixed pairs, for the functions' `Config::from_lookup`.
pub fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// A sample event from `events/`.
pub fn event<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = repo_root().join("events").join(name);
    let json = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A GetParameters rule answering from `values`, unknown names in `InvalidParameters` as SSM
/// does; `num_calls()` counts the reads.
pub fn ssm_rule(values: &'static [(&'static str, &'static str)]) -> aws_smithy_mocks::Rule {
    aws_smithy_mocks::mock!(aws_sdk_ssm::Client::get_parameters)
        .match_requests(|r| r.with_decryption() == Some(true))
        .then_compute_output(move |input| {
            let mut out = aws_sdk_ssm::operation::get_parameters::GetParametersOutput::builder();
            for name in input.names() {
                match values.iter().find(|(n, _)| n == name) {
                    Some((n, v)) => {
                        out = out.parameters(
                            aws_sdk_ssm::types::Parameter::builder()
                                .name(*n)
                                .value(*v)
                                .build(),
                        );
                    }
                    None => out = out.invalid_parameters(name.clone()),
                }
            }
            out.build()
        })
}

/// An SSM client answered by `rules` (see [`ssm_rule`]).
pub fn mock_ssm(rules: &[&aws_smithy_mocks::Rule]) -> aws_sdk_ssm::Client {
    aws_smithy_mocks::mock_client!(aws_sdk_ssm, aws_smithy_mocks::RuleMode::MatchAny, rules)
}

/// An SSM client holding `values`.
pub fn ssm_with(values: &'static [(&'static str, &'static str)]) -> aws_sdk_ssm::Client {
    mock_ssm(&[&ssm_rule(values)])
}

/// A clock for simulations of paced work whose I/O is real (tokio's paused clock would fire the
/// SDK's and reqwest's timeouts while a socket is waited on): waiting moves it forward at once,
/// and every wait is logged, so that a test reads the pace off the log instead of a wall clock.
#[derive(Debug)]
pub struct SimulatedClock {
    now: std::sync::Mutex<tokio::time::Instant>,
    waits: std::sync::Mutex<Vec<tokio::time::Instant>>,
}

impl Default for SimulatedClock {
    fn default() -> Self {
        Self {
            now: std::sync::Mutex::new(tokio::time::Instant::now()),
            waits: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl SimulatedClock {
    /// The instants waited for, in order.
    pub fn waits(&self) -> Vec<tokio::time::Instant> {
        self.waits.lock().unwrap().clone()
    }

    /// Moves the clock forward (time passing between invocations).
    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }
}

impl twilio_voice::pacing::Clock for SimulatedClock {
    fn now(&self) -> tokio::time::Instant {
        *self.now.lock().unwrap()
    }

    fn sleep_until(
        &self,
        at: tokio::time::Instant,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.waits.lock().unwrap().push(at);
        let mut now = self.now.lock().unwrap();
        *now = (*now).max(at);
        Box::pin(tokio::task::yield_now())
    }
}

/// What a simulated event source mapping did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Drained {
    pub invocations: usize,
    /// Messages the function did not report: deleted.
    pub deleted: usize,
    /// Messages reported in `batchItemFailures`: left for redelivery.
    pub reported: usize,
}

/// Plays Lambda's SQS event source mapping: receives up to `batch_size` messages, invokes
/// `invoke` with the event Lambda would build, deletes what the answer does not report, and
/// goes on until a receive comes back empty. Reported messages are redelivered as the queue's
/// visibility timeout and redrive policy say (a queue with `VisibilityTimeout` 0 redelivers
/// them at once, and its dead-letter queue takes them after `maxReceiveCount`).
pub async fn drain_queue<F, Fut>(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    queue_arn: &str,
    batch_size: i32,
    mut invoke: F,
) -> Drained
where
    F: FnMut(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = serde_json::Value>,
{
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let mut drained = Drained::default();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(batch_size)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive_message");
        let messages = out.messages();
        if messages.is_empty() {
            return drained;
        }
        let records: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, serde_json::Value> = m
                    .attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.clone().into()))
                            .collect()
                    })
                    .unwrap_or_default();
                serde_json::json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": queue_arn,
                    "awsRegion": "ap-northeast-1",
                })
            })
            .collect();
        drained.invocations += 1;
        let answer = invoke(serde_json::json!({ "Records": records })).await;
        let reported: Vec<&str> = answer["batchItemFailures"]
            .as_array()
            .expect("a batchItemFailures answer")
            .iter()
            .map(|f| f["itemIdentifier"].as_str().expect("an itemIdentifier"))
            .collect();
        for m in messages {
            if reported.contains(&m.message_id().unwrap_or_default()) {
                drained.reported += 1;
                continue;
            }
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete_message");
            drained.deleted += 1;
        }
    }
}

/// A queue for bulk calls on a stand-in, as template.yaml declares it but redelivering at once
/// (visibility timeout 0), with its dead-letter queue after `max_receive_count`. Returns the
/// queue's URL and ARN and the dead-letter queue's URL.
pub async fn bulk_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
) -> (String, String, String) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let arn_of = |url: String| async move {
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("get_queue_attributes")
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .expect("a queue ARN");
        (url, arn)
    };
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .expect("create_queue")
        .queue_url
        .expect("a queue URL");
    let (dlq_url, dlq_arn) = arn_of(dlq_url).await;
    let url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "0")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
                .to_string(),
        )
        .send()
        .await
        .expect("create_queue")
        .queue_url
        .expect("a queue URL");
    let (url, arn) = arn_of(url).await;
    (url, arn, dlq_url)
}

/// `.ci/twilio_sim.py serve` (the Twilio voice simulator: see its docstring) on a free port,
/// with `config` as its config file; killed on drop. Its stdout (one line per call, verb,
/// keypress and callback, numbers masked) is kept for [`TwilioSim::transcript`].
pub struct TwilioSim {
    child: Child,
    pub port: u16,
    transcript: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: PathBuf,
}

impl TwilioSim {
    pub fn start(config: &serde_json::Value) -> Self {
        use std::io::BufRead;
        let dir =
            std::env::temp_dir().join(format!("twilio-sim-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("a directory for the simulator");
        let config_file = dir.join("sim.json");
        std::fs::write(&config_file, config.to_string()).expect("the simulator's config");
        let mut child = Command::new(tool(".venv/bin/python"))
            .arg(tool(".ci/twilio_sim.py"))
            .args(["serve", "--port", "0", "--config"])
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the Twilio simulator starts");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("its stdout")).lines();
        let first = lines
            .next()
            .and_then(Result::ok)
            .expect("the simulator's first line");
        let port = first
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {first:?}"));
        let transcript = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = transcript.clone();
        // Read on, or the child blocks once the pipe is full.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            port,
            transcript,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The lines printed so far.
    pub fn transcript(&self) -> Vec<String> {
        self.transcript.lock().unwrap().clone()
    }

    /// Waits until every call has ended; the log.
    pub async fn idle_log(&self) -> serde_json::Value {
        let answer = reqwest::get(format!("{}/_sim/wait?timeout=60", self.url()))
            .await
            .expect("the simulator answers /_sim/wait");
        assert_eq!(answer.status(), 200, "calls still going after 60 s");
        self.log().await
    }

    /// The log now: `{"calls": [...], "events": [...]}`.
    pub async fn log(&self) -> serde_json::Value {
        reqwest::get(format!("{}/_sim/log", self.url()))
            .await
            .expect("the simulator answers /_sim/log")
            .json()
            .await
            .expect("a JSON log")
    }

    /// Sends logged webhook `n` again, identical: `{"status", "response", "error"}`.
    pub async fn replay(&self, n: u64) -> serde_json::Value {
        reqwest::Client::new()
            .post(format!("{}/_sim/replay", self.url()))
            .json(&serde_json::json!({ "n": n }))
            .send()
            .await
            .expect("the simulator answers /_sim/replay")
            .json()
            .await
            .expect("a JSON answer")
    }
}

impl Drop for TwilioSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// `events/incoming-call.json` as Twilio POSTs the form `params` to `url`
/// (`https://host/path?query`): the path and query taken from `url`, the form as the base64
/// body, and `X-Twilio-Signature` computed for `url` with `token`.
pub fn signed_webhook<K: AsRef<str>, V: AsRef<str>>(
    url: &str,
    params: &[(K, V)],
    token: &str,
) -> lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest {
    use base64::Engine as _;
    use std::borrow::Cow;
    let pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = params
        .iter()
        .map(|(k, v)| (Cow::Borrowed(k.as_ref()), Cow::Borrowed(v.as_ref())))
        .collect();
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path_and_query = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut e: lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest =
        event("incoming-call.json");
    e.raw_path = Some(path.into());
    e.raw_query_string = Some(query.into());
    e.body = Some(base64::engine::general_purpose::STANDARD.encode(&form));
    let sig = twilio_voice::signature::sign(
        url,
        &pairs,
        &twilio_voice::credentials::AuthToken::new(token),
    );
    e.headers.insert(
        "x-twilio-signature",
        lambda_http::http::HeaderValue::from_str(&sig).expect("base64 is a header value"),
    );
    e
}

/// Serves a Function URL's handler over plain HTTP on a free loopback port, in this process:
/// each request becomes the payload 2.0 event Lambda would build (the Host header, raw path and
/// query kept, the body base64), as `handle` expects it. Returns the port.
pub async fn serve_function_url<H, F>(handle: H) -> u16
where
    H: Fn(lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest) -> F
        + Send
        + Sync
        + 'static,
    F: std::future::Future<
            Output = lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse,
        > + Send
        + 'static,
{
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    let handle = std::sync::Arc::new(handle);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let handle = handle.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let response = handle(function_url_event(&parts, &body)).await;
                            Ok::<_, hyper::Error>(http_response(response))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    port
}

fn function_url_event(
    parts: &hyper::http::request::Parts,
    body: &[u8],
) -> lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest {
    use base64::Engine as _;
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.into())))
        .collect();
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let path = parts.uri.path();
    serde_json::from_value(serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": "local",
            "http": {"method": parts.method.as_str(), "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "local"},
            "requestId": "local",
            "routeKey": "$default",
            "stage": "$default",
            "time": "25/Nov/2026:00:00:00 +0000",
            "timeEpoch": 0
        },
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "isBase64Encoded": true
    }))
    .expect("a Function URL event")
}

fn http_response(
    response: lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use base64::Engine as _;
    let body = match response.body {
        Some(lambda_http::Body::Text(text)) => text.into_bytes(),
        Some(lambda_http::Body::Binary(bytes)) => bytes,
        Some(lambda_http::Body::Empty) | None => Vec::new(),
        #[allow(unreachable_patterns)]
        Some(_) => Vec::new(),
    };
    let body = if response.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(&body)
            .unwrap_or(body)
    } else {
        body
    };
    let mut answer = hyper::Response::builder().status(response.status_code as u16);
    for (name, value) in response.headers.iter() {
        answer = answer.header(name, value);
    }
    answer
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("a response")
}

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

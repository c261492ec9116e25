//! A Lambda Runtime API stub on loopback, and a Twilio stand-in, for `make bench`.
//!
//! It starts a function binary the way Lambda does (`AWS_LAMBDA_RUNTIME_API` pointing at the
//! stub), hands it events over the Runtime API and times what comes back. Plain std threads and
//! blocking sockets with TCP_NODELAY: the stub must cost far less than what it measures.
//!
//! ```text
//! lambda-harness cold  RUNS EVENT EXPECT -- CMD...   exec → first response, RUNS fresh processes
//! lambda-harness cold-outbound RUNS EVENT EXPECT -- CMD...  the same, each process with a fresh
//!                                                    Twilio stand-in (TWILIO_API_BASE_URL)
//! lambda-harness rss   N    EVENT EXPECT -- CMD...   peak RSS (VmHWM) after N invocations
//! lambda-harness outbound N EVENT EXPECT -- CMD...   time beyond the Twilio round trip, per call
//! lambda-harness ssm-rtt N PARAMETER VALUE -- ENDPOINT  one GetParameters on a fresh connection
//! ```
//! EXPECT is a string every response body must contain (a wrong answer fails the bench).
//! Each mode prints one JSON object on stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const NEXT: &str = "/2018-06-01/runtime/invocation/next";

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (Content-Length or chunked body); `None` when the peer closed.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some(Request { method, path, body })
}

fn write_response(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut out = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    let _ = stream.write_all(&bytes);
}

/// An event for the next `/next`, and where to say when it was handed over.
type Delivery = (Vec<u8>, Sender<Instant>);

/// What the function posted back for one invocation.
struct Outcome {
    kind: &'static str,
    body: Vec<u8>,
    received: Instant,
}

/// The Runtime API: events go in through `events`, outcomes come out through `outcomes`.
struct RuntimeStub {
    addr: String,
    events: Sender<Delivery>,
    outcomes: Receiver<Outcome>,
    first_next: Arc<Mutex<Option<Instant>>>,
}

impl RuntimeStub {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Runtime API stub");
        let addr = listener.local_addr().unwrap().to_string();
        let (events_tx, events_rx) = channel::<Delivery>();
        let (outcomes_tx, outcomes_rx) = channel();
        let events_rx = Arc::new(Mutex::new(events_rx));
        let first_next = Arc::new(Mutex::new(None));
        let first = first_next.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let events = events_rx.clone();
                let outcomes = outcomes_tx.clone();
                let first = first.clone();
                thread::spawn(move || serve_runtime(stream, events, outcomes, first));
            }
        });
        Self {
            addr,
            events: events_tx,
            outcomes: outcomes_rx,
            first_next,
        }
    }

    /// Hands one event to the function; returns when it was written and what came back.
    fn invoke(&self, event: &[u8]) -> (Instant, Outcome) {
        let (sent_tx, sent_rx) = channel();
        self.events.send((event.to_vec(), sent_tx)).unwrap();
        let sent = sent_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the function never asked for the next event");
        let outcome = self
            .outcomes
            .recv_timeout(Duration::from_secs(30))
            .expect("the function never answered");
        (sent, outcome)
    }
}

fn serve_runtime(
    stream: TcpStream,
    events: Arc<Mutex<Receiver<Delivery>>>,
    outcomes: Sender<Outcome>,
    first_next: Arc<Mutex<Option<Instant>>>,
) {
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut request_id = 0u64;
    while let Some(request) = read_request(&mut reader) {
        if request.method == "GET" && request.path == NEXT {
            first_next.lock().unwrap().get_or_insert_with(Instant::now);
            let next = events.lock().unwrap().recv();
            let Ok((event, sent)) = next else { return };
            request_id += 1;
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 30_000;
            write_response(
                &mut writer,
                "200 OK",
                &[
                    ("content-type", "application/json".into()),
                    ("lambda-runtime-aws-request-id", format!("req-{request_id}")),
                    ("lambda-runtime-deadline-ms", deadline.to_string()),
                    (
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:ap-northeast-1:123456789012:function:bench".into(),
                    ),
                    (
                        "lambda-runtime-trace-id",
                        "Root=1-00000000-000000000000000000000000".into(),
                    ),
                ],
                &event,
            );
            let _ = sent.send(Instant::now());
        } else if request.method == "POST" {
            let received = Instant::now();
            let kind = if request.path.ends_with("/response") {
                "response"
            } else {
                "error"
            };
            write_response(&mut writer, "202 Accepted", &[], b"{}");
            let _ = outcomes.send(Outcome {
                kind,
                body: request.body,
                received,
            });
        } else {
            write_response(&mut writer, "404 Not Found", &[], b"");
        }
    }
}

/// One request seen by the Twilio stand-in.
#[derive(Clone)]
struct TwilioRequest {
    connection: usize,
    method: String,
    first_byte: Instant,
    answered: Instant,
}

/// Answers Twilio's Calls API on loopback with a queued call, instantly, and records every
/// connection and request so the harness can subtract the round trip and see connection reuse.
struct TwilioStandIn {
    base_url: String,
    connections: Arc<Mutex<Vec<Instant>>>,
    requests: Arc<Mutex<Vec<TwilioRequest>>>,
}

impl TwilioStandIn {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the Twilio stand-in");
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (conns, reqs) = (connections.clone(), requests.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let id = {
                    let mut c = conns.lock().unwrap();
                    c.push(Instant::now());
                    c.len()
                };
                let reqs = reqs.clone();
                thread::spawn(move || serve_twilio(stream, id, reqs));
            }
        });
        Self {
            base_url,
            connections,
            requests,
        }
    }
}

fn serve_twilio(stream: TcpStream, connection: usize, requests: Arc<Mutex<Vec<TwilioRequest>>>) {
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let created = json!({
        "sid": "CA0123456789abcdef0123456789abcdef",
        "account_sid": "AC0123456789abcdef0123456789abcdef",
        "status": "queued",
        "direction": "outbound-api",
        "api_version": "2010-04-01",
    })
    .to_string();
    loop {
        // The clock starts when the first byte is readable, not when the request is parsed.
        if reader.fill_buf().map(|b| b.is_empty()).unwrap_or(true) {
            return;
        }
        let first_byte = Instant::now();
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        // Recorded before the answer is written, so the harness never looks before it is there
        // (and the round trip it subtracts is, if anything, a little short).
        requests.lock().unwrap().push(TwilioRequest {
            connection,
            method: request.method.clone(),
            first_byte,
            answered: Instant::now(),
        });
        if request.method == "POST" && request.path.ends_with("/Calls.json") {
            write_response(
                &mut writer,
                "201 Created",
                &[("content-type", "application/json".into())],
                created.as_bytes(),
            );
        } else {
            write_response(&mut writer, "200 OK", &[], b"");
        }
    }
}

fn spawn(cmd: &[String], envs: &[(&str, String)], log: &std::fs::File) -> Child {
    let mut command = Command::new(&cmd[0]);
    command
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log.try_clone().unwrap());
    for (k, v) in envs {
        command.env(k, v);
    }
    command
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", cmd[0]))
}

/// SIGTERM first (a profiler wrapping the function writes its report then), SIGKILL after 5 s.
fn stop(mut child: Child) {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn check(outcome: &Outcome, expect: &str, log_path: &str) {
    let body = String::from_utf8_lossy(&outcome.body);
    if outcome.kind != "response" || !body.contains(expect) {
        panic!(
            "unexpected {} (wanted one containing {expect:?}): {body}\n(function output: {log_path})",
            outcome.kind
        );
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// CPU time (all threads, µs) and page faults of a process so far, from /proc.
fn cpu_and_faults(pid: u32) -> (f64, u64) {
    let mut cpu_ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let schedstat =
                std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            cpu_ns += schedstat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ")"; minflt and majflt
    // are the 10th and 12th fields overall.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let faults = [7, 9]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    (cpu_ns as f64 / 1000.0, faults)
}

/// exec → first response, `runs` times, each in a fresh process against a fresh stub. With
/// `twilio`, each process also gets a fresh Twilio stand-in (outbound-call's first response is a
/// placed call), and the first response must have come from exactly one Calls request to it.
fn cold(
    runs: usize,
    event: &[u8],
    expect: &str,
    cmd: &[String],
    log_path: &str,
    twilio: bool,
) -> Value {
    let log = std::fs::File::create(log_path).unwrap();
    let (mut total, mut init, mut cpu, mut faults) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut init_connections = Vec::new();
    // Three unrecorded starts first, so every candidate is timed with its binary in the page
    // cache (as on a Lambda host that has just fetched it), not the first one to be read.
    for run in 0..runs + 3 {
        let stub = RuntimeStub::start();
        let stand_in = twilio.then(TwilioStandIn::start);
        let mut envs = vec![("AWS_LAMBDA_RUNTIME_API", stub.addr.clone())];
        if let Some(stand_in) = &stand_in {
            envs.push(("TWILIO_API_BASE_URL", stand_in.base_url.clone()));
        }
        // Queued before the exec, as Lambda has the event waiting when INIT ends.
        let (sent_tx, _sent_rx) = channel();
        stub.events.send((event.to_vec(), sent_tx)).unwrap();
        let exec = Instant::now();
        let child = spawn(cmd, &envs, &log);
        let outcome = stub
            .outcomes
            .recv_timeout(Duration::from_secs(60))
            .expect("no response from the cold function");
        let (cpu_us, page_faults) = cpu_and_faults(child.id());
        stop(child);
        check(&outcome, expect, log_path);
        let first_next = stub.first_next.lock().unwrap().expect("asked for an event");
        if let Some(stand_in) = &stand_in {
            let requests = stand_in.requests.lock().unwrap();
            let posts = requests.iter().filter(|r| r.method == "POST").count();
            assert_eq!(posts, 1, "one Calls request for the first invocation");
            let connections = stand_in.connections.lock().unwrap();
            init_connections.push(connections.iter().filter(|t| **t < first_next).count() as f64);
        }
        if run < 3 {
            continue;
        }
        cpu.push(cpu_us);
        faults.push(page_faults as f64);
        total.push(micros(outcome.received - exec));
        init.push(micros(first_next - exec));
    }
    let mut result = json!({
        "runs": runs,
        "cold_start_us": median(&mut total),
        "cold_start_p90_us": percentile(&mut total, 0.9),
        "init_us": median(&mut init),
        "cpu_us": median(&mut cpu),
        "cpu_p25_us": percentile(&mut cpu, 0.25),
        "cpu_p75_us": percentile(&mut cpu, 0.75),
        "page_faults": median(&mut faults),
    });
    if twilio {
        result["twilio_connections_opened_during_init"] = json!(median(&mut init_connections));
    }
    result
}

/// Peak RSS after `n` invocations of one process.
fn rss(n: usize, event: &[u8], expect: &str, cmd: &[String], log_path: &str) -> Value {
    let log = std::fs::File::create(log_path).unwrap();
    let stub = RuntimeStub::start();
    let child = spawn(cmd, &[("AWS_LAMBDA_RUNTIME_API", stub.addr.clone())], &log);
    let (_, first) = stub.invoke(event);
    check(&first, expect, log_path);
    let after_first = peak_rss_kib(child.id());
    let mut warm = Vec::with_capacity(n);
    for _ in 1..n {
        let (sent, outcome) = stub.invoke(event);
        check(&outcome, expect, log_path);
        warm.push(micros(outcome.received - sent));
    }
    let peak = peak_rss_kib(child.id());
    stop(child);
    json!({
        "invocations": n,
        "peak_rss_kib": peak,
        "peak_rss_after_first_kib": after_first,
        "warm_invoke_us": median(&mut warm),
    })
}

/// Invocations of outbound-call against the Twilio stand-in: the invoke as the Runtime API
/// sees it, minus the Twilio request as the stand-in sees it (first byte in → answer out).
fn outbound(n: usize, event: &[u8], expect: &str, cmd: &[String], log_path: &str) -> Value {
    let log = std::fs::File::create(log_path).unwrap();
    let twilio = TwilioStandIn::start();
    let stub = RuntimeStub::start();
    let child = spawn(
        cmd,
        &[
            ("AWS_LAMBDA_RUNTIME_API", stub.addr.clone()),
            ("TWILIO_API_BASE_URL", twilio.base_url.clone()),
        ],
        &log,
    );
    let mut overhead = Vec::with_capacity(n);
    let mut first_invoke_at = None;
    for _ in 0..n {
        let before = twilio.requests.lock().unwrap().len();
        let (sent, outcome) = stub.invoke(event);
        check(&outcome, expect, log_path);
        first_invoke_at.get_or_insert(sent);
        let requests = twilio.requests.lock().unwrap();
        let posts: Vec<_> = requests[before..]
            .iter()
            .filter(|r| r.method == "POST")
            .collect();
        assert_eq!(posts.len(), 1, "one Calls request per invocation");
        let round_trip = posts[0].answered - posts[0].first_byte;
        overhead.push(micros(outcome.received - sent) - micros(round_trip));
    }
    let peak = peak_rss_kib(child.id());
    stop(child);
    let first_invoke_at = first_invoke_at.unwrap();
    let connections = twilio.connections.lock().unwrap().clone();
    let requests = twilio.requests.lock().unwrap().clone();
    let first_post = requests.iter().find(|r| r.method == "POST").unwrap();
    let opened_during_init = connections.iter().filter(|t| **t < first_invoke_at).count();
    let mut first = vec![overhead[0]];
    json!({
        "invocations": n,
        "peak_rss_kib": peak,
        "overhead_us": median(&mut overhead),
        "overhead_p90_us": percentile(&mut overhead, 0.9),
        "first_call_overhead_us": median(&mut first),
        "twilio_connections": connections.len(),
        "connections_opened_during_init": opened_during_init,
        "first_call_connection_opened_during_init":
            connections[first_post.connection - 1] < first_invoke_at,
    })
}

/// The SSM stand-in's own share of a cold start: a GetParameters with decryption on a fresh
/// connection, as the function's first request is (moto checks no signature).
fn ssm_rtt(n: usize, parameter: &str, value: &str, endpoint: &str) -> Value {
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let body = json!({"Names": [parameter], "WithDecryption": true}).to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-amz-json-1.1\r\n\
         x-amz-target: AmazonSSM.GetParameters\r\nx-amz-date: 20261124T000000Z\r\n\
         authorization: AWS4-HMAC-SHA256 Credential=bench/20261124/ap-northeast-1/ssm/aws4_request, \
         SignedHeaders=host;x-amz-date, Signature=00\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let mut stream = TcpStream::connect(addr).expect("connect to the SSM stand-in");
        stream.set_nodelay(true).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, v)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let mut response = vec![0; length];
        reader.read_exact(&mut response).unwrap();
        times.push(micros(start.elapsed()));
        let response = String::from_utf8_lossy(&response);
        assert!(
            status.contains(" 200 ") && response.contains(value),
            "GetParameters failed: {status} {response}"
        );
    }
    json!({"requests": n, "rtt_us": median(&mut times)})
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args
        .iter()
        .position(|a| a == "--")
        .expect("usage: lambda-harness MODE N EVENT EXPECT -- CMD...");
    let (head, cmd) = (&args[..split], &args[split + 1..]);
    let [mode, n, event_path, expect] = head else {
        panic!("usage: lambda-harness MODE N EVENT EXPECT -- CMD...");
    };
    let n: usize = n.parse().expect("N is a count");
    if mode == "ssm-rtt" {
        println!("{}", ssm_rtt(n, event_path, expect, &cmd[0]));
        return;
    }
    let event = std::fs::read(event_path).unwrap_or_else(|e| panic!("{event_path}: {e}"));
    let log_path = std::env::var("BENCH_LOG").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join("lambda-harness.log")
            .display()
            .to_string()
    });
    let result = match mode.as_str() {
        "cold" => cold(n, &event, expect, cmd, &log_path, false),
        "cold-outbound" => cold(n, &event, expect, cmd, &log_path, true),
        "rss" => rss(n, &event, expect, cmd, &log_path),
        "outbound" => outbound(n, &event, expect, cmd, &log_path),
        other => panic!("unknown mode {other}"),
    };
    println!("{result}");
}

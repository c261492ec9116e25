//! Warm per-webhook CPU: what one Twilio webhook costs once the function is warm, the same work
//! `bench/python_peer/warm.py` times in twilio-python. `make bench` reads the medians from
//! target/criterion.

use std::borrow::Cow;
use std::hint::black_box;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use criterion::{Criterion, criterion_group, criterion_main};
use incoming_call::config::Config;
use incoming_call::flow::{Call, Links};
use incoming_call::webhook::{App, handle};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use twilio_voice::credentials::AuthToken;
use twilio_voice::signature::{self, Payload};

/// The documented development token; events/incoming-call.json is signed with it.
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const URL: &str = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.ap-northeast-1.on.aws/voice";

/// The app on `flow_file` (from the repository root). `bench/call-flow.json` is the flow the
/// Python peer renders too (a greeting and a menu); `.ci/dev/call-flow.json` is the office flow
/// with a schedule and holidays.
fn start(rt: &tokio::runtime::Runtime, flow_file: &str) -> App {
    let flow =
        std::fs::read_to_string(test_support::repo_root().join(flow_file)).expect("a call flow");
    let vars = [
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/twilio/auth-token"),
        ("CALL_FLOW", flow.as_str()),
    ];
    let config = Config::from_lookup(test_support::vars(&vars)).unwrap();
    let ssm = test_support::ssm_with(&[("/twilio/auth-token", TOKEN)]);
    // A fixed instant inside the flow's open hours, so every run measures the same branch (the
    // handler still reads the clock once per call, as in production).
    let open: i64 = 1_799_802_000; // Wednesday 2027-01-13 10:00 JST
    rt.block_on(App::init_with_clock(
        config,
        ssm,
        std::sync::Arc::new(move || open),
    ))
    .expect("app starts")
}

fn webhook(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let app = start(&rt, "bench/call-flow.json");
    let office = start(&rt, ".ci/dev/call-flow.json");
    let event: ApiGatewayV2httpRequest = test_support::event("incoming-call.json");

    // Sanity: the event is answered with the flow's TwiML, or the figure means nothing.
    let answer = rt.block_on(handle(event.clone(), &app));
    assert_eq!(answer.status_code, 200, "{:?}", answer.body);
    if let Ok(path) = std::env::var("BENCH_TWIML_OUT") {
        let Some(lambda_http::aws_lambda_events::encodings::Body::Text(xml)) = &answer.body else {
            panic!("TwiML expected");
        };
        std::fs::write(path, xml).unwrap();
    }

    // The handler takes the event by value, so each run gets a clone; the clone is timed too
    // (`event_clone` shows its share), because batched clones measure cold caches instead.
    c.bench_function("webhook_handle", |b| {
        b.iter(|| rt.block_on(handle(black_box(&event).clone(), &app)))
    });
    c.bench_function("event_clone", |b| b.iter(|| black_box(&event).clone()));

    let body = event.body.clone().expect("a form body");
    // Function URLs deliver form bodies base64-encoded.
    let body = if event.is_base64_encoded {
        String::from_utf8(BASE64.decode(body).unwrap()).unwrap()
    } else {
        body
    };
    let params: Vec<(Cow<str>, Cow<str>)> = form_pairs(&body);
    let signature = event.headers["x-twilio-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let token = AuthToken::new(TOKEN.to_owned());
    signature::validate(URL, Payload::Params(&params), Some(&signature), [&token]).unwrap();
    c.bench_function("signature_validate", |b| {
        b.iter(|| {
            signature::validate(
                black_box(URL),
                Payload::Params(black_box(&params)),
                Some(black_box(&signature)),
                [&token],
            )
        })
    });

    let links = Links {
        base: URL.trim_end_matches("/voice").to_owned(),
    };
    let flow = rt.block_on(app.flows.get()).expect("a flow");
    // As the handler does it: the routing is decided (number, schedule branch, clock read
    // once), then the answer is rendered once per base URL and branch, then reused.
    c.bench_function("twiml_render", |b| {
        b.iter(|| {
            let entry = flow.entry(&Call {
                from: Some("+81312345678"),
                to: Some("+81501234567"),
                now: (app.clock)(),
            });
            app.answers
                .answer(black_box(&flow), entry, black_box(&links))
        })
    });
    // The same with the office flow: the schedule (hours, holidays, closed days) decides the
    // branch on every call before the cached answer is taken.
    let office_flow = rt.block_on(office.flows.get()).expect("a flow");
    c.bench_function("twiml_render_office", |b| {
        b.iter(|| {
            let entry = office_flow.entry(&Call {
                from: Some("+81312345678"),
                to: Some("+81501234567"),
                now: (office.clock)(),
            });
            office
                .answers
                .answer(black_box(&office_flow), entry, black_box(&links))
        })
    });
    // Building and rendering the answer from the flow, as the first call does.
    let entry = flow.entry(&Call {
        from: None,
        to: None,
        now: 0,
    });
    c.bench_function("twiml_render_uncached", |b| {
        b.iter(|| {
            black_box(&flow)
                .answer(entry, None, black_box(&links))
                .to_xml()
        })
    });
}

fn form_pairs(body: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
        .collect()
}

criterion_group!(benches, webhook);
criterion_main!(benches);

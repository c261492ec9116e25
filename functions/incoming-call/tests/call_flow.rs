//! Call flow II through signed webhooks: schedule, screened forwards, the hunt, nested menus,
//! reject, anonymous callers and per-number flows. The clock is injected; nothing sleeps.

use std::sync::Arc;

use incoming_call::config::Config;
use incoming_call::webhook::{App, handle};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::aws_lambda_events::encodings::Body;
use lambda_http::http::HeaderValue;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const HOST: &str = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.ap-northeast-1.on.aws";

const OFFICE: &str = r#"{
  "language": "ja-JP", "voice": "Polly.Mizuki",
  "greeting": "お電話ありがとうございます。",
  "recording_notice": "この通話は録音されます。",
  "reject": ["+1900"],
  "anonymous": {"message": "非通知のお電話はお受けできません。"},
  "schedule": {
    "hours": {"mon": "09:00-18:00", "tue": "09:00-18:00", "wed": "09:00-18:00",
              "thu": "09:00-18:00", "fri": "09:00-18:00"},
    "closed": ["2026-12-29..2027-01-03"],
    "open": {"menu": {"prompt": "営業は1を、サポートは2を押してください。", "options": {
      "1": {"forward": {"numbers": ["+81312345678", "+81312345679"], "fallback": {"max_length": 60}}},
      "2": {"menu": {"prompt": "製品Aは1を、製品Bは2を、前のメニューは9を押してください。", "back": "9",
        "options": {"1": {"message": "製品Aのサポートです。"}, "2": {"voicemail": {}}}}}}}},
    "after_hours": {"message": "本日の営業は終了しました。"},
    "holiday": {"message": "本日は休業日です。"}
  },
  "numbers": {"+81501234568": {"then": {"message": "こちらは別の番号です。"}}}
}"#;

/// Unix seconds of a Japan-time wall clock reading.
fn jst(y: i32, mo: u8, d: u8, h: u8) -> i64 {
    let days = {
        // days from civil (Howard Hinnant), for the test only
        let y = if mo <= 2 { y - 1 } else { y } as i64;
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = mo as i64;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146097 + doe - 719468
    };
    days * 86400 + h as i64 * 3600 - 9 * 3600
}

/// Tuesday 2027-01-12 10:00 JST: open.
fn open_hours() -> i64 {
    jst(2027, 1, 12, 10)
}

async fn office(now: i64) -> App {
    let config = Config::from_lookup(test_support::vars(&[
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/token"),
        ("CALL_FLOW", OFFICE),
    ]))
    .unwrap();
    App::init_with_clock(
        config,
        test_support::ssm_with(&[("/token", TOKEN)]),
        Arc::new(move || now),
    )
    .await
    .unwrap()
}

/// A webhook Twilio signed for `path_and_query`, with the call's parameters plus `extra`.
fn webhook(path_and_query: &str, extra: &[(&str, &str)]) -> ApiGatewayV2httpRequest {
    let mut params: Vec<(String, String)> = [
        ("CallSid", "CA00000000000000000000000000000009"),
        ("From", "+81312340000"),
        ("To", "+81501234567"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        params.retain(|(name, _)| name != k);
        params.push((k.to_string(), v.to_string()));
    }
    test_support::signed_webhook(&format!("{HOST}{path_and_query}"), &params, TOKEN)
}

async fn twiml(app: &App, path_and_query: &str, extra: &[(&str, &str)]) -> String {
    let response = handle(webhook(path_and_query, extra), app).await;
    let body = match &response.body {
        Some(Body::Text(t)) => t.clone(),
        _ => String::new(),
    };
    assert_eq!(response.status_code, 200, "{path_and_query}: {body}");
    body
}

#[tokio::test]
async fn the_schedule_routes_open_after_hours_holidays_and_closed_ranges() {
    for (what, now, expect) in [
        ("open", open_hours(), "営業は1を"),
        (
            "after hours",
            jst(2027, 1, 12, 19),
            "本日の営業は終了しました。",
        ),
        (
            "before opening",
            jst(2027, 1, 12, 8),
            "本日の営業は終了しました。",
        ),
        (
            "Saturday",
            jst(2027, 1, 16, 10),
            "本日の営業は終了しました。",
        ),
        ("成人の日 2027", jst(2027, 1, 11, 10), "本日は休業日です。"),
        (
            "春分の日 substitute 2027",
            jst(2027, 3, 22, 10),
            "本日は休業日です。",
        ),
        (
            "スポーツの日 2027",
            jst(2027, 10, 11, 10),
            "本日は休業日です。",
        ),
        (
            "New Year range, first day",
            jst(2026, 12, 29, 10),
            "本日は休業日です。",
        ),
        (
            "New Year range, Jan 1",
            jst(2027, 1, 1, 10),
            "本日は休業日です。",
        ),
        ("after the range", jst(2027, 1, 4, 10), "営業は1を"),
    ] {
        let xml = twiml(&office(now).await, "/voice", &[]).await;
        assert!(xml.contains(expect), "{what}: {xml}");
        assert!(
            xml.contains("お電話ありがとうございます。"),
            "{what}: {xml}"
        );
    }
}

#[tokio::test]
async fn a_forward_is_screened_and_the_callee_must_press_1() {
    let app = office(open_hours()).await;
    let xml = twiml(&app, "/menu?at=0o&tries=0", &[("Digits", "1")]).await;
    let screen = format!("{HOST}/screen?at=0o1&amp;from=%2B81312340000");
    assert!(xml.contains(&format!(r#"<Dial answerOnBridge="true" timeout="20" action="{HOST}/dial-result?at=0o1&amp;n=0" method="POST" timeLimit="3600"><Number url="{screen}" method="POST">+81312345678</Number></Dial>"#)), "{xml}");

    // The callee's leg: who is calling, digit by digit, and "press 1", with a bounded wait.
    let whisper = twiml(
        &app,
        "/screen?at=0o1&from=%2B81312340000",
        &[("From", "+81501234567"), ("To", "+81312345678")],
    )
    .await;
    assert!(
        whisper.contains(r#"<Gather input="dtmf" action=""#),
        "{whisper}"
    );
    assert!(
        whisper.contains(r#"timeout="8" numDigits="1""#),
        "{whisper}"
    );
    assert!(whisper.contains(r#"お電話です。<say-as interpret-as="telephone">0312340000</say-as>からです。1を押すと応答します。</Say></Gather><Hangup/>"#), "{whisper}");
    let withheld = twiml(&app, "/screen?at=0o1&from=withheld", &[]).await;
    assert!(
        withheld.contains("お電話です。非通知です。1を押すと応答します。"),
        "{withheld}"
    );

    // Accepted: an empty document connects. Refused or silent: the leg hangs up.
    let accepted = twiml(&app, "/screen-result", &[("Digits", "1")]).await;
    assert!(accepted.ends_with("<Response/>"), "{accepted}");
    for refused in [vec![("Digits", "2")], vec![("Digits", "#")], vec![]] {
        let xml = twiml(&app, "/screen-result", &refused).await;
        assert!(
            xml.ends_with("<Response><Hangup/></Response>"),
            "{refused:?}: {xml}"
        );
    }
}

#[tokio::test]
async fn a_screened_out_leg_hunts_on_then_reaches_the_voicemail_fallback() {
    let app = office(open_hours()).await;
    // The first number's carrier voicemail answered but never pressed 1: not bridged.
    let next = twiml(
        &app,
        "/dial-result?at=0o1&n=0",
        &[("DialCallStatus", "completed"), ("DialBridged", "false")],
    )
    .await;
    assert!(
        next.contains(&format!(r#"action="{HOST}/dial-result?at=0o1&amp;n=1""#)),
        "{next}"
    );
    assert!(next.contains(">+81312345679</Number>"), "{next}");
    let unanswered = twiml(
        &app,
        "/dial-result?at=0o1&n=0",
        &[("DialCallStatus", "no-answer")],
    )
    .await;
    assert!(
        unanswered.contains(">+81312345679</Number>"),
        "{unanswered}"
    );
    // "completed" without a word on bridging is not taken as answered on a screened forward:
    // that reading is the defect that lost callers' messages to carrier voicemail.
    let unsaid = twiml(
        &app,
        "/dial-result?at=0o1&n=0",
        &[("DialCallStatus", "completed")],
    )
    .await;
    assert!(unsaid.contains(">+81312345679</Number>"), "{unsaid}");

    // The last number declined too: the recording notice, then the voicemail.
    let fallback = twiml(
        &app,
        "/dial-result?at=0o1&n=1",
        &[("DialCallStatus", "completed"), ("DialBridged", "false")],
    )
    .await;
    assert!(fallback.contains(r#"<Say language="ja-JP" voice="Polly.Mizuki">この通話は録音されます。</Say><Say language="ja-JP" voice="Polly.Mizuki">発信音のあとに"#), "{fallback}");
    assert!(fallback.contains(&format!(r##"<Record action="{HOST}/voicemail?at=0o1" method="POST" maxLength="60" finishOnKey="#" playBeep="true"/><Hangup/>"##)), "{fallback}");
    let done = twiml(&app, "/voicemail?at=0o1", &[("RecordingSid", "RE1")]).await;
    assert!(
        done.contains("ありがとうございました。失礼いたします。</Say><Hangup/>"),
        "{done}"
    );

    // Someone took the call (screened in, connected): nothing more for the caller.
    let answered = twiml(
        &app,
        "/dial-result?at=0o1&n=0",
        &[("DialCallStatus", "completed"), ("DialBridged", "true")],
    )
    .await;
    assert!(
        answered.ends_with("<Response><Hangup/></Response>"),
        "{answered}"
    );
}

#[tokio::test]
async fn nested_menus_repeat_go_back_and_give_up_politely() {
    let app = office(open_hours()).await;
    let sub = twiml(&app, "/menu?at=0o&tries=0", &[("Digits", "2")]).await;
    assert!(
        sub.contains(&format!(r#"action="{HOST}/menu?at=0o2&amp;tries=0""#)),
        "{sub}"
    );
    assert!(sub.contains("製品Aは1を"), "{sub}");
    let repeat = twiml(&app, "/menu?at=0o2&tries=1", &[("Digits", "*")]).await;
    assert!(
        repeat.contains(&format!(r#"action="{HOST}/menu?at=0o2&amp;tries=1""#))
            && repeat.contains("製品Aは1を"),
        "{repeat}"
    );
    let back = twiml(&app, "/menu?at=0o2&tries=0", &[("Digits", "9")]).await;
    assert!(
        back.contains(&format!(r#"action="{HOST}/menu?at=0o&amp;tries=0""#))
            && back.contains("営業は1を"),
        "{back}"
    );
    let leaf = twiml(&app, "/menu?at=0o2&tries=0", &[("Digits", "1")]).await;
    assert!(
        leaf.contains("製品Aのサポートです。</Say><Hangup/>"),
        "{leaf}"
    );
    // The top menu has no back key: 9 is just invalid there.
    let invalid = twiml(&app, "/menu?at=0o&tries=0", &[("Digits", "9")]).await;
    assert!(
        invalid.contains("その番号は選択できません。</Say><Gather") && invalid.contains("tries=1"),
        "{invalid}"
    );
    let silent = twiml(&app, "/menu?at=0o&tries=1", &[]).await;
    assert!(
        silent.contains("選択が確認できませんでした。</Say><Gather") && silent.contains("tries=2"),
        "{silent}"
    );
    let bye = twiml(&app, "/menu?at=0o&tries=2", &[("Digits", "7")]).await;
    assert!(
        bye.contains("改めておかけ直しください。失礼いたします。</Say><Hangup/>")
            && !bye.contains("<Gather"),
        "{bye}"
    );
}

#[tokio::test]
async fn rejected_callers_get_reject_and_nothing_else() {
    let app = office(open_hours()).await;
    let xml = twiml(&app, "/voice", &[("From", "+19005550123")]).await;
    assert_eq!(
        xml,
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="rejected"/></Response>"#
    );
}

#[tokio::test]
async fn anonymous_callers_and_other_numbers_have_their_own_flows() {
    let app = office(open_hours()).await;
    for from in [
        "anonymous",
        "Anonymous",
        "Restricted",
        "+266696687",
        "+86282452253",
        "",
    ] {
        let xml = twiml(&app, "/voice", &[("From", from)]).await;
        assert!(
            xml.contains("非通知のお電話はお受けできません。"),
            "{from:?}: {xml}"
        );
    }
    let other = twiml(&app, "/voice", &[("To", "+81501234568")]).await;
    assert!(
        other.contains(
            r#"<Say language="ja-JP" voice="Polly.Mizuki">こちらは別の番号です。</Say><Hangup/>"#
        ),
        "{other}"
    );
    // The cached answer of one number is not served for the other.
    let main = twiml(&app, "/voice", &[]).await;
    assert!(main.contains("営業は1を"), "{main}");
}

#[tokio::test]
async fn unsigned_or_malformed_requests_never_reach_ssm() {
    let rule = test_support::ssm_rule(&[("/token", TOKEN)]);
    let config = Config::from_lookup(test_support::vars(&[(
        "TWILIO_AUTH_TOKEN_PARAMETER",
        "/token",
    )]))
    .unwrap();
    let app = App::init(config, test_support::mock_ssm(&[&rule]))
        .await
        .unwrap();
    assert_eq!(rule.num_calls(), 1, "the start-up read");
    // Expired, so that a request reaching the token store would read SSM again.
    tokio::time::pause();
    tokio::time::advance(std::time::Duration::from_secs(3600)).await;
    for i in 0..200 {
        let mut e = webhook("/voice", &[]);
        match i % 4 {
            0 => {
                e.headers.remove("x-twilio-signature");
            }
            1 => {
                e.headers
                    .insert("x-twilio-signature", HeaderValue::from_static("AAAA"));
            }
            2 => {
                e.headers.insert(
                    "x-twilio-signature",
                    HeaderValue::from_static("not base64 but 28 chars long"),
                );
            }
            _ => {
                e.headers
                    .insert("x-twilio-signature", HeaderValue::from_static(""));
            }
        }
        assert_eq!(handle(e, &app).await.status_code, 403);
    }
    assert_eq!(
        rule.num_calls(),
        1,
        "no SSM read for unsigned or malformed requests"
    );
    // A well-formed signature does reach it (the count can move at all).
    let _ = handle(webhook("/voice", &[]), &app).await;
    assert_eq!(rule.num_calls(), 2);
}

#[tokio::test]
async fn flow_errors_name_the_path_of_the_field() {
    let vars = |flow: &'static str| {
        Config::from_lookup(test_support::vars(&[
            ("TWILIO_AUTH_TOKEN_PARAMETER", "/token"),
            ("CALL_FLOW", flow),
        ]))
        .unwrap()
    };
    for (flow, path) in [
        (
            r#"{"then": {"menu": {"prompt": "p", "options": {"1": {"forward": {"numbers": ["090-1234"]}}}}}}"#,
            "then.menu.options.1.forward.numbers[0]",
        ),
        (
            r#"{"then": {"menu": {"prompt": "p", "options": {"1": {"menu": {"prompt": "q", "options": {"2": {"menu": {"prompt": "r", "options": {"3": {"menu": {"prompt": "s", "options": {"1": {"hangup": {}}}}}}}}}}}}}}}"#,
            "then.menu.options.1.menu.options.2.menu.options.3.menu",
        ),
        (r#"{"voice": "Polly.Mizki"}"#, "voice"),
        (
            r#"{"then": {"voicemail": {"max_length": 601}}}"#,
            "then.voicemail.max_length",
        ),
        (
            r#"{"then": {"forward": {"number": "+81312345678", "time_limit": 14401}}}"#,
            "then.forward.time_limit",
        ),
        (
            r#"{"then": {"menu": {"prompt": "p", "options": {"1": {"reject": {}}}}}}"#,
            "then.menu.options.1.reject",
        ),
        (
            r#"{"schedule": {"hours": {"mon": "9-18"}, "open": {"hangup": {}}, "after_hours": {"hangup": {}}}}"#,
            "schedule.hours.mon",
        ),
        (
            r#"{"numbers": {"+81501234568": {"then": {"forward": {"number": "+81312345678", "fallback": {"prompt": " "}}}}}}"#,
            // The number in the path is masked: start-up errors are logged.
            "numbers.+81*******68.then.forward.fallback.prompt",
        ),
    ] {
        let err = App::init(vars(flow), test_support::ssm_with(&[("/token", TOKEN)]))
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(path), "{path}: {err}");
    }
    // The escape hatch for a voice newer than the list.
    let ok = App::init(
        vars(r#"{"voice": "Polly.Mizki", "extra_voices": ["Polly.Mizki"]}"#),
        test_support::ssm_with(&[("/token", TOKEN)]),
    )
    .await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn a_flow_parameter_ssm_cannot_read_at_start_up_answers_503_not_a_crash() {
    let token = test_support::ssm_rule(&[("/token", TOKEN)]);
    let denied = aws_smithy_mocks::mock!(aws_sdk_ssm::Client::get_parameters)
        .match_requests(|r| r.names().iter().any(|n| n == "/flow"))
        .then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
                aws_smithy_types::body::SdkBody::from(
                    r#"{"__type":"ThrottlingException","message":"slow down"}"#,
                ),
            )
        });
    let config = Config::from_lookup(test_support::vars(&[
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/token"),
        ("CALL_FLOW_PARAMETER", "/flow"),
    ]))
    .unwrap();
    let app = App::init(config, test_support::mock_ssm(&[&denied, &token]))
        .await
        .expect("starts");
    let response = handle(webhook("/voice", &[]), &app).await;
    assert_eq!(response.status_code, 503);
}

#[test]
fn the_readme_example_is_the_dev_flow_and_it_parses() {
    let root = test_support::repo_root();
    let dev = std::fs::read_to_string(root.join(".ci/dev/call-flow.json")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let chapter = &readme[readme.find("### The call flow").expect("the chapter")..];
    let start = chapter.find("```json\n").expect("an example") + "```json\n".len();
    let example = &chapter[start..start + chapter[start..].find("```").unwrap()];
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    assert_eq!(
        parse(example),
        parse(&dev),
        "README example and .ci/dev/call-flow.json differ"
    );
    incoming_call::flow::CallFlow::from_json(&dev).expect("the dev flow is valid");
}

#[tokio::test]
async fn start_up_warns_when_the_holiday_table_is_behind_the_year() {
    let (capture, _guard) = test_support::LogCapture::install(tracing::Level::INFO);
    let last = incoming_call::holidays::LAST_YEAR;
    let _ = office(jst(last, 12, 31, 23)).await;
    assert!(
        !capture.text().contains("holiday table"),
        "{}",
        capture.text()
    );
    let _ = office(jst(last + 1, 1, 1, 0)).await;
    assert!(
        capture
            .text()
            .contains("holiday table ends before this year"),
        "{}",
        capture.text()
    );
}

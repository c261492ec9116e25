//! The handler driven by the Function URL events in `events/`, with SSM as aws-smithy-mocks or
//! the real SDK on `moto_server`.

use aws_sdk_ssm::Client;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use incoming_call::config::Config;
use incoming_call::webhook::{App, handle};
use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::aws_lambda_events::encodings::Body;
use lambda_http::http::HeaderValue;
use std::borrow::Cow;
use twilio_voice::credentials::AuthToken;
use twilio_voice::signature;

/// The documented test token the events in `events/` are signed with.
const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const HOST: &str = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.ap-northeast-1.on.aws";

fn event(name: &str) -> ApiGatewayV2httpRequest {
    test_support::event(name)
}

use test_support::ssm_with;

async fn app_with(vars: &[(&str, &str)], ssm: Client) -> App {
    let mut all = vec![("TWILIO_AUTH_TOKEN_PARAMETER", "/twilio/auth-token")];
    all.extend_from_slice(vars);
    let config = Config::from_lookup(test_support::vars(&all)).unwrap();
    App::init(config, ssm).await.expect("app starts")
}

async fn app(vars: &[(&str, &str)]) -> App {
    app_with(vars, ssm_with(&[("/twilio/auth-token", TOKEN)])).await
}

fn text(response: &ApiGatewayV2httpResponse) -> &str {
    match &response.body {
        Some(Body::Text(t)) => t,
        None => "",
        other => panic!("unexpected body {other:?}"),
    }
}

fn content_type(response: &ApiGatewayV2httpResponse) -> &str {
    response
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn assert_forbidden(response: &ApiGatewayV2httpResponse) {
    assert_eq!(response.status_code, 403, "{}", text(response));
    assert!(
        !text(response).contains("<Response"),
        "no TwiML on a rejection"
    );
}

fn set_body(event: &mut ApiGatewayV2httpRequest, form: &str) {
    event.body = Some(BASE64.encode(form));
}

fn body_form(event: &ApiGatewayV2httpRequest) -> String {
    String::from_utf8(BASE64.decode(event.body.as_deref().unwrap()).unwrap()).unwrap()
}

const MENU_FLOW: &str = r#"{"language": "ja-JP", "voice": "Polly.Mizuki", "greeting": "お電話ありがとうございます。",
    "then": {"menu": {"prompt": "担当者におつなぎする場合は1を押してください。",
    "options": {"1": {"forward": {"number": "+81312345678", "fallback": {}}}}}}}"#;

#[tokio::test]
async fn signed_answer_event_gets_twiml() {
    let response = handle(event("incoming-call.json"), &app(&[]).await).await;
    assert_eq!(response.status_code, 200, "{}", text(&response));
    assert_eq!(content_type(&response), "text/xml; charset=utf-8");
    let xml = text(&response);
    assert!(
        xml.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say"#),
        "{xml}"
    );
    assert!(
        xml.contains("<Play>https://demo.twilio.com/docs/classic.mp3</Play>"),
        "{xml}"
    );
}

#[tokio::test]
async fn configured_japanese_flow_answers_and_routes_the_menu() {
    let app = app(&[("CALL_FLOW", MENU_FLOW)]).await;
    let answer = handle(event("incoming-call.json"), &app).await;
    let xml = text(&answer);
    assert!(
        xml.contains(
            r#"<Say language="ja-JP" voice="Polly.Mizuki">お電話ありがとうございます。</Say>"#
        ),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            r#"<Gather input="dtmf" action="{HOST}/menu?at=0m&amp;tries=0""#
        )),
        "{xml}"
    );

    let menu = handle(event("incoming-call-menu.json"), &app).await;
    assert_eq!(menu.status_code, 200);
    let xml = text(&menu);
    assert!(xml.contains(&format!(r#"<Dial answerOnBridge="true" timeout="20" action="{HOST}/dial-result?at=0m1&amp;n=0" method="POST" timeLimit="3600"><Number url="{HOST}/screen?at=0m1&amp;from=%2B81312345678" method="POST">+81312345678</Number></Dial>"#)), "{xml}");
}

#[tokio::test]
async fn status_callback_is_acknowledged_with_204() {
    let response = handle(event("incoming-call-status.json"), &app(&[]).await).await;
    assert_eq!(response.status_code, 204);
    assert!(response.body.is_none());
}

#[tokio::test]
async fn any_change_to_url_params_or_signature_is_refused() {
    let app = app(&[]).await;

    let mut e = event("incoming-call.json");
    e.raw_query_string = Some("x=1".into());
    assert_forbidden(&handle(e, &app).await);

    let mut e = event("incoming-call.json");
    e.raw_path = Some("/".into());
    assert_forbidden(&handle(e, &app).await);

    let mut e = event("incoming-call.json");
    e.headers
        .insert("host", HeaderValue::from_static("attacker.example.com"));
    assert_forbidden(&handle(e, &app).await);

    let mut e = event("incoming-call.json");
    let form = body_form(&e).replace("From=%2B81312345678", "From=%2B81300000000");
    set_body(&mut e, &form);
    assert_forbidden(&handle(e, &app).await);

    let mut e = event("incoming-call.json");
    let form = body_form(&e) + "&Digits=9";
    set_body(&mut e, &form);
    assert_forbidden(&handle(e, &app).await);

    let mut e = event("incoming-call.json");
    e.headers.insert(
        "x-twilio-signature",
        HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    );
    assert_forbidden(&handle(e, &app).await);

    let mut e = event("incoming-call.json");
    e.headers.remove("x-twilio-signature");
    assert_forbidden(&handle(e, &app).await);

    let mut e = event("incoming-call.json");
    let sig = e.headers.get("x-twilio-signature").unwrap().clone();
    e.headers.append("x-twilio-signature", sig);
    assert_forbidden(&handle(e, &app).await);
}

#[tokio::test]
async fn malformed_requests_get_4xx_without_twiml() {
    let app = app(&[]).await;
    let mut e = event("incoming-call.json");
    e.body = Some("%%%not base64%%%".into());
    assert_eq!(handle(e, &app).await.status_code, 400);

    let mut e = event("incoming-call.json");
    e.body = Some(BASE64.encode(vec![0xff, 0xfe, 0x00]));
    assert_eq!(handle(e, &app).await.status_code, 400);

    let mut e = event("incoming-call.json");
    set_body(&mut e, &"A=b&".repeat(20_000));
    assert_eq!(handle(e, &app).await.status_code, 413);

    let mut e = event("incoming-call.json");
    e.raw_path = Some("/admin".into());
    assert_eq!(handle(e, &app).await.status_code, 404);

    let mut e = event("incoming-call.json");
    e.request_context.http.method = lambda_http::http::Method::DELETE;
    assert_eq!(handle(e, &app).await.status_code, 405);

    let mut e = event("incoming-call.json");
    e.headers.remove("host");
    e.request_context.domain_name = None;
    assert_eq!(handle(e, &app).await.status_code, 400);
}

#[tokio::test]
async fn previous_token_validates_during_rotation() {
    let ssm = ssm_with(&[
        ("/twilio/auth-token", "a-brand-new-token"),
        ("/twilio/previous", TOKEN),
    ]);
    let app = app_with(
        &[("TWILIO_PREVIOUS_AUTH_TOKEN_PARAMETER", "/twilio/previous")],
        ssm,
    )
    .await;
    assert_eq!(
        handle(event("incoming-call.json"), &app).await.status_code,
        200
    );

    let ssm = ssm_with(&[("/twilio/auth-token", "a-brand-new-token")]);
    let app = app_with(&[], ssm).await;
    assert_forbidden(&handle(event("incoming-call.json"), &app).await);
}

#[tokio::test]
async fn get_webhooks_sign_the_query_string() {
    let app = app(&[("CALL_FLOW", MENU_FLOW)]).await;
    // A number's voice URL may be set to GET: the call's parameters come in the signed query.
    let query = "CallSid=CA1&From=%2B81312345678&To=%2B81501234567";
    let url = format!("{HOST}/voice?{query}");
    let mut e = event("incoming-call.json");
    e.request_context.http.method = lambda_http::http::Method::GET;
    e.body = None;
    e.raw_query_string = Some(query.into());
    let sig = signature::sign(&url, &[], &AuthToken::new(TOKEN));
    e.headers
        .insert("x-twilio-signature", HeaderValue::from_str(&sig).unwrap());
    let response = handle(e.clone(), &app).await;
    assert_eq!(response.status_code, 200, "{}", text(&response));
    assert!(text(&response).contains("<Gather"), "{}", text(&response));

    e.raw_query_string = Some(query.replace("CA1", "CA2"));
    assert_forbidden(&handle(e, &app).await);
}

#[tokio::test]
async fn json_bodies_are_covered_by_body_sha256() {
    let app = app(&[]).await;
    let body = r#"{"CallSid": "CA1"}"#;
    let query = format!("bodySHA256={}", signature::body_sha256(body.as_bytes()));
    let sig = signature::sign(
        &format!("{HOST}/voice?{query}"),
        &[],
        &AuthToken::new(TOKEN),
    );
    let mut e = event("incoming-call.json");
    e.headers
        .insert("content-type", HeaderValue::from_static("application/json"));
    e.headers
        .insert("x-twilio-signature", HeaderValue::from_str(&sig).unwrap());
    e.raw_query_string = Some(query);
    e.body = Some(body.into());
    e.is_base64_encoded = false;
    assert_eq!(handle(e.clone(), &app).await.status_code, 200);
    e.body = Some(r#"{"CallSid": "CA2"}"#.into());
    assert_forbidden(&handle(e, &app).await);
}

#[tokio::test]
async fn public_base_url_replaces_the_function_url_host() {
    let app = app(&[("PUBLIC_BASE_URL", "https://voice.example.com")]).await;
    // Signed for the Function URL host: refused, because Twilio calls the custom domain.
    assert_forbidden(&handle(event("incoming-call.json"), &app).await);

    let mut e = event("incoming-call.json");
    let params: Vec<(Cow<'_, str>, Cow<'_, str>)> =
        form_urlencoded::parse(body_form(&e).as_bytes())
            .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
            .collect();
    let sig = signature::sign(
        "https://voice.example.com/voice",
        &params,
        &AuthToken::new(TOKEN),
    );
    e.headers
        .insert("x-twilio-signature", HeaderValue::from_str(&sig).unwrap());
    assert_eq!(handle(e, &app).await.status_code, 200);
}

#[tokio::test]
async fn credentials_unavailable_fails_closed_with_503() {
    let rule = mock!(Client::get_parameters).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
            aws_smithy_types::body::SdkBody::from(
                r#"{"__type":"AccessDeniedException","message":"denied"}"#,
            ),
        )
    });
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&rule]);
    let app = app_with(&[], ssm).await;
    let response = handle(event("incoming-call.json"), &app).await;
    assert_eq!(response.status_code, 503);
    assert!(!text(&response).contains("<Response"));
}

#[tokio::test]
async fn missing_parameters_or_bad_flows_stop_the_start() {
    let config = Config::from_lookup(test_support::vars(&[(
        "TWILIO_AUTH_TOKEN_PARAMETER",
        "/nope",
    )]))
    .unwrap();
    let err = App::init(config, ssm_with(&[]))
        .await
        .err()
        .expect("fails")
        .to_string();
    assert!(err.contains("/nope"), "{err}");

    let vars = [
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/twilio/auth-token"),
        ("CALL_FLOW", r#"{"then": {"forward": {}}}"#),
    ];
    let config = Config::from_lookup(test_support::vars(&vars)).unwrap();
    let err = App::init(config, ssm_with(&[("/twilio/auth-token", TOKEN)]))
        .await
        .err()
        .expect("fails")
        .to_string();
    assert!(err.contains("call flow") && err.contains("number"), "{err}");
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn token_and_flow_read_from_moto_server() {
    let moto = test_support::moto_server();
    let ssm = test_support::ssm_client(&moto.url()).await;
    test_support::put_secure(&ssm, "/twilio/auth-token", TOKEN).await;
    test_support::put_secure(&ssm, "/twilio/call-flow", MENU_FLOW).await;
    let app = app_with(&[("CALL_FLOW_PARAMETER", "/twilio/call-flow")], ssm).await;
    let response = handle(event("incoming-call-menu.json"), &app).await;
    assert_eq!(response.status_code, 200, "{}", text(&response));
    assert!(
        text(&response).contains("+81312345678</Number></Dial>"),
        "{}",
        text(&response)
    );
}

#[tokio::test]
async fn the_sample_events_drive_the_dev_flow_through_screening() {
    let dev =
        std::fs::read_to_string(test_support::repo_root().join(".ci/dev/call-flow.json")).unwrap();
    let app = app(&[("CALL_FLOW", dev.as_str())]).await;
    // The second sales number's leg was answered by a carrier voicemail that never pressed 1.
    let response = handle(event("incoming-call-dial-result.json"), &app).await;
    let xml = text(&response);
    assert_eq!(response.status_code, 200, "{xml}");
    assert!(
        xml.contains("この通話は品質向上のため録音させていただきます。</Say>"),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(r#"<Record action="{HOST}/voicemail?at=0o1""#)),
        "{xml}"
    );
    // The callee pressed 1: connected.
    let response = handle(event("incoming-call-screen-result.json"), &app).await;
    assert!(
        text(&response).ends_with("<Response/>"),
        "{}",
        text(&response)
    );
}

/// The flow in SSM is read again after the TTL, so an operator's edit takes effect without a
/// redeploy; an edit that breaks the document, or deletes it, keeps the line answering with the
/// last good flow instead of failing every call.
#[tokio::test(start_paused = true)]
async fn an_edited_flow_is_used_and_a_broken_edit_keeps_the_last_good_one() {
    use std::sync::{Arc, Mutex};
    use twilio_voice::credentials::DEFAULT_TTL;

    let document: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(Some(
        r#"{"language": "ja-JP", "greeting": "はじめの案内です。"}"#.to_owned(),
    )));
    let current = Arc::clone(&document);
    let rule = mock!(aws_sdk_ssm::Client::get_parameters).then_compute_output(move |input| {
        let mut out = aws_sdk_ssm::operation::get_parameters::GetParametersOutput::builder();
        for name in input.names() {
            let value = match name.as_str() {
                "/twilio/auth-token" => Some(TOKEN.to_owned()),
                "/twilio/call-flow" => current.lock().unwrap().clone(),
                _ => None,
            };
            out = match value {
                Some(v) => out.parameters(
                    aws_sdk_ssm::types::Parameter::builder()
                        .name(name)
                        .value(v)
                        .build(),
                ),
                None => out.invalid_parameters(name.clone()),
            };
        }
        out.build()
    });
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::MatchAny, [&rule]);
    let app = app_with(&[("CALL_FLOW_PARAMETER", "/twilio/call-flow")], ssm).await;
    let greeting = |response: &ApiGatewayV2httpResponse| {
        assert_eq!(response.status_code, 200, "{}", text(response));
        let xml = text(response);
        let start = xml.find("<Say").expect("a greeting");
        xml[start..].split('>').nth(1).unwrap_or("").to_owned()
    };
    let first = handle(event("incoming-call.json"), &app).await;
    assert_eq!(greeting(&first), "はじめの案内です。</Say");

    let edit = |doc: Option<&str>| *document.lock().unwrap() = doc.map(str::to_owned);
    let later = DEFAULT_TTL + std::time::Duration::from_secs(1);
    for broken in [Some(r#"{"greting": "typo"}"#), Some("{"), None] {
        edit(broken);
        tokio::time::advance(later).await;
        let response = handle(event("incoming-call.json"), &app).await;
        assert_eq!(
            greeting(&response),
            "はじめの案内です。</Say",
            "after {broken:?}"
        );
    }

    edit(Some(
        r#"{"language": "ja-JP", "greeting": "新しい案内です。"}"#,
    ));
    tokio::time::advance(later).await;
    let response = handle(event("incoming-call.json"), &app).await;
    assert_eq!(greeting(&response), "新しい案内です。</Say");
}

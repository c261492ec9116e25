//! Bad webhooks, one row each: every one gets its status code and never any TwiML.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use incoming_call::config::Config;
use incoming_call::webhook::{App, handle};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::aws_lambda_events::encodings::Body;
use lambda_http::http::{HeaderValue, Method};
use twilio_voice::credentials::AuthToken;
use twilio_voice::signature;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const HOST: &str = "abcdefghijklmnopqrstuvwxyz012345.lambda-url.ap-northeast-1.on.aws";

fn event() -> ApiGatewayV2httpRequest {
    test_support::event("incoming-call.json")
}

fn with(change: impl FnOnce(&mut ApiGatewayV2httpRequest)) -> ApiGatewayV2httpRequest {
    let mut e = event();
    change(&mut e);
    e
}

/// Replaces the body (form) and signs it for `url` the way Twilio would.
fn signed(form: &str, url: &str, token: &str) -> ApiGatewayV2httpRequest {
    with(|e| {
        e.body = Some(BASE64.encode(form));
        let params: Vec<(Cow<'_, str>, Cow<'_, str>)> =
            form_urlencoded::parse(form.as_bytes()).collect();
        let sig = signature::sign(url, &params, &AuthToken::new(token));
        e.headers
            .insert("x-twilio-signature", HeaderValue::from_str(&sig).unwrap());
    })
}

async fn app() -> App {
    let config = Config::from_lookup(test_support::vars(&[(
        "TWILIO_AUTH_TOKEN_PARAMETER",
        "/token",
    )]))
    .unwrap();
    App::init(config, test_support::ssm_with(&[("/token", TOKEN)]))
        .await
        .unwrap()
}

#[tokio::test]
async fn every_bad_webhook_gets_its_status_and_no_twiml() {
    let url = format!("https://{HOST}/voice");
    let json_body = r#"{"CallSid": "CA1"}"#;
    let rows: Vec<(&str, ApiGatewayV2httpRequest, i64)> = vec![
        (
            "body not base64",
            with(|e| e.body = Some("%%%".into())),
            400,
        ),
        (
            "base64 with a bad tail",
            with(|e| e.body = Some("QUJD=A".into())),
            400,
        ),
        (
            "body not UTF-8",
            with(|e| e.body = Some(BASE64.encode([0x43, 0xff, 0x3d]))),
            400,
        ),
        (
            "a 1 MB body",
            with(|e| e.body = Some(BASE64.encode(vec![b'a'; 1 << 20]))),
            413,
        ),
        (
            "a 100 kB plain body",
            with(|e| {
                e.is_base64_encoded = false;
                e.body = Some("A=".repeat(50_000));
            }),
            413,
        ),
        (
            "no signature header",
            with(|e| {
                e.headers.remove("x-twilio-signature");
            }),
            403,
        ),
        (
            "empty signature",
            with(|e| {
                e.headers
                    .insert("x-twilio-signature", HeaderValue::from_static(""));
            }),
            403,
        ),
        (
            "signature not base64",
            with(|e| {
                e.headers
                    .insert("x-twilio-signature", HeaderValue::from_static("not*base64"));
            }),
            403,
        ),
        (
            "signature of the wrong length",
            with(|e| {
                e.headers
                    .insert("x-twilio-signature", HeaderValue::from_static("AAAA"));
            }),
            403,
        ),
        (
            "signature with a space",
            with(|e| {
                let sig = format!(" {}", e.headers["x-twilio-signature"].to_str().unwrap());
                e.headers
                    .insert("x-twilio-signature", HeaderValue::from_str(&sig).unwrap());
            }),
            403,
        ),
        (
            "two signature headers",
            with(|e| {
                let sig = e.headers["x-twilio-signature"].clone();
                e.headers.append("x-twilio-signature", sig);
            }),
            403,
        ),
        (
            "signatures joined with a comma",
            with(|e| {
                let sig = e.headers["x-twilio-signature"].to_str().unwrap().to_owned();
                e.headers.insert(
                    "x-twilio-signature",
                    HeaderValue::from_str(&format!("{sig},{sig}")).unwrap(),
                );
            }),
            403,
        ),
        (
            "signed with another token",
            signed("CallSid=CA1&From=%2B81312345678", &url, "another-token"),
            403,
        ),
        (
            "signed for http (X-Forwarded-Proto is not trusted)",
            with(|e| {
                let form =
                    String::from_utf8(BASE64.decode(e.body.as_deref().unwrap()).unwrap()).unwrap();
                let params: Vec<(Cow<'_, str>, Cow<'_, str>)> =
                    form_urlencoded::parse(form.as_bytes()).collect();
                let sig = signature::sign(
                    &format!("http://{HOST}/voice"),
                    &params,
                    &AuthToken::new(TOKEN),
                );
                e.headers
                    .insert("x-twilio-signature", HeaderValue::from_str(&sig).unwrap());
                e.headers
                    .insert("x-forwarded-proto", HeaderValue::from_static("http"));
            }),
            403,
        ),
        (
            "signed for another host (X-Forwarded-Host is not trusted)",
            // Host stays genuine; the signature is right for the forwarded host, so this
            // passes only if X-Forwarded-Host were believed.
            with(|e| {
                let form =
                    String::from_utf8(BASE64.decode(e.body.as_deref().unwrap()).unwrap()).unwrap();
                let params: Vec<(Cow<'_, str>, Cow<'_, str>)> =
                    form_urlencoded::parse(form.as_bytes()).collect();
                let sig = signature::sign(
                    "https://attacker.example/voice",
                    &params,
                    &AuthToken::new(TOKEN),
                );
                e.headers
                    .insert("x-twilio-signature", HeaderValue::from_str(&sig).unwrap());
                e.headers.insert(
                    "x-forwarded-host",
                    HeaderValue::from_static("attacker.example"),
                );
                assert_eq!(e.headers["host"], HOST);
            }),
            403,
        ),
        (
            "a parameter added after signing",
            with(|e| {
                let form = String::from_utf8(BASE64.decode(e.body.as_deref().unwrap()).unwrap())
                    .unwrap()
                    + "&Digits=1";
                e.body = Some(BASE64.encode(form));
            }),
            403,
        ),
        (
            "JSON body without bodySHA256",
            with(|e| {
                e.headers
                    .insert("content-type", HeaderValue::from_static("application/json"));
                e.is_base64_encoded = false;
                e.body = Some(json_body.into());
            }),
            403,
        ),
        (
            "JSON body with a wrong bodySHA256",
            with(|e| {
                e.headers
                    .insert("content-type", HeaderValue::from_static("application/json"));
                e.is_base64_encoded = false;
                e.body = Some(json_body.into());
                e.raw_query_string = Some(format!("bodySHA256={}", signature::body_sha256(b"{}")));
            }),
            403,
        ),
        (
            "PUT",
            with(|e| e.request_context.http.method = Method::PUT),
            405,
        ),
        (
            "DELETE",
            with(|e| e.request_context.http.method = Method::DELETE),
            405,
        ),
        (
            "unknown path",
            with(|e| e.raw_path = Some("/admin".into())),
            404,
        ),
        (
            "path traversal",
            with(|e| e.raw_path = Some("/voice/../admin".into())),
            404,
        ),
        (
            "alert route, phone alerts off",
            {
                let mut e = signed(
                    "CallSid=CA1&Digits=1",
                    &format!("https://{HOST}/alert-keys?key=alert%3Aa%3A1&prompt=1"),
                    TOKEN,
                );
                e.raw_path = Some("/alert-keys".into());
                e.raw_query_string = Some("key=alert%3Aa%3A1&prompt=1".into());
                e
            },
            404,
        ),
        (
            "alert route, key not an alert's",
            with(|e| {
                e.raw_path = Some("/alert".into());
                e.raw_query_string = Some("key=cpu&prompt=1".into());
            }),
            400,
        ),
        (
            "no Host and no domain",
            with(|e| {
                e.headers.remove("host");
                e.request_context.domain_name = None;
            }),
            400,
        ),
        (
            "Host with a space",
            with(|e| {
                e.headers.insert("host", HeaderValue::from_static("a b"));
            }),
            400,
        ),
        (
            "Host with a path",
            with(|e| {
                e.headers
                    .insert("host", HeaderValue::from_static("evil.example/x"));
            }),
            400,
        ),
    ];
    let app = app().await;
    for (what, event, status) in rows {
        let response = handle(event, &app).await;
        assert_eq!(response.status_code, status, "{what}");
        let body = match &response.body {
            Some(Body::Text(t)) => t.as_str(),
            _ => "",
        };
        assert!(!body.contains("<Response"), "{what}: TwiML on a rejection");
    }
}

#[tokio::test]
async fn truncated_percent_escapes_are_read_as_twilio_signs_them() {
    // Lenient like the official validators: "%2" stays "%2". Signed consistently → accepted;
    // the same body with the escape completed is a different request → refused.
    let url = format!("https://{HOST}/voice");
    let app = app().await;
    let ok = handle(
        signed("CallSid=CA1&Body=%2&From=%2B8190%ZZ", &url, TOKEN),
        &app,
    )
    .await;
    assert_eq!(ok.status_code, 200);
    let mut changed = signed("CallSid=CA1&Body=%2&From=%2B8190%ZZ", &url, TOKEN);
    changed.body = Some(BASE64.encode("CallSid=CA1&Body=%20&From=%2B8190%ZZ"));
    assert_eq!(handle(changed, &app).await.status_code, 403);
    // `+` is a space and `%2B` a plus: signing the other reading is refused.
    let mut plus = signed("From=%2B81312345678", &url, TOKEN);
    plus.body = Some(BASE64.encode("From=+81312345678"));
    assert_eq!(handle(plus, &app).await.status_code, 403);
}

//! Every log line incoming-call writes, through answers, menus, status callbacks, refusals and
//! SSM failures, at DEBUG (more than Lambda's default INFO): no token, no unmasked number.

use aws_sdk_ssm::Client;
use aws_sdk_ssm::operation::get_parameters::GetParametersOutput;
use aws_sdk_ssm::types::Parameter;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use incoming_call::config::Config;
use incoming_call::webhook::{App, handle};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::http::HeaderValue;
use test_support::LogCapture;
use twilio_voice::credentials::{DEFAULT_TTL, GRACE_PERIOD};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn no_token_or_phone_number_reaches_the_logs() {
    let (capture, _guard) = LogCapture::install(tracing::Level::DEBUG);

    let flow = r#"{"then": {"menu": {"prompt": "p", "options": {"1": {"forward": {"number": "+81312345678"}}}}}}"#;
    let rule = mock!(Client::get_parameters)
        .sequence()
        .output(|| {
            GetParametersOutput::builder()
                .parameters(Parameter::builder().name("/token").value(TOKEN).build())
                .build()
        })
        .times(1)
        .http_status(
            400,
            Some(r#"{"__type":"AccessDeniedException","message":"denied"}"#.into()),
        )
        .repeatedly()
        .build();
    let config = Config::from_lookup(test_support::vars(&[
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/token"),
        ("CALL_FLOW", flow),
    ]))
    .unwrap();
    let app = App::init(
        config,
        mock_client!(aws_sdk_ssm, RuleMode::Sequential, [&rule]),
    )
    .await
    .unwrap();

    let mut forged = test_support::event::<ApiGatewayV2httpRequest>("incoming-call.json");
    forged.headers.insert(
        "x-twilio-signature",
        HeaderValue::from_static("AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    );
    let mut garbage = test_support::event::<ApiGatewayV2httpRequest>("incoming-call.json");
    garbage.body = Some("%%%".into());
    for e in [
        test_support::event::<ApiGatewayV2httpRequest>("incoming-call.json"),
        test_support::event::<ApiGatewayV2httpRequest>("incoming-call-menu.json"),
        test_support::event::<ApiGatewayV2httpRequest>("incoming-call-status.json"),
        test_support::event::<ApiGatewayV2httpRequest>("incoming-call-dial-result.json"),
        test_support::event::<ApiGatewayV2httpRequest>("incoming-call-screen-result.json"),
        garbage,
        forged.clone(),
        forged,
    ] {
        let _ = handle(e, &app).await;
    }
    // From here SSM refuses; once the token is past its grace period, the webhook fails closed
    // and logs why.
    tokio::time::pause();
    tokio::time::advance(DEFAULT_TTL + GRACE_PERIOD).await;
    let response = handle(
        test_support::event::<ApiGatewayV2httpRequest>("incoming-call.json"),
        &app,
    )
    .await;
    assert_eq!(response.status_code, 503);

    let lines = capture.assert_clean(&[TOKEN, "9012345678", "501234567", "312345678", "312340000"]);
    let text = capture.text();
    assert!(
        text.contains("forwarded call ended") && text.contains("screening answered"),
        "{text}"
    );
    assert!(lines >= 8, "the scenarios logged ({lines} lines): {text}");
    assert!(
        text.contains("call_sid=\"CA00000000000000000000000000000001\""),
        "{text}"
    );
    assert!(
        text.contains("from=+81*******") || text.contains("from=+81********78"),
        "masked caller: {text}"
    );
    assert!(
        text.contains("webhook rejected") && text.contains("failed closed"),
        "{text}"
    );
}

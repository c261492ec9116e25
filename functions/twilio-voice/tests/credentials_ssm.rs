//! The credentials module against the real aws-sdk-ssm: on `moto_server` for the wire, and with
//! aws-smithy-mocks where the test needs to count calls or inject SDK faults.

use std::time::Duration;

use aws_sdk_ssm::Client;
use aws_sdk_ssm::operation::get_parameters::GetParametersOutput;
use aws_sdk_ssm::types::Parameter;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use twilio_voice::credentials::{
    ApiAuthSpec, ApiCredentialSpec, CredentialStore, CredentialsError, WebhookTokenSpec,
};
use twilio_voice::ssm;

const SID: &str = "AC0123456789abcdef0123456789abcdef";

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn reads_secure_strings_from_moto_in_one_call() {
    let moto = test_support::moto_server();
    let ssm = test_support::ssm_client(&moto.url()).await;
    test_support::put_secure(&ssm, "/twilio/auth-token", "current-token").await;
    test_support::put_secure(&ssm, "/twilio/previous-auth-token", "previous-token").await;

    let store = CredentialStore::new(
        ssm.clone(),
        WebhookTokenSpec {
            auth_token: "/twilio/auth-token".into(),
            previous_auth_token: Some("/twilio/previous-auth-token".into()),
        },
        Duration::from_secs(300),
    );
    let tokens = store.get().await.expect("tokens from moto");
    assert_eq!(tokens.current.expose(), "current-token");
    assert_eq!(
        tokens.previous.as_ref().map(|t| t.expose()),
        Some("previous-token")
    );

    // A rotation in SSM is seen after an explicit refresh, not before.
    test_support::put_secure(&ssm, "/twilio/auth-token", "rotated-token").await;
    assert_eq!(store.get().await.unwrap().current.expose(), "current-token");
    assert_eq!(
        store.refresh().await.unwrap().current.expose(),
        "rotated-token"
    );

    test_support::put_secure(&ssm, "/twilio/account-sid", SID).await;
    let api = CredentialStore::new(
        ssm,
        ApiCredentialSpec {
            account_sid: "/twilio/account-sid".into(),
            auth: ApiAuthSpec::AuthToken("/twilio/auth-token".into()),
        },
        Duration::from_secs(300),
    );
    let creds = api.get().await.unwrap();
    assert_eq!(
        (creds.account_sid.as_str(), creds.password.expose()),
        (SID, "rotated-token")
    );
}

#[tokio::test]
#[ignore = "needs moto_server (make test runs it)"]
async fn unknown_parameters_are_a_fatal_error_naming_them() {
    let moto = test_support::moto_server();
    let ssm = test_support::ssm_client(&moto.url()).await;
    test_support::put_secure(&ssm, "/twilio/auth-token", "t").await;
    let store = CredentialStore::new(
        ssm,
        WebhookTokenSpec {
            auth_token: "/twilio/auth-token".into(),
            previous_auth_token: Some("/twilio/not-there".into()),
        },
        Duration::from_secs(300),
    );
    match store.get().await {
        Err(CredentialsError::MissingParameters(names)) => assert_eq!(names, ["/twilio/not-there"]),
        other => panic!("expected MissingParameters, got {other:?}"),
    }
}

fn output(value: &'static str) -> GetParametersOutput {
    GetParametersOutput::builder()
        .parameters(Parameter::builder().name("/t").value(value).build())
        .build()
}

fn spec() -> WebhookTokenSpec {
    WebhookTokenSpec {
        auth_token: "/t".into(),
        previous_auth_token: None,
    }
}

#[tokio::test(start_paused = true)]
async fn caches_for_the_ttl_then_fetches_again() {
    let rule = mock!(Client::get_parameters)
        .match_requests(|r| r.with_decryption() == Some(true) && r.names() == ["/t"])
        .sequence()
        .output(|| output("first"))
        .output(|| output("second"))
        .build();
    let ssm = mock_client!(aws_sdk_ssm, [&rule]);
    let store = CredentialStore::new(ssm, spec(), Duration::from_secs(300));

    for _ in 0..3 {
        assert_eq!(store.get().await.unwrap().current.expose(), "first");
    }
    assert_eq!(
        rule.num_calls(),
        1,
        "one GetParameters per execution environment"
    );

    tokio::time::advance(Duration::from_secs(299)).await;
    assert_eq!(store.get().await.unwrap().current.expose(), "first");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(store.get().await.unwrap().current.expose(), "second");
    assert_eq!(rule.num_calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn refresh_if_older_limits_how_often_ssm_is_asked() {
    let rule = mock!(Client::get_parameters)
        .sequence()
        .output(|| output("first"))
        .output(|| output("second"))
        .build();
    let ssm = mock_client!(aws_sdk_ssm, [&rule]);
    let store = CredentialStore::new(ssm, spec(), Duration::from_secs(300));
    store.get().await.unwrap();
    let min_age = Duration::from_secs(60);
    assert!(store.refresh_if_older(min_age).await.unwrap().is_none());
    assert_eq!(rule.num_calls(), 1);
    tokio::time::advance(Duration::from_secs(61)).await;
    let fresh = store
        .refresh_if_older(min_age)
        .await
        .unwrap()
        .expect("refreshed");
    assert_eq!(fresh.current.expose(), "second");
    assert_eq!(rule.num_calls(), 2);
}

#[tokio::test]
async fn sdk_failures_are_unavailable_and_name_no_secret() {
    let rule = mock!(Client::get_parameters).then_http_response(|| {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap(),
            aws_smithy_types::body::SdkBody::from(
                r#"{"__type":"AccessDeniedException","message":"not allowed to decrypt"}"#,
            ),
        )
    });
    let ssm = mock_client!(aws_sdk_ssm, [&rule]);
    let store = CredentialStore::new(ssm, spec(), Duration::from_secs(300));
    match store.get().await {
        Err(CredentialsError::Unavailable(msg)) => assert!(msg.contains("AccessDenied"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn ssm_throttling_once_then_success_is_absorbed_by_the_sdk_retry() {
    let throttled = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    let rule = mock!(Client::get_parameters)
        .sequence()
        .http_status(400, Some(throttled.into()))
        .times(1)
        .output(|| output("after-throttling"))
        .build();
    // The SDK's standard retry as `ssm::client` sets it: ThrottlingException retried once.
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::Sequential, [&rule], |c| c
        .retry_config(retry()));
    let store = CredentialStore::new(ssm, spec(), Duration::from_secs(300));
    assert_eq!(
        store.get().await.unwrap().current.expose(),
        "after-throttling"
    );
    assert_eq!(rule.num_calls(), ssm::MAX_ATTEMPTS as usize);
}

#[tokio::test(start_paused = true)]
async fn ssm_throttling_beyond_the_retries_is_unavailable() {
    let throttled = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
    let rule = mock!(Client::get_parameters)
        .sequence()
        .http_status(400, Some(throttled.into()))
        .repeatedly()
        .build();
    let ssm = mock_client!(aws_sdk_ssm, RuleMode::Sequential, [&rule], |c| c
        .retry_config(retry()));
    let store = CredentialStore::new(ssm, spec(), Duration::from_secs(300));
    match store.get().await {
        Err(CredentialsError::Unavailable(msg)) => assert!(msg.contains("Throttling"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(
        rule.num_calls(),
        ssm::MAX_ATTEMPTS as usize,
        "bounded by the SDK's retry policy"
    );
}

fn retry() -> aws_sdk_ssm::config::retry::RetryConfig {
    aws_sdk_ssm::config::retry::RetryConfig::standard()
        .with_max_attempts(ssm::MAX_ATTEMPTS)
        .with_initial_backoff(ssm::INITIAL_BACKOFF)
}

/// How the call flow is read: a document taken as text, not as a `Secret`.
async fn read_text(ssm: &aws_sdk_ssm::Client, name: &str) -> Result<String, CredentialsError> {
    twilio_voice::credentials::get_parameters(ssm, &[name])
        .await?
        .take_text(name)
}

#[tokio::test]
async fn a_document_is_read_as_plain_text() {
    let flow = r#"{"greeting": "お電話ありがとうございます。"}"#;
    let ssm =
        test_support::ssm_with(&[("/flow", r#"{"greeting": "お電話ありがとうございます。"}"#)]);
    assert_eq!(read_text(&ssm, "/flow").await.unwrap(), flow);
    match read_text(&ssm, "/missing").await {
        Err(CredentialsError::MissingParameters(names)) => assert_eq!(names, ["/missing"]),
        other => panic!("expected MissingParameters, got {other:?}"),
    }
    let empty = test_support::ssm_with(&[("/flow", " ")]);
    assert!(matches!(
        read_text(&empty, "/flow").await,
        Err(CredentialsError::Empty(name)) if name == "/flow"
    ));
}

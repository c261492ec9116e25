//! The one SDK configuration every AWS client of a function is built from, read from what Lambda
//! puts in the environment rather than through `aws-config`'s full provider chain (see `ssm` for
//! why: no profiles, SSO, STS web identity or IMDS, about a megabyte per bootstrap).
//!
//! [`sdk_config`] reads the region, the execution role's credentials, extra TLS roots and the
//! endpoint overrides once; [`dynamodb`], [`eventbridge`], [`stepfunctions`] and [`sqs`] build a
//! client from it. Every client
//! shares one HTTP client (one connector, the Amazon Trust Services roots plus `AWS_CA_BUNDLE`), an
//! operation timeout and a bounded number of attempts ([`Resilience`]), so a slow dependency costs
//! a bounded part of the invocation instead of all of it.
//!
//! Endpoint overrides follow the SDK's own convention: `AWS_ENDPOINT_URL_<SERVICE>` (the service
//! ID upper-cased, spaces as `_`: `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_EVENTBRIDGE`,
//! `AWS_ENDPOINT_URL_SSM`, `AWS_ENDPOINT_URL_SQS`), else `AWS_ENDPOINT_URL` for every service.

use std::collections::HashMap;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::SdkConfig;
use aws_types::region::Region;
use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

use crate::settings::{Settings, SettingsError};
use crate::ssm::AMAZON_TRUST_SERVICES;

/// The service IDs (as the SDK names them) whose `AWS_ENDPOINT_URL_<SERVICE>` is read. The
/// lookup is read once at start-up, so a service missing here only honours `AWS_ENDPOINT_URL`.
pub const SERVICES: &[&str] = &["DynamoDB", "EventBridge", "SSM", "SQS", "SNS", "SFN"];

/// How long a call to an AWS service may take, and how often it is attempted.
///
/// Throttling, 5xx answers, timeouts and dropped connections are retried by the SDK with
/// exponential backoff and jitter, within `max_attempts` and `operation_timeout` together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resilience {
    /// The whole operation, retries and backoff included.
    pub operation_timeout: Duration,
    /// One attempt.
    pub attempt_timeout: Duration,
    /// Opening a connection.
    pub connect_timeout: Duration,
    /// Attempts per operation, the first included.
    pub max_attempts: u32,
}

impl Default for Resilience {
    /// DynamoDB and EventBridge answer in milliseconds; three attempts within 3 s leave most of
    /// a 10–28 s function timeout for the work itself.
    fn default() -> Self {
        Self {
            operation_timeout: Duration::from_secs(3),
            attempt_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            max_attempts: 3,
        }
    }
}

/// The shared configuration from `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_CA_BUNDLE` and the endpoint overrides. A missing or malformed
/// setting is an error naming it. Builds no connection: the first request opens one.
pub fn sdk_config(
    lookup: impl Fn(&str) -> Option<String>,
    resilience: Resilience,
) -> Result<SdkConfig, SettingsError> {
    let settings = Settings::new(lookup);
    let region = settings.required("AWS_REGION")?;
    let credentials = Credentials::new(
        settings.required("AWS_ACCESS_KEY_ID")?,
        settings.required("AWS_SECRET_ACCESS_KEY")?,
        settings.get("AWS_SESSION_TOKEN"),
        None,
        "lambda-environment",
    );
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .http_client(http_client(settings.get("AWS_CA_BUNDLE").as_deref())?)
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(resilience.operation_timeout)
                .operation_attempt_timeout(resilience.attempt_timeout)
                .connect_timeout(resilience.connect_timeout)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(resilience.max_attempts))
        .service_config(EndpointOverrides::read(&settings));
    if let Some(endpoint) = settings.get("AWS_ENDPOINT_URL") {
        config = config.endpoint_url(endpoint);
    }
    Ok(config.build())
}

/// A DynamoDB client on the shared configuration.
pub fn dynamodb(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

/// An EventBridge client on the shared configuration.
pub fn eventbridge(config: &SdkConfig) -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(config)
}

/// A Step Functions client on the shared configuration.
pub fn stepfunctions(config: &SdkConfig) -> aws_sdk_sfn::Client {
    aws_sdk_sfn::Client::new(config)
}

/// An SQS client on the shared configuration.
pub fn sqs(config: &SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

/// The per-service endpoints, read once, as the SDK's service configs ask for them.
#[derive(Debug, Default)]
struct EndpointOverrides(HashMap<&'static str, String>);

impl EndpointOverrides {
    fn read<F: Fn(&str) -> Option<String>>(settings: &Settings<F>) -> Self {
        Self(
            SERVICES
                .iter()
                .filter_map(|id| Some((*id, settings.get(&endpoint_variable(id))?)))
                .collect(),
        )
    }
}

/// `AWS_ENDPOINT_URL_` + the service ID upper-cased, spaces as `_` (the SDK's convention).
fn endpoint_variable(service_id: &str) -> String {
    format!(
        "AWS_ENDPOINT_URL_{}",
        service_id.to_ascii_uppercase().replace(' ', "_")
    )
}

impl LoadServiceConfig for EndpointOverrides {
    fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
        (key.env() == "AWS_ENDPOINT_URL")
            .then(|| self.0.get(key.service_id()).cloned())
            .flatten()
    }
}

/// The HTTP client every service shares: rustls on aws-lc-rs, trusting the Amazon Trust Services
/// roots, plus the PEM bundle at `ca_bundle` for an endpoint that is not AWS's.
pub fn http_client(ca_bundle: Option<&str>) -> Result<SharedHttpClient, SettingsError> {
    let mut trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(AMAZON_TRUST_SERVICES.as_bytes());
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path).map_err(|e| SettingsError::invalid("AWS_CA_BUNDLE", e))?;
        check_roots(&pem).map_err(|e| SettingsError::invalid("AWS_CA_BUNDLE", e))?;
        trust = trust.with_pem_certificate(pem);
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| SettingsError::invalid("AWS_CA_BUNDLE", e))?;
    Ok(SharedHttpClient::new(OneConnector(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(tls_context)
            .build_https(),
    )))
}

/// Loads a PEM bundle the way the SDK's connector will at the first request, where a bad one
/// would panic; here it stops the start with the setting's name instead.
fn check_roots(pem: &[u8]) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in it".to_owned());
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("a certificate cannot be a root: {e}"))?;
    }
    Ok(())
}

/// The SDK's hyper client, minus the throwaway connector its start-up validation builds to warm
/// the system roots: with roots given as PEM, every connector parses them again, so only the
/// connector that is used is built.
#[derive(Debug)]
struct OneConnector(SharedHttpClient);

impl HttpClient for OneConnector {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    const LAMBDA: &[(&str, &str)] = &[
        ("AWS_REGION", "ap-northeast-1"),
        ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_SESSION_TOKEN", "token"),
    ];

    fn endpoint_for(config: &SdkConfig, service_id: &str) -> Option<String> {
        let key = ServiceConfigKey::builder()
            .service_id(service_id)
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .unwrap();
        config
            .service_config()
            .and_then(|c| c.load_config(key))
            .or_else(|| config.endpoint_url().map(str::to_owned))
    }

    #[test]
    fn lambda_environment_is_enough_and_resilience_is_applied() {
        let config = sdk_config(env(LAMBDA), Resilience::default()).unwrap();
        assert_eq!(config.region().map(|r| r.as_ref()), Some("ap-northeast-1"));
        let timeouts = config.timeout_config().unwrap();
        assert_eq!(timeouts.operation_timeout(), Some(Duration::from_secs(3)));
        assert_eq!(
            timeouts.operation_attempt_timeout(),
            Some(Duration::from_secs(1))
        );
        assert_eq!(config.retry_config().unwrap().max_attempts(), 3);
        assert_eq!(endpoint_for(&config, "DynamoDB"), None);
    }

    #[test]
    fn each_missing_setting_is_named() {
        for missing in ["AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            let without: Vec<_> = LAMBDA
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = sdk_config(env(&without), Resilience::default()).unwrap_err();
            assert_eq!(err, SettingsError::Missing(missing));
        }
    }

    #[test]
    fn a_service_endpoint_overrides_the_shared_one() {
        let mut with = LAMBDA.to_vec();
        with.push(("AWS_ENDPOINT_URL", "http://127.0.0.1:1"));
        with.push(("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:2"));
        with.push(("AWS_ENDPOINT_URL_EVENTBRIDGE", " "));
        let config = sdk_config(env(&with), Resilience::default()).unwrap();
        assert_eq!(
            endpoint_for(&config, "DynamoDB").as_deref(),
            Some("http://127.0.0.1:2")
        );
        // Blank is unset: EventBridge falls back to the shared endpoint.
        assert_eq!(
            endpoint_for(&config, "EventBridge").as_deref(),
            Some("http://127.0.0.1:1")
        );
        assert_eq!(
            endpoint_variable("Some Service"),
            "AWS_ENDPOINT_URL_SOME_SERVICE"
        );
    }

    #[test]
    fn a_bad_ca_bundle_is_named() {
        let mut with = LAMBDA.to_vec();
        with.push(("AWS_CA_BUNDLE", "/nonexistent/bundle.pem"));
        let err = sdk_config(env(&with), Resilience::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("setting AWS_CA_BUNDLE is invalid"),
            "{err}"
        );
    }
}

//! The SSM client as a Lambda function reaches it, built from what Lambda puts in the
//! environment rather than through `aws-config`'s full provider chain.
//!
//! Lambda always provides the region and the execution role's credentials as environment
//! variables, so profiles, SSO, STS web identity and IMDS are dead weight here: dropping them
//! takes about a megabyte off each bootstrap. TLS trusts the Amazon Trust Services roots, which
//! AWS's own endpoints chain to, instead of parsing the whole system store at every cold start
//! (several milliseconds); `AWS_CA_BUNDLE` adds roots for an endpoint that needs others. The
//! HTTP client and its trust store are the ones every AWS client shares (`aws::http_client`).
//!
//! Every read is bounded: [`ATTEMPT_TIMEOUT`] per attempt, [`MAX_ATTEMPTS`] attempts, and
//! [`OPERATION_TIMEOUT`] for all of them, so a throttled or hanging SSM costs a webhook seconds,
//! not the function's whole timeout, and a flood cannot multiply into many retries.

use std::time::Duration;

use crate::settings::{Settings, SettingsError};
use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::config::timeout::TimeoutConfig;
use aws_sdk_ssm::config::{BehaviorVersion, Credentials, Region};

/// One attempt (connect, send, answer) gives up after this; SSM answers in milliseconds.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// A read, retries and backoff included, gives up after this.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(3);
/// The SDK's standard retry (throttling, 5xx, timeouts), with one retry: a second attempt
/// rides out a blip; more would only add load to an account-wide quota that is already spent.
pub const MAX_ATTEMPTS: u32 = 2;
/// First backoff before the retry (the SDK adds full jitter). Short, so that the retry always
/// starts within [`OPERATION_TIMEOUT`] even after an attempt that timed out.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(200);

/// Amazon Root CA 1–4, as published at <https://www.amazontrust.com/repository/>. (The
/// Starfield root that cross-signs them only matters to clients that lack these.)
pub const AMAZON_TRUST_SERVICES: &str = include_str!("../certs/amazon-trust-services.pem");

/// An SSM client from `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN` and, for a stand-in such as moto, `AWS_ENDPOINT_URL_SSM` or
/// `AWS_ENDPOINT_URL`. A missing setting is an error naming it.
pub fn client(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<aws_sdk_ssm::Client, SettingsError> {
    let settings = Settings::new(lookup);
    let region = settings.required("AWS_REGION")?;
    let credentials = Credentials::new(
        settings.required("AWS_ACCESS_KEY_ID")?,
        settings.required("AWS_SECRET_ACCESS_KEY")?,
        settings.get("AWS_SESSION_TOKEN"),
        None,
        "lambda-environment",
    );
    let http = crate::aws::http_client(settings.get("AWS_CA_BUNDLE").as_deref())?;
    let mut config = aws_sdk_ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(credentials)
        .http_client(http)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(INITIAL_BACKOFF),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        );
    if let Some(endpoint) = settings
        .get("AWS_ENDPOINT_URL_SSM")
        .or_else(|| settings.get("AWS_ENDPOINT_URL"))
    {
        config = config.endpoint_url(endpoint);
    }
    Ok(aws_sdk_ssm::Client::from_conf(config.build()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            pairs
                .iter()
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

    #[test]
    fn the_bundled_roots_are_the_four_amazon_roots() {
        assert_eq!(
            AMAZON_TRUST_SERVICES
                .matches("-----BEGIN CERTIFICATE-----")
                .count(),
            4
        );
    }

    #[tokio::test]
    async fn lambda_environment_is_enough() {
        let client = client(env(LAMBDA)).unwrap();
        let config = client.config();
        assert_eq!(config.region().map(|r| r.as_ref()), Some("ap-northeast-1"));
    }

    #[tokio::test]
    async fn reads_are_bounded_in_time_and_attempts() {
        let client = client(env(LAMBDA)).unwrap();
        let config = client.config();
        let retry = config.retry_config().expect("a retry config");
        assert_eq!(retry.max_attempts(), MAX_ATTEMPTS);
        assert_eq!(retry.initial_backoff(), INITIAL_BACKOFF);
        let timeouts = config.timeout_config().expect("a timeout config");
        assert_eq!(timeouts.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(timeouts.operation_timeout(), Some(OPERATION_TIMEOUT));
        // The retry must fit: an attempt that timed out, then the longest first backoff.
        assert!(ATTEMPT_TIMEOUT + INITIAL_BACKOFF < OPERATION_TIMEOUT);
    }

    #[tokio::test]
    async fn each_missing_setting_is_named() {
        for missing in ["AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            let without: Vec<_> = LAMBDA
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = client(env(&without)).unwrap_err();
            assert_eq!(err, SettingsError::Missing(missing));
        }
    }

    #[tokio::test]
    async fn a_ca_bundle_must_be_a_readable_pem_file() {
        let mut with = LAMBDA.to_vec();
        with.push(("AWS_CA_BUNDLE", "/nonexistent/bundle.pem"));
        let err = client(env(&with)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("setting AWS_CA_BUNDLE is invalid"),
            "{err}"
        );

        let dir = std::env::temp_dir().join(format!("ssm-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (junk, good) = (dir.join("junk.pem"), dir.join("good.pem"));
        std::fs::write(&good, AMAZON_TRUST_SERVICES).unwrap();
        // Each of these would have panicked inside the SDK's connector at the first request.
        for bad in [
            "not a certificate",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        ] {
            std::fs::write(&junk, bad).unwrap();
            let mut with = LAMBDA.to_vec();
            with.push(("AWS_CA_BUNDLE", junk.to_str().unwrap()));
            let err = client(env(&with)).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("setting AWS_CA_BUNDLE is invalid"),
                "{err}"
            );
        }
        let mut with = LAMBDA.to_vec();
        with.push(("AWS_CA_BUNDLE", good.to_str().unwrap()));
        assert!(client(env(&with)).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}

//! `outbound-call`: places Twilio calls from a direct invoke, an IAM-authenticated HTTP API or an
//! EventBridge schedule, with credentials from SSM and a destination allow-list.

pub mod bulk;
pub mod config;
pub mod delivery;
pub mod event;
pub mod handler;
pub mod once;

use config::Config;
use handler::App;
use twilio_voice::calls::{CallsClient, HttpTimeouts, RetryPolicy};
use twilio_voice::credentials::{self, CredentialStore, CredentialsError};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("reading SSM: {0}")]
    Credentials(#[from] CredentialsError),
}

impl App {
    /// Builds the clients once and does during INIT what the first call would otherwise pay
    /// for: the credentials are read from SSM and the connection to Twilio is opened.
    pub async fn init(config: Config, ssm: aws_sdk_ssm::Client) -> Result<Self, InitError> {
        Self::init_with(config, ssm, HttpTimeouts::default(), RetryPolicy::default()).await
    }

    pub async fn init_with(
        config: Config,
        ssm: aws_sdk_ssm::Client,
        timeouts: HttpTimeouts,
        retry: RetryPolicy,
    ) -> Result<Self, InitError> {
        let calls = CallsClient::new(&config.api_base_url, timeouts, retry)?;
        let credentials = CredentialStore::new(ssm, config.credentials, credentials::DEFAULT_TTL);
        let (fetched, ()) = tokio::join!(credentials.prefetch(), calls.warm_up());
        fetched?;
        Ok(Self {
            calls,
            credentials,
            from: config.from,
            policy: config.policy,
        })
    }
}

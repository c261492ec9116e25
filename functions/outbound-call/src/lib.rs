//! `outbound-call`: places Twilio calls from a direct invoke, an IAM-authenticated HTTP API, an
//! EventBridge schedule or an SQS queue, with credentials from SSM, a destination allow-list
//! and, with the call ledger, at most one call per request.

pub mod alerts;
pub mod bulk;
pub mod config;
pub mod delivery;
pub mod event;
pub mod expiry;
pub mod handler;
pub mod once;

use aws_types::SdkConfig;
use config::Config;
use expiry::ExpiryQueue;
use handler::App;
use twilio_voice::calls::{CallsClient, HttpTimeouts, RetryPolicy};
use twilio_voice::credentials::{self, CredentialStore, CredentialsError};
use twilio_voice::events::EventBus;
use twilio_voice::ledger::Ledger;
use twilio_voice::pacing::Pace;

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
        if config.ledger_table.is_none() {
            tracing::warn!("CALL_LEDGER_TABLE is not set: a redelivered event dials again");
        }
        if config.bulk_calls_queue_url.is_none() {
            tracing::warn!(
                "BULK_CALLS_QUEUE_URL is not set: a call that Twilio still holds at its not_after \
                 is cancelled only if its request is delivered again"
            );
        }
        let calls = CallsClient::new(&config.api_base_url, timeouts, retry)?;
        let credentials = CredentialStore::new(ssm, config.credentials, credentials::DEFAULT_TTL);
        let (fetched, ()) = tokio::join!(credentials.prefetch(), calls.warm_up());
        fetched?;
        Ok(Self {
            calls,
            credentials,
            from: config.from,
            policy: config.policy,
            ledger: None,
            bus: None,
            status_callback: config.status_callback,
            pace: Pace::share(config.calls_per_second, config.bulk_consumers),
            alerts: None,
            expiry: None,
            clock: std::sync::Arc::new(std::time::SystemTime::now),
        })
    }

    /// Adds the call ledger, the event bus and the expiry queue named in `config`, on clients
    /// built from `aws`.
    pub fn with_outcomes(mut self, config: &Config, aws: &SdkConfig) -> Self {
        self.ledger = config
            .ledger_table
            .as_ref()
            .map(|table| Ledger::new(twilio_voice::aws::dynamodb(aws), table));
        self.bus = config
            .event_bus
            .as_ref()
            .map(|bus| EventBus::new(twilio_voice::aws::eventbridge(aws), bus));
        self.expiry = config
            .bulk_calls_queue_url
            .as_ref()
            .map(|url| ExpiryQueue::new(twilio_voice::aws::sqs(aws), url));
        self
    }

    /// Adds phone alerts when `config` has them: reads and checks the escalation policies now,
    /// so that a missing or invalid document stops the start, naming the parameter.
    pub async fn with_alerts(
        mut self,
        config: &Config,
        aws: &SdkConfig,
        ssm: aws_sdk_ssm::Client,
    ) -> Result<Self, InitError> {
        if let Some(alerts) = &config.alerts {
            self.alerts = Some(
                alerts::Alerts::init(
                    alerts,
                    &self.policy,
                    ssm,
                    twilio_voice::aws::stepfunctions(aws),
                )
                .await?,
            );
        }
        Ok(self)
    }
}

//! `incoming-call`: answers Twilio's voice webhook on a Lambda Function URL with the configured
//! call flow, after checking `X-Twilio-Signature` with the auth token from SSM.

pub mod config;
pub mod flow;
pub mod outcomes;
pub mod webhook;

use config::{Config, FlowSource};
use flow::{CallFlow, FlowError};
use twilio_voice::credentials::{self, CredentialStore, CredentialsError};
use webhook::App;

/// Why the function cannot start; the message names the setting or parameter at fault.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("call flow: {0}")]
    Flow(#[from] FlowError),
    #[error("reading SSM: {0}")]
    Credentials(#[from] CredentialsError),
}

impl App {
    /// Loads the call flow and the auth token(s) during INIT, so the first call pays for neither.
    /// A missing parameter or a malformed flow stops the start; SSM being briefly unreachable
    /// does not (requests then fail closed with 503 until it answers).
    pub async fn init(config: Config, ssm: aws_sdk_ssm::Client) -> Result<Self, InitError> {
        let flow = match &config.flow {
            FlowSource::BuiltIn => CallFlow::default(),
            FlowSource::Inline(json) => CallFlow::from_json(json)?,
            FlowSource::Parameter(name) => {
                let mut values = credentials::get_parameters(&ssm, &[name]).await?;
                CallFlow::from_json(values.take(name)?.expose())?
            }
        };
        let tokens = CredentialStore::new(ssm, config.tokens, credentials::DEFAULT_TTL);
        match tokens.get().await {
            Ok(_) => {}
            Err(e @ CredentialsError::Unavailable(_)) => {
                tracing::warn!(error = %e, "auth token not fetched at start-up; will retry per request");
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Self {
            tokens,
            flow,
            public_base_url: config.public_base_url,
            answers: Default::default(),
        })
    }
}

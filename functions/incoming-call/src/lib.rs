//! `incoming-call`: answers Twilio's voice webhook on a Lambda Function URL with the configured
//! call flow, after checking `X-Twilio-Signature` with the auth token from SSM.

pub mod config;
pub mod flow;
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
    /// while the token is read does not (requests then fail closed with 503 until it answers,
    /// see [`CredentialStore::prefetch`]).
    pub async fn init(config: Config, ssm: aws_sdk_ssm::Client) -> Result<Self, InitError> {
        let flow = match &config.flow {
            FlowSource::BuiltIn => CallFlow::default(),
            FlowSource::Inline(json) => CallFlow::from_json(json)?,
            FlowSource::Parameter(name) => {
                CallFlow::from_json(&twilio_voice::ssm::read_text(&ssm, name).await?)?
            }
        };
        let tokens = CredentialStore::new(ssm, config.tokens, credentials::DEFAULT_TTL);
        tokens.prefetch().await?;
        Ok(Self {
            tokens,
            flow,
            public_base_url: config.public_base_url,
            answers: Default::default(),
        })
    }
}

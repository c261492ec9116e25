//! `incoming-call`: answers Twilio's voice webhook on a Lambda Function URL with the configured
//! call flow, after checking `X-Twilio-Signature` with the auth token from SSM.

pub mod config;
pub mod flow;
pub mod holidays;
pub mod route;
pub mod schedule;
pub mod voices;
pub mod webhook;

use std::sync::Arc;

use config::{Config, FlowSource};
use flow::{CallFlow, FlowError};
use twilio_voice::credentials::{
    self, CredentialSpec, CredentialStore, CredentialsError, Parameters,
};
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

/// The call flow held in SSM: read like a credential (one `GetParameters`, cached for the TTL,
/// read again after it, so an operator can change the flow without a redeploy), and parsed by
/// `assemble`, so a malformed document is an error naming the parameter and the field.
#[derive(Debug, Clone)]
pub struct FlowSpec {
    pub parameter: String,
}

impl CredentialSpec for FlowSpec {
    type Output = CallFlow;
    fn parameter_names(&self) -> Vec<&str> {
        vec![self.parameter.as_str()]
    }
    fn assemble(&self, values: &mut Parameters) -> Result<CallFlow, CredentialsError> {
        let json = values.take(&self.parameter)?;
        CallFlow::from_json(json.expose()).map_err(|e| CredentialsError::Invalid {
            name: self.parameter.clone(),
            reason: e.to_string(),
        })
    }
}

/// Where the flow of each call comes from.
pub enum FlowStore {
    /// Built in, or `CALL_FLOW`: parsed once at start-up.
    Fixed(Arc<CallFlow>),
    /// `CALL_FLOW_PARAMETER`: read from SSM, again after the TTL.
    Ssm(CredentialStore<FlowSpec>),
}

impl FlowStore {
    pub async fn get(&self) -> Result<Arc<CallFlow>, CredentialsError> {
        match self {
            Self::Fixed(flow) => Ok(Arc::clone(flow)),
            Self::Ssm(store) => store.get().await,
        }
    }
}

/// Reads a store at start-up: a missing or malformed value stops the start, SSM being briefly
/// unreachable does not (requests then fail closed with 503 until it answers).
async fn warm<S: CredentialSpec>(
    store: &CredentialStore<S>,
    what: &str,
) -> Result<Option<Arc<S::Output>>, InitError> {
    match store.get().await {
        Ok(value) => Ok(Some(value)),
        Err(e @ CredentialsError::Unavailable(_)) => {
            tracing::warn!(error = %e, "{what} not fetched at start-up; will retry per request");
            Ok(None)
        }
        Err(CredentialsError::Invalid { name, reason }) if what == "call flow" => Err(
            InitError::Flow(FlowError::Json(format!("{name}: {reason}"))),
        ),
        Err(e) => Err(e.into()),
    }
}

impl App {
    /// Loads the call flow and the auth token(s) during INIT, so the first call pays for neither.
    pub async fn init(config: Config, ssm: aws_sdk_ssm::Client) -> Result<Self, InitError> {
        Self::init_with_clock(config, ssm, schedule::system_clock()).await
    }

    /// [`App::init`] with the clock the schedule reads (tests choose the instant).
    pub async fn init_with_clock(
        config: Config,
        ssm: aws_sdk_ssm::Client,
        clock: schedule::Clock,
    ) -> Result<Self, InitError> {
        let flows = match &config.flow {
            FlowSource::BuiltIn => FlowStore::Fixed(Arc::new(CallFlow::default())),
            FlowSource::Inline(json) => FlowStore::Fixed(Arc::new(CallFlow::from_json(json)?)),
            FlowSource::Parameter(name) => FlowStore::Ssm(CredentialStore::new(
                ssm.clone(),
                FlowSpec {
                    parameter: name.clone(),
                },
                credentials::DEFAULT_TTL,
            )),
        };
        let flow = match &flows {
            FlowStore::Fixed(flow) => Some(Arc::clone(flow)),
            FlowStore::Ssm(store) => warm(store, "call flow").await?,
        };
        let tokens = CredentialStore::new(ssm, config.tokens, credentials::DEFAULT_TTL);
        warm(&tokens, "auth token").await?;
        if flow.is_some_and(|f| f.has_schedule())
            && schedule::year_in_japan(clock()) > holidays::LAST_YEAR
        {
            tracing::warn!(
                last_year = holidays::LAST_YEAR,
                "the embedded holiday table ends before this year: national holidays are not \
                 recognised; regenerate it with .ci/gen_holidays.py"
            );
        }
        Ok(Self {
            tokens,
            flows,
            public_base_url: config.public_base_url,
            answers: Default::default(),
            clock,
        })
    }
}

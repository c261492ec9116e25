//! `incoming-call`: answers Twilio's voice webhook on a Lambda Function URL with the configured
//! call flow, after checking `X-Twilio-Signature` with the auth token from SSM.

pub mod alert;
pub mod config;
pub mod flow;
pub mod holidays;
pub mod outcomes;
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
    fn what(&self) -> &'static str {
        "call flow"
    }
    fn parameter_names(&self) -> Vec<&str> {
        vec![self.parameter.as_str()]
    }
    fn assemble(&self, values: &mut Parameters) -> Result<CallFlow, CredentialsError> {
        let json = values.take_text(&self.parameter)?;
        CallFlow::from_json(&json).map_err(|e| CredentialsError::Invalid {
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
    Ssm {
        store: CredentialStore<FlowSpec>,
        /// The last flow read and parsed: an edit that breaks the document (or deletes it) keeps
        /// the line answering with the flow it had, rather than failing every call; the store
        /// logs the failed read.
        last_good: std::sync::Mutex<Option<Arc<CallFlow>>>,
    },
}

impl FlowStore {
    pub async fn get(&self) -> Result<Arc<CallFlow>, CredentialsError> {
        let (store, last_good) = match self {
            Self::Fixed(flow) => return Ok(Arc::clone(flow)),
            Self::Ssm { store, last_good } => (store, last_good),
        };
        let result = store.get().await;
        let mut last = last_good
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(flow) => {
                *last = Some(Arc::clone(&flow));
                Ok(flow)
            }
            // SSM being unreachable is the store's to handle (its grace period); an answer about
            // the document itself is not a reason to stop answering calls.
            Err(e) if e.is_transient() => Err(e),
            Err(e) => last.clone().ok_or(e),
        }
    }
}

/// A caller's status callback gets this long; Twilio waits 15 s for our answer.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The HTTP client that passes status callbacks on to a caller's own URL, built at the first
/// forward rather than during INIT: building it loads the system's trust store (about 150 files
/// read, ~3 ms of CPU at every cold start, bench/README.md), and most calls forward nothing.
#[derive(Default)]
pub struct Forwarder(std::sync::OnceLock<Result<reqwest::Client, String>>);

impl Forwarder {
    /// The client, built on first use; an error (no TLS backend) is kept and reported each time.
    pub fn client(&self) -> Result<&reqwest::Client, &str> {
        self.0
            .get_or_init(|| {
                reqwest::Client::builder()
                    .connect_timeout(FORWARD_TIMEOUT)
                    .timeout(FORWARD_TIMEOUT)
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// Whether the client has been built (for tests of the cold path).
    pub fn is_built(&self) -> bool {
        self.0.get().is_some()
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
            FlowSource::Parameter(name) => FlowStore::Ssm {
                store: CredentialStore::new(
                    ssm.clone(),
                    FlowSpec {
                        parameter: name.clone(),
                    },
                    credentials::DEFAULT_TTL,
                ),
                last_good: Default::default(),
            },
        };
        // A missing or malformed flow stops the start; SSM being briefly unreachable does not
        // (requests then fail closed with 503 until it answers).
        if let FlowStore::Ssm { store, .. } = &flows {
            store.prefetch().await?;
        }
        let tokens = CredentialStore::new(ssm, config.tokens, credentials::DEFAULT_TTL);
        tokens.prefetch().await?;
        // Answered from what prefetch read (or remembered), without another SSM call.
        let flow = flows.get().await.ok();
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
            outcomes: None,
            alerts: None,
            forwarder: Forwarder::default(),
        })
    }

    /// Passes status callbacks and voicemails on to the ledger and the bus named in `config`
    /// (the configuration has both or neither), on clients built from `aws`.
    pub fn with_outcomes(mut self, config: &Config, aws: &aws_types::SdkConfig) -> Self {
        self.outcomes = match (&config.ledger_table, &config.event_bus) {
            (Some(table), Some(bus)) => Some(outcomes::Outcomes {
                ledger: twilio_voice::ledger::Ledger::new(twilio_voice::aws::dynamodb(aws), table),
                bus: twilio_voice::events::EventBus::new(twilio_voice::aws::eventbridge(aws), bus),
            }),
            _ => None,
        };
        self
    }

    /// Answers the alert routes and ends alert steps when `config` turns phone alerts on
    /// (`ALERT_STATE_MACHINE_ARN`, which the configuration only accepts with the ledger).
    pub fn with_alerts(mut self, config: &Config, aws: &aws_types::SdkConfig) -> Self {
        self.alerts = match (&config.alert_state_machine, &config.ledger_table) {
            (Some(state_machine), Some(table)) => {
                tracing::info!(state_machine = %state_machine, "phone alerts on");
                Some(alert::Alerts {
                    ledger: twilio_voice::ledger::Ledger::new(
                        twilio_voice::aws::dynamodb(aws),
                        table,
                    ),
                    escalations: twilio_voice::stepfunctions::Escalations::new(
                        twilio_voice::aws::stepfunctions(aws),
                    ),
                })
            }
            _ => None,
        };
        self
    }
}

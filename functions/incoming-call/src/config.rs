//! Start-up configuration, read once from the environment. A missing or malformed setting
//! stops the function at INIT with the setting's name.

use twilio_voice::credentials::WebhookTokenSpec;
use twilio_voice::settings::Settings;

/// Where the call flow comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowSource {
    /// `CALL_FLOW`: the JSON document itself.
    Inline(String),
    /// `CALL_FLOW_PARAMETER`: the name of an SSM parameter holding the JSON document.
    Parameter(String),
    /// Neither: the built-in demo flow.
    BuiltIn,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub tokens: WebhookTokenSpec,
    /// Scheme and host (and optional path prefix) Twilio calls, when it is not the Function URL
    /// itself (a custom domain or a proxy).
    pub public_base_url: Option<String>,
    pub flow: FlowSource,
    /// `CALL_LEDGER_TABLE`: where status callbacks are recorded.
    pub ledger_table: Option<String>,
    /// `EVENT_BUS_NAME`: where `Call Completed`, `Voicemail Recorded` and `Voicemail Transcribed`
    /// are published.
    pub event_bus: Option<String>,
    /// `ALERT_STATE_MACHINE_ARN`: phone alerts are on (README, "Phone alerts"): the `/alert`
    /// routes answer, and final statuses of alert calls end their step. The ARN itself is only
    /// checked and logged (task tokens name their execution); its presence is the switch, so
    /// template.yaml sets it exactly when it deploys the state machine.
    pub alert_state_machine: Option<String>,
}

pub use twilio_voice::settings::SettingsError as ConfigError;

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let settings = Settings::new(lookup);
        let get = |name: &str| settings.get(name);
        let auth_token = settings.required("TWILIO_AUTH_TOKEN_PARAMETER")?;
        let previous_auth_token = get("TWILIO_PREVIOUS_AUTH_TOKEN_PARAMETER");
        let public_base_url = settings.parse("PUBLIC_BASE_URL", |raw| {
            let url = url::Url::parse(raw).map_err(|e| e.to_string())?;
            if !matches!(url.scheme(), "https" | "http") || url.query().is_some() {
                return Err("expected http(s)://host[/prefix] without a query".to_owned());
            }
            Ok(raw.trim_end_matches('/').to_owned())
        })?;
        let flow = match (get("CALL_FLOW"), get("CALL_FLOW_PARAMETER")) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "CALL_FLOW",
                    "set CALL_FLOW or CALL_FLOW_PARAMETER, not both",
                ));
            }
            (Some(json), None) => FlowSource::Inline(json),
            (None, Some(name)) => FlowSource::Parameter(name),
            (None, None) => FlowSource::BuiltIn,
        };
        // Outcomes go to both or neither: a call recorded but never announced (or the reverse)
        // would be a silent half-configuration.
        let (ledger_table, event_bus) = match (get("CALL_LEDGER_TABLE"), get("EVENT_BUS_NAME")) {
            (Some(_), None) => return Err(ConfigError::Missing("EVENT_BUS_NAME")),
            (None, Some(_)) => return Err(ConfigError::Missing("CALL_LEDGER_TABLE")),
            pair => pair,
        };
        let alert_state_machine = settings.parse("ALERT_STATE_MACHINE_ARN", |raw| {
            let parts: Vec<&str> = raw.split(':').collect();
            match parts.as_slice() {
                ["arn", _, "states", _, _, "stateMachine", name] if !name.is_empty() => {
                    Ok(raw.to_owned())
                }
                _ => Err("expected arn:<partition>:states:<region>:<account>:stateMachine:<name>"),
            }
        })?;
        // An alert step lives in the ledger: alerts without it could never be acknowledged.
        if alert_state_machine.is_some() && ledger_table.is_none() {
            return Err(ConfigError::Missing("CALL_LEDGER_TABLE"));
        }
        Ok(Self {
            tokens: WebhookTokenSpec {
                auth_token,
                previous_auth_token,
            },
            public_base_url,
            flow,
            ledger_table,
            event_bus,
            alert_state_machine,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn the_ledger_and_the_bus_come_together() {
        let token = ("TWILIO_AUTH_TOKEN_PARAMETER", "/t");
        assert_eq!(
            config(&[token, ("CALL_LEDGER_TABLE", "ledger")]).unwrap_err(),
            ConfigError::Missing("EVENT_BUS_NAME")
        );
        assert_eq!(
            config(&[token, ("EVENT_BUS_NAME", "default")]).unwrap_err(),
            ConfigError::Missing("CALL_LEDGER_TABLE")
        );
        let both = config(&[
            token,
            ("CALL_LEDGER_TABLE", "ledger"),
            ("EVENT_BUS_NAME", "default"),
        ])
        .unwrap();
        assert_eq!(
            (both.ledger_table.as_deref(), both.event_bus.as_deref()),
            (Some("ledger"), Some("default"))
        );
        assert_eq!(config(&[token]).unwrap().ledger_table, None);
    }

    #[test]
    fn alerts_need_a_state_machine_arn_and_the_ledger() {
        let token = ("TWILIO_AUTH_TOKEN_PARAMETER", "/t");
        let arn = (
            "ALERT_STATE_MACHINE_ARN",
            "arn:aws:states:ap-northeast-1:123456789012:stateMachine:voice-alert-escalation",
        );
        assert_eq!(
            config(&[token, arn]).unwrap_err(),
            ConfigError::Missing("CALL_LEDGER_TABLE")
        );
        let on = config(&[
            token,
            arn,
            ("CALL_LEDGER_TABLE", "ledger"),
            ("EVENT_BUS_NAME", "default"),
        ])
        .unwrap();
        assert_eq!(on.alert_state_machine.as_deref(), Some(arn.1));
        assert_eq!(config(&[token]).unwrap().alert_state_machine, None);
        for bad in [
            "voice-alert-escalation",
            "arn:aws:lambda:ap-northeast-1:123456789012:function:x",
            "arn:aws:states:ap-northeast-1:123456789012:execution:m:x",
        ] {
            assert!(
                matches!(
                    config(&[token, ("ALERT_STATE_MACHINE_ARN", bad)]),
                    Err(ConfigError::Invalid {
                        name: "ALERT_STATE_MACHINE_ARN",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn auth_token_parameter_is_required() {
        assert_eq!(
            config(&[]).unwrap_err(),
            ConfigError::Missing("TWILIO_AUTH_TOKEN_PARAMETER")
        );
        assert_eq!(
            config(&[("TWILIO_AUTH_TOKEN_PARAMETER", " ")]).unwrap_err(),
            ConfigError::Missing("TWILIO_AUTH_TOKEN_PARAMETER")
        );
    }

    #[test]
    fn reads_every_setting() {
        let c = config(&[
            ("TWILIO_AUTH_TOKEN_PARAMETER", "/t"),
            ("TWILIO_PREVIOUS_AUTH_TOKEN_PARAMETER", "/p"),
            ("PUBLIC_BASE_URL", "https://voice.example.com/"),
            ("CALL_FLOW_PARAMETER", "/flow"),
        ])
        .unwrap();
        assert_eq!(c.tokens.auth_token, "/t");
        assert_eq!(c.tokens.previous_auth_token.as_deref(), Some("/p"));
        assert_eq!(
            c.public_base_url.as_deref(),
            Some("https://voice.example.com")
        );
        assert_eq!(c.flow, FlowSource::Parameter("/flow".into()));
        let c = config(&[("TWILIO_AUTH_TOKEN_PARAMETER", "/t")]).unwrap();
        assert_eq!((c.flow, c.public_base_url), (FlowSource::BuiltIn, None));
    }

    #[test]
    fn refuses_ambiguous_or_malformed_settings() {
        let both = config(&[
            ("TWILIO_AUTH_TOKEN_PARAMETER", "/t"),
            ("CALL_FLOW", "{}"),
            ("CALL_FLOW_PARAMETER", "/f"),
        ]);
        assert!(matches!(
            both,
            Err(ConfigError::Invalid {
                name: "CALL_FLOW",
                ..
            })
        ));
        for bad in ["voice.example.com", "ftp://x", "https://x/?a=1"] {
            let c = config(&[
                ("TWILIO_AUTH_TOKEN_PARAMETER", "/t"),
                ("PUBLIC_BASE_URL", bad),
            ]);
            assert!(
                matches!(
                    c,
                    Err(ConfigError::Invalid {
                        name: "PUBLIC_BASE_URL",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}

//! Start-up configuration, read once from the environment. A missing or malformed setting
//! stops the function at INIT with the setting's name.

use std::num::NonZeroU32;
use std::time::Duration;

use twilio_voice::calls::{CallPolicy, DEFAULT_API_BASE_URL};
use twilio_voice::credentials::{ApiAuthSpec, ApiCredentialSpec};
use twilio_voice::limits::{DEFAULT_TIME_LIMIT_SECONDS, TIME_LIMIT_SECONDS, is_https_url};
use twilio_voice::phone::{AllowList, PhoneNumber};
use twilio_voice::settings::Settings;
use twilio_voice::twiml::inspect::{self, GatedElements, UrlPrefixes};

#[derive(Debug, Clone)]
pub struct Config {
    pub credentials: ApiCredentialSpec,
    /// The caller used when an event names none.
    pub from: Option<PhoneNumber>,
    /// Where calls may go (`to`, inline TwiML's parties and URLs) and their default TimeLimit.
    pub policy: CallPolicy,
    pub api_base_url: String,
    /// `CALL_LEDGER_TABLE`: the DynamoDB table that makes every request dial at most once.
    pub ledger_table: Option<String>,
    /// `EVENT_BUS_NAME`: where `Call Failed` is published (none without it).
    pub event_bus: Option<String>,
    /// `STATUS_CALLBACK_URL`: incoming-call's `/status`, set on every call so the ledger learns
    /// the outcome; a call's own status callback rides in its query (`?forward=`).
    pub status_callback: Option<String>,
    /// `BULK_CALLS_QUEUE_URL`: the queue outbound-call consumes, where a call placed with
    /// `not_after` gets a message delayed until then that cancels it if Twilio still holds it
    /// (`expiry`). Required with `CALL_LEDGER_TABLE`: a deployment that keeps every call once
    /// keeps `not_after` too.
    pub bulk_calls_queue_url: Option<String>,
    /// `CALLS_PER_SECOND`: the account's CPS (Twilio's default is 1).
    pub calls_per_second: NonZeroU32,
    /// `BULK_MAX_CONCURRENCY`: the SQS event source mapping's `MaximumConcurrency`; each
    /// instance takes this share of the CPS.
    pub bulk_consumers: NonZeroU32,
    /// `BULK_BATCH_SIZE`: the SQS event source mapping's `BatchSize` (5 in template.yaml).
    pub bulk_batch_size: NonZeroU32,
    /// `FUNCTION_TIMEOUT_SECONDS`: the function's `Timeout` (28 in template.yaml).
    pub function_timeout: Duration,
    /// Phone alerts (README, "Phone alerts"); `None` unless `ALERT_STATE_MACHINE_ARN` or
    /// `ESCALATION_POLICIES_PARAMETER` is set.
    pub alerts: Option<AlertsConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// `ALERT_STATE_MACHINE_ARN`: the escalation alarms and `POST /alerts` start.
    pub state_machine_arn: String,
    /// `ESCALATION_POLICIES_PARAMETER`: the SSM parameter holding the escalation policies.
    pub policies_parameter: String,
    /// incoming-call's `/alert`, beside the `/status` of `STATUS_CALLBACK_URL`: what an alert
    /// call fetches.
    pub webhook: url::Url,
}

/// Defaults: template.yaml's values.
const DEFAULT_BULK_BATCH_SIZE: u32 = 5;
const DEFAULT_FUNCTION_TIMEOUT_SECONDS: u32 = 28;

/// A batch must fit the invocation at the pace: each instance places one call every
/// `BULK_MAX_CONCURRENCY / CALLS_PER_SECOND` seconds, so `BULK_BATCH_SIZE` of them take that
/// many intervals. A batch that does not fit leaves its last messages untried, reported back,
/// received again, and after `maxReceiveCount` in the dead-letter queue without ever having
/// been tried: refused at start-up instead, naming the settings.
fn check_batch_fits(
    batch: NonZeroU32,
    consumers: NonZeroU32,
    cps: NonZeroU32,
    timeout: Duration,
) -> Result<(), ConfigError> {
    let needed =
        Duration::from_secs(u64::from(batch.get()) * u64::from(consumers.get())) / cps.get();
    if needed <= timeout {
        return Ok(());
    }
    Err(ConfigError::invalid(
        "BULK_MAX_CONCURRENCY",
        format!(
            "a batch of {batch} (BULK_BATCH_SIZE) at one call every {consumers}/{cps} s \
             (BULK_MAX_CONCURRENCY / CALLS_PER_SECOND) takes {} s, more than the function's \
             {} s (FUNCTION_TIMEOUT_SECONDS): lower BULK_MAX_CONCURRENCY or BULK_BATCH_SIZE, \
             or raise CALLS_PER_SECOND to what Twilio allows the account",
            needed.as_secs_f32(),
            timeout.as_secs()
        ),
    ))
}

pub use twilio_voice::settings::SettingsError as ConfigError;

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let settings = Settings::new(lookup);
        let get = |name: &str| settings.get(name);
        let required = |name: &'static str| settings.required(name);

        let account_sid = required("TWILIO_ACCOUNT_SID_PARAMETER")?;
        let auth = match (
            get("TWILIO_API_KEY_SID_PARAMETER"),
            get("TWILIO_API_KEY_SECRET_PARAMETER"),
        ) {
            (Some(sid), Some(secret)) => ApiAuthSpec::ApiKey { sid, secret },
            (None, None) => ApiAuthSpec::AuthToken(required("TWILIO_AUTH_TOKEN_PARAMETER")?),
            (Some(_), None) => return Err(ConfigError::Missing("TWILIO_API_KEY_SECRET_PARAMETER")),
            (None, Some(_)) => return Err(ConfigError::Missing("TWILIO_API_KEY_SID_PARAMETER")),
        };
        let from = settings.parse("TWILIO_FROM_NUMBER", PhoneNumber::parse)?;
        let destinations = AllowList::parse(&required("ALLOWED_DESTINATION_PREFIXES")?)
            .map_err(|e| ConfigError::invalid("ALLOWED_DESTINATION_PREFIXES", e))?;
        let urls = settings
            .parse(inspect::URL_PREFIXES_SETTING, UrlPrefixes::parse)?
            .unwrap_or_default();
        let gated = settings
            .parse(inspect::GATED_ELEMENTS_SETTING, GatedElements::parse)?
            .unwrap_or_default();
        let default_time_limit = settings
            .parse("DEFAULT_TIME_LIMIT", |v| match v.parse::<u32>() {
                Ok(n) if TIME_LIMIT_SECONDS.contains(&n) => Ok(n),
                _ => Err("expected seconds, 1 to 14400"),
            })?
            .unwrap_or(DEFAULT_TIME_LIMIT_SECONDS);
        let api_base_url =
            get("TWILIO_API_BASE_URL").unwrap_or_else(|| DEFAULT_API_BASE_URL.to_owned());
        check_api_base_url(&api_base_url)?;
        let status_callback = settings.parse("STATUS_CALLBACK_URL", |v| {
            if is_https_url(v) {
                Ok(v.to_owned())
            } else {
                Err("expected an https:// URL (incoming-call's /status)")
            }
        })?;
        let alerts = alerts(&settings, status_callback.as_deref(), from.is_some())?;
        let positive = |v: &str| {
            v.parse::<NonZeroU32>()
                .map_err(|_| "expected a whole number from 1")
        };
        let calls_per_second = settings
            .parse("CALLS_PER_SECOND", positive)?
            .unwrap_or(NonZeroU32::MIN);
        let bulk_consumers = settings
            .parse("BULK_MAX_CONCURRENCY", positive)?
            .unwrap_or(NonZeroU32::new(2).expect("2 is not 0"));
        let bulk_batch_size = settings
            .parse("BULK_BATCH_SIZE", positive)?
            .unwrap_or(NonZeroU32::new(DEFAULT_BULK_BATCH_SIZE).expect("not 0"));
        let function_timeout = Duration::from_secs(u64::from(
            settings
                .parse("FUNCTION_TIMEOUT_SECONDS", positive)?
                .map_or(DEFAULT_FUNCTION_TIMEOUT_SECONDS, NonZeroU32::get),
        ));
        check_batch_fits(
            bulk_batch_size,
            bulk_consumers,
            calls_per_second,
            function_timeout,
        )?;
        let bulk_calls_queue_url = settings.parse("BULK_CALLS_QUEUE_URL", |v| {
            match url::Url::parse(v) {
                Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {
                    Ok(v.to_owned())
                }
                _ => Err("expected the queue's URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"),
            }
        })?;
        if get("CALL_LEDGER_TABLE").is_some() && bulk_calls_queue_url.is_none() {
            // Without it a call that Twilio holds past not_after rings late.
            return Err(ConfigError::Missing("BULK_CALLS_QUEUE_URL"));
        }
        if alerts.is_some() && get("CALL_LEDGER_TABLE").is_none() {
            // The ledger keeps each call's task token: without it no keypress could resume a step.
            return Err(ConfigError::Missing("CALL_LEDGER_TABLE"));
        }
        Ok(Self {
            alerts,
            ledger_table: get("CALL_LEDGER_TABLE"),
            bulk_calls_queue_url,
            event_bus: get("EVENT_BUS_NAME"),
            status_callback,
            calls_per_second,
            bulk_consumers,
            bulk_batch_size,
            function_timeout,
            credentials: ApiCredentialSpec { account_sid, auth },
            from,
            policy: CallPolicy {
                reach: inspect::Policy {
                    destinations,
                    urls,
                    gated,
                },
                default_time_limit,
            },
            api_base_url,
        })
    }
}

/// The alert settings, both or neither; with them, the settings an alert call needs.
fn alerts<F: Fn(&str) -> Option<String>>(
    settings: &Settings<F>,
    status_callback: Option<&str>,
    has_from: bool,
) -> Result<Option<AlertsConfig>, ConfigError> {
    let arn = settings.get("ALERT_STATE_MACHINE_ARN");
    let parameter = settings.get("ESCALATION_POLICIES_PARAMETER");
    let (state_machine_arn, policies_parameter) = match (arn, parameter) {
        (None, None) => return Ok(None),
        (Some(a), Some(p)) => (a, p),
        (Some(_), None) => return Err(ConfigError::Missing("ESCALATION_POLICIES_PARAMETER")),
        (None, Some(_)) => return Err(ConfigError::Missing("ALERT_STATE_MACHINE_ARN")),
    };
    if !(state_machine_arn.starts_with("arn:") && state_machine_arn.contains(":stateMachine:")) {
        return Err(ConfigError::invalid(
            "ALERT_STATE_MACHINE_ARN",
            "expected arn:aws:states:<region>:<account>:stateMachine:<name>",
        ));
    }
    let status_callback = status_callback.ok_or(ConfigError::Missing("STATUS_CALLBACK_URL"))?;
    if !has_from {
        return Err(ConfigError::Missing("TWILIO_FROM_NUMBER"));
    }
    // incoming-call serves /alert beside /status: the same base, so one setting says both.
    let webhook = url::Url::parse(status_callback)
        .ok()
        .filter(|u| u.path().ends_with("/status") && u.query().is_none())
        .and_then(|u| u.join("alert").ok())
        .ok_or_else(|| {
            ConfigError::invalid(
                "STATUS_CALLBACK_URL",
                "alerts need incoming-call's /status (no query): its /alert is beside it",
            )
        })?;
    Ok(Some(AlertsConfig {
        state_machine_arn,
        policies_parameter,
        webhook,
    }))
}

/// Credentials travel in the Authorization header: plain http only to a stand-in on loopback.
fn check_api_base_url(raw: &str) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::invalid("TWILIO_API_BASE_URL", reason);
    let url = url::Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(invalid("expected https:// (http:// only on loopback)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &[(&str, &str)] = &[
        ("TWILIO_ACCOUNT_SID_PARAMETER", "/twilio/account-sid"),
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/twilio/auth-token"),
        ("ALLOWED_DESTINATION_PREFIXES", "+81,+1"),
    ];

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_lookup(|name| {
            vars.iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        MINIMAL.iter().chain(extra).copied().collect()
    }

    #[test]
    fn a_batch_that_cannot_be_placed_within_the_timeout_is_refused_at_start_up() {
        // 5 × 5/1 s = 25 s fits 28 s; 5 × 6/1 s = 30 s does not.
        assert!(config(&with(&[("BULK_MAX_CONCURRENCY", "5")])).is_ok());
        for vars in [
            &[("BULK_MAX_CONCURRENCY", "6")][..],
            &[("BULK_BATCH_SIZE", "10"), ("BULK_MAX_CONCURRENCY", "3")][..],
            &[
                ("FUNCTION_TIMEOUT_SECONDS", "9"),
                ("BULK_MAX_CONCURRENCY", "2"),
            ][..],
        ] {
            match config(&with(vars)) {
                Err(ConfigError::Invalid { name, reason }) => {
                    assert_eq!(name, "BULK_MAX_CONCURRENCY", "{vars:?}");
                    for setting in [
                        "BULK_BATCH_SIZE",
                        "CALLS_PER_SECOND",
                        "FUNCTION_TIMEOUT_SECONDS",
                    ] {
                        assert!(reason.contains(setting), "{reason}");
                    }
                }
                other => panic!("{vars:?}: {other:?}"),
            }
        }
        // A higher CPS makes room again: 5 × 6/3 s = 10 s.
        assert!(
            config(&with(&[
                ("BULK_MAX_CONCURRENCY", "6"),
                ("CALLS_PER_SECOND", "3")
            ]))
            .is_ok()
        );
    }

    #[test]
    fn ledger_events_and_pace_settings() {
        let c = config(MINIMAL).unwrap();
        assert_eq!(
            (c.ledger_table, c.event_bus, c.status_callback),
            (None, None, None)
        );
        assert_eq!((c.calls_per_second.get(), c.bulk_consumers.get()), (1, 2));
        let queue = "https://sqs.ap-northeast-1.amazonaws.com/123456789012/bulk";
        let c = config(&with(&[
            ("CALL_LEDGER_TABLE", "ledger"),
            ("BULK_CALLS_QUEUE_URL", queue),
            ("EVENT_BUS_NAME", "calls"),
            ("STATUS_CALLBACK_URL", "https://example.com/status"),
            ("CALLS_PER_SECOND", "5"),
            ("BULK_MAX_CONCURRENCY", "10"),
        ]))
        .unwrap();
        assert_eq!(c.ledger_table.as_deref(), Some("ledger"));
        assert_eq!(c.bulk_calls_queue_url.as_deref(), Some(queue));
        // The ledger's deployment keeps not_after too: the expiry queue is required with it.
        assert_eq!(
            config(&with(&[("CALL_LEDGER_TABLE", "ledger")])).unwrap_err(),
            ConfigError::Missing("BULK_CALLS_QUEUE_URL")
        );
        assert_eq!(config(MINIMAL).unwrap().bulk_calls_queue_url, None);
        assert_eq!(c.event_bus.as_deref(), Some("calls"));
        assert_eq!(
            c.status_callback.as_deref(),
            Some("https://example.com/status")
        );
        assert_eq!((c.calls_per_second.get(), c.bulk_consumers.get()), (5, 10));
        for (name, bad) in [
            ("STATUS_CALLBACK_URL", "http://example.com/status"),
            ("CALLS_PER_SECOND", "0"),
            ("BULK_MAX_CONCURRENCY", "two"),
            ("BULK_CALLS_QUEUE_URL", "bulk"),
        ] {
            match config(&with(&[(name, bad)])) {
                Err(ConfigError::Invalid { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}={bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn alerts_need_their_two_settings_and_what_an_alert_call_uses() {
        assert_eq!(config(MINIMAL).unwrap().alerts, None);
        let full = [
            (
                "ALERT_STATE_MACHINE_ARN",
                "arn:aws:states:ap-northeast-1:123456789012:stateMachine:alerts",
            ),
            ("ESCALATION_POLICIES_PARAMETER", "/alerts/policies"),
            (
                "STATUS_CALLBACK_URL",
                "https://abc.lambda-url.ap-northeast-1.on.aws/status",
            ),
            ("CALL_LEDGER_TABLE", "ledger"),
            (
                "BULK_CALLS_QUEUE_URL",
                "https://sqs.ap-northeast-1.amazonaws.com/123456789012/bulk",
            ),
            ("TWILIO_FROM_NUMBER", "+815012345678"),
        ];
        let c = config(&with(&full)).unwrap().alerts.unwrap();
        assert_eq!(c.policies_parameter, "/alerts/policies");
        assert_eq!(
            c.webhook.as_str(),
            "https://abc.lambda-url.ap-northeast-1.on.aws/alert"
        );
        for name in [
            "ALERT_STATE_MACHINE_ARN",
            "ESCALATION_POLICIES_PARAMETER",
            "STATUS_CALLBACK_URL",
            "CALL_LEDGER_TABLE",
            "TWILIO_FROM_NUMBER",
        ] {
            let without: Vec<_> = with(&full)
                .into_iter()
                .filter(|(k, _)| *k != name)
                .collect();
            assert_eq!(config(&without).unwrap_err(), ConfigError::Missing(name));
        }
        for (name, bad) in [
            ("ALERT_STATE_MACHINE_ARN", "alerts"),
            ("STATUS_CALLBACK_URL", "https://example.com/hooks"),
            ("STATUS_CALLBACK_URL", "https://example.com/status?x=1"),
        ] {
            let mut vars = with(&full);
            vars.push((name, bad));
            match config(&vars) {
                Err(ConfigError::Invalid { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}={bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn minimal_configuration_uses_twilio_and_the_auth_token() {
        let c = config(MINIMAL).unwrap();
        assert_eq!(c.api_base_url, "https://api.twilio.com");
        assert!(
            matches!(c.credentials.auth, ApiAuthSpec::AuthToken(ref n) if n == "/twilio/auth-token")
        );
        assert_eq!(c.from, None);
        assert_eq!(c.policy.default_time_limit, 3600);
        assert!(
            c.policy.reach.urls.is_empty(),
            "no TwiML URL unless configured"
        );
        assert_eq!(c.policy.reach.gated, GatedElements::default());
    }

    #[test]
    fn twiml_reach_and_time_limit_are_configurable() {
        let c = config(&with(&[
            (
                "ALLOWED_TWIML_URL_PREFIXES",
                "https://demo.twilio.com/, https://example.com/twiml",
            ),
            ("ALLOWED_TWIML_ELEMENTS", "Sip,Conference"),
            ("DEFAULT_TIME_LIMIT", "600"),
        ]))
        .unwrap();
        assert!(
            c.policy
                .reach
                .urls
                .check("https://example.com/twiml/a")
                .is_ok()
        );
        assert!(c.policy.reach.gated.allows(inspect::Gated::Conference));
        assert!(!c.policy.reach.gated.allows(inspect::Gated::Client));
        assert_eq!(c.policy.default_time_limit, 600);
    }

    #[test]
    fn each_required_setting_is_named_when_missing() {
        for name in [
            "TWILIO_ACCOUNT_SID_PARAMETER",
            "TWILIO_AUTH_TOKEN_PARAMETER",
            "ALLOWED_DESTINATION_PREFIXES",
        ] {
            let vars: Vec<_> = MINIMAL
                .iter()
                .filter(|(k, _)| *k != name)
                .copied()
                .collect();
            assert_eq!(config(&vars).unwrap_err(), ConfigError::Missing(name));
        }
    }

    #[test]
    fn api_key_pair_replaces_the_auth_token() {
        let vars: Vec<_> = MINIMAL
            .iter()
            .filter(|(k, _)| *k != "TWILIO_AUTH_TOKEN_PARAMETER")
            .copied()
            .chain([
                ("TWILIO_API_KEY_SID_PARAMETER", "/k"),
                ("TWILIO_API_KEY_SECRET_PARAMETER", "/s"),
            ])
            .collect();
        let c = config(&vars).unwrap();
        assert!(matches!(c.credentials.auth, ApiAuthSpec::ApiKey { .. }));
        let half = with(&[("TWILIO_API_KEY_SID_PARAMETER", "/k")]);
        assert_eq!(
            config(&half).unwrap_err(),
            ConfigError::Missing("TWILIO_API_KEY_SECRET_PARAMETER")
        );
    }

    #[test]
    fn malformed_settings_are_refused() {
        for (name, value) in [
            ("TWILIO_FROM_NUMBER", "03-1234-5678"),
            ("ALLOWED_DESTINATION_PREFIXES", "81"),
            ("TWILIO_API_BASE_URL", "http://api.twilio.com"),
            ("TWILIO_API_BASE_URL", "not a url"),
            ("ALLOWED_TWIML_URL_PREFIXES", "http://demo.twilio.com/"),
            ("ALLOWED_TWIML_URL_PREFIXES", "https://demo.twilio.com/?x=1"),
            ("ALLOWED_TWIML_ELEMENTS", "sip"),
            ("DEFAULT_TIME_LIMIT", "0"),
            ("DEFAULT_TIME_LIMIT", "14401"),
            ("DEFAULT_TIME_LIMIT", "1h"),
        ] {
            let err = config(&with(&[(name, value)])).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { name: n, .. } if n == name),
                "{name}={value}: {err}"
            );
        }
        let local = config(&with(&[("TWILIO_API_BASE_URL", "http://127.0.0.1:4010")])).unwrap();
        assert_eq!(local.api_base_url, "http://127.0.0.1:4010");
    }
}

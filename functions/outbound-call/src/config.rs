//! Start-up configuration, read once from the environment. A missing or malformed setting
//! stops the function at INIT with the setting's name.

use twilio_voice::calls::DEFAULT_API_BASE_URL;
use twilio_voice::credentials::{ApiAuthSpec, ApiCredentialSpec};
use twilio_voice::phone::{AllowList, PhoneNumber};
use twilio_voice::settings::Settings;

#[derive(Debug, Clone)]
pub struct Config {
    pub credentials: ApiCredentialSpec,
    /// The caller used when an event names none.
    pub from: Option<PhoneNumber>,
    pub allowed_destinations: AllowList,
    pub api_base_url: String,
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
        let allowed_destinations = AllowList::parse(&required("ALLOWED_DESTINATION_PREFIXES")?)
            .map_err(|e| ConfigError::invalid("ALLOWED_DESTINATION_PREFIXES", e))?;
        let api_base_url =
            get("TWILIO_API_BASE_URL").unwrap_or_else(|| DEFAULT_API_BASE_URL.to_owned());
        check_api_base_url(&api_base_url)?;
        Ok(Self {
            credentials: ApiCredentialSpec { account_sid, auth },
            from,
            allowed_destinations,
            api_base_url,
        })
    }
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
    fn minimal_configuration_uses_twilio_and_the_auth_token() {
        let c = config(MINIMAL).unwrap();
        assert_eq!(c.api_base_url, "https://api.twilio.com");
        assert!(
            matches!(c.credentials.auth, ApiAuthSpec::AuthToken(ref n) if n == "/twilio/auth-token")
        );
        assert_eq!(c.from, None);
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

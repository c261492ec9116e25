//! Settings read once at start-up (the environment, or pairs in tests). Values are trimmed and a
//! blank value counts as unset; a missing or malformed setting is an error naming it.

use std::fmt::Display;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("missing required setting {0}")]
    Missing(&'static str),
    #[error("setting {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

impl SettingsError {
    pub fn invalid(name: &'static str, reason: impl Display) -> Self {
        Self::Invalid {
            name,
            reason: reason.to_string(),
        }
    }
}

/// A lookup of settings by name.
pub struct Settings<F>(F);

impl<F: Fn(&str) -> Option<String>> Settings<F> {
    pub fn new(lookup: F) -> Self {
        Self(lookup)
    }

    /// The trimmed value; blank counts as unset.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, SettingsError> {
        self.get(name).ok_or(SettingsError::Missing(name))
    }

    /// An optional setting read by `parse`, whose error is reported under the setting's name.
    pub fn parse<T, E: Display>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, SettingsError> {
        self.get(name)
            .map(|v| parse(&v).map_err(|e| SettingsError::invalid(name, e)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_is_unset_and_values_are_trimmed() {
        let s = Settings::new(|n| match n {
            "A" => Some(" x ".to_owned()),
            "B" => Some("  ".to_owned()),
            _ => None,
        });
        assert_eq!(s.get("A").as_deref(), Some("x"));
        assert_eq!(s.get("B"), None);
        assert_eq!(s.required("B"), Err(SettingsError::Missing("B")));
        assert_eq!(
            s.parse("A", |v| v.parse::<u8>()).unwrap_err().to_string(),
            "setting A is invalid: invalid digit found in string"
        );
        assert_eq!(s.parse("C", |v| v.parse::<u8>()), Ok(None));
    }
}

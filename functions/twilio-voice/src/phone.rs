//! E.164 phone numbers, masking for logs, and the destination allow-list that guards against
//! toll fraud (traffic pumped to premium-rate numbers at the account owner's expense).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A phone number in E.164 form: `+`, a non-zero digit, then 1–14 more ASCII digits.
///
/// `Debug` and `Display` mask the number so that it can be logged; [`PhoneNumber::as_str`] gives
/// the full number for the wire.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("not an E.164 phone number (expected + and 2 to 15 ASCII digits): {masked}")]
    NotE164 { masked: String },
    #[error("destination {masked} is not in the allowed prefixes ({allowed})")]
    NotAllowed { masked: String, allowed: String },
    #[error("invalid allowed prefix {0:?}: expected + followed by up to 15 ASCII digits")]
    BadPrefix(String),
    #[error("the allow-list of destination prefixes is empty")]
    EmptyAllowList,
}

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, PhoneError> {
        let digits = raw.strip_prefix('+').unwrap_or("");
        let valid = raw.starts_with('+')
            && (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(PhoneError::NotE164 { masked: mask(raw) })
        }
    }

    /// The full number, for the Twilio API and TwiML only: never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PhoneNumber {
    type Err = PhoneError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// The full number: for documents that go to whoever needs it (the ledger, an alert's
/// acknowledgement), never to a log.
impl Serialize for PhoneNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask(&self.0))
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", mask(&self.0))
    }
}

/// Masks anything that may be a phone number or caller identity for logs: keeps the first three
/// and last two characters of a long value (enough to tell country and line apart), nothing of a
/// short one.
pub fn mask(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() < 8 {
        return "***".to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 5))
}

/// Masks every run of six or more digits (with its `+`) in free text, such as the phone numbers
/// Twilio echoes in its error messages or serde repeats in its own. Any script's digits count
/// (`＋８１…` is as much a phone number in a log as `+81…`).
pub fn mask_digits(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let digits = run.trim_start_matches(['+', '＋']).chars().count();
        out.push_str(&if digits >= 6 { mask(run) } else { run.clone() });
        run.clear();
    };
    for c in text.chars() {
        if c.is_numeric() || (matches!(c, '+' | '＋') && run.is_empty()) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// The destinations outbound calls may reach: E.164 prefixes such as `+81` or `+1415`.
/// A lone `+` allows every E.164 number and must be written out on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    prefixes: Vec<String>,
}

impl AllowList {
    /// Parses a comma-separated list (`"+81, +1"`); blanks between commas are ignored.
    pub fn parse(list: &str) -> Result<Self, PhoneError> {
        let prefixes = list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                let digits = p.strip_prefix('+').unwrap_or("x");
                let ok = digits.len() <= 15
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && !digits.starts_with('0');
                ok.then(|| p.to_owned())
                    .ok_or_else(|| PhoneError::BadPrefix(p.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if prefixes.is_empty() {
            return Err(PhoneError::EmptyAllowList);
        }
        Ok(Self { prefixes })
    }

    pub fn check(&self, number: &PhoneNumber) -> Result<(), PhoneError> {
        if self.prefixes.iter().any(|p| number.0.starts_with(p)) {
            Ok(())
        } else {
            Err(PhoneError::NotAllowed {
                masked: mask(&number.0),
                allowed: self.prefixes.join(","),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_e164_numbers() {
        for n in ["+81312345678", "+14155550100", "+12", "+123456789012345"] {
            assert_eq!(PhoneNumber::parse(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn rejects_look_alikes_and_non_e164() {
        for n in [
            "",
            "+",
            "+1",
            "81312345678",
            "+0312345678",
            "+1234567890123456",
            "＋81312345678",
            "+٨١٣١٢٣٤٥٦٧٨",
            "+８１312345678",
            "+81 3 1234 5678",
            "+81-3-1234-5678",
            " +81312345678",
            "+81312345678\n",
            "sip:alice@example.com",
            "client:alice",
            "+8131234567a",
        ] {
            assert!(
                matches!(PhoneNumber::parse(n), Err(PhoneError::NotE164 { .. })),
                "{n:?} should be refused"
            );
        }
    }

    #[test]
    fn display_and_debug_mask_the_number() {
        let n = PhoneNumber::parse("+81312345678").unwrap();
        assert_eq!(n.to_string(), "+81*******78");
        assert_eq!(format!("{n:?}"), "PhoneNumber(+81*******78)");
        assert!(!format!("{n} {n:?}").contains("312345678"));
        let err = PhoneNumber::parse("+0312345678").unwrap_err().to_string();
        assert!(!err.contains("0312345678"), "{err}");
    }

    #[test]
    fn mask_hides_short_values_entirely() {
        assert_eq!(mask("+1234"), "***");
        assert_eq!(mask("anonymous"), "ano****us");
    }

    #[test]
    fn mask_digits_hides_numbers_in_text() {
        assert_eq!(
            mask_digits("The 'To' number +81312345678 is not valid (code 21211, 815551234)."),
            "The 'To' number +81*******78 is not valid (code 21211, 815****34)."
        );
        assert_eq!(mask_digits("a+b 12345"), "a+b 12345");
        assert_eq!(
            mask_digits("invalid type: integer `819012345678`, expected a string"),
            "invalid type: integer `819*******78`, expected a string"
        );
        assert_eq!(
            mask_digits("unknown variant `＋８１９０１２３４５６７８`"),
            "unknown variant `＋８１********７８`"
        );
        assert_eq!(mask_digits("+٨١٩٠١٢٣٤٥٦٧٨"), "+٨١********٧٨");
    }

    #[test]
    fn allow_list_matches_prefixes() {
        let list = AllowList::parse("+81, +1415,").unwrap();
        assert!(list.check(&"+81312345678".parse().unwrap()).is_ok());
        assert!(list.check(&"+14155550100".parse().unwrap()).is_ok());
        let err = list.check(&"+14165550100".parse().unwrap()).unwrap_err();
        assert!(matches!(err, PhoneError::NotAllowed { .. }));
        assert!(err.to_string().contains("+81,+1415"));
        assert!(!err.to_string().contains("4165550100"));
        assert!(
            AllowList::parse("+")
                .unwrap()
                .check(&"+882123456".parse().unwrap())
                .is_ok()
        );
    }

    #[test]
    fn allow_list_refuses_bad_or_empty_lists() {
        assert_eq!(AllowList::parse(" , "), Err(PhoneError::EmptyAllowList));
        for bad in ["81", "+81a", "*", "+０"] {
            assert!(
                matches!(AllowList::parse(bad), Err(PhoneError::BadPrefix(_))),
                "{bad}"
            );
        }
    }
}

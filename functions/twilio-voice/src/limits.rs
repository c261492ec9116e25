//! Twilio's published limits, and the caps we add to bound what a call can cost, declared once.
//! The Calls API client checks requests against them; the call flow is to use the same values.

use std::ops::RangeInclusive;

/// Inline TwiML longer than this is refused by Twilio (error 32018). Characters, not bytes.
pub const TWIML_MAX_CHARS: usize = 4000;
/// Seconds a call may ring (`Timeout`): Twilio's range.
pub const RING_TIMEOUT_SECONDS: RangeInclusive<u32> = 1..=600;
/// Longest call (`TimeLimit`), in seconds: Twilio's range (4 hours).
pub const TIME_LIMIT_SECONDS: RangeInclusive<u32> = 1..=14_400;
/// `TimeLimit` given to an outbound call that names none (overridable by configuration): a
/// stuck call must not run for Twilio's 4 hours.
pub const DEFAULT_TIME_LIMIT_SECONDS: u32 = 3_600;
/// `SendDigits`: at most this many of `0-9 * # w W`.
pub const SEND_DIGITS_MAX: usize = 32;
/// `<Say loop>` / `<Play loop>`: Twilio reads 0 as "forever"; we allow 1 to 10.
pub const LOOP_COUNT: RangeInclusive<u32> = 1..=10;
/// `<Record maxLength>`: our cap for a voicemail, 10 minutes (Twilio's default is 3600 s).
pub const RECORD_MAX_LENGTH_SECONDS: RangeInclusive<u32> = 1..=600;
/// E.164: a country code and subscriber number of at most 15 digits in all.
pub const E164_DIGITS: RangeInclusive<usize> = 2..=15;

/// The one rule for a URL we hand to Twilio (TwiML, callbacks): `https://` and a host, and no
/// whitespace or control character anywhere. The URL goes to Twilio as written, so the parser's
/// leniency (trimmed spaces, dropped tabs, `https:///host`) must not let through what Twilio
/// would read otherwise.
pub fn is_https_url(url: &str) -> bool {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let authority = url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        && !url[8..].starts_with(['/', '\\']);
    if !authority {
        return false;
    }
    matches!(url::Url::parse(url), Ok(u) if u.scheme() == "https" && u.host().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_rule() {
        for good in ["https://example.com", "https://example.com/a?b=c#d"] {
            assert!(is_https_url(good), "{good}");
        }
        for bad in [
            "http://example.com",
            "ftp://example.com",
            " https://example.com",
            "https://example.com/\t",
            "https://exa mple.com",
            "https:///path",
            "https:\\\\example.com",
            r"https://\example.com",
            "/relative",
            "",
        ] {
            assert!(!is_https_url(bad), "{bad:?}");
        }
    }
}

//! What the outbound tests share: one configuration built from one set of variables, and the
//! credentials behind it.
#![allow(dead_code)] // each test file uses its own part

use outbound_call::config::Config;

pub const SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TOKEN: &str = "test-auth-token-not-a-secret";
/// The SSM parameters the configuration names, as a mock SSM holds them.
pub const CREDENTIALS: &[(&str, &str)] =
    &[("/twilio/account-sid", SID), ("/twilio/auth-token", TOKEN)];
/// Where the sample events' TwiML URL lives.
pub const TWIML_URL_PREFIXES: &str = "https://demo.twilio.com/";

/// The configuration every outbound test starts from, pointed at `api_base_url`; `extra`
/// settings are added on top (a later pair wins).
pub fn config(api_base_url: &str, extra: &[(&str, &str)]) -> Config {
    let mut vars = vec![
        ("TWILIO_ACCOUNT_SID_PARAMETER", "/twilio/account-sid"),
        ("TWILIO_AUTH_TOKEN_PARAMETER", "/twilio/auth-token"),
        ("TWILIO_FROM_NUMBER", "+15005550006"),
        ("ALLOWED_DESTINATION_PREFIXES", "+81,+1"),
        ("ALLOWED_TWIML_URL_PREFIXES", TWIML_URL_PREFIXES),
        ("TWILIO_API_BASE_URL", api_base_url),
    ];
    vars.extend_from_slice(extra);
    Config::from_lookup(test_support::vars(&vars)).expect("the test configuration is valid")
}

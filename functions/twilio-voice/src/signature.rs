//! `X-Twilio-Signature` validation, exactly as Twilio's helper libraries do it.
//!
//! The string to sign is the URL Twilio requested, then every form parameter's name and value,
//! names in byte order, the values of a repeated name de-duplicated and sorted. It is signed with
//! HMAC-SHA1 keyed by the account's primary auth token, and base64-encoded. JSON bodies are
//! covered by a `bodySHA256` query parameter instead of the parameters. Like the official
//! libraries, the URL is tried with its port removed and with the default port added.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::credentials::AuthToken;

/// What Twilio signed besides the URL.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    /// Decoded form parameters of a POST, in any order, repeats allowed. A GET has none: its
    /// parameters are in the URL's query string, which is signed as part of the URL.
    Params(&'a [(Cow<'a, str>, Cow<'a, str>)]),
    /// A body that is not form-encoded (JSON): the URL must carry `bodySHA256`.
    Body(&'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Twilio-Signature header is missing")]
    Missing,
    #[error("the X-Twilio-Signature header is not a base64 HMAC-SHA1")]
    Malformed,
    #[error("the signature does not match the URL and parameters for any configured auth token")]
    Mismatch,
    #[error("a non-form body arrived without a bodySHA256 query parameter")]
    BodyHashMissing,
    #[error("the body's SHA-256 does not match the bodySHA256 query parameter")]
    BodyHashMismatch,
}

/// Checks a webhook's signature against each token in turn (the current one, then the one being
/// rotated out). `Ok` only when the signature matches and, for a JSON body, so does its hash.
///
/// The URL as given is tried first and its port variant only when that fails, so a genuine
/// webhook costs one HMAC. Stopping at the first match tells a timing observer which candidate
/// matched, nothing about the tokens: each comparison is constant-time.
pub fn validate<'t>(
    url: &str,
    payload: Payload<'_>,
    signature: Option<&str>,
    tokens: impl IntoIterator<Item = &'t AuthToken>,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::Missing)?;
    let mut expected = [0u8; 32];
    let len = BASE64
        .decode_slice(signature, &mut expected)
        .map_err(|_| SignatureError::Malformed)?;
    if len != 20 {
        return Err(SignatureError::Malformed);
    }
    let expected = &expected[..len];

    let params = match payload {
        Payload::Params(params) => sorted(params),
        Payload::Body(body) => {
            check_body_hash(url, body)?;
            Vec::new()
        }
    };

    let mut other_port: Option<Cow<'_, str>> = None;
    for token in tokens {
        if mac(token, url, &params).verify_slice(expected).is_ok() {
            return Ok(());
        }
        let other = other_port.get_or_insert_with(|| port_variant(url));
        if mac(token, other, &params).verify_slice(expected).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// The signature Twilio would send for `url` and `params` (for tests, tools and benchmarks).
pub fn sign<'a>(url: &str, params: &[(Cow<'a, str>, Cow<'a, str>)], token: &AuthToken) -> String {
    BASE64.encode(mac(token, url, &sorted(params)).finalize().into_bytes())
}

/// The `bodySHA256` value for a JSON body: lowercase hex SHA-256.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// HMAC-SHA1 of the string to sign, fed piece by piece rather than built: the URL, then each
/// name and value in order.
fn mac(token: &AuthToken, url: &str, params: &[(&str, &str)]) -> Hmac<Sha1> {
    let mut mac = Hmac::<Sha1>::new_from_slice(token.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in params {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// Parameters in signing order: names in byte order, a repeated name's values sorted, and a
/// repeated name-value pair signed once.
fn sorted<'a>(params: &'a [(Cow<'_, str>, Cow<'_, str>)]) -> Vec<(&'a str, &'a str)> {
    let mut sorted: Vec<(&str, &str)> = params.iter().map(|(k, v)| (&**k, &**v)).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

fn check_body_hash(url: &str, body: &[u8]) -> Result<(), SignatureError> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let query = query.split('#').next().unwrap_or("");
    let claimed = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v)
        .ok_or(SignatureError::BodyHashMissing)?;
    let actual = body_sha256(body);
    if bool::from(actual.as_bytes().ct_eq(claimed.as_bytes())) {
        Ok(())
    } else {
        Err(SignatureError::BodyHashMismatch)
    }
}

/// The URL with the default port added when it has none, or with its port removed when it has
/// one: the form Twilio may have signed if it is not the URL as received.
fn port_variant(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    // A colon after an IPv6 literal's closing bracket (or in a plain host) starts the port.
    let port_colon = match host_port.rfind(']') {
        Some(bracket) => host_port[bracket..].find(':').map(|i| i + bracket),
        None => host_port.rfind(':'),
    };
    match port_colon {
        Some(colon) => Cow::Owned(format!(
            "{scheme}://{}{}{tail}",
            &authority[..host_start],
            &host_port[..colon]
        )),
        None => {
            let port = if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            };
            Cow::Owned(format!("{scheme}://{authority}:{port}{tail}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> AuthToken {
        AuthToken::new("12345")
    }

    fn pairs(list: &[(&'static str, &'static str)]) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
        list.iter()
            .map(|&(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v)))
            .collect()
    }

    fn official_params() -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
        pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const JSON_BODY: &str = r#"{"property": "value", "boolean": true}"#;
    const JSON_HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";

    fn ok(url: &str, payload: Payload<'_>, sig: &str) -> bool {
        validate(url, payload, Some(sig), [&token()]).is_ok()
    }

    #[test]
    fn official_vector_params() {
        let params = official_params();
        assert_eq!(sign(URL, &params, &token()), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
        assert!(ok(
            URL,
            Payload::Params(&params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn official_vectors_ports() {
        let params = official_params();
        let p = Payload::Params(&params);
        assert!(ok(
            "https://mycompany.com:1234/myapp.php?foo=1&bar=2",
            p,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(ok(
            "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
            p,
            "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="
        ));
        assert!(ok(URL, p, "kvajT1Ptam85bY51eRf/AJRuM3w="));
        assert!(ok(
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            p,
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
        assert_eq!(
            sign(
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &params,
                &token()
            ),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
    }

    #[test]
    fn official_vector_repeated_keys() {
        let params = pairs(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert!(ok(
            URL,
            Payload::Params(&params),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        ));
    }

    #[test]
    fn official_vectors_json_body() {
        assert_eq!(body_sha256(JSON_BODY.as_bytes()), JSON_HASH);
        let body = Payload::Body(JSON_BODY.as_bytes());
        let with_hash = format!("{URL}&bodySHA256={JSON_HASH}");
        assert!(ok(&with_hash, body, "a9nBmqA0ju/hNViExpshrM61xv4="));
        let only_hash = format!("https://mycompany.com/myapp.php?bodySHA256={JSON_HASH}");
        assert!(ok(&only_hash, body, "y77kIzt2vzLz71DgmJGsen2scGs="));

        let empty_hash = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert_eq!(body_sha256(b"{}"), empty_hash);
        let url = format!("{URL}&bodySHA256={empty_hash}");
        assert!(ok(
            &url,
            Payload::Body(b"{}"),
            "Ldidvp12m26NI7eqEvxnEpkd9Hc="
        ));
    }

    #[test]
    fn official_vectors_userinfo() {
        let params = official_params();
        let p = Payload::Params(&params);
        assert!(ok(
            "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
            p,
            "CukzLTc1tT5dXEDIHm/tKBanW10="
        ));
        assert!(ok(
            "https://user@mycompany.com/myapp.php?foo=1&bar=2",
            p,
            "2YRLlVAflCqxaNicjMpJcSTgzSs="
        ));
    }

    #[test]
    fn official_negative_cases() {
        let params = official_params();
        let p = Payload::Params(&params);
        let good = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert_eq!(
            validate(URL, p, Some("SSOYDt4T1cUTdK1PDd93/VVr8B8="), [&token()]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            validate(URL, p, None, [&token()]),
            Err(SignatureError::Missing)
        );
        let extra = format!("{URL}&somethingUnexpected=true");
        assert_eq!(
            validate(&extra, p, Some(good), [&token()]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            validate(URL, p, Some(good), [&AuthToken::new("54321")]),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn json_body_hash_must_match_and_exist() {
        let with_hash = format!("{URL}&bodySHA256={JSON_HASH}");
        let sig = "a9nBmqA0ju/hNViExpshrM61xv4=";
        assert_eq!(
            validate(
                &with_hash,
                Payload::Body(b"{\"property\": \"other\"}"),
                Some(sig),
                [&token()]
            ),
            Err(SignatureError::BodyHashMismatch)
        );
        assert_eq!(
            validate(
                URL,
                Payload::Body(JSON_BODY.as_bytes()),
                Some(sig),
                [&token()]
            ),
            Err(SignatureError::BodyHashMissing)
        );
        let upper = format!("{URL}&bodySHA256={}", JSON_HASH.to_uppercase());
        assert_eq!(
            validate(
                &upper,
                Payload::Body(JSON_BODY.as_bytes()),
                Some(sig),
                [&token()]
            ),
            Err(SignatureError::BodyHashMismatch)
        );
    }

    #[test]
    fn blank_values_are_signed() {
        let with_blank = pairs(&[("From", "+14158675309"), ("ForwardedFrom", "")]);
        let without = pairs(&[("From", "+14158675309")]);
        let sig = sign(URL, &with_blank, &token());
        assert_ne!(sig, sign(URL, &without, &token()));
        assert!(ok(URL, Payload::Params(&with_blank), &sig));
        assert!(!ok(URL, Payload::Params(&without), &sig));
    }

    #[test]
    fn names_sort_by_byte_order() {
        // Uppercase sorts before lowercase; a mis-sorted implementation signs a different string.
        let params = pairs(&[("b", "2"), ("B", "1"), ("a", "3"), ("a", "1"), ("a", "3")]);
        assert_eq!(
            sorted(&params),
            [("B", "1"), ("a", "1"), ("a", "3"), ("b", "2")]
        );
        // The MAC is over the concatenation, in that order.
        let direct = Hmac::<Sha1>::new_from_slice(b"12345")
            .unwrap()
            .chain_update(b"uB1a1a3b2")
            .finalize()
            .into_bytes();
        assert_eq!(
            sign("u", &params, &token()),
            BASE64.encode(direct),
            "signed in byte order, duplicates once"
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let params = official_params();
        for bad in [
            "",
            "not base64!",
            "AAAA",
            "RSOYDt4T1cUTdK1PDd93/VVr8B8=AAAA",
        ] {
            assert_eq!(
                validate(URL, Payload::Params(&params), Some(bad), [&token()]),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn previous_token_is_accepted_during_rotation() {
        let params = official_params();
        let new = AuthToken::new("new-token");
        assert!(
            validate(
                URL,
                Payload::Params(&params),
                Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="),
                [&new, &token()]
            )
            .is_ok()
        );
        assert_eq!(
            validate(
                URL,
                Payload::Params(&params),
                Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="),
                [&new]
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn no_tokens_never_validates() {
        let params = official_params();
        let none: [&AuthToken; 0] = [];
        assert_eq!(
            validate(
                URL,
                Payload::Params(&params),
                Some("RSOYDt4T1cUTdK1PDd93/VVr8B8="),
                none
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn port_variant_adds_or_removes_the_port() {
        let v = |u| port_variant(u).into_owned();
        assert_eq!(v("https://h/x"), "https://h:443/x");
        assert_eq!(v("http://h?q=1"), "http://h:80?q=1");
        assert_eq!(v("https://h:9000/x"), "https://h/x");
        assert_eq!(v("https://u:p@h/x"), "https://u:p@h:443/x");
        assert_eq!(v("https://[::1]:8443/"), "https://[::1]/");
        assert_eq!(v("https://[::1]/"), "https://[::1]:443/");
        assert_eq!(v("no-scheme"), "no-scheme");
    }
}

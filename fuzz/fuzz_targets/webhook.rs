//! The webhook path: raw event → body decode → form parse → signature check. No input may
//! panic, and a signature is only ever accepted when it is the one Twilio would compute.
#![no_main]

use std::borrow::Cow;

use base64::Engine as _;
use incoming_call::webhook::Webhook;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use libfuzzer_sys::{arbitrary, fuzz_target};
use twilio_voice::credentials::AuthToken;
use twilio_voice::signature;

#[derive(Debug, arbitrary::Arbitrary)]
enum Input<'a> {
    /// Any bytes as the raw Lambda event.
    Raw(&'a [u8]),
    /// A well-formed event with fuzzed parts.
    Parts {
        get: bool,
        base64: bool,
        json: bool,
        path: &'a str,
        query: &'a str,
        host: &'a str,
        body: &'a [u8],
        signature: Option<&'a str>,
        sign_it: bool,
    },
}

fuzz_target!(|input: Input<'_>| {
    let token = AuthToken::new("0123456789abcdef0123456789abcdef");
    let event: ApiGatewayV2httpRequest = match input {
        Input::Raw(bytes) => match serde_json::from_slice(bytes) {
            Ok(event) => event,
            Err(_) => return,
        },
        Input::Parts {
            get,
            base64,
            json,
            path,
            query,
            host,
            body,
            signature: sig,
            sign_it,
        } => {
            let body_text = if base64 {
                base64::engine::general_purpose::STANDARD.encode(body)
            } else {
                String::from_utf8_lossy(body).into_owned()
            };
            let mut headers = serde_json::json!({"host": host, "content-type": if json { "application/json" } else { "application/x-www-form-urlencoded" }});
            if let Some(sig) = sig {
                headers["x-twilio-signature"] = sig.into();
            }
            let value = serde_json::json!({
                "version": "2.0", "rawPath": path, "rawQueryString": query, "headers": headers,
                "requestContext": {"http": {"method": if get { "GET" } else { "POST" }, "path": path}, "domainName": host},
                "body": body_text, "isBase64Encoded": base64,
            });
            let Ok(mut event) = serde_json::from_value::<ApiGatewayV2httpRequest>(value) else {
                return;
            };
            if sign_it {
                // Sign what the handler will see, so the accepting path is explored too. A
                // signature-shaped placeholder first: read refuses a request without one.
                event.headers.insert(
                    "x-twilio-signature",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".parse().unwrap(),
                );
                if let Ok(w) = Webhook::read(&event, None) {
                    let params: Vec<(Cow<'_, str>, Cow<'_, str>)> = if get || json {
                        vec![]
                    } else {
                        form_urlencoded_pairs(&event)
                    };
                    let s = signature::sign(w.url(), &params, &token);
                    if let Ok(v) = s.parse() {
                        event.headers.insert("x-twilio-signature", v);
                    }
                }
            }
            event
        }
    };
    let Ok(webhook) = Webhook::read(&event, None) else {
        return;
    };
    if webhook.verify([&token]).is_ok() {
        // Accepted: the header must be exactly a signature of this URL, or of its port
        // variants (without the port, with the default port), recomputed here.
        let header = event
            .headers
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .expect("accepted without a signature");
        let params: Vec<(Cow<'_, str>, Cow<'_, str>)> = if event.request_context.http.method
            == lambda_http::http::Method::GET
            || header_is_json(&event)
        {
            vec![]
        } else {
            form_urlencoded_pairs(&event)
        };
        let expected: Vec<String> = url_variants(webhook.url())
            .iter()
            .map(|url| signature::sign(url, &params, &token))
            .collect();
        assert!(
            expected.iter().any(|s| s == header),
            "accepted a header that is no signature of {:?}",
            webhook.url()
        );
    }
});

fn header_is_json(event: &ApiGatewayV2httpRequest) -> bool {
    event
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("application/json"))
}

/// The URL as given, without its port, and with the scheme's default port: the forms Twilio's
/// own validators accept.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let default = if scheme == "https" { "443" } else { "80" };
    out.push(format!("{scheme}://{host}{tail}"));
    out.push(format!("{scheme}://{host}:{default}{tail}"));
    out
}

fn form_urlencoded_pairs(
    event: &ApiGatewayV2httpRequest,
) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
    let bytes = twilio_voice::http_event::body_bytes(event, usize::MAX).unwrap_or_default();
    form_urlencoded::parse(&bytes)
        .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
        .collect()
}

//! The adapter between Lambda's HTTP events (a Function URL or an HTTP API, payload 2.0) and the
//! two functions: the body as bytes, and responses with a content type. It is the one module of
//! this crate that knows Lambda's event types; the domain modules never see them.

use base64::Engine as _;
use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::aws_lambda_events::encodings::Body;
use lambda_http::http::{HeaderValue, header};

/// Why an event's body cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid base64")]
    NotBase64,
    #[error("body larger than {max} bytes")]
    TooLarge { max: usize },
}

/// The body's bytes, decoded from base64 when AWS encoded it (form and binary bodies), at most
/// `max` of them. An oversized body is refused before it is decoded.
pub fn body_bytes(event: &ApiGatewayV2httpRequest, max: usize) -> Result<Vec<u8>, BodyError> {
    let raw = event.body.as_deref().unwrap_or("");
    // base64 is 4/3 of the bytes it carries.
    if raw.len() > max.saturating_mul(4) / 3 + 4 {
        return Err(BodyError::TooLarge { max });
    }
    let bytes = if event.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|_| BodyError::NotBase64)?
    } else {
        raw.as_bytes().to_vec()
    };
    if bytes.len() > max {
        return Err(BodyError::TooLarge { max });
    }
    Ok(bytes)
}

/// A response with a body of the given type.
pub fn response(status: u16, content_type: &'static str, body: String) -> ApiGatewayV2httpResponse {
    let mut response = empty(status);
    response
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.body = Some(Body::Text(body));
    response
}

/// A JSON response.
pub fn json(status: u16, body: &serde_json::Value) -> ApiGatewayV2httpResponse {
    response(status, "application/json", body.to_string())
}

/// A response with no body.
pub fn empty(status: u16) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: &str, base64: bool) -> ApiGatewayV2httpRequest {
        let mut event = ApiGatewayV2httpRequest::default();
        event.body = Some(body.to_owned());
        event.is_base64_encoded = base64;
        event
    }

    #[test]
    fn bodies_are_decoded_when_aws_encoded_them() {
        assert_eq!(body_bytes(&event("YT0x", true), 16), Ok(b"a=1".to_vec()));
        assert_eq!(body_bytes(&event("YT0x", false), 16), Ok(b"YT0x".to_vec()));
        assert_eq!(
            body_bytes(&ApiGatewayV2httpRequest::default(), 16),
            Ok(vec![])
        );
        assert_eq!(
            body_bytes(&event("%%%", true), 16),
            Err(BodyError::NotBase64)
        );
    }

    #[test]
    fn the_limit_counts_decoded_bytes_and_refuses_before_decoding() {
        let exactly = "a".repeat(12);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&exactly);
        assert_eq!(body_bytes(&event(&b64, true), 12), Ok(exactly.into_bytes()));
        let over = base64::engine::general_purpose::STANDARD.encode("a".repeat(13));
        assert_eq!(
            body_bytes(&event(&over, true), 12),
            Err(BodyError::TooLarge { max: 12 })
        );
        // Far too long to be decoded at all: refused on its encoded length.
        assert_eq!(
            body_bytes(&event(&"%".repeat(100), true), 12),
            Err(BodyError::TooLarge { max: 12 })
        );
        assert_eq!(
            body_bytes(&event(&"a".repeat(13), false), 12),
            Err(BodyError::TooLarge { max: 12 })
        );
    }

    #[test]
    fn responses_carry_status_type_and_body() {
        let r = json(201, &serde_json::json!({"call_sid": "CA1"}));
        assert_eq!(r.status_code, 201);
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
        assert!(matches!(r.body, Some(Body::Text(ref t)) if t == r#"{"call_sid":"CA1"}"#));
        let r = empty(204);
        assert!(r.body.is_none() && r.headers.is_empty());
    }
}

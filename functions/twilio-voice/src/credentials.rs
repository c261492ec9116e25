//! Twilio secrets from SSM Parameter Store: one `GetParameters` call (with decryption) per
//! execution environment, cached for a TTL, refreshable on demand (after Twilio says 20003, or
//! when a token is rotated). Secrets are their own types whose `Debug`/`Display` print `***`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ssm::error::DisplayErrorContext;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long credentials are trusted before SSM is asked again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// A secret string. Its value only leaves through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A Twilio account's auth token: signs webhooks and authenticates API calls.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(Secret);

impl AuthToken {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Secret::new(value))
    }
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(***)")
    }
}

/// The tokens a webhook signature may be made with: the current one and, while a rotation is
/// under way, the previous one.
#[derive(Debug, Clone)]
pub struct WebhookTokens {
    pub current: AuthToken,
    pub previous: Option<AuthToken>,
}

impl WebhookTokens {
    pub fn iter(&self) -> impl Iterator<Item = &AuthToken> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }
}

/// What the Calls API is authenticated with: HTTP Basic as the account SID + auth token, or as
/// an API key SID + secret. The account SID is always needed for the request path.
#[derive(Debug, Clone)]
pub struct ApiCredentials {
    pub account_sid: String,
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    #[error("SSM parameter(s) not found: {}", .0.join(", "))]
    MissingParameters(Vec<String>),
    #[error("SSM parameter {0} is empty")]
    Empty(String),
    #[error("SSM parameter {name} is not valid: {reason}")]
    Invalid { name: String, reason: String },
    #[error("SSM GetParameters failed: {0}")]
    Unavailable(String),
}

/// The SSM parameters that make up one kind of credentials, and how they are put together.
pub trait CredentialSpec: Send + Sync {
    type Output: Send + Sync;
    fn parameter_names(&self) -> Vec<&str>;
    fn assemble(&self, values: &mut Parameters) -> Result<Self::Output, CredentialsError>;
}

/// Parameter values fetched from SSM, by name.
pub struct Parameters(HashMap<String, Secret>);

impl Parameters {
    /// Takes a parameter's value; empty values are refused so that a placeholder never becomes a
    /// credential.
    pub fn take(&mut self, name: &str) -> Result<Secret, CredentialsError> {
        let value = self
            .0
            .remove(name)
            .ok_or_else(|| CredentialsError::MissingParameters(vec![name.to_owned()]))?;
        if value.expose().trim().is_empty() {
            return Err(CredentialsError::Empty(name.to_owned()));
        }
        Ok(value)
    }
}

/// Names of the SSM parameters holding the webhook tokens.
#[derive(Debug, Clone)]
pub struct WebhookTokenSpec {
    pub auth_token: String,
    pub previous_auth_token: Option<String>,
}

impl CredentialSpec for WebhookTokenSpec {
    type Output = WebhookTokens;
    fn parameter_names(&self) -> Vec<&str> {
        std::iter::once(self.auth_token.as_str())
            .chain(self.previous_auth_token.as_deref())
            .collect()
    }
    fn assemble(&self, values: &mut Parameters) -> Result<WebhookTokens, CredentialsError> {
        let current = AuthToken(values.take(&self.auth_token)?);
        let previous = match &self.previous_auth_token {
            Some(name) => Some(AuthToken(values.take(name)?)),
            None => None,
        };
        Ok(WebhookTokens { current, previous })
    }
}

/// Names of the SSM parameters holding the REST API credentials.
#[derive(Debug, Clone)]
pub struct ApiCredentialSpec {
    pub account_sid: String,
    pub auth: ApiAuthSpec,
}

#[derive(Debug, Clone)]
pub enum ApiAuthSpec {
    AuthToken(String),
    ApiKey { sid: String, secret: String },
}

impl CredentialSpec for ApiCredentialSpec {
    type Output = ApiCredentials;
    fn parameter_names(&self) -> Vec<&str> {
        let mut names = vec![self.account_sid.as_str()];
        match &self.auth {
            ApiAuthSpec::AuthToken(token) => names.push(token),
            ApiAuthSpec::ApiKey { sid, secret } => names.extend([sid.as_str(), secret.as_str()]),
        }
        names
    }
    fn assemble(&self, values: &mut Parameters) -> Result<ApiCredentials, CredentialsError> {
        let account_sid = values.take(&self.account_sid)?.expose().trim().to_owned();
        if !is_sid(&account_sid, "AC") {
            return Err(CredentialsError::Invalid {
                name: self.account_sid.clone(),
                reason: "an account SID is AC followed by 32 hex digits".into(),
            });
        }
        let (username, password) = match &self.auth {
            ApiAuthSpec::AuthToken(token) => (account_sid.clone(), values.take(token)?),
            ApiAuthSpec::ApiKey { sid, secret } => {
                let key_sid = values.take(sid)?.expose().trim().to_owned();
                if !is_sid(&key_sid, "SK") {
                    return Err(CredentialsError::Invalid {
                        name: sid.clone(),
                        reason: "an API key SID is SK followed by 32 hex digits".into(),
                    });
                }
                (key_sid, values.take(secret)?)
            }
        };
        Ok(ApiCredentials {
            account_sid,
            username,
            password,
        })
    }
}

fn is_sid(value: &str, prefix: &str) -> bool {
    value.len() == 34
        && value.starts_with(prefix)
        && value[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Credentials fetched from SSM and cached for a TTL. Concurrent callers share one fetch.
pub struct CredentialStore<S: CredentialSpec> {
    ssm: aws_sdk_ssm::Client,
    spec: S,
    ttl: Duration,
    cached: Mutex<Option<(Instant, Arc<S::Output>)>>,
}

impl<S: CredentialSpec> CredentialStore<S> {
    pub fn new(ssm: aws_sdk_ssm::Client, spec: S, ttl: Duration) -> Self {
        Self {
            ssm,
            spec,
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The cached credentials, fetched again once the TTL has run out.
    pub async fn get(&self) -> Result<Arc<S::Output>, CredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some((fetched, value)) = cached.as_ref()
            && fetched.elapsed() < self.ttl
        {
            return Ok(Arc::clone(value));
        }
        self.fetch_into(&mut cached).await
    }

    /// Fetches again now, whatever the TTL says (after Twilio refused the cached ones).
    pub async fn refresh(&self) -> Result<Arc<S::Output>, CredentialsError> {
        let mut cached = self.cached.lock().await;
        self.fetch_into(&mut cached).await
    }

    /// Fetches again unless the cached credentials are younger than `min_age`; `None` when they
    /// are. For a signature that fails with the cached token: the token may have just been
    /// rotated, but a stream of forged requests must not become a stream of SSM calls.
    pub async fn refresh_if_older(
        &self,
        min_age: Duration,
    ) -> Result<Option<Arc<S::Output>>, CredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some((fetched, _)) = cached.as_ref()
            && fetched.elapsed() < min_age
        {
            return Ok(None);
        }
        self.fetch_into(&mut cached).await.map(Some)
    }

    async fn fetch_into(
        &self,
        cached: &mut Option<(Instant, Arc<S::Output>)>,
    ) -> Result<Arc<S::Output>, CredentialsError> {
        let names = self.spec.parameter_names();
        let mut values = get_parameters(&self.ssm, &names).await?;
        let value = Arc::new(self.spec.assemble(&mut values)?);
        *cached = Some((Instant::now(), Arc::clone(&value)));
        Ok(value)
    }
}

/// One `GetParameters` call with decryption. Unknown names are an error naming them: SSM
/// reports them with HTTP 200 in `InvalidParameters`, which must not pass for success.
pub async fn get_parameters(
    ssm: &aws_sdk_ssm::Client,
    names: &[&str],
) -> Result<Parameters, CredentialsError> {
    let output = ssm
        .get_parameters()
        .set_names(Some(names.iter().map(|n| (*n).to_owned()).collect()))
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| CredentialsError::Unavailable(DisplayErrorContext(e).to_string()))?;
    let invalid = output.invalid_parameters();
    if !invalid.is_empty() {
        return Err(CredentialsError::MissingParameters(invalid.to_vec()));
    }
    let values = output
        .parameters()
        .iter()
        .filter_map(|p| Some((p.name()?.to_owned(), Secret::new(p.value()?))))
        .collect();
    Ok(Parameters(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let token = AuthToken::new("s3cr3t-token");
        let creds = ApiCredentials {
            account_sid: "AC00000000000000000000000000000000".into(),
            username: "AC00000000000000000000000000000000".into(),
            password: Secret::new("s3cr3t-token"),
        };
        let tokens = WebhookTokens {
            current: token.clone(),
            previous: Some(AuthToken::new("old-s3cr3t")),
        };
        let printed = format!(
            "{token:?} {creds:?} {tokens:?} {} {}",
            creds.password,
            Secret::new("x")
        );
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("***"));
    }

    #[test]
    fn webhook_tokens_iterate_current_then_previous() {
        let tokens = WebhookTokens {
            current: AuthToken::new("a"),
            previous: Some(AuthToken::new("b")),
        };
        let order: Vec<&str> = tokens.iter().map(AuthToken::expose).collect();
        assert_eq!(order, ["a", "b"]);
    }

    fn params(pairs: &[(&str, &str)]) -> Parameters {
        Parameters(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Secret::new(*v)))
                .collect(),
        )
    }

    #[test]
    fn api_spec_assembles_token_or_key_credentials() {
        let sid = "AC0123456789abcdef0123456789abcdef";
        let spec = ApiCredentialSpec {
            account_sid: "/sid".into(),
            auth: ApiAuthSpec::AuthToken("/token".into()),
        };
        assert_eq!(spec.parameter_names(), ["/sid", "/token"]);
        let c = spec
            .assemble(&mut params(&[("/sid", sid), ("/token", "t")]))
            .unwrap();
        assert_eq!(
            (
                c.account_sid.as_str(),
                c.username.as_str(),
                c.password.expose()
            ),
            (sid, sid, "t")
        );

        let key = "SK0123456789abcdef0123456789abcdef";
        let spec = ApiCredentialSpec {
            account_sid: "/sid".into(),
            auth: ApiAuthSpec::ApiKey {
                sid: "/k".into(),
                secret: "/s".into(),
            },
        };
        assert_eq!(spec.parameter_names(), ["/sid", "/k", "/s"]);
        let c = spec
            .assemble(&mut params(&[("/sid", sid), ("/k", key), ("/s", "sec")]))
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), (key, "sec"));
    }

    #[test]
    fn api_spec_refuses_bad_sids_and_empty_values() {
        let spec = ApiCredentialSpec {
            account_sid: "/sid".into(),
            auth: ApiAuthSpec::AuthToken("/token".into()),
        };
        let err = spec
            .assemble(&mut params(&[("/sid", "nope"), ("/token", "t")]))
            .unwrap_err();
        assert!(matches!(err, CredentialsError::Invalid { ref name, .. } if name == "/sid"));
        let err = spec
            .assemble(&mut params(&[
                ("/sid", "AC0123456789abcdef0123456789abcdef"),
                ("/token", " "),
            ]))
            .unwrap_err();
        assert!(matches!(err, CredentialsError::Empty(ref n) if n == "/token"));
    }
}

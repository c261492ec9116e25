//! Twilio secrets from SSM Parameter Store: one `GetParameters` call (with decryption) per
//! execution environment, cached for a TTL, refreshable on demand (after Twilio says 20003, or
//! when a token is rotated). Secrets are their own types whose `Debug`/`Display` print `***`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_ssm::error::DisplayErrorContext;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long credentials are trusted before SSM is asked again.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// How long a failed SSM read is remembered: no other read is tried meanwhile.
pub const FAILURE_MEMO: Duration = Duration::from_secs(5);
/// How long past their TTL the last good credentials stay in use while SSM cannot be read.
pub const GRACE_PERIOD: Duration = Duration::from_secs(3600);

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

impl CredentialsError {
    /// SSM did not answer (throttled, timed out, unreachable, denied): a later read may
    /// succeed. The others are answers about the parameters themselves.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The SSM parameters that make up one kind of credentials, and how they are put together.
pub trait CredentialSpec: Send + Sync {
    type Output: Send + Sync;
    /// What the parameters hold, for the log line of a failed read.
    fn what(&self) -> &'static str {
        "credentials"
    }
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

    /// Takes a parameter that is not a secret (a document) as text; empty values are refused.
    pub fn take_text(&mut self, name: &str) -> Result<String, CredentialsError> {
        self.take(name).map(|value| value.0)
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

/// Credentials fetched from SSM and cached for a TTL, built to survive a flood of the public
/// webhook while SSM is throttled or down:
///
/// - a failed read is remembered for [`FAILURE_MEMO`]: callers inside that window get the same
///   error without an SSM call, and callers that queued behind an attempt share its outcome, so
///   an execution environment makes at most one read (of [`crate::ssm::MAX_ATTEMPTS`] attempts)
///   per window, whatever the request rate;
/// - credentials that were read successfully stay in use for [`GRACE_PERIOD`] past their TTL
///   while SSM cannot be reached (not when SSM answers that a parameter is missing or invalid:
///   that answer is authoritative);
/// - each failed read is logged once, at ERROR; callers answered from memory log nothing.
pub struct CredentialStore<S: CredentialSpec> {
    ssm: aws_sdk_ssm::Client,
    spec: S,
    ttl: Duration,
    state: Mutex<State<S::Output>>,
    /// Reads finished so far: a caller that waited for the lock while another read ran sees it
    /// change, and takes that read's outcome instead of starting one more.
    reads: AtomicU64,
}

struct State<T> {
    /// The last credentials read successfully, and when.
    good: Option<(Instant, Arc<T>)>,
    /// The last read's failure, and when; cleared by a success.
    failure: Option<(Instant, CredentialsError)>,
}

impl<T> State<T> {
    fn younger_than(&self, age: Duration) -> Option<&Arc<T>> {
        self.good
            .as_ref()
            .filter(|(at, _)| at.elapsed() < age)
            .map(|(_, value)| value)
    }

    fn remembered_failure(&self) -> Option<&CredentialsError> {
        self.failure
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FAILURE_MEMO)
            .map(|(_, error)| error)
    }
}

impl<S: CredentialSpec> CredentialStore<S> {
    pub fn new(ssm: aws_sdk_ssm::Client, spec: S, ttl: Duration) -> Self {
        Self {
            ssm,
            spec,
            ttl,
            state: Mutex::new(State {
                good: None,
                failure: None,
            }),
            reads: AtomicU64::new(0),
        }
    }

    /// Reads the credentials during INIT, so that the first request does not pay for it. SSM
    /// being unreachable is not fatal (the failure is logged and remembered; requests fail
    /// closed until a later read succeeds); a missing or invalid parameter is, and is returned.
    pub async fn prefetch(&self) -> Result<(), CredentialsError> {
        match self.get().await {
            Ok(_) => Ok(()),
            Err(e) if e.is_transient() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The cached credentials, read again once the TTL has run out; the last good ones during
    /// the grace period while SSM cannot be read.
    pub async fn get(&self) -> Result<Arc<S::Output>, CredentialsError> {
        let mut state = self.state.lock().await;
        if let Some(value) = state.younger_than(self.ttl) {
            return Ok(Arc::clone(value));
        }
        let result = match state.remembered_failure() {
            Some(error) => Err(error.clone()),
            None => self.read_into(&mut state).await,
        };
        result.or_else(|e| self.grace(&state, e))
    }

    /// Reads again now, whatever the TTL says (after Twilio refused the cached credentials).
    /// Never the grace period: the caller wants credentials other than the ones it has. A
    /// remembered failure, or a read that finished while this caller waited, is the answer
    /// instead of one more SSM call, so a stream of refusals cannot become a stream of reads.
    pub async fn refresh(&self) -> Result<Arc<S::Output>, CredentialsError> {
        let seen = self.reads.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        if self.reads.load(Ordering::Acquire) != seen {
            if let Some((_, error)) = &state.failure {
                return Err(error.clone());
            }
            if let Some((_, value)) = &state.good {
                return Ok(Arc::clone(value));
            }
        }
        if let Some(error) = state.remembered_failure() {
            return Err(error.clone());
        }
        self.read_into(&mut state).await
    }

    /// Reads again unless the cached credentials are younger than `min_age`; `None` when they
    /// are, or when the read fails while the last good ones are within their grace period. For
    /// a signature that fails with the cached token: the token may have just been rotated, but
    /// a stream of forged requests must not become a stream of SSM calls.
    pub async fn refresh_if_older(
        &self,
        min_age: Duration,
    ) -> Result<Option<Arc<S::Output>>, CredentialsError> {
        let mut state = self.state.lock().await;
        if state.younger_than(min_age).is_some() {
            return Ok(None);
        }
        let result = match state.remembered_failure() {
            Some(error) => Err(error.clone()),
            None => self.read_into(&mut state).await,
        };
        match result {
            Ok(value) => Ok(Some(value)),
            Err(e) => self.grace(&state, e).map(|_| None),
        }
    }

    /// The last good credentials if `error` is SSM being unreachable and they are within their
    /// grace period; `error` otherwise.
    fn grace(
        &self,
        state: &State<S::Output>,
        error: CredentialsError,
    ) -> Result<Arc<S::Output>, CredentialsError> {
        match state.younger_than(self.ttl + GRACE_PERIOD) {
            Some(value) if error.is_transient() => Ok(Arc::clone(value)),
            _ => Err(error),
        }
    }

    /// One read from SSM; its outcome is kept in `state`, and a failure is logged here, once.
    async fn read_into(
        &self,
        state: &mut State<S::Output>,
    ) -> Result<Arc<S::Output>, CredentialsError> {
        let names = self.spec.parameter_names();
        let result = match get_parameters(&self.ssm, &names).await {
            Ok(mut values) => self.spec.assemble(&mut values).map(Arc::new),
            Err(e) => Err(e),
        };
        self.reads.fetch_add(1, Ordering::Release);
        match result {
            Ok(value) => {
                state.good = Some((Instant::now(), Arc::clone(&value)));
                state.failure = None;
                Ok(value)
            }
            Err(error) => {
                let stale = state
                    .good
                    .as_ref()
                    .map(|(at, _)| at.elapsed())
                    .filter(|age| error.is_transient() && *age < self.ttl + GRACE_PERIOD);
                match stale {
                    Some(age) => tracing::error!(
                        what = self.spec.what(),
                        error = %error,
                        retry_in_s = FAILURE_MEMO.as_secs(),
                        age_s = age.as_secs(),
                        grace_left_s = (self.ttl + GRACE_PERIOD - age).as_secs(),
                        "reading from SSM failed; the last good value stays in use"
                    ),
                    None => tracing::error!(
                        what = self.spec.what(),
                        error = %error,
                        retry_in_s = FAILURE_MEMO.as_secs(),
                        "reading from SSM failed"
                    ),
                }
                state.failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
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

    // The store under a failing SSM, with aws-smithy-mocks counting the HTTP attempts.
    mod store {
        use super::super::*;
        use aws_sdk_ssm::Client;
        use aws_sdk_ssm::config::retry::RetryConfig;
        use aws_sdk_ssm::operation::get_parameters::GetParametersOutput;
        use aws_sdk_ssm::types::Parameter;
        use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
        use std::sync::Mutex as StdMutex;

        const THROTTLED: &str = r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#;
        const DENIED: &str = r#"{"__type":"AccessDeniedException","message":"denied"}"#;

        fn spec() -> WebhookTokenSpec {
            WebhookTokenSpec {
                auth_token: "/t".into(),
                previous_auth_token: None,
            }
        }

        fn token(value: &'static str) -> GetParametersOutput {
            GetParametersOutput::builder()
                .parameters(Parameter::builder().name("/t").value(value).build())
                .build()
        }

        /// A client that makes two attempts per read (as `ssm::client` does), the second after
        /// a backoff on tokio's clock: a read then waits, and other callers queue behind it.
        fn client(rule: &Rule) -> Client {
            mock_client!(aws_sdk_ssm, RuleMode::Sequential, [rule], |c| c
                .retry_config(RetryConfig::standard().with_max_attempts(2)))
        }

        fn store(rule: &Rule) -> CredentialStore<WebhookTokenSpec> {
            CredentialStore::new(client(rule), spec(), DEFAULT_TTL)
        }

        /// ERROR lines logged on this thread while the guard lives. Every test here installs
        /// one before it logs: tracing caches a callsite as disabled when it is first hit on a
        /// thread without a subscriber, which races with the other tests' subscribers.
        #[derive(Clone, Default)]
        struct Errors(Arc<StdMutex<Vec<u8>>>);

        impl std::io::Write for Errors {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        impl Errors {
            fn install() -> (Self, tracing::subscriber::DefaultGuard) {
                let errors = Self::default();
                let writer = errors.clone();
                let subscriber = tracing_subscriber::fmt()
                    .with_writer(move || writer.clone())
                    .with_max_level(tracing::Level::ERROR)
                    .with_ansi(false)
                    .finish();
                (errors, tracing::subscriber::set_default(subscriber))
            }
            fn lines(&self) -> Vec<String> {
                String::from_utf8_lossy(&self.0.lock().unwrap())
                    .lines()
                    .map(str::to_owned)
                    .collect()
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_failed_read_is_remembered_for_the_memo_window() {
            let rule = mock!(Client::get_parameters)
                .sequence()
                .http_status(400, Some(DENIED.into()))
                .repeatedly()
                .build();
            let store = store(&rule);
            let (errors, _guard) = Errors::install();
            for _ in 0..100 {
                assert!(matches!(
                    store.get().await,
                    Err(CredentialsError::Unavailable(_))
                ));
            }
            assert!(store.refresh().await.is_err());
            assert!(store.refresh_if_older(Duration::ZERO).await.is_err());
            assert_eq!(rule.num_calls(), 1, "one read for 102 callers");
            assert_eq!(errors.lines().len(), 1, "{:?}", errors.lines());

            tokio::time::advance(FAILURE_MEMO - Duration::from_millis(1)).await;
            assert!(store.get().await.is_err());
            assert_eq!(rule.num_calls(), 1, "still inside the window");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(store.get().await.is_err());
            assert_eq!(rule.num_calls(), 2, "one more read once the window is over");
            assert_eq!(errors.lines().len(), 2, "one ERROR per failed read");
        }

        #[tokio::test(start_paused = true)]
        async fn concurrent_callers_share_one_read() {
            let rule = mock!(Client::get_parameters)
                .sequence()
                .http_status(400, Some(THROTTLED.into()))
                .repeatedly()
                .build();
            let store = Arc::new(store(&rule));
            let (errors, _guard) = Errors::install();
            let results = at_once(&store, 20, |s| async move { s.get().await }).await;
            assert!(results.iter().all(Result::is_err));
            assert_eq!(
                rule.num_calls(),
                2,
                "one read of two attempts, for 20 callers"
            );
            assert_eq!(errors.lines().len(), 1, "{:?}", errors.lines());
        }

        #[tokio::test(start_paused = true)]
        async fn refreshes_after_a_refusal_share_one_read() {
            let (_errors, _guard) = Errors::install();
            // Twenty calls answered 20003 at once: each asks for fresh credentials.
            let rule = mock!(Client::get_parameters)
                .sequence()
                .output(|| token("old"))
                .http_status(400, Some(THROTTLED.into()))
                .output(|| token("new"))
                .http_status(400, Some(DENIED.into()))
                .repeatedly()
                .build();
            let store = Arc::new(store(&rule));
            assert_eq!(store.get().await.unwrap().current.expose(), "old");
            let results = at_once(&store, 20, |s| async move { s.refresh().await }).await;
            assert!(
                results
                    .iter()
                    .all(|r| r.as_ref().unwrap().current.expose() == "new")
            );
            assert_eq!(
                rule.num_calls(),
                3,
                "the first read, then one of two attempts"
            );

            // A refresh that fails is remembered like any read: no loop on SSM.
            for _ in 0..20 {
                assert!(store.refresh().await.is_err());
            }
            assert_eq!(rule.num_calls(), 4);
            // The refused ones are not served back to a refresh, but still are to `get`.
            assert_eq!(store.get().await.unwrap().current.expose(), "new");
        }

        #[tokio::test(start_paused = true)]
        async fn the_last_good_token_serves_the_grace_period() {
            let rule = mock!(Client::get_parameters)
                .sequence()
                .output(|| token("good"))
                .http_status(400, Some(DENIED.into()))
                .repeatedly()
                .build();
            let store = store(&rule);
            let (errors, _guard) = Errors::install();
            assert_eq!(store.get().await.unwrap().current.expose(), "good");

            tokio::time::advance(DEFAULT_TTL).await;
            for _ in 0..50 {
                assert_eq!(store.get().await.unwrap().current.expose(), "good");
                assert!(
                    store
                        .refresh_if_older(Duration::ZERO)
                        .await
                        .unwrap()
                        .is_none()
                );
            }
            assert_eq!(rule.num_calls(), 2, "one failed read, then the memo");
            let lines = errors.lines();
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(
                lines[0].contains("the last good value stays in use"),
                "{lines:?}"
            );

            // Each memo window, one more read; the token is still served.
            tokio::time::advance(FAILURE_MEMO).await;
            assert_eq!(store.get().await.unwrap().current.expose(), "good");
            assert_eq!(rule.num_calls(), 3);

            // Until the grace period is over: then the store fails closed.
            tokio::time::advance(GRACE_PERIOD - FAILURE_MEMO - Duration::from_millis(1)).await;
            assert!(store.get().await.is_ok());
            tokio::time::advance(Duration::from_millis(1)).await;
            assert!(matches!(
                store.get().await,
                Err(CredentialsError::Unavailable(_))
            ));
            assert!(store.refresh_if_older(Duration::ZERO).await.is_err());
        }

        #[tokio::test(start_paused = true)]
        async fn a_missing_parameter_is_authoritative_and_ends_the_grace() {
            let (_errors, _guard) = Errors::install();
            let rule = mock!(Client::get_parameters)
                .sequence()
                .output(|| token("good"))
                .output(|| {
                    GetParametersOutput::builder()
                        .invalid_parameters("/t")
                        .build()
                })
                .build();
            let store = store(&rule);
            store.prefetch().await.unwrap();
            tokio::time::advance(DEFAULT_TTL).await;
            assert!(matches!(
                store.get().await,
                Err(CredentialsError::MissingParameters(_))
            ));
            // ... and is remembered too.
            assert!(store.get().await.is_err());
            assert_eq!(rule.num_calls(), 2);
        }

        #[tokio::test(start_paused = true)]
        async fn prefetch_fails_only_on_a_misconfiguration() {
            let (_errors, _guard) = Errors::install();
            let down = mock!(Client::get_parameters)
                .sequence()
                .http_status(400, Some(DENIED.into()))
                .repeatedly()
                .build();
            assert!(store(&down).prefetch().await.is_ok());
            let missing = mock!(Client::get_parameters).then_output(|| {
                GetParametersOutput::builder()
                    .invalid_parameters("/t")
                    .build()
            });
            let err = store(&missing).prefetch().await.unwrap_err();
            assert!(matches!(err, CredentialsError::MissingParameters(ref n) if n == &["/t"]));
        }

        /// Runs `n` callers of `call` at once on this thread, and their results.
        async fn at_once<T, F>(
            store: &Arc<CredentialStore<WebhookTokenSpec>>,
            n: usize,
            call: fn(Arc<CredentialStore<WebhookTokenSpec>>) -> F,
        ) -> Vec<T>
        where
            F: std::future::Future<Output = T> + Send + 'static,
            T: Send + 'static,
        {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..n {
                set.spawn(call(Arc::clone(store)));
            }
            set.join_all().await
        }
    }
}

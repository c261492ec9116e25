//! Step Functions, for phone alerts: starting an escalation, and resuming the step that waits
//! for a call's outcome (`.waitForTaskToken`) with its task token.
//!
//! A task token is a bearer credential for one step of one execution (up to 2 KB): it lives in
//! the call ledger, never in a URL or a log, and [`TaskToken`]'s `Debug` does not print it.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use aws_sdk_sfn::Client;
use aws_sdk_sfn::config::retry::RetryConfig;
use aws_sdk_sfn::error::{ProvideErrorMetadata, SdkError};
use backon::{BackoffBuilder, ExponentialBuilder};

use crate::calls::Deadline;

/// A `$$.Task.Token`.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskToken(String);

/// The longest token Step Functions issues.
pub const MAX_TOKEN_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a task token is 1 to {MAX_TOKEN_LEN} characters")]
pub struct InvalidToken;

impl TaskToken {
    pub fn new(token: impl Into<String>) -> Result<Self, InvalidToken> {
        let token = token.into();
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(InvalidToken);
        }
        Ok(Self(token))
    }

    /// The token itself, for the ledger and for Step Functions only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TaskToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskToken(<{} chars redacted>)", self.0.len())
    }
}

/// An execution that runs (started now, or the one already running under that name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub execution_arn: String,
}

/// An execution as `DescribeExecution` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    pub running: bool,
    /// The input it was started with (absent if Step Functions withholds it).
    pub input: Option<String>,
}

/// How long [`persist`] keeps trying while Step Functions is unavailable, on top of the SDK's
/// own attempts.
#[derive(Debug, Clone, Copy)]
pub struct Persistence {
    /// Rounds in all (each of the SDK's attempts), the first included.
    pub rounds: usize,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Time one more round needs before the deadline (the SDK's attempts and their timeouts).
    pub round_time: Duration,
}

impl Default for Persistence {
    fn default() -> Self {
        Self {
            rounds: 6,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            round_time: Duration::from_secs(10),
        }
    }
}

/// Runs `op` again with backoff while it answers [`SfnError::Unavailable`], as long as
/// `deadline` leaves room for another round: for requests that are safe to repeat (starting
/// an execution by its name, describing one), where giving up loses an alert.
pub async fn persist<T, F, Fut>(
    policy: Persistence,
    deadline: Deadline,
    mut op: F,
) -> Result<T, SfnError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SfnError>>,
{
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(policy.first_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.rounds.saturating_sub(1))
        .with_jitter()
        .build();
    loop {
        match op().await {
            Err(e) if e.is_retryable() => match delays.next() {
                Some(delay) if deadline.allows(delay + policy.round_time) => {
                    tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64, "Step Functions unavailable; trying again");
                    tokio::time::sleep(delay).await;
                }
                _ => return Err(e),
            },
            other => return other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfnError {
    /// The step is over: it timed out, its execution ended, or the token is not one of its.
    /// Resuming it again cannot work, and nothing needs to be retried.
    #[error("the step is closed ({0})")]
    StepClosed(String),
    /// An execution with this name exists with another input (or ended): the name is taken.
    #[error("an execution with this name already exists with another input")]
    NameTaken,
    /// Throttled, a 5xx, a timeout or no connection: trying again may work.
    #[error("Step Functions is unavailable ({0}); retry later")]
    Unavailable(String),
    /// The state machine is missing, access is denied, or the request is invalid.
    #[error("Step Functions refused the request ({0})")]
    Misconfigured(String),
}

impl SfnError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Error codes that mean the step can no longer be resumed.
const CLOSED: &[&str] = &["TaskTimedOut", "TaskDoesNotExist", "InvalidToken"];
/// Error codes after which the same request may succeed later.
const TRANSIENT: &[&str] = &[
    "ThrottlingException",
    "KmsThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalServerError",
];

/// The Step Functions operations alerts use.
#[derive(Debug, Clone)]
pub struct Escalations {
    client: Client,
}

impl Escalations {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Starts `name` on `state_machine_arn`. A Standard state machine answers a second start
    /// with the same name and input with the execution already running: that is how one
    /// alert never starts two escalations.
    pub async fn start(
        &self,
        state_machine_arn: &str,
        name: &str,
        input: &str,
    ) -> Result<Started, SfnError> {
        let out = self
            .client
            .start_execution()
            .state_machine_arn(state_machine_arn)
            .name(name)
            .input(input)
            .send()
            .await
            .map_err(classify)?;
        Ok(Started {
            execution_arn: out.execution_arn,
        })
    }

    /// The execution `execution_arn`, or `None` if there is none by that name.
    pub async fn describe(&self, execution_arn: &str) -> Result<Option<Execution>, SfnError> {
        match self
            .client
            .describe_execution()
            .execution_arn(execution_arn)
            .send()
            .await
        {
            Ok(out) => Ok(Some(Execution {
                running: out.status == aws_sdk_sfn::types::ExecutionStatus::Running,
                input: out.input,
            })),
            Err(SdkError::ServiceError(e)) if e.err().is_execution_does_not_exist() => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// The ARN of a running execution of `state_machine_arn` whose name starts with `prefix`,
    /// if there is one (the newest first, as Step Functions lists them).
    pub async fn running(
        &self,
        state_machine_arn: &str,
        prefix: &str,
    ) -> Result<Option<String>, SfnError> {
        let mut pages = self
            .client
            .list_executions()
            .state_machine_arn(state_machine_arn)
            .status_filter(aws_sdk_sfn::types::ExecutionStatus::Running)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(classify)?;
            if let Some(found) = page
                .executions()
                .iter()
                .find(|e| e.name().starts_with(prefix))
            {
                return Ok(Some(found.execution_arn().to_owned()));
            }
        }
        Ok(None)
    }

    /// Resumes the waiting step with `output` (a JSON document), in one attempt: see
    /// [`once`].
    pub async fn succeed(&self, token: &TaskToken, output: &str) -> Result<(), SfnError> {
        self.client
            .send_task_success()
            .task_token(token.expose())
            .output(output)
            .customize()
            .config_override(once())
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Fails the waiting step with `error` (what a `Catch` matches) and `cause` (up to 32 KB),
    /// in one attempt: see [`once`].
    pub async fn fail(&self, token: &TaskToken, error: &str, cause: &str) -> Result<(), SfnError> {
        self.client
            .send_task_failure()
            .task_token(token.expose())
            .error(error)
            .cause(cause)
            .customize()
            .config_override(once())
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}

/// No SDK retry for resuming a step: when a first attempt lands but its answer is lost (a
/// timeout, a dropped connection), a retry is answered `TaskTimedOut` (the step is over: we
/// closed it), which would read as "too late" for an acknowledgement Step Functions took. One
/// attempt turns that into `Unavailable`, and the caller decides whether to send it again.
fn once() -> aws_sdk_sfn::config::Builder {
    aws_sdk_sfn::config::Builder::new().retry_config(RetryConfig::standard().with_max_attempts(1))
}

fn classify<E: ProvideErrorMetadata>(
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> SfnError {
    match err {
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or("unknown").to_owned();
            if CLOSED.contains(&code.as_str()) {
                SfnError::StepClosed(code)
            } else if code == "ExecutionAlreadyExists" {
                SfnError::NameTaken
            } else if TRANSIENT.contains(&code.as_str()) || e.raw().status().is_server_error() {
                SfnError::Unavailable(code)
            } else {
                SfnError::Misconfigured(code)
            }
        }
        SdkError::TimeoutError(_) => SfnError::Unavailable("timed out".to_owned()),
        SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            SfnError::Unavailable("no answer".to_owned())
        }
        _ => SfnError::Misconfigured("request not built".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sfn::operation::send_task_failure::SendTaskFailureError;
    use aws_sdk_sfn::operation::send_task_success::SendTaskSuccessError;
    use aws_sdk_sfn::operation::start_execution::StartExecutionError;
    use aws_sdk_sfn::types::error::{ExecutionAlreadyExists, TaskTimedOut};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};
    use aws_smithy_types::error::ErrorMetadata;

    /// The code the SDK reads from the response, as a mock must set it.
    fn code(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).build()
    }

    #[test]
    fn debug_never_prints_the_token() {
        let token = TaskToken::new("AQB8AAAAKgAAAAMAAAAAAAAAAf+secret").unwrap();
        let debug = format!("{token:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(TaskToken::new("").is_err());
        assert!(TaskToken::new("a".repeat(MAX_TOKEN_LEN + 1)).is_err());
        assert!(TaskToken::new("a".repeat(MAX_TOKEN_LEN)).is_ok());
    }

    #[tokio::test]
    async fn a_timed_out_step_is_closed_not_retryable() {
        let rule = mock!(Client::send_task_success).then_error(|| {
            SendTaskSuccessError::TaskTimedOut(
                TaskTimedOut::builder().meta(code("TaskTimedOut")).build(),
            )
        });
        let client = mock_client!(aws_sdk_sfn, RuleMode::Sequential, [&rule]);
        let err = Escalations::new(client)
            .succeed(&TaskToken::new("t").unwrap(), "{}")
            .await
            .unwrap_err();
        assert_eq!(err, SfnError::StepClosed("TaskTimedOut".into()));
        assert!(!err.is_retryable());
    }

    /// A client that retries as the shared SDK configuration does (three attempts), quickly.
    fn retrying(rules: &[&aws_smithy_mocks::Rule]) -> Client {
        mock_client!(aws_sdk_sfn, RuleMode::MatchAny, rules, |c| c.retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(std::time::Duration::from_millis(1))
        ))
    }

    #[tokio::test]
    async fn a_lost_answer_is_unavailable_never_a_retry_that_finds_the_step_closed() {
        // The first SendTaskSuccess lands but its answer is lost (a 5xx stands for it); an SDK
        // retry would be answered TaskTimedOut, our own success read as "too late".
        let success = mock!(Client::send_task_success)
            .sequence()
            .http_status(500, None)
            .error(|| {
                SendTaskSuccessError::TaskTimedOut(
                    TaskTimedOut::builder().meta(code("TaskTimedOut")).build(),
                )
            })
            .build();
        let failure = mock!(Client::send_task_failure)
            .sequence()
            .http_status(500, None)
            .error(|| {
                SendTaskFailureError::TaskTimedOut(
                    TaskTimedOut::builder().meta(code("TaskTimedOut")).build(),
                )
            })
            .build();
        let escalations = Escalations::new(retrying(&[&success, &failure]));
        let token = TaskToken::new("t").unwrap();
        let err = escalations.succeed(&token, "{}").await.unwrap_err();
        assert!(matches!(err, SfnError::Unavailable(_)), "{err:?}");
        assert_eq!(success.num_calls(), 1, "SendTaskSuccess was retried");
        let err = escalations.fail(&token, "E", "{}").await.unwrap_err();
        assert!(matches!(err, SfnError::Unavailable(_)), "{err:?}");
        assert_eq!(failure.num_calls(), 1, "SendTaskFailure was retried");

        // The same client does retry other operations: the single attempt is the resume's own.
        let start = mock!(Client::start_execution)
            .sequence()
            .http_status(500, None)
            .output(|| {
                aws_sdk_sfn::operation::start_execution::StartExecutionOutput::builder()
                    .execution_arn("arn:aws:states:us-east-1:1:execution:a:n")
                    .start_date(aws_smithy_types::DateTime::from_secs(0))
                    .build()
                    .unwrap()
            })
            .build();
        Escalations::new(retrying(&[&start]))
            .start("arn:aws:states:us-east-1:1:stateMachine:a", "n", "{}")
            .await
            .unwrap();
        assert_eq!(start.num_calls(), 2);
    }

    fn started() -> aws_sdk_sfn::operation::start_execution::StartExecutionOutput {
        aws_sdk_sfn::operation::start_execution::StartExecutionOutput::builder()
            .execution_arn("arn:aws:states:us-east-1:1:execution:a:n")
            .start_date(aws_smithy_types::DateTime::from_secs(0))
            .build()
            .unwrap()
    }

    fn quick() -> Persistence {
        Persistence {
            first_delay: std::time::Duration::from_millis(1),
            max_delay: std::time::Duration::from_millis(2),
            round_time: std::time::Duration::from_millis(100),
            ..Persistence::default()
        }
    }

    #[tokio::test]
    async fn a_start_outlasts_a_blip_longer_than_the_sdks_attempts() {
        // Two rounds of the SDK's three attempts fail (a blip of six 5xx), the third round
        // starts the execution: the alarm's page is not lost.
        let start = mock!(Client::start_execution)
            .sequence()
            .http_status(500, None)
            .times(6)
            .output(started)
            .build();
        let escalations = Escalations::new(retrying(&[&start]));
        let arn = "arn:aws:states:us-east-1:1:stateMachine:a";
        let out = persist(quick(), Deadline::NONE, || {
            escalations.start(arn, "n", "{}")
        })
        .await
        .unwrap();
        assert_eq!(
            out.execution_arn,
            "arn:aws:states:us-east-1:1:execution:a:n"
        );
        assert_eq!(start.num_calls(), 7);

        // No time left before the deadline for another round: the first round's answer.
        let start = mock!(Client::start_execution)
            .sequence()
            .http_status(500, None)
            .times(6)
            .output(started)
            .build();
        let escalations = Escalations::new(retrying(&[&start]));
        let soon = Deadline::at(tokio::time::Instant::now() + std::time::Duration::from_millis(50));
        let err = persist(quick(), soon, || escalations.start(arn, "n", "{}"))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert_eq!(start.num_calls(), 3);

        // What is not unavailable is answered at once.
        let taken = mock!(Client::start_execution).then_error(|| {
            StartExecutionError::ExecutionAlreadyExists(
                ExecutionAlreadyExists::builder()
                    .meta(code("ExecutionAlreadyExists"))
                    .build(),
            )
        });
        let escalations = Escalations::new(retrying(&[&taken]));
        let err = persist(quick(), Deadline::NONE, || {
            escalations.start(arn, "n", "{}")
        })
        .await
        .unwrap_err();
        assert_eq!(err, SfnError::NameTaken);
        assert_eq!(taken.num_calls(), 1);
    }

    #[tokio::test]
    async fn kms_throttling_is_retryable() {
        let rule = mock!(Client::send_task_success)
            .then_error(|| SendTaskSuccessError::generic(code("KmsThrottlingException")));
        let client = mock_client!(aws_sdk_sfn, RuleMode::Sequential, [&rule]);
        let err = Escalations::new(client)
            .succeed(&TaskToken::new("t").unwrap(), "{}")
            .await
            .unwrap_err();
        assert_eq!(err, SfnError::Unavailable("KmsThrottlingException".into()));
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn a_taken_name_is_told_apart() {
        let rule = mock!(Client::start_execution).then_error(|| {
            StartExecutionError::ExecutionAlreadyExists(
                ExecutionAlreadyExists::builder()
                    .meta(code("ExecutionAlreadyExists"))
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_sfn, RuleMode::Sequential, [&rule]);
        let err = Escalations::new(client)
            .start("arn:aws:states:us-east-1:1:stateMachine:a", "n", "{}")
            .await
            .unwrap_err();
        assert_eq!(err, SfnError::NameTaken);
    }
}

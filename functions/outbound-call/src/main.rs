use std::time::SystemTime;

use lambda_runtime::{LambdaEvent, service_fn};
use outbound_call::config::Config;
use outbound_call::handler::{self, App};
use serde_json::Value;
use twilio_voice::calls::Deadline;

// One thread: Lambda hands an environment one event at a time, and worker threads would only
// add to the cold start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    twilio_voice::logging::init();
    let config = Config::from_env()?;
    let env = |name: &str| std::env::var(name).ok();
    let ssm = twilio_voice::ssm::client(env)?;
    let app = App::init(config.clone(), ssm.clone()).await?;
    // DynamoDB, EventBridge, Step Functions and SQS share one SDK configuration (a TLS context, an
    // HTTP client; no connection opened here), built only when one of them is configured:
    // nothing else uses it, and building it costs every cold start about 0.1 ms of CPU
    // (bench/README.md).
    let app = if config.ledger_table.is_some()
        || config.event_bus.is_some()
        || config.alerts.is_some()
        || config.bulk_calls_queue_url.is_some()
    {
        let aws = twilio_voice::aws::sdk_config(env, twilio_voice::aws::Resilience::default())?;
        app.with_outcomes(&config, &aws)
            .with_alerts(&config, &aws, ssm)
            .await?
    } else {
        app
    };
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = Deadline::from_epoch_millis(event.context.deadline, SystemTime::now());
        handler::handle_invocation(
            event.payload,
            app,
            deadline,
            Some(&event.context.request_id),
        )
        .await
    }))
    .await
}

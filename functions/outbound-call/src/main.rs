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
    let ssm = twilio_voice::ssm::client(|name| std::env::var(name).ok())?;
    let app = App::init(config, ssm).await?;
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = Deadline::from_epoch_millis(event.context.deadline, SystemTime::now());
        handler::handle(event.payload, app, deadline).await
    }))
    .await
}

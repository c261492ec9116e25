use lambda_runtime::{LambdaEvent, service_fn};
use outbound_call::config::Config;
use outbound_call::handler::{self, App};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let app = App::init(config, aws_sdk_ssm::Client::new(&aws)).await?;
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handler::handle(event.payload, app).await
    }))
    .await
}

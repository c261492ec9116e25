use std::convert::Infallible;

use incoming_call::config::Config;
use incoming_call::webhook::{self, App};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{LambdaEvent, service_fn};

// One thread: Lambda hands an environment one event at a time, and worker threads would only
// add to the cold start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    twilio_voice::logging::init();
    let config = Config::from_env()?;
    let env = |name: &str| std::env::var(name).ok();
    let ssm = twilio_voice::ssm::client(env)?;
    let aws = twilio_voice::aws::sdk_config(env, twilio_voice::aws::Resilience::default())?;
    let app = App::init(config.clone(), ssm)
        .await?
        .with_outcomes(&config, &aws)
        .with_alerts(&config, &aws);
    let app = &app;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            Ok::<_, Infallible>(webhook::handle(event.payload, app).await)
        },
    ))
    .await
}

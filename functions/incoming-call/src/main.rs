use std::convert::Infallible;

use incoming_call::config::Config;
use incoming_call::webhook::{self, App};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let app = App::init(config, aws_sdk_ssm::Client::new(&aws)).await?;
    let app = &app;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            Ok::<_, Infallible>(webhook::handle(event.payload, app).await)
        },
    ))
    .await
}

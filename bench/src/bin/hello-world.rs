//! The floor for the cold-start figure: the smallest `lambda_runtime` function that answers a
//! Function URL event, built with the same profile as the real functions.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(|_event: LambdaEvent<Value>| async {
        Ok::<_, lambda_runtime::Error>(json!({
            "statusCode": 200,
            "headers": {"content-type": "text/plain"},
            "body": "hello",
        }))
    }))
    .await
}

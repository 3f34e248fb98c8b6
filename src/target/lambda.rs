//! The `lambda` target: the Lambda Invoke API (AWS, LocalStack, moto), RequestResponse.

use std::time::Duration;

use aws_sdk_lambda::operation::RequestId;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use bytes::Bytes;

use super::{Outcome, Reply, ServiceIds, classify, timed_out};
use crate::config::AwsSettings;

pub struct LambdaTarget {
    client: aws_sdk_lambda::Client,
    function_name: String,
    qualifier: Option<String>,
    timeout: Duration,
}

/// How long past the function timeout to wait for the service's own answer.
const SERVICE_GRACE: Duration = Duration::from_secs(10);

impl LambdaTarget {
    /// A client for `function_name` in `region` (the chain's when `None`).
    pub async fn new(
        aws: &AwsSettings,
        region: Option<&str>,
        function_name: &str,
        qualifier: Option<&str>,
        endpoint_url: Option<&str>,
        timeout: Duration,
    ) -> LambdaTarget {
        let config = crate::aws::sdk_config(aws, region, endpoint_url).await;
        LambdaTarget {
            client: crate::aws::lambda(&config),
            function_name: function_name.to_string(),
            qualifier: qualifier.map(str::to_string),
            timeout,
        }
    }

    /// Invokes the function; the service's ids come with every answer it gave.
    pub async fn invoke(&self, event: Bytes) -> (Outcome, ServiceIds) {
        let call = self
            .client
            .invoke()
            .function_name(&self.function_name)
            .set_qualifier(self.qualifier.clone())
            .invocation_type(InvocationType::RequestResponse)
            // the SDK's Blob owns a Vec: the one copy of the event this target makes
            .payload(Blob::new(Vec::from(event)))
            .send();
        let result = match tokio::time::timeout(self.timeout + SERVICE_GRACE, call).await {
            Ok(result) => result,
            Err(_) => return (timed_out(self.timeout), ServiceIds::default()),
        };
        match result {
            Ok(output) => {
                let ids = ServiceIds {
                    request_id: output.request_id().map(str::to_string),
                    executed_version: output.executed_version().map(str::to_string),
                };
                let reply = Reply {
                    status: u16::try_from(output.status_code()).unwrap_or(0),
                    function_error: output.function_error().map(str::to_string),
                    body: output
                        .payload()
                        .map(|b| b.as_ref().to_vec())
                        .unwrap_or_default(),
                };
                (classify(reply), ids)
            }
            Err(err) => {
                let throttled = err
                    .as_service_error()
                    .is_some_and(|e| e.is_too_many_requests_exception());
                let status = err.raw_response().map(|r| r.status().as_u16());
                let detail = aws_sdk_lambda::error::DisplayErrorContext(&err).to_string();
                let outcome = match status {
                    _ if throttled => Outcome::Throttled { detail },
                    // RequestTooLargeException (413), ResourceNotFoundException (404), ...
                    Some(status) => super::not_invoked(status, detail),
                    None => Outcome::CouldNotInvoke { detail },
                };
                (outcome, ServiceIds::default())
            }
        }
    }
}

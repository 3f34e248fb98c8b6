//! The `lambda` target: the Lambda Invoke API (AWS, LocalStack, moto), RequestResponse.

use std::time::Duration;

use aws_sdk_lambda::config::http::HttpResponse;
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
                let detail = aws_sdk_lambda::error::DisplayErrorContext(&err).to_string();
                let outcome = match err.raw_response() {
                    _ if throttled => Outcome::Throttled { detail },
                    Some(raw) => refused(raw, detail),
                    None => Outcome::CouldNotInvoke { detail },
                };
                (outcome, ServiceIds::default())
            }
        }
    }
}

/// What an answer the SDK took for an error means. The SDK takes every non-2xx answer for
/// a service error, but an Invoke-compatible runtime answers a function error with one too
/// (`cargo lambda watch`: 500 and the runtime's error body), so the one rule for every
/// target decides first.
fn refused(raw: &HttpResponse, detail: String) -> Outcome {
    let reply = Reply {
        status: raw.status().as_u16(),
        function_error: raw
            .headers()
            .get("X-Amz-Function-Error")
            .map(str::to_string),
        body: raw.body().bytes().unwrap_or_default().to_vec(),
    };
    match classify(reply) {
        error @ Outcome::FunctionError { .. } => error,
        // RequestTooLargeException (413), ResourceNotFoundException (404), ...
        _ => super::not_invoked(raw.status().as_u16(), detail),
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_lambda::primitives::SdkBody;

    use super::*;

    fn answer(status: u16, header: Option<&str>, body: &str) -> Outcome {
        let mut raw = HttpResponse::new(status.try_into().expect("a status"), SdkBody::from(body));
        if let Some(error_type) = header {
            raw.headers_mut()
                .insert("X-Amz-Function-Error", error_type.to_string());
        }
        refused(&raw, "the SDK's account".into())
    }

    #[test]
    fn a_5xx_with_a_runtime_error_is_a_function_error() {
        let body = r#"{"errorType":"Crash","errorMessage":"record 1 says crash"}"#;
        assert_eq!(
            answer(500, None, body),
            Outcome::FunctionError {
                error_type: "Unhandled".into(),
                body: body.as_bytes().to_vec(),
            }
        );
        assert_eq!(
            answer(502, Some("Handled"), "boom"),
            Outcome::FunctionError {
                error_type: "Handled".into(),
                body: b"boom".to_vec(),
            }
        );
    }

    #[test]
    fn service_errors_keep_their_meaning() {
        let detail = "the SDK's account".to_string();
        let service = r#"{"Type":"Service","message":"try again"}"#;
        assert_eq!(
            answer(500, None, service),
            Outcome::CouldNotInvoke {
                detail: detail.clone()
            }
        );
        let missing = r#"{"title":"Missing function"}"#;
        assert_eq!(
            answer(404, None, missing),
            Outcome::Rejected {
                status: 404,
                detail: detail.clone()
            }
        );
        assert_eq!(
            answer(413, None, ""),
            Outcome::PayloadTooLarge {
                detail: detail.clone()
            }
        );
        assert_eq!(answer(429, None, ""), Outcome::Throttled { detail });
    }
}

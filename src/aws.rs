//! AWS SDK clients: configuration from the `[aws]` section and the standard AWS chain, and
//! who retries each call.
//!
//! # One retry policy per call
//!
//! Every client esmd builds has the SDK's retries turned off (whatever `AWS_MAX_ATTEMPTS`
//! or a profile says): each verb is retried by exactly one esmd loop, which logs every
//! failed attempt, so a throttle is seen once per call instead of hidden under SDK
//! attempts, and a retried call is one request, not three. Schedules are in
//! [`crate::backoff`].
//!
//! | client | verb | retried by | schedule |
//! |---|---|---|---|
//! | SQS source | GetQueueUrl, GetQueueAttributes | the queue open loop, until the queue exists | `outage` |
//! | SQS source | ReceiveMessage | the worker's receive | `outage` |
//! | SQS source | DeleteMessageBatch | `Poller::delete`: failed calls and failed entries | `aws_call` |
//! | SQS source | ChangeMessageVisibilityBatch (extend) | the heartbeat, then its next tick | `aws_call` |
//! | SQS source | ChangeMessageVisibilityBatch (release) | the release; then the visibility timeout | `aws_call` |
//! | Kinesis | DescribeStreamSummary, ListShards | the listing loop | `outage` |
//! | DynamoDB Streams | ListStreams, DescribeStream | the listing loop | `outage` |
//! | Kinesis, DynamoDB Streams | GetShardIterator | the shard reader | `outage` |
//! | Kinesis, DynamoDB Streams | GetRecords | the shard reader (a new iterator unless throttled) | `outage` |
//! | Lambda | Invoke | the pipeline's invoke loop: throttled and not reached, no retry attempt used | `outage` |
//! | destination SQS, SNS, S3 | GetQueueUrl + SendMessage, Publish, PutObject | the discard's delivery loop; the shard waits | `outage` |
//!
//! `outage`: 200 ms doubling to 5 s, endless; `aws_call`: 100 ms doubling to 2 s, five
//! retries. All with jitter.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_sqs::config::Credentials;

use crate::config::AwsSettings;

/// The SDK config for one service client. `region` wins over `[aws] region` (a source's
/// own region comes from its ARN); `endpoint_url` wins over `[aws] endpoint_url`. With an
/// endpoint override and no credentials in the environment, emulator credentials
/// (`test`/`test`) are used so LocalStack and moto work out of the box.
pub async fn sdk_config(
    settings: &AwsSettings,
    region: Option<&str>,
    endpoint_url: Option<&str>,
) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region.or(settings.region.as_deref()) {
        loader = loader.region(Region::new(region.to_string()));
    }
    if let Some(endpoint) = endpoint_url.or(settings.endpoint_url.as_deref()) {
        loader = loader.endpoint_url(endpoint);
        let env_has_credentials = ["AWS_ACCESS_KEY_ID", "AWS_PROFILE"]
            .iter()
            .any(|var| std::env::var_os(var).is_some());
        if !env_has_credentials {
            loader = loader.credentials_provider(Credentials::new(
                "test",
                "test",
                None,
                None,
                "esmd-emulator",
            ));
        }
    }
    loader.load().await
}

/// The SQS client of a source (`longest_wait`: its long poll) or of a destination (zero).
pub fn sqs(sdk: &SdkConfig, longest_wait: Duration) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(call_timeouts(longest_wait))
            .build(),
    )
}

pub fn kinesis(sdk: &SdkConfig) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(call_timeouts(Duration::ZERO))
            .build(),
    )
}

pub fn dynamodb_streams(sdk: &SdkConfig) -> aws_sdk_dynamodbstreams::Client {
    aws_sdk_dynamodbstreams::Client::from_conf(
        aws_sdk_dynamodbstreams::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(call_timeouts(Duration::ZERO))
            .build(),
    )
}

/// The Lambda client of a `lambda` target. Its invocations keep the SDK's default
/// timeouts: the target bounds each one by the function's own timeout.
pub fn lambda(sdk: &SdkConfig) -> aws_sdk_lambda::Client {
    aws_sdk_lambda::Client::from_conf(
        aws_sdk_lambda::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

pub fn sns(sdk: &SdkConfig) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::from_conf(
        aws_sdk_sns::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(call_timeouts(Duration::ZERO))
            .build(),
    )
}

/// Emulators serve buckets on paths, not on host names: with an endpoint override the
/// client uses path-style addressing.
pub fn s3(sdk: &SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .retry_config(RetryConfig::disabled())
            .timeout_config(call_timeouts(Duration::ZERO))
            .force_path_style(sdk.endpoint_url().is_some())
            .build(),
    )
}

/// Time limits for the calls of sources and destinations, so a hung emulator shows up as
/// an error (and a retry) instead of a silent stall. `longest_wait` is the longest a call
/// may wait by design (an SQS long poll).
fn call_timeouts(longest_wait: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(longest_wait + Duration::from_secs(30))
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{HeaderName, StatusCode};
    use axum::response::IntoResponse;

    use super::*;

    /// A local server that answers every request with `status` and the AWS error
    /// `error_type`, counting the requests.
    struct Failing {
        endpoint: String,
        requests: Arc<AtomicUsize>,
    }

    impl Failing {
        async fn start(status: u16, error_type: &'static str) -> Failing {
            let requests = Arc::new(AtomicUsize::new(0));
            let counted = requests.clone();
            let answer = move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let status = StatusCode::from_u16(status).unwrap();
                let header = (HeaderName::from_static("x-amzn-errortype"), error_type);
                let body = format!(r#"{{"__type":"{error_type}","message":"test"}}"#);
                std::future::ready((status, [header], body).into_response())
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let endpoint = format!("http://{}", listener.local_addr().unwrap());
            let app = axum::Router::new().fallback(answer);
            tokio::spawn(async move { axum::serve(listener, app).await });
            Failing { endpoint, requests }
        }

        async fn sdk(&self) -> SdkConfig {
            let settings = AwsSettings {
                region: Some("us-east-1".into()),
                endpoint_url: Some(self.endpoint.clone()),
                allow_remote: false,
            };
            sdk_config(&settings, None, None).await
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    /// The control: the same server sees every attempt of a client that does retry.
    #[tokio::test]
    async fn the_counting_server_sees_the_sdks_own_retries() {
        let server = Failing::start(503, "ServiceUnavailable").await;
        let retrying = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&server.sdk().await)
                .retry_config(
                    RetryConfig::standard().with_initial_backoff(Duration::from_millis(1)),
                )
                .build(),
        );
        let result = retrying.list_queues().send().await;
        assert!(result.is_err());
        assert_eq!(server.requests(), 3);
    }

    #[tokio::test]
    async fn a_failed_source_call_is_one_request() {
        let server = Failing::start(503, "ServiceUnavailable").await;
        let sdk = server.sdk().await;
        let sqs = sqs(&sdk, Duration::ZERO);
        assert!(sqs.receive_message().queue_url("q").send().await.is_err());
        assert!(
            sqs.delete_message_batch()
                .queue_url("q")
                .send()
                .await
                .is_err()
        );
        assert!(
            kinesis(&sdk)
                .get_records()
                .shard_iterator("i")
                .send()
                .await
                .is_err()
        );
        assert!(
            dynamodb_streams(&sdk)
                .describe_stream()
                .stream_arn("s")
                .send()
                .await
                .is_err()
        );
        assert_eq!(server.requests(), 4, "one request per call");
    }

    #[tokio::test]
    async fn a_failed_delivery_is_one_request() {
        let server = Failing::start(500, "InternalError").await;
        let sdk = server.sdk().await;
        assert!(
            sns(&sdk)
                .publish()
                .topic_arn("arn:aws:sns:us-east-1:000000000000:t")
                .message("m")
                .send()
                .await
                .is_err()
        );
        assert!(
            s3(&sdk)
                .put_object()
                .bucket("b")
                .key("k")
                .send()
                .await
                .is_err()
        );
        assert_eq!(server.requests(), 2, "one request per call");
    }

    /// A throttle must reach the invoke loop, which logs it and backs off.
    #[tokio::test]
    async fn a_throttled_invoke_is_one_request() {
        let server = Failing::start(429, "TooManyRequestsException").await;
        let err = lambda(&server.sdk().await)
            .invoke()
            .function_name("f")
            .send()
            .await
            .expect_err("throttled");
        assert!(
            err.as_service_error()
                .is_some_and(|e| e.is_too_many_requests_exception())
        );
        assert_eq!(server.requests(), 1);
    }
}

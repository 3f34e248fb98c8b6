//! AWS SDK configuration from the `[aws]` section and the standard AWS chain.

use std::time::Duration;

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

/// Time limits for the calls of sources and destinations, so a hung emulator shows up as
/// an error (and a retry) instead of a silent stall. `longest_wait` is the longest a call
/// may wait by design (an SQS long poll).
pub fn call_timeouts(longest_wait: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(longest_wait + Duration::from_secs(30))
        .build()
}

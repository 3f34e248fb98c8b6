//! How a batch reaches a function, and what its answer means.
//!
//! Three targets: [`http`] (an Invoke-API-compatible URL: the RIE, `cargo lambda watch`,
//! any webhook), [`command`] (a subprocess) and [`lambda`] (the Lambda Invoke API). Each
//! turns its answer into a [`Reply`]-like shape and [`classify`] makes the one decision
//! for all of them, as interface.md's target table says.

pub mod command;
pub mod http;
pub mod lambda;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{FunctionConfig, TargetConfig};

/// What an invocation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function ran and returned `body`.
    Success { body: Vec<u8> },
    /// The function ran and failed (error, runtime error or timeout): uses a retry attempt.
    FunctionError { error_type: String, body: Vec<u8> },
    /// The target refused for load: back off, retry, no retry attempt used.
    Throttled { detail: String },
    /// The function was not reached: back off, retry, no retry attempt used.
    CouldNotInvoke { detail: String },
    /// The target answered 413: the event is too big for it. A batch of several records
    /// is split in two; a single record is oversized. No retry attempt used.
    PayloadTooLarge { detail: String },
    /// The target answered another 4xx, most likely a wrong URL or function name: not
    /// reached, retried like [`Outcome::CouldNotInvoke`], but logged as an error.
    Rejected { status: u16, detail: String },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Success { .. } => "success",
            Outcome::FunctionError { .. } => "function_error",
            Outcome::Throttled { .. } => "throttled",
            Outcome::CouldNotInvoke { .. } => "could_not_invoke",
            Outcome::PayloadTooLarge { .. } => "payload_too_large",
            Outcome::Rejected { .. } => "rejected",
        }
    }

    /// What went wrong when the target did not take the event and the batch is to be tried
    /// again as it is (throttled, not reached, rejected); `None` otherwise.
    pub fn retry_detail(&self) -> Option<&str> {
        match self {
            Outcome::Throttled { detail }
            | Outcome::CouldNotInvoke { detail }
            | Outcome::Rejected { detail, .. } => Some(detail),
            _ => None,
        }
    }
}

/// A target's raw answer: an HTTP status, the `X-Amz-Function-Error` header and the body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub function_error: Option<String>,
    pub body: Vec<u8>,
}

/// The function error type Lambda reports for errors the runtime raised.
pub const UNHANDLED: &str = "Unhandled";

/// The one outcome rule for every target (interface.md, aws-esm-semantics §15.5).
pub fn classify(reply: Reply) -> Outcome {
    let Reply {
        status,
        function_error,
        body,
    } = reply;
    match status {
        200..=299 => {
            if let Some(error_type) = function_error {
                Outcome::FunctionError { error_type, body }
            } else if is_error_object(&body, true) || is_timeout_text(&body) {
                Outcome::FunctionError {
                    error_type: UNHANDLED.into(),
                    body,
                }
            } else {
                Outcome::Success { body }
            }
        }
        500..=599 if function_error.is_some() || is_error_object(&body, false) => {
            Outcome::FunctionError {
                error_type: function_error.unwrap_or_else(|| UNHANDLED.into()),
                body,
            }
        }
        _ => not_invoked(status, format!("HTTP {status}: {}", snippet(&body))),
    }
}

/// What a refusal with `status` (no function error) means, for every target.
pub fn not_invoked(status: u16, detail: String) -> Outcome {
    match status {
        413 => Outcome::PayloadTooLarge { detail },
        429 => Outcome::Throttled { detail },
        400..=499 => Outcome::Rejected { status, detail },
        _ => Outcome::CouldNotInvoke { detail },
    }
}

/// A runtime error body: `{"errorType":..,"errorMessage":..}`. A 2xx answer needs `both`
/// keys to count as an error; for a 5xx answer one of them is enough.
fn is_error_object(body: &[u8], both: bool) -> bool {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return false;
    };
    let has_type = map.contains_key("errorType");
    let has_message = map.contains_key("errorMessage");
    if both {
        has_type && has_message
    } else {
        has_type || has_message
    }
}

/// The RIE's plain-text timeout answer, `Task timed out after 3.00 seconds`.
fn is_timeout_text(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let text = text.trim().trim_matches('"');
    text.starts_with("Task timed out after")
}

/// The start of a body, for logs.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The text Lambda uses for a function that ran out of time.
pub fn timed_out(timeout: Duration) -> Outcome {
    Outcome::FunctionError {
        error_type: UNHANDLED.into(),
        body: format!("Task timed out after {:.2} seconds", timeout.as_secs_f64()).into_bytes(),
    }
}

/// What the Lambda service says about an invocation it ran; other targets say nothing.
#[derive(Debug, Clone, Default)]
pub struct ServiceIds {
    /// The service's request id (`x-amzn-RequestId`).
    pub request_id: Option<String>,
    /// The version that ran (`X-Amz-Executed-Version`).
    pub executed_version: Option<String>,
}

/// The result of one invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub outcome: Outcome,
    pub duration: Duration,
    /// The service's request id, else esmd's own (failure records name it as `requestId`).
    pub request_id: String,
    /// The version the service ran, else [`Function::executed_version`].
    pub executed_version: String,
}

enum Target {
    Http(http::HttpTarget),
    Command(command::CommandTarget),
    Lambda(lambda::LambdaTarget),
    InProcess(Answer),
}

/// An in-process function: answers an event with an outcome. For tests and benchmarks.
pub type Answer = Arc<dyn Fn(Bytes) -> BoxFuture<Outcome> + Send + Sync>;
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// A function: its target and the cap on invocations in flight across all mappings.
pub struct Function {
    pub config: FunctionConfig,
    target: Target,
    permits: Arc<Semaphore>,
}

impl Function {
    /// Builds the target. A Lambda target and a command run in `[aws] region`, else in the
    /// region of the function's first mapping; a Lambda target's endpoint is its own
    /// `endpoint_url`, else `[aws]`'s.
    pub async fn build(config: FunctionConfig, aws: &crate::config::AwsSettings) -> Function {
        let region = aws.region.as_deref().or(config.source_region.as_deref());
        let target = match &config.target {
            TargetConfig::Url(url) => Target::Http(http::HttpTarget::new(url, config.timeout)),
            TargetConfig::Command(argv) => Target::Command(command::CommandTarget::new(
                argv.clone(),
                &config.name,
                region,
                config.timeout,
            )),
            TargetConfig::Lambda {
                function_name,
                qualifier,
                endpoint_url,
            } => Target::Lambda(
                lambda::LambdaTarget::new(
                    aws,
                    region,
                    function_name,
                    qualifier.as_deref(),
                    endpoint_url.as_deref(),
                    config.timeout,
                )
                .await,
            ),
        };
        Function {
            permits: Arc::new(Semaphore::new(config.max_concurrency)),
            config,
            target,
        }
    }

    /// A function that runs in process: `answer` takes each event. Its config says
    /// `url = "in-process:NAME"`; tests and benchmarks use it to run the pipeline on fakes.
    pub fn in_process(name: &str, max_concurrency: usize, answer: Answer) -> Function {
        Function {
            config: FunctionConfig {
                name: name.to_string(),
                target: TargetConfig::Url(format!("in-process:{name}")),
                max_concurrency,
                timeout: Duration::from_secs(crate::config::DEFAULT_TIMEOUT_SECS),
                role_arn: None,
                source_region: None,
            },
            target: Target::InProcess(answer),
            permits: Arc::new(Semaphore::new(max_concurrency)),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The version a failure record reports when the target does not say: the Lambda
    /// qualifier, else `$LATEST`.
    pub fn executed_version(&self) -> &str {
        match &self.config.target {
            TargetConfig::Lambda {
                qualifier: Some(qualifier),
                ..
            } => qualifier,
            _ => "$LATEST",
        }
    }

    /// The function's ARN in `region` and `account` (the event source's).
    pub fn arn(&self, partition: &str, region: &str, account: &str) -> String {
        let name = match &self.config.target {
            TargetConfig::Lambda { function_name, .. } => function_name,
            _ => &self.config.name,
        };
        if name.starts_with("arn:") {
            return name.clone();
        }
        format!("arn:{partition}:lambda:{region}:{account}:function:{name}")
    }

    /// Logs an invocation that did not reach the function and is tried again after
    /// `delay`: a refusal (4xx, most likely a wrong URL or function name) at error level,
    /// a throttle or an unreachable target as a warning.
    pub fn log_not_reached(&self, mapping: &str, outcome: &Outcome, delay: Duration) {
        let retry_in_ms = delay.as_millis() as u64;
        let detail = outcome.retry_detail().unwrap_or_default();
        if let Outcome::Rejected { status, .. } = outcome {
            tracing::error!(
                mapping,
                function = self.name(),
                status,
                retry_in_ms,
                detail,
                "the target refused the invocation (wrong URL or function name?), retrying the batch"
            );
        } else {
            tracing::warn!(
                mapping,
                function = self.name(),
                outcome = outcome.label(),
                retry_in_ms,
                detail,
                "function not reached, retrying the batch"
            );
        }
    }

    /// Invokes the function with `event`, waiting for a concurrency slot first. `None`
    /// when `stop` comes before the slot: nothing was invoked. Once started, an
    /// invocation runs to its end.
    pub async fn invoke(&self, event: Bytes, stop: &CancellationToken) -> Option<Invocation> {
        let _permit = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            permit = self.permits.acquire() => permit.expect("the function semaphore is never closed"),
        };
        let started = Instant::now();
        let (outcome, ids) = match &self.target {
            Target::Http(t) => (t.invoke(event).await, ServiceIds::default()),
            Target::Command(t) => (t.invoke(event).await, ServiceIds::default()),
            Target::Lambda(t) => t.invoke(event).await,
            Target::InProcess(answer) => (answer(event).await, ServiceIds::default()),
        };
        Some(Invocation {
            outcome,
            duration: started.elapsed(),
            request_id: ids
                .request_id
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            executed_version: ids
                .executed_version
                .unwrap_or_else(|| self.executed_version().to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, header: Option<&str>, body: &str) -> Outcome {
        classify(Reply {
            status,
            function_error: header.map(str::to_string),
            body: body.as_bytes().to_vec(),
        })
    }

    /// Invokes function `f`, its target given by `target` lines, once with `{}`: the
    /// config has `[aws]` lines `aws` (the endpoint is `endpoint`) and two mappings of `f`
    /// in different regions, ap-southeast-2 first.
    async fn invoke_once(endpoint: &str, aws: &str, target: &str) -> Outcome {
        let text = format!(
            r#"
[aws]
endpoint_url = "{endpoint}"
{aws}
[functions.f]
{target}
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:sqs:ap-southeast-2:1:a"
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:sqs:eu-central-1:1:b"
"#
        );
        let config = crate::config::validate(&text, std::path::Path::new("."), &|_| None)
            .expect("a valid config");
        let function = Function::build(config.functions["f"].clone(), &config.aws).await;
        function
            .invoke(Bytes::from_static(b"{}"), &CancellationToken::new())
            .await
            .expect("not stopped")
            .outcome
    }

    /// The `AWS_REGION` a command target sees.
    async fn command_region(aws: &str) -> String {
        let outcome = invoke_once(
            "http://127.0.0.1:1",
            aws,
            r#"command = ["sh", "-c", 'cat >/dev/null; printf %s "$AWS_REGION"']"#,
        )
        .await;
        let Outcome::Success { body } = outcome else {
            panic!("expected success: {outcome:?}");
        };
        String::from_utf8(body).unwrap()
    }

    #[tokio::test]
    async fn a_command_gets_aws_region_else_its_first_mappings_region() {
        assert_eq!(command_region("").await, "ap-southeast-2");
        assert_eq!(command_region("region = \"us-west-2\"").await, "us-west-2");
    }

    /// The region a Lambda target signs its Invoke calls for, from the credential scope of
    /// the request a local server receives; the function is named by two mappings in
    /// different regions.
    async fn lambda_region(aws: &str) -> String {
        let scopes: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let seen = scopes.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let authorization = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                seen.lock().unwrap().push(authorization);
                "null"
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let outcome = invoke_once(&endpoint, aws, r#"lambda = { function_name = "f" }"#).await;
        assert!(matches!(outcome, Outcome::Success { .. }), "{outcome:?}");
        let authorization = scopes.lock().unwrap()[0].clone();
        // Credential=KEY/DATE/REGION/lambda/aws4_request
        authorization
            .split("Credential=")
            .nth(1)
            .and_then(|credential| credential.split('/').nth(2))
            .unwrap_or_else(|| panic!("no credential scope in {authorization:?}"))
            .to_string()
    }

    #[tokio::test]
    async fn a_lambda_target_runs_in_aws_region_else_its_first_mappings_region() {
        assert_eq!(lambda_region("").await, "ap-southeast-2");
        assert_eq!(lambda_region("region = \"us-west-2\"").await, "us-west-2");
    }

    #[test]
    fn success_is_2xx_without_error_marker() {
        assert_eq!(
            reply(200, None, "null"),
            Outcome::Success {
                body: b"null".to_vec()
            }
        );
        assert!(matches!(reply(202, None, ""), Outcome::Success { .. }));
        // one of the two error keys is not an error object on a 2xx
        assert!(matches!(
            reply(200, None, r#"{"errorMessage":"x"}"#),
            Outcome::Success { .. }
        ));
    }

    #[test]
    fn aws_header_is_a_function_error() {
        assert_eq!(
            reply(200, Some("Unhandled"), "{}"),
            Outcome::FunctionError {
                error_type: "Unhandled".into(),
                body: b"{}".to_vec()
            }
        );
    }

    #[test]
    fn rie_error_body_and_timeout_text_are_function_errors() {
        assert!(matches!(
            reply(
                200,
                None,
                r#"{"errorType":"Exception","errorMessage":"boom","stackTrace":[]}"#
            ),
            Outcome::FunctionError { .. }
        ));
        assert!(matches!(
            reply(200, None, "Task timed out after 3.00 seconds"),
            Outcome::FunctionError { .. }
        ));
    }

    #[test]
    fn cargo_lambda_5xx_with_runtime_error_is_a_function_error() {
        assert!(matches!(
            reply(500, None, r#"{"errorType":"&str","errorMessage":"boom"}"#),
            Outcome::FunctionError { .. }
        ));
        assert!(matches!(
            reply(502, Some("Unhandled"), "x"),
            Outcome::FunctionError { .. }
        ));
    }

    #[test]
    fn throttles_and_other_statuses() {
        assert!(matches!(
            reply(
                429,
                None,
                r#"{"Reason":"ConcurrentInvocationLimitExceeded"}"#
            ),
            Outcome::Throttled { .. }
        ));
        for status in [301, 500, 502, 503] {
            assert!(
                matches!(reply(status, None, "nope"), Outcome::CouldNotInvoke { .. }),
                "{status}"
            );
        }
    }

    #[test]
    fn a_413_is_payload_too_large_even_with_an_error_body() {
        for body in ["Request Entity Too Large", r#"{"errorMessage":"too big"}"#] {
            assert!(
                matches!(reply(413, None, body), Outcome::PayloadTooLarge { .. }),
                "{body}"
            );
        }
        assert_eq!(
            reply(413, None, "").retry_detail(),
            None,
            "split, not retried"
        );
    }

    #[test]
    fn other_4xx_are_rejected_with_status_and_body_start() {
        for status in [400, 403, 404, 408] {
            let outcome = reply(status, None, "no such function");
            assert_eq!(
                outcome,
                Outcome::Rejected {
                    status,
                    detail: format!("HTTP {status}: no such function")
                }
            );
            assert!(outcome.retry_detail().is_some(), "retried as it is");
        }
    }
}

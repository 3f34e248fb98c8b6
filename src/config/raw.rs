//! The config file as written: one serde type per table, unknown keys refused.
//!
//! Each field has one doc comment and one default (the type's `Default`, which serde uses
//! for absent keys). Integers are `i64` so that an out-of-range value gets a range message
//! from [`validate`](super::validate) rather than a type error. A field is an `Option` when
//! absent and set mean different things (a default that depends on the source or target
//! kind, or a key accepted by one source kind only). Tests build files from these types and
//! render them with [`RawConfig::to_toml`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// The AWS clients; anything unset comes from the standard AWS chain.
    pub aws: RawAws,
    /// Where checkpoints live.
    pub state: RawState,
    /// The operational endpoint (`/metrics`, `/healthz`, `/mappings`); off when absent.
    pub admin: Option<RawAdmin>,
    /// How to reach each function, by the name mappings use. A mapping whose
    /// `function_name` has no entry invokes that name through the Lambda Invoke API.
    pub functions: BTreeMap<String, RawFunction>,
    /// The event source mappings; the file needs the key, even if empty.
    pub mappings: Vec<RawMapping>,
}

impl RawConfig {
    /// The file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config renders as TOML")
    }
}

/// `[aws]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAws {
    /// The region of every client; default: the chain's, else the source ARN's region.
    pub region: Option<String>,
    /// One endpoint for every service (an emulator); http or https.
    pub endpoint_url: Option<String>,
    /// Allow clients with no endpoint override to reach real AWS; default false.
    pub allow_remote: bool,
}

/// `[admin]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    /// `IP:PORT` to serve the endpoint on; required. A loopback address unless
    /// `allow_remote_admin`.
    pub listen: Option<String>,
    /// Allow a `listen` address other than loopback; default false.
    pub allow_remote_admin: bool,
    /// Seconds a mapping's queue or stream may be missing or unreachable, or its function
    /// refuse every invocation (4xx), before `/healthz` reports it (1..=3600); default 60.
    pub unhealthy_after_secs: Option<i64>,
}

/// `[state]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawState {
    /// The checkpoint directory, relative to the config file; default `.esmd`.
    pub dir: Option<PathBuf>,
}

/// `[functions.NAME]`: exactly one of `url`, `command` or `lambda`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFunction {
    /// An Invoke-API-compatible HTTP endpoint (http only).
    pub url: Option<String>,
    /// A subprocess: the program and its arguments.
    pub command: Option<Vec<String>>,
    /// The Lambda Invoke API.
    pub lambda: Option<RawLambda>,
    /// Invocations in flight across all mappings (1..=10000); default 1 for `url` and
    /// `command`, 1000 for `lambda`.
    pub max_concurrency: Option<i64>,
    /// The invocation timeout in seconds (1..=900); default 900.
    pub timeout_secs: i64,
    /// The execution role ARN, sent as Kinesis `invokeIdentityArn`; default
    /// `arn:PARTITION:iam::ACCOUNT:role/FUNCTION`.
    pub role_arn: Option<String>,
}

impl Default for RawFunction {
    fn default() -> Self {
        RawFunction {
            url: None,
            command: None,
            lambda: None,
            max_concurrency: None,
            timeout_secs: super::DEFAULT_TIMEOUT_SECS as i64,
            role_arn: None,
        }
    }
}

/// `[functions.NAME] lambda`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLambda {
    /// The function's name or ARN; required.
    pub function_name: String,
    /// A version or alias (1 to 128 characters); default: `$LATEST`.
    pub qualifier: Option<String>,
    /// This function's Lambda endpoint; default: the `[aws]` one.
    pub endpoint_url: Option<String>,
}

/// `[[mappings]]`: the `CreateEventSourceMapping` parameters in snake_case, with the same
/// defaults and ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMapping {
    /// A `[functions]` name, or a function invoked by that name; required.
    pub function_name: Option<String>,
    /// An SQS queue, Kinesis stream, or DynamoDB table or stream ARN; required.
    pub event_source_arn: Option<String>,
    /// The mapping id, naming its checkpoint file; default: derived from the source ARN
    /// and the function name.
    pub uuid: Option<String>,
    /// Whether the mapping polls; default true.
    pub enabled: bool,
    /// Records per batch (1..=10000; 10 for fifo queues); default 10 for SQS, 100 for
    /// streams.
    pub batch_size: Option<i64>,
    /// How long to gather a batch (0..=300); default 0.
    pub maximum_batching_window_in_seconds: i64,
    /// At most `["ReportBatchItemFailures"]`; default none.
    pub function_response_types: Vec<String>,
    /// Event filtering: a record is delivered when any filter's pattern matches it.
    pub filter_criteria: Option<RawFilterCriteria>,
    /// A JSONL file (relative to the config file's directory) to which every invocation
    /// the function answered is appended, for `esmd replay --capture`.
    pub capture: Option<String>,
    /// SQS only: the pollers' ceiling.
    pub scaling_config: Option<RawScalingConfig>,
    /// Streams only, required: where a new mapping starts reading.
    pub starting_position: Option<RawStartingPosition>,
    /// Streams only, with `AT_TIMESTAMP`: Unix seconds.
    pub starting_position_timestamp: Option<i64>,
    /// Streams only: lanes per shard (1..=10); default 1.
    pub parallelization_factor: Option<i64>,
    /// Streams only: split a failing batch in two; default false.
    pub bisect_batch_on_function_error: Option<bool>,
    /// Streams only: retries of a failing batch (-1..=10000, -1 until the records expire);
    /// default -1.
    pub maximum_retry_attempts: Option<i64>,
    /// Streams only: records older than this are discarded (-1 or 60..=604800, -1 for no
    /// limit); default -1.
    pub maximum_record_age_in_seconds: Option<i64>,
    /// Streams only: where discarded records are sent.
    pub destination_config: Option<RawDestinationConfig>,
    /// Streams only: 0 is accepted, tumbling windows are not supported yet.
    pub tumbling_window_in_seconds: Option<i64>,
    /// Streams only, an esmd extension: how long a caught-up shard waits between polls
    /// (10..=60000 ms); default: the source's.
    pub idle_poll_interval_ms: Option<i64>,
}

impl Default for RawMapping {
    fn default() -> Self {
        RawMapping {
            function_name: None,
            event_source_arn: None,
            uuid: None,
            enabled: true,
            batch_size: None,
            maximum_batching_window_in_seconds: 0,
            function_response_types: Vec::new(),
            filter_criteria: None,
            capture: None,
            scaling_config: None,
            starting_position: None,
            starting_position_timestamp: None,
            parallelization_factor: None,
            bisect_batch_on_function_error: None,
            maximum_retry_attempts: None,
            maximum_record_age_in_seconds: None,
            destination_config: None,
            tumbling_window_in_seconds: None,
            idle_poll_interval_ms: None,
        }
    }
}

/// `filter_criteria`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFilterCriteria {
    /// At most 5 filters; a record passes when any matches.
    pub filters: Vec<RawFilter>,
}

/// One entry of `filter_criteria.filters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFilter {
    /// An EventBridge-style event pattern, as a JSON string (at most 4,096 characters).
    pub pattern: String,
}

/// `scaling_config`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawScalingConfig {
    /// Batches in flight for this mapping (2..=1000); default 1000, and never more than
    /// the function's `max_concurrency`.
    pub maximum_concurrency: Option<i64>,
}

/// `starting_position`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RawStartingPosition {
    TrimHorizon,
    Latest,
    /// Kinesis only.
    AtTimestamp,
}

/// `destination_config`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawDestinationConfig {
    /// Where records go that a stream mapping discards.
    pub on_failure: Option<RawOnFailure>,
}

/// `destination_config.on_failure`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawOnFailure {
    /// A standard SQS queue, SNS topic or S3 bucket ARN, or `file:///path.jsonl`; empty
    /// means none.
    pub destination: String,
}

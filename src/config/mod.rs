//! The config file: TOML in, [`raw`] types, validated [`Config`] out.
//!
//! Validation is pure (no network, no await) and complete: it reads every table and
//! reports every problem with its location, so `validate` and `run` print the same list.
//! Mapping keys are the AWS `CreateEventSourceMapping` parameters in snake_case, with the
//! same defaults and ranges. The validated types hold only what passed: each source kind
//! carries its own settings, and a destination its parsed parts.

mod arn;
pub mod raw;
mod reader;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use arn::{DestinationConfig, SourceArn, SourceResource};
pub use reader::{Problem, Problems};
pub use validate::validate;

/// Config that passed validation.
#[derive(Debug, Clone)]
pub struct Config {
    pub aws: AwsSettings,
    pub state_dir: PathBuf,
    /// The operational endpoint; `None`: not served.
    pub admin: Option<AdminSettings>,
    pub functions: BTreeMap<String, FunctionConfig>,
    pub mappings: Vec<MappingConfig>,
    /// What is valid here but differs from AWS, worth telling: `validate` prints these
    /// and `run` logs them.
    pub notes: Vec<Problem>,
}

/// The `[aws]` section: anything unset comes from the standard AWS chain.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub allow_remote: bool,
}

/// The `[admin]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub listen: std::net::SocketAddr,
    /// How long a source may be missing or unreachable, or a function refuse every
    /// invocation, before the mapping is reported unhealthy.
    pub unhealthy_after: Duration,
}

/// The default of `[admin] unhealthy_after_secs`.
pub const DEFAULT_UNHEALTHY_AFTER_SECS: u64 = 60;

/// How to reach one function.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    pub name: String,
    pub target: TargetConfig,
    /// Invocations in flight to this function, across all mappings.
    pub max_concurrency: usize,
    pub timeout: Duration,
    /// The execution role, sent as Kinesis `invokeIdentityArn`.
    pub role_arn: Option<String>,
    /// The source region of the first mapping (in file order) that names this function:
    /// the function's region when `[aws] region` is unset. `None` when no mapping uses it.
    pub source_region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetConfig {
    /// An Invoke-API-compatible HTTP endpoint (RIE, `cargo lambda watch`, a webhook).
    Url(String),
    /// A subprocess: event on stdin, response on stdout.
    Command(Vec<String>),
    /// The Lambda Invoke API.
    Lambda {
        function_name: String,
        qualifier: Option<String>,
        endpoint_url: Option<String>,
    },
}

/// Default `max_concurrency` per target kind: the RIE takes one invocation at a time,
/// a subprocess per batch is kept serial too, the Lambda service takes many.
pub const DEFAULT_URL_CONCURRENCY: usize = 1;
pub const DEFAULT_COMMAND_CONCURRENCY: usize = 1;
pub const DEFAULT_LAMBDA_CONCURRENCY: usize = 1000;
/// The Lambda maximum function timeout.
pub const DEFAULT_TIMEOUT_SECS: u64 = 900;

/// One event source mapping.
#[derive(Debug, Clone)]
pub struct MappingConfig {
    /// `uuid` from the file, or a stable id derived from the source ARN and function name.
    pub id: String,
    pub function_name: String,
    pub source: SourceArn,
    pub batch_size: usize,
    pub batching_window: Duration,
    pub report_batch_item_failures: bool,
    pub enabled: bool,
    pub kind: SourceKind,
    /// `filter_criteria`, compiled; `None` delivers every record.
    pub filters: Option<std::sync::Arc<crate::filter::Filters>>,
    /// `capture`, resolved against the config file's directory: where every invocation
    /// the function answered is appended.
    pub capture: Option<PathBuf>,
}

/// The source kind, with the settings only that kind takes.
#[derive(Debug, Clone)]
pub enum SourceKind {
    Sqs(SqsSettings),
    Stream(StreamSettings),
}

impl SourceKind {
    /// How this source's records are shown to filter patterns.
    pub fn filter_source(&self) -> crate::filter::FilterSource {
        use crate::filter::FilterSource;
        match self {
            SourceKind::Sqs(_) => FilterSource::Sqs,
            SourceKind::Stream(s) => match s.stream {
                StreamSource::Kinesis { .. } => FilterSource::Kinesis,
                StreamSource::DynamoDb { .. } => FilterSource::DynamoDb,
            },
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqsSettings {
    pub queue_name: String,
    pub fifo: bool,
    /// `scaling_config.maximum_concurrency` (2..=1000).
    pub maximum_concurrency: Option<usize>,
}

/// The stream a Kinesis or DynamoDB mapping reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSource {
    Kinesis {
        stream_name: String,
    },
    /// A table's latest stream, or the one `stream_label` names.
    DynamoDb {
        table_name: String,
        stream_label: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct StreamSettings {
    pub stream: StreamSource,
    pub starting_position: StartingPosition,
    pub parallelization_factor: usize,
    pub bisect_batch_on_function_error: bool,
    /// -1 means retry until the record expires.
    pub maximum_retry_attempts: i64,
    /// -1 means no age limit.
    pub maximum_record_age_in_seconds: i64,
    pub on_failure_destination: Option<DestinationConfig>,
    /// How long a caught-up shard waits between polls (`idle_poll_interval_ms`, an esmd
    /// extension); the source's default when unset.
    pub idle_poll_interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartingPosition {
    TrimHorizon,
    Latest,
    /// Unix seconds.
    AtTimestamp(i64),
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Problem>),
}

fn render(problems: &[Problem]) -> String {
    let mut out = format!(
        "invalid config: {} problem{}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for problem in problems {
        out.push_str("\n  ");
        out.push_str(&problem.to_string());
    }
    out
}

impl Config {
    /// Reads and validates the file at `path`, with the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        validate(&text, base_dir, &|name| std::env::var(name).ok()).map_err(ConfigError::Invalid)
    }

    pub fn function(&self, name: &str) -> Option<&FunctionConfig> {
        self.functions.get(name)
    }

    /// The mapping with this id, or a message naming the ones there are.
    pub fn mapping(&self, id: &str) -> Result<&MappingConfig, String> {
        self.mappings.iter().find(|m| m.id == id).ok_or_else(|| {
            let ids: Vec<&str> = self.mappings.iter().map(|m| m.id.as_str()).collect();
            format!(
                "no mapping {id} in the config; its mappings: {}",
                ids.join(", ")
            )
        })
    }
}

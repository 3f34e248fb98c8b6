//! `esmd run` as a library: [`run`] starts every enabled mapping, runs until its shutdown
//! future resolves, then stops in two phases: no new polls at once, then in-flight
//! invocations finish and settle, up to the graceful limit or until the second future
//! (a second signal) says to stop at once. A mapping that fails to start does not stop
//! the others; when every enabled mapping has failed, the run stops at once. The CI run
//! modes ([`RunUntil`]) stop it the same graceful way once every mapping has drained,
//! after so many batches, or when a timeout passes. It returns a [`RunReport`]: why it
//! ended, what each mapping did, and whether any failed. Signals are `main`'s.
//! With `[admin]`, the operational endpoint serves from the start until the drain ended.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, warn};

use crate::admin::Admin;
use crate::config::{
    AwsSettings, Config, FunctionConfig, MappingConfig, SourceKind, SqsSettings, StreamSettings,
};
use crate::pipeline::capture::CaptureFile;
use crate::source::{self, Launch};
use crate::status::{Activity, MappingStatus, StatusBoard};
use crate::target::Function;
use crate::telemetry::source_label;

/// Why a run ended in failure (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("every enabled mapping failed to start: {}", list(.0))]
    EveryMappingFailed(Vec<(String, String)>),
    #[error("stopped; some mappings had failed to start: {}", list(.0))]
    SomeMappingsFailed(Vec<(String, String)>),
}

/// `mapping ID: REASON; ...`
fn list(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(id, reason)| format!("mapping {id}: {reason}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// When a run stops by itself (`run --until-drained`, `--max-batches`, `--timeout`);
/// the default runs until the stop request.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunUntil {
    /// Stop once every mapping is caught up with nothing in flight or waiting for a retry.
    pub drained: bool,
    /// Stop after this many invocations reached functions, across mappings: they settle
    /// during the graceful stop.
    pub batches: Option<u64>,
    /// Stop when this has passed, whatever is left to do.
    pub timeout: Option<Duration>,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The stop request (a signal).
    Requested,
    Drained,
    BatchLimit,
    TimedOut,
    EveryMappingFailed,
}

/// What a run did, one entry per mapping of the config, in config order.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub ended: Ended,
    pub mappings: Vec<MappingReport>,
}

#[derive(Debug, Clone)]
pub struct MappingReport {
    pub id: String,
    /// The event source ARN.
    pub source: String,
    pub state: MappingState,
    pub activity: Activity,
}

/// How a mapping's run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingState {
    /// Its source opened; it polled until the stop.
    Ran,
    /// Still waiting for its queue or stream to exist when the run stopped.
    NeverOpened,
    FailedToStart {
        reason: String,
    },
    Disabled,
}

impl MappingReport {
    /// One line for the summary on exit.
    pub fn summary(&self) -> String {
        let a = &self.activity;
        format!(
            "mapping {} ({}, {}): polled {}, invoked {}, failed {}, filtered out {}, discarded {}, batches {}",
            self.id,
            self.source,
            self.state.label(),
            a.records_polled,
            a.records_invoked,
            a.records_failed,
            a.records_filtered_out,
            a.records_discarded,
            a.batches_invoked,
        )
    }

    /// The summary as one JSON object, for `--log-format json`.
    pub fn summary_json(&self) -> serde_json::Value {
        let a = &self.activity;
        serde_json::json!({
            "mapping": self.id,
            "source": self.source,
            "state": self.state.label(),
            "polled": a.records_polled,
            "invoked": a.records_invoked,
            "failed": a.records_failed,
            "filtered_out": a.records_filtered_out,
            "discarded": a.records_discarded,
            "batches": a.batches_invoked,
            "deleted": a.records_deleted,
        })
    }
}

impl MappingState {
    fn label(&self) -> &'static str {
        match self {
            MappingState::Ran => "ran",
            MappingState::NeverOpened => "never opened",
            MappingState::FailedToStart { .. } => "failed to start",
            MappingState::Disabled => "disabled",
        }
    }
}

impl RunReport {
    /// Stream records discarded (to a destination or dropped), across mappings.
    pub fn discarded(&self) -> u64 {
        self.mappings
            .iter()
            .map(|m| m.activity.records_discarded)
            .sum()
    }

    /// `(mapping id, reason)` of every mapping that failed to start.
    pub fn failures(&self) -> Vec<(String, String)> {
        self.mappings
            .iter()
            .filter_map(|m| match &m.state {
                MappingState::FailedToStart { reason } => Some((m.id.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// The error the run ends in: any mapping that failed to start fails the run.
    pub fn result(&self) -> Result<(), RunError> {
        let failures = self.failures();
        let enabled = self
            .mappings
            .iter()
            .filter(|m| m.state != MappingState::Disabled)
            .count();
        if failures.is_empty() {
            Ok(())
        } else if failures.len() == enabled {
            Err(RunError::EveryMappingFailed(failures))
        } else {
            Err(RunError::SomeMappingsFailed(failures))
        }
    }
}

/// Runs until `shutdown` resolves, `until` says to stop, or every mapping failed to
/// start, then drains: returns once everything settled, the graceful limit passed, or
/// `stop_now` resolved. `stop_now` is only polled while draining. Work still in flight
/// then is abandoned, not awaited: the caller's runtime ends it.
pub async fn run(
    config: Config,
    graceful_limit: Duration,
    until: RunUntil,
    shutdown: impl Future<Output = ()>,
    stop_now: impl Future<Output = ()>,
) -> RunReport {
    run_wired(
        &AwsWiring,
        config,
        graceful_limit,
        until,
        shutdown,
        stop_now,
    )
    .await
}

/// Where a run's functions and sources come from: [`AwsWiring`], the configured targets and
/// the AWS services, for `esmd run`; tests wire in-process functions and in-memory fakes.
pub trait Wiring: Sync {
    /// The function a config entry names.
    fn function(
        &self,
        config: FunctionConfig,
        aws: &AwsSettings,
    ) -> impl Future<Output = Function> + Send;

    /// Runs an SQS mapping until `launch.stop`.
    fn sqs(
        &self,
        mapping: MappingConfig,
        sqs: SqsSettings,
        launch: Launch,
    ) -> impl Future<Output = ()> + Send + 'static;

    /// The board the run reports on: a new one (one that asks the sources whether they
    /// drained, for `until.drained`); a replay hands in its own.
    fn status_board(&self, until: &RunUntil) -> Arc<StatusBoard> {
        Arc::new(if until.drained {
            StatusBoard::until_drained()
        } else {
            StatusBoard::default()
        })
    }

    /// Runs a Kinesis or DynamoDB Streams mapping until `launch.stop`.
    fn stream(
        &self,
        mapping: MappingConfig,
        settings: StreamSettings,
        launch: Launch,
    ) -> impl Future<Output = ()> + Send + 'static;
}

/// The configured targets and the AWS services (or the emulators standing in for them).
pub struct AwsWiring;

impl Wiring for AwsWiring {
    async fn function(&self, config: FunctionConfig, aws: &AwsSettings) -> Function {
        Function::build(config, aws).await
    }

    fn sqs(
        &self,
        mapping: MappingConfig,
        sqs: SqsSettings,
        launch: Launch,
    ) -> impl Future<Output = ()> + Send + 'static {
        source::sqs::run(mapping, sqs, launch)
    }

    fn stream(
        &self,
        mapping: MappingConfig,
        settings: StreamSettings,
        launch: Launch,
    ) -> impl Future<Output = ()> + Send + 'static {
        source::stream::run(mapping, settings, launch)
    }
}

/// [`run`] with the functions and sources `wiring` makes.
pub async fn run_wired(
    wiring: &impl Wiring,
    config: Config,
    graceful_limit: Duration,
    until: RunUntil,
    shutdown: impl Future<Output = ()>,
    stop_now: impl Future<Output = ()>,
) -> RunReport {
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let statuses = wiring.status_board(&until);
    let admin = match &config.admin {
        Some(settings) => match Admin::start(settings, &config, statuses.clone()).await {
            Ok(admin) => Some(admin),
            Err(err) => {
                error!(listen = %settings.listen, error = %err, "cannot serve the admin endpoint: running without it");
                None
            }
        },
        None => None,
    };

    let mut functions: HashMap<String, Arc<Function>> = HashMap::new();
    let mut captures: HashMap<PathBuf, Arc<CaptureFile>> = HashMap::new();
    let enabled: Vec<_> = config.mappings.iter().filter(|m| m.enabled).collect();
    for mapping in &enabled {
        if !functions.contains_key(&mapping.function_name) {
            let function_config = config
                .function(&mapping.function_name)
                .expect("validation gives every mapping a function")
                .clone();
            let function = wiring.function(function_config, &config.aws).await;
            functions.insert(mapping.function_name.clone(), Arc::new(function));
        }
        let function = functions[&mapping.function_name].clone();
        let status = statuses.register(&mapping.id, source_label(&mapping.kind));
        // one writer per file: mappings that share a file append whole lines each
        let capture = mapping.capture.as_ref().map(|path| {
            captures
                .entry(path.clone())
                .or_insert_with(|| Arc::new(CaptureFile::open(path)))
                .clone()
        });
        let launch = Launch {
            function,
            aws: config.aws.clone(),
            state_dir: config.state_dir.clone(),
            status,
            stop: stop.child_token(),
            capture,
        };
        // every log line of the mapping's tasks names it
        let span = tracing::info_span!("mapping", id = %mapping.id);
        match &mapping.kind {
            SourceKind::Sqs(sqs) => {
                tracker.spawn(
                    wiring
                        .sqs((*mapping).clone(), sqs.clone(), launch)
                        .instrument(span),
                );
            }
            SourceKind::Stream(stream) => {
                tracker.spawn(
                    wiring
                        .stream((*mapping).clone(), stream.clone(), launch)
                        .instrument(span),
                );
            }
        }
    }
    for mapping in config.mappings.iter().filter(|m| !m.enabled) {
        info!(mapping = %mapping.id, source = %mapping.source, "mapping disabled, not polling");
    }
    if enabled.is_empty() {
        warn!("no enabled mappings: nothing to do until stopped");
    }
    tracker.close();

    let ended = tokio::select! {
        biased;
        _ = statuses.every_mapping_failed() => Ended::EveryMappingFailed,
        _ = shutdown => Ended::Requested,
        _ = statuses.every_mapping_drained(), if until.drained => Ended::Drained,
        _ = or_never(until.batches.map(|n| statuses.batches_invoked(n))) => Ended::BatchLimit,
        _ = or_never(until.timeout.map(tokio::time::sleep)) => Ended::TimedOut,
    };
    match ended {
        Ended::EveryMappingFailed => {
            error!("every enabled mapping failed to start: stopping");
            stop.cancel();
            tracker.wait().await;
        }
        _ => {
            let why = match ended {
                Ended::Drained => "every mapping caught up",
                Ended::BatchLimit => "batch limit reached",
                Ended::TimedOut => "timeout passed",
                _ => "stop requested",
            };
            info!(
                why,
                graceful_limit_secs = graceful_limit.as_secs(),
                "stopping: no new polls, waiting for in-flight invocations"
            );
            stop.cancel();
            tokio::select! {
                _ = tracker.wait() => info!("stopped cleanly"),
                _ = tokio::time::sleep(graceful_limit) => warn!(
                    "graceful limit reached: unsettled messages return to their queue after its visibility timeout"
                ),
                _ = stop_now => warn!("second signal: stopping now, unsettled messages return after the visibility timeout"),
            }
        }
    }
    if let Some(admin) = admin {
        admin.stop().await;
    }
    report(&config, &statuses, ended)
}

/// `future`'s output, or never without one.
async fn or_never<T>(future: Option<impl Future<Output = T>>) -> T {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

fn report(config: &Config, statuses: &StatusBoard, ended: Ended) -> RunReport {
    let mappings = config
        .mappings
        .iter()
        .map(|mapping| {
            let (state, activity) = match statuses.get(&mapping.id) {
                None => (MappingState::Disabled, Activity::default()),
                Some((status, activity)) => {
                    let state = match status {
                        MappingStatus::Starting => MappingState::NeverOpened,
                        MappingStatus::Running => MappingState::Ran,
                        MappingStatus::Failed { reason } => MappingState::FailedToStart { reason },
                    };
                    (state, activity)
                }
            };
            MappingReport {
                id: mapping.id.clone(),
                source: mapping.source.arn.clone(),
                state,
                activity,
            }
        })
        .collect();
    RunReport { ended, mappings }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::source::sqs::fake::FakeQueue;
    use crate::source::stream::tests::{FakeStream, shard};
    use crate::target::{Answer, Outcome};

    /// In-process functions and in-memory sources.
    struct Fakes {
        queue: Arc<FakeQueue>,
        stream: Arc<FakeStream>,
        answer: Answer,
    }

    impl Wiring for Fakes {
        async fn function(&self, config: FunctionConfig, _: &AwsSettings) -> Function {
            Function::in_process(&config.name, config.max_concurrency, self.answer.clone())
        }

        fn sqs(
            &self,
            mapping: MappingConfig,
            sqs: SqsSettings,
            launch: Launch,
        ) -> impl Future<Output = ()> + Send + 'static {
            let queue = self.queue.clone();
            async move {
                source::sqs::run_on(mapping, &sqs, queue, Duration::from_secs(30), launch).await
            }
        }

        fn stream(
            &self,
            mapping: MappingConfig,
            settings: StreamSettings,
            launch: Launch,
        ) -> impl Future<Output = ()> + Send + 'static {
            let stream = self.stream.clone();
            let stop = launch.stop.clone();
            async move {
                if let Some(mapping) = source::stream::open(mapping, settings, launch).await {
                    source::stream::supervise(stream, mapping, stop).await;
                }
            }
        }
    }

    /// A whole run in process, on paused time: an SQS mapping and a Kinesis mapping on the
    /// fakes, one disabled mapping; the shutdown future resolves once the function has seen
    /// every record, and the report says what each mapping did.
    #[tokio::test(start_paused = true)]
    async fn a_run_on_the_fakes_reports_what_each_mapping_did() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
[aws]
endpoint_url = "http://127.0.0.1:1"
[state]
dir = "{state}"
[functions.f]
url = "http://127.0.0.1:1/"
max_concurrency = 4
[[mappings]]
uuid = "orders"
function_name = "f"
event_source_arn = "arn:aws:sqs:us-east-1:123456789012:fake"
[[mappings]]
uuid = "clicks"
function_name = "f"
event_source_arn = "arn:aws:kinesis:us-east-1:123456789012:stream/fake"
starting_position = "TRIM_HORIZON"
batch_size = 10
[[mappings]]
uuid = "off"
function_name = "f"
event_source_arn = "arn:aws:sqs:us-east-1:123456789012:fake"
enabled = false
"#,
            state = dir.path().display()
        );
        let config = crate::config::validate(&text, dir.path(), &|_| None).unwrap();
        let queue = Arc::new(FakeQueue::new(false, Duration::from_secs(30)));
        for i in 0..5 {
            queue.send(&format!("m{i}"), None);
        }
        let mut stream = FakeStream::new(vec![shard(0, &[], true, 25, 3)]);
        stream.null_at_end = true;
        let seen = Arc::new(Mutex::new(0usize));
        let counter = seen.clone();
        let answer: Answer = Arc::new(move |event| {
            let event: serde_json::Value = serde_json::from_slice(&event).unwrap();
            *counter.lock().unwrap() += event["Records"].as_array().unwrap().len();
            Box::pin(async { Outcome::Success { body: Vec::new() } })
        });
        let fakes = Fakes {
            queue: queue.clone(),
            stream: Arc::new(stream),
            answer,
        };
        let everything_seen = async {
            while *seen.lock().unwrap() < 30 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let report = run_wired(
            &fakes,
            config,
            Duration::from_secs(30),
            RunUntil::default(),
            everything_seen,
            std::future::pending(),
        )
        .await;
        assert!(report.result().is_ok());
        let by_id: HashMap<&str, &MappingReport> =
            report.mappings.iter().map(|m| (m.id.as_str(), m)).collect();
        let orders = by_id["orders"];
        assert_eq!(orders.state, MappingState::Ran);
        assert_eq!(orders.activity.records_invoked, 5);
        assert_eq!(orders.activity.records_deleted, 5);
        assert_eq!(queue.remaining(), 0);
        let clicks = by_id["clicks"];
        assert_eq!(clicks.state, MappingState::Ran);
        assert_eq!(clicks.activity.records_invoked, 25);
        assert!(
            clicks.activity.batches_invoked >= 3,
            "batches of at most 10"
        );
        assert_eq!(by_id["off"].state, MappingState::Disabled);
    }
}

//! `esmd run` as a library: [`run`] starts every enabled mapping, runs until its shutdown
//! future resolves, then stops in two phases: no new polls at once, then in-flight
//! invocations finish and settle, up to the graceful limit or until the second future
//! (a second signal) says to stop at once. A mapping that fails to start does not stop
//! the others; when every enabled mapping has failed, the run stops at once. The CI run
//! modes ([`RunUntil`]) stop it the same graceful way once every mapping has drained,
//! after so many batches, or when a timeout passes. It returns a [`RunReport`]: why it
//! ended, what each mapping did, and whether any failed. Signals are `main`'s.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{Config, SourceKind};
use crate::source;
use crate::status::{Activity, MappingStatus, StatusBoard};
use crate::target::Function;

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
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let statuses = if until.drained {
        StatusBoard::until_drained()
    } else {
        StatusBoard::default()
    };

    let mut functions: HashMap<String, Arc<Function>> = HashMap::new();
    let enabled: Vec<_> = config.mappings.iter().filter(|m| m.enabled).collect();
    for mapping in &enabled {
        if !functions.contains_key(&mapping.function_name) {
            let function_config = config
                .function(&mapping.function_name)
                .expect("validation gives every mapping a function")
                .clone();
            let function = Function::build(function_config, &config.aws).await;
            functions.insert(mapping.function_name.clone(), Arc::new(function));
        }
        let function = functions[&mapping.function_name].clone();
        let status = statuses.register(&mapping.id);
        match &mapping.kind {
            SourceKind::Sqs(sqs) => source::sqs::spawn(
                (*mapping).clone(),
                sqs.clone(),
                function,
                &config.aws,
                status,
                stop.child_token(),
                &tracker,
            ),
            SourceKind::Stream(stream) => source::stream::spawn(
                (*mapping).clone(),
                stream.clone(),
                function,
                &config.aws,
                &config.state_dir,
                status,
                stop.child_token(),
                &tracker,
            ),
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

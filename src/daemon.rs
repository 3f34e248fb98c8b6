//! `esmd run`: start every enabled mapping, then shut down in two phases on SIGINT or
//! SIGTERM: stop polling at once, then let in-flight invocations finish and settle, up to
//! the graceful limit. A mapping that fails to start does not stop the others; when every
//! enabled mapping has failed, the run stops at once, and a run with any failed mapping
//! ends in an error (exit 1).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{Config, SourceKind};
use crate::source;
use crate::status::StatusBoard;
use crate::target::Function;

/// Why a run ended in failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen for signals: {0}")]
    Signals(#[from] std::io::Error),
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

/// Runs until a signal (or until every mapping failed to start), then drains. Returns once
/// everything settled or the limit passed.
pub async fn run(config: Config, graceful_limit: Duration) -> Result<(), RunError> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let statuses = StatusBoard::default();

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
                shutdown.child_token(),
                &tracker,
            ),
            SourceKind::Stream(stream) => source::stream::spawn(
                (*mapping).clone(),
                stream.clone(),
                function,
                &config.aws,
                &config.state_dir,
                status,
                shutdown.child_token(),
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

    let signal_name = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        _ = statuses.every_mapping_failed() => {
            error!("every enabled mapping failed to start: stopping");
            shutdown.cancel();
            tracker.wait().await;
            return Err(RunError::EveryMappingFailed(statuses.failures()));
        }
    };
    info!(
        signal = signal_name,
        graceful_limit_secs = graceful_limit.as_secs(),
        "stopping: no new polls, waiting for in-flight invocations"
    );
    shutdown.cancel();
    tokio::select! {
        _ = tracker.wait() => info!("stopped cleanly"),
        _ = tokio::time::sleep(graceful_limit) => warn!(
            "graceful limit reached: unsettled messages return to their queue after its visibility timeout"
        ),
        _ = sigterm.recv() => warn!("second signal: stopping now, unsettled messages return after the visibility timeout"),
        _ = sigint.recv() => warn!("second signal: stopping now, unsettled messages return after the visibility timeout"),
    }
    let failures = statuses.failures();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(RunError::SomeMappingsFailed(failures))
    }
}

//! `esmd run`: start every enabled mapping, then shut down in two phases on SIGINT or
//! SIGTERM: stop polling at once, then let in-flight invocations finish and settle, up to
//! the graceful limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{Config, SourceKind};
use crate::source;
use crate::target::Function;

/// Runs until a signal, then drains. Returns once everything settled or the limit passed.
pub async fn run(config: Config, graceful_limit: Duration) -> std::io::Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();

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
        match mapping.source.kind {
            SourceKind::Sqs { .. } => source::sqs::spawn(
                (*mapping).clone(),
                function,
                &config.aws,
                shutdown.child_token(),
                &tracker,
            ),
            SourceKind::Kinesis { .. } | SourceKind::DynamoDb { .. } => source::stream::spawn(
                (*mapping).clone(),
                function,
                &config.aws,
                &config.state_dir,
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
    Ok(())
}

//! `esmd replay`: re-drives records into a mapping's function through the pipeline of
//! `run` (batching, filters, partial batch responses, retries, bisect, destinations) and
//! exits. It takes no state lock and reads and writes no checkpoints, so it runs beside a
//! live `run` of the same mapping.
//!
//! - [`range`]: a range of a Kinesis or DynamoDB stream (and the per-shard spans of
//!   failure records), on the stream engine of `run`.
//! - [`failures`]: the records a stream mapping's failure records name (re-read as spans
//!   by [`range`]), or an SQS mapping's dead-letter queue.
//! - [`capture`]: the events a mapping's `capture` file recorded, with no AWS endpoint.
//! - [`progress`]: how far a replay is, on stderr.
//!
//! [`run`] checks a stream request against the config (usage errors before any network
//! call), builds the target function and a status board of its own, hands a
//! [`ReplayContext`] to the form asked for, and reports like `run --until-drained`.

pub mod capture;
pub mod failures;
pub mod progress;
pub mod range;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::ReplayArgs;
use crate::config::{Config, MappingConfig, SourceKind};
use crate::daemon::{Ended, MappingReport, MappingState, RunReport};
use crate::replay::progress::Progress;
use crate::status::{MappingStatus, StatusBoard, StatusReporter};
use crate::target::Function;
use crate::telemetry::source_label;

/// How long in-flight invocations may take to finish after the first stop request.
const GRACEFUL_LIMIT: Duration = Duration::from_secs(30);
/// How often the progress is brought up to date.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Why a replay did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The request does not fit the config or the stream (exit 64); nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// The replay could not be carried out (exit 1).
    #[error("{0}")]
    Fatal(String),
}

/// What every form of replay works with.
pub struct ReplayContext {
    pub config: Config,
    pub mapping: MappingConfig,
    /// The target: the mapping's function, or `--function`'s.
    pub function: Arc<Function>,
    pub dry_run: bool,
    /// Cancelled by the first SIGINT/SIGTERM: stop reading, let in-flight work finish.
    pub stop: CancellationToken,
    pub statuses: Arc<StatusBoard>,
    /// The mapping's status on [`Self::statuses`]: what the replay did.
    pub status: StatusReporter,
}

/// Runs the replay `args` asks for until it is done, `stop` was cancelled and in-flight
/// work finished, or `stop_now` resolved (or the graceful limit passed) after `stop`.
/// A report like `run`'s, with one mapping: `Drained` when it ran to its end.
pub async fn run(
    config: Config,
    args: &ReplayArgs,
    json_logs: bool,
    stop: CancellationToken,
    stop_now: impl Future<Output = ()>,
) -> Result<RunReport, ReplayError> {
    let mapping = config
        .mapping(&args.mapping)
        .map_err(ReplayError::Usage)?
        .clone();
    let form = Form::of(args, &mapping)?;
    let function_name = args.function.as_deref().unwrap_or(&mapping.function_name);
    let Some(function_config) = config.function(function_name).cloned() else {
        let names: Vec<&str> = config.functions.keys().map(String::as_str).collect();
        return Err(ReplayError::Usage(format!(
            "no function {function_name} in the config's [functions]; its functions: {}",
            names.join(", ")
        )));
    };
    let function = Arc::new(Function::build(function_config, &config.aws).await);
    // one that asks sources whether they drained: a dead-letter queue's replay runs on it
    let statuses = Arc::new(StatusBoard::until_drained());
    let status = statuses.register(&mapping.id, source_label(&mapping.kind));
    status.running();
    info!(mapping = %mapping.id, function = function.name(), dry_run = args.dry_run, "replay started");
    let ctx = ReplayContext {
        config,
        mapping,
        function,
        dry_run: args.dry_run,
        stop: stop.clone(),
        statuses,
        status,
    };
    // a capture replay shows its own progress: it knows its total from the start
    let own_progress = matches!(form, Form::Capture(_));
    // a form that runs a mapping of its own (a dead-letter queue) or counts its own
    // discards (a capture) brings its own report
    let work = async {
        match form {
            Form::Range(range) => range::replay_range(&ctx, &range).await.map(|()| None),
            Form::Failures(src) => failures::replay_failures(&ctx, &src).await.map(Some),
            Form::Capture(path) => capture::replay_capture(&ctx, &path, json_logs)
                .await
                .map(Some),
        }
    };
    let abandoned = async {
        stop.cancelled().await;
        tokio::select! {
            _ = stop_now => warn!("second signal: stopping now"),
            _ = tokio::time::sleep(GRACEFUL_LIMIT) => warn!("graceful limit reached: stopping now"),
        }
    };
    // records done: settled by the function, filtered out or discarded; the total of a
    // range is not known in advance
    let progress = (!own_progress).then(|| Progress::new(None, json_logs));
    let mut shown = 0;
    let mut show = || {
        let done = ctx.records_done();
        if let Some(progress) = &progress {
            progress.add(done.saturating_sub(shown));
        }
        shown = shown.max(done);
    };
    let feed = async {
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            show();
        }
    };
    let done = tokio::select! {
        done = work => done,
        _ = abandoned => Ok(None),
        _ = feed => unreachable!("the progress feed never ends"),
    };
    show();
    if let Some(progress) = progress {
        progress.finish();
    }
    let report = done?.unwrap_or_else(|| report(&ctx, ended(&ctx)));
    info!(mapping = %ctx.mapping.id, ended = ?report.ended, "replay ended");
    Ok(report)
}

/// How a replay that returned ended: drained, unless a stop was requested.
fn ended(ctx: &ReplayContext) -> Ended {
    if ctx.stop.is_cancelled() {
        Ended::Requested
    } else {
        Ended::Drained
    }
}

impl ReplayContext {
    /// Records done so far: answered by the function, filtered out or discarded.
    fn records_done(&self) -> u64 {
        let (_, a) = self
            .statuses
            .get(&self.mapping.id)
            .expect("the replayed mapping is registered");
        (a.records_invoked - a.records_failed.min(a.records_invoked))
            + a.records_filtered_out
            + a.records_discarded
    }
}

/// The form of replay asked for, checked against the mapping.
enum Form {
    Range(range::Range),
    /// `--failures SRC`.
    Failures(String),
    /// `--capture FILE`.
    Capture(std::path::PathBuf),
}

impl Form {
    fn of(args: &ReplayArgs, mapping: &MappingConfig) -> Result<Form, ReplayError> {
        if let Some(from) = &args.from {
            if !matches!(mapping.kind, SourceKind::Stream(_)) {
                return Err(ReplayError::Usage(format!(
                    "--from replays a range of a stream; mapping {} reads an SQS queue",
                    mapping.id
                )));
            }
            let range = range::Range::parse(from, args.to.as_deref(), args.shard.as_deref())
                .map_err(ReplayError::Usage)?;
            return Ok(Form::Range(range));
        }
        if let Some(path) = &args.capture {
            return Ok(Form::Capture(path.clone()));
        }
        match &args.failures {
            Some(src) => Ok(Form::Failures(src.clone())),
            None => Err(ReplayError::Usage(
                "replay needs --from, --failures or --capture".into(),
            )),
        }
    }
}

/// The replay's one-mapping report.
fn report(ctx: &ReplayContext, ended: Ended) -> RunReport {
    let (status, activity) = ctx
        .statuses
        .get(&ctx.mapping.id)
        .expect("the replayed mapping is registered");
    let state = match status {
        MappingStatus::Failed { reason } => MappingState::FailedToStart { reason },
        MappingStatus::Starting | MappingStatus::Running => MappingState::Ran,
    };
    RunReport {
        ended,
        mappings: vec![MappingReport {
            id: ctx.mapping.id.clone(),
            source: ctx.mapping.source.arn.clone(),
            state,
            activity,
        }],
    }
}

//! The stream engine: Kinesis Data Streams and DynamoDB Streams on one engine.
//!
//! The supervisor lists the stream's shards (again every few seconds, and at once when a
//! shard finishes), records new shards in the checkpoint store, and starts a task per
//! shard whose parents are finished ([`lineage`]). Each shard task reads and processes its
//! shard ([`shard`]) with one batch in flight per lane, and moves the shard's checkpoint
//! only over settled records. A changed stream identity (a re-created stream) stops every
//! shard, resets the mapping's state and reads the new stream from its start. One writer
//! task stores the mapping's checkpoints ([`CheckpointStore::write_behind`]). `design.md`
//! beside this file draws the reader, lanes, ledger and segments as state machines.

pub(crate) mod api;
pub(crate) mod dynamodb;
pub(crate) mod kinesis;
pub(crate) mod lineage;
pub(crate) mod shard;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, warn};

use self::api::{StreamApi, StreamDescription};
use self::shard::{ShardRun, run_shard};
use crate::checkpoint::{CheckpointStore, MappingState};
use crate::config::{AwsSettings, MappingConfig, StartingPosition, StreamSettings, StreamSource};
use crate::destination::Destination;
use crate::event::failure::StreamKind;
use crate::event::sequence::SequenceNumber;
use crate::pipeline::capture::CaptureFile;
use crate::pipeline::retry::RetryPolicy;
use crate::pipeline::sieve::Sieve;
use crate::source::Launch;
use crate::status::StatusReporter;
use crate::target::Function;

/// How often shards are listed again while nothing else prompts it.
const RELIST_INTERVAL: Duration = Duration::from_secs(5);

/// A stream mapping's shared state.
pub struct Mapping {
    pub config: MappingConfig,
    pub settings: StreamSettings,
    pub function: Arc<Function>,
    pub store: Arc<CheckpointStore>,
    pub destination: Option<Destination>,
    pub function_arn: String,
    pub stream_kind: StreamKind,
    pub status: StatusReporter,
    /// The mapping's filter criteria, if any.
    pub sieve: Option<Sieve>,
    /// `esmd replay --dry-run`: each batch is printed and settled, never invoked.
    pub dry_run: bool,
    /// The mapping's `capture` file, if any.
    pub capture: Option<Arc<CaptureFile>>,
}

impl Mapping {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            bisect_on_function_error: self.settings.bisect_batch_on_function_error,
            maximum_retry_attempts: self.settings.maximum_retry_attempts,
            maximum_record_age_in_seconds: self.settings.maximum_record_age_in_seconds,
        }
    }

    /// Opens the mapping's checkpoint store and destination.
    async fn open(
        config: MappingConfig,
        settings: StreamSettings,
        function: Arc<Function>,
        aws: &AwsSettings,
        state_dir: &Path,
        status: StatusReporter,
        capture: Option<Arc<CaptureFile>>,
    ) -> std::io::Result<Mapping> {
        let store = Arc::new(CheckpointStore::open(state_dir, &config.id)?);
        status.checkpoints(store.clone());
        let mut mapping = Mapping::new(config, settings, function, aws, store, status).await;
        mapping.capture = capture;
        Ok(mapping)
    }

    /// The mapping on `store`, with its destination; it captures nothing (a replay does
    /// not capture).
    pub async fn new(
        config: MappingConfig,
        settings: StreamSettings,
        function: Arc<Function>,
        aws: &AwsSettings,
        store: Arc<CheckpointStore>,
        status: StatusReporter,
    ) -> Mapping {
        let destination = match &settings.on_failure_destination {
            Some(target) => Some(Destination::build(target, aws).await),
            None => None,
        };
        let source = &config.source;
        let function_arn = function.arn(&source.partition, &source.region, &source.account);
        let stream_kind = match settings.stream {
            StreamSource::Kinesis { .. } => StreamKind::Kinesis,
            StreamSource::DynamoDb { .. } => StreamKind::DynamoDb,
        };
        let sieve = config
            .filters
            .clone()
            .map(|filters| Sieve::new(filters, config.kind.filter_source()));
        Mapping {
            sieve,
            config,
            settings,
            function,
            store,
            destination,
            function_arn,
            stream_kind,
            status,
            dry_run: false,
            capture: None,
        }
    }

    /// The function's execution role, sent as Kinesis `invokeIdentityArn`: `role_arn`,
    /// else `arn:aws:iam::ACCOUNT:role/FUNCTION_NAME`.
    fn invoke_identity_arn(&self) -> String {
        let source = &self.config.source;
        self.function.config.role_arn.clone().unwrap_or_else(|| {
            format!(
                "arn:{}:iam::{}:role/{}",
                source.partition, source.account, self.config.function_name
            )
        })
    }
}

/// Runs a stream mapping until `launch.stop`. A mapping whose checkpoint file cannot be
/// read does not start: its status reports it failed.
pub async fn run(config: MappingConfig, settings: StreamSettings, launch: Launch) {
    let shutdown = launch.stop.clone();
    let aws = launch.aws.clone();
    let Some(mapping) = open(config, settings, launch).await else {
        return;
    };
    on_stream(&aws, mapping, Supervise(shutdown)).await;
}

/// Work on a stream mapping's service, whichever it is: [`on_stream`] hands it the API.
pub(crate) trait OnStream {
    type Output;
    fn run<A: StreamApi>(
        self,
        api: Arc<A>,
        mapping: Arc<Mapping>,
    ) -> impl std::future::Future<Output = Self::Output> + Send;
}

/// `esmd run`'s work: [`supervise`] until the token is cancelled.
struct Supervise(CancellationToken);

impl OnStream for Supervise {
    type Output = ();
    async fn run<A: StreamApi>(self, api: Arc<A>, mapping: Arc<Mapping>) {
        supervise(api, mapping, self.0).await;
    }
}

/// Connects to the mapping's stream service (Kinesis or DynamoDB Streams) and runs `work`
/// on it.
pub(crate) async fn on_stream<W: OnStream>(
    aws: &AwsSettings,
    mapping: Arc<Mapping>,
    work: W,
) -> W::Output {
    let source = mapping.config.source.clone();
    let sdk = crate::aws::sdk_config(aws, Some(&source.region), None).await;
    let idle = mapping.settings.idle_poll_interval;
    let role = mapping.invoke_identity_arn();
    match &mapping.settings.stream {
        StreamSource::Kinesis { .. } => {
            let client = crate::aws::kinesis(&sdk);
            let api = kinesis::KinesisApi::new(client, &source.arn, &source.region, &role, idle);
            work.run(Arc::new(api), mapping).await
        }
        StreamSource::DynamoDb {
            table_name,
            stream_label,
        } => {
            let client = crate::aws::dynamodb_streams(&sdk);
            let stream_arn = stream_label.as_ref().map(|_| source.arn.as_str());
            let api = dynamodb::DynamoDbApi::new(client, table_name, stream_arn, idle);
            work.run(Arc::new(api), mapping).await
        }
    }
}

/// Opens a mapping's checkpoint store and destination; `None` when the store cannot be
/// read (the mapping is reported failed). It reports running once [`supervise`] listed
/// its stream (a missing stream is retried, not failed).
pub async fn open(
    config: MappingConfig,
    settings: StreamSettings,
    launch: Launch,
) -> Option<Arc<Mapping>> {
    let id = config.id.clone();
    let Launch {
        function,
        aws,
        state_dir,
        status,
        capture,
        ..
    } = launch;
    let opened = Mapping::open(
        config,
        settings,
        function,
        &aws,
        &state_dir,
        status.clone(),
        capture,
    );
    match opened.await {
        Ok(mapping) => Some(Arc::new(mapping)),
        Err(err) => {
            error!(mapping = %id, error = %err, "cannot open the checkpoint store: mapping not started");
            status.failed(err.to_string());
            None
        }
    }
}

/// Now, in Unix seconds (record arrival times are in these).
pub(crate) fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Lists the stream until it answers; `None` on shutdown.
async fn describe<A: StreamApi>(
    api: &A,
    mapping: &Mapping,
    shutdown: &CancellationToken,
) -> Option<StreamDescription> {
    crate::backoff::retry(
        crate::backoff::outage(),
        shutdown,
        || api.describe(),
        |_| true,
        |err, delay| {
            mapping
                .status
                .source_unreachable(format!("cannot list the stream's shards: {err}"));
            warn!(mapping = %mapping.config.id, stream = %mapping.config.source, error = %err, retry_in_ms = delay.as_millis() as u64, "cannot list the stream's shards");
        },
    )
    .await
    .inspect(|_| mapping.status.source_reachable())
    // the schedule is endless: only shutdown ends it without an answer
    .ok()
}

/// Brings the stored state in line with `description`, on disk before it returns: resets
/// it for a new or re-created stream and registers shards it has not seen.
///
/// A re-created stream (same stream or table, new identity) is read from its start, even
/// with LATEST: esmd notices the new stream seconds after it was created, and every record
/// in it was written after the stream the mapping read until then.
async fn reconcile(mapping: &Mapping, description: &StreamDescription) -> std::io::Result<()> {
    let stored = mapping.store.state();
    let same_stream =
        stored.stream_arn == description.arn && stored.stream_identity == description.identity;
    let recreated = !same_stream
        && !stored.shards.is_empty()
        && stream_of(&stored.stream_arn) == stream_of(&description.arn);
    let position = match &mapping.settings.starting_position {
        StartingPosition::Latest if recreated => &StartingPosition::TrimHorizon,
        configured => configured,
    };
    if recreated {
        warn!(
            mapping = %mapping.config.id,
            stream = %description.arn,
            stored_identity = %stored.stream_identity,
            identity = %description.identity,
            "the stream was re-created: its old checkpoints are dropped and the new stream is read from its start"
        );
    } else if !same_stream && !stored.shards.is_empty() {
        warn!(
            mapping = %mapping.config.id,
            stream = %description.arn,
            stored_stream = %stored.stream_arn,
            "the mapping reads another stream now: the old stream's checkpoints are dropped"
        );
    }
    mapping
        .store
        .update_now(|state| {
            if !same_stream {
                *state = MappingState {
                    stream_arn: description.arn.clone(),
                    stream_identity: description.identity.clone(),
                    ..MappingState::default()
                };
            }
            lineage::register(state, &description.shards, position, now_seconds());
            // finished shards that retention removed matter to nobody any more
            let listed: HashSet<&str> = description.shards.iter().map(|s| s.id.as_str()).collect();
            state
                .shards
                .retain(|id, shard| !shard.finished || listed.contains(id.as_str()));
        })
        .await
}

/// The stream an ARN names, without a DynamoDB stream's label: a re-created table has a
/// new label, and is still the mapping's stream.
fn stream_of(arn: &str) -> &str {
    match arn.find("/stream/") {
        Some(label) if arn.contains(":dynamodb:") => &arn[..label],
        _ => arn,
    }
}

struct Running {
    task: JoinHandle<()>,
    ending: Arc<OnceLock<SequenceNumber>>,
}

/// Runs the mapping until shutdown, starting over whenever the stream is re-created.
pub async fn supervise<A: StreamApi>(
    api: Arc<A>,
    mapping: Arc<Mapping>,
    shutdown: CancellationToken,
) {
    let id = mapping.config.id.clone();
    info!(
        mapping = %id,
        stream = %mapping.config.source,
        function = mapping.function.name(),
        batch_size = mapping.config.batch_size,
        parallelization_factor = mapping.settings.parallelization_factor,
        "{} mapping started",
        api.source_label()
    );
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(
        mapping
            .store
            .clone()
            .write_behind(writer_stop.clone())
            .in_current_span(),
    );
    'stream: loop {
        let Some(mut description) = describe(&*api, &mapping, &shutdown).await else {
            break;
        };
        mapping.status.running();
        if shutdown.is_cancelled() {
            break;
        }
        let stop = shutdown.child_token();
        let mut running: HashMap<String, Running> = HashMap::new();
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<String>();
        loop {
            if let Err(err) = reconcile(&mapping, &description).await {
                error!(mapping = %id, error = %err, "cannot write the checkpoint store");
            } else {
                let names: HashSet<String> = running.keys().cloned().collect();
                let state = mapping.store.state();
                for (shard_id, start) in lineage::startable(&state, &description.shards, &names) {
                    let ending = description.ending_of(&shard_id);
                    let ending = Arc::new(ending);
                    let settled_beyond = state
                        .shards
                        .get(&shard_id)
                        .map(|s| s.settled_beyond.clone())
                        .unwrap_or_default();
                    info!(mapping = %id, shard = %shard_id, start = ?start, settled_beyond = settled_beyond.len(), "reading shard");
                    mapping.status.caught_up(&shard_id, false);
                    let run = ShardRun {
                        shard_id: shard_id.clone(),
                        stream_arn: description.arn.clone(),
                        start,
                        settled_beyond,
                        ending: ending.clone(),
                        end: None,
                    };
                    let (api, mapping, stop, ended) =
                        (api.clone(), mapping.clone(), stop.clone(), ended_tx.clone());
                    // every log line of the shard's tasks names it, and its mapping
                    let span = tracing::info_span!("shard", id = %shard_id);
                    let task = tokio::spawn(
                        async move {
                            let shard_id = run.shard_id.clone();
                            // tells the supervisor even if the shard task panics
                            let _ended = Ended(ended, shard_id.clone());
                            let end = run_shard(api, mapping, run, stop).await;
                            debug!(shard = %shard_id, end = ?end, "shard task ended");
                        }
                        .instrument(span),
                    );
                    running.insert(shard_id, Running { task, ending });
                }
            }
            // the shards read now are the mapping's parts: the finished ones are gone
            mapping
                .status
                .keep_parts(running.keys().map(String::as_str));
            tokio::select! {
                _ = shutdown.cancelled() => {
                    stop_all(&id, running).await;
                    break 'stream;
                }
                Some(ended) = ended_rx.recv() => {
                    if let Some(done) = running.remove(&ended) {
                        joined(&id, &ended, done.task.await);
                    }
                }
                _ = tokio::time::sleep(RELIST_INTERVAL) => {}
            }
            let Some(next) = describe(&*api, &mapping, &shutdown).await else {
                stop_all(&id, running).await;
                break 'stream;
            };
            if next.arn != description.arn || next.identity != description.identity {
                stop.cancel();
                stop_all(&id, running).await;
                continue 'stream;
            }
            for shard in &next.shards {
                if let (Some(run), Some(end)) = (running.get(&shard.id), &shard.ending) {
                    let _ = run.ending.set(end.clone());
                }
            }
            description = next;
        }
    }
    writer_stop.cancel();
    if let Err(err) = writer.await {
        error!(mapping = %id, error = %err, "the checkpoint writer failed");
    }
    info!(mapping = %id, "{} mapping stopped", api.source_label());
}

/// Waits for every shard task; they stop reading at once and finish in-flight batches.
async fn stop_all(mapping_id: &str, running: HashMap<String, Running>) {
    for (shard, run) in running {
        joined(mapping_id, &shard, run.task.await);
    }
}

/// Logs a shard task that panicked; the supervisor starts the shard again.
fn joined(mapping_id: &str, shard: &str, result: Result<(), tokio::task::JoinError>) {
    if let Err(err) = result {
        error!(mapping = %mapping_id, shard, error = %err, "shard task failed: restarting it from its checkpoint");
    }
}

/// Sends the shard id to the supervisor when dropped: when the shard task ends.
struct Ended(mpsc::UnboundedSender<String>, String);

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = self.0.send(std::mem::take(&mut self.1));
    }
}

#[cfg(test)]
pub(crate) mod tests;

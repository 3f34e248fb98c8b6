//! The stream engine: Kinesis Data Streams and DynamoDB Streams on one engine.
//!
//! The supervisor lists the stream's shards (again every few seconds, and at once when a
//! shard finishes), records new shards in the checkpoint store, and starts a task per
//! shard whose parents are finished ([`lineage`]). Each shard task reads and processes its
//! shard ([`shard`]) with one batch in flight per lane, and moves the shard's checkpoint
//! only over settled records. A changed stream identity (a re-created stream) stops every
//! shard, resets the mapping's state and starts the new stream from the starting position.

mod api;
mod dynamodb;
mod kinesis;
mod lineage;
mod shard;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use self::api::{StreamApi, StreamDescription};
use self::shard::{ShardRun, run_shard};
use crate::checkpoint::{CheckpointStore, MappingState};
use crate::config::{AwsSettings, MappingConfig, SourceKind, SourceSettings, StreamSettings};
use crate::destination::Destination;
use crate::event::failure::StreamKind;
use crate::target::Function;

/// How often shards are listed again while nothing else prompts it.
const RELIST_INTERVAL: Duration = Duration::from_secs(5);

/// A stream mapping's shared state.
pub struct Mapping {
    pub config: MappingConfig,
    pub settings: StreamSettings,
    pub function: Arc<Function>,
    pub store: CheckpointStore,
    pub destination: Option<Destination>,
    pub function_arn: String,
    pub stream_kind: StreamKind,
}

impl Mapping {
    /// The stream ARN the mapping reads (for DynamoDB, resolved with its label).
    pub fn stream_arn(&self) -> String {
        let stored = self.store.state().stream_arn;
        if stored.is_empty() {
            self.config.source.arn.clone()
        } else {
            stored
        }
    }
}

/// Starts a stream mapping on `tracker`; it stops when `shutdown` is cancelled.
pub fn spawn(
    config: MappingConfig,
    function: Arc<Function>,
    aws: &AwsSettings,
    state_dir: &Path,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let aws = aws.clone();
    let state_dir = state_dir.to_path_buf();
    tracker.spawn(async move {
        let SourceSettings::Stream(settings) = config.settings.clone() else {
            unreachable!("the stream engine runs stream mappings only");
        };
        let store = match CheckpointStore::open(&state_dir, &config.id) {
            Ok(store) => store,
            Err(err) => {
                error!(mapping = %config.id, error = %err, "cannot open the checkpoint store: mapping not started");
                return;
            }
        };
        let sdk = crate::aws::sdk_config(&aws, Some(&config.source.region), None).await;
        let idle = settings.idle_poll_interval;
        let source = config.source.clone();
        let role = function.config.role_arn.clone().unwrap_or_else(|| {
            format!(
                "arn:{}:iam::{}:role/{}",
                source.partition, source.account, config.function_name
            )
        });
        let destination = match &settings.on_failure_destination {
            Some(target) => Some(Destination::build(target, &aws).await),
            None => None,
        };
        let function_arn = function.arn(&source.partition, &source.region, &source.account);
        let stream_kind = match source.kind {
            SourceKind::DynamoDb { .. } => StreamKind::DynamoDb,
            _ => StreamKind::Kinesis,
        };
        let mapping = Arc::new(Mapping {
            config,
            settings,
            function,
            store,
            destination,
            function_arn,
            stream_kind,
        });
        match &source.kind {
            SourceKind::Kinesis { .. } => {
                let client = aws_sdk_kinesis::Client::from_conf(
                    aws_sdk_kinesis::config::Builder::from(&sdk)
                        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
                        .build(),
                );
                let api = kinesis::KinesisApi::new(client, &source.arn, &source.region, &role, idle);
                supervise(Arc::new(api), mapping, shutdown).await;
            }
            SourceKind::DynamoDb {
                table_name,
                stream_label,
            } => {
                let client = aws_sdk_dynamodbstreams::Client::from_conf(
                    aws_sdk_dynamodbstreams::config::Builder::from(&sdk)
                        .retry_config(
                            aws_sdk_dynamodbstreams::config::retry::RetryConfig::disabled(),
                        )
                        .build(),
                );
                let stream_arn = stream_label.as_ref().map(|_| source.arn.as_str());
                let api = dynamodb::DynamoDbApi::new(client, table_name, stream_arn, idle);
                supervise(Arc::new(api), mapping, shutdown).await;
            }
            SourceKind::Sqs { .. } => unreachable!("sqs mappings have their own poller"),
        }
    });
}

fn now_seconds() -> f64 {
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
    let mut delays = crate::backoff::unreached_target();
    loop {
        match api.describe().await {
            Ok(description) => return Some(description),
            Err(err) => {
                let delay = delays.next().unwrap_or(RELIST_INTERVAL);
                warn!(mapping = %mapping.config.id, stream = %mapping.config.source, error = %err, retry_in_ms = delay.as_millis() as u64, "cannot list the stream's shards");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Brings the stored state in line with `description`: resets it for a new or re-created
/// stream and registers shards it has not seen.
fn reconcile(mapping: &Mapping, description: &StreamDescription) -> std::io::Result<()> {
    let stored = mapping.store.state();
    let same_stream =
        stored.stream_arn == description.arn && stored.stream_identity == description.identity;
    if !same_stream && !stored.shards.is_empty() {
        warn!(
            mapping = %mapping.config.id,
            stream = %description.arn,
            stored_identity = %stored.stream_identity,
            identity = %description.identity,
            "the stream was re-created: its old checkpoints are dropped and it is read from the starting position"
        );
    }
    mapping.store.update(|state| {
        if !same_stream {
            *state = MappingState {
                stream_arn: description.arn.clone(),
                stream_identity: description.identity.clone(),
                shards: Default::default(),
            };
        }
        lineage::register(
            state,
            &description.shards,
            &mapping.settings.starting_position,
            now_seconds(),
        );
    })
}

struct Running {
    task: JoinHandle<()>,
    closed: Arc<AtomicBool>,
}

/// Runs the mapping until shutdown, starting over whenever the stream is re-created.
async fn supervise<A: StreamApi>(api: Arc<A>, mapping: Arc<Mapping>, shutdown: CancellationToken) {
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
    'stream: loop {
        let Some(mut description) = describe(&*api, &mapping, &shutdown).await else {
            break;
        };
        let stop = shutdown.child_token();
        let mut running: HashMap<String, Running> = HashMap::new();
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<String>();
        loop {
            if let Err(err) = reconcile(&mapping, &description) {
                error!(mapping = %id, error = %err, "cannot write the checkpoint store");
            } else {
                let names: HashSet<String> = running.keys().cloned().collect();
                let state = mapping.store.state();
                for (shard_id, start) in lineage::startable(&state, &description.shards, &names) {
                    let closed = description
                        .shards
                        .iter()
                        .any(|s| s.id == shard_id && s.closed);
                    let closed = Arc::new(AtomicBool::new(closed));
                    info!(mapping = %id, shard = %shard_id, start = ?start, "reading shard");
                    let run = ShardRun {
                        shard_id: shard_id.clone(),
                        stream_arn: description.arn.clone(),
                        start,
                        closed: closed.clone(),
                    };
                    let (api, mapping, stop, ended) =
                        (api.clone(), mapping.clone(), stop.clone(), ended_tx.clone());
                    let task = tokio::spawn(async move {
                        let shard_id = run.shard_id.clone();
                        let end = run_shard(api, mapping, run, stop).await;
                        debug!(shard = %shard_id, end = ?end, "shard task ended");
                        let _ = ended.send(shard_id);
                    });
                    running.insert(shard_id, Running { task, closed });
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    stop_all(running).await;
                    break 'stream;
                }
                Some(ended) = ended_rx.recv() => {
                    if let Some(done) = running.remove(&ended) {
                        let _ = done.task.await;
                    }
                }
                _ = tokio::time::sleep(RELIST_INTERVAL) => {}
            }
            let Some(next) = describe(&*api, &mapping, &shutdown).await else {
                stop_all(running).await;
                break 'stream;
            };
            if next.arn != description.arn || next.identity != description.identity {
                stop.cancel();
                stop_all(running).await;
                continue 'stream;
            }
            for shard in &next.shards {
                if let Some(run) = running.get(&shard.id)
                    && shard.closed
                {
                    run.closed.store(true, Ordering::SeqCst);
                }
            }
            description = next;
        }
    }
    info!(mapping = %id, "{} mapping stopped", api.source_label());
}

/// Waits for every shard task; they stop reading at once and finish in-flight batches.
async fn stop_all(running: HashMap<String, Running>) {
    for (_, run) in running {
        let _ = run.task.await;
    }
}

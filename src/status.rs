//! Where each enabled mapping stands (starting, running, or failed to start and why), what
//! it did (its [`Activity`] and its metrics), whether it is healthy, and its shards.
//!
//! The daemon registers every enabled mapping on a [`StatusBoard`] and hands its source a
//! [`StatusReporter`] for that entry: the one place a source or the pipeline counts what
//! happened, for the run's report, the CI summary and the [`telemetry`](crate::telemetry)
//! metrics alike. The daemon watches the board: it stops at once when every mapping has
//! failed, and a later stop exits 1 when any has. The admin endpoint reads it
//! ([`StatusBoard::view`]).
//!
//! For `run --until-drained` each source also reports whether its parts (an SQS queue, a
//! stream's shards) are caught up; the daemon waits on the board until every mapping is.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::checkpoint::CheckpointStore;
use crate::event::failure::Condition;
use crate::telemetry::{MappingMetrics, ShardAge, Telemetry};

/// The state of one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingStatus {
    /// Spawned, but its source is not open yet (its queue may not exist yet: retried).
    Starting,
    Running,
    /// Did not start and polls nothing; `reason` names what failed and why.
    Failed {
        reason: String,
    },
}

/// What one mapping did in a run. An invocation counts when it reached the function
/// (whatever it answered), again for each retry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// Records read from the source, again when read again (SQS redeliveries).
    pub records_polled: u64,
    pub batches_invoked: u64,
    pub records_invoked: u64,
    /// Records of invocations whose batch failed in whole or in part (as
    /// `esmd_failed_invoke_events_total` counts them).
    pub records_failed: u64,
    /// SQS messages deleted: processed, or filtered out.
    pub records_deleted: u64,
    /// Stream records discarded by the retry policy (to the destination, if any).
    pub records_discarded: u64,
    /// Records no filter matched: never invoked (SQS deletes them, streams pass them).
    pub records_filtered_out: u64,
}

#[derive(Default)]
struct Counters {
    records_polled: AtomicU64,
    batches_invoked: AtomicU64,
    records_invoked: AtomicU64,
    records_failed: AtomicU64,
    records_deleted: AtomicU64,
    records_discarded: AtomicU64,
    records_filtered_out: AtomicU64,
}

impl Counters {
    fn activity(&self) -> Activity {
        Activity {
            records_polled: self.records_polled.load(Ordering::Relaxed),
            batches_invoked: self.batches_invoked.load(Ordering::Relaxed),
            records_invoked: self.records_invoked.load(Ordering::Relaxed),
            records_failed: self.records_failed.load(Ordering::Relaxed),
            records_deleted: self.records_deleted.load(Ordering::Relaxed),
            records_discarded: self.records_discarded.load(Ordering::Relaxed),
            records_filtered_out: self.records_filtered_out.load(Ordering::Relaxed),
        }
    }
}

/// What ails a mapping, if anything: each trouble with the time it began.
#[derive(Default)]
struct Health {
    /// The queue or stream is missing or unreachable.
    source: Option<(Instant, String)>,
    /// The target refuses every invocation (a 4xx: wrong URL or function name).
    refused: Option<(Instant, String)>,
    /// Why the last invocation's batch failed, when it did.
    last_failure: Option<String>,
}

/// One registered mapping.
struct Entry {
    source: &'static str,
    counters: Counters,
    metrics: MappingMetrics,
    health: Mutex<Health>,
    /// A stream mapping's checkpoints, once its store is open.
    store: OnceLock<Arc<CheckpointStore>>,
    /// The shards being read now.
    shards: Mutex<BTreeMap<String, Arc<ShardLive>>>,
    /// Whether each part (its queue, a shard) is caught up, when the run waits to drain.
    parts: Mutex<BTreeMap<String, bool>>,
}

/// What a running shard's task tells about it.
#[derive(Default)]
struct ShardLive {
    /// Milliseconds behind the tip; `u64::MAX` until the first read.
    iterator_age: AtomicU64,
    closed: AtomicBool,
    in_flight: AtomicUsize,
}

/// The status and activity of every enabled mapping, by mapping id.
pub struct StatusBoard {
    statuses: watch::Sender<BTreeMap<String, MappingStatus>>,
    entries: Mutex<BTreeMap<String, Arc<Entry>>>,
    telemetry: Arc<Telemetry>,
    /// Told of every status change, invocation and part change, for the waits below.
    changes: watch::Sender<()>,
    /// Whether the run waits for the mappings to drain, so sources check their parts.
    drain_wanted: bool,
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard::new(Arc::default())
    }
}

/// One mapping as the admin endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingView {
    pub id: String,
    pub status: MappingStatus,
    pub activity: Activity,
    /// `OK`, `No records processed` or `PROBLEM: ...`, as AWS words it.
    pub last_processing_result: String,
    /// Why the mapping is unhealthy; `None` when it is healthy.
    pub unhealthy: Option<String>,
    /// A stream mapping's shards, in shard id order: the stored ones and the ones read now.
    pub shards: Vec<ShardView>,
}

/// One shard of a stream mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardView {
    pub shard_id: String,
    /// The last record of the settled prefix.
    pub checkpoint: Option<String>,
    /// How far the reader is behind the tip; `None` when not read now.
    pub iterator_age_ms: Option<u64>,
    /// A listing showed the shard closed (resharded): it is read to its end.
    pub closed: bool,
    /// Read to its end and everything in it settled.
    pub finished: bool,
    /// Batches being invoked or retried now.
    pub in_flight_batches: usize,
}

impl StatusBoard {
    /// A board whose mappings count on `telemetry`.
    pub fn new(telemetry: Arc<Telemetry>) -> StatusBoard {
        StatusBoard {
            statuses: watch::Sender::new(BTreeMap::new()),
            entries: Mutex::default(),
            telemetry,
            changes: watch::Sender::new(()),
            drain_wanted: false,
        }
    }

    /// A board whose sources report when their parts are caught up (`--until-drained`).
    pub fn until_drained() -> StatusBoard {
        StatusBoard {
            drain_wanted: true,
            ..StatusBoard::default()
        }
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Adds `mapping_id`, a `source` mapping (its metrics label), as
    /// [`MappingStatus::Starting`]; its source reports through the returned reporter.
    pub fn register(&self, mapping_id: &str, source: &'static str) -> StatusReporter {
        self.statuses.send_modify(|statuses| {
            statuses.insert(mapping_id.to_owned(), MappingStatus::Starting);
        });
        let entry = Arc::new(Entry {
            source,
            counters: Counters::default(),
            metrics: self.telemetry.mapping(mapping_id, source),
            health: Mutex::default(),
            store: OnceLock::new(),
            shards: Mutex::default(),
            parts: Mutex::default(),
        });
        self.lock().insert(mapping_id.to_owned(), entry.clone());
        StatusReporter {
            mapping_id: mapping_id.to_owned(),
            statuses: self.statuses.clone(),
            entry,
            changes: self.changes.clone(),
            drain_wanted: self.drain_wanted,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Entry>>> {
        self.entries.lock().expect("never poisoned")
    }

    /// The status and activity of a registered mapping.
    pub fn get(&self, mapping_id: &str) -> Option<(MappingStatus, Activity)> {
        let status = self.statuses.borrow().get(mapping_id)?.clone();
        let entries = self.lock();
        Some((status, entries.get(mapping_id)?.counters.activity()))
    }

    /// Every registered mapping, in id order; one whose source has been in trouble for
    /// `unhealthy_after` is unhealthy.
    pub fn view(&self, unhealthy_after: Duration) -> Vec<MappingView> {
        let statuses = self.statuses.borrow().clone();
        let entries: Vec<(String, Arc<Entry>)> = self
            .lock()
            .iter()
            .map(|(id, entry)| (id.clone(), entry.clone()))
            .collect();
        let now = Instant::now();
        entries
            .into_iter()
            .map(|(id, entry)| {
                let status = statuses
                    .get(&id)
                    .cloned()
                    .unwrap_or(MappingStatus::Starting);
                let activity = entry.counters.activity();
                let health = entry.health.lock().expect("never poisoned");
                let lasting = |trouble: &Option<(Instant, String)>| {
                    trouble
                        .as_ref()
                        .filter(|(since, _)| now.duration_since(*since) >= unhealthy_after)
                        .map(|(_, why)| why.clone())
                };
                let unhealthy = match &status {
                    MappingStatus::Failed { reason } => Some(format!("failed to start: {reason}")),
                    _ => lasting(&health.source).or_else(|| {
                        lasting(&health.refused)
                            .map(|why| format!("the function refuses every invocation: {why}"))
                    }),
                };
                let problem = match &status {
                    MappingStatus::Failed { reason } => Some(format!("failed to start: {reason}")),
                    _ => health
                        .source
                        .as_ref()
                        .map(|(_, why)| why.clone())
                        .or_else(|| {
                            health.refused.as_ref().map(|(_, why)| {
                                format!("the function refuses the invocation: {why}")
                            })
                        })
                        .or_else(|| {
                            health
                                .last_failure
                                .as_ref()
                                .map(|why| format!("Function call failed: {why}"))
                        }),
                };
                drop(health);
                let last_processing_result = match problem {
                    Some(problem) => format!("PROBLEM: {problem}"),
                    None if activity.batches_invoked == 0 => "No records processed".into(),
                    None => "OK".into(),
                };
                MappingView {
                    shards: entry.shards(),
                    id,
                    status,
                    activity,
                    last_processing_result,
                    unhealthy,
                }
            })
            .collect()
    }

    /// The iterator age of every shard read now, for `/metrics`.
    pub fn render_metrics(&self) -> String {
        let entries: Vec<(String, Arc<Entry>)> = self
            .lock()
            .iter()
            .map(|(id, entry)| (id.clone(), entry.clone()))
            .collect();
        let mut ages = Vec::new();
        for (id, entry) in &entries {
            for (shard, live) in entry.shards.lock().expect("never poisoned").iter() {
                let millis = live.iterator_age.load(Ordering::Relaxed);
                if millis != u64::MAX {
                    ages.push((id.as_str(), entry.source, shard.clone(), millis));
                }
            }
        }
        self.telemetry.render(
            ages.iter()
                .map(|(mapping, source, shard, millis)| ShardAge {
                    mapping,
                    source,
                    shard,
                    millis: *millis,
                }),
        )
    }

    /// `(mapping id, reason)` of every mapping that failed to start.
    pub fn failures(&self) -> Vec<(String, String)> {
        self.statuses
            .borrow()
            .iter()
            .filter_map(|(id, status)| match status {
                MappingStatus::Failed { reason } => Some((id.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// Resolves once there is at least one mapping and every one has failed; never
    /// resolves otherwise.
    pub async fn every_mapping_failed(&self) {
        let mut statuses = self.statuses.subscribe();
        // the board owns the sender, so the channel stays open while we wait
        let _ = statuses.wait_for(all_failed).await;
    }

    /// Resolves once every mapping that did not fail to start has parts and all of them
    /// are caught up. A mapping without parts has not opened its source yet.
    pub async fn every_mapping_drained(&self) {
        self.wait_for(StatusBoard::drained).await;
    }

    /// Resolves once `batches` invocations reached their functions, across mappings.
    pub async fn batches_invoked(&self, batches: u64) {
        self.wait_for(|board| board.total_batches_invoked() >= batches)
            .await;
    }

    async fn wait_for(&self, done: impl Fn(&StatusBoard) -> bool) {
        let mut changes = self.changes.subscribe();
        while !done(self) {
            // the board owns the sender, so the channel stays open while we wait
            let _ = changes.changed().await;
        }
    }

    fn drained(&self) -> bool {
        let statuses = self.statuses.borrow().clone();
        let entries = self.lock();
        statuses.iter().all(|(id, status)| {
            matches!(status, MappingStatus::Failed { .. })
                || entries.get(id).is_some_and(|entry| {
                    let parts = entry.parts.lock().expect("never poisoned");
                    !parts.is_empty() && parts.values().all(|&caught_up| caught_up)
                })
        })
    }

    fn total_batches_invoked(&self) -> u64 {
        self.lock()
            .values()
            .map(|entry| entry.counters.batches_invoked.load(Ordering::Relaxed))
            .sum()
    }
}

impl Entry {
    fn shards(&self) -> Vec<ShardView> {
        let stored = self
            .store
            .get()
            .map(|store| store.state().shards)
            .unwrap_or_default();
        let live = self.shards.lock().expect("never poisoned").clone();
        let mut ids: Vec<&String> = stored.keys().chain(live.keys()).collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| {
                let stored = stored.get(id);
                let live = live.get(id);
                ShardView {
                    shard_id: id.clone(),
                    checkpoint: stored.and_then(|s| s.checkpoint.clone()),
                    iterator_age_ms: live
                        .map(|l| l.iterator_age.load(Ordering::Relaxed))
                        .filter(|&age| age != u64::MAX),
                    closed: live.is_some_and(|l| l.closed.load(Ordering::Relaxed)),
                    finished: stored.is_some_and(|s| s.finished),
                    in_flight_batches: live.map_or(0, |l| l.in_flight.load(Ordering::Relaxed)),
                }
            })
            .collect()
    }
}

fn all_failed(statuses: &BTreeMap<String, MappingStatus>) -> bool {
    !statuses.is_empty()
        && statuses
            .values()
            .all(|status| matches!(status, MappingStatus::Failed { .. }))
}

/// One mapping's handle on the board.
#[derive(Clone)]
pub struct StatusReporter {
    mapping_id: String,
    statuses: watch::Sender<BTreeMap<String, MappingStatus>>,
    entry: Arc<Entry>,
    changes: watch::Sender<()>,
    drain_wanted: bool,
}

impl StatusReporter {
    pub fn running(&self) {
        self.set(MappingStatus::Running);
    }

    pub fn failed(&self, reason: String) {
        self.set(MappingStatus::Failed { reason });
    }

    /// What the mapping did so far.
    pub fn activity(&self) -> Activity {
        self.entry.counters.activity()
    }

    /// The mapping's metrics, for what the methods here do not count.
    pub fn metrics(&self) -> &MappingMetrics {
        &self.entry.metrics
    }

    /// The source answered.
    pub fn source_reachable(&self) {
        let mut health = self.health();
        if health.source.is_some() {
            health.source = None;
        }
    }

    /// The queue or stream is missing or unreachable: `why`. The trouble dates from the
    /// first report since the source last answered.
    pub fn source_unreachable(&self, why: String) {
        let why = brief(why);
        let mut health = self.health();
        match &mut health.source {
            Some((_, reason)) => *reason = why,
            None => health.source = Some((Instant::now(), why)),
        }
    }

    /// The target refused an invocation (4xx): `why`.
    pub fn refused(&self, why: String) {
        let why = brief(why);
        let mut health = self.health();
        match &mut health.refused {
            Some((_, reason)) => *reason = why,
            None => health.refused = Some((Instant::now(), why)),
        }
    }

    /// `records` were read from the source.
    pub fn polled(&self, records: usize) {
        self.entry
            .counters
            .records_polled
            .fetch_add(records as u64, Ordering::Relaxed);
        self.entry.metrics.polled.increment(records as u64);
    }

    /// An invocation of `records` reached the function; `failure` says why the batch
    /// failed, in whole or in part, when it did: then its records count as failed.
    pub fn invoked(&self, records: usize, failure: Option<String>) {
        let counters = &self.entry.counters;
        counters.batches_invoked.fetch_add(1, Ordering::Relaxed);
        counters
            .records_invoked
            .fetch_add(records as u64, Ordering::Relaxed);
        let metrics = &self.entry.metrics;
        metrics.invoked.increment(records as u64);
        metrics.batch_size.record(records as f64);
        if failure.is_some() {
            counters
                .records_failed
                .fetch_add(records as u64, Ordering::Relaxed);
            metrics.failed_invoke.increment(records as u64);
        }
        let mut health = self.health();
        health.refused = None;
        health.last_failure = failure;
        drop(health);
        self.changes.send_replace(());
    }

    /// SQS messages deleted.
    pub fn deleted(&self, records: usize) {
        self.entry
            .counters
            .records_deleted
            .fetch_add(records as u64, Ordering::Relaxed);
        self.entry.metrics.deleted.increment(records as u64);
    }

    /// Stream records discarded for `condition`: `delivered` to the on-failure
    /// destination, or dropped when there is none.
    pub fn discarded(&self, records: usize, condition: Condition, delivered: bool) {
        self.entry
            .counters
            .records_discarded
            .fetch_add(records as u64, Ordering::Relaxed);
        let metrics = &self.entry.metrics;
        metrics.discarded(condition, records as u64);
        if delivered {
            metrics.destination_delivered.increment(records as u64);
        } else {
            metrics.dropped.increment(records as u64);
        }
    }

    pub fn filtered_out(&self, records: usize) {
        self.entry
            .counters
            .records_filtered_out
            .fetch_add(records as u64, Ordering::Relaxed);
        self.entry.metrics.filtered_out.increment(records as u64);
    }

    /// A stream mapping's checkpoint store, for its shards' checkpoints.
    pub fn checkpoints(&self, store: Arc<CheckpointStore>) {
        let _ = self.entry.store.set(store);
    }

    /// A shard is read from now until the returned tracker is dropped.
    pub fn shard(&self, shard_id: &str) -> ShardTracker {
        let live = Arc::new(ShardLive {
            iterator_age: AtomicU64::new(u64::MAX),
            ..ShardLive::default()
        });
        self.entry
            .shards
            .lock()
            .expect("never poisoned")
            .insert(shard_id.to_owned(), live.clone());
        ShardTracker {
            entry: self.entry.clone(),
            shard_id: shard_id.to_owned(),
            live,
        }
    }

    /// Whether the run waits for the mappings to drain: only then need sources report
    /// their parts with [`StatusReporter::caught_up`].
    pub fn drain_wanted(&self) -> bool {
        self.drain_wanted
    }

    /// Whether `part` of the mapping (its queue, a shard) is caught up: nothing more to
    /// read and nothing read left unsettled.
    pub fn caught_up(&self, part: &str, caught_up: bool) {
        let previous = self
            .entry
            .parts
            .lock()
            .expect("never poisoned")
            .insert(part.to_owned(), caught_up);
        if previous != Some(caught_up) {
            self.changes.send_replace(());
        }
    }

    /// Forgets every part but `current` (shards that finished).
    pub fn keep_parts<'a>(&self, current: impl IntoIterator<Item = &'a str>) {
        let current: std::collections::HashSet<&str> = current.into_iter().collect();
        let mut parts = self.entry.parts.lock().expect("never poisoned");
        let before = parts.len();
        parts.retain(|part, _| current.contains(part.as_str()));
        if parts.len() != before {
            drop(parts);
            self.changes.send_replace(());
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.entry.health.lock().expect("never poisoned")
    }

    fn set(&self, status: MappingStatus) {
        self.statuses.send_modify(|statuses| {
            statuses.insert(self.mapping_id.clone(), status);
        });
        self.changes.send_replace(());
    }
}

/// Reasons longer than this are cut: an SDK error's text can run to a kilobyte.
const MAX_REASON: usize = 200;

fn brief(mut why: String) -> String {
    if why.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        why.truncate(end);
        why.push('…');
    }
    why
}

/// A shard being read; its iterator age series and live state go when it is dropped.
pub struct ShardTracker {
    entry: Arc<Entry>,
    shard_id: String,
    live: Arc<ShardLive>,
}

impl ShardTracker {
    pub fn iterator_age(&self, millis: u64) {
        self.live.iterator_age.store(millis, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.live.closed.store(true, Ordering::Relaxed);
    }

    /// A batch is in flight until the returned guard is dropped.
    pub fn batch(&self) -> InFlight {
        self.live.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.live.clone())
    }
}

impl Drop for ShardTracker {
    fn drop(&mut self) {
        let mut shards = self.entry.shards.lock().expect("never poisoned");
        // a restarted shard task may have registered anew already
        if shards
            .get(&self.shard_id)
            .is_some_and(|live| Arc::ptr_eq(live, &self.live))
        {
            shards.remove(&self.shard_id);
        }
    }
}

/// One batch in flight on a shard.
pub struct InFlight(Arc<ShardLive>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_mapping_failed_needs_all_of_them_and_at_least_one() {
        let board = StatusBoard::default();
        assert!(!all_failed(&board.statuses.borrow()));
        let sqs = board.register("sqs", "sqs");
        let stream = board.register("stream", "kinesis");
        stream.failed("checkpoint file s.json is corrupt".into());
        assert!(!all_failed(&board.statuses.borrow()));
        sqs.running();
        assert!(!all_failed(&board.statuses.borrow()));
        assert_eq!(
            board.failures(),
            vec![("stream".into(), "checkpoint file s.json is corrupt".into())]
        );
        sqs.failed("gone".into());
        assert!(all_failed(&board.statuses.borrow()));
    }

    #[test]
    fn each_mapping_counts_its_own_activity() {
        let board = StatusBoard::default();
        let sqs = board.register("sqs", "sqs");
        let stream = board.register("stream", "kinesis");
        sqs.running();
        sqs.polled(14);
        sqs.invoked(10, None);
        sqs.invoked(3, Some("function error (Unhandled): boom".into()));
        sqs.deleted(12);
        stream.invoked(100, None);
        stream.discarded(2, Condition::RetryAttemptsExhausted, false);
        stream.filtered_out(7);
        let (status, activity) = board.get("sqs").unwrap();
        assert_eq!(status, MappingStatus::Running);
        assert_eq!(
            activity,
            Activity {
                records_polled: 14,
                batches_invoked: 2,
                records_invoked: 13,
                records_failed: 3,
                records_deleted: 12,
                records_discarded: 0,
                records_filtered_out: 0,
            }
        );
        let (status, activity) = board.get("stream").unwrap();
        assert_eq!(status, MappingStatus::Starting);
        assert_eq!(
            (
                activity.batches_invoked,
                activity.records_discarded,
                activity.records_filtered_out
            ),
            (1, 2, 7)
        );
        assert!(board.get("other").is_none());
    }

    #[tokio::test]
    async fn the_wait_ends_when_the_last_mapping_fails() {
        let board = std::sync::Arc::new(StatusBoard::default());
        let first = board.register("a", "sqs");
        let second = board.register("b", "sqs");
        first.failed("a is broken".into());
        let waiting = tokio::spawn({
            let board = board.clone();
            async move { board.every_mapping_failed().await }
        });
        second.failed("b is broken".into());
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the wait ends")
            .unwrap();
        assert_eq!(board.failures().len(), 2);
    }

    const MINUTE: Duration = Duration::from_secs(60);

    fn only(board: &StatusBoard) -> MappingView {
        board.view(MINUTE).remove(0)
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_missing_for_the_limit_is_unhealthy_until_it_answers() {
        let board = StatusBoard::default();
        let sqs = board.register("q", "sqs");
        sqs.running();
        assert_eq!(only(&board).last_processing_result, "No records processed");
        sqs.source_unreachable("the queue does not exist".into());
        tokio::time::advance(Duration::from_secs(30)).await;
        sqs.source_unreachable("the queue does not exist".into());
        let view = only(&board);
        assert_eq!(view.unhealthy, None, "not for a minute yet");
        assert_eq!(
            view.last_processing_result,
            "PROBLEM: the queue does not exist"
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            only(&board).unhealthy.as_deref(),
            Some("the queue does not exist"),
            "a minute since the first report"
        );
        sqs.source_reachable();
        let view = only(&board);
        assert_eq!(view.unhealthy, None);
        assert_eq!(view.last_processing_result, "No records processed");
        sqs.source_unreachable("é".repeat(150));
        let result = only(&board).last_processing_result;
        assert!(result.ends_with('…'), "{result}");
        assert!(result.len() < 220, "{result}");
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_for_the_limit_are_unhealthy_and_an_invocation_ends_them() {
        let board = StatusBoard::default();
        let sqs = board.register("q", "sqs");
        sqs.running();
        sqs.refused("HTTP 404".into());
        tokio::time::advance(MINUTE).await;
        assert_eq!(
            only(&board).unhealthy.as_deref(),
            Some("the function refuses every invocation: HTTP 404")
        );
        sqs.invoked(2, Some("function error (Unhandled): boom".into()));
        let view = only(&board);
        assert_eq!(view.unhealthy, None);
        assert_eq!(
            view.last_processing_result,
            "PROBLEM: Function call failed: function error (Unhandled): boom"
        );
        sqs.invoked(2, None);
        assert_eq!(only(&board).last_processing_result, "OK");
        let failed = board.register("r", "sqs");
        failed.failed("checkpoint file r.json is corrupt".into());
        let view = board.view(MINUTE).remove(1);
        assert_eq!(
            view.unhealthy.as_deref(),
            Some("failed to start: checkpoint file r.json is corrupt"),
            "at once"
        );
    }

    #[test]
    fn a_shard_shows_while_it_is_read_and_its_age_series_goes_with_it() {
        let board = StatusBoard::default();
        let stream = board.register("s", "kinesis");
        let shard = stream.shard("shardId-1");
        let age_line =
            r#"esmd_iterator_age_milliseconds{mapping="s",source="kinesis",shard="shardId-1"} 250"#;
        assert!(
            !board.render_metrics().contains("shardId-1"),
            "no age before a read"
        );
        shard.iterator_age(250);
        shard.closed();
        let batch = shard.batch();
        assert!(board.render_metrics().lines().any(|l| l == age_line));
        assert_eq!(
            only(&board).shards,
            vec![ShardView {
                shard_id: "shardId-1".into(),
                checkpoint: None,
                iterator_age_ms: Some(250),
                closed: true,
                finished: false,
                in_flight_batches: 1,
            }]
        );
        drop(batch);
        assert_eq!(only(&board).shards[0].in_flight_batches, 0);
        drop(shard);
        assert!(only(&board).shards.is_empty());
        assert!(!board.render_metrics().contains("shardId-1"));
    }

    #[test]
    fn drained_once_every_part_of_every_live_mapping_is_caught_up() {
        let board = StatusBoard::until_drained();
        let sqs = board.register("sqs", "sqs");
        let stream = board.register("stream", "kinesis");
        let broken = board.register("broken", "kinesis");
        assert!(sqs.drain_wanted());
        broken.failed("checkpoint file b.json is corrupt".into());
        assert!(!board.drained(), "no parts reported yet");
        sqs.caught_up("queue", true);
        stream.caught_up("shard-1", true);
        stream.caught_up("shard-2", false);
        assert!(!board.drained());
        stream.caught_up("shard-2", true);
        assert!(board.drained());
        stream.caught_up("shard-3", false);
        assert!(!board.drained());
        stream.keep_parts(["shard-1", "shard-2"]);
        assert!(board.drained(), "a finished shard is forgotten");
        sqs.caught_up("queue", false);
        assert!(!board.drained());
    }

    #[tokio::test]
    async fn the_waits_end_when_the_board_changes() {
        let board = Arc::new(StatusBoard::until_drained());
        let sqs = board.register("sqs", "sqs");
        let drained = tokio::spawn({
            let board = board.clone();
            async move { board.every_mapping_drained().await }
        });
        let batches = tokio::spawn({
            let board = board.clone();
            async move { board.batches_invoked(2).await }
        });
        sqs.invoked(5, None);
        sqs.caught_up("queue", true);
        tokio::time::timeout(Duration::from_secs(10), drained)
            .await
            .expect("drained")
            .unwrap();
        assert!(!batches.is_finished(), "one batch of two");
        sqs.invoked(1, None);
        tokio::time::timeout(Duration::from_secs(10), batches)
            .await
            .expect("two batches")
            .unwrap();
    }
}

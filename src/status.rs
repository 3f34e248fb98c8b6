//! Where each enabled mapping stands (starting, running, or failed to start and why) and
//! what it did (its [`Activity`]).
//!
//! The daemon registers every enabled mapping on a [`StatusBoard`] and hands its source a
//! [`StatusReporter`] for that entry. The daemon watches the board: it stops at once when
//! every mapping has failed, and a later stop exits 1 when any has. At the end of a run
//! the board gives each mapping's status and activity for the run's report.
//!
//! For `run --until-drained` each source also reports whether its parts (an SQS queue, a
//! stream's shards) are caught up; the daemon waits on the board until every mapping is.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Records read from the source, again when read again (SQS redeliveries).
    pub records_polled: u64,
    pub batches_invoked: u64,
    pub records_invoked: u64,
    /// Records of invocations that ended in a function error or a partial failure.
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

/// The status and activity of every enabled mapping, by mapping id.
pub struct StatusBoard {
    statuses: watch::Sender<BTreeMap<String, MappingStatus>>,
    counters: Mutex<BTreeMap<String, Arc<Counters>>>,
    /// Whether each part of each mapping is caught up, by mapping id and part.
    parts: Mutex<BTreeMap<String, Parts>>,
    /// Told of every status change, invocation and part change, for the waits below.
    changes: watch::Sender<()>,
    /// Whether the run waits for the mappings to drain, so sources check their parts.
    drain_wanted: bool,
}

type Parts = Arc<Mutex<BTreeMap<String, bool>>>;

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard {
            statuses: watch::Sender::new(BTreeMap::new()),
            counters: Mutex::default(),
            parts: Mutex::default(),
            changes: watch::Sender::new(()),
            drain_wanted: false,
        }
    }
}

impl StatusBoard {
    /// A board whose sources report when their parts are caught up (`--until-drained`).
    pub fn until_drained() -> StatusBoard {
        StatusBoard {
            drain_wanted: true,
            ..StatusBoard::default()
        }
    }

    /// Adds `mapping_id` as [`MappingStatus::Starting`]; its source reports through the
    /// returned reporter.
    pub fn register(&self, mapping_id: &str) -> StatusReporter {
        self.statuses.send_modify(|statuses| {
            statuses.insert(mapping_id.to_owned(), MappingStatus::Starting);
        });
        let counters = Arc::new(Counters::default());
        self.counters
            .lock()
            .expect("never poisoned")
            .insert(mapping_id.to_owned(), counters.clone());
        let parts = Parts::default();
        self.parts
            .lock()
            .expect("never poisoned")
            .insert(mapping_id.to_owned(), parts.clone());
        StatusReporter {
            mapping_id: mapping_id.to_owned(),
            statuses: self.statuses.clone(),
            counters,
            parts,
            changes: self.changes.clone(),
            drain_wanted: self.drain_wanted,
        }
    }

    /// The status and activity of a registered mapping.
    pub fn get(&self, mapping_id: &str) -> Option<(MappingStatus, Activity)> {
        let status = self.statuses.borrow().get(mapping_id)?.clone();
        let counters = self.counters.lock().expect("never poisoned");
        Some((status, counters.get(mapping_id)?.activity()))
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
        let parts = self.parts.lock().expect("never poisoned");
        statuses.iter().all(|(id, status)| {
            matches!(status, MappingStatus::Failed { .. })
                || parts.get(id).is_some_and(|parts| {
                    let parts = parts.lock().expect("never poisoned");
                    !parts.is_empty() && parts.values().all(|&caught_up| caught_up)
                })
        })
    }

    fn total_batches_invoked(&self) -> u64 {
        let counters = self.counters.lock().expect("never poisoned");
        counters
            .values()
            .map(|c| c.batches_invoked.load(Ordering::Relaxed))
            .sum()
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
    counters: Arc<Counters>,
    parts: Parts,
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

    pub fn polled(&self, records: usize) {
        self.counters
            .records_polled
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    /// An invocation of `records` reached the function.
    pub fn invoked(&self, records: usize) {
        self.counters
            .batches_invoked
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .records_invoked
            .fetch_add(records as u64, Ordering::Relaxed);
        self.changes.send_replace(());
    }

    /// An invocation of `records` ended in a function error or a partial failure.
    pub fn invoke_failed(&self, records: usize) {
        self.counters
            .records_failed
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    pub fn deleted(&self, records: usize) {
        self.counters
            .records_deleted
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    pub fn discarded(&self, records: usize) {
        self.counters
            .records_discarded
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    pub fn filtered_out(&self, records: usize) {
        self.counters
            .records_filtered_out
            .fetch_add(records as u64, Ordering::Relaxed);
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
        let mut parts = self.parts.lock().expect("never poisoned");
        let before = parts.len();
        parts.retain(|part, _| current.contains(part.as_str()));
        if parts.len() != before {
            drop(parts);
            self.changes.send_replace(());
        }
    }

    fn set(&self, status: MappingStatus) {
        self.statuses.send_modify(|statuses| {
            statuses.insert(self.mapping_id.clone(), status);
        });
        self.changes.send_replace(());
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
        let sqs = board.register("sqs");
        let stream = board.register("stream");
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
        let sqs = board.register("sqs");
        let stream = board.register("stream");
        sqs.running();
        sqs.polled(14);
        sqs.invoked(10);
        sqs.invoked(3);
        sqs.invoke_failed(3);
        sqs.deleted(12);
        stream.invoked(100);
        stream.discarded(2);
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
        let first = board.register("a");
        let second = board.register("b");
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

    #[test]
    fn drained_once_every_part_of_every_live_mapping_is_caught_up() {
        let board = StatusBoard::until_drained();
        let sqs = board.register("sqs");
        let stream = board.register("stream");
        let broken = board.register("broken");
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
        let sqs = board.register("sqs");
        let drained = tokio::spawn({
            let board = board.clone();
            async move { board.every_mapping_drained().await }
        });
        let batches = tokio::spawn({
            let board = board.clone();
            async move { board.batches_invoked(2).await }
        });
        sqs.invoked(5);
        sqs.caught_up("queue", true);
        tokio::time::timeout(Duration::from_secs(10), drained)
            .await
            .expect("drained")
            .unwrap();
        assert!(!batches.is_finished(), "one batch of two");
        sqs.invoked(1);
        tokio::time::timeout(Duration::from_secs(10), batches)
            .await
            .expect("two batches")
            .unwrap();
    }
}

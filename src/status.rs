//! Where each enabled mapping stands (starting, running, or failed to start and why) and
//! what it did (its [`Activity`]).
//!
//! The daemon registers every enabled mapping on a [`StatusBoard`] and hands its source a
//! [`StatusReporter`] for that entry. The daemon watches the board: it stops at once when
//! every mapping has failed, and a later stop exits 1 when any has. At the end of a run
//! the board gives each mapping's status and activity for the run's report.

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
    pub batches_invoked: u64,
    pub records_invoked: u64,
    /// SQS messages deleted: processed, or filtered out.
    pub records_deleted: u64,
    /// Stream records discarded by the retry policy (to the destination, if any).
    pub records_discarded: u64,
    /// Records no filter matched: never invoked (SQS deletes them, streams pass them).
    pub records_filtered_out: u64,
}

#[derive(Default)]
struct Counters {
    batches_invoked: AtomicU64,
    records_invoked: AtomicU64,
    records_deleted: AtomicU64,
    records_discarded: AtomicU64,
    records_filtered_out: AtomicU64,
}

impl Counters {
    fn activity(&self) -> Activity {
        Activity {
            batches_invoked: self.batches_invoked.load(Ordering::Relaxed),
            records_invoked: self.records_invoked.load(Ordering::Relaxed),
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
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard {
            statuses: watch::Sender::new(BTreeMap::new()),
            counters: Mutex::default(),
        }
    }
}

impl StatusBoard {
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
        StatusReporter {
            mapping_id: mapping_id.to_owned(),
            statuses: self.statuses.clone(),
            counters,
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
}

impl StatusReporter {
    pub fn running(&self) {
        self.set(MappingStatus::Running);
    }

    pub fn failed(&self, reason: String) {
        self.set(MappingStatus::Failed { reason });
    }

    /// An invocation of `records` reached the function.
    pub fn invoked(&self, records: usize) {
        self.counters
            .batches_invoked
            .fetch_add(1, Ordering::Relaxed);
        self.counters
            .records_invoked
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

    fn set(&self, status: MappingStatus) {
        self.statuses.send_modify(|statuses| {
            statuses.insert(self.mapping_id.clone(), status);
        });
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
        sqs.invoked(10);
        sqs.invoked(3);
        sqs.deleted(12);
        stream.invoked(100);
        stream.discarded(2);
        stream.filtered_out(7);
        let (status, activity) = board.get("sqs").unwrap();
        assert_eq!(status, MappingStatus::Running);
        assert_eq!(
            activity,
            Activity {
                batches_invoked: 2,
                records_invoked: 13,
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
}

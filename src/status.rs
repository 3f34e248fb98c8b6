//! Where each enabled mapping stands: starting, running, or failed to start and why.
//!
//! The daemon registers every enabled mapping on a [`StatusBoard`] and hands its source a
//! [`StatusReporter`] for that entry. The daemon watches the board: it stops at once when
//! every mapping has failed, and a later stop exits 1 when any has.

use std::collections::BTreeMap;

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

/// The status of every enabled mapping, by mapping id.
pub struct StatusBoard {
    statuses: watch::Sender<BTreeMap<String, MappingStatus>>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard {
            statuses: watch::Sender::new(BTreeMap::new()),
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
        StatusReporter {
            mapping_id: mapping_id.to_owned(),
            statuses: self.statuses.clone(),
        }
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
pub struct StatusReporter {
    mapping_id: String,
    statuses: watch::Sender<BTreeMap<String, MappingStatus>>,
}

impl StatusReporter {
    pub fn running(&self) {
        self.set(MappingStatus::Running);
    }

    pub fn failed(&self, reason: String) {
        self.set(MappingStatus::Failed { reason });
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

//! Keeps held messages invisible: while a message is buffered in a window, waiting for a
//! function slot or in flight, its visibility timeout is extended, so a slow function
//! never causes a duplicate delivery.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::queue::Queue;

/// The receipt handles of the messages a mapping holds.
#[derive(Clone, Default)]
pub struct Held(Arc<Mutex<HashSet<String>>>);

impl Held {
    pub fn add(&self, receipt_handle: &str) {
        self.lock().insert(receipt_handle.to_string());
    }

    pub fn remove<'a>(&self, receipt_handles: impl IntoIterator<Item = &'a str>) {
        let mut held = self.lock();
        for handle in receipt_handles {
            held.remove(handle);
        }
    }

    fn receipt_handles(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().expect("the held set is never poisoned")
    }
}

/// How often held messages are extended: a third of the visibility timeout, so a
/// message is extended well before it would reappear.
pub fn heartbeat_period(visibility: Duration) -> Duration {
    (visibility / 3).max(Duration::from_millis(100))
}

/// Extends every held message by `visibility` each period, until `stop`.
pub async fn heartbeat(
    queue: Arc<Queue>,
    held: Held,
    visibility: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(heartbeat_period(visibility));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let handles = held.receipt_handles();
        if handles.is_empty() {
            continue;
        }
        match queue.change_visibility(&handles, visibility).await {
            Ok(0) => debug!(queue = %queue.arn, messages = handles.len(), "extended visibility"),
            Ok(refused) => {
                warn!(queue = %queue.arn, refused, "visibility extension refused: those messages may be delivered again")
            }
            Err(err) => {
                warn!(queue = %queue.arn, error = %err, "visibility extension failed: held messages may be delivered again")
            }
        }
    }
}

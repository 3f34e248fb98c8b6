//! Keeps held messages invisible: while a message is buffered in a window, waiting for a
//! function slot or in flight, its visibility timeout is extended, so a slow function
//! never causes a duplicate delivery.
//!
//! A release (visibility 0) must not be undone by an extension that took its snapshot of
//! the held set just before: [`Held::withdraw`] waits for such an extension to finish, so
//! the release lands after it.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::queue::Queue;
use crate::backoff::GaveUp;

/// The receipt handles of the messages a mapping holds.
#[derive(Clone, Default)]
pub struct Held {
    handles: Arc<Mutex<HashSet<String>>>,
    /// Held by an extension from its snapshot of `handles` until its calls return.
    extending: Arc<tokio::sync::Mutex<()>>,
}

impl Held {
    pub fn add(&self, receipt_handle: &str) {
        self.lock().insert(receipt_handle.to_string());
    }

    /// Stops extending messages that were deleted.
    pub fn remove<'a>(&self, receipt_handles: impl IntoIterator<Item = &'a str>) {
        let mut held = self.lock();
        for handle in receipt_handles {
            held.remove(handle);
        }
    }

    /// Stops extending messages about to be released, and waits until no extension that
    /// may still name them is in flight: a release issued after this is the last word.
    pub async fn withdraw<'a>(&self, receipt_handles: impl IntoIterator<Item = &'a str>) {
        self.remove(receipt_handles);
        drop(self.extending.lock().await);
    }

    /// Runs `extend` on the handles held now (not at all when there are none); withdraws
    /// wait for it to finish.
    async fn extend<F, Fut>(&self, extend: F)
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let _extending = self.extending.lock().await;
        let handles: Vec<String> = self.lock().iter().cloned().collect();
        if !handles.is_empty() {
            extend(handles).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.handles.lock().expect("the held set is never poisoned")
    }
}

/// How often held messages are extended: a third of the visibility timeout, so a
/// message is extended well before it would reappear.
pub fn heartbeat_period(visibility: Duration) -> Duration {
    (visibility / 3).max(Duration::from_millis(100))
}

/// Extends every held message by `visibility` each period, until `stop`.
pub async fn heartbeat<Q: Queue>(
    queue: Arc<Q>,
    held: Held,
    visibility: Duration,
    stop: CancellationToken,
) {
    let queue: &Q = &queue;
    let mut ticks = tokio::time::interval(heartbeat_period(visibility));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let stop = &stop;
    while stop.run_until_cancelled(ticks.tick()).await.is_some() {
        held.extend(|handles| async move {
            let extended = crate::backoff::retry(
                crate::backoff::aws_call(),
                stop,
                || queue.change_visibility(&handles, visibility),
                |_| true,
                |err, _| debug!(queue = queue.arn(), error = %err, "visibility extension failed, retrying"),
            )
            .await;
            match extended {
                Ok(0) => debug!(queue = queue.arn(), messages = handles.len(), "extended visibility"),
                Ok(refused) => {
                    warn!(queue = queue.arn(), refused, "visibility extension refused: those messages may be delivered again")
                }
                Err(GaveUp::Failed(err)) => {
                    warn!(queue = queue.arn(), error = %err, "visibility extension failed: held messages may be delivered again")
                }
                Err(GaveUp::Stopped) => {}
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::{Notify, oneshot};

    /// An extension in flight when a release comes must not hide the released message
    /// again: the release has to land after it.
    #[tokio::test]
    async fn a_release_lands_after_an_extension_in_flight() {
        let held = Held::default();
        held.add("rh-1");
        // the fake queue: which handles are hidden
        let hidden: Arc<Mutex<HashSet<String>>> = Arc::default();
        hidden.lock().unwrap().insert("rh-1".into());
        let (started_tx, started) = oneshot::channel();
        let finish = Arc::new(Notify::new());
        let extension = tokio::spawn({
            let held = held.clone();
            let hidden = hidden.clone();
            let finish = finish.clone();
            async move {
                held.extend(|handles| async move {
                    started_tx.send(()).unwrap();
                    finish.notified().await;
                    hidden.lock().unwrap().extend(handles);
                })
                .await
            }
        });
        started.await.unwrap();
        let release = async {
            held.withdraw(["rh-1"]).await;
            hidden.lock().unwrap().remove("rh-1");
        };
        let mut release = std::pin::pin!(release);
        let released_at_once = tokio::select! {
            biased;
            _ = release.as_mut() => true,
            _ = std::future::ready(()) => false,
        };
        assert!(!released_at_once, "the release waits for the extension");
        finish.notify_one();
        extension.await.unwrap();
        release.await;
        assert!(
            hidden.lock().unwrap().is_empty(),
            "the released message is visible"
        );
    }

    #[tokio::test]
    async fn an_extension_after_a_withdraw_leaves_the_message_out() {
        let held = Held::default();
        held.add("rh-1");
        held.add("rh-2");
        held.withdraw(["rh-1"]).await;
        let extended = Arc::new(Mutex::new(Vec::new()));
        let seen = extended.clone();
        held.extend(|handles| async move { *seen.lock().unwrap() = handles })
            .await;
        assert_eq!(*extended.lock().unwrap(), vec!["rh-2".to_string()]);
    }
}

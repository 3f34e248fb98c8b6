//! The SQS event source: standard and FIFO queues.
//!
//! Each mapping runs a pool of workers. A worker gathers one batch (long polling, up to 10
//! messages per ReceiveMessage, until `batch_size`, the batching window or the 6 MB payload
//! cap), invokes the function, and settles: success deletes the batch, a partial failure
//! deletes all but the reported messages, a function error deletes nothing, so the queue's
//! visibility timeout and redrive policy take over. Held messages have their visibility
//! extended ([`visibility`]). The pool grows while batches come back full, up to
//! `scaling_config.maximum_concurrency` and the function's `max_concurrency`, and shrinks
//! when the queue is idle or the function fails.
//!
//! FIFO order: SQS returns no message of a group while another of the group is held, and
//! esmd holds every message until it is settled, so one batch per group is in flight. A
//! failed message keeps the later messages of its group ([`settle`]).

#[cfg(test)]
pub(crate) mod fake;
mod queue;
mod settle;
#[cfg(test)]
mod tests;
mod visibility;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, Retryable};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

pub use self::queue::{MAX_WAIT, Queue, QueueError, Received, SqsQueue};
use self::settle::verdict;
use self::visibility::Held;
use crate::config::{AwsSettings, MappingConfig, SqsSettings};
use crate::filter::FilterSource;
use crate::pipeline::batch::{Batch, Batcher, Fed, Feed, Gathered};
use crate::pipeline::judge::Judgement;
use crate::pipeline::sieve::Sieve;
use crate::pipeline::{Invoker, Step};
use crate::source::Launch;
use crate::status::StatusReporter;

/// SQS starts an ESM with five concurrent batches (aws-esm-semantics §3.1).
const INITIAL_WORKERS: usize = 5;
/// The default ceiling of concurrent invokes per SQS ESM.
const DEFAULT_MAXIMUM_CONCURRENCY: usize = 1250;
/// Scale-up pace: 300 more concurrent invokes per minute.
const SCALE_UP_INTERVAL: Duration = Duration::from_millis(200);
/// An empty short poll while a window is open waits this long before the next one.
const EMPTY_POLL_PAUSE: Duration = Duration::from_millis(50);
/// How often `run --until-drained` reads a queue's message counts.
const BACKLOG_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Runs the mapping until `launch.stop`: opens its queue (a missing queue is retried, not
/// failed) and then polls it.
pub async fn run(mapping: MappingConfig, sqs: SqsSettings, launch: Launch) {
    let Some((queue, visibility)) =
        open_queue(&mapping, &sqs, &launch.aws, &launch.status, &launch.stop).await
    else {
        return;
    };
    run_on(mapping, &sqs, Arc::new(queue), visibility, launch).await;
}

/// Runs the mapping on an open queue (SQS, or a fake in tests) until `launch.stop`; it
/// reports running at once.
pub async fn run_on<Q: Queue>(
    mapping: MappingConfig,
    sqs: &SqsSettings,
    queue: Arc<Q>,
    visibility: Duration,
    launch: Launch,
) {
    launch.status.source_reachable();
    launch.status.running();
    let invoker = Invoker {
        function: launch.function,
        mapping: mapping.id.clone(),
        report_item_failures: mapping.report_batch_item_failures,
        stop: launch.stop,
        status: launch.status,
        capture: launch.capture,
    };
    let poller = Poller::new(mapping, sqs, queue, visibility, invoker);
    poller.run().await;
}

/// Resolves the queue, retrying until it exists or shutdown.
async fn open_queue(
    mapping: &MappingConfig,
    sqs: &SqsSettings,
    aws: &AwsSettings,
    status: &StatusReporter,
    shutdown: &CancellationToken,
) -> Option<(SqsQueue, Duration)> {
    let sdk = crate::aws::sdk_config(aws, Some(&mapping.source.region), None).await;
    let client = crate::aws::sqs(&sdk, MAX_WAIT);
    let opened = crate::backoff::retry(
        crate::backoff::outage(),
        shutdown,
        || {
            SqsQueue::open(
                client.clone(),
                &sqs.queue_name,
                &mapping.source.account,
                &mapping.source.arn,
                &mapping.source.region,
            )
        },
        |_| true,
        |err, delay| {
            status.source_unreachable(trouble(err));
            warn!(mapping = %mapping.id, queue = %mapping.source, error = %err, retry_in_ms = delay.as_millis() as u64, "cannot open queue, retrying");
        },
    )
    .await;
    // the schedule is endless: only shutdown ends it without a queue
    opened.ok()
}

/// What a failed queue call says about the queue, for `/mappings` and `/healthz`.
fn trouble(err: &QueueError) -> String {
    if err.queue_missing {
        "the queue does not exist".into()
    } else {
        err.to_string()
    }
}

/// One mapping's shared state.
struct Poller<Q> {
    mapping: MappingConfig,
    invoker: Invoker,
    /// The mapping's filter criteria, if any.
    sieve: Option<Sieve>,
    queue: Arc<Q>,
    fifo: bool,
    visibility: Duration,
    held: Held,
    workers: TaskTracker,
    pool: Pool,
}

impl<Q: Queue> Poller<Q> {
    /// The poller of `mapping`, which `invoker` invokes the function for.
    fn new(
        mapping: MappingConfig,
        sqs: &SqsSettings,
        queue: Arc<Q>,
        visibility: Duration,
        invoker: Invoker,
    ) -> Arc<Poller<Q>> {
        let function = &invoker.function;
        let fifo = sqs.fifo;
        let ceiling = sqs
            .maximum_concurrency
            .unwrap_or(DEFAULT_MAXIMUM_CONCURRENCY)
            .min(function.config.max_concurrency)
            .max(1);
        let holding_time = function.config.timeout + mapping.batching_window;
        if holding_time > visibility {
            info!(
                mapping = %mapping.id,
                function_timeout_secs = function.config.timeout.as_secs(),
                window_secs = mapping.batching_window.as_secs(),
                visibility_timeout_secs = visibility.as_secs(),
                "function timeout plus window exceeds the queue's visibility timeout: esmd extends the visibility of every message it holds"
            );
        }
        if visibility.is_zero() {
            warn!(mapping = %mapping.id, "the queue's visibility timeout is 0: held messages cannot be kept invisible");
        }
        info!(
            mapping = %mapping.id,
            queue = %mapping.source,
            function = function.name(),
            fifo,
            batch_size = mapping.batch_size,
            window_secs = mapping.batching_window.as_secs(),
            max_workers = ceiling,
            "sqs mapping started"
        );
        Arc::new(Poller {
            sieve: mapping
                .filters
                .clone()
                .map(|filters| Sieve::new(filters, FilterSource::Sqs)),
            fifo,
            visibility,
            queue,
            held: Held::default(),
            workers: TaskTracker::new(),
            pool: Pool::new(ceiling),
            invoker,
            mapping,
        })
    }

    /// Runs the workers and the visibility heartbeat until shutdown has drained them.
    async fn run(self: Arc<Self>) {
        let heartbeat_stop = CancellationToken::new();
        let heartbeat = (!self.visibility.is_zero()).then(|| {
            tokio::spawn(
                visibility::heartbeat(
                    self.queue.clone(),
                    self.held.clone(),
                    self.visibility,
                    heartbeat_stop.clone(),
                )
                .in_current_span(),
            )
        });
        if self.invoker.status.drain_wanted() {
            let poller = self.clone();
            self.workers
                .spawn(async move { poller.watch_backlog().await }.in_current_span());
        }
        for _ in 0..INITIAL_WORKERS.min(self.pool.ceiling) {
            self.pool.active.fetch_add(1, Ordering::SeqCst);
            self.spawn_worker();
        }
        self.workers.close();
        self.workers.wait().await;
        heartbeat_stop.cancel();
        if let Some(heartbeat) = heartbeat {
            let _ = heartbeat.await;
        }
        info!(mapping = %self.mapping.id, "sqs mapping stopped");
    }

    /// Reports the queue caught up once it reads empty, nothing visible, in flight or
    /// delayed, on two checks in a row, and not caught up as soon as it does not.
    async fn watch_backlog(&self) {
        let mut empty_checks = 0;
        loop {
            match self.queue.backlog().await {
                Ok(0) => empty_checks += 1,
                Ok(_) => empty_checks = 0,
                Err(err) => {
                    debug!(mapping = %self.mapping.id, error = %err, "cannot read the queue's message counts");
                    empty_checks = 0;
                }
            }
            self.invoker.status.caught_up("queue", empty_checks >= 2);
            if self
                .invoker
                .stop
                .run_until_cancelled(tokio::time::sleep(BACKLOG_CHECK_INTERVAL))
                .await
                .is_none()
            {
                return;
            }
        }
    }

    fn spawn_worker(self: &Arc<Self>) {
        let poller = self.clone();
        self.workers
            .spawn(async move { poller.work().await }.in_current_span());
    }

    /// One worker: gather, invoke, settle, until shutdown or the pool shrinks.
    async fn work(self: Arc<Self>) {
        let mut batcher = Batcher::new(self.mapping.batch_size, self.mapping.batching_window);
        let mut receiver = Receiver {
            poller: &self,
            errors: crate::backoff::outage().build(),
        };
        loop {
            let batch = match batcher.gather(&mut receiver, &self.invoker.stop).await {
                Gathered::Batch(batch) => batch,
                Gathered::Idle => {
                    if self.pool.try_shrink() {
                        debug!(mapping = %self.mapping.id, workers = self.pool.active(), "queue idle, worker retired");
                        return;
                    }
                    continue;
                }
                Gathered::Stopped(batch) => {
                    self.release(batch.records.iter().chain(&batcher.take_waiting()))
                        .await;
                    break;
                }
                Gathered::Closed => break,
            };
            if batch.is_full() && self.pool.try_grow() {
                debug!(mapping = %self.mapping.id, workers = self.pool.active(), "backlog, worker added");
                self.spawn_worker();
            }
            let shrink = match self.process(batch, &mut batcher).await {
                Processed::Settled { whole_batch_failed } => {
                    whole_batch_failed && !self.mapping.report_batch_item_failures
                }
                Processed::Unreached => true,
                Processed::Released => {
                    self.release(batcher.take_waiting().iter()).await;
                    break;
                }
            };
            batcher.restart_window();
            if self.invoker.stop.is_cancelled() {
                self.release(batcher.take_waiting().iter()).await;
                break;
            }
            if shrink && batcher.waiting() == 0 && self.pool.try_shrink() {
                debug!(mapping = %self.mapping.id, workers = self.pool.active(), "function failing, worker retired");
                return;
            }
        }
        self.pool.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// Invokes the function with `batch` until it is reached, then settles. A batch the
    /// target finds too large (413) is split in two, left half first, each half invoked
    /// and settled on its own answer; a single message still too large is settled like a
    /// function error (the redrive policy takes it).
    async fn process(&self, batch: Batch<Received>, batcher: &mut Batcher<Received>) -> Processed {
        let mut halves = VecDeque::from([batch.records]);
        let mut unreached = false;
        let mut whole_batch_failed = false;
        while let Some(mut messages) = halves.pop_front() {
            let Ok((step, retried)) = self.invoker.invoke(&messages, || true).await else {
                self.release(messages.iter().chain(halves.iter().flatten()))
                    .await;
                return Processed::Released;
            };
            unreached |= retried;
            match step {
                Step::Split => {
                    let right = messages.split_off(messages.len() / 2);
                    halves.push_front(right);
                    halves.push_front(messages);
                }
                Step::Answered { judgement, .. } => {
                    whole_batch_failed |= self
                        .settle(&messages, &judgement, &mut halves, batcher)
                        .await;
                }
            }
        }
        if unreached {
            Processed::Unreached
        } else {
            Processed::Settled { whole_batch_failed }
        }
    }

    /// Deletes what the judgement allows; the rest returns after the visibility timeout.
    /// On a FIFO queue, messages of a kept group that wait behind these ones (in later
    /// halves of a split batch, or in the batcher, turned away by the payload cap) go back
    /// to the queue too, behind the kept ones. Returns whether the whole batch failed.
    async fn settle(
        &self,
        messages: &[Received],
        judgement: &Judgement,
        later_halves: &mut VecDeque<Vec<Received>>,
        batcher: &mut Batcher<Received>,
    ) -> bool {
        let verdict = verdict(messages, judgement, self.fifo);
        let to_delete: Vec<String> = verdict
            .delete
            .iter()
            .map(|&i| messages[i].receipt_handle.clone())
            .collect();
        let not_deleted = self.delete(to_delete).await;
        let deleted = verdict.delete.len() - not_deleted.len();
        self.held
            .remove(messages.iter().map(|m| m.receipt_handle.as_str()));
        if self.fifo {
            // a group is kept by a message the verdict keeps, or whose delete failed: it
            // comes back, so nothing after it may be deleted first
            let deleted_at: HashSet<usize> = verdict.delete.iter().copied().collect();
            let kept_groups: HashSet<&str> = messages
                .iter()
                .enumerate()
                .filter(|(i, m)| !deleted_at.contains(i) || not_deleted.contains(&m.receipt_handle))
                .filter_map(|(_, m)| m.group_id.as_deref())
                .collect();
            // nothing kept: nothing waiting has to go back behind it
            if !kept_groups.is_empty() {
                let in_kept_group = |m: &Received| {
                    m.group_id
                        .as_deref()
                        .is_some_and(|g| kept_groups.contains(g))
                };
                let mut behind = Vec::new();
                for waiting in later_halves.iter_mut() {
                    let (back, keep): (Vec<Received>, Vec<Received>) =
                        std::mem::take(waiting).into_iter().partition(in_kept_group);
                    *waiting = keep;
                    behind.extend(back);
                }
                later_halves.retain(|half| !half.is_empty());
                behind.extend(batcher.withdraw_waiting(in_kept_group));
                self.release(behind.iter()).await;
            }
        }
        if let Some(reason) = &verdict.kept_because {
            warn!(
                mapping = %self.mapping.id,
                kept = messages.len() - verdict.delete.len(),
                deleted,
                reason = %reason,
                "batch failed in part or whole: kept messages return after the visibility timeout"
            );
        }
        verdict.whole_batch_failed
    }

    /// Holds the messages the mapping's filters keep (their visibility is extended from now
    /// on) and returns them; the others are deleted at once and never invoked
    /// (aws-esm-semantics §2.9).
    async fn hold_or_filter(&self, messages: Vec<Received>) -> Vec<Received> {
        let (kept, dropped) = match &self.sieve {
            Some(sieve) => sieve.split(messages),
            None => (messages, Vec::new()),
        };
        for message in &kept {
            self.held.add(&message.receipt_handle);
        }
        if !dropped.is_empty() {
            debug!(mapping = %self.mapping.id, messages = dropped.len(), "filtered out: deleting");
            self.invoker.status.filtered_out(dropped.len());
            self.delete(dropped.into_iter().map(|m| m.receipt_handle).collect())
                .await;
        }
        kept
    }

    fn receive_failed(&self, err: &QueueError, delay: Duration) {
        self.invoker.status.source_unreachable(trouble(err));
        let retry_in_ms = delay.as_millis() as u64;
        if err.queue_missing {
            warn!(mapping = %self.mapping.id, queue = %self.mapping.source, retry_in_ms, "queue does not exist, retrying");
        } else {
            warn!(mapping = %self.mapping.id, error = %err, retry_in_ms, "receive failed, retrying");
        }
    }

    /// Deletes messages, retrying the calls and entries that failed; returns the receipt
    /// handles whose delete failed for good. Not stopped by shutdown: the function has
    /// processed these messages.
    async fn delete(&self, receipt_handles: Vec<String>) -> HashSet<String> {
        let total = receipt_handles.len();
        let failed: HashSet<String> = delete_retrying(&*self.queue, receipt_handles, |failed| {
            debug!(mapping = %self.mapping.id, failed, "some deletes failed, retrying them");
        })
        .await
        .into_iter()
        .map(|(handle, reason)| {
            warn!(mapping = %self.mapping.id, reason = %reason, "delete failed for good: the message will be delivered again");
            handle
        })
        .collect();
        self.invoker.status.deleted(total - failed.len());
        failed
    }

    /// Hands held messages back to the queue at once (visibility 0), for shutdown.
    async fn release<'a>(&self, messages: impl Iterator<Item = &'a Received>) {
        let handles: Vec<String> = messages.map(|m| m.receipt_handle.clone()).collect();
        if handles.is_empty() {
            return;
        }
        // out of the heartbeat first, and after any extension that may still name them,
        // so nothing hides them again
        self.held.withdraw(handles.iter().map(String::as_str)).await;
        let released = release_retrying(self.queue.as_ref(), &handles, |err| {
            debug!(mapping = %self.mapping.id, error = %err, "release failed, retrying");
        })
        .await;
        match released {
            Ok(0) => {
                debug!(mapping = %self.mapping.id, messages = handles.len(), "released unprocessed messages")
            }
            Ok(refused) => {
                warn!(mapping = %self.mapping.id, refused, "some messages could not be released: they return after the visibility timeout")
            }
            Err(err) => {
                warn!(mapping = %self.mapping.id, error = %err, "could not release messages: they return after the visibility timeout")
            }
        }
    }
}

/// Deletes messages, retrying the calls and entries that failed (`retrying` gets how many
/// before each retry); returns the receipt handles whose delete failed for good, with why.
pub async fn delete_retrying<Q: Queue>(
    queue: &Q,
    receipt_handles: Vec<String>,
    retrying: impl Fn(usize),
) -> Vec<(String, String)> {
    let pending = &std::sync::Mutex::new(receipt_handles);
    let attempt = move || async move {
        let handles = pending.lock().expect("never poisoned").clone();
        let failed = queue.delete(&handles).await;
        if failed.is_empty() {
            return Ok(());
        }
        *pending.lock().expect("never poisoned") =
            failed.iter().map(|(handle, _)| handle.clone()).collect();
        Err(failed)
    };
    attempt
        .retry(crate::backoff::aws_call())
        .notify(|failed: &Vec<(String, String)>, _| retrying(failed.len()))
        .await
        .err()
        .unwrap_or_default()
}

/// Makes messages visible again at once, retrying the call (`retrying` gets each error
/// before its retry); `Ok(n)`: the queue refused n of the receipt handles.
pub async fn release_retrying<Q: Queue>(
    queue: &Q,
    receipt_handles: &[String],
    retrying: impl Fn(&QueueError),
) -> Result<usize, QueueError> {
    (|| queue.change_visibility(receipt_handles, Duration::ZERO))
        .retry(crate::backoff::aws_call())
        .notify(|err, _| retrying(err))
        .await
}

/// A worker's feed: ReceiveMessage calls, long polls while nothing is gathered, short
/// enough to end with the window otherwise.
struct Receiver<'a, Q> {
    poller: &'a Poller<Q>,
    /// Pauses after failed receives; starts over after a receive that worked.
    errors: ExponentialBackoff,
}

impl<Q: Queue> Feed<Received> for Receiver<'_, Q> {
    // A long poll is abandoned at shutdown. Should SQS have handed it messages at that
    // very moment, they return after the visibility timeout: never lost.
    async fn next(
        &mut self,
        room: usize,
        until: Option<Instant>,
        stop: &CancellationToken,
    ) -> Fed<Received> {
        let wait = until.map_or(MAX_WAIT, |until| {
            until
                .saturating_duration_since(Instant::now())
                .min(MAX_WAIT)
        });
        let Some(received) = stop
            .run_until_cancelled(self.poller.queue.receive(room, wait))
            .await
        else {
            return Fed::Nothing;
        };
        if received.is_ok() {
            self.poller.invoker.status.source_reachable();
        }
        match received {
            Ok(messages) if messages.is_empty() => {
                self.errors = crate::backoff::outage().build();
                if until.is_none() {
                    return Fed::Idle;
                }
                if wait.as_secs() == 0 {
                    let left = until.map_or(Duration::ZERO, |u| {
                        u.saturating_duration_since(Instant::now())
                    });
                    stop.run_until_cancelled(tokio::time::sleep(EMPTY_POLL_PAUSE.min(left)))
                        .await;
                }
                Fed::Nothing
            }
            Ok(messages) => {
                self.errors = crate::backoff::outage().build();
                self.poller.invoker.status.polled(messages.len());
                Fed::Records(self.poller.hold_or_filter(messages).await)
            }
            Err(err) => {
                let delay = self.errors.next().unwrap_or(MAX_WAIT);
                self.poller.receive_failed(&err, delay);
                stop.run_until_cancelled(tokio::time::sleep(delay)).await;
                Fed::Nothing
            }
        }
    }
}

enum Processed {
    Settled {
        whole_batch_failed: bool,
    },
    /// Settled, after the function could not be reached for a while.
    Unreached,
    /// Shutdown while the function could not be reached: the batch went back unprocessed.
    Released,
}

/// The worker pool's size: grows one worker at a time with the backlog, never past the
/// ceiling, never below one.
struct Pool {
    active: AtomicUsize,
    ceiling: usize,
    last_growth: std::sync::Mutex<Instant>,
}

impl Pool {
    fn new(ceiling: usize) -> Pool {
        Pool {
            active: AtomicUsize::new(0),
            ceiling,
            last_growth: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    fn try_grow(&self) -> bool {
        let mut last = self.last_growth.lock().expect("never poisoned");
        if last.elapsed() < SCALE_UP_INTERVAL {
            return false;
        }
        let grew = self
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.ceiling).then_some(n + 1)
            })
            .is_ok();
        if grew {
            *last = Instant::now();
        }
        grew
    }

    fn try_shrink(&self) -> bool {
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n > 1).then_some(n - 1)
            })
            .is_ok()
    }
}

//! The SQS poller on the in-memory queue and an in-process function, on paused time: the
//! window, the worker pool, backoff and settling, without waiting real seconds.

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use super::fake::{ARN, FakeQueue};
use super::*;
use crate::config::{SourceArn, SourceKind};
use crate::target::{Answer, BoxFuture, Function, Outcome};

/// One invocation as the function saw it.
#[derive(Debug, Clone)]
struct Call {
    /// Since the test started.
    at: Duration,
    bodies: Vec<String>,
}

/// A function that answers with `answer(call number, bodies)` after `takes`, and keeps
/// every call; it also tracks the most invocations it had in flight at once.
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    peak: Arc<AtomicUsize>,
}

impl Recorder {
    fn function(
        max_concurrency: usize,
        takes: Duration,
        answer: impl Fn(usize, &[String]) -> Outcome + Send + Sync + 'static,
    ) -> (Arc<Function>, Recorder) {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let peak: Arc<AtomicUsize> = Arc::default();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let recorder = Recorder {
            calls: calls.clone(),
            peak: peak.clone(),
        };
        let answer = Arc::new(answer);
        let function: Answer = Arc::new(move |event: bytes::Bytes| -> BoxFuture<Outcome> {
            let bodies = bodies_of(&event);
            let n = {
                let mut calls = calls.lock().unwrap();
                calls.push(Call {
                    at: started.elapsed(),
                    bodies: bodies.clone(),
                });
                calls.len() - 1
            };
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let outcome = answer(n, &bodies);
            let in_flight = in_flight.clone();
            Box::pin(async move {
                tokio::time::sleep(takes).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                outcome
            })
        });
        (
            Arc::new(Function::in_process("f", max_concurrency, function)),
            recorder,
        )
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn invoked_bodies(&self) -> Vec<String> {
        self.calls().into_iter().flat_map(|c| c.bodies).collect()
    }
}

fn bodies_of(event: &[u8]) -> Vec<String> {
    let event: serde_json::Value = serde_json::from_slice(event).unwrap();
    event["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_string())
        .collect()
}

fn ok() -> Outcome {
    Outcome::Success { body: Vec::new() }
}

struct Settings {
    batch_size: usize,
    window: Duration,
    report_item_failures: bool,
    maximum_concurrency: Option<usize>,
    fifo: bool,
    visibility: Duration,
    /// The run waits for the mapping to drain (`run --until-drained`).
    drain_wanted: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_size: 10,
            window: Duration::ZERO,
            report_item_failures: false,
            maximum_concurrency: None,
            fifo: false,
            visibility: Duration::from_secs(30),
            drain_wanted: false,
        }
    }
}

/// A running poller.
struct Running {
    board: crate::status::StatusBoard,
    queue: Arc<FakeQueue>,
    poller: Arc<Poller<FakeQueue>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(settings: Settings, function: Arc<Function>, queue: Arc<FakeQueue>) -> Running {
        let (source, _) = SourceArn::parse(ARN).unwrap();
        let sqs = SqsSettings {
            queue_name: "fake".into(),
            fifo: settings.fifo,
            maximum_concurrency: settings.maximum_concurrency,
        };
        let mapping = MappingConfig {
            id: "m".into(),
            function_name: "f".into(),
            source,
            batch_size: settings.batch_size,
            batching_window: settings.window,
            report_batch_item_failures: settings.report_item_failures,
            enabled: true,
            kind: SourceKind::Sqs(sqs.clone()),
            filters: None,
            capture: None,
        };
        let stop = CancellationToken::new();
        let board = if settings.drain_wanted {
            crate::status::StatusBoard::until_drained()
        } else {
            crate::status::StatusBoard::default()
        };
        let invoker = Invoker {
            function,
            mapping: mapping.id.clone(),
            report_item_failures: mapping.report_batch_item_failures,
            stop: stop.clone(),
            status: board.register("m", "sqs"),
            capture: None,
        };
        let poller = Poller::new(mapping, &sqs, queue.clone(), settings.visibility, invoker);
        let task = tokio::spawn(poller.clone().run());
        Running {
            board,
            queue,
            poller,
            stop,
            task,
        }
    }

    /// Waits (on paused time) until `done` holds, checking every 10 ms, for up to `limit`.
    async fn until(&self, limit: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(Instant::now() < deadline, "not done within {limit:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every message was deleted.
    async fn until_empty(&self, limit: Duration) {
        let queue = self.queue.clone();
        self.until(limit, move || queue.remaining() == 0).await;
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

fn fill(queue: &FakeQueue, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let body = format!("b-{i}");
            queue.send(&body, None);
            body
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn the_queue_drains_on_two_empty_checks_after_the_last_delete() {
    let queue = Arc::new(FakeQueue::new(false, Duration::from_secs(30)));
    fill(&queue, 25);
    let (function, recorder) = Recorder::function(10, Duration::from_secs(2), |_, _| ok());
    let settings = Settings {
        drain_wanted: true,
        ..Settings::default()
    };
    let running = Running::start(settings, function, queue.clone());
    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(60),
        running.board.every_mapping_drained(),
    )
    .await
    .expect("drained");
    assert_eq!(queue.remaining(), 0, "nothing left when drained");
    assert_eq!(recorder.invoked_bodies().len(), 25);
    let last_answer = recorder.calls().iter().map(|c| c.at).max().unwrap() + Duration::from_secs(2);
    assert!(
        started.elapsed() >= last_answer + BACKLOG_CHECK_INTERVAL,
        "a second empty check after the last delete: {:?} after {last_answer:?}",
        started.elapsed()
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_queue_whose_messages_keep_failing_never_drains() {
    let queue = Arc::new(FakeQueue::new(false, Duration::from_secs(5)));
    fill(&queue, 3);
    let (function, recorder) =
        Recorder::function(10, Duration::ZERO, |_, _| Outcome::FunctionError {
            error_type: "Unhandled".into(),
            body: Vec::new(),
        });
    let settings = Settings {
        drain_wanted: true,
        visibility: Duration::from_secs(5),
        ..Settings::default()
    };
    let running = Running::start(settings, function, queue.clone());
    let waited = tokio::time::timeout(
        Duration::from_secs(120),
        running.board.every_mapping_drained(),
    )
    .await;
    assert!(waited.is_err(), "failed messages return: never drained");
    assert!(recorder.calls().len() > 3, "redelivered");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_window_gathers_until_it_closes() {
    let queue = Arc::new(FakeQueue::new(false, Duration::from_secs(30)));
    let sent = fill(&queue, 3);
    let (function, recorder) = Recorder::function(10, Duration::ZERO, |_, _| ok());
    let settings = Settings {
        window: Duration::from_secs(5),
        ..Settings::default()
    };
    let running = Running::start(settings, function, queue.clone());
    running.until_empty(Duration::from_secs(30)).await;
    let calls = recorder.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].bodies, sent);
    assert_eq!(
        calls[0].at,
        Duration::from_secs(5),
        "when the window closed"
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_pool_grows_with_a_backlog_up_to_its_ceiling_and_shrinks_when_idle() {
    let queue = Arc::new(FakeQueue::new(false, Duration::from_secs(30)));
    let sent = fill(&queue, 400);
    let (function, recorder) = Recorder::function(100, Duration::from_secs(1), |_, _| ok());
    let settings = Settings {
        maximum_concurrency: Some(8),
        ..Settings::default()
    };
    let running = Running::start(settings, function, queue.clone());
    running.until_empty(Duration::from_secs(120)).await;
    assert_eq!(
        recorder.peak.load(Ordering::SeqCst),
        8,
        "five workers at the start, grown to maximum_concurrency, never past it"
    );
    assert!(recorder.calls().iter().all(|c| c.bodies.len() == 10));
    assert_eq!(sorted(queue.deleted()), sorted(sent.clone()));
    assert_eq!(sorted(recorder.invoked_bodies()), sorted(sent), "each once");
    // idle long polls retire workers down to one
    let poller = running.poller.clone();
    running
        .until(Duration::from_secs(600), || poller.pool.active() == 1)
        .await;
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reported_failures_come_back_after_the_visibility_timeout_and_the_rest_is_deleted() {
    let queue = Arc::new(FakeQueue::new(false, Duration::from_secs(30)));
    let sent = fill(&queue, 5);
    let (function, recorder) = Recorder::function(10, Duration::ZERO, |n, bodies| {
        if n == 0 {
            let failed = serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-1"}, {"itemIdentifier": "m-3"}]});
            assert_eq!(bodies.len(), 5);
            Outcome::Success {
                body: failed.to_string().into_bytes(),
            }
        } else {
            ok()
        }
    });
    let settings = Settings {
        report_item_failures: true,
        maximum_concurrency: Some(2),
        ..Settings::default()
    };
    let running = Running::start(settings, function, queue.clone());
    running.until_empty(Duration::from_secs(120)).await;
    let calls = recorder.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].bodies, vec!["b-1", "b-3"]);
    assert!(
        calls[1].at >= Duration::from_secs(30),
        "after the visibility timeout: {:?}",
        calls[1].at
    );
    assert_eq!(
        queue.deleted(),
        vec!["b-0", "b-2", "b-4", "b-1", "b-3"],
        "the successes first"
    );
    assert_eq!(sorted(queue.deleted()), sorted(sent));
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_throttled_function_keeps_its_batch_held_and_gets_it_again_after_a_backoff() {
    // a visibility timeout shorter than the backoff: only the heartbeat keeps the batch hidden
    let queue = Arc::new(FakeQueue::new(false, Duration::from_secs(2)));
    let sent = fill(&queue, 10);
    let (function, recorder) = Recorder::function(10, Duration::ZERO, |n, _| {
        if n < 6 {
            Outcome::Throttled {
                detail: "429".into(),
            }
        } else {
            ok()
        }
    });
    let settings = Settings {
        maximum_concurrency: Some(2),
        visibility: Duration::from_secs(2),
        ..Settings::default()
    };
    let running = Running::start(settings, function, queue.clone());
    running.until_empty(Duration::from_secs(120)).await;
    let calls = recorder.calls();
    assert_eq!(calls.len(), 7, "six throttles, then the answer: {calls:?}");
    assert!(
        calls.iter().all(|c| c.bodies == sent),
        "the same batch each time: never seen by another worker"
    );
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps.iter().all(|g| *g >= Duration::from_millis(200)));
    assert!(
        calls[6].at >= Duration::from_millis(200 + 400 + 800 + 1600 + 3200),
        "the pauses grow: {gaps:?}"
    );
    assert_eq!(queue.deleted(), sent);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stop_mid_batch_finishes_the_batch_and_hands_back_the_rest_at_once() {
    let queue = Arc::new(FakeQueue::new(false, Duration::from_secs(60)));
    let sent = fill(&queue, 30);
    let (function, recorder) = Recorder::function(1, Duration::from_secs(2), |_, _| ok());
    let running = Running::start(Settings::default(), function, queue.clone());
    running
        .until(Duration::from_secs(5), || !recorder.calls().is_empty())
        .await;
    let queue_after = running.queue.clone();
    running.stop().await;
    let invoked = recorder.invoked_bodies();
    assert_eq!(invoked.len(), 10, "one batch was in flight: it finished");
    assert_eq!(queue_after.deleted(), invoked, "and it was deleted");
    assert_eq!(
        queue_after.visible(),
        20,
        "everything else is visible again at once"
    );
    assert_eq!(queue_after.remaining() + invoked.len(), sent.len());
}

/// FIFO order across a 413 split and a partial failure: the first half keeps a1, so the
/// later messages of group A (in the second half) go back behind it, and only B goes on.
#[tokio::test(start_paused = true)]
async fn fifo_order_holds_across_a_split_and_a_kept_message() {
    let queue = Arc::new(FakeQueue::new(true, Duration::from_secs(30)));
    for (body, group) in [
        ("a1", "A"),
        ("b1", "B"),
        ("a2", "A"),
        ("b2", "B"),
        ("a3", "A"),
    ] {
        queue.send(body, Some(group));
    }
    let (function, recorder) = Recorder::function(1, Duration::ZERO, |n, bodies| {
        if bodies.len() > 2 {
            Outcome::PayloadTooLarge {
                detail: "HTTP 413".into(),
            }
        } else if n == 1 {
            // a1 is message m-0
            let failed = serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-0"}]});
            Outcome::Success {
                body: failed.to_string().into_bytes(),
            }
        } else {
            ok()
        }
    });
    let settings = Settings {
        fifo: true,
        report_item_failures: true,
        ..Settings::default()
    };
    let running = Running::start(settings, function, queue.clone());
    running.until_empty(Duration::from_secs(120)).await;
    assert_eq!(
        queue.deleted(),
        vec!["b1", "b2", "a1", "a2", "a3"],
        "group A waits for a1; B goes on"
    );
    let a1_invocations = recorder
        .invoked_bodies()
        .iter()
        .filter(|b| b.as_str() == "a1")
        .count();
    assert_eq!(
        a1_invocations, 4,
        "in the batch of five (413), its half (kept), the group's batch of three (413), alone"
    );
    running.stop().await;
}

#[test]
fn the_pool_stays_between_one_and_its_ceiling() {
    let pool = Pool::new(2);
    pool.active.store(1, Ordering::SeqCst);
    *pool.last_growth.lock().unwrap() = Instant::now() - SCALE_UP_INTERVAL;
    assert!(pool.try_grow());
    assert!(!pool.try_grow(), "paced");
    *pool.last_growth.lock().unwrap() = Instant::now() - SCALE_UP_INTERVAL;
    assert!(!pool.try_grow(), "at the ceiling");
    assert!(pool.try_shrink());
    assert!(!pool.try_shrink(), "one worker always stays");
    assert_eq!(pool.active(), 1);
}

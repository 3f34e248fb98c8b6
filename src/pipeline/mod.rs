//! The batch pipeline every source runs through: sources are adapters that receive
//! records and settle them; between the two, one [`batch::Batcher`] cuts batches, one
//! [`Invoker`] invokes until the function is reached, and one [`judge::judge`] says what
//! the answer means. Streams add their [`retry::RetryPolicy`] on top. A mapping with
//! `capture` has the Invoker append every answered invocation to its [`capture`] file.
//!
//! ```text
//!  source feed ──▶ Batcher ──▶ Invoker ──▶ judge ──▶ source settles
//!   (receive)     (size, 6 MiB,  (not reached:   (§4, §6)   (SQS: delete, release;
//!                  window)        back off)                  streams: retry policy,
//!                                                           ledger, destination)
//! ```

pub mod batch;
pub mod capture;
pub mod judge;
pub mod retry;
pub mod sieve;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use self::batch::Record;
use self::capture::CaptureFile;
use self::judge::{Judgement, WholeFailure, judge};
use crate::backoff::GaveUp;
use crate::event::records_event;
use crate::status::StatusReporter;
use crate::target::{Function, Invocation, Outcome};
use crate::telemetry;

/// Invokes a mapping's function with batches.
pub struct Invoker {
    pub function: Arc<Function>,
    /// The mapping's id, for logs.
    pub mapping: String,
    pub report_item_failures: bool,
    pub stop: CancellationToken,
    /// Counts every attempt by outcome, and the batches and records that reached the
    /// function.
    pub status: StatusReporter,
    /// Where every invocation the function answered is appended (`capture`); replays
    /// capture nothing.
    pub capture: Option<Arc<CaptureFile>>,
}

/// What one invocation of a batch (or part of one) came to.
#[derive(Debug)]
pub enum Step {
    /// The target found the event too large: split the records in two and invoke each
    /// half, left first. Uses no retry attempt.
    Split,
    /// The function answered (or the target refused a lone record for size).
    Answered {
        invocation: Invocation,
        judgement: Judgement,
        payload_size: usize,
    },
}

/// An invocation that did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum Unreached {
    /// `stop` came first.
    Stopped,
    /// The target was not reached, and the caller no longer wanted the records invoked
    /// as they were (some expired).
    GaveUp,
}

impl Invoker {
    /// Invokes the function with `records` until the target takes or refuses the event for
    /// good. A throttle, an unreachable target or a refusal (4xx) is retried as it is,
    /// backing off from 200 ms to 5 s, without end, and uses no retry attempt; before each
    /// attempt, after its pause, `still_wanted` is asked. Returns the step and whether it
    /// took retries.
    pub async fn invoke<R: Record>(
        &self,
        records: &[R],
        still_wanted: impl Fn() -> bool + Sync,
    ) -> Result<(Step, bool), Unreached> {
        let event = Bytes::from(records_event(records.iter().map(Record::json)));
        self.invoke_event(event, records.iter().map(Record::item_id), still_wanted)
            .await
    }

    /// [`Invoker::invoke`] with an event already serialized, whose records have the
    /// identifiers `ids`, in event order: a capture replay sends captured events as they are.
    pub async fn invoke_event<'a>(
        &self,
        event: Bytes,
        ids: impl ExactSizeIterator<Item = &'a str>,
        still_wanted: impl Fn() -> bool + Sync,
    ) -> Result<(Step, bool), Unreached> {
        let records = ids.len();
        let payload_size = event.len();
        let (invocation, retried) = self.until_reached(event.clone(), still_wanted).await?;
        debug!(
            mapping = %self.mapping,
            records,
            outcome = invocation.outcome.label(),
            millis = invocation.duration.as_millis() as u64,
            "invoked"
        );
        if let Outcome::PayloadTooLarge { detail } = &invocation.outcome
            && records > 1
        {
            debug!(mapping = %self.mapping, records, detail = %detail, "too large for the target: splitting the batch");
            self.status.metrics().invocation(invocation.outcome.label());
            return Ok((Step::Split, retried));
        }
        let judgement = judge(&invocation.outcome, self.report_item_failures, ids);
        self.capture(&event, &judgement, &invocation.outcome);
        self.status.metrics().invocation(match &judgement {
            Judgement::ItemsFailed(_) => telemetry::outcome::PARTIAL_FAILURE,
            Judgement::WholeBatch(WholeFailure::InvalidResponse(_)) => {
                telemetry::outcome::INVALID_RESPONSE
            }
            _ => invocation.outcome.label(),
        });
        let failure = (judgement != Judgement::Success).then(|| judgement.reason());
        self.status.invoked(records, failure);
        let step = Step::Answered {
            invocation,
            judgement,
            payload_size,
        };
        Ok((step, retried))
    }

    /// Appends the invocation to the capture file, if any: a failed write is counted and
    /// processing goes on.
    fn capture(&self, event: &[u8], judgement: &Judgement, outcome: &Outcome) {
        let Some(capture) = &self.capture else {
            return;
        };
        if let Some(line) = capture::line(&self.mapping, event, judgement, outcome)
            && capture.append(&line).is_err()
        {
            self.status.metrics().capture_errors.increment(1);
        }
    }

    /// The one invoke-until-reached loop.
    async fn until_reached(
        &self,
        event: Bytes,
        still_wanted: impl Fn() -> bool + Sync,
    ) -> Result<(Invocation, bool), Unreached> {
        let retried = AtomicBool::new(false);
        // boxed as a Send future: the compiler cannot prove the retry future Send across
        // the lifetimes of its closures when a spawned task holds it
        let reached: Pin<Box<dyn Future<Output = _> + Send + '_>> =
            Box::pin(crate::backoff::retry(
                crate::backoff::outage(),
                &self.stop,
                || self.attempt(&event, &still_wanted),
                |err: &NotYet| matches!(err, NotYet::Refused(_)),
                |err: &NotYet, delay: Duration| {
                    if let NotYet::Refused(outcome) = err {
                        retried.store(true, Ordering::Relaxed);
                        self.function.log_not_reached(&self.mapping, outcome, delay);
                    }
                },
            ));
        match reached.await {
            Ok(invocation) => Ok((invocation, retried.load(Ordering::Relaxed))),
            Err(GaveUp::Failed(NotYet::Refused(_) | NotYet::Unwanted)) => Err(Unreached::GaveUp),
            Err(GaveUp::Failed(NotYet::Stopped) | GaveUp::Stopped) => Err(Unreached::Stopped),
        }
    }

    /// One invocation; an outcome that did not reach the function is an error, counted
    /// here. An invocation that started runs to its end, stop or not. Every attempt shares
    /// the one event buffer.
    async fn attempt(
        &self,
        event: &Bytes,
        still_wanted: &(dyn Fn() -> bool + Sync),
    ) -> Result<Invocation, NotYet> {
        if !still_wanted() {
            return Err(NotYet::Unwanted);
        }
        let invocation = self
            .function
            .invoke(event.clone(), &self.stop)
            .await
            .ok_or(NotYet::Stopped)?;
        let metrics = self.status.metrics();
        metrics
            .invocation_duration
            .record(invocation.duration.as_secs_f64());
        if let Some(detail) = invocation.outcome.retry_detail() {
            metrics.invocation(invocation.outcome.label());
            if let Outcome::Rejected { status, .. } = &invocation.outcome {
                self.status.refused(format!("HTTP {status}: {detail}"));
            }
            return Err(NotYet::Refused(invocation.outcome));
        }
        Ok(invocation)
    }
}

/// An attempt that did not reach the function.
enum NotYet {
    Stopped,
    Refused(Outcome),
    /// The caller no longer wanted the records invoked as they were.
    Unwanted,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use tokio::time::Instant;

    use super::*;
    use crate::target::{Answer, BoxFuture};

    struct Item(Vec<u8>, String);

    impl Record for Item {
        fn json(&self) -> &[u8] {
            &self.0
        }

        fn item_id(&self) -> &str {
            &self.1
        }
    }

    fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item(format!("{{\"id\":{i}}}").into_bytes(), format!("id-{i}")))
            .collect()
    }

    /// An invoker whose function answers with `outcomes` in turn (the last one for good),
    /// each after `takes`; the events it was invoked with are kept.
    fn invoker(outcomes: Vec<Outcome>, takes: Duration) -> (Invoker, Arc<Mutex<Vec<Bytes>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let next = Arc::new(AtomicUsize::new(0));
        let answer: Answer = Arc::new(move |event: Bytes| -> BoxFuture<Outcome> {
            seen.lock().unwrap().push(event);
            let i = next.fetch_add(1, Ordering::SeqCst).min(outcomes.len() - 1);
            let outcome = outcomes[i].clone();
            Box::pin(async move {
                tokio::time::sleep(takes).await;
                outcome
            })
        });
        let invoker = Invoker {
            function: Arc::new(Function::in_process("f", 1, answer)),
            mapping: "m".into(),
            report_item_failures: true,
            stop: CancellationToken::new(),
            status: crate::status::StatusBoard::default().register("m", "sqs"),
            capture: None,
        };
        (invoker, events)
    }

    fn throttled() -> Outcome {
        Outcome::Throttled {
            detail: "429".into(),
        }
    }

    fn ok(body: &str) -> Outcome {
        Outcome::Success {
            body: body.as_bytes().to_vec(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_not_reached_is_retried_with_growing_pauses_until_it_answers() {
        let outcomes = vec![
            throttled(),
            Outcome::CouldNotInvoke {
                detail: "refused".into(),
            },
            Outcome::Rejected {
                status: 404,
                detail: "no such function".into(),
            },
            ok(r#"{"batchItemFailures":[{"itemIdentifier":"id-1"}]}"#),
        ];
        let (invoker, events) = invoker(outcomes, Duration::ZERO);
        let started = Instant::now();
        let (step, retried) = invoker.invoke(&items(3), || true).await.unwrap();
        assert!(retried);
        assert_eq!(events.lock().unwrap().len(), 4);
        // 200, 400 and 800 ms, each with up to as much again of jitter
        let waited = started.elapsed();
        assert!(
            (Duration::from_millis(1400)..=Duration::from_millis(2800)).contains(&waited),
            "{waited:?}"
        );
        let Step::Answered { judgement, .. } = step else {
            panic!("expected an answer");
        };
        assert_eq!(judgement, Judgement::ItemsFailed(vec![1]));
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_counts_by_outcome_and_the_records_count_once_reached() {
        let outcomes = vec![
            throttled(),
            throttled(),
            ok(r#"{"batchItemFailures":[{"itemIdentifier":"id-2"}]}"#),
        ];
        let (mut invoker, _) = invoker(outcomes, Duration::from_millis(30));
        let board = crate::status::StatusBoard::default();
        invoker.status = board.register("m", "sqs");
        invoker.invoke(&items(3), || true).await.unwrap();
        let text = board.render_metrics();
        for line in [
            r#"esmd_invocations_total{mapping="m",source="sqs",outcome="throttled"} 2"#,
            r#"esmd_invocations_total{mapping="m",source="sqs",outcome="partial_failure"} 1"#,
            r#"esmd_invocations_total{mapping="m",source="sqs",outcome="success"} 0"#,
            r#"esmd_invoked_events_total{mapping="m",source="sqs"} 3"#,
            r#"esmd_failed_invoke_events_total{mapping="m",source="sqs"} 3"#,
            r#"esmd_invocation_duration_seconds_count{mapping="m",source="sqs"} 3"#,
            r#"esmd_batch_size_records_count{mapping="m",source="sqs"} 1"#,
            r#"esmd_batch_size_records_sum{mapping="m",source="sqs"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let (_, activity) = board.get("m").unwrap();
        assert_eq!((activity.batches_invoked, activity.records_invoked), (1, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pause_never_grows_past_five_seconds_and_never_ends_by_itself() {
        let mut outcomes = vec![throttled(); 30];
        outcomes.push(ok("null"));
        let (invoker, events) = invoker(outcomes, Duration::ZERO);
        let started = Instant::now();
        invoker.invoke(&items(1), || true).await.unwrap();
        assert_eq!(events.lock().unwrap().len(), 31);
        assert!(started.elapsed() <= Duration::from_secs(30 * 10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_pauses_without_another_invocation() {
        let (invoker, events) = invoker(vec![throttled()], Duration::ZERO);
        let stop = invoker.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            stop.cancel();
        });
        let started = Instant::now();
        let result = invoker.invoke(&items(2), || true).await;
        assert_eq!(result.err(), Some(Unreached::Stopped));
        assert!(
            started.elapsed() < Duration::from_secs(21),
            "ended at the stop"
        );
        let invoked = events.lock().unwrap().len();
        assert!(invoked > 3, "{invoked}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_invocation_in_flight_runs_to_its_end_after_a_stop() {
        let (invoker, events) = invoker(vec![ok("null")], Duration::from_secs(3));
        let stop = invoker.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
        });
        let (step, _) = invoker.invoke(&items(2), || true).await.unwrap();
        assert!(matches!(
            step,
            Step::Answered {
                judgement: Judgement::Success,
                ..
            }
        ));
        assert_eq!(events.lock().unwrap().len(), 1);
        assert_eq!(
            invoker.invoke(&items(2), || true).await.err(),
            Some(Unreached::Stopped),
            "nothing starts after the stop"
        );
        assert_eq!(events.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_caller_can_give_up_before_any_attempt() {
        let (invoker, events) = invoker(vec![throttled()], Duration::ZERO);
        let asked = AtomicUsize::new(0);
        let result = invoker
            .invoke(&items(1), || asked.fetch_add(1, Ordering::SeqCst) < 2)
            .await;
        assert_eq!(result.err(), Some(Unreached::GaveUp));
        assert_eq!(
            events.lock().unwrap().len(),
            2,
            "asked before each attempt, after its pause: the third is not made"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_413_splits_several_records_and_is_judged_for_one() {
        let too_large = Outcome::PayloadTooLarge {
            detail: "HTTP 413".into(),
        };
        let (invoker, events) = invoker(vec![too_large], Duration::ZERO);
        let (step, _) = invoker.invoke(&items(2), || true).await.unwrap();
        assert!(matches!(step, Step::Split));
        let (step, _) = invoker.invoke(&items(1), || true).await.unwrap();
        assert!(matches!(
            step,
            Step::Answered {
                judgement: Judgement::WholeBatch(WholeFailure::TooLarge(_)),
                ..
            }
        ));
        let events = events.lock().unwrap();
        assert_eq!(events[0], &br#"{"Records":[{"id":0},{"id":1}]}"#[..]);
    }
}

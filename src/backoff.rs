//! Retry schedules of esmd's own loops, and [`retry`], the stop-aware retry of one call.
//!
//! Which AWS calls these loops retry (the SDK retries none of them) is the table in
//! [`crate::aws`].

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

/// Doubling delays from `min` to `max`, each with up to one more delay of jitter.
fn doubling(min: Duration, max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
}

/// Delays between retries of a stream batch the function failed: 1 s doubling to 60 s,
/// with jitter (AWS does not document its own schedule).
pub fn failed_stream_batch() -> impl Iterator<Item = Duration> + Send {
    doubling(Duration::from_secs(1), Duration::from_secs(60))
        .without_max_times()
        .build()
}

/// Delays of the loops that wait out an outage without end (opening a queue, receiving,
/// listing and reading a stream, delivering to a destination, invoking a function that is
/// throttled or not reached) and of checkpoint writes: 200 ms doubling to 5 s, with
/// jitter. Back at most 5 s after the service (or a restarted local target) is.
pub fn outage() -> ExponentialBuilder {
    doubling(Duration::from_millis(200), Duration::from_secs(5)).without_max_times()
}

/// Delays between retries of one AWS call whose failure costs little (deletes, visibility
/// changes: the message comes back after its visibility timeout): 100 ms doubling to 2 s,
/// with jitter, five retries, so about 6 s at most.
pub fn aws_call() -> ExponentialBuilder {
    doubling(Duration::from_millis(100), Duration::from_secs(2)).with_max_times(5)
}

/// Why [`retry`] gave up.
#[derive(Debug, PartialEq, Eq)]
pub enum GaveUp<E> {
    /// `stop` came first.
    Stopped,
    /// An error the caller does not retry, or the last one when the schedule ran out.
    Failed(E),
}

/// Calls `call` until it succeeds, waiting the delays of `schedule` (tokio time) between
/// failures; `notify` gets each failure and the wait after it, to log them. An error
/// `retryable` refuses ends it at once.
///
/// `stop` ends a wait at once, and no attempt starts after it; an attempt in flight runs
/// to its end, so a call with effects (a delivery, a checkpoint write) is never cut off
/// halfway and its result is not lost.
pub async fn retry<T, E, Fut>(
    schedule: impl BackoffBuilder,
    stop: &CancellationToken,
    mut call: impl FnMut() -> Fut,
    mut retryable: impl FnMut(&E) -> bool,
    mut notify: impl FnMut(&E, Duration),
) -> Result<T, GaveUp<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    let attempt = || {
        let call = (!stop.is_cancelled()).then(&mut call);
        async move {
            match call {
                Some(call) => call.await.map_err(GaveUp::Failed),
                None => Err(GaveUp::Stopped),
            }
        }
    };
    let waits = stop.clone();
    attempt
        .retry(schedule)
        .sleep(move |delay| {
            let waits = waits.clone();
            async move {
                waits.run_until_cancelled(tokio::time::sleep(delay)).await;
            }
        })
        .when(|gave_up| matches!(gave_up, GaveUp::Failed(err) if retryable(err)))
        .notify(|gave_up, delay| {
            if let GaveUp::Failed(err) = gave_up {
                notify(err, delay);
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;

    /// Whether each delay lies between its base delay and twice that (the jitter).
    fn within_jitter(delays: impl Iterator<Item = Duration>, base_millis: &[u64]) -> bool {
        let delays: Vec<Duration> = delays.collect();
        delays.len() == base_millis.len()
            && delays.iter().zip(base_millis).all(|(delay, &base)| {
                let base = Duration::from_millis(base);
                base <= *delay && *delay <= 2 * base
            })
    }

    /// `outage` without jitter, so waits can be checked to the millisecond.
    fn exact_outage() -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times()
    }

    #[test]
    fn an_outage_is_waited_out_without_end_at_most_5_s_apart() {
        let base = [200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        assert!(within_jitter(outage().build().take(8), &base));
        assert_eq!(outage().build().take(1000).count(), 1000);
    }

    #[test]
    fn a_cheap_aws_call_is_retried_five_times_within_seconds() {
        assert!(within_jitter(
            aws_call().build(),
            &[100, 200, 400, 800, 1600]
        ));
    }

    /// Paused time still rounds each sleep up to the next millisecond.
    fn assert_close(elapsed: Duration, millis: u64) {
        let expected = Duration::from_millis(millis);
        assert!(
            expected <= elapsed && elapsed < expected + Duration::from_millis(10),
            "{elapsed:?}, expected {expected:?}"
        );
    }

    /// A call that fails `failures` times with "down", then answers `42`; counts calls.
    fn flaky(
        failures: usize,
        calls: &Mutex<usize>,
    ) -> impl FnMut() -> std::future::Ready<Result<u32, &'static str>> {
        move || {
            let mut calls = calls.lock().unwrap();
            *calls += 1;
            std::future::ready(if *calls > failures {
                Ok(42)
            } else {
                Err("down")
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_the_schedule_and_tell_each_wait() {
        let calls = Mutex::new(0);
        let waits = Mutex::new(Vec::new());
        let started = Instant::now();
        let result = retry(
            exact_outage(),
            &CancellationToken::new(),
            flaky(3, &calls),
            |_| true,
            |err, delay| waits.lock().unwrap().push((*err, delay.as_millis())),
        )
        .await;
        assert_eq!(result, Ok(42));
        assert_eq!(*calls.lock().unwrap(), 4);
        assert_eq!(
            *waits.lock().unwrap(),
            [("down", 200), ("down", 400), ("down", 800)]
        );
        assert_close(started.elapsed(), 1400);
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_not_retried_ends_it_at_once() {
        let calls = Mutex::new(0);
        let result = retry(
            outage(),
            &CancellationToken::new(),
            flaky(3, &calls),
            |err| *err != "down",
            |_, _| panic!("no wait"),
        )
        .await;
        assert_eq!(result, Err(GaveUp::Failed("down")));
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_schedule_gives_up_with_the_last_error() {
        let calls = Mutex::new(0);
        let result = retry(
            aws_call(),
            &CancellationToken::new(),
            flaky(usize::MAX, &calls),
            |_| true,
            |_, _| {},
        )
        .await;
        assert_eq!(result, Err(GaveUp::Failed("down")));
        assert_eq!(*calls.lock().unwrap(), 6, "one call and five retries");
    }

    #[tokio::test(start_paused = true)]
    async fn stop_ends_a_wait_at_once_and_starts_no_attempt() {
        let stop = CancellationToken::new();
        let calls = Mutex::new(0);
        let waits = Mutex::new(0);
        let started = Instant::now();
        let result = retry(
            exact_outage(),
            &stop,
            flaky(usize::MAX, &calls),
            |_| true,
            |_, _| {
                *waits.lock().unwrap() += 1;
                if *waits.lock().unwrap() == 3 {
                    stop.cancel();
                }
            },
        )
        .await;
        assert_eq!(result, Err(GaveUp::Stopped));
        assert_eq!(*calls.lock().unwrap(), 3, "no call after the stop");
        assert_close(started.elapsed(), 600);
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_in_flight_at_stop_finishes_and_counts() {
        let stop = CancellationToken::new();
        let result = retry(
            outage(),
            &stop,
            || async {
                stop.cancel();
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok::<_, ()>("delivered")
            },
            |_| true,
            |_, _| {},
        )
        .await;
        assert_eq!(result, Ok("delivered"));
    }
}

//! Retry schedules for our own loops (AWS calls use the SDK's standard retry instead).

use std::time::Duration;

use backon::{Backoff, BackoffBuilder, ExponentialBuilder};

/// Delays between invoke attempts that did not reach the function (throttled, target
/// down): 200 ms doubling to 5 s, with jitter, without end. A local target that restarts
/// is picked up within seconds.
pub fn unreached_target() -> impl Backoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Delays between retries of a stream batch the function failed: 1 s doubling to 60 s,
/// with jitter (AWS does not document its own schedule).
pub fn failed_stream_batch() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(60))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Delays between retries of an AWS call that failed after the SDK's own retries
/// (deletes, visibility changes): 100 ms doubling to 2 s, with jitter, five times.
pub fn aws_call() -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .with_max_times(5)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreached_target_backoff_is_bounded_and_endless() {
        let delays: Vec<Duration> = unreached_target().take(50).collect();
        assert_eq!(delays.len(), 50);
        // jitter adds up to one more delay on top of the base
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(delays[0] >= Duration::from_millis(200));
    }

    #[test]
    fn aws_call_backoff_stops() {
        assert_eq!(aws_call().count(), 5);
    }
}

//! How far a replay is, on stderr: records done, of how many when that is known, the
//! rate and the time left. With text logs on a terminal it is a bar (log lines are written
//! around it: [`log_writer`]); otherwise, and always with `--log-format json`, it is a log
//! line every few seconds (`replay progress`, with `done`, `total`, `rate_per_sec`,
//! `eta_secs`), and one at the end.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;

/// How often a progress line is logged when there is no bar.
const LINE_EVERY: Duration = Duration::from_secs(5);
/// How often the bar redraws by itself, so rate and ETA move while a slow function runs.
const BAR_TICK: Duration = Duration::from_millis(250);

/// The bar being shown, if any: log lines are written around it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A replay's progress, shown from [`Progress::new`] until [`Progress::finish`] (or
/// drop).
pub struct Progress {
    counts: Arc<Counts>,
    shown: Shown,
}

struct Counts {
    total: Option<u64>,
    done: AtomicU64,
    started: Instant,
}

enum Shown {
    Bar(ProgressBar),
    /// The task that logs a line every few seconds.
    Lines(JoinHandle<()>),
}

impl Progress {
    /// Starts showing progress towards `total` records (`None`: unknown): a bar when
    /// stderr is a terminal and logs are text, else log lines (`json`: the logs are
    /// JSON). Needs a tokio runtime.
    pub fn new(total: Option<u64>, json: bool) -> Progress {
        let counts = Arc::new(Counts {
            total,
            done: AtomicU64::new(0),
            started: Instant::now(),
        });
        let shown = if !json && io::stderr().is_terminal() {
            let bar = bar(total);
            *BAR.lock().expect("never poisoned") = Some(bar.clone());
            Shown::Bar(bar)
        } else {
            let counts = counts.clone();
            Shown::Lines(tokio::spawn(async move {
                let mut every = tokio::time::interval(LINE_EVERY);
                every.tick().await;
                loop {
                    every.tick().await;
                    counts.log();
                }
            }))
        };
        Progress { counts, shown }
    }

    /// `records` more are done.
    pub fn add(&self, records: u64) {
        self.counts.done.fetch_add(records, Ordering::Relaxed);
        if let Shown::Bar(bar) = &self.shown {
            bar.inc(records);
        }
    }

    /// Stops showing progress, leaving the final state: the bar as it ended, or a last
    /// line.
    pub fn finish(self) {
        match &self.shown {
            Shown::Bar(bar) => bar.finish(),
            Shown::Lines(_) => self.counts.log(),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        match &self.shown {
            Shown::Bar(bar) => {
                if !bar.is_finished() {
                    bar.abandon();
                }
                *BAR.lock().expect("never poisoned") = None;
            }
            Shown::Lines(task) => task.abort(),
        }
    }
}

impl Counts {
    fn log(&self) {
        let done = self.done.load(Ordering::Relaxed);
        let estimate = Estimate::new(done, self.total, self.started.elapsed());
        info!(
            done,
            total = self.total,
            rate_per_sec = estimate.rate_per_sec,
            eta_secs = estimate.eta_secs,
            "replay progress"
        );
    }
}

/// The rate so far, and the time left at that rate.
#[derive(Debug, PartialEq)]
struct Estimate {
    /// Records per second, to one decimal.
    rate_per_sec: f64,
    /// Seconds left, when the total is known and the rate is not zero.
    eta_secs: Option<u64>,
}

impl Estimate {
    fn new(done: u64, total: Option<u64>, elapsed: Duration) -> Estimate {
        let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
        let eta_secs = total
            .filter(|_| rate > 0.0)
            .map(|total| (total.saturating_sub(done) as f64 / rate).ceil() as u64);
        Estimate {
            rate_per_sec: (rate * 10.0).round() / 10.0,
            eta_secs,
        }
    }
}

/// A bar towards `total`, or a spinner with the count when the total is unknown.
fn bar(total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "replay [{bar:30}] {human_pos}/{human_len} records, {rate}, {elapsed} elapsed, ETA {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "replay {spinner} {human_pos} records, {rate}, {elapsed} elapsed",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ")
        .with_key(
            "rate",
            |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.1} records/s", state.per_sec());
            },
        );
    bar.set_style(style);
    bar.enable_steady_tick(BAR_TICK);
    bar
}

/// Stderr for the log: while a bar is shown, each line is written with the bar cleared
/// and drawn again below it. `main` hands it to the log subscriber.
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// See [`log_writer`].
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bar = BAR.lock().expect("never poisoned").clone();
        match bar {
            Some(bar) => bar.suspend(|| io::stderr().write(buf)),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_time_left_follow_what_is_done() {
        assert_eq!(
            Estimate::new(50, Some(200), Duration::from_secs(10)),
            Estimate {
                rate_per_sec: 5.0,
                eta_secs: Some(30)
            }
        );
        assert_eq!(
            Estimate::new(7, None, Duration::from_secs(3)),
            Estimate {
                rate_per_sec: 2.3,
                eta_secs: None
            }
        );
        assert_eq!(
            Estimate::new(0, Some(10), Duration::from_secs(3)),
            Estimate {
                rate_per_sec: 0.0,
                eta_secs: None
            },
            "no time left without a rate"
        );
        assert_eq!(
            Estimate::new(10, Some(10), Duration::ZERO).eta_secs,
            Some(0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lines_count_every_record_added() {
        let progress = Progress::new(Some(10), true);
        progress.add(3);
        progress.add(4);
        assert_eq!(progress.counts.done.load(Ordering::Relaxed), 7);
        assert!(matches!(progress.shown, Shown::Lines(_)), "json: lines");
        progress.finish();
    }
}

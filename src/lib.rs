//! esmd: AWS Lambda event source mappings outside AWS.
//!
//! Module map:
//! - [`cli`]: the command line (`run`, `validate`).
//! - [`config`]: the TOML config file, read and validated without touching the network.
//! - [`event`]: the wire formats: the records a function receives and its batch responses.
//! - [`filter`]: the event-pattern engine of `filter_criteria`, per source.
//! - [`target`]: how a batch reaches a function (HTTP, subprocess, Lambda Invoke API) and
//!   how every target's answer is classified into one [`target::Outcome`].
//! - [`source`]: the event sources: adapters that receive records and settle them.
//! - [`pipeline`]: what every source's batches go through between the two: batching,
//!   invoking until the function is reached, judging its answer, the stream retry policy.
//! - [`aws`]: AWS SDK clients from the `[aws]` section, and who retries each call.
//! - [`destination`]: where stream mappings send the records they discard.
//! - [`daemon`]: runs the enabled mappings until a shutdown future, drains them, and
//!   reports what each did.
//! - [`state_lock`]: one `run` process per state directory.
//! - [`status`]: whether each mapping is starting, running or failed to start, whether it
//!   is healthy, its shards, and what it did: the one place sources and the pipeline
//!   count.
//! - [`telemetry`]: every metric's name, and the per-run recorder `/metrics` renders.
//! - [`admin`]: the operational endpoint (`/metrics`, `/healthz`, `/mappings`, `/`).
//! - [`backoff`]: the retry schedules of our own loops, and the stop-aware retry.
//! - [`checkpoint`]: the embedded, fsynced checkpoint store of stream mappings.

pub mod admin;
pub mod aws;
pub mod backoff;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod destination;
pub mod event;
pub mod filter;
pub mod pipeline;
pub mod replay;
pub mod source;
pub mod state_lock;
pub mod status;
pub mod target;
pub mod telemetry;

//! The pipeline micro-benchmark: one Kinesis shard, pre-filled with 1 KiB records as the
//! SDK hands them over, read, serialized, batched and invoked through the real reader,
//! lane, [`crate::pipeline`] and checkpoint writer into a null function (in process, it
//! answers success at once), on one thread.
//!
//! Time is paused, so the reader's pacing (5 reads a second) and the idle waits cost no
//! wall time: what is measured is the CPU the pipeline spends per record. A counting
//! global allocator (for this test binary only) gives the allocations per record, the
//! record's own bytes included. Run with
//! `cargo test --release --lib source::stream::bench -- --ignored --nocapture`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::Record;

use super::api::{Page, ShardInfo, StartAt, StreamError};
use super::tests::open_mapping_with;
use super::*;
use crate::event::kinesis::KinesisContext;
use crate::target::{Answer, BoxFuture, Outcome};

/// Counts allocations (reallocations too, by their new size) of the whole test binary.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call goes to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocated() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        ALLOCATED_BYTES.load(Ordering::Relaxed),
    )
}

/// The stream `tests::open_mapping_with` maps.
const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/fake";
const SHARD: &str = "shardId-000000000000";

/// One closed Kinesis shard holding SDK records; a page goes through the same conversion
/// as a real GetRecords answer. The iterator is the index of the next record.
struct OneShard {
    records: Vec<Record>,
    context: KinesisContext,
}

impl OneShard {
    /// `count` records of 1 KiB of data, with 56-digit sequence numbers as Kinesis gives.
    fn new(count: usize) -> OneShard {
        let records = (0..count)
            .map(|n| {
                let data: Vec<u8> = (0..1024).map(|i| ((n + i) % 251) as u8).collect();
                Record::builder()
                    .sequence_number(format!("49{:054}", n + 1))
                    .partition_key(format!("pk-{}", n % 64))
                    .data(Blob::new(data))
                    .approximate_arrival_timestamp(DateTime::from_secs(1_700_000_000))
                    .build()
                    .expect("a complete record")
            })
            .collect();
        OneShard {
            records,
            context: KinesisContext {
                shard_id: SHARD.into(),
                stream_arn: STREAM_ARN.into(),
                region: "us-east-1".into(),
                invoke_identity_arn: "arn:aws:iam::123456789012:role/bench".into(),
            },
        }
    }
}

impl StreamApi for OneShard {
    fn source_label(&self) -> &'static str {
        "kinesis"
    }

    fn idle_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn max_read(&self) -> usize {
        10_000
    }

    async fn describe(&self) -> Result<StreamDescription, StreamError> {
        let last = self.records.last().expect("a shard with records");
        Ok(StreamDescription {
            arn: STREAM_ARN.into(),
            identity: "1".into(),
            shards: vec![ShardInfo {
                id: SHARD.into(),
                parents: vec![],
                ending: SequenceNumber::parse(last.sequence_number()),
            }],
        })
    }

    async fn iterator(&self, _: &str, _: &str, at: &StartAt) -> Result<String, StreamError> {
        let from = match at {
            StartAt::AfterSequence(after) => self
                .records
                .iter()
                .position(|r| SequenceNumber::parse(r.sequence_number()).unwrap() > *after)
                .unwrap_or(self.records.len()),
            StartAt::TrimHorizon | StartAt::AtTimestamp(_) | StartAt::AtSequence(_) => 0,
        };
        Ok(from.to_string())
    }

    async fn read(
        &self,
        _: &str,
        _: &str,
        iterator: &str,
        limit: usize,
    ) -> Result<Page, StreamError> {
        let from: usize = iterator.parse().expect("an iterator of this fake");
        let to = (from + limit).min(self.records.len());
        let at_end = to == self.records.len();
        Ok(Page {
            records: kinesis::stream_records(&self.records[from..to], &self.context)?,
            next_iterator: (!at_end).then(|| to.to_string()),
            millis_behind: Some(if at_end { 0 } else { 1000 }),
        })
    }
}

/// Drains `count` records through a mapping with `batch_size`; prints records/s and
/// allocations per record.
async fn drain(count: usize, batch_size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let null: Answer = Arc::new(|_event| -> BoxFuture<Outcome> {
        Box::pin(async { Outcome::Success { body: Vec::new() } })
    });
    let mapping = open_mapping_with(
        dir.path(),
        r#"url = "http://127.0.0.1:1""#,
        &format!("starting_position = \"TRIM_HORIZON\"\nbatch_size = {batch_size}"),
        Some(null),
    )
    .await;
    let stream = Arc::new(OneShard::new(count));
    let shutdown = CancellationToken::new();
    let (allocations, bytes) = allocated();
    let started = Instant::now();
    let engine = tokio::spawn(supervise(stream, mapping.clone(), shutdown.clone()));
    while !mapping
        .store
        .state()
        .shards
        .get(SHARD)
        .is_some_and(|s| s.finished)
    {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the shard did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let (allocations_after, bytes_after) = allocated();
    shutdown.cancel();
    engine.await.unwrap();
    println!(
        "pipeline: 1 shard, batch {batch_size}, {count} records of 1 KiB: {:.0} records/s, {:.1} allocations and {:.0} bytes allocated per record",
        count as f64 / elapsed.as_secs_f64(),
        (allocations_after - allocations) as f64 / count as f64,
        (bytes_after - bytes) as f64 / count as f64,
    );
}

#[tokio::test(start_paused = true)]
#[ignore = "a benchmark: prints figures"]
async fn pipeline() {
    drain(100_000, 100).await;
    drain(100_000, 10_000).await;
}

//! The engine benchmark: records of each source's shape, from an in-memory source through
//! the real reader or poller, batching, the [`crate::pipeline`], event serialization and
//! settling (checkpoint writer, deletes) into a null function (in process, it answers
//! success at once), on one thread.
//!
//! Beside each figure, the same records serialized into the same events with serde_json
//! and nothing else (each record with esmd's own serde types, then the `{"Records":[...]}`
//! envelope): the practical limit of any pipeline that must build the JSON.
//!
//! Time is paused, so pacing (a shard's 5 reads a second, idle waits) costs no wall time:
//! what is measured is the CPU the pipeline spends per record. The counting global
//! allocator (of this test binary only) gives allocations per record, the record's own
//! bytes included. CPU time is the process's (every thread: checkpoint writes run on the
//! blocking pool), from `/proc/self/task/*/schedstat`. Run alone, one test at a time:
//! `cargo test --release --lib source::bench -- --ignored --nocapture --test-threads 1`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodbstreams::types as ddb;
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::Record as KinesisRecord;
use tokio_util::sync::CancellationToken;

use super::sqs::fake::FakeQueue;
use super::stream::api::{
    Page, ShardInfo, StartAt, StreamApi, StreamDescription, StreamError, StreamRecord,
};
use super::stream::tests::open_mapping_with;
use super::stream::{dynamodb, kinesis, supervise};
use crate::config::{MappingConfig, SourceArn, SourceKind, SqsSettings};
use crate::event::kinesis::KinesisContext;
use crate::event::sequence::SequenceNumber;
use crate::target::{Answer, BoxFuture, Function, Outcome};

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

/// Wall time, CPU time and allocations between `start` and `stop`.
struct Meter {
    wall: Instant,
    cpu: Duration,
    allocations: u64,
    bytes: u64,
}

impl Meter {
    fn start() -> Meter {
        Meter {
            wall: Instant::now(),
            cpu: process_cpu(),
            allocations: ALLOCATIONS.load(Ordering::Relaxed),
            bytes: ALLOCATED_BYTES.load(Ordering::Relaxed),
        }
    }

    /// records/s, µs of CPU per record, allocations and bytes allocated per record.
    fn stop(self, records: usize) -> Figures {
        let n = records as f64;
        Figures {
            per_second: n / self.wall.elapsed().as_secs_f64(),
            cpu_micros: (process_cpu() - self.cpu).as_secs_f64() * 1e6 / n,
            allocations: (ALLOCATIONS.load(Ordering::Relaxed) - self.allocations) as f64 / n,
            bytes: (ALLOCATED_BYTES.load(Ordering::Relaxed) - self.bytes) as f64 / n,
        }
    }
}

struct Figures {
    per_second: f64,
    cpu_micros: f64,
    allocations: f64,
    bytes: f64,
}

/// CPU time of every thread of this process (nanosecond resolution, unlike rusage).
fn process_cpu() -> Duration {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("Linux /proc") {
        let path = task.expect("a task entry").path().join("schedstat");
        // a thread that ended between the listing and the read counts no more
        if let Ok(text) = std::fs::read_to_string(path) {
            nanos += text
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(nanos)
}

const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/fake";
const SHARD: &str = "shardId-000000000000";

/// Bytes of data (Kinesis), of the body (SQS), of the new image's payload (DynamoDB).
const SIZES: [usize; 3] = [100, 1024, 100 * 1024];

/// How many records a run takes for a record size: about a second of work each.
fn records_for(size: usize, sqs: bool) -> usize {
    match (size, sqs) {
        (100, false) => 300_000,
        (1024, false) => 200_000,
        (_, false) => 2_000,
        // the fake queue scans its messages on each receive: keep it short
        (100 | 1024, true) => 20_000,
        (_, true) => 2_000,
    }
}

fn payload(n: usize, size: usize) -> Vec<u8> {
    (0..size).map(|i| ((n + i) % 251) as u8).collect()
}

/// Printable payload for bodies and string attributes (JSON escapes cost nothing extra).
fn text(n: usize, size: usize) -> String {
    (0..size)
        .map(|i| char::from(b'a' + ((n + i) % 26) as u8))
        .collect()
}

fn sequence(n: usize) -> String {
    format!("49{:054}", n + 1)
}

/// The records of one closed shard, as the SDK hands them over.
enum Shaped {
    Kinesis(Vec<KinesisRecord>, KinesisContext),
    DynamoDb(Vec<ddb::Record>),
}

impl Shaped {
    fn kinesis(count: usize, size: usize) -> Shaped {
        let records = (0..count)
            .map(|n| {
                KinesisRecord::builder()
                    .sequence_number(sequence(n))
                    .partition_key(format!("pk-{}", n % 64))
                    .data(Blob::new(payload(n, size)))
                    .approximate_arrival_timestamp(DateTime::from_secs(1_700_000_000))
                    .build()
                    .expect("a complete record")
            })
            .collect();
        let context = KinesisContext {
            shard_id: SHARD.into(),
            stream_arn: STREAM_ARN.into(),
            region: "us-east-1".into(),
            invoke_identity_arn: "arn:aws:iam::123456789012:role/bench".into(),
        };
        Shaped::Kinesis(records, context)
    }

    /// INSERTs with a NEW_AND_OLD_IMAGES view: a key and a payload attribute of `size`.
    fn dynamodb(count: usize, size: usize) -> Shaped {
        let records = (0..count)
            .map(|n| {
                let key = ddb::AttributeValue::S(format!("pk-{}", n % 64));
                let stream_record = ddb::StreamRecord::builder()
                    .approximate_creation_date_time(DateTime::from_secs(1_700_000_000))
                    .keys("pk", key.clone())
                    .new_image("pk", key)
                    .new_image("n", ddb::AttributeValue::N(n.to_string()))
                    .new_image("payload", ddb::AttributeValue::S(text(n, size)))
                    .sequence_number(sequence(n))
                    .size_bytes(size as i64 + 40)
                    .stream_view_type(ddb::StreamViewType::NewAndOldImages)
                    .build();
                ddb::Record::builder()
                    .event_id(format!("{n:032x}"))
                    .event_name(ddb::OperationType::Insert)
                    .event_version("1.1")
                    .event_source("aws:dynamodb")
                    .aws_region("us-east-1")
                    .dynamodb(stream_record)
                    .build()
            })
            .collect();
        Shaped::DynamoDb(records)
    }

    fn len(&self) -> usize {
        match self {
            Shaped::Kinesis(records, _) => records.len(),
            Shaped::DynamoDb(records) => records.len(),
        }
    }

    /// The page conversion the real adapters do.
    fn page(&self, from: usize, to: usize) -> Result<Vec<StreamRecord>, StreamError> {
        match self {
            Shaped::Kinesis(records, context) => {
                kinesis::stream_records(&records[from..to], context)
            }
            Shaped::DynamoDb(records) => dynamodb::stream_records(&records[from..to], STREAM_ARN),
        }
    }

    /// The same record's JSON with serde_json and nothing else: derives for Kinesis,
    /// esmd's own serde types for DynamoDB (whose images serde writes anyway).
    fn serialized(&self, n: usize) -> Vec<u8> {
        match self {
            Shaped::Kinesis(records, context) => {
                crate::event::kinesis::tests::serde_derived(&records[n], context)
            }
            Shaped::DynamoDb(records) => {
                crate::event::dynamodb::dynamodb_record(&records[n], STREAM_ARN)
            }
        }
    }
}

/// One closed shard of [`Shaped`] records; the iterator is the index of the next record.
struct OneShard(Shaped);

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
        Ok(StreamDescription {
            arn: STREAM_ARN.into(),
            identity: "1".into(),
            shards: vec![ShardInfo {
                id: SHARD.into(),
                parents: vec![],
                ending: SequenceNumber::parse(&sequence(self.0.len() - 1)),
            }],
        })
    }

    async fn iterator(&self, _: &str, _: &str, at: &StartAt) -> Result<String, StreamError> {
        let from = match at {
            StartAt::AfterSequence(after) => (0..self.0.len())
                .position(|n| SequenceNumber::parse(&sequence(n)).unwrap() > *after)
                .unwrap_or(self.0.len()),
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
        let to = (from + limit).min(self.0.len());
        let at_end = to == self.0.len();
        Ok(Page {
            records: self.0.page(from, to)?,
            next_iterator: (!at_end).then(|| to.to_string()),
            millis_behind: Some(if at_end { 0 } else { 1000 }),
        })
    }
}

fn null_answer() -> Answer {
    Arc::new(|_event| -> BoxFuture<Outcome> {
        Box::pin(async { Outcome::Success { body: Vec::new() } })
    })
}

/// Drains one shard of `records` through a mapping with `batch_size`.
async fn drain_shard(records: Shaped, batch_size: usize) -> Figures {
    let count = records.len();
    let dir = tempfile::tempdir().unwrap();
    let mapping = open_mapping_with(
        dir.path(),
        r#"url = "http://127.0.0.1:1""#,
        &format!("starting_position = \"TRIM_HORIZON\"\nbatch_size = {batch_size}"),
        Some(null_answer()),
    )
    .await;
    let shutdown = CancellationToken::new();
    let meter = Meter::start();
    let engine = tokio::spawn(supervise(
        Arc::new(OneShard(records)),
        mapping.clone(),
        shutdown.clone(),
    ));
    let finished = || {
        mapping
            .store
            .state()
            .shards
            .get(SHARD)
            .is_some_and(|s| s.finished)
    };
    wait_until(finished).await;
    let figures = meter.stop(count);
    shutdown.cancel();
    engine.await.unwrap();
    figures
}

/// Drains a fake queue of `count` messages with `size`-byte bodies, batch size 10.
async fn drain_queue(count: usize, size: usize) -> Figures {
    let queue = Arc::new(FakeQueue::new(false, Duration::from_secs(30)));
    for n in 0..count {
        queue.send(&text(n, size), None);
    }
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = SourceArn::parse(super::sqs::fake::ARN).unwrap();
    let sqs = SqsSettings {
        queue_name: "fake".into(),
        fifo: false,
        maximum_concurrency: None,
    };
    let mapping = MappingConfig {
        id: "m".into(),
        function_name: "f".into(),
        source,
        batch_size: 10,
        batching_window: Duration::ZERO,
        report_batch_item_failures: false,
        enabled: true,
        kind: SourceKind::Sqs(sqs.clone()),
        filters: None,
        capture: None,
    };
    let stop = CancellationToken::new();
    let launch = super::Launch {
        function: Arc::new(Function::in_process("f", 1, null_answer())),
        aws: Default::default(),
        state_dir: dir.path().to_path_buf(),
        status: crate::status::StatusBoard::default().register("m", "sqs"),
        stop: stop.clone(),
        capture: None,
    };
    let meter = Meter::start();
    let poller = tokio::spawn({
        let queue = queue.clone();
        async move { super::sqs::run_on(mapping, &sqs, queue, Duration::from_secs(30), launch).await }
    });
    wait_until(|| queue.remaining() == 0).await;
    let figures = meter.stop(count);
    stop.cancel();
    poller.await.unwrap();
    figures
}

/// Waits (on paused time, so the checks cost no wall time) for up to ten minutes.
async fn wait_until(done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the drain did not end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Serializes `count` records into events of `batch_size` with serde_json alone.
fn serialize_only(count: usize, batch_size: usize, record: impl Fn(usize) -> Vec<u8>) -> Figures {
    let meter = Meter::start();
    let mut total = 0usize;
    for first in (0..count).step_by(batch_size) {
        let records: Vec<Vec<u8>> = (first..(first + batch_size).min(count))
            .map(&record)
            .collect();
        let mut event = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 14);
        event.extend_from_slice(b"{\"Records\":[");
        for (i, json) in records.iter().enumerate() {
            if i > 0 {
                event.push(b',');
            }
            event.extend_from_slice(json);
        }
        event.extend_from_slice(b"]}");
        total += std::hint::black_box(event).len();
    }
    std::hint::black_box(total);
    meter.stop(count)
}

/// An SQS record as the fake queue builds it, for the serialization-only figure.
fn sqs_record(n: usize, size: usize) -> crate::event::sqs::SqsRecord {
    crate::event::sqs::SqsRecord {
        message_id: format!("m-{n}"),
        receipt_handle: format!("rh-m-{n}-{n}"),
        body: text(n, size),
        attributes: [("ApproximateReceiveCount".to_string(), "1".to_string())].into(),
        message_attributes: Default::default(),
        md5_of_message_attributes: None,
        md5_of_body: String::new(),
        event_source: crate::event::sqs::EVENT_SOURCE,
        event_source_arn: super::sqs::fake::ARN.into(),
        aws_region: "us-east-1".into(),
    }
}

fn size_label(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn print_row(source: &str, size: usize, count: usize, esmd: &Figures, limit: &Figures) {
    println!(
        "| {source} | {} | {count} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2}x | {:.1} / {:.1} KB |",
        size_label(size),
        esmd.per_second,
        esmd.cpu_micros,
        limit.per_second,
        limit.cpu_micros,
        esmd.cpu_micros / limit.cpu_micros,
        esmd.allocations,
        esmd.bytes / 1000.0,
    );
}

#[tokio::test(start_paused = true)]
#[ignore = "a benchmark: prints figures"]
async fn engine() {
    // a line of its own: the test harness's "test ... " has no newline yet
    println!();
    println!(
        "| source | record | records | esmd records/s | esmd µs CPU/record | serde_json records/s | serde_json µs CPU/record | esmd / serde_json CPU | allocations / bytes per record |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for size in SIZES {
        let count = records_for(size, true);
        let esmd = drain_queue(count, size).await;
        let limit = {
            let records: Vec<_> = (0..count).map(|n| sqs_record(n, size)).collect();
            serialize_only(count, 10, |n| records[n].to_json())
        };
        print_row("SQS, batch 10", size, count, &esmd, &limit);
    }
    for size in SIZES {
        let count = records_for(size, false);
        let limit = {
            let records = Shaped::kinesis(count, size);
            serialize_only(count, 100, |n| records.serialized(n))
        };
        let esmd = drain_shard(Shaped::kinesis(count, size), 100).await;
        print_row("Kinesis, batch 100", size, count, &esmd, &limit);
    }
    for size in SIZES {
        let count = records_for(size, false);
        let limit = {
            let records = Shaped::dynamodb(count, size);
            serialize_only(count, 100, |n| records.serialized(n))
        };
        let esmd = drain_shard(Shaped::dynamodb(count, size), 100).await;
        print_row("DynamoDB Streams, batch 100", size, count, &esmd, &limit);
    }
}

/// The stream engine's hot path alone at a large batch: one shard of 1 KiB Kinesis records.
#[tokio::test(start_paused = true)]
#[ignore = "a benchmark: prints figures"]
async fn pipeline() {
    for batch_size in [100, 10_000] {
        let count = 200_000;
        let figures = drain_shard(Shaped::kinesis(count, 1024), batch_size).await;
        println!(
            "pipeline: 1 shard, batch {batch_size}, {count} records of 1 KiB: {:.0} records/s, {:.2} µs CPU, {:.1} allocations and {:.0} bytes allocated per record",
            figures.per_second, figures.cpu_micros, figures.allocations, figures.bytes,
        );
    }
}

//! The engine against an in-memory stream, for what no emulator can produce: empty pages
//! in a closed shard, stops at chosen moments, many shards at once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::body::Bytes;

use super::api::{Page, ShardInfo, StartAt, StreamError, StreamRecord};
use super::*;
use crate::event::sequence::SequenceNumber;
use crate::target::Outcome;

/// A shard of the fake stream.
pub(crate) struct FakeShard {
    id: String,
    parents: Vec<String>,
    records: Vec<StreamRecord>,
    closed: bool,
}

/// An in-memory stream. An iterator is `shard/position`, with `/e` once the empty page in
/// front of that position was served. Like moto, a closed shard never answers a null next
/// iterator unless `null_at_end`; with `empty_pages`, an empty page that is not behind
/// comes before every page of records, as real Kinesis may answer. AT_TIMESTAMP reads
/// from the trim horizon, as DynamoDB does.
pub(crate) struct FakeStream {
    shards: Vec<FakeShard>,
    page: usize,
    empty_pages: bool,
    /// Pages say nothing of how far behind they are, as DynamoDB's.
    lag_untold: bool,
    pub(crate) null_at_end: bool,
}

impl FakeStream {
    pub(crate) fn new(shards: Vec<FakeShard>) -> FakeStream {
        FakeStream {
            shards,
            page: 100,
            empty_pages: false,
            lag_untold: false,
            null_at_end: false,
        }
    }

    /// As DynamoDB Streams answers: an empty page before every page of records, and no
    /// word of how far behind a page is.
    pub(crate) fn like_dynamodb(self) -> FakeStream {
        FakeStream {
            empty_pages: true,
            lag_untold: true,
            ..self
        }
    }

    fn lag(&self, behind: i64) -> Option<i64> {
        (!self.lag_untold).then_some(behind)
    }

    fn shard(&self, id: &str) -> (usize, &FakeShard) {
        self.shards
            .iter()
            .enumerate()
            .find(|(_, s)| s.id == id)
            .expect("a listed shard")
    }
}

impl StreamApi for FakeStream {
    fn source_label(&self) -> &'static str {
        "kinesis"
    }

    fn idle_interval(&self) -> Duration {
        Duration::from_millis(10)
    }

    fn max_read(&self) -> usize {
        self.page
    }

    async fn describe(&self) -> Result<StreamDescription, StreamError> {
        Ok(StreamDescription {
            arn: "arn:aws:kinesis:us-east-1:123456789012:stream/fake".into(),
            identity: "1".into(),
            shards: self
                .shards
                .iter()
                .map(|s| ShardInfo {
                    id: s.id.clone(),
                    parents: s.parents.clone(),
                    ending: s.closed.then(|| {
                        s.records
                            .last()
                            .map_or_else(|| seq(0), |r| r.sequence.clone())
                    }),
                })
                .collect(),
        })
    }

    async fn iterator(&self, _: &str, shard: &str, at: &StartAt) -> Result<String, StreamError> {
        let (index, shard) = self.shard(shard);
        let from = match at {
            StartAt::AfterSequence(after) => shard
                .records
                .iter()
                .position(|r| r.sequence > *after)
                .unwrap_or(shard.records.len()),
            StartAt::AtSequence(at) => shard
                .records
                .iter()
                .position(|r| r.sequence >= *at)
                .unwrap_or(shard.records.len()),
            StartAt::TrimHorizon | StartAt::AtTimestamp(_) => 0,
        };
        Ok(format!("{index}/{from}"))
    }

    async fn read(
        &self,
        _: &str,
        _: &str,
        iterator: &str,
        limit: usize,
    ) -> Result<Page, StreamError> {
        let parts: Vec<&str> = iterator.split('/').collect();
        let index: usize = parts[0].parse().unwrap();
        let from: usize = parts[1].parse().unwrap();
        let shard = &self.shards[index];
        if self.empty_pages && parts.len() == 2 {
            return Ok(Page {
                records: Vec::new(),
                next_iterator: Some(format!("{index}/{from}/e")),
                millis_behind: self.lag(0),
            });
        }
        let to = (from + limit.min(self.page)).min(shard.records.len());
        let at_end = to == shard.records.len();
        Ok(Page {
            records: shard.records[from..to].to_vec(),
            next_iterator: (!(at_end && shard.closed && self.null_at_end))
                .then(|| format!("{index}/{to}")),
            millis_behind: self.lag(if at_end { 0 } else { 1000 }),
        })
    }
}

fn seq(n: u64) -> SequenceNumber {
    SequenceNumber::parse(&n.to_string()).unwrap()
}

/// Record `n` of shard `shard`, with key `key`, padded to about `pad` bytes.
fn record(shard: u64, n: u64, key: &str, pad: usize) -> StreamRecord {
    let json = format!(
        r#"{{"shard":{shard},"n":{n},"key":"{key}","pad":"{}"}}"#,
        "x".repeat(pad)
    );
    StreamRecord {
        sequence: seq(shard * 1_000_000 + n + 1),
        key_hash: api::key_hash(key),
        arrival: 1_700_000_000.0 + n as f64,
        json: json.into_bytes(),
    }
}

pub(crate) fn shard(
    index: u64,
    parents: &[&str],
    closed: bool,
    records: u64,
    keys: u64,
) -> FakeShard {
    let keys = keys.max(1);
    FakeShard {
        id: format!("shardId-{index}"),
        parents: parents.iter().map(|p| p.to_string()).collect(),
        records: (0..records)
            .map(|n| record(index, n, &format!("k{}", n % keys), 10))
            .collect(),
        closed,
    }
}

/// One delivered record: (shard, n, key).
type Delivered = (u64, u64, String);

/// A function over HTTP that records what it is sent. Batches holding the key `k0` take
/// `slow` to answer.
struct Recorder {
    url: String,
    delivered: Arc<Mutex<Vec<Delivered>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Recorder {
    async fn start(slow: Duration) -> Recorder {
        let delivered: Arc<Mutex<Vec<Delivered>>> = Arc::default();
        let log = delivered.clone();
        let app = axum::Router::new()
            .fallback(move |body: Bytes| {
                let log = log.clone();
                async move {
                    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let records = event["Records"].as_array().unwrap();
                    if records.iter().any(|r| r["key"] == "k0") {
                        tokio::time::sleep(slow).await;
                    }
                    log.lock().unwrap().extend(records.iter().map(|r| {
                        (
                            r["shard"].as_u64().unwrap(),
                            r["n"].as_u64().unwrap(),
                            r["key"].as_str().unwrap().to_string(),
                        )
                    }));
                    "null"
                }
            })
            .layer(axum::extract::DefaultBodyLimit::disable());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Recorder {
            url,
            delivered,
            _stop: stop,
        }
    }

    fn count(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }

    fn all(&self) -> Vec<Delivered> {
        self.delivered.lock().unwrap().clone()
    }
}

/// A Kinesis mapping on the fake stream, invoking `function` (a `[functions.f]` body),
/// with `settings` added to the mapping; its state lives in `dir`.
async fn open_mapping(dir: &Path, function: &str, settings: &str) -> Arc<Mapping> {
    open_mapping_with(dir, function, settings, None).await
}

/// As [`open_mapping`], the function running in process when `answer` is given.
pub(crate) async fn open_mapping_with(
    dir: &Path,
    function: &str,
    settings: &str,
    answer: Option<crate::target::Answer>,
) -> Arc<Mapping> {
    let text = format!(
        r#"
[aws]
endpoint_url = "http://127.0.0.1:1"
[functions.f]
{function}
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:kinesis:us-east-1:123456789012:stream/fake"
{settings}
"#
    );
    let config = crate::config::validate(&text, dir, &|_| None).unwrap();
    let function = match answer {
        Some(answer) => Function::in_process("f", 1, answer),
        None => Function::build(config.functions["f"].clone(), &config.aws).await,
    };
    let function = Arc::new(function);
    let mapping = config.mappings[0].clone();
    let crate::config::SourceKind::Stream(settings) = mapping.kind.clone() else {
        panic!("a kinesis mapping");
    };
    let status = crate::status::StatusBoard::default().register(&mapping.id, "kinesis");
    let mapping = Mapping::open(mapping, settings, function, &config.aws, dir, status, None)
        .await
        .unwrap();
    Arc::new(mapping)
}

/// A function that answers after `slow` for batches with key `k0`, and a mapping on the
/// fake stream that invokes it, from the trim horizon, with `settings` added.
async fn recorded_mapping(
    slow: Duration,
    settings: &str,
) -> (tempfile::TempDir, Recorder, Arc<Mapping>) {
    let dir = tempfile::tempdir().unwrap();
    let function = Recorder::start(slow).await;
    let mapping = open_mapping(
        dir.path(),
        &format!(r#"url = "{}""#, function.url),
        &format!("starting_position = \"TRIM_HORIZON\"\n{settings}"),
    )
    .await;
    (dir, function, mapping)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The engine on `stream` until `done`, then a graceful stop.
async fn run_until(
    stream: &Arc<FakeStream>,
    mapping: &Arc<Mapping>,
    what: &str,
    done: impl FnMut() -> bool,
) {
    let shutdown = CancellationToken::new();
    let engine = tokio::spawn(supervise(stream.clone(), mapping.clone(), shutdown.clone()));
    wait_for(what, done).await;
    shutdown.cancel();
    engine.await.unwrap();
}

fn finished(mapping: &Mapping, shard: &str) -> bool {
    mapping
        .store
        .state()
        .shards
        .get(shard)
        .is_some_and(|s| s.finished)
}

/// The mapping's checkpoint file as a fresh start reads it.
fn stored(mapping: &Mapping) -> MappingState {
    let bytes = std::fs::read(mapping.store.path()).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

#[tokio::test]
async fn an_oversized_record_is_discarded_without_an_invocation_and_the_shard_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let invocations = dir.path().join("invocations.jsonl");
    let failures = dir.path().join("failures.jsonl");
    let mapping = open_mapping(
        dir.path(),
        &format!(
            r#"command = ["sh", "-c", "cat >> {invocations}; echo >> {invocations}; echo null"]"#,
            invocations = invocations.display()
        ),
        &format!(
            r#"starting_position = "TRIM_HORIZON"
destination_config = {{ on_failure = {{ destination = "file://{failures}" }} }}"#,
            failures = failures.display()
        ),
    )
    .await;
    let mut stream = FakeStream::new(vec![FakeShard {
        id: "shardId-0".into(),
        parents: vec![],
        records: vec![
            record(0, 0, "k", 10),
            record(0, 1, "k", 7 * 1024 * 1024),
            record(0, 2, "k", 10),
        ],
        closed: true,
    }]);
    stream.null_at_end = true;
    run_until(&Arc::new(stream), &mapping, "the shard to finish", || {
        finished(&mapping, "shardId-0")
    })
    .await;

    let events: Vec<serde_json::Value> = std::fs::read_to_string(&invocations)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let invoked: Vec<u64> = events
        .iter()
        .flat_map(|e| e["Records"].as_array().unwrap().clone())
        .map(|r| r["n"].as_u64().unwrap())
        .collect();
    assert_eq!(invoked, vec![0, 2], "the oversized record is never invoked");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&failures)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(
        line["requestContext"]["condition"],
        "MaximumPayloadSizeExceeded"
    );
    assert_eq!(line["requestContext"]["approximateInvokeCount"], 0);
    assert!(line["requestContext"]["payloadSize"].as_u64().unwrap() > 7 * 1024 * 1024);
    assert_eq!(line["responseContext"], serde_json::Value::Null);
    assert_eq!(line["KinesisBatchInfo"]["startSequenceNumber"], "2");
    assert_eq!(line["KinesisBatchInfo"]["batchSize"], 1);
    assert_eq!(
        stored(&mapping).shards["shardId-0"].checkpoint.as_deref(),
        Some("3")
    );
}

/// The retry schedule on paused time: a failing batch is retried 1 s, 2 s and 4 s after
/// its invocations (each with up to as much again of jitter), and discarded after
/// `maximum_retry_attempts`; the shard then goes on.
#[tokio::test(start_paused = true)]
async fn failed_batches_are_retried_1_2_4_seconds_apart_then_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let calls: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let seen = calls.clone();
    let answer: crate::target::Answer = Arc::new(move |_event| {
        seen.lock().unwrap().push(tokio::time::Instant::now());
        Box::pin(async {
            Outcome::FunctionError {
                error_type: "Unhandled".into(),
                body: b"{}".to_vec(),
            }
        })
    });
    let mapping = open_mapping_with(
        dir.path(),
        r#"url = "http://127.0.0.1:1/""#,
        "starting_position = \"TRIM_HORIZON\"\nmaximum_retry_attempts = 3",
        Some(answer),
    )
    .await;
    let mut stream = FakeStream::new(vec![shard(0, &[], true, 5, 1)]);
    stream.null_at_end = true;
    run_until(&Arc::new(stream), &mapping, "the shard to finish", || {
        finished(&mapping, "shardId-0")
    })
    .await;
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4, "the invocation and 3 retries");
    for (i, base) in [1u64, 2, 4].into_iter().enumerate() {
        let gap = calls[i + 1] - calls[i];
        let base = Duration::from_secs(base);
        assert!(base <= gap && gap <= 2 * base, "retry {i}: {gap:?}");
    }
    assert_eq!(
        stored(&mapping).shards["shardId-0"].checkpoint.as_deref(),
        Some("5"),
        "discarded, so settled: the checkpoint passed every record"
    );
}

/// The record numbers of each invocation of an in-process function that answers with
/// `answer(call number, record numbers)`.
type Calls = Arc<Mutex<Vec<Vec<u64>>>>;

fn scripted(
    answer: impl Fn(usize, &[u64]) -> Outcome + Send + Sync + 'static,
) -> (crate::target::Answer, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let answer: crate::target::Answer = Arc::new(move |event| {
        let event: serde_json::Value = serde_json::from_slice(&event).unwrap();
        let numbers: Vec<u64> = event["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["n"].as_u64().unwrap())
            .collect();
        let call = {
            let mut calls = seen.lock().unwrap();
            calls.push(numbers.clone());
            calls.len() - 1
        };
        let outcome = answer(call, &numbers);
        Box::pin(async move { outcome })
    });
    (answer, calls)
}

/// Runs one closed shard holding `records` through a mapping with `settings` and an
/// on-failure file destination until the shard finishes, on paused time; returns the
/// invocations and the failure records.
async fn run_failing(
    records: Vec<StreamRecord>,
    settings: &str,
    answer: impl Fn(usize, &[u64]) -> Outcome + Send + Sync + 'static,
) -> (Vec<Vec<u64>>, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let failures = dir.path().join("failures.jsonl");
    let (answer, calls) = scripted(answer);
    let mapping = open_mapping_with(
        dir.path(),
        r#"url = "http://127.0.0.1:1/""#,
        &format!(
            "starting_position = \"TRIM_HORIZON\"\n{settings}\ndestination_config = {{ on_failure = {{ destination = \"file://{}\" }} }}",
            failures.display()
        ),
        Some(answer),
    )
    .await;
    let mut stream = FakeStream::new(vec![FakeShard {
        id: "shardId-0".into(),
        parents: vec![],
        records,
        closed: true,
    }]);
    stream.null_at_end = true;
    run_until(&Arc::new(stream), &mapping, "the shard to finish", || {
        finished(&mapping, "shardId-0")
    })
    .await;
    let lines = std::fs::read_to_string(&failures)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let calls = calls.lock().unwrap().clone();
    (calls, lines)
}

/// Records 0..count of shard 0, keyed over three keys.
fn numbered(count: u64) -> Vec<StreamRecord> {
    (0..count)
        .map(|n| record(0, n, &format!("k{}", n % 3), 10))
        .collect()
}

fn invocations_of(calls: &[Vec<u64>], n: u64) -> usize {
    calls.iter().flatten().filter(|&&m| m == n).count()
}

fn function_error() -> Outcome {
    Outcome::FunctionError {
        error_type: "Unhandled".into(),
        body: br#"{"errorType":"Error","errorMessage":"poison"}"#.to_vec(),
    }
}

#[tokio::test(start_paused = true)]
async fn maximum_retry_attempts_2_gives_exactly_3_invocations() {
    let (calls, lines) = run_failing(
        numbered(3),
        "batch_size = 1\nmaximum_retry_attempts = 2",
        |_, numbers| {
            if numbers.contains(&1) {
                function_error()
            } else {
                Outcome::Success { body: Vec::new() }
            }
        },
    )
    .await;
    assert_eq!(invocations_of(&calls, 0), 1);
    assert_eq!(invocations_of(&calls, 1), 3);
    assert_eq!(
        invocations_of(&calls, 2),
        1,
        "the shard goes on after the discard"
    );
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(
        lines[0]["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(lines[0]["responseContext"]["functionError"], "Unhandled");
    assert_eq!(lines[0]["KinesisBatchInfo"]["batchSize"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_partial_failure_retries_from_the_reported_record_until_exhausted() {
    // reports record 6 (sequence number 7) failed every time
    let (calls, lines) = run_failing(
        numbered(10),
        "batch_size = 10\nmaximum_retry_attempts = 3\nfunction_response_types = [\"ReportBatchItemFailures\"]",
        |_, numbers| {
            let failed: Vec<serde_json::Value> = numbers
                .iter()
                .filter(|&&n| n == 6)
                .map(|n| serde_json::json!({"itemIdentifier": (n + 1).to_string()}))
                .collect();
            Outcome::Success {
                body: serde_json::json!({ "batchItemFailures": failed })
                    .to_string()
                    .into_bytes(),
            }
        },
    )
    .await;
    for n in 0..6 {
        assert_eq!(
            invocations_of(&calls, n),
            1,
            "record {n} before the failure"
        );
    }
    for n in 6..10 {
        assert_eq!(invocations_of(&calls, n), 4, "record {n}: 1 + 3 retries");
    }
    assert!(
        calls[1..].iter().all(|call| call[0] == 6),
        "each retry starts at the reported record"
    );
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["requestContext"]["approximateInvokeCount"], 4);
    assert_eq!(
        line["responseContext"]["functionError"],
        serde_json::Value::Null
    );
    assert_eq!(line["KinesisBatchInfo"]["batchSize"], 4);
}

#[tokio::test(start_paused = true)]
async fn throttles_and_an_unreachable_target_use_no_retry_attempt() {
    let (calls, lines) = run_failing(
        numbered(3),
        "maximum_retry_attempts = 0",
        |call, _| match call {
            0 | 1 => Outcome::Throttled {
                detail: "ReservedFunctionConcurrentInvocationLimitExceeded".into(),
            },
            2 => Outcome::CouldNotInvoke {
                detail: "bad gateway".into(),
            },
            _ => Outcome::Success { body: Vec::new() },
        },
    )
    .await;
    // had a throttle used the only attempt, the batch would have been discarded at once
    // and never invoked a fourth time
    assert_eq!(calls, vec![vec![0, 1, 2]; 4], "the same batch each time");
    assert!(lines.is_empty(), "nothing discarded");
}

#[tokio::test(start_paused = true)]
async fn an_expired_record_goes_to_the_destination_without_invocation() {
    let now = super::now_seconds();
    let mut records = numbered(3);
    records[0].arrival = now - 120.0;
    records[1].arrival = now;
    records[2].arrival = now;
    let (calls, lines) = run_failing(records, "maximum_record_age_in_seconds = 60", |_, _| {
        Outcome::Success { body: Vec::new() }
    })
    .await;
    assert_eq!(
        calls,
        vec![vec![1, 2]],
        "the expired record is never invoked"
    );
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["requestContext"]["condition"], "RecordAgeExceeded");
    assert_eq!(line["requestContext"]["approximateInvokeCount"], 1);
    assert!(line.get("responseContext").is_none());
    assert_eq!(line["KinesisBatchInfo"]["batchSize"], 1);
}

/// Real Kinesis may answer an empty page, not behind, before more records of a closed
/// shard: the shard ends at its ending sequence number, not at an empty page.
#[tokio::test]
async fn empty_pages_inside_a_closed_shard_do_not_end_it() {
    let (_dir, function, mapping) = recorded_mapping(Duration::ZERO, "").await;
    let mut stream = FakeStream::new(vec![shard(0, &[], true, 50, 1)]);
    stream.page = 10;
    stream.empty_pages = true;
    run_until(&Arc::new(stream), &mapping, "the shard to finish", || {
        finished(&mapping, "shardId-0")
    })
    .await;
    let numbers: Vec<u64> = function.all().iter().map(|d| d.1).collect();
    assert_eq!(
        numbers,
        (0..50).collect::<Vec<u64>>(),
        "the whole shard, in order"
    );
    assert_eq!(
        stored(&mapping).shards["shardId-0"].checkpoint.as_deref(),
        Some("50")
    );
}

/// A closed shard that never held a record ends, and its child starts.
#[tokio::test]
async fn an_empty_closed_parent_ends_and_its_child_starts() {
    let (_dir, function, mapping) = recorded_mapping(Duration::ZERO, "").await;
    let stream = FakeStream::new(vec![
        shard(0, &[], true, 0, 1),
        shard(1, &["shardId-0"], false, 5, 1),
    ]);
    run_until(&Arc::new(stream), &mapping, "the child's records", || {
        function.count() == 5
    })
    .await;
    assert!(finished(&mapping, "shardId-0"));
}

/// Records before an AT_TIMESTAMP start (DynamoDB reads them and passes over them) move
/// the checkpoint, so the next start does not scan them again.
#[tokio::test]
async fn records_before_the_start_time_move_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let function = Recorder::start(Duration::ZERO).await;
    let mapping = open_mapping(
        dir.path(),
        &format!(r#"url = "{}""#, function.url),
        // records arrive at 1_700_000_000 + n: the start passes over 0..=29
        r#"starting_position = "AT_TIMESTAMP"
starting_position_timestamp = 1700000030"#,
    )
    .await;
    let stream = Arc::new(FakeStream::new(vec![shard(0, &[], false, 40, 1)]));
    run_until(&stream, &mapping, "the records after the start", || {
        function.count() == 10
    })
    .await;
    let numbers: Vec<u64> = function.all().iter().map(|d| d.1).collect();
    assert_eq!(numbers, (30..40).collect::<Vec<u64>>());

    let only_old = tempfile::tempdir().unwrap();
    let mapping = open_mapping(
        only_old.path(),
        &format!(r#"url = "{}""#, function.url),
        r#"starting_position = "AT_TIMESTAMP"
starting_position_timestamp = 1700000100"#,
    )
    .await;
    run_until(
        &stream,
        &mapping,
        "the checkpoint past the old records",
        || {
            stored(&mapping)
                .shards
                .get("shardId-0")
                .and_then(|s| s.checkpoint.clone())
                .as_deref()
                == Some("40")
        },
    )
    .await;
    assert_eq!(function.count(), 10, "nothing older than the start invoked");
}

/// Lanes settle out of order; a graceful stop stores what was settled beyond the
/// checkpoint, and the next start skips it: across stops and a resharded parent, every
/// record is delivered once, in order per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_deliver_nothing_twice_with_lanes_of_uneven_speed() {
    let dir = tempfile::tempdir().unwrap();
    let function = Recorder::start(Duration::from_millis(30)).await;
    let stream = Arc::new(FakeStream::new(vec![
        shard(0, &[], true, 400, 12),
        shard(1, &["shardId-0"], false, 200, 12),
    ]));
    let total = 600;
    let mut settled_beyond_seen = false;
    for stop_at in [100, 250, 400, total] {
        let mapping = open_mapping(
            dir.path(),
            &format!(r#"url = "{}""#, function.url),
            r#"starting_position = "TRIM_HORIZON"
batch_size = 5
parallelization_factor = 4"#,
        )
        .await;
        run_until(&stream, &mapping, "deliveries", || {
            function.count() >= stop_at
        })
        .await;
        settled_beyond_seen |= stored(&mapping)
            .shards
            .values()
            .any(|s| !s.settled_beyond.is_empty());
    }
    assert!(
        settled_beyond_seen,
        "a stop found records settled beyond a checkpoint: the skip was exercised"
    );
    let delivered = function.all();
    let unique: HashSet<(u64, u64)> = delivered.iter().map(|d| (d.0, d.1)).collect();
    assert_eq!(unique.len(), total, "nothing lost");
    assert_eq!(delivered.len(), total, "nothing delivered twice");
    let mut last_per_key: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (shard, n, key) in delivered {
        if let Some(last) = last_per_key.insert(key.clone(), (shard, n)) {
            assert!(last < (shard, n), "{key}: {last:?} before ({shard}, {n})");
        }
    }
}

/// Figures for the README, not a pass/fail check: 64 shards with 10 lanes each settle
/// batches while a 100 ms ticker (an SQS visibility heartbeat's stand-in) runs in the
/// same runtime. Run with `cargo test --release --lib engine_scale -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints figures"]
async fn engine_scale() {
    const SHARDS: u64 = 64;
    const RECORDS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let function = Recorder::start(Duration::ZERO).await;
    let mapping = open_mapping(
        dir.path(),
        &format!("url = \"{}\"\nmax_concurrency = 1000", function.url),
        r#"starting_position = "TRIM_HORIZON"
batch_size = 10
parallelization_factor = 10"#,
    )
    .await;
    let stream = Arc::new(FakeStream::new(
        (0..SHARDS)
            .map(|i| shard(i, &[], false, RECORDS, 100))
            .collect(),
    ));
    let ticking = CancellationToken::new();
    let ticker = tokio::spawn({
        let ticking = ticking.clone();
        async move {
            let period = Duration::from_millis(100);
            let mut worst = Duration::ZERO;
            let mut next = tokio::time::Instant::now() + period;
            while !ticking.is_cancelled() {
                tokio::time::sleep_until(next).await;
                worst = worst.max(next.elapsed());
                next += period;
            }
            worst
        }
    });
    let started = Instant::now();
    let total = (SHARDS * RECORDS) as usize;
    run_until(&stream, &mapping, "every record", || {
        function.count() == total
    })
    .await;
    let elapsed = started.elapsed();
    ticking.cancel();
    let worst = ticker.await.unwrap();
    let batches = total / 10;
    println!(
        "engine_scale: {SHARDS} shards x 10 lanes, {total} records in {batches} batches of 10: {:.0} records/s, {:.0} settles/s, heartbeat late by at most {} ms",
        total as f64 / elapsed.as_secs_f64(),
        batches as f64 / elapsed.as_secs_f64(),
        worst.as_millis()
    );
}

/// Figures for the README, not a pass/fail check: the memory of one mapping on a stream of
/// 1,000 open shards, each shard task started and read to its tip (10 records each), then
/// polling. Run with `cargo test --release --lib thousand_shards -- --ignored --nocapture`.
#[tokio::test(start_paused = true)]
#[ignore = "a benchmark: prints figures"]
async fn thousand_shards() {
    const SHARDS: u64 = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let delivered = Arc::new(AtomicUsize::new(0));
    let counting: crate::target::Answer = {
        let delivered = delivered.clone();
        Arc::new(move |event: Bytes| -> crate::target::BoxFuture<Outcome> {
            let event: serde_json::Value = serde_json::from_slice(&event).unwrap();
            delivered.fetch_add(event["Records"].as_array().unwrap().len(), Ordering::SeqCst);
            Box::pin(async { Outcome::Success { body: Vec::new() } })
        })
    };
    let before = rss_bytes("VmRSS:");
    let mapping = open_mapping_with(
        dir.path(),
        r#"url = "http://127.0.0.1:1""#,
        "starting_position = \"TRIM_HORIZON\"",
        Some(counting),
    )
    .await;
    let stream = Arc::new(FakeStream::new(
        (0..SHARDS).map(|i| shard(i, &[], false, 10, 10)).collect(),
    ));
    let shutdown = CancellationToken::new();
    let engine = tokio::spawn(supervise(stream, mapping.clone(), shutdown.clone()));
    wait_for("every record", || {
        delivered.load(Ordering::SeqCst) == (SHARDS * 10) as usize
    })
    .await;
    // a few idle polls of every shard at its tip
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = rss_bytes("VmRSS:");
    shutdown.cancel();
    engine.await.unwrap();
    println!(
        "thousand_shards: 1 mapping, {SHARDS} open shards at their tip: the test process's RSS {:.1} MB ({:.1} MB before the mapping opened)",
        during as f64 / 1e6,
        before as f64 / 1e6,
    );
}

/// The process's peak resident memory, from `/proc/self/status`.
fn peak_rss_bytes() -> u64 {
    rss_bytes("VmHWM:")
}

/// A memory line of `/proc/self/status` (`VmRSS:`, `VmHWM:`), in bytes.
fn rss_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Figures for the README: what the read-ahead holds with 1 MiB records and a slow
/// function (2 shards, 2 lanes each, 400 MiB in the stream). Run alone, since peak memory is
/// the process's: `cargo test --release --lib read_ahead_memory -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints figures"]
async fn read_ahead_memory() {
    const MIB: usize = 1024 * 1024;
    let (_dir, function, mapping) =
        recorded_mapping(Duration::from_millis(200), "parallelization_factor = 2").await;
    let big_shard = |index: u64| FakeShard {
        id: format!("shardId-{index}"),
        parents: vec![],
        records: (0..200)
            .map(|n| record(index, n, if n % 2 == 0 { "k0" } else { "k1" }, MIB - 100))
            .collect(),
        closed: false,
    };
    let mut stream = FakeStream::new(vec![big_shard(0), big_shard(1)]);
    // Kinesis returns at most 10 MiB per GetRecords
    stream.page = 10;
    let stream = Arc::new(stream);
    let baseline = peak_rss_bytes();
    run_until(&stream, &mapping, "80 records", || function.count() >= 80).await;
    let held = peak_rss_bytes().saturating_sub(baseline);
    println!(
        "read_ahead_memory: 2 shards x 2 lanes, 1 MiB records, 200 ms per batch: peak RSS grew by {} MiB while 80 records were delivered (stream holds 400 MiB)",
        held / MIB as u64
    );
}

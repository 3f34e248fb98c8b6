//! `esmd replay --failures` against moto: the failure records a poison batch left in an
//! SQS queue, a file or an S3 prefix re-drive exactly the failed records into the fixed
//! function; records of another stream are refused; an SQS mapping's dead-letter queue is
//! re-driven into the fixed function, deleting what it took and leaving what it failed
//! again.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::streams::{create_stream, put_records, stream_config};
use common::{
    Esmd, FunctionServer, Moto, Reply, aws_config, mapping, random_name, url_function, wait_until,
};
use esmd::config::raw::{
    RawDestinationConfig, RawFunction, RawMapping, RawOnFailure, RawStartingPosition,
};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);
const MAPPING_ID: &str = "replayed";
/// The record the function fails on until it is fixed.
const POISON: &str = "4";

/// A function that fails every batch holding [`POISON`] until `fixed`, and takes every
/// other batch.
async fn poison_function(fixed: Arc<AtomicBool>) -> FunctionServer {
    FunctionServer::start(move |event| {
        let poisoned = event["Records"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|record| payload(record) == POISON);
        if poisoned && !fixed.load(Ordering::SeqCst) {
            Reply::rie_error()
        } else {
            Reply::ok("null")
        }
    })
    .await
}

/// A Kinesis record's data, or an SQS record's body.
fn payload(record: &Value) -> String {
    match record["kinesis"]["data"].as_str() {
        Some(data) => String::from_utf8(BASE64.decode(data).unwrap()).unwrap(),
        None => record["body"].as_str().unwrap_or_default().to_string(),
    }
}

/// The payloads of every record of `invocations`, in order.
fn payloads(invocations: &[common::Invocation]) -> Vec<String> {
    invocations
        .iter()
        .flat_map(|invocation| invocation.records())
        .map(|record| payload(&record))
        .collect()
}

/// Waits for esmd to exit with `code`; shows its log when it does not.
async fn expect_exit(esmd: &mut Esmd, code: i32) {
    let status = esmd.wait_exit(LONG).await;
    assert_eq!(status.code(), Some(code), "{}", esmd.stderr());
}

// ---------------------------------------------------------------------------------------
// failure records

/// Records "0".."9" on a one-shard stream, read in batches of 3 with no retry: the batch
/// "3","4","5" fails on the poison and its failure record goes to `destination`.
/// `run --until-drained` exits 2 (records discarded). Returns the config, the function
/// (still broken) and its switch.
async fn poison_batch(moto: &Moto, destination: &str) -> (String, FunctionServer, Arc<AtomicBool>) {
    let stream = create_stream(&moto.kinesis(), &random_name("replay"), 1).await;
    let records: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| ("key".to_string(), i.to_string().into_bytes()))
        .collect();
    put_records(&moto.kinesis(), &stream, &records).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let function = poison_function(fixed.clone()).await;
    let state = tempfile::tempdir().unwrap();
    let toml = stream_config(
        &moto.endpoint,
        state.path(),
        &stream.arn,
        &function.url(),
        RawMapping {
            uuid: Some(MAPPING_ID.into()),
            starting_position: Some(RawStartingPosition::TrimHorizon),
            batch_size: Some(3),
            maximum_retry_attempts: Some(0),
            destination_config: Some(RawDestinationConfig {
                on_failure: Some(RawOnFailure {
                    destination: destination.into(),
                }),
            }),
            ..RawMapping::default()
        },
    );
    let mut run = Esmd::start_with(&toml, &["--until-drained"], &[]);
    expect_exit(&mut run, 2).await;
    assert_eq!(
        payloads(&function.invocations()),
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        "each record once"
    );
    (toml, function, fixed)
}

/// Fixes the function, replays `src` and checks that exactly the failed batch was
/// re-driven, in order, once.
async fn replay_fixed(toml: &str, src: &str, function: &FunctionServer, fixed: &AtomicBool) {
    fixed.store(true, Ordering::SeqCst);
    let before = function.invocations().len();
    let mut replay = Esmd::replay(toml, &["--mapping", MAPPING_ID, "--failures", src]);
    expect_exit(&mut replay, 0).await;
    assert_eq!(
        payloads(&function.invocations()[before..]),
        ["3", "4", "5"],
        "exactly the failed batch, in order, once"
    );
}

#[tokio::test]
async fn failure_records_in_a_queue_redrive_exactly_the_failed_records_and_are_deleted() {
    let moto = Moto::start().await;
    let failures = moto.create_queue(&random_name("failures"), &[]).await;
    let (toml, function, fixed) = poison_batch(&moto, &failures.arn).await;
    assert_eq!(
        moto.queue_depth(&failures).await,
        (1, 0),
        "one failure record"
    );

    replay_fixed(&toml, &failures.arn, &function, &fixed).await;
    assert_eq!(
        moto.queue_depth(&failures).await,
        (0, 0),
        "deleted once delivered"
    );
}

#[tokio::test]
async fn failure_records_whose_records_are_discarded_again_stay_in_the_queue() {
    let moto = Moto::start().await;
    let failures = moto.create_queue(&random_name("failures"), &[]).await;
    let (toml, function, _still_broken) = poison_batch(&moto, &failures.arn).await;
    let before = function.invocations().len();

    let mut replay = Esmd::replay(
        &toml,
        &["--mapping", MAPPING_ID, "--failures", &failures.arn],
    );
    expect_exit(&mut replay, 2).await;
    assert_eq!(
        payloads(&function.invocations()[before..]),
        ["3", "4", "5"],
        "the failed batch was re-driven"
    );
    assert_eq!(
        moto.queue_depth(&failures).await,
        (2, 0),
        "the record read is handed back, beside the replay's own failure record"
    );
}

#[tokio::test]
async fn failure_records_in_a_file_redrive_exactly_the_failed_records() {
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = format!("file://{}", dir.path().join("failures.jsonl").display());
    let (toml, function, fixed) = poison_batch(&moto, &file).await;

    replay_fixed(&toml, &file, &function, &fixed).await;
    let lines = std::fs::read_to_string(dir.path().join("failures.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 1, "the file is left as it is");
}

#[tokio::test]
async fn failure_records_under_an_s3_prefix_redrive_exactly_the_failed_records() {
    let moto = Moto::start().await;
    let bucket = random_name("failures");
    let s3 = moto.s3();
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("CreateBucket");
    let (toml, function, fixed) = poison_batch(&moto, &format!("arn:aws:s3:::{bucket}")).await;

    let prefix = format!("s3://{bucket}/aws/lambda/{MAPPING_ID}/");
    replay_fixed(&toml, &prefix, &function, &fixed).await;
    let objects = s3
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .expect("ListObjectsV2");
    assert_eq!(objects.contents().len(), 1, "the object is left as it is");
}

/// A failure record of another stream is refused before anything is invoked, naming both
/// streams; the replay needs no emulator to find out.
#[tokio::test]
async fn failure_records_of_another_stream_are_refused_with_both_arns() {
    let ours = "arn:aws:kinesis:us-east-1:123456789012:stream/ours";
    let theirs = "arn:aws:kinesis:us-east-1:123456789012:stream/theirs";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("failures.jsonl");
    let record = |stream: &str| {
        serde_json::json!({
            "requestContext": {"condition": "RetryAttemptsExhausted"},
            "KinesisBatchInfo": {
                "shardId": "shardId-000000000000",
                "startSequenceNumber": "3",
                "endSequenceNumber": "5",
                "streamArn": stream
            }
        })
        .to_string()
    };
    std::fs::write(&file, format!("{}\n{}\n", record(ours), record(theirs))).unwrap();
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let toml = stream_config(
        "http://127.0.0.1:1",
        dir.path(),
        ours,
        &function.url(),
        RawMapping {
            uuid: Some(MAPPING_ID.into()),
            starting_position: Some(RawStartingPosition::TrimHorizon),
            ..RawMapping::default()
        },
    );
    let src = format!("file://{}", file.display());
    let mut replay = Esmd::replay(&toml, &["--mapping", MAPPING_ID, "--failures", &src]);

    expect_exit(&mut replay, 64).await;
    let stderr = replay.stderr();
    assert!(
        stderr.contains(&format!(
            "line 2: the failure record is of stream {theirs}, but mapping {MAPPING_ID} reads {ours}"
        )),
        "{stderr}"
    );
    assert!(function.invocations().is_empty(), "nothing invoked");
}

/// Refused failure records in a queue are handed back to it at once, not deleted.
#[tokio::test]
async fn failure_records_of_another_stream_in_a_queue_are_left_in_it() {
    let moto = Moto::start().await;
    let failures = moto.create_queue(&random_name("failures"), &[]).await;
    let theirs = "arn:aws:kinesis:us-east-1:123456789012:stream/theirs";
    let record = serde_json::json!({
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000000",
            "startSequenceNumber": "3",
            "endSequenceNumber": "5",
            "streamArn": theirs
        }
    });
    moto.send(&failures, &record.to_string()).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let toml = stream_config(
        &moto.endpoint,
        state.path(),
        "arn:aws:kinesis:us-east-1:123456789012:stream/ours",
        &function.url(),
        RawMapping {
            uuid: Some(MAPPING_ID.into()),
            starting_position: Some(RawStartingPosition::TrimHorizon),
            ..RawMapping::default()
        },
    );
    let mut replay = Esmd::replay(
        &toml,
        &["--mapping", MAPPING_ID, "--failures", &failures.arn],
    );

    expect_exit(&mut replay, 64).await;
    assert!(replay.stderr().contains(theirs), "{}", replay.stderr());
    assert!(function.invocations().is_empty(), "nothing invoked");
    assert_eq!(
        moto.queue_depth(&failures).await,
        (1, 0),
        "visible again at once"
    );
}

// ---------------------------------------------------------------------------------------
// dead-letter queue

/// A queue whose redrive policy sends to a new DLQ holding `bodies`; an SQS mapping of the
/// queue (batch size 2) into a function that fails on [`POISON`] until fixed.
struct DeadLetters {
    moto: Moto,
    queue: common::Queue,
    dlq: common::Queue,
    toml: String,
    function: FunctionServer,
}

impl DeadLetters {
    async fn start(bodies: &[&str], fixed: bool) -> DeadLetters {
        let moto = Moto::start().await;
        let dlq = moto.create_queue(&random_name("dlq"), &[]).await;
        let policy = serde_json::json!({"deadLetterTargetArn": dlq.arn, "maxReceiveCount": "1"});
        let queue = moto
            .create_queue(
                &random_name("orders"),
                &[("RedrivePolicy", &policy.to_string())],
            )
            .await;
        moto.send_batch(&dlq, bodies).await;
        let function = poison_function(Arc::new(AtomicBool::new(fixed))).await;
        let mut config = aws_config(&moto.endpoint);
        config.functions.insert(
            "f".into(),
            RawFunction {
                max_concurrency: Some(2),
                ..url_function(&function.url())
            },
        );
        config.mappings.push(mapping(
            "f",
            &queue.arn,
            RawMapping {
                uuid: Some(MAPPING_ID.into()),
                batch_size: Some(2),
                ..RawMapping::default()
            },
        ));
        DeadLetters {
            toml: config.to_toml(),
            moto,
            queue,
            dlq,
            function,
        }
    }

    fn replay(&self, src: &str) -> Esmd {
        Esmd::replay(&self.toml, &["--mapping", MAPPING_ID, "--failures", src])
    }
}

#[tokio::test]
async fn a_dead_letter_queue_redriven_into_a_fixed_function_is_left_empty() {
    let bodies = ["a", "b", "c", "d", "e"];
    let setup = DeadLetters::start(&bodies, true).await;

    let mut replay = setup.replay(&setup.dlq.arn);
    expect_exit(&mut replay, 0).await;
    assert_eq!(
        setup.moto.queue_depth(&setup.dlq).await,
        (0, 0),
        "every message deleted"
    );
    let stderr = replay.stderr();
    let progress = stderr
        .lines()
        .rfind(|line| line.contains("replay progress"))
        .unwrap_or_default();
    assert!(
        progress.contains("done=5"),
        "the progress counts the DLQ's messages: {stderr}"
    );
    let invocations = setup.function.invocations();
    let mut seen = payloads(&invocations);
    seen.sort();
    assert_eq!(seen, bodies, "each message once");
    for invocation in &invocations {
        let records = invocation.records();
        assert!(records.len() <= 2, "the mapping's batch size");
        for record in records {
            assert_eq!(record["eventSourceARN"], setup.dlq.arn.as_str());
            assert_eq!(record["eventSource"], "aws:sqs");
        }
    }
    assert_eq!(setup.moto.queue_depth(&setup.queue).await, (0, 0));
}

/// The poison fails again: it is delivered once, not again and again, and stays in the
/// DLQ, visible again at once; the rest is deleted.
#[tokio::test]
async fn a_message_the_function_fails_again_stays_in_the_dead_letter_queue() {
    let setup = DeadLetters::start(&["1", "2", POISON, "7"], false).await;

    let mut replay = setup.replay(&setup.dlq.arn);
    expect_exit(&mut replay, 0).await;
    let seen = payloads(&setup.function.invocations());
    assert_eq!(
        seen.iter().filter(|body| *body == POISON).count(),
        1,
        "the poison is delivered once: {seen:?}"
    );
    for body in ["1", "2", "7"] {
        assert!(seen.iter().any(|seen| seen == body), "{body} in {seen:?}");
    }
    let left = wait_until("the poison visible in the DLQ", LONG, || async {
        let left = setup
            .moto
            .receive_all(&setup.dlq, Duration::from_secs(5))
            .await;
        (!left.is_empty()).then_some(left)
    })
    .await;
    let left: Vec<&str> = left.iter().filter_map(|m| m.body()).collect();
    // a batch with the poison fails whole: its other message stays too
    assert!(left.contains(&POISON), "{left:?}");
    assert!(left.len() <= 2, "only the poison's batch stays: {left:?}");
}

#[tokio::test]
async fn a_dry_run_prints_the_dead_letter_batches_and_leaves_the_queue_as_it_was() {
    let setup = DeadLetters::start(&["a", "b", "c", "d", "e"], true).await;

    let mut replay = Esmd::replay(
        &setup.toml,
        &[
            "--mapping",
            MAPPING_ID,
            "--failures",
            &setup.dlq.arn,
            "--dry-run",
        ],
    );
    expect_exit(&mut replay, 0).await;
    let batches: Vec<Value> = replay
        .stdout()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let sizes: Vec<u64> = batches
        .iter()
        .map(|batch| batch["records"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sizes,
        [2, 2, 1],
        "batches of the mapping's size: {batches:?}"
    );
    assert!(
        batches
            .iter()
            .all(|batch| batch["queue"] == setup.dlq.arn.as_str())
    );
    assert!(setup.function.invocations().is_empty(), "nothing invoked");
    assert_eq!(
        setup.moto.queue_depth(&setup.dlq).await,
        (5, 0),
        "visible again"
    );
}

#[tokio::test]
async fn a_queue_that_is_not_the_mappings_dead_letter_queue_is_refused() {
    let setup = DeadLetters::start(&["a"], true).await;
    let other = setup.moto.create_queue(&random_name("other"), &[]).await;
    setup.moto.send(&other, "b").await;

    let mut replay = setup.replay(&other.arn);
    expect_exit(&mut replay, 64).await;
    let stderr = replay.stderr();
    assert!(
        stderr.contains(&format!(
            "{} is not the dead-letter queue of {}: its redrive policy sends to {}",
            other.arn, setup.queue.arn, setup.dlq.arn
        )),
        "{stderr}"
    );
    assert!(setup.function.invocations().is_empty());
    assert_eq!(setup.moto.queue_depth(&other).await, (1, 0), "untouched");
}

//! Stream failure handling end to end against moto: the partial batch response rules,
//! bisect and a target's 413, with a file destination, each without a retry pause. What
//! takes time to show (retry spacing and counts, partial-failure retries, throttle backoff,
//! record age) and records over 6 MiB (moto refuses Kinesis records over 1 MiB) are tested
//! on the engine with paused time, in src/source/stream/tests.rs.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::streams::{
    create_stream, create_table_with_stream, put_item, put_records, stream_config,
};
use common::{Esmd, FunctionServer, Moto, Reply, random_name, wait_until};
use esmd::config::raw::{RawDestinationConfig, RawMapping, RawOnFailure, RawStartingPosition};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(180);

/// Answers that count as success (§6.3) and as whole-batch failure (§6.4, §6.5).
const SUCCESS: [&str; 7] = [
    "",
    r#""""#,
    "[]",
    "null",
    "{}",
    r#"{"batchItemFailures":[]}"#,
    r#"{"batchItemFailures":null}"#,
];
const FAILURE: [&str; 7] = [
    r#"{"batchItemFailures":[{"itemIdentifier":123}]}"#,
    r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
    r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
    r#"{"batchItemFailures":[{"foo":123}]}"#,
    r#"{"batchItemFailures":[{"foo":null}]}"#,
    r#"{"batchItemFailures":[{"itemIdentifier":"999999999999"}]}"#,
    "{not json",
];

/// The common stream config, reading from the trim horizon; `keys` sets more mapping keys.
fn config(endpoint: &str, state: &Path, source_arn: &str, url: &str, keys: RawMapping) -> String {
    let keys = RawMapping {
        starting_position: Some(RawStartingPosition::TrimHorizon),
        ..keys
    };
    stream_config(endpoint, state, source_arn, url, keys)
}

/// Discarded records go to the file at `path`, one per line.
fn discard_to(path: &Path) -> Option<RawDestinationConfig> {
    Some(RawDestinationConfig {
        on_failure: Some(RawOnFailure {
            destination: format!("file://{}", path.display()),
        }),
    })
}

/// The index a test record carries: Kinesis data `n`, or DynamoDB attribute `n`.
fn index(record: &Value) -> usize {
    if let Some(data) = record["kinesis"]["data"].as_str() {
        let text = String::from_utf8(BASE64.decode(data).unwrap()).unwrap();
        return text.trim_end().parse().unwrap();
    }
    record["dynamodb"]["NewImage"]["n"]["N"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn sequence(record: &Value) -> String {
    record["kinesis"]["sequenceNumber"]
        .as_str()
        .or(record["dynamodb"]["SequenceNumber"].as_str())
        .unwrap()
        .to_string()
}

fn destination_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} failure records"), LONG, || {
        let lines = destination_lines(path);
        async move { (lines.len() >= n).then_some(lines) }
    })
    .await
}

/// A one-shard source holding records 0..n: a Kinesis stream or a DynamoDB table.
enum Source {
    Kinesis,
    DynamoDb,
}

impl Source {
    /// Creates the source with `count` records and returns its ARN for the mapping.
    async fn create(&self, moto: &Moto, count: usize) -> String {
        match self {
            Source::Kinesis => {
                let kinesis = moto.kinesis();
                let stream = create_stream(&kinesis, &random_name("fail"), 1).await;
                let records: Vec<(String, Vec<u8>)> = (0..count)
                    .map(|i| (format!("k{}", i % 3), i.to_string().into_bytes()))
                    .collect();
                put_records(&kinesis, &stream, &records).await;
                stream.arn
            }
            Source::DynamoDb => {
                let ddb = moto.dynamodb();
                let table = create_table_with_stream(&ddb, &random_name("fail"), "NEW_IMAGE").await;
                for i in 0..count {
                    let n = AttributeValue::N(i.to_string());
                    put_item(&ddb, &table, "p", &format!("{i:04}"), &[("n", n)]).await;
                }
                table.stream_arn
            }
        }
    }
}

/// Each record is its own batch and gets one response of the tables above: success
/// responses settle it, failure responses discard it (no retries) with `functionError`
/// null and `approximateInvokeCount` 1.
async fn response_rules(source: Source) {
    let moto = Moto::start().await;
    let cases: Vec<&str> = SUCCESS.iter().chain(FAILURE.iter()).copied().collect();
    let arn = source.create(&moto, cases.len()).await;
    let answers = cases.clone();
    let function = FunctionServer::start(move |event| {
        let i = index(&event["Records"][0]);
        Reply::ok(answers[i])
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let destination = state.path().join("failures.jsonl");
    let _esmd = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &arn,
        &function.url(),
        RawMapping {
            batch_size: Some(1),
            maximum_retry_attempts: Some(0),
            function_response_types: vec!["ReportBatchItemFailures".into()],
            destination_config: discard_to(&destination),
            ..RawMapping::default()
        },
    ));
    let lines = wait_lines(&destination, FAILURE.len()).await;
    let total = cases.len();
    wait_until("every record invoked", LONG, || {
        let n = function.records().len();
        async move { (n >= total).then_some(()) }
    })
    .await;
    let records = function.records();
    assert_eq!(records.len(), cases.len(), "each record invoked once");
    let by_sequence: HashMap<String, usize> =
        records.iter().map(|r| (sequence(r), index(r))).collect();
    let mut discarded: Vec<usize> = lines
        .iter()
        .map(|line| {
            assert_eq!(
                line["requestContext"]["condition"],
                "RetryAttemptsExhausted"
            );
            assert_eq!(line["requestContext"]["approximateInvokeCount"], 1);
            assert_eq!(line["responseContext"]["functionError"], Value::Null);
            assert_eq!(line["responseContext"]["statusCode"], 200);
            let info = line
                .get("KinesisBatchInfo")
                .or(line.get("DDBStreamBatchInfo"))
                .unwrap();
            assert_eq!(info["batchSize"], 1);
            assert_eq!(info["startSequenceNumber"], info["endSequenceNumber"]);
            by_sequence[info["startSequenceNumber"].as_str().unwrap()]
        })
        .collect();
    discarded.sort();
    let expected: Vec<usize> = (SUCCESS.len()..cases.len()).collect();
    assert_eq!(
        discarded, expected,
        "exactly the failure responses are discarded"
    );
}

#[tokio::test]
async fn kinesis_success_and_failure_responses_follow_aws() {
    response_rules(Source::Kinesis).await;
}

#[tokio::test]
async fn dynamodb_success_and_failure_responses_follow_aws() {
    response_rules(Source::DynamoDb).await;
}

#[tokio::test]
async fn bisect_isolates_one_poison_record_among_100() {
    let moto = Moto::start().await;
    let arn = Source::Kinesis.create(&moto, 100).await;
    let function = FunctionServer::start(|event| {
        let poisoned = event["Records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| index(r) == 37);
        if poisoned {
            Reply::function_error(r#"{"errorType":"Error","errorMessage":"poison"}"#)
        } else {
            Reply::ok("null")
        }
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let destination = state.path().join("failures.jsonl");
    let _esmd = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &arn,
        &function.url(),
        RawMapping {
            batch_size: Some(100),
            bisect_batch_on_function_error: Some(true),
            maximum_retry_attempts: Some(0),
            destination_config: discard_to(&destination),
            ..RawMapping::default()
        },
    ));
    let lines = wait_lines(&destination, 1).await;
    // every other record was in exactly one successful invocation
    let successes = || {
        let mut successes: HashMap<usize, usize> = HashMap::new();
        for invocation in function.invocations() {
            let records = invocation.records();
            if records.iter().all(|r| index(r) != 37) {
                for r in &records {
                    *successes.entry(index(r)).or_default() += 1;
                }
            }
        }
        successes
    };
    wait_until("the 99 good records", LONG, || {
        let n = successes().len();
        async move { (n == 99).then_some(()) }
    })
    .await;
    let successes = successes();
    assert!(successes.values().all(|n| *n == 1));
    assert_eq!(lines.len(), 1);
    let info = &lines[0]["KinesisBatchInfo"];
    assert_eq!(info["batchSize"], 1, "bisected down to the poison record");
    assert_eq!(lines[0]["responseContext"]["functionError"], "Unhandled");
    let invocations_with_poison = function
        .invocations()
        .iter()
        .filter(|i| i.records().iter().any(|r| index(r) == 37))
        .count();
    assert_eq!(
        lines[0]["requestContext"]["approximateInvokeCount"], invocations_with_poison,
        "every invocation that held the record"
    );
}

/// A target that takes at most 4,000 bytes answers 413 to bigger events: the batch is split
/// in two, left half first, until the halves fit, using no retry attempt (the limit is 0,
/// bisect is off), so every record arrives once and in order; a record too large on its own
/// is discarded with `MaximumPayloadSizeExceeded`.
#[tokio::test]
async fn a_413_splits_the_batch_and_a_record_too_large_alone_is_discarded() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("too-large"), 1).await;
    let records: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| {
            let padding = if i == 6 { 5000 } else { 600 };
            let data = format!("{i}{}", " ".repeat(padding));
            (format!("k{}", i % 3), data.into_bytes())
        })
        .collect();
    put_records(&kinesis, &stream, &records).await;
    let function = FunctionServer::start_with_body_limit(4000, |_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let destination = state.path().join("failures.jsonl");
    let _esmd = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream.arn,
        &function.url(),
        RawMapping {
            batch_size: Some(10),
            maximum_retry_attempts: Some(0),
            destination_config: discard_to(&destination),
            ..RawMapping::default()
        },
    ));
    let lines = wait_lines(&destination, 1).await;
    wait_until("the nine other records", LONG, || {
        let n = function.records().len();
        async move { (n >= 9).then_some(()) }
    })
    .await;
    let delivered: Vec<usize> = function.records().iter().map(index).collect();
    assert_eq!(
        delivered,
        vec![0, 1, 2, 3, 4, 5, 7, 8, 9],
        "once each, in order"
    );
    let refused = function.refused();
    assert!(
        refused.iter().any(|i| i.records().len() > 1),
        "a batch was split"
    );
    let holding_6: Vec<Value> = refused
        .iter()
        .flat_map(|i| i.records())
        .filter(|r| index(r) == 6)
        .collect();
    assert_eq!(destination_lines(&destination).len(), 1);
    let line = &lines[0];
    assert_eq!(
        line["requestContext"]["condition"],
        "MaximumPayloadSizeExceeded"
    );
    assert_eq!(
        line["requestContext"]["approximateInvokeCount"],
        holding_6.len(),
        "every invocation that held the record"
    );
    assert!(line["requestContext"]["payloadSize"].as_u64().unwrap() > 4000);
    assert_eq!(line.get("responseContext"), Some(&Value::Null));
    let info = &line["KinesisBatchInfo"];
    assert_eq!(info["batchSize"], 1);
    assert_eq!(
        info["startSequenceNumber"],
        sequence(&holding_6[0]).as_str()
    );
}

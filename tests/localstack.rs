//! The SQS and Kinesis paths end to end against LocalStack in host mode (account
//! 000000000000; one server for the binary, see `common::localstack`): the real esmd
//! binary, pointed at LocalStack by `[aws] endpoint_url`, with a function served by the
//! test. Where LocalStack cannot run (no Python ≥ 3.13), each test reports SKIPPED and why.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::localstack::localstack;
use common::streams::{Stream, create_stream, put_records, stream_config};
use common::{
    Emulator, Esmd, FifoBatch, FifoOutcome, FunctionServer, Queue, Reply, aws_config, mapping,
    message_body, random_name, receive_count, replay_fifo_batches, url_function, wait_until,
};
use esmd::config::raw::{RawDestinationConfig, RawMapping, RawOnFailure, RawStartingPosition};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);
const ACCOUNT: &str = "000000000000";

/// A config with the `url` function `f` and one SQS mapping of `queue` reporting batch item
/// failures, `batch_size` messages a batch.
fn sqs_config(aws: &Emulator, function_url: &str, queue: &Queue, batch_size: i64) -> String {
    let mut config = aws_config(&aws.endpoint);
    config
        .functions
        .insert("f".into(), url_function(function_url));
    let keys = RawMapping {
        batch_size: Some(batch_size),
        function_response_types: vec!["ReportBatchItemFailures".into()],
        ..RawMapping::default()
    };
    config.mappings.push(mapping("f", &queue.arn, keys));
    config.to_toml()
}

/// `{"batchItemFailures": [...]}` naming the records for which `fails` is true.
fn batch_item_failures(event: &Value, mut fails: impl FnMut(&Value) -> bool) -> Reply {
    let failures: Vec<Value> = event["Records"]
        .as_array()
        .expect("Records")
        .iter()
        .filter(|record| fails(record))
        .map(|record| json!({"itemIdentifier": record["messageId"]}))
        .collect();
    Reply::json(&json!({"batchItemFailures": failures}))
}

#[tokio::test]
async fn sqs_partial_failures_are_retried_and_a_poison_message_goes_to_the_dlq() {
    let Some(aws) = localstack().await else {
        return;
    };
    let (queue, dlq) = aws.queue_with_dlq(2, 2).await;
    assert!(queue.arn.contains(ACCOUNT), "{}", queue.arn);
    let bodies: Vec<String> = (0..30)
        .map(|i| match i {
            7 => "poison".to_string(),
            i if i % 5 == 1 => format!("retry-{i}"),
            i => format!("ok-{i}"),
        })
        .collect();
    aws.send_batch(&queue, &bodies).await;
    // "retry-" messages fail on their first delivery only, "poison" on every one.
    let function = FunctionServer::start(|event| {
        batch_item_failures(event, |record| {
            let body = message_body(record);
            body == "poison" || (body.starts_with("retry-") && receive_count(record) == 1)
        })
    })
    .await;
    let _esmd = Esmd::start(&sqs_config(&aws, &function.url(), &queue, 10));

    wait_until("the poison message in the DLQ", LONG, || async {
        (aws.queue_depth(&dlq).await.0 == 1).then_some(())
    })
    .await;
    aws.wait_empty(&queue, SHORT).await;
    let deliveries = function.receive_counts();
    assert_eq!(deliveries.len(), 30, "every message delivered");
    for (body, counts) in &deliveries {
        let expected = if body.starts_with("ok-") {
            vec![1]
        } else {
            vec![1, 2]
        };
        assert_eq!(counts, &expected, "{body}");
    }
    let record = &function.records()[0];
    assert_eq!(record["eventSourceARN"], queue.arn.as_str());
    assert_eq!(record["awsRegion"], "us-east-1");
    let redriven = aws.receive_all(&dlq, SHORT).await;
    let redriven: Vec<&str> = redriven.iter().filter_map(|m| m.body()).collect();
    assert_eq!(redriven, ["poison"]);
}

#[tokio::test]
async fn sqs_fifo_keeps_order_per_group_across_a_partial_failure() {
    let Some(aws) = localstack().await else {
        return;
    };
    let queue = aws
        .create_queue(
            &format!("{}.fifo", random_name("order")),
            &[("VisibilityTimeout", "2")],
        )
        .await;
    for i in 0..6 {
        for group in ["A", "B"] {
            aws.send_fifo(&queue, &format!("{group}-{i}"), group).await;
        }
    }
    // A-2 is reported failed on its first delivery: the rest of group A in its batch must
    // come back after it, not be deleted ahead of it.
    let batches: Arc<Mutex<Vec<FifoBatch>>> = Arc::default();
    let seen = batches.clone();
    let function = FunctionServer::start(move |event| {
        let batch: FifoBatch = event["Records"]
            .as_array()
            .expect("Records")
            .iter()
            .map(|record| {
                let body = message_body(record);
                let (group, index) = body.split_once('-').expect("GROUP-INDEX");
                (group.to_string(), index.parse().expect("an index"))
            })
            .collect();
        seen.lock().unwrap().push(batch);
        batch_item_failures(event, |record| {
            message_body(record) == "A-2" && receive_count(record) == 1
        })
    })
    .await;
    let _esmd = Esmd::start(&sqs_config(&aws, &function.url(), &queue, 4));
    aws.wait_empty(&queue, LONG).await;

    // the first delivery of A-2 settles only what came before it in group A
    let mut a2_failed = false;
    let settled = replay_fifo_batches(&batches.lock().unwrap(), |batch| {
        if !a2_failed && batch.contains(&("A".into(), 2)) {
            a2_failed = true;
            FifoOutcome::FailedAt("A".into(), 2)
        } else {
            FifoOutcome::Settled
        }
    });
    assert!(a2_failed, "A-2 was delivered and failed");
    assert_eq!(settled["A"], 6, "group A settled in order");
    assert_eq!(settled["B"], 6, "group B settled in order");
}

// ---------------------------------------------------------------------------------------
// Kinesis

/// Kinesis records for `keys` partition keys, data `key-K:INDEX`, indexes `from..from+count`.
fn kinesis_records(keys: usize, from: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (from..from + count)
        .map(|i| {
            let key = format!("key-{}", i % keys);
            (key.clone(), format!("{key}:{i}").into_bytes())
        })
        .collect()
}

/// The data of a Kinesis event record.
fn data(record: &Value) -> String {
    let bytes = BASE64
        .decode(record["kinesis"]["data"].as_str().expect("data"))
        .expect("base64 data");
    String::from_utf8(bytes).expect("utf-8 test data")
}

/// (partition key, index) of a record made by [`kinesis_records`].
fn key_and_index(record: &Value) -> (String, usize) {
    let data = data(record);
    let (key, index) = data.split_once(':').expect("key:index");
    (key.to_string(), index.parse().expect("an index"))
}

/// Per key, the indexes delivered, in delivery order.
fn indexes_per_key(records: &[Value]) -> HashMap<String, Vec<usize>> {
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for record in records {
        let (key, index) = key_and_index(record);
        per_key.entry(key).or_default().push(index);
    }
    per_key
}

/// A config with the `url` function `f` and one mapping of `stream` from TRIM_HORIZON,
/// `batch_size` records a batch, its state in `state`; `keys` sets more mapping keys.
fn kinesis_config(
    aws: &Emulator,
    state: &tempfile::TempDir,
    stream: &Stream,
    function: &FunctionServer,
    batch_size: i64,
    keys: RawMapping,
) -> String {
    let keys = RawMapping {
        starting_position: Some(RawStartingPosition::TrimHorizon),
        batch_size: Some(batch_size),
        ..keys
    };
    stream_config(
        &aws.endpoint,
        state.path(),
        &stream.arn,
        &function.url(),
        keys,
    )
}

async fn wait_records(function: &FunctionServer, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} records"), LONG, || {
        let records = function.records();
        async move { (records.len() >= n).then_some(records) }
    })
    .await
}

#[tokio::test]
async fn kinesis_keeps_order_per_key_and_resumes_from_its_checkpoint_after_sigterm() {
    let Some(aws) = localstack().await else {
        return;
    };
    let kinesis = aws.kinesis();
    let stream = create_stream(&kinesis, &random_name("order"), 2).await;
    assert!(stream.arn.contains(ACCOUNT), "{}", stream.arn);
    let put = put_records(&kinesis, &stream, &kinesis_records(6, 0, 300)).await;
    let shards: HashSet<&String> = put.iter().map(|(shard, _)| shard).collect();
    assert_eq!(shards.len(), 2, "the records spread over both shards");
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let config = kinesis_config(&aws, &state, &stream, &function, 50, RawMapping::default());
    let mut first = Esmd::start(&config);
    let delivered = wait_records(&function, 300).await;
    for (key, indexes) in indexes_per_key(&delivered) {
        assert!(indexes.is_sorted(), "{key} in order: {indexes:?}");
    }
    let record = &delivered[0];
    assert_eq!(record["eventSourceARN"], stream.arn.as_str());
    let sequence = record["kinesis"]["sequenceNumber"].as_str().unwrap();
    assert!(
        sequence.len() > 20,
        "LocalStack's long sequence numbers: {sequence}"
    );
    first.stop().await;

    put_records(&kinesis, &stream, &kinesis_records(6, 300, 100)).await;
    let _second = Esmd::start(&config);
    // a record delivered twice would take the place of one of the new ones here
    let delivered = wait_records(&function, 400).await;
    let per_key = indexes_per_key(&delivered);
    let mut all: Vec<usize> = per_key.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..400).collect::<Vec<_>>(), "every record once");
    for (key, indexes) in per_key {
        assert!(indexes.is_sorted(), "{key} in order: {indexes:?}");
    }
}

#[tokio::test]
async fn kinesis_poison_record_goes_to_the_on_failure_queue_and_the_shard_moves_on() {
    let Some(aws) = localstack().await else {
        return;
    };
    let destination = aws.create_queue(&random_name("on-failure"), &[]).await;
    let kinesis = aws.kinesis();
    let stream = create_stream(&kinesis, &random_name("poison"), 1).await;
    let payloads = ["ok-0", "poison", "ok-2", "ok-3"];
    let records: Vec<(String, Vec<u8>)> = payloads
        .iter()
        .map(|p| ("key".to_string(), p.as_bytes().to_vec()))
        .collect();
    let put = put_records(&kinesis, &stream, &records).await;
    let function = FunctionServer::start(|event| {
        let records = event["Records"].as_array().cloned().unwrap_or_default();
        if records.iter().any(|r| data(r) == "poison") {
            Reply::function_error(r#"{"errorType":"Error","errorMessage":"poison"}"#)
        } else {
            Reply::ok("null")
        }
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let _esmd = Esmd::start(&kinesis_config(
        &aws,
        &state,
        &stream,
        &function,
        1,
        RawMapping {
            maximum_retry_attempts: Some(0),
            destination_config: Some(RawDestinationConfig {
                on_failure: Some(RawOnFailure {
                    destination: destination.arn.clone(),
                }),
            }),
            ..RawMapping::default()
        },
    ));

    let delivered = wait_records(&function, payloads.len()).await;
    let invoked: Vec<String> = delivered.iter().map(data).collect();
    assert_eq!(invoked, payloads, "each record once, in order");
    let messages = wait_until("the failure record", LONG, || async {
        let messages = aws.receive_all(&destination, SHORT).await;
        (!messages.is_empty()).then_some(messages)
    })
    .await;
    assert_eq!(messages.len(), 1, "one failure record: {messages:?}");
    let failure: Value = serde_json::from_str(messages[0].body().expect("a body")).unwrap();
    let info = &failure["KinesisBatchInfo"];
    assert_eq!(info["shardId"], put[1].0.as_str(), "{failure}");
    assert_eq!(info["startSequenceNumber"], put[1].1.as_str(), "{failure}");
    assert_eq!(info["endSequenceNumber"], put[1].1.as_str(), "{failure}");
    assert_eq!(info["batchSize"], 1, "{failure}");
    assert_eq!(info["streamArn"], stream.arn.as_str(), "{failure}");
    assert_eq!(
        failure["requestContext"]["condition"], "RetryAttemptsExhausted",
        "{failure}"
    );
    assert_eq!(
        failure["requestContext"]["functionArn"],
        format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:f"),
        "{failure}"
    );
}

//! The SQS event source end to end: the real esmd binary against moto, with a function
//! served by the test (`url` target) or run as a subprocess (`command` target).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    Esmd, FifoBatch, FifoOutcome, FunctionServer, Moto, Queue, Reply, aws_config, mapping,
    message_body, random_name, receive_count, replay_fifo_batches, url_function, wait_until,
};
use esmd::config::raw::{RawFunction, RawMapping};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);

/// A config with one `url` function `f` and one SQS mapping of `queue`; `keys` sets more
/// mapping keys.
fn url_config(moto: &Moto, function_url: &str, queue: &Queue, keys: RawMapping) -> String {
    let mut config = aws_config(&moto.endpoint);
    let function = RawFunction {
        timeout_secs: 30,
        ..url_function(function_url)
    };
    config.functions.insert("f".into(), function);
    config.mappings.push(mapping("f", &queue.arn, keys));
    config.to_toml()
}

/// A mapping of `size` records per batch.
fn batch_size(size: i64) -> RawMapping {
    RawMapping {
        batch_size: Some(size),
        ..RawMapping::default()
    }
}

#[tokio::test]
async fn a_backlog_of_1000_arrives_in_batches_of_at_most_100_and_nothing_is_lost() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("backlog"), &[]).await;
    let bodies: Vec<String> = (0..1000).map(|i| format!("message-{i}")).collect();
    moto.send_batch(&queue, &bodies).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let _esmd = Esmd::start(&url_config(
        &moto,
        &function.url(),
        &queue,
        RawMapping {
            batch_size: Some(100),
            maximum_batching_window_in_seconds: 1,
            ..RawMapping::default()
        },
    ));

    // moto's ReceiveMessage scans the whole queue: about 2 s a call at this depth.
    wait_until("1000 records", Duration::from_secs(600), || {
        let n = function.records().len();
        async move { (n >= 1000).then_some(()) }
    })
    .await;
    moto.wait_empty(&queue, SHORT).await;

    let invocations = function.invocations();
    for invocation in &invocations {
        let records = invocation.records();
        assert!(
            !records.is_empty() && records.len() <= 100,
            "batch of {}",
            records.len()
        );
        assert!(invocation.event.to_string().len() <= 6 * 1024 * 1024);
        assert_eq!(
            invocation.header("x-amz-invocation-type"),
            Some("RequestResponse")
        );
    }
    let delivered: Vec<String> = function.records().iter().map(message_body).collect();
    let distinct: HashSet<&String> = delivered.iter().collect();
    assert_eq!(distinct.len(), 1000, "every message delivered");
    assert_eq!(delivered.len(), 1000, "no message delivered twice");
    assert!(
        invocations.iter().any(|i| i.records().len() > 10),
        "the window gathers more than one receive into a batch"
    );
}

#[tokio::test]
async fn records_have_the_exact_aws_shape() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("shape"), &[]).await;
    let plain_id = moto.send(&queue, "{\"plain\": true}").await;
    let with_attributes = moto
        .sqs()
        .send_message()
        .queue_url(&queue.url)
        .message_body("with attributes")
        .message_attributes(
            "Title",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value("The Whistler")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "WeeksOn",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("Number")
                .string_value("6")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let function = FunctionServer::start(|_| Reply::ok("")).await;
    let _esmd = Esmd::start(&url_config(
        &moto,
        &function.url(),
        &queue,
        RawMapping::default(),
    ));
    let records = wait_until("2 records", SHORT, || {
        let records = function.records();
        async move { (records.len() >= 2).then_some(records) }
    })
    .await;
    let by_id: HashMap<&str, &Value> = records
        .iter()
        .map(|r| (r["messageId"].as_str().unwrap(), r))
        .collect();

    let plain = by_id[plain_id.as_str()];
    let keys: Vec<&str> = plain
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected_keys = vec![
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfMessageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    ];
    let mut sorted_keys = keys.clone();
    sorted_keys.sort();
    expected_keys.sort();
    assert_eq!(sorted_keys, expected_keys);
    assert_eq!(
        plain["body"], "{\"plain\": true}",
        "the body is never parsed"
    );
    assert_eq!(plain["messageAttributes"], json!({}));
    assert_eq!(plain["md5OfMessageAttributes"], Value::Null);
    assert_eq!(plain["eventSource"], "aws:sqs");
    assert_eq!(plain["eventSourceARN"], queue.arn.as_str());
    assert_eq!(plain["awsRegion"], "us-east-1");
    assert_eq!(plain["md5OfBody"].as_str().unwrap().len(), 32);
    let attributes = plain["attributes"].as_object().unwrap();
    for key in [
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    ] {
        assert!(attributes[key].is_string(), "attributes.{key} is a string");
    }
    assert!(
        attributes["SentTimestamp"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 1_600_000_000_000
    );

    let rich = by_id[with_attributes.message_id().unwrap()];
    assert_eq!(
        rich["messageAttributes"],
        json!({
            "Title": {"stringValue": "The Whistler", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
            "WeeksOn": {"stringValue": "6", "stringListValues": [], "binaryListValues": [], "dataType": "Number"}
        })
    );
    assert_eq!(
        rich["md5OfMessageAttributes"].as_str(),
        with_attributes.md5_of_message_attributes()
    );
}

#[tokio::test]
async fn partial_failures_delete_exactly_the_successful_messages() {
    let moto = Moto::start().await;
    let (queue, dlq) = moto.queue_with_dlq(2, 5).await;
    let bodies: Vec<String> = (0..20)
        .map(|i| {
            if i % 4 == 1 {
                format!("fail-{i}")
            } else {
                format!("ok-{i}")
            }
        })
        .collect();
    moto.send_batch(&queue, &bodies).await;
    // Reports every "fail-" message on its first delivery only.
    let function = FunctionServer::start(|event| {
        let failures: Vec<Value> = event["Records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| message_body(r).starts_with("fail-") && receive_count(r) == 1)
            .map(|r| json!({"itemIdentifier": r["messageId"]}))
            .collect();
        Reply::json(&json!({"batchItemFailures": failures}))
    })
    .await;
    let _esmd = Esmd::start(&url_config(
        &moto,
        &function.url(),
        &queue,
        RawMapping {
            function_response_types: vec!["ReportBatchItemFailures".into()],
            ..RawMapping::default()
        },
    ));

    wait_until("every message settled", LONG, || {
        let n = function.records().len();
        async move { (n >= 25).then_some(()) }
    })
    .await;
    moto.wait_empty(&queue, SHORT).await;
    let deliveries = function.receive_counts();
    assert_eq!(deliveries.len(), 20);
    for (body, counts) in &deliveries {
        if body.starts_with("fail-") {
            assert_eq!(counts, &vec![1, 2], "{body} is retried once");
        } else {
            assert_eq!(
                counts,
                &vec![1],
                "{body} is deleted after its first delivery"
            );
        }
    }
    assert_eq!(moto.queue_depth(&dlq).await, (0, 0));
}

/// Sends 3 messages, answers every invocation with `reply`, and checks that nothing is
/// deleted: each message comes back after the visibility timeout, then goes to the DLQ.
async fn whole_batch_failure_goes_to_the_dlq(reply: Reply, keys: RawMapping) {
    let moto = Moto::start().await;
    let (queue, dlq) = moto.queue_with_dlq(1, 2).await;
    moto.send_batch(&queue, &["a", "b", "c"]).await;
    let function = FunctionServer::start(move |_| reply.clone()).await;
    let _esmd = Esmd::start(&url_config(&moto, &function.url(), &queue, keys));
    wait_until("3 messages in the DLQ", LONG, || async {
        (moto.queue_depth(&dlq).await.0 == 3).then_some(())
    })
    .await;
    let deliveries = function.receive_counts();
    for (body, counts) in &deliveries {
        assert_eq!(
            counts,
            &vec![1, 2],
            "{body}: delivered once per receive, then redriven"
        );
    }
    assert_eq!(deliveries.len(), 3);
    assert_eq!(moto.queue_depth(&queue).await, (0, 0));
}

#[tokio::test]
async fn a_function_error_deletes_nothing_and_the_redrive_policy_applies() {
    whole_batch_failure_goes_to_the_dlq(
        Reply::function_error(r#"{"errorMessage":"boom"}"#),
        RawMapping::default(),
    )
    .await;
}

#[tokio::test]
async fn an_rie_error_body_is_a_function_error() {
    whole_batch_failure_goes_to_the_dlq(Reply::rie_error(), RawMapping::default()).await;
}

#[tokio::test]
async fn an_invalid_batch_response_fails_the_whole_batch() {
    whole_batch_failure_goes_to_the_dlq(
        Reply::json(&json!({"batchItemFailures": [{"itemIdentifier": "no-such-message"}]})),
        RawMapping {
            function_response_types: vec!["ReportBatchItemFailures".into()],
            ..RawMapping::default()
        },
    )
    .await;
}

/// What the FIFO test's function saw: per invocation, the (group, index) of each record,
/// and which planned failures it has answered.
#[derive(Default)]
struct FifoLog {
    batches: Vec<FifoBatch>,
    failed_once: HashSet<String>,
}

#[tokio::test]
async fn fifo_order_per_group_holds_across_failures() {
    let moto = Moto::start().await;
    let queue = moto
        .create_queue(
            &format!("{}.fifo", random_name("order")),
            &[("VisibilityTimeout", "2")],
        )
        .await;
    for group in ["A", "B", "C"] {
        for i in 0..10 {
            moto.send_fifo(&queue, &format!("{group}-{i}"), group).await;
        }
    }
    // A-5 is reported failed on its first delivery (A-6 and A-7 share its batch, and must
    // not be deleted ahead of it); the first batch holding C-6 fails whole.
    let log = Arc::new(Mutex::new(FifoLog::default()));
    let seen = log.clone();
    let function = FunctionServer::start(move |event| {
        let records = event["Records"].as_array().unwrap();
        let batch: Vec<(String, usize)> = records
            .iter()
            .map(|r| {
                let b = message_body(r);
                let (group, index) = b.split_once('-').unwrap();
                (group.to_string(), index.parse().unwrap())
            })
            .collect();
        let mut log = seen.lock().unwrap();
        log.batches.push(batch.clone());
        if batch.contains(&("C".into(), 6)) && log.failed_once.insert("C-6".into()) {
            return Reply::rie_error();
        }
        let failures: Vec<Value> = records
            .iter()
            .filter(|r| message_body(r) == "A-5")
            .filter(|_| log.failed_once.insert("A-5".into()))
            .map(|r| json!({"itemIdentifier": r["messageId"]}))
            .collect();
        Reply::json(&json!({"batchItemFailures": failures}))
    })
    .await;
    let config = format!(
        r#"
[aws]
endpoint_url = "{}"
[functions.f]
url = "{}"
max_concurrency = 3
[[mappings]]
function_name = "f"
event_source_arn = "{}"
batch_size = 4
function_response_types = ["ReportBatchItemFailures"]
scaling_config = {{ maximum_concurrency = 3 }}
"#,
        moto.endpoint,
        function.url(),
        queue.arn
    );
    let _esmd = Esmd::start(&config);
    moto.wait_empty(&queue, LONG).await;

    let log = log.lock().unwrap();
    // Replays what esmd may settle: the planned failures, in the order the function met them.
    let mut replay_failed_once: HashSet<String> = HashSet::new();
    let settled = replay_fifo_batches(&log.batches, |batch| {
        if batch.contains(&("C".into(), 6)) && replay_failed_once.insert("C-6".into()) {
            FifoOutcome::FailedWhole
        } else if batch.contains(&("A".into(), 5)) && replay_failed_once.insert("A-5".into()) {
            FifoOutcome::FailedAt("A".into(), 5)
        } else {
            FifoOutcome::Settled
        }
    });
    for group in ["A", "B", "C"] {
        assert_eq!(settled[group], 10, "group {group} fully settled in order");
    }
    assert_eq!(log.failed_once.len(), 2, "both failures happened");
}

#[tokio::test]
async fn sigterm_mid_batch_finishes_the_batch_and_loses_nothing() {
    let moto = Moto::start().await;
    let queue = moto
        .create_queue(&random_name("term"), &[("VisibilityTimeout", "60")])
        .await;
    let bodies: Vec<String> = (0..30).map(|i| format!("m-{i}")).collect();
    moto.send_batch(&queue, &bodies).await;
    let slow = FunctionServer::start(|_| Reply::ok("null").delayed(Duration::from_secs(2))).await;
    let mut esmd = Esmd::start(&url_config(&moto, &slow.url(), &queue, batch_size(10)));
    slow.wait_invocations(1, SHORT).await;
    esmd.terminate();
    let status = esmd.wait_exit(SHORT).await;
    assert_eq!(status.code(), Some(0), "clean stop:\n{}", esmd.stderr());
    let first_batch: Vec<String> = slow.records().iter().map(message_body).collect();
    assert_eq!(
        slow.invocations().len(),
        1,
        "no invocation starts after SIGTERM"
    );
    assert!(!first_batch.is_empty());
    // The in-flight batch was settled (deleted); everything else is visible at once.
    let remaining = 30 - first_batch.len();
    wait_until("the rest visible again", SHORT, || async {
        (moto.queue_depth(&queue).await == (remaining, 0)).then_some(())
    })
    .await;

    let fast = FunctionServer::start(|_| Reply::ok("null")).await;
    let _esmd = Esmd::start(&url_config(&moto, &fast.url(), &queue, batch_size(10)));
    moto.wait_empty(&queue, LONG).await;
    let second: Vec<String> = fast.records().iter().map(message_body).collect();
    let mut all: Vec<String> = first_batch.iter().chain(second.iter()).cloned().collect();
    all.sort();
    let mut expected = bodies.clone();
    expected.sort();
    assert_eq!(
        all, expected,
        "every message exactly once across the restart"
    );
}

#[tokio::test]
async fn an_invalid_config_exits_78_and_consumes_nothing() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("untouched"), &[]).await;
    moto.send(&queue, "keep me").await;
    let config = format!(
        r#"
[aws]
endpoint_url = "{}"
[functions.f]
url = "ftp://127.0.0.1/x"
[[mappings]]
function_name = "f"
event_source_arn = "{}"
batch_size = 50
"#,
        moto.endpoint, queue.arn
    );
    let mut esmd = Esmd::start(&config);
    let status = esmd.wait_exit(SHORT).await;
    assert_eq!(status.code(), Some(78));
    let log = esmd.stderr();
    assert!(log.contains("invalid config: 2 problems"), "{log}");
    assert!(log.contains("functions.f.url: \"ftp://127.0.0.1/x\": scheme \"ftp\" is not http"));
    assert!(log.contains("mappings[0].batch_size: 50 is above 10"));
    let messages = moto.receive_all(&queue, SHORT).await;
    assert_eq!(messages.len(), 1);
    let count = messages[0]
        .attributes()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
        })
        .cloned();
    assert_eq!(
        count.as_deref(),
        Some("1"),
        "esmd never received the message"
    );
}

#[tokio::test]
async fn a_target_that_is_down_is_retried_without_losing_messages() {
    let moto = Moto::start().await;
    // One receive too many would move a message to the DLQ: holding must not release it.
    let (queue, dlq) = moto.queue_with_dlq(2, 1).await;
    moto.send_batch(&queue, &["a", "b", "c", "d", "e"]).await;
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}/2015-03-31/functions/function/invocations");
    let esmd = Esmd::start(&url_config(&moto, &url, &queue, RawMapping::default()));
    wait_until("two failed attempts", SHORT, || {
        let attempts = esmd.stderr().matches("function not reached").count();
        async move { (attempts >= 2).then_some(()) }
    })
    .await;
    // Outlive the visibility timeout while the target is down.
    wait_until("3 attempts, past the visibility timeout", SHORT, || {
        let attempts = esmd.stderr().matches("function not reached").count();
        async move { (attempts >= 6).then_some(()) }
    })
    .await;
    let function = FunctionServer::start_on(port, |_| Reply::ok("null")).await;
    moto.wait_empty(&queue, LONG).await;
    let mut delivered: Vec<(String, u32)> = function
        .records()
        .iter()
        .map(|r| (message_body(r), receive_count(r)))
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        ["a", "b", "c", "d", "e"]
            .map(|b| (b.to_string(), 1))
            .to_vec()
    );
    assert_eq!(moto.queue_depth(&dlq).await, (0, 0));
}

#[tokio::test]
async fn a_throttled_function_keeps_its_batch_and_does_not_return_it() {
    let moto = Moto::start().await;
    let (queue, dlq) = moto.queue_with_dlq(1, 1).await;
    moto.send_batch(&queue, &["x", "y"]).await;
    let calls = Arc::new(Mutex::new(0));
    let counter = calls.clone();
    let function = FunctionServer::start(move |_| {
        let mut calls = counter.lock().unwrap();
        *calls += 1;
        if *calls <= 4 {
            Reply::status(429, r#"{"Reason":"ConcurrentInvocationLimitExceeded"}"#)
        } else {
            Reply::ok("null")
        }
    })
    .await;
    let _esmd = Esmd::start(&url_config(
        &moto,
        &function.url(),
        &queue,
        RawMapping::default(),
    ));
    moto.wait_empty(&queue, LONG).await;
    assert!(*calls.lock().unwrap() >= 5);
    let last = function.invocations().last().unwrap().records();
    let mut settled: Vec<(String, u32)> = last
        .iter()
        .map(|r| (message_body(r), receive_count(r)))
        .collect();
    settled.sort();
    assert_eq!(settled, vec![("x".into(), 1), ("y".into(), 1)]);
    assert_eq!(moto.queue_depth(&dlq).await, (0, 0));
}

#[tokio::test]
async fn the_command_target_runs_a_subprocess_and_non_zero_exit_is_a_function_error() {
    let moto = Moto::start().await;
    let queue = moto
        .create_queue(&random_name("cmd"), &[("VisibilityTimeout", "1")])
        .await;
    moto.send_batch(&queue, &["one", "boom", "two"]).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let handler = dir.path().join("handler.py");
    std::fs::write(
        &handler,
        r#"
import json, os, sys
event = json.load(sys.stdin)
with open(os.environ["EVENTS_FILE"], "a") as f:
    f.write(json.dumps({"function": os.environ["AWS_LAMBDA_FUNCTION_NAME"], "event": event}) + "\n")
for r in event["Records"]:
    if r["body"] == "boom" and r["attributes"]["ApproximateReceiveCount"] == "1":
        sys.exit(1)
print("null")
"#,
    )
    .unwrap();
    let config = format!(
        r#"
[aws]
endpoint_url = "{}"
[functions.handler]
command = ["python3", "{}"]
[[mappings]]
function_name = "handler"
event_source_arn = "{}"
batch_size = 1
"#,
        moto.endpoint,
        handler.display(),
        queue.arn
    );
    let _esmd = Esmd::start_with(&config, &[], &[("EVENTS_FILE", out.to_str().unwrap())]);
    moto.wait_empty(&queue, LONG).await;
    let lines = std::fs::read_to_string(&out).unwrap();
    let mut deliveries: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for line in lines.lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["function"], "handler");
        for record in entry["event"]["Records"].as_array().unwrap() {
            deliveries
                .entry(message_body(record))
                .or_default()
                .push(receive_count(record));
        }
    }
    assert_eq!(deliveries["one"], vec![1]);
    assert_eq!(deliveries["two"], vec![1]);
    assert_eq!(
        deliveries["boom"],
        vec![1, 2],
        "the failed message came back"
    );
}

/// The stream mappings' response table (aws-esm-semantics §6.3–6.4) holds for SQS too:
/// success answers delete the message, failure answers leave it for redelivery.
#[tokio::test]
async fn every_success_and_failure_response_follows_the_shared_rules() {
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
        r#"{"batchItemFailures":[{"foo":"notvalid"}]}"#,
        r#"{"batchItemFailures":[{"foo":null}]}"#,
        r#"{"batchItemFailures":[{"itemIdentifier":"not-in-the-batch"}]}"#,
        "{not json",
    ];
    let moto = Moto::start().await;
    let queue = moto
        .create_queue(&random_name("rules"), &[("VisibilityTimeout", "1")])
        .await;
    let answers: Vec<&str> = SUCCESS.iter().chain(FAILURE.iter()).copied().collect();
    let bodies: Vec<String> = (0..answers.len()).map(|i| i.to_string()).collect();
    moto.send_batch(&queue, &bodies).await;
    // First delivery: the answer under test; a redelivery: success.
    let function = FunctionServer::start(move |event| {
        let record = &event["Records"][0];
        if receive_count(record) > 1 {
            return Reply::ok("null");
        }
        Reply::ok(answers[message_body(record).parse::<usize>().unwrap()])
    })
    .await;
    let _esmd = Esmd::start(&url_config(
        &moto,
        &function.url(),
        &queue,
        RawMapping {
            batch_size: Some(1),
            function_response_types: vec!["ReportBatchItemFailures".into()],
            ..RawMapping::default()
        },
    ));
    moto.wait_empty(&queue, LONG).await;
    let mut deliveries: BTreeMap<usize, usize> = BTreeMap::new();
    for record in function.records() {
        *deliveries
            .entry(message_body(&record).parse().unwrap())
            .or_default() += 1;
    }
    for i in 0..SUCCESS.len() {
        assert_eq!(deliveries[&i], 1, "success answer {:?}", SUCCESS[i]);
    }
    for (j, answer) in FAILURE.iter().enumerate() {
        let i = SUCCESS.len() + j;
        assert_eq!(
            deliveries[&i], 2,
            "failure answer {answer:?} leaves the message"
        );
    }
}

/// A FIFO batch cut short by the 6 MB cap leaves later messages of the group waiting in
/// esmd; when the batch fails, they must go back behind the failed message, not run first.
#[tokio::test]
async fn fifo_order_holds_across_the_payload_cap() {
    let moto = Moto::start().await;
    let queue = moto
        .create_queue(
            &format!("{}.fifo", random_name("big")),
            &[
                ("VisibilityTimeout", "2"),
                ("MaximumMessageSize", "1048576"),
            ],
        )
        .await;
    let padding = "x".repeat(700_000);
    for i in 0..10 {
        moto.send_fifo(&queue, &format!("{i}-{padding}"), "A").await;
    }
    let failed_once = Arc::new(Mutex::new(false));
    let failed = failed_once.clone();
    let function = FunctionServer::start(move |event| {
        let first = &event["Records"][0];
        let mut failed = failed.lock().unwrap();
        if !*failed && message_body(first).starts_with("0-") {
            *failed = true;
            return Reply::json(
                &json!({"batchItemFailures": [{"itemIdentifier": first["messageId"]}]}),
            );
        }
        Reply::ok("null")
    })
    .await;
    let config = format!(
        "[aws]\nendpoint_url = \"{}\"\n[functions.f]\nurl = \"{}\"\n[[mappings]]\nfunction_name = \"f\"\nevent_source_arn = \"{}\"\nfunction_response_types = [\"ReportBatchItemFailures\"]\n",
        moto.endpoint,
        function.url(),
        queue.arn
    );
    let _esmd = Esmd::start(&config);
    moto.wait_empty(&queue, LONG).await;
    let batches: Vec<Vec<usize>> = function
        .invocations()
        .iter()
        .map(|i| {
            i.records()
                .iter()
                .map(|r| message_body(r).split_once('-').unwrap().0.parse().unwrap())
                .collect()
        })
        .collect();
    assert!(
        batches[0].len() < 10,
        "the cap cut the first batch: {batches:?}"
    );
    assert_eq!(
        batches[1][0], 0,
        "the failed message comes back first: {batches:?}"
    );
    let settled: Vec<usize> = batches[1..].iter().flatten().copied().collect();
    assert_eq!(
        settled,
        (0..10).collect::<Vec<_>>(),
        "then the group in order"
    );
}

/// One ReceiveMessage brings five messages near 1 MiB, a sixth that would pass the 6 MiB
/// cap and a small seventh, all of one group: the small one must not overtake the one the
/// cap turned away.
#[tokio::test]
async fn fifo_order_holds_when_a_small_message_follows_the_cut() {
    let moto = Moto::start().await;
    let queue = moto
        .create_queue(
            &format!("{}.fifo", random_name("cut")),
            &[("MaximumMessageSize", "1048576")],
        )
        .await;
    // six bodies near 1 MiB (uneven) do not fit in one event; five and the small one do
    let big = 1_048_400;
    let sizes = [big, big - 300, big - 100, big - 200, big - 50, big, 100];
    for (i, size) in sizes.iter().enumerate() {
        let body = format!("{i}-{}", "x".repeat(size - 2));
        moto.send_fifo(&queue, &body, "A").await;
    }
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let _esmd = Esmd::start(&url_config(
        &moto,
        &function.url(),
        &queue,
        RawMapping::default(),
    ));
    moto.wait_empty(&queue, LONG).await;
    let batches: Vec<Vec<usize>> = function
        .invocations()
        .iter()
        .map(|i| {
            i.records()
                .iter()
                .map(|r| message_body(r).split_once('-').unwrap().0.parse().unwrap())
                .collect()
        })
        .collect();
    assert!(batches.len() >= 2, "the cap cut the group: {batches:?}");
    let delivered: Vec<usize> = batches.iter().flatten().copied().collect();
    assert_eq!(
        delivered,
        (0..sizes.len()).collect::<Vec<_>>(),
        "delivered in the order sent: {batches:?}"
    );
}

/// A target that takes at most 3,000 bytes answers 413 to bigger events: the batch is split
/// in two, left half first, until the halves fit, and each half is settled on its own; a
/// message too large on its own is not deleted and the redrive policy moves it to the DLQ.
#[tokio::test]
async fn a_413_splits_the_batch_and_a_message_too_large_alone_is_redriven() {
    let moto = Moto::start().await;
    let (queue, dlq) = moto.queue_with_dlq(1, 2).await;
    let mut bodies: Vec<String> = (0..6)
        .map(|i| format!("small-{i}-{}", "s".repeat(300)))
        .collect();
    bodies.insert(3, format!("big-{}", "b".repeat(4000)));
    moto.send_batch(&queue, &bodies).await;
    let function = FunctionServer::start_with_body_limit(3000, |_| Reply::ok("null")).await;
    let _esmd = Esmd::start(&url_config(
        &moto,
        &function.url(),
        &queue,
        RawMapping::default(),
    ));
    wait_until("the big message in the DLQ", LONG, || async {
        (moto.queue_depth(&dlq).await.0 == 1).then_some(())
    })
    .await;
    moto.wait_empty(&queue, LONG).await;

    let mut delivered: Vec<String> = function.records().iter().map(message_body).collect();
    delivered.sort();
    let mut small: Vec<String> = bodies
        .iter()
        .filter(|b| b.starts_with("small"))
        .cloned()
        .collect();
    small.sort();
    assert_eq!(delivered, small, "each small message delivered once");
    let refused = function.refused();
    assert!(
        refused.iter().any(|i| i.records().len() > 1),
        "a batch was split"
    );
    let big_alone = refused
        .iter()
        .filter(|i| i.records().len() == 1 && message_body(&i.records()[0]).starts_with("big"))
        .count();
    assert_eq!(
        big_alone, 2,
        "the big message alone once per receive, then redriven"
    );
    let in_dlq = moto.receive_all(&dlq, SHORT).await;
    assert_eq!(in_dlq.len(), 1);
    assert!(in_dlq[0].body().unwrap_or_default().starts_with("big-"));
}

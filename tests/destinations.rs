//! On-failure destinations of stream mappings end to end against moto: a function that
//! always fails on one poison record, `maximum_retry_attempts = 0`, and the failure record
//! (wire-formats §2.5) delivered to an SQS queue, an SNS topic, an S3 bucket or a file; a
//! destination that is down holds the shard, across a kill -9 too.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};
use aws_sdk_sqs::types::Message;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::streams::{
    Stream, Table, create_stream, create_table_with_stream, put_item, put_records,
};
use common::{
    Esmd, FunctionServer, Invocation, Moto, Queue, Reply, base_config, mapping, random_name,
    url_function, wait_until,
};
use esmd::config::raw::{RawDestinationConfig, RawMapping, RawOnFailure, RawStartingPosition};
use serde_json::{Value, json};

const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(60);
/// The function's name in the config, and so in `functionArn`.
const FUNCTION: &str = "poison-fn";
/// The mapping's `uuid`: its id, in S3 keys and the checkpoint file's name.
const MAPPING_ID: &str = "0b6e6c1e-3d53-4a39-9f0e-6d1c2a7f4e01";
const ACCOUNT: &str = "123456789012";
/// What esmd logs each time the destination refuses a failure record.
const REFUSED: &str = "on-failure destination refused the record";
/// The test records, in order; the function fails every invocation holding `poison`.
const RECORDS: [&str; 4] = ["ok-0", "poison", "ok-2", "ok-3"];

// ---------------------------------------------------------------------------------------
// helpers

/// An SDK config for moto (us-east-1, the harness' test credentials).
fn sdk(moto: &Moto) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test",
            "test",
            None,
            None,
            "esmd-tests",
        )))
        .endpoint_url(&moto.endpoint)
        .build()
}

/// A config with the function `FUNCTION` at `url` and one mapping (`MAPPING_ID`, batch
/// size 1, one invocation per batch) of `source_arn` discarding to `destination`.
fn config(moto: &Moto, state: &Path, url: &str, source_arn: &str, destination: &str) -> String {
    let mut config = base_config(&moto.endpoint, state);
    config.functions.insert(FUNCTION.into(), url_function(url));
    config.mappings.push(mapping(
        FUNCTION,
        source_arn,
        RawMapping {
            uuid: Some(MAPPING_ID.into()),
            starting_position: Some(RawStartingPosition::TrimHorizon),
            idle_poll_interval_ms: Some(50),
            batch_size: Some(1),
            maximum_retry_attempts: Some(0),
            destination_config: Some(RawDestinationConfig {
                on_failure: Some(RawOnFailure {
                    destination: destination.into(),
                }),
            }),
            ..RawMapping::default()
        },
    ));
    config.to_toml()
}

/// The test payload of a record: Kinesis data, or the DynamoDB item's `v`.
fn payload(record: &Value) -> String {
    if let Some(data) = record["kinesis"]["data"].as_str() {
        return String::from_utf8(BASE64.decode(data).expect("base64 data")).expect("utf-8");
    }
    record["dynamodb"]["NewImage"]["v"]["S"]
        .as_str()
        .expect("a test item with v")
        .to_string()
}

/// A function that answers a function error for any batch holding `poison`, success otherwise.
async fn poison_function() -> FunctionServer {
    FunctionServer::start(|event| {
        let records = event["Records"].as_array().cloned().unwrap_or_default();
        if records.iter().any(|r| payload(r) == "poison") {
            Reply::function_error(r#"{"errorType":"Error","errorMessage":"poison"}"#)
        } else {
            Reply::ok("null")
        }
    })
    .await
}

/// The payload of each invocation, in order (every batch holds one record).
fn invoked(function: &FunctionServer) -> Vec<String> {
    function
        .invocations()
        .iter()
        .map(|invocation| {
            let records = invocation.records();
            assert_eq!(records.len(), 1, "batch_size = 1: {:?}", invocation.event);
            payload(&records[0])
        })
        .collect()
}

/// Waits until every one of `payloads` was invoked.
async fn wait_invoked(function: &FunctionServer, payloads: &[&str]) -> Vec<String> {
    wait_until(&format!("invocations of {payloads:?}"), LONG, || {
        let seen = invoked(function);
        let all = payloads.iter().all(|p| seen.iter().any(|s| s == p));
        async move { all.then_some(seen) }
    })
    .await
}

/// The invocation that held the poison record (the first one).
fn poison_invocation(function: &FunctionServer) -> Invocation {
    function
        .invocations()
        .into_iter()
        .find(|i| i.records().iter().any(|r| payload(r) == "poison"))
        .expect("the poison record was invoked")
}

/// A 1-shard stream holding `RECORDS`; returns it with each record's (shard, sequence).
async fn poison_stream(moto: &Moto) -> (Stream, Vec<(String, String)>) {
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("poison"), 1).await;
    let put = put_kinesis(moto, &stream, &RECORDS).await;
    (stream, put)
}

async fn put_kinesis(moto: &Moto, stream: &Stream, payloads: &[&str]) -> Vec<(String, String)> {
    let records: Vec<(String, Vec<u8>)> = payloads
        .iter()
        .map(|p| ("key".to_string(), p.as_bytes().to_vec()))
        .collect();
    put_records(&moto.kinesis(), stream, &records).await
}

/// Waits for the first messages in `queue`, receives and deletes them.
async fn wait_messages(moto: &Moto, queue: &Queue) -> Vec<Message> {
    wait_until(&format!("a message in {}", queue.name), LONG, || async {
        let messages = moto.receive_all(queue, SHORT).await;
        (!messages.is_empty()).then_some(messages)
    })
    .await
}

/// The checkpoint stored for `shard`, if any.
fn checkpoint(state: &Path, shard: &str) -> Option<String> {
    let bytes = std::fs::read(state.join(format!("{MAPPING_ID}.json"))).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    value["shards"][shard]["checkpoint"]
        .as_str()
        .map(str::to_string)
}

/// Waits until the checkpoint of `shard` is `sequence`.
async fn wait_checkpoint(state: &Path, shard: &str, sequence: &str) {
    wait_until(&format!("checkpoint {sequence} on {shard}"), LONG, || {
        let at = checkpoint(state, shard);
        async move { (at.as_deref() == Some(sequence)).then_some(()) }
    })
    .await
}

/// How many times esmd logged that the destination refused the record.
fn refusals(esmd: &Esmd) -> usize {
    esmd.stderr().matches(REFUSED).count()
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Epoch seconds of `YYYY-MM-DDTHH:MM:SS.mmmZ` (`millis`) or `YYYY-MM-DDTHH:MM:SSZ`;
/// panics on any other form.
fn parse_time(text: &str, millis: bool) -> f64 {
    let pattern = if millis {
        "dddd-dd-ddTdd:dd:dd.dddZ"
    } else {
        "dddd-dd-ddTdd:dd:ddZ"
    };
    let fits = text.len() == pattern.len()
        && text.bytes().zip(pattern.bytes()).all(|(c, p)| {
            if p == b'd' {
                c.is_ascii_digit()
            } else {
                c == p
            }
        });
    assert!(fits, "{text:?} is not of the form {pattern}");
    let n = |range: std::ops::Range<usize>| text[range].parse::<i64>().unwrap();
    let days = days_from_civil(n(0..4), n(5..7), n(8..10));
    let seconds = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    let fraction = if millis {
        n(20..23) as f64 / 1000.0
    } else {
        0.0
    };
    seconds as f64 + fraction
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The keys of a JSON object.
fn keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// What a failure record must say about the discarded (poison) record.
struct Expected<'a> {
    /// `KinesisBatchInfo` or `DDBStreamBatchInfo`.
    info: &'a str,
    shard_id: &'a str,
    sequence: &'a str,
    /// Its arrival in the invocation event (epoch seconds).
    arrival: f64,
    stream_arn: &'a str,
}

/// Checks a failure record field by field (wire-formats §2.5) for one record discarded
/// after one invocation that ended in a function error; no other key is allowed.
fn check_failure_record(record: &Value, expected: &Expected) {
    assert_eq!(
        keys(record),
        BTreeSet::from([
            "requestContext",
            "responseContext",
            "version",
            "timestamp",
            expected.info
        ]),
        "{record}"
    );
    let request = &record["requestContext"];
    assert_eq!(
        keys(request),
        BTreeSet::from([
            "requestId",
            "functionArn",
            "condition",
            "approximateInvokeCount"
        ]),
        "{record}"
    );
    let request_id = request["requestId"].as_str().expect("requestId string");
    assert!(
        uuid::Uuid::parse_str(request_id).is_ok(),
        "requestId {request_id:?} is a UUID"
    );
    assert_eq!(
        request["functionArn"],
        format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:{FUNCTION}")
    );
    assert_eq!(request["condition"], "RetryAttemptsExhausted");
    assert_eq!(request["approximateInvokeCount"], 1, "{record}");
    assert_eq!(
        record["responseContext"],
        json!({"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"})
    );
    assert_eq!(record["version"], "1.0");
    let timestamp = parse_time(
        record["timestamp"].as_str().expect("timestamp string"),
        true,
    );
    assert!(
        (timestamp - now_seconds()).abs() < 120.0,
        "timestamp {} is about now",
        record["timestamp"]
    );

    let info = &record[expected.info];
    assert_eq!(
        keys(info),
        BTreeSet::from([
            "shardId",
            "startSequenceNumber",
            "endSequenceNumber",
            "approximateArrivalOfFirstRecord",
            "approximateArrivalOfLastRecord",
            "batchSize",
            "streamArn"
        ]),
        "{record}"
    );
    assert_eq!(info["shardId"], expected.shard_id);
    assert_eq!(info["startSequenceNumber"], expected.sequence);
    assert_eq!(info["endSequenceNumber"], expected.sequence);
    assert_eq!(info["batchSize"], 1);
    assert_eq!(info["streamArn"], expected.stream_arn);
    // Kinesis: milliseconds; DynamoDB: whole seconds
    let millis = expected.info == "KinesisBatchInfo";
    for field in [
        "approximateArrivalOfFirstRecord",
        "approximateArrivalOfLastRecord",
    ] {
        let text = info[field].as_str().expect("an arrival string");
        let at = parse_time(text, millis);
        if millis {
            assert!(
                (at - expected.arrival).abs() <= 0.001,
                "{field} {text} is the arrival {}",
                expected.arrival
            );
        } else {
            assert!(
                at <= expected.arrival + 1e-6 && expected.arrival - at < 1.0,
                "{field} {text} is the second of the arrival {}",
                expected.arrival
            );
        }
    }
}

/// What the failure record of a Kinesis poison record must say.
fn kinesis_expected<'a>(stream: &'a Stream, poison: &'a Value, shard_id: &'a str) -> Expected<'a> {
    Expected {
        info: "KinesisBatchInfo",
        shard_id,
        sequence: poison["kinesis"]["sequenceNumber"].as_str().unwrap(),
        arrival: poison["kinesis"]["approximateArrivalTimestamp"]
            .as_f64()
            .unwrap(),
        stream_arn: &stream.arn,
    }
}

/// Runs a mapping over `poison_stream` discarding to `destination`, and checks
/// the function side: each record invoked once, the checkpoint past the last record.
async fn discard_one_kinesis_record(
    moto: &Moto,
    state: &Path,
    stream: &Stream,
    put: &[(String, String)],
    destination: &str,
) -> (Esmd, FunctionServer) {
    let function = poison_function().await;
    let esmd = Esmd::start(&config(
        moto,
        state,
        &function.url(),
        &stream.arn,
        destination,
    ));
    wait_invoked(&function, &RECORDS).await;
    let (shard, last) = put.last().unwrap();
    wait_checkpoint(state, shard, last).await;
    assert_eq!(invoked(&function), RECORDS, "each record once, in order");
    (esmd, function)
}

// ---------------------------------------------------------------------------------------
// tests

#[tokio::test]
async fn kinesis_sqs_destination_gets_exactly_the_aws_failure_record() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("dlq"), &[]).await;
    let (stream, put) = poison_stream(&moto).await;
    let state = tempfile::tempdir().unwrap();
    let (_esmd, function) =
        discard_one_kinesis_record(&moto, state.path(), &stream, &put, &queue.arn).await;

    let mut messages = wait_messages(&moto, &queue).await;
    messages.extend(moto.receive_all(&queue, SHORT).await);
    assert_eq!(messages.len(), 1, "one failure record: {messages:?}");
    let body: Value =
        serde_json::from_str(messages[0].body().expect("a body")).expect("a JSON body");
    let poison = poison_invocation(&function).records().remove(0);
    assert_eq!(poison["kinesis"]["sequenceNumber"], put[1].1);
    check_failure_record(&body, &kinesis_expected(&stream, &poison, &put[1].0));
}

#[tokio::test]
async fn kinesis_sns_destination_publishes_the_failure_record_as_the_message() {
    let moto = Moto::start().await;
    let sns = aws_sdk_sns::Client::new(&sdk(&moto));
    let topic = sns
        .create_topic()
        .name(random_name("failures"))
        .send()
        .await
        .expect("CreateTopic")
        .topic_arn
        .expect("a topic ARN");
    let queue = moto.create_queue(&random_name("subscriber"), &[]).await;
    sns.subscribe()
        .topic_arn(&topic)
        .protocol("sqs")
        .endpoint(&queue.arn)
        .send()
        .await
        .expect("Subscribe");
    let (stream, put) = poison_stream(&moto).await;
    let state = tempfile::tempdir().unwrap();
    let (_esmd, function) =
        discard_one_kinesis_record(&moto, state.path(), &stream, &put, &topic).await;

    let mut messages = wait_messages(&moto, &queue).await;
    messages.extend(moto.receive_all(&queue, SHORT).await);
    assert_eq!(messages.len(), 1, "one notification: {messages:?}");
    let notification: Value =
        serde_json::from_str(messages[0].body().expect("a body")).expect("a JSON notification");
    assert_eq!(notification["Type"], "Notification");
    assert_eq!(notification["TopicArn"], topic);
    let record: Value = serde_json::from_str(
        notification["Message"]
            .as_str()
            .expect("Message is a string"),
    )
    .expect("Message holds JSON");
    let poison = poison_invocation(&function).records().remove(0);
    check_failure_record(&record, &kinesis_expected(&stream, &poison, &put[1].0));
}

#[tokio::test]
async fn kinesis_s3_destination_stores_the_record_and_the_event_under_the_aws_key() {
    let moto = Moto::start().await;
    let s3 = moto.s3();
    let bucket = random_name("failures");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("CreateBucket");
    let (stream, put) = poison_stream(&moto).await;
    let state = tempfile::tempdir().unwrap();
    let (_esmd, function) = discard_one_kinesis_record(
        &moto,
        state.path(),
        &stream,
        &put,
        &format!("arn:aws:s3:::{bucket}"),
    )
    .await;

    // the record is stored before the shard moves on, so it is there by now
    let objects = s3
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .expect("ListObjectsV2")
        .contents
        .unwrap_or_default();
    assert_eq!(objects.len(), 1, "one object: {objects:?}");
    let key = objects[0].key().expect("a key").to_string();
    let object = s3
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .expect("GetObject")
        .body
        .collect()
        .await
        .expect("the object's body")
        .into_bytes();
    let mut record: Value = serde_json::from_slice(&object).expect("a JSON object");

    // aws/lambda/<mapping>/<shard>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>
    let shard = &put[1].0;
    let parts: Vec<&str> = key.split('/').collect();
    assert_eq!(parts.len(), 8, "{key}");
    assert_eq!(
        parts[..4],
        ["aws", "lambda", MAPPING_ID, shard.as_str()],
        "{key}"
    );
    let (time, unique) = parts[7].split_at(19);
    let unique = unique.strip_prefix('-').unwrap_or_else(|| panic!("{key}"));
    assert!(
        uuid::Uuid::parse_str(unique).is_ok(),
        "{key}: ends in a UUID"
    );
    assert_eq!(
        parts[4..7],
        [&time[0..4], &time[5..7], &time[8..10]],
        "{key}"
    );
    // the key's time is the record's timestamp without its milliseconds
    let key_time = parse_time(&format!("{}Z", time.replace('.', ":")), false);
    let stamp = parse_time(record["timestamp"].as_str().expect("timestamp"), true);
    assert_eq!(
        key_time,
        stamp.floor(),
        "{key}: the time of the record's timestamp {}",
        record["timestamp"]
    );

    // payload: the invocation event, as a JSON string
    let payload = record
        .as_object_mut()
        .unwrap()
        .remove("payload")
        .expect("a payload");
    let payload = payload.as_str().expect("payload is a JSON string");
    let event: Value = serde_json::from_str(payload).expect("payload holds JSON");
    let invocation = poison_invocation(&function);
    assert_eq!(event, invocation.event, "the whole invocation event");
    assert_eq!(event["Records"].as_array().map(Vec::len), Some(1));
    let poison = invocation.records().remove(0);
    check_failure_record(&record, &kinesis_expected(&stream, &poison, shard));
}

#[tokio::test]
async fn dynamodb_file_destination_gets_one_line_with_whole_second_arrivals() {
    let moto = Moto::start().await;
    let ddb = moto.dynamodb();
    let table: Table =
        create_table_with_stream(&ddb, &random_name("poison"), "NEW_AND_OLD_IMAGES").await;
    for (i, v) in RECORDS.iter().enumerate() {
        let attribute = aws_sdk_dynamodb::types::AttributeValue::S(v.to_string());
        put_item(&ddb, &table, "p", &i.to_string(), &[("v", attribute)]).await;
    }
    let shard = moto
        .dynamodb_streams()
        .describe_stream()
        .stream_arn(&table.stream_arn)
        .send()
        .await
        .expect("DescribeStream")
        .stream_description
        .and_then(|d| d.shards)
        .and_then(|shards| shards.into_iter().next())
        .and_then(|s| s.shard_id)
        .expect("a shard");
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("failures.jsonl");
    let function = poison_function().await;
    let _esmd = Esmd::start(&config(
        &moto,
        state.path(),
        &function.url(),
        &table.stream_arn,
        &format!("file://{}", file.display()),
    ));
    wait_invoked(&function, &RECORDS).await;
    let last = function.invocations().last().unwrap().records().remove(0);
    let last = last["dynamodb"]["SequenceNumber"].as_str().unwrap();
    wait_checkpoint(state.path(), &shard, last).await;
    assert_eq!(invoked(&function), RECORDS, "each record once, in order");

    let text = std::fs::read_to_string(&file).expect("the destination file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one failure record: {text}");
    assert!(text.ends_with('\n'), "a complete line");
    let record: Value = serde_json::from_str(lines[0]).expect("a JSON line");
    let poison = poison_invocation(&function).records().remove(0);
    check_failure_record(
        &record,
        &Expected {
            info: "DDBStreamBatchInfo",
            shard_id: &shard,
            sequence: poison["dynamodb"]["SequenceNumber"].as_str().unwrap(),
            arrival: poison["dynamodb"]["ApproximateCreationDateTime"]
                .as_f64()
                .unwrap(),
            stream_arn: &table.stream_arn,
        },
    );
}

/// A Kinesis mapping discarding to an SQS queue that does not exist yet: waits until esmd
/// was refused, invoked `ok-0` and `poison` only, and is still holding the shard.
async fn held_by_a_missing_queue(
    moto: &Moto,
    state: &Path,
) -> (Stream, Vec<(String, String)>, String, FunctionServer, Esmd) {
    let (stream, put) = poison_stream(moto).await;
    let name = random_name("late-dlq");
    let function = poison_function().await;
    let esmd = Esmd::start(&config(
        moto,
        state,
        &function.url(),
        &stream.arn,
        &format!("arn:aws:sqs:us-east-1:{ACCOUNT}:{name}"),
    ));
    esmd.wait_for_log(REFUSED, LONG).await;
    (stream, put, name, function, esmd)
}

#[tokio::test]
async fn a_destination_that_is_down_holds_the_shard_and_loses_nothing() {
    let moto = Moto::start().await;
    let state = tempfile::tempdir().unwrap();
    let (stream, mut put, name, function, esmd) =
        held_by_a_missing_queue(&moto, state.path()).await;
    // a record put while the destination is down waits too
    put.extend(put_kinesis(&moto, &stream, &["ok-4"]).await);
    let refused = refusals(&esmd);
    wait_until("three more refusals", LONG, || {
        let now = refusals(&esmd);
        async move { (now >= refused + 3).then_some(()) }
    })
    .await;
    assert_eq!(
        invoked(&function),
        ["ok-0", "poison"],
        "nothing after the poison record while its failure record is not stored"
    );
    let shard = &put[0].0;
    assert_eq!(
        checkpoint(state.path(), shard).as_deref(),
        Some(put[0].1.as_str()),
        "the checkpoint stays before the poison record"
    );

    let queue = moto.create_queue(&name, &[]).await;
    let mut messages = wait_messages(&moto, &queue).await;
    wait_invoked(&function, &["ok-2", "ok-3", "ok-4"]).await;
    wait_checkpoint(state.path(), shard, &put.last().unwrap().1).await;
    messages.extend(moto.receive_all(&queue, SHORT).await);
    assert_eq!(messages.len(), 1, "one failure record: {messages:?}");
    assert_eq!(
        invoked(&function),
        ["ok-0", "poison", "ok-2", "ok-3", "ok-4"],
        "each record once, in order"
    );
    let body: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    let poison = poison_invocation(&function).records().remove(0);
    check_failure_record(&body, &kinesis_expected(&stream, &poison, shard));
}

#[tokio::test]
async fn kill_9_while_the_destination_is_down_retries_the_poison_record_after_restart() {
    let moto = Moto::start().await;
    let state = tempfile::tempdir().unwrap();
    let (stream, put, name, function, mut first) =
        held_by_a_missing_queue(&moto, state.path()).await;
    first.kill9();
    first.wait_exit(SHORT).await;
    assert_eq!(invoked(&function), ["ok-0", "poison"]);
    let shard = &put[0].0;
    assert_eq!(
        checkpoint(state.path(), shard).as_deref(),
        Some(put[0].1.as_str()),
        "the checkpoint stays before the poison record"
    );

    let queue = moto.create_queue(&name, &[]).await;
    let _second = Esmd::start(&config(
        &moto,
        state.path(),
        &function.url(),
        &stream.arn,
        &queue.arn,
    ));
    let mut messages = wait_messages(&moto, &queue).await;
    wait_invoked(&function, &["ok-2", "ok-3"]).await;
    wait_checkpoint(state.path(), shard, &put.last().unwrap().1).await;
    messages.extend(moto.receive_all(&queue, SHORT).await);
    assert_eq!(messages.len(), 1, "one failure record: {messages:?}");
    assert_eq!(
        invoked(&function),
        ["ok-0", "poison", "poison", "ok-2", "ok-3"],
        "the poison record invoked again after the restart, then discarded; nothing else twice"
    );
    let body: Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    let poison = poison_invocation(&function).records().remove(0);
    // one invocation in the second run: counts do not survive a restart
    check_failure_record(&body, &kinesis_expected(&stream, &poison, shard));
}

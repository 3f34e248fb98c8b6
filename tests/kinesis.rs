//! Kinesis mappings end to end: the real esmd binary against moto (kinesis-local for
//! resharding), with a function served by the test.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::streams::{
    Fault, FaultProxy, KinesisLocal, Stream, cmp_sequence, create_stream, delete_stream,
    merge_shards, put_records, sequence_of, shard_of, split_shard,
};
use common::{
    Esmd, FunctionServer, Moto, Reply, base_config, mapping, random_name, url_function, wait_until,
};
use esmd::config::raw::{RawFunction, RawMapping, RawStartingPosition};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(180);
const SHORT: Duration = Duration::from_secs(30);
/// How long after a batch was answered its settle may still be unstored at a kill -9:
/// the checkpoint writer's 50 ms interval plus the write, with room for a CI machine
/// whose two cores are busy with the whole suite (esmd itself answers late then).
const NOT_YET_STORED: Duration = Duration::from_millis(500);

/// A config with `functions` (name, url) and one Kinesis mapping per function on `stream`;
/// `keys` sets more mapping keys.
fn config(
    endpoint: &str,
    state: &Path,
    stream: &Stream,
    functions: &[(&str, String)],
    keys: RawMapping,
) -> String {
    let mut config = base_config(endpoint, state);
    for (name, url) in functions {
        let function = RawFunction {
            max_concurrency: Some(16),
            role_arn: Some(format!("arn:aws:iam::123456789012:role/{name}")),
            ..url_function(url)
        };
        config.functions.insert(name.to_string(), function);
        let keys = RawMapping {
            idle_poll_interval_ms: Some(100),
            ..keys.clone()
        };
        config.mappings.push(mapping(name, &stream.arn, keys));
    }
    config.to_toml()
}

/// (partition key, index) carried in a record's data as `key:index`.
fn decoded(record: &Value) -> (String, usize) {
    let data = BASE64
        .decode(record["kinesis"]["data"].as_str().expect("data"))
        .expect("base64 data");
    let text = String::from_utf8(data).expect("utf-8 test data");
    let (key, index) = text.split_once(':').expect("key:index");
    (key.to_string(), index.parse().expect("an index"))
}

fn records(keys: usize, from: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (from..from + count)
        .map(|i| {
            let key = format!("key-{}", i % keys);
            let data = format!("{key}:{i}").into_bytes();
            (key, data)
        })
        .collect()
}

async fn wait_records(function: &FunctionServer, n: usize, timeout: Duration) -> Vec<Value> {
    wait_until(&format!("{n} records"), timeout, || {
        let records = function.records();
        async move { (records.len() >= n).then_some(records) }
    })
    .await
}

/// Every batch comes from one shard; per key, records arrive in the order they were put
/// (for runs without retries).
fn assert_order_per_key(function: &FunctionServer) {
    let mut last: HashMap<String, usize> = HashMap::new();
    for invocation in function.invocations() {
        let records = invocation.records();
        let shards: HashSet<String> = records.iter().map(shard_of).collect();
        assert_eq!(shards.len(), 1, "a batch holds records of one shard");
        for record in &records {
            let (key, index) = decoded(record);
            if let Some(previous) = last.insert(key.clone(), index) {
                assert!(previous < index, "{key}: {index} after {previous}");
            }
        }
    }
}

async fn delivers_20000_records_in_order(parallelization_factor: usize) {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("big"), 4).await;
    let put = put_records(&kinesis, &stream, &records(200, 0, 20_000)).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let _esmd = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("f", function.url())],
        RawMapping {
            starting_position: Some(RawStartingPosition::TrimHorizon),
            batch_size: Some(100),
            parallelization_factor: Some(parallelization_factor as i64),
            ..RawMapping::default()
        },
    ));
    let delivered = wait_records(&function, 20_000, LONG).await;
    assert_eq!(delivered.len(), 20_000, "no record twice");
    let indexes: HashSet<usize> = delivered.iter().map(|r| decoded(r).1).collect();
    assert_eq!(indexes.len(), 20_000, "every record");
    assert!(
        function
            .invocations()
            .iter()
            .all(|i| i.records().len() <= 100)
    );
    assert_order_per_key(&function);
    if parallelization_factor == 1 {
        // one batch in flight per shard: the shard's sequence numbers only grow
        let mut last: HashMap<String, String> = HashMap::new();
        for record in &delivered {
            let seq = sequence_of(record);
            if let Some(previous) = last.insert(shard_of(record), seq.clone()) {
                assert_eq!(cmp_sequence(&previous, &seq), std::cmp::Ordering::Less);
            }
        }
    }
    let shards: HashSet<&String> = put.iter().map(|(shard, _)| shard).collect();
    assert_eq!(shards.len(), 4, "the records spread over the 4 shards");
}

#[tokio::test]
async fn twenty_thousand_records_over_4_shards_in_order_per_shard_and_key() {
    delivers_20000_records_in_order(1).await;
}

#[tokio::test]
async fn parallelization_factor_4_keeps_order_per_key() {
    delivers_20000_records_in_order(4).await;
}

#[tokio::test]
async fn records_have_the_exact_aws_shape() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("shape"), 1).await;
    let bytes = vec![0xff, 0x00, 0x7b, 0x22];
    let put = put_records(&kinesis, &stream, &[("pk-1".into(), bytes.clone())]).await;
    let function = FunctionServer::start(|_| Reply::ok("")).await;
    let state = tempfile::tempdir().unwrap();
    let _esmd = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("f", function.url())],
        RawMapping {
            starting_position: Some(RawStartingPosition::TrimHorizon),
            ..RawMapping::default()
        },
    ));
    let record = wait_records(&function, 1, SHORT).await.remove(0);
    let (shard, seq) = &put[0];
    let arrival = record["kinesis"]["approximateArrivalTimestamp"]
        .as_f64()
        .unwrap();
    assert!(
        (1e9..1e10).contains(&arrival),
        "seconds, not milliseconds: {arrival}"
    );
    assert_eq!(
        record,
        json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "pk-1",
                "sequenceNumber": seq,
                "data": BASE64.encode(&bytes),
                "approximateArrivalTimestamp": arrival
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": format!("{shard}:{seq}"),
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/f",
            "awsRegion": "us-east-1",
            "eventSourceARN": stream.arn
        })
    );
}

/// After a kill -9 the repeats are at most the batches in flight at the kill, or answered
/// so shortly before it that the checkpoint writer had not stored them yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_repeat_only_batches_in_flight_or_just_answered() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("kill"), 2).await;
    put_records(&kinesis, &stream, &records(20, 0, 1000)).await;
    let state = tempfile::tempdir().unwrap();
    let mapping = RawMapping {
        starting_position: Some(RawStartingPosition::TrimHorizon),
        batch_size: Some(50),
        ..RawMapping::default()
    };
    let answer_delay = Duration::from_millis(300);
    let slow = FunctionServer::start(move |_| Reply::ok("null").delayed(answer_delay)).await;
    let mut first = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("f", slow.url())],
        mapping.clone(),
    ));
    slow.wait_invocations(6, SHORT).await;
    let killed_at = Instant::now();
    first.kill9();
    first.wait_exit(SHORT).await;
    let invoked_before = slow.invocations();
    let before: Vec<Vec<Value>> = invoked_before.iter().map(|i| i.records()).collect();

    let fast = FunctionServer::start(|_| Reply::ok("null")).await;
    let _second = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("f", fast.url())],
        mapping.clone(),
    ));
    let all_indexes = || {
        let mut seen: HashMap<usize, usize> = HashMap::new();
        for record in before.iter().flatten().chain(fast.records().iter()) {
            *seen.entry(decoded(record).1).or_default() += 1;
        }
        seen
    };
    wait_until("every record after the restart", LONG, || {
        let seen = all_indexes();
        async move { (seen.len() == 1000).then_some(()) }
    })
    .await;
    // in flight at the kill, or answered just before it
    let may_repeat: HashSet<usize> = invoked_before
        .iter()
        .filter(|i| i.at + answer_delay + NOT_YET_STORED > killed_at)
        .flat_map(|i| i.records())
        .map(|r| decoded(&r).1)
        .collect();
    for (index, count) in all_indexes() {
        assert!(count <= 2, "record {index} delivered {count} times");
        if count == 2 {
            assert!(
                may_repeat.contains(&index),
                "record {index} was settled well before the kill but delivered again"
            );
        }
    }
}

#[tokio::test]
async fn sigterm_finishes_the_batch_and_checkpoints_it() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("term"), 1).await;
    put_records(&kinesis, &stream, &records(5, 0, 200)).await;
    let state = tempfile::tempdir().unwrap();
    let mapping = RawMapping {
        starting_position: Some(RawStartingPosition::TrimHorizon),
        batch_size: Some(50),
        ..RawMapping::default()
    };
    let slow = FunctionServer::start(|_| Reply::ok("null").delayed(Duration::from_secs(2))).await;
    let mut first = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("f", slow.url())],
        mapping.clone(),
    ));
    slow.wait_invocations(1, SHORT).await;
    first.stop().await;
    let settled: Vec<usize> = slow.records().iter().map(|r| decoded(r).1).collect();
    assert_eq!(
        settled.len(),
        50,
        "the in-flight batch finished, no new one started"
    );

    let fast = FunctionServer::start(|_| Reply::ok("null")).await;
    let _second = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("f", fast.url())],
        mapping.clone(),
    ));
    let rest = wait_records(&fast, 150, LONG).await;
    let rest: HashSet<usize> = rest.iter().map(|r| decoded(r).1).collect();
    assert_eq!(
        rest,
        (50..200).collect(),
        "resumes after the checkpoint, nothing twice"
    );
}

#[tokio::test]
async fn latest_across_a_restart_misses_nothing() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("latest"), 2).await;
    put_records(&kinesis, &stream, &records(4, 0, 20)).await;
    let state = tempfile::tempdir().unwrap();
    let mapping = RawMapping {
        starting_position: Some(RawStartingPosition::Latest),
        ..RawMapping::default()
    };
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let mut first = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("f", function.url())],
        mapping.clone(),
    ));
    wait_until("both shards pinned", SHORT, || {
        let started = first.stderr().matches("reading shard").count();
        async move { (started >= 2).then_some(()) }
    })
    .await;
    first.terminate();
    first.wait_exit(SHORT).await;
    // written while esmd is down
    put_records(&kinesis, &stream, &records(4, 100, 20)).await;
    let _second = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("f", function.url())],
        mapping.clone(),
    ));
    put_records(&kinesis, &stream, &records(4, 200, 20)).await;
    wait_records(&function, 40, LONG).await;
    let seen: HashSet<usize> = function.records().iter().map(|r| decoded(r).1).collect();
    let expected: HashSet<usize> = (100..120).chain(200..220).collect();
    assert_eq!(
        seen, expected,
        "nothing from before the first start, nothing missed while down"
    );
}

#[tokio::test]
async fn a_recreated_stream_is_detected_and_read_from_its_start() {
    recreated_stream_is_read_from_its_start(RawStartingPosition::TrimHorizon).await;
}

/// With LATEST, records written to a re-created stream before esmd notices it (it lists
/// shards every few seconds) are still delivered: the new stream is read from its start.
#[tokio::test]
async fn latest_reads_a_recreated_stream_from_its_start() {
    recreated_stream_is_read_from_its_start(RawStartingPosition::Latest).await;
}

/// Records go to a stream, which is deleted and created again with the same name; the
/// new stream's records, written at once, before esmd lists the stream again, all arrive.
async fn recreated_stream_is_read_from_its_start(starting_position: RawStartingPosition) {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let name = random_name("again");
    let stream = create_stream(&kinesis, &name, 1).await;
    let state = tempfile::tempdir().unwrap();
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let esmd = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("f", function.url())],
        RawMapping {
            starting_position: Some(starting_position),
            ..RawMapping::default()
        },
    ));
    wait_until("the shard pinned", SHORT, || {
        let started = esmd.stderr().contains("reading shard");
        async move { started.then_some(()) }
    })
    .await;
    put_records(&kinesis, &stream, &records(2, 0, 5)).await;
    wait_records(&function, 5, LONG).await;
    delete_stream(&kinesis, &stream).await;
    let old_created = stream_created(&kinesis, &stream.name).await;
    // the new stream must differ in creation time from the old one
    let stream = loop {
        let stream = create_stream(&kinesis, &name, 1).await;
        if stream_created(&kinesis, &name).await != old_created {
            break stream;
        }
        delete_stream(&kinesis, &stream).await;
    };
    put_records(&kinesis, &stream, &records(2, 1000, 10)).await;
    wait_records(&function, 15, LONG).await;
    let fresh: HashSet<usize> = function
        .records()
        .iter()
        .map(|r| decoded(r).1)
        .filter(|i| *i >= 1000)
        .collect();
    assert_eq!(fresh, (1000..1010).collect());
    assert!(esmd.stderr().contains("the stream was re-created"));
}

async fn stream_created(kinesis: &aws_sdk_kinesis::Client, name: &str) -> Option<String> {
    let summary = kinesis
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .ok()?;
    summary
        .stream_description_summary()
        .map(|s| s.stream_creation_timestamp().to_string())
}

#[tokio::test]
async fn expired_iterators_and_throttled_reads_are_survived() {
    let moto = Moto::start().await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("faults"), 1).await;
    put_records(&kinesis, &stream, &records(3, 0, 30)).await;
    proxy.inject("GetRecords", Fault::ProvisionedThroughputExceeded, 3);
    proxy.inject("GetRecords", Fault::ExpiredIterator, 1);
    proxy.inject("GetShardIterator", Fault::LimitExceeded, 1);
    let state = tempfile::tempdir().unwrap();
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let esmd = Esmd::start(&config(
        &proxy.endpoint(),
        state.path(),
        &stream,
        &[("f", function.url())],
        RawMapping {
            starting_position: Some(RawStartingPosition::TrimHorizon),
            batch_size: Some(10),
            ..RawMapping::default()
        },
    ));
    wait_records(&function, 30, LONG).await;
    put_records(&kinesis, &stream, &records(3, 100, 10)).await;
    proxy.inject("GetRecords", Fault::ExpiredIterator, 1);
    wait_until("the expired iterator after some reads", LONG, || async {
        (proxy.injected("GetRecords") == 5).then_some(())
    })
    .await;
    let delivered = wait_records(&function, 40, LONG).await;
    let indexes: Vec<usize> = delivered.iter().map(|r| decoded(r).1).collect();
    let distinct: HashSet<&usize> = indexes.iter().collect();
    assert_eq!(distinct.len(), 40);
    assert_eq!(indexes.len(), 40, "nothing delivered twice");
    assert_eq!(proxy.injected("GetShardIterator"), 1);
    assert!(esmd.stderr().contains("shard iterator expired"));
}

#[tokio::test]
async fn two_mappings_on_one_stream_each_get_every_record_with_their_own_checkpoints() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("two"), 2).await;
    put_records(&kinesis, &stream, &records(10, 0, 300)).await;
    let state = tempfile::tempdir().unwrap();
    let a = FunctionServer::start(|_| Reply::ok("null")).await;
    let b = FunctionServer::start(|_| Reply::ok("null")).await;
    let _esmd = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("a", a.url()), ("b", b.url())],
        RawMapping {
            starting_position: Some(RawStartingPosition::TrimHorizon),
            ..RawMapping::default()
        },
    ));
    for function in [&a, &b] {
        let records = wait_records(function, 300, LONG).await;
        let indexes: HashSet<usize> = records.iter().map(|r| decoded(r).1).collect();
        assert_eq!(indexes.len(), 300);
    }
    let files: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 2, "one checkpoint file per mapping");
    wait_until("both checkpoints at the end of every shard", SHORT, || {
        let states: Vec<Value> = files
            .iter()
            .map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap())
            .collect();
        let done = states.iter().all(|s| {
            s["shards"].as_object().is_some_and(|shards| {
                shards.len() == 2 && shards.values().all(|v| v["checkpoint"].is_string())
            })
        });
        async move { done.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_failed_batch_is_retried_and_blocks_only_its_shard() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("retry"), 2).await;
    put_records(&kinesis, &stream, &records(20, 0, 100)).await;
    let state = tempfile::tempdir().unwrap();
    // The first batch holding record 7 fails; with ReportBatchItemFailures the batch
    // holding record 42 reports it failed once.
    let failed = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let seen = failed.clone();
    let function = FunctionServer::start(move |event| {
        let records = event["Records"].as_array().unwrap();
        let mut failed = seen.lock().unwrap();
        if records.iter().any(|r| decoded(r).1 == 7) && failed.insert(7) {
            return Reply::function_error(r#"{"errorMessage":"boom"}"#);
        }
        let items: Vec<Value> = records
            .iter()
            .filter(|r| decoded(r).1 == 42 && failed.insert(42))
            .map(|r| json!({"itemIdentifier": sequence_of(r)}))
            .collect();
        Reply::json(&json!({"batchItemFailures": items}))
    })
    .await;
    let _esmd = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("f", function.url())],
        RawMapping {
            starting_position: Some(RawStartingPosition::TrimHorizon),
            batch_size: Some(10),
            function_response_types: vec!["ReportBatchItemFailures".into()],
            ..RawMapping::default()
        },
    ));
    wait_until("every record settled", LONG, || {
        let indexes: HashSet<usize> = function.records().iter().map(|r| decoded(r).1).collect();
        async move { (indexes.len() == 100).then_some(()) }
    })
    .await;
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    let mut forty_two_batches = Vec::new();
    // The failing batch blocks its shard: the shard's next invocation is its retry.
    let invocations = function.invocations();
    let holds_7 = |i: &common::Invocation| i.records().iter().any(|r| decoded(r).1 == 7);
    let failing = invocations.iter().position(holds_7).unwrap();
    let shard = shard_of(&invocations[failing].records()[0]);
    let next_of_shard = invocations[failing + 1..]
        .iter()
        .find(|i| shard_of(&i.records()[0]) == shard)
        .unwrap();
    assert!(
        holds_7(next_of_shard),
        "the retry comes before anything later in the shard"
    );
    assert_eq!(
        next_of_shard.records()[0]["kinesis"]["sequenceNumber"],
        invocations[failing].records()[0]["kinesis"]["sequenceNumber"],
        "retried whole"
    );
    for invocation in invocations {
        let indexes: Vec<usize> = invocation.records().iter().map(|r| decoded(r).1).collect();
        if indexes.contains(&42) {
            forty_two_batches.push(indexes.clone());
        }
        for index in indexes {
            *counts.entry(index).or_default() += 1;
        }
    }
    assert_eq!(counts[&7], 2, "the failed batch is retried whole");
    assert_eq!(counts[&42], 2);
    let retry = &forty_two_batches[1];
    assert_eq!(retry[0], 42, "the retry starts at the reported record");
    let first = &forty_two_batches[0];
    let before: Vec<&usize> = first.iter().take_while(|i| **i != 42).collect();
    for index in before {
        assert_eq!(
            counts[index], 1,
            "record {index} before the failure is not invoked twice"
        );
    }
}

#[tokio::test]
async fn a_split_and_a_merge_deliver_parents_before_children() {
    let local = KinesisLocal::start().await;
    let kinesis = local.kinesis();
    let stream = create_stream(&kinesis, &random_name("reshard"), 1).await;
    put_records(&kinesis, &stream, &records(20, 0, 300)).await;
    let state = tempfile::tempdir().unwrap();
    let function =
        FunctionServer::start(|_| Reply::ok("null").delayed(Duration::from_millis(50))).await;
    let _esmd = Esmd::start(&config(
        &local.endpoint,
        state.path(),
        &stream,
        &[("f", function.url())],
        RawMapping {
            starting_position: Some(RawStartingPosition::TrimHorizon),
            batch_size: Some(25),
            ..RawMapping::default()
        },
    ));
    wait_records(&function, 25, SHORT).await;
    let parent = common::streams::list_shards(&kinesis, &stream).await[0]
        .shard_id()
        .to_string();
    let [left, right] = split_shard(&kinesis, &stream, &parent).await;
    put_records(&kinesis, &stream, &records(20, 300, 300)).await;
    merge_shards(&kinesis, &stream, &left, &right).await;
    put_records(&kinesis, &stream, &records(20, 600, 300)).await;
    let delivered = wait_records(&function, 900, LONG).await;
    let indexes: HashSet<usize> = delivered.iter().map(|r| decoded(r).1).collect();
    assert_eq!(indexes.len(), 900, "every record of parents and children");
    assert_eq!(delivered.len(), 900, "nothing twice");
    assert_order_per_key(&function);
    let shards: HashSet<String> = delivered.iter().map(shard_of).collect();
    assert_eq!(
        shards.len(),
        4,
        "the parent, both children and the merged child"
    );
}

#[tokio::test]
async fn at_timestamp_starts_at_the_first_record_of_that_second() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("at"), 1).await;
    put_records(&kinesis, &stream, &records(2, 0, 10)).await;
    // the first whole second after the old records
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let start = now.as_secs() + 1;
    wait_until(
        "the clock to reach the start second",
        SHORT,
        || async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            (now >= start).then_some(())
        },
    )
    .await;
    put_records(&kinesis, &stream, &records(2, 100, 10)).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let _esmd = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("f", function.url())],
        RawMapping {
            starting_position: Some(RawStartingPosition::AtTimestamp),
            starting_position_timestamp: Some(start as i64),
            ..RawMapping::default()
        },
    ));
    wait_records(&function, 10, LONG).await;
    let seen: HashSet<usize> = function.records().iter().map(|r| decoded(r).1).collect();
    assert_eq!(seen, (100..110).collect());
}

/// How a run in [`restarts_with_lanes`] is stopped.
#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Sigterm,
    Kill9,
}

/// 4 shards, `parallelization_factor` 4, one key whose batches take 100 ms while the
/// others take 5 ms, 4,000 records; esmd is stopped four times along the way. Returns how
/// often each record was delivered, and for each stop the records that may repeat: those
/// of batches in flight at the stop or answered within [`NOT_YET_STORED`] before it. Checks that
/// per key, records are first delivered in order.
async fn restarts_with_lanes(stop: Stop) -> (HashMap<usize, usize>, Vec<HashSet<usize>>) {
    const TOTAL: usize = 4_000;
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("restarts"), 4).await;
    put_records(&kinesis, &stream, &records(50, 0, TOTAL)).await;
    let state = tempfile::tempdir().unwrap();
    let answer_delay = |event: &Value| {
        let slow = event["Records"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| decoded(r).0 == "key-0");
        Duration::from_millis(if slow { 100 } else { 5 })
    };
    let function =
        FunctionServer::start(move |event| Reply::ok("null").delayed(answer_delay(event))).await;
    let text = config(
        &moto.endpoint,
        state.path(),
        &stream,
        &[("f", function.url())],
        RawMapping {
            starting_position: Some(RawStartingPosition::TrimHorizon),
            batch_size: Some(50),
            parallelization_factor: Some(4),
            ..RawMapping::default()
        },
    );
    // (stopped at, next run started at) per stop
    let mut stops = Vec::new();
    let mut esmd = Esmd::start(&text);
    for stop_after in [600, 1_400, 2_200, 3_000] {
        wait_records(&function, stop_after, LONG).await;
        let stopped_at = Instant::now();
        match stop {
            Stop::Sigterm => {
                esmd.terminate();
                assert!(esmd.wait_exit(SHORT).await.success());
            }
            Stop::Kill9 => {
                esmd.kill9();
                esmd.wait_exit(SHORT).await;
            }
        }
        stops.push((stopped_at, Instant::now()));
        esmd = Esmd::start(&text);
    }
    let delivered = || {
        let mut seen: HashMap<usize, usize> = HashMap::new();
        for record in function.records() {
            *seen.entry(decoded(&record).1).or_default() += 1;
        }
        seen
    };
    wait_until("every record", LONG, || {
        let seen = delivered();
        async move { (seen.len() == TOTAL).then_some(()) }
    })
    .await;
    esmd.terminate();
    assert!(esmd.wait_exit(SHORT).await.success());
    let invocations = function.invocations();
    let mut first_delivered: HashMap<String, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for record in invocations.iter().flat_map(|i| i.records()) {
        let (key, index) = decoded(&record);
        if seen.insert(index)
            && let Some(previous) = first_delivered.insert(key.clone(), index)
        {
            assert!(
                previous < index,
                "{key}: {index} first delivered after {previous}"
            );
        }
    }
    // A killed esmd's last requests may reach the function a moment after the kill (the
    // function server runs on its own threads, so it records them at once): an invocation
    // belongs to a stop when it arrived before the next esmd started.
    let may_repeat = stops
        .iter()
        .map(|(stopped_at, next_started)| {
            invocations
                .iter()
                .filter(|i| {
                    i.at + answer_delay(&i.event) + NOT_YET_STORED > *stopped_at
                        && i.at < *next_started
                })
                .flat_map(|i| i.records())
                .map(|r| decoded(&r).1)
                .collect()
        })
        .collect();
    (delivered(), may_repeat)
}

/// A graceful stop finishes and stores what is in flight, and what lanes settled beyond
/// the checkpoint: restarts deliver nothing twice, whatever the lanes' speeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_restarts_with_lanes_deliver_nothing_twice() {
    let (delivered, _) = restarts_with_lanes(Stop::Sigterm).await;
    let repeated: Vec<(&usize, &usize)> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "delivered twice: {repeated:?}");
}

/// After kill -9, the repeats are only the batches in flight at the kill or answered
/// just before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_restarts_with_lanes_repeat_only_what_was_in_flight() {
    let (delivered, may_repeat) = restarts_with_lanes(Stop::Kill9).await;
    for (index, count) in delivered {
        let allowed = 1 + may_repeat.iter().filter(|set| set.contains(&index)).count();
        assert!(
            count <= allowed,
            "record {index} delivered {count} times, but was in flight at only {} kill(s)",
            allowed - 1
        );
    }
}

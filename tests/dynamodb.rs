//! DynamoDB Streams mappings end to end: the real esmd binary against moto.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use common::streams::{
    Fault, FaultProxy, Table, create_table_with_stream, delete_item, delete_table, put_item,
    read_table_stream, stream_config, update_item,
};
use common::{Esmd, FunctionServer, Moto, Reply, random_name, wait_until};
use esmd::config::raw::{RawMapping, RawStartingPosition};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);

async fn wait_records(function: &FunctionServer, n: usize, timeout: Duration) -> Vec<Value> {
    wait_until(&format!("{n} records"), timeout, || {
        let records = function.records();
        async move { (records.len() >= n).then_some(records) }
    })
    .await
}

fn item(record: &Value) -> String {
    let keys = &record["dynamodb"]["Keys"];
    format!(
        "{}/{}",
        keys["pk"]["S"].as_str().unwrap(),
        keys["sk"]["S"].as_str().unwrap()
    )
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

#[tokio::test]
async fn insert_modify_remove_arrive_in_order_per_item_with_the_exact_shape() {
    let moto = Moto::start().await;
    let ddb = moto.dynamodb();
    let table = create_table_with_stream(&ddb, &random_name("items"), "NEW_AND_OLD_IMAGES").await;
    for i in 0..5 {
        let sk = i.to_string();
        put_item(
            &ddb,
            &table,
            "p",
            &sk,
            &[
                ("v", s("one")),
                ("bin", AttributeValue::B(vec![1, 2, 3].into())),
            ],
        )
        .await;
    }
    for i in 0..5 {
        let sk = i.to_string();
        update_item(
            &ddb,
            &table,
            "p",
            &sk,
            &[("v", s("two")), ("n", AttributeValue::N("7".into()))],
        )
        .await;
        delete_item(&ddb, &table, "p", &sk).await;
    }
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    // the table ARN without a stream label: esmd resolves the table's latest stream
    let _esmd = Esmd::start(&stream_config(
        &moto.endpoint,
        state.path(),
        &table.arn,
        &function.url(),
        RawMapping {
            starting_position: Some(RawStartingPosition::TrimHorizon),
            parallelization_factor: Some(2),
            ..RawMapping::default()
        },
    ));
    let delivered = wait_records(&function, 15, LONG).await;
    assert_eq!(delivered.len(), 15);
    let mut per_item: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for record in &delivered {
        per_item
            .entry(item(record))
            .or_default()
            .push(record["eventName"].as_str().unwrap().to_string());
    }
    for (item, events) in &per_item {
        assert_eq!(events, &["INSERT", "MODIFY", "REMOVE"], "{item}");
    }

    // Everything GetRecords gave is passed through; esmd adds the stream ARN.
    let raw = read_table_stream(&moto.dynamodb_streams(), &table).await;
    let by_sequence: BTreeMap<String, &Value> = delivered
        .iter()
        .map(|r| {
            (
                r["dynamodb"]["SequenceNumber"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                r,
            )
        })
        .collect();
    for source in raw {
        let stream = source.dynamodb().unwrap();
        let record = by_sequence[stream.sequence_number().unwrap()];
        let created = record["dynamodb"]["ApproximateCreationDateTime"].clone();
        assert!(created.is_f64(), "a float: {created}");
        let seconds = created.as_f64().unwrap();
        assert!((1e9..1e10).contains(&seconds), "seconds: {seconds}");
        assert_eq!(record["eventID"], source.event_id().unwrap());
        assert_eq!(record["eventName"], source.event_name().unwrap().as_str());
        assert_eq!(
            record["eventVersion"],
            source.event_version().unwrap(),
            "as the source sent it"
        );
        assert_eq!(record["eventSource"], "aws:dynamodb");
        assert_eq!(record["awsRegion"], "us-east-1");
        assert_eq!(record["eventSourceARN"], table.stream_arn.as_str());
        assert_eq!(record["dynamodb"]["StreamViewType"], "NEW_AND_OLD_IMAGES");
        assert_eq!(
            record["dynamodb"]["SizeBytes"],
            stream.size_bytes().unwrap()
        );
        match record["eventName"].as_str().unwrap() {
            "INSERT" => {
                assert_eq!(record["dynamodb"]["NewImage"]["bin"], json!({"B": "AQID"}));
                assert!(record["dynamodb"].get("OldImage").is_none());
            }
            "MODIFY" => {
                assert_eq!(record["dynamodb"]["OldImage"]["v"], json!({"S": "one"}));
                assert_eq!(record["dynamodb"]["NewImage"]["n"], json!({"N": "7"}));
            }
            _ => {
                assert_eq!(record["dynamodb"]["OldImage"]["v"], json!({"S": "two"}));
                assert!(record["dynamodb"].get("NewImage").is_none());
            }
        }
    }
}

#[tokio::test]
async fn a_restart_resumes_after_the_checkpoint_and_latest_misses_nothing() {
    let moto = Moto::start().await;
    let ddb = moto.dynamodb();
    let table = create_table_with_stream(&ddb, &random_name("latest"), "NEW_IMAGE").await;
    put_item(&ddb, &table, "old", "0", &[]).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let text = stream_config(
        &moto.endpoint,
        state.path(),
        &table.stream_arn,
        &function.url(),
        RawMapping {
            starting_position: Some(RawStartingPosition::Latest),
            ..RawMapping::default()
        },
    );
    let mut first = Esmd::start(&text);
    first.wait_for_log("reading shard", SHORT).await;
    put_item(&ddb, &table, "new", "1", &[]).await;
    wait_records(&function, 1, LONG).await;
    first.stop().await;
    put_item(&ddb, &table, "down", "2", &[]).await;
    let _second = Esmd::start(&text);
    put_item(&ddb, &table, "after", "3", &[]).await;
    wait_records(&function, 3, LONG).await;
    let items: Vec<String> = function.records().iter().map(item).collect();
    assert_eq!(items, vec!["new/1", "down/2", "after/3"]);
}

#[tokio::test]
async fn a_recreated_table_is_detected_and_its_new_stream_read_from_the_start() {
    let moto = Moto::start().await;
    let ddb = moto.dynamodb();
    let name = random_name("again");
    let table = create_table_with_stream(&ddb, &name, "KEYS_ONLY").await;
    for i in 0..5 {
        put_item(&ddb, &table, "a", &i.to_string(), &[]).await;
    }
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let esmd = Esmd::start(&stream_config(
        &moto.endpoint,
        state.path(),
        &table.arn,
        &function.url(),
        RawMapping {
            starting_position: Some(RawStartingPosition::TrimHorizon),
            ..RawMapping::default()
        },
    ));
    wait_records(&function, 5, LONG).await;
    delete_table(&ddb, &table).await;
    let table: Table = create_table_with_stream(&ddb, &name, "KEYS_ONLY").await;
    put_item(&ddb, &table, "b", "0", &[]).await;
    put_item(&ddb, &table, "b", "1", &[]).await;
    let records = wait_records(&function, 7, LONG).await;
    let fresh: Vec<String> = records[5..].iter().map(item).collect();
    assert_eq!(fresh, vec!["b/0", "b/1"]);
    assert_eq!(records[6]["eventSourceARN"], table.stream_arn.as_str());
    assert!(esmd.stderr().contains("the stream was re-created"));
}

#[tokio::test]
async fn trimmed_data_moves_to_the_oldest_record_and_expired_iterators_are_survived() {
    let moto = Moto::start().await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let ddb = moto.dynamodb();
    let table = create_table_with_stream(&ddb, &random_name("trim"), "KEYS_ONLY").await;
    for i in 0..10 {
        put_item(&ddb, &table, "t", &i.to_string(), &[]).await;
    }
    proxy.inject("GetRecords", Fault::ExpiredIterator, 1);
    proxy.inject("GetRecords", Fault::LimitExceeded, 2);
    proxy.inject("GetRecords", Fault::TrimmedDataAccess, 1);
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let esmd = Esmd::start(&stream_config(
        &proxy.endpoint(),
        state.path(),
        &table.stream_arn,
        &function.url(),
        RawMapping {
            starting_position: Some(RawStartingPosition::TrimHorizon),
            ..RawMapping::default()
        },
    ));
    wait_until("every record", LONG, || {
        let items: HashSet<String> = function.records().iter().map(item).collect();
        async move { (items.len() == 10).then_some(()) }
    })
    .await;
    assert_eq!(proxy.injected("GetRecords"), 4);
    let log = esmd.stderr();
    assert!(
        log.contains("records trimmed before they were read"),
        "{log}"
    );
    assert!(log.contains("shard iterator expired"));
}

/// DynamoDB has no AT_TIMESTAMP: with LATEST esmd reads from the trim horizon and passes
/// over the older records. Passing over them moves the checkpoint, so the next start does
/// not scan the table's history again.
#[tokio::test]
async fn records_before_latest_move_the_checkpoint_without_an_invocation() {
    let moto = Moto::start().await;
    let ddb = moto.dynamodb();
    let table = create_table_with_stream(&ddb, &random_name("history"), "KEYS_ONLY").await;
    for i in 0..10 {
        put_item(&ddb, &table, "old", &i.to_string(), &[]).await;
    }
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let mut esmd = Esmd::start(&stream_config(
        &moto.endpoint,
        state.path(),
        &table.stream_arn,
        &function.url(),
        RawMapping {
            starting_position: Some(RawStartingPosition::Latest),
            ..RawMapping::default()
        },
    ));
    let checkpoint = wait_until("a checkpoint past the old records", LONG, || {
        let checkpoint = std::fs::read_dir(state.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .filter_map(|path| std::fs::read(path).ok())
            .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .find_map(|state| {
                state["shards"]
                    .as_object()?
                    .values()
                    .find_map(|shard| shard["checkpoint"].as_str().map(str::to_string))
            });
        async move { checkpoint }
    })
    .await;
    let stream = read_table_stream(&moto.dynamodb_streams(), &table).await;
    let last_old = stream
        .last()
        .and_then(|record| record.dynamodb())
        .and_then(|record| record.sequence_number())
        .expect("the old records")
        .to_string();
    assert_eq!(checkpoint, last_old);
    esmd.stop().await;
    assert!(
        function.records().is_empty(),
        "nothing before LATEST is invoked"
    );
}

//! filter_criteria end to end: the real esmd binary against moto, for each source.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::streams::{
    create_stream, create_table_with_stream, delete_item, put_item, put_records, stream_config,
    update_item,
};
use common::{
    Esmd, FunctionServer, Moto, Reply, aws_config, mapping, random_name, url_function, wait_until,
};
use esmd::config::raw::{RawFilter, RawFilterCriteria, RawMapping, RawStartingPosition};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);

fn criteria(patterns: &[&str]) -> Option<RawFilterCriteria> {
    Some(RawFilterCriteria {
        filters: patterns
            .iter()
            .map(|pattern| RawFilter {
                pattern: pattern.to_string(),
            })
            .collect(),
    })
}

async fn wait_records(function: &FunctionServer, n: usize, timeout: Duration) -> Vec<Value> {
    wait_until(&format!("{n} records"), timeout, || {
        let records = function.records();
        async move { (records.len() >= n).then_some(records) }
    })
    .await
}

/// The decoded `data` of Kinesis records.
fn data_of(records: &[Value]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|r| {
            BASE64
                .decode(r["kinesis"]["data"].as_str().unwrap())
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn sqs_delivers_matching_messages_in_full_batches_and_deletes_the_rest() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("filtered"), &[]).await;
    let bodies: Vec<String> = (0..12)
        .map(|i| match i % 3 {
            0 => json!({"kind": "order", "n": i}).to_string(),
            1 => json!({"kind": "refund", "n": i}).to_string(),
            _ => format!("plain text {i}"),
        })
        .collect();
    moto.send_batch(&queue, &bodies).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let mut config = aws_config(&moto.endpoint);
    config
        .functions
        .insert("f".into(), url_function(&function.url()));
    config.mappings.push(mapping(
        "f",
        &queue.arn,
        RawMapping {
            batch_size: Some(4),
            maximum_batching_window_in_seconds: 20,
            filter_criteria: criteria(&[r#"{"body":{"kind":["order"]}}"#]),
            ..RawMapping::default()
        },
    ));
    let _esmd = Esmd::start(&config.to_toml());
    wait_until("the queue to be empty", LONG, || async {
        (moto.queue_depth(&queue).await == (0, 0)).then_some(())
    })
    .await;
    let invocations = function.wait_invocations(1, SHORT).await;
    assert_eq!(
        invocations.len(),
        1,
        "only matching messages count toward batch_size: one full batch of the 4 orders, long before the window ends"
    );
    let delivered: BTreeSet<String> = function
        .records()
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_string())
        .collect();
    let orders: BTreeSet<String> = bodies.iter().step_by(3).cloned().collect();
    assert_eq!(delivered, orders);
}

#[tokio::test]
async fn kinesis_matches_decoded_data_delivers_it_untouched_and_checkpoints_past_the_rest() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("filtered"), 1).await;
    let data: Vec<Vec<u8>> = (0..9)
        .map(|i| match i % 3 {
            0 => format!(r#"{{"type": "click", "n": {i}}}"#).into_bytes(),
            1 => json!({"type": "view", "n": i}).to_string().into_bytes(),
            _ => format!("not json {i}").into_bytes(),
        })
        .collect();
    let records: Vec<(String, Vec<u8>)> =
        data.iter().map(|d| ("k".to_string(), d.clone())).collect();
    put_records(&kinesis, &stream, &records).await;
    let state = tempfile::tempdir().unwrap();
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let keys = RawMapping {
        starting_position: Some(RawStartingPosition::TrimHorizon),
        filter_criteria: criteria(&[r#"{"data":{"type":["click"]}}"#]),
        ..RawMapping::default()
    };
    let mut first = Esmd::start(&stream_config(
        &moto.endpoint,
        state.path(),
        &stream.arn,
        &function.url(),
        keys,
    ));
    let delivered = data_of(&wait_records(&function, 3, LONG).await);
    assert_eq!(
        delivered,
        vec![data[0].clone(), data[3].clone(), data[6].clone()],
        "the matching records, their data byte for byte as written"
    );
    // the last records were filtered out: the checkpoint passed them all the same, so a
    // run without filters, from the same state, starts after them
    first.stop().await;
    put_records(&kinesis, &stream, &[("k".to_string(), b"marker".to_vec())]).await;
    let everything = FunctionServer::start(|_| Reply::ok("null")).await;
    let _second = Esmd::start(&stream_config(
        &moto.endpoint,
        state.path(),
        &stream.arn,
        &everything.url(),
        RawMapping {
            starting_position: Some(RawStartingPosition::TrimHorizon),
            ..RawMapping::default()
        },
    ));
    let after_restart = data_of(&wait_records(&everything, 1, LONG).await);
    assert_eq!(
        after_restart,
        vec![b"marker".to_vec()],
        "records arrive in shard order: nothing filtered out came back before the marker"
    );
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

#[tokio::test]
async fn dynamodb_filters_see_typed_images_and_event_names() {
    let moto = Moto::start().await;
    let ddb = moto.dynamodb();
    let table =
        create_table_with_stream(&ddb, &random_name("filtered"), "NEW_AND_OLD_IMAGES").await;
    put_item(&ddb, &table, "a", "1", &[("v", s("keep"))]).await;
    put_item(&ddb, &table, "b", "1", &[("v", s("drop"))]).await;
    update_item(&ddb, &table, "b", "1", &[("v", s("keep"))]).await;
    put_item(
        &ddb,
        &table,
        "c",
        "1",
        &[("v", AttributeValue::N("5".into()))],
    )
    .await;
    delete_item(&ddb, &table, "a", "1").await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let _esmd = Esmd::start(&stream_config(
        &moto.endpoint,
        state.path(),
        &table.stream_arn,
        &function.url(),
        RawMapping {
            starting_position: Some(RawStartingPosition::TrimHorizon),
            filter_criteria: criteria(&[
                r#"{"dynamodb":{"NewImage":{"v":{"S":["keep"]}}}}"#,
                r#"{"eventName":["REMOVE"]}"#,
                // N values are strings in the record: numeric never matches them
                r#"{"dynamodb":{"NewImage":{"v":{"N":[{"numeric":[">",1]}]}}}}"#,
            ]),
            ..RawMapping::default()
        },
    ));
    // the last record written matches: once it is in, every record before it was judged
    let records = wait_until("the REMOVE record", LONG, || {
        let records = function.records();
        async move {
            records
                .iter()
                .any(|r| r["eventName"] == "REMOVE")
                .then_some(records)
        }
    })
    .await;
    let seen: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["dynamodb"]["Keys"]["pk"]["S"].as_str().unwrap(),
                r["eventName"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(seen, vec!["a/INSERT", "b/MODIFY", "a/REMOVE"]);
}

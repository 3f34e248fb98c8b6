//! Tests of the streams harness itself (`common::streams`): Kinesis and DynamoDB Streams on
//! moto, resharding on kinesis-local, and the fault proxy against the real SDK error types.

mod common;

use std::cmp::Ordering;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodbstreams::operation::describe_stream::DescribeStreamError;
use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsError as DdbGetRecordsError;
use aws_sdk_dynamodbstreams::operation::get_shard_iterator::GetShardIteratorError as DdbGetShardIteratorError;
use aws_sdk_dynamodbstreams::types::{OperationType, ShardIteratorType as DdbShardIteratorType};
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::operation::get_records::GetRecordsError;
use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorError;
use aws_sdk_kinesis::operation::list_shards::ListShardsError;
use aws_sdk_kinesis::types::ShardIteratorType;
use common::streams::*;
use common::*;
use serde_json::json;

const MAX_HASH_KEY: u128 = u128::MAX;

#[tokio::test]
async fn moto_kinesis_records_round_trip_through_two_shards() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("harness"), 2).await;
    assert!(stream.arn.ends_with(&format!(":stream/{}", stream.name)));

    let shards = list_shards(&kinesis, &stream).await;
    assert_eq!(shards.len(), 2, "{shards:?}");
    let ranges: Vec<(u128, u128)> = shards
        .iter()
        .map(|s| {
            let range = s.hash_key_range.as_ref().expect("a hash key range");
            (
                range.starting_hash_key.parse().unwrap(),
                range.ending_hash_key.parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranges[0].0, 0);
    assert_eq!(ranges[0].1 + 1, ranges[1].0);
    assert_eq!(ranges[1].1, MAX_HASH_KEY);

    let records: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("key-{i}"), format!("record-{i}").into_bytes()))
        .collect();
    let mut written = put_records(&kinesis, &stream, &records).await;
    let (shard, sequence) = put_record(&kinesis, &stream, "key-40", b"record-40").await;
    written.push((shard.clone(), sequence.clone()));
    assert_eq!(written.len(), 41);

    let mut read = 0;
    for shard in &shards {
        let got = read_shard(&kinesis, &stream, &shard.shard_id).await;
        // Written to this shard, in write order.
        let expected: Vec<(String, String)> = written
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| *s == shard.shard_id)
            .map(|(i, (_, seq))| (format!("record-{i}"), seq.clone()))
            .collect();
        assert!(!expected.is_empty(), "no record went to {}", shard.shard_id);
        let actual: Vec<(String, String)> = got
            .iter()
            .map(|r| {
                let data = String::from_utf8(r.data.as_ref().to_vec()).unwrap();
                (data, r.sequence_number.clone())
            })
            .collect();
        assert_eq!(actual, expected, "records of {}", shard.shard_id);
        for pair in got.windows(2) {
            assert_eq!(
                cmp_sequence(&pair[0].sequence_number, &pair[1].sequence_number),
                Ordering::Less
            );
        }
        read += got.len();
    }
    assert_eq!(read, 41);

    // AFTER_SEQUENCE_NUMBER from the single put: nothing follows it in its shard.
    let iterator = kinesis
        .get_shard_iterator()
        .stream_arn(&stream.arn)
        .shard_id(&shard)
        .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
        .starting_sequence_number(&sequence)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let after = kinesis
        .get_records()
        .stream_arn(&stream.arn)
        .shard_iterator(iterator)
        .send()
        .await
        .unwrap();
    assert!(after.records.is_empty(), "{:?}", after.records);

    delete_stream(&kinesis, &stream).await;
}

#[tokio::test]
async fn moto_dynamodb_stream_yields_insert_modify_remove_in_order() {
    let moto = Moto::start().await;
    let dynamodb = moto.dynamodb();
    let table =
        create_table_with_stream(&dynamodb, &random_name("harness"), "NEW_AND_OLD_IMAGES").await;
    assert!(
        table
            .stream_arn
            .starts_with(&format!("{}/stream/", table.arn))
    );

    put_item(
        &dynamodb,
        &table,
        "p1",
        "s1",
        &[("n", AttributeValue::N("1".into()))],
    )
    .await;
    update_item(
        &dynamodb,
        &table,
        "p1",
        "s1",
        &[
            ("n", AttributeValue::N("2".into())),
            ("tag", AttributeValue::S("x".into())),
        ],
    )
    .await;
    delete_item(&dynamodb, &table, "p1", "s1").await;

    let records = read_table_stream(&moto.dynamodb_streams(), &table).await;
    let names: Vec<OperationType> = records
        .iter()
        .filter_map(|r| r.event_name.clone())
        .collect();
    assert_eq!(
        names,
        [
            OperationType::Insert,
            OperationType::Modify,
            OperationType::Remove
        ]
    );
    let key = [
        (
            "pk".to_owned(),
            aws_sdk_dynamodbstreams::types::AttributeValue::S("p1".into()),
        ),
        (
            "sk".to_owned(),
            aws_sdk_dynamodbstreams::types::AttributeValue::S("s1".into()),
        ),
    ]
    .into();
    let n = |r: &aws_sdk_dynamodbstreams::types::StreamRecord, old: bool| {
        let image = if old { &r.old_image } else { &r.new_image };
        image
            .as_ref()
            .and_then(|i| i.get("n"))
            .and_then(|v| v.as_n().ok())
            .cloned()
    };
    let stream_records: Vec<_> = records
        .iter()
        .map(|r| r.dynamodb.clone().unwrap())
        .collect();
    for r in &stream_records {
        assert_eq!(r.keys.as_ref(), Some(&key));
    }
    assert_eq!(n(&stream_records[0], false).as_deref(), Some("1"));
    assert_eq!(n(&stream_records[0], true), None);
    assert_eq!(n(&stream_records[1], true).as_deref(), Some("1"));
    assert_eq!(n(&stream_records[1], false).as_deref(), Some("2"));
    assert_eq!(n(&stream_records[2], true).as_deref(), Some("2"));
    assert!(stream_records[2].new_image.is_none());
    for pair in stream_records.windows(2) {
        let (a, b) = (
            pair[0].sequence_number.as_deref(),
            pair[1].sequence_number.as_deref(),
        );
        assert_eq!(cmp_sequence(a.unwrap(), b.unwrap()), Ordering::Less);
    }
    for r in &records {
        assert_eq!(r.event_source.as_deref(), Some("aws:dynamodb"));
        assert!(r.event_version.is_some());
    }

    delete_table(&dynamodb, &table).await;
}

#[tokio::test]
async fn kinesis_local_split_and_merge_show_lineage() {
    let local = KinesisLocal::start().await;
    let kinesis = local.kinesis();
    let stream = create_stream(&kinesis, &random_name("harness"), 1).await;
    assert_eq!(
        stream.arn,
        format!(
            "arn:aws:kinesis:us-east-1:123456789012:stream/{}",
            stream.name
        )
    );
    let parent = list_shards(&kinesis, &stream).await[0].shard_id.clone();
    let keys: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("key-{i}"), format!("before-{i}").into_bytes()))
        .collect();
    let before = put_records(&kinesis, &stream, &keys).await;
    assert!(before.iter().all(|(shard, _)| *shard == parent));

    let [low, high] = split_shard(&kinesis, &stream, &parent).await;
    let keys: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("key-{i}"), format!("after-{i}").into_bytes()))
        .collect();
    let after_split = put_records(&kinesis, &stream, &keys).await;
    assert!(
        after_split
            .iter()
            .all(|(shard, _)| *shard == low || *shard == high)
    );
    assert!(after_split.iter().any(|(shard, _)| *shard == low));
    assert!(after_split.iter().any(|(shard, _)| *shard == high));
    // 56-digit sequence numbers: children's are greater than the parent's.
    for (_, sequence) in before.iter().chain(&after_split) {
        assert_eq!(sequence.len(), 56, "{sequence}");
    }
    assert_eq!(
        cmp_sequence(&before[9].1, &after_split[0].1),
        Ordering::Less
    );

    let merged = merge_shards(&kinesis, &stream, &low, &high).await;
    let shards = list_shards(&kinesis, &stream).await;
    let lineage: Vec<(&str, Option<&str>, Option<&str>, bool)> = shards
        .iter()
        .map(|s| {
            let closed = s
                .sequence_number_range
                .as_ref()
                .and_then(|r| r.ending_sequence_number.as_ref())
                .is_some();
            (
                s.shard_id.as_str(),
                s.parent_shard_id.as_deref(),
                s.adjacent_parent_shard_id.as_deref(),
                closed,
            )
        })
        .collect();
    assert_eq!(
        lineage,
        [
            (parent.as_str(), None, None, true),
            (low.as_str(), Some(parent.as_str()), None, true),
            (high.as_str(), Some(parent.as_str()), None, true),
            (
                merged.as_str(),
                Some(low.as_str()),
                Some(high.as_str()),
                false
            ),
        ]
    );
    let (merged_shard, _) = put_record(&kinesis, &stream, "key-0", b"merged").await;
    assert_eq!(merged_shard, merged);

    // The closed parent ends: its last GetRecords has no next iterator and names the children.
    let mut iterator = kinesis
        .get_shard_iterator()
        .stream_arn(&stream.arn)
        .shard_id(&parent)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator;
    let mut data = Vec::new();
    let mut children = Vec::new();
    let mut calls = 0;
    while let Some(current) = iterator {
        calls += 1;
        assert!(calls <= 20, "the closed parent shard did not end");
        let out = kinesis
            .get_records()
            .stream_arn(&stream.arn)
            .shard_iterator(current)
            .send()
            .await
            .unwrap();
        data.extend(out.records.iter().map(|r| r.data.as_ref().to_vec()));
        iterator = out.next_shard_iterator;
        if iterator.is_none() {
            children = out.child_shards.unwrap_or_default();
        }
    }
    assert_eq!(
        data,
        (0..10)
            .map(|i| format!("before-{i}").into_bytes())
            .collect::<Vec<_>>()
    );
    let mut child_ids: Vec<&str> = children.iter().map(|c| c.shard_id.as_str()).collect();
    child_ids.sort();
    assert_eq!(child_ids, [low.as_str(), high.as_str()]);

    delete_stream(&kinesis, &stream).await;
}

/// Injects `$fault` once for `$op`, expects `$call` to fail with a service error matching
/// `$pattern`, then expects the same call to pass through to moto and succeed.
macro_rules! assert_fault_once {
    ($proxy:expr, $op:expr, $fault:expr, $call:expr, $pattern:pat $(if $guard:expr)?) => {{
        let calls = $proxy.calls($op);
        let injected = $proxy.injected($op);
        let fault = $fault;
        $proxy.inject($op, fault.clone(), 1);
        let err = $call
            .await
            .expect_err("the injected fault")
            .into_service_error();
        assert!(
            matches!(err, $pattern $(if $guard)?),
            "{} with {:?}: got {err:?}",
            $op,
            fault
        );
        $call
            .await
            .unwrap_or_else(|e| panic!("{} after {fault:?}: {e:?}", $op));
        assert_eq!($proxy.calls($op), calls + 2, "calls of {}", $op);
        assert_eq!($proxy.injected($op), injected + 1, "faults served to {}", $op);
    }};
}

#[tokio::test]
async fn fault_proxy_injects_kinesis_faults_the_sdk_recognises() {
    let moto = Moto::start().await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let direct = moto.kinesis();
    let stream = create_stream(&direct, &random_name("harness"), 1).await;
    put_record(&direct, &stream, "k", b"payload").await;
    let kinesis = proxy.kinesis();

    let shard_id = list_shards(&kinesis, &stream).await[0].shard_id.clone();
    let get_iterator = || {
        kinesis
            .get_shard_iterator()
            .stream_arn(&stream.arn)
            .shard_id(&shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
    };
    let iterator = get_iterator().await.unwrap().shard_iterator.unwrap();
    let get_records = || {
        kinesis
            .get_records()
            .stream_arn(&stream.arn)
            .shard_iterator(&iterator)
            .send()
    };
    assert_eq!(get_records().await.unwrap().records.len(), 1);
    assert_eq!(proxy.injected("GetRecords"), 0);

    assert_fault_once!(
        proxy,
        "GetRecords",
        Fault::ExpiredIterator,
        get_records(),
        GetRecordsError::ExpiredIteratorException(_)
    );
    assert_fault_once!(
        proxy,
        "GetRecords",
        Fault::ProvisionedThroughputExceeded,
        get_records(),
        GetRecordsError::ProvisionedThroughputExceededException(_)
    );
    assert_fault_once!(
        proxy,
        "GetRecords",
        Fault::InternalFailure,
        get_records(),
        GetRecordsError::InternalFailureException(_)
    );
    // Not modeled for Kinesis: unhandled, with its code.
    assert_fault_once!(proxy, "GetRecords", Fault::TrimmedDataAccess, get_records(),
        ref e if e.code() == Some("TrimmedDataAccessException"));
    assert_fault_once!(
        proxy,
        "GetShardIterator",
        Fault::ProvisionedThroughputExceeded,
        get_iterator(),
        GetShardIteratorError::ProvisionedThroughputExceededException(_)
    );
    assert_fault_once!(
        proxy,
        "GetShardIterator",
        Fault::InternalFailure,
        get_iterator(),
        GetShardIteratorError::InternalFailureException(_)
    );
    let list = || kinesis.list_shards().stream_arn(&stream.arn).send();
    assert_fault_once!(
        proxy,
        "ListShards",
        Fault::LimitExceeded,
        list(),
        ListShardsError::LimitExceededException(_)
    );

    // The raw answer: status, __type and message as AWS sends them.
    proxy.inject("Kinesis_20131202.GetRecords", Fault::InternalFailure, 1);
    let err = get_records().await.unwrap_err();
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
    proxy.inject("GetRecords", Fault::ExpiredIterator, 1);
    let err = get_records().await.unwrap_err().into_service_error();
    assert_eq!(err.code(), Some("ExpiredIteratorException"));
    assert_eq!(err.message(), Some("Iterator expired"));

    // Faults are served in order, `times` each, and only to the named operation.
    proxy.inject("GetRecords", Fault::LimitExceeded, 2);
    proxy.inject("GetRecords", Fault::ExpiredIterator, 1);
    get_iterator().await.unwrap();
    for expected in [
        "LimitExceededException",
        "LimitExceededException",
        "ExpiredIteratorException",
    ] {
        let err = get_records().await.unwrap_err().into_service_error();
        assert_eq!(err.code(), Some(expected));
    }
    get_records().await.unwrap();
    assert_eq!(proxy.injected("GetRecords"), 9);
    assert_eq!(proxy.calls("GetRecords"), 15);
    assert_eq!(proxy.calls("Kinesis_20131202.GetRecords"), 15);
    assert_eq!(proxy.injected("GetShardIterator"), 2);
    assert_eq!(proxy.calls("GetShardIterator"), 6);

    // With the SDK's default retry policy, a single throttle never reaches the caller.
    let retrying = aws_sdk_kinesis::Client::from_conf(
        direct
            .config()
            .to_builder()
            .endpoint_url(proxy.endpoint())
            .build(),
    );
    proxy.inject("GetRecords", Fault::ProvisionedThroughputExceeded, 1);
    let out = retrying
        .get_records()
        .stream_arn(&stream.arn)
        .shard_iterator(&iterator)
        .send()
        .await
        .unwrap();
    assert_eq!(out.records.len(), 1);
    assert_eq!(proxy.injected("GetRecords"), 10);
    assert_eq!(proxy.calls("GetRecords"), 17);
}

#[tokio::test]
async fn fault_proxy_injects_dynamodb_streams_faults_the_sdk_recognises() {
    let moto = Moto::start().await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let dynamodb = moto.dynamodb();
    let table = create_table_with_stream(&dynamodb, &random_name("harness"), "NEW_IMAGE").await;
    put_item(&dynamodb, &table, "p", "s", &[]).await;
    let streams = proxy.dynamodb_streams();

    let describe = || {
        streams
            .describe_stream()
            .stream_arn(&table.stream_arn)
            .send()
    };
    let shard_id = describe()
        .await
        .unwrap()
        .stream_description
        .unwrap()
        .shards
        .unwrap()[0]
        .shard_id
        .clone()
        .unwrap();
    let get_iterator = || {
        streams
            .get_shard_iterator()
            .stream_arn(&table.stream_arn)
            .shard_id(&shard_id)
            .shard_iterator_type(DdbShardIteratorType::TrimHorizon)
            .send()
    };
    let iterator = get_iterator().await.unwrap().shard_iterator.unwrap();
    let get_records = || streams.get_records().shard_iterator(&iterator).send();
    assert_eq!(get_records().await.unwrap().records.unwrap().len(), 1);

    assert_fault_once!(
        proxy,
        "GetRecords",
        Fault::ExpiredIterator,
        get_records(),
        DdbGetRecordsError::ExpiredIteratorException(_)
    );
    assert_fault_once!(
        proxy,
        "GetRecords",
        Fault::TrimmedDataAccess,
        get_records(),
        DdbGetRecordsError::TrimmedDataAccessException(_)
    );
    assert_fault_once!(
        proxy,
        "GetRecords",
        Fault::LimitExceeded,
        get_records(),
        DdbGetRecordsError::LimitExceededException(_)
    );
    assert_fault_once!(
        proxy,
        "GetRecords",
        Fault::InternalFailure,
        get_records(),
        DdbGetRecordsError::InternalServerError(_)
    );
    // Not modeled for DynamoDB Streams: unhandled, with its code.
    assert_fault_once!(proxy, "GetRecords", Fault::ProvisionedThroughputExceeded, get_records(),
        ref e if e.code() == Some("ProvisionedThroughputExceededException"));
    assert_fault_once!(
        proxy,
        "GetShardIterator",
        Fault::TrimmedDataAccess,
        get_iterator(),
        DdbGetShardIteratorError::TrimmedDataAccessException(_)
    );
    assert_fault_once!(
        proxy,
        "DynamoDBStreams_20120810.DescribeStream",
        Fault::InternalFailure,
        describe(),
        DescribeStreamError::InternalServerError(_)
    );
    let custom = Fault::Custom {
        status: 400,
        error_type: "ResourceNotFoundException".into(),
        message: "gone".into(),
    };
    assert_fault_once!(
        proxy,
        "DescribeStream",
        custom,
        describe(),
        DescribeStreamError::ResourceNotFoundException(_)
    );
    assert_eq!(proxy.calls("DescribeStream"), 5);
    assert_eq!(proxy.injected("DescribeStream"), 2);
}

#[tokio::test]
async fn fault_proxy_forwards_requests_and_answers_as_is() {
    let function = FunctionServer::start(|event| {
        Reply::json(&json!({ "echo": event })).header("x-upstream", "yes")
    })
    .await;
    let proxy = FaultProxy::start(&format!("http://127.0.0.1:{}", function.port())).await;
    let body = json!({ "Records": [{ "n": 1 }] });
    let response = reqwest::Client::new()
        .post(format!("{}/some/path?x=1", proxy.endpoint()))
        .header("authorization", "AWS4-HMAC-SHA256 Credential=test/x")
        .header("x-amz-target", "Test_1.Echo")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream"], "yes");
    let answer: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(answer, json!({ "echo": body }));
    let invocation = &function.wait_invocations(1, Duration::from_secs(5)).await[0];
    assert_eq!(invocation.event, body);
    assert_eq!(
        invocation.header("authorization"),
        Some("AWS4-HMAC-SHA256 Credential=test/x")
    );
    assert_eq!(invocation.header("x-amz-target"), Some("Test_1.Echo"));
    assert_eq!(proxy.calls("Echo"), 1);
    assert_eq!(proxy.injected("Echo"), 0);

    proxy.inject("Echo", Fault::InternalFailure, 1);
    let response = reqwest::Client::new()
        .post(proxy.endpoint())
        .header("x-amz-target", "Test_1.Echo")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(function.invocations().len(), 1, "a fault is not forwarded");
}

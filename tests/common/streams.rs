//! Kinesis and DynamoDB Streams helpers for the integration tests.
//!
//! - SDK clients for moto or LocalStack: [`Emulator::kinesis`], [`Emulator::dynamodb`],
//!   [`Emulator::dynamodb_streams`].
//! - [`KinesisLocal`]: a kinesis-local server (through `scripts/kinesis-local run`), for
//!   resharding tests: moto routes records wrongly after a split or merge.
//! - Kinesis: [`create_stream`], [`put_records`], [`put_record`], [`list_shards`],
//!   [`split_shard`], [`merge_shards`], [`delete_stream`], [`read_shard`].
//! - DynamoDB: [`create_table_with_stream`], [`put_item`], [`update_item`], [`delete_item`],
//!   [`delete_table`], [`read_table_stream`].
//! - [`FaultProxy`]: an HTTP proxy in front of moto that answers chosen AWS JSON calls with
//!   injected errors.
//! - [`cmp_sequence`]: orders sequence numbers of any length (moto: "1", "2", ...; AWS and
//!   kinesis-local: up to 56 digits); [`shard_of`] and [`sequence_of`] read them off a
//!   Kinesis record as a function receives it.
//!
//! Every helper panics on an unexpected error, and every wait has a timeout.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client as DynamoDbClient;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus,
};
use aws_sdk_dynamodbstreams::Client as DynamoDbStreamsClient;
use aws_sdk_dynamodbstreams::types::ShardIteratorType as DynamoDbShardIteratorType;
use aws_sdk_kinesis::Client as KinesisClient;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::timeout::TimeoutConfig;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{
    PutRecordsRequestEntry, Record, Shard, ShardIteratorType, StreamStatus,
};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use esmd::config::raw::{RawFunction, RawMapping};
use tokio::sync::oneshot;

use super::{
    Emulator, POLL_INTERVAL, REPO, free_port, read_lossy, sdk_config, start_emulator, wait_until,
};

/// How long stream and table state changes (create, reshard, delete) may take.
const STATE_TIMEOUT: Duration = Duration::from_secs(30);

impl Emulator {
    /// A Kinesis client for this server (us-east-1, static test credentials).
    pub fn kinesis(&self) -> KinesisClient {
        KinesisClient::new(&sdk_config(&self.endpoint))
    }

    /// A DynamoDB client for this server.
    pub fn dynamodb(&self) -> DynamoDbClient {
        DynamoDbClient::new(&sdk_config(&self.endpoint))
    }

    /// A DynamoDB Streams client for this server.
    pub fn dynamodb_streams(&self) -> DynamoDbStreamsClient {
        DynamoDbStreamsClient::new(&sdk_config(&self.endpoint))
    }
}

/// Compares two sequence numbers as decimal numbers of any length.
pub fn cmp_sequence(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The shard of a Kinesis record as a function receives it (from its `eventID`).
pub fn shard_of(record: &serde_json::Value) -> String {
    let id = record["eventID"].as_str().unwrap();
    id.split_once(':').unwrap().0.to_string()
}

/// The sequence number of a Kinesis record as a function receives it.
pub fn sequence_of(record: &serde_json::Value) -> String {
    record["kinesis"]["sequenceNumber"]
        .as_str()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------------------
// kinesis-local

/// A kinesis-local server on a loopback port (account 123456789012, us-east-1, instant
/// create/split/merge). Killed on drop; it also exits by itself if the test process dies.
pub struct KinesisLocal {
    pub endpoint: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl KinesisLocal {
    /// Starts kinesis-local on a free port and waits until it answers a ListStreams.
    pub async fn start() -> KinesisLocal {
        let main_js = Path::new(REPO).join(".emu/node_modules/kinesis-local/main.js");
        assert!(
            main_js.exists(),
            "kinesis-local is not installed ({} is missing): run scripts/test or scripts/kinesis-local install",
            main_js.display()
        );
        let (port, child, log) = start_emulator(
            "kinesis-local",
            Duration::from_secs(60),
            |port, log| {
                let tls_port = std::iter::repeat_with(free_port)
                    .find(|p| *p != port)
                    .expect("a second free port");
                Command::new(Path::new(REPO).join("scripts/kinesis-local"))
                    .args(["run", &port.to_string(), &tls_port.to_string()])
                    .arg(std::process::id().to_string())
                    .stdin(Stdio::null())
                    .stdout(log.reopen().expect("reopen kinesis-local log file"))
                    .stderr(log.reopen().expect("reopen kinesis-local log file"))
                    .spawn()
                    .expect("spawn scripts/kinesis-local run")
            },
            |endpoint| {
                let config = aws_sdk_kinesis::config::Builder::from(&sdk_config(&endpoint))
                    .retry_config(RetryConfig::disabled())
                    .timeout_config(
                        TimeoutConfig::builder()
                            .operation_timeout(Duration::from_secs(2))
                            .build(),
                    )
                    .build();
                let call = KinesisClient::from_conf(config).list_streams().send();
                async move { call.await.is_ok() }
            },
        )
        .await;
        KinesisLocal {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            log,
        }
    }

    /// A Kinesis client for this server (us-east-1, static test credentials).
    pub fn kinesis(&self) -> KinesisClient {
        KinesisClient::new(&sdk_config(&self.endpoint))
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        read_lossy(self.log.path())
    }
}

impl Drop for KinesisLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// Kinesis

/// A stream created through [`create_stream`].
#[derive(Clone, Debug)]
pub struct Stream {
    pub name: String,
    pub arn: String,
}

/// The stream's status, or `None` once it does not exist.
async fn stream_status(client: &KinesisClient, name: &str) -> Option<StreamStatus> {
    match client
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
    {
        Ok(out) => out
            .stream_description_summary
            .map(|summary| summary.stream_status),
        Err(e) if e.code() == Some("ResourceNotFoundException") => None,
        Err(e) => panic!("DescribeStreamSummary {name}: {e:?}"),
    }
}

async fn wait_active(client: &KinesisClient, name: &str) {
    wait_until(
        &format!("stream {name} to be ACTIVE"),
        STATE_TIMEOUT,
        || async move {
            (stream_status(client, name).await == Some(StreamStatus::Active)).then_some(())
        },
    )
    .await
}

/// Creates a provisioned stream with `shard_count` shards and waits until it is ACTIVE.
pub async fn create_stream(client: &KinesisClient, name: &str, shard_count: i32) -> Stream {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shard_count)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateStream {name}: {e:?}"));
    wait_active(client, name).await;
    let arn = client
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeStreamSummary {name}: {e:?}"))
        .stream_description_summary
        .expect("DescribeStreamSummary returns a summary")
        .stream_arn;
    Stream {
        name: name.to_owned(),
        arn,
    }
}

/// Writes one record; returns its `(shard id, sequence number)`.
pub async fn put_record(
    client: &KinesisClient,
    stream: &Stream,
    partition_key: &str,
    data: &[u8],
) -> (String, String) {
    let out = client
        .put_record()
        .stream_arn(&stream.arn)
        .partition_key(partition_key)
        .data(Blob::new(data))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutRecord to {}: {e:?}", stream.name));
    (out.shard_id, out.sequence_number)
}

/// Writes `(partition key, data)` records with PutRecords, 500 per request, in order; entries
/// that fail are retried (after the rest of their request, so a retried record can land after
/// later ones of its key) until they succeed or 30 s have passed. Returns each record's
/// `(shard id, sequence number)`, in input order.
pub async fn put_records(
    client: &KinesisClient,
    stream: &Stream,
    records: &[(String, Vec<u8>)],
) -> Vec<(String, String)> {
    let mut written = Vec::with_capacity(records.len());
    for chunk in records.chunks(500) {
        let mut results: Vec<Option<(String, String)>> = vec![None; chunk.len()];
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        let deadline = tokio::time::Instant::now() + STATE_TIMEOUT;
        while !pending.is_empty() {
            let entries = pending
                .iter()
                .map(|&i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(&chunk[i].0)
                        .data(Blob::new(chunk[i].1.clone()))
                        .build()
                        .expect("a complete PutRecords entry")
                })
                .collect();
            let out = client
                .put_records()
                .stream_arn(&stream.arn)
                .set_records(Some(entries))
                .send()
                .await
                .unwrap_or_else(|e| panic!("PutRecords to {}: {e:?}", stream.name));
            assert_eq!(
                out.records.len(),
                pending.len(),
                "PutRecords answers one entry per record"
            );
            let mut failed = Vec::new();
            let mut last_error = String::new();
            for (&i, entry) in pending.iter().zip(out.records) {
                match (entry.error_code, entry.shard_id, entry.sequence_number) {
                    (None, Some(shard), Some(sequence)) => results[i] = Some((shard, sequence)),
                    (code, ..) => {
                        failed.push(i);
                        last_error = format!("{code:?}: {:?}", entry.error_message);
                    }
                }
            }
            pending = failed;
            if !pending.is_empty() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "PutRecords to {}: {} entries still failing after {STATE_TIMEOUT:?}; last error {last_error}",
                    stream.name,
                    pending.len()
                );
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        written.extend(results.into_iter().map(|r| r.expect("every entry written")));
    }
    written
}

/// All shards of the stream, open and closed, over all ListShards pages. Sets no MaxResults
/// (moto rejects a NextToken request when MaxResults was set).
pub async fn list_shards(client: &KinesisClient, stream: &Stream) -> Vec<Shard> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10_000 {
        let request = match &token {
            None => client.list_shards().stream_arn(&stream.arn),
            Some(token) => client.list_shards().next_token(token),
        };
        let out = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("ListShards {}: {e:?}", stream.name));
        shards.extend(out.shards.unwrap_or_default());
        match out.next_token {
            Some(next) if !next.is_empty() => token = Some(next),
            _ => return shards,
        }
    }
    panic!(
        "ListShards {}: no last page after 10,000 pages",
        stream.name
    );
}

fn hash_range(shard: &Shard) -> (u128, u128) {
    let range = shard
        .hash_key_range
        .as_ref()
        .unwrap_or_else(|| panic!("shard {} has no HashKeyRange", shard.shard_id));
    let parse = |key: &str| {
        key.parse::<u128>()
            .unwrap_or_else(|e| panic!("hash key {key:?} of {}: {e}", shard.shard_id))
    };
    (
        parse(&range.starting_hash_key),
        parse(&range.ending_hash_key),
    )
}

/// Splits `shard_id` at the middle of its hash key range and waits until the stream is ACTIVE
/// with both children listed. Returns the children's ids, lower half first.
pub async fn split_shard(client: &KinesisClient, stream: &Stream, shard_id: &str) -> [String; 2] {
    let shards = list_shards(client, stream).await;
    let shard = shards
        .iter()
        .find(|s| s.shard_id == shard_id)
        .unwrap_or_else(|| panic!("no shard {shard_id} in {}", stream.name));
    let (start, end) = hash_range(shard);
    assert!(end > start, "shard {shard_id} covers a single hash key");
    let new_start = start + (end - start) / 2 + 1;
    client
        .split_shard()
        .stream_arn(&stream.arn)
        .shard_to_split(shard_id)
        .new_starting_hash_key(new_start.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("SplitShard {shard_id} of {}: {e:?}", stream.name));
    let what = format!("split of {shard_id} in {} to complete", stream.name);
    wait_until(&what, STATE_TIMEOUT, || async move {
        if stream_status(client, &stream.name).await != Some(StreamStatus::Active) {
            return None;
        }
        let mut children: Vec<Shard> = list_shards(client, stream)
            .await
            .into_iter()
            .filter(|s| s.parent_shard_id.as_deref() == Some(shard_id))
            .collect();
        if children.len() != 2 {
            return None;
        }
        children.sort_by_key(|s| hash_range(s).0);
        Some([children[0].shard_id.clone(), children[1].shard_id.clone()])
    })
    .await
}

/// Merges the adjacent shards `shard` and `adjacent` and waits until the stream is ACTIVE
/// with the child listed. Returns the child's id.
pub async fn merge_shards(
    client: &KinesisClient,
    stream: &Stream,
    shard: &str,
    adjacent: &str,
) -> String {
    client
        .merge_shards()
        .stream_arn(&stream.arn)
        .shard_to_merge(shard)
        .adjacent_shard_to_merge(adjacent)
        .send()
        .await
        .unwrap_or_else(|e| panic!("MergeShards {shard} + {adjacent} of {}: {e:?}", stream.name));
    let what = format!(
        "merge of {shard} and {adjacent} in {} to complete",
        stream.name
    );
    wait_until(&what, STATE_TIMEOUT, || async move {
        if stream_status(client, &stream.name).await != Some(StreamStatus::Active) {
            return None;
        }
        list_shards(client, stream)
            .await
            .into_iter()
            .find(|s| {
                let parents = (
                    s.parent_shard_id.as_deref(),
                    s.adjacent_parent_shard_id.as_deref(),
                );
                parents == (Some(shard), Some(adjacent)) || parents == (Some(adjacent), Some(shard))
            })
            .map(|s| s.shard_id)
    })
    .await
}

/// Deletes the stream (and its consumers) and waits until it is gone.
pub async fn delete_stream(client: &KinesisClient, stream: &Stream) {
    client
        .delete_stream()
        .stream_arn(&stream.arn)
        .enforce_consumer_deletion(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteStream {}: {e:?}", stream.name));
    let what = format!("stream {} to be deleted", stream.name);
    wait_until(&what, STATE_TIMEOUT, || async move {
        stream_status(client, &stream.name)
            .await
            .is_none()
            .then_some(())
    })
    .await
}

/// Reads a shard from TRIM_HORIZON until a GetRecords call returns no records or no next
/// iterator (moto never ends a closed shard). Passes StreamARN to both calls, as moto needs.
pub async fn read_shard(client: &KinesisClient, stream: &Stream, shard_id: &str) -> Vec<Record> {
    let mut iterator = client
        .get_shard_iterator()
        .stream_arn(&stream.arn)
        .shard_id(shard_id)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetShardIterator {shard_id} of {}: {e:?}", stream.name))
        .shard_iterator;
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + STATE_TIMEOUT;
    while let Some(current) = iterator {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reading {shard_id} of {} took over {STATE_TIMEOUT:?}",
            stream.name
        );
        let out = client
            .get_records()
            .stream_arn(&stream.arn)
            .shard_iterator(current)
            .limit(10_000)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetRecords {shard_id} of {}: {e:?}", stream.name));
        if out.records.is_empty() {
            break;
        }
        records.extend(out.records);
        iterator = out.next_shard_iterator;
    }
    records
}

// ---------------------------------------------------------------------------------------
// DynamoDB

/// A table created through [`create_table_with_stream`].
#[derive(Clone, Debug)]
pub struct Table {
    pub name: String,
    pub arn: String,
    pub stream_arn: String,
}

/// Creates an on-demand table keyed by `pk` (S, hash) and `sk` (S, range) with a stream of
/// `view_type` (`KEYS_ONLY`, `NEW_IMAGE`, `OLD_IMAGE`, `NEW_AND_OLD_IMAGES`); waits until
/// it is ACTIVE with a stream ARN.
pub async fn create_table_with_stream(
    client: &DynamoDbClient,
    name: &str,
    view_type: &str,
) -> Table {
    let attribute = |attribute_name: &str| {
        AttributeDefinition::builder()
            .attribute_name(attribute_name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("a complete attribute definition")
    };
    let key = |attribute_name: &str, key_type| {
        KeySchemaElement::builder()
            .attribute_name(attribute_name)
            .key_type(key_type)
            .build()
            .expect("a complete key schema element")
    };
    client
        .create_table()
        .table_name(name)
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view_type))
                .build()
                .expect("a complete stream specification"),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTable {name}: {e:?}"));
    wait_until(
        &format!("table {name} to be ACTIVE"),
        STATE_TIMEOUT,
        || async move {
            let table = client
                .describe_table()
                .table_name(name)
                .send()
                .await
                .unwrap_or_else(|e| panic!("DescribeTable {name}: {e:?}"))
                .table?;
            if table.table_status != Some(TableStatus::Active) {
                return None;
            }
            Some(Table {
                name: name.to_owned(),
                arn: table.table_arn?,
                stream_arn: table.latest_stream_arn?,
            })
        },
    )
    .await
}

fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
        ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

/// Writes the item `{pk, sk, attributes...}` (PutItem: INSERT, or MODIFY if it existed).
pub async fn put_item(
    client: &DynamoDbClient,
    table: &Table,
    pk: &str,
    sk: &str,
    attributes: &[(&str, AttributeValue)],
) {
    let mut item = key(pk, sk);
    item.extend(
        attributes
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone())),
    );
    client
        .put_item()
        .table_name(&table.name)
        .set_item(Some(item))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutItem {pk}/{sk} into {}: {e:?}", table.name));
}

/// Sets `attributes` on the item `{pk, sk}` (UpdateItem `SET`; creates the item if missing).
pub async fn update_item(
    client: &DynamoDbClient,
    table: &Table,
    pk: &str,
    sk: &str,
    attributes: &[(&str, AttributeValue)],
) {
    assert!(
        !attributes.is_empty(),
        "update_item needs an attribute to set"
    );
    let mut request = client
        .update_item()
        .table_name(&table.name)
        .set_key(Some(key(pk, sk)));
    let mut assignments = Vec::new();
    for (i, (name, value)) in attributes.iter().enumerate() {
        assignments.push(format!("#a{i} = :v{i}"));
        request = request
            .expression_attribute_names(format!("#a{i}"), *name)
            .expression_attribute_values(format!(":v{i}"), value.clone());
    }
    request
        .update_expression(format!("SET {}", assignments.join(", ")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("UpdateItem {pk}/{sk} in {}: {e:?}", table.name));
}

/// Deletes the item `{pk, sk}`.
pub async fn delete_item(client: &DynamoDbClient, table: &Table, pk: &str, sk: &str) {
    client
        .delete_item()
        .table_name(&table.name)
        .set_key(Some(key(pk, sk)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteItem {pk}/{sk} from {}: {e:?}", table.name));
}

/// Deletes the table and waits until it is gone.
pub async fn delete_table(client: &DynamoDbClient, table: &Table) {
    client
        .delete_table()
        .table_name(&table.name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteTable {}: {e:?}", table.name));
    let what = format!("table {} to be deleted", table.name);
    wait_until(&what, STATE_TIMEOUT, || async move {
        match client.describe_table().table_name(&table.name).send().await {
            Err(e) if e.code() == Some("ResourceNotFoundException") => Some(()),
            Err(e) => panic!("DescribeTable {}: {e:?}", table.name),
            Ok(_) => None,
        }
    })
    .await
}

/// Reads every shard of the table's stream from TRIM_HORIZON, in DescribeStream order, each
/// until a GetRecords call returns no records or no next iterator.
pub async fn read_table_stream(
    client: &DynamoDbStreamsClient,
    table: &Table,
) -> Vec<aws_sdk_dynamodbstreams::types::Record> {
    let mut shard_ids = Vec::new();
    let mut start: Option<String> = None;
    loop {
        let description = client
            .describe_stream()
            .stream_arn(&table.stream_arn)
            .set_exclusive_start_shard_id(start.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeStream {}: {e:?}", table.stream_arn))
            .stream_description
            .expect("DescribeStream returns a description");
        shard_ids.extend(
            description
                .shards
                .unwrap_or_default()
                .into_iter()
                .filter_map(|s| s.shard_id),
        );
        match description.last_evaluated_shard_id {
            Some(last) if start.as_ref() != Some(&last) => start = Some(last),
            _ => break,
        }
    }
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + STATE_TIMEOUT;
    for shard_id in shard_ids {
        let mut iterator = client
            .get_shard_iterator()
            .stream_arn(&table.stream_arn)
            .shard_id(&shard_id)
            .shard_iterator_type(DynamoDbShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetShardIterator {shard_id}: {e:?}"))
            .shard_iterator;
        while let Some(current) = iterator {
            assert!(
                tokio::time::Instant::now() < deadline,
                "reading the stream of {} took over {STATE_TIMEOUT:?}",
                table.name
            );
            let out = client
                .get_records()
                .shard_iterator(current)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GetRecords {shard_id}: {e:?}"));
            let batch = out.records.unwrap_or_default();
            if batch.is_empty() {
                break;
            }
            records.extend(batch);
            iterator = out.next_shard_iterator;
        }
    }
    records
}

// ---------------------------------------------------------------------------------------
// FaultProxy

/// An error the [`FaultProxy`] answers instead of forwarding a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 400 `ExpiredIteratorException`.
    ExpiredIterator,
    /// 400 `ProvisionedThroughputExceededException`.
    ProvisionedThroughputExceeded,
    /// 400 `LimitExceededException`.
    LimitExceeded,
    /// 400 `TrimmedDataAccessException`.
    TrimmedDataAccess,
    /// 500 `InternalFailureException` for Kinesis, `InternalServerError` for DynamoDB Streams
    /// (the names each SDK models).
    InternalFailure,
    /// Any status and `__type`.
    Custom {
        status: u16,
        error_type: String,
        message: String,
    },
}

impl Fault {
    /// `(status, __type, message)` of the answer to a call with this `X-Amz-Target`.
    fn answer(&self, target: &str) -> (u16, &str, &str) {
        match self {
            Fault::ExpiredIterator => (400, "ExpiredIteratorException", "Iterator expired"),
            Fault::ProvisionedThroughputExceeded => (
                400,
                "ProvisionedThroughputExceededException",
                "Rate exceeded for shard",
            ),
            Fault::LimitExceeded => (400, "LimitExceededException", "Rate exceeded"),
            Fault::TrimmedDataAccess => (
                400,
                "TrimmedDataAccessException",
                "The operation attempted to read past the oldest stream record in a shard",
            ),
            Fault::InternalFailure if target.starts_with("DynamoDBStreams_") => {
                (500, "InternalServerError", "Internal server error")
            }
            Fault::InternalFailure => (500, "InternalFailureException", "Internal service failure"),
            Fault::Custom {
                status,
                error_type,
                message,
            } => (*status, error_type, message),
        }
    }
}

/// True if `operation` names the call with this `X-Amz-Target`: either the whole target
/// (`Kinesis_20131202.GetRecords`) or the part after its last dot (`GetRecords`).
fn names(operation: &str, target: &str) -> bool {
    target == operation
        || target
            .rsplit_once('.')
            .is_some_and(|(_, suffix)| suffix == operation)
}

#[derive(Default)]
struct Book {
    /// Faults still to serve: `(operation, fault, times left)`, served first come first.
    planned: Vec<(String, Fault, usize)>,
    /// Requests per `X-Amz-Target` (empty: none).
    calls: HashMap<String, usize>,
    /// Faults served per `X-Amz-Target`.
    injected: HashMap<String, usize>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    book: Arc<Mutex<Book>>,
}

/// An HTTP proxy on a loopback port in front of `upstream` (e.g. moto): forwards every
/// request as is (method, path, query, headers, body) and the answer back, except calls
/// whose `X-Amz-Target` matches an injected fault, which get the fault instead. Stops
/// listening on drop.
pub struct FaultProxy {
    port: u16,
    book: Arc<Mutex<Book>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FaultProxy {
    /// Starts on a free loopback port in front of `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("bind a loopback port for the fault proxy");
        let port = listener.local_addr().expect("listener address").port();
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("build the proxy's HTTP client"),
            book: Arc::default(),
        };
        let book = state.book.clone();
        let app = axum::Router::new().fallback(forward).with_state(state);
        let shutdown = super::serve(listener, app, "fault proxy");
        FaultProxy {
            port,
            book,
            shutdown: Some(shutdown),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answers the next `times` calls of `operation` (`GetRecords`, or a whole target such as
    /// `DynamoDBStreams_20120810.GetRecords`) with `fault`, after any faults already planned
    /// for them.
    pub fn inject(&self, operation: &str, fault: Fault, times: usize) {
        self.book
            .lock()
            .unwrap()
            .planned
            .push((operation.to_owned(), fault, times));
    }

    /// Drops every fault not served yet.
    pub fn clear(&self) {
        self.book.lock().unwrap().planned.clear();
    }

    /// How many faults were served to calls of `operation`.
    pub fn injected(&self, operation: &str) -> usize {
        count(&self.book.lock().unwrap().injected, operation)
    }

    /// How many calls of `operation` arrived, faulted or forwarded.
    pub fn calls(&self, operation: &str) -> usize {
        count(&self.book.lock().unwrap().calls, operation)
    }

    /// A Kinesis client through this proxy with SDK retries off, so each fault reaches the
    /// caller (the default retry policy retries 500s and throttling errors by itself).
    pub fn kinesis(&self) -> KinesisClient {
        let config = aws_sdk_kinesis::config::Builder::from(&sdk_config(&self.endpoint()))
            .retry_config(RetryConfig::disabled())
            .build();
        KinesisClient::from_conf(config)
    }

    /// A DynamoDB Streams client through this proxy with SDK retries off.
    pub fn dynamodb_streams(&self) -> DynamoDbStreamsClient {
        let config = aws_sdk_dynamodbstreams::config::Builder::from(&sdk_config(&self.endpoint()))
            .retry_config(RetryConfig::disabled())
            .build();
        DynamoDbStreamsClient::from_conf(config)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn count(per_target: &HashMap<String, usize>, operation: &str) -> usize {
    per_target
        .iter()
        .filter(|(target, _)| names(operation, target))
        .map(|(_, n)| n)
        .sum()
}

/// Headers that describe one connection or the body's framing: not copied across.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !hop_by_hop(name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
}

async fn forward(State(state): State<ProxyState>, request: Request) -> Response {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let fault = {
        let mut book = state.book.lock().unwrap();
        *book.calls.entry(target.clone()).or_default() += 1;
        let planned = book
            .planned
            .iter_mut()
            .find(|(operation, _, left)| *left > 0 && names(operation, &target));
        let fault = planned.map(|(_, fault, left)| {
            *left -= 1;
            fault.clone()
        });
        book.planned.retain(|(_, _, left)| *left > 0);
        if fault.is_some() {
            *book.injected.entry(target.clone()).or_default() += 1;
        }
        fault
    };
    if let Some(fault) = fault {
        return fault_response(&fault, &target, request.headers());
    }

    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("read body: {e}")).into_response(),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut headers);
    let upstream = state
        .http
        .request(parts.method, format!("{}{path}", state.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match upstream {
        Ok(response) => response,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("upstream: {e}")).into_response(),
    };
    let status = upstream.status();
    let upstream_headers = upstream.headers().clone();
    let body = match upstream.bytes().await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("upstream body: {e}")).into_response(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    copy_headers(&upstream_headers, response.headers_mut());
    response
}

fn fault_response(fault: &Fault, target: &str, request_headers: &HeaderMap) -> Response {
    let (status, error_type, message) = fault.answer(target);
    let body = serde_json::json!({ "__type": error_type, "message": message }).to_string();
    let content_type = request_headers
        .get("content-type")
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/x-amz-json-1.1"));
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).expect("a valid fault status");
    let headers = response.headers_mut();
    headers.insert("content-type", content_type);
    headers.insert(
        "x-amzn-requestid",
        HeaderValue::try_from(uuid::Uuid::new_v4().to_string()).expect("a valid request id"),
    );
    response
}

/// A config with the `url` function `f` and one stream mapping of `source_arn` that polls
/// a caught-up shard every 50 ms, its state in `state`; `keys` sets more mapping keys.
pub fn stream_config(
    endpoint: &str,
    state: &std::path::Path,
    source_arn: &str,
    url: &str,
    keys: RawMapping,
) -> String {
    let mut config = super::base_config(endpoint, state);
    let function = RawFunction {
        max_concurrency: Some(4),
        ..super::url_function(url)
    };
    config.functions.insert("f".into(), function);
    config.mappings.push(super::mapping(
        "f",
        source_arn,
        RawMapping {
            idle_poll_interval_ms: keys.idle_poll_interval_ms.or(Some(50)),
            ..keys
        },
    ));
    config.to_toml()
}

//! What the stream engine needs from a stream service, in its own types, so Kinesis and
//! DynamoDB Streams (and an in-memory fake in tests) adapt to one engine.

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::event::sequence::SequenceNumber;
use crate::pipeline::batch::Record;

/// One shard as a listing shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardInfo {
    pub id: String,
    /// The parent (split) or both parents (merge).
    pub parents: Vec<String>,
    /// The ending sequence number a listing gives once the shard is closed.
    pub ending: Option<SequenceNumber>,
}

impl ShardInfo {
    pub fn closed(&self) -> bool {
        self.ending.is_some()
    }
}

/// The stream and its shards.
#[derive(Debug, Clone)]
pub struct StreamDescription {
    /// The stream ARN (for DynamoDB, the resolved stream ARN with its label).
    pub arn: String,
    /// Changes when the stream is re-created: creation time or stream label.
    pub identity: String,
    pub shards: Vec<ShardInfo>,
}

impl StreamDescription {
    /// The ending sequence number of a listed shard, once the listing shows it closed.
    pub fn ending_of(&self, shard_id: &str) -> OnceLock<SequenceNumber> {
        self.shards
            .iter()
            .find(|s| s.id == shard_id)
            .and_then(|s| s.ending.clone())
            .map_or_else(OnceLock::new, OnceLock::from)
    }
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq)]
pub enum StartAt {
    TrimHorizon,
    /// Records that arrived at or after this time (epoch seconds). Sources without
    /// AT_TIMESTAMP read from the trim horizon; the engine skips the older records.
    AtTimestamp(f64),
    /// From this record on, itself included (a replay's start).
    AtSequence(SequenceNumber),
    AfterSequence(SequenceNumber),
}

/// A record read from a shard, shaped for the event already.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub sequence: SequenceNumber,
    /// The hash of the record's key (Kinesis partition key, DynamoDB item key): records
    /// of one key share a lane.
    pub key_hash: u64,
    /// Arrival in the stream, epoch seconds.
    pub arrival: f64,
    pub json: Vec<u8>,
}

impl StreamRecord {
    /// A record as a GetRecords answer gave it: its sequence number must be decimal; a
    /// missing arrival time (0.0) counts as now.
    pub fn read(
        sequence: &str,
        key: &str,
        arrival: f64,
        json: Vec<u8>,
    ) -> Result<StreamRecord, StreamError> {
        let Some(sequence) = SequenceNumber::parse(sequence) else {
            return Err(StreamError::Other(format!(
                "GetRecords: sequence number {sequence:?} is not decimal"
            )));
        };
        Ok(StreamRecord {
            sequence,
            key_hash: key_hash(key),
            arrival: known_or_now(arrival),
            json,
        })
    }
}

/// A key's hash, the same in every run: a lane is chosen by it.
pub fn key_hash(key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The iterator a GetShardIterator answer holds.
pub fn returned_iterator(iterator: Option<&str>) -> Result<String, StreamError> {
    iterator
        .map(str::to_string)
        .ok_or_else(|| StreamError::Other("GetShardIterator returned no iterator".into()))
}

impl Record for StreamRecord {
    fn json(&self) -> &[u8] {
        &self.json
    }

    fn item_id(&self) -> &str {
        self.sequence.as_str()
    }
}

/// A record's arrival time, or now when the source gave none (0.0): an emulator without
/// timestamps must not make every record look ancient to the age and start checks.
fn known_or_now(arrival: f64) -> f64 {
    if arrival > 0.0 {
        arrival
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// One GetRecords answer.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub records: Vec<StreamRecord>,
    /// `None`: the shard is closed and read to its end.
    pub next_iterator: Option<String>,
    pub millis_behind: Option<i64>,
}

/// Why a stream call failed, as far as the engine cares.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    #[error("shard iterator expired")]
    ExpiredIterator,
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("records trimmed: {0}")]
    Trimmed(String),
    #[error("{0}")]
    Other(String),
}

impl StreamError {
    /// Sorts a failed SDK call of either stream service by its error code. (The error
    /// types are smithy's, shared by every SDK crate; they are named through one of them.)
    pub fn from_sdk<E, R>(operation: &str, err: SdkError<E, R>) -> StreamError
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
        R: std::fmt::Debug,
    {
        let code = err.as_service_error().and_then(|e| e.code()).unwrap_or("");
        let detail = format!("{operation}: {}", DisplayErrorContext(&err));
        match code {
            "ExpiredIteratorException" => StreamError::ExpiredIterator,
            "TrimmedDataAccessException" => StreamError::Trimmed(detail),
            "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "KMSThrottlingException"
            | "ThrottlingException" => StreamError::Throttled(detail),
            _ => StreamError::Other(detail),
        }
    }
}

/// A stream service. Calls are not retried inside: the engine backs off itself.
pub trait StreamApi: Send + Sync + 'static {
    /// `kinesis` or `dynamodb`.
    fn source_label(&self) -> &'static str;
    /// How long to wait between polls of a shard that is caught up.
    fn idle_interval(&self) -> Duration;
    /// The most records one read may return.
    fn max_read(&self) -> usize;
    fn describe(&self) -> impl Future<Output = Result<StreamDescription, StreamError>> + Send;
    fn iterator(
        &self,
        stream_arn: &str,
        shard: &str,
        at: &StartAt,
    ) -> impl Future<Output = Result<String, StreamError>> + Send;
    fn read(
        &self,
        stream_arn: &str,
        shard: &str,
        iterator: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Page, StreamError>> + Send;
}

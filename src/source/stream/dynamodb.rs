//! DynamoDB Streams adapted to the stream engine: DescribeStream (paginated),
//! GetShardIterator, GetRecords. A table ARN without a stream label resolves to the
//! table's latest stream on every listing, so a re-created table is noticed.

use std::time::Duration;

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};

use super::api::{
    Page, ShardInfo, StartAt, StreamApi, StreamDescription, StreamError, StreamRecord,
    returned_iterator,
};
use crate::event::dynamodb::{creation_seconds, dynamodb_record, item_key};
use crate::event::sequence::SequenceNumber;

/// Lambda polls a caught-up DynamoDB Streams shard four times per second.
pub const DEFAULT_IDLE_INTERVAL: Duration = Duration::from_millis(250);
/// GetRecords returns at most 1,000 records.
const MAX_READ: usize = 1000;

pub struct DynamoDbApi {
    client: Client,
    table_name: String,
    /// The stream ARN from the config, when it names a stream label.
    stream_arn: Option<String>,
    idle_interval: Duration,
}

impl DynamoDbApi {
    pub fn new(
        client: Client,
        table_name: &str,
        stream_arn: Option<&str>,
        idle_interval: Option<Duration>,
    ) -> DynamoDbApi {
        DynamoDbApi {
            client,
            table_name: table_name.to_string(),
            stream_arn: stream_arn.map(str::to_string),
            idle_interval: idle_interval.unwrap_or(DEFAULT_IDLE_INTERVAL),
        }
    }

    /// The configured stream ARN, or the table's latest stream.
    async fn resolve(&self) -> Result<String, StreamError> {
        if let Some(arn) = &self.stream_arn {
            return Ok(arn.clone());
        }
        let mut latest: Option<(String, String)> = None;
        let mut start: Option<String> = None;
        loop {
            let output = self
                .client
                .list_streams()
                .table_name(&self.table_name)
                .set_exclusive_start_stream_arn(start.clone())
                .send()
                .await
                .map_err(|e| StreamError::from_sdk("ListStreams", e))?;
            for stream in output.streams() {
                let (Some(arn), label) = (stream.stream_arn(), stream.stream_label().unwrap_or(""))
                else {
                    continue;
                };
                if latest.as_ref().is_none_or(|(l, _)| label > l.as_str()) {
                    latest = Some((label.to_string(), arn.to_string()));
                }
            }
            start = output.last_evaluated_stream_arn().map(str::to_string);
            if start.is_none() {
                break;
            }
        }
        latest
            .map(|(_, arn)| arn)
            .ok_or_else(|| StreamError::Other(format!("table {} has no stream", self.table_name)))
    }
}

impl StreamApi for DynamoDbApi {
    fn source_label(&self) -> &'static str {
        "dynamodb"
    }

    fn idle_interval(&self) -> Duration {
        self.idle_interval
    }

    fn max_read(&self) -> usize {
        MAX_READ
    }

    async fn describe(&self) -> Result<StreamDescription, StreamError> {
        let arn = self.resolve().await?;
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let output = self
                .client
                .describe_stream()
                .stream_arn(&arn)
                .set_exclusive_start_shard_id(start.clone())
                .send()
                .await
                .map_err(|e| StreamError::from_sdk("DescribeStream", e))?;
            let Some(description) = output.stream_description() else {
                return Err(StreamError::Other("DescribeStream returned nothing".into()));
            };
            for shard in description.shards() {
                let Some(id) = shard.shard_id() else { continue };
                shards.push(ShardInfo {
                    id: id.to_string(),
                    parents: shard
                        .parent_shard_id()
                        .map(str::to_string)
                        .into_iter()
                        .collect(),
                    ending: shard
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .and_then(SequenceNumber::parse),
                });
            }
            start = description.last_evaluated_shard_id().map(str::to_string);
            if start.is_none() {
                break;
            }
        }
        let identity = arn
            .rsplit_once("/stream/")
            .map(|(_, label)| label.to_string())
            .unwrap_or_default();
        Ok(StreamDescription {
            arn,
            identity,
            shards,
        })
    }

    async fn iterator(
        &self,
        stream_arn: &str,
        shard: &str,
        at: &StartAt,
    ) -> Result<String, StreamError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard);
        let request = match at {
            // DynamoDB Streams has no AT_TIMESTAMP: the engine skips older records.
            StartAt::TrimHorizon | StartAt::AtTimestamp(_) => {
                request.shard_iterator_type(ShardIteratorType::TrimHorizon)
            }
            StartAt::AtSequence(sequence) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(sequence.as_str()),
            StartAt::AfterSequence(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence.as_str()),
        };
        let output = request
            .send()
            .await
            .map_err(|e| StreamError::from_sdk("GetShardIterator", e))?;
        returned_iterator(output.shard_iterator())
    }

    async fn read(
        &self,
        stream_arn: &str,
        _shard: &str,
        iterator: &str,
        limit: usize,
    ) -> Result<Page, StreamError> {
        let output = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit.clamp(1, MAX_READ) as i32)
            .send()
            .await
            .map_err(|e| StreamError::from_sdk("GetRecords", e))?;
        Ok(Page {
            records: stream_records(output.records(), stream_arn)?,
            next_iterator: output.next_shard_iterator().map(str::to_string),
            millis_behind: None,
        })
    }
}

/// A GetRecords page's records, each serialized for the event once, here.
pub(crate) fn stream_records(
    records: &[Record],
    stream_arn: &str,
) -> Result<Vec<StreamRecord>, StreamError> {
    records
        .iter()
        .map(|record| {
            let sequence = record.dynamodb().and_then(|d| d.sequence_number());
            StreamRecord::read(
                sequence.unwrap_or_default(),
                &item_key(record),
                creation_seconds(record),
                dynamodb_record(record, stream_arn),
            )
        })
        .collect()
}

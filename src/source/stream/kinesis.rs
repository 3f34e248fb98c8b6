//! Kinesis Data Streams adapted to the stream engine: ListShards (paginated),
//! GetShardIterator, GetRecords. GetRecords also names the stream ARN (moto needs it).

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{Record, ShardIteratorType};

use super::api::{
    Page, ShardInfo, StartAt, StreamApi, StreamDescription, StreamError, StreamRecord,
    returned_iterator,
};
use crate::event::kinesis::{KinesisContext, arrival_seconds, kinesis_record};
use crate::event::sequence::SequenceNumber;

/// Lambda polls a caught-up Kinesis shard once per second.
pub const DEFAULT_IDLE_INTERVAL: Duration = Duration::from_secs(1);
/// GetRecords returns at most 10,000 records.
const MAX_READ: usize = 10_000;

pub struct KinesisApi {
    client: Client,
    stream_arn: String,
    region: String,
    invoke_identity_arn: String,
    idle_interval: Duration,
}

impl KinesisApi {
    pub fn new(
        client: Client,
        stream_arn: &str,
        region: &str,
        invoke_identity_arn: &str,
        idle_interval: Option<Duration>,
    ) -> KinesisApi {
        KinesisApi {
            client,
            stream_arn: stream_arn.to_string(),
            region: region.to_string(),
            invoke_identity_arn: invoke_identity_arn.to_string(),
            idle_interval: idle_interval.unwrap_or(DEFAULT_IDLE_INTERVAL),
        }
    }
}

impl StreamApi for KinesisApi {
    fn source_label(&self) -> &'static str {
        "kinesis"
    }

    fn idle_interval(&self) -> Duration {
        self.idle_interval
    }

    fn max_read(&self) -> usize {
        MAX_READ
    }

    async fn describe(&self) -> Result<StreamDescription, StreamError> {
        let summary = self
            .client
            .describe_stream_summary()
            .stream_arn(&self.stream_arn)
            .send()
            .await
            .map_err(|e| StreamError::from_sdk("DescribeStreamSummary", e))?;
        let created = summary
            .stream_description_summary()
            .map(|s| s.stream_creation_timestamp())
            .map(|t| format!("{}.{:09}", t.secs(), t.subsec_nanos()))
            .unwrap_or_default();
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let request = match &next_token {
                // moto refuses a NextToken with anything else beside it
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_arn(&self.stream_arn),
            };
            let output = request
                .send()
                .await
                .map_err(|e| StreamError::from_sdk("ListShards", e))?;
            for shard in output.shards() {
                let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(str::to_string)
                    .collect();
                let ending = shard
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .and_then(SequenceNumber::parse);
                shards.push(ShardInfo {
                    id: shard.shard_id().to_string(),
                    parents,
                    ending,
                });
            }
            next_token = output.next_token().map(str::to_string);
            if next_token.is_none() {
                break;
            }
        }
        Ok(StreamDescription {
            arn: self.stream_arn.clone(),
            identity: created,
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
            StartAt::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            StartAt::AtTimestamp(seconds) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_secs_f64(*seconds)),
            StartAt::AtSequence(sequence) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence.as_str()),
            StartAt::AfterSequence(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence.as_str()),
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
        shard: &str,
        iterator: &str,
        limit: usize,
    ) -> Result<Page, StreamError> {
        let output = self
            .client
            .get_records()
            .stream_arn(stream_arn)
            .shard_iterator(iterator)
            .limit(limit.clamp(1, MAX_READ) as i32)
            .send()
            .await
            .map_err(|e| StreamError::from_sdk("GetRecords", e))?;
        let context = KinesisContext {
            shard_id: shard.to_string(),
            stream_arn: stream_arn.to_string(),
            region: self.region.clone(),
            invoke_identity_arn: self.invoke_identity_arn.clone(),
        };
        Ok(Page {
            records: stream_records(output.records(), &context)?,
            next_iterator: output.next_shard_iterator().map(str::to_string),
            millis_behind: output.millis_behind_latest(),
        })
    }
}

/// A GetRecords page's records, each serialized for the event once, here.
pub(crate) fn stream_records(
    records: &[Record],
    context: &KinesisContext,
) -> Result<Vec<StreamRecord>, StreamError> {
    records
        .iter()
        .map(|record| {
            StreamRecord::read(
                record.sequence_number(),
                record.partition_key().unwrap_or_default(),
                arrival_seconds(record),
                kinesis_record(record, context),
            )
        })
        .collect()
}

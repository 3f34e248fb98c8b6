//! `esmd replay --failures SRC`: re-drives what a mapping failed (interface.md "Replay").
//!
//! A stream mapping's failure records (wire-formats §2.5), read once at the start from a
//! JSONL file, an SQS queue or an S3 prefix, each name a shard's sequence range. They must
//! all be of the mapping's stream; their ranges become per-shard spans, sorted and merged,
//! that [`replay_spans`] re-drives. SQS failure records stay hidden while the replay runs
//! (received with the longest visibility timeout), are deleted once it settled every
//! record, and are handed back to the queue otherwise; files and S3 objects are left as
//! they are.
//!
//! For an SQS mapping, SRC is the ARN of the queue's dead-letter queue (its redrive
//! policy's target). Its messages go through the SQS source, as SQS events whose
//! `eventSourceARN` is the DLQ's, until the DLQ reads empty. Each message is delivered at
//! most once per replay: one the function fails again stays in the DLQ (handed back to it
//! at the end), and a message the function took is deleted.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use tracing::{info, warn};

use super::range::{ShardSpan, merged_by_shard, replay_spans};
use super::{ReplayContext, ReplayError};
use crate::config::{
    AwsSettings, Config, DestinationConfig, FunctionConfig, MappingConfig, SourceArn, SourceKind,
    SourceResource, SqsSettings, StreamSettings, StreamSource,
};
use crate::daemon::{AwsWiring, Ended, MappingReport, MappingState, RunReport, RunUntil, Wiring};
use crate::event::failure::StreamKind;
use crate::event::sequence::SequenceNumber;
use crate::source::Launch;
use crate::source::sqs::{
    MAX_WAIT, Queue, QueueError, Received, SqsQueue, delete_retrying, release_retrying,
};
use crate::status::StatusBoard;
use crate::status::{Activity, StatusReporter};
use crate::target::Function;

/// SQS failure records stay hidden this long while the replay runs: the longest
/// visibility timeout SQS allows (12 hours).
const HIDDEN_WHILE_REPLAYING: i32 = 43_200;
/// A dry run hides the DLQ's messages this long while it reads them, and hands them back
/// at once when done.
const HIDDEN_WHILE_LOOKING: i32 = 300;
/// How long the in-flight invocations of a DLQ replay may take to settle once it is done
/// or stopped.
const GRACEFUL_LIMIT: Duration = Duration::from_secs(30);

/// Replays `src` into the mapping of `ctx`: failure records for a stream mapping, the
/// dead-letter queue for an SQS mapping.
pub async fn replay_failures(ctx: &ReplayContext, src: &str) -> Result<RunReport, ReplayError> {
    match &ctx.mapping.kind {
        SourceKind::Stream(settings) => replay_failure_records(ctx, settings, src).await,
        SourceKind::Sqs(settings) => replay_dead_letters(ctx, settings, src).await,
    }
}

// ---------------------------------------------------------------------------------------
// failure records

/// Where failure records are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureSource {
    /// `file:///path.jsonl`: one failure record per line.
    File(PathBuf),
    /// `arn:aws:sqs:...`: one failure record per message (or per SNS notification).
    Sqs(SourceArn),
    /// `s3://bucket/prefix`: one failure record per object.
    S3 { bucket: String, prefix: String },
}

impl FailureSource {
    /// Reads SRC as `--failures` takes it for the stream mapping `mapping_id`: a file or an
    /// SQS queue as its on-failure destination names them, `s3://bucket/prefix`, or the
    /// destination's bucket ARN for the mapping's own prefix, `aws/lambda/<mapping-id>/`.
    pub fn parse(src: &str, mapping_id: &str) -> Result<FailureSource, String> {
        if let Some(rest) = src.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!(
                    "--failures {src:?} names no bucket (s3://BUCKET/PREFIX)"
                ));
            }
            return Ok(FailureSource::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        match DestinationConfig::parse(src) {
            Ok(DestinationConfig::File(path)) => Ok(FailureSource::File(path)),
            Ok(DestinationConfig::Sqs { .. }) => SourceArn::parse(src)
                .map(|(arn, _)| FailureSource::Sqs(arn))
                .map_err(|err| format!("--failures {err}")),
            Ok(DestinationConfig::S3 { bucket }) => Ok(FailureSource::S3 {
                bucket,
                prefix: format!("aws/lambda/{mapping_id}/"),
            }),
            Ok(DestinationConfig::Sns { .. }) => Err(format!(
                "--failures {src:?}: an SNS topic cannot be read back; give the SQS queue subscribed to it"
            )),
            Err(err) => Err(format!(
                "--failures {err}; expected file:///path.jsonl, an SQS queue ARN or s3://bucket/prefix"
            )),
        }
    }
}

/// The records one failure record names: `from..=through` of a shard of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRange {
    pub stream_arn: String,
    pub shard_id: String,
    pub from: SequenceNumber,
    pub through: SequenceNumber,
}

/// Reads the range of one failure record (`KinesisBatchInfo` or `DDBStreamBatchInfo`).
/// A failure record that reached an SQS queue through an SNS topic is taken out of its
/// notification.
pub fn parse_failure_record(text: &str) -> Result<FailedRange, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON failure record: {e}"))?;
    if value["Type"] == "Notification"
        && let Some(message) = value["Message"].as_str()
    {
        return parse_failure_record(message);
    }
    let info = StreamKind::ALL
        .iter()
        .find_map(|kind| value.get(kind.batch_info_key()))
        .ok_or("not a stream failure record: no KinesisBatchInfo or DDBStreamBatchInfo")?;
    let field = |name: &str| {
        info[name]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("the batch info has no {name}"))
    };
    let sequence = |name: &str| {
        let text = field(name)?;
        SequenceNumber::parse(text).ok_or_else(|| format!("{name} {text:?} is not decimal"))
    };
    let range = FailedRange {
        stream_arn: field("streamArn")?.to_string(),
        shard_id: field("shardId")?.to_string(),
        from: sequence("startSequenceNumber")?,
        through: sequence("endSequenceNumber")?,
    };
    if range.from > range.through {
        return Err(format!(
            "startSequenceNumber {} is after endSequenceNumber {}",
            range.from, range.through
        ));
    }
    Ok(range)
}

/// Whether a failure record of `stream_arn` is of the mapping's stream. A DynamoDB
/// mapping of a table (no stream label) takes records of any of the table's streams.
fn of_mapping_stream(mapping: &MappingConfig, stream: &StreamSource, stream_arn: &str) -> bool {
    let ours = mapping.source.arn.as_str();
    match stream {
        StreamSource::DynamoDb {
            stream_label: None, ..
        } => stream_arn
            .strip_prefix(ours)
            .is_some_and(|rest| rest.starts_with("/stream/")),
        _ => stream_arn == ours,
    }
}

/// The spans to re-drive: per shard, in sequence order, overlapping ranges merged (the
/// same batch may have failed in two runs). Shards in id order.
pub fn merge_spans(ranges: impl IntoIterator<Item = FailedRange>) -> Vec<ShardSpan> {
    let spans = ranges.into_iter().map(|range| ShardSpan {
        shard_id: range.shard_id,
        from: range.from,
        through: range.through,
    });
    merged_by_shard(spans)
        .into_iter()
        .flat_map(|(shard_id, spans)| {
            spans.into_iter().map(move |(from, through)| ShardSpan {
                shard_id: shard_id.clone(),
                from,
                through,
            })
        })
        .collect()
}

/// One failure record as read: where it came from (for errors) and its text.
struct ReadRecord {
    location: String,
    text: String,
}

/// Failure records read from an SQS queue, hidden until the replay settles them.
struct HeldMessages {
    queue: SqsQueue,
    receipt_handles: Vec<String>,
}

impl HeldMessages {
    /// Deletes them: their records were delivered. Returns how many could not be.
    async fn delete(&self) -> usize {
        let failed = delete_retrying(&self.queue, self.receipt_handles.clone(), |_| {}).await;
        for (_, reason) in &failed {
            warn!(reason = %reason, "cannot delete a failure record: it returns to its queue");
        }
        failed.len()
    }

    /// Hands them back to their queue at once: the replay did not settle them.
    async fn release(&self) {
        match release_retrying(&self.queue, &self.receipt_handles, |_| {}).await {
            Ok(0) => {}
            Ok(refused) => {
                warn!(
                    refused,
                    "some failure records could not be handed back: they return after 12 hours"
                )
            }
            Err(err) => {
                warn!(error = %err, "cannot hand the failure records back: they return after 12 hours")
            }
        }
    }
}

async fn replay_failure_records(
    ctx: &ReplayContext,
    settings: &StreamSettings,
    src: &str,
) -> Result<RunReport, ReplayError> {
    let source = FailureSource::parse(src, &ctx.mapping.id).map_err(ReplayError::Usage)?;
    let (records, held) = read_records(&source, &ctx.config.aws).await?;
    let ranges = match check_records(&ctx.mapping, &settings.stream, &records) {
        Ok(ranges) => ranges,
        Err(err) => {
            if let Some(held) = &held {
                held.release().await;
            }
            return Err(ReplayError::Usage(err));
        }
    };
    let spans = merge_spans(ranges);
    info!(
        mapping = %ctx.mapping.id,
        source = %src,
        failure_records = records.len(),
        spans = spans.len(),
        "re-driving the records of the failure records"
    );
    let replayed = replay_spans(ctx, spans).await;
    let report = super::report(ctx, super::ended(ctx));
    if let Some(held) = held {
        // records the replay discarded again are not delivered: their failure records stay
        let delivered = report.discarded() == 0;
        if replayed.is_ok() && report.ended == Ended::Drained && delivered && !ctx.dry_run {
            let kept = held.delete().await;
            info!(
                deleted = held.receipt_handles.len() - kept,
                "failure records deleted: their records were delivered"
            );
        } else {
            held.release().await;
            let why = if ctx.dry_run {
                "a dry run"
            } else if replayed.is_ok() && report.ended == Ended::Drained {
                "records were discarded again"
            } else {
                "the replay did not finish"
            };
            info!("{why}: the failure records go back to their queue");
        }
    }
    replayed.map(|()| report)
}

/// The range of every record, each checked to be of the mapping's stream.
fn check_records(
    mapping: &MappingConfig,
    stream: &StreamSource,
    records: &[ReadRecord],
) -> Result<Vec<FailedRange>, String> {
    records
        .iter()
        .map(|record| {
            let range = parse_failure_record(&record.text)
                .map_err(|err| format!("{}: {err}", record.location))?;
            if !of_mapping_stream(mapping, stream, &range.stream_arn) {
                return Err(format!(
                    "{}: the failure record is of stream {}, but mapping {} reads {}",
                    record.location, range.stream_arn, mapping.id, mapping.source.arn
                ));
            }
            Ok(range)
        })
        .collect()
}

/// Every failure record of `source`, and for a queue, its messages held hidden.
async fn read_records(
    source: &FailureSource,
    aws: &AwsSettings,
) -> Result<(Vec<ReadRecord>, Option<HeldMessages>), ReplayError> {
    match source {
        FailureSource::File(path) => Ok((read_file(path)?, None)),
        FailureSource::S3 { bucket, prefix } => Ok((read_s3(aws, bucket, prefix).await?, None)),
        FailureSource::Sqs(arn) => {
            let (messages, held) = read_queue(aws, arn, HIDDEN_WHILE_REPLAYING).await?;
            let records = messages
                .into_iter()
                .map(|(id, text)| ReadRecord {
                    location: format!("{arn} message {id}"),
                    text,
                })
                .collect();
            Ok((records, Some(held)))
        }
    }
}

fn read_file(path: &std::path::Path) -> Result<Vec<ReadRecord>, ReplayError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReplayError::Fatal(format!("cannot read {}: {e}", path.display())))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| ReadRecord {
            location: format!("{} line {}", path.display(), i + 1),
            text: line.to_string(),
        })
        .collect())
}

async fn read_s3(
    aws: &AwsSettings,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<ReadRecord>, ReplayError> {
    let sdk = crate::aws::sdk_config(aws, None, None).await;
    let client = crate::aws::s3(&sdk);
    let failed = |what: String| ReplayError::Fatal(format!("s3://{bucket}/{prefix}: {what}"));
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            failed(format!(
                "ListObjectsV2: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            ))
        })?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    let mut records = Vec::with_capacity(keys.len());
    for key in keys {
        let object = client
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| {
                failed(format!(
                    "GetObject {key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))
            })?;
        let bytes = object
            .body
            .collect()
            .await
            .map_err(|e| failed(format!("GetObject {key}: {e}")))?
            .into_bytes();
        records.push(ReadRecord {
            location: format!("s3://{bucket}/{key}"),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    Ok(records)
}

/// Receives every message of the queue until a receive comes back empty, each hidden for
/// `hidden_for` seconds so none is read twice: `(message id, body)` in receive order.
async fn read_queue(
    aws: &AwsSettings,
    arn: &SourceArn,
    hidden_for: i32,
) -> Result<(Vec<(String, String)>, HeldMessages), ReplayError> {
    let (queue, _) = open_queue(aws, arn).await.map_err(ReplayError::Fatal)?;
    let mut held = HeldMessages {
        queue,
        receipt_handles: Vec::new(),
    };
    let mut messages = Vec::new();
    loop {
        let received = held
            .queue
            .client()
            .receive_message()
            .queue_url(held.queue.url())
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(hidden_for)
            .send()
            .await;
        let received = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(err) => {
                held.release().await;
                return Err(ReplayError::Fatal(format!(
                    "{arn}: ReceiveMessage: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&err)
                )));
            }
        };
        if received.is_empty() {
            return Ok((messages, held));
        }
        for message in received {
            held.receipt_handles
                .push(message.receipt_handle.unwrap_or_default());
            messages.push((
                message.message_id.unwrap_or_default(),
                message.body.unwrap_or_default(),
            ));
        }
    }
}

/// Opens the queue `arn` names (an SQS queue ARN): the queue and its visibility timeout.
async fn open_queue(aws: &AwsSettings, arn: &SourceArn) -> Result<(SqsQueue, Duration), String> {
    let Ok((_, SourceResource::Sqs { queue_name, .. })) = SourceArn::parse(&arn.arn) else {
        return Err(format!("{arn} is not an SQS queue ARN"));
    };
    let sdk = crate::aws::sdk_config(aws, Some(&arn.region), None).await;
    let client = crate::aws::sqs(&sdk, MAX_WAIT);
    SqsQueue::open(client, &queue_name, &arn.account, &arn.arn, &arn.region)
        .await
        .map_err(|e| format!("{arn}: {e}"))
}

// ---------------------------------------------------------------------------------------
// dead-letter queue

async fn replay_dead_letters(
    ctx: &ReplayContext,
    settings: &SqsSettings,
    src: &str,
) -> Result<RunReport, ReplayError> {
    let mapping = &ctx.mapping;
    let (dlq_arn, dlq_name, fifo) = match SourceArn::parse(src) {
        Ok((arn, SourceResource::Sqs { queue_name, fifo })) => (arn, queue_name, fifo),
        _ => {
            return Err(ReplayError::Usage(format!(
                "--failures {src:?}: mapping {} reads an SQS queue, so --failures takes its dead-letter queue's ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)",
                mapping.id
            )));
        }
    };
    check_redrive_target(&ctx.config.aws, &mapping.source, &dlq_arn).await?;
    if ctx.dry_run {
        return dry_run_dead_letters(ctx, &dlq_arn).await;
    }
    let (queue, visibility) = open_queue(&ctx.config.aws, &dlq_arn)
        .await
        .map_err(ReplayError::Fatal)?;
    let dead_letters = Arc::new(DeadLetters::new(queue));
    // the mapping as it runs here: on the DLQ, into the replay's function
    let mut replayed = mapping.clone();
    replayed.source = dlq_arn.clone();
    replayed.kind = SourceKind::Sqs(SqsSettings {
        queue_name: dlq_name,
        fifo,
        ..settings.clone()
    });
    replayed.function_name = ctx.function.name().to_string();
    replayed.enabled = true;
    // a replay does not capture
    replayed.capture = None;
    let config = Config {
        admin: None,
        mappings: vec![replayed],
        ..ctx.config.clone()
    };
    info!(mapping = %mapping.id, dlq = %dlq_arn, function = ctx.function.name(), "re-driving the dead-letter queue's messages");
    let wiring = DeadLetterWiring {
        queue: dead_letters.clone(),
        visibility,
        statuses: ctx.statuses.clone(),
    };
    let stop = ctx.stop.clone();
    let report = crate::daemon::run_wired(
        &wiring,
        config,
        GRACEFUL_LIMIT,
        RunUntil {
            drained: true,
            ..RunUntil::default()
        },
        stop.cancelled_owned(),
        std::future::pending(),
    )
    .await;
    let left = dead_letters.hand_back().await;
    if left > 0 {
        warn!(dlq = %dlq_arn, messages = left, "messages the function failed again stay in the dead-letter queue");
    }
    Ok(report)
}

/// `--dry-run` on a DLQ: reads its messages (hidden for a while, then handed back at once)
/// and prints the batches a replay would send, one JSON line each.
async fn dry_run_dead_letters(
    ctx: &ReplayContext,
    dlq: &SourceArn,
) -> Result<RunReport, ReplayError> {
    let (messages, held) = read_queue(&ctx.config.aws, dlq, HIDDEN_WHILE_LOOKING).await?;
    for batch in messages.chunks(ctx.mapping.batch_size) {
        let line = serde_json::json!({
            "queue": dlq.arn,
            "first_message_id": batch[0].0,
            "last_message_id": batch[batch.len() - 1].0,
            "records": batch.len(),
        });
        println!("{line}");
    }
    held.release().await;
    Ok(RunReport {
        ended: Ended::Drained,
        mappings: vec![MappingReport {
            id: ctx.mapping.id.clone(),
            source: dlq.arn.clone(),
            state: MappingState::Ran,
            activity: Activity {
                records_polled: messages.len() as u64,
                ..Activity::default()
            },
        }],
    })
}

/// Checks that `dlq` is the dead-letter queue of the mapping's queue (its redrive policy's
/// `deadLetterTargetArn`).
async fn check_redrive_target(
    aws: &AwsSettings,
    source: &SourceArn,
    dlq: &SourceArn,
) -> Result<(), ReplayError> {
    let (queue, _) = open_queue(aws, source).await.map_err(ReplayError::Fatal)?;
    let attributes = queue
        .client()
        .get_queue_attributes()
        .queue_url(queue.url())
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|e| {
            ReplayError::Fatal(format!(
                "{source}: GetQueueAttributes: {}",
                aws_sdk_sqs::error::DisplayErrorContext(&e)
            ))
        })?;
    let target = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        .and_then(|policy| serde_json::from_str::<Value>(policy).ok())
        .and_then(|policy| policy["deadLetterTargetArn"].as_str().map(str::to_string));
    match target {
        Some(target) if target == dlq.arn => Ok(()),
        Some(target) => Err(ReplayError::Usage(format!(
            "--failures {dlq} is not the dead-letter queue of {source}: its redrive policy sends to {target}"
        ))),
        None => Err(ReplayError::Usage(format!(
            "--failures {dlq} is not the dead-letter queue of {source}: {source} has no redrive policy"
        ))),
    }
}

/// The DLQ as the SQS source sees it: each message handed to the pipeline at most once per
/// replay, and caught up once nothing is visible and every message handed out was invoked
/// (or filtered out).
struct DeadLetters {
    queue: SqsQueue,
    /// Ids of the messages handed to the pipeline.
    delivered: Mutex<HashSet<String>>,
    /// Receipt handle to message id, of every message received and not deleted.
    undeleted: Mutex<HashMap<String, String>>,
    /// The mapping's status, once it runs: what it invoked and filtered out.
    status: OnceLock<StatusReporter>,
}

impl DeadLetters {
    fn new(queue: SqsQueue) -> DeadLetters {
        DeadLetters {
            queue,
            delivered: Mutex::default(),
            undeleted: Mutex::default(),
            status: OnceLock::new(),
        }
    }

    /// Messages handed out that the pipeline has not yet invoked or filtered out.
    fn in_pipeline(&self) -> u64 {
        let done = self.status.get().map_or(0, |status| {
            let activity = status.activity();
            activity.records_invoked + activity.records_filtered_out
        });
        let handed_out = self.delivered.lock().expect("never poisoned").len() as u64;
        handed_out.saturating_sub(done)
    }

    /// Hands every message received and not deleted back to the DLQ (visible at once);
    /// returns how many messages that is.
    async fn hand_back(&self) -> usize {
        let undeleted = std::mem::take(&mut *self.undeleted.lock().expect("never poisoned"));
        let messages: HashSet<&String> = undeleted.values().collect();
        let handles: Vec<String> = undeleted.keys().cloned().collect();
        if !handles.is_empty() {
            match release_retrying(&self.queue, &handles, |_| {}).await {
                Ok(0) => {}
                Ok(refused) => {
                    warn!(
                        refused,
                        "some messages could not be handed back to the dead-letter queue: they return after its visibility timeout"
                    )
                }
                Err(err) => {
                    warn!(error = %err, "cannot hand messages back to the dead-letter queue: they return after its visibility timeout")
                }
            }
        }
        messages.len()
    }
}

impl Queue for DeadLetters {
    fn arn(&self) -> &str {
        self.queue.arn()
    }

    /// Receives, and keeps back the messages already handed out in this replay (they
    /// stay hidden for the DLQ's visibility timeout).
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let received = self.queue.receive(max, wait).await?;
        let mut delivered = self.delivered.lock().expect("never poisoned");
        let mut undeleted = self.undeleted.lock().expect("never poisoned");
        let fresh: Vec<Received> = received
            .into_iter()
            .filter(|message| {
                undeleted.insert(message.receipt_handle.clone(), message.message_id.clone());
                delivered.insert(message.message_id.clone())
            })
            .collect();
        Ok(fresh)
    }

    async fn change_visibility(
        &self,
        receipt_handles: &[String],
        timeout: Duration,
    ) -> Result<usize, QueueError> {
        self.queue.change_visibility(receipt_handles, timeout).await
    }

    async fn delete(&self, receipt_handles: &[String]) -> Vec<(String, String)> {
        let failed = self.queue.delete(receipt_handles).await;
        let kept: HashSet<&String> = failed.iter().map(|(handle, _)| handle).collect();
        let mut undeleted = self.undeleted.lock().expect("never poisoned");
        for handle in receipt_handles.iter().filter(|h| !kept.contains(h)) {
            undeleted.remove(handle);
        }
        failed
    }

    /// Visible and delayed messages, and those handed out but not invoked yet; not the
    /// ones the function failed again (hidden until the DLQ's visibility timeout).
    async fn backlog(&self) -> Result<u64, QueueError> {
        let waiting = self
            .queue
            .count(&[
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            ])
            .await?;
        Ok(waiting + self.in_pipeline())
    }
}

/// Runs the one mapping of a DLQ replay on [`DeadLetters`] (its config holds no other).
struct DeadLetterWiring {
    queue: Arc<DeadLetters>,
    visibility: Duration,
    /// The replay's board, so that its progress and report see the DLQ mapping.
    statuses: Arc<StatusBoard>,
}

impl Wiring for DeadLetterWiring {
    async fn function(&self, config: FunctionConfig, aws: &AwsSettings) -> Function {
        AwsWiring.function(config, aws).await
    }

    fn status_board(&self, _: &RunUntil) -> Arc<StatusBoard> {
        self.statuses.clone()
    }

    fn sqs(
        &self,
        mapping: MappingConfig,
        sqs: SqsSettings,
        launch: Launch,
    ) -> impl Future<Output = ()> + Send + 'static {
        let queue = self.queue.clone();
        let visibility = self.visibility;
        let _ = queue.status.set(launch.status.clone());
        async move { crate::source::sqs::run_on(mapping, &sqs, queue, visibility, launch).await }
    }

    fn stream(
        &self,
        mapping: MappingConfig,
        settings: StreamSettings,
        launch: Launch,
    ) -> impl Future<Output = ()> + Send + 'static {
        AwsWiring.stream(mapping, settings, launch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(shard: &str, from: &str, through: &str) -> FailedRange {
        FailedRange {
            stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/s".into(),
            shard_id: shard.into(),
            from: SequenceNumber::parse(from).unwrap(),
            through: SequenceNumber::parse(through).unwrap(),
        }
    }

    fn span(shard: &str, from: &str, through: &str) -> (String, String, String) {
        (shard.into(), from.into(), through.into())
    }

    fn spans(spans: &[ShardSpan]) -> Vec<(String, String, String)> {
        spans
            .iter()
            .map(|s| span(&s.shard_id, s.from.as_str(), s.through.as_str()))
            .collect()
    }

    #[test]
    fn sources_parse_as_destinations_name_them_and_as_s3_prefixes() {
        let parse = |src: &str| FailureSource::parse(src, "m-1");
        assert_eq!(
            parse("file:///tmp/f.jsonl"),
            Ok(FailureSource::File("/tmp/f.jsonl".into()))
        );
        assert_eq!(
            parse("s3://b/aws/lambda/other"),
            Ok(FailureSource::S3 {
                bucket: "b".into(),
                prefix: "aws/lambda/other".into()
            })
        );
        assert_eq!(
            parse("s3://b"),
            Ok(FailureSource::S3 {
                bucket: "b".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            parse("arn:aws:s3:::b"),
            Ok(FailureSource::S3 {
                bucket: "b".into(),
                prefix: "aws/lambda/m-1/".into()
            })
        );
        let Ok(FailureSource::Sqs(arn)) = parse("arn:aws:sqs:eu-west-1:123456789012:failures")
        else {
            panic!("an SQS ARN is a source");
        };
        assert_eq!(arn.region, "eu-west-1");
        for (bad, why) in [
            ("file://relative.jsonl", "absolute path"),
            ("s3:///prefix", "names no bucket"),
            (
                "arn:aws:sns:us-east-1:123456789012:t",
                "SNS topic cannot be read back",
            ),
            ("failures.jsonl", "expected file:///path.jsonl"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains(bad) && err.contains(why), "{err}");
        }
    }

    #[test]
    fn a_failure_record_names_its_range() {
        let failure = crate::event::failure::Failure {
            request_id: "r".into(),
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
            condition: crate::event::failure::Condition::RetryAttemptsExhausted,
            approximate_invoke_count: 3,
            response: None,
            payload_size: None,
            batch: crate::event::failure::BatchInfo {
                shard_id: "shardId-000000000001".into(),
                start_sequence_number: "49590338271490256608559692538361571095921575989136588898"
                    .into(),
                end_sequence_number: "49590338271490256608559692540925702759324208523137515618"
                    .into(),
                first_arrival: 0.0,
                last_arrival: 0.0,
                batch_size: 2,
                stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/s".into(),
            },
        };
        for kind in [
            crate::event::failure::StreamKind::Kinesis,
            crate::event::failure::StreamKind::DynamoDb,
        ] {
            let record = crate::event::failure::failure_record(&failure, kind, 0.0);
            let parsed = parse_failure_record(&record.to_string()).unwrap();
            assert_eq!(parsed.shard_id, "shardId-000000000001");
            assert_eq!(parsed.stream_arn, failure.batch.stream_arn);
            assert_eq!(parsed.from.as_str(), failure.batch.start_sequence_number);
            assert_eq!(parsed.through.as_str(), failure.batch.end_sequence_number);
            // through an SNS topic into a queue
            let notification = serde_json::json!({
                "Type": "Notification",
                "Message": record.to_string(),
            });
            assert_eq!(
                parse_failure_record(&notification.to_string()).unwrap(),
                parsed
            );
        }
    }

    #[test]
    fn what_is_not_a_failure_record_says_why() {
        let info = |start: &str, end: &str| {
            serde_json::json!({"KinesisBatchInfo": {
                "shardId": "s", "startSequenceNumber": start, "endSequenceNumber": end,
                "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/s"
            }})
            .to_string()
        };
        for (text, why) in [
            ("{not json".to_string(), "not a JSON failure record"),
            (r#"{"Records":[]}"#.to_string(), "no KinesisBatchInfo"),
            (info("x1", "2"), "startSequenceNumber \"x1\" is not decimal"),
            (info("5", "4"), "is after endSequenceNumber"),
            (
                r#"{"KinesisBatchInfo":{"shardId":"s","startSequenceNumber":"1","endSequenceNumber":"2"}}"#
                    .to_string(),
                "no streamArn",
            ),
        ] {
            let err = parse_failure_record(&text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn spans_are_sorted_and_overlaps_merged_per_shard() {
        let merged = merge_spans([
            range("shard-b", "50", "60"),
            range("shard-a", "30", "40"),
            range("shard-a", "5", "9"),
            range("shard-a", "35", "45"),
            range("shard-a", "10", "20"),
            range("shard-a", "5", "9"),
            range("shard-a", "46", "46"),
            range("shard-b", "100", "200"),
            range("shard-b", "150", "160"),
        ]);
        assert_eq!(
            spans(&merged),
            vec![
                span("shard-a", "5", "9"),
                span("shard-a", "10", "20"),
                span("shard-a", "30", "45"),
                span("shard-a", "46", "46"),
                span("shard-b", "50", "60"),
                span("shard-b", "100", "200"),
            ]
        );
        assert!(merge_spans([]).is_empty());
    }

    #[test]
    fn records_must_be_of_the_mapping_stream() {
        let validate = |arn: &str| {
            let text = format!(
                r#"
[aws]
endpoint_url = "http://127.0.0.1:1"
[functions.f]
url = "http://127.0.0.1:1/"
[[mappings]]
function_name = "f"
event_source_arn = "{arn}"
starting_position = "TRIM_HORIZON"
"#
            );
            let dir = tempfile::tempdir().unwrap();
            let config = crate::config::validate(&text, dir.path(), &|_| None).unwrap();
            let mapping = config.mappings[0].clone();
            let SourceKind::Stream(settings) = &mapping.kind else {
                panic!("a stream mapping");
            };
            let stream = settings.stream.clone();
            (mapping, stream)
        };
        let (kinesis, stream) = validate("arn:aws:kinesis:us-east-1:123456789012:stream/s");
        assert!(of_mapping_stream(&kinesis, &stream, &kinesis.source.arn));
        assert!(!of_mapping_stream(
            &kinesis,
            &stream,
            "arn:aws:kinesis:us-east-1:123456789012:stream/other"
        ));
        let (table, stream) = validate("arn:aws:dynamodb:us-east-1:123456789012:table/t");
        assert!(of_mapping_stream(
            &table,
            &stream,
            "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2026-01-01T00:00:00.000"
        ));
        assert!(!of_mapping_stream(
            &table,
            &stream,
            "arn:aws:dynamodb:us-east-1:123456789012:table/t2/stream/2026-01-01T00:00:00.000"
        ));
        let labelled = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/L1";
        let (labelled_mapping, stream) = validate(labelled);
        assert!(of_mapping_stream(&labelled_mapping, &stream, labelled));
        assert!(!of_mapping_stream(
            &labelled_mapping,
            &stream,
            "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/L2"
        ));

        let record = |line: usize, stream: &str| ReadRecord {
            location: format!("f line {line}"),
            text: serde_json::json!({"KinesisBatchInfo": {
                "shardId": "s", "startSequenceNumber": "1", "endSequenceNumber": "2",
                "streamArn": format!("arn:aws:kinesis:us-east-1:123456789012:stream/{stream}")
            }})
            .to_string(),
        };
        let records = [record(1, "s"), record(2, "other")];
        let (_, kinesis_stream) = validate("arn:aws:kinesis:us-east-1:123456789012:stream/s");
        assert_eq!(
            check_records(&kinesis, &kinesis_stream, &records[..1])
                .unwrap()
                .len(),
            1
        );
        let err = check_records(&kinesis, &kinesis_stream, &records).unwrap_err();
        assert!(err.starts_with("f line 2: "), "{err}");
        assert!(err.contains("stream/other"), "{err}");
        assert!(
            err.contains("reads arn:aws:kinesis:us-east-1:123456789012:stream/s"),
            "{err}"
        );
    }
}

//! `esmd replay --capture FILE`: sends the events a mapping's `capture` recorded, byte for
//! byte and in file order, to the function; no AWS endpoint is involved.
//!
//! The file is read twice: once to check it and count the mapping's records (the total
//! of the progress), then to send. Lines of other mappings are skipped; a line that is not
//! a capture line (a line torn by a crash or a failed write) is skipped with a warning.
//! Each event is sent once, whatever its recorded outcome: the capture already holds the
//! run's retries and bisected halves as lines of their own, so the replay makes the
//! invocations the run made. A throttle or an unreachable target is retried as in `run`;
//! an event the function fails is reported (its failed records count as discarded, so the
//! replay exits 2), not retried, and goes to no destination.

use std::borrow::Cow;
use std::path::Path;

use bytes::Bytes;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tracing::{info, warn};

use super::progress::Progress;
use super::{ReplayContext, ReplayError};
use crate::daemon::{Ended, MappingReport, MappingState, RunReport};
use crate::filter::FilterSource;
use crate::pipeline::capture::CapturedLine;
use crate::pipeline::judge::Judgement;
use crate::pipeline::{Invoker, Step, Unreached};

/// Replays the events of `ctx.mapping` in the capture file at `path`, or prints them with
/// `dry_run`; returns what was done, as a run reports it. The progress is its own: the
/// total is known from the first reading (JSON lines with `json_logs`).
pub async fn replay_capture(
    ctx: &ReplayContext,
    path: &Path,
    json_logs: bool,
) -> Result<RunReport, ReplayError> {
    let error = |source: std::io::Error| {
        ReplayError::Fatal(format!(
            "cannot read the capture file {}: {source}",
            path.display()
        ))
    };
    let id = &ctx.mapping.id;
    let kind = ctx.mapping.kind.filter_source();
    let survey = survey(path, id, kind).await.map_err(error)?;
    if survey.events == 0 {
        warn!(file = %path.display(), mapping = %id, "the capture file holds no event of this mapping: nothing to replay");
    } else {
        info!(file = %path.display(), mapping = %id, events = survey.events, records = survey.records, dry_run = ctx.dry_run, "replaying captured events");
    }
    let invoker = Invoker {
        function: ctx.function.clone(),
        mapping: id.clone(),
        report_item_failures: ctx.mapping.report_batch_item_failures,
        stop: ctx.stop.clone(),
        status: ctx.status.clone(),
        capture: None,
    };
    let progress = Progress::new(Some(survey.records), json_logs);
    let mut failed_records = 0;
    let mut ended = Ended::Drained;
    let file = tokio::fs::File::open(path).await.map_err(error)?;
    // only what the survey read: a live run may be appending to the file
    let mut lines = Lines::new(BufReader::new(file.take(survey.length)));
    while let Some((number, line)) = lines.next().await.map_err(error)? {
        // the event is sent as a slice of the line: no copy of up to 6 MiB per event
        let line = Bytes::from(line);
        let Ok(Some(event)) = Event::read(&line, id, kind) else {
            continue;
        };
        if ctx.stop.is_cancelled() {
            ended = Ended::Requested;
            break;
        }
        if ctx.dry_run {
            println!("{}", event.dry_run_line(id, number));
        } else {
            match send(&invoker, line.slice_ref(event.bytes), &event).await {
                Ok(failed) => {
                    if let Some(reason) = failed.reason {
                        warn!(mapping = %id, line = number, records = failed.records, reason = %reason, "the function failed a captured event: reported, not retried");
                    }
                    failed_records += failed.records;
                }
                Err(Unreached::Stopped | Unreached::GaveUp) => {
                    ended = Ended::Requested;
                    break;
                }
            }
        }
        progress.add(event.ids.len() as u64);
    }
    progress.finish();
    let (_, mut activity) = ctx
        .statuses
        .get(id)
        .expect("the replayed mapping is registered");
    // not retried and sent nowhere: what a stream mapping calls discarded
    activity.records_discarded = failed_records;
    Ok(RunReport {
        ended,
        mappings: vec![MappingReport {
            id: id.clone(),
            source: ctx.mapping.source.arn.clone(),
            state: MappingState::Ran,
            activity,
        }],
    })
}

/// The records of a sent event that failed, and why.
struct Failed {
    records: u64,
    reason: Option<String>,
}

/// Sends one captured event as it is: `bytes` are `event.bytes`.
async fn send(invoker: &Invoker, bytes: Bytes, event: &Event<'_>) -> Result<Failed, Unreached> {
    let ids = event.ids.iter().map(|id| id.as_ref());
    let (step, _) = invoker.invoke_event(bytes, ids, || true).await?;
    let all = event.ids.len() as u64;
    Ok(match step {
        Step::Split => Failed {
            records: all,
            reason: Some(
                "the target refused the event for size (HTTP 413); a captured event is sent as it is, never split".into(),
            ),
        },
        Step::Answered { judgement, .. } => Failed {
            records: match &judgement {
                Judgement::Success => 0,
                Judgement::ItemsFailed(items) => items.len() as u64,
                Judgement::WholeBatch(_) => all,
            },
            reason: (judgement != Judgement::Success).then(|| judgement.reason()),
        },
    })
}

/// How far the file was read, and what it holds for the mapping.
#[derive(Debug, Default, PartialEq)]
struct Survey {
    /// Bytes read: the replay reads no further.
    length: u64,
    events: u64,
    records: u64,
}

/// Reads the file once: counts the mapping's events and records, and warns about every
/// line that is not a capture line.
async fn survey(path: &Path, mapping: &str, kind: FilterSource) -> std::io::Result<Survey> {
    let file = tokio::fs::File::open(path).await?;
    let mut lines = Lines::new(BufReader::new(file));
    let mut survey = Survey::default();
    while let Some((number, line)) = lines.next().await? {
        match Event::read(&line, mapping, kind) {
            Ok(Some(event)) => {
                survey.events += 1;
                survey.records += event.ids.len() as u64;
            }
            Ok(None) => {}
            Err(reason) if !line.ends_with(b"\n") => {
                warn!(file = %path.display(), line = number, reason = %reason, "the last line is torn (esmd stopped while writing it?): skipped");
            }
            Err(reason) => {
                warn!(file = %path.display(), line = number, reason = %reason, "not a capture line (torn by a crash or a failed write?): skipped");
            }
        }
    }
    survey.length = lines.read;
    Ok(survey)
}

/// The lines of a file, numbered from 1, each with its line break if it has one.
struct Lines<R> {
    reader: R,
    number: u64,
    read: u64,
}

impl<R: AsyncBufReadExt + Unpin> Lines<R> {
    fn new(reader: R) -> Lines<R> {
        Lines {
            reader,
            number: 0,
            read: 0,
        }
    }

    async fn next(&mut self) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        self.read += n as u64;
        Ok(Some((self.number, line)))
    }
}

/// A captured event of the mapping.
struct Event<'a> {
    /// The exact bytes that were sent.
    bytes: &'a [u8],
    /// Each record's item identifier, in event order.
    ids: Vec<Cow<'a, str>>,
    /// The source whose record shape the ids were read from.
    kind: FilterSource,
    /// A Kinesis event's shard, from its first record's `eventID`.
    shard: Option<String>,
    /// The outcome the run recorded.
    outcome: Cow<'a, str>,
}

/// `{"Records":[...]}` as far as replay needs it.
#[derive(Deserialize)]
struct Records<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<RecordIds<'a>>,
}

#[derive(Deserialize)]
struct RecordIds<'a> {
    #[serde(rename = "messageId", borrow)]
    message_id: Option<Cow<'a, str>>,
    #[serde(rename = "eventID", borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kinesis: Option<KinesisIds<'a>>,
    #[serde(borrow)]
    dynamodb: Option<DynamoDbIds<'a>>,
}

#[derive(Deserialize)]
struct KinesisIds<'a> {
    #[serde(rename = "sequenceNumber", borrow)]
    sequence_number: Cow<'a, str>,
}

#[derive(Deserialize)]
struct DynamoDbIds<'a> {
    #[serde(rename = "SequenceNumber", borrow)]
    sequence_number: Cow<'a, str>,
}

impl<'a> Event<'a> {
    /// The event of `line` when it is one of `mapping`'s, `None` for another mapping's
    /// line; an error says why the line is not a capture line of this source kind.
    fn read(
        line: &'a [u8],
        mapping: &str,
        kind: FilterSource,
    ) -> Result<Option<Event<'a>>, String> {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let captured = CapturedLine::parse(text).map_err(|err| err.to_string())?;
        if captured.mapping != mapping {
            return Ok(None);
        }
        let bytes = captured.event.get().as_bytes();
        let parsed: Records<'a> = serde_json::from_slice(bytes)
            .map_err(|err| format!("the event is not {{\"Records\":[...]}}: {err}"))?;
        let mut shard = None;
        let mut ids = Vec::with_capacity(parsed.records.len());
        for (i, record) in parsed.records.into_iter().enumerate() {
            let id = match kind {
                FilterSource::Sqs => record.message_id,
                FilterSource::Kinesis => record.kinesis.map(|k| k.sequence_number),
                FilterSource::DynamoDb => record.dynamodb.map(|d| d.sequence_number),
            };
            let id = id.ok_or_else(|| {
                format!(
                    "record {i} of the event has no {}",
                    match kind {
                        FilterSource::Sqs => "messageId",
                        FilterSource::Kinesis => "kinesis.sequenceNumber",
                        FilterSource::DynamoDb => "dynamodb.SequenceNumber",
                    }
                )
            })?;
            if i == 0 && kind == FilterSource::Kinesis {
                shard = record
                    .event_id
                    .and_then(|event_id| Some(event_id.split_once(':')?.0.to_string()));
            }
            ids.push(id);
        }
        Ok(Some(Event {
            bytes,
            ids,
            kind,
            shard,
            outcome: captured.outcome,
        }))
    }

    /// What `--dry-run` prints for the event on line `number`: the mapping, the record
    /// count and the recorded outcome; for a stream the shard (Kinesis) and the first and
    /// last sequence numbers.
    fn dry_run_line(&self, mapping: &str, number: u64) -> serde_json::Value {
        let mut line = serde_json::json!({
            "mapping": mapping,
            "line": number,
            "records": self.ids.len(),
            "outcome": self.outcome,
        });
        if self.kind != FilterSource::Sqs {
            line["shard"] = self.shard.clone().into();
            line["first_sequence_number"] = self.ids.first().map(|id| id.as_ref()).into();
            line["last_sequence_number"] = self.ids.last().map(|id| id.as_ref()).into();
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(mapping: &str, event: &str) -> Vec<u8> {
        format!(r#"{{"mapping":"{mapping}","time":"2026-12-02T10:00:00.000Z","event":{event},"outcome":"success","response":null}}"#)
            .into_bytes()
    }

    fn ids(event: &Event<'_>) -> Vec<String> {
        event.ids.iter().map(|id| id.to_string()).collect()
    }

    #[test]
    fn each_source_names_its_records_by_its_own_field() {
        let kinesis = r#"{"Records":[{"eventID":"shardId-000000000003:41","kinesis":{"sequenceNumber":"41"}},{"kinesis":{"sequenceNumber":"42"}}]}"#;
        let text = line("clicks", kinesis);
        let event = Event::read(&text, "clicks", FilterSource::Kinesis)
            .unwrap()
            .unwrap();
        assert_eq!(event.bytes, kinesis.as_bytes());
        assert_eq!(ids(&event), ["41", "42"]);
        assert_eq!(
            event.dry_run_line("clicks", 7),
            serde_json::json!({"mapping":"clicks","line":7,"records":2,"outcome":"success",
                "shard":"shardId-000000000003","first_sequence_number":"41","last_sequence_number":"42"})
        );
        let dynamodb = r#"{"Records":[{"eventID":"e1","dynamodb":{"SequenceNumber":"100"}}]}"#;
        let text = line("items", dynamodb);
        let event = Event::read(&text, "items", FilterSource::DynamoDb)
            .unwrap()
            .unwrap();
        assert_eq!(ids(&event), ["100"]);
        assert_eq!(
            event.dry_run_line("items", 1)["shard"],
            serde_json::Value::Null
        );
        let sqs = r#"{"Records":[{"messageId":"m\"1","body":"x"}]}"#;
        let text = line("orders", sqs);
        let event = Event::read(&text, "orders", FilterSource::Sqs)
            .unwrap()
            .unwrap();
        assert_eq!(ids(&event), ["m\"1"]);
        assert_eq!(
            event.dry_run_line("orders", 2),
            serde_json::json!({"mapping":"orders","line":2,"records":1,"outcome":"success"})
        );
    }

    #[test]
    fn other_mappings_lines_are_none_and_bad_lines_say_why() {
        let sqs = r#"{"Records":[{"messageId":"m1"}]}"#;
        let text = line("orders", sqs);
        assert!(
            Event::read(&text, "clicks", FilterSource::Sqs)
                .unwrap()
                .is_none()
        );
        let reason = Event::read(&text, "orders", FilterSource::Kinesis)
            .err()
            .unwrap();
        assert_eq!(
            reason,
            "record 0 of the event has no kinesis.sequenceNumber"
        );
        let reason = Event::read(&line("orders", "[1]"), "orders", FilterSource::Sqs)
            .err()
            .unwrap();
        assert!(
            reason.starts_with("the event is not {\"Records\":[...]}"),
            "{reason}"
        );
        assert!(Event::read(&text[..40], "orders", FilterSource::Sqs).is_err());
    }
}

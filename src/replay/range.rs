//! Replay of a range of a Kinesis or DynamoDB stream, and of explicit per-shard sequence
//! spans ([`replay_spans`], for failure records).
//!
//! It runs the stream engine of `run` (the shard reader, lanes, pipeline, retries,
//! destination) on a checkpoint store that lives in memory only, lists the shards once,
//! and gives each shard task an end ([`RangeEnd`]): the first record past `--to`, or the
//! tip. Shards start parent before child, as in `run` ([`lineage`]), and the replay ends
//! once every shard in range ended.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinSet;
use tracing::{Instrument, info, warn};

use super::{ReplayContext, ReplayError};
use crate::checkpoint::{CheckpointStore, MappingState};
use crate::config::SourceKind;
use crate::event::sequence::SequenceNumber;
use crate::source::stream::api::{StartAt, StreamApi, StreamDescription};
use crate::source::stream::lineage;
use crate::source::stream::shard::{RangeEnd, ShardEnd, ShardRun, run_shard};
use crate::source::stream::{Mapping, OnStream, on_stream};

/// A position on the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Position {
    TrimHorizon,
    /// Unix seconds.
    Time(f64),
    Sequence(SequenceNumber),
}

impl Position {
    /// `TRIM_HORIZON`, an RFC 3339 time (any offset, fractional seconds or not), Unix
    /// seconds (integer or fractional), or with `--shard` a sequence number: then digits
    /// alone are a sequence number, and a time needs RFC 3339 or a fraction.
    pub fn parse(text: &str, with_shard: bool) -> Result<Position, String> {
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        if text == "TRIM_HORIZON" {
            Ok(Position::TrimHorizon)
        } else if digits && with_shard {
            SequenceNumber::parse(text)
                .map(Position::Sequence)
                .ok_or_else(|| format!("{text} is not a sequence number"))
        } else if let Some(seconds) = unix_seconds(text) {
            Ok(Position::Time(seconds))
        } else if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
            Ok(Position::Time(
                time.unix_timestamp() as f64 + f64::from(time.nanosecond()) / 1e9,
            ))
        } else {
            Err(format!(
                "{text:?} is not TRIM_HORIZON, an RFC 3339 time, Unix seconds{}",
                if with_shard {
                    " or a sequence number"
                } else {
                    " (a sequence number needs --shard)"
                }
            ))
        }
    }
}

/// The last second of year 9999: a larger number is no time (a sequence number, likely).
const LAST_SECOND: f64 = 253_402_300_799.0;

/// `1732550000` or `1732550000.25`.
fn unix_seconds(text: &str) -> Option<f64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let decimal = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !(decimal(whole) && decimal(fraction)) {
        return None;
    }
    text.parse().ok().filter(|seconds| *seconds <= LAST_SECOND)
}

/// `--from POS [--to POS] [--shard ID]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Range {
    pub from: Position,
    /// `None`: the tip of each shard when the replay starts.
    pub to: Option<Position>,
    pub shard: Option<String>,
}

impl Range {
    pub fn parse(from: &str, to: Option<&str>, shard: Option<&str>) -> Result<Range, String> {
        let with_shard = shard.is_some();
        let from = Position::parse(from, with_shard).map_err(|err| format!("--from: {err}"))?;
        let to = match to {
            None => None,
            Some(to) => match Position::parse(to, with_shard) {
                Ok(Position::TrimHorizon) => {
                    return Err("--to: TRIM_HORIZON is a start, not an end; leave --to out to replay up to the tip".into());
                }
                Ok(to) => Some(to),
                Err(err) => return Err(format!("--to: {err}")),
            },
        };
        let empty = match (&from, &to) {
            (Position::Time(from), Some(Position::Time(to))) => from >= to,
            (Position::Sequence(from), Some(Position::Sequence(to))) => from >= to,
            _ => false,
        };
        if empty {
            return Err("--from must come before --to (--to is excluded)".into());
        }
        Ok(Range {
            from,
            to,
            shard: shard.map(str::to_string),
        })
    }
}

/// Records of one shard to re-drive: `from..=through`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSpan {
    pub shard_id: String,
    /// Inclusive.
    pub from: SequenceNumber,
    /// Inclusive.
    pub through: SequenceNumber,
}

/// Replays `range` of the context's stream mapping until every shard in range ended.
pub async fn replay_range(ctx: &ReplayContext, range: &Range) -> Result<(), ReplayError> {
    let tip = crate::source::stream::now_seconds();
    let start = match &range.from {
        Position::TrimHorizon => StartAt::TrimHorizon,
        Position::Time(seconds) => StartAt::AtTimestamp(*seconds),
        Position::Sequence(sequence) => StartAt::AtSequence(sequence.clone()),
    };
    let end = match &range.to {
        None => RangeEnd::BeforeTime(tip),
        Some(Position::Time(seconds)) => RangeEnd::BeforeTime(*seconds),
        Some(Position::Sequence(sequence)) => RangeEnd::BeforeSequence(sequence.clone()),
        Some(Position::TrimHorizon) => unreachable!("refused by Range::parse"),
    };
    let plan = Plan::Range {
        start,
        end,
        shard: range.shard.clone(),
    };
    replay(ctx, plan).await
}

/// Re-drives exactly the records of `spans`: per shard in sequence order (overlapping
/// spans once), parent shards before their children. A span of a shard the stream no
/// longer lists is logged and skipped: retention removed its records.
pub async fn replay_spans(ctx: &ReplayContext, spans: Vec<ShardSpan>) -> Result<(), ReplayError> {
    replay(ctx, Plan::of_spans(spans)).await
}

/// Sorts spans and merges the ones that overlap, so no record is sent twice.
/// Spans per shard (shards in id order), each shard's sorted with overlapping ones merged.
pub fn merged_by_shard(
    spans: impl IntoIterator<Item = ShardSpan>,
) -> BTreeMap<String, Vec<(SequenceNumber, SequenceNumber)>> {
    let mut by_shard: BTreeMap<String, Vec<(SequenceNumber, SequenceNumber)>> = BTreeMap::new();
    for span in spans {
        by_shard
            .entry(span.shard_id)
            .or_default()
            .push((span.from, span.through));
    }
    for spans in by_shard.values_mut() {
        spans.sort();
        let mut out: Vec<(SequenceNumber, SequenceNumber)> = Vec::with_capacity(spans.len());
        for (from, through) in spans.drain(..) {
            match out.last_mut() {
                Some(last) if from <= last.1 => {
                    if through > last.1 {
                        last.1 = through;
                    }
                }
                _ => out.push((from, through)),
            }
        }
        *spans = out;
    }
    by_shard
}

/// What to read of which shards.
enum Plan {
    /// Every shard (or one) from `start` to `end`.
    Range {
        start: StartAt,
        end: RangeEnd,
        shard: Option<String>,
    },
    /// Per shard, spans in order.
    Spans(BTreeMap<String, Vec<(SequenceNumber, SequenceNumber)>>),
}

impl Plan {
    /// The spans per shard, in order, overlapping ones merged.
    fn of_spans(spans: Vec<ShardSpan>) -> Plan {
        Plan::Spans(merged_by_shard(spans))
    }

    /// Per shard of `listing` to read, its legs in order: where each starts and ends.
    fn legs(
        self,
        listing: &StreamDescription,
    ) -> Result<HashMap<String, Vec<(StartAt, RangeEnd)>>, ReplayError> {
        let listed: HashSet<&str> = listing.shards.iter().map(|s| s.id.as_str()).collect();
        match self {
            Plan::Range {
                start,
                end,
                shard: Some(shard),
            } => {
                if !listed.contains(shard.as_str()) {
                    let mut ids: Vec<&str> = listed.into_iter().collect();
                    ids.sort_unstable();
                    return Err(ReplayError::Usage(format!(
                        "no shard {shard} in {}; its shards: {}",
                        listing.arn,
                        ids.join(", ")
                    )));
                }
                Ok(HashMap::from([(shard, vec![(start, end)])]))
            }
            Plan::Range {
                start,
                end,
                shard: None,
            } => Ok(listing
                .shards
                .iter()
                .map(|s| (s.id.clone(), vec![(start.clone(), end.clone())]))
                .collect()),
            Plan::Spans(by_shard) => Ok(by_shard
                .into_iter()
                .filter(|(shard, _)| {
                    let known = listed.contains(shard.as_str());
                    if !known {
                        warn!(shard = %shard, stream = %listing.arn, "the stream no longer lists this shard: its records are gone, nothing to replay");
                    }
                    known
                })
                .map(|(shard, spans)| {
                    let legs = spans
                        .into_iter()
                        .map(|(from, through)| (StartAt::AtSequence(from), RangeEnd::Through(through)))
                        .collect();
                    (shard, legs)
                })
                .collect()),
        }
    }
}

/// Runs `plan` on the context's stream mapping, with an in-memory checkpoint store.
async fn replay(ctx: &ReplayContext, plan: Plan) -> Result<(), ReplayError> {
    let SourceKind::Stream(settings) = &ctx.mapping.kind else {
        return Err(ReplayError::Usage(format!(
            "mapping {} reads an SQS queue, not a stream",
            ctx.mapping.id
        )));
    };
    let store = Arc::new(CheckpointStore::in_memory(&ctx.mapping.id));
    let mut mapping = Mapping::new(
        ctx.mapping.clone(),
        settings.clone(),
        ctx.function.clone(),
        &ctx.config.aws,
        store,
        ctx.status.clone(),
    )
    .await;
    mapping.dry_run = ctx.dry_run;
    let work = Replay {
        plan,
        stop: ctx.stop.clone(),
    };
    on_stream(&ctx.config.aws, Arc::new(mapping), work).await
}

/// The replay's supervisor: lists the shards once, then runs each shard's legs in a task,
/// a child once its parents ended.
struct Replay {
    plan: Plan,
    stop: tokio_util::sync::CancellationToken,
}

impl OnStream for Replay {
    type Output = Result<(), ReplayError>;

    async fn run<A: StreamApi>(self, api: Arc<A>, mapping: Arc<Mapping>) -> Self::Output {
        let id = mapping.config.id.clone();
        let listing = crate::backoff::retry(
            crate::backoff::aws_call(),
            &self.stop,
            || api.describe(),
            |_| true,
            |err, delay| {
                warn!(mapping = %id, stream = %mapping.config.source, error = %err, retry_in_ms = delay.as_millis() as u64, "cannot list the stream's shards");
            },
        )
        .await;
        let listing = match listing {
            Ok(listing) => listing,
            Err(crate::backoff::GaveUp::Stopped) => return Ok(()),
            Err(crate::backoff::GaveUp::Failed(err)) => {
                return Err(ReplayError::Fatal(format!(
                    "cannot list the shards of {}: {err}",
                    mapping.config.source
                )));
            }
        };
        let mut legs = self.plan.legs(&listing)?;
        info!(mapping = %id, stream = %listing.arn, shards = legs.len(), "replaying shards");
        // the shards done, for lineage: not the store's `finished`, which a shard's first
        // leg sets already
        let mut done = MappingState::default();
        let mut running: HashSet<String> = HashSet::new();
        let mut tasks = JoinSet::new();
        let mut unfinished: Vec<String> = Vec::new();
        loop {
            let mut passed_over = true;
            while passed_over && !self.stop.is_cancelled() {
                passed_over = false;
                for (shard_id, _) in lineage::startable(&done, &listing.shards, &running) {
                    let Some(shard_legs) = legs.remove(&shard_id) else {
                        // nothing to read here: done once its parents are, so a
                        // grandchild still waits for its grandparent
                        done.shards.entry(shard_id).or_default().finished = true;
                        passed_over = true;
                        continue;
                    };
                    let ending = listing.ending_of(&shard_id);
                    let task = read_legs(
                        api.clone(),
                        mapping.clone(),
                        listing.arn.clone(),
                        shard_id.clone(),
                        Arc::new(ending),
                        shard_legs,
                        self.stop.clone(),
                    );
                    let span = tracing::info_span!("shard", id = %shard_id);
                    tasks.spawn(task.instrument(span));
                    running.insert(shard_id);
                }
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            match joined {
                Ok((shard_id, ShardEnd::Finished)) => {
                    running.remove(&shard_id);
                    done.shards.entry(shard_id).or_default().finished = true;
                }
                Ok((shard_id, ShardEnd::Stopped)) => {
                    running.remove(&shard_id);
                    if !self.stop.is_cancelled() {
                        unfinished.push(shard_id);
                    }
                }
                Err(err) => unfinished.push(format!("a shard task failed: {err}")),
            }
        }
        if self.stop.is_cancelled() || unfinished.is_empty() {
            return Ok(());
        }
        Err(ReplayError::Fatal(format!(
            "shards not replayed to their end: {}",
            unfinished.join(", ")
        )))
    }
}

/// Reads one shard's legs in order; the shard's id and how its last leg ended.
async fn read_legs<A: StreamApi>(
    api: Arc<A>,
    mapping: Arc<Mapping>,
    stream_arn: String,
    shard_id: String,
    ending: Arc<OnceLock<SequenceNumber>>,
    legs: Vec<(StartAt, RangeEnd)>,
    stop: tokio_util::sync::CancellationToken,
) -> (String, ShardEnd) {
    let mut end = ShardEnd::Finished;
    for (start, range_end) in legs {
        info!(mapping = %mapping.config.id, shard = %shard_id, start = ?start, end = ?range_end, "replaying shard");
        let run = ShardRun {
            shard_id: shard_id.clone(),
            stream_arn: stream_arn.clone(),
            start,
            settled_beyond: Vec::new(),
            ending: ending.clone(),
            end: Some(range_end),
        };
        end = run_shard(api.clone(), mapping.clone(), run, stop.clone()).await;
        if end != ShardEnd::Finished {
            break;
        }
    }
    (shard_id, end)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::source::stream::tests::{FakeStream, shard};
    use crate::target::{Answer, Function, Outcome};

    fn seq(n: u32) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    /// `(shard, n)` of each record delivered, in delivery order.
    type Delivered = Arc<Mutex<Vec<(u64, u64)>>>;

    /// Runs `plan` on the fake stream of shard 0 (30 records), its split children 1 and 2
    /// (20 each, closed) and their merged child 3 (10, open), all records of shard `s`
    /// numbered `n` from 0 with sequence `s * 1_000_000 + n + 1` and arrival
    /// `1_700_000_000 + n`; returns what the function got.
    /// A parent, its two children, their child (open): 30, 20, 20 and 10 records.
    fn lineage() -> FakeStream {
        FakeStream::new(vec![
            shard(0, &[], true, 30, 3),
            shard(1, &["shardId-0"], true, 20, 3),
            shard(2, &["shardId-0"], true, 20, 3),
            shard(3, &["shardId-1", "shardId-2"], false, 10, 3),
        ])
    }

    async fn replayed(plan: Plan) -> Vec<(u64, u64)> {
        replayed_on(lineage(), plan).await
    }

    async fn replayed_on(stream: FakeStream, plan: Plan) -> Vec<(u64, u64)> {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
[aws]
endpoint_url = "http://127.0.0.1:1"
[functions.f]
url = "http://127.0.0.1:1/"
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:kinesis:us-east-1:123456789012:stream/fake"
batch_size = 4
starting_position = "LATEST"
"#;
        let config = crate::config::validate(text, dir.path(), &|_| None).unwrap();
        let delivered: Delivered = Arc::default();
        let log = delivered.clone();
        let answer: Answer = Arc::new(move |event| {
            let event: serde_json::Value = serde_json::from_slice(&event).unwrap();
            log.lock().unwrap().extend(
                event["Records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| (r["shard"].as_u64().unwrap(), r["n"].as_u64().unwrap())),
            );
            Box::pin(async { Outcome::Success { body: Vec::new() } })
        });
        let mapping = config.mappings[0].clone();
        let SourceKind::Stream(settings) = mapping.kind.clone() else {
            panic!("a kinesis mapping");
        };
        let status = crate::status::StatusBoard::default().register(&mapping.id, "kinesis");
        let store = Arc::new(CheckpointStore::in_memory(&mapping.id));
        let function = Arc::new(Function::in_process("f", 4, answer));
        let mapping = Mapping::new(mapping, settings, function, &config.aws, store, status).await;
        let work = Replay {
            plan,
            stop: tokio_util::sync::CancellationToken::new(),
        };
        work.run(Arc::new(stream), Arc::new(mapping))
            .await
            .expect("the replay ends by itself");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "no state written"
        );
        delivered.lock().unwrap().clone()
    }

    /// The generation of each delivery's shard: parent 0, children 1, grandchild 2.
    fn generations(delivered: &[(u64, u64)]) -> Vec<u64> {
        delivered.iter().map(|(s, _)| s.div_ceil(2)).collect()
    }

    #[tokio::test]
    async fn a_time_range_is_replayed_on_every_shard_parents_first() {
        let base = 1_700_000_000.0;
        let delivered = replayed(Plan::Range {
            start: StartAt::AtTimestamp(base + 5.0),
            end: RangeEnd::BeforeTime(base + 15.0),
            shard: None,
        })
        .await;
        let mut expected: Vec<(u64, u64)> =
            (0..3).flat_map(|s| (5..15).map(move |n| (s, n))).collect();
        expected.extend((5..10).map(|n| (3, n)));
        let mut sorted = delivered.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected, "each record of the range once");
        assert!(generations(&delivered).is_sorted(), "{delivered:?}");
        for s in 0..4 {
            let of_shard: Vec<u64> = delivered.iter().filter(|d| d.0 == s).map(|d| d.1).collect();
            assert!(of_shard.is_sorted(), "shard {s} in order: {of_shard:?}");
        }
    }

    #[tokio::test]
    async fn empty_pages_of_a_dynamodb_stream_do_not_end_a_replay_early() {
        let delivered = replayed_on(
            lineage().like_dynamodb(),
            Plan::Range {
                start: StartAt::TrimHorizon,
                end: RangeEnd::BeforeTime(1_700_000_000.0 + 1000.0),
                shard: None,
            },
        )
        .await;
        let mut sorted = delivered.clone();
        sorted.sort_unstable();
        let expected: Vec<(u64, u64)> = [(0, 30), (1, 20), (2, 20), (3, 10)]
            .into_iter()
            .flat_map(|(s, records)| (0..records).map(move |n| (s, n)))
            .collect();
        assert_eq!(sorted, expected, "every record of every shard, once");
        assert!(generations(&delivered).is_sorted(), "{delivered:?}");
    }

    #[tokio::test]
    async fn spans_deliver_exactly_their_records_in_lineage_order() {
        let span = |shard: u32, from: u32, through: u32| ShardSpan {
            shard_id: format!("shardId-{shard}"),
            from: seq(shard * 1_000_000 + from),
            through: seq(shard * 1_000_000 + through),
        };
        let spans = vec![
            span(3, 3, 5),
            span(0, 8, 13),
            span(0, 5, 9),
            span(0, 20, 20),
            span(7, 1, 2),
        ];
        let delivered = replayed(Plan::of_spans(spans)).await;
        let expected: Vec<(u64, u64)> = (4..=12)
            .chain([19])
            .map(|n| (0, n))
            .chain((2..=4).map(|n| (3, n)))
            .collect();
        assert_eq!(delivered, expected, "sequence n + 1 is record n");
    }

    #[test]
    fn positions_parse_as_the_interface_says() {
        assert_eq!(
            Position::parse("TRIM_HORIZON", false),
            Ok(Position::TrimHorizon)
        );
        assert_eq!(
            Position::parse("2026-12-01T10:00:00Z", false),
            Ok(Position::Time(1_796_119_200.0))
        );
        assert_eq!(
            Position::parse("2026-12-01T11:00:00.250+01:00", false),
            Ok(Position::Time(1_796_119_200.25))
        );
        assert_eq!(
            Position::parse("1796119200", false),
            Ok(Position::Time(1_796_119_200.0))
        );
        assert_eq!(
            Position::parse("1796119200.5", true),
            Ok(Position::Time(1_796_119_200.5))
        );
        assert_eq!(
            Position::parse(
                "49590338271490256608559692538361571095921575989136588898",
                true
            ),
            Ok(Position::Sequence(
                SequenceNumber::parse("49590338271490256608559692538361571095921575989136588898")
                    .unwrap()
            ))
        );
        for bad in ["", "yesterday", "12a", "1.", ".5", "2026-12-01", "LATEST"] {
            assert!(Position::parse(bad, true).is_err(), "{bad:?} refused");
        }
        let err = Position::parse(
            "49590338271490256608559692538361571095921575989136588898",
            false,
        )
        .unwrap_err();
        assert!(err.contains("a sequence number needs --shard"), "{err}");
    }

    #[test]
    fn ranges_refuse_a_trim_horizon_end_and_an_empty_range() {
        let err = Range::parse("TRIM_HORIZON", Some("TRIM_HORIZON"), None).unwrap_err();
        assert!(err.contains("--to: TRIM_HORIZON is a start"), "{err}");
        let err = Range::parse("200", Some("100"), None).unwrap_err();
        assert!(err.contains("--from must come before --to"), "{err}");
        let err = Range::parse("5", Some("5"), Some("shardId-0")).unwrap_err();
        assert!(err.contains("--from must come before --to"), "{err}");
        let err = Range::parse("nope", None, None).unwrap_err();
        assert!(err.starts_with("--from: "), "{err}");
        assert_eq!(
            Range::parse("3", Some("1796119200.5"), Some("shardId-0")),
            Ok(Range {
                from: Position::Sequence(seq(3)),
                to: Some(Position::Time(1_796_119_200.5)),
                shard: Some("shardId-0".into()),
            })
        );
    }

    #[test]
    fn overlapping_spans_merge_and_come_in_order() {
        let span = |shard: &str, from, through| ShardSpan {
            shard_id: shard.into(),
            from: seq(from),
            through: seq(through),
        };
        let spans = vec![
            span("b", 20, 30),
            span("b", 1, 5),
            span("a", 7, 9),
            span("b", 25, 40),
            span("b", 6, 6),
        ];
        let merged: Vec<_> = merged_by_shard(spans).into_iter().collect();
        assert_eq!(
            merged,
            vec![
                ("a".to_string(), vec![(seq(7), seq(9))]),
                (
                    "b".to_string(),
                    vec![(seq(1), seq(5)), (seq(6), seq(6)), (seq(20), seq(40))]
                ),
            ]
        );
    }
}

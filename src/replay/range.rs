//! STAND-IN, replay-failures branch only: replay-range owns this file and the lead takes
//! theirs at merge. [`replay_spans`] here is the agreed signature with the least behind it
//! for the `--failures` tests: Kinesis only, each span read from its first record to its
//! last and invoked in batches of the mapping's size, in order, with no retries or
//! destination.

use crate::config::{SourceKind, StreamSource};
use crate::daemon::{Ended, MappingReport, MappingState, RunReport};
use crate::event::sequence::SequenceNumber;
use crate::pipeline::Invoker;
use crate::source::stream::api::{StartAt, StreamApi};
use crate::source::stream::kinesis::KinesisApi;

use super::ReplayContext;

/// Records `from..=through` of a shard.
pub struct ShardSpan {
    pub shard_id: String,
    /// Inclusive.
    pub from: SequenceNumber,
    /// Inclusive.
    pub through: SequenceNumber,
}

/// Re-drives every record of each span, spans in the order given.
pub async fn replay_spans(ctx: &ReplayContext, spans: Vec<ShardSpan>) -> RunReport {
    let source = &ctx.mapping.source;
    let SourceKind::Stream(settings) = &ctx.mapping.kind else {
        panic!("stand-in: spans of a stream mapping only");
    };
    assert!(
        matches!(settings.stream, StreamSource::Kinesis { .. }),
        "stand-in: Kinesis only"
    );
    let sdk = crate::aws::sdk_config(&ctx.config.aws, Some(&source.region), None).await;
    let api = KinesisApi::new(
        crate::aws::kinesis(&sdk),
        &source.arn,
        &source.region,
        "arn:aws:iam::000000000000:role/replay",
        None,
    );
    let status = ctx.status.register(&ctx.mapping.id, "kinesis");
    status.running();
    let invoker = Invoker {
        function: ctx.function.clone(),
        mapping: ctx.mapping.id.clone(),
        report_item_failures: ctx.mapping.report_batch_item_failures,
        stop: ctx.stop.clone(),
        status: status.clone(),
    };
    for span in spans {
        let start = before(&span.from).map_or(StartAt::TrimHorizon, StartAt::AfterSequence);
        let mut iterator = api
            .iterator(&source.arn, &span.shard_id, &start)
            .await
            .expect("stand-in: GetShardIterator");
        let mut records = Vec::new();
        'read: loop {
            let page = api
                .read(&source.arn, &span.shard_id, &iterator, 10_000)
                .await
                .expect("stand-in: GetRecords");
            let empty = page.records.is_empty();
            for record in page.records {
                if record.sequence > span.through {
                    break 'read;
                }
                records.push(record);
            }
            match page.next_iterator {
                Some(next) if !empty => iterator = next,
                _ => break,
            }
        }
        status.polled(records.len());
        for batch in records.chunks(ctx.mapping.batch_size) {
            let _ = invoker.invoke(batch, || true).await;
        }
    }
    RunReport {
        ended: Ended::Drained,
        mappings: vec![MappingReport {
            id: ctx.mapping.id.clone(),
            source: source.arn.clone(),
            state: MappingState::Ran,
            activity: status.activity(),
        }],
    }
}

/// The sequence number one below `n`; `None` for zero.
fn before(n: &SequenceNumber) -> Option<SequenceNumber> {
    let mut digits = n.as_str().as_bytes().to_vec();
    let borrow_at = digits.iter().rposition(|&d| d != b'0')?;
    digits[borrow_at] -= 1;
    for d in &mut digits[borrow_at + 1..] {
        *d = b'9';
    }
    SequenceNumber::parse(std::str::from_utf8(&digits).ok()?)
}

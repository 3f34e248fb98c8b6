//! One shard: a reader and its lanes.
//!
//! The reader polls the shard (back to back while behind, at the idle interval once caught
//! up, never more than 5 reads a second) and hands each page's records to
//! `parallelization_factor` lanes, a record's lane chosen by its key, so records of one key
//! stay in order. Each lane has one batch in flight. Every record read takes a ticket in
//! the [`Ledger`]; the checkpoint moves to the last record of the settled prefix, so it
//! never passes a record that a slower lane still holds, and the runs settled beyond it
//! are stored too, so a restart skips them instead of delivering them again. The reader
//! reads ahead of the lanes only so far, in records and in bytes, and waits for a settle
//! to make room.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::api::{StartAt, StreamApi, StreamError, StreamRecord};
use super::{Mapping, now_seconds};
use crate::backoff::GaveUp;
use crate::checkpoint::{Progress, SettledRange};
use crate::event::failure::{BatchInfo, Condition, Failure, ResponseContext, failure_record};
use crate::event::sequence::SequenceNumber;
use crate::event::{MAX_INVOKE_PAYLOAD, records_event, records_event_size};
use crate::pipeline::batch::{Batcher, Gathered, Record};
use crate::pipeline::judge::{Judgement, WholeFailure};
use crate::pipeline::retry::{Decision, RetryPolicy};
use crate::pipeline::{Invoker, Step, Unreached};
use crate::status::ShardTracker;

/// Kinesis allows 5 GetRecords calls per second per shard.
const MIN_READ_INTERVAL: Duration = Duration::from_millis(200);
/// Empty pages in a row that end a replay of an open DynamoDB Streams shard: DynamoDB says
/// nothing of how far behind a page is, and may answer an empty page before records
/// further on.
const EMPTY_PAGES_AT_TIP: u32 = 3;
/// Calls a replay makes before it gives up on a shard whose iterator or reads keep
/// failing (about 10 s of backoff).
const REPLAY_ATTEMPTS: usize = 6;
/// Bytes of unsettled records a reader holds per lane, in 6 MiB invocations.
const READ_AHEAD_INVOCATIONS: usize = 4;

/// What the supervisor hands a shard task.
pub struct ShardRun {
    pub shard_id: String,
    pub stream_arn: String,
    pub start: StartAt,
    /// Runs of records settled beyond the checkpoint before a restart: skipped.
    pub settled_beyond: Vec<SettledRange>,
    /// The shard's ending sequence number, set by the supervisor once a listing shows the
    /// shard closed.
    pub ending: Arc<OnceLock<SequenceNumber>>,
    /// A replay's end: the shard is done at the first record past it, or at the tip,
    /// whichever comes first. `None` (`run`): read on without end.
    pub end: Option<RangeEnd>,
}

/// Where a replay stops reading a shard.
#[derive(Debug, Clone, PartialEq)]
pub enum RangeEnd {
    /// Before the first record that arrived at or after this time (epoch seconds).
    BeforeTime(f64),
    /// Before this sequence number.
    BeforeSequence(SequenceNumber),
    /// After this sequence number, itself included.
    Through(SequenceNumber),
}

impl RangeEnd {
    fn passed_by(&self, record: &StreamRecord) -> bool {
        match self {
            RangeEnd::BeforeTime(seconds) => record.arrival >= *seconds,
            RangeEnd::BeforeSequence(sequence) => record.sequence >= *sequence,
            RangeEnd::Through(sequence) => record.sequence > *sequence,
        }
    }
}

/// How a shard task ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ShardEnd {
    /// Read to its end, everything settled, marked finished.
    Finished,
    /// Stopped (shutdown or a re-created stream) with its checkpoint where it was.
    Stopped,
}

/// Reads and processes one shard until its end or `stop`.
pub async fn run_shard<A: StreamApi>(
    api: Arc<A>,
    mapping: Arc<Mapping>,
    run: ShardRun,
    stop: CancellationToken,
) -> ShardEnd {
    let ledger = Arc::new(ShardLedger {
        ledger: Mutex::new(Ledger::new(run.settled_beyond.clone())),
        room: Notify::new(),
    });
    let _attached = Attached::new(&mapping, &run.shard_id, ledger.clone());
    let tracker = Arc::new(mapping.status.shard(&run.shard_id));
    let lanes = mapping.settings.parallelization_factor.max(1);
    let mut senders = Vec::with_capacity(lanes);
    let mut tasks = Vec::with_capacity(lanes);
    for lane in 0..lanes {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        let worker = Lane {
            mapping: mapping.clone(),
            invoker: Invoker {
                function: mapping.function.clone(),
                mapping: mapping.config.id.clone(),
                report_item_failures: mapping.config.report_batch_item_failures,
                stop: stop.clone(),
                status: mapping.status.clone(),
                capture: mapping.capture.clone(),
            },
            policy: mapping.retry_policy(),
            shard_id: run.shard_id.clone(),
            stream_arn: run.stream_arn.clone(),
            lane,
            shard: ledger.clone(),
            tracker: tracker.clone(),
            stop: stop.clone(),
        };
        tasks.push(tokio::spawn(worker.run(rx).in_current_span()));
    }
    let read_to_end = read(&*api, &mapping, &run, &ledger, &tracker, &senders, &stop)
        .await
        .is_ok();
    if read_to_end {
        // not caught up while its last records settle and its children start
        mapping.status.caught_up(&run.shard_id, false);
    }
    drop(senders);
    let mut lanes_ok = true;
    for task in tasks {
        if let Err(err) = task.await {
            warn!(mapping = %mapping.config.id, shard = %run.shard_id, error = %err, "lane failed");
            lanes_ok = false;
        }
    }
    let settled = ledger.lock().is_empty();
    if !(read_to_end && settled && lanes_ok) {
        return ShardEnd::Stopped;
    }
    mapping.store.detach(&run.shard_id);
    let shard = run.shard_id.clone();
    if let Err(err) = mapping
        .store
        .update_now(|state| {
            let entry = state.shards.entry(shard).or_default();
            entry.finished = true;
            entry.settled_beyond.clear();
        })
        .await
    {
        warn!(mapping = %mapping.config.id, shard = %run.shard_id, error = %err, "cannot store that the shard is finished; it will be read again to its end");
        return ShardEnd::Stopped;
    }
    info!(mapping = %mapping.config.id, shard = %run.shard_id, "shard finished");
    ShardEnd::Finished
}

/// The reader, until the shard was read to its end.
async fn read<A: StreamApi>(
    api: &A,
    mapping: &Mapping,
    run: &ShardRun,
    ledger: &ShardLedger,
    tracker: &ShardTracker,
    lanes: &[mpsc::UnboundedSender<Vec<Ticketed>>],
    stop: &CancellationToken,
) -> Result<(), Stopped> {
    let id = &mapping.config.id;
    let shard = run.shard_id.as_str();
    let mut position = run.start.clone();
    let mut not_before = match run.start {
        StartAt::AtTimestamp(seconds) => Some(seconds),
        _ => None,
    };
    let mut iterator: Option<String> = None;
    // a replay gives up on a shard that keeps failing, so that it ends; `run` waits
    let failing = || match run.end {
        Some(_) => crate::backoff::outage().with_max_times(REPLAY_ATTEMPTS),
        None => crate::backoff::outage(),
    };
    let mut read_failures = failing().build();
    let mut last_call = Instant::now() - MIN_READ_INTERVAL;
    let mut empty_in_a_row = 0u32;
    let record_cap = (2 * api.max_read()).max(4 * mapping.config.batch_size * lanes.len());
    let byte_cap = READ_AHEAD_INVOCATIONS * MAX_INVOKE_PAYLOAD * lanes.len();
    loop {
        if stop.is_cancelled() {
            return Err(Stopped);
        }
        let current = match iterator.take() {
            Some(iterator) => iterator,
            None => {
                let fetched = crate::backoff::retry(
                    failing(),
                    stop,
                    || api.iterator(&run.stream_arn, shard, &position),
                    |err| !matches!(err, StreamError::Trimmed(_)),
                    |err, delay| {
                        warn!(mapping = %id, shard, error = %err, retry_in_ms = delay.as_millis() as u64, "cannot get a shard iterator");
                    },
                )
                .await;
                match fetched {
                    Ok(iterator) => iterator,
                    Err(GaveUp::Failed(StreamError::Trimmed(detail))) => {
                        mapping.status.metrics().trim_gaps.increment(1);
                        warn!(mapping = %id, shard, detail = %detail, "start position trimmed: reading from the oldest record, records in between are lost");
                        position = StartAt::TrimHorizon;
                        continue;
                    }
                    // only a replay's schedule runs out
                    Err(GaveUp::Failed(err)) => {
                        warn!(mapping = %id, shard, error = %err, "cannot get a shard iterator: giving up on the shard");
                        return Err(Stopped);
                    }
                    Err(GaveUp::Stopped) => return Err(Stopped),
                }
            }
        };
        // Read ahead only so far: a lane blocked on a failing batch must not make the
        // reader hold the whole shard, but it must not stop the other lanes either.
        let room = loop {
            let room = ledger.lock().room(record_cap, byte_cap);
            if room > 0 {
                break room;
            }
            tokio::select! {
                _ = stop.cancelled() => return Err(Stopped),
                _ = ledger.room.notified() => {}
            }
        };
        let since = last_call.elapsed();
        if since < MIN_READ_INTERVAL {
            pause(stop, MIN_READ_INTERVAL - since).await?;
        }
        let limit = api.max_read().min(room);
        let read = crate::backoff::retry(
            crate::backoff::outage(),
            stop,
            || {
                last_call = Instant::now();
                api.read(&run.stream_arn, shard, &current, limit)
            },
            // a throttled call leaves its iterator valid: the same call again
            |err| matches!(err, StreamError::Throttled(_)),
            |err, delay| {
                warn!(mapping = %id, shard, error = %err, retry_in_ms = delay.as_millis() as u64, "read throttled");
            },
        )
        .await;
        let mut page = match read {
            Ok(page) => page,
            Err(GaveUp::Stopped) => return Err(Stopped),
            Err(GaveUp::Failed(StreamError::ExpiredIterator)) => {
                info!(mapping = %id, shard, "shard iterator expired: getting a new one after the last record read");
                continue;
            }
            Err(GaveUp::Failed(StreamError::Trimmed(detail))) => {
                mapping.status.metrics().trim_gaps.increment(1);
                warn!(mapping = %id, shard, detail = %detail, "records trimmed before they were read: moving to the oldest record");
                position = StartAt::TrimHorizon;
                continue;
            }
            Err(GaveUp::Failed(err)) => {
                // the iterator may be what failed: a new one, after a wait that grows
                // while reads keep failing
                let Some(delay) = read_failures.next() else {
                    warn!(mapping = %id, shard, error = %err, "read failed: giving up on the shard");
                    return Err(Stopped);
                };
                warn!(mapping = %id, shard, error = %err, retry_in_ms = delay.as_millis() as u64, "read failed");
                pause(stop, delay).await?;
                continue;
            }
        };
        read_failures = failing().build();
        let past_end = run
            .end
            .as_ref()
            .and_then(|end| page.records.iter().position(|record| end.passed_by(record)));
        if let Some(first_past) = past_end {
            page.records.truncate(first_past);
        }
        let count = page.records.len();
        empty_in_a_row = if count == 0 { empty_in_a_row + 1 } else { 0 };
        if count > 0 {
            mapping.status.polled(count);
        }
        tracker.iterator_age(iterator_age(page.millis_behind, page.records.last()));
        if run.ending.get().is_some() {
            tracker.closed();
        }
        if let Some(last) = page.records.last() {
            position = StartAt::AfterSequence(last.sequence.clone());
        }
        let mut chunks: Vec<Vec<Ticketed>> = vec![Vec::new(); lanes.len()];
        let mut delivered = 0;
        let mut filtered = 0;
        {
            let mut ledger = ledger.lock();
            for record in page.records {
                if let Some(start) = not_before {
                    if !at_or_after(record.arrival, start) {
                        // before the start: passed over, and the checkpoint with it
                        ledger.push_settled(record.sequence);
                        continue;
                    }
                    not_before = None;
                }
                if mapping
                    .sieve
                    .as_ref()
                    .is_some_and(|sieve| !sieve.keeps(&record))
                {
                    // filtered out: passed over, and the checkpoint with it (§2.12)
                    ledger.push_settled(record.sequence);
                    filtered += 1;
                    continue;
                }
                let Some(ticket) = ledger.push(record.sequence.clone(), record.json.len()) else {
                    continue;
                };
                delivered += 1;
                chunks[lane_of(record.key_hash, lanes.len())].push(Ticketed { ticket, record });
            }
        }
        if filtered > 0 {
            mapping.status.filtered_out(filtered);
        }
        if delivered < count {
            mapping.store.touch();
        }
        for (lane, chunk) in lanes.iter().zip(chunks) {
            if !chunk.is_empty() && lane.send(chunk).is_err() {
                return Err(Stopped);
            }
        }
        let Some(next) = page.next_iterator.filter(|_| past_end.is_none()) else {
            return Ok(());
        };
        iterator = Some(next);
        // A closed shard also ends once its last record was read: moto never gives a
        // null next iterator. An empty page alone is no end: more records may follow.
        if run
            .ending
            .get()
            .is_some_and(|ending| read_to_ending(&position, ending))
        {
            return Ok(());
        }
        // Kinesis says how far behind a page is. DynamoDB does not, and may answer with
        // empty pages before records further on: only an empty page counts as caught up.
        let caught_up = match page.millis_behind {
            Some(behind) => count < limit && behind == 0,
            None => count == 0,
        };
        if mapping.status.drain_wanted() {
            // at the tip with every record read settled: nothing left to do here
            mapping
                .status
                .caught_up(shard, caught_up && ledger.lock().is_empty());
        }
        if caught_up {
            // a replay ends at the tip of an open shard (a closed one ends at its last
            // record); without Kinesis's word for it, after a few empty pages in a row
            let at_tip = run.ending.get().is_none()
                && (page.millis_behind.is_some() || empty_in_a_row >= EMPTY_PAGES_AT_TIP);
            if run.end.is_some() && at_tip {
                return Ok(());
            }
            pause(stop, api.idle_interval()).await?;
        }
    }
}

/// How far a page is behind the tip: what Kinesis says, else (DynamoDB) the age of its
/// last record; an empty page is at the tip.
fn iterator_age(millis_behind: Option<i64>, last: Option<&StreamRecord>) -> u64 {
    millis_behind.map_or_else(
        || {
            last.map_or(0, |record| {
                ((now_seconds() - record.arrival).max(0.0) * 1000.0) as u64
            })
        },
        |behind| behind.max(0) as u64,
    )
}

/// Whether a closed shard was read up to its ending sequence number. An ending of 0 is
/// an emulator's closed shard that never held a record (moto numbers records from 1).
fn read_to_ending(position: &StartAt, ending: &SequenceNumber) -> bool {
    match position {
        StartAt::AfterSequence(last) => last >= ending,
        _ => ending.is_zero(),
    }
}

/// A record's arrival against a start time; a whole-second arrival (DynamoDB on AWS) is
/// compared with the start's second, so no record of that second is skipped.
fn at_or_after(arrival: f64, start: f64) -> bool {
    arrival >= start || (arrival.fract() == 0.0 && arrival >= start.floor())
}

fn lane_of(key_hash: u64, lanes: usize) -> usize {
    (key_hash % lanes as u64) as usize
}

/// The shard task was told to stop before the work in hand was done.
#[derive(Debug)]
struct Stopped;

/// Sleeps for `delay`, unless `stop` comes first.
async fn pause(stop: &CancellationToken, delay: Duration) -> Result<(), Stopped> {
    stop.run_until_cancelled(tokio::time::sleep(delay))
        .await
        .ok_or(Stopped)
}

/// Part of a batch still to be settled, with its retry accounting.
struct Segment {
    records: Vec<Ticketed>,
    /// Invocations that held these records.
    invocations: u32,
    /// Retry attempts used.
    retries: u32,
    /// The first record of the last failure, to see the checkpoint move past it.
    first_failed: Option<SequenceNumber>,
}

impl Segment {
    /// Splits the segment in two halves with its counts, to be invoked next, left first.
    fn split_into(mut self, pending: &mut VecDeque<Segment>) {
        let right = Segment {
            records: self.records.split_off(self.records.len() / 2),
            invocations: self.invocations,
            retries: self.retries,
            first_failed: self.first_failed.clone(),
        };
        pending.push_front(right);
        pending.push_front(self);
    }
}

/// Why and how records are discarded.
struct Discard {
    condition: Condition,
    invocations: u32,
    response: Option<ResponseContext>,
    payload_size: Option<usize>,
    request_id: String,
}

/// A record with its place in the shard's ledger.
#[derive(Debug, Clone)]
struct Ticketed {
    ticket: u64,
    record: StreamRecord,
}

impl Record for Ticketed {
    fn json(&self) -> &[u8] {
        &self.record.json
    }

    fn item_id(&self) -> &str {
        self.record.sequence.as_str()
    }
}

/// The records read from a shard and not yet passed by the checkpoint, in shard order.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The ticket of the first entry.
    base: u64,
    entries: VecDeque<Entry>,
    /// The last record of the settled prefix, once one was settled.
    checkpoint: Option<SequenceNumber>,
    /// Runs settled before a restart that the reader has not passed yet.
    settled_earlier: VecDeque<SettledRange>,
    /// Bytes of the entries not settled.
    unsettled_bytes: usize,
}

#[derive(Debug)]
struct Entry {
    sequence: SequenceNumber,
    settled: bool,
    bytes: usize,
}

impl Ledger {
    /// A ledger for a shard whose runs `settled_earlier` (beyond its checkpoint, in
    /// order) were settled before a restart.
    fn new(settled_earlier: Vec<SettledRange>) -> Ledger {
        Ledger {
            settled_earlier: settled_earlier.into(),
            ..Ledger::default()
        }
    }

    /// Enters a record read, `bytes` long. `None` when it was settled before a restart:
    /// it enters settled and is not to be invoked again.
    fn push(&mut self, sequence: SequenceNumber, bytes: usize) -> Option<u64> {
        while self
            .settled_earlier
            .front()
            .is_some_and(|range| range.1 < sequence)
        {
            self.settled_earlier.pop_front();
        }
        if self
            .settled_earlier
            .front()
            .is_some_and(|range| range.contains(&sequence))
        {
            self.push_settled(sequence);
            return None;
        }
        self.entries.push_back(Entry {
            sequence,
            settled: false,
            bytes,
        });
        self.unsettled_bytes += bytes;
        Some(self.base + self.entries.len() as u64 - 1)
    }

    /// Enters a record that needs no invocation: settled at once.
    fn push_settled(&mut self, sequence: SequenceNumber) {
        self.entries.push_back(Entry {
            sequence,
            settled: true,
            bytes: 0,
        });
        self.pass_settled_prefix();
    }

    /// Marks tickets settled and moves the checkpoint over the settled prefix.
    fn settle(&mut self, tickets: impl IntoIterator<Item = u64>) {
        for ticket in tickets {
            if let Some(entry) = ticket
                .checked_sub(self.base)
                .and_then(|i| self.entries.get_mut(i as usize))
                && !entry.settled
            {
                entry.settled = true;
                self.unsettled_bytes -= entry.bytes;
            }
        }
        self.pass_settled_prefix();
    }

    fn pass_settled_prefix(&mut self) {
        while self.entries.front().is_some_and(|entry| entry.settled) {
            self.checkpoint = self.entries.pop_front().map(|entry| entry.sequence);
            self.base += 1;
        }
        while let (Some(range), Some(checkpoint)) = (self.settled_earlier.front(), &self.checkpoint)
            && range.1 <= *checkpoint
        {
            self.settled_earlier.pop_front();
        }
    }

    /// How many more records the reader may take, holding at most `records` entries and
    /// `bytes` of unsettled records.
    fn room(&self, records: usize, bytes: usize) -> usize {
        if self.unsettled_bytes >= bytes {
            return 0;
        }
        records.saturating_sub(self.entries.len())
    }

    /// The checkpoint and the runs settled beyond it, the ones from before a restart
    /// that were not read again yet included.
    fn position(&self) -> (Option<SequenceNumber>, Vec<SettledRange>) {
        let mut runs: Vec<SettledRange> = Vec::new();
        let mut open: Option<(&SequenceNumber, &SequenceNumber)> = None;
        for entry in &self.entries {
            match (&mut open, entry.settled) {
                (Some((_, last)), true) => *last = &entry.sequence,
                (None, true) => open = Some((&entry.sequence, &entry.sequence)),
                (Some((first, last)), false) => {
                    runs.push(SettledRange((*first).clone(), (*last).clone()));
                    open = None;
                }
                (None, false) => {}
            }
        }
        if let Some((first, last)) = open {
            runs.push(SettledRange(first.clone(), last.clone()));
        }
        runs.extend(self.settled_earlier.iter().cloned());
        (self.checkpoint.clone(), runs)
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A shard's ledger, shared by its reader and lanes, and read by the checkpoint writer.
struct ShardLedger {
    ledger: Mutex<Ledger>,
    /// Told when a settle made room for the reader.
    room: Notify,
}

impl ShardLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().expect("the ledger is never poisoned")
    }
}

impl Progress for ShardLedger {
    fn position(&self) -> (Option<SequenceNumber>, Vec<SettledRange>) {
        self.lock().position()
    }
}

/// Lets the checkpoint writer read a shard's ledger while the shard task runs, and takes
/// its last position when the task ends, however it ends.
struct Attached<'a> {
    mapping: &'a Mapping,
    shard: &'a str,
}

impl<'a> Attached<'a> {
    fn new(mapping: &'a Mapping, shard: &'a str, ledger: Arc<ShardLedger>) -> Attached<'a> {
        mapping.store.attach(shard, ledger);
        Attached { mapping, shard }
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.mapping.store.detach(self.shard);
    }
}

/// One lane: one batch in flight, retried until it succeeds.
struct Lane {
    mapping: Arc<Mapping>,
    invoker: Invoker,
    policy: RetryPolicy,
    shard_id: String,
    /// The stream read (for DynamoDB, resolved with its label).
    stream_arn: String,
    lane: usize,
    shard: Arc<ShardLedger>,
    /// Counts the batches in flight.
    tracker: Arc<ShardTracker>,
    stop: CancellationToken,
}

impl Lane {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Vec<Ticketed>>) {
        let config = &self.mapping.config;
        let mut batcher = Batcher::new(config.batch_size, config.batching_window);
        while let Gathered::Batch(batch) = batcher.gather(&mut rx, &self.stop).await {
            if self.process(batch.records).await.is_err() {
                return;
            }
            batcher.restart_window();
        }
    }

    /// Invokes until every record of the batch is settled: processed, or discarded (to the
    /// destination) by the retry policy, unless stopped first.
    ///
    /// Records past `maximum_record_age_in_seconds` are discarded before each invocation,
    /// and a target that cannot be reached is given up on once a record expires. The
    /// [`RetryPolicy`] decides after each answer: settle, bisect, retry from the first
    /// failed record after a pause, or discard. A batch the target finds too large (413)
    /// is split whatever bisect says, and a lone record it still refuses is discarded as
    /// `MaximumPayloadSizeExceeded`.
    async fn process(&self, records: Vec<Ticketed>) -> Result<(), Stopped> {
        if self.mapping.dry_run {
            self.print_dry_run(&records);
            self.settle(records.iter().map(|r| r.ticket));
            return Ok(());
        }
        let _in_flight = self.tracker.batch();
        let policy = self.policy;
        let mut failures = crate::backoff::failed_stream_batch();
        let mut pending = VecDeque::from([Segment {
            records,
            invocations: 0,
            retries: 0,
            first_failed: None,
        }]);
        while let Some(mut segment) = pending.pop_front() {
            if self.stop.is_cancelled() {
                return Err(Stopped);
            }
            let now = now_seconds();
            let expired = |r: &Ticketed| policy.expired(r.record.arrival, now);
            if segment.records.iter().any(expired) {
                // one failure record per run of adjacent expired records, so its sequence
                // range names only discarded records
                let mut fresh = Vec::with_capacity(segment.records.len());
                let mut runs: Vec<Vec<Ticketed>> = Vec::new();
                let mut in_run = false;
                for record in segment.records {
                    if expired(&record) {
                        if !in_run {
                            runs.push(Vec::new());
                        }
                        runs.last_mut().expect("a run was opened").push(record);
                        in_run = true;
                    } else {
                        fresh.push(record);
                        in_run = false;
                    }
                }
                segment.records = fresh;
                for run in runs {
                    let discard = Discard {
                        condition: Condition::RecordAgeExceeded,
                        invocations: segment.invocations + 1,
                        response: None,
                        payload_size: None,
                        request_id: uuid::Uuid::new_v4().to_string(),
                    };
                    self.discard(&run, discard).await?;
                }
            }
            if segment.records.is_empty() {
                continue;
            }
            if let [lone] = segment.records.as_slice()
                && records_event_size(1, lone.record.json.len()) >= MAX_INVOKE_PAYLOAD
            {
                let payload_size = records_event_size(1, lone.record.json.len());
                let discard = Discard {
                    condition: Condition::MaximumPayloadSizeExceeded,
                    invocations: 0,
                    response: None,
                    payload_size: Some(payload_size),
                    request_id: uuid::Uuid::new_v4().to_string(),
                };
                self.discard(&segment.records, discard).await?;
                continue;
            }
            self.invoke(segment, &mut pending, &mut failures).await?;
        }
        Ok(())
    }

    /// Invokes `segment` once the function is reached, and carries out the policy's
    /// decision; what is still to be invoked goes to the front of `pending`.
    async fn invoke(
        &self,
        mut segment: Segment,
        pending: &mut VecDeque<Segment>,
        failures: &mut impl Iterator<Item = Duration>,
    ) -> Result<(), Stopped> {
        let id = &self.mapping.config.id;
        let shard = self.shard_id.as_str();
        let oldest = segment
            .records
            .iter()
            .map(|r| r.record.arrival)
            .fold(f64::INFINITY, f64::min);
        let still_wanted = || !self.policy.expired(oldest, now_seconds());
        let step = self
            .invoker
            .invoke(&segment.records, still_wanted)
            .instrument(tracing::info_span!("lane", shard, lane = self.lane))
            .await;
        let (invocation, judgement, payload_size) = match step {
            Ok((
                Step::Answered {
                    invocation,
                    judgement,
                    payload_size,
                },
                _,
            )) => (invocation, judgement, payload_size),
            Ok((Step::Split, _)) => {
                segment.invocations += 1;
                segment.split_into(pending);
                return Ok(());
            }
            // a record expired while the target could not be reached: the age check
            // discards it before the next invocation
            Err(Unreached::GaveUp) => {
                pending.push_front(segment);
                return Ok(());
            }
            Err(Unreached::Stopped) => return Err(Stopped),
        };
        segment.invocations += 1;
        // the checkpoint moved past the record that failed first: a fresh count
        let first_failed = judgement
            .failed_from()
            .map(|from| segment.records[from].record.sequence.clone());
        let moved_on = first_failed.as_ref().is_some_and(|first| {
            segment
                .first_failed
                .as_ref()
                .is_some_and(|earlier| first > earlier)
        });
        let retries = if moved_on { 0 } else { segment.retries };
        let decision = self
            .policy
            .decide(&judgement, segment.records.len(), retries);
        let from = match decision {
            Decision::Settle => {
                self.settle(segment.records.iter().map(|r| r.ticket));
                return Ok(());
            }
            Decision::Split => {
                debug!(mapping = %id, shard, lane = self.lane, records = segment.records.len(), reason = %judgement.reason(), "batch failed: bisecting");
                segment.split_into(pending);
                return Ok(());
            }
            Decision::Retry { from } | Decision::Discard { from, .. } => from,
        };
        self.settle(segment.records.drain(..from).map(|r| r.ticket));
        if moved_on {
            segment.retries = 0;
            segment.invocations = 1;
        }
        segment.first_failed = first_failed;
        if let Decision::Discard { condition, .. } = decision {
            let function_error = match &judgement {
                Judgement::WholeBatch(WholeFailure::FunctionError { error_type, .. }) => {
                    Some(error_type.clone())
                }
                _ => None,
            };
            let too_large = condition == Condition::MaximumPayloadSizeExceeded;
            let discard = Discard {
                condition,
                invocations: segment.invocations,
                response: (!too_large).then_some(ResponseContext {
                    executed_version: invocation.executed_version,
                    function_error,
                }),
                payload_size: too_large.then_some(payload_size),
                request_id: invocation.request_id,
            };
            return self.discard(&segment.records, discard).await;
        }
        segment.retries += 1;
        let delay = failures.next().unwrap_or(Duration::from_secs(60));
        warn!(
            mapping = %id,
            shard,
            lane = self.lane,
            retrying_from = %segment.records[0].record.sequence,
            records = segment.records.len(),
            attempt = segment.retries,
            reason = %judgement.reason(),
            retry_in_ms = delay.as_millis() as u64,
            "batch failed: retrying from the first failed record"
        );
        pause(&self.stop, delay).await?;
        pending.push_front(segment);
        Ok(())
    }

    /// Sends one failure record for `records` to the destination, retrying until it is
    /// accepted, then settles them. Without a destination the discard is logged. Stopped
    /// before the destination took the record, nothing is settled.
    async fn discard(&self, records: &[Ticketed], discard: Discard) -> Result<(), Stopped> {
        let mapping = &self.mapping;
        let first = &records[0].record;
        let last = &records[records.len() - 1].record;
        let failure = Failure {
            request_id: discard.request_id,
            function_arn: mapping.function_arn.clone(),
            condition: discard.condition,
            approximate_invoke_count: discard.invocations,
            response: discard.response,
            payload_size: discard.payload_size,
            batch: BatchInfo {
                shard_id: self.shard_id.clone(),
                start_sequence_number: first.sequence.to_string(),
                end_sequence_number: last.sequence.to_string(),
                first_arrival: first.arrival,
                last_arrival: last.arrival,
                batch_size: records.len(),
                stream_arn: self.stream_arn.clone(),
            },
        };
        match &mapping.destination {
            None => warn!(
                mapping = %mapping.config.id,
                shard = %self.shard_id,
                first = %first.sequence,
                last = %last.sequence,
                records = records.len(),
                condition = discard.condition.as_str(),
                "records discarded (no on-failure destination)"
            ),
            Some(destination) => {
                let event = records_event(records.iter().map(|r| r.record.json.as_slice()));
                let event = &event;
                let delivered = crate::backoff::retry(
                    crate::backoff::outage(),
                    &self.stop,
                    || {
                        let now = now_seconds();
                        let record = failure_record(&failure, mapping.stream_kind, now);
                        async move {
                            destination
                                .deliver(&record, event, &mapping.config.id, &self.shard_id, now)
                                .await
                        }
                    },
                    |_| true,
                    |err, delay| {
                        warn!(mapping = %mapping.config.id, shard = %self.shard_id, destination = %destination.describe(), error = %err, retry_in_ms = delay.as_millis() as u64, "on-failure destination refused the record: the shard waits");
                    },
                )
                .await;
                // the schedule is endless: only stop ends it undelivered
                if delivered.is_err() {
                    return Err(Stopped);
                }
                info!(
                    mapping = %mapping.config.id,
                    shard = %self.shard_id,
                    first = %first.sequence,
                    last = %last.sequence,
                    records = records.len(),
                    condition = discard.condition.as_str(),
                    destination = %destination.describe(),
                    "records discarded to the on-failure destination"
                );
            }
        }
        self.mapping.status.discarded(
            records.len(),
            discard.condition,
            mapping.destination.is_some(),
        );
        self.settle(records.iter().map(|r| r.ticket));
        Ok(())
    }

    /// `--dry-run`: the batch this lane would send, as one JSON line on stdout.
    fn print_dry_run(&self, records: &[Ticketed]) {
        let line = serde_json::json!({
            "shard": self.shard_id,
            "first_sequence_number": records[0].record.sequence,
            "last_sequence_number": records[records.len() - 1].record.sequence,
            "records": records.len(),
        });
        println!("{line}");
    }

    /// Marks records settled; the checkpoint writer stores the new position shortly.
    fn settle(&self, tickets: impl IntoIterator<Item = u64>) {
        self.shard.lock().settle(tickets);
        self.shard.room.notify_one();
        self.mapping.store.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::stream::api::key_hash;

    fn seq(n: u32) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    fn range(first: u32, last: u32) -> SettledRange {
        SettledRange(seq(first), seq(last))
    }

    #[test]
    fn the_checkpoint_moves_over_the_settled_prefix_only() {
        let mut ledger = Ledger::default();
        let tickets: Vec<u64> = (1..=5)
            .map(|n| ledger.push(seq(n * 10), 1).unwrap())
            .collect();
        ledger.settle([tickets[1], tickets[3]]);
        assert_eq!(
            ledger.position(),
            (None, vec![range(20, 20), range(40, 40)]),
            "the first is unsettled"
        );
        ledger.settle([tickets[0]]);
        assert_eq!(ledger.position(), (Some(seq(20)), vec![range(40, 40)]));
        ledger.settle([tickets[2]]);
        assert_eq!(ledger.position(), (Some(seq(40)), vec![]));
        assert!(!ledger.is_empty());
        ledger.settle([tickets[4]]);
        assert_eq!(ledger.position(), (Some(seq(50)), vec![]));
        assert!(ledger.is_empty());
        let later = ledger.push(seq(60), 1).unwrap();
        assert_eq!(later, 5);
        ledger.settle([later, later]);
        assert_eq!(ledger.position(), (Some(seq(60)), vec![]));
    }

    #[test]
    fn runs_settled_beyond_the_checkpoint_are_kept_as_ranges() {
        let mut ledger = Ledger::default();
        let tickets: Vec<u64> = (1..=8).map(|n| ledger.push(seq(n), 1).unwrap()).collect();
        // lanes settle 2-3, 5, 7-8; 1, 4 and 6 are in flight
        ledger.settle([tickets[1], tickets[2], tickets[4], tickets[6], tickets[7]]);
        assert_eq!(
            ledger.position(),
            (None, vec![range(2, 3), range(5, 5), range(7, 8)])
        );
    }

    #[test]
    fn a_restart_skips_what_was_settled_beyond_the_checkpoint() {
        // stored: checkpoint 1, settled 2-3 and 5; the reader starts after 1
        let mut ledger = Ledger::new(vec![range(2, 3), range(5, 5)]);
        assert_eq!(ledger.push(seq(2), 1), None, "settled before the restart");
        assert_eq!(ledger.push(seq(3), 1), None);
        assert_eq!(ledger.position(), (Some(seq(3)), vec![range(5, 5)]));
        let four = ledger
            .push(seq(4), 1)
            .expect("not settled before: delivered");
        assert_eq!(ledger.push(seq(5), 1), None);
        let six = ledger.push(seq(6), 1).expect("beyond every stored range");
        assert_eq!(ledger.position(), (Some(seq(3)), vec![range(5, 5)]));
        ledger.settle([four]);
        assert_eq!(ledger.position(), (Some(seq(5)), vec![]), "the set shrinks");
        ledger.settle([six]);
        assert_eq!(ledger.position(), (Some(seq(6)), vec![]));
    }

    #[test]
    fn ranges_not_read_again_yet_are_kept() {
        let mut ledger = Ledger::new(vec![range(5, 7), range(10, 12)]);
        let two = ledger.push(seq(2), 1).unwrap();
        assert_eq!(ledger.push(seq(6), 1), None, "inside the first range");
        assert_eq!(
            ledger.position(),
            (None, vec![range(6, 6), range(5, 7), range(10, 12)]),
            "a restart now still skips every stored range"
        );
        ledger.settle([two]);
        assert_eq!(
            ledger.position(),
            (Some(seq(6)), vec![range(5, 7), range(10, 12)])
        );
    }

    #[test]
    fn records_before_the_start_move_the_checkpoint_at_once() {
        let mut ledger = Ledger::default();
        ledger.push_settled(seq(1));
        ledger.push_settled(seq(2));
        assert_eq!(ledger.position(), (Some(seq(2)), vec![]));
        assert!(ledger.is_empty());
    }

    #[test]
    fn room_counts_entries_and_unsettled_bytes() {
        let mut ledger = Ledger::default();
        assert_eq!(ledger.room(3, 100), 3);
        let first = ledger.push(seq(1), 60).unwrap();
        let second = ledger.push(seq(2), 50).unwrap();
        assert_eq!(ledger.room(3, 100), 0, "110 unsettled bytes pass the cap");
        ledger.settle([second]);
        assert_eq!(
            ledger.room(3, 100),
            1,
            "two entries held: the first is unsettled"
        );
        ledger.settle([first]);
        assert_eq!(ledger.room(3, 100), 3);
    }

    /// Checks a stored position against the truth: the checkpoint is below every unsettled
    /// record, no range holds an unsettled record, and every settled record is at or below
    /// the checkpoint or in a range.
    fn assert_position_holds(
        position: &(Option<SequenceNumber>, Vec<SettledRange>),
        records: &[(SequenceNumber, bool)],
    ) {
        let (checkpoint, ranges) = position;
        for (sequence, settled) in records {
            let passed = checkpoint.as_ref().is_some_and(|c| sequence <= c);
            let in_range = ranges.iter().any(|r| r.contains(sequence));
            if *settled {
                assert!(passed || in_range, "settled {sequence} is not stored");
            } else {
                assert!(!passed, "the checkpoint passed unsettled {sequence}");
                assert!(!in_range, "a range holds unsettled {sequence}");
            }
        }
    }

    proptest::proptest! {
        /// Whatever order lanes settle in and wherever restarts fall, the stored position
        /// holds exactly the settled records, and a restart invokes exactly the others.
        #[test]
        fn a_restart_invokes_exactly_the_records_not_settled(
            gaps in proptest::collection::vec(1u32..4, 1..60),
            settled_first in proptest::collection::vec(proptest::bool::ANY, 60),
            order in proptest::collection::vec(0u32..1000, 60),
            read_again in 0usize..60,
            settled_second in proptest::collection::vec(proptest::bool::ANY, 60),
        ) {
            let mut next = 0;
            let sequences: Vec<SequenceNumber> = gaps
                .iter()
                .map(|gap| {
                    next += gap;
                    seq(next)
                })
                .collect();
            let mut truth: Vec<(SequenceNumber, bool)> =
                sequences.iter().map(|s| (s.clone(), false)).collect();

            // first run: everything read, some settled, in any order
            let mut first = Ledger::default();
            let tickets: Vec<u64> = sequences
                .iter()
                .map(|s| first.push(s.clone(), 1).unwrap())
                .collect();
            let mut settle_order: Vec<usize> =
                (0..sequences.len()).filter(|&i| settled_first[i]).collect();
            settle_order.sort_by_key(|&i| order[i]);
            for i in settle_order {
                first.settle([tickets[i]]);
                truth[i].1 = true;
                assert_position_holds(&first.position(), &truth);
            }

            // second run: reads only part of what follows the checkpoint, settles some
            let (checkpoint, ranges) = first.position();
            let mut second = Ledger::new(ranges);
            let beyond: Vec<usize> = (0..sequences.len())
                .filter(|&i| checkpoint.as_ref().is_none_or(|c| sequences[i] > *c))
                .collect();
            for &i in beyond.iter().take(read_again) {
                match second.push(sequences[i].clone(), 1) {
                    None => assert!(truth[i].1, "{} skipped unsettled", sequences[i]),
                    Some(ticket) => {
                        assert!(!truth[i].1, "{} invoked again", sequences[i]);
                        if settled_second[i] {
                            second.settle([ticket]);
                            truth[i].1 = true;
                        }
                    }
                }
            }
            let mut position = second.position();
            if position.0.is_none() {
                position.0 = checkpoint.clone();
            }
            assert_position_holds(&position, &truth);

            // third run: reads everything after the stored checkpoint
            let (checkpoint, ranges) = position;
            let mut third = Ledger::new(ranges);
            for (i, sequence) in sequences.iter().enumerate() {
                if checkpoint.as_ref().is_some_and(|c| sequence <= c) {
                    continue;
                }
                let skipped = third.push(sequence.clone(), 1).is_none();
                assert_eq!(skipped, truth[i].1, "{sequence}: skipped exactly when settled");
            }
        }
    }

    #[test]
    fn a_key_always_maps_to_the_same_lane() {
        for key in ["a", "user-17", ""] {
            let lane = lane_of(key_hash(key), 4);
            assert!(lane < 4);
            assert_eq!(lane, lane_of(key_hash(key), 4));
        }
        let lanes: std::collections::HashSet<usize> = (0..100)
            .map(|i| lane_of(key_hash(&format!("k{i}")), 4))
            .collect();
        assert_eq!(lanes.len(), 4, "keys spread over every lane");
    }

    #[test]
    fn start_time_comparison_keeps_whole_second_arrivals() {
        assert!(at_or_after(10.5, 10.5));
        assert!(!at_or_after(10.4, 10.5));
        assert!(
            at_or_after(10.0, 10.5),
            "a whole-second arrival in the start's second"
        );
        assert!(!at_or_after(9.0, 10.5));
    }
}

//! One shard: a reader and its lanes.
//!
//! The reader polls the shard (back to back while behind, at the idle interval once caught
//! up, never more than 5 reads a second) and hands each page's records to
//! `parallelization_factor` lanes, a record's lane chosen by its key, so records of one key
//! stay in order. Each lane has one batch in flight. Every record read takes a ticket in
//! the [`Ledger`]; the checkpoint moves to the last record of the settled prefix, so it
//! never passes a record that a slower lane still holds.

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::Mapping;
use super::api::{StartAt, StreamApi, StreamError, StreamRecord};
use crate::batch::{Batch, Record};
use crate::event::failure::{BatchInfo, Condition, Failure, ResponseContext, failure_record};
use crate::event::response::{BatchResponse, parse_batch_response};
use crate::event::sequence::SequenceNumber;
use crate::event::{MAX_INVOKE_PAYLOAD, records_event};
use crate::target::Outcome;

/// Kinesis allows 5 GetRecords calls per second per shard.
const MIN_READ_INTERVAL: Duration = Duration::from_millis(200);
/// How often a reader that holds its most unsettled records looks again.
const FULL_PAUSE: Duration = Duration::from_millis(20);

/// What the supervisor hands a shard task.
pub struct ShardRun {
    pub shard_id: String,
    pub stream_arn: String,
    pub start: StartAt,
    /// Set by the supervisor when a listing shows the shard closed.
    pub closed: Arc<AtomicBool>,
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
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let lanes = mapping.settings.parallelization_factor.max(1);
    let mut senders = Vec::with_capacity(lanes);
    let mut tasks = Vec::with_capacity(lanes);
    for lane in 0..lanes {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        let worker = Lane {
            mapping: mapping.clone(),
            shard_id: run.shard_id.clone(),
            stream_arn: run.stream_arn.clone(),
            lane,
            ledger: ledger.clone(),
            stop: stop.clone(),
        };
        tasks.push(tokio::spawn(worker.run(rx)));
    }
    let read_to_end = read(&*api, &mapping, &run, &ledger, &senders, &stop).await;
    drop(senders);
    let mut lanes_ok = true;
    for task in tasks {
        if let Err(err) = task.await {
            warn!(mapping = %mapping.config.id, shard = %run.shard_id, error = %err, "lane failed");
            lanes_ok = false;
        }
    }
    let settled = ledger.lock().expect("never poisoned").is_empty();
    if !(read_to_end && settled && lanes_ok) {
        return ShardEnd::Stopped;
    }
    let shard = run.shard_id.clone();
    if let Err(err) = mapping.store.update(|state| {
        state.shards.entry(shard).or_default().finished = true;
    }) {
        warn!(mapping = %mapping.config.id, shard = %run.shard_id, error = %err, "cannot store that the shard is finished; it will be read again to its end");
        return ShardEnd::Stopped;
    }
    info!(mapping = %mapping.config.id, shard = %run.shard_id, "shard finished");
    ShardEnd::Finished
}

/// The reader. Returns true when the shard was read to its end.
async fn read<A: StreamApi>(
    api: &A,
    mapping: &Mapping,
    run: &ShardRun,
    ledger: &Mutex<Ledger>,
    lanes: &[mpsc::UnboundedSender<Vec<Ticketed>>],
    stop: &CancellationToken,
) -> bool {
    let id = &mapping.config.id;
    let shard = run.shard_id.as_str();
    let mut position = run.start.clone();
    let mut not_before = match run.start {
        StartAt::AtTimestamp(seconds) => Some(seconds),
        _ => None,
    };
    let mut iterator: Option<String> = None;
    let mut delays = crate::backoff::unreached_target();
    let mut last_call = Instant::now() - MIN_READ_INTERVAL;
    let unsettled_cap = (2 * api.max_read()).max(4 * mapping.config.batch_size * lanes.len());
    loop {
        if stop.is_cancelled() {
            return false;
        }
        let current = match iterator.take() {
            Some(iterator) => iterator,
            None => match api.iterator(&run.stream_arn, shard, &position).await {
                Ok(iterator) => iterator,
                Err(StreamError::Trimmed(detail)) => {
                    warn!(mapping = %id, shard, detail = %detail, "start position trimmed: reading from the oldest record, records in between are lost");
                    position = StartAt::TrimHorizon;
                    continue;
                }
                Err(err) => {
                    let delay = delays.next().unwrap_or(MIN_READ_INTERVAL);
                    warn!(mapping = %id, shard, error = %err, retry_in_ms = delay.as_millis() as u64, "cannot get a shard iterator");
                    if pause(stop, delay).await {
                        return false;
                    }
                    continue;
                }
            },
        };
        // Read ahead only so far: a lane blocked on a failing batch must not make the
        // reader hold the whole shard, but it must not stop the other lanes either.
        while ledger.lock().expect("never poisoned").len() >= unsettled_cap {
            if pause(stop, FULL_PAUSE).await {
                return false;
            }
        }
        let since = last_call.elapsed();
        if since < MIN_READ_INTERVAL && pause(stop, MIN_READ_INTERVAL - since).await {
            return false;
        }
        last_call = Instant::now();
        let limit = api.max_read();
        let page = match api.read(&run.stream_arn, shard, &current, limit).await {
            Ok(page) => page,
            Err(StreamError::ExpiredIterator) => {
                info!(mapping = %id, shard, "shard iterator expired: getting a new one after the last record read");
                continue;
            }
            Err(StreamError::Trimmed(detail)) => {
                warn!(mapping = %id, shard, detail = %detail, "records trimmed before they were read: moving to the oldest record");
                position = StartAt::TrimHorizon;
                continue;
            }
            Err(err) => {
                // a throttled call leaves its iterator valid; after other errors get a new one
                if matches!(err, StreamError::Throttled(_)) {
                    iterator = Some(current);
                }
                let delay = delays.next().unwrap_or(MIN_READ_INTERVAL);
                warn!(mapping = %id, shard, error = %err, retry_in_ms = delay.as_millis() as u64, "read failed");
                if pause(stop, delay).await {
                    return false;
                }
                continue;
            }
        };
        delays = crate::backoff::unreached_target();
        let count = page.records.len();
        if let Some(last) = page.records.last() {
            position = StartAt::AfterSequence(last.sequence.clone());
        }
        let mut chunks: Vec<Vec<Ticketed>> = vec![Vec::new(); lanes.len()];
        {
            let mut ledger = ledger.lock().expect("never poisoned");
            for record in page.records {
                if let Some(start) = not_before {
                    if !at_or_after(record.arrival, start) {
                        continue;
                    }
                    not_before = None;
                }
                let ticket = ledger.push(record.sequence.clone());
                chunks[lane_of(&record.key, lanes.len())].push(Ticketed { ticket, record });
            }
        }
        for (lane, chunk) in lanes.iter().zip(chunks) {
            if !chunk.is_empty() && lane.send(chunk).is_err() {
                return false;
            }
        }
        let Some(next) = page.next_iterator else {
            return true;
        };
        iterator = Some(next);
        // Kinesis says how far behind a page is. DynamoDB does not, and may answer with
        // empty pages before records further on: only an empty page counts as caught up.
        let caught_up = match page.millis_behind {
            Some(behind) => count < limit && behind == 0,
            None => count == 0,
        };
        // moto never ends a closed Kinesis shard: an empty page of a closed shard that is
        // not behind is its end. Everywhere else the end is a null next iterator.
        if count == 0 && page.millis_behind == Some(0) && run.closed.load(Ordering::SeqCst) {
            return true;
        }
        if caught_up && pause(stop, api.idle_interval()).await {
            return false;
        }
    }
}

/// A record's arrival against a start time; a whole-second arrival (DynamoDB on AWS) is
/// compared with the start's second, so no record of that second is skipped.
fn at_or_after(arrival: f64, start: f64) -> bool {
    arrival >= start || (arrival.fract() == 0.0 && arrival >= start.floor())
}

fn lane_of(key: &str, lanes: usize) -> usize {
    if lanes == 1 {
        return 0;
    }
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}

/// Sleeps for `delay`; true when `stop` came first.
async fn pause(stop: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
    }
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
    /// The counts of a segment for its other half after a bisect.
    fn clone_counts(&self) -> Segment {
        Segment {
            records: Vec::new(),
            invocations: self.invocations,
            retries: self.retries,
            first_failed: self.first_failed.clone(),
        }
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

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
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
}

/// The records read from a shard and not yet settled, in shard order.
#[derive(Debug, Default)]
pub struct Ledger {
    /// The ticket of the first entry.
    base: u64,
    entries: VecDeque<(SequenceNumber, bool)>,
}

impl Ledger {
    fn push(&mut self, sequence: SequenceNumber) -> u64 {
        self.entries.push_back((sequence, false));
        self.base + self.entries.len() as u64 - 1
    }

    /// Marks tickets settled; returns the new checkpoint when the settled prefix grew.
    fn settle(&mut self, tickets: impl IntoIterator<Item = u64>) -> Option<SequenceNumber> {
        for ticket in tickets {
            if let Some(entry) = ticket
                .checked_sub(self.base)
                .and_then(|i| self.entries.get_mut(i as usize))
            {
                entry.1 = true;
            }
        }
        let mut checkpoint = None;
        while self.entries.front().is_some_and(|(_, settled)| *settled) {
            checkpoint = self.entries.pop_front().map(|(sequence, _)| sequence);
            self.base += 1;
        }
        checkpoint
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// One lane: one batch in flight, retried until it succeeds.
struct Lane {
    mapping: Arc<Mapping>,
    shard_id: String,
    /// The stream read (for DynamoDB, resolved with its label).
    stream_arn: String,
    lane: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
}

impl Lane {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Vec<Ticketed>>) {
        let window = self.mapping.config.batching_window;
        let batch_size = self.mapping.config.batch_size;
        let mut carry: VecDeque<Ticketed> = VecDeque::new();
        let mut open = true;
        let mut window_end = Instant::now() + window;
        loop {
            let mut batch = Batch::new(batch_size);
            loop {
                while let Some(record) = carry.pop_front() {
                    if let Err(record) = batch.try_push(record) {
                        carry.push_front(record);
                        break;
                    }
                    if batch.is_full() {
                        break;
                    }
                }
                if batch.is_full() || (!batch.is_empty() && (Instant::now() >= window_end || !open))
                {
                    break;
                }
                if !open {
                    return;
                }
                let received = if batch.is_empty() {
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        chunk = rx.recv() => Some(chunk),
                    }
                } else {
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        chunk = rx.recv() => Some(chunk),
                        _ = tokio::time::sleep_until(window_end.into()) => None,
                    }
                };
                match received {
                    Some(Some(chunk)) => {
                        if batch.is_empty() && carry.is_empty() && Instant::now() >= window_end {
                            window_end = Instant::now() + window;
                        }
                        carry.extend(chunk);
                    }
                    Some(None) => open = false,
                    None => {}
                }
            }
            if self.stop.is_cancelled() || !self.process(batch.records).await {
                return;
            }
            window_end = Instant::now() + window;
        }
    }

    /// Invokes until every record of the batch is settled: processed, or discarded (to the
    /// destination) by the retry policy. False when stopped first.
    ///
    /// A failed batch is retried from its first failed record (all of it after a function
    /// error or an invalid response). With bisect on, a whole failure splits the batch in
    /// two instead, left half first, without using a retry attempt. A batch the target
    /// finds too large (413) is split the same way whatever bisect says, and a single
    /// record it still refuses is discarded as `MaximumPayloadSizeExceeded`. Records past
    /// `maximum_record_age_in_seconds` are discarded before an invocation; a batch that
    /// used up `maximum_retry_attempts` is discarded after its last invocation.
    async fn process(&self, records: Vec<Ticketed>) -> bool {
        let id = &self.mapping.config.id;
        let shard = self.shard_id.as_str();
        let settings = &self.mapping.settings;
        let mut failures = crate::backoff::failed_stream_batch();
        let mut unreached = crate::backoff::unreached_target();
        let mut pending = VecDeque::from([Segment {
            records,
            invocations: 0,
            retries: 0,
            first_failed: None,
        }]);
        while let Some(mut segment) = pending.pop_front() {
            if self.stop.is_cancelled() {
                return false;
            }
            if settings.maximum_record_age_in_seconds >= 0 {
                let oldest_allowed = now_seconds() - settings.maximum_record_age_in_seconds as f64;
                let (expired, fresh): (Vec<Ticketed>, Vec<Ticketed>) = segment
                    .records
                    .into_iter()
                    .partition(|r| r.record.arrival < oldest_allowed);
                segment.records = fresh;
                if !expired.is_empty() {
                    let discard = Discard {
                        condition: Condition::RecordAgeExceeded,
                        invocations: segment.invocations + 1,
                        response: None,
                        payload_size: None,
                        request_id: uuid::Uuid::new_v4().to_string(),
                    };
                    if !self.discard(&expired, discard).await {
                        return false;
                    }
                }
                if segment.records.is_empty() {
                    continue;
                }
            }
            let event = records_event(segment.records.iter().map(|r| r.record.json.as_slice()));
            if segment.records.len() == 1 && event.len() >= MAX_INVOKE_PAYLOAD {
                let discard = Discard {
                    condition: Condition::MaximumPayloadSizeExceeded,
                    invocations: 0,
                    response: None,
                    payload_size: Some(event.len()),
                    request_id: uuid::Uuid::new_v4().to_string(),
                };
                if !self.discard(&segment.records, discard).await {
                    return false;
                }
                continue;
            }
            let payload_size = event.len();
            let Some(invocation) = self.mapping.function.invoke(event, &self.stop).await else {
                return false;
            };
            if let Some(detail) = invocation.outcome.retry_detail() {
                // not reached: no retry attempt used; the age check runs again first
                let delay = unreached.next().unwrap_or(Duration::from_secs(5));
                if let Outcome::Rejected { status, .. } = &invocation.outcome {
                    error!(mapping = %id, shard, lane = self.lane, status, detail = %detail, retry_in_ms = delay.as_millis() as u64, "the target refused the invocation (wrong URL or function name?), retrying the batch");
                } else {
                    warn!(mapping = %id, shard, lane = self.lane, outcome = invocation.outcome.label(), detail = %detail, retry_in_ms = delay.as_millis() as u64, "function not reached, retrying the batch");
                }
                if pause(&self.stop, delay).await {
                    return false;
                }
                pending.push_front(segment);
                continue;
            }
            unreached = crate::backoff::unreached_target();
            segment.invocations += 1;
            if let Outcome::PayloadTooLarge { detail } = &invocation.outcome {
                // too big for this target, not a failure: split, or discard a lone record;
                // no retry attempt used, whatever bisect says
                if segment.records.len() > 1 {
                    let right = segment.records.split_off(segment.records.len() / 2);
                    debug!(mapping = %id, shard, lane = self.lane, left = segment.records.len(), right = right.len(), detail = %detail, "too large for the target: splitting the batch");
                    pending.push_front(Segment {
                        records: right,
                        ..segment.clone_counts()
                    });
                    pending.push_front(segment);
                    continue;
                }
                let discard = Discard {
                    condition: Condition::MaximumPayloadSizeExceeded,
                    invocations: segment.invocations,
                    response: None,
                    payload_size: Some(payload_size),
                    request_id: invocation.request_id,
                };
                if !self.discard(&segment.records, discard).await {
                    return false;
                }
                continue;
            }
            let records = &segment.records;
            // (first failed record, whole-batch failure, function error type, reason)
            let (failed_from, whole_failure, function_error, reason) = match &invocation.outcome {
                Outcome::Success { body } if self.mapping.config.report_batch_item_failures => {
                    let sequences: HashSet<&str> =
                        records.iter().map(|r| r.record.sequence.as_str()).collect();
                    match parse_batch_response(body, |item| sequences.contains(item)) {
                        BatchResponse::Success => (None, false, None, String::new()),
                        BatchResponse::ItemFailures(items) => {
                            let items: HashSet<&str> = items.iter().map(String::as_str).collect();
                            let from = records
                                .iter()
                                .position(|r| items.contains(r.record.sequence.as_str()))
                                .expect("parsed identifiers name records of the batch");
                            (
                                Some(from),
                                false,
                                None,
                                format!("{} item(s) reported failed", items.len()),
                            )
                        }
                        BatchResponse::Invalid(reason) => (
                            Some(0),
                            true,
                            None,
                            format!("invalid batch response: {reason}"),
                        ),
                    }
                }
                Outcome::FunctionError { error_type, body } => (
                    Some(0),
                    true,
                    Some(error_type.clone()),
                    format!(
                        "function error ({error_type}): {}",
                        crate::target::snippet(body)
                    ),
                ),
                _ => (None, false, None, String::new()),
            };
            debug!(mapping = %id, shard, lane = self.lane, records = records.len(), failed_from = ?failed_from, millis = invocation.duration.as_millis() as u64, "invoked");
            let Some(failed_from) = failed_from else {
                self.settle(segment.records.iter().map(|r| r.ticket));
                continue;
            };
            if settings.bisect_batch_on_function_error && whole_failure && segment.records.len() > 1
            {
                let right = segment.records.split_off(segment.records.len() / 2);
                debug!(mapping = %id, shard, lane = self.lane, left = segment.records.len(), right = right.len(), reason = %reason, "batch failed: bisecting");
                pending.push_front(Segment {
                    records: right,
                    ..segment.clone_counts()
                });
                pending.push_front(segment);
                continue;
            }
            self.settle(segment.records.drain(..failed_from).map(|r| r.ticket));
            let first_failed = segment.records[0].record.sequence.clone();
            if segment
                .first_failed
                .as_ref()
                .is_some_and(|earlier| first_failed > *earlier)
            {
                // the checkpoint moved past the record that failed first: a fresh count
                segment.retries = 0;
                segment.invocations = 1;
            }
            segment.first_failed = Some(first_failed);
            let limit = settings.maximum_retry_attempts;
            if limit >= 0 && i64::from(segment.retries) >= limit {
                let discard = Discard {
                    condition: Condition::RetryAttemptsExhausted,
                    invocations: segment.invocations,
                    response: Some(ResponseContext {
                        executed_version: self.mapping.function.executed_version().to_string(),
                        function_error,
                    }),
                    payload_size: None,
                    request_id: invocation.request_id,
                };
                if !self.discard(&segment.records, discard).await {
                    return false;
                }
                continue;
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
                reason = %reason,
                retry_in_ms = delay.as_millis() as u64,
                "batch failed: retrying from the first failed record"
            );
            if pause(&self.stop, delay).await {
                return false;
            }
            pending.push_front(segment);
        }
        true
    }

    /// Sends one failure record for `records` to the destination, retrying until it is
    /// accepted, then settles them. Without a destination the discard is logged. False
    /// when stopped before the destination took the record (nothing is settled then).
    async fn discard(&self, records: &[Ticketed], discard: Discard) -> bool {
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
                let mut delays = crate::backoff::unreached_target();
                loop {
                    let now = now_seconds();
                    let record = failure_record(&failure, mapping.stream_kind, now);
                    match destination
                        .deliver(&record, &event, &mapping.config.id, &self.shard_id, now)
                        .await
                    {
                        Ok(()) => break,
                        Err(err) => {
                            let delay = delays.next().unwrap_or(Duration::from_secs(5));
                            warn!(mapping = %mapping.config.id, shard = %self.shard_id, destination = %destination.describe(), error = %err, retry_in_ms = delay.as_millis() as u64, "on-failure destination refused the record: the shard waits");
                            if pause(&self.stop, delay).await {
                                return false;
                            }
                        }
                    }
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
        self.settle(records.iter().map(|r| r.ticket));
        true
    }

    /// Marks records settled and moves the checkpoint over the settled prefix.
    fn settle(&self, tickets: impl IntoIterator<Item = u64>) {
        let mut ledger = self.ledger.lock().expect("never poisoned");
        let Some(checkpoint) = ledger.settle(tickets) else {
            return;
        };
        let shard = self.shard_id.clone();
        let stored = checkpoint.to_string();
        if let Err(err) = self.mapping.store.update(|state| {
            state.shards.entry(shard).or_default().checkpoint = Some(stored);
        }) {
            warn!(mapping = %self.mapping.config.id, shard = %self.shard_id, error = %err, "cannot store the checkpoint: settled records will be delivered again after a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u32) -> SequenceNumber {
        SequenceNumber::parse(&n.to_string()).unwrap()
    }

    #[test]
    fn the_checkpoint_moves_over_the_settled_prefix_only() {
        let mut ledger = Ledger::default();
        let tickets: Vec<u64> = (1..=5).map(|n| ledger.push(seq(n * 10))).collect();
        assert_eq!(
            ledger.settle([tickets[1], tickets[3]]),
            None,
            "the first is unsettled"
        );
        assert_eq!(ledger.settle([tickets[0]]), Some(seq(20)));
        assert_eq!(ledger.settle([tickets[2]]), Some(seq(40)));
        assert!(!ledger.is_empty());
        assert_eq!(ledger.settle([tickets[4]]), Some(seq(50)));
        assert!(ledger.is_empty());
        let later = ledger.push(seq(60));
        assert_eq!(later, 5);
        assert_eq!(ledger.settle([later, later]), Some(seq(60)));
    }

    #[test]
    fn a_key_always_maps_to_the_same_lane() {
        for key in ["a", "user-17", ""] {
            let lane = lane_of(key, 4);
            assert!(lane < 4);
            assert_eq!(lane, lane_of(key, 4));
        }
        let lanes: std::collections::HashSet<usize> =
            (0..100).map(|i| lane_of(&format!("k{i}"), 4)).collect();
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

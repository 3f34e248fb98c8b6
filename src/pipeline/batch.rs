//! Gathering batches, for every source: a [`Batch`] is cut at `batch_size` records or the
//! 6 MB invoke payload, and the [`Batcher`] fills one from a source's [`Feed`] until it is
//! full or its batching window closes.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::event::{MAX_INVOKE_PAYLOAD, records_event_size};

/// A record that can join a batch.
pub trait Record {
    /// Its event JSON, serialized once, when it was read.
    fn json(&self) -> &[u8];
    /// The identifier a partial batch response names it by: the SQS message id, the
    /// stream sequence number.
    fn item_id(&self) -> &str;
}

#[derive(Debug)]
pub struct Batch<R> {
    pub records: Vec<R>,
    record_bytes: usize,
    batch_size: usize,
    /// A message was turned away for size: the batch cannot grow any more.
    cut: bool,
}

impl<R: Record> Batch<R> {
    pub fn new(batch_size: usize) -> Batch<R> {
        Batch {
            records: Vec::new(),
            record_bytes: 0,
            batch_size,
            cut: false,
        }
    }

    /// Adds `record` unless the batch is full or the event would pass the payload cap; an
    /// empty batch takes any record. Once a record was turned away for size, every later
    /// one is too: a smaller record slipping in behind it would overtake it.
    pub fn try_push(&mut self, record: R) -> Result<(), R> {
        if self.is_full() {
            return Err(record);
        }
        let size = records_event_size(
            self.records.len() + 1,
            self.record_bytes + record.json().len(),
        );
        if !self.records.is_empty() && size >= MAX_INVOKE_PAYLOAD {
            self.cut = true;
            return Err(record);
        }
        self.record_bytes += record.json().len();
        self.records.push(record);
        Ok(())
    }

    /// Full: `batch_size` reached, or the payload cap turned a message away.
    pub fn is_full(&self) -> bool {
        self.cut || self.records.len() >= self.batch_size
    }

    pub fn room(&self) -> usize {
        self.batch_size.saturating_sub(self.records.len())
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }
}

/// Where a source's records come from, as the [`Batcher`] asks for them.
pub trait Feed<R> {
    /// Up to `room` more records (a feed may hand more: they wait for the next batch),
    /// waiting no later than `until`; with `None`, as long as the source waits by design.
    /// `stop` ends a wait ([`Fed::Nothing`]); what the feed must finish once it has
    /// records in hand (an SQS feed deleting the filtered-out ones) it finishes.
    fn next(
        &mut self,
        room: usize,
        until: Option<Instant>,
        stop: &CancellationToken,
    ) -> impl Future<Output = Fed<R>> + Send;
}

/// What a [`Feed`] handed over.
#[derive(Debug)]
pub enum Fed<R> {
    Records(Vec<R>),
    /// Nothing came before `until`, or a call failed (the feed logged it and paused).
    Nothing,
    /// Nothing came during the source's longest wait: it is idle.
    Idle,
    /// No record will come any more.
    Closed,
}

/// A channel of record chunks (a stream shard's reader feeds its lanes so): closed when
/// the sender is dropped.
impl<R: Send> Feed<R> for tokio::sync::mpsc::UnboundedReceiver<Vec<R>> {
    async fn next(
        &mut self,
        _room: usize,
        until: Option<Instant>,
        stop: &CancellationToken,
    ) -> Fed<R> {
        let until = async {
            match until {
                Some(until) => tokio::time::sleep_until(until).await,
                None => std::future::pending().await,
            }
        };
        let received = tokio::select! {
            received = self.recv() => received,
            _ = until => return Fed::Nothing,
            _ = stop.cancelled() => return Fed::Nothing,
        };
        match received {
            Some(records) => Fed::Records(records),
            None => Fed::Closed,
        }
    }
}

/// How gathering ended.
#[derive(Debug)]
pub enum Gathered<R> {
    Batch(Batch<R>),
    /// The feed was idle and nothing was gathered.
    Idle,
    /// The feed closed and everything it handed over was batched.
    Closed,
    /// Stopped before the batch was complete: these records were not invoked.
    Stopped(Batch<R>),
}

/// Fills batches from a feed, one at a time, in feed order.
///
/// The batching window opens when the previous batch was handed on ([`Batcher::
/// restart_window`]), and again at the first record after an idle spell, so a quiet
/// source's first record waits at most one window. A batch goes as soon as it is full, or
/// when the window closes with at least one record in it, or when the feed closed.
/// Records the payload cap turned away wait, in order, for the next batch.
pub struct Batcher<R> {
    batch_size: usize,
    window: Duration,
    window_end: Instant,
    waiting: VecDeque<R>,
}

impl<R: Record> Batcher<R> {
    pub fn new(batch_size: usize, window: Duration) -> Batcher<R> {
        Batcher {
            batch_size,
            window,
            window_end: Instant::now() + window,
            waiting: VecDeque::new(),
        }
    }

    /// Gathers the next batch from `feed`, unless `stop` comes first.
    pub async fn gather<F: Feed<R>>(
        &mut self,
        feed: &mut F,
        stop: &CancellationToken,
    ) -> Gathered<R> {
        let mut batch = Batch::new(self.batch_size);
        let mut closed = false;
        loop {
            while let Some(record) = self.waiting.pop_front() {
                if let Err(record) = batch.try_push(record) {
                    self.waiting.push_front(record);
                    break;
                }
            }
            if batch.is_full()
                || (!batch.is_empty() && (closed || Instant::now() >= self.window_end))
            {
                return Gathered::Batch(batch);
            }
            if closed {
                return Gathered::Closed;
            }
            if stop.is_cancelled() {
                return Gathered::Stopped(batch);
            }
            let until = (!batch.is_empty()).then_some(self.window_end);
            let fed = feed.next(batch.room(), until, stop).await;
            match fed {
                Fed::Records(records) => {
                    if !records.is_empty() && batch.is_empty() && Instant::now() >= self.window_end
                    {
                        self.window_end = Instant::now() + self.window;
                    }
                    self.waiting.extend(records);
                }
                Fed::Nothing => {}
                Fed::Idle if batch.is_empty() => return Gathered::Idle,
                Fed::Idle => {}
                Fed::Closed => closed = true,
            }
        }
    }

    /// Opens the window of the next batch: called when a batch was handed on.
    pub fn restart_window(&mut self) {
        self.window_end = Instant::now() + self.window;
    }

    /// How many records wait for the next batch.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The records handed over but not batched yet, for a source that stops.
    pub fn take_waiting(&mut self) -> Vec<R> {
        self.waiting.drain(..).collect()
    }

    /// Takes out the waiting records `matches` picks (a FIFO group that must go back to
    /// its queue), keeping the others in order.
    pub fn withdraw_waiting(&mut self, mut matches: impl FnMut(&R) -> bool) -> Vec<R> {
        let mut out = Vec::new();
        let mut keep = VecDeque::with_capacity(self.waiting.len());
        for record in self.waiting.drain(..) {
            if matches(&record) {
                out.push(record);
            } else {
                keep.push_back(record);
            }
        }
        self.waiting = keep;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::records_event;

    fn event(batch: &Batch<Fake>) -> Vec<u8> {
        records_event(batch.records.iter().map(Record::json))
    }

    #[derive(Debug)]
    struct Fake(Vec<u8>);

    impl Record for Fake {
        fn json(&self) -> &[u8] {
            &self.0
        }

        fn item_id(&self) -> &str {
            ""
        }
    }

    fn record(bytes: usize) -> Fake {
        Fake(vec![b'x'; bytes])
    }

    #[test]
    fn fills_to_batch_size() {
        let mut batch = Batch::new(3);
        for _ in 0..3 {
            assert!(!batch.is_full());
            batch.try_push(record(10)).unwrap();
        }
        assert!(batch.is_full());
        assert_eq!(batch.room(), 0);
    }

    #[test]
    fn never_passes_the_payload_cap() {
        let mib = 1024 * 1024;
        let mut batch = Batch::new(10);
        let mut turned_away = 0;
        for _ in 0..8 {
            if batch.try_push(record(mib)).is_err() {
                turned_away += 1;
            }
        }
        assert_eq!(batch.len(), 5);
        assert_eq!(turned_away, 3);
        assert!(batch.is_full());
        assert!(event(&batch).len() < MAX_INVOKE_PAYLOAD);
    }

    #[test]
    fn the_event_stays_below_the_cap_to_the_byte() {
        // two records that together leave the event one byte below the cap
        let overhead = records_event_size(2, 0);
        let first = (MAX_INVOKE_PAYLOAD - 1 - overhead) / 2;
        let second = MAX_INVOKE_PAYLOAD - 1 - overhead - first;
        let mut batch = Batch::new(10);
        batch.try_push(record(first)).unwrap();
        batch.try_push(record(second)).unwrap();
        assert_eq!(event(&batch).len(), MAX_INVOKE_PAYLOAD - 1);
        let mut full = Batch::new(10);
        full.try_push(record(first)).unwrap();
        assert!(
            full.try_push(record(second + 1)).is_err(),
            "6 MiB itself is too large"
        );
        assert!(batch.try_push(record(0)).is_err());
    }

    #[test]
    fn nothing_enters_after_a_record_was_turned_away() {
        let mib = 1024 * 1024;
        let mut batch = Batch::new(10);
        for _ in 0..5 {
            batch.try_push(record(mib)).unwrap();
        }
        let mut turned_away = Vec::new();
        for bytes in [mib, 100, 10] {
            if let Err(record) = batch.try_push(record(bytes)) {
                turned_away.push(record.0.len());
            }
        }
        assert_eq!(batch.len(), 5);
        assert_eq!(
            turned_away,
            vec![mib, 100, 10],
            "the small records wait behind the big one, in order"
        );
    }

    /// A feed of chunks sent at given offsets from the start, on paused time; it closes an
    /// hour after the last one.
    fn feed_at(chunks: Vec<(u64, Vec<Fake>)>) -> tokio::sync::mpsc::UnboundedReceiver<Vec<Fake>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let start = Instant::now();
        tokio::spawn(async move {
            for (at_ms, chunk) in chunks {
                tokio::time::sleep_until(start + Duration::from_millis(at_ms)).await;
                tx.send(chunk).expect("the batcher listens");
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        rx
    }

    /// Gathers every batch until the feed closes: each batch's length and when it went.
    async fn batches(
        batcher: &mut Batcher<Fake>,
        feed: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<Fake>>,
    ) -> Vec<(usize, Duration)> {
        let start = Instant::now();
        let mut out = Vec::new();
        while let Gathered::Batch(batch) = batcher.gather(feed, &CancellationToken::new()).await {
            out.push((batch.len(), start.elapsed()));
            batcher.restart_window();
        }
        out
    }

    fn records(n: usize) -> Vec<Fake> {
        (0..n).map(|_| record(10)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_record_waits_for_the_window_to_close() {
        let mut batcher = Batcher::new(10, Duration::from_secs(5));
        let mut feed = feed_at(vec![(1000, records(1)), (7000, records(1))]);
        assert_eq!(
            batches(&mut batcher, &mut feed).await,
            vec![(1, Duration::from_secs(5)), (1, Duration::from_secs(10))],
            "each window opened when the batch before it went"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_opens_again_at_the_first_record_after_an_idle_spell() {
        let mut batcher = Batcher::new(10, Duration::from_secs(2));
        let mut feed = feed_at(vec![(10_000, records(1)), (11_000, records(2))]);
        assert_eq!(
            batches(&mut batcher, &mut feed).await,
            vec![(3, Duration::from_secs(12))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_before_the_window_closes() {
        let mut batcher = Batcher::new(3, Duration::from_secs(60));
        let mut feed = feed_at(vec![(0, records(2)), (100, records(2))]);
        assert_eq!(
            batches(&mut batcher, &mut feed).await,
            vec![
                (3, Duration::from_millis(100)),
                (1, Duration::from_millis(60_100))
            ],
            "full at 100 ms; the rest goes when the next window closes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_window_each_arrival_makes_a_batch() {
        let mut batcher = Batcher::new(100, Duration::ZERO);
        let mut feed = feed_at(vec![(0, records(4)), (50, records(1))]);
        assert_eq!(
            batches(&mut batcher, &mut feed).await,
            vec![(4, Duration::ZERO), (1, Duration::from_millis(50))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_hands_back_what_was_gathered() {
        let mut batcher = Batcher::new(10, Duration::from_secs(5));
        let (tx, mut feed) = tokio::sync::mpsc::unbounded_channel();
        tx.send(records(3)).unwrap();
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stopper.cancel();
        });
        let Gathered::Stopped(batch) = batcher.gather(&mut feed, &stop).await else {
            panic!("expected a stop");
        };
        assert_eq!(batch.len(), 3);
        assert!(batcher.take_waiting().is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the arrivals, sizes, batch size and window, every batch keeps to
        /// `batch_size` and the payload cap, and the batches hold every record once, in
        /// feed order.
        #[test]
        fn batches_keep_to_the_limits_and_lose_nothing(
            batch_size in 1usize..25,
            window_ms in proptest::prop_oneof![proptest::strategy::Just(0u64), 1u64..3000],
            chunks in proptest::collection::vec(
                (0u64..2000, proptest::collection::vec(
                    proptest::prop_oneof![8 => 1usize..2000, 1 => 1_000_000usize..3_500_000],
                    0..12,
                )),
                0..10,
            ),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let mut next = 0u32;
            let mut at = 0;
            let mut sent: Vec<u32> = Vec::new();
            let scripted: Vec<(u64, Vec<Fake>)> = chunks
                .iter()
                .map(|(gap, sizes)| {
                    at += gap;
                    let chunk = sizes
                        .iter()
                        .map(|&size| {
                            next += 1;
                            sent.push(next);
                            numbered(next, size)
                        })
                        .collect();
                    (at, chunk)
                })
                .collect();
            let received: Vec<Vec<Fake>> = runtime.block_on(async {
                let mut feed = feed_at(scripted);
                let mut batcher = Batcher::new(batch_size, Duration::from_millis(window_ms));
                let mut out = Vec::new();
                while let Gathered::Batch(batch) =
                    batcher.gather(&mut feed, &CancellationToken::new()).await
                {
                    out.push(batch.records);
                    batcher.restart_window();
                }
                out
            });
            let mut order = Vec::new();
            for batch in &received {
                proptest::prop_assert!(!batch.is_empty());
                proptest::prop_assert!(batch.len() <= batch_size);
                let bytes: usize = batch.iter().map(|r| r.json().len()).sum();
                proptest::prop_assert!(
                    batch.len() == 1 || records_event_size(batch.len(), bytes) < MAX_INVOKE_PAYLOAD
                );
                order.extend(batch.iter().map(number_of));
            }
            proptest::prop_assert_eq!(order, sent);
        }
    }

    /// A record `size` bytes long whose first four bytes number it.
    fn numbered(n: u32, size: usize) -> Fake {
        let mut bytes = vec![b'x'; size.max(4)];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        Fake(bytes)
    }

    fn number_of(record: &Fake) -> u32 {
        u32::from_be_bytes(record.0[..4].try_into().unwrap())
    }
}

//! A batch being gathered: cut at `batch_size` records or the 6 MB invoke payload.
//! Shared by every source; a record only has to show its serialized JSON.

use crate::event::{MAX_INVOKE_PAYLOAD, records_event_size};

/// A record that can join a batch: its event JSON, serialized once.
pub trait Record {
    fn json(&self) -> &[u8];
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

    /// Adds `record` unless the event would pass the payload cap; an empty batch takes
    /// any record. Once a record was turned away, every later one is too: a smaller record
    /// slipping in behind it would overtake it.
    pub fn try_push(&mut self, record: R) -> Result<(), R> {
        if self.cut {
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
}

//! A batch being gathered: cut at `batch_size` records or the 6 MB invoke payload.

use super::queue::Received;
use crate::event::{MAX_INVOKE_PAYLOAD, records_event, records_event_size};

#[derive(Debug)]
pub struct Batch {
    pub messages: Vec<Received>,
    record_bytes: usize,
    batch_size: usize,
    /// A message was turned away for size: the batch cannot grow any more.
    cut: bool,
}

impl Batch {
    pub fn new(batch_size: usize) -> Batch {
        Batch {
            messages: Vec::new(),
            record_bytes: 0,
            batch_size,
            cut: false,
        }
    }

    /// Adds `message` unless the event would pass the payload cap; an empty batch takes
    /// any message (one SQS message is at most 1 MiB).
    pub fn try_push(&mut self, message: Received) -> Result<(), Received> {
        let size = records_event_size(
            self.messages.len() + 1,
            self.record_bytes + message.record.len(),
        );
        if !self.messages.is_empty() && size > MAX_INVOKE_PAYLOAD {
            self.cut = true;
            return Err(message);
        }
        self.record_bytes += message.record.len();
        self.messages.push(message);
        Ok(())
    }

    /// Full: `batch_size` reached, or the payload cap turned a message away.
    pub fn is_full(&self) -> bool {
        self.cut || self.messages.len() >= self.batch_size
    }

    pub fn room(&self) -> usize {
        self.batch_size.saturating_sub(self.messages.len())
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// The invocation payload, `{"Records":[...]}`.
    pub fn event(&self) -> Vec<u8> {
        records_event(self.messages.iter().map(|m| m.record.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: usize, bytes: usize) -> Received {
        Received {
            message_id: id.to_string(),
            receipt_handle: String::new(),
            group_id: None,
            record: vec![b'x'; bytes],
        }
    }

    #[test]
    fn fills_to_batch_size() {
        let mut batch = Batch::new(3);
        for i in 0..3 {
            assert!(!batch.is_full());
            batch.try_push(message(i, 10)).unwrap();
        }
        assert!(batch.is_full());
        assert_eq!(batch.room(), 0);
    }

    #[test]
    fn never_passes_the_payload_cap() {
        let mib = 1024 * 1024;
        let mut batch = Batch::new(10);
        let mut turned_away = 0;
        for i in 0..8 {
            if batch.try_push(message(i, mib)).is_err() {
                turned_away += 1;
            }
        }
        assert_eq!(batch.len(), 5);
        assert_eq!(turned_away, 3);
        assert!(batch.is_full());
        assert!(batch.event().len() <= MAX_INVOKE_PAYLOAD);
    }

    #[test]
    fn the_event_size_is_exact_at_the_cap() {
        // two records that together fill the cap to the byte
        let overhead = records_event_size(2, 0);
        let first = (MAX_INVOKE_PAYLOAD - overhead) / 2;
        let second = MAX_INVOKE_PAYLOAD - overhead - first;
        let mut batch = Batch::new(10);
        batch.try_push(message(0, first)).unwrap();
        batch.try_push(message(1, second)).unwrap();
        assert_eq!(batch.event().len(), MAX_INVOKE_PAYLOAD);
        assert!(batch.try_push(message(2, 0)).is_err());
    }
}

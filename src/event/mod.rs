//! The wire formats: what a function receives and what it answers.

pub mod dynamodb;
pub mod failure;
pub mod kinesis;
pub mod response;
pub mod sequence;
pub mod sqs;

/// The synchronous invoke payload limit: an event must be smaller than 6 MiB
/// (6,291,456 bytes), as AWS states it.
pub const MAX_INVOKE_PAYLOAD: usize = 6 * 1024 * 1024;

const RECORDS_OPEN: &[u8] = br#"{"Records":["#;
const RECORDS_CLOSE: &[u8] = b"]}";

/// The size of `{"Records":[...]}` holding `count` records of `record_bytes` bytes in all.
pub fn records_event_size(count: usize, record_bytes: usize) -> usize {
    RECORDS_OPEN.len() + record_bytes + count.saturating_sub(1) + RECORDS_CLOSE.len()
}

/// Joins records, each already serialized as JSON, into `{"Records":[...]}`.
pub fn records_event<'a, I>(records: I) -> Vec<u8>
where
    I: IntoIterator<Item = &'a [u8]>,
    I::IntoIter: Clone,
{
    let records = records.into_iter();
    let (count, bytes) = records.clone().fold((0, 0), |(count, bytes), record| {
        (count + 1, bytes + record.len())
    });
    let mut event = Vec::with_capacity(records_event_size(count, bytes));
    event.extend_from_slice(RECORDS_OPEN);
    for (i, record) in records.enumerate() {
        if i > 0 {
            event.push(b',');
        }
        event.extend_from_slice(record);
    }
    event.extend_from_slice(RECORDS_CLOSE);
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_matches_the_serialized_event() {
        let records: Vec<&[u8]> = vec![br#"{"a":1}"#, br#"{"b":22}"#, b"{}"];
        let event = records_event(records.iter().copied());
        let total: usize = records.iter().map(|r| r.len()).sum();
        assert_eq!(event.len(), records_event_size(records.len(), total));
        let parsed: serde_json::Value = serde_json::from_slice(&event).unwrap();
        assert_eq!(parsed["Records"].as_array().unwrap().len(), 3);
        assert_eq!(records_event([]), br#"{"Records":[]}"#);
        assert_eq!(records_event_size(0, 0), 14);
    }
}

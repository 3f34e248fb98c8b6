//! The mapping's filter criteria at the one point of the pipeline where they apply:
//! between receiving and batching, so only records that match count toward a batch
//! (aws-esm-semantics §2.13). What differs per source is how a record is shown to the
//! patterns ([`FilterSource`]) and what a source does with what was filtered out: SQS
//! deletes it (§2.9), streams move their checkpoint past it (§2.12).

use std::sync::Arc;

use crate::filter::{FilterSource, Filters};

use super::batch::Record;

/// A mapping's compiled filters and the source they see records of.
#[derive(Debug, Clone)]
pub struct Sieve {
    filters: Arc<Filters>,
    source: FilterSource,
}

impl Sieve {
    pub fn new(filters: Arc<Filters>, source: FilterSource) -> Sieve {
        Sieve { filters, source }
    }

    /// Whether `record` matches a filter and is to be delivered.
    pub fn keeps(&self, record: &impl Record) -> bool {
        self.filters.matches(self.source, record.json()).is_some()
    }

    /// Splits `records` into the ones to deliver and the ones filtered out, each in order.
    pub fn split<R: Record>(&self, records: Vec<R>) -> (Vec<R>, Vec<R>) {
        records.into_iter().partition(|record| self.keeps(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Message(Vec<u8>);

    impl Record for Message {
        fn json(&self) -> &[u8] {
            &self.0
        }

        fn item_id(&self) -> &str {
            ""
        }
    }

    fn sqs(body: &str) -> Message {
        Message(
            serde_json::json!({ "messageId": "m", "body": body })
                .to_string()
                .into_bytes(),
        )
    }

    #[test]
    fn splits_in_order_by_the_filters() {
        let filters = Filters::compile(&[r#"{"body":{"kind":["order"]}}"#.to_string()]).unwrap();
        let sieve = Sieve::new(Arc::new(filters), FilterSource::Sqs);
        let (kept, dropped) = sieve.split(vec![
            sqs(r#"{"kind":"order","n":1}"#),
            sqs(r#"{"kind":"refund"}"#),
            sqs("plain text"),
            sqs(r#"{"kind":"order","n":2}"#),
        ]);
        let bodies = |records: &[Message]| -> Vec<String> {
            records
                .iter()
                .map(|m| {
                    let v: serde_json::Value = serde_json::from_slice(&m.0).unwrap();
                    v["body"].as_str().unwrap().to_string()
                })
                .collect()
        };
        assert_eq!(
            bodies(&kept),
            vec![r#"{"kind":"order","n":1}"#, r#"{"kind":"order","n":2}"#]
        );
        assert_eq!(bodies(&dropped), vec![r#"{"kind":"refund"}"#, "plain text"]);
    }
}

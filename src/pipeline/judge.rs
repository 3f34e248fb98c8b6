//! What a function's answer means for its batch, for every source: the rules of
//! aws-esm-semantics §4 (SQS) and §6 (streams), which agree on everything the judgement
//! decides. What a source then does about it (delete, retry, bisect, discard) is its own.

use std::collections::HashMap;

use crate::event::response::{BatchResponse, parse_batch_response};
use crate::target::{Outcome, snippet};

/// The judgement on a batch whose invocation reached the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Every record succeeded.
    Success,
    /// The function reported these records failed: their indexes in batch order, each
    /// once. Never empty.
    ItemsFailed(Vec<usize>),
    /// The whole batch failed.
    WholeBatch(WholeFailure),
}

/// Why a whole batch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WholeFailure {
    /// The function raised (or timed out): `error_type` is its function error type.
    FunctionError { error_type: String, detail: String },
    /// The function returned, but its partial batch response breaks the rules.
    InvalidResponse(String),
    /// The target refused a lone record for size (HTTP 413).
    TooLarge(String),
}

impl Judgement {
    /// The first failed record: the lowest reported one, or the first of the batch.
    pub fn failed_from(&self) -> Option<usize> {
        match self {
            Judgement::Success => None,
            Judgement::ItemsFailed(indexes) => indexes.first().copied(),
            Judgement::WholeBatch(_) => Some(0),
        }
    }

    /// Why records failed, for the log; empty on success.
    pub fn reason(&self) -> String {
        match self {
            Judgement::Success => String::new(),
            Judgement::ItemsFailed(indexes) => {
                format!("the function reported {} failed item(s)", indexes.len())
            }
            Judgement::WholeBatch(WholeFailure::FunctionError { error_type, detail }) => {
                format!("function error ({error_type}): {detail}")
            }
            Judgement::WholeBatch(WholeFailure::InvalidResponse(reason)) => {
                format!("invalid batch response: {reason}")
            }
            Judgement::WholeBatch(WholeFailure::TooLarge(detail)) => {
                format!("too large for the target on its own: {detail}")
            }
        }
    }
}

/// Judges `outcome` for a batch whose records have the identifiers `ids`, in batch order.
/// `outcome` reached the function, or is a 413 for a lone record; an outcome that did not
/// reach the function is the invoke loop's to retry and never comes here.
pub fn judge<'a>(
    outcome: &Outcome,
    report_item_failures: bool,
    ids: impl IntoIterator<Item = &'a str>,
) -> Judgement {
    match outcome {
        Outcome::Success { .. } if !report_item_failures => Judgement::Success,
        Outcome::Success { body } => {
            let index: HashMap<&str, usize> =
                ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
            match parse_batch_response(body, |id| index.contains_key(id)) {
                BatchResponse::Success => Judgement::Success,
                BatchResponse::ItemFailures(failed) => {
                    let mut indexes: Vec<usize> =
                        failed.iter().map(|id| index[id.as_str()]).collect();
                    indexes.sort_unstable();
                    Judgement::ItemsFailed(indexes)
                }
                BatchResponse::Invalid(reason) => {
                    Judgement::WholeBatch(WholeFailure::InvalidResponse(reason))
                }
            }
        }
        Outcome::FunctionError { error_type, body } => {
            Judgement::WholeBatch(WholeFailure::FunctionError {
                error_type: error_type.clone(),
                detail: snippet(body),
            })
        }
        Outcome::PayloadTooLarge { detail } => {
            Judgement::WholeBatch(WholeFailure::TooLarge(detail.clone()))
        }
        Outcome::Throttled { detail }
        | Outcome::CouldNotInvoke { detail }
        | Outcome::Rejected { detail, .. } => {
            debug_assert!(
                false,
                "judged an invocation that did not reach the function"
            );
            Judgement::WholeBatch(WholeFailure::InvalidResponse(format!(
                "the function was not reached: {detail}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn success(body: &str) -> Outcome {
        Outcome::Success {
            body: body.as_bytes().to_vec(),
        }
    }

    const IDS: [&str; 4] = ["a", "b", "c", "d"];

    fn judged(body: &str) -> Judgement {
        judge(&success(body), true, IDS)
    }

    #[test]
    fn full_success_answers_of_4_2_and_6_3() {
        for body in [
            "",
            "null",
            "{}",
            r#""""#,
            "[]",
            r#"{"batchItemFailures":[]}"#,
            r#"{"batchItemFailures":null}"#,
        ] {
            assert_eq!(judged(body), Judgement::Success, "{body:?}");
        }
    }

    #[test]
    fn full_failure_answers_of_4_3_and_6_4() {
        for body in [
            "not json",
            r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
            r#"{"batchItemFailures":[{"foo":"notvalid"}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":123}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":"zz"}]}"#,
            r#"{"batchItemFailures":"a"}"#,
        ] {
            assert!(
                matches!(
                    judged(body),
                    Judgement::WholeBatch(WholeFailure::InvalidResponse(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn reported_items_in_batch_order_each_once_4_6_and_6_2() {
        let judgement = judged(
            r#"{"batchItemFailures":[{"itemIdentifier":"d"},{"itemIdentifier":"b"},{"itemIdentifier":"d"}]}"#,
        );
        assert_eq!(judgement, Judgement::ItemsFailed(vec![1, 3]));
        assert_eq!(judgement.failed_from(), Some(1), "the lowest failure wins");
    }

    #[test]
    fn without_report_item_failures_the_answer_is_ignored_6_1() {
        let body = r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#;
        assert_eq!(judge(&success(body), false, IDS), Judgement::Success);
        assert_eq!(judge(&success("not json"), false, IDS), Judgement::Success);
    }

    #[test]
    fn a_function_error_fails_the_batch_whatever_the_setting_4_4() {
        let error = Outcome::FunctionError {
            error_type: "Unhandled".into(),
            body: br#"{"errorMessage":"boom"}"#.to_vec(),
        };
        for report in [true, false] {
            let judgement = judge(&error, report, IDS);
            assert_eq!(judgement.failed_from(), Some(0));
            assert!(
                matches!(&judgement, Judgement::WholeBatch(WholeFailure::FunctionError { error_type, .. }) if error_type == "Unhandled")
            );
        }
    }

    /// One entry of a generated `batchItemFailures` list.
    #[derive(Debug, Clone)]
    enum Entry {
        /// Names the record at this index of the batch.
        Record(usize),
        /// Names no record of the batch.
        Stranger,
        Empty,
        Null,
        Number,
        WrongKey,
    }

    fn entry(batch: usize) -> impl Strategy<Value = Entry> {
        prop_oneof![
            6 => (0..batch).prop_map(Entry::Record),
            1 => Just(Entry::Stranger),
            1 => Just(Entry::Empty),
            1 => Just(Entry::Null),
            1 => Just(Entry::Number),
            1 => Just(Entry::WrongKey),
        ]
    }

    proptest! {
        /// The judgement of any generated response agrees with the rules table of
        /// aws-esm-semantics §4 and §6: every entry valid -> those records failed, each
        /// once, in batch order; any invalid entry -> the whole batch failed; no entry ->
        /// success.
        #[test]
        fn judgement_follows_the_rules_table(
            (batch, entries) in (1usize..20).prop_flat_map(|n| (Just(n), proptest::collection::vec(entry(n), 0..8)))
        ) {
            let ids: Vec<String> = (0..batch).map(|i| format!("id-{i}")).collect();
            let listed: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| match e {
                    Entry::Record(i) => serde_json::json!({"itemIdentifier": ids[*i]}),
                    Entry::Stranger => serde_json::json!({"itemIdentifier": "stranger"}),
                    Entry::Empty => serde_json::json!({"itemIdentifier": ""}),
                    Entry::Null => serde_json::json!({"itemIdentifier": null}),
                    Entry::Number => serde_json::json!({"itemIdentifier": 123}),
                    Entry::WrongKey => serde_json::json!({"foo": "notvalid"}),
                })
                .collect();
            let body = serde_json::json!({ "batchItemFailures": listed }).to_string();
            let judgement = judge(&success(&body), true, ids.iter().map(String::as_str));
            let all_valid = entries.iter().all(|e| matches!(e, Entry::Record(_)));
            if entries.is_empty() {
                prop_assert_eq!(judgement, Judgement::Success);
            } else if all_valid {
                let mut expected: Vec<usize> = entries
                    .iter()
                    .map(|e| match e {
                        Entry::Record(i) => *i,
                        _ => unreachable!("all valid"),
                    })
                    .collect();
                expected.sort_unstable();
                expected.dedup();
                prop_assert_eq!(judgement, Judgement::ItemsFailed(expected));
            } else {
                prop_assert!(
                    matches!(judgement, Judgement::WholeBatch(WholeFailure::InvalidResponse(_))),
                    "{:?}", judgement
                );
            }
        }
    }
}

//! What to delete after an invocation: the SQS response rules, and FIFO group safety.

use std::collections::{HashMap, HashSet};

use super::queue::Received;
use crate::event::response::{BatchResponse, parse_batch_response};
use crate::target::Outcome;

/// The verdict on a batch the function answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Indexes of the messages to delete, in batch order.
    pub delete: Vec<usize>,
    /// Why messages stay, for the log (`None` when every message is deleted).
    pub kept_because: Option<String>,
    /// True when the whole batch failed (function error or an invalid response).
    pub whole_batch_failed: bool,
}

/// Decides which messages of `batch` to delete after `outcome`, which must have reached
/// the function or be a 413 for a single message (settled like a function error). On a FIFO queue, a failed message keeps every later message of its group
/// in the batch too, so nothing of a group is deleted ahead of an earlier message.
pub fn verdict(
    batch: &[Received],
    outcome: &Outcome,
    report_item_failures: bool,
    fifo: bool,
) -> Verdict {
    let failed: HashSet<usize> = match outcome {
        Outcome::Success { .. } if !report_item_failures => HashSet::new(),
        Outcome::Success { body } => {
            let ids: HashSet<&str> = batch.iter().map(|m| m.message_id.as_str()).collect();
            match parse_batch_response(body, |id| ids.contains(id)) {
                BatchResponse::Success => HashSet::new(),
                BatchResponse::ItemFailures(failed_ids) => {
                    let failed_ids: HashSet<&str> = failed_ids.iter().map(String::as_str).collect();
                    let mut failed: HashSet<usize> = batch
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| failed_ids.contains(m.message_id.as_str()))
                        .map(|(i, _)| i)
                        .collect();
                    if fifo {
                        failed = with_later_group_members(batch, &failed);
                    }
                    let delete = (0..batch.len()).filter(|i| !failed.contains(i)).collect();
                    return Verdict {
                        delete,
                        kept_because: Some(format!(
                            "the function reported {} failed item(s){}",
                            failed_ids.len(),
                            if fifo && failed.len() > failed_ids.len() {
                                format!(
                                    ", keeping {} later message(s) of their groups",
                                    failed.len() - failed_ids.len()
                                )
                            } else {
                                String::new()
                            }
                        )),
                        whole_batch_failed: false,
                    };
                }
                BatchResponse::Invalid(reason) => {
                    return whole_failure(format!("invalid batch response: {reason}"));
                }
            }
        }
        Outcome::FunctionError { error_type, body } => {
            return whole_failure(format!(
                "function error ({error_type}): {}",
                crate::target::snippet(body)
            ));
        }
        Outcome::PayloadTooLarge { detail } => {
            return whole_failure(format!("too large for the target on its own: {detail}"));
        }
        Outcome::Throttled { .. } | Outcome::CouldNotInvoke { .. } | Outcome::Rejected { .. } => {
            unreachable!("a batch is settled only after the target took or refused it for good")
        }
    };
    debug_assert!(failed.is_empty());
    Verdict {
        delete: (0..batch.len()).collect(),
        kept_because: None,
        whole_batch_failed: false,
    }
}

fn whole_failure(reason: String) -> Verdict {
    Verdict {
        delete: Vec::new(),
        kept_because: Some(reason),
        whole_batch_failed: true,
    }
}

/// Adds to `failed` every message that follows a failed message of the same group.
fn with_later_group_members(batch: &[Received], failed: &HashSet<usize>) -> HashSet<usize> {
    let mut first_failure: HashMap<&str, usize> = HashMap::new();
    for &i in failed {
        if let Some(group) = batch[i].group_id.as_deref() {
            let first = first_failure.entry(group).or_insert(i);
            *first = (*first).min(i);
        }
    }
    let mut all = failed.clone();
    for (i, message) in batch.iter().enumerate() {
        if let Some(group) = message.group_id.as_deref()
            && first_failure.get(group).is_some_and(|&first| i > first)
        {
            all.insert(i);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, group: Option<&str>) -> Received {
        Received {
            message_id: id.into(),
            receipt_handle: format!("rh-{id}"),
            group_id: group.map(str::to_string),
            record: Vec::new(),
        }
    }

    fn success(body: &str) -> Outcome {
        Outcome::Success {
            body: body.as_bytes().to_vec(),
        }
    }

    fn standard() -> Vec<Received> {
        vec![message("a", None), message("b", None), message("c", None)]
    }

    #[test]
    fn success_deletes_everything() {
        let v = verdict(&standard(), &success("null"), true, false);
        assert_eq!(v.delete, vec![0, 1, 2]);
        assert!(!v.whole_batch_failed);
    }

    #[test]
    fn reported_failures_are_kept_and_the_rest_deleted() {
        let v = verdict(
            &standard(),
            &success(r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#),
            true,
            false,
        );
        assert_eq!(v.delete, vec![0, 2]);
        assert!(!v.whole_batch_failed);
    }

    #[test]
    fn without_report_item_failures_the_response_is_ignored() {
        let v = verdict(
            &standard(),
            &success(r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#),
            false,
            false,
        );
        assert_eq!(v.delete, vec![0, 1, 2]);
    }

    #[test]
    fn function_errors_and_invalid_responses_delete_nothing() {
        let error = Outcome::FunctionError {
            error_type: "Unhandled".into(),
            body: b"{}".to_vec(),
        };
        for (outcome, report) in [
            (error, false),
            (
                success(r#"{"batchItemFailures":[{"itemIdentifier":"zz"}]}"#),
                true,
            ),
            (success("not json"), true),
        ] {
            let v = verdict(&standard(), &outcome, report, false);
            assert!(v.delete.is_empty(), "{outcome:?}");
            assert!(v.whole_batch_failed);
        }
    }

    #[test]
    fn a_message_too_large_on_its_own_is_kept_like_a_function_error() {
        let too_large = Outcome::PayloadTooLarge {
            detail: "HTTP 413: Request Entity Too Large".into(),
        };
        let v = verdict(&[message("a", None)], &too_large, true, false);
        assert!(v.delete.is_empty());
        assert!(v.whole_batch_failed);
    }

    #[test]
    fn ten_thousand_messages_with_every_other_one_reported() {
        let batch: Vec<Received> = (0..10_000)
            .map(|i| message(&format!("m{i}"), None))
            .collect();
        let failures: Vec<serde_json::Value> = (1..10_000)
            .step_by(2)
            .map(|i| serde_json::json!({"itemIdentifier": format!("m{i}")}))
            .collect();
        let body = serde_json::json!({ "batchItemFailures": failures }).to_string();
        let v = verdict(&batch, &success(&body), true, false);
        assert_eq!(v.delete, (0..10_000).step_by(2).collect::<Vec<usize>>());
    }

    #[test]
    fn fifo_keeps_later_messages_of_a_failed_group() {
        let batch = vec![
            message("a1", Some("A")),
            message("b1", Some("B")),
            message("a2", Some("A")),
            message("a3", Some("A")),
            message("b2", Some("B")),
        ];
        let v = verdict(
            &batch,
            &success(r#"{"batchItemFailures":[{"itemIdentifier":"a2"}]}"#),
            true,
            true,
        );
        assert_eq!(v.delete, vec![0, 1, 4]);
    }
}

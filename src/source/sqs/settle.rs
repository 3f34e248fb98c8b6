//! What to delete after an invocation: the judgement, and FIFO group safety.

use std::collections::{HashMap, HashSet};

use super::queue::Received;
use crate::pipeline::judge::Judgement;

/// The verdict on a batch the function answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Indexes of the messages to delete, in batch order.
    pub delete: Vec<usize>,
    /// Why messages stay, for the log (`None` when every message is deleted).
    pub kept_because: Option<String>,
    /// True when the whole batch failed (function error, an invalid response, a lone
    /// message too large for the target).
    pub whole_batch_failed: bool,
}

/// Decides which messages of `batch` to delete after `judgement`. On a FIFO queue, a
/// failed message keeps every later message of its group in the batch too, so nothing of
/// a group is deleted ahead of an earlier message.
pub fn verdict(batch: &[Received], judgement: &Judgement, fifo: bool) -> Verdict {
    match judgement {
        Judgement::Success => Verdict {
            delete: (0..batch.len()).collect(),
            kept_because: None,
            whole_batch_failed: false,
        },
        Judgement::ItemsFailed(reported) => {
            let mut failed: HashSet<usize> = reported.iter().copied().collect();
            if fifo {
                failed = with_later_group_members(batch, &failed);
            }
            let later = failed.len() - reported.len();
            let mut kept_because = judgement.reason();
            if later > 0 {
                kept_because.push_str(&format!(
                    ", keeping {later} later message(s) of their groups"
                ));
            }
            Verdict {
                delete: (0..batch.len()).filter(|i| !failed.contains(i)).collect(),
                kept_because: Some(kept_because),
                whole_batch_failed: false,
            }
        }
        Judgement::WholeBatch(_) => Verdict {
            delete: Vec::new(),
            kept_because: Some(judgement.reason()),
            whole_batch_failed: true,
        },
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
    use crate::pipeline::judge::judge;
    use crate::target::Outcome;

    /// The verdict after `outcome`, judged as the pipeline judges it.
    fn verdict_after(
        batch: &[Received],
        outcome: &Outcome,
        report_item_failures: bool,
        fifo: bool,
    ) -> Verdict {
        let judgement = judge(
            outcome,
            report_item_failures,
            batch.iter().map(|m| m.message_id.as_str()),
        );
        verdict(batch, &judgement, fifo)
    }

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
        let v = verdict_after(&standard(), &success("null"), true, false);
        assert_eq!(v.delete, vec![0, 1, 2]);
        assert!(!v.whole_batch_failed);
    }

    #[test]
    fn reported_failures_are_kept_and_the_rest_deleted() {
        let v = verdict_after(
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
        let v = verdict_after(
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
            let v = verdict_after(&standard(), &outcome, report, false);
            assert!(v.delete.is_empty(), "{outcome:?}");
            assert!(v.whole_batch_failed);
        }
    }

    #[test]
    fn a_message_too_large_on_its_own_is_kept_like_a_function_error() {
        let too_large = Outcome::PayloadTooLarge {
            detail: "HTTP 413: Request Entity Too Large".into(),
        };
        let v = verdict_after(&[message("a", None)], &too_large, true, false);
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
        let v = verdict_after(&batch, &success(&body), true, false);
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
        let v = verdict_after(
            &batch,
            &success(r#"{"batchItemFailures":[{"itemIdentifier":"a2"}]}"#),
            true,
            true,
        );
        assert_eq!(v.delete, vec![0, 1, 4]);
    }
}

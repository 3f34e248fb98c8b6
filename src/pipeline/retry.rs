//! The stream retry policy as a pure decision: after a judgement, settle, bisect, retry
//! from the first failed record, or discard to the on-failure destination
//! (aws-esm-semantics §5, §6, §12). The lane carries the decision out.

use crate::event::failure::Condition;

use super::judge::{Judgement, WholeFailure};

/// A stream mapping's retry settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub bisect_on_function_error: bool,
    /// -1: retry until the records expire.
    pub maximum_retry_attempts: i64,
    /// -1: no age limit.
    pub maximum_record_age_in_seconds: i64,
}

/// What to do with a segment of `len` records after its judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Every record succeeded.
    Settle,
    /// Split in two halves, each invoked on its own, left first; no retry attempt used.
    Split,
    /// Settle the records before `from`, retry the rest after a pause: one retry attempt.
    Retry { from: usize },
    /// Settle the records before `from`, discard the rest for `condition`.
    Discard { from: usize, condition: Condition },
}

impl RetryPolicy {
    /// Decides after `judgement` of a segment of `len` records that already used
    /// `retries` retry attempts. A whole failure is bisected when bisect is on (a function
    /// error or an invalid response, whatever `ReportBatchItemFailures` says, §6.6); a
    /// lone record too large for the target is discarded; otherwise the records from the
    /// first failed one are retried until the attempts run out.
    pub fn decide(&self, judgement: &Judgement, len: usize, retries: u32) -> Decision {
        let Some(from) = judgement.failed_from() else {
            return Decision::Settle;
        };
        match judgement {
            Judgement::WholeBatch(WholeFailure::TooLarge(_)) => {
                return Decision::Discard {
                    from,
                    condition: Condition::MaximumPayloadSizeExceeded,
                };
            }
            Judgement::WholeBatch(_) if self.bisect_on_function_error && len > 1 => {
                return Decision::Split;
            }
            _ => {}
        }
        let limit = self.maximum_retry_attempts;
        if limit >= 0 && i64::from(retries) >= limit {
            Decision::Discard {
                from,
                condition: Condition::RetryAttemptsExhausted,
            }
        } else {
            Decision::Retry { from }
        }
    }

    /// Whether a record that arrived at `arrival` (Unix seconds) is past the maximum
    /// record age at `now`.
    pub fn expired(&self, arrival: f64, now: f64) -> bool {
        let limit = self.maximum_record_age_in_seconds;
        limit >= 0 && arrival < now - limit as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(bisect: bool, attempts: i64) -> RetryPolicy {
        RetryPolicy {
            bisect_on_function_error: bisect,
            maximum_retry_attempts: attempts,
            maximum_record_age_in_seconds: -1,
        }
    }

    fn function_error() -> Judgement {
        Judgement::WholeBatch(WholeFailure::FunctionError {
            error_type: "Unhandled".into(),
            detail: String::new(),
        })
    }

    #[test]
    fn success_settles() {
        assert_eq!(
            policy(true, 0).decide(&Judgement::Success, 5, 0),
            Decision::Settle
        );
    }

    #[test]
    fn a_whole_failure_is_bisected_when_bisect_is_on_and_more_than_one_record_is_left() {
        let invalid = Judgement::WholeBatch(WholeFailure::InvalidResponse("x".into()));
        for judgement in [function_error(), invalid] {
            assert_eq!(policy(true, 3).decide(&judgement, 2, 0), Decision::Split);
            // bisecting uses no attempt: even with every attempt used, it splits
            assert_eq!(policy(true, 0).decide(&judgement, 2, 5), Decision::Split);
            assert_eq!(
                policy(true, 3).decide(&judgement, 1, 0),
                Decision::Retry { from: 0 }
            );
            assert_eq!(
                policy(false, 3).decide(&judgement, 8, 0),
                Decision::Retry { from: 0 }
            );
        }
    }

    #[test]
    fn a_partial_failure_retries_from_the_lowest_reported_record_never_bisects() {
        let partial = Judgement::ItemsFailed(vec![2, 4]);
        assert_eq!(
            policy(true, 3).decide(&partial, 6, 0),
            Decision::Retry { from: 2 }
        );
    }

    #[test]
    fn attempts_run_out_after_maximum_retry_attempts() {
        let p = policy(false, 2);
        assert_eq!(
            p.decide(&function_error(), 3, 1),
            Decision::Retry { from: 0 }
        );
        assert_eq!(
            p.decide(&function_error(), 3, 2),
            Decision::Discard {
                from: 0,
                condition: Condition::RetryAttemptsExhausted
            }
        );
        assert_eq!(
            policy(false, 0).decide(&Judgement::ItemsFailed(vec![1]), 3, 0),
            Decision::Discard {
                from: 1,
                condition: Condition::RetryAttemptsExhausted
            },
            "0 attempts: discarded after the first invocation"
        );
        assert_eq!(
            policy(false, -1).decide(&function_error(), 3, 10_000),
            Decision::Retry { from: 0 },
            "-1: retried without end"
        );
    }

    #[test]
    fn a_lone_record_too_large_is_discarded_whatever_the_attempts() {
        let too_large = Judgement::WholeBatch(WholeFailure::TooLarge("413".into()));
        assert_eq!(
            policy(true, -1).decide(&too_large, 1, 0),
            Decision::Discard {
                from: 0,
                condition: Condition::MaximumPayloadSizeExceeded
            }
        );
    }

    #[test]
    fn records_expire_past_the_maximum_age() {
        let mut p = policy(false, -1);
        assert!(!p.expired(0.0, 1e9), "-1: no age limit");
        p.maximum_record_age_in_seconds = 60;
        assert!(!p.expired(1000.0, 1060.0));
        assert!(p.expired(1000.0, 1060.5));
    }
}

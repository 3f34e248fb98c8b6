//! The event-pattern engine behind `filter_criteria` (semantics §2).
//!
//! [`Filters::compile`] parses and checks each `Pattern` once; [`Filters::matches`] then
//! tells, for one serialized record as esmd delivers it, which filter (if any) keeps it.
//! Filters are ORed, keys in a pattern ANDed, the rules listed for a key ORed.
//!
//! Rules, as in EventBridge: exact strings, numbers, booleans and `null`; `""`; `prefix`,
//! `suffix` (both also with `{"equals-ignore-case": ...}`); `equals-ignore-case`;
//! `anything-but` (a value, a list, or `prefix` / `suffix` / `equals-ignore-case` /
//! `wildcard`); `numeric` (`=`, `<`, `<=`, `>`, `>=`, and a lower-upper range); `exists`;
//! `wildcard`; `cidr` (IPv4 and IPv6); `$or`. Strings match exactly; a number rule never
//! matches a string, and numbers compare by their JSON form (`[300]` does not match `300.0`,
//! as aws-esm-semantics §2.5 says; two decimal forms of one value, `300.0` and `3.0e2`, do
//! match each other, as esmd reads decimals as floats); `numeric` only
//! matches JSON numbers. Where the record has a list, a rule matches if any element does.
//! `exists` looks at leaves only: a key holding an object does not "exist" for it.
//!
//! What a pattern sees, per source ([`FilterSource`]):
//! - SQS: the record; a `body` that is valid JSON is matched as JSON and only by an object
//!   pattern on `body`, any other body only by a list of rules on `body` (§2.8).
//! - Kinesis: the fields of `kinesis` at the root beside the record's own, `data`
//!   base64-decoded and parsed as JSON; data that is not JSON matches no pattern on `data`
//!   (§2.10). [`Filters::check_source`] refuses a list of rules on `data`.
//! - DynamoDB: the record as it is, typed values included (`{"S": ...}`); `N` values are
//!   strings, so `numeric` does not match them (§2.11).
//!
//! Differences from AWS: `wildcard`, `cidr` and `anything-but` with an operator are
//! EventBridge operators that Lambda refuses; esmd accepts them and lists them in
//! [`Filters::beyond_lambda`]. A pattern or nested object with no keys is refused.

mod explain;
mod matching;
mod pattern;
mod present;
#[cfg(test)]
mod tests;

use std::fmt;

pub use explain::explain_input;
use pattern::{Invalid, Pattern};

/// The AWS default quota of filters per mapping.
pub const MAX_FILTERS: usize = 5;
/// The longest `Pattern` AWS accepts, in characters.
pub const MAX_PATTERN_CHARS: usize = 4096;
/// The message AWS gives for every bad filter, kept as the start of ours.
pub const AWS_MESSAGE: &str = "Invalid filter pattern definition.";

/// Which source a record comes from: that decides how it is shown to the patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterSource {
    Sqs,
    Kinesis,
    DynamoDb,
}

/// A mapping's compiled filters.
#[derive(Debug)]
pub struct Filters {
    patterns: Vec<Pattern>,
    /// Whether any pattern looks at the source's payload (SQS `body`, Kinesis `data`), so
    /// that decoding it is worth the time.
    reads_payload: [bool; 2],
}

/// A refused filter: the AWS message, then which filter, which key, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct FilterError {
    /// The index of the filter in `filters`.
    pub filter: usize,
    /// The dotted key inside the pattern, when the problem is at one.
    pub key: Option<String>,
    pub problem: Problem,
}

impl std::error::Error for FilterError {}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{AWS_MESSAGE} filters[{}]", self.filter)?;
        if let Some(key) = &self.key {
            write!(f, " key {key}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// Why a filter was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{count} filters; at most {MAX_FILTERS} are allowed")]
    TooManyFilters { count: usize },
    #[error("the pattern is {chars} characters; at most {MAX_PATTERN_CHARS} are allowed")]
    TooLong { chars: usize },
    #[error("the pattern is not JSON: {0}")]
    NotJson(String),
    #[error("the pattern must be a JSON object")]
    NotAnObject,
    #[error("an object with no keys")]
    EmptyObject,
    #[error("a value must be an object or a list of rules such as [\"v\"]")]
    NotAList,
    #[error("the list of rules is empty")]
    EmptyList,
    #[error("a list inside a list of rules")]
    NestedList,
    #[error("an operator object must hold exactly one operator")]
    NotOneOperator,
    #[error("unknown operator {0}")]
    UnknownOperator(String),
    #[error("{operator} takes {expected}")]
    BadArgument {
        operator: String,
        expected: &'static str,
    },
    #[error("$or takes a non-empty list of objects")]
    OrNotObjects,
    #[error("{kind} matches this key as JSON, so it takes an object pattern, not a list")]
    PayloadRules { kind: &'static str },
}

impl Filters {
    /// Parses and checks each pattern, in order; the first problem is returned.
    pub fn compile(patterns: &[String]) -> Result<Filters, FilterError> {
        if patterns.len() > MAX_FILTERS {
            return Err(FilterError {
                filter: MAX_FILTERS,
                key: None,
                problem: Problem::TooManyFilters {
                    count: patterns.len(),
                },
            });
        }
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(filter, text)| compile_one(text).map_err(|error| error.at(filter)))
            .collect::<Result<Vec<Pattern>, _>>()?;
        let reads = |key| patterns.iter().any(|pattern| pattern.root.mentions(key));
        let reads_payload = [reads("body"), reads("data")];
        Ok(Filters {
            patterns,
            reads_payload,
        })
    }

    /// The create-time checks of one source (§2.10, §2.11): Kinesis `data` and DynamoDB
    /// `dynamodb` are matched as JSON, so a list of rules there is refused.
    pub fn check_source(&self, source: FilterSource) -> Result<(), FilterError> {
        let (key, name) = match source {
            FilterSource::Sqs => return Ok(()),
            FilterSource::Kinesis => ("data", "kinesis"),
            FilterSource::DynamoDb => ("dynamodb", "dynamodb"),
        };
        for (filter, pattern) in self.patterns.iter().enumerate() {
            if let Some(path) = pattern.root.rules_at(key) {
                return Err(FilterError {
                    filter,
                    key: Some(path.to_owned()),
                    problem: Problem::PayloadRules { kind: name },
                });
            }
        }
        Ok(())
    }

    /// The operators in use that AWS Lambda refuses (EventBridge ones): `(filter, key,
    /// operator)`, for `validate` to note.
    pub fn beyond_lambda(&self) -> Vec<(usize, String, &'static str)> {
        self.patterns
            .iter()
            .enumerate()
            .flat_map(|(filter, pattern)| {
                pattern
                    .beyond_lambda()
                    .into_iter()
                    .map(move |(key, operator)| (filter, key, operator))
            })
            .collect()
    }

    /// The number of filters.
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether there are no filters (every record passes then; see [`Filters::matches`]).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The index of the first filter that keeps the record, `None` to drop it. A record
    /// that is not a JSON object matches nothing. With no filters every record is kept
    /// (as index 0).
    pub fn matches(&self, source: FilterSource, record_json: &[u8]) -> Option<usize> {
        if self.patterns.is_empty() {
            return Some(0);
        }
        let record = present::present(source, record_json, self.reads_payload(source))?;
        self.patterns.iter().position(|pattern| {
            pattern
                .root
                .check(Some(&record.root), record.payload)
                .is_ok()
        })
    }

    fn reads_payload(&self, source: FilterSource) -> bool {
        match source {
            FilterSource::Sqs => self.reads_payload[0],
            FilterSource::Kinesis => self.reads_payload[1],
            FilterSource::DynamoDb => false,
        }
    }

    /// Like [`Filters::matches`], with the reason each filter missed when none matched: for
    /// `esmd filter`.
    pub fn explain(&self, source: FilterSource, record_json: &[u8]) -> Verdict {
        if self.patterns.is_empty() {
            return Verdict::Matched(0);
        }
        let Some(record) = present::present(source, record_json, self.reads_payload(source)) else {
            return Verdict::NotAnObject;
        };
        let mut misses = Vec::with_capacity(self.patterns.len());
        for (filter, pattern) in self.patterns.iter().enumerate() {
            match pattern.root.check(Some(&record.root), record.payload) {
                Ok(()) => return Verdict::Matched(filter),
                Err(miss) => misses.push(FilterMiss {
                    filter,
                    key: miss.path.to_owned(),
                    reason: miss.reason,
                }),
            }
        }
        Verdict::Dropped(misses)
    }
}

fn compile_one(text: &str) -> Result<Pattern, Invalid> {
    let chars = text.chars().count();
    if chars > MAX_PATTERN_CHARS {
        return Err(Invalid {
            key: String::new(),
            problem: Problem::TooLong { chars },
        });
    }
    let value = serde_json::from_str(text).map_err(|error| Invalid {
        key: String::new(),
        problem: Problem::NotJson(error.to_string()),
    })?;
    Pattern::parse(&value)
}

impl Invalid {
    fn at(self, filter: usize) -> FilterError {
        FilterError {
            filter,
            key: (!self.key.is_empty()).then_some(self.key),
            problem: self.problem,
        }
    }
}

/// What became of one record, for `esmd filter`.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Kept by this filter (the first that matched).
    Matched(usize),
    /// Dropped: why each filter missed, in filter order.
    Dropped(Vec<FilterMiss>),
    /// The record is not a JSON object.
    NotAnObject,
}

/// Where and why one filter missed a record.
#[derive(Debug, PartialEq, Eq)]
pub struct FilterMiss {
    pub filter: usize,
    /// The dotted key of the pattern where matching stopped.
    pub key: String,
    pub reason: Reason,
}

impl fmt::Display for FilterMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "filter {}: key {}: {}",
            self.filter, self.key, self.reason
        )
    }
}

/// Why a pattern missed a record at a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("the record has no such key")]
    Missing,
    #[error("no value matched")]
    NoValueMatched,
    #[error("no $or branch matched")]
    NoOrBranch,
    #[error("the record's value is JSON but the pattern gives a list of plain-string rules")]
    JsonAgainstRules,
    #[error("the record's value is a plain string but the pattern gives an object")]
    TextAgainstObject,
    #[error("the record's value is not JSON, so no pattern on it matches")]
    NotJson,
}

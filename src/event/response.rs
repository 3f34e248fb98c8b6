//! The partial batch response (`ReportBatchItemFailures`), parsed to the letter of
//! aws-esm-semantics §4.2–4.3 and §6.3–6.5.
//!
//! Success: an empty body, `null`, `""`, `[]`, `{}`, any JSON without a `batchItemFailures`
//! key, and an empty or null `batchItemFailures`. Whole-batch failure: invalid JSON, a
//! `batchItemFailures` that is not a list, and any entry without a non-empty string
//! `itemIdentifier` naming a record of the batch.

use std::collections::HashSet;

use serde_json::Value;

/// What a function's answer says about its batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchResponse {
    /// Every record succeeded.
    Success,
    /// These records failed (deduplicated, in the order the function listed them).
    ItemFailures(Vec<String>),
    /// The answer breaks the rules: the whole batch counts as failed.
    Invalid(String),
}

/// Reads the answer of a function that reports batch item failures. `in_batch` tells
/// whether an identifier names a record of the batch (callers look it up in a set: a
/// batch and its failures may both run to 10,000).
pub fn parse_batch_response(body: &[u8], in_batch: impl Fn(&str) -> bool) -> BatchResponse {
    if body.iter().all(u8::is_ascii_whitespace) {
        return BatchResponse::Success;
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => return BatchResponse::Invalid(format!("response is not valid JSON: {err}")),
    };
    let failures = match &value {
        Value::Object(map) => match map.get("batchItemFailures") {
            None | Some(Value::Null) => return BatchResponse::Success,
            Some(Value::Array(items)) => items,
            Some(other) => {
                return BatchResponse::Invalid(format!("batchItemFailures is not a list: {other}"));
            }
        },
        _ => return BatchResponse::Success,
    };
    let mut ids: Vec<String> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for item in failures {
        let id = match item.get("itemIdentifier") {
            Some(Value::String(id)) if !id.is_empty() => id,
            Some(Value::String(_)) => {
                return BatchResponse::Invalid("an itemIdentifier is empty".into());
            }
            Some(other) => {
                return BatchResponse::Invalid(format!(
                    "an itemIdentifier is not a string: {other}"
                ));
            }
            None => {
                return BatchResponse::Invalid(format!(
                    "a batchItemFailures entry has no itemIdentifier: {item}"
                ));
            }
        };
        if !in_batch(id) {
            return BatchResponse::Invalid(format!(
                "itemIdentifier {id:?} names no record of the batch"
            ));
        }
        if seen.insert(id) {
            ids.push(id.clone());
        }
    }
    if ids.is_empty() {
        BatchResponse::Success
    } else {
        BatchResponse::ItemFailures(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> BatchResponse {
        parse_batch_response(body.as_bytes(), |id| ["a", "b", "c"].contains(&id))
    }

    #[test]
    fn success_cases() {
        for body in [
            "",
            "  ",
            "null",
            "\"\"",
            "[]",
            "{}",
            r#"{"batchItemFailures":[]}"#,
            r#"{"batchItemFailures":null}"#,
            r#"{"statusCode":200}"#,
            r#""done""#,
        ] {
            assert_eq!(parse(body), BatchResponse::Success, "{body:?}");
        }
    }

    #[test]
    fn whole_failure_cases() {
        for body in [
            "not json",
            "{",
            r#"{"batchItemFailures":[{"itemIdentifier":123}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
            r#"{"batchItemFailures":[{"foo":"notvalid"}]}"#,
            r#"{"batchItemFailures":[{"foo":123}]}"#,
            r#"{"batchItemFailures":[{"foo":null}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":"zzz"}]}"#,
            r#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"zzz"}]}"#,
            r#"{"batchItemFailures":"a"}"#,
            r#"{"batchItemFailures":{"itemIdentifier":"a"}}"#,
            r#"{"batchItemFailures":[null]}"#,
            r#"{"batchItemFailures":["a"]}"#,
        ] {
            assert!(
                matches!(parse(body), BatchResponse::Invalid(_)),
                "{body:?} gave {:?}",
                parse(body)
            );
        }
    }

    #[test]
    fn item_failures_are_deduplicated_in_order() {
        assert_eq!(
            parse(
                r#"{"batchItemFailures":[{"itemIdentifier":"c"},{"itemIdentifier":"a"},{"itemIdentifier":"c"}]}"#
            ),
            BatchResponse::ItemFailures(vec!["c".into(), "a".into()])
        );
    }

    #[test]
    fn ten_thousand_failures_reported_twice_each() {
        let batch: HashSet<String> = (0..10_000).map(|i| format!("id-{i}")).collect();
        // every record reported, in reverse, then all again
        let items: Vec<Value> = (0..10_000)
            .rev()
            .chain((0..10_000).rev())
            .map(|i| serde_json::json!({"itemIdentifier": format!("id-{i}")}))
            .collect();
        let body = serde_json::json!({ "batchItemFailures": items }).to_string();
        let parsed = parse_batch_response(body.as_bytes(), |id| batch.contains(id));
        let expected: Vec<String> = (0..10_000).rev().map(|i| format!("id-{i}")).collect();
        assert_eq!(parsed, BatchResponse::ItemFailures(expected));
    }
}

//! `esmd filter`: which filter keeps each record, or why every filter missed it, so a user
//! can debug a pattern without a queue.

use super::{FilterSource, Filters, Verdict};

/// Reads records as a function receives them (an event `{"Records":[...]}`, a JSON array,
/// or one JSON object per line) and tells, a line per record, whether it would be
/// delivered. `filters` is `None` for a mapping without `filter_criteria`.
pub fn explain_input(
    filters: Option<&Filters>,
    source: FilterSource,
    input: &str,
) -> Result<Vec<String>, String> {
    let records = records_of(input)?;
    Ok(records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let json = record.to_string();
            let verdict = match filters {
                None => return format!("record {i}: delivered (no filter_criteria)"),
                Some(filters) => filters.explain(source, json.as_bytes()),
            };
            match verdict {
                Verdict::Matched(filter) => {
                    format!("record {i}: delivered (filter {filter} matched)")
                }
                Verdict::Dropped(misses) => {
                    let why: Vec<String> = misses.iter().map(ToString::to_string).collect();
                    format!("record {i}: filtered out ({})", why.join("; "))
                }
                Verdict::NotAnObject => {
                    format!("record {i}: filtered out (not a JSON object)")
                }
            }
        })
        .collect())
}

fn records_of(input: &str) -> Result<Vec<serde_json::Value>, String> {
    match serde_json::from_str::<serde_json::Value>(input) {
        Ok(serde_json::Value::Array(records)) => Ok(records),
        Ok(serde_json::Value::Object(mut event)) if event.contains_key("Records") => {
            match event.remove("Records") {
                Some(serde_json::Value::Array(records)) => Ok(records),
                _ => Err("\"Records\" is not a list".into()),
            }
        }
        Ok(record) => Ok(vec![record]),
        Err(_) => input
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(n, line)| {
                serde_json::from_str(line).map_err(|err| format!("line {}: {err}", n + 1))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(patterns: &[&str]) -> Filters {
        let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
        Filters::compile(&patterns).unwrap()
    }

    #[test]
    fn each_record_gets_a_line_in_every_input_shape() {
        let f = filters(&[r#"{"body":{"kind":["order"]}}"#, r#"{"body":["ping"]}"#]);
        let order = r#"{"messageId":"a","body":"{\"kind\":\"order\"}"}"#;
        let ping = r#"{"messageId":"b","body":"ping"}"#;
        let refund = r#"{"messageId":"c","body":"{\"kind\":\"refund\"}"}"#;
        let expected = vec![
            "record 0: delivered (filter 0 matched)".to_string(),
            "record 1: delivered (filter 1 matched)".to_string(),
            "record 2: filtered out (filter 0: key body.kind: no value matched; filter 1: key body: the record's value is JSON but the pattern gives a list of plain-string rules)".to_string(),
        ];
        for input in [
            format!(r#"{{"Records":[{order},{ping},{refund}]}}"#),
            format!("[{order},{ping},{refund}]"),
            format!("{order}\n{ping}\n\n{refund}\n"),
        ] {
            assert_eq!(
                explain_input(Some(&f), FilterSource::Sqs, &input).unwrap(),
                expected,
                "{input}"
            );
        }
    }

    #[test]
    fn without_filters_everything_is_delivered_and_bad_input_is_an_error() {
        assert_eq!(
            explain_input(None, FilterSource::Kinesis, r#"[{"a":1}]"#).unwrap(),
            vec!["record 0: delivered (no filter_criteria)"]
        );
        let err = explain_input(None, FilterSource::Sqs, "{\"a\":1}\nnot json").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }
}

//! Deserializing one table of the config file while collecting every problem, not only
//! serde's first.
//!
//! [`read`] deserializes a [`raw`](super::raw) type; when serde stops at an unknown key or a
//! mistyped value, that key is reported with its location, removed, and the table is
//! deserialized again, until it passes. The rules of `validate` then see every other key.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::Value;

/// One problem found in a config file, with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found so far.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// A table read by [`read`]: the value, with its bad keys left out, and their problems.
pub struct Read<T> {
    /// `None` when the table itself has the wrong type.
    pub value: Option<T>,
    pub problems: Vec<Problem>,
}

impl<T> Read<T> {
    /// Whether the key at `path`, or one inside it, was left out (so a rule need not call
    /// it missing).
    pub fn rejected(&self, path: &str) -> bool {
        self.problems.iter().any(|problem| {
            problem.path.strip_prefix(path).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
            })
        })
    }
}

/// Deserializes `value`, found at `path`, into `T`, leaving out each key serde refuses.
pub fn read<T: DeserializeOwned>(path: &str, mut value: Value) -> Read<T> {
    let mut problems = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize(value.clone()) {
            Ok(read) => {
                return Read {
                    value: Some(read),
                    problems,
                };
            }
            Err(error) => error,
        };
        let segments: Vec<&Segment> = error.path().iter().collect();
        let message = error.inner().message();
        let message = if message.starts_with("unknown field") {
            "unknown key".to_string()
        } else if let Some((_, expected)) = message
            .strip_prefix("invalid type: ")
            .and_then(|rest| rest.rsplit_once(", expected "))
        {
            let found = lookup(&value, &segments).map_or("nothing", describe);
            format!("expected {}, found {found}", in_toml_terms(expected))
        } else {
            message.to_string()
        };
        problems.push(Problem {
            path: join(path, &segments),
            message,
        });
        if !remove_key(&mut value, &segments) {
            return Read {
                value: None,
                problems,
            };
        }
    }
}

/// The location of `segments` below `path`: `mappings[0].scaling_config.maximum_concurrency`.
fn join(path: &str, segments: &[&Segment]) -> String {
    let mut out = path.to_string();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

fn lookup<'a>(value: &'a Value, segments: &[&Segment]) -> Option<&'a Value> {
    segments
        .iter()
        .try_fold(value, |value, segment| match segment {
            Segment::Seq { index } => value.as_array()?.get(*index),
            Segment::Map { key } => value.as_table()?.get(key),
            Segment::Enum { .. } | Segment::Unknown => Some(value),
        })
}

/// Removes the key that holds the value at `segments`: a whole array when an item is
/// wrong, so the indices of the other problems stay true. False when there is no key.
fn remove_key(value: &mut Value, segments: &[&Segment]) -> bool {
    let Some(last_key) = segments
        .iter()
        .rposition(|segment| matches!(segment, Segment::Map { .. }))
    else {
        return false;
    };
    let Segment::Map { key } = segments[last_key] else {
        return false;
    };
    let mut table = value;
    for segment in &segments[..last_key] {
        let next = match segment {
            Segment::Seq { index } => table.as_array_mut().and_then(|a| a.get_mut(*index)),
            Segment::Map { key } => table.as_table_mut().and_then(|t| t.get_mut(key)),
            Segment::Enum { .. } | Segment::Unknown => Some(table),
        };
        let Some(next) = next else {
            return false;
        };
        table = next;
    }
    table
        .as_table_mut()
        .is_some_and(|t| t.remove(key).is_some())
}

/// Serde's name of an expected type, in TOML's words.
fn in_toml_terms(expected: &str) -> &str {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => "an integer",
        "a boolean" => "true or false",
        "a sequence" => "an array",
        "a map" => "a table",
        "path string" | "string only" => "a string",
        other if other.starts_with("struct ") => "a table",
        other => other,
    }
}

/// A short description of a TOML value's type for error messages.
pub fn describe(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{RawFunction, RawMapping};

    fn problems<T: DeserializeOwned>(path: &str, text: &str) -> Vec<String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        read::<T>(path, Value::Table(table))
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn unknown_and_mistyped_keys_are_all_reported_and_the_rest_is_read() {
        let table: toml::Table = toml::from_str(
            "batch_size = 'x'\nbatch_sise = 3\nenabled = false\nscaling_config = { maximum_concurrency = true, other = 1 }",
        )
        .unwrap();
        let read = read::<RawMapping>("mappings[0]", Value::Table(table));
        let found: Vec<String> = read.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            vec![
                "mappings[0].batch_sise: unknown key",
                "mappings[0].batch_size: expected an integer, found a string",
                "mappings[0].scaling_config.maximum_concurrency: expected an integer, found a boolean",
                "mappings[0].scaling_config.other: unknown key",
            ]
        );
        assert!(read.rejected("mappings[0].batch_size"));
        assert!(read.rejected("mappings[0].scaling_config"));
        assert!(!read.rejected("mappings[0].batch"));
        let mapping = read.value.unwrap();
        assert!(!mapping.enabled);
        assert_eq!(mapping.batch_size, None);
        assert_eq!(mapping.scaling_config.unwrap().maximum_concurrency, None);
    }

    #[test]
    fn a_wrong_item_drops_its_whole_array() {
        assert_eq!(
            problems::<RawFunction>("functions.f", "command = ['x', 1]\nrole_arn = 2"),
            vec![
                "functions.f.command[1]: expected a string, found an integer",
                "functions.f.role_arn: expected a string, found an integer",
            ]
        );
    }

    #[test]
    fn a_table_of_the_wrong_type_is_one_problem() {
        let read = read::<RawMapping>("mappings[2]", Value::Integer(3));
        assert!(read.value.is_none());
        assert_eq!(
            read.problems[0].to_string(),
            "mappings[2]: expected a table, found an integer"
        );
    }

    #[test]
    fn an_unknown_starting_position_names_the_choices() {
        assert_eq!(
            problems::<RawMapping>("m", "starting_position = 'OLDEST'"),
            vec![
                "m.starting_position: unknown variant `OLDEST`, expected one of `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`"
            ]
        );
    }
}

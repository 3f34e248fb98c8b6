//! A TOML table reader that collects every problem instead of stopping at the first.
//!
//! Each [`Fields`] wraps one table and its location (`mappings[2]`). Reading a key records
//! it as known; [`Fields::finish`] then reports every key that was never asked for, so
//! unknown keys are errors with their full location.

use std::collections::BTreeSet;
use std::fmt;

use toml::{Table, Value};

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

/// A table being read, with the keys asked for so far.
pub struct Fields<'a> {
    path: String,
    table: &'a Table,
    known: BTreeSet<&'static str>,
    all_known: bool,
}

impl<'a> Fields<'a> {
    pub fn new(path: impl Into<String>, table: &'a Table) -> Self {
        Fields {
            path: path.into(),
            table,
            known: BTreeSet::new(),
            all_known: false,
        }
    }

    /// The location of this table.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Every entry, each marked known: for tables keyed by user-chosen names.
    pub fn entries(&mut self) -> Vec<(&'a String, &'a Value)> {
        self.all_known = true;
        self.table.iter().collect()
    }

    /// The location of `key` inside this table.
    pub fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Whether the table holds `key` (and marks it known).
    pub fn has(&mut self, key: &'static str) -> bool {
        self.known.insert(key);
        self.table.contains_key(key)
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.insert(key);
        self.table.get(key)
    }

    fn typed<T>(
        &mut self,
        key: &'static str,
        expected: &str,
        p: &mut Problems,
        pick: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let value = self.get(key)?;
        let picked = pick(value);
        if picked.is_none() {
            p.add(
                self.at(key),
                format!("expected {expected}, found {}", describe(value)),
            );
        }
        picked
    }

    pub fn string(&mut self, key: &'static str, p: &mut Problems) -> Option<&'a str> {
        self.typed(key, "a string", p, Value::as_str)
    }

    pub fn integer(&mut self, key: &'static str, p: &mut Problems) -> Option<i64> {
        self.typed(key, "an integer", p, Value::as_integer)
    }

    pub fn boolean(&mut self, key: &'static str, p: &mut Problems) -> Option<bool> {
        self.typed(key, "true or false", p, Value::as_bool)
    }

    pub fn array(&mut self, key: &'static str, p: &mut Problems) -> Option<&'a Vec<Value>> {
        self.typed(key, "an array", p, Value::as_array)
    }

    pub fn table(&mut self, key: &'static str, p: &mut Problems) -> Option<Fields<'a>> {
        let path = self.at(key);
        self.typed(key, "a table", p, Value::as_table)
            .map(|table| Fields::new(path, table))
    }

    /// An integer that must lie in `min..=max`.
    pub fn integer_in(
        &mut self,
        key: &'static str,
        min: i64,
        max: i64,
        p: &mut Problems,
    ) -> Option<i64> {
        let value = self.integer(key, p)?;
        if value < min || value > max {
            p.add(
                self.at(key),
                format!("{value} is outside the allowed range {min}..={max}"),
            );
            return None;
        }
        Some(value)
    }

    /// Reports every key of the table that no reader asked for.
    pub fn finish(self, p: &mut Problems) {
        if self.all_known {
            return;
        }
        for key in self.table.keys() {
            if !self.known.contains(key.as_str()) {
                p.add(self.at(key), "unknown key");
            }
        }
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

    #[test]
    fn unknown_and_mistyped_keys_are_all_reported() {
        let table: Table = toml::from_str("a = 1\nb = 'x'\nc = true").unwrap();
        let mut p = Problems::default();
        let mut f = Fields::new("t", &table);
        assert_eq!(f.integer("a", &mut p), Some(1));
        assert_eq!(f.integer("b", &mut p), None);
        f.finish(&mut p);
        let text: Vec<String> = p.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "t.b: expected an integer, found a string".to_string(),
                "t.c: unknown key".to_string()
            ]
        );
    }

    #[test]
    fn ranges_name_the_bounds() {
        let table: Table = toml::from_str("n = 0").unwrap();
        let mut p = Problems::default();
        let mut f = Fields::new("", &table);
        assert_eq!(f.integer_in("n", 1, 10, &mut p), None);
        assert_eq!(
            p.0[0].to_string(),
            "n: 0 is outside the allowed range 1..=10"
        );
    }
}

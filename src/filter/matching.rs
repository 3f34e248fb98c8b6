//! Matching a compiled pattern against a presented record, without allocating: a miss is
//! reported as the pattern's own key path and a reason.

use serde_json::{Map, Value};

use super::Reason;
use super::pattern::{Field, Matcher, Node, Rule};

/// How the source's payload key (SQS `body`, Kinesis `data`) was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Payload {
    /// Parsed as JSON: only an object pattern may match it.
    Json,
    /// Kept as the plain string it is: only a list of rules may match it.
    Text,
    /// Not JSON where only JSON can be matched (Kinesis data): no pattern on it matches.
    Opaque,
}

/// The payload key at the record's root and how it was presented.
pub(super) type PayloadAt<'a> = Option<(&'a str, Payload)>;

/// Why a pattern did not match, located at a key path of the pattern.
#[derive(Debug, Clone, Copy)]
pub(super) struct Miss<'p> {
    pub path: &'p str,
    pub reason: Reason,
}

impl Node {
    /// Matches this object level against `object` (`None` when the record has no object
    /// here, so only `exists: false` rules can hold).
    pub fn check<'p>(
        &'p self,
        object: Option<&Map<String, Value>>,
        payload: PayloadAt<'_>,
    ) -> Result<(), Miss<'p>> {
        for field in &self.fields {
            let value = object.and_then(|object| object.get(&field.key));
            if let Some((key, presented)) = payload
                && key == field.key
            {
                check_payload(field, presented)?;
            }
            field.check(value)?;
        }
        let Some(or) = &self.or else { return Ok(()) };
        if or
            .branches
            .iter()
            .any(|branch| branch.check(object, payload).is_ok())
        {
            Ok(())
        } else {
            Err(Miss {
                path: &or.path,
                reason: Reason::NoOrBranch,
            })
        }
    }
}

/// The per-source rule tables (semantics §2.8, §2.10): the payload's form and the
/// pattern's form must agree before any rule is tried.
fn check_payload(field: &Field, presented: Payload) -> Result<(), Miss<'_>> {
    let reason = match (presented, &field.rule) {
        (Payload::Json, Rule::Leaf(_)) => Reason::JsonAgainstRules,
        (Payload::Text, Rule::Nested(_)) => Reason::TextAgainstObject,
        (Payload::Opaque, _) => Reason::NotJson,
        _ => return Ok(()),
    };
    Err(Miss {
        path: &field.path,
        reason,
    })
}

impl Field {
    fn check(&self, value: Option<&Value>) -> Result<(), Miss<'_>> {
        match &self.rule {
            Rule::Nested(node) => match value {
                Some(Value::Object(object)) => node.check(Some(object), None),
                Some(Value::Array(items)) => check_elements(node, items),
                _ => node.check(None, None),
            },
            Rule::Leaf(matchers) => {
                if matchers.iter().any(|matcher| accepts(matcher, value)) {
                    Ok(())
                } else {
                    Err(Miss {
                        path: &self.path,
                        reason: match value {
                            None => Reason::Missing,
                            Some(_) => Reason::NoValueMatched,
                        },
                    })
                }
            }
        }
    }
}

/// A nested pattern against a list: some object of the list must match it whole.
fn check_elements<'p>(node: &'p Node, items: &[Value]) -> Result<(), Miss<'p>> {
    let mut first_miss = None;
    for item in items {
        let result = match item {
            Value::Object(object) => node.check(Some(object), None),
            Value::Array(inner) => check_elements(node, inner),
            _ => continue,
        };
        match result {
            Ok(()) => return Ok(()),
            Err(miss) => {
                first_miss.get_or_insert(miss);
            }
        }
    }
    match first_miss {
        Some(miss) => Err(miss),
        None => node.check(None, None),
    }
}

/// Whether one matcher accepts the field: `exists` looks at the whole field, the others
/// at each leaf value (a list matches if any of its leaves does).
fn accepts(matcher: &Matcher, value: Option<&Value>) -> bool {
    match matcher {
        Matcher::Exists(exists) => value.is_some_and(|v| any_leaf(v, &mut |_| true)) == *exists,
        _ => value.is_some_and(|v| any_leaf(v, &mut |leaf| matcher.accepts(leaf))),
    }
}

/// Whether any leaf of `value` (itself, or the elements of a list, flattened) passes `test`;
/// objects are not leaves.
fn any_leaf(value: &Value, test: &mut impl FnMut(&Value) -> bool) -> bool {
    match value {
        Value::Object(_) => false,
        Value::Array(items) => items.iter().any(|item| any_leaf(item, test)),
        leaf => test(leaf),
    }
}

//! One compiled pattern: parsed and checked once, then matched against parsed records
//! without allocating.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::Problem;

/// A pattern problem found while compiling, with the dotted key it was found at.
#[derive(Debug)]
pub(super) struct Invalid {
    pub key: String,
    pub problem: Problem,
}

fn invalid(key: &str, problem: Problem) -> Invalid {
    Invalid {
        key: key.to_owned(),
        problem,
    }
}

/// A compiled pattern: the root object of the `Pattern` JSON.
#[derive(Debug)]
pub(super) struct Pattern {
    pub root: Node,
}

/// An object level of a pattern: every field must match, and one `$or` branch if present.
#[derive(Debug)]
pub(super) struct Node {
    pub fields: Vec<Field>,
    pub or: Option<Or>,
}

#[derive(Debug)]
pub(super) struct Or {
    /// The dotted location of this `$or`, for explanations.
    pub path: String,
    pub branches: Vec<Node>,
}

#[derive(Debug)]
pub(super) struct Field {
    pub key: String,
    /// The dotted location from the pattern's root, for explanations.
    pub path: String,
    pub rule: Rule,
}

#[derive(Debug)]
pub(super) enum Rule {
    /// A list of matchers for a leaf value, ORed.
    Leaf(Vec<Matcher>),
    /// A nested object of the pattern.
    Nested(Node),
}

#[derive(Debug)]
pub(super) enum Matcher {
    Exact(Literal),
    Prefix(Text),
    Suffix(Text),
    EqualsIgnoreCase(String),
    AnythingBut(Exclusion),
    Numeric(Range),
    Exists(bool),
    Wildcard(Wildcard),
    Cidr(Cidr),
}

/// A string to compare exactly or, lowercased at compile time, ignoring case.
#[derive(Debug)]
pub(super) enum Text {
    Exact(String),
    IgnoreCase(String),
}

#[derive(Debug, PartialEq)]
pub(super) enum Literal {
    String(String),
    Number(serde_json::Number),
    Bool(bool),
    Null,
}

#[derive(Debug)]
pub(super) enum Exclusion {
    Values(Vec<Literal>),
    Prefix(Vec<String>),
    Suffix(Vec<String>),
    /// Lowercased at compile time.
    EqualsIgnoreCase(Vec<String>),
    Wildcard(Vec<Wildcard>),
}

/// `numeric`: a lower and an upper bound, each optional, or an exact value.
#[derive(Debug)]
pub(super) struct Range {
    pub lower: Option<(f64, bool)>,
    pub upper: Option<(f64, bool)>,
}

/// A `wildcard` pattern split at its unescaped `*`: `a*b*c` is `["a", "b", "c"]`.
#[derive(Debug)]
pub(super) struct Wildcard {
    pub pieces: Vec<String>,
}

#[derive(Debug)]
pub(super) struct Cidr {
    pub network: IpAddr,
    pub prefix_len: u8,
}

/// The EventBridge operators that AWS Lambda's own filter table leaves out.
pub(super) const BEYOND_LAMBDA: &[&str] = &[
    "wildcard",
    "cidr",
    "anything-but/prefix",
    "anything-but/suffix",
    "anything-but/equals-ignore-case",
    "anything-but/wildcard",
];

impl Pattern {
    pub fn parse(value: &Value) -> Result<Pattern, Invalid> {
        let Value::Object(object) = value else {
            return Err(invalid("", Problem::NotAnObject));
        };
        Ok(Pattern {
            root: Node::parse(object, "")?,
        })
    }

    /// Every operator of this pattern that Lambda's own table leaves out, with its key.
    pub fn beyond_lambda(&self) -> Vec<(String, &'static str)> {
        let mut found = Vec::new();
        self.root.beyond_lambda(&mut found);
        found
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Node {
    fn parse(object: &Map<String, Value>, path: &str) -> Result<Node, Invalid> {
        if object.is_empty() {
            return Err(invalid(path, Problem::EmptyObject));
        }
        let mut node = Node {
            fields: Vec::with_capacity(object.len()),
            or: None,
        };
        for (key, value) in object {
            let key_path = join(path, key);
            if key == "$or" {
                node.or = Some(Or::parse(value, key_path)?);
                continue;
            }
            let rule = match value {
                Value::Object(nested) => Rule::Nested(Node::parse(nested, &key_path)?),
                Value::Array(values) => Rule::Leaf(parse_leaf(values, &key_path)?),
                _ => return Err(invalid(&key_path, Problem::NotAList)),
            };
            node.fields.push(Field {
                key: key.clone(),
                path: key_path,
                rule,
            });
        }
        Ok(node)
    }

    /// Whether `key` has a rule at this level or in its `$or` branches.
    pub fn mentions(&self, key: &str) -> bool {
        self.fields.iter().any(|field| field.key == key)
            || self
                .or
                .iter()
                .flat_map(|or| &or.branches)
                .any(|branch| branch.mentions(key))
    }

    /// The path of a list of rules on `key` at this level or in its `$or` branches.
    pub fn rules_at(&self, key: &str) -> Option<&str> {
        let here = self
            .fields
            .iter()
            .find(|field| field.key == key && matches!(field.rule, Rule::Leaf(_)))
            .map(|field| field.path.as_str());
        here.or_else(|| {
            self.or
                .iter()
                .flat_map(|or| &or.branches)
                .find_map(|branch| branch.rules_at(key))
        })
    }

    fn beyond_lambda(&self, found: &mut Vec<(String, &'static str)>) {
        for field in &self.fields {
            match &field.rule {
                Rule::Nested(node) => node.beyond_lambda(found),
                Rule::Leaf(matchers) => {
                    for matcher in matchers {
                        if let Some(name) = matcher.beyond_lambda() {
                            found.push((field.path.clone(), name));
                        }
                    }
                }
            }
        }
        for branch in self.or.iter().flat_map(|or| &or.branches) {
            branch.beyond_lambda(found);
        }
    }
}

impl Or {
    fn parse(value: &Value, path: String) -> Result<Or, Invalid> {
        let Value::Array(branches) = value else {
            return Err(invalid(&path, Problem::OrNotObjects));
        };
        if branches.is_empty() {
            return Err(invalid(&path, Problem::OrNotObjects));
        }
        let branches = branches
            .iter()
            .map(|branch| match branch {
                Value::Object(object) => Node::parse(object, &path),
                _ => Err(invalid(&path, Problem::OrNotObjects)),
            })
            .collect::<Result<_, _>>()?;
        Ok(Or { path, branches })
    }
}

fn parse_leaf(values: &[Value], path: &str) -> Result<Vec<Matcher>, Invalid> {
    if values.is_empty() {
        return Err(invalid(path, Problem::EmptyList));
    }
    values
        .iter()
        .map(|value| Matcher::parse(value).map_err(|problem| invalid(path, problem)))
        .collect()
}

impl Matcher {
    fn parse(value: &Value) -> Result<Matcher, Problem> {
        let Value::Object(operator) = value else {
            return Literal::parse(value).map(Matcher::Exact);
        };
        let mut entries = operator.iter();
        let (Some((name, argument)), None) = (entries.next(), entries.next()) else {
            return Err(Problem::NotOneOperator);
        };
        let bad = |expected: &'static str| Problem::BadArgument {
            operator: name.clone(),
            expected,
        };
        match name.as_str() {
            "prefix" => Text::parse(argument)
                .map(Matcher::Prefix)
                .ok_or_else(|| bad("a string or {\"equals-ignore-case\": string}")),
            "suffix" => Text::parse(argument)
                .map(Matcher::Suffix)
                .ok_or_else(|| bad("a string or {\"equals-ignore-case\": string}")),
            "equals-ignore-case" => argument
                .as_str()
                .map(|text| Matcher::EqualsIgnoreCase(text.to_lowercase()))
                .ok_or_else(|| bad("a string")),
            "anything-but" => Exclusion::parse(argument).map(Matcher::AnythingBut),
            "numeric" => Range::parse(argument).map(Matcher::Numeric),
            "exists" => argument
                .as_bool()
                .map(Matcher::Exists)
                .ok_or_else(|| bad("true or false")),
            "wildcard" => argument
                .as_str()
                .ok_or_else(|| bad("a string"))
                .and_then(Wildcard::parse)
                .map(Matcher::Wildcard),
            "cidr" => argument
                .as_str()
                .and_then(Cidr::parse)
                .map(Matcher::Cidr)
                .ok_or_else(|| bad("an IPv4 or IPv6 network such as \"10.0.0.0/24\"")),
            _ => Err(Problem::UnknownOperator(name.clone())),
        }
    }

    fn beyond_lambda(&self) -> Option<&'static str> {
        match self {
            Matcher::Wildcard(_) => Some(BEYOND_LAMBDA[0]),
            Matcher::Cidr(_) => Some(BEYOND_LAMBDA[1]),
            Matcher::AnythingBut(Exclusion::Prefix(_)) => Some(BEYOND_LAMBDA[2]),
            Matcher::AnythingBut(Exclusion::Suffix(_)) => Some(BEYOND_LAMBDA[3]),
            Matcher::AnythingBut(Exclusion::EqualsIgnoreCase(_)) => Some(BEYOND_LAMBDA[4]),
            Matcher::AnythingBut(Exclusion::Wildcard(_)) => Some(BEYOND_LAMBDA[5]),
            _ => None,
        }
    }

    /// Whether this matcher accepts one leaf value of the record (never an object).
    pub fn accepts(&self, value: &Value) -> bool {
        match self {
            Matcher::Exact(literal) => literal.equals(value),
            Matcher::Prefix(text) => value.as_str().is_some_and(|s| text.is_prefix_of(s)),
            Matcher::Suffix(text) => value.as_str().is_some_and(|s| text.is_suffix_of(s)),
            Matcher::EqualsIgnoreCase(lower) => value
                .as_str()
                .is_some_and(|s| lowercase(s).eq(lower.chars())),
            Matcher::AnythingBut(exclusion) => !exclusion.excludes(value),
            Matcher::Numeric(range) => value.as_f64().is_some_and(|n| range.contains(n)),
            Matcher::Wildcard(wildcard) => value.as_str().is_some_and(|s| wildcard.matches(s)),
            Matcher::Cidr(cidr) => value.as_str().is_some_and(|s| cidr.contains(s)),
            // Existence is decided on the whole field by the caller.
            Matcher::Exists(_) => false,
        }
    }
}

fn lowercase(s: &str) -> impl DoubleEndedIterator<Item = char> + '_ {
    s.chars().flat_map(char::to_lowercase)
}

/// Whether `needle` starts `haystack`, both as iterators of chars.
fn starts_with(
    mut haystack: impl Iterator<Item = char>,
    needle: impl Iterator<Item = char>,
) -> bool {
    needle.into_iter().all(|c| haystack.next() == Some(c))
}

impl Text {
    fn parse(argument: &Value) -> Option<Text> {
        match argument {
            Value::String(text) => Some(Text::Exact(text.clone())),
            Value::Object(object) if object.len() == 1 => object
                .get("equals-ignore-case")
                .and_then(Value::as_str)
                .map(|text| Text::IgnoreCase(text.to_lowercase())),
            _ => None,
        }
    }

    fn is_prefix_of(&self, s: &str) -> bool {
        match self {
            Text::Exact(prefix) => s.starts_with(prefix.as_str()),
            Text::IgnoreCase(prefix) => starts_with(lowercase(s), prefix.chars()),
        }
    }

    fn is_suffix_of(&self, s: &str) -> bool {
        match self {
            Text::Exact(suffix) => s.ends_with(suffix.as_str()),
            Text::IgnoreCase(suffix) => starts_with(lowercase(s).rev(), suffix.chars().rev()),
        }
    }
}

impl Literal {
    fn parse(value: &Value) -> Result<Literal, Problem> {
        match value {
            Value::String(s) => Ok(Literal::String(s.clone())),
            Value::Number(n) => Ok(Literal::Number(n.clone())),
            Value::Bool(b) => Ok(Literal::Bool(*b)),
            Value::Null => Ok(Literal::Null),
            Value::Array(_) => Err(Problem::NestedList),
            Value::Object(_) => Err(Problem::NotOneOperator),
        }
    }

    /// Strings match exactly, numbers by their JSON form (`300` is not `300.0`, §2.5); a
    /// number never equals a string.
    fn equals(&self, value: &Value) -> bool {
        match (self, value) {
            (Literal::String(s), Value::String(v)) => s == v,
            (Literal::Number(n), Value::Number(v)) => n == v,
            (Literal::Bool(b), Value::Bool(v)) => b == v,
            (Literal::Null, Value::Null) => true,
            _ => false,
        }
    }
}

impl Exclusion {
    fn parse(argument: &Value) -> Result<Exclusion, Problem> {
        let bad = |expected| Problem::BadArgument {
            operator: "anything-but".to_owned(),
            expected,
        };
        match argument {
            Value::String(_) | Value::Number(_) => {
                Ok(Exclusion::Values(vec![Literal::parse(argument)?]))
            }
            Value::Array(values) => {
                let all_strings = values.iter().all(Value::is_string);
                let all_numbers = values.iter().all(Value::is_number);
                if values.is_empty() || !(all_strings || all_numbers) {
                    return Err(bad("a non-empty list of strings or of numbers"));
                }
                values
                    .iter()
                    .map(Literal::parse)
                    .collect::<Result<_, _>>()
                    .map(Exclusion::Values)
            }
            Value::Object(object) if object.len() == 1 => {
                let (name, inner) = object.iter().next().expect("one entry");
                let strings = strings(inner).ok_or_else(|| {
                    bad("a string or a non-empty list of strings under its operator")
                })?;
                match name.as_str() {
                    "prefix" => Ok(Exclusion::Prefix(strings)),
                    "suffix" => Ok(Exclusion::Suffix(strings)),
                    "equals-ignore-case" => Ok(Exclusion::EqualsIgnoreCase(
                        strings.iter().map(|s| s.to_lowercase()).collect(),
                    )),
                    "wildcard" => strings
                        .iter()
                        .map(|s| Wildcard::parse(s))
                        .collect::<Result<_, _>>()
                        .map(Exclusion::Wildcard),
                    _ => Err(Problem::UnknownOperator(format!("anything-but/{name}"))),
                }
            }
            _ => Err(bad(
                "a string, a number, a list of them, or one of prefix, suffix, equals-ignore-case, wildcard",
            )),
        }
    }

    /// Whether the value is one of those excluded; a value of another type is not.
    fn excludes(&self, value: &Value) -> bool {
        match self {
            Exclusion::Values(values) => values.iter().any(|literal| literal.equals(value)),
            Exclusion::Prefix(prefixes) => value
                .as_str()
                .is_some_and(|s| prefixes.iter().any(|p| s.starts_with(p.as_str()))),
            Exclusion::Suffix(suffixes) => value
                .as_str()
                .is_some_and(|s| suffixes.iter().any(|p| s.ends_with(p.as_str()))),
            Exclusion::EqualsIgnoreCase(lowers) => value
                .as_str()
                .is_some_and(|s| lowers.iter().any(|l| lowercase(s).eq(l.chars()))),
            Exclusion::Wildcard(wildcards) => value
                .as_str()
                .is_some_and(|s| wildcards.iter().any(|w| w.matches(s))),
        }
    }
}

/// A string, or a non-empty list of strings.
fn strings(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(values) if !values.is_empty() => values
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

impl Range {
    fn parse(argument: &Value) -> Result<Range, Problem> {
        let bad = |expected| Problem::BadArgument {
            operator: "numeric".to_owned(),
            expected,
        };
        let shape = "[op, number] or [lower op, number, upper op, number] with ops =, <, <=, >, >=";
        let Some(items) = argument.as_array() else {
            return Err(bad(shape));
        };
        if items.len() != 2 && items.len() != 4 {
            return Err(bad(shape));
        }
        let mut range = Range {
            lower: None,
            upper: None,
        };
        for pair in items.chunks(2) {
            let (Some(op), Some(bound)) = (pair[0].as_str(), pair[1].as_f64()) else {
                return Err(bad(shape));
            };
            let slot = match op {
                ">" | ">=" => &mut range.lower,
                "<" | "<=" => &mut range.upper,
                "=" if items.len() == 2 => {
                    range.lower = Some((bound, true));
                    &mut range.upper
                }
                _ => return Err(bad(shape)),
            };
            if slot.is_some() {
                return Err(bad("one lower and one upper bound"));
            }
            *slot = Some((bound, op.len() == 2 || op == "="));
        }
        if let (Some((low, _)), Some((high, _))) = (range.lower, range.upper)
            && low > high
        {
            return Err(bad("a lower bound not above the upper bound"));
        }
        Ok(range)
    }

    fn contains(&self, n: f64) -> bool {
        let above = self
            .lower
            .is_none_or(|(low, inclusive)| if inclusive { n >= low } else { n > low });
        let below = self
            .upper
            .is_none_or(|(high, inclusive)| if inclusive { n <= high } else { n < high });
        above && below
    }
}

impl Wildcard {
    /// `*` is any run of characters, `\*` a literal star, `\\` a literal backslash.
    fn parse(text: &str) -> Result<Wildcard, Problem> {
        let bad = |expected| Problem::BadArgument {
            operator: "wildcard".to_owned(),
            expected,
        };
        let mut pieces = vec![String::new()];
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' if chars.peek() == Some(&'*') => {
                    return Err(bad("no two consecutive * characters"));
                }
                '*' => pieces.push(String::new()),
                '\\' => match chars.next() {
                    Some(escaped @ ('*' | '\\')) => pieces.last_mut().expect("one").push(escaped),
                    _ => return Err(bad("\\ only before * or \\")),
                },
                _ => pieces.last_mut().expect("one").push(c),
            }
        }
        Ok(Wildcard { pieces })
    }

    fn matches(&self, s: &str) -> bool {
        let (first, rest) = self.pieces.split_first().expect("at least one piece");
        let Some((last, middle)) = rest.split_last() else {
            return s == first;
        };
        if s.len() < first.len() + last.len() || !s.starts_with(first.as_str()) {
            return false;
        }
        if !s.ends_with(last.as_str()) {
            return false;
        }
        let mut inner = &s[first.len()..s.len() - last.len()];
        middle.iter().all(|piece| match inner.find(piece.as_str()) {
            Some(at) => {
                inner = &inner[at + piece.len()..];
                true
            }
            None => false,
        })
    }
}

impl Cidr {
    fn parse(text: &str) -> Option<Cidr> {
        let (address, length) = text.split_once('/')?;
        let network: IpAddr = address.parse().ok()?;
        let prefix_len: u8 = length.parse().ok()?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Cidr {
            network,
            prefix_len,
        })
    }

    fn contains(&self, s: &str) -> bool {
        let Ok(address) = s.parse::<IpAddr>() else {
            return false;
        };
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(
                u32::from(net).into(),
                u32::from(ip).into(),
                32,
                self.prefix_len,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), 128, self.prefix_len)
            }
            _ => false,
        }
    }
}

fn same_prefix(network: u128, address: u128, bits: u8, prefix_len: u8) -> bool {
    let shift = u32::from(bits - prefix_len);
    network.checked_shr(shift).unwrap_or(0) == address.checked_shr(shift).unwrap_or(0)
}

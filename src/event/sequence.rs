//! Stream sequence numbers: decimal strings of any length, ordered as numbers.
//!
//! AWS and kinesis-local send up to 56 digits (more than a `u128` holds), moto sends
//! small numbers such as `"1"`. The number is kept exactly as the source sent it and
//! compared digit by digit, never parsed into a fixed-width integer.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A sequence number as the source sent it: non-empty ASCII digits.
///
/// Equality, ordering and hashing are numeric, so leading zeros do not matter:
/// `"007" == "7"` and `"9" < "10"`. `Display` and serde give back the string as sent.
/// Shared, so the ledger's copy of a record's number costs no allocation.
#[derive(Debug, Clone)]
pub struct SequenceNumber(Arc<str>);

impl SequenceNumber {
    /// Accepts only non-empty ASCII digits.
    pub fn parse(s: &str) -> Option<Self> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| Self(Arc::from(s)))
    }

    /// The decimal string as the source sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_zero(&self) -> bool {
        self.significant().is_empty()
    }

    /// The digits without leading zeros; empty for zero.
    fn significant(&self) -> &str {
        self.0.trim_start_matches('0')
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.significant(), other.significant());
        // ASCII digits compare bytewise in numeric order once the lengths are equal.
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SequenceNumber {
    fn eq(&self, other: &Self) -> bool {
        self.significant() == other.significant()
    }
}

impl Eq for SequenceNumber {}

impl Hash for SequenceNumber {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.significant().hash(state);
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for SequenceNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SequenceNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("sequence number {s:?} is not a decimal string"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const AWS_A: &str = "49656941386383285739218634927624379545389513131937497090";
    const AWS_B: &str = "49656941386383285739218634927624379545389513131937497091";
    const AWS_C: &str = "49656941386383285739218634927624379545389513131937497100";
    const AWS_NEXT_SHARD: &str = "49656941386383285739218634937624379545389513131937497090";

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::parse(s).unwrap()
    }

    #[test]
    fn parse_accepts_only_non_empty_ascii_digits() {
        for ok in [
            "0",
            "1",
            "007",
            AWS_A,
            "000000000000000000000000000000000000000000000000000000000",
        ] {
            assert_eq!(SequenceNumber::parse(ok).unwrap().as_str(), ok, "{ok}");
        }
        for bad in [
            "", " 1", "1 ", "-1", "+1", "1.0", "1e3", "0x10", "١٢", "12a",
        ] {
            assert!(SequenceNumber::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn compares_as_decimal_numbers() {
        use Ordering::*;
        let table = [
            ("9", "10", Less),
            ("10", "9", Greater),
            ("1", "2", Less),
            ("2", "1", Greater),
            ("0", "0", Equal),
            ("0", "000", Equal),
            ("0", "1", Less),
            ("007", "7", Equal),
            ("007", "8", Less),
            ("0010", "9", Greater),
            ("99", "100", Less),
            ("123", "124", Less),
            ("124", "123", Greater),
            (AWS_A, AWS_A, Equal),
            (AWS_A, AWS_B, Less),
            (AWS_B, AWS_C, Less),
            (AWS_C, AWS_A, Greater),
            (AWS_A, AWS_NEXT_SHARD, Less),
            (AWS_A, "9", Greater),
            ("99999999999999999999999999999999999999999", AWS_A, Less),
            (
                "00049656941386383285739218634927624379545389513131937497091",
                AWS_B,
                Equal,
            ),
            (
                "00049656941386383285739218634927624379545389513131937497091",
                AWS_A,
                Greater,
            ),
            // More than u128::MAX (39 digits).
            (
                "340282366920938463463374607431768211456",
                "340282366920938463463374607431768211455",
                Greater,
            ),
        ];
        for (a, b, want) in table {
            assert_eq!(seq(a).cmp(&seq(b)), want, "{a} vs {b}");
            assert_eq!(seq(a).partial_cmp(&seq(b)), Some(want), "{a} vs {b}");
            assert_eq!(seq(a) == seq(b), want == Equal, "{a} == {b}");
        }
    }

    #[test]
    fn sorts_numerically() {
        let mut v: Vec<_> = ["10", "9", AWS_B, "0", "2", AWS_A, "01", "100"]
            .into_iter()
            .map(seq)
            .collect();
        v.sort();
        let got: Vec<_> = v.iter().map(SequenceNumber::as_str).collect();
        assert_eq!(got, ["0", "01", "2", "9", "10", "100", AWS_A, AWS_B]);
        assert_eq!(v.iter().max().unwrap().as_str(), AWS_B);
    }

    #[test]
    fn hash_agrees_with_equality() {
        let set: HashSet<_> = ["7", "007", "0", "00", AWS_A, &format!("0{AWS_A}")]
            .into_iter()
            .map(seq)
            .collect();
        assert_eq!(set.len(), 3);
        assert!(set.contains(&seq("0007")));
    }

    #[test]
    fn display_and_serde_keep_the_string_as_sent() {
        let s = seq("00042");
        assert_eq!(s.to_string(), "00042");
        assert_eq!(serde_json::to_string(&s).unwrap(), r#""00042""#);
        let back: SequenceNumber = serde_json::from_str(&format!("\"{AWS_A}\"")).unwrap();
        assert_eq!(back.as_str(), AWS_A);
        assert!(serde_json::from_str::<SequenceNumber>(r#""12x""#).is_err());
        assert!(serde_json::from_str::<SequenceNumber>(r#""""#).is_err());
        assert!(serde_json::from_str::<SequenceNumber>("12").is_err());
    }
}

//! The DynamoDB Streams record as Lambda delivers it (wire-formats §2.4, semantics §11.3).
//!
//! The GetRecords record passes through as sent, with `eventSourceARN` added. Attribute
//! maps are written with their names sorted, so the same record always serializes to
//! the same bytes.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodbstreams::types::{AttributeValue, Identity, Record, StreamRecord};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

/// One event record, in the field order AWS sends.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventRecord<'a> {
    #[serde(rename = "eventID", skip_serializing_if = "Option::is_none")]
    event_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aws_region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dynamodb: Option<Dynamodb<'a>>,
    #[serde(rename = "eventSourceARN")]
    event_source_arn: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_identity: Option<UserIdentity<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Dynamodb<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    approximate_creation_date_time: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<Item<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_image: Option<Item<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_image: Option<Item<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence_number: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_view_type: Option<&'a str>,
}

impl<'a> Dynamodb<'a> {
    fn new(s: &'a StreamRecord) -> Self {
        Self {
            approximate_creation_date_time: s
                .approximate_creation_date_time()
                .map(|t| t.as_secs_f64()),
            keys: s.keys().map(Item),
            new_image: s.new_image().map(Item),
            old_image: s.old_image().map(Item),
            sequence_number: s.sequence_number(),
            size_bytes: s.size_bytes(),
            stream_view_type: s.stream_view_type().map(|v| v.as_str()),
        }
    }
}

#[derive(Serialize)]
struct UserIdentity<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(rename = "principalId", skip_serializing_if = "Option::is_none")]
    principal_id: Option<&'a str>,
}

impl<'a> UserIdentity<'a> {
    fn new(identity: &'a Identity) -> Self {
        Self {
            kind: identity.r#type(),
            principal_id: identity.principal_id(),
        }
    }
}

/// An attribute map in DynamoDB JSON, names sorted.
struct Item<'a>(&'a HashMap<String, AttributeValue>);

impl Serialize for Item<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let sorted: BTreeMap<_, _> = self.0.iter().map(|(k, v)| (k, Attribute(v))).collect();
        sorted.serialize(serializer)
    }
}

/// One AttributeValue in DynamoDB JSON: `{"S":"x"}`, `{"N":"1"}`, `{"B":"<base64>"}`, ...
struct Attribute<'a>(&'a AttributeValue);

/// A list of binaries, each as base64.
struct Binaries<'a>(&'a [aws_sdk_dynamodbstreams::primitives::Blob]);

impl Serialize for Binaries<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for blob in self.0 {
            seq.serialize_element(&STANDARD.encode(blob.as_ref()))?;
        }
        seq.end()
    }
}

impl Serialize for Attribute<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        match self.0 {
            AttributeValue::S(s) => map.serialize_entry("S", s)?,
            AttributeValue::N(n) => map.serialize_entry("N", n)?,
            AttributeValue::B(b) => map.serialize_entry("B", &STANDARD.encode(b.as_ref()))?,
            AttributeValue::Ss(v) => map.serialize_entry("SS", v)?,
            AttributeValue::Ns(v) => map.serialize_entry("NS", v)?,
            AttributeValue::Bs(v) => map.serialize_entry("BS", &Binaries(v))?,
            AttributeValue::M(m) => map.serialize_entry("M", &Item(m))?,
            AttributeValue::L(l) => {
                let list: Vec<_> = l.iter().map(Attribute).collect();
                map.serialize_entry("L", &list)?
            }
            AttributeValue::Null(b) => map.serialize_entry("NULL", b)?,
            AttributeValue::Bool(b) => map.serialize_entry("BOOL", b)?,
            // A type newer than this SDK: the SDK kept nothing of it, so `{}` is all
            // there is to write.
            _ => {}
        }
        map.end()
    }
}

/// Serializes one record as the function receives it, ready for `records_event`.
pub fn dynamodb_record(record: &Record, stream_arn: &str) -> Vec<u8> {
    let event = EventRecord {
        event_id: record.event_id(),
        event_name: record.event_name().map(|n| n.as_str()),
        event_version: record.event_version(),
        event_source: record.event_source(),
        aws_region: record.aws_region(),
        dynamodb: record.dynamodb().map(Dynamodb::new),
        event_source_arn: stream_arn,
        user_identity: record.user_identity().map(UserIdentity::new),
    };
    let mut json = Vec::with_capacity(json_capacity(record));
    serde_json::to_writer(&mut json, &event).expect("a DynamoDB record always serializes");
    json
}

/// Room for a record's JSON up front, from the size the stream reports for it (keys and
/// images), so a large item is not copied by one reallocation after another.
fn json_capacity(record: &Record) -> usize {
    /// The envelope: event fields, ARNs, the attribute type wrappers of a small item.
    const ENVELOPE: usize = 1024;
    /// An item is at most 400 KB; a stream record holds at most two images of one.
    const LARGEST: usize = 1 << 20;
    let reported = record
        .dynamodb()
        .and_then(StreamRecord::size_bytes)
        .map_or(0, |bytes| usize::try_from(bytes).unwrap_or(0));
    (reported + reported / 4).min(LARGEST) + ENVELOPE
}

/// The item's key attributes as canonical DynamoDB JSON, names sorted, e.g.
/// `{"pk":{"S":"a"},"sk":{"N":"1"}}`: equal for every record of one item, so it
/// routes them all to the same lane. `{}` when the record carries no keys.
pub fn item_key(record: &Record) -> String {
    let empty = HashMap::new();
    let keys = record
        .dynamodb()
        .and_then(StreamRecord::keys)
        .unwrap_or(&empty);
    serde_json::to_string(&Item(keys)).expect("DynamoDB keys always serialize")
}

/// The creation time in epoch seconds as the stream sent it; 0.0 when absent.
pub fn creation_seconds(record: &Record) -> f64 {
    record
        .dynamodb()
        .and_then(StreamRecord::approximate_creation_date_time)
        .map_or(0.0, |t| t.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime};
    use aws_sdk_dynamodbstreams::types::{OperationType, StreamViewType};
    use serde_json::{Value as Json, json};

    const ARN: &str =
        "arn:aws:dynamodb:eu-west-1:123456789012:table/t/stream/2025-11-25T15:47:40.123";

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    fn parse(bytes: &[u8]) -> Json {
        serde_json::from_slice(bytes).unwrap()
    }

    fn assert_fields(got: &Json, want: &Json) {
        for (key, value) in want.as_object().unwrap() {
            assert_eq!(&got[key], value, "{key}");
        }
        assert_eq!(got, want);
    }

    fn insert() -> Record {
        let nested = AttributeValue::M(HashMap::from([
            ("n".to_string(), AttributeValue::N("-1.5e3".into())),
            (
                "l".to_string(),
                AttributeValue::L(vec![
                    s("x"),
                    AttributeValue::Bool(false),
                    AttributeValue::Null(true),
                    AttributeValue::M(HashMap::from([(
                        "deep".to_string(),
                        AttributeValue::Bool(true),
                    )])),
                    AttributeValue::L(vec![]),
                ]),
            ),
        ]));
        Record::builder()
            .event_id("ab0ed3713569f4655f353e5ef61a88c4")
            .event_name(OperationType::Insert)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("eu-west-1")
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(DateTime::from_secs(1732550000))
                    .keys("id", s("id_value"))
                    .keys("sk", AttributeValue::N("7".into()))
                    .new_image("id", s("id_value"))
                    .new_image("sk", AttributeValue::N("7".into()))
                    .new_image("bin", AttributeValue::B(Blob::new("foobar")))
                    .new_image("raw", AttributeValue::B(Blob::new([0xff, 0x00, 0xfe])))
                    .new_image("ss", AttributeValue::Ss(vec!["a".into(), "b".into()]))
                    .new_image("ns", AttributeValue::Ns(vec!["1".into(), "2.5".into()]))
                    .new_image(
                        "bs",
                        AttributeValue::Bs(vec![Blob::new("foo"), Blob::new("ba")]),
                    )
                    .new_image("nested", nested)
                    .sequence_number("100000000012345678901")
                    .size_bytes(146)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build(),
            )
            .build()
    }

    #[test]
    fn insert_with_new_and_old_images() {
        let value = parse(&dynamodb_record(&insert(), ARN));
        assert_fields(
            &value,
            &json!({
                "eventID": "ab0ed3713569f4655f353e5ef61a88c4",
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "eu-west-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1732550000.0,
                    "Keys": {"id": {"S": "id_value"}, "sk": {"N": "7"}},
                    "NewImage": {
                        "id": {"S": "id_value"},
                        "sk": {"N": "7"},
                        "bin": {"B": "Zm9vYmFy"},
                        "raw": {"B": "/wD+"},
                        "ss": {"SS": ["a", "b"]},
                        "ns": {"NS": ["1", "2.5"]},
                        "bs": {"BS": ["Zm9v", "YmE="]},
                        "nested": {"M": {
                            "n": {"N": "-1.5e3"},
                            "l": {"L": [
                                {"S": "x"},
                                {"BOOL": false},
                                {"NULL": true},
                                {"M": {"deep": {"BOOL": true}}},
                                {"L": []}
                            ]}
                        }}
                    },
                    "SequenceNumber": "100000000012345678901",
                    "SizeBytes": 146,
                    "StreamViewType": "NEW_AND_OLD_IMAGES"
                },
                "eventSourceARN": ARN
            }),
        );
        assert!(value["dynamodb"].get("OldImage").is_none());
        assert!(value.get("userIdentity").is_none());
    }

    #[test]
    fn creation_time_always_has_a_decimal_point() {
        let bytes = dynamodb_record(&insert(), ARN);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains(r#""ApproximateCreationDateTime":1732550000.0,"#),
            "{text}"
        );
        assert_eq!(creation_seconds(&insert()), 1732550000.0);
        let fractional = Record::builder()
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(DateTime::from_secs_f64(1732550000.123))
                    .build(),
            )
            .build();
        assert_eq!(creation_seconds(&fractional), 1732550000.123);
        assert_eq!(creation_seconds(&Record::builder().build()), 0.0);
    }

    #[test]
    fn modify_keeps_the_old_image_and_the_event_version_as_sent() {
        let rec = Record::builder()
            .event_id("e-2")
            .event_name(OperationType::Modify)
            .event_version("1.0")
            .event_source("aws:dynamodb")
            .aws_region("us-east-1")
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(DateTime::from_secs(1732550001))
                    .keys("id", s("id_value"))
                    .new_image("id", s("id_value"))
                    .new_image("id2", s("id2_new_value"))
                    .old_image("id", s("id_value"))
                    .sequence_number("200")
                    .size_bytes(46)
                    .stream_view_type(StreamViewType::NewAndOldImages)
                    .build(),
            )
            .build();
        let value = parse(&dynamodb_record(&rec, ARN));
        assert_eq!(value["eventName"], "MODIFY");
        assert_eq!(value["eventVersion"], "1.0");
        assert_eq!(
            value["dynamodb"]["OldImage"],
            json!({"id": {"S": "id_value"}})
        );
        assert_eq!(
            value["dynamodb"]["NewImage"],
            json!({"id": {"S": "id_value"}, "id2": {"S": "id2_new_value"}})
        );
    }

    #[test]
    fn ttl_remove_carries_user_identity() {
        let rec = Record::builder()
            .event_id("e-3")
            .event_name(OperationType::Remove)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("eu-west-1")
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(DateTime::from_secs(1732550002))
                    .keys("id", s("gone"))
                    .old_image("id", s("gone"))
                    .old_image("ttl", AttributeValue::N("1732549000".into()))
                    .sequence_number("300")
                    .size_bytes(30)
                    .stream_view_type(StreamViewType::OldImage)
                    .build(),
            )
            .user_identity(
                Identity::builder()
                    .r#type("Service")
                    .principal_id("dynamodb.amazonaws.com")
                    .build(),
            )
            .build();
        assert_fields(
            &parse(&dynamodb_record(&rec, ARN)),
            &json!({
                "eventID": "e-3",
                "eventName": "REMOVE",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "eu-west-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1732550002.0,
                    "Keys": {"id": {"S": "gone"}},
                    "OldImage": {"id": {"S": "gone"}, "ttl": {"N": "1732549000"}},
                    "SequenceNumber": "300",
                    "SizeBytes": 30,
                    "StreamViewType": "OLD_IMAGE"
                },
                "eventSourceARN": ARN,
                "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
            }),
        );
    }

    #[test]
    fn keys_only_has_no_images() {
        let rec = Record::builder()
            .event_id("e-4")
            .event_name(OperationType::Insert)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("eu-west-1")
            .dynamodb(
                StreamRecord::builder()
                    .approximate_creation_date_time(DateTime::from_secs(1732550003))
                    .keys("pk", s("p"))
                    .keys("sk", AttributeValue::B(Blob::new("k")))
                    .sequence_number("400")
                    .size_bytes(12)
                    .stream_view_type(StreamViewType::KeysOnly)
                    .build(),
            )
            .build();
        assert_fields(
            &parse(&dynamodb_record(&rec, ARN)),
            &json!({
                "eventID": "e-4",
                "eventName": "INSERT",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "eu-west-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1732550003.0,
                    "Keys": {"pk": {"S": "p"}, "sk": {"B": "aw=="}},
                    "SequenceNumber": "400",
                    "SizeBytes": 12,
                    "StreamViewType": "KEYS_ONLY"
                },
                "eventSourceARN": ARN
            }),
        );
        assert_eq!(item_key(&rec), r#"{"pk":{"S":"p"},"sk":{"B":"aw=="}}"#);
    }

    #[test]
    fn item_key_is_canonical_and_sorted() {
        assert_eq!(
            item_key(&insert()),
            r#"{"id":{"S":"id_value"},"sk":{"N":"7"}}"#
        );
        let reversed = Record::builder()
            .dynamodb(
                StreamRecord::builder()
                    .keys("sk", AttributeValue::N("7".into()))
                    .keys("id", s("id_value"))
                    .build(),
            )
            .build();
        assert_eq!(item_key(&reversed), item_key(&insert()));
        let other_type = Record::builder()
            .dynamodb(
                StreamRecord::builder()
                    .keys("id", s("id_value"))
                    .keys("sk", s("7"))
                    .build(),
            )
            .build();
        assert_ne!(item_key(&other_type), item_key(&insert()));
        assert_eq!(item_key(&Record::builder().build()), "{}");
    }

    #[test]
    fn serialization_is_deterministic() {
        let first = dynamodb_record(&insert(), ARN);
        for _ in 0..8 {
            assert_eq!(dynamodb_record(&insert(), ARN), first);
        }
    }
}

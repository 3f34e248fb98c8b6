//! The Kinesis record as Lambda delivers it (wire-formats §2.3, semantics §11.2).

use aws_sdk_kinesis::types::Record;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Serialize, Serializer};

/// Where a record came from and who reads it: the fields Lambda adds to each record.
#[derive(Debug, Clone)]
pub struct KinesisContext {
    pub shard_id: String,
    pub stream_arn: String,
    pub region: String,
    /// The function's execution role ARN.
    pub invoke_identity_arn: String,
}

/// `shardId:sequenceNumber`, written straight into the record's JSON.
struct EventId<'a> {
    shard_id: &'a str,
    sequence_number: &'a str,
}

impl Serialize for EventId<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}:{}", self.shard_id, self.sequence_number))
    }
}

/// The JSON of a record around its variable fields: keys, constants and punctuation.
const FIXED_BYTES: usize = 320;

/// Serializes one record as the function receives it, in the field order AWS sends, ready
/// for `records_event`: one allocation, sized for the record up front.
///
/// The fields are written in order here rather than by a serde struct so that the data,
/// the bulk of a record, is base64-encoded straight into the buffer: base64 needs no JSON
/// escapes, and serde's escape scan of it was the largest cost per record. Every other
/// value still goes through serde_json, escapes and number formats included.
pub fn kinesis_record(record: &Record, ctx: &KinesisContext) -> Vec<u8> {
    let sequence_number = record.sequence_number();
    let mut json = Vec::with_capacity(json_capacity(record, ctx));
    json.extend_from_slice(br#"{"kinesis":{"kinesisSchemaVersion":"1.0","#);
    // absent only on streams with the AUTO record distribution when the producer gave none
    if let Some(key) = record.partition_key() {
        json.extend_from_slice(br#""partitionKey":"#);
        write_json(&mut json, key);
        json.push(b',');
    }
    json.extend_from_slice(br#""sequenceNumber":"#);
    write_json(&mut json, sequence_number);
    json.extend_from_slice(br#","data":""#);
    write_base64(&mut json, record.data().as_ref());
    json.extend_from_slice(br#"","approximateArrivalTimestamp":"#);
    write_json(&mut json, &arrival_seconds(record));
    json.extend_from_slice(br#"},"eventSource":"aws:kinesis","eventVersion":"1.0","eventID":"#);
    let event_id = EventId {
        shard_id: &ctx.shard_id,
        sequence_number,
    };
    write_json(&mut json, &event_id);
    json.extend_from_slice(br#","eventName":"aws:kinesis:record","invokeIdentityArn":"#);
    write_json(&mut json, &ctx.invoke_identity_arn);
    json.extend_from_slice(br#","awsRegion":"#);
    write_json(&mut json, &ctx.region);
    json.extend_from_slice(br#","eventSourceARN":"#);
    write_json(&mut json, &ctx.stream_arn);
    json.push(b'}');
    json
}

fn write_json(json: &mut Vec<u8>, value: &(impl Serialize + ?Sized)) {
    serde_json::to_writer(json, value).expect("strings and numbers always serialize");
}

/// The data as standard base64 with padding (the same text the service sent).
fn write_base64(json: &mut Vec<u8>, data: &[u8]) {
    let start = json.len();
    let encoded = base64::encoded_len(data.len(), true).expect("a record's data fits memory");
    json.resize(start + encoded, 0);
    STANDARD
        .encode_slice(data, &mut json[start..])
        .expect("room for exactly the encoded data");
}

/// The bytes a record's JSON takes, at most, unless a key or an ARN needs escapes.
fn json_capacity(record: &Record, ctx: &KinesisContext) -> usize {
    FIXED_BYTES
        + record.data().as_ref().len().div_ceil(3) * 4
        + 2 * record.sequence_number().len()
        + record.partition_key().map_or(0, str::len)
        + ctx.shard_id.len()
        + ctx.invoke_identity_arn.len()
        + ctx.region.len()
        + ctx.stream_arn.len()
}

/// The arrival time in epoch seconds, rounded to the millisecond Kinesis records it in;
/// 0.0 when the record has none.
///
/// Rounding undoes the float noise of the SDK's parse (`.123` arrives as `.122999906`),
/// so the JSON shows the millisecond fraction AWS shows, e.g. `1732550000.123`.
pub fn arrival_seconds(record: &Record) -> f64 {
    record.approximate_arrival_timestamp().map_or(0.0, |t| {
        let millis = (t.as_nanos() + 500_000).div_euclid(1_000_000);
        millis as f64 / 1000.0
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_sdk_kinesis::primitives::{Blob, DateTime};
    use base64::Engine;
    use serde_json::{Value, json};

    /// The record as serde derives write it.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct SerdeKinesisRecord<'a> {
        kinesis: SerdeKinesisPayload<'a>,
        event_source: &'static str,
        event_version: &'static str,
        #[serde(rename = "eventID")]
        event_id: String,
        event_name: &'static str,
        invoke_identity_arn: &'a str,
        aws_region: &'a str,
        #[serde(rename = "eventSourceARN")]
        event_source_arn: &'a str,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct SerdeKinesisPayload<'a> {
        kinesis_schema_version: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        partition_key: Option<&'a str>,
        sequence_number: &'a str,
        data: String,
        approximate_arrival_timestamp: f64,
    }

    /// A record serialized by serde derives alone, as one would write it: the reference
    /// the hand-written [`kinesis_record`] must match byte for byte (and the engine
    /// bench's serialization-only figure).
    pub(crate) fn serde_derived(record: &Record, context: &KinesisContext) -> Vec<u8> {
        let sequence_number = record.sequence_number();
        let event = SerdeKinesisRecord {
            kinesis: SerdeKinesisPayload {
                kinesis_schema_version: "1.0",
                partition_key: record.partition_key(),
                sequence_number,
                data: STANDARD.encode(record.data()),
                approximate_arrival_timestamp: arrival_seconds(record),
            },
            event_source: "aws:kinesis",
            event_version: "1.0",
            event_id: format!("{}:{sequence_number}", context.shard_id),
            event_name: "aws:kinesis:record",
            invoke_identity_arn: &context.invoke_identity_arn,
            aws_region: &context.region,
            event_source_arn: &context.stream_arn,
        };
        serde_json::to_vec(&event).unwrap()
    }

    #[test]
    fn the_hand_written_record_is_byte_for_byte_what_serde_derives_write() {
        let records = [
            record(
                br#"{"record_id": 0}"#,
                Some(DateTime::from_secs_f64(1732550000.123)),
            ),
            record(b"", None),
            record(&[0xff; 1025], Some(DateTime::from_secs(1732550000))),
            Record::builder()
                .sequence_number("1")
                .data(Blob::new("no key"))
                .build()
                .unwrap(),
            Record::builder()
                .sequence_number(SEQ)
                .partition_key("a\"b\\c\n\u{1}é😀</")
                .data(Blob::new("x"))
                .build()
                .unwrap(),
        ];
        for rec in &records {
            assert_eq!(
                String::from_utf8(kinesis_record(rec, &ctx())).unwrap(),
                String::from_utf8(serde_derived(rec, &ctx())).unwrap()
            );
        }
    }

    const SEQ: &str = "49656941386383285739218634927624379545389513131937497090";

    fn ctx() -> KinesisContext {
        KinesisContext {
            shard_id: "shardId-000000000000".into(),
            stream_arn: "arn:aws:kinesis:eu-west-1:123456789012:stream/s".into(),
            region: "eu-west-1".into(),
            invoke_identity_arn: "arn:aws:iam::123456789012:role/fn-role".into(),
        }
    }

    fn record(data: &[u8], arrival: Option<DateTime>) -> Record {
        Record::builder()
            .sequence_number(SEQ)
            .partition_key("test_0")
            .data(Blob::new(data))
            .set_approximate_arrival_timestamp(arrival)
            .build()
            .unwrap()
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn record_matches_the_aws_shape_field_by_field() {
        let rec = record(
            br#"{"record_id": 0}"#,
            Some(DateTime::from_secs_f64(1732550000.123)),
        );
        let bytes = kinesis_record(&rec, &ctx());
        let value = parse(&bytes);
        let expected = json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "test_0",
                "sequenceNumber": SEQ,
                "data": "eyJyZWNvcmRfaWQiOiAwfQ==",
                "approximateArrivalTimestamp": 1732550000.123
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": format!("shardId-000000000000:{SEQ}"),
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/fn-role",
            "awsRegion": "eu-west-1",
            "eventSourceARN": "arn:aws:kinesis:eu-west-1:123456789012:stream/s"
        });
        for (key, want) in expected.as_object().unwrap() {
            assert_eq!(&value[key], want, "{key}");
        }
        assert_eq!(value, expected);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains(r#""approximateArrivalTimestamp":1732550000.123}"#),
            "{text}"
        );
        let keys: Vec<_> = ["kinesis", "eventSource", "eventVersion", "eventID"]
            .iter()
            .chain(&[
                "eventName",
                "invokeIdentityArn",
                "awsRegion",
                "eventSourceARN",
            ])
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(keys.is_sorted(), "keys out of AWS order: {text}");
    }

    #[test]
    fn non_utf8_data_is_base64_of_the_raw_bytes() {
        let raw = [0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28, 0x0a];
        let value = parse(&kinesis_record(&record(&raw, None), &ctx()));
        assert_eq!(value["kinesis"]["data"], "//4AgMMoCg==");
        let decoded = STANDARD
            .decode(value["kinesis"]["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, raw);
        assert_eq!(
            parse(&kinesis_record(&record(b"", None), &ctx()))["kinesis"]["data"],
            ""
        );
    }

    #[test]
    fn arrival_time_is_epoch_seconds_with_a_decimal_point() {
        let whole = record(b"x", Some(DateTime::from_secs(1732550000)));
        assert_eq!(arrival_seconds(&whole), 1732550000.0);
        let text = String::from_utf8(kinesis_record(&whole, &ctx())).unwrap();
        assert!(
            text.contains(r#""approximateArrivalTimestamp":1732550000.0}"#),
            "{text}"
        );

        let noisy = record(
            b"x",
            Some(DateTime::from_secs_and_nanos(1545084650, 986_999_906)),
        );
        assert_eq!(arrival_seconds(&noisy), 1545084650.987);
        let text = String::from_utf8(kinesis_record(&noisy, &ctx())).unwrap();
        assert!(text.contains("1545084650.987}"), "{text}");

        let absent = record(b"x", None);
        assert_eq!(arrival_seconds(&absent), 0.0);
        assert_eq!(
            parse(&kinesis_record(&absent, &ctx()))["kinesis"]["approximateArrivalTimestamp"],
            json!(0.0)
        );
    }

    #[test]
    fn the_json_fits_the_room_reserved_for_it() {
        for size in [0, 1, 2, 3, 4, 1024, 1025, 100_000] {
            let rec = Record::builder()
                .sequence_number(format!("49{:054}", size))
                .partition_key("k".repeat(256))
                .data(Blob::new(vec![0xff; size]))
                .approximate_arrival_timestamp(DateTime::from_secs_and_nanos(
                    9_999_999_999,
                    999_999_999,
                ))
                .build()
                .unwrap();
            let json = kinesis_record(&rec, &ctx());
            assert!(json.len() <= json_capacity(&rec, &ctx()), "{size}");
        }
    }

    #[test]
    fn keys_and_names_are_escaped_as_json() {
        let key = "a\"b\\c\n\u{1}é😀";
        let rec = Record::builder()
            .sequence_number(SEQ)
            .partition_key(key)
            .data(Blob::new("x"))
            .build()
            .unwrap();
        let ctx = KinesisContext {
            region: "eu-\"west".into(),
            ..ctx()
        };
        let value = parse(&kinesis_record(&rec, &ctx));
        assert_eq!(value["kinesis"]["partitionKey"], key);
        assert_eq!(value["awsRegion"], "eu-\"west");
    }

    #[test]
    fn missing_partition_key_is_left_out() {
        let rec = Record::builder()
            .sequence_number("1")
            .data(Blob::new("a"))
            .build()
            .unwrap();
        let value = parse(&kinesis_record(&rec, &ctx()));
        assert!(value["kinesis"].get("partitionKey").is_none());
        assert_eq!(value["eventID"], "shardId-000000000000:1");
    }
}

//! The Kinesis record as Lambda delivers it (wire-formats §2.3, semantics §11.2).

use aws_sdk_kinesis::types::Record;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

/// Where a record came from and who reads it: the fields Lambda adds to each record.
#[derive(Debug, Clone)]
pub struct KinesisContext {
    pub shard_id: String,
    pub stream_arn: String,
    pub region: String,
    /// The function's execution role ARN.
    pub invoke_identity_arn: String,
}

/// One event record, in the field order AWS sends.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventRecord<'a> {
    kinesis: KinesisPayload<'a>,
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
struct KinesisPayload<'a> {
    kinesis_schema_version: &'static str,
    /// Absent only on streams with the AUTO record distribution when the producer gave none.
    #[serde(skip_serializing_if = "Option::is_none")]
    partition_key: Option<&'a str>,
    sequence_number: &'a str,
    /// Standard base64 with padding: the same text the service sent.
    data: String,
    approximate_arrival_timestamp: f64,
}

/// Serializes one record as the function receives it, ready for `records_event`.
pub fn kinesis_record(record: &Record, ctx: &KinesisContext) -> Vec<u8> {
    let sequence_number = record.sequence_number();
    let event = EventRecord {
        kinesis: KinesisPayload {
            kinesis_schema_version: "1.0",
            partition_key: record.partition_key(),
            sequence_number,
            data: STANDARD.encode(record.data().as_ref()),
            approximate_arrival_timestamp: arrival_seconds(record),
        },
        event_source: "aws:kinesis",
        event_version: "1.0",
        event_id: format!("{}:{sequence_number}", ctx.shard_id),
        event_name: "aws:kinesis:record",
        invoke_identity_arn: &ctx.invoke_identity_arn,
        aws_region: &ctx.region,
        event_source_arn: &ctx.stream_arn,
    };
    serde_json::to_vec(&event).expect("a Kinesis record always serializes")
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
mod tests {
    use super::*;
    use aws_sdk_kinesis::primitives::{Blob, DateTime};
    use serde_json::{Value, json};

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

//! The on-failure destination record of stream mappings (wire-formats §2.5).

use serde_json::{Map, Value, json};

/// Why records were discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    RetryAttemptsExhausted,
    RecordAgeExceeded,
    /// esmd's choice for a single record too large for one invocation (AWS uses it for Kafka).
    MaximumPayloadSizeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Condition::RecordAgeExceeded => "RecordAgeExceeded",
            Condition::MaximumPayloadSizeExceeded => "MaximumPayloadSizeExceeded",
        }
    }
}

/// Which stream the records came from: names the batch info object and its time format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Kinesis,
    DynamoDb,
}

impl StreamKind {
    pub const ALL: [StreamKind; 2] = [StreamKind::Kinesis, StreamKind::DynamoDb];

    /// The key of the batch info object in a failure record.
    pub fn batch_info_key(self) -> &'static str {
        match self {
            StreamKind::Kinesis => "KinesisBatchInfo",
            StreamKind::DynamoDb => "DDBStreamBatchInfo",
        }
    }
}

/// The last invocation's answer, for `RetryAttemptsExhausted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseContext {
    pub executed_version: String,
    /// `Some("Unhandled")` for a function error; `None` when the failure came from
    /// `batchItemFailures` or an invalid response.
    pub function_error: Option<String>,
}

/// The discarded records.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchInfo {
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    /// Epoch seconds.
    pub first_arrival: f64,
    pub last_arrival: f64,
    pub batch_size: usize,
    pub stream_arn: String,
}

/// Everything a failure record says.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub request_id: String,
    pub function_arn: String,
    pub condition: Condition,
    pub approximate_invoke_count: u32,
    pub response: Option<ResponseContext>,
    /// Bytes of the record that could not fit (`MaximumPayloadSizeExceeded` only).
    pub payload_size: Option<usize>,
    pub batch: BatchInfo,
}

/// The failure record as AWS sends it to an SQS or SNS destination; `now` is epoch seconds.
pub fn failure_record(failure: &Failure, kind: StreamKind, now: f64) -> Value {
    let mut request = json!({
        "requestId": failure.request_id,
        "functionArn": failure.function_arn,
        "condition": failure.condition.as_str(),
        "approximateInvokeCount": failure.approximate_invoke_count,
    });
    if let Some(size) = failure.payload_size {
        request["payloadSize"] = json!(size);
    }
    let mut record = Map::new();
    record.insert("requestContext".into(), request);
    match (failure.condition, &failure.response) {
        (Condition::RecordAgeExceeded, _) => {}
        (_, Some(response)) => {
            record.insert(
                "responseContext".into(),
                json!({
                    "statusCode": 200,
                    "executedVersion": response.executed_version,
                    "functionError": response.function_error,
                }),
            );
        }
        (_, None) => {
            record.insert("responseContext".into(), Value::Null);
        }
    }
    record.insert("version".into(), json!("1.0"));
    record.insert("timestamp".into(), json!(iso8601(now, true)));
    let millis = kind == StreamKind::Kinesis;
    let b = &failure.batch;
    let info = json!({
        "shardId": b.shard_id,
        "startSequenceNumber": b.start_sequence_number,
        "endSequenceNumber": b.end_sequence_number,
        "approximateArrivalOfFirstRecord": iso8601(b.first_arrival, millis),
        "approximateArrivalOfLastRecord": iso8601(b.last_arrival, millis),
        "batchSize": b.batch_size,
        "streamArn": b.stream_arn,
    });
    record.insert(kind.batch_info_key().into(), info);
    Value::Object(record)
}

/// A UTC calendar time from epoch seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

impl Utc {
    pub fn from_seconds(seconds: f64) -> Utc {
        let total_millis = (seconds * 1000.0).round() as i64;
        let days = total_millis.div_euclid(86_400_000);
        let of_day = total_millis.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        Utc {
            year,
            month,
            day,
            hour: (of_day / 3_600_000) as u32,
            minute: (of_day / 60_000 % 60) as u32,
            second: (of_day / 1000 % 60) as u32,
            millis: (of_day % 1000) as u32,
        }
    }
}

/// ISO-8601 UTC: `2025-11-25T16:35:01.456Z` with milliseconds, `2025-11-25T16:35:01Z` without.
pub fn iso8601(seconds: f64, millis: bool) -> String {
    let t = Utc::from_seconds(seconds);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    );
    if millis {
        format!("{base}.{:03}Z", t.millis)
    } else {
        format!("{base}Z")
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(condition: Condition, response: Option<ResponseContext>) -> Failure {
        Failure {
            request_id: "c9a1f2d4-0000-0000-0000-000000000000".into(),
            function_arn: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
            condition,
            approximate_invoke_count: 2,
            response,
            payload_size: None,
            batch: BatchInfo {
                shard_id: "shardId-000000000000".into(),
                start_sequence_number: "1".into(),
                end_sequence_number: "3".into(),
                first_arrival: 1_764_088_501.456,
                last_arrival: 1_764_088_502.0,
                batch_size: 3,
                stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/s".into(),
            },
        }
    }

    #[test]
    fn iso_times() {
        assert_eq!(iso8601(0.0, true), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_764_088_530.123, true), "2025-11-25T16:35:30.123Z");
        assert_eq!(iso8601(1_764_088_530.999, false), "2025-11-25T16:35:30Z");
        assert_eq!(iso8601(951_782_400.0, false), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(4_107_542_399.0, false), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn retry_exhaustion_after_a_function_error() {
        let record = failure_record(
            &failure(
                Condition::RetryAttemptsExhausted,
                Some(ResponseContext {
                    executed_version: "$LATEST".into(),
                    function_error: Some("Unhandled".into()),
                }),
            ),
            StreamKind::Kinesis,
            1_764_088_530.123,
        );
        assert_eq!(
            record,
            json!({
                "requestContext": {
                    "requestId": "c9a1f2d4-0000-0000-0000-000000000000",
                    "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:f",
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": 2
                },
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "version": "1.0",
                "timestamp": "2025-11-25T16:35:30.123Z",
                "KinesisBatchInfo": {
                    "shardId": "shardId-000000000000",
                    "startSequenceNumber": "1",
                    "endSequenceNumber": "3",
                    "approximateArrivalOfFirstRecord": "2025-11-25T16:35:01.456Z",
                    "approximateArrivalOfLastRecord": "2025-11-25T16:35:02.000Z",
                    "batchSize": 3,
                    "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/s"
                }
            })
        );
    }

    #[test]
    fn partial_failure_has_a_null_function_error_and_dynamodb_whole_seconds() {
        let record = failure_record(
            &failure(
                Condition::RetryAttemptsExhausted,
                Some(ResponseContext {
                    executed_version: "$LATEST".into(),
                    function_error: None,
                }),
            ),
            StreamKind::DynamoDb,
            0.0,
        );
        assert_eq!(record["responseContext"]["functionError"], Value::Null);
        assert!(record.get("KinesisBatchInfo").is_none());
        assert_eq!(
            record["DDBStreamBatchInfo"]["approximateArrivalOfFirstRecord"],
            "2025-11-25T16:35:01Z"
        );
    }

    #[test]
    fn record_age_has_no_response_context_and_oversize_a_null_one() {
        let aged = failure_record(
            &failure(Condition::RecordAgeExceeded, None),
            StreamKind::Kinesis,
            0.0,
        );
        assert!(aged.get("responseContext").is_none());
        assert_eq!(aged["requestContext"]["condition"], "RecordAgeExceeded");
        let mut big = failure(Condition::MaximumPayloadSizeExceeded, None);
        big.payload_size = Some(7_000_000);
        let big = failure_record(&big, StreamKind::Kinesis, 0.0);
        assert_eq!(big["responseContext"], Value::Null);
        assert_eq!(big["requestContext"]["payloadSize"], 7_000_000);
    }
}

//! The SQS record as Lambda delivers it (wire-formats §2.1, §2.2).

use std::collections::BTreeMap;

use serde::Serialize;

/// One received SQS message, in the event's field order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SqsRecord {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    pub message_attributes: BTreeMap<String, MessageAttribute>,
    /// `null` when the message has no attributes, as AWS sends it.
    pub md5_of_message_attributes: Option<String>,
    pub md5_of_body: String,
    pub event_source: &'static str,
    #[serde(rename = "eventSourceARN")]
    pub event_source_arn: String,
    pub aws_region: String,
}

/// A message attribute; the empty list arrays are always present, as AWS sends them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageAttribute {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    /// Base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary_value: Option<String>,
    pub string_list_values: Vec<String>,
    pub binary_list_values: Vec<String>,
    pub data_type: String,
}

pub const EVENT_SOURCE: &str = "aws:sqs";

impl SqsRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an SQS record always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(attrs: BTreeMap<String, MessageAttribute>, md5: Option<&str>) -> SqsRecord {
        SqsRecord {
            message_id: "m-1".into(),
            receipt_handle: "rh".into(),
            body: "{\"k\": 1}".into(),
            attributes: BTreeMap::from([("ApproximateReceiveCount".into(), "1".into())]),
            message_attributes: attrs,
            md5_of_message_attributes: md5.map(str::to_string),
            md5_of_body: "0123456789abcdef0123456789abcdef".into(),
            event_source: EVENT_SOURCE,
            event_source_arn: "arn:aws:sqs:us-east-1:1:q".into(),
            aws_region: "us-east-1".into(),
        }
    }

    #[test]
    fn without_attributes_md5_is_null_and_attributes_empty() {
        let value: serde_json::Value =
            serde_json::from_slice(&record(BTreeMap::new(), None).to_json()).unwrap();
        assert_eq!(
            value,
            json!({
                "messageId": "m-1",
                "receiptHandle": "rh",
                "body": "{\"k\": 1}",
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfMessageAttributes": null,
                "md5OfBody": "0123456789abcdef0123456789abcdef",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:1:q",
                "awsRegion": "us-east-1"
            })
        );
    }

    #[test]
    fn attributes_carry_the_empty_list_arrays() {
        let attrs = BTreeMap::from([(
            "WeeksOn".to_string(),
            MessageAttribute {
                string_value: Some("6".into()),
                binary_value: None,
                string_list_values: vec![],
                binary_list_values: vec![],
                data_type: "Number".into(),
            },
        )]);
        let value: serde_json::Value = serde_json::from_slice(
            &record(attrs, Some("d25a6aea97eb8f585bfa92d314504a92")).to_json(),
        )
        .unwrap();
        assert_eq!(
            value["messageAttributes"],
            json!({"WeeksOn": {"stringValue": "6", "stringListValues": [], "binaryListValues": [], "dataType": "Number"}})
        );
        assert_eq!(
            value["md5OfMessageAttributes"],
            "d25a6aea97eb8f585bfa92d314504a92"
        );
    }
}

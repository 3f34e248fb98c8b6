//! Event source ARNs: which service a mapping polls, and the names inside the ARN.

use std::fmt;

/// What an `event_source_arn` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// `arn:aws:sqs:REGION:ACCOUNT:NAME`
    Sqs { queue_name: String, fifo: bool },
    /// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`
    Kinesis { stream_name: String },
    /// `arn:aws:dynamodb:REGION:ACCOUNT:table/NAME[/stream/LABEL]`
    DynamoDb {
        table_name: String,
        stream_label: Option<String>,
    },
}

impl SourceKind {
    /// The label used in logs and metrics: `sqs`, `kinesis` or `dynamodb`.
    pub fn label(&self) -> &'static str {
        match self {
            SourceKind::Sqs { .. } => "sqs",
            SourceKind::Kinesis { .. } => "kinesis",
            SourceKind::DynamoDb { .. } => "dynamodb",
        }
    }
}

/// A parsed event source ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceArn {
    pub arn: String,
    pub partition: String,
    pub region: String,
    pub account: String,
    pub kind: SourceKind,
}

impl fmt::Display for SourceArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

impl SourceArn {
    pub fn parse(arn: &str) -> Result<SourceArn, String> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [scheme, partition, service, region, account, resource] = parts[..] else {
            return Err(format!(
                "{arn:?} is not an ARN (arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE)"
            ));
        };
        if scheme != "arn" || partition.is_empty() {
            return Err(format!("{arn:?} is not an ARN"));
        }
        if region.is_empty() {
            return Err(format!("{arn:?} names no region"));
        }
        if account.is_empty() {
            return Err(format!("{arn:?} names no account"));
        }
        let kind = match service {
            "sqs" => {
                if resource.is_empty() || resource.contains('/') {
                    return Err(format!("{arn:?} names no queue"));
                }
                SourceKind::Sqs {
                    queue_name: resource.to_string(),
                    fifo: resource.ends_with(".fifo"),
                }
            }
            "kinesis" => match resource.strip_prefix("stream/") {
                Some(name) if !name.is_empty() && !name.contains('/') => SourceKind::Kinesis {
                    stream_name: name.to_string(),
                },
                _ if resource.contains("/consumer/") => {
                    return Err(format!(
                        "{arn:?} is a Kinesis consumer ARN: enhanced fan-out is not supported, use the stream ARN"
                    ));
                }
                _ => return Err(format!("{arn:?} names no Kinesis stream (stream/NAME)")),
            },
            "dynamodb" => {
                let Some(rest) = resource.strip_prefix("table/") else {
                    return Err(format!("{arn:?} names no DynamoDB table (table/NAME)"));
                };
                let (table, label) = match rest.split_once("/stream/") {
                    Some((table, label)) => (table, Some(label)),
                    None => (rest, None),
                };
                if table.is_empty() || table.contains('/') || label == Some("") {
                    return Err(format!(
                        "{arn:?} is not a DynamoDB table or stream ARN (table/NAME[/stream/LABEL])"
                    ));
                }
                SourceKind::DynamoDb {
                    table_name: table.to_string(),
                    stream_label: label.map(str::to_string),
                }
            }
            other => {
                return Err(format!(
                    "{arn:?}: service {other:?} is not an event source (sqs, kinesis or dynamodb)"
                ));
            }
        };
        Ok(SourceArn {
            arn: arn.to_string(),
            partition: partition.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_sources() {
        let q = SourceArn::parse("arn:aws:sqs:eu-west-1:123456789012:jobs.fifo").unwrap();
        assert_eq!(q.region, "eu-west-1");
        assert_eq!(
            q.kind,
            SourceKind::Sqs {
                queue_name: "jobs.fifo".into(),
                fifo: true
            }
        );
        let k = SourceArn::parse("arn:aws:kinesis:us-east-1:1:stream/clicks").unwrap();
        assert_eq!(
            k.kind,
            SourceKind::Kinesis {
                stream_name: "clicks".into()
            }
        );
        let d = SourceArn::parse(
            "arn:aws:dynamodb:us-east-1:1:table/orders/stream/2025-11-25T15:47:40.123",
        )
        .unwrap();
        assert_eq!(
            d.kind,
            SourceKind::DynamoDb {
                table_name: "orders".into(),
                stream_label: Some("2025-11-25T15:47:40.123".into())
            }
        );
        let t = SourceArn::parse("arn:aws:dynamodb:us-east-1:1:table/orders").unwrap();
        assert_eq!(
            t.kind,
            SourceKind::DynamoDb {
                table_name: "orders".into(),
                stream_label: None
            }
        );
    }

    #[test]
    fn rejects_what_is_not_a_source() {
        for bad in [
            "orders",
            "arn:aws:sqs::1:q",
            "arn:aws:sqs:us-east-1::q",
            "arn:aws:sns:us-east-1:1:topic",
            "arn:aws:kinesis:us-east-1:1:clicks",
            "arn:aws:kinesis:us-east-1:1:stream/s/consumer/c:1",
            "arn:aws:dynamodb:us-east-1:1:orders",
        ] {
            assert!(SourceArn::parse(bad).is_err(), "{bad}");
        }
    }
}

//! ARNs in the config: which service a mapping polls and the names inside its ARN, and
//! where a stream mapping sends the records it discards.

use std::fmt;
use std::path::PathBuf;

use super::StreamSource;

/// What an `event_source_arn` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceResource {
    /// `arn:aws:sqs:REGION:ACCOUNT:NAME`
    Sqs { queue_name: String, fifo: bool },
    /// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME` or
    /// `arn:aws:dynamodb:REGION:ACCOUNT:table/NAME[/stream/LABEL]`
    Stream(StreamSource),
}

/// A parsed event source ARN: the parts every source kind has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceArn {
    pub arn: String,
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl fmt::Display for SourceArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

impl SourceArn {
    pub fn parse(arn: &str) -> Result<(SourceArn, SourceResource), String> {
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
                SourceResource::Sqs {
                    queue_name: resource.to_string(),
                    fifo: resource.ends_with(".fifo"),
                }
            }
            "kinesis" => match resource.strip_prefix("stream/") {
                Some(name) if !name.is_empty() && !name.contains('/') => {
                    SourceResource::Stream(StreamSource::Kinesis {
                        stream_name: name.to_string(),
                    })
                }
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
                SourceResource::Stream(StreamSource::DynamoDb {
                    table_name: table.to_string(),
                    stream_label: label.map(str::to_string),
                })
            }
            other => {
                return Err(format!(
                    "{arn:?}: service {other:?} is not an event source (sqs, kinesis or dynamodb)"
                ));
            }
        };
        let source = SourceArn {
            arn: arn.to_string(),
            partition: partition.to_string(),
            region: region.to_string(),
            account: account.to_string(),
        };
        Ok((source, kind))
    }
}

/// Where a stream mapping sends the records it discards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationConfig {
    /// `arn:aws:sqs:REGION:ACCOUNT:NAME`, a standard queue.
    Sqs {
        region: String,
        account: String,
        queue_name: String,
    },
    /// `arn:aws:sns:REGION:ACCOUNT:NAME`, a standard topic.
    Sns { region: String, topic_arn: String },
    /// `arn:aws:s3:::BUCKET`
    S3 { bucket: String },
    /// `file:///path.jsonl`: one failure record per line.
    File(PathBuf),
}

impl DestinationConfig {
    pub fn parse(dest: &str) -> Result<DestinationConfig, String> {
        if let Some(file) = dest.strip_prefix("file://") {
            if !file.starts_with('/') {
                return Err(format!(
                    "{dest:?}: a file destination needs an absolute path (file:///...)"
                ));
            }
            return Ok(DestinationConfig::File(PathBuf::from(file)));
        }
        let parts: Vec<&str> = dest.splitn(6, ':').collect();
        match parts[..] {
            ["arn", _, "sqs" | "sns", _, _, name] if name.ends_with(".fifo") => Err(format!(
                "{dest:?}: fifo queues and topics are not supported as destinations"
            )),
            ["arn", _, "sqs", region, account, name]
                if !region.is_empty() && !account.is_empty() && !name.is_empty() =>
            {
                Ok(DestinationConfig::Sqs {
                    region: region.to_string(),
                    account: account.to_string(),
                    queue_name: name.to_string(),
                })
            }
            ["arn", _, "sns", region, account, name]
                if !region.is_empty() && !account.is_empty() && !name.is_empty() =>
            {
                Ok(DestinationConfig::Sns {
                    region: region.to_string(),
                    topic_arn: dest.to_string(),
                })
            }
            ["arn", _, "s3", "", "", bucket] if !bucket.is_empty() && !bucket.contains('/') => {
                Ok(DestinationConfig::S3 {
                    bucket: bucket.to_string(),
                })
            }
            _ => Err(format!(
                "{dest:?} is not an SQS queue, SNS topic or S3 bucket ARN, nor file:///path"
            )),
        }
    }

    /// The environment variable that overrides this destination's endpoint; `None` for a
    /// file.
    pub fn endpoint_var(&self) -> Option<&'static str> {
        match self {
            DestinationConfig::Sqs { .. } => Some("AWS_ENDPOINT_URL_SQS"),
            DestinationConfig::Sns { .. } => Some("AWS_ENDPOINT_URL_SNS"),
            DestinationConfig::S3 { .. } => Some("AWS_ENDPOINT_URL_S3"),
            DestinationConfig::File(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_sources() {
        let (q, queue) = SourceArn::parse("arn:aws:sqs:eu-west-1:123456789012:jobs.fifo").unwrap();
        assert_eq!(q.region, "eu-west-1");
        assert_eq!(
            queue,
            SourceResource::Sqs {
                queue_name: "jobs.fifo".into(),
                fifo: true
            }
        );
        let (_, k) = SourceArn::parse("arn:aws:kinesis:us-east-1:1:stream/clicks").unwrap();
        assert_eq!(
            k,
            SourceResource::Stream(StreamSource::Kinesis {
                stream_name: "clicks".into()
            })
        );
        let (_, d) = SourceArn::parse(
            "arn:aws:dynamodb:us-east-1:1:table/orders/stream/2025-11-25T15:47:40.123",
        )
        .unwrap();
        assert_eq!(
            d,
            SourceResource::Stream(StreamSource::DynamoDb {
                table_name: "orders".into(),
                stream_label: Some("2025-11-25T15:47:40.123".into())
            })
        );
        let (_, t) = SourceArn::parse("arn:aws:dynamodb:us-east-1:1:table/orders").unwrap();
        assert_eq!(
            t,
            SourceResource::Stream(StreamSource::DynamoDb {
                table_name: "orders".into(),
                stream_label: None
            })
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

    #[test]
    fn destinations_carry_what_their_client_needs() {
        assert_eq!(
            DestinationConfig::parse("arn:aws:sqs:eu-west-1:123:dlq"),
            Ok(DestinationConfig::Sqs {
                region: "eu-west-1".into(),
                account: "123".into(),
                queue_name: "dlq".into()
            })
        );
        assert_eq!(
            DestinationConfig::parse("arn:aws:sns:eu-west-1:123:t"),
            Ok(DestinationConfig::Sns {
                region: "eu-west-1".into(),
                topic_arn: "arn:aws:sns:eu-west-1:123:t".into()
            })
        );
        assert_eq!(
            DestinationConfig::parse("arn:aws:s3:::b"),
            Ok(DestinationConfig::S3 { bucket: "b".into() })
        );
        assert_eq!(
            DestinationConfig::parse("file:///var/f.jsonl"),
            Ok(DestinationConfig::File("/var/f.jsonl".into()))
        );
        for bad in [
            "file://f.jsonl",
            "arn:aws:sqs:eu-west-1:123:dlq.fifo",
            "arn:aws:sqs::123:dlq",
            "arn:aws:s3:::b/k",
            "arn:aws:lambda:eu-west-1:123:function:f",
        ] {
            assert!(DestinationConfig::parse(bad).is_err(), "{bad}");
        }
    }
}

//! On-failure destinations of stream mappings: an SQS queue, an SNS topic, an S3 bucket
//! (ARNs as on AWS) or `file:///path.jsonl` (one failure record per line).

use std::io::Write;
use std::path::PathBuf;

use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::{AwsSettings, DestinationConfig};
use crate::event::failure::Utc;

pub enum Destination {
    Sqs {
        client: aws_sdk_sqs::Client,
        queue_name: String,
        account: String,
        url: Mutex<Option<String>>,
    },
    Sns {
        client: aws_sdk_sns::Client,
        topic_arn: String,
    },
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
    File(PathBuf),
}

impl Destination {
    /// Builds the client of a validated destination.
    pub async fn build(target: &DestinationConfig, aws: &AwsSettings) -> Destination {
        match target {
            DestinationConfig::Sqs {
                region,
                account,
                queue_name,
            } => {
                let sdk = crate::aws::sdk_config(aws, Some(region), None).await;
                Destination::Sqs {
                    client: crate::aws::sqs(&sdk, std::time::Duration::ZERO),
                    queue_name: queue_name.clone(),
                    account: account.clone(),
                    url: Mutex::new(None),
                }
            }
            DestinationConfig::Sns { region, topic_arn } => {
                let sdk = crate::aws::sdk_config(aws, Some(region), None).await;
                Destination::Sns {
                    client: crate::aws::sns(&sdk),
                    topic_arn: topic_arn.clone(),
                }
            }
            DestinationConfig::S3 { bucket } => {
                // an S3 ARN names no region: `[aws] region` or the chain's
                let sdk = crate::aws::sdk_config(aws, None, None).await;
                Destination::S3 {
                    client: crate::aws::s3(&sdk),
                    bucket: bucket.clone(),
                }
            }
            DestinationConfig::File(path) => Destination::File(path.clone()),
        }
    }

    /// Delivers one failure record. S3 objects also carry `payload`: the invocation event
    /// as a JSON string, at `aws/lambda/<mapping>/<shard>/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-<uuid>`.
    pub async fn deliver(
        &self,
        record: &Value,
        event: &[u8],
        mapping_id: &str,
        shard_id: &str,
        now: f64,
    ) -> Result<(), String> {
        match self {
            Destination::Sqs {
                client,
                queue_name,
                account,
                url,
            } => {
                let mut url = url.lock().await;
                if url.is_none() {
                    let found = client
                        .get_queue_url()
                        .queue_name(queue_name)
                        .queue_owner_aws_account_id(account)
                        .send()
                        .await
                        .map_err(|e| {
                            format!(
                                "GetQueueUrl {queue_name}: {}",
                                aws_sdk_sqs::error::DisplayErrorContext(&e)
                            )
                        })?;
                    *url = found.queue_url;
                }
                client
                    .send_message()
                    .queue_url(url.as_deref().unwrap_or_default())
                    .message_body(record.to_string())
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "SendMessage: {}",
                            aws_sdk_sqs::error::DisplayErrorContext(&e)
                        )
                    })?;
            }
            Destination::Sns { client, topic_arn } => {
                client
                    .publish()
                    .topic_arn(topic_arn)
                    .message(record.to_string())
                    .send()
                    .await
                    .map_err(|e| {
                        format!("Publish: {}", aws_sdk_sns::error::DisplayErrorContext(&e))
                    })?;
            }
            Destination::S3 { client, bucket } => {
                let mut object = record.clone();
                object["payload"] = Value::String(String::from_utf8_lossy(event).into_owned());
                let key = s3_key(mapping_id, shard_id, now, &uuid::Uuid::new_v4().to_string());
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .content_type("application/json")
                    .body(object.to_string().into_bytes().into())
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "PutObject {key}: {}",
                            aws_sdk_s3::error::DisplayErrorContext(&e)
                        )
                    })?;
            }
            Destination::File(path) => {
                let mut line = record.to_string();
                line.push('\n');
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)?;
                    file.write_all(line.as_bytes())?;
                    file.sync_data()
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("{}: {e}", self.describe()))?;
            }
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        match self {
            Destination::Sqs { queue_name, .. } => format!("sqs queue {queue_name}"),
            Destination::Sns { topic_arn, .. } => format!("sns topic {topic_arn}"),
            Destination::S3 { bucket, .. } => format!("s3 bucket {bucket}"),
            Destination::File(path) => format!("file {}", path.display()),
        }
    }
}

/// The AWS object key of a failure record in an S3 destination.
pub fn s3_key(mapping_id: &str, shard_id: &str, now: f64, unique: &str) -> String {
    let t = Utc::from_seconds(now);
    format!(
        "aws/lambda/{mapping_id}/{shard_id}/{:04}/{:02}/{:02}/{:04}-{:02}-{:02}T{:02}.{:02}.{:02}-{unique}",
        t.year, t.month, t.day, t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s3_key_follows_the_aws_layout() {
        assert_eq!(
            s3_key("m-1", "shardId-000000000000", 1_764_088_530.999_4, "u"),
            "aws/lambda/m-1/shardId-000000000000/2025/11/25/2025-11-25T16.35.30-u"
        );
    }
}

//! The SQS queue as the poller sees it ([`Queue`]: receive, extend visibility, release,
//! delete), and [`SqsQueue`], the real one.
//!
//! Requests always go to the configured endpoint; the queue URL is only a parameter, so an
//! emulator whose queue URLs name an unresolvable host still works.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::event::sqs::{EVENT_SOURCE, MessageAttribute, SqsRecord};

/// SQS takes at most 10 entries per batch call and returns at most 10 messages per receive.
pub const MAX_PER_CALL: usize = 10;
/// The longest long poll SQS allows.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// A received message: what settling needs, and its record already serialized.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub group_id: Option<String>,
    pub record: Vec<u8>,
}

impl crate::pipeline::batch::Record for Received {
    fn json(&self) -> &[u8] {
        &self.record
    }

    fn item_id(&self) -> &str {
        &self.message_id
    }
}

/// An SQS error worth a log line, with its full context.
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {detail}")]
pub struct QueueError {
    pub operation: &'static str,
    pub detail: String,
    pub queue_missing: bool,
}

impl QueueError {
    fn from_sdk<E, R>(operation: &'static str, err: aws_sdk_sqs::error::SdkError<E, R>) -> Self
    where
        E: std::error::Error + aws_sdk_sqs::error::ProvideErrorMetadata + 'static,
        R: std::fmt::Debug,
    {
        let queue_missing = err
            .as_service_error()
            .and_then(|e| e.code())
            .is_some_and(|code| {
                code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist")
            });
        QueueError {
            operation,
            detail: DisplayErrorContext(&err).to_string(),
            queue_missing,
        }
    }
}

/// What the poller needs from a queue; [`SqsQueue`] is the real one, tests use a fake.
pub trait Queue: Send + Sync + 'static {
    /// The queue's ARN, for logs.
    fn arn(&self) -> &str;

    /// One receive: up to `max` messages (at most 10), waiting up to `wait` (whole
    /// seconds, at most 20) for the first.
    fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Received>, QueueError>> + Send;

    /// Sets the visibility timeout of held messages; `0` hands them back to the queue.
    /// Returns how many the queue refused.
    fn change_visibility(
        &self,
        receipt_handles: &[String],
        timeout: Duration,
    ) -> impl Future<Output = Result<usize, QueueError>> + Send;

    /// Deletes messages. Returns the receipt handles whose delete failed, with why.
    fn delete(
        &self,
        receipt_handles: &[String],
    ) -> impl Future<Output = Vec<(String, String)>> + Send;

    /// The messages in the queue, visible, in flight (received, not deleted) or delayed,
    /// as the queue's approximate counts say.
    fn backlog(&self) -> impl Future<Output = Result<u64, QueueError>> + Send;
}

pub struct SqsQueue {
    client: Client,
    url: String,
    arn: String,
    region: String,
}

impl SqsQueue {
    /// Finds the queue's URL and visibility timeout; fails when the queue does not exist.
    pub async fn open(
        client: Client,
        name: &str,
        account: &str,
        arn: &str,
        region: &str,
    ) -> Result<(SqsQueue, Duration), QueueError> {
        let url = client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await
            .map_err(|e| QueueError::from_sdk("GetQueueUrl", e))?
            .queue_url
            .unwrap_or_default();
        let attributes = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
            .map_err(|e| QueueError::from_sdk("GetQueueAttributes", e))?;
        let visibility = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(30);
        let queue = SqsQueue {
            client,
            url,
            arn: arn.to_string(),
            region: region.to_string(),
        };
        Ok((queue, Duration::from_secs(visibility)))
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The sum of the approximate message counts `counts` names.
    pub async fn count(&self, counts: &[QueueAttributeName]) -> Result<u64, QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .set_attribute_names(Some(counts.to_vec()))
            .send()
            .await
            .map_err(|e| QueueError::from_sdk("GetQueueAttributes", e))?;
        let attributes = output.attributes();
        Ok(counts
            .iter()
            .filter_map(|name| attributes.and_then(|a| a.get(name)))
            .filter_map(|count| count.parse::<u64>().ok())
            .sum())
    }

    fn received(&self, message: Message) -> Received {
        let attributes: BTreeMap<String, String> = message
            .attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.as_str().to_string(), v))
            .collect();
        let group_id = attributes.get("MessageGroupId").cloned();
        let message_attributes: BTreeMap<String, MessageAttribute> = message
            .message_attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(name, v)| {
                let attribute = MessageAttribute {
                    string_value: v.string_value,
                    binary_value: v.binary_value.map(|b| BASE64.encode(b.as_ref())),
                    string_list_values: v.string_list_values.unwrap_or_default(),
                    binary_list_values: v
                        .binary_list_values
                        .unwrap_or_default()
                        .iter()
                        .map(|b| BASE64.encode(b.as_ref()))
                        .collect(),
                    data_type: v.data_type,
                };
                (name, attribute)
            })
            .collect();
        let md5_of_message_attributes = if message_attributes.is_empty() {
            None
        } else {
            message.md5_of_message_attributes
        };
        let record = SqsRecord {
            message_id: message.message_id.unwrap_or_default(),
            receipt_handle: message.receipt_handle.unwrap_or_default(),
            body: message.body.unwrap_or_default(),
            attributes,
            message_attributes,
            md5_of_message_attributes,
            md5_of_body: message.md5_of_body.unwrap_or_default(),
            event_source: EVENT_SOURCE,
            event_source_arn: self.arn.clone(),
            aws_region: self.region.clone(),
        };
        Received {
            record: record.to_json(),
            message_id: record.message_id,
            receipt_handle: record.receipt_handle,
            group_id,
        }
    }
}

impl Queue for SqsQueue {
    fn arn(&self) -> &str {
        &self.arn
    }

    /// One ReceiveMessage call: up to `max` messages, waiting up to `wait` (whole seconds).
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_PER_CALL) as i32)
            .wait_time_seconds(wait.min(MAX_WAIT).as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| QueueError::from_sdk("ReceiveMessage", e))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| self.received(m))
            .collect())
    }

    /// Sets the visibility timeout of held messages; `0` hands them back to the queue.
    /// Returns how many SQS refused; every chunk is tried even when one call fails, and
    /// the last failed call is the error.
    async fn change_visibility(
        &self,
        receipt_handles: &[String],
        timeout: Duration,
    ) -> Result<usize, QueueError> {
        let mut refused = 0;
        let mut failed = None;
        for chunk in receipt_handles.chunks(MAX_PER_CALL) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, handle)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .visibility_timeout(timeout.as_secs() as i32)
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect();
            match self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(output) => refused += output.failed.len(),
                Err(err) => {
                    failed = Some(QueueError::from_sdk("ChangeMessageVisibilityBatch", err))
                }
            }
        }
        match failed {
            Some(err) => Err(err),
            None => Ok(refused),
        }
    }

    /// Deletes messages with DeleteMessageBatch in chunks of 10. Returns the receipt
    /// handles whose delete failed (entry failures or a failed call), for a retry.
    async fn delete(&self, receipt_handles: &[String]) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        for chunk in receipt_handles.chunks(MAX_PER_CALL) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, handle)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(handle)
                        .build()
                        .expect("id and receipt handle are set")
                })
                .collect();
            match self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(output) => {
                    for entry in output.failed {
                        let handle = entry
                            .id
                            .parse::<usize>()
                            .ok()
                            .and_then(|i| chunk.get(i))
                            .cloned()
                            .unwrap_or_default();
                        let reason =
                            format!("{}: {}", entry.code, entry.message.unwrap_or_default());
                        failed.push((handle, reason));
                    }
                }
                Err(err) => {
                    let reason = QueueError::from_sdk("DeleteMessageBatch", err).to_string();
                    failed.extend(chunk.iter().map(|h| (h.clone(), reason.clone())));
                }
            }
        }
        failed
    }

    /// GetQueueAttributes: ApproximateNumberOfMessages, ...NotVisible and ...Delayed.
    async fn backlog(&self) -> Result<u64, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName as Name;
        self.count(&[
            Name::ApproximateNumberOfMessages,
            Name::ApproximateNumberOfMessagesNotVisible,
            Name::ApproximateNumberOfMessagesDelayed,
        ])
        .await
    }
}

//! An in-memory SQS queue for tests, on tokio time: messages turn invisible when
//! received, for the visibility timeout, with a new receipt handle each time; a FIFO queue
//! hands out no message of a group while another of the group is invisible.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::queue::{MAX_PER_CALL, MAX_WAIT, Queue, QueueError, Received};
use crate::event::sqs::{EVENT_SOURCE, SqsRecord};

pub const ARN: &str = "arn:aws:sqs:us-east-1:123456789012:fake";

pub struct FakeQueue {
    fifo: bool,
    visibility: Duration,
    state: Mutex<State>,
    /// Told when a message was sent or made visible.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// Oldest first; received messages sit near the front, so a delete is cheap.
    messages: VecDeque<Stored>,
    sent: u64,
    receipts: u64,
    /// Message ids in the order they were deleted.
    deleted: Vec<String>,
}

struct Stored {
    id: String,
    body: String,
    group: Option<String>,
    invisible_until: Option<Instant>,
    receipt: Option<String>,
    receives: u32,
}

impl FakeQueue {
    pub fn new(fifo: bool, visibility: Duration) -> FakeQueue {
        FakeQueue {
            fifo,
            visibility,
            state: Mutex::default(),
            changed: Notify::new(),
        }
    }

    /// Sends a message; its id is `m-N`, N counting from 0.
    pub fn send(&self, body: &str, group: Option<&str>) -> String {
        let mut state = self.lock();
        let id = format!("m-{}", state.sent);
        state.sent += 1;
        state.messages.push_back(Stored {
            id: id.clone(),
            body: body.to_string(),
            group: group.map(str::to_string),
            invisible_until: None,
            receipt: None,
            receives: 0,
        });
        drop(state);
        self.changed.notify_waiters();
        id
    }

    /// The bodies of the deleted messages, in delete order.
    pub fn deleted(&self) -> Vec<String> {
        self.lock().deleted.clone()
    }

    /// Messages not deleted yet.
    pub fn remaining(&self) -> usize {
        self.lock().messages.len()
    }

    /// Messages visible now.
    pub fn visible(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .messages
            .iter()
            .filter(|m| m.invisible_until.is_none_or(|until| until <= now))
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("the fake queue is never poisoned")
    }

    /// Takes up to `max` visible messages, making them invisible; else when the next
    /// hidden message turns visible.
    fn take(&self, max: usize) -> (Vec<Received>, Option<Instant>) {
        let now = Instant::now();
        let mut state = self.lock();
        let busy_groups: HashSet<String> = if self.fifo {
            state
                .messages
                .iter()
                .filter(|m| m.invisible_until.is_some_and(|until| until > now))
                .filter_map(|m| m.group.clone())
                .collect()
        } else {
            HashSet::new()
        };
        let mut taken = Vec::new();
        let mut next_visible = None;
        let mut receipts = state.receipts;
        for message in state.messages.iter_mut() {
            if let Some(until) = message.invisible_until
                && until > now
            {
                next_visible = Some(next_visible.map_or(until, |n: Instant| n.min(until)));
                continue;
            }
            if taken.len() == max {
                break;
            }
            // one batch per group in flight; within a receive, a group's messages come
            // in order
            if self.fifo
                && message
                    .group
                    .as_ref()
                    .is_some_and(|g| busy_groups.contains(g))
            {
                continue;
            }
            receipts += 1;
            let receipt = format!("rh-{}-{receipts}", message.id);
            message.receipt = Some(receipt.clone());
            message.invisible_until = Some(now + self.visibility);
            message.receives += 1;
            taken.push(received(message, receipt));
        }
        state.receipts = receipts;
        (taken, next_visible)
    }
}

fn received(message: &Stored, receipt: String) -> Received {
    let mut attributes = BTreeMap::from([(
        "ApproximateReceiveCount".to_string(),
        message.receives.to_string(),
    )]);
    if let Some(group) = &message.group {
        attributes.insert("MessageGroupId".into(), group.clone());
    }
    let record = SqsRecord {
        message_id: message.id.clone(),
        receipt_handle: receipt.clone(),
        body: message.body.clone(),
        attributes,
        message_attributes: BTreeMap::new(),
        md5_of_message_attributes: None,
        md5_of_body: String::new(),
        event_source: EVENT_SOURCE,
        event_source_arn: ARN.into(),
        aws_region: "us-east-1".into(),
    };
    Received {
        message_id: message.id.clone(),
        receipt_handle: receipt,
        group_id: message.group.clone(),
        record: record.to_json(),
    }
}

impl Queue for FakeQueue {
    fn arn(&self) -> &str {
        ARN
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, QueueError> {
        let deadline = Instant::now() + Duration::from_secs(wait.min(MAX_WAIT).as_secs());
        loop {
            let changed = self.changed.notified();
            let (taken, next_visible) = self.take(max.clamp(1, MAX_PER_CALL));
            if !taken.is_empty() || Instant::now() >= deadline {
                return Ok(taken);
            }
            let wake = next_visible.map_or(deadline, |n| n.min(deadline));
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn change_visibility(
        &self,
        receipt_handles: &[String],
        timeout: Duration,
    ) -> Result<usize, QueueError> {
        let until = Instant::now() + timeout;
        let mut refused = 0;
        {
            let mut state = self.lock();
            for handle in receipt_handles {
                match state
                    .messages
                    .iter_mut()
                    .find(|m| m.receipt.as_deref() == Some(handle.as_str()))
                {
                    Some(message) => message.invisible_until = Some(until),
                    None => refused += 1,
                }
            }
        }
        self.changed.notify_waiters();
        Ok(refused)
    }

    async fn delete(&self, receipt_handles: &[String]) -> Vec<(String, String)> {
        let mut state = self.lock();
        for handle in receipt_handles {
            if let Some(i) = state
                .messages
                .iter()
                .position(|m| m.receipt.as_deref() == Some(handle.as_str()))
                && let Some(message) = state.messages.remove(i)
            {
                state.deleted.push(message.body);
            }
        }
        Vec::new()
    }

    async fn backlog(&self) -> Result<u64, QueueError> {
        Ok(self.remaining() as u64)
    }
}

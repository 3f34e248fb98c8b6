//! Shared harness for the integration tests (`mod common;`).
//!
//! - [`Moto`]: a moto server (through `scripts/moto_server.py`) with the SQS helpers of
//!   [`Emulator`].
//! - [`localstack`]: LocalStack in host mode, one server per test binary, or a reported skip.
//! - [`FunctionServer`]: an HTTP server playing a Lambda function for `url` targets.
//! - [`Esmd`]: the real `esmd` binary, run on a config in its own temp dir.
//! - [`wait_until`]: every wait in a test is a condition with a timeout.
//! - [`streams`]: Kinesis and DynamoDB Streams helpers, kinesis-local, a fault proxy.
#![allow(dead_code)]

pub mod localstack;
pub mod streams;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client as SqsClient;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::{
    Message, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use esmd::config::raw::{RawAws, RawConfig, RawFunction, RawMapping, RawState};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;

const POLL_INTERVAL: Duration = Duration::from_millis(50);
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Calls `f` every ~50 ms until it returns `Some`, and returns that value.
/// Panics naming `what` if that takes longer than `timeout` (a call of `f` included).
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Some(value)) => return value,
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(POLL_INTERVAL).await
            }
            _ => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}

/// The `[aws]` section for an emulator at `endpoint`; the state beside the config file.
pub fn aws_config(endpoint: &str) -> RawConfig {
    RawConfig {
        aws: RawAws {
            region: Some("us-east-1".into()),
            endpoint_url: Some(endpoint.into()),
            ..RawAws::default()
        },
        ..RawConfig::default()
    }
}

/// The `[aws]` section for an emulator at `endpoint` and the `[state]` dir: the head of
/// every stream test config.
pub fn base_config(endpoint: &str, state: &Path) -> RawConfig {
    RawConfig {
        state: RawState {
            dir: Some(state.into()),
        },
        ..aws_config(endpoint)
    }
}

/// A function behind an Invoke-API-compatible `url`.
pub fn url_function(url: &str) -> RawFunction {
    RawFunction {
        url: Some(url.into()),
        ..RawFunction::default()
    }
}

/// A mapping of `event_source_arn` to `function_name`, with `keys` set.
pub fn mapping(function_name: &str, event_source_arn: &str, keys: RawMapping) -> RawMapping {
    RawMapping {
        function_name: Some(function_name.into()),
        event_source_arn: Some(event_source_arn.into()),
        ..keys
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// A unique name for a queue, stream or table: `prefix-<12 hex digits>`.
pub fn random_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..12])
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---------------------------------------------------------------------------------------
// emulators

/// Starts an emulator process with `spawn(port, log)` on a free loopback port and waits
/// until `ready(endpoint)` says it answers. A port picked by [`free_port`] can be taken
/// before the process binds it, so three ports are tried; panics with the last log then.
pub async fn start_emulator<S, R, Fut>(
    name: &str,
    timeout: Duration,
    mut spawn: S,
    ready: R,
) -> (u16, Child, tempfile::NamedTempFile)
where
    S: FnMut(u16, &tempfile::NamedTempFile) -> Child,
    R: Fn(String) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut last_log = String::new();
    for _ in 0..3 {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().expect("create an emulator log file");
        let mut child = spawn(port, &log);
        let endpoint = format!("http://127.0.0.1:{port}");
        let up = wait_until(&format!("{name} to answer"), timeout, || {
            let exited = child
                .try_wait()
                .expect("poll the emulator process")
                .is_some();
            let probe = ready(endpoint.clone());
            async move {
                if exited {
                    return Some(false);
                }
                probe.await.then_some(true)
            }
        })
        .await;
        if up {
            return (port, child, log);
        }
        let _ = child.kill();
        let _ = child.wait();
        last_log = read_lossy(log.path());
    }
    panic!(
        "{name} did not start; its last log:\n{}",
        tail(&last_log, 30)
    );
}

// ---------------------------------------------------------------------------------------
// moto

/// A moto server on a loopback port, run through our patched launcher. Killed on drop.
/// Its SQS (and, in [`streams`], Kinesis and DynamoDB) helpers are those of [`Emulator`].
pub struct Moto {
    emulator: Emulator,
    child: Child,
    _log: tempfile::NamedTempFile,
}

/// An AWS emulator's endpoint (moto, LocalStack) with SQS helpers, clients on us-east-1
/// with static test credentials.
pub struct Emulator {
    pub endpoint: String,
    sqs: SqsClient,
}

/// A queue created through [`Moto::create_queue`].
#[derive(Clone, Debug)]
pub struct Queue {
    pub name: String,
    pub url: String,
    pub arn: String,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers.
    pub async fn start() -> Moto {
        let python = Path::new(REPO).join(".venv-emu/bin/python");
        assert!(
            python.exists(),
            "moto is not installed ({} is missing): run scripts/test or scripts/moto install",
            python.display()
        );
        let http = reqwest::Client::new();
        let (port, child, log) = start_emulator(
            "moto",
            Duration::from_secs(30),
            |port, log| {
                Command::new(&python)
                    .arg(Path::new(REPO).join("scripts/moto_server.py"))
                    .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--parent-pid", &std::process::id().to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log.reopen().expect("reopen moto log file"))
                    .spawn()
                    .expect("spawn scripts/moto_server.py")
            },
            |endpoint| {
                let probe = http.get(format!("{endpoint}/moto-api/")).send();
                async move { probe.await.is_ok_and(|r| r.status().is_success()) }
            },
        )
        .await;
        Moto {
            emulator: Emulator::at(&format!("http://127.0.0.1:{port}")),
            child,
            _log: log,
        }
    }
}

impl std::ops::Deref for Moto {
    type Target = Emulator;

    fn deref(&self) -> &Emulator {
        &self.emulator
    }
}

impl Emulator {
    /// Helpers for the emulator at `endpoint`.
    pub fn at(endpoint: &str) -> Emulator {
        Emulator {
            endpoint: endpoint.to_owned(),
            sqs: sqs_client(endpoint),
        }
    }

    /// An SQS client for this server (us-east-1, static test credentials).
    pub fn sqs(&self) -> SqsClient {
        self.sqs.clone()
    }

    /// An S3 client for this server, with path-style bucket addressing.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&sdk_config(&self.endpoint))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates a queue; FIFO when `name` ends in `.fifo`.
    pub async fn create_queue(&self, name: &str, attributes: &[(&str, &str)]) -> Queue {
        let mut request = self.sqs.create_queue().queue_name(name);
        if name.ends_with(".fifo") {
            request = request.attributes(QueueAttributeName::FifoQueue, "true");
        }
        for (key, value) in attributes {
            request = request.attributes(QueueAttributeName::from(*key), *value);
        }
        let url = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateQueue {name}: {e:?}"))
            .queue_url
            .expect("CreateQueue returns a QueueUrl");
        let arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetQueueAttributes {name}: {e:?}"))
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .expect("GetQueueAttributes returns the QueueArn");
        Queue {
            name: name.to_owned(),
            url,
            arn,
        }
    }

    /// Sends one message to a standard queue; returns its message id.
    pub async fn send(&self, queue: &Queue, body: &str) -> String {
        self.sqs
            .send_message()
            .queue_url(&queue.url)
            .message_body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("SendMessage to {}: {e:?}", queue.name))
            .message_id
            .expect("SendMessage returns a MessageId")
    }

    /// Sends to a FIFO queue in `group`, with a fresh deduplication id; returns the message id.
    pub async fn send_fifo(&self, queue: &Queue, body: &str, group: &str) -> String {
        self.sqs
            .send_message()
            .queue_url(&queue.url)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(uuid::Uuid::new_v4().simple().to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("SendMessage to {}: {e:?}", queue.name))
            .message_id
            .expect("SendMessage returns a MessageId")
    }

    /// Sends many messages to a standard queue, 10 per request, in order; returns their ids.
    pub async fn send_batch<S: AsRef<str>>(&self, queue: &Queue, bodies: &[S]) -> Vec<String> {
        let mut ids = Vec::with_capacity(bodies.len());
        for chunk in bodies.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body.as_ref())
                        .build()
                        .expect("a complete batch entry")
                })
                .collect();
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(&queue.url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap_or_else(|e| panic!("SendMessageBatch to {}: {e:?}", queue.name));
            assert!(
                out.failed.is_empty(),
                "SendMessageBatch failed: {:?}",
                out.failed
            );
            let mut ok = out.successful;
            ok.sort_by_key(|entry| entry.id.parse::<usize>().expect("numeric entry id"));
            ids.extend(ok.into_iter().map(|entry| entry.message_id));
        }
        ids
    }

    /// `(ApproximateNumberOfMessages, ApproximateNumberOfMessagesNotVisible)`.
    pub async fn queue_depth(&self, queue: &Queue) -> (usize, usize) {
        let mut attributes = self
            .sqs
            .get_queue_attributes()
            .queue_url(&queue.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetQueueAttributes {}: {e:?}", queue.name))
            .attributes
            .unwrap_or_default();
        let mut count = |name| {
            attributes
                .remove(&name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("GetQueueAttributes returns {name}"))
        };
        (
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// A queue with a visibility timeout (seconds) and a redrive policy to a new DLQ after
    /// `max_receive` receives; returns (queue, DLQ).
    pub async fn queue_with_dlq(&self, visibility: u32, max_receive: u32) -> (Queue, Queue) {
        let dlq = self.create_queue(&random_name("dlq"), &[]).await;
        let policy =
            json!({"deadLetterTargetArn": dlq.arn, "maxReceiveCount": max_receive.to_string()})
                .to_string();
        let queue = self
            .create_queue(
                &random_name("q"),
                &[
                    ("VisibilityTimeout", &visibility.to_string()),
                    ("RedrivePolicy", &policy),
                ],
            )
            .await;
        (queue, dlq)
    }

    /// Waits until `queue` holds no message, visible or in flight.
    pub async fn wait_empty(&self, queue: &Queue, timeout: Duration) {
        wait_until(&format!("{} to be empty", queue.name), timeout, || async {
            (self.queue_depth(queue).await == (0, 0)).then_some(())
        })
        .await;
    }

    /// Receives and deletes messages until a receive comes back empty; messages carry all
    /// system and message attributes. Panics if the queue is not drained within `timeout`.
    pub async fn receive_all(&self, queue: &Queue, timeout: Duration) -> Vec<Message> {
        let mut all = Vec::new();
        let deadline = Instant::now() + timeout;
        loop {
            assert!(
                Instant::now() < deadline,
                "{} not drained within {timeout:?}; got {} messages so far",
                queue.name,
                all.len()
            );
            let batch = self
                .sqs
                .receive_message()
                .queue_url(&queue.url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .visibility_timeout(30)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap_or_else(|e| panic!("ReceiveMessage from {}: {e:?}", queue.name))
                .messages
                .unwrap_or_default();
            if batch.is_empty() {
                return all;
            }
            for message in &batch {
                self.sqs
                    .delete_message()
                    .queue_url(&queue.url)
                    .receipt_handle(message.receipt_handle.as_deref().unwrap_or_default())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("DeleteMessage from {}: {e:?}", queue.name));
            }
            all.extend(batch);
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The (group, index) of each record of one FIFO invocation, from bodies `GROUP-INDEX`.
pub type FifoBatch = Vec<(String, usize)>;

/// How one FIFO invocation ended, for [`replay_fifo_batches`].
pub enum FifoOutcome {
    /// Every record settled.
    Settled,
    /// Nothing settled (a function error).
    FailedWhole,
    /// The record (group, index) was reported failed: its group's records before it settled,
    /// those from it on did not; the other groups' records settled.
    FailedAt(String, usize),
}

/// Replays FIFO invocations in arrival order, asserting that per group each batch
/// continues exactly where the group's settled prefix ends; `outcome` says how each
/// invocation ended. Returns how many records of each group settled.
pub fn replay_fifo_batches(
    batches: &[FifoBatch],
    mut outcome: impl FnMut(&FifoBatch) -> FifoOutcome,
) -> HashMap<String, usize> {
    let mut settled: HashMap<String, usize> = HashMap::new();
    for batch in batches {
        let outcome = outcome(batch);
        let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (group, index) in batch {
            by_group.entry(group).or_default().push(*index);
        }
        for (group, indexes) in by_group {
            let next = settled.entry(group.to_string()).or_default();
            let run: Vec<usize> = (*next..*next + indexes.len()).collect();
            assert_eq!(
                indexes, run,
                "group {group} out of order in batch {batch:?}"
            );
            *next += match &outcome {
                FifoOutcome::Settled => indexes.len(),
                FifoOutcome::FailedWhole => 0,
                FifoOutcome::FailedAt(failed, index) if failed == group => indexes
                    .iter()
                    .position(|i| i == index)
                    .unwrap_or(indexes.len()),
                FifoOutcome::FailedAt(..) => indexes.len(),
            };
        }
    }
    settled
}

/// The `body` of an SQS event record.
pub fn message_body(record: &Value) -> String {
    record["body"]
        .as_str()
        .expect("body is a string")
        .to_string()
}

/// The `ApproximateReceiveCount` of an SQS event record.
pub fn receive_count(record: &Value) -> u32 {
    record["attributes"]["ApproximateReceiveCount"]
        .as_str()
        .expect("ApproximateReceiveCount")
        .parse()
        .expect("a number")
}

fn sqs_client(endpoint: &str) -> SqsClient {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "esmd-tests"))
        .endpoint_url(endpoint)
        .build();
    SqsClient::from_conf(config)
}

/// The shared SDK config for every other client of the harness: same region and credentials
/// as [`sqs_client`].
fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(
            Credentials::new("test", "test", None, None, "esmd-tests"),
        ))
        .endpoint_url(endpoint)
        .build()
}

// ---------------------------------------------------------------------------------------
// FunctionServer

/// Serves `app` on `listener` until the returned sender is dropped or used.
pub fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    name: &'static str,
) -> oneshot::Sender<()> {
    let (shutdown, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .expect(name);
    });
    shutdown
}

/// What the [`FunctionServer`] answers to one invocation.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    /// Any status and body.
    pub fn status(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// 200 with `body`.
    pub fn ok(body: impl Into<String>) -> Reply {
        Reply::status(200, body)
    }

    /// 200 with `value` as JSON.
    pub fn json(value: &Value) -> Reply {
        Reply::ok(value.to_string())
    }

    /// 200 with `X-Amz-Function-Error: Unhandled`, as the Invoke API reports a function error.
    pub fn function_error(body: impl Into<String>) -> Reply {
        Reply::ok(body).header("X-Amz-Function-Error", "Unhandled")
    }

    /// 200 with an error object body, as the Runtime Interface Emulator reports an error.
    pub fn rie_error() -> Reply {
        Reply::ok(r#"{"errorType":"Error","errorMessage":"boom"}"#)
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answers only after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// One request the [`FunctionServer`] received.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// The request body as JSON (a JSON string holding the raw body if it was not JSON).
    pub event: Value,
    /// The request body as it came.
    pub body: Bytes,
    pub at: Instant,
    pub headers: HeaderMap,
}

impl Invocation {
    /// The `Records` of the event (empty if it has none).
    pub fn records(&self) -> Vec<Value> {
        self.event["Records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Responder = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

#[derive(Clone)]
struct FunctionState {
    responder: Responder,
    invocations: Arc<Mutex<Vec<Invocation>>>,
    max_body: usize,
    refused: Arc<Mutex<Vec<Invocation>>>,
}

/// An HTTP server on a loopback port that plays a Lambda function: every `POST` (any path)
/// is recorded and answered by the responder. A body over the server's limit is answered
/// 413 and recorded apart ([`FunctionServer::refused`]). Stops listening on drop.
pub struct FunctionServer {
    port: u16,
    invocations: Arc<Mutex<Vec<Invocation>>>,
    refused: Arc<Mutex<Vec<Invocation>>>,
    shutdown: Option<oneshot::Sender<()>>,
}

/// Room for a 6 MiB event, like a Lambda runtime.
const DEFAULT_MAX_BODY: usize = 8 * 1024 * 1024;

impl FunctionServer {
    /// Starts on a free loopback port.
    pub async fn start(responder: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Self {
        FunctionServer::start_on(0, responder).await
    }

    /// Starts on `port` (0: any free port), e.g. for a target that comes up late.
    pub async fn start_on(
        port: u16,
        responder: impl Fn(&Value) -> Reply + Send + Sync + 'static,
    ) -> Self {
        FunctionServer::start_with(port, DEFAULT_MAX_BODY, responder).await
    }

    /// Starts on a free loopback port; a body of more than `max_body` bytes gets 413.
    pub async fn start_with_body_limit(
        max_body: usize,
        responder: impl Fn(&Value) -> Reply + Send + Sync + 'static,
    ) -> Self {
        FunctionServer::start_with(0, max_body, responder).await
    }

    async fn start_with(
        port: u16,
        max_body: usize,
        responder: impl Fn(&Value) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port} for the function server: {e}"));
        let port = listener.local_addr().expect("listener address").port();
        let state = FunctionState {
            responder: Arc::new(responder),
            invocations: Arc::default(),
            max_body,
            refused: Arc::default(),
        };
        let invocations = state.invocations.clone();
        let refused = state.refused.clone();
        // the limit is ours, checked in `invoke`, so that refused bodies are recorded
        let app = axum::Router::new()
            .fallback(invoke)
            .layer(axum::extract::DefaultBodyLimit::max(
                max_body.max(DEFAULT_MAX_BODY),
            ))
            .with_state(state);
        let shutdown = serve(listener, app, "function server");
        FunctionServer {
            port,
            invocations,
            refused,
            shutdown: Some(shutdown),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Invoke URL, as the Runtime Interface Emulator serves it.
    pub fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/2015-03-31/functions/function/invocations",
            self.port
        )
    }

    /// All invocations so far, in arrival order.
    pub fn invocations(&self) -> Vec<Invocation> {
        self.invocations.lock().unwrap().clone()
    }

    /// The invocations answered 413 for their size, in arrival order.
    pub fn refused(&self) -> Vec<Invocation> {
        self.refused.lock().unwrap().clone()
    }

    /// All `Records` entries of all invocations, in arrival order.
    pub fn records(&self) -> Vec<Value> {
        self.invocations()
            .iter()
            .flat_map(Invocation::records)
            .collect()
    }

    /// Waits until at least `n` records arrived; returns all of them.
    pub async fn wait_records(&self, n: usize, timeout: Duration) -> Vec<Value> {
        wait_until(&format!("{n} records"), timeout, || {
            let records = self.records();
            async move { (records.len() >= n).then_some(records) }
        })
        .await
    }

    /// Per SQS message body, the `ApproximateReceiveCount` of each delivery, in arrival order.
    pub fn receive_counts(&self) -> BTreeMap<String, Vec<u32>> {
        let mut deliveries: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for record in self.records() {
            deliveries
                .entry(message_body(&record))
                .or_default()
                .push(receive_count(&record));
        }
        deliveries
    }

    /// Waits until at least `n` invocations arrived; returns all of them.
    pub async fn wait_invocations(&self, n: usize, timeout: Duration) -> Vec<Invocation> {
        wait_until(&format!("{n} invocations"), timeout, || {
            let all = self.invocations();
            async move { (all.len() >= n).then_some(all) }
        })
        .await
    }
}

impl Drop for FunctionServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn invoke(
    axum::extract::State(state): axum::extract::State<FunctionState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let parsed = serde_json::from_slice::<Value>(&body);
    let event = parsed
        .as_ref()
        .map(Value::clone)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let invocation = Invocation {
        event: event.clone(),
        body: body.clone(),
        at,
        headers,
    };
    if body.len() > state.max_body {
        state.refused.lock().unwrap().push(invocation);
        return (StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large").into_response();
    }
    state.invocations.lock().unwrap().push(invocation);
    if parsed.is_err() {
        return (StatusCode::BAD_REQUEST, "request body is not JSON").into_response();
    }
    let reply = (state.responder)(&event);
    tokio::time::sleep(reply.delay).await;
    let status = StatusCode::from_u16(reply.status).expect("a valid reply status");
    let mut response = (status, reply.body).into_response();
    let out = response.headers_mut();
    out.insert("content-type", HeaderValue::from_static("application/json"));
    for (name, value) in reply.headers {
        out.insert(
            HeaderName::try_from(name).expect("a valid reply header name"),
            HeaderValue::try_from(value).expect("a valid reply header value"),
        );
    }
    response
}

// ---------------------------------------------------------------------------------------
// Esmd

/// The `esmd` binary under test, with its config, state and logs in a temp dir.
/// Killed on drop; if the test is panicking, the temp dir is kept and its path and the
/// tail of the log are printed.
pub struct Esmd {
    child: Child,
    dir: Option<TempDir>,
    config_path: PathBuf,
}

impl Esmd {
    /// Runs `esmd run --config <path>` on `config_toml`.
    pub fn start(config_toml: &str) -> Esmd {
        Esmd::start_with(config_toml, &[], &[])
    }

    /// Like [`Esmd::start`], with extra `run` arguments and environment variables.
    pub fn start_with(config_toml: &str, args: &[&str], env: &[(&str, &str)]) -> Esmd {
        Esmd::spawn("run", config_toml, args, env)
    }

    /// Runs `esmd replay --config <path> ARGS` on `config_toml`.
    pub fn replay(config_toml: &str, args: &[&str]) -> Esmd {
        Esmd::spawn("replay", config_toml, args, &[])
    }

    fn spawn(subcommand: &str, config_toml: &str, args: &[&str], env: &[(&str, &str)]) -> Esmd {
        let (dir, config_path) = write_config(config_toml);
        let stdout = File::create(dir.path().join("stdout.log")).expect("create stdout.log");
        let stderr = File::create(dir.path().join("stderr.log")).expect("create stderr.log");
        let child = esmd_command(dir.path(), subcommand, &config_path)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("spawn esmd {subcommand}: {err}"));
        Esmd {
            child,
            dir: Some(dir),
            config_path,
        }
    }

    /// Runs `esmd validate --config <path>` on `config_toml` to completion.
    pub fn validate(config_toml: &str) -> Output {
        let (dir, config_path) = write_config(config_toml);
        esmd_command(dir.path(), "validate", &config_path)
            .stdin(Stdio::null())
            .output()
            .expect("run esmd validate")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temp dir holding the config, the logs and (by default) the state dir.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("temp dir").path()
    }

    /// Runs `esmd <subcommand> --config <path> <args>` on the same config, in the same
    /// dir, to completion: [`esmd_output`].
    pub async fn command(&self, subcommand: &str, args: &[&str], timeout: Duration) -> Output {
        esmd_output(self.dir(), &self.config_path, subcommand, args, timeout).await
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Sends SIGTERM and waits for a clean exit (status 0); panics with the log otherwise.
    pub async fn stop(&mut self) {
        self.terminate();
        let status = self.wait_exit(Duration::from_secs(30)).await;
        assert_eq!(status.code(), Some(0), "{}", self.stderr());
    }

    /// Sends SIGKILL.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill esmd");
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        wait_until("esmd to exit", timeout, || {
            let status = child.try_wait().expect("poll esmd process");
            async move { status }
        })
        .await
    }

    /// Everything esmd wrote to stderr so far (its log).
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir().join("stderr.log"))
    }

    /// Everything esmd wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.dir().join("stdout.log"))
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        wait_until(&format!("esmd to log {needle:?}"), timeout, || {
            let found = self.stderr().contains(needle);
            async move { found.then_some(()) }
        })
        .await
    }
}

impl Drop for Esmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let log = read_lossy(&dir.path().join("stderr.log"));
            let kept = dir.keep();
            eprintln!(
                "esmd files kept in {}; last lines of stderr.log:\n{}",
                kept.display(),
                tail(&log, 40)
            );
        }
    }
}

/// Runs `esmd <subcommand> --config <config_path> <args>` in `dir`, in the test
/// environment, to completion; panics (killing it) after `timeout`.
pub async fn esmd_output(
    dir: &Path,
    config_path: &Path,
    subcommand: &str,
    args: &[&str],
    timeout: Duration,
) -> Output {
    let mut command = esmd_command(dir, subcommand, config_path);
    command.args(args).stdin(Stdio::null());
    let output = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(timeout, output)
        .await
        .unwrap_or_else(|_| panic!("esmd {subcommand} {args:?} still running after {timeout:?}"))
        .unwrap_or_else(|e| panic!("run esmd {subcommand}: {e}"))
}

/// `config_toml` written to `esmd.toml` in a new temp dir: the dir and the file's path.
pub fn write_config(config_toml: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("esmd-test-")
        .tempdir()
        .expect("create temp dir");
    let path = dir.path().join("esmd.toml");
    std::fs::write(&path, config_toml).expect("write esmd.toml");
    (dir, path)
}

/// `esmd <subcommand> --config <path>` in `dir`, with a fixed test AWS environment (no
/// `AWS_*` or `ESMD_*` variable of the machine, no profile files) and plain-text logs
/// (`NO_COLOR`), so that [`Esmd::wait_for_log`] can match `key=value`.
fn esmd_command(dir: &Path, subcommand: &str, config_path: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_esmd"));
    command
        .arg(subcommand)
        .arg("--config")
        .arg(config_path)
        .current_dir(dir);
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str.starts_with("AWS_") || name_str.starts_with("ESMD_") {
            command.env_remove(&name);
        }
    }
    command
        .env("AWS_CONFIG_FILE", dir.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("aws-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("RUST_LOG", "esmd=debug")
        .env("NO_COLOR", "1");
    command
}

/// One `/metrics` text.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the series `name` whose labels are exactly `labels`; 0 when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<&str, &str> = labels.iter().copied().collect();
        self.series(name)
            .find(|(series, _)| *series == wanted)
            .map_or(0.0, |(_, value)| value)
    }

    /// Every series of `name`: its labels and value.
    fn series<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (BTreeMap<&'a str, &'a str>, f64)> + 'a {
        self.0.lines().filter_map(move |line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{')?;
            let labels = rest
                .strip_suffix('}')?
                .split(',')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key, value.trim_matches('"')))
                })
                .collect();
            (metric == name).then(|| (labels, value.parse().unwrap()))
        })
    }

    /// `name{mapping=..,source=..}`.
    pub fn of(&self, name: &str, mapping: &str, source: &str) -> f64 {
        self.value(name, &[("mapping", mapping), ("source", source)])
    }

    pub fn labelled(&self, name: &str, mapping: &str, source: &str, key: &str, value: &str) -> f64 {
        self.value(
            name,
            &[("mapping", mapping), ("source", source), (key, value)],
        )
    }

    /// The sum of the series `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name)
            .filter(|(series, _)| labels.iter().all(|(k, v)| series.get(k) == Some(v)))
            .map(|(_, value)| value)
            .sum()
    }
}

/// `GET {admin}/metrics`, when it answers 200.
pub async fn scrape_metrics(admin: &str) -> Option<Metrics> {
    let response = reqwest::get(format!("{admin}/metrics")).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    Some(Metrics(response.text().await.ok()?))
}

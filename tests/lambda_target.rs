//! The `lambda` target end to end: the real esmd binary polls moto's SQS and invokes a
//! function through the Lambda Invoke API of moto's simple (Docker-free) Lambda backend.
//!
//! moto does not record invocations, so esmd reaches moto's Lambda through an
//! [`InvokeRecorder`]: a reverse proxy that forwards every request to moto and records each
//! Invoke call with moto's answer. moto's simple backend echoes the event unless answers
//! were queued with `POST /moto-api/static/lambda-simple/response` (one per invoke, in
//! order, for any function name). Its only `X-Amz-Function-Error` comes from a queued answer
//! above ~6 MB, which it replaces by a `Function.ResponseSizeTooLarge` error, as AWS does.
//! moto sends no `X-Amz-Executed-Version`, so the recorder adds the headers AWS would: that
//! version and a fresh `x-amzn-RequestId` per invoke.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_lambda::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, Runtime};
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::streams::{create_stream, put_records};
use common::{Esmd, Moto, Queue, message_body, random_name, receive_count, wait_until};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const LONG: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_secs(30);

/// The function's code; moto's simple backend never runs it.
const HANDLER_PY: &[u8] = b"def handler(event, context):\n    return None\n";

/// Above the payload size moto's simple backend lets through (`sys.getsizeof` > 6,000,000).
const OVERSIZED_RESPONSE: usize = 6_000_000;

// ---------------------------------------------------------------------------------------
// moto's Lambda

/// moto's Lambda switched to its simple backend: no Docker, invocations answer at once.
struct MotoLambda {
    endpoint: String,
    http: reqwest::Client,
    client: aws_sdk_lambda::Client,
}

impl MotoLambda {
    /// Switches `moto` to the simple Lambda backend (`use_docker = false`).
    async fn simple(moto: &Moto) -> MotoLambda {
        let lambda = MotoLambda {
            endpoint: moto.endpoint.clone(),
            http: reqwest::Client::new(),
            client: lambda_client(&moto.endpoint),
        };
        lambda
            .post(
                "/moto-api/config",
                json!({"lambda": {"use_docker": false}}).to_string(),
            )
            .await;
        lambda
    }

    /// Creates a Python function `name` (with its IAM role, which moto requires), publishes
    /// version 1 and points alias `live` at it.
    async fn create_function(&self, name: &str) {
        let role_arn = self.create_role(&format!("{name}-role")).await;
        let code = FunctionCode::builder()
            .zip_file(Blob::new(stored_zip("index.py", HANDLER_PY)))
            .build();
        self.client
            .create_function()
            .function_name(name)
            .runtime(Runtime::Python312)
            .role(role_arn)
            .handler("index.handler")
            .code(code)
            .publish(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateFunction {name}: {e:?}"));
        self.client
            .create_alias()
            .function_name(name)
            .name("live")
            .function_version("1")
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateAlias {name}:live: {e:?}"));
    }

    /// Creates an IAM role Lambda may assume; returns its ARN. The Query API by hand, as
    /// the tests have no IAM SDK: moto routes on the service named in the credential scope.
    async fn create_role(&self, name: &str) -> String {
        let trust = json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }],
        });
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "CreateRole")
            .append_pair("Version", "2010-05-08")
            .append_pair("RoleName", name)
            .append_pair("AssumeRolePolicyDocument", &trust.to_string())
            .finish();
        let response = self
            .http
            .post(format!("{}/", self.endpoint))
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/iam/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .expect("CreateRole request");
        let status = response.status();
        let xml = response.text().await.expect("CreateRole response");
        assert!(status.is_success(), "CreateRole {name}: {status}: {xml}");
        let arn = xml
            .split_once("<Arn>")
            .and_then(|(_, rest)| rest.split_once("</Arn>"))
            .map(|(arn, _)| arn.to_string());
        arn.unwrap_or_else(|| panic!("CreateRole {name} returns no Arn: {xml}"))
    }

    /// Queues the bodies the next invocations answer with, one per invoke, in order.
    async fn queue_responses(&self, results: &[String]) {
        self.post(
            "/moto-api/static/lambda-simple/response",
            json!({ "results": results }).to_string(),
        )
        .await;
    }

    async fn post(&self, path: &str, body: String) {
        let response = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status();
        assert!(status.is_success(), "POST {path}: {status}");
    }
}

fn lambda_client(endpoint: &str) -> aws_sdk_lambda::Client {
    let config = aws_sdk_lambda::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "esmd-tests"))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

/// A zip archive holding one file, stored (not compressed).
fn stored_zip(name: &str, content: &[u8]) -> Vec<u8> {
    const DOS_DATE_1980_01_01: u16 = 0x21;
    let crc = crc32(content);
    let size = u32::try_from(content.len()).expect("a small file");
    let name_len = u16::try_from(name.len()).expect("a short name");
    // The fields a local file header and a central directory entry share, from "version
    // needed to extract" (2.0) through the extra field length.
    let mut common = Vec::new();
    for half in [20, 0, 0, 0, DOS_DATE_1980_01_01] {
        common.extend(u16::to_le_bytes(half));
    }
    for word in [crc, size, size] {
        common.extend(word.to_le_bytes());
    }
    common.extend(name_len.to_le_bytes());
    common.extend(0u16.to_le_bytes());

    let mut zip = Vec::new();
    zip.extend(0x0403_4b50u32.to_le_bytes());
    zip.extend(&common);
    zip.extend(name.as_bytes());
    zip.extend(content);

    let directory_offset = u32::try_from(zip.len()).expect("a small archive");
    zip.extend(0x0201_4b50u32.to_le_bytes());
    zip.extend(0x0314u16.to_le_bytes()); // made by: Unix, zip 2.0
    zip.extend(&common);
    zip.extend(0u16.to_le_bytes()); // comment length
    zip.extend(0u16.to_le_bytes()); // disk number
    zip.extend(0u16.to_le_bytes()); // internal attributes
    zip.extend((0o100_644u32 << 16).to_le_bytes()); // external attributes: rw-r--r--
    zip.extend(0u32.to_le_bytes()); // offset of the local header
    zip.extend(name.as_bytes());
    let directory_size = u32::try_from(zip.len()).expect("a small archive") - directory_offset;

    zip.extend(0x0605_4b50u32.to_le_bytes());
    for half in [0u16, 0, 1, 1] {
        zip.extend(half.to_le_bytes());
    }
    zip.extend(directory_size.to_le_bytes());
    zip.extend(directory_offset.to_le_bytes());
    zip.extend(0u16.to_le_bytes()); // comment length
    zip
}

/// CRC-32 (IEEE, reflected), as zip uses it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---------------------------------------------------------------------------------------
// InvokeRecorder

/// One Invoke API call that went through the [`InvokeRecorder`], with moto's answer.
#[derive(Clone, Debug)]
struct Invoke {
    function: String,
    query: Option<String>,
    invocation_type: Option<String>,
    event: Value,
    status: StatusCode,
    function_error: Option<String>,
    response: String,
    /// The `x-amzn-RequestId` the recorder answered with.
    request_id: String,
    /// The `X-Amz-Executed-Version` the recorder answered with.
    executed_version: String,
}

impl Invoke {
    fn records(&self) -> Vec<Value> {
        self.event["Records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn message_ids(&self) -> Vec<String> {
        self.records()
            .iter()
            .map(|r| r["messageId"].as_str().expect("messageId").to_string())
            .collect()
    }
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    invokes: Arc<Mutex<Vec<Invoke>>>,
}

/// A reverse proxy on a loopback port in front of moto that records every Lambda Invoke
/// call once moto has answered it. Stops listening on drop.
struct InvokeRecorder {
    endpoint: String,
    invokes: Arc<Mutex<Vec<Invoke>>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl InvokeRecorder {
    async fn start(upstream: &str) -> InvokeRecorder {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .expect("bind the invoke recorder");
        let port = listener.local_addr().expect("listener address").port();
        let proxy = Proxy {
            upstream: upstream.to_string(),
            http: reqwest::Client::new(),
            invokes: Arc::default(),
        };
        let invokes = proxy.invokes.clone();
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let shutdown = common::serve(listener, app, "invoke recorder");
        InvokeRecorder {
            endpoint: format!("http://127.0.0.1:{port}"),
            invokes,
            shutdown: Some(shutdown),
        }
    }

    /// Every answered Invoke call so far, in the order moto answered them.
    fn invokes(&self) -> Vec<Invoke> {
        self.invokes.lock().unwrap().clone()
    }

    /// Waits until at least `n` Invoke calls were answered; returns all of them.
    async fn wait_invokes(&self, n: usize, timeout: Duration) -> Vec<Invoke> {
        wait_until(&format!("{n} Invoke calls"), timeout, || {
            let all = self.invokes();
            async move { (all.len() >= n).then_some(all) }
        })
        .await
    }
}

impl Drop for InvokeRecorder {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Hop-by-hop and framing headers the proxy must not copy.
fn strip_hop_headers(headers: &mut HeaderMap) {
    for name in [HOST, CONTENT_LENGTH, CONNECTION, TRANSFER_ENCODING] {
        headers.remove(name);
    }
}

/// The function named by an Invoke path, `/2015-03-31/functions/NAME/invocations` (as
/// sent: the tests' function names need no percent-decoding).
fn invoked_function(path: &str) -> Option<String> {
    path.strip_prefix("/2015-03-31/functions/")?
        .strip_suffix("/invocations")
        .map(str::to_string)
}

/// The version Lambda reports having run for an Invoke `query`: the tests' one alias,
/// `live`, points at version 1 (see [`MotoLambda::create_function`]).
fn executed_version(query: Option<&str>) -> String {
    match query.and_then(|q| q.strip_prefix("Qualifier=")) {
        None => "$LATEST".to_string(),
        Some("live") => "1".to_string(),
        Some(version) => version.to_string(),
    }
}

fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::BAD_REQUEST, "unreadable request body").into_response();
    };
    let target = format!(
        "{}{}",
        proxy.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut headers = parts.headers.clone();
    strip_hop_headers(&mut headers);
    let upstream = proxy
        .http
        .request(parts.method.clone(), target)
        .headers(headers)
        .body(body.clone())
        .send()
        .await;
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(err) => return (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    };
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    let answer: Bytes = match upstream.bytes().await {
        Ok(answer) => answer,
        Err(err) => return (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    };
    if let Some(function) = invoked_function(parts.uri.path()) {
        let query = parts.uri.query().map(str::to_string);
        let request_id = uuid::Uuid::new_v4().to_string();
        let executed_version = executed_version(query.as_deref());
        for (name, value) in [
            ("x-amzn-requestid", &request_id),
            ("x-amz-executed-version", &executed_version),
        ] {
            headers.insert(name, value.parse().expect("a valid header value"));
        }
        let invoke = Invoke {
            function,
            query,
            invocation_type: header_value(&parts.headers, "x-amz-invocation-type"),
            event: serde_json::from_slice(&body).unwrap_or(Value::Null),
            status,
            function_error: header_value(&headers, "x-amz-function-error"),
            response: String::from_utf8_lossy(&answer).into_owned(),
            request_id,
            executed_version,
        };
        proxy.invokes.lock().unwrap().push(invoke);
    }
    strip_hop_headers(&mut headers);
    let mut response = (status, answer).into_response();
    response.headers_mut().extend(headers);
    response
}

// ---------------------------------------------------------------------------------------
// helpers

/// Every delivered body with the receive counts it was delivered with, in order.
fn deliveries(invokes: &[Invoke]) -> BTreeMap<String, Vec<u32>> {
    let mut deliveries: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for record in invokes.iter().flat_map(Invoke::records) {
        deliveries
            .entry(message_body(&record))
            .or_default()
            .push(receive_count(&record));
    }
    deliveries
}

async fn queue_total(moto: &Moto, queue: &Queue) -> usize {
    let (visible, in_flight) = moto.queue_depth(queue).await;
    visible + in_flight
}

async fn wait_total(moto: &Moto, queue: &Queue, total: usize, timeout: Duration) {
    wait_until(
        &format!("{} to hold {total} messages", queue.name),
        timeout,
        || async { (queue_total(moto, queue).await == total).then_some(()) },
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// tests

#[test]
fn the_function_zip_is_a_valid_archive() {
    const CHECK: &str = "import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
assert z.testzip() is None
sys.stdout.buffer.write(z.read('index.py'))
";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("function.zip");
    std::fs::write(&path, stored_zip("index.py", HANDLER_PY)).unwrap();
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv-emu/bin/python");
    let check = std::process::Command::new(python)
        .args(["-c", CHECK])
        .arg(&path)
        .output()
        .expect("run the venv's python (scripts/moto install)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(
        check.stdout, HANDLER_PY,
        "python reads back what was stored"
    );
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "the CRC-32 check value");
}

#[tokio::test]
async fn a_function_without_a_functions_entry_is_invoked_by_name_and_its_batch_deleted() {
    let moto = Moto::start().await;
    let lambda = MotoLambda::simple(&moto).await;
    let function = random_name("orders");
    lambda.create_function(&function).await;
    let queue = moto.create_queue(&random_name("orders"), &[]).await;
    let bodies: Vec<String> = (0..5).map(|i| format!("order-{i}")).collect();
    moto.send_batch(&queue, &bodies).await;
    // SQS and Lambda both go to the [aws] endpoint: the recorder, in front of moto.
    let recorder = InvokeRecorder::start(&moto.endpoint).await;
    let _esmd = Esmd::start(&format!(
        r#"
[aws]
region = "us-east-1"
endpoint_url = "{endpoint}"

[[mappings]]
function_name = "{function}"
event_source_arn = "{arn}"
batch_size = 10
maximum_batching_window_in_seconds = 1
"#,
        endpoint = recorder.endpoint,
        arn = queue.arn,
    ));

    recorder.wait_invokes(1, SHORT).await;
    wait_total(&moto, &queue, 0, SHORT).await;
    let invokes = recorder.invokes();
    for invoke in &invokes {
        assert_eq!(invoke.function, function, "invoked by the mapping's name");
        assert_eq!(invoke.query, None, "no qualifier");
        assert_eq!(invoke.invocation_type.as_deref(), Some("RequestResponse"));
        assert_eq!(invoke.status, StatusCode::OK);
        assert_eq!(invoke.function_error, None);
        let echoed: Value = serde_json::from_str(&invoke.response).expect("a JSON answer");
        assert_eq!(echoed, invoke.event, "moto echoes the event");
        for record in invoke.records() {
            assert_eq!(record["eventSource"], "aws:sqs");
            assert_eq!(record["eventSourceARN"], queue.arn.as_str());
        }
    }
    let expected: BTreeMap<String, Vec<u32>> =
        bodies.iter().map(|b| (b.clone(), vec![1])).collect();
    assert_eq!(
        deliveries(&invokes),
        expected,
        "each message delivered once, then deleted"
    );
}

#[tokio::test]
async fn reported_item_failures_come_back_and_the_rest_is_deleted_after_the_first_invoke() {
    let moto = Moto::start().await;
    let lambda = MotoLambda::simple(&moto).await;
    let function = random_name("billing");
    lambda.create_function(&function).await;
    let queue = moto
        .create_queue(&random_name("invoices"), &[("VisibilityTimeout", "1")])
        .await;
    let ids = moto
        .send_batch(&queue, &["inv-0", "inv-1", "inv-2", "inv-3"])
        .await;
    let failed = ids[1].clone();
    lambda
        .queue_responses(&[
            json!({"batchItemFailures": [{"itemIdentifier": failed}]}).to_string(),
            json!({"batchItemFailures": []}).to_string(),
        ])
        .await;
    // SQS straight to moto; only the function's own endpoint goes through the recorder.
    let recorder = InvokeRecorder::start(&moto.endpoint).await;
    let _esmd = Esmd::start(&format!(
        r#"
[aws]
region = "us-east-1"
endpoint_url = "{moto}"

[functions.x]
lambda = {{ function_name = "{function}", qualifier = "live", endpoint_url = "{recorder}" }}

[[mappings]]
function_name = "x"
event_source_arn = "{arn}"
batch_size = 10
maximum_batching_window_in_seconds = 1
function_response_types = ["ReportBatchItemFailures"]
"#,
        moto = moto.endpoint,
        recorder = recorder.endpoint,
        arn = queue.arn,
    ));

    let first = recorder.wait_invokes(1, SHORT).await.remove(0);
    let mut in_batch = first.message_ids();
    in_batch.sort();
    let mut sent = ids.clone();
    sent.sort();
    assert_eq!(in_batch, sent, "the first invoke carries the whole backlog");
    assert_eq!(first.function, function, "the entry's function_name");
    assert_eq!(first.query.as_deref(), Some("Qualifier=live"));
    assert!(first.response.contains(&failed), "{}", first.response);
    // The three that succeeded are deleted; the reported one stays until it comes back.
    wait_total(&moto, &queue, 1, SHORT).await;
    let second = recorder.wait_invokes(2, SHORT).await.remove(1);
    assert_eq!(
        second.message_ids(),
        vec![failed.clone()],
        "only the reported message returns"
    );
    assert_eq!(receive_count(&second.records()[0]), 2);
    wait_total(&moto, &queue, 0, SHORT).await;

    let invokes = recorder.invokes();
    assert_eq!(invokes.len(), 2, "{invokes:#?}");
    assert!(invokes.iter().all(|i| i.function_error.is_none()));
    let expected = BTreeMap::from([
        ("inv-0".to_string(), vec![1]),
        ("inv-1".to_string(), vec![1, 2]),
        ("inv-2".to_string(), vec![1]),
        ("inv-3".to_string(), vec![1]),
    ]);
    assert_eq!(deliveries(&invokes), expected);
}

#[tokio::test]
async fn a_function_error_from_the_invoke_api_deletes_nothing() {
    let moto = Moto::start().await;
    let lambda = MotoLambda::simple(&moto).await;
    let function = random_name("ledger");
    lambda.create_function(&function).await;
    let queue = moto
        .create_queue(&random_name("ledger"), &[("VisibilityTimeout", "1")])
        .await;
    let bodies = ["a", "b", "c"];
    moto.send_batch(&queue, &bodies).await;
    // The first invoke answers with moto's only function error; the next ones echo the event.
    // That answer carries both `X-Amz-Function-Error` and an error-object body, and either
    // alone makes a function error, so this test cannot tell the two apart (the classifier's
    // unit tests do).
    lambda
        .queue_responses(&["x".repeat(OVERSIZED_RESPONSE)])
        .await;
    let recorder = InvokeRecorder::start(&moto.endpoint).await;
    let _esmd = Esmd::start(&format!(
        r#"
[aws]
region = "us-east-1"
endpoint_url = "{moto}"

[functions.ledger]
lambda = {{ function_name = "{function}", endpoint_url = "{recorder}" }}

[[mappings]]
function_name = "ledger"
event_source_arn = "{arn}"
batch_size = 10
maximum_batching_window_in_seconds = 1
function_response_types = ["ReportBatchItemFailures"]
"#,
        moto = moto.endpoint,
        recorder = recorder.endpoint,
        arn = queue.arn,
    ));

    let first = recorder.wait_invokes(1, SHORT).await.remove(0);
    assert_eq!(
        first.records().len(),
        3,
        "the first invoke carries the whole backlog"
    );
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.function_error.as_deref(), Some("Unhandled"));
    assert!(
        first.response.contains("Function.ResponseSizeTooLarge"),
        "{}",
        first.response
    );
    let expected: BTreeMap<String, Vec<u32>> =
        bodies.iter().map(|b| (b.to_string(), vec![1, 2])).collect();
    wait_until("every message delivered again", LONG, || {
        let seen = deliveries(&recorder.invokes());
        let done = seen == expected;
        async move { done.then_some(()) }
    })
    .await;
    wait_total(&moto, &queue, 0, LONG).await;

    let invokes = recorder.invokes();
    assert!(invokes[1..].iter().all(|i| i.function_error.is_none()));
    assert_eq!(
        deliveries(&invokes),
        expected,
        "every message of the failed batch came back once, then was deleted"
    );
}

#[tokio::test]
async fn a_failure_record_names_the_services_request_id_and_executed_version() {
    let moto = Moto::start().await;
    let lambda = MotoLambda::simple(&moto).await;
    let function = random_name("audit");
    lambda.create_function(&function).await;
    lambda
        .queue_responses(&[json!({"errorType": "Boom", "errorMessage": "no"}).to_string()])
        .await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("audit"), 1).await;
    put_records(&kinesis, &stream, &[("k".to_string(), b"r0".to_vec())]).await;
    let recorder = InvokeRecorder::start(&moto.endpoint).await;
    let state = tempfile::tempdir().unwrap();
    let destination = state.path().join("failures.jsonl");
    let _esmd = Esmd::start(&format!(
        r#"
[aws]
region = "us-east-1"
endpoint_url = "{moto}"
[state]
dir = "{state}"

[functions.audit]
lambda = {{ function_name = "{function}", qualifier = "live", endpoint_url = "{recorder}" }}

[[mappings]]
function_name = "audit"
event_source_arn = "{arn}"
starting_position = "TRIM_HORIZON"
idle_poll_interval_ms = 50
maximum_retry_attempts = 0
destination_config = {{ on_failure = {{ destination = "file://{destination}" }} }}
"#,
        moto = moto.endpoint,
        state = state.path().display(),
        recorder = recorder.endpoint,
        arn = stream.arn,
        destination = destination.display(),
    ));

    let record: Value = wait_until("a failure record", LONG, || {
        let first_line = std::fs::read_to_string(&destination)
            .ok()
            .and_then(|text| text.lines().next().map(str::to_string));
        async move { first_line.map(|line| serde_json::from_str(&line).expect("a JSON line")) }
    })
    .await;
    let invokes = recorder.invokes();
    assert_eq!(invokes.len(), 1, "{invokes:#?}");
    assert_eq!(invokes[0].query.as_deref(), Some("Qualifier=live"));
    assert_eq!(
        record["requestContext"]["requestId"],
        invokes[0].request_id.as_str(),
        "the service's request id: {record}"
    );
    assert_eq!(
        record["responseContext"]["executedVersion"],
        invokes[0].executed_version.as_str(),
        "the version the service ran, not the alias: {record}"
    );
    assert_eq!(invokes[0].executed_version, "1");
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(
        record["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
}

//! esmd beside `cargo lambda watch`: moto → esmd → `cargo lambda watch` → the example
//! function in `examples/rust-function`, a real Rust function on `lambda_runtime`.
//!
//! The function lists records saying `fail` in `batchItemFailures` and fails the whole
//! invocation (HTTP 500 with the runtime's error body) for a record saying `crash`. esmd
//! reaches it through an [`InvokeRecorder`], a proxy that records each event and answer:
//! as a `url` target for SQS, Kinesis and DynamoDB Streams, and as a `lambda` target (the
//! Invoke API with a qualifier) through an endpoint override.
//!
//! Needs `scripts/cargo-lambda install` (scripts/test runs it). The function is built once
//! per test binary before the first `cargo lambda watch` starts, in its own target dir.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::streams::{Stream, create_stream, create_table_with_stream, put_item, put_record};
use common::{Esmd, Metrics, Moto, Queue, random_name, scrape_metrics, start_emulator, wait_until};
use serde_json::{Value, json};
use tokio::sync::oneshot;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The example's binary: `cargo lambda watch` serves it under this name.
const FUNCTION: &str = "esm-handler";
/// Where the example is invoked, below an endpoint.
const INVOKE_PATH: &str = "/2015-03-31/functions/esm-handler/invocations";
const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(90);
/// The first build of the example compiles ~100 crates; a cold CI machine with a busy
/// second core needs a few minutes.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

// ---------------------------------------------------------------------------------------
// cargo lambda watch

fn example_dir() -> PathBuf {
    Path::new(REPO).join("examples/rust-function")
}

/// Builds the example once per test binary, so that `cargo lambda watch`, which runs
/// `cargo run` on the first invoke, finds it built. Panics with cargo's output if it fails.
/// Blocks its thread: the other tests wait here for the same build anyway.
fn build_example_once() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let log = tempfile::NamedTempFile::new().expect("create the build log");
        let build = Command::new("cargo")
            .args(["build", "--quiet", "--manifest-path", "Cargo.toml"])
            .current_dir(example_dir())
            .env("CARGO_TARGET_DIR", example_dir().join("target"))
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("reopen the build log"))
            .stderr(log.reopen().expect("reopen the build log"))
            .spawn()
            .expect("run cargo build for the example");
        // a thread waits for the build; this one waits for its word, up to the limit
        let pid = build.id();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut build = build;
            let _ = done.send(build.wait());
        });
        let status = match finished.recv_timeout(BUILD_TIMEOUT) {
            Ok(status) => status.expect("wait for cargo build"),
            Err(_) => {
                let _ = Command::new("kill").arg(pid.to_string()).status();
                panic!("building the example took over {BUILD_TIMEOUT:?}");
            }
        };
        let output = std::fs::read_to_string(log.path()).unwrap_or_default();
        assert!(status.success(), "building the example failed:\n{output}");
    });
}

/// `cargo lambda watch` serving the example on a loopback port, in a process group of its
/// own (it runs `cargo run`, which runs the function); the group is killed on drop.
struct CargoLambda {
    /// `http://127.0.0.1:PORT`: the Invoke API's endpoint.
    endpoint: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl CargoLambda {
    async fn start() -> CargoLambda {
        let binary = Path::new(REPO).join(".venv-emu/bin/cargo-lambda");
        assert!(
            binary.exists(),
            "cargo-lambda is not installed ({} is missing): run scripts/test or scripts/cargo-lambda install",
            binary.display()
        );
        build_example_once();
        let http = reqwest::Client::new();
        let (port, child, log) = start_emulator(
            "cargo lambda watch",
            SHORT,
            |port, log| {
                Command::new(&binary)
                    .args(["lambda", "watch", "--ignore-changes"])
                    .args(["--invoke-address", "127.0.0.1"])
                    .args(["--invoke-port", &port.to_string()])
                    .current_dir(example_dir())
                    .env("CARGO_TARGET_DIR", example_dir().join("target"))
                    .process_group(0)
                    .stdin(Stdio::null())
                    .stdout(log.reopen().expect("reopen the cargo lambda log"))
                    .stderr(log.reopen().expect("reopen the cargo lambda log"))
                    .spawn()
                    .expect("spawn cargo lambda watch")
            },
            // any HTTP answer: the server is up (the function starts on the first invoke)
            |endpoint| {
                let probe = http.get(format!("{endpoint}/")).send();
                async move { probe.await.is_ok() }
            },
        )
        .await;
        let watch = CargoLambda {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            log,
        };
        watch.warm_up(&http).await;
        watch
    }

    /// Invokes the function with an SQS event of one good message until it answers (the
    /// first invoke starts it); the answer must be a success.
    async fn warm_up(&self, http: &reqwest::Client) {
        let event = json!({"Records": [{
            "eventSource": "aws:sqs",
            "messageId": "warm-up",
            "body": "warm-up",
        }]});
        let answer = wait_until("the example function to answer", LONG, || {
            let request = http
                .post(format!("{}{INVOKE_PATH}", self.endpoint))
                .header("content-type", "application/json")
                .body(event.to_string())
                .send();
            async move {
                let response = request.await.ok()?;
                let status = response.status();
                Some((status, response.text().await.ok()?))
            }
        })
        .await;
        assert_eq!(
            answer,
            (StatusCode::OK, r#"{"batchItemFailures":[]}"#.to_string()),
            "the warm-up invocation; cargo lambda log:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for CargoLambda {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// InvokeRecorder

/// One invocation through the [`InvokeRecorder`]: the event and the function's answer.
#[derive(Clone, Debug)]
struct Invoke {
    /// The path and query esmd invoked.
    path: String,
    event: Value,
    status: StatusCode,
    response: String,
}

impl Invoke {
    fn records(&self) -> Vec<Value> {
        self.event["Records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Each record's text: the SQS body, the decoded Kinesis data or a DynamoDB `note`.
    fn texts(&self) -> Vec<String> {
        self.records().iter().map(text).collect()
    }
}

fn text(record: &Value) -> String {
    if let Some(body) = record["body"].as_str() {
        return body.to_string();
    }
    if let Some(note) = record["dynamodb"]["NewImage"]["note"]["S"].as_str() {
        return note.to_string();
    }
    let data = record["kinesis"]["data"]
        .as_str()
        .expect("SQS, Kinesis or DynamoDB");
    String::from_utf8(BASE64.decode(data).expect("base64 data")).expect("utf-8 test data")
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    invokes: Arc<Mutex<Vec<Invoke>>>,
}

/// A loopback endpoint in front of `cargo lambda watch` that forwards each request to the
/// same path and records it with the answer. Stops listening on drop.
struct InvokeRecorder {
    endpoint: String,
    invokes: Arc<Mutex<Vec<Invoke>>>,
    _shutdown: oneshot::Sender<()>,
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
        InvokeRecorder {
            endpoint: format!("http://127.0.0.1:{port}"),
            invokes,
            _shutdown: common::serve(listener, app, "invoke recorder"),
        }
    }

    /// The example's invoke URL through the recorder, for `url` targets.
    fn url(&self) -> String {
        format!("{}{INVOKE_PATH}", self.endpoint)
    }

    fn invokes(&self) -> Vec<Invoke> {
        self.invokes.lock().unwrap().clone()
    }

    /// Waits until some invocation carried a record whose text is `text`; returns all.
    async fn wait_text(&self, text: &str, timeout: Duration) -> Vec<Invoke> {
        wait_until(&format!("an invocation with {text:?}"), timeout, || {
            let all = self.invokes();
            let seen = all.iter().any(|i| i.texts().iter().any(|t| t == text));
            async move { seen.then_some(all) }
        })
        .await
    }
}

/// Forwards the event to the same path and query upstream, and records the answer. Only
/// the headers `cargo lambda watch` reads are forwarded.
async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let Ok(body) = axum::body::to_bytes(request.into_body(), usize::MAX).await else {
        return (StatusCode::BAD_REQUEST, "unreadable request body").into_response();
    };
    let upstream = proxy
        .http
        .post(format!("{}{path}", proxy.upstream))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await;
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(err) => return (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    };
    let status = upstream.status();
    let answer: Bytes = match upstream.bytes().await {
        Ok(answer) => answer,
        Err(err) => return (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    };
    proxy.invokes.lock().unwrap().push(Invoke {
        path,
        event: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status,
        response: String::from_utf8_lossy(&answer).into_owned(),
    });
    (status, answer).into_response()
}

// ---------------------------------------------------------------------------------------
// helpers

/// How many invocations carried a record whose text is `text`.
fn deliveries(invokes: &[Invoke], text: &str) -> usize {
    invokes
        .iter()
        .filter(|i| i.texts().iter().any(|t| t == text))
        .count()
}

/// An `[admin]` section on a free loopback port, and the endpoint it serves.
fn admin() -> (String, String) {
    let port = common::free_port();
    (
        format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n"),
        format!("http://127.0.0.1:{port}"),
    )
}

/// Waits until esmd's `/metrics` counted `expected` invocations with `outcome`, then checks
/// that none could not reach the function.
async fn wait_outcomes(admin: &str, outcome: &str, expected: f64) {
    let counted = |metrics: &Metrics, outcome: &str| {
        metrics.sum(esmd::telemetry::INVOCATIONS, &[("outcome", outcome)])
    };
    let metrics = wait_until(
        &format!("{expected} invocations with outcome {outcome}"),
        LONG,
        || async {
            let metrics = scrape_metrics(admin).await?;
            (counted(&metrics, outcome) == expected).then_some(metrics)
        },
    )
    .await;
    assert_eq!(counted(&metrics, "could_not_invoke"), 0.0, "{}", metrics.0);
}

async fn wait_depths(moto: &Moto, queue: &Queue, dlq: &Queue, total: usize, dead: usize) {
    wait_until(
        &format!("{total} message(s) left in the queue, {dead} in the DLQ"),
        LONG,
        || async {
            let (visible, in_flight) = moto.queue_depth(queue).await;
            let (dead_now, _) = moto.queue_depth(dlq).await;
            (visible + in_flight == total && dead_now == dead).then_some(())
        },
    )
    .await;
}

fn dlq_bodies(messages: &[aws_sdk_sqs::types::Message]) -> Vec<String> {
    let mut bodies: Vec<String> = messages
        .iter()
        .map(|m| m.body().unwrap_or_default().to_string())
        .collect();
    bodies.sort();
    bodies
}

fn stream_config(moto: &Moto, state: &Path, stream: &Stream, url: &str, failures: &Path) -> String {
    format!(
        r#"
[aws]
region = "us-east-1"
endpoint_url = "{moto}"

[state]
dir = "{state}"

[functions.handler]
url = "{url}"

[[mappings]]
function_name = "handler"
event_source_arn = "{arn}"
starting_position = "TRIM_HORIZON"
batch_size = 10
maximum_batching_window_in_seconds = 1
idle_poll_interval_ms = 100
maximum_retry_attempts = 1
function_response_types = ["ReportBatchItemFailures"]
destination_config = {{ on_failure = {{ destination = "file://{failures}" }} }}
"#,
        moto = moto.endpoint,
        state = state.display(),
        arn = stream.arn,
        failures = failures.display(),
    )
}

async fn wait_failure_records(path: &Path, n: usize) -> Vec<Value> {
    wait_until(&format!("{n} failure record(s)"), LONG, || {
        let lines: Vec<Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect();
        async move { (lines.len() >= n).then_some(lines) }
    })
    .await
}

// ---------------------------------------------------------------------------------------
// tests

#[tokio::test]
async fn sqs_partial_failure_and_function_error_through_cargo_lambda_watch() {
    let moto = Moto::start().await;
    let watch = CargoLambda::start().await;
    let recorder = InvokeRecorder::start(&watch.endpoint).await;
    let (queue, dlq) = moto.queue_with_dlq(1, 2).await;
    moto.send_batch(&queue, &["ok-0", "ok-1", "please fail", "ok-3"])
        .await;
    let (admin_toml, admin) = admin();
    let _esmd = Esmd::start(&format!(
        r#"
{admin_toml}
[aws]
region = "us-east-1"
endpoint_url = "{moto}"

[functions.orders]
url = "{url}"

[[mappings]]
function_name = "orders"
event_source_arn = "{arn}"
batch_size = 10
maximum_batching_window_in_seconds = 1
function_response_types = ["ReportBatchItemFailures"]
"#,
        moto = moto.endpoint,
        url = recorder.url(),
        arn = queue.arn,
    ));

    // A partial failure: the reported message comes back until the queue moves it to the
    // DLQ after two receives; the others are deleted after their one delivery.
    wait_depths(&moto, &queue, &dlq, 0, 1).await;
    let invokes = recorder.invokes();
    let first = &invokes[0];
    assert_eq!(first.texts(), ["ok-0", "ok-1", "please fail", "ok-3"]);
    assert_eq!(first.status, StatusCode::OK);
    let failed_id = first.records()[2]["messageId"].clone();
    let answer: Value = serde_json::from_str(&first.response).expect("a JSON answer");
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": failed_id}]})
    );
    for ok in ["ok-0", "ok-1", "ok-3"] {
        assert_eq!(
            deliveries(&invokes, ok),
            1,
            "{ok} is deleted after one delivery"
        );
    }
    assert_eq!(deliveries(&invokes, "please fail"), 2, "{invokes:#?}");
    wait_outcomes(&admin, "partial_failure", 2.0).await;

    // A function error: cargo lambda watch answers 500 with the runtime's error body, which
    // esmd takes as a function error (not "could not invoke"), so the message goes back to
    // the queue and, after its second receive, to the DLQ.
    moto.send(&queue, "crash").await;
    wait_depths(&moto, &queue, &dlq, 0, 2).await;
    let invokes = recorder.invokes();
    let crashes: Vec<&Invoke> = invokes.iter().filter(|i| i.texts() == ["crash"]).collect();
    assert_eq!(crashes.len(), 2, "{invokes:#?}");
    for crash in crashes {
        assert_eq!(crash.status, StatusCode::INTERNAL_SERVER_ERROR);
        let error: Value = serde_json::from_str(&crash.response).expect("a JSON error body");
        assert_eq!(error["errorType"], "Crash", "{error}");
    }
    wait_outcomes(&admin, "function_error", 2.0).await;
    let dead = moto.receive_all(&dlq, SHORT).await;
    assert_eq!(dlq_bodies(&dead), ["crash", "please fail"]);
}

#[tokio::test]
async fn kinesis_partial_failure_and_function_error_are_checkpointed_past() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let watch = CargoLambda::start().await;
    let recorder = InvokeRecorder::start(&watch.endpoint).await;
    let stream = create_stream(&kinesis, &random_name("clicks"), 1).await;
    let mut sequences = Vec::new();
    for text in ["ok-0", "ok-1", "please fail", "ok-3"] {
        sequences.push(put_record(&kinesis, &stream, "k", text.as_bytes()).await.1);
    }
    let state = tempfile::tempdir().unwrap();
    let failures = state.path().join("failures.jsonl");
    let config = stream_config(&moto, state.path(), &stream, &recorder.url(), &failures);
    let (admin_toml, admin) = admin();
    let mut esmd = Esmd::start(&format!("{admin_toml}{config}"));

    // A partial failure: the batch is retried once from the reported record, then the
    // rest of it goes to the destination.
    let records = wait_failure_records(&failures, 1).await;
    let invokes = recorder.invokes();
    let texts: Vec<Vec<String>> = invokes.iter().map(Invoke::texts).collect();
    assert_eq!(
        texts,
        [
            vec!["ok-0", "ok-1", "please fail", "ok-3"],
            vec!["please fail", "ok-3"]
        ],
        "retried from the reported record"
    );
    let partial = &records[0];
    assert_eq!(
        partial["KinesisBatchInfo"]["startSequenceNumber"],
        sequences[2].as_str()
    );
    assert_eq!(
        partial["KinesisBatchInfo"]["endSequenceNumber"],
        sequences[3].as_str()
    );
    assert_eq!(partial["responseContext"]["functionError"], Value::Null);
    assert_eq!(
        partial["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );

    // A function error (HTTP 500 from cargo lambda watch): invoked twice, then discarded.
    let crash = put_record(&kinesis, &stream, "k", b"crash").await.1;
    let records = wait_failure_records(&failures, 2).await;
    let crashed = &records[1];
    assert_eq!(
        crashed["KinesisBatchInfo"]["startSequenceNumber"],
        crash.as_str()
    );
    assert_eq!(crashed["responseContext"]["functionError"], "Unhandled");
    assert_eq!(crashed["requestContext"]["approximateInvokeCount"], 2);
    let invokes = recorder.invokes();
    assert_eq!(invokes.len(), 4, "{invokes:#?}");
    for invoke in &invokes[2..] {
        assert_eq!(invoke.texts(), ["crash"]);
        assert_eq!(invoke.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    wait_outcomes(&admin, "function_error", 2.0).await;

    // A restart resumes after the discarded records: only the new one is delivered.
    esmd.terminate();
    let status = esmd.wait_exit(SHORT).await;
    assert!(
        status.success(),
        "clean stop: {status:?}\n{}",
        esmd.stderr()
    );
    put_record(&kinesis, &stream, "k", b"after the restart").await;
    let _esmd = Esmd::start(&config);
    let invokes = recorder.wait_text("after the restart", LONG).await;
    assert_eq!(invokes.len(), 5, "{invokes:#?}");
    assert_eq!(invokes[4].texts(), ["after the restart"]);
    assert_eq!(invokes[4].status, StatusCode::OK);
}

#[tokio::test]
async fn the_lambda_target_invokes_cargo_lambda_watch_with_its_qualifier() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let watch = CargoLambda::start().await;
    let recorder = InvokeRecorder::start(&watch.endpoint).await;
    let stream = create_stream(&kinesis, &random_name("audit"), 1).await;
    let crash = put_record(&kinesis, &stream, "k", b"crash").await.1;
    let state = tempfile::tempdir().unwrap();
    let failures = state.path().join("failures.jsonl");
    let (admin_toml, admin) = admin();
    let _esmd = Esmd::start(&format!(
        r#"
{admin_toml}
[aws]
region = "us-east-1"
endpoint_url = "{moto}"

[state]
dir = "{state}"

[functions.audit]
lambda = {{ function_name = "{FUNCTION}", qualifier = "live", endpoint_url = "{recorder}" }}
max_concurrency = 1

[[mappings]]
function_name = "audit"
event_source_arn = "{arn}"
starting_position = "TRIM_HORIZON"
idle_poll_interval_ms = 100
maximum_retry_attempts = 0
destination_config = {{ on_failure = {{ destination = "file://{failures}" }} }}
"#,
        moto = moto.endpoint,
        state = state.path().display(),
        recorder = recorder.endpoint,
        arn = stream.arn,
        failures = failures.display(),
    ));

    // The Invoke API's 500 with the runtime's error body is a function error there too.
    let records = wait_failure_records(&failures, 1).await;
    let crashed = &records[0];
    assert_eq!(
        crashed["KinesisBatchInfo"]["startSequenceNumber"],
        crash.as_str()
    );
    assert_eq!(crashed["responseContext"]["functionError"], "Unhandled");
    assert_eq!(
        crashed["responseContext"]["executedVersion"], "live",
        "cargo lambda watch names no executed version: the qualifier stands in"
    );
    assert_eq!(crashed["requestContext"]["approximateInvokeCount"], 1);

    put_record(&kinesis, &stream, "k", b"ok").await;
    let invokes = recorder.wait_text("ok", LONG).await;
    let statuses: Vec<StatusCode> = invokes.iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::OK],
        "{invokes:#?}"
    );
    for invoke in &invokes {
        assert_eq!(invoke.path, format!("{INVOKE_PATH}?Qualifier=live"));
    }
    wait_outcomes(&admin, "function_error", 1.0).await;
}

#[tokio::test]
async fn a_dynamodb_partial_failure_through_cargo_lambda_watch() {
    let moto = Moto::start().await;
    let ddb = moto.dynamodb();
    let watch = CargoLambda::start().await;
    let recorder = InvokeRecorder::start(&watch.endpoint).await;
    let table = create_table_with_stream(&ddb, &random_name("items"), "NEW_AND_OLD_IMAGES").await;
    for (sk, note) in [("0", "ok-0"), ("1", "please fail"), ("2", "ok-2")] {
        let note = AttributeValue::S(note.into());
        put_item(&ddb, &table, "p", sk, &[("note", note)]).await;
    }
    let state = tempfile::tempdir().unwrap();
    let failures = state.path().join("failures.jsonl");
    let _esmd = Esmd::start(&format!(
        r#"
[aws]
region = "us-east-1"
endpoint_url = "{moto}"

[state]
dir = "{state}"

[functions.items]
url = "{url}"

[[mappings]]
function_name = "items"
event_source_arn = "{arn}"
starting_position = "TRIM_HORIZON"
batch_size = 10
maximum_batching_window_in_seconds = 1
maximum_retry_attempts = 0
function_response_types = ["ReportBatchItemFailures"]
destination_config = {{ on_failure = {{ destination = "file://{failures}" }} }}
"#,
        moto = moto.endpoint,
        state = state.path().display(),
        url = recorder.url(),
        arn = table.stream_arn,
        failures = failures.display(),
    ));

    // The function read esmd's event into aws_lambda_events' DynamoDB types (else it
    // would answer InvalidEvent) and reported the record by its sequence number.
    let records = wait_failure_records(&failures, 1).await;
    let invokes = recorder.invokes();
    assert_eq!(invokes.len(), 1, "{invokes:#?}");
    assert_eq!(invokes[0].texts(), ["ok-0", "please fail", "ok-2"]);
    assert_eq!(invokes[0].status, StatusCode::OK, "{}", invokes[0].response);
    let failed = invokes[0].records()[1]["dynamodb"]["SequenceNumber"].clone();
    let answer: Value = serde_json::from_str(&invokes[0].response).expect("a JSON answer");
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": failed}]})
    );
    let info = &records[0]["DDBStreamBatchInfo"];
    assert_eq!(info["startSequenceNumber"], failed, "{}", records[0]);
    assert_eq!(
        info["batchSize"], 2,
        "the reported record and the one after it"
    );
}

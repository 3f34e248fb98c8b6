//! The operational endpoint end to end: the daemon in process on moto with `[admin]`, and
//! the test reading `/metrics`, `/healthz` and `/mappings` as an operator would.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::streams::{Stream, create_stream, delete_stream, put_records};
use common::{FunctionServer, Moto, Reply, base_config, free_port, mapping, random_name};
use common::{Metrics, url_function, wait_until};
use esmd::config::Config;
use esmd::config::raw::{
    RawAdmin, RawConfig, RawDestinationConfig, RawFilter, RawFilterCriteria, RawMapping,
    RawOnFailure, RawStartingPosition,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const LONG: Duration = Duration::from_secs(120);

/// A daemon run in process, serving its admin endpoint on `admin`.
struct Running {
    admin: String,
    stop: oneshot::Sender<()>,
    run: JoinHandle<esmd::daemon::RunReport>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Starts `config` with `[admin]` on a free loopback port, unhealthy after 1 s.
    async fn start(config: RawConfig, dir: tempfile::TempDir) -> Running {
        let port = free_port();
        let config = RawConfig {
            admin: Some(RawAdmin {
                listen: Some(format!("127.0.0.1:{port}")),
                unhealthy_after_secs: Some(1),
                ..RawAdmin::default()
            }),
            ..config
        };
        let path = dir.path().join("esmd.toml");
        std::fs::write(&path, config.to_toml()).unwrap();
        let config = Config::load(&path).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(esmd::daemon::run(
            config,
            Duration::from_secs(30),
            esmd::daemon::RunUntil::default(),
            async {
                let _ = stopped.await;
            },
            std::future::pending(),
        ));
        let running = Running {
            admin: format!("http://127.0.0.1:{port}"),
            stop,
            run,
            _dir: dir,
        };
        wait_until("the admin endpoint to answer", LONG, || async {
            running.try_get("/healthz").await.map(|_| ())
        })
        .await;
        running
    }

    async fn try_get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.admin)).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    async fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .await
            .unwrap_or_else(|| panic!("GET {path} failed"))
    }

    async fn json(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path).await;
        let value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"));
        (status, value)
    }

    async fn metrics(&self) -> Metrics {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "{text}");
        Metrics(text)
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(LONG, self.run)
            .await
            .expect("the run stops")
            .unwrap();
    }
}

fn criteria(pattern: &str) -> Option<RawFilterCriteria> {
    Some(RawFilterCriteria {
        filters: vec![RawFilter {
            pattern: pattern.into(),
        }],
    })
}

/// A stream mapping of `stream` that discards a failed batch at once, one record a batch.
fn stream_mapping(uuid: &str, stream: &Stream, destination: Option<&Path>) -> RawMapping {
    mapping(
        "stream-f",
        &stream.arn,
        RawMapping {
            uuid: Some(uuid.into()),
            batch_size: Some(1),
            starting_position: Some(RawStartingPosition::TrimHorizon),
            maximum_retry_attempts: Some(0),
            idle_poll_interval_ms: Some(50),
            filter_criteria: criteria(r#"{"data":{"kind":["ok","bad"]}}"#),
            destination_config: destination.map(|path| RawDestinationConfig {
                on_failure: Some(RawOnFailure {
                    destination: format!("file://{}", path.display()),
                }),
            }),
            ..RawMapping::default()
        },
    )
}

#[tokio::test]
async fn each_counter_moves_by_exactly_what_happened() {
    let moto = Moto::start().await;
    // failed messages come back after a second
    let queue = moto
        .create_queue(&random_name("orders"), &[("VisibilityTimeout", "1")])
        .await;
    let stream = create_stream(&moto.kinesis(), &random_name("clicks"), 1).await;

    // the first delivery of a `fail` message is reported failed, the second succeeds
    let failed_once = Arc::new(Mutex::new(HashSet::new()));
    let sqs_function = FunctionServer::start(move |event| {
        let mut failed_once = failed_once.lock().unwrap();
        let failures: Vec<Value> = event["Records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|record| record["body"].as_str().is_some_and(|b| b.contains("fail")))
            .filter(|record| failed_once.insert(record["messageId"].to_string()))
            .map(|record| json!({"itemIdentifier": record["messageId"]}))
            .collect();
        Reply::json(&json!({ "batchItemFailures": failures }))
    })
    .await;
    // a record of kind `bad` raises
    let stream_function = FunctionServer::start(|event| {
        let bad = event["Records"].as_array().into_iter().flatten().any(|r| {
            let data = BASE64
                .decode(r["kinesis"]["data"].as_str().unwrap_or_default())
                .unwrap_or_default();
            String::from_utf8_lossy(&data).contains("bad")
        });
        if bad {
            Reply::function_error(r#"{"errorMessage":"bad record"}"#)
        } else {
            Reply::ok("null")
        }
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let discarded = dir.path().join("discarded.jsonl");
    let config = RawConfig {
        functions: [
            ("sqs-f".to_string(), url_function(&sqs_function.url())),
            ("stream-f".to_string(), url_function(&stream_function.url())),
        ]
        .into(),
        mappings: vec![
            mapping(
                "sqs-f",
                &queue.arn,
                RawMapping {
                    uuid: Some("orders".into()),
                    batch_size: Some(1),
                    function_response_types: vec!["ReportBatchItemFailures".into()],
                    filter_criteria: criteria(r#"{"body":{"kind":["keep","fail"]}}"#),
                    ..RawMapping::default()
                },
            ),
            stream_mapping("kept", &stream, Some(&discarded)),
            stream_mapping("dropped", &stream, None),
        ],
        ..base_config(&moto.endpoint, &state)
    };
    let esmd = Running::start(config, dir).await;

    moto.send_batch(
        &queue,
        &[
            r#"{"kind":"keep"}"#,
            r#"{"kind":"keep"}"#,
            r#"{"kind":"fail"}"#,
            r#"{"kind":"other"}"#,
            r#"{"kind":"other"}"#,
        ],
    )
    .await;
    let records: Vec<(String, Vec<u8>)> = [
        r#"{"kind":"ok"}"#,
        r#"{"kind":"bad"}"#,
        r#"{"kind":"skip"}"#,
    ]
    .iter()
    .map(|data| ("key".to_string(), data.as_bytes().to_vec()))
    .collect();
    put_records(&moto.kinesis(), &stream, &records).await;

    let metrics = wait_until("every record to be settled", LONG, || async {
        let metrics = esmd.metrics().await;
        let done = metrics.of(esmd::telemetry::DELETED, "orders", "sqs") >= 5.0
            && ["kept", "dropped"].iter().all(|m| {
                metrics.of(esmd::telemetry::INVOKED, m, "kinesis") >= 2.0
                    && metrics.of(esmd::telemetry::DESTINATION_DELIVERED, m, "kinesis")
                        + metrics.of(esmd::telemetry::DROPPED, m, "kinesis")
                        >= 1.0
            });
        let drained = moto.queue_depth(&queue).await == (0, 0);
        (done && drained).then_some(metrics)
    })
    .await;

    use esmd::telemetry::*;
    let sqs = |name| metrics.of(name, "orders", "sqs");
    // five received, the failed one again
    assert_eq!(sqs(POLLED), 6.0, "{}", metrics.0);
    assert_eq!(sqs(FILTERED_OUT), 2.0);
    // keep, keep, fail, fail again
    assert_eq!(sqs(INVOKED), 4.0);
    assert_eq!(sqs(FAILED_INVOKE), 1.0);
    // both filtered out, both kept, the failed one the second time
    assert_eq!(sqs(DELETED), 5.0);
    assert_eq!(sqs(DROPPED), 0.0);
    let outcome = |mapping, source, outcome| {
        metrics.labelled(INVOCATIONS, mapping, source, "outcome", outcome)
    };
    assert_eq!(outcome("orders", "sqs", "success"), 3.0);
    assert_eq!(outcome("orders", "sqs", "partial_failure"), 1.0);
    assert_eq!(
        metrics.of(&format!("{BATCH_SIZE}_count"), "orders", "sqs"),
        4.0
    );
    assert_eq!(
        metrics.of(&format!("{INVOCATION_DURATION}_count"), "orders", "sqs"),
        4.0
    );

    for (mapping, delivered, dropped) in [("kept", 1.0, 0.0), ("dropped", 0.0, 1.0)] {
        let stream = |name| metrics.of(name, mapping, "kinesis");
        assert_eq!(stream(POLLED), 3.0, "{mapping}");
        assert_eq!(stream(FILTERED_OUT), 1.0, "{mapping}");
        assert_eq!(stream(INVOKED), 2.0, "{mapping}");
        assert_eq!(stream(FAILED_INVOKE), 1.0, "{mapping}");
        assert_eq!(stream(DESTINATION_DELIVERED), delivered, "{mapping}");
        assert_eq!(stream(DROPPED), dropped, "{mapping}");
        assert_eq!(stream(DELETED), 0.0, "{mapping}");
        assert_eq!(stream(TRIM_GAPS), 0.0, "{mapping}");
        assert_eq!(outcome(mapping, "kinesis", "success"), 1.0, "{mapping}");
        assert_eq!(
            outcome(mapping, "kinesis", "function_error"),
            1.0,
            "{mapping}"
        );
        assert_eq!(
            metrics.labelled(
                DISCARDED,
                mapping,
                "kinesis",
                "condition",
                "RetryAttemptsExhausted"
            ),
            1.0,
            "{mapping}"
        );
        assert!(
            metrics.0.lines().any(|l| l.starts_with(&format!(
                "{ITERATOR_AGE}{{mapping=\"{mapping}\",source=\"kinesis\",shard=\"shardId-"
            ))),
            "an iterator age for the shard of {mapping}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&discarded).unwrap().lines().count(),
        1,
        "one failure record"
    );

    let (status, health) = esmd.json("/healthz").await;
    assert_eq!(
        (status, &health),
        (200, &json!({"status": "ok", "unhealthy": []}))
    );
    let (status, mappings) = esmd.json("/mappings").await;
    assert_eq!(status, 200);
    let orders = &mappings["mappings"][0];
    assert_eq!(orders["id"], "orders");
    assert_eq!(orders["event_source_arn"], queue.arn.as_str());
    assert_eq!(orders["function_name"], "sqs-f");
    assert_eq!(orders["state"], "Enabled");
    assert_eq!(orders["last_processing_result"], "OK");
    assert!(orders.get("shards").is_none(), "{orders}");
    let kept = &mappings["mappings"][1];
    assert_eq!(kept["id"], "kept");
    assert!(
        kept["last_processing_result"]
            .as_str()
            .unwrap()
            .starts_with("PROBLEM: Function call failed: function error (Unhandled)"),
        "the last batch raised: {kept}"
    );
    let shard = &kept["shards"][0];
    assert!(
        shard["shard_id"].as_str().unwrap().starts_with("shardId-"),
        "{kept}"
    );
    assert_eq!(shard["closed"], false);
    assert_eq!(shard["finished"], false);
    assert_eq!(shard["in_flight_batches"], 0);
    assert!(shard["iterator_age_ms"].is_u64(), "{shard}");
    wait_until("the checkpoint to pass the last record", LONG, || async {
        let (_, mappings) = esmd.json("/mappings").await;
        let checkpoint = mappings["mappings"][1]["shards"][0]["checkpoint"].clone();
        checkpoint.is_string().then_some(())
    })
    .await;
    esmd.stop().await;
}

#[tokio::test]
async fn a_deleted_queue_turns_healthz_503_until_it_is_back() {
    let moto = Moto::start().await;
    let name = random_name("health");
    let queue = moto.create_queue(&name, &[]).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = RawConfig {
        functions: [("f".to_string(), url_function(&function.url()))].into(),
        mappings: vec![
            mapping(
                "f",
                &queue.arn,
                RawMapping {
                    uuid: Some("orders".into()),
                    ..RawMapping::default()
                },
            ),
            mapping(
                "f",
                &queue.arn,
                RawMapping {
                    uuid: Some("off".into()),
                    enabled: false,
                    ..RawMapping::default()
                },
            ),
        ],
        ..base_config(&moto.endpoint, &dir.path().join("state"))
    };
    let esmd = Running::start(config, dir).await;
    let healthz = || async {
        let (status, body) = esmd.json("/healthz").await;
        Some((status, body))
    };
    wait_until("the mapping to run", LONG, || async {
        let (_, mappings) = esmd.json("/mappings").await;
        (mappings["mappings"][0]["state"] == "Enabled").then_some(())
    })
    .await;
    assert_eq!(healthz().await.unwrap().0, 200);
    let (_, mappings) = esmd.json("/mappings").await;
    assert_eq!(mappings["mappings"][1]["state"], "Disabled");

    moto.sqs()
        .delete_queue()
        .queue_url(&queue.url)
        .send()
        .await
        .unwrap();
    let body = wait_until("/healthz to turn 503", LONG, || async {
        let (status, body) = healthz().await?;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(
        body,
        json!({
            "status": "unhealthy",
            "unhealthy": [{"id": "orders", "reason": "the queue does not exist"}]
        })
    );
    let (_, mappings) = esmd.json("/mappings").await;
    assert_eq!(
        mappings["mappings"][0]["last_processing_result"],
        "PROBLEM: the queue does not exist"
    );

    moto.create_queue(&name, &[]).await;
    wait_until("/healthz to turn 200 again", LONG, || async {
        let (status, _) = healthz().await?;
        (status == 200).then_some(())
    })
    .await;
    esmd.stop().await;
}

#[tokio::test]
async fn a_deleted_stream_turns_healthz_503_until_it_is_back() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let name = random_name("health");
    let stream = create_stream(&kinesis, &name, 1).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let dir = tempfile::tempdir().unwrap();
    let config = RawConfig {
        functions: [("f".to_string(), url_function(&function.url()))].into(),
        mappings: vec![mapping(
            "f",
            &stream.arn,
            RawMapping {
                uuid: Some("clicks".into()),
                starting_position: Some(RawStartingPosition::TrimHorizon),
                idle_poll_interval_ms: Some(50),
                ..RawMapping::default()
            },
        )],
        ..base_config(&moto.endpoint, &dir.path().join("state"))
    };
    let esmd = Running::start(config, dir).await;
    wait_until("the shard to be read", LONG, || async {
        let (_, mappings) = esmd.json("/mappings").await;
        let clicks = &mappings["mappings"][0];
        (clicks["state"] == "Enabled" && clicks["shards"][0]["iterator_age_ms"].is_u64())
            .then_some(())
    })
    .await;
    assert_eq!(esmd.json("/healthz").await.0, 200);

    delete_stream(&kinesis, &stream).await;
    let body = wait_until("/healthz to turn 503", LONG, || async {
        let (status, body) = esmd.json("/healthz").await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["unhealthy"][0]["id"], "clicks", "{body}");
    let reason = body["unhealthy"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("cannot list the stream's shards: "),
        "{reason}"
    );

    let again = create_stream(&kinesis, &name, 1).await;
    put_records(&kinesis, &again, &[("k".into(), b"{}".to_vec())]).await;
    wait_until("/healthz to turn 200 again", LONG, || async {
        let (status, _) = esmd.json("/healthz").await;
        (status == 200).then_some(())
    })
    .await;
    wait_until("the new stream's record to be delivered", LONG, || async {
        (!function.records().is_empty()).then_some(())
    })
    .await;
    esmd.stop().await;
}

#[tokio::test]
async fn a_function_that_refuses_every_invocation_is_unhealthy_until_it_takes_one() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("refused"), &[]).await;
    let fixed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let function = FunctionServer::start({
        let fixed = fixed.clone();
        move |_| {
            if fixed.load(std::sync::atomic::Ordering::SeqCst) {
                Reply::ok("null")
            } else {
                Reply::status(404, "no such function")
            }
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = RawConfig {
        functions: [("f".to_string(), url_function(&function.url()))].into(),
        mappings: vec![mapping(
            "f",
            &queue.arn,
            RawMapping {
                uuid: Some("orders".into()),
                ..RawMapping::default()
            },
        )],
        ..base_config(&moto.endpoint, &dir.path().join("state"))
    };
    let esmd = Running::start(config, dir).await;
    moto.send(&queue, "hello").await;
    let body = wait_until("/healthz to turn 503", LONG, || async {
        let (status, body) = esmd.json("/healthz").await;
        (status == 503).then_some(body)
    })
    .await;
    let reason = body["unhealthy"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the function refuses every invocation: HTTP 404"),
        "{reason}"
    );
    let metrics = esmd.metrics().await;
    assert!(
        metrics.labelled(
            esmd::telemetry::INVOCATIONS,
            "orders",
            "sqs",
            "outcome",
            "rejected"
        ) >= 1.0,
        "{}",
        metrics.0
    );
    assert_eq!(metrics.of(esmd::telemetry::INVOKED, "orders", "sqs"), 0.0);

    fixed.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_until("/healthz to turn 200 again", LONG, || async {
        let (status, _) = esmd.json("/healthz").await;
        (status == 200).then_some(())
    })
    .await;
    let (_, mappings) = esmd.json("/mappings").await;
    assert_eq!(mappings["mappings"][0]["last_processing_result"], "OK");
    esmd.stop().await;
}

#[tokio::test]
async fn a_mapping_that_failed_to_start_is_unhealthy_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("clicks.json"), b"{\"stream_arn\": ").unwrap();
    let config = RawConfig {
        functions: [("f".to_string(), url_function("http://127.0.0.1:9"))].into(),
        mappings: vec![
            mapping(
                "f",
                "arn:aws:kinesis:us-east-1:123456789012:stream/clicks",
                RawMapping {
                    uuid: Some("clicks".into()),
                    starting_position: Some(RawStartingPosition::TrimHorizon),
                    ..RawMapping::default()
                },
            ),
            // keeps the run going: a queue that does not exist is retried, not failed
            mapping(
                "f",
                "arn:aws:sqs:us-east-1:123456789012:nowhere",
                RawMapping {
                    uuid: Some("waiting".into()),
                    ..RawMapping::default()
                },
            ),
        ],
        ..base_config("http://127.0.0.1:9", &state)
    };
    let esmd = Running::start(config, dir).await;
    let body = wait_until("/healthz to name the failed mapping", LONG, || async {
        let (status, body) = esmd.json("/healthz").await;
        let names = body["unhealthy"]
            .as_array()?
            .iter()
            .any(|m| m["id"] == "clicks");
        (status == 503 && names).then_some(body)
    })
    .await;
    let reason = body["unhealthy"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("failed to start: ") && reason.contains("clicks.json"),
        "{reason}"
    );
    let (_, mappings) = esmd.json("/mappings").await;
    let clicks = &mappings["mappings"][0];
    assert_eq!(clicks["state"], "Failed");
    assert_eq!(clicks["healthy"], false);
    assert!(
        clicks["last_processing_result"]
            .as_str()
            .unwrap()
            .starts_with("PROBLEM: failed to start: "),
        "{clicks}"
    );
    esmd.stop().await;
}

//! Smoke test of the shared harness in `tests/common`.

mod common;

use std::time::Duration;

use common::{FunctionServer, Moto, Reply, random_name};
use serde_json::json;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn moto_queues_send_and_receive() {
    let moto = Moto::start().await;

    let queue = moto.create_queue(&random_name("smoke"), &[]).await;
    assert!(
        queue.arn.ends_with(&format!(":{}", queue.name)),
        "{queue:?}"
    );
    let id = moto.send(&queue, "hello").await;
    let ids = moto
        .send_batch(&queue, &(0..12).map(|i| i.to_string()).collect::<Vec<_>>())
        .await;
    assert_eq!(ids.len(), 12);
    assert_eq!(moto.queue_depth(&queue).await, (13, 0));

    let messages = moto.receive_all(&queue, T).await;
    assert_eq!(messages.len(), 13);
    assert!(
        messages
            .iter()
            .any(|m| m.message_id() == Some(id.as_str()) && m.body() == Some("hello"))
    );
    assert_eq!(moto.queue_depth(&queue).await, (0, 0));

    let fifo = moto
        .create_queue(&format!("{}.fifo", random_name("smoke")), &[])
        .await;
    for body in ["a", "a", "b"] {
        moto.send_fifo(&fifo, body, "g1").await;
    }
    let bodies: Vec<_> = moto
        .receive_all(&fifo, T)
        .await
        .iter()
        .map(|m| m.body().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(bodies, ["a", "a", "b"]);
}

#[tokio::test]
async fn function_server_records_and_answers() {
    let server = FunctionServer::start(|event| {
        if event["fail"] == json!(true) {
            Reply::function_error(r#"{"errorMessage":"no"}"#)
        } else {
            Reply::ok(r#"{"batchItemFailures":[]}"#).delayed(Duration::from_millis(20))
        }
    })
    .await;
    let http = reqwest::Client::new();
    let post = |event: serde_json::Value| {
        http.post(server.url())
            .header("content-type", "application/json")
            .header("x-amz-invocation-type", "RequestResponse")
            .body(event.to_string())
            .send()
    };

    let ok = post(json!({"Records": [{"n": 1}, {"n": 2}]}))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers().get("x-amz-function-error"), None);
    assert_eq!(ok.text().await.unwrap(), r#"{"batchItemFailures":[]}"#);

    let failed = post(json!({"fail": true, "Records": [{"n": 3}]}))
        .await
        .unwrap();
    assert_eq!(failed.status(), 200);
    assert_eq!(failed.headers()["x-amz-function-error"], "Unhandled");

    let invocations = server.wait_invocations(2, T).await;
    assert_eq!(
        invocations[0].header("x-amz-invocation-type"),
        Some("RequestResponse")
    );
    assert!(invocations[0].at <= invocations[1].at);
    assert_eq!(
        server.records(),
        [json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]
    );
}

#[test]
fn esmd_version_runs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_esmd"))
        .arg("--version")
        .output()
        .expect("run esmd --version");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), concat!("esmd ", env!("CARGO_PKG_VERSION")));
}

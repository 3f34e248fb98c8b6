//! Capture and capture replay against moto: a `run` with SQS and Kinesis mappings sharing
//! one capture file, each with a partial failure, then `esmd replay --capture` of each
//! mapping into another function with moto gone: the function receives the run's events
//! byte for byte, in the run's order. A torn last line and other mappings' lines are
//! skipped, a capture file that cannot be written stops nothing, and `capture` is
//! validated.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::streams::{create_stream, put_records};
use common::{
    Esmd, FunctionServer, Invocation, Moto, Reply, aws_config, esmd_output, mapping, random_name,
    url_function, write_config,
};
use esmd::config::raw::{RawMapping, RawStartingPosition};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);
const CAPTURE: &str = "captures/run.jsonl";

/// A function that lists the record whose payload is `poison` as failed the first time it
/// sees it (every time with `always`), and takes everything else.
fn failing_once(poison: &'static str, always: bool) -> impl Fn(&Value) -> Reply + Send + Sync {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    move |event| {
        let items: Vec<Value> = event["Records"]
            .as_array()
            .expect("a Records event")
            .iter()
            .filter(|r| payload(r) == poison && (seen.lock().unwrap().insert(poison) || always))
            .map(|r| json!({ "itemIdentifier": item_id(r) }))
            .collect();
        Reply::json(&json!({ "batchItemFailures": items }))
    }
}

/// An SQS body, or a Kinesis record's data decoded.
fn payload(record: &Value) -> String {
    match record["body"].as_str() {
        Some(body) => body.to_string(),
        None => {
            let data = record["kinesis"]["data"].as_str().expect("kinesis data");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .expect("base64 data");
            String::from_utf8(bytes).expect("utf-8 data")
        }
    }
}

fn item_id(record: &Value) -> &str {
    record["messageId"]
        .as_str()
        .or_else(|| record["kinesis"]["sequenceNumber"].as_str())
        .expect("an item id")
}

/// The bodies the function received, exactly (as text, for readable diffs).
fn bodies(invocations: &[Invocation]) -> Vec<String> {
    invocations
        .iter()
        .map(|i| String::from_utf8(i.body.to_vec()).expect("a UTF-8 body"))
        .collect()
}

fn capture_lines(esmd: &Esmd) -> Vec<Value> {
    std::fs::read_to_string(esmd.dir().join(CAPTURE))
        .expect("the capture file")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_capture_of_a_run_replays_the_same_bytes_in_the_same_order_with_no_emulator() {
    let moto = Moto::start().await;
    let queue = moto
        .create_queue(&random_name("capture"), &[("VisibilityTimeout", "1")])
        .await;
    let stream = create_stream(&moto.kinesis(), &random_name("capture"), 1).await;
    let messages: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    moto.send_batch(&queue, &messages).await;
    let records: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("key-{i}"), format!("r{i}").into_bytes()))
        .collect();
    put_records(&moto.kinesis(), &stream, &records).await;

    let orders_function = FunctionServer::start(failing_once("m3", false)).await;
    let clicks_function = FunctionServer::start(failing_once("r2", false)).await;
    let replay_function = FunctionServer::start(failing_once("m3", true)).await;
    let mut config = aws_config(&moto.endpoint);
    for (name, server) in [
        ("orders-f", &orders_function),
        ("clicks-f", &clicks_function),
        ("replay-f", &replay_function),
    ] {
        config
            .functions
            .insert(name.into(), url_function(&server.url()));
    }
    let captured = |uuid: &str| RawMapping {
        uuid: Some(uuid.into()),
        function_response_types: vec!["ReportBatchItemFailures".into()],
        capture: Some(CAPTURE.into()),
        ..RawMapping::default()
    };
    config.mappings = vec![
        mapping("orders-f", &queue.arn, captured("orders")),
        mapping(
            "clicks-f",
            &stream.arn,
            RawMapping {
                starting_position: Some(RawStartingPosition::TrimHorizon),
                batch_size: Some(4),
                idle_poll_interval_ms: Some(50),
                ..captured("clicks")
            },
        ),
    ];
    let mut esmd = Esmd::start_with(&config.to_toml(), &["--until-drained"], &[]);
    let status = esmd.wait_exit(LONG).await;
    assert_eq!(status.code(), Some(0), "{}", esmd.stderr());
    let orders_run = bodies(&orders_function.invocations());
    let clicks_run = bodies(&clicks_function.invocations());
    assert!(orders_run.len() >= 2 && clicks_run.len() >= 2);

    // one line per invocation, each mapping's in the order its function received them
    let lines = capture_lines(&esmd);
    assert_eq!(lines.len(), orders_run.len() + clicks_run.len());
    for (id, run) in [("orders", &orders_run), ("clicks", &clicks_run)] {
        let of_mapping: Vec<&Value> = lines.iter().filter(|l| l["mapping"] == id).collect();
        let events: Vec<Value> = of_mapping.iter().map(|l| l["event"].clone()).collect();
        let received: Vec<Value> = run
            .iter()
            .map(|body| serde_json::from_str(body).unwrap())
            .collect();
        assert_eq!(events, received, "{id}");
        let outcomes: Vec<&str> = of_mapping
            .iter()
            .map(|l| l["outcome"].as_str().unwrap())
            .collect();
        let partial: Vec<&&Value> = of_mapping
            .iter()
            .filter(|l| l["outcome"] == "partial_failure")
            .collect();
        assert_eq!(partial.len(), 1, "{id}: {outcomes:?}");
        assert!(
            outcomes
                .iter()
                .all(|o| ["success", "partial_failure"].contains(o)),
            "{id}: {outcomes:?}"
        );
        let listed = &partial[0]["response"]["batchItemFailures"][0]["itemIdentifier"];
        assert!(listed.is_string(), "{id}: {}", partial[0]);
    }

    drop(moto);
    let replay = |id: &'static str| {
        let esmd = &esmd;
        async move {
            let args = [
                "--mapping",
                id,
                "--capture",
                CAPTURE,
                "--function",
                "replay-f",
            ];
            esmd.command("replay", &args, LONG).await
        }
    };
    let orders = replay("orders").await;
    // m3 is in two events, and the replay function always fails it
    assert_eq!(orders.status.code(), Some(2), "{}", stderr(&orders));
    assert!(
        stderr(&orders).contains("records were discarded on the way"),
        "{}",
        stderr(&orders)
    );
    let replayed = bodies(&replay_function.invocations());
    assert_eq!(replayed, orders_run, "the run's SQS events, byte for byte");
    let clicks = replay("clicks").await;
    assert_eq!(clicks.status.code(), Some(0), "{}", stderr(&clicks));
    let replayed = bodies(&replay_function.invocations()[orders_run.len()..]);
    assert_eq!(
        replayed, clicks_run,
        "the run's Kinesis events, byte for byte"
    );
    let summary = stderr(&clicks);
    assert!(
        summary.contains(&format!(
            "esmd: mapping clicks ({}, ran): polled 0, invoked {}, failed 0, filtered out 0, discarded 0, batches {}",
            stream.arn,
            clicks_run
                .iter()
                .map(|b| serde_json::from_str::<Value>(b).unwrap()["Records"].as_array().unwrap().len())
                .sum::<usize>(),
            clicks_run.len()
        )),
        "{summary}"
    );
    assert_eq!(
        capture_lines(&esmd).len(),
        orders_run.len() + clicks_run.len(),
        "a replay does not capture"
    );

    // a dry run sends nothing and prints a line per event
    let sent = replay_function.invocations().len();
    let dry = esmd
        .command(
            "replay",
            &["--mapping", "clicks", "--capture", CAPTURE, "--dry-run"],
            LONG,
        )
        .await;
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    assert_eq!(replay_function.invocations().len(), sent);
    let printed: Vec<Value> = String::from_utf8(dry.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(printed.len(), clicks_run.len());
    for (line, body) in printed.iter().zip(&clicks_run) {
        let event: Value = serde_json::from_str(body).unwrap();
        let records = event["Records"].as_array().unwrap();
        assert_eq!(line["mapping"], "clicks");
        assert_eq!(line["records"], records.len());
        assert_eq!(line["shard"], "shardId-000000000000");
        assert_eq!(
            line["first_sequence_number"],
            records[0]["kinesis"]["sequenceNumber"]
        );
        assert_eq!(
            line["last_sequence_number"],
            records[records.len() - 1]["kinesis"]["sequenceNumber"]
        );
    }
}

/// A config of one SQS mapping `orders`, its endpoint a port nobody listens on, its
/// function `url`: in a new temp dir, with the config's path.
fn offline_config(url: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let mut config = aws_config("http://127.0.0.1:9");
    config.functions.insert("f".into(), url_function(url));
    config.mappings = vec![mapping(
        "f",
        "arn:aws:sqs:us-east-1:000000000000:orders",
        RawMapping {
            uuid: Some("orders".into()),
            ..RawMapping::default()
        },
    )];
    write_config(&config.to_toml())
}

/// `esmd replay <args>` on the config at `config` in `dir`.
async fn replay_offline(dir: &Path, config: &Path, args: &[&str]) -> Output {
    esmd_output(dir, config, "replay", args, LONG).await
}

/// A capture line of `mapping` for `event`, as `run` writes it.
fn line(mapping: &str, event: &str) -> String {
    format!(
        r#"{{"mapping":"{mapping}","time":"2026-12-02T10:00:00.000Z","event":{event},"outcome":"success","response":null}}"#
    )
}

fn sqs_event(ids: &[&str]) -> String {
    let records: Vec<String> = ids
        .iter()
        .map(|id| format!(r#"{{"messageId":"{id}", "body":"x\ny"}}"#))
        .collect();
    format!(r#"{{"Records":[{}]}}"#, records.join(","))
}

#[tokio::test]
async fn torn_lines_and_other_mappings_lines_are_skipped() {
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let (dir, config) = offline_config(&function.url());
    let mine = [sqs_event(&["a", "b"]), sqs_event(&["c"]), sqs_event(&["d"])];
    let file = [
        line("orders", &mine[0]),
        line("clicks", &sqs_event(&["other"])),
        // a line torn by a crash, then the lines of the next run
        line("orders", &mine[1])[..30].to_string(),
        line("orders", &mine[1]),
        line("orders", &mine[2]),
    ]
    .join("\n")
        + "\n"
        + &line("orders", &sqs_event(&["torn"]))[..50];
    std::fs::write(dir.path().join("capture.jsonl"), file).unwrap();

    let args = [
        "--mapping",
        "orders",
        "--capture",
        "capture.jsonl",
        "--log-format",
        "json",
    ];
    let output = replay_offline(dir.path(), &config, &args).await;
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert_eq!(bodies(&function.invocations()), mine);
    let json_lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let warned = |needle: &str, line: u64| {
        json_lines.iter().any(|l| {
            l["level"] == "WARN"
                && l["fields"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains(needle)
                && l["fields"]["line"] == line
        })
    };
    assert!(warned("not a capture line", 3), "{log}");
    assert!(warned("the last line is torn", 6), "{log}");
    let progress = json_lines
        .iter()
        .rfind(|l| l["fields"]["message"] == "replay progress")
        .unwrap_or_else(|| panic!("no progress line in {log}"));
    assert_eq!(progress["fields"]["done"], 4);
    assert_eq!(progress["fields"]["total"], 4);
    let summary = json_lines
        .iter()
        .find(|l| l["mapping"] == "orders" && l.get("batches").is_some())
        .unwrap_or_else(|| panic!("no summary in {log}"));
    assert_eq!(
        (summary["invoked"].as_u64(), summary["batches"].as_u64()),
        (Some(4), Some(3))
    );
}

#[tokio::test]
async fn a_replay_names_a_mapping_and_a_readable_file() {
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let (dir, config) = offline_config(&function.url());
    let replay = |args: &'static [&'static str]| replay_offline(dir.path(), &config, args);
    let unknown = replay(&["--mapping", "nope", "--capture", "x.jsonl"]).await;
    assert_eq!(unknown.status.code(), Some(64), "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("no mapping nope in the config; its mappings: orders"));
    let missing = replay(&["--mapping", "orders", "--capture", "missing.jsonl"]).await;
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    assert!(stderr(&missing).contains("cannot read the capture file missing.jsonl"));
    let no_function = replay(&[
        "--mapping",
        "orders",
        "--capture",
        "x.jsonl",
        "--function",
        "g",
    ])
    .await;
    assert_eq!(
        no_function.status.code(),
        Some(64),
        "{}",
        stderr(&no_function)
    );
    assert!(function.invocations().is_empty());
}

#[tokio::test]
async fn a_capture_file_that_cannot_be_written_stops_nothing() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("capture"), &[]).await;
    moto.send_batch(&queue, &["a", "b", "c"]).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let mut config = aws_config(&moto.endpoint);
    config
        .functions
        .insert("f".into(), url_function(&function.url()));
    config.mappings = vec![mapping(
        "f",
        &queue.arn,
        RawMapping {
            uuid: Some("orders".into()),
            // its directory would be a file
            capture: Some("esmd.toml/capture.jsonl".into()),
            ..RawMapping::default()
        },
    )];
    let mut esmd = Esmd::start_with(&config.to_toml(), &["--until-drained"], &[]);
    let status = esmd.wait_exit(LONG).await;
    let log = esmd.stderr();
    assert_eq!(status.code(), Some(0), "{log}");
    assert_eq!(function.records().len(), 3);
    assert_eq!(moto.queue_depth(&queue).await, (0, 0));
    assert!(log.contains("cannot open the capture file"), "{log}");
}

#[test]
fn capture_must_be_a_file_path() {
    let config = |capture: &str| {
        let mut config = aws_config("http://127.0.0.1:9");
        config
            .functions
            .insert("f".into(), url_function("http://127.0.0.1:9/"));
        config.mappings = vec![mapping(
            "f",
            "arn:aws:sqs:us-east-1:000000000000:orders",
            RawMapping::default(),
        )];
        config.to_toml().replace(
            "[[mappings]]\n",
            &format!("[[mappings]]\ncapture = {capture}\n"),
        )
    };
    for (capture, problem) in [
        (r#""""#, "mappings[0].capture: must not be empty"),
        (r#""captures/""#, "names a directory, not a file"),
        ("7", "mappings[0].capture: "),
    ] {
        let output = Esmd::validate(&config(capture));
        assert_eq!(output.status.code(), Some(78), "{capture}");
        let text = stderr(&output);
        assert!(text.contains(problem), "{capture}: {text}");
    }
    let valid = Esmd::validate(&config(r#""captures/orders.jsonl""#));
    assert_eq!(valid.status.code(), Some(0), "{}", stderr(&valid));
}

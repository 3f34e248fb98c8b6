//! The CI run modes of `esmd run` against moto: `--until-drained` exits by itself once a
//! queue and a stream are processed (0), or 2 when stream records were discarded;
//! `--timeout` exits 124 when the work is not done; `--max-batches` stops after N batches.
//! Each run prints a summary per mapping on exit.

mod common;

use std::time::{Duration, Instant};

use common::streams::{
    KinesisLocal, create_stream, create_table_with_stream, list_shards, merge_shards, put_item,
    put_records, split_shard,
};
use common::{Esmd, FunctionServer, Moto, Reply, aws_config, mapping, random_name, url_function};
use esmd::config::raw::{RawFunction, RawMapping, RawStartingPosition};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);

/// A config with the emulator at `endpoint`, the `url` function `f` and `mappings`, the
/// state beside it.
fn config(endpoint: &str, url: &str, mappings: Vec<RawMapping>) -> String {
    let mut config = aws_config(endpoint);
    config.functions.insert(
        "f".into(),
        RawFunction {
            max_concurrency: Some(4),
            timeout_secs: 900,
            ..url_function(url)
        },
    );
    config.mappings = mappings;
    config.to_toml()
}

/// A stream mapping `id` read from the trim horizon, polling a caught-up shard every 50 ms.
fn stream_mapping(id: &str, arn: &str, keys: RawMapping) -> RawMapping {
    mapping(
        "f",
        arn,
        RawMapping {
            uuid: Some(id.into()),
            starting_position: Some(RawStartingPosition::TrimHorizon),
            idle_poll_interval_ms: Some(50),
            ..keys
        },
    )
}

fn records(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| (format!("key-{i}"), format!("record {i}").into_bytes()))
        .collect()
}

/// The JSON summary object of mapping `id` in a `--log-format json` log.
fn json_summary(log: &str, id: &str) -> Value {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["mapping"] == id && line.get("batches").is_some())
        .unwrap_or_else(|| panic!("no summary of {id} in the log:\n{log}"))
}

#[tokio::test]
async fn until_drained_exits_0_once_a_queue_and_streams_are_processed() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("drain"), &[]).await;
    let stream = create_stream(&moto.kinesis(), &random_name("drain"), 2).await;
    let table =
        create_table_with_stream(&moto.dynamodb(), &random_name("drain"), "NEW_IMAGE").await;
    moto.send_batch(&queue, &["a", "b", "c", "d", "e"]).await;
    put_records(&moto.kinesis(), &stream, &records(6)).await;
    for sk in ["1", "2", "3"] {
        put_item(&moto.dynamodb(), &table, "item", sk, &[]).await;
    }
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let toml = config(
        &moto.endpoint,
        &function.url(),
        vec![
            mapping(
                "f",
                &queue.arn,
                RawMapping {
                    uuid: Some("orders".into()),
                    ..RawMapping::default()
                },
            ),
            stream_mapping("clicks", &stream.arn, RawMapping::default()),
            stream_mapping("items", &table.stream_arn, RawMapping::default()),
        ],
    );
    let mut esmd = Esmd::start_with(&toml, &["--until-drained"], &[]);
    let status = esmd.wait_exit(LONG).await;

    assert_eq!(status.code(), Some(0), "{}", esmd.stderr());
    assert_eq!(moto.queue_depth(&queue).await, (0, 0));
    assert_eq!(function.records().len(), 14, "every record, once");
    let log = esmd.stderr();
    let summary = |id: &str| {
        log.lines()
            .find(|line| line.starts_with(&format!("esmd: mapping {id} (")))
            .unwrap_or_else(|| panic!("no summary of {id} in the log:\n{log}"))
            .to_owned()
    };
    assert!(
        summary("orders")
            .contains("ran): polled 5, invoked 5, failed 0, filtered out 0, discarded 0, batches"),
        "{}",
        summary("orders")
    );
    assert!(
        summary("clicks")
            .contains("ran): polled 6, invoked 6, failed 0, filtered out 0, discarded 0, batches"),
        "{}",
        summary("clicks")
    );
    assert!(
        summary("items")
            .contains("ran): polled 3, invoked 3, failed 0, filtered out 0, discarded 0, batches"),
        "{}",
        summary("items")
    );
}

/// A finished parent shard is not the end, even while another shard is at its tip: its
/// children are read before the run drains.
#[tokio::test]
async fn until_drained_reads_a_resharded_stream_to_its_last_child() {
    let local = KinesisLocal::start().await;
    let kinesis = local.kinesis();
    let stream = create_stream(&kinesis, &random_name("reshard"), 2).await;
    put_records(&kinesis, &stream, &records(30)).await;
    let parent = list_shards(&kinesis, &stream).await[0]
        .shard_id()
        .to_string();
    let [left, right] = split_shard(&kinesis, &stream, &parent).await;
    put_records(&kinesis, &stream, &records(30)).await;
    merge_shards(&kinesis, &stream, &left, &right).await;
    put_records(&kinesis, &stream, &records(30)).await;
    // the parent's batches are slow: the other shard is at its tip long before it ends
    let slow = parent.clone();
    let function = FunctionServer::start(move |event| {
        let from_parent = event["Records"][0]["eventID"]
            .as_str()
            .is_some_and(|id| id.starts_with(&format!("{slow}:")));
        let delay = if from_parent { 500 } else { 0 };
        Reply::ok("null").delayed(Duration::from_millis(delay))
    })
    .await;
    let toml = config(
        &local.endpoint,
        &function.url(),
        vec![stream_mapping(
            "resharded",
            &stream.arn,
            RawMapping {
                batch_size: Some(10),
                ..RawMapping::default()
            },
        )],
    );
    let mut esmd = Esmd::start_with(&toml, &["--until-drained"], &[]);
    let status = esmd.wait_exit(LONG).await;

    assert_eq!(status.code(), Some(0), "{}", esmd.stderr());
    assert_eq!(
        function.records().len(),
        90,
        "the other shard, the parent, its children and their merged child"
    );
}

#[tokio::test]
async fn until_drained_exits_2_when_stream_records_were_discarded() {
    let moto = Moto::start().await;
    let stream = create_stream(&moto.kinesis(), &random_name("discard"), 1).await;
    put_records(&moto.kinesis(), &stream, &records(3)).await;
    let function = FunctionServer::start(|_| Reply::rie_error()).await;
    let toml = config(
        &moto.endpoint,
        &function.url(),
        vec![stream_mapping(
            "poison",
            &stream.arn,
            RawMapping {
                batch_size: Some(1),
                maximum_retry_attempts: Some(0),
                ..RawMapping::default()
            },
        )],
    );
    let mut esmd = Esmd::start_with(&toml, &["--until-drained", "--log-format", "json"], &[]);
    let status = esmd.wait_exit(LONG).await;

    assert_eq!(status.code(), Some(2), "{}", esmd.stderr());
    let summary = json_summary(&esmd.stderr(), "poison");
    assert_eq!(summary["source"], stream.arn.as_str());
    assert_eq!(summary["state"], "ran");
    for (key, expected) in [
        ("polled", 3),
        ("invoked", 3),
        ("failed", 3),
        ("discarded", 3),
        ("batches", 3),
        ("filtered_out", 0),
    ] {
        assert_eq!(summary[key], expected, "{key} in {summary}");
    }
}

/// A message the queue's redrive policy moves to its DLQ is the queue's doing, not a
/// discard: the run drains once it is gone, and exits 0.
#[tokio::test]
async fn until_drained_waits_for_the_redrive_policy_and_exits_0() {
    let moto = Moto::start().await;
    let dlq = moto.create_queue(&random_name("dlq"), &[]).await;
    let policy = serde_json::json!({"deadLetterTargetArn": dlq.arn, "maxReceiveCount": "1"});
    let queue = moto
        .create_queue(
            &random_name("poison"),
            &[
                ("VisibilityTimeout", "1"),
                ("RedrivePolicy", &policy.to_string()),
            ],
        )
        .await;
    moto.send(&queue, "poison").await;
    let function = FunctionServer::start(|_| Reply::rie_error()).await;
    let toml = config(
        &moto.endpoint,
        &function.url(),
        vec![mapping(
            "f",
            &queue.arn,
            RawMapping {
                uuid: Some("poisoned".into()),
                ..RawMapping::default()
            },
        )],
    );
    let mut esmd = Esmd::start_with(&toml, &["--until-drained", "--log-format", "json"], &[]);
    let status = esmd.wait_exit(LONG).await;

    assert_eq!(status.code(), Some(0), "{}", esmd.stderr());
    assert_eq!(moto.queue_depth(&queue).await, (0, 0));
    assert_eq!(moto.queue_depth(&dlq).await, (1, 0), "redriven");
    let summary = json_summary(&esmd.stderr(), "poisoned");
    assert_eq!(summary["invoked"], 1, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    assert_eq!(summary["discarded"], 0, "{summary}");
}

#[tokio::test]
async fn timeout_exits_124_when_the_work_is_not_done() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("slow"), &[]).await;
    moto.send(&queue, "slow").await;
    let function =
        FunctionServer::start(|_| Reply::ok("null").delayed(Duration::from_secs(600))).await;
    let toml = config(
        &moto.endpoint,
        &function.url(),
        vec![mapping("f", &queue.arn, RawMapping::default())],
    );
    let started = Instant::now();
    let mut esmd = Esmd::start_with(
        &toml,
        &[
            "--until-drained",
            "--timeout",
            "2",
            "--graceful-shutdown-limit-secs",
            "1",
        ],
        &[],
    );
    let status = esmd.wait_exit(LONG).await;

    assert_eq!(status.code(), Some(124), "{}", esmd.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(function.invocations().len(), 1, "the slow invocation began");
    assert!(
        esmd.stderr().contains("invoked 0, failed 0"),
        "the unanswered invocation is not counted: {}",
        esmd.stderr()
    );
}

#[tokio::test]
async fn max_batches_stops_after_that_many_batches() {
    let moto = Moto::start().await;
    let stream = create_stream(&moto.kinesis(), &random_name("batches"), 1).await;
    put_records(&moto.kinesis(), &stream, &records(10)).await;
    // slow enough that the stop comes before the batches run out
    let function =
        FunctionServer::start(|_| Reply::ok("null").delayed(Duration::from_millis(300))).await;
    let toml = config(
        &moto.endpoint,
        &function.url(),
        vec![stream_mapping(
            "counted",
            &stream.arn,
            RawMapping {
                batch_size: Some(1),
                ..RawMapping::default()
            },
        )],
    );
    let mut esmd = Esmd::start_with(&toml, &["--max-batches", "3", "--log-format", "json"], &[]);
    let status = esmd.wait_exit(LONG).await;

    assert_eq!(status.code(), Some(0), "{}", esmd.stderr());
    let invocations = function.invocations().len() as u64;
    // an invocation that began as the third one was answered still settles
    assert!((3..=4).contains(&invocations), "{invocations} invocations");
    let summary = json_summary(&esmd.stderr(), "counted");
    assert_eq!(summary["batches"], invocations, "{summary}");
    assert_eq!(summary["invoked"], invocations, "{summary}");
}

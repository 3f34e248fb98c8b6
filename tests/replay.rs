//! `esmd replay --from/--to/--shard` end to end: the real esmd binary against moto
//! (kinesis-local for resharding), with functions served by the test: exact ranges of
//! Kinesis and DynamoDB streams, beside a live `run` whose checkpoints stay its own,
//! parent-before-child order, `--dry-run`, and the usage errors.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::primitives::{DateTime, DateTimeFormat};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::streams::{
    Fault, FaultProxy, KinesisLocal, cmp_sequence, create_stream, create_table_with_stream,
    list_shards, merge_shards, put_item, put_records, sequence_of, shard_of, split_shard,
};
use common::{
    Esmd, FunctionServer, Moto, Reply, base_config, mapping, random_name, url_function, wait_until,
};
use esmd::config::raw::{
    RawDestinationConfig, RawFunction, RawMapping, RawOnFailure, RawStartingPosition,
};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);

/// The mapping every test replays.
const MAPPING: &str = "m";

/// A config with the functions `f` (the mapping's) and `r` (a replay's `--function r`) and
/// the stream mapping `m` of `source_arn` to `f`, read from the trim horizon; `keys` sets
/// more mapping keys.
fn config(
    endpoint: &str,
    state: &Path,
    source_arn: &str,
    f: &str,
    r: &str,
    keys: RawMapping,
) -> String {
    let mut config = base_config(endpoint, state);
    for (name, url) in [("f", f), ("r", r)] {
        let function = RawFunction {
            max_concurrency: Some(8),
            ..url_function(url)
        };
        config.functions.insert(name.into(), function);
    }
    config.mappings.push(mapping(
        "f",
        source_arn,
        RawMapping {
            uuid: Some(MAPPING.into()),
            starting_position: Some(RawStartingPosition::TrimHorizon),
            idle_poll_interval_ms: Some(50),
            ..keys
        },
    ));
    config.to_toml()
}

/// [`config`] with the mapping's function `f` served by `function` (`r` unused), in
/// batches of up to `batch_size`.
fn config_to(
    endpoint: &str,
    state: &Path,
    source_arn: &str,
    function: &FunctionServer,
    batch_size: i64,
) -> String {
    let keys = RawMapping {
        batch_size: Some(batch_size),
        ..RawMapping::default()
    };
    config(
        endpoint,
        state,
        source_arn,
        &function.url(),
        "http://127.0.0.1:9/",
        keys,
    )
}

/// `count` Kinesis records from index `from`, data `key:index`, over 20 keys.
fn records(from: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (from..from + count)
        .map(|i| {
            let key = format!("key-{}", i % 20);
            let data = format!("{key}:{i}").into_bytes();
            (key, data)
        })
        .collect()
}

/// The index carried in a Kinesis record's data.
fn index(record: &Value) -> usize {
    let data = BASE64
        .decode(record["kinesis"]["data"].as_str().expect("data"))
        .expect("base64 data");
    let text = String::from_utf8(data).expect("utf-8 test data");
    text.split_once(':').expect("key:index").1.parse().unwrap()
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap()
}

/// Waits for the next whole second and returns it: records put before the call arrived
/// before it, records put after arrive at or after it, whole-second arrivals included.
async fn next_second() -> u64 {
    let second = now().as_secs() + 1;
    wait_until("the clock to reach the next second", SHORT, || async move {
        (now().as_secs() >= second).then_some(())
    })
    .await;
    second
}

fn rfc3339(second: u64) -> String {
    DateTime::from_secs(second as i64)
        .fmt(DateTimeFormat::DateTime)
        .unwrap()
}

/// Every batch holds records of one shard, and each shard's records come in sequence
/// order across batches.
fn assert_order_per_shard(function: &FunctionServer) {
    let mut last: HashMap<String, String> = HashMap::new();
    for invocation in function.invocations() {
        let records = invocation.records();
        let shards: HashSet<String> = records.iter().map(shard_of).collect();
        assert_eq!(shards.len(), 1, "a batch holds records of one shard");
        for record in &records {
            let sequence = sequence_of(record);
            if let Some(previous) = last.insert(shard_of(record), sequence.clone()) {
                assert!(
                    cmp_sequence(&previous, &sequence).is_lt(),
                    "{sequence} after {previous}"
                );
            }
        }
    }
}

/// Runs a replay to its end; returns it for its exit code and logs.
async fn replay(toml: &str, args: &[&str]) -> (Option<i32>, Esmd) {
    let mut esmd = Esmd::replay(toml, args);
    let status = esmd.wait_exit(LONG).await;
    (status.code(), esmd)
}

#[tokio::test]
async fn a_timestamp_range_of_4_shards_is_replayed_exactly_beside_a_live_run() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("range"), 4).await;
    let mut written = put_records(&kinesis, &stream, &records(0, 200)).await;
    let from = next_second().await;
    written.extend(put_records(&kinesis, &stream, &records(200, 400)).await);
    let to = next_second().await;
    written.extend(put_records(&kinesis, &stream, &records(600, 200)).await);
    let mut last_of_shard: BTreeMap<String, String> = BTreeMap::new();
    for (shard, sequence) in written {
        let last = last_of_shard.entry(shard).or_default();
        if cmp_sequence(last, &sequence).is_lt() {
            *last = sequence;
        }
    }
    assert_eq!(last_of_shard.len(), 4, "records on every shard");

    let live = FunctionServer::start(|_| Reply::ok("null")).await;
    let replayed = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let toml = config(
        &moto.endpoint,
        state.path(),
        &stream.arn,
        &live.url(),
        &replayed.url(),
        RawMapping {
            batch_size: Some(30),
            ..RawMapping::default()
        },
    );
    let _run = Esmd::start(&toml);
    live.wait_records(800, LONG).await;
    let checkpoints = state.path().join(format!("{MAPPING}.json"));
    let stored = wait_until("the live checkpoints of every record", SHORT, || {
        let text = std::fs::read_to_string(&checkpoints).unwrap_or_default();
        let last_of_shard = &last_of_shard;
        async move {
            let state: Value = serde_json::from_str(&text).ok()?;
            last_of_shard
                .iter()
                .all(|(shard, last)| state["shards"][shard]["checkpoint"] == last.as_str())
                .then_some(text)
        }
    })
    .await;
    let files_before: HashSet<_> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();

    let (code, esmd) = replay(
        &toml,
        &[
            "--mapping",
            MAPPING,
            "--from",
            &rfc3339(from),
            "--to",
            &to.to_string(),
            "--function",
            "r",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{}", esmd.stderr());

    let delivered = replayed.records();
    let indexes: Vec<usize> = delivered.iter().map(index).collect();
    let unique: HashSet<usize> = indexes.iter().copied().collect();
    assert_eq!(
        unique,
        (200..600).collect(),
        "every record of the range, none outside"
    );
    assert_eq!(indexes.len(), 400, "each once");
    assert_order_per_shard(&replayed);
    let shards: HashSet<String> = delivered.iter().map(shard_of).collect();
    assert_eq!(shards.len(), 4);
    assert!(
        esmd.stderr().contains("invoked 400"),
        "the summary: {}",
        esmd.stderr()
    );
    assert!(
        esmd.stderr().contains("replay progress done=400"),
        "the last progress line: {}",
        esmd.stderr()
    );
    assert_eq!(live.records().len(), 800, "the live run got nothing twice");

    // the live checkpoints are the live run's alone
    assert_eq!(std::fs::read_to_string(&checkpoints).unwrap(), stored);
    let files_after: HashSet<_> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files_after, files_before, "the replay wrote no state file");
    // and the live run goes on from them
    put_records(&kinesis, &stream, &records(800, 40)).await;
    let after = live.wait_records(840, LONG).await;
    let late: HashSet<usize> = after[800..].iter().map(index).collect();
    assert_eq!(late, (800..840).collect());
    wait_until("the live checkpoints to move on", SHORT, || {
        let text = std::fs::read_to_string(&checkpoints).unwrap_or_default();
        let stored = stored.clone();
        async move { (text != stored).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn trim_horizon_to_the_tip_goes_to_the_mappings_function_and_stops_by_itself() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("tip"), 2).await;
    put_records(&kinesis, &stream, &records(0, 120)).await;
    let function =
        FunctionServer::start(|_| Reply::ok("null").delayed(Duration::from_millis(20))).await;
    let state = tempfile::tempdir().unwrap();
    let toml = config_to(&moto.endpoint, state.path(), &stream.arn, &function, 10);
    let mut esmd = Esmd::replay(&toml, &["--mapping", MAPPING, "--from", "TRIM_HORIZON"]);
    // records put once the replay runs are past the tip it captured
    function.wait_invocations(1, LONG).await;
    put_records(&kinesis, &stream, &records(1000, 30)).await;
    let status = esmd.wait_exit(LONG).await;
    assert_eq!(status.code(), Some(0), "{}", esmd.stderr());
    let indexes: Vec<usize> = function.records().iter().map(index).collect();
    assert_eq!(indexes.len(), 120, "each once");
    assert_eq!(
        indexes.iter().copied().collect::<HashSet<_>>(),
        (0..120).collect()
    );
    assert_order_per_shard(&function);
    assert!(
        std::fs::read_dir(state.path()).unwrap().next().is_none(),
        "no checkpoint, no lock"
    );
}

#[tokio::test]
async fn a_replay_over_resharded_lineage_delivers_parents_before_children() {
    let local = KinesisLocal::start().await;
    let kinesis = local.kinesis();
    let stream = create_stream(&kinesis, &random_name("lineage"), 1).await;
    put_records(&kinesis, &stream, &records(0, 60)).await;
    let parent = list_shards(&kinesis, &stream).await[0]
        .shard_id()
        .to_string();
    let [left, right] = split_shard(&kinesis, &stream, &parent).await;
    put_records(&kinesis, &stream, &records(60, 60)).await;
    let merged = merge_shards(&kinesis, &stream, &left, &right).await;
    put_records(&kinesis, &stream, &records(120, 60)).await;
    // the parent's batches are slow: its children must wait for them all the same
    let slow = parent.clone();
    let function = FunctionServer::start(move |event| {
        let from_parent = event["Records"][0]["eventID"]
            .as_str()
            .is_some_and(|id| id.starts_with(&format!("{slow}:")));
        let delay = if from_parent { 200 } else { 0 };
        Reply::ok("null").delayed(Duration::from_millis(delay))
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let toml = config_to(&local.endpoint, state.path(), &stream.arn, &function, 10);
    let (code, esmd) = replay(&toml, &["--mapping", MAPPING, "--from", "TRIM_HORIZON"]).await;
    assert_eq!(code, Some(0), "{}", esmd.stderr());
    let delivered = function.records();
    assert_eq!(delivered.len(), 180, "each once");
    assert_eq!(
        delivered.iter().map(index).collect::<HashSet<_>>(),
        (0..180).collect()
    );
    assert_order_per_shard(&function);
    // generation of each shard: parent 0, split children 1, merged child 2
    let generation = |shard: &str| {
        if shard == parent {
            0
        } else if shard == merged {
            2
        } else {
            assert!(shard == left || shard == right, "unknown shard {shard}");
            1
        }
    };
    let generations: Vec<u8> = function
        .invocations()
        .iter()
        .map(|i| generation(&shard_of(&i.records()[0])))
        .collect();
    assert!(
        generations.is_sorted(),
        "parents before children: {generations:?}"
    );
    assert_eq!(
        generations.iter().copied().collect::<HashSet<_>>(),
        HashSet::from([0, 1, 2])
    );
}

#[tokio::test]
async fn a_dynamodb_stream_range_is_replayed_exactly() {
    let moto = Moto::start().await;
    let ddb = moto.dynamodb();
    let table = create_table_with_stream(&ddb, &random_name("items"), "NEW_IMAGE").await;
    let put = |from: usize, to: usize| {
        let (ddb, table) = (&ddb, &table);
        async move {
            for i in from..to {
                put_item(ddb, table, &format!("p{}", i % 3), &i.to_string(), &[]).await;
            }
        }
    };
    put(0, 10).await;
    let from = next_second().await;
    put(10, 25).await;
    let to = next_second().await;
    put(25, 30).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let toml = config_to(
        &moto.endpoint,
        state.path(),
        &table.stream_arn,
        &function,
        4,
    );
    let (code, esmd) = replay(
        &toml,
        &[
            "--mapping",
            MAPPING,
            "--from",
            &from.to_string(),
            "--to",
            &rfc3339(to),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{}", esmd.stderr());
    let items: Vec<usize> = function
        .records()
        .iter()
        .map(|r| {
            r["dynamodb"]["Keys"]["sk"]["S"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        items,
        (10..25).collect::<Vec<_>>(),
        "the range, in order, once"
    );
}

#[tokio::test]
async fn dry_run_prints_the_batches_and_invokes_nothing() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("dry"), 2).await;
    let written = put_records(&kinesis, &stream, &records(0, 45)).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let toml = config_to(&moto.endpoint, state.path(), &stream.arn, &function, 10);
    let (code, esmd) = replay(
        &toml,
        &["--mapping", MAPPING, "--from", "TRIM_HORIZON", "--dry-run"],
    )
    .await;
    assert_eq!(code, Some(0), "{}", esmd.stderr());
    assert!(function.invocations().is_empty(), "nothing invoked");
    let batches: Vec<Value> = esmd
        .stdout()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line per batch"))
        .collect();
    // per shard, the batches cover its records in order, at most 10 each
    let mut by_shard: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (shard, sequence) in written {
        by_shard.entry(shard).or_default().push(sequence);
    }
    for (shard, sequences) in by_shard {
        let mut covered = 0;
        for batch in batches.iter().filter(|b| b["shard"] == shard.as_str()) {
            let records = batch["records"].as_u64().unwrap() as usize;
            assert!((1..=10).contains(&records), "{batch}");
            assert_eq!(batch["first_sequence_number"], sequences[covered].as_str());
            assert_eq!(
                batch["last_sequence_number"],
                sequences[covered + records - 1].as_str()
            );
            covered += records;
        }
        assert_eq!(covered, sequences.len(), "every record of {shard}");
    }
}

#[tokio::test]
async fn a_shard_replays_between_sequence_numbers() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("seq"), 2).await;
    let written = put_records(&kinesis, &stream, &records(0, 60)).await;
    let shard = written[0].0.clone();
    let of_shard: Vec<(usize, &String)> = written
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| *s == shard)
        .map(|(i, (_, sequence))| (i, sequence))
        .collect();
    assert!(of_shard.len() >= 12, "enough records in {shard}");
    let (from, to) = (of_shard[3].1, of_shard[10].1);
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let toml = config(
        &moto.endpoint,
        state.path(),
        &stream.arn,
        &function.url(),
        "http://127.0.0.1:9/",
        RawMapping::default(),
    );
    let (code, esmd) = replay(
        &toml,
        &[
            "--mapping",
            MAPPING,
            "--shard",
            &shard,
            "--from",
            from,
            "--to",
            to,
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{}", esmd.stderr());
    let indexes: Vec<usize> = function.records().iter().map(index).collect();
    let expected: Vec<usize> = of_shard[3..10].iter().map(|(i, _)| *i).collect();
    assert_eq!(
        indexes, expected,
        "from included, to excluded, that shard only"
    );

    let (code, esmd) = replay(
        &toml,
        &[
            "--mapping",
            MAPPING,
            "--shard",
            "shardId-999",
            "--from",
            from,
        ],
    )
    .await;
    assert_eq!(code, Some(64), "{}", esmd.stderr());
    assert!(
        esmd.stderr().contains("no shard shardId-999"),
        "{}",
        esmd.stderr()
    );
}

#[tokio::test]
async fn usage_errors_exit_64_and_an_invalid_config_78_before_any_call() {
    // nothing listens at the endpoint: any call would fail, not exit 64 or 78
    let state = tempfile::tempdir().unwrap();
    let stream_arn = "arn:aws:kinesis:us-east-1:123456789012:stream/s";
    let mut toml = config(
        "http://127.0.0.1:9",
        state.path(),
        stream_arn,
        "http://127.0.0.1:9/",
        "http://127.0.0.1:9/",
        RawMapping::default(),
    );
    toml.push_str(
        "\n[[mappings]]\nuuid = \"queue\"\nfunction_name = \"f\"\nevent_source_arn = \"arn:aws:sqs:us-east-1:123456789012:q\"\n",
    );
    let cases: &[(&[&str], &str)] = &[
        (
            &["--mapping", "nope", "--from", "TRIM_HORIZON"],
            "no mapping nope",
        ),
        (&["--mapping", MAPPING], "required"),
        (&["--mapping", MAPPING, "--to", "1700000000"], "--from"),
        (
            &[
                "--mapping",
                MAPPING,
                "--from",
                "TRIM_HORIZON",
                "--capture",
                "c.jsonl",
            ],
            "cannot be used with",
        ),
        (
            &[
                "--mapping",
                MAPPING,
                "--from",
                "TRIM_HORIZON",
                "--to",
                "TRIM_HORIZON",
            ],
            "TRIM_HORIZON is a start",
        ),
        (
            &[
                "--mapping",
                MAPPING,
                "--from",
                "49590338271490256608559692538361571095921575989136588898",
            ],
            "a sequence number needs --shard",
        ),
        (
            &[
                "--mapping",
                MAPPING,
                "--from",
                "1700000100",
                "--to",
                "1700000000",
            ],
            "--from must come before --to",
        ),
        (
            &["--mapping", "queue", "--from", "TRIM_HORIZON"],
            "reads an SQS queue",
        ),
        (
            &[
                "--mapping",
                MAPPING,
                "--from",
                "TRIM_HORIZON",
                "--function",
                "g",
            ],
            "no function g",
        ),
    ];
    for (args, message) in cases {
        let (code, esmd) = replay(&toml, args).await;
        assert_eq!(code, Some(64), "{args:?}: {}", esmd.stderr());
        assert!(
            esmd.stderr().contains(message),
            "{args:?}: {}",
            esmd.stderr()
        );
    }
    let invalid = format!("{toml}\n[[mappings]]\nfunction_name = \"f\"\n");
    let (code, esmd) = replay(&invalid, &["--mapping", MAPPING, "--from", "TRIM_HORIZON"]).await;
    assert_eq!(code, Some(78), "{}", esmd.stderr());
    assert!(esmd.stderr().contains("mappings["), "{}", esmd.stderr());
}

#[tokio::test]
async fn a_replay_that_discards_sends_failure_records_and_exits_2() {
    let moto = Moto::start().await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("poison"), 1).await;
    let written = put_records(&kinesis, &stream, &records(0, 20)).await;
    // a batch holding record 7 fails whole; bisect isolates it, no retry
    let function = FunctionServer::start(|event| {
        let poisoned = event["Records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| index(r) == 7);
        if poisoned {
            Reply::function_error(r#"{"errorType":"Poison"}"#)
        } else {
            Reply::ok("null")
        }
    })
    .await;
    let state = tempfile::tempdir().unwrap();
    let failures = state.path().join("failures.jsonl");
    let toml = config(
        &moto.endpoint,
        state.path(),
        &stream.arn,
        &function.url(),
        "http://127.0.0.1:9/",
        RawMapping {
            batch_size: Some(10),
            bisect_batch_on_function_error: Some(true),
            maximum_retry_attempts: Some(0),
            destination_config: Some(RawDestinationConfig {
                on_failure: Some(RawOnFailure {
                    destination: format!("file://{}", failures.display()),
                }),
            }),
            ..RawMapping::default()
        },
    );
    let (code, esmd) = replay(&toml, &["--mapping", MAPPING, "--from", "TRIM_HORIZON"]).await;
    assert_eq!(code, Some(2), "{}", esmd.stderr());
    assert!(esmd.stderr().contains("discarded 1"), "{}", esmd.stderr());
    let lines: Vec<Value> = std::fs::read_to_string(&failures)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "one failure record: {lines:?}");
    let batch = &lines[0]["KinesisBatchInfo"];
    assert_eq!(batch["startSequenceNumber"], written[7].1.as_str());
    assert_eq!(batch["endSequenceNumber"], written[7].1.as_str());
    let delivered: HashSet<usize> = function
        .records()
        .iter()
        .map(index)
        .filter(|i| *i != 7)
        .collect();
    assert_eq!(delivered, (0..20).filter(|i| *i != 7).collect());
}

#[tokio::test]
async fn a_shard_that_keeps_failing_ends_the_replay_with_exit_1() {
    let moto = Moto::start().await;
    let proxy = FaultProxy::start(&moto.endpoint).await;
    let kinesis = moto.kinesis();
    let stream = create_stream(&kinesis, &random_name("refused"), 1).await;
    let written = put_records(&kinesis, &stream, &records(0, 10)).await;
    // as AWS answers a sequence number that is not the shard's
    let refused = Fault::Custom {
        status: 400,
        error_type: "InvalidArgumentException".into(),
        message: "StartingSequenceNumber is invalid".into(),
    };
    proxy.inject("GetShardIterator", refused, 1000);
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let toml = config_to(&proxy.endpoint(), state.path(), &stream.arn, &function, 10);
    let (code, esmd) = replay(
        &toml,
        &[
            "--mapping",
            MAPPING,
            "--shard",
            &written[0].0,
            "--from",
            &written[3].1,
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{}", esmd.stderr());
    let log = esmd.stderr();
    assert!(log.contains("InvalidArgumentException"), "{log}");
    assert!(log.contains("shards not replayed to their end"), "{log}");
    assert!(function.invocations().is_empty());
}

//! The state directory end to end: one `run` per directory (the `LOCK` file), and mappings
//! that cannot start because their checkpoint file cannot be read.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    Esmd, FunctionServer, Moto, Queue, Reply, base_config, mapping, random_name, url_function,
    wait_until,
};
use esmd::config::raw::{RawFunction, RawMapping, RawStartingPosition};

const SHORT: Duration = Duration::from_secs(30);

/// The `url` function `f` at `function_url` and `mappings`, with `[aws]` for `endpoint`
/// and the state in `state`.
fn config(endpoint: &str, state: &Path, function_url: &str, mappings: Vec<RawMapping>) -> String {
    let mut config = base_config(endpoint, state);
    let function = RawFunction {
        timeout_secs: 30,
        ..url_function(function_url)
    };
    config.functions.insert("f".into(), function);
    config.mappings = mappings;
    config.to_toml()
}

/// An SQS mapping of `queue` to `f`.
fn sqs_mapping(queue: &Queue) -> RawMapping {
    mapping("f", &queue.arn, RawMapping::default())
}

/// A Kinesis mapping with id `id` to `f`; its stream need not exist.
fn kinesis_mapping(id: &str) -> RawMapping {
    let arn = format!("arn:aws:kinesis:us-east-1:123456789012:stream/{id}");
    let keys = RawMapping {
        uuid: Some(id.into()),
        starting_position: Some(RawStartingPosition::TrimHorizon),
        ..RawMapping::default()
    };
    mapping("f", &arn, keys)
}

/// Waits until a record with `body` reached the function.
async fn wait_delivered(function: &FunctionServer, body: &str) {
    wait_until(&format!("{body} to be delivered"), SHORT, || {
        let delivered = function
            .records()
            .iter()
            .any(|record| record["body"] == body);
        async move { delivered.then_some(()) }
    })
    .await;
}

/// The pid in `state/LOCK`, once it is `pid`.
async fn wait_lock_holder(state: &Path, pid: u32) {
    wait_until(&format!("LOCK to name pid {pid}"), SHORT, || {
        let holder = std::fs::read_to_string(state.join("LOCK")).unwrap_or_default();
        async move { (holder.trim() == pid.to_string()).then_some(()) }
    })
    .await;
}

/// Writes a corrupt checkpoint file for mapping `id`; returns its path.
fn corrupt_checkpoint(state: &Path, id: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(state).unwrap();
    let path = state.join(format!("{id}.json"));
    std::fs::write(&path, b"{\"stream_arn\": ").unwrap();
    path
}

#[tokio::test]
async fn a_second_run_on_the_same_state_dir_exits_1_and_the_first_keeps_delivering() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("locked"), &[]).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("shared");
    let toml = config(
        &moto.endpoint,
        &state_dir,
        &function.url(),
        vec![sqs_mapping(&queue)],
    );
    let first = Esmd::start(&toml);
    moto.send(&queue, "before").await;
    wait_delivered(&function, "before").await;

    let mut second = Esmd::start(&toml);
    let status = second.wait_exit(SHORT).await;
    assert_eq!(status.code(), Some(1), "stderr: {}", second.stderr());
    assert_eq!(
        second.stderr().trim_end(),
        format!(
            "esmd: state directory {} is in use by another esmd (pid {})",
            state_dir.display(),
            first.pid()
        ),
        "the second run says who holds the directory and does nothing else"
    );
    wait_lock_holder(&state_dir, first.pid()).await;

    let invocations_before = function.invocations().len();
    moto.send(&queue, "after").await;
    wait_delivered(&function, "after").await;
    assert_eq!(
        function.invocations().len(),
        invocations_before + 1,
        "only the first run delivered it"
    );
}

#[tokio::test]
async fn after_kill_9_of_the_holder_a_new_run_takes_the_lock() {
    let moto = Moto::start().await;
    // moto may still hand a message to the killed run's long poll: it then comes back
    // after this visibility timeout
    let queue = moto
        .create_queue(&random_name("relock"), &[("VisibilityTimeout", "2")])
        .await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let toml = config(
        &moto.endpoint,
        state.path(),
        &function.url(),
        vec![sqs_mapping(&queue)],
    );
    let mut first = Esmd::start(&toml);
    moto.send(&queue, "first").await;
    wait_delivered(&function, "first").await;
    first.kill9();
    first.wait_exit(SHORT).await;

    let next = Esmd::start(&toml);
    wait_lock_holder(state.path(), next.pid()).await;
    moto.send(&queue, "next").await;
    wait_delivered(&function, "next").await;
    assert!(
        !next.stderr().contains("is in use by another esmd"),
        "{}",
        next.stderr()
    );
}

#[tokio::test]
async fn a_mapping_with_a_corrupt_checkpoint_fails_the_others_run_and_a_stop_exits_1() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("healthy"), &[]).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let checkpoint = corrupt_checkpoint(state.path(), "clicks");
    let mut esmd = Esmd::start(&config(
        &moto.endpoint,
        state.path(),
        &function.url(),
        vec![sqs_mapping(&queue), kinesis_mapping("clicks")],
    ));
    esmd.wait_for_log(&format!("checkpoint file {}", checkpoint.display()), SHORT)
        .await;
    assert!(esmd.stderr().contains("is corrupt"), "{}", esmd.stderr());

    moto.send(&queue, "still delivered").await;
    wait_delivered(&function, "still delivered").await;

    esmd.terminate();
    let status = esmd.wait_exit(SHORT).await;
    assert_eq!(status.code(), Some(1), "stderr: {}", esmd.stderr());
    let last_line = esmd.stderr().lines().last().unwrap_or_default().to_owned();
    assert!(
        last_line.starts_with("esmd: stopped; some mappings had failed to start: mapping clicks: ")
            && last_line.contains(&checkpoint.display().to_string()),
        "{last_line}"
    );
}

#[tokio::test]
async fn a_run_whose_only_mapping_has_a_corrupt_checkpoint_exits_1_by_itself() {
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let state = tempfile::tempdir().unwrap();
    let checkpoint = corrupt_checkpoint(state.path(), "orders");
    // the mapping fails before it reads its stream, so no emulator answers here
    let mut esmd = Esmd::start(&config(
        "http://127.0.0.1:1",
        state.path(),
        &function.url(),
        vec![kinesis_mapping("orders")],
    ));
    let status = esmd.wait_exit(SHORT).await;
    assert_eq!(status.code(), Some(1), "stderr: {}", esmd.stderr());
    let last_line = esmd.stderr().lines().last().unwrap_or_default().to_owned();
    assert!(
        last_line.starts_with("esmd: every enabled mapping failed to start: mapping orders: ")
            && last_line.contains(&checkpoint.display().to_string()),
        "{last_line}"
    );
    assert!(function.invocations().is_empty());
}

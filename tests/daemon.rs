//! The daemon as a library: `daemon::run` in process on moto, stopped by a future the test
//! resolves, reports what each mapping did.

mod common;

use std::time::Duration;

use common::{
    FunctionServer, Moto, Reply, base_config, mapping, random_name, url_function, wait_until,
};
use esmd::config::Config;
use esmd::config::raw::{RawConfig, RawFunction, RawMapping, RawStartingPosition};
use esmd::daemon::{MappingState, RunError, RunUntil};
use esmd::status::Activity;
use tokio::sync::oneshot;

const SHORT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_run_stopped_by_its_shutdown_future_reports_each_mapping() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("report"), &[]).await;
    let function = FunctionServer::start(|_| Reply::ok("null")).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    // the stream mapping cannot start: its checkpoint file is corrupt
    let checkpoint = state.join("clicks.json");
    std::fs::write(&checkpoint, b"{\"stream_arn\": ").unwrap();
    let config = RawConfig {
        functions: [(
            "f".to_string(),
            RawFunction {
                timeout_secs: 30,
                ..url_function(&function.url())
            },
        )]
        .into(),
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
                "arn:aws:kinesis:us-east-1:123456789012:stream/clicks",
                RawMapping {
                    uuid: Some("clicks".into()),
                    starting_position: Some(RawStartingPosition::TrimHorizon),
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
        ..base_config(&moto.endpoint, &state)
    };
    let toml = config.to_toml();
    let path = dir.path().join("esmd.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path).unwrap();

    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    let run = tokio::spawn(esmd::daemon::run(
        config,
        SHORT,
        RunUntil::default(),
        shutdown,
        std::future::pending(),
    ));
    moto.send_batch(&queue, &["a", "b", "c"]).await;
    wait_until("the three messages to be deleted", SHORT, || async {
        let delivered = function.records().len() >= 3;
        (delivered && moto.queue_depth(&queue).await == (0, 0)).then_some(())
    })
    .await;
    stop.send(()).unwrap();
    let report = tokio::time::timeout(SHORT, run)
        .await
        .expect("the run stops within its graceful limit")
        .unwrap();

    let ids: Vec<&str> = report.mappings.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["orders", "clicks", "off"], "config order");
    let orders = &report.mappings[0];
    assert_eq!(orders.source, queue.arn);
    assert_eq!(orders.state, MappingState::Ran);
    let invocations = function.invocations().len() as u64;
    assert_eq!(
        orders.activity,
        Activity {
            records_polled: 3,
            batches_invoked: invocations,
            records_invoked: 3,
            records_failed: 0,
            records_deleted: 3,
            records_discarded: 0,
            records_filtered_out: 0,
        }
    );
    let MappingState::FailedToStart { reason } = &report.mappings[1].state else {
        panic!("clicks failed to start: {:?}", report.mappings[1]);
    };
    assert!(
        reason.contains(&checkpoint.display().to_string()),
        "{reason}"
    );
    assert_eq!(report.mappings[2].state, MappingState::Disabled);
    assert_eq!(report.mappings[2].activity, Activity::default());
    assert!(matches!(
        report.result(),
        Err(RunError::SomeMappingsFailed(failures)) if failures.len() == 1 && failures[0].0 == "clicks"
    ));
}

/// The second future cuts the drain short: an invocation still in flight is abandoned,
/// not counted, and its message is not deleted.
#[tokio::test]
async fn stop_now_ends_the_drain_of_an_invocation_in_flight() {
    let moto = Moto::start().await;
    let queue = moto.create_queue(&random_name("stop-now"), &[]).await;
    let function =
        FunctionServer::start(|_| Reply::ok("null").delayed(Duration::from_secs(600))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = RawConfig {
        functions: [(
            "f".to_string(),
            RawFunction {
                timeout_secs: 900,
                ..url_function(&function.url())
            },
        )]
        .into(),
        mappings: vec![mapping("f", &queue.arn, RawMapping::default())],
        ..base_config(&moto.endpoint, &dir.path().join("state"))
    };
    let toml = config.to_toml();
    let path = dir.path().join("esmd.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path).unwrap();

    let (stop, stopped) = oneshot::channel::<()>();
    let (stop_now, stopped_now) = oneshot::channel::<()>();
    let run = tokio::spawn(esmd::daemon::run(
        config,
        Duration::from_secs(600),
        RunUntil::default(),
        async {
            let _ = stopped.await;
        },
        async {
            let _ = stopped_now.await;
        },
    ));
    moto.send(&queue, "slow").await;
    function.wait_invocations(1, SHORT).await;
    stop.send(()).unwrap();
    stop_now.send(()).unwrap();
    let report = tokio::time::timeout(SHORT, run)
        .await
        .expect("stop_now ends the run long before the graceful limit")
        .unwrap();
    assert_eq!(report.mappings[0].state, MappingState::Ran);
    assert_eq!(
        report.mappings[0].activity,
        Activity {
            records_polled: 1,
            ..Activity::default()
        },
        "polled, never answered"
    );
    assert!(report.result().is_ok());
}

//! LocalStack in host mode (through `scripts/localstack run`), one server for a whole test
//! binary, its Kinesis served by our kinesis-local. Where LocalStack cannot run (no Python
//! ≥ 3.13), [`localstack`] reports the test as SKIPPED, with the reason, on the test output.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::sync::OnceCell;

use super::{Emulator, REPO, start_emulator, wait_until};

/// How long LocalStack, then its Kinesis engine, may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The server shared by the tests of this binary; it exits once the test process is gone.
struct Server {
    endpoint: String,
    _child: Child,
    _log: tempfile::NamedTempFile,
}

/// The started server, or why LocalStack cannot run here.
static SERVER: OnceCell<Result<Server, String>> = OnceCell::const_new();

/// Helpers for this test binary's LocalStack (account 000000000000, us-east-1), started on
/// first use. `None` where LocalStack cannot run here: the test is then reported as SKIPPED
/// with the reason, and must return.
pub async fn localstack() -> Option<Emulator> {
    match SERVER.get_or_init(start).await {
        Ok(server) => Some(Emulator::at(&server.endpoint)),
        Err(reason) => {
            let thread = std::thread::current();
            let test = thread.name().unwrap_or("a LocalStack test");
            // Written past the test harness' output capture, so that it shows in a passing run.
            let _ = writeln!(std::io::stderr(), "test {test} ... SKIPPED: {reason}");
            None
        }
    }
}

async fn start() -> Result<Server, String> {
    let script = Path::new(REPO).join("scripts/localstack");
    let python = Command::new(&script)
        .arg("python")
        .output()
        .expect("run scripts/localstack python");
    if !python.status.success() {
        return Err(String::from_utf8_lossy(&python.stderr).trim().to_owned());
    }
    let venv_python = Path::new(REPO).join(".venv-localstack/bin/python");
    assert!(
        venv_python.exists(),
        "LocalStack is not installed ({} is missing): run scripts/test or scripts/localstack install",
        venv_python.display()
    );
    // its files (state, the Kinesis engine's layout) in a fresh dir per run of the binary
    let files = Path::new(env!("CARGO_TARGET_TMPDIR")).join("localstack");
    let _ = std::fs::remove_dir_all(&files);
    let http = reqwest::Client::new();
    let (port, child, log) = start_emulator(
        "LocalStack",
        START_TIMEOUT,
        |port, log| {
            Command::new(&script)
                .arg("run")
                .arg(port.to_string())
                .arg(&files)
                .arg(std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(log.reopen().expect("reopen LocalStack log file"))
                .stderr(log.reopen().expect("reopen LocalStack log file"))
                .spawn()
                .expect("spawn scripts/localstack run")
        },
        |endpoint| {
            let probe = http.get(format!("{endpoint}/_localstack/health")).send();
            async move { probe.await.is_ok_and(|r| r.status().is_success()) }
        },
    )
    .await;
    let endpoint = format!("http://127.0.0.1:{port}");
    // LocalStack starts its Kinesis engine on the first Kinesis request of an account, and
    // answers a request that races that start with a 500 (connection refused): start it here,
    // before the tests run concurrently.
    let kinesis = Emulator::at(&endpoint).kinesis();
    wait_until(
        "LocalStack's Kinesis engine to start",
        START_TIMEOUT,
        || {
            let call = kinesis.list_streams().send();
            async move { call.await.ok().map(|_| ()) }
        },
    )
    .await;
    Ok(Server {
        endpoint,
        _child: child,
        _log: log,
    })
}

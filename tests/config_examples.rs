//! Every example in `config/` passes `esmd validate`, and an invalid file is refused with
//! exit 78 and every problem listed.

use std::path::Path;
use std::process::Command;

fn validate(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_esmd"))
        .args(["validate", "--config"])
        .arg(path)
        .env_remove("RUST_LOG")
        .output()
        .expect("esmd runs")
}

#[test]
fn every_example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let output = validate(&path);
            assert!(
                output.status.success(),
                "{} is invalid:\n{}",
                path.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the example configs in {}",
        dir.display()
    );
}

#[test]
fn an_invalid_config_exits_78_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("esmd.toml");
    std::fs::write(
        &path,
        r#"
[aws]
endpoint_url = "http://127.0.0.1:1"
[functions.f]
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:sqs:us-east-1:1:q"
batch_size = 50
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:sqs:us-east-1:1:q.fifo"
maximum_batching_window_in_seconds = 5
"#,
    )
    .unwrap();
    let output = validate(&path);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "invalid config: 3 problems",
        "functions.f: needs exactly one of `url`, `command` or `lambda`, found none",
        "mappings[0].batch_size: 50 is above 10",
        "mappings[1].maximum_batching_window_in_seconds: a batching window is not supported for fifo queues",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

/// `esmd validate` on `config` in a temp dir, with `AWS_ENDPOINT_URL_KINESIS` as the only
/// endpoint override in the environment.
fn validate_with_kinesis_override(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("esmd.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_esmd"));
    command.args(["validate", "--config"]).arg(&path);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_ENDPOINT_URL") {
            command.env_remove(name);
        }
    }
    command
        .env("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:1")
        .env_remove("RUST_LOG")
        .output()
        .expect("esmd runs")
}

#[test]
fn targets_and_destinations_that_would_reach_real_aws_need_allow_remote() {
    let mappings = r#"
[functions.local]
url = "http://127.0.0.1:9000/2015-03-31/functions/function/invocations"
[[mappings]]
function_name = "local"
event_source_arn = "arn:aws:kinesis:us-east-1:1:stream/clicks"
starting_position = "LATEST"
destination_config = { on_failure = { destination = "arn:aws:sqs:us-east-1:1:clicks-dlq" } }
[[mappings]]
function_name = "clicks-prod"
event_source_arn = "arn:aws:kinesis:us-east-1:1:stream/views"
starting_position = "LATEST"
"#;
    let output = validate_with_kinesis_override(mappings);
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "invalid config: 2 problems",
        "mappings[0].destination_config.on_failure.destination: would send failure records to real AWS (no [aws] endpoint_url, AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL): set [aws] allow_remote = true to allow it",
        "mappings[1].function_name: would invoke real AWS Lambda (no [aws] endpoint_url, AWS_ENDPOINT_URL_LAMBDA or AWS_ENDPOINT_URL): set [aws] allow_remote = true to allow it",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    let allowed =
        validate_with_kinesis_override(&format!("[aws]\nallow_remote = true\n{mappings}"));
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
}

#[test]
fn usage_errors_exit_64_and_a_missing_file_exits_78() {
    let output = Command::new(env!("CARGO_BIN_EXE_esmd"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let output = validate(Path::new("/nonexistent/esmd.toml"));
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config file"));
    let output = Command::new(env!("CARGO_BIN_EXE_esmd"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("esmd "));
}

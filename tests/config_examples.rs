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

/// `esmd validate` on `path` with `endpoint` (if any) as `AWS_ENDPOINT_URL`, the only
/// endpoint override in the environment.
fn validate_with_endpoint(path: &Path, endpoint: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_esmd"));
    command.args(["validate", "--config"]).arg(path);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_ENDPOINT_URL") {
            command.env_remove(name);
        }
    }
    if let Some(endpoint) = endpoint {
        command.env("AWS_ENDPOINT_URL", endpoint);
    }
    command.env_remove("RUST_LOG").output().expect("esmd runs")
}

#[test]
fn the_compose_config_is_valid_with_the_endpoint_the_compose_file_sets() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = repo.join("localstack/esmd.toml");
    let compose = std::fs::read_to_string(repo.join("localstack/docker-compose.yml")).unwrap();
    let endpoint = "http://localstack:4566";
    assert!(
        compose.contains(&format!("AWS_ENDPOINT_URL={endpoint}")),
        "the compose file sets AWS_ENDPOINT_URL={endpoint} for esmd"
    );
    let output = validate_with_endpoint(&config, Some(endpoint));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let without = validate_with_endpoint(&config, None);
    assert_eq!(without.status.code(), Some(78), "no endpoint: real AWS");
}

/// The (kind, name) of every source in account 000000000000 (LocalStack's) that the
/// example configs name: `("queue", "orders")`, `("stream", "clicks")`, `("table", ...)`.
fn localstack_sources(repo: &Path) -> Vec<(&'static str, String)> {
    let mut files: Vec<_> = std::fs::read_dir(repo.join("config"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.push(repo.join("localstack/esmd.toml"));
    let mut sources = Vec::new();
    for file in files {
        let config: toml::Table = std::fs::read_to_string(&file).unwrap().parse().unwrap();
        let mappings = config.get("mappings").and_then(|m| m.as_array());
        for mapping in mappings.into_iter().flatten() {
            let arn = mapping["event_source_arn"].as_str().unwrap();
            let parts: Vec<&str> = arn.splitn(6, ':').collect();
            if parts[4] != "000000000000" {
                continue;
            }
            let source = match (parts[2], parts[5].split_once('/')) {
                ("sqs", _) => ("queue", parts[5].to_string()),
                ("kinesis", Some(("stream", name))) => ("stream", name.to_string()),
                ("dynamodb", Some(("table", name))) => ("table", name.to_string()),
                _ => panic!("{}: unexpected source {arn}", file.display()),
            };
            sources.push(source);
        }
    }
    sources
}

#[test]
fn the_localstack_init_script_creates_every_source_the_examples_name() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(repo.join("localstack/init-aws.sh")).unwrap();
    let sources = localstack_sources(repo);
    assert!(
        sources.len() >= 4,
        "LocalStack sources in the examples: {sources:?}"
    );
    let words: Vec<&str> = script.split_whitespace().collect();
    for (kind, name) in sources {
        let flag = format!("--{kind}-name");
        assert!(
            words.windows(2).any(|w| w[0] == flag && w[1] == name),
            "localstack/init-aws.sh does not create the {kind} {name}"
        );
    }
}

#[test]
fn the_localstack_compose_file_follows_the_compose_spec() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let check = |file: &Path| {
        Command::new(repo.join("scripts/check-compose"))
            .arg(file)
            .output()
            .expect("run scripts/check-compose")
    };
    let output = check(&repo.join("localstack/docker-compose.yml"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("docker-compose.yml");
    std::fs::write(
        &broken,
        "services:\n  esmd:\n    image: esmd\n    volume: [a]\n",
    )
    .unwrap();
    let output = check(&broken);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("services/esmd: 'volume'"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

//! The validation rules: AWS ranges and cross-field rules, plus our own.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use toml::{Table, Value};

use super::reader::{Fields, Problems, describe};
use super::*;

/// Validates config `text`. Relative paths resolve against `base_dir`; `env` reads
/// environment variables (the endpoint overrides of the standard AWS chain).
pub fn validate(
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let table: Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(err) => {
            let message = err.message().to_string();
            let location = err
                .span()
                .map(|span| {
                    let line = text[..span.start].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_default();
            return Err(vec![Problem {
                path: location,
                message: format!("not valid TOML: {message}"),
            }]);
        }
    };
    let mut p = Problems::default();
    let mut root = Fields::new("", &table);

    let aws = root
        .table("aws", &mut p)
        .map(|f| read_aws(f, &mut p))
        .unwrap_or_default();
    let state_dir = root
        .table("state", &mut p)
        .and_then(|mut f| {
            let dir = f.string("dir", &mut p).map(|d| base_dir.join(d));
            f.finish(&mut p);
            dir
        })
        .unwrap_or_else(|| base_dir.join(".esmd"));
    if root.has("admin") {
        p.add(
            "admin",
            "the operational endpoint is not supported yet by this version of esmd",
        );
    }

    let mut functions = BTreeMap::new();
    let mut declared_functions = HashSet::new();
    if let Some(mut section) = root.table("functions", &mut p) {
        for (name, value) in section.entries() {
            declared_functions.insert(name.as_str());
            let path = format!("functions.{name}");
            match value.as_table() {
                Some(t) => {
                    if let Some(function) = read_function(name, Fields::new(path, t), &mut p) {
                        functions.insert(name.clone(), function);
                    }
                }
                None => p.add(path, format!("expected a table, found {}", describe(value))),
            }
        }
    }

    let guard = RemoteGuard { aws: &aws, env };
    let mut mappings = Vec::new();
    let mut used_functions = HashSet::new();
    match root.array("mappings", &mut p) {
        Some(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("mappings[{i}]");
                match item.as_table() {
                    Some(t) => {
                        used_functions.extend(t.get("function_name").and_then(Value::as_str));
                        let fields = Fields::new(path, t);
                        if let Some(m) = read_mapping(fields, &guard, &declared_functions, &mut p) {
                            mappings.push((i, m));
                        }
                    }
                    None => p.add(path, format!("expected a table, found {}", describe(item))),
                }
            }
        }
        None if !root.has("mappings") => p.add("mappings", "no [[mappings]] defined"),
        None => {}
    }
    root.finish(&mut p);
    for (name, function) in &functions {
        if let TargetConfig::Lambda {
            endpoint_url: None, ..
        } = function.target
            && used_functions.contains(name.as_str())
        {
            guard.check(
                &format!("functions.{name}.lambda"),
                "would invoke real AWS Lambda",
                "AWS_ENDPOINT_URL_LAMBDA",
                Some("endpoint_url"),
                &mut p,
            );
        }
    }

    let mut seen_ids = HashSet::new();
    for (i, m) in &mappings {
        if !seen_ids.insert(m.id.clone()) {
            p.add(
                format!("mappings[{i}]"),
                format!(
                    "duplicate mapping id {} (two mappings of one source and function need distinct `uuid`s)",
                    m.id
                ),
            );
        }
    }

    if !p.0.is_empty() {
        return Err(p.0);
    }
    let mappings: Vec<MappingConfig> = mappings.into_iter().map(|(_, m)| m).collect();
    for m in &mappings {
        functions
            .entry(m.function_name.clone())
            .or_insert_with(|| FunctionConfig {
                name: m.function_name.clone(),
                target: TargetConfig::Lambda {
                    function_name: m.function_name.clone(),
                    qualifier: None,
                    endpoint_url: None,
                },
                max_concurrency: DEFAULT_LAMBDA_CONCURRENCY,
                timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
                role_arn: None,
                source_region: None,
            })
            .source_region
            .get_or_insert_with(|| m.source.region.clone());
    }
    Ok(Config {
        aws,
        state_dir,
        functions,
        mappings,
    })
}

fn read_aws(mut f: Fields<'_>, p: &mut Problems) -> AwsSettings {
    let region = f.string("region", p).map(str::to_string);
    let endpoint_url = f
        .string("endpoint_url", p)
        .and_then(|u| checked_url(&f.at("endpoint_url"), u, true, p));
    let allow_remote = f.boolean("allow_remote", p).unwrap_or(false);
    f.finish(p);
    AwsSettings {
        region,
        endpoint_url,
        allow_remote,
    }
}

fn checked_url(path: &str, text: &str, https_ok: bool, p: &mut Problems) -> Option<String> {
    match url::Url::parse(text) {
        Ok(u) if u.scheme() == "http" || (https_ok && u.scheme() == "https") => {
            if u.host_str().is_none_or(str::is_empty) {
                p.add(path, format!("{text:?} names no host"));
                return None;
            }
            Some(text.to_string())
        }
        Ok(u) if u.scheme() == "https" => {
            p.add(
                path,
                format!("{text:?}: https is not supported for url targets (use http)"),
            );
            None
        }
        Ok(u) => {
            p.add(
                path,
                format!("{text:?}: scheme {:?} is not http", u.scheme()),
            );
            None
        }
        Err(err) => {
            p.add(path, format!("{text:?} is not a valid URL: {err}"));
            None
        }
    }
}

fn read_function(name: &str, mut f: Fields<'_>, p: &mut Problems) -> Option<FunctionConfig> {
    let mut targets = Vec::new();
    if let Some(u) = f.string("url", p) {
        targets.push(checked_url(&f.at("url"), u, false, p).map(TargetConfig::Url));
    }
    if let Some(items) = f.array("command", p) {
        targets.push(read_command(&f.at("command"), items, p));
    }
    if let Some(mut lambda) = f.table("lambda", p) {
        let function_name = lambda.string("function_name", p).map(str::to_string);
        if function_name.as_deref() == Some("") || !lambda.has("function_name") {
            p.add(
                lambda.at("function_name"),
                "a non-empty function name is required",
            );
        }
        let qualifier = lambda.string("qualifier", p).map(str::to_string);
        if qualifier
            .as_ref()
            .is_some_and(|q| q.is_empty() || q.len() > 128)
        {
            p.add(lambda.at("qualifier"), "must be 1 to 128 characters");
        }
        let endpoint_url = lambda
            .string("endpoint_url", p)
            .and_then(|u| checked_url(&lambda.at("endpoint_url"), u, true, p));
        lambda.finish(p);
        targets.push(function_name.map(|function_name| TargetConfig::Lambda {
            function_name,
            qualifier,
            endpoint_url,
        }));
    }
    let max_concurrency = f.integer_in("max_concurrency", 1, 10_000, p);
    let timeout = f.integer_in("timeout_secs", 1, 900, p);
    let role_arn = f.string("role_arn", p).map(str::to_string);
    if let Some(role) = &role_arn
        && !role.starts_with("arn:")
    {
        p.add(f.at("role_arn"), format!("{role:?} is not an ARN"));
    }
    let path = f.path().to_string();
    f.finish(p);
    let target = match targets.len() {
        0 => {
            p.add(
                path,
                "needs exactly one of `url`, `command` or `lambda`, found none",
            );
            return None;
        }
        1 => targets.pop().flatten()?,
        n => {
            p.add(
                path,
                format!("needs exactly one of `url`, `command` or `lambda`, found {n}"),
            );
            return None;
        }
    };
    let default_concurrency = match target {
        TargetConfig::Url(_) => DEFAULT_URL_CONCURRENCY,
        TargetConfig::Command(_) => DEFAULT_COMMAND_CONCURRENCY,
        TargetConfig::Lambda { .. } => DEFAULT_LAMBDA_CONCURRENCY,
    };
    Some(FunctionConfig {
        name: name.to_string(),
        target,
        max_concurrency: max_concurrency.map_or(default_concurrency, |n| n as usize),
        timeout: Duration::from_secs(timeout.map_or(DEFAULT_TIMEOUT_SECS, |t| t as u64)),
        role_arn,
        source_region: None,
    })
}

fn read_command(path: &str, items: &[Value], p: &mut Problems) -> Option<TargetConfig> {
    if items.is_empty() {
        p.add(path, "an empty command: give the program and its arguments");
        return None;
    }
    let mut argv = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(s) => argv.push(s.to_string()),
            None => p.add(
                format!("{path}[{i}]"),
                format!("expected a string, found {}", describe(item)),
            ),
        }
    }
    if argv
        .first()
        .is_some_and(|program| program.trim().is_empty())
    {
        p.add(format!("{path}[0]"), "the program name is empty");
        return None;
    }
    (argv.len() == items.len()).then_some(TargetConfig::Command(argv))
}

/// Keys that only stream mappings take.
const STREAM_ONLY: [&str; 9] = [
    "starting_position",
    "starting_position_timestamp",
    "parallelization_factor",
    "bisect_batch_on_function_error",
    "maximum_retry_attempts",
    "maximum_record_age_in_seconds",
    "destination_config",
    "tumbling_window_in_seconds",
    "idle_poll_interval_ms",
];

/// Reads one mapping; `declared_functions` are the names in `[functions]` (any other name
/// is invoked through the Lambda Invoke API).
fn read_mapping(
    mut f: Fields<'_>,
    guard: &RemoteGuard<'_>,
    declared_functions: &HashSet<&str>,
    p: &mut Problems,
) -> Option<MappingConfig> {
    let errors_before = p.0.len();
    let function_name = f.string("function_name", p).map(str::to_string);
    match &function_name {
        None if !f.has("function_name") => p.add(f.at("function_name"), "is required"),
        Some(name) if name.is_empty() => p.add(f.at("function_name"), "must not be empty"),
        Some(name) if !declared_functions.contains(name.as_str()) => guard.check(
            &f.at("function_name"),
            "would invoke real AWS Lambda",
            "AWS_ENDPOINT_URL_LAMBDA",
            None,
            p,
        ),
        _ => {}
    }
    let source = match f.string("event_source_arn", p) {
        Some(arn) => match SourceArn::parse(arn) {
            Ok(source) => Some(source),
            Err(message) => {
                p.add(f.at("event_source_arn"), message);
                None
            }
        },
        None => {
            if !f.has("event_source_arn") {
                p.add(f.at("event_source_arn"), "is required");
            }
            None
        }
    };
    let uuid = f.string("uuid", p).map(str::to_string);
    if let Some(id) = &uuid
        && (id.is_empty()
            || id.starts_with('.')
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        p.add(
            f.at("uuid"),
            format!("{id:?}: use letters, digits, '.', '_' and '-' (it names the checkpoint file)"),
        );
    }
    let enabled = f.boolean("enabled", p).unwrap_or(true);
    let batch_size = f.integer_in("batch_size", 1, 10_000, p);
    let window = f.integer_in("maximum_batching_window_in_seconds", 0, 300, p);
    let report = read_response_types(&mut f, p);
    if f.has("filter_criteria") {
        p.add(
            f.at("filter_criteria"),
            "event filtering is not supported yet by this version of esmd",
        );
    }
    if f.has("capture") {
        p.add(
            f.at("capture"),
            "capture is not supported yet by this version of esmd",
        );
    }

    let source = source?;
    let settings = match &source.kind {
        SourceKind::Sqs { fifo, .. } => {
            for key in STREAM_ONLY {
                if f.has(key) {
                    p.add(f.at(key), "is not accepted for sqs mappings");
                }
            }
            if *fifo {
                if let Some(size) = batch_size
                    && size > 10
                {
                    p.add(
                        f.at("batch_size"),
                        format!("{size} is above the maximum 10 for fifo queues"),
                    );
                }
                if let Some(w) = window
                    && w > 0
                {
                    p.add(
                        f.at("maximum_batching_window_in_seconds"),
                        "a batching window is not supported for fifo queues",
                    );
                }
            } else if let Some(size) = batch_size
                && size > 10
                && window.unwrap_or(0) < 1
            {
                p.add(
                    f.at("batch_size"),
                    format!(
                        "{size} is above 10, which needs maximum_batching_window_in_seconds of at least 1 for sqs"
                    ),
                );
            }
            let mut maximum_concurrency = None;
            if let Some(mut scaling) = f.table("scaling_config", p) {
                maximum_concurrency = scaling
                    .integer_in("maximum_concurrency", 2, 1000, p)
                    .map(|n| n as usize);
                scaling.finish(p);
            }
            SourceSettings::Sqs(SqsSettings {
                maximum_concurrency,
            })
        }
        SourceKind::Kinesis { .. } | SourceKind::DynamoDb { .. } => {
            if f.has("scaling_config") {
                p.add(f.at("scaling_config"), "is accepted for sqs mappings only");
            }
            read_stream_settings(&mut f, &source, p).map(SourceSettings::Stream)?
        }
    };
    let source_var = match source.kind {
        SourceKind::Sqs { .. } => "AWS_ENDPOINT_URL_SQS",
        SourceKind::Kinesis { .. } => "AWS_ENDPOINT_URL_KINESIS",
        SourceKind::DynamoDb { .. } => "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
    };
    guard.check(
        &f.at("event_source_arn"),
        "would poll real AWS",
        source_var,
        None,
        p,
    );
    if let SourceSettings::Stream(StreamSettings {
        on_failure_destination: Some(destination),
        ..
    }) = &settings
        && let Some(service_var) = destination_endpoint_var(destination)
    {
        guard.check(
            &format!("{}.on_failure.destination", f.at("destination_config")),
            "would send failure records to real AWS",
            service_var,
            None,
            p,
        );
    }
    let default_batch = match source.kind {
        SourceKind::Sqs { .. } => 10,
        _ => 100,
    };
    f.finish(p);
    if p.0.len() > errors_before {
        return None;
    }
    let function_name = function_name?;
    let id = uuid.unwrap_or_else(|| derived_id(&source.arn, &function_name));
    Some(MappingConfig {
        id,
        function_name,
        source,
        batch_size: batch_size.map_or(default_batch, |n| n as usize),
        batching_window: Duration::from_secs(window.unwrap_or(0) as u64),
        report_batch_item_failures: report,
        enabled,
        settings,
    })
}

fn read_response_types(f: &mut Fields<'_>, p: &mut Problems) -> bool {
    let Some(items) = f.array("function_response_types", p) else {
        return false;
    };
    let path = f.at("function_response_types");
    if items.len() > 1 {
        p.add(&path, "takes at most one item");
    }
    let mut report = false;
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some("ReportBatchItemFailures") => report = true,
            _ => p.add(
                format!("{path}[{i}]"),
                format!(
                    "{} is not a response type (the only one is \"ReportBatchItemFailures\")",
                    item
                ),
            ),
        }
    }
    report
}

fn read_stream_settings(
    f: &mut Fields<'_>,
    source: &SourceArn,
    p: &mut Problems,
) -> Option<StreamSettings> {
    let kinesis = matches!(source.kind, SourceKind::Kinesis { .. });
    let timestamp = f.integer("starting_position_timestamp", p);
    let position = match f.string("starting_position", p) {
        Some("TRIM_HORIZON") => Some(StartingPosition::TrimHorizon),
        Some("LATEST") => Some(StartingPosition::Latest),
        Some("AT_TIMESTAMP") if !kinesis => {
            p.add(
                f.at("starting_position"),
                "AT_TIMESTAMP is supported for kinesis only (dynamodb takes TRIM_HORIZON or LATEST)",
            );
            None
        }
        Some("AT_TIMESTAMP") => match timestamp {
            Some(ts) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                if ts > now {
                    p.add(
                        f.at("starting_position_timestamp"),
                        format!("{ts} is in the future"),
                    );
                }
                Some(StartingPosition::AtTimestamp(ts))
            }
            None => {
                p.add(
                    f.at("starting_position_timestamp"),
                    "is required with AT_TIMESTAMP",
                );
                None
            }
        },
        Some(other) => {
            p.add(
                f.at("starting_position"),
                format!("{other:?} is not TRIM_HORIZON, LATEST or AT_TIMESTAMP"),
            );
            None
        }
        None => {
            if !f.has("starting_position") {
                p.add(f.at("starting_position"), "is required for stream mappings");
            }
            None
        }
    };
    if timestamp.is_some() && !matches!(position, Some(StartingPosition::AtTimestamp(_)) | None) {
        p.add(
            f.at("starting_position_timestamp"),
            "is valid only with starting_position = \"AT_TIMESTAMP\"",
        );
    }
    let parallelization_factor = f
        .integer_in("parallelization_factor", 1, 10, p)
        .unwrap_or(1);
    let bisect = f
        .boolean("bisect_batch_on_function_error", p)
        .unwrap_or(false);
    let retries = f
        .integer_in("maximum_retry_attempts", -1, 10_000, p)
        .unwrap_or(-1);
    let age = f.integer_in("maximum_record_age_in_seconds", -1, 604_800, p);
    if let Some(age) = age
        && (0..60).contains(&age)
    {
        p.add(
            f.at("maximum_record_age_in_seconds"),
            format!("{age} is not allowed: use -1 (no limit) or 60..=604800"),
        );
    }
    if let Some(window) = f.integer_in("tumbling_window_in_seconds", 0, 900, p)
        && window > 0
    {
        p.add(
            f.at("tumbling_window_in_seconds"),
            "tumbling windows are not supported yet by this version of esmd",
        );
    }
    let idle_poll_interval = f
        .integer_in("idle_poll_interval_ms", 10, 60_000, p)
        .map(|ms| Duration::from_millis(ms as u64));
    let mut destination = None;
    if let Some(mut config) = f.table("destination_config", p) {
        if let Some(mut on_failure) = config.table("on_failure", p) {
            destination = on_failure
                .string("destination", p)
                .filter(|d| !d.is_empty())
                .and_then(|d| checked_destination(&on_failure.at("destination"), d, p));
            on_failure.finish(p);
        }
        config.finish(p);
    }
    Some(StreamSettings {
        starting_position: position?,
        parallelization_factor: parallelization_factor as usize,
        bisect_batch_on_function_error: bisect,
        maximum_retry_attempts: retries,
        maximum_record_age_in_seconds: age.unwrap_or(-1),
        on_failure_destination: destination,
        idle_poll_interval,
    })
}

fn checked_destination(path: &str, dest: &str, p: &mut Problems) -> Option<String> {
    if let Some(file) = dest.strip_prefix("file://") {
        if !file.starts_with('/') {
            p.add(
                path,
                format!("{dest:?}: a file destination needs an absolute path (file:///...)"),
            );
            return None;
        }
        return Some(dest.to_string());
    }
    let parts: Vec<&str> = dest.splitn(6, ':').collect();
    match parts[..] {
        ["arn", _, "sqs", _, _, name] | ["arn", _, "sns", _, _, name]
            if name.ends_with(".fifo") =>
        {
            p.add(
                path,
                format!("{dest:?}: fifo queues and topics are not supported as destinations"),
            );
            None
        }
        ["arn", _, "sqs" | "sns", region, account, name]
            if !region.is_empty() && !account.is_empty() && !name.is_empty() =>
        {
            Some(dest.to_string())
        }
        ["arn", _, "s3", "", "", bucket] if !bucket.is_empty() && !bucket.contains('/') => {
            Some(dest.to_string())
        }
        _ => {
            p.add(
                path,
                format!(
                    "{dest:?} is not an SQS queue, SNS topic or S3 bucket ARN, nor file:///path"
                ),
            );
            None
        }
    }
}

/// The endpoint variable of a validated destination's service; `None` for a file.
fn destination_endpoint_var(destination: &str) -> Option<&'static str> {
    if destination.starts_with("file://") {
        return None;
    }
    // arn:PARTITION:SERVICE:...
    Some(match destination.split(':').nth(2) {
        Some("sqs") => "AWS_ENDPOINT_URL_SQS",
        Some("sns") => "AWS_ENDPOINT_URL_SNS",
        _ => "AWS_ENDPOINT_URL_S3",
    })
}

/// Refuses to reach real AWS by accident: every client (source, Lambda target,
/// destination) with no endpoint override needs `[aws] allow_remote = true`.
struct RemoteGuard<'a> {
    aws: &'a AwsSettings,
    /// Reads environment variables (the endpoint overrides of the standard AWS chain).
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl RemoteGuard<'_> {
    /// Adds a problem at `path` unless the client can reach an override: `[aws]
    /// endpoint_url`, `service_var`, `AWS_ENDPOINT_URL`, or (checked by the caller) the
    /// entry's own `own_key`, which the message then names too.
    fn check(
        &self,
        path: &str,
        action: &str,
        service_var: &str,
        own_key: Option<&str>,
        p: &mut Problems,
    ) {
        if self.aws.allow_remote || self.aws.endpoint_url.is_some() {
            return;
        }
        let overridden = [service_var, "AWS_ENDPOINT_URL"]
            .iter()
            .any(|var| (self.env)(var).is_some_and(|v| !v.is_empty()));
        if !overridden {
            let own = own_key.map(|key| format!("{key}, ")).unwrap_or_default();
            p.add(
                path,
                format!(
                    "{action} (no {own}[aws] endpoint_url, {service_var} or AWS_ENDPOINT_URL): set [aws] allow_remote = true to allow it"
                ),
            );
        }
    }
}

/// A stable id for a mapping without `uuid`: a name-based UUID of its source and function.
pub fn derived_id(event_source_arn: &str, function_name: &str) -> String {
    let name = format!("{event_source_arn}|{function_name}");
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, name.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "[aws]\nendpoint_url = \"http://127.0.0.1:5000\"\n";

    fn check(text: &str) -> Result<Config, Vec<String>> {
        validate(text, Path::new("/etc/esmd"), &|_| None)
            .map_err(|problems| problems.iter().map(ToString::to_string).collect())
    }

    fn problems(text: &str) -> Vec<String> {
        check(text).expect_err("config should be invalid")
    }

    fn sqs_mapping(extra: &str) -> String {
        format!(
            "{LOCAL}[[mappings]]\nfunction_name = \"f\"\nevent_source_arn = \"arn:aws:sqs:us-east-1:1:q\"\n{extra}\n"
        )
    }

    #[test]
    fn a_minimal_sqs_mapping_gets_aws_defaults() {
        let config = check(&sqs_mapping("")).unwrap();
        let m = &config.mappings[0];
        assert_eq!(m.batch_size, 10);
        assert_eq!(m.batching_window, Duration::ZERO);
        assert!(m.enabled);
        assert!(!m.report_batch_item_failures);
        assert_eq!(m.id, derived_id("arn:aws:sqs:us-east-1:1:q", "f"));
        assert_eq!(config.state_dir, Path::new("/etc/esmd/.esmd"));
        // no [functions] entry: the Lambda Invoke API
        let f = config.function("f").unwrap();
        assert_eq!(
            f.target,
            TargetConfig::Lambda {
                function_name: "f".into(),
                qualifier: None,
                endpoint_url: None
            }
        );
    }

    #[test]
    fn every_problem_is_listed_with_its_location() {
        let text = format!(
            r#"{LOCAL}
bogus = 1
[functions.none]
max_concurrency = 0
[functions.two]
url = "http://127.0.0.1:9000/x"
command = ["handler"]
[functions.badurl]
url = "not a url"
[functions.empty]
command = []
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:sqs:us-east-1:1:q.fifo"
batch_size = 11
maximum_batching_window_in_seconds = 1
starting_position = "LATEST"
[[mappings]]
event_source_arn = "arn:aws:sqs:us-east-1:1:q"
function_name = "f"
batch_size = 20
scaling_config = {{ maximum_concurrency = 1 }}
function_response_types = ["ReportItemFailures"]
batch_sise = 3
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:sns:us-east-1:1:t"
"#
        );
        assert_eq!(
            problems(&text),
            vec![
                "aws.bogus: unknown key",
                "functions.badurl.url: \"not a url\" is not a valid URL: relative URL without a base",
                "functions.empty.command: an empty command: give the program and its arguments",
                "functions.none.max_concurrency: 0 is outside the allowed range 1..=10000",
                "functions.none: needs exactly one of `url`, `command` or `lambda`, found none",
                "functions.two: needs exactly one of `url`, `command` or `lambda`, found 2",
                "mappings[0].starting_position: is not accepted for sqs mappings",
                "mappings[0].batch_size: 11 is above the maximum 10 for fifo queues",
                "mappings[0].maximum_batching_window_in_seconds: a batching window is not supported for fifo queues",
                "mappings[1].function_response_types[0]: \"ReportItemFailures\" is not a response type (the only one is \"ReportBatchItemFailures\")",
                "mappings[1].batch_size: 20 is above 10, which needs maximum_batching_window_in_seconds of at least 1 for sqs",
                "mappings[1].scaling_config.maximum_concurrency: 1 is outside the allowed range 2..=1000",
                "mappings[1].batch_sise: unknown key",
                "mappings[2].event_source_arn: \"arn:aws:sns:us-east-1:1:t\": service \"sns\" is not an event source (sqs, kinesis or dynamodb)",
            ]
        );
    }

    #[test]
    fn sqs_ranges_follow_aws() {
        assert!(
            check(&sqs_mapping(
                "batch_size = 10000\nmaximum_batching_window_in_seconds = 300"
            ))
            .is_ok()
        );
        assert!(
            check(&sqs_mapping(
                "batch_size = 11\nmaximum_batching_window_in_seconds = 1"
            ))
            .is_ok()
        );
        assert_eq!(
            problems(&sqs_mapping("batch_size = 10001")),
            vec!["mappings[0].batch_size: 10001 is outside the allowed range 1..=10000"]
        );
        assert_eq!(
            problems(&sqs_mapping("batch_size = 0")),
            vec!["mappings[0].batch_size: 0 is outside the allowed range 1..=10000"]
        );
        assert_eq!(
            problems(&sqs_mapping("maximum_batching_window_in_seconds = 301")),
            vec![
                "mappings[0].maximum_batching_window_in_seconds: 301 is outside the allowed range 0..=300"
            ]
        );
        assert_eq!(
            problems(&sqs_mapping(
                "scaling_config = { maximum_concurrency = 1001 }"
            )),
            vec![
                "mappings[0].scaling_config.maximum_concurrency: 1001 is outside the allowed range 2..=1000"
            ]
        );
        assert_eq!(
            problems(&sqs_mapping(
                "function_response_types = [\"ReportBatchItemFailures\", \"ReportBatchItemFailures\"]"
            )),
            vec!["mappings[0].function_response_types: takes at most one item"]
        );
        assert!(check(&sqs_mapping("function_response_types = []")).is_ok());
    }

    #[test]
    fn targets_are_read() {
        let config = check(&format!(
            r#"{}
[functions.f]
command = ["python3", "handler.py"]
timeout_secs = 30
role_arn = "arn:aws:iam::1:role/r"
[functions.g]
url = "http://127.0.0.1:9000/2015-03-31/functions/function/invocations"
[functions.h]
lambda = {{ function_name = "orders-prod", qualifier = "live", endpoint_url = "http://127.0.0.1:4566" }}
"#,
            sqs_mapping("")
        ))
        .unwrap();
        let f = config.function("f").unwrap();
        assert_eq!(
            f.target,
            TargetConfig::Command(vec!["python3".into(), "handler.py".into()])
        );
        assert_eq!(f.timeout, Duration::from_secs(30));
        assert_eq!(f.max_concurrency, DEFAULT_COMMAND_CONCURRENCY);
        assert_eq!(config.function("g").unwrap().max_concurrency, 1);
        assert_eq!(
            config.function("h").unwrap().target,
            TargetConfig::Lambda {
                function_name: "orders-prod".into(),
                qualifier: Some("live".into()),
                endpoint_url: Some("http://127.0.0.1:4566".into())
            }
        );
    }

    #[test]
    fn bad_target_entries() {
        let text = |f: &str| format!("{}\n[functions.f]\n{f}\n", sqs_mapping(""));
        assert_eq!(
            problems(&text("url = \"https://example.com/x\"")),
            vec![
                "functions.f.url: \"https://example.com/x\": https is not supported for url targets (use http)"
            ]
        );
        assert_eq!(
            problems(&text("command = [\"\"]")),
            vec!["functions.f.command[0]: the program name is empty"]
        );
        assert_eq!(
            problems(&text("command = [\"x\", 1]")),
            vec!["functions.f.command[1]: expected a string, found an integer"]
        );
        assert_eq!(
            problems(&text("lambda = { qualifier = \"\" }")),
            vec![
                "functions.f.lambda.function_name: a non-empty function name is required",
                "functions.f.lambda.qualifier: must be 1 to 128 characters"
            ]
        );
        assert_eq!(
            problems(&text("url = \"http://x/\"\ntimeout_secs = 901")),
            vec!["functions.f.timeout_secs: 901 is outside the allowed range 1..=900"]
        );
    }

    #[test]
    fn real_aws_needs_allow_remote() {
        let text = "[functions.f]\nurl = \"http://127.0.0.1:9000/x\"\n[[mappings]]\nfunction_name = \"f\"\nevent_source_arn = \"arn:aws:sqs:us-east-1:1:q\"\n";
        let found = validate(text, Path::new("."), &|_| None).unwrap_err();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].to_string(),
            "mappings[0].event_source_arn: would poll real AWS (no [aws] endpoint_url, AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL): set [aws] allow_remote = true to allow it"
        );
        let env =
            |name: &str| (name == "AWS_ENDPOINT_URL_SQS").then(|| "http://127.0.0.1:1".to_string());
        assert!(validate(text, Path::new("."), &env).is_ok());
        let allowed = format!("[aws]\nallow_remote = true\n{text}");
        assert!(validate(&allowed, Path::new("."), &|_| None).is_ok());
    }

    #[test]
    fn every_client_that_would_reach_real_aws_is_named() {
        let text = r#"
[functions.remote]
lambda = { function_name = "orders-prod" }
[functions.local]
lambda = { function_name = "orders", endpoint_url = "http://127.0.0.1:4566" }
[functions.unused]
lambda = { function_name = "other" }
[[mappings]]
function_name = "remote"
event_source_arn = "arn:aws:sqs:us-east-1:1:q"
[[mappings]]
function_name = "local"
event_source_arn = "arn:aws:kinesis:us-east-1:1:stream/s"
starting_position = "LATEST"
destination_config = { on_failure = { destination = "arn:aws:sns:us-east-1:1:t" } }
[[mappings]]
function_name = "implicit"
event_source_arn = "arn:aws:dynamodb:us-east-1:1:table/t"
starting_position = "LATEST"
destination_config = { on_failure = { destination = "arn:aws:s3:::bucket" } }
[[mappings]]
function_name = "local"
event_source_arn = "arn:aws:kinesis:us-east-1:1:stream/s2"
starting_position = "LATEST"
destination_config = { on_failure = { destination = "file:///var/esmd/failures.jsonl" } }
"#;
        let allow = ": set [aws] allow_remote = true to allow it";
        assert_eq!(
            problems(text),
            vec![
                format!(
                    "mappings[0].event_source_arn: would poll real AWS (no [aws] endpoint_url, AWS_ENDPOINT_URL_SQS or AWS_ENDPOINT_URL){allow}"
                ),
                format!(
                    "mappings[1].event_source_arn: would poll real AWS (no [aws] endpoint_url, AWS_ENDPOINT_URL_KINESIS or AWS_ENDPOINT_URL){allow}"
                ),
                format!(
                    "mappings[1].destination_config.on_failure.destination: would send failure records to real AWS (no [aws] endpoint_url, AWS_ENDPOINT_URL_SNS or AWS_ENDPOINT_URL){allow}"
                ),
                format!(
                    "mappings[2].function_name: would invoke real AWS Lambda (no [aws] endpoint_url, AWS_ENDPOINT_URL_LAMBDA or AWS_ENDPOINT_URL){allow}"
                ),
                format!(
                    "mappings[2].event_source_arn: would poll real AWS (no [aws] endpoint_url, AWS_ENDPOINT_URL_DYNAMODB_STREAMS or AWS_ENDPOINT_URL){allow}"
                ),
                format!(
                    "mappings[2].destination_config.on_failure.destination: would send failure records to real AWS (no [aws] endpoint_url, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL){allow}"
                ),
                format!(
                    "mappings[3].event_source_arn: would poll real AWS (no [aws] endpoint_url, AWS_ENDPOINT_URL_KINESIS or AWS_ENDPOINT_URL){allow}"
                ),
                format!(
                    "functions.remote.lambda: would invoke real AWS Lambda (no endpoint_url, [aws] endpoint_url, AWS_ENDPOINT_URL_LAMBDA or AWS_ENDPOINT_URL){allow}"
                ),
            ]
        );

        let with_env = |vars: &[&str]| {
            let env = |name: &str| vars.contains(&name).then(|| "http://127.0.0.1:1".into());
            validate(text, Path::new("."), &env)
                .map(|_| ())
                .map_err(|found| found.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        let services = [
            "AWS_ENDPOINT_URL_SQS",
            "AWS_ENDPOINT_URL_KINESIS",
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
            "AWS_ENDPOINT_URL_SNS",
            "AWS_ENDPOINT_URL_S3",
        ];
        let found = with_env(&services).unwrap_err();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("mappings[2].function_name: would invoke real AWS Lambda"));
        assert!(found[1].starts_with("functions.remote.lambda: would invoke real AWS Lambda"));
        let every_service = [
            "AWS_ENDPOINT_URL_SQS",
            "AWS_ENDPOINT_URL_KINESIS",
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
            "AWS_ENDPOINT_URL_SNS",
            "AWS_ENDPOINT_URL_S3",
            "AWS_ENDPOINT_URL_LAMBDA",
        ];
        assert_eq!(with_env(&every_service), Ok(()));
        assert_eq!(with_env(&["AWS_ENDPOINT_URL"]), Ok(()));
        assert!(check(&format!("{LOCAL}{text}")).is_ok());
        assert!(check(&format!("[aws]\nallow_remote = true\n{text}")).is_ok());
    }

    #[test]
    fn a_function_takes_the_source_region_of_its_first_mapping() {
        let config = check(&format!(
            r#"{LOCAL}
[functions.f]
command = ["handler"]
[functions.unused]
command = ["handler"]
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:sqs:ap-southeast-2:1:a"
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:sqs:eu-central-1:1:b"
[[mappings]]
function_name = "implicit"
event_source_arn = "arn:aws:sqs:eu-central-1:1:b"
"#
        ))
        .unwrap();
        let region = |name: &str| config.function(name).unwrap().source_region.as_deref();
        assert_eq!(region("f"), Some("ap-southeast-2"));
        assert_eq!(region("implicit"), Some("eu-central-1"));
        assert_eq!(region("unused"), None);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let one = "[[mappings]]\nfunction_name = \"f\"\nevent_source_arn = \"arn:aws:sqs:us-east-1:1:q\"\n";
        assert_eq!(
            problems(&format!("{LOCAL}{one}{one}")),
            vec![format!(
                "mappings[1]: duplicate mapping id {} (two mappings of one source and function need distinct `uuid`s)",
                derived_id("arn:aws:sqs:us-east-1:1:q", "f")
            )]
        );
        let with_uuid = format!("{LOCAL}{one}{one}uuid = \"second\"\n");
        assert!(check(&with_uuid).is_ok());
    }

    #[test]
    fn stream_rules_follow_aws() {
        let text = format!(
            r#"{LOCAL}
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:dynamodb:us-east-1:1:table/t"
starting_position = "AT_TIMESTAMP"
starting_position_timestamp = 1
maximum_record_age_in_seconds = 59
parallelization_factor = 11
destination_config = {{ on_failure = {{ destination = "arn:aws:sqs:us-east-1:1:dlq.fifo" }} }}
"#
        );
        assert_eq!(
            problems(&text),
            vec![
                "mappings[0].starting_position: AT_TIMESTAMP is supported for kinesis only (dynamodb takes TRIM_HORIZON or LATEST)",
                "mappings[0].parallelization_factor: 11 is outside the allowed range 1..=10",
                "mappings[0].maximum_record_age_in_seconds: 59 is not allowed: use -1 (no limit) or 60..=604800",
                "mappings[0].destination_config.on_failure.destination: \"arn:aws:sqs:us-east-1:1:dlq.fifo\": fifo queues and topics are not supported as destinations",
            ]
        );
    }

    #[test]
    fn a_kinesis_mapping_gets_stream_defaults() {
        let text = format!(
            "{LOCAL}[[mappings]]\nfunction_name = \"f\"\nevent_source_arn = \"arn:aws:kinesis:us-east-1:1:stream/s\"\nstarting_position = \"AT_TIMESTAMP\"\nstarting_position_timestamp = 1700000000\nidle_poll_interval_ms = 50\n"
        );
        let config = check(&text).unwrap();
        let m = &config.mappings[0];
        assert_eq!(m.batch_size, 100);
        let SourceSettings::Stream(s) = &m.settings else {
            panic!("a stream mapping");
        };
        assert_eq!(
            s.starting_position,
            StartingPosition::AtTimestamp(1_700_000_000)
        );
        assert_eq!(s.parallelization_factor, 1);
        assert_eq!(s.maximum_retry_attempts, -1);
        assert_eq!(s.maximum_record_age_in_seconds, -1);
        assert_eq!(s.idle_poll_interval, Some(Duration::from_millis(50)));
        assert_eq!(
            problems(&format!(
                "{LOCAL}[[mappings]]\nfunction_name = \"f\"\nevent_source_arn = \"arn:aws:kinesis:us-east-1:1:stream/s\"\n"
            )),
            vec!["mappings[0].starting_position: is required for stream mappings"]
        );
    }

    #[test]
    fn a_uuid_must_be_a_safe_file_name() {
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            let found = problems(&sqs_mapping(&format!("uuid = {bad:?}")));
            assert!(
                found[0].starts_with("mappings[0].uuid: "),
                "{bad:?}: {found:?}"
            );
        }
        assert!(check(&sqs_mapping("uuid = \"orders-v2_1.0\"")).is_ok());
    }

    #[test]
    fn toml_syntax_errors_name_the_line() {
        assert_eq!(
            problems("a = 1\nb = \n")[0].split(':').next(),
            Some("line 2")
        );
    }
}

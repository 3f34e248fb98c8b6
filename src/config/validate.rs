//! The validation rules: AWS ranges and cross-field rules, plus our own.
//!
//! Each table is read on its own (see [`reader`](super::reader)), so one broken mapping or
//! function does not hide the problems of the others. Within a table the rules speak first,
//! then the keys serde refused, as the old hand-written reader did.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use toml::{Table, Value};

use super::arn::SourceResource;
use super::raw::{
    RawAdmin, RawAws, RawConfig, RawFilterCriteria, RawFunction, RawLambda, RawMapping,
    RawStartingPosition, RawState,
};
use super::reader::{Read, read};
use super::*;
use crate::filter::{AWS_MESSAGE, FilterError, Filters, MAX_FILTERS};

/// Validates config `text`. Relative paths resolve against `base_dir`; `env` reads
/// environment variables (the endpoint overrides of the standard AWS chain).
pub fn validate(
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let mut root: Table = match toml::from_str(text) {
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
    let aws = root
        .remove("aws")
        .map(|value| checked_aws(read("aws", value), &mut p))
        .unwrap_or_default();
    let state_dir = root
        .remove("state")
        .and_then(|value| {
            let state = read::<RawState>("state", value);
            p.0.extend(state.problems);
            state.value?.dir.map(|dir| base_dir.join(dir))
        })
        .unwrap_or_else(|| base_dir.join(".esmd"));
    let functions_table = root.remove("functions");
    let mappings_array = root.remove("mappings");
    let admin = root
        .remove("admin")
        .and_then(|value| checked_admin(read("admin", value), &mut p));
    // what is left: keys nobody knows
    let rest = read::<RawConfig>("", Value::Table(root));

    let mut functions = BTreeMap::new();
    let mut declared_functions = HashSet::new();
    if let Some(value) = functions_table {
        let section = read::<BTreeMap<String, Value>>("functions", value);
        p.0.extend(section.problems);
        for (name, value) in section.value.unwrap_or_default() {
            let path = format!("functions.{name}");
            if let Some(function) = checked_function(&name, &path, read(&path, value), &mut p) {
                functions.insert(name.clone(), function);
            }
            declared_functions.insert(name);
        }
    }

    let guard = RemoteGuard { aws: &aws, env };
    let mut mappings = Vec::new();
    let mut used_functions = HashSet::new();
    match mappings_array {
        Some(value) => {
            let items = read::<Vec<Value>>("mappings", value);
            p.0.extend(items.problems);
            for (i, item) in items.value.unwrap_or_default().into_iter().enumerate() {
                let path = format!("mappings[{i}]");
                let mapping = read::<RawMapping>(&path, item);
                if let Some(RawMapping {
                    function_name: Some(name),
                    ..
                }) = &mapping.value
                {
                    used_functions.insert(name.clone());
                }
                if let Some(m) = checked_mapping(
                    &path,
                    mapping,
                    &guard,
                    &declared_functions,
                    base_dir,
                    &mut p,
                ) {
                    mappings.push((i, m));
                }
            }
        }
        None => p.add("mappings", "no [[mappings]] defined"),
    }
    p.0.extend(rest.problems);
    for (name, function) in &functions {
        if let TargetConfig::Lambda {
            endpoint_url: None, ..
        } = function.target
            && used_functions.contains(name)
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
    let notes = mappings
        .iter()
        .flat_map(|(i, m)| beyond_lambda_notes(*i, m))
        .collect();
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
        admin,
        functions,
        mappings,
        notes,
    })
}

fn checked_aws(read: Read<RawAws>, p: &mut Problems) -> AwsSettings {
    let aws = read
        .value
        .map(|raw| AwsSettings {
            region: raw.region,
            endpoint_url: raw
                .endpoint_url
                .and_then(|u| checked_url("aws.endpoint_url", &u, true, p)),
            allow_remote: raw.allow_remote,
        })
        .unwrap_or_default();
    p.0.extend(read.problems);
    aws
}

fn checked_admin(read: Read<RawAdmin>, p: &mut Problems) -> Option<AdminSettings> {
    p.0.extend(read.problems.iter().cloned());
    let listen_rejected = read.rejected("admin.listen");
    let raw = read.value?;
    let unhealthy_after = in_range(
        "admin.unhealthy_after_secs",
        raw.unhealthy_after_secs,
        1,
        3600,
        p,
    )
    .map_or(DEFAULT_UNHEALTHY_AFTER_SECS, |secs| secs as u64);
    let Some(listen) = raw.listen else {
        if !listen_rejected {
            p.add(
                "admin.listen",
                "missing: the `IP:PORT` to serve the endpoint on",
            );
        }
        return None;
    };
    let listen: std::net::SocketAddr = match listen.parse() {
        Ok(address) => address,
        Err(_) => {
            p.add(
                "admin.listen",
                format!("{listen:?} is not an `IP:PORT` address, such as \"127.0.0.1:9464\""),
            );
            return None;
        }
    };
    if !listen.ip().is_loopback() && !raw.allow_remote_admin {
        p.add(
            "admin.listen",
            format!("{listen} is not a loopback address: the endpoint has no authentication; set `allow_remote_admin = true` to serve it there anyway"),
        );
        return None;
    }
    Some(AdminSettings {
        listen,
        unhealthy_after: Duration::from_secs(unhealthy_after),
    })
}

/// An integer that must lie in `min..=max`; `None` when absent or outside.
fn in_range(path: &str, value: Option<i64>, min: i64, max: i64, p: &mut Problems) -> Option<i64> {
    let value = value?;
    if !(min..=max).contains(&value) {
        p.add(
            path,
            format!("{value} is outside the allowed range {min}..={max}"),
        );
        return None;
    }
    Some(value)
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

fn checked_function(
    name: &str,
    path: &str,
    read: Read<RawFunction>,
    p: &mut Problems,
) -> Option<FunctionConfig> {
    let Some(f) = &read.value else {
        p.0.extend(read.problems);
        return None;
    };
    let at = |key: &str| format!("{path}.{key}");
    // a target key that serde refused still counts as given
    let given = |key: &str, set: bool| set || read.rejected(&at(key));
    let mut targets = Vec::new();
    if given("url", f.url.is_some()) {
        let url = f.url.as_ref();
        targets.push(url.and_then(|u| checked_url(&at("url"), u, false, p).map(TargetConfig::Url)));
    }
    if given("command", f.command.is_some()) {
        let command = f.command.as_ref();
        targets.push(command.and_then(|argv| checked_command(&at("command"), argv, p)));
    }
    if given("lambda", f.lambda.is_some()) {
        let lambda = f.lambda.as_ref();
        targets.push(lambda.and_then(|lambda| checked_lambda(&at("lambda"), lambda, &read, p)));
    }
    let max_concurrency = in_range(&at("max_concurrency"), f.max_concurrency, 1, 10_000, p);
    let timeout = in_range(&at("timeout_secs"), Some(f.timeout_secs), 1, 900, p);
    if let Some(role) = &f.role_arn
        && !role.starts_with("arn:")
    {
        p.add(at("role_arn"), format!("{role:?} is not an ARN"));
    }
    let role_arn = f.role_arn.clone();
    p.0.extend(read.problems);
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
        timeout: Duration::from_secs(timeout? as u64),
        role_arn,
        source_region: None,
    })
}

fn checked_lambda(
    path: &str,
    lambda: &RawLambda,
    read: &Read<RawFunction>,
    p: &mut Problems,
) -> Option<TargetConfig> {
    let function_name = format!("{path}.function_name");
    if lambda.function_name.is_empty() && !read.rejected(&function_name) {
        p.add(function_name, "a non-empty function name is required");
    }
    if lambda
        .qualifier
        .as_ref()
        .is_some_and(|q| q.is_empty() || q.len() > 128)
    {
        p.add(format!("{path}.qualifier"), "must be 1 to 128 characters");
    }
    let endpoint_url = lambda
        .endpoint_url
        .as_ref()
        .and_then(|u| checked_url(&format!("{path}.endpoint_url"), u, true, p));
    (!lambda.function_name.is_empty()).then(|| TargetConfig::Lambda {
        function_name: lambda.function_name.clone(),
        qualifier: lambda.qualifier.clone(),
        endpoint_url,
    })
}

fn checked_command(path: &str, argv: &[String], p: &mut Problems) -> Option<TargetConfig> {
    match argv.first() {
        None => {
            p.add(path, "an empty command: give the program and its arguments");
            None
        }
        Some(program) if program.trim().is_empty() => {
            p.add(format!("{path}[0]"), "the program name is empty");
            None
        }
        Some(_) => Some(TargetConfig::Command(argv.to_vec())),
    }
}

/// Keys that only stream mappings take, and whether `m` sets them.
fn stream_only_keys(m: &RawMapping) -> [(&'static str, bool); 9] {
    [
        ("starting_position", m.starting_position.is_some()),
        (
            "starting_position_timestamp",
            m.starting_position_timestamp.is_some(),
        ),
        ("parallelization_factor", m.parallelization_factor.is_some()),
        (
            "bisect_batch_on_function_error",
            m.bisect_batch_on_function_error.is_some(),
        ),
        ("maximum_retry_attempts", m.maximum_retry_attempts.is_some()),
        (
            "maximum_record_age_in_seconds",
            m.maximum_record_age_in_seconds.is_some(),
        ),
        ("destination_config", m.destination_config.is_some()),
        (
            "tumbling_window_in_seconds",
            m.tumbling_window_in_seconds.is_some(),
        ),
        ("idle_poll_interval_ms", m.idle_poll_interval_ms.is_some()),
    ]
}

/// Checks one mapping; `declared_functions` are the names in `[functions]` (any other name
/// is invoked through the Lambda Invoke API). `None` when it has any problem.
fn checked_mapping(
    path: &str,
    read: Read<RawMapping>,
    guard: &RemoteGuard<'_>,
    declared_functions: &HashSet<String>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<MappingConfig> {
    let errors_before = p.0.len();
    let checked = read
        .value
        .as_ref()
        .and_then(|m| mapping_rules(path, m, &read, guard, declared_functions, base_dir, p));
    p.0.extend(read.problems);
    checked.filter(|_| p.0.len() == errors_before)
}

fn mapping_rules(
    path: &str,
    m: &RawMapping,
    read: &Read<RawMapping>,
    guard: &RemoteGuard<'_>,
    declared_functions: &HashSet<String>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<MappingConfig> {
    let at = |key: &str| format!("{path}.{key}");
    match &m.function_name {
        None if !read.rejected(&at("function_name")) => p.add(at("function_name"), "is required"),
        Some(name) if name.is_empty() => p.add(at("function_name"), "must not be empty"),
        Some(name) if !declared_functions.contains(name) => guard.check(
            &at("function_name"),
            "would invoke real AWS Lambda",
            "AWS_ENDPOINT_URL_LAMBDA",
            None,
            p,
        ),
        _ => {}
    }
    let source = match &m.event_source_arn {
        Some(arn) => match SourceArn::parse(arn) {
            Ok(source) => Some(source),
            Err(message) => {
                p.add(at("event_source_arn"), message);
                None
            }
        },
        None => {
            if !read.rejected(&at("event_source_arn")) {
                p.add(at("event_source_arn"), "is required");
            }
            None
        }
    };
    if let Some(id) = &m.uuid
        && (id.is_empty()
            || id.starts_with('.')
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
    {
        p.add(
            at("uuid"),
            format!("{id:?}: use letters, digits, '.', '_' and '-' (it names the checkpoint file)"),
        );
    }
    let batch_size = in_range(&at("batch_size"), m.batch_size, 1, 10_000, p);
    let window = in_range(
        &at("maximum_batching_window_in_seconds"),
        Some(m.maximum_batching_window_in_seconds),
        0,
        300,
        p,
    );
    let report = response_types(
        &at("function_response_types"),
        &m.function_response_types,
        p,
    );
    let filters = m
        .filter_criteria
        .as_ref()
        .and_then(|criteria| checked_filters(&at("filter_criteria"), criteria, p));
    let capture = m
        .capture
        .as_deref()
        .and_then(|file| checked_capture(&at("capture"), file, base_dir, p));

    let (source, resource) = source?;
    let kind = match resource {
        SourceResource::Sqs { queue_name, fifo } => {
            for (key, set) in stream_only_keys(m) {
                if set {
                    p.add(at(key), "is not accepted for sqs mappings");
                }
            }
            if fifo {
                if let Some(size) = batch_size
                    && size > 10
                {
                    p.add(
                        at("batch_size"),
                        format!("{size} is above the maximum 10 for fifo queues"),
                    );
                }
                if let Some(w) = window
                    && w > 0
                {
                    p.add(
                        at("maximum_batching_window_in_seconds"),
                        "a batching window is not supported for fifo queues",
                    );
                }
            } else if let Some(size) = batch_size
                && size > 10
                && window.unwrap_or(0) < 1
            {
                p.add(
                    at("batch_size"),
                    format!(
                        "{size} is above 10, which needs maximum_batching_window_in_seconds of at least 1 for sqs"
                    ),
                );
            }
            let maximum_concurrency = m.scaling_config.as_ref().and_then(|scaling| {
                in_range(
                    &at("scaling_config.maximum_concurrency"),
                    scaling.maximum_concurrency,
                    2,
                    1000,
                    p,
                )
            });
            SourceKind::Sqs(SqsSettings {
                queue_name,
                fifo,
                maximum_concurrency: maximum_concurrency.map(|n| n as usize),
            })
        }
        SourceResource::Stream(stream) => {
            if m.scaling_config.is_some() {
                p.add(at("scaling_config"), "is accepted for sqs mappings only");
            }
            SourceKind::Stream(stream_settings(path, m, stream, read, p)?)
        }
    };
    if let Some(filters) = &filters
        && let Err(err) = filters.check_source(kind.filter_source())
    {
        p.add(
            format!("{path}.filter_criteria.filters[{}].pattern", err.filter),
            filter_problem(&err),
        );
    }
    let (source_var, destination) = match &kind {
        SourceKind::Sqs(_) => ("AWS_ENDPOINT_URL_SQS", None),
        SourceKind::Stream(s) => (
            match s.stream {
                StreamSource::Kinesis { .. } => "AWS_ENDPOINT_URL_KINESIS",
                StreamSource::DynamoDb { .. } => "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
            },
            s.on_failure_destination.as_ref(),
        ),
    };
    guard.check(
        &at("event_source_arn"),
        "would poll real AWS",
        source_var,
        None,
        p,
    );
    if let Some(service_var) = destination.and_then(DestinationConfig::endpoint_var) {
        guard.check(
            &at("destination_config.on_failure.destination"),
            "would send failure records to real AWS",
            service_var,
            None,
            p,
        );
    }
    let default_batch = match kind {
        SourceKind::Sqs(_) => 10,
        SourceKind::Stream(_) => 100,
    };
    let function_name = m.function_name.clone()?;
    let id = m
        .uuid
        .clone()
        .unwrap_or_else(|| derived_id(&source.arn, &function_name));
    Some(MappingConfig {
        id,
        function_name,
        source,
        batch_size: batch_size.map_or(default_batch, |n| n as usize),
        batching_window: Duration::from_secs(window.unwrap_or(0) as u64),
        report_batch_item_failures: report,
        enabled: m.enabled,
        kind,
        filters: filters.map(std::sync::Arc::new),
        capture,
    })
}

/// `capture`: a file path, relative to `base_dir` unless absolute. Its directory is
/// created when the mapping starts, so only the path itself is checked here.
fn checked_capture(path: &str, file: &str, base_dir: &Path, p: &mut Problems) -> Option<PathBuf> {
    if file.is_empty() {
        p.add(path, "must not be empty");
        return None;
    }
    if file.ends_with('/') {
        p.add(path, format!("{file:?} names a directory, not a file"));
        return None;
    }
    Some(base_dir.join(file))
}

/// Compiles `filter_criteria`, each filter on its own so that every bad one is listed.
/// An empty list filters nothing.
fn checked_filters(path: &str, criteria: &RawFilterCriteria, p: &mut Problems) -> Option<Filters> {
    if criteria.filters.len() > MAX_FILTERS {
        let problem = crate::filter::Problem::TooManyFilters {
            count: criteria.filters.len(),
        };
        p.add(
            format!("{path}.filters"),
            format!("{AWS_MESSAGE} {problem}"),
        );
        return None;
    }
    let patterns: Vec<String> = criteria.filters.iter().map(|f| f.pattern.clone()).collect();
    let mut valid = true;
    for (i, pattern) in patterns.iter().enumerate() {
        if let Err(err) = Filters::compile(std::slice::from_ref(pattern)) {
            p.add(format!("{path}.filters[{i}].pattern"), filter_problem(&err));
            valid = false;
        }
    }
    if !valid || patterns.is_empty() {
        return None;
    }
    Some(Filters::compile(&patterns).expect("each filter compiled on its own"))
}

/// The AWS message, then the key and why (the location names the filter).
fn filter_problem(err: &FilterError) -> String {
    match &err.key {
        Some(key) => format!("{AWS_MESSAGE} key {key}: {}", err.problem),
        None => format!("{AWS_MESSAGE} {}", err.problem),
    }
}

/// The EventBridge operators a mapping's filters use that AWS Lambda would refuse.
fn beyond_lambda_notes(i: usize, m: &MappingConfig) -> Vec<Problem> {
    let Some(filters) = &m.filters else {
        return Vec::new();
    };
    filters
        .beyond_lambda()
        .into_iter()
        .map(|(filter, key, operator)| Problem {
            path: format!("mappings[{i}].filter_criteria.filters[{filter}].pattern"),
            message: format!(
                "key {key} uses {operator}, an EventBridge operator: esmd matches it as EventBridge does, but AWS Lambda would refuse this pattern at CreateEventSourceMapping"
            ),
        })
        .collect()
}

fn response_types(path: &str, types: &[String], p: &mut Problems) -> bool {
    if types.len() > 1 {
        p.add(path, "takes at most one item");
    }
    let mut report = false;
    for (i, item) in types.iter().enumerate() {
        if item == "ReportBatchItemFailures" {
            report = true;
        } else {
            p.add(
                format!("{path}[{i}]"),
                format!(
                    "{item:?} is not a response type (the only one is \"ReportBatchItemFailures\")"
                ),
            );
        }
    }
    report
}

fn stream_settings(
    path: &str,
    m: &RawMapping,
    stream: StreamSource,
    read: &Read<RawMapping>,
    p: &mut Problems,
) -> Option<StreamSettings> {
    let at = |key: &str| format!("{path}.{key}");
    let kinesis = matches!(stream, StreamSource::Kinesis { .. });
    let timestamp = m.starting_position_timestamp;
    let position = match m.starting_position {
        Some(RawStartingPosition::TrimHorizon) => Some(StartingPosition::TrimHorizon),
        Some(RawStartingPosition::Latest) => Some(StartingPosition::Latest),
        Some(RawStartingPosition::AtTimestamp) if !kinesis => {
            p.add(
                at("starting_position"),
                "AT_TIMESTAMP is supported for kinesis only (dynamodb takes TRIM_HORIZON or LATEST)",
            );
            None
        }
        Some(RawStartingPosition::AtTimestamp) => match timestamp {
            Some(ts) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                if ts > now {
                    p.add(
                        at("starting_position_timestamp"),
                        format!("{ts} is in the future"),
                    );
                }
                Some(StartingPosition::AtTimestamp(ts))
            }
            None => {
                p.add(
                    at("starting_position_timestamp"),
                    "is required with AT_TIMESTAMP",
                );
                None
            }
        },
        None => {
            if !read.rejected(&at("starting_position")) {
                p.add(at("starting_position"), "is required for stream mappings");
            }
            None
        }
    };
    if timestamp.is_some() && !matches!(position, Some(StartingPosition::AtTimestamp(_)) | None) {
        p.add(
            at("starting_position_timestamp"),
            "is valid only with starting_position = \"AT_TIMESTAMP\"",
        );
    }
    let parallelization_factor = in_range(
        &at("parallelization_factor"),
        m.parallelization_factor,
        1,
        10,
        p,
    );
    let retries = in_range(
        &at("maximum_retry_attempts"),
        m.maximum_retry_attempts,
        -1,
        10_000,
        p,
    );
    let age = in_range(
        &at("maximum_record_age_in_seconds"),
        m.maximum_record_age_in_seconds,
        -1,
        604_800,
        p,
    );
    if let Some(age) = age
        && (0..60).contains(&age)
    {
        p.add(
            at("maximum_record_age_in_seconds"),
            format!("{age} is not allowed: use -1 (no limit) or 60..=604800"),
        );
    }
    if let Some(window) = in_range(
        &at("tumbling_window_in_seconds"),
        m.tumbling_window_in_seconds,
        0,
        900,
        p,
    ) && window > 0
    {
        p.add(
            at("tumbling_window_in_seconds"),
            "tumbling windows are not supported yet by this version of esmd",
        );
    }
    let idle_poll_interval = in_range(
        &at("idle_poll_interval_ms"),
        m.idle_poll_interval_ms,
        10,
        60_000,
        p,
    )
    .map(|ms| Duration::from_millis(ms as u64));
    let destination = m
        .destination_config
        .as_ref()
        .and_then(|config| config.on_failure.as_ref())
        .map(|on_failure| on_failure.destination.as_str())
        .filter(|destination| !destination.is_empty())
        .and_then(|destination| match DestinationConfig::parse(destination) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                p.add(at("destination_config.on_failure.destination"), message);
                None
            }
        });
    Some(StreamSettings {
        stream,
        starting_position: position?,
        parallelization_factor: parallelization_factor.unwrap_or(1) as usize,
        bisect_batch_on_function_error: m.bisect_batch_on_function_error.unwrap_or(false),
        maximum_retry_attempts: retries.unwrap_or(-1),
        maximum_record_age_in_seconds: age.unwrap_or(-1),
        on_failure_destination: destination,
        idle_poll_interval,
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
    fn capture_is_a_file_path_beside_the_config_unless_absolute() {
        let capture = |value: &str| check(&sqs_mapping(&format!("capture = {value}")));
        let resolved = |value: &str| capture(value).unwrap().mappings[0].capture.clone();
        assert_eq!(
            resolved(r#""captures/orders.jsonl""#),
            Some(PathBuf::from("/etc/esmd/captures/orders.jsonl"))
        );
        assert_eq!(
            resolved(r#""/var/tmp/orders.jsonl""#),
            Some(PathBuf::from("/var/tmp/orders.jsonl"))
        );
        assert_eq!(check(&sqs_mapping("")).unwrap().mappings[0].capture, None);
        assert_eq!(
            capture(r#""""#).unwrap_err(),
            ["mappings[0].capture: must not be empty"]
        );
        assert_eq!(
            capture(r#""captures/""#).unwrap_err(),
            ["mappings[0].capture: \"captures/\" names a directory, not a file"]
        );
        let not_a_string = capture("true").unwrap_err();
        assert_eq!(not_a_string.len(), 1, "{not_a_string:?}");
        assert!(
            not_a_string[0].starts_with("mappings[0].capture: ")
                && not_a_string[0].contains("string"),
            "{not_a_string:?}"
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
    fn mistyped_values_are_listed_with_the_rules_of_every_table() {
        let text = format!(
            r#"{LOCAL}allow_remote = "yes"
[state]
dir = 1
[functions.f]
command = ["x", 2]
timeout_secs = 0
[[mappings]]
function_name = "f"
event_source_arn = 7
batch_size = 0
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:kinesis:us-east-1:1:stream/s"
starting_position = "OLDEST"
parallelization_factor = 1.5
maximum_retry_attempts = -2
"#
        );
        assert_eq!(
            problems(&text),
            vec![
                "aws.allow_remote: expected true or false, found a string",
                "state.dir: expected a string, found an integer",
                "functions.f.timeout_secs: 0 is outside the allowed range 1..=900",
                "functions.f.command[1]: expected a string, found an integer",
                "mappings[0].batch_size: 0 is outside the allowed range 1..=10000",
                "mappings[0].event_source_arn: expected a string, found an integer",
                "mappings[1].maximum_retry_attempts: -2 is outside the allowed range -1..=10000",
                "mappings[1].parallelization_factor: expected an integer, found a float",
                "mappings[1].starting_position: unknown variant `OLDEST`, expected one of `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP`",
            ]
        );
        assert_eq!(
            problems(&format!("mappings = [1]\nfunctions = 2\n{LOCAL}")),
            vec![
                "functions: expected a table, found an integer",
                "mappings[0]: expected a table, found an integer",
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
        let SourceKind::Stream(s) = &m.kind else {
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

    #[test]
    fn every_bad_filter_is_listed_with_the_aws_message_and_its_location() {
        let text = format!(
            r#"{LOCAL}[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:sqs:us-east-1:1:q"
filter_criteria = {{ filters = [ {{ pattern = '{{"body":{{"kind":["order"]}}}}' }}, {{ pattern = 'null' }}, {{ pattern = '{{"a":"b"}}' }}, {{ pattern = '{{"a":[]}}' }}, {{ pattern = '{{"a":[{{"fuzzy":1}}]}}' }} ] }}
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:kinesis:us-east-1:1:stream/s"
starting_position = "LATEST"
filter_criteria = {{ filters = [ {{ pattern = '{{"data":["x"]}}' }} ] }}
[[mappings]]
function_name = "f"
event_source_arn = "arn:aws:sqs:us-east-1:1:r"
filter_criteria = {{ filters = [ {{ pattern = '{{"a":[1]}}' }}, {{ pattern = '{{"a":[1]}}' }}, {{ pattern = '{{"a":[1]}}' }}, {{ pattern = '{{"a":[1]}}' }}, {{ pattern = '{{"a":[1]}}' }}, {{ pattern = '{{"a":[1]}}' }} ], bogus = 1 }}
"#
        );
        assert_eq!(
            problems(&text),
            vec![
                "mappings[0].filter_criteria.filters[1].pattern: Invalid filter pattern definition. the pattern must be a JSON object",
                "mappings[0].filter_criteria.filters[2].pattern: Invalid filter pattern definition. key a: a value must be an object or a list of rules such as [\"v\"]",
                "mappings[0].filter_criteria.filters[3].pattern: Invalid filter pattern definition. key a: the list of rules is empty",
                "mappings[0].filter_criteria.filters[4].pattern: Invalid filter pattern definition. key a: unknown operator fuzzy",
                "mappings[1].filter_criteria.filters[0].pattern: Invalid filter pattern definition. key data: kinesis matches this key as JSON, so it takes an object pattern, not a list",
                "mappings[2].filter_criteria.filters: Invalid filter pattern definition. 6 filters; at most 5 are allowed",
                "mappings[2].filter_criteria.bogus: unknown key",
            ]
        );
    }

    #[test]
    fn eventbridge_operators_are_accepted_with_a_note() {
        let config = check(&sqs_mapping(
            r#"filter_criteria = { filters = [ { pattern = '{"body":{"kind":["order"]}}' }, { pattern = '{"body":{"id":[{"wildcard":"o-*"}]}}' } ] }"#,
        ))
        .unwrap();
        let filters = config.mappings[0].filters.as_ref().expect("compiled");
        assert_eq!(filters.len(), 2);
        let notes: Vec<String> = config.notes.iter().map(ToString::to_string).collect();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with(
                "mappings[0].filter_criteria.filters[1].pattern: key body.id uses wildcard"
            ),
            "{notes:?}"
        );
        let plain = check(&sqs_mapping("")).unwrap();
        assert!(plain.mappings[0].filters.is_none());
        assert!(plain.notes.is_empty());
    }

    #[test]
    fn admin_listens_on_loopback_unless_remote_is_allowed() {
        let config = check(&sqs_mapping("")).unwrap();
        assert_eq!(config.admin, None, "off by default");
        let admin = |table: &str| format!("{}[admin]\n{table}\n", sqs_mapping(""));
        let config = check(&admin("listen = \"127.0.0.1:9464\"")).unwrap();
        assert_eq!(
            config.admin,
            Some(AdminSettings {
                listen: "127.0.0.1:9464".parse().unwrap(),
                unhealthy_after: Duration::from_secs(60),
            })
        );
        let config = check(&admin(
            "listen = \"0.0.0.0:9464\"\nallow_remote_admin = true\nunhealthy_after_secs = 5",
        ))
        .unwrap();
        let settings = config.admin.unwrap();
        assert_eq!(settings.listen, "0.0.0.0:9464".parse().unwrap());
        assert_eq!(settings.unhealthy_after, Duration::from_secs(5));
        assert_eq!(
            problems(&admin("listen = \"0.0.0.0:9464\"")),
            vec![
                "admin.listen: 0.0.0.0:9464 is not a loopback address: the endpoint has no authentication; set `allow_remote_admin = true` to serve it there anyway"
            ]
        );
        assert_eq!(
            problems(&admin(
                "listen = \"localhost\"\nunhealthy_after_secs = 0\nport = 1"
            )),
            vec![
                "admin.port: unknown key",
                "admin.unhealthy_after_secs: 0 is outside the allowed range 1..=3600",
                "admin.listen: \"localhost\" is not an `IP:PORT` address, such as \"127.0.0.1:9464\"",
            ]
        );
        assert_eq!(
            problems(&admin("")),
            vec!["admin.listen: missing: the `IP:PORT` to serve the endpoint on"]
        );
    }
}

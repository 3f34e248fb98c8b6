//! Every metric esmd exports, by name, and the recorder that renders them on `/metrics`.
//!
//! The counters are the AWS ESM event counts (aws-esm-semantics §13.4, pinned in
//! interface.md), labelled `mapping` and `source`. A mapping resolves its handles once
//! ([`MappingMetrics`]), so counting a batch is an atomic add, never a name lookup; each is
//! counted once per batch, never per record. The recorder belongs to one run, not to the
//! process: a library caller may run the daemon more than once in a process.
//!
//! Iterator age is a gauge per shard whose series must go when the shard does; the
//! Prometheus recorder cannot remove one series, so shards hand in their ages at render
//! time instead ([`Telemetry::render`]).

use std::fmt::Write;

use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

use crate::config::{SourceKind, StreamSource};
use crate::event::failure::Condition;

/// Records read from the source, again when read again (SQS redeliveries).
pub const POLLED: &str = "esmd_polled_events_total";
/// Records no filter matched: never invoked.
pub const FILTERED_OUT: &str = "esmd_filtered_out_events_total";
/// Records of invocations that reached the function, again on each retry.
pub const INVOKED: &str = "esmd_invoked_events_total";
/// Records of invocations that failed in whole or in part.
pub const FAILED_INVOKE: &str = "esmd_failed_invoke_events_total";
/// Stream records discarded with no on-failure destination.
pub const DROPPED: &str = "esmd_dropped_events_total";
/// Stream records whose failure record the on-failure destination accepted.
pub const DESTINATION_DELIVERED: &str = "esmd_on_failure_destination_delivered_events_total";
/// SQS messages deleted: processed, or filtered out.
pub const DELETED: &str = "esmd_deleted_events_total";
/// Invocation attempts, by `outcome`.
pub const INVOCATIONS: &str = "esmd_invocations_total";
/// How long each invocation attempt took.
pub const INVOCATION_DURATION: &str = "esmd_invocation_duration_seconds";
/// Records per invocation that reached the function.
pub const BATCH_SIZE: &str = "esmd_batch_size_records";
/// Stream records discarded by the retry policy, by `condition`.
pub const DISCARDED: &str = "esmd_discarded_events_total";
/// Times a shard's position was trimmed before it was read: records lost in between.
pub const TRIM_GAPS: &str = "esmd_trim_gaps_total";
/// Invocations a mapping's `capture` file could not take.
pub const CAPTURE_ERRORS: &str = "esmd_capture_errors_total";
/// Per shard: how far its reader is behind the tip (gauge).
pub const ITERATOR_AGE: &str = "esmd_iterator_age_milliseconds";

/// The `outcome` label of [`INVOCATIONS`]: the target's outcome
/// ([`Outcome::label`](crate::target::Outcome::label)), with a success told apart by its
/// judgement.
pub mod outcome {
    pub const SUCCESS: &str = "success";
    /// The function listed failed items.
    pub const PARTIAL_FAILURE: &str = "partial_failure";
    /// The function returned a partial batch response that breaks the rules.
    pub const INVALID_RESPONSE: &str = "invalid_response";
    /// Every value, each series present from the start.
    pub const ALL: [&str; 8] = [
        SUCCESS,
        PARTIAL_FAILURE,
        INVALID_RESPONSE,
        "function_error",
        "throttled",
        "could_not_invoke",
        "rejected",
        "payload_too_large",
    ];
}

/// The `condition` label of [`DISCARDED`].
const CONDITIONS: [Condition; 3] = [
    Condition::RetryAttemptsExhausted,
    Condition::RecordAgeExceeded,
    Condition::MaximumPayloadSizeExceeded,
];

const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];
const BATCH_SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0,
];

/// The metrics of one run.
pub struct Telemetry {
    recorder: PrometheusRecorder,
}

impl Default for Telemetry {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(INVOCATION_DURATION.into()), DURATION_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_SIZE_BUCKETS)
            })
            .expect("the buckets are not empty")
            .build_recorder();
        for (name, help) in [
            (
                POLLED,
                "Records read from the source, again when read again.",
            ),
            (FILTERED_OUT, "Records no filter matched: never invoked."),
            (
                INVOKED,
                "Records of invocations that reached the function, again on each retry.",
            ),
            (
                FAILED_INVOKE,
                "Records of invocations that failed in whole or in part: a function error, listed failed items, an invalid answer, a lone record too large.",
            ),
            (
                DROPPED,
                "Stream records discarded with no on-failure destination.",
            ),
            (
                DESTINATION_DELIVERED,
                "Stream records whose failure record the on-failure destination accepted.",
            ),
            (DELETED, "SQS messages deleted: processed, or filtered out."),
            (INVOCATIONS, "Invocation attempts, by outcome."),
            (
                DISCARDED,
                "Stream records discarded by the retry policy, by condition.",
            ),
            (
                TRIM_GAPS,
                "Times a shard's position was trimmed before it was read.",
            ),
            (
                CAPTURE_ERRORS,
                "Invocations the mapping's capture file could not take.",
            ),
        ] {
            recorder.describe_counter(name.into(), Some(Unit::Count), help.into());
        }
        recorder.describe_histogram(
            INVOCATION_DURATION.into(),
            Some(Unit::Seconds),
            "How long each invocation attempt took.".into(),
        );
        recorder.describe_histogram(
            BATCH_SIZE.into(),
            Some(Unit::Count),
            "Records per invocation that reached the function.".into(),
        );
        Telemetry { recorder }
    }
}

/// A shard's iterator age, for [`Telemetry::render`].
pub struct ShardAge<'a> {
    pub mapping: &'a str,
    pub source: &'static str,
    pub shard: &'a str,
    pub millis: u64,
}

impl Telemetry {
    /// The handles of one mapping's metrics.
    pub fn mapping(&self, mapping: &str, source: &'static str) -> MappingMetrics {
        let labels = || {
            vec![
                Label::new("mapping", mapping.to_owned()),
                Label::new("source", source),
            ]
        };
        let counter = |name: &'static str| self.counter(name, labels());
        let with = |name: &'static str, key: &'static str, value: &'static str| {
            let mut labels = labels();
            labels.push(Label::new(key, value));
            (value, self.counter(name, labels))
        };
        MappingMetrics {
            polled: counter(POLLED),
            filtered_out: counter(FILTERED_OUT),
            invoked: counter(INVOKED),
            failed_invoke: counter(FAILED_INVOKE),
            dropped: counter(DROPPED),
            destination_delivered: counter(DESTINATION_DELIVERED),
            deleted: counter(DELETED),
            trim_gaps: counter(TRIM_GAPS),
            capture_errors: counter(CAPTURE_ERRORS),
            invocation_duration: self
                .recorder
                .register_histogram(&Key::from_parts(INVOCATION_DURATION, labels()), &METADATA),
            batch_size: self
                .recorder
                .register_histogram(&Key::from_parts(BATCH_SIZE, labels()), &METADATA),
            invocations: outcome::ALL
                .map(|outcome| with(INVOCATIONS, "outcome", outcome))
                .to_vec(),
            discarded: CONDITIONS
                .map(|condition| with(DISCARDED, "condition", condition.as_str()))
                .to_vec(),
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// The Prometheus text of every metric, with the iterator ages of the shards running.
    pub fn render<'a>(&self, ages: impl IntoIterator<Item = ShardAge<'a>>) -> String {
        let mut text = self.recorder.handle().render();
        let mut ages = ages.into_iter().peekable();
        if ages.peek().is_some() {
            let _ = writeln!(
                text,
                "# HELP {ITERATOR_AGE} How far each shard's reader is behind the tip.\n# TYPE {ITERATOR_AGE} gauge"
            );
            for age in ages {
                let _ = writeln!(
                    text,
                    "{ITERATOR_AGE}{{mapping=\"{}\",source=\"{}\",shard=\"{}\"}} {}",
                    escaped(age.mapping),
                    age.source,
                    escaped(age.shard),
                    age.millis
                );
            }
        }
        text
    }
}

static METADATA: Metadata<'static> = Metadata::new("esmd", Level::INFO, Some(module_path!()));

/// A label value as Prometheus text wants it.
fn escaped(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `source` label of a mapping.
pub fn source_label(kind: &SourceKind) -> &'static str {
    match kind {
        SourceKind::Sqs(_) => "sqs",
        SourceKind::Stream(stream) => match stream.stream {
            StreamSource::Kinesis { .. } => "kinesis",
            StreamSource::DynamoDb { .. } => "dynamodb",
        },
    }
}

/// One mapping's metric handles, every labelled series included.
pub struct MappingMetrics {
    pub polled: Counter,
    pub filtered_out: Counter,
    pub invoked: Counter,
    pub failed_invoke: Counter,
    pub dropped: Counter,
    pub destination_delivered: Counter,
    pub deleted: Counter,
    pub trim_gaps: Counter,
    pub capture_errors: Counter,
    pub invocation_duration: Histogram,
    pub batch_size: Histogram,
    /// By outcome, one of [`outcome::ALL`].
    invocations: Vec<(&'static str, Counter)>,
    /// By condition.
    discarded: Vec<(&'static str, Counter)>,
}

impl MappingMetrics {
    /// Counts one invocation attempt that ended in `outcome`, one of [`outcome::ALL`].
    pub fn invocation(&self, outcome: &'static str) {
        labelled(&self.invocations, outcome).increment(1);
    }

    /// Counts `records` discarded for `condition`.
    pub fn discarded(&self, condition: Condition, records: u64) {
        labelled(&self.discarded, condition.as_str()).increment(records);
    }
}

fn labelled<'a>(series: &'a [(&'static str, Counter)], value: &str) -> &'a Counter {
    let found = series.iter().find(|(label, _)| *label == value);
    debug_assert!(found.is_some(), "no series for {value}");
    found.map_or(&series[0].1, |(_, counter)| counter)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const NAMES: [&str; 14] = [
        POLLED,
        FILTERED_OUT,
        INVOKED,
        FAILED_INVOKE,
        DROPPED,
        DESTINATION_DELIVERED,
        DELETED,
        INVOCATIONS,
        INVOCATION_DURATION,
        BATCH_SIZE,
        DISCARDED,
        TRIM_GAPS,
        CAPTURE_ERRORS,
        ITERATOR_AGE,
    ];

    #[test]
    fn names_are_prometheus_names_with_the_esmd_prefix_and_a_unit() {
        let unique: HashSet<&str> = NAMES.into_iter().collect();
        assert_eq!(unique.len(), NAMES.len());
        for name in NAMES {
            assert!(name.starts_with("esmd_"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
                "{name}"
            );
            assert!(
                ["_total", "_seconds", "_records", "_milliseconds"]
                    .iter()
                    .any(|unit| name.ends_with(unit)),
                "{name} ends with its unit"
            );
        }
    }

    #[test]
    fn the_aws_event_counts_keep_their_aws_names() {
        for (aws, ours) in [
            ("PolledEventCount", POLLED),
            ("FilteredOutEventCount", FILTERED_OUT),
            ("InvokedEventCount", INVOKED),
            ("FailedInvokeEventCount", FAILED_INVOKE),
            ("DroppedEventCount", DROPPED),
            (
                "OnFailureDestinationDeliveredEventCount",
                DESTINATION_DELIVERED,
            ),
            ("DeletedEventCount", DELETED),
        ] {
            let snake: String = aws
                .trim_end_matches("EventCount")
                .chars()
                .flat_map(|c| {
                    let lower = c.to_ascii_lowercase();
                    if c.is_ascii_uppercase() {
                        vec!['_', lower]
                    } else {
                        vec![c]
                    }
                })
                .collect();
            assert_eq!(ours, format!("esmd{snake}_events_total"), "{aws}");
        }
    }

    #[test]
    fn every_target_outcome_has_a_series() {
        use crate::target::Outcome;
        let detail = String::new;
        for outcome in [
            Outcome::Success { body: Vec::new() },
            Outcome::FunctionError {
                error_type: String::new(),
                body: Vec::new(),
            },
            Outcome::Throttled { detail: detail() },
            Outcome::CouldNotInvoke { detail: detail() },
            Outcome::PayloadTooLarge { detail: detail() },
            Outcome::Rejected {
                status: 404,
                detail: detail(),
            },
        ] {
            assert!(outcome::ALL.contains(&outcome.label()), "{outcome:?}");
        }
    }

    #[test]
    fn counts_render_with_their_labels_and_only_live_shards_have_an_age() {
        let telemetry = Telemetry::default();
        let sqs = telemetry.mapping("m-1", "sqs");
        sqs.polled.increment(10);
        sqs.deleted.increment(7);
        sqs.invocation(outcome::PARTIAL_FAILURE);
        sqs.invocation_duration.record(0.2);
        let stream = telemetry.mapping("m-2", "kinesis");
        stream.discarded(Condition::RetryAttemptsExhausted, 3);
        let text = telemetry.render([ShardAge {
            mapping: "m-2",
            source: "kinesis",
            shard: "shardId-000000000000",
            millis: 1500,
        }]);
        for line in [
            r#"esmd_polled_events_total{mapping="m-1",source="sqs"} 10"#,
            r#"esmd_deleted_events_total{mapping="m-1",source="sqs"} 7"#,
            r#"esmd_invocations_total{mapping="m-1",source="sqs",outcome="partial_failure"} 1"#,
            r#"esmd_invocation_duration_seconds_bucket{mapping="m-1",source="sqs",le="0.25"} 1"#,
            r#"esmd_discarded_events_total{mapping="m-2",source="kinesis",condition="RetryAttemptsExhausted"} 3"#,
            r#"esmd_polled_events_total{mapping="m-2",source="kinesis"} 0"#,
            r#"esmd_invocations_total{mapping="m-2",source="kinesis",outcome="throttled"} 0"#,
            r#"esmd_iterator_age_milliseconds{mapping="m-2",source="kinesis",shard="shardId-000000000000"} 1500"#,
            "# TYPE esmd_iterator_age_milliseconds gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let without = telemetry.render([]);
        assert!(!without.contains(ITERATOR_AGE), "{without}");
    }
}

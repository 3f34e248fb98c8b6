//! An example function for esmd: one handler for SQS, Kinesis and DynamoDB Streams events.
//!
//! Each record's text (an SQS body, decoded Kinesis data, a DynamoDB new image as JSON)
//! decides what happens to it:
//!
//! - containing `crash`: the whole invocation fails with a function error (`Crash`);
//! - containing `fail`: the record is listed in `batchItemFailures` (message id for SQS,
//!   sequence number for the streams), for mappings with ReportBatchItemFailures;
//! - anything else succeeds.
//!
//! Every event is read into the `aws_lambda_events` types, so an event that does not look
//! like Lambda's own fails the invocation too (`InvalidEvent`).

use aws_lambda_events::event::dynamodb;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handle)).await
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let records = record_texts(event.payload).map_err(|message| Diagnostic {
        error_type: "InvalidEvent".into(),
        error_message: message,
    })?;
    if let Some((id, _)) = records.iter().find(|(_, text)| text.contains("crash")) {
        return Err(Diagnostic {
            error_type: "Crash".into(),
            error_message: format!("record {id} says crash"),
        });
    }
    let failures: Vec<Value> = records
        .into_iter()
        .filter(|(_, text)| text.contains("fail"))
        .map(|(id, _)| json!({ "itemIdentifier": id }))
        .collect();
    Ok(json!({ "batchItemFailures": failures }))
}

/// Each record's item identifier and text, in order.
fn record_texts(payload: Value) -> Result<Vec<(String, String)>, String> {
    let source = payload["Records"][0]["eventSource"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let parse_error = |e: serde_json::Error| format!("not a {source} event: {e}");
    match source.as_str() {
        "aws:sqs" => Ok(serde_json::from_value::<SqsEvent>(payload)
            .map_err(parse_error)?
            .records
            .into_iter()
            .map(|m| {
                let id = m.message_id.unwrap_or_default();
                (id, m.body.unwrap_or_default())
            })
            .collect()),
        "aws:kinesis" => Ok(serde_json::from_value::<KinesisEvent>(payload)
            .map_err(parse_error)?
            .records
            .into_iter()
            .map(|r| {
                let text = String::from_utf8_lossy(&r.kinesis.data).into_owned();
                (r.kinesis.sequence_number, text)
            })
            .collect()),
        "aws:dynamodb" => serde_json::from_value::<dynamodb::Event>(payload)
            .map_err(parse_error)?
            .records
            .into_iter()
            .map(|r| {
                let image = serde_json::to_string(&r.change.new_image).map_err(parse_error)?;
                Ok((r.change.sequence_number.unwrap_or_default(), image))
            })
            .collect(),
        other => Err(format!(
            "not an SQS, Kinesis or DynamoDB event (eventSource {other:?})"
        )),
    }
}

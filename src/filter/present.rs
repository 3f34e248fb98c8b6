//! How each source's record is shown to the patterns: the serialized record as esmd
//! delivers it, with the payload decoded for matching only.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::FilterSource;
use super::matching::{Payload, PayloadAt};

/// A record ready for matching: its root object and how its payload key was presented.
pub(super) struct Presented {
    pub root: Map<String, Value>,
    pub payload: PayloadAt<'static>,
}

/// Presents one serialized record; `None` when the bytes are not a JSON object. The payload
/// is decoded only when `decode` says a pattern looks at it.
pub(super) fn present(source: FilterSource, record_json: &[u8], decode: bool) -> Option<Presented> {
    let Ok(Value::Object(root)) = serde_json::from_slice(record_json) else {
        return None;
    };
    Some(match source {
        FilterSource::Sqs if decode => sqs(root),
        FilterSource::Kinesis => kinesis(root, decode),
        FilterSource::Sqs | FilterSource::DynamoDb => Presented {
            root,
            payload: None,
        },
    })
}

/// SQS: a body that is valid JSON is matched as JSON, any other body as the plain string.
fn sqs(mut root: Map<String, Value>) -> Presented {
    let Some(Value::String(body)) = root.get("body") else {
        return Presented {
            root,
            payload: None,
        };
    };
    let presented = match serde_json::from_str::<Value>(body) {
        Ok(parsed) => {
            root.insert("body".to_owned(), parsed);
            Payload::Json
        }
        Err(_) => Payload::Text,
    };
    Presented {
        root,
        payload: Some(("body", presented)),
    }
}

/// Kinesis: the fields of `kinesis` (`data`, `partitionKey`, ...) sit at the root beside the
/// record's own (`eventSource`, `awsRegion`, ...), with `data` base64-decoded and parsed.
fn kinesis(mut root: Map<String, Value>, decode: bool) -> Presented {
    let Some(Value::Object(kinesis)) = root.remove("kinesis") else {
        return Presented {
            root,
            payload: None,
        };
    };
    root.extend(kinesis);
    if !decode {
        return Presented {
            root,
            payload: None,
        };
    }
    let decoded = match root.get("data") {
        Some(Value::String(data)) => STANDARD
            .decode(data)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok()),
        _ => None,
    };
    let presented = match decoded {
        Some(parsed) => {
            root.insert("data".to_owned(), parsed);
            Payload::Json
        }
        None => Payload::Opaque,
    };
    Presented {
        root,
        payload: Some(("data", presented)),
    }
}

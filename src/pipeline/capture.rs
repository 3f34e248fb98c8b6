//! Capture (`[[mappings]] capture`): one JSON line per invocation the function answered,
//! appended to a file for `esmd replay --capture`. The line format is written and read
//! here:
//!
//! ```text
//! {"mapping":ID,"time":RFC 3339,"event":<the exact bytes sent>,
//!  "outcome":"success"|"partial_failure"|"function_error","response":<answer or null>}
//! ```
//!
//! A line goes to the file in one write to an append-mode file, under one lock per file,
//! so the lines of several mappings or shards sharing a file never interleave, and a crash
//! of esmd loses at most the line being written (there is no fsync: a power loss can lose
//! more). A file that ends in a torn line gets a line break before the next line, so the
//! torn one stays on its own line for the reader to skip.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::{error, info, warn};

use super::judge::Judgement;
use crate::event::failure::iso8601;
use crate::target::Outcome;

/// The `outcome` of a line that the judgement found fully successful.
pub const SUCCESS: &str = "success";
/// The function listed failed items.
pub const PARTIAL_FAILURE: &str = "partial_failure";
/// The whole batch failed: a function error, or an answer that breaks the partial batch
/// response rules.
pub const FUNCTION_ERROR: &str = "function_error";

/// One capture file, shared by every mapping that names it.
pub struct CaptureFile {
    path: PathBuf,
    state: Mutex<Writer>,
}

#[derive(Default)]
struct Writer {
    /// `None` until opened, and again after a failed write, so the next line reopens it.
    file: Option<File>,
    /// A write failed and no line made it since: later failures are not logged again.
    failing: bool,
}

impl CaptureFile {
    /// The capture file at `path`, opened at once (its directory created) so that a path
    /// it cannot write shows in the log when the mapping starts; a failure here is retried
    /// with every line.
    pub fn open(path: &Path) -> CaptureFile {
        let capture = CaptureFile {
            path: path.to_path_buf(),
            state: Mutex::default(),
        };
        if let Err(err) = capture.append_with(|_| Ok(())) {
            error!(file = %path.display(), error = %err, "cannot open the capture file: invocations are not captured until it can be written");
        }
        capture
    }

    /// Appends one line. The first failure after a line made it is logged at error level;
    /// the caller counts every one.
    pub fn append(&self, line: &[u8]) -> io::Result<()> {
        self.append_with(|file| file.write_all(line))
    }

    fn append_with(&self, write: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
        let mut state = self.state.lock().expect("never poisoned");
        let result = match &mut state.file {
            Some(file) => write(file),
            None => open_for_append(&self.path).and_then(|mut file| {
                write(&mut file)?;
                state.file = Some(file);
                Ok(())
            }),
        };
        match &result {
            Ok(()) if state.failing => {
                state.failing = false;
                info!(file = %self.path.display(), "the capture file can be written again");
            }
            Ok(()) => {}
            Err(err) => {
                // a line may be torn: reopening puts the next one on a line of its own
                state.file = None;
                if !std::mem::replace(&mut state.failing, true) {
                    error!(file = %self.path.display(), error = %err, "cannot write to the capture file: invocations are not captured (counted in esmd_capture_errors_total), processing goes on");
                }
            }
        }
        result
    }
}

/// Opens `path` for appending, creating it and its directory; a file that ends in a torn
/// line (esmd stopped while writing it) gets a line break first.
fn open_for_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    if file.metadata()?.len() > 0 {
        let mut last = [0u8];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            warn!(file = %path.display(), "the capture file ends in a torn line: it stays on a line of its own, which replay skips");
            file.write_all(b"\n")?;
        }
    }
    Ok(file)
}

/// The capture line of an invocation of `mapping` with `event` that the function answered
/// with `outcome`, judged `judgement`; `None` for an outcome the function did not answer.
pub fn line(
    mapping: &str,
    event: &[u8],
    judgement: &Judgement,
    outcome: &Outcome,
) -> Option<Vec<u8>> {
    let body = match outcome {
        Outcome::Success { body } | Outcome::FunctionError { body, .. } => body,
        _ => return None,
    };
    let label = match judgement {
        Judgement::Success => SUCCESS,
        Judgement::ItemsFailed(_) => PARTIAL_FAILURE,
        Judgement::WholeBatch(_) => FUNCTION_ERROR,
    };
    let now = crate::source::stream::now_seconds();
    let response = response_json(body);
    let mut line = Vec::with_capacity(event.len() + response.len() + mapping.len() + 96);
    line.extend_from_slice(br#"{"mapping":"#);
    serde_json::to_writer(&mut line, mapping).expect("a string serializes");
    line.extend_from_slice(br#","time":""#);
    line.extend_from_slice(iso8601(now, true).as_bytes());
    line.extend_from_slice(br#"","event":"#);
    line.extend_from_slice(event);
    line.extend_from_slice(br#","outcome":""#);
    line.extend_from_slice(label.as_bytes());
    line.extend_from_slice(br#"","response":"#);
    line.extend_from_slice(&response);
    line.extend_from_slice(b"}\n");
    Some(line)
}

/// The function's answer as one line of JSON: its bytes when they are JSON on one line,
/// JSON on several lines made compact, `null` for an empty answer, any other text as a
/// JSON string.
fn response_json(body: &[u8]) -> Cow<'_, [u8]> {
    if body.trim_ascii().is_empty() {
        return Cow::Borrowed(b"null");
    }
    match serde_json::from_slice::<&RawValue>(body) {
        Ok(raw) if !raw.get().contains(['\n', '\r']) => Cow::Borrowed(raw.get().as_bytes()),
        Ok(raw) => Cow::Owned(
            serde_json::from_str::<serde_json::Value>(raw.get())
                .and_then(|value| serde_json::to_vec(&value))
                .expect("valid JSON reserializes"),
        ),
        Err(_) => Cow::Owned(
            serde_json::to_vec(&String::from_utf8_lossy(body)).expect("a string serializes"),
        ),
    }
}

/// One line of a capture file, as replay reads it: `event` is the exact bytes sent.
#[derive(Debug, Deserialize)]
pub struct CapturedLine<'a> {
    #[serde(borrow)]
    pub mapping: Cow<'a, str>,
    #[serde(borrow)]
    pub event: &'a RawValue,
    #[serde(borrow)]
    pub outcome: Cow<'a, str>,
}

impl<'a> CapturedLine<'a> {
    /// Parses one line (without its line break).
    pub fn parse(line: &'a [u8]) -> serde_json::Result<CapturedLine<'a>> {
        serde_json::from_slice(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::judge::WholeFailure;

    const EVENT: &[u8] = br#"{"Records":[{"messageId":"m-1","body":"a\nb"}]}"#;

    fn success(body: &str) -> Outcome {
        Outcome::Success {
            body: body.as_bytes().to_vec(),
        }
    }

    fn written(judgement: &Judgement, outcome: &Outcome) -> Vec<u8> {
        line("m \"1\"", EVENT, judgement, outcome).expect("an answered invocation")
    }

    #[test]
    fn a_line_holds_the_event_bytes_as_sent_and_reads_back_the_same() {
        let bytes = written(&Judgement::Success, &success("null"));
        assert_eq!(bytes.last(), Some(&b'\n'));
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.contains(r#","event":{"Records":[{"messageId":"m-1","body":"a\nb"}]},"#),
            "{text}"
        );
        let read = CapturedLine::parse(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(read.mapping, "m \"1\"");
        assert_eq!(read.event.get().as_bytes(), EVENT);
        assert_eq!(read.outcome, SUCCESS);
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let time = value["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
        assert_eq!(value["response"], serde_json::Value::Null);
    }

    #[test]
    fn the_outcome_follows_the_judgement() {
        let error = Outcome::FunctionError {
            error_type: "Unhandled".into(),
            body: br#"{"errorType":"Error","errorMessage":"boom"}"#.to_vec(),
        };
        for (judgement, outcome, label) in [
            (Judgement::Success, success(""), SUCCESS),
            (
                Judgement::ItemsFailed(vec![0]),
                success("{}"),
                PARTIAL_FAILURE,
            ),
            (
                Judgement::WholeBatch(WholeFailure::InvalidResponse("x".into())),
                success("{}"),
                FUNCTION_ERROR,
            ),
            (
                Judgement::WholeBatch(WholeFailure::FunctionError {
                    error_type: "Unhandled".into(),
                    detail: "boom".into(),
                }),
                error.clone(),
                FUNCTION_ERROR,
            ),
        ] {
            let value: serde_json::Value =
                serde_json::from_slice(&written(&judgement, &outcome)).unwrap();
            assert_eq!(value["outcome"], label, "{judgement:?}");
        }
        let value: serde_json::Value = serde_json::from_slice(&written(
            &Judgement::WholeBatch(WholeFailure::FunctionError {
                error_type: "Unhandled".into(),
                detail: "boom".into(),
            }),
            &error,
        ))
        .unwrap();
        assert_eq!(value["response"]["errorMessage"], "boom");
    }

    #[test]
    fn only_answers_of_the_function_are_captured() {
        let too_large = Outcome::PayloadTooLarge {
            detail: "HTTP 413".into(),
        };
        let judgement = Judgement::WholeBatch(WholeFailure::TooLarge("HTTP 413".into()));
        assert_eq!(line("m", EVENT, &judgement, &too_large), None);
    }

    #[test]
    fn a_response_is_one_line_of_json() {
        for (body, expected) in [
            ("", "null"),
            ("  \n", "null"),
            (r#"{"batchItemFailures":[]}"#, r#"{"batchItemFailures":[]}"#),
            (" \"ok\" \n", r#""ok""#),
            ("{\n  \"a\": 1\n}\n", r#"{"a":1}"#),
            (
                "Task timed out after 3.00 seconds",
                r#""Task timed out after 3.00 seconds""#,
            ),
            ("line one\nline two", r#""line one\nline two""#),
        ] {
            assert_eq!(
                std::str::from_utf8(&response_json(body.as_bytes())).unwrap(),
                expected,
                "{body:?}"
            );
        }
    }

    fn lines_of(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn lines_append_and_a_torn_last_line_is_left_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/dir/capture.jsonl");
        let first = written(&Judgement::Success, &success("null"));
        CaptureFile::open(&path).append(&first).unwrap();
        // a crash while writing the next line
        let mut torn = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        torn.write_all(&first[..20]).unwrap();
        let capture = CaptureFile::open(&path);
        capture.append(&first).unwrap();
        capture.append(&first).unwrap();
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 4, "{lines:?}");
        let parsed: Vec<bool> = lines
            .iter()
            .map(|l| CapturedLine::parse(l.as_bytes()).is_ok())
            .collect();
        assert_eq!(parsed, [true, false, true, true]);
    }

    #[test]
    fn a_file_that_cannot_be_written_fails_each_line_and_recovers_once_it_can() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("capture.jsonl");
        let capture = CaptureFile::open(&path);
        let line = written(&Judgement::Success, &success("null"));
        assert!(capture.append(&line).is_err());
        assert!(capture.append(&line).is_err());
        std::fs::remove_file(&blocker).unwrap();
        capture.append(&line).unwrap();
        assert_eq!(lines_of(&path).len(), 1);
    }
}

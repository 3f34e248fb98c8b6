//! `esmd filter`: a mapping's filter_criteria explained on records from stdin, no queue.

use std::io::Write;
use std::process::{Command, Stdio};

fn esmd_filter(config: &str, mapping: &str, stdin: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("esmd.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_esmd"))
        .args(["filter", "--config"])
        .arg(&path)
        .args(["--mapping", mapping])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // esmd may exit before reading stdin (an unknown mapping): a broken pipe is fine
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const CONFIG: &str = r#"
[aws]
endpoint_url = "http://127.0.0.1:1"
[functions.f]
url = "http://127.0.0.1:1/"
[[mappings]]
uuid = "orders"
function_name = "f"
event_source_arn = "arn:aws:sqs:us-east-1:000000000000:orders"
filter_criteria = { filters = [ { pattern = '{"body":{"kind":["order"],"total":[{"numeric":[">",100]}]}}' } ] }
[[mappings]]
uuid = "clicks"
function_name = "f"
event_source_arn = "arn:aws:kinesis:us-east-1:000000000000:stream/clicks"
starting_position = "TRIM_HORIZON"
filter_criteria = { filters = [ { pattern = '{"data":{"page":[{"prefix":"/checkout"}]}}' }, { pattern = '{"partitionKey":["vip"]}' } ] }
"#;

#[test]
fn sqs_records_are_explained_one_line_each() {
    let records = r#"{"Records":[
        {"messageId":"1","body":"{\"kind\":\"order\",\"total\":250}"},
        {"messageId":"2","body":"{\"kind\":\"order\",\"total\":50}"},
        {"messageId":"3","body":"hello"}
    ]}"#;
    let (code, out, err) = esmd_filter(CONFIG, "orders", records);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec![
            "record 0: delivered (filter 0 matched)",
            "record 1: filtered out (filter 0: key body.total: no value matched)",
            "record 2: filtered out (filter 0: key body: the record's value is a plain string but the pattern gives an object)",
        ]
    );
}

#[test]
fn kinesis_data_is_decoded_for_matching() {
    use base64::Engine;
    let data = |json: &str| base64::engine::general_purpose::STANDARD.encode(json);
    let record = |key: &str, json: &str| {
        format!(
            r#"{{"kinesis":{{"partitionKey":"{key}","data":"{}","sequenceNumber":"1"}},"eventSource":"aws:kinesis"}}"#,
            data(json)
        )
    };
    let input = [
        record("a", r#"{"page":"/checkout/pay"}"#),
        record("vip", "not json"),
        record("b", "not json"),
    ]
    .join("\n");
    let (code, out, err) = esmd_filter(CONFIG, "clicks", &input);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "record 0: delivered (filter 0 matched)");
    assert_eq!(lines[1], "record 1: delivered (filter 1 matched)");
    assert!(
        lines[2].starts_with(
            "record 2: filtered out (filter 0: key data: the record's value is not JSON"
        ),
        "{out}"
    );
}

#[test]
fn an_unknown_mapping_is_a_usage_error_naming_the_mappings() {
    let (code, _, err) = esmd_filter(CONFIG, "nope", "[]");
    assert_eq!(code, 64);
    assert!(err.contains("orders, clicks"), "{err}");
}

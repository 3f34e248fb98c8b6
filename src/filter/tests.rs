use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn compile(patterns: &[&str]) -> Filters {
    let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    Filters::compile(&patterns).unwrap_or_else(|e| panic!("{e}"))
}

/// One pattern against a plain record (DynamoDB presents records as they are).
fn hit(pattern: &str, record: &str) -> bool {
    compile(&[pattern])
        .matches(FilterSource::DynamoDb, record.as_bytes())
        .is_some()
}

fn refused(patterns: &[&str]) -> FilterError {
    let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    Filters::compile(&patterns).expect_err("refused")
}

/// (pattern, record, matches): the examples of the Lambda and EventBridge pages and of
/// semantics §2, each rule and its edges.
const CONFORMANCE: &[(&str, &str, bool)] = &[
    // Exact values and the empty string.
    (r#"{"Name":["Alice"]}"#, r#"{"Name":"Alice"}"#, true),
    (r#"{"Name":["Alice"]}"#, r#"{"Name":"alice"}"#, false),
    (r#"{"Name":["Alice"]}"#, r#"{"Name":"Alice "}"#, false),
    (r#"{"Name":["Alice"]}"#, r#"{"name":"Alice"}"#, false),
    (r#"{"Name":["Alice"]}"#, r#"{}"#, false),
    (r#"{"LastName":[""]}"#, r#"{"LastName":""}"#, true),
    (r#"{"LastName":[""]}"#, r#"{"LastName":"Doe"}"#, false),
    (r#"{"LastName":[""]}"#, r#"{"LastName":null}"#, false),
    (r#"{"LastName":[""]}"#, r#"{}"#, false),
    (r#"{"UserID":[null]}"#, r#"{"UserID":null}"#, true),
    (r#"{"UserID":[null]}"#, r#"{"UserID":""}"#, false),
    (r#"{"UserID":[null]}"#, r#"{}"#, false),
    (r#"{"ok":[true]}"#, r#"{"ok":true}"#, true),
    (r#"{"ok":[true]}"#, r#"{"ok":"true"}"#, false),
    (r#"{"ok":[false]}"#, r#"{"ok":true}"#, false),
    // Numbers: by their JSON form (§2.5), never equal to strings.
    (r#"{"Price":[100]}"#, r#"{"Price":100}"#, true),
    (r#"{"Price":[100]}"#, r#"{"Price":100.0}"#, false),
    (r#"{"Price":[300]}"#, r#"{"Price":3.0e2}"#, false),
    (r#"{"Price":[100.5]}"#, r#"{"Price":100.5}"#, true),
    (r#"{"Price":[100]}"#, r#"{"Price":"100"}"#, false),
    (r#"{"Price":["100"]}"#, r#"{"Price":100}"#, false),
    (r#"{"Price":[100]}"#, r#"{"Price":101}"#, false),
    (r#"{"Price":[-1.5]}"#, r#"{"Price":-1.5}"#, true),
    // Lists in the pattern are ORed; keys are ANDed.
    (
        r#"{"PaymentType":["Credit","Debit"]}"#,
        r#"{"PaymentType":"Debit"}"#,
        true,
    ),
    (
        r#"{"PaymentType":["Credit","Debit"]}"#,
        r#"{"PaymentType":"Cash"}"#,
        false,
    ),
    (
        r#"{"Location":["New York"],"Day":["Monday"]}"#,
        r#"{"Location":"New York","Day":"Monday"}"#,
        true,
    ),
    (
        r#"{"Location":["New York"],"Day":["Monday"]}"#,
        r#"{"Location":"New York","Day":"Sunday"}"#,
        false,
    ),
    (
        r#"{"Location":["New York"],"Day":["Monday"]}"#,
        r#"{"Location":"New York"}"#,
        false,
    ),
    (r#"{"a":["x", 1, null]}"#, r#"{"a":1}"#, true),
    (r#"{"a":["x", 1, null]}"#, r#"{"a":null}"#, true),
    (r#"{"a":["x", 1, null]}"#, r#"{"a":"y"}"#, false),
    // Nesting follows the record's structure.
    (
        r#"{"detail":{"state":["terminated"]}}"#,
        r#"{"detail":{"state":"terminated"}}"#,
        true,
    ),
    (
        r#"{"detail":{"state":["terminated"]}}"#,
        r#"{"detail":{"state":"running"}}"#,
        false,
    ),
    (
        r#"{"detail":{"state":["terminated"]}}"#,
        r#"{"state":"terminated"}"#,
        false,
    ),
    (
        r#"{"detail":{"state":["terminated"]}}"#,
        r#"{"detail":"terminated"}"#,
        false,
    ),
    (
        r#"{"a":{"b":{"c":[1]}}}"#,
        r#"{"a":{"b":{"c":1,"d":2},"e":3}}"#,
        true,
    ),
    (r#"{"a":{"b":{"c":[1]}}}"#, r#"{"a":{"b":{"c":2}}}"#, false),
    (r#"{"a":["x"]}"#, r#"{"a":{"b":"x"}}"#, false),
    // $or.
    (
        r#"{"$or":[{"Location":["New York"]},{"Day":["Monday"]}]}"#,
        r#"{"Location":"New York","Day":"Sunday"}"#,
        true,
    ),
    (
        r#"{"$or":[{"Location":["New York"]},{"Day":["Monday"]}]}"#,
        r#"{"Location":"Boston","Day":"Monday"}"#,
        true,
    ),
    (
        r#"{"$or":[{"Location":["New York"]},{"Day":["Monday"]}]}"#,
        r#"{"Location":"Boston","Day":"Sunday"}"#,
        false,
    ),
    (
        r#"{"$or":[{"Location":["New York"]},{"Day":["Monday"]}]}"#,
        r#"{}"#,
        false,
    ),
    (
        r#"{"source":["a"],"$or":[{"x":[1]},{"y":[2]}]}"#,
        r#"{"source":"a","y":2}"#,
        true,
    ),
    (
        r#"{"source":["a"],"$or":[{"x":[1]},{"y":[2]}]}"#,
        r#"{"source":"b","y":2}"#,
        false,
    ),
    (
        r#"{"detail":{"$or":[{"c":[1]},{"d":[{"exists":true}]}]}}"#,
        r#"{"detail":{"d":"x"}}"#,
        true,
    ),
    (
        r#"{"detail":{"$or":[{"c":[1]},{"d":[{"exists":true}]}]}}"#,
        r#"{"detail":{"c":2}}"#,
        false,
    ),
    (
        r#"{"$or":[{"a":[1],"b":[2]},{"$or":[{"c":[3]},{"d":[4]}]}]}"#,
        r#"{"d":4}"#,
        true,
    ),
    (
        r#"{"$or":[{"a":[1],"b":[2]},{"$or":[{"c":[3]},{"d":[4]}]}]}"#,
        r#"{"a":1}"#,
        false,
    ),
    (
        r#"{"$or":[{"a":[1],"b":[2]},{"$or":[{"c":[3]},{"d":[4]}]}]}"#,
        r#"{"a":1,"b":2}"#,
        true,
    ),
    // prefix and suffix.
    (
        r#"{"time":[{"prefix":"2017-10-02"}]}"#,
        r#"{"time":"2017-10-02T18:43:48Z"}"#,
        true,
    ),
    (
        r#"{"time":[{"prefix":"2017-10-02"}]}"#,
        r#"{"time":"2017-10-03T18:43:48Z"}"#,
        false,
    ),
    (
        r#"{"Region":[{"prefix":"us-"}]}"#,
        r#"{"Region":"us-east-1"}"#,
        true,
    ),
    (
        r#"{"Region":[{"prefix":"us-"}]}"#,
        r#"{"Region":"US-east-1"}"#,
        false,
    ),
    (r#"{"n":[{"prefix":"1"}]}"#, r#"{"n":12}"#, false),
    (
        r#"{"Region":[{"prefix":""}]}"#,
        r#"{"Region":"anything"}"#,
        true,
    ),
    (
        r#"{"FileName":[{"suffix":".png"}]}"#,
        r#"{"FileName":"image.png"}"#,
        true,
    ),
    (
        r#"{"FileName":[{"suffix":".png"}]}"#,
        r#"{"FileName":"image.PNG"}"#,
        false,
    ),
    (
        r#"{"FileName":[{"suffix":".png"}]}"#,
        r#"{"FileName":"image.jpg"}"#,
        false,
    ),
    (
        r#"{"service":[{"prefix":{"equals-ignore-case":"eventb"}}]}"#,
        r#"{"service":"EventBridge"}"#,
        true,
    ),
    (
        r#"{"service":[{"prefix":{"equals-ignore-case":"eventb"}}]}"#,
        r#"{"service":"Lambda"}"#,
        false,
    ),
    (
        r#"{"service":[{"suffix":{"equals-ignore-case":"tBridge"}}]}"#,
        r#"{"service":"EVENTBRIDGE"}"#,
        true,
    ),
    (
        r#"{"service":[{"suffix":{"equals-ignore-case":"tBridge"}}]}"#,
        r#"{"service":"bridge"}"#,
        false,
    ),
    (
        r#"{"s":[{"suffix":{"equals-ignore-case":"É"}}]}"#,
        r#"{"s":"café"}"#,
        true,
    ),
    // equals-ignore-case.
    (
        r#"{"Name":[{"equals-ignore-case":"alice"}]}"#,
        r#"{"Name":"ALICE"}"#,
        true,
    ),
    (
        r#"{"Name":[{"equals-ignore-case":"alice"}]}"#,
        r#"{"Name":"AlIcE"}"#,
        true,
    ),
    (
        r#"{"Name":[{"equals-ignore-case":"alice"}]}"#,
        r#"{"Name":"alicea"}"#,
        false,
    ),
    (
        r#"{"Name":[{"equals-ignore-case":"alice"}]}"#,
        r#"{"Name":"alic"}"#,
        false,
    ),
    (
        r#"{"Name":[{"equals-ignore-case":"ÄRGER"}]}"#,
        r#"{"Name":"ärger"}"#,
        true,
    ),
    // anything-but.
    (
        r#"{"Weather":[{"anything-but":["Raining"]}]}"#,
        r#"{"Weather":"Sunny"}"#,
        true,
    ),
    (
        r#"{"Weather":[{"anything-but":["Raining"]}]}"#,
        r#"{"Weather":"Raining"}"#,
        false,
    ),
    (
        r#"{"Weather":[{"anything-but":["Raining"]}]}"#,
        r#"{}"#,
        false,
    ),
    (
        r#"{"state":[{"anything-but":"initializing"}]}"#,
        r#"{"state":"running"}"#,
        true,
    ),
    (
        r#"{"state":[{"anything-but":"initializing"}]}"#,
        r#"{"state":"initializing"}"#,
        false,
    ),
    (
        r#"{"state":[{"anything-but":["stopped","overloaded"]}]}"#,
        r#"{"state":"overloaded"}"#,
        false,
    ),
    (
        r#"{"state":[{"anything-but":["stopped","overloaded"]}]}"#,
        r#"{"state":"running"}"#,
        true,
    ),
    (r#"{"x":[{"anything-but":100}]}"#, r#"{"x":100}"#, false),
    (r#"{"x":[{"anything-but":100}]}"#, r#"{"x":100.0}"#, true),
    (r#"{"x":[{"anything-but":100}]}"#, r#"{"x":101}"#, true),
    (r#"{"x":[{"anything-but":[1,2]}]}"#, r#"{"x":"1"}"#, true),
    (r#"{"x":[{"anything-but":["a"]}]}"#, r#"{"x":null}"#, true),
    (
        r#"{"x":[{"anything-but":["a"]}]}"#,
        r#"{"x":["a","b"]}"#,
        true,
    ),
    (r#"{"x":[{"anything-but":["a"]}]}"#, r#"{"x":["a"]}"#, false),
    (
        r#"{"x":[{"anything-but":["a"]}]}"#,
        r#"{"x":{"y":"b"}}"#,
        false,
    ),
    (
        r#"{"Region":[{"anything-but":{"prefix":"us-"}}]}"#,
        r#"{"Region":"eu-west-1"}"#,
        true,
    ),
    (
        r#"{"Region":[{"anything-but":{"prefix":"us-"}}]}"#,
        r#"{"Region":"us-east-1"}"#,
        false,
    ),
    (
        r#"{"Region":[{"anything-but":{"prefix":["us-","ca-"]}}]}"#,
        r#"{"Region":"ca-central-1"}"#,
        false,
    ),
    (
        r#"{"Region":[{"anything-but":{"prefix":"us-"}}]}"#,
        r#"{"Region":5}"#,
        true,
    ),
    (
        r#"{"FileName":[{"anything-but":{"suffix":".png"}}]}"#,
        r#"{"FileName":"a.jpg"}"#,
        true,
    ),
    (
        r#"{"FileName":[{"anything-but":{"suffix":".png"}}]}"#,
        r#"{"FileName":"a.png"}"#,
        false,
    ),
    (
        r#"{"state":[{"anything-but":{"equals-ignore-case":"initializing"}}]}"#,
        r#"{"state":"INITIALIZING"}"#,
        false,
    ),
    (
        r#"{"state":[{"anything-but":{"equals-ignore-case":["a","b"]}}]}"#,
        r#"{"state":"B"}"#,
        false,
    ),
    (
        r#"{"state":[{"anything-but":{"equals-ignore-case":"initializing"}}]}"#,
        r#"{"state":"running"}"#,
        true,
    ),
    (
        r#"{"FilePath":[{"anything-but":{"wildcard":"*/lib/*"}}]}"#,
        r#"{"FilePath":"/usr/lib/x.so"}"#,
        false,
    ),
    (
        r#"{"FilePath":[{"anything-but":{"wildcard":"*/lib/*"}}]}"#,
        r#"{"FilePath":"/usr/bin/x"}"#,
        true,
    ),
    // numeric.
    (
        r#"{"Price":[{"numeric":["=",100]}]}"#,
        r#"{"Price":100}"#,
        true,
    ),
    (
        r#"{"Price":[{"numeric":["=",100]}]}"#,
        r#"{"Price":100.0}"#,
        true,
    ),
    (
        r#"{"Price":[{"numeric":["=",100]}]}"#,
        r#"{"Price":"100"}"#,
        false,
    ),
    (
        r#"{"Price":[{"numeric":[">",10,"<=",20]}]}"#,
        r#"{"Price":10}"#,
        false,
    ),
    (
        r#"{"Price":[{"numeric":[">",10,"<=",20]}]}"#,
        r#"{"Price":10.5}"#,
        true,
    ),
    (
        r#"{"Price":[{"numeric":[">",10,"<=",20]}]}"#,
        r#"{"Price":20}"#,
        true,
    ),
    (
        r#"{"Price":[{"numeric":[">",10,"<=",20]}]}"#,
        r#"{"Price":20.01}"#,
        false,
    ),
    (r#"{"n":[{"numeric":[">=",0,"<",5]}]}"#, r#"{"n":0}"#, true),
    (r#"{"n":[{"numeric":[">=",0,"<",5]}]}"#, r#"{"n":5}"#, false),
    (r#"{"n":[{"numeric":["<",0]}]}"#, r#"{"n":-0.5}"#, true),
    (r#"{"n":[{"numeric":["<",0]}]}"#, r#"{"n":0}"#, false),
    (r#"{"n":[{"numeric":["<=",0]}]}"#, r#"{"n":0}"#, true),
    (
        r#"{"n":[{"numeric":[">",1e9]}]}"#,
        r#"{"n":1000000001}"#,
        true,
    ),
    (r#"{"n":[{"numeric":["<",5,">",1]}]}"#, r#"{"n":3}"#, true),
    (r#"{"n":[{"numeric":[">",0]}]}"#, r#"{"n":[-1,3]}"#, true),
    (r#"{"n":[{"numeric":[">",0]}]}"#, r#"{"n":true}"#, false),
    (
        r#"{"c":[{"numeric":[">",0,"<=",5]}]}"#,
        r#"{"c":{"x":1}}"#,
        false,
    ),
    // exists: leaves only.
    (
        r#"{"ProductName":[{"exists":true}]}"#,
        r#"{"ProductName":"Widget"}"#,
        true,
    ),
    (
        r#"{"ProductName":[{"exists":true}]}"#,
        r#"{"ProductName":null}"#,
        true,
    ),
    (
        r#"{"ProductName":[{"exists":true}]}"#,
        r#"{"ProductName":""}"#,
        true,
    ),
    (r#"{"ProductName":[{"exists":true}]}"#, r#"{}"#, false),
    (r#"{"ProductName":[{"exists":false}]}"#, r#"{}"#, true),
    (
        r#"{"ProductName":[{"exists":false}]}"#,
        r#"{"ProductName":"Widget"}"#,
        false,
    ),
    (
        r#"{"detail":[{"exists":true}]}"#,
        r#"{"detail":{"state":"x"}}"#,
        false,
    ),
    (
        r#"{"detail":[{"exists":false}]}"#,
        r#"{"detail":{"state":"x"}}"#,
        true,
    ),
    (r#"{"tags":[{"exists":true}]}"#, r#"{"tags":[]}"#, false),
    (r#"{"tags":[{"exists":false}]}"#, r#"{"tags":[]}"#, true),
    (r#"{"tags":[{"exists":true}]}"#, r#"{"tags":["a"]}"#, true),
    (r#"{"a":{"b":[{"exists":false}]}}"#, r#"{}"#, true),
    (
        r#"{"a":{"b":[{"exists":false}]}}"#,
        r#"{"a":{"b":1}}"#,
        false,
    ),
    (r#"{"a":{"b":[{"exists":false}]}}"#, r#"{"a":"text"}"#, true),
    (
        r#"{"a":{"b":[{"exists":true}]}}"#,
        r#"{"a":{"b":{"c":1}}}"#,
        false,
    ),
    (r#"{"x":[{"exists":false}, "v"]}"#, r#"{"x":"v"}"#, true),
    // wildcard.
    (
        r#"{"EventBusArn":[{"wildcard":"arn:aws:events:us-east-1:*:event-bus/*"}]}"#,
        r#"{"EventBusArn":"arn:aws:events:us-east-1:123456789012:event-bus/default"}"#,
        true,
    ),
    (
        r#"{"EventBusArn":[{"wildcard":"arn:aws:events:us-east-1:*:event-bus/*"}]}"#,
        r#"{"EventBusArn":"arn:aws:events:us-west-2:123456789012:event-bus/default"}"#,
        false,
    ),
    (
        r#"{"FileName":[{"wildcard":"dir/*.png"}]}"#,
        r#"{"FileName":"dir/a/b.png"}"#,
        true,
    ),
    (
        r#"{"FileName":[{"wildcard":"dir/*.png"}]}"#,
        r#"{"FileName":"dir/b.jpg"}"#,
        false,
    ),
    (
        r#"{"FileName":[{"wildcard":"dir/*.png"}]}"#,
        r#"{"FileName":"other/b.png"}"#,
        false,
    ),
    (r#"{"f":[{"wildcard":"a*a"}]}"#, r#"{"f":"a"}"#, false),
    (r#"{"f":[{"wildcard":"a*a"}]}"#, r#"{"f":"aa"}"#, true),
    (r#"{"f":[{"wildcard":"*"}]}"#, r#"{"f":""}"#, true),
    (r#"{"f":[{"wildcard":"*b*d*"}]}"#, r#"{"f":"abcde"}"#, true),
    (r#"{"f":[{"wildcard":"*d*b*"}]}"#, r#"{"f":"abcde"}"#, false),
    (r#"{"f":[{"wildcard":"exact"}]}"#, r#"{"f":"exact"}"#, true),
    (
        r#"{"f":[{"wildcard":"exact"}]}"#,
        r#"{"f":"exactly"}"#,
        false,
    ),
    (r#"{"f":[{"wildcard":"a\\*b"}]}"#, r#"{"f":"a*b"}"#, true),
    (r#"{"f":[{"wildcard":"a\\*b"}]}"#, r#"{"f":"axb"}"#, false),
    (r#"{"f":[{"wildcard":"a*"}]}"#, r#"{"f":5}"#, false),
    // cidr.
    (
        r#"{"sourceIPAddress":[{"cidr":"10.0.0.0/24"}]}"#,
        r#"{"sourceIPAddress":"10.0.0.255"}"#,
        true,
    ),
    (
        r#"{"sourceIPAddress":[{"cidr":"10.0.0.0/24"}]}"#,
        r#"{"sourceIPAddress":"10.0.1.1"}"#,
        false,
    ),
    (
        r#"{"sourceIPAddress":[{"cidr":"10.0.0.0/24"}]}"#,
        r#"{"sourceIPAddress":"not an ip"}"#,
        false,
    ),
    (
        r#"{"sourceIPAddress":[{"cidr":"10.0.0.0/24"}]}"#,
        r#"{"sourceIPAddress":"::1"}"#,
        false,
    ),
    (
        r#"{"ip":[{"cidr":"0.0.0.0/0"}]}"#,
        r#"{"ip":"203.0.113.9"}"#,
        true,
    ),
    (
        r#"{"ip":[{"cidr":"192.168.1.7/32"}]}"#,
        r#"{"ip":"192.168.1.7"}"#,
        true,
    ),
    (
        r#"{"ip":[{"cidr":"2001:db8::/32"}]}"#,
        r#"{"ip":"2001:db8:ffff::1"}"#,
        true,
    ),
    (
        r#"{"ip":[{"cidr":"2001:db8::/32"}]}"#,
        r#"{"ip":"2001:db9::1"}"#,
        false,
    ),
    // Lists in the record: a leaf matches if any element does, nested objects too.
    (
        r#"{"resources":["arn:a"]}"#,
        r#"{"resources":["arn:b","arn:a"]}"#,
        true,
    ),
    (
        r#"{"resources":["arn:a"]}"#,
        r#"{"resources":["arn:b"]}"#,
        false,
    ),
    (r#"{"resources":["arn:a"]}"#, r#"{"resources":[]}"#, false),
    (r#"{"r":["a"]}"#, r#"{"r":[["x"],["a"]]}"#, true),
    (
        r#"{"items":{"sku":["B"]}}"#,
        r#"{"items":[{"sku":"A"},{"sku":"B"}]}"#,
        true,
    ),
    (
        r#"{"items":{"sku":["C"]}}"#,
        r#"{"items":[{"sku":"A"},{"sku":"B"}]}"#,
        false,
    ),
    (
        r#"{"items":{"sku":["A"],"n":[2]}}"#,
        r#"{"items":[{"sku":"A","n":1},{"sku":"B","n":2}]}"#,
        false,
    ),
    (
        r#"{"items":{"sku":["A"],"n":[1]}}"#,
        r#"{"items":[{"sku":"B","n":2},{"sku":"A","n":1}]}"#,
        true,
    ),
    // Several rules of different kinds for one key.
    (
        r#"{"v":[{"prefix":"a"},{"numeric":[">",5]},null]}"#,
        r#"{"v":7}"#,
        true,
    ),
    (
        r#"{"v":[{"prefix":"a"},{"numeric":[">",5]},null]}"#,
        r#"{"v":"abc"}"#,
        true,
    ),
    (
        r#"{"v":[{"prefix":"a"},{"numeric":[">",5]},null]}"#,
        r#"{"v":null}"#,
        true,
    ),
    (
        r#"{"v":[{"prefix":"a"},{"numeric":[">",5]},null]}"#,
        r#"{"v":"b"}"#,
        false,
    ),
    // Keys with dots are keys, not paths.
    (r#"{"a.b":["x"]}"#, r#"{"a.b":"x"}"#, true),
    (r#"{"a.b":["x"]}"#, r#"{"a":{"b":"x"}}"#, false),
];

#[test]
fn conformance_table() {
    let failures: Vec<String> = CONFORMANCE
        .iter()
        .filter(|(pattern, record, expected)| hit(pattern, record) != *expected)
        .map(|(pattern, record, expected)| format!("{pattern} on {record}: expected {expected}"))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn filters_are_ored_and_the_first_match_is_reported() {
    let filters = compile(&[r#"{"a":[1]}"#, r#"{"b":[2]}"#, r#"{"a":[1],"b":[2]}"#]);
    let at = |record: &str| filters.matches(FilterSource::DynamoDb, record.as_bytes());
    assert_eq!(at(r#"{"a":1}"#), Some(0));
    assert_eq!(at(r#"{"b":2}"#), Some(1));
    assert_eq!(at(r#"{"a":1,"b":2}"#), Some(0));
    assert_eq!(at(r#"{"c":3}"#), None);
}

#[test]
fn no_filters_keep_every_record_and_a_non_object_record_matches_nothing() {
    let none = Filters::compile(&[]).unwrap();
    assert!(none.is_empty());
    assert_eq!(none.matches(FilterSource::Sqs, b"{}"), Some(0));
    let filters = compile(&[r#"{"a":[{"exists":false}]}"#]);
    assert_eq!(filters.matches(FilterSource::DynamoDb, b"[1]"), None);
    assert_eq!(filters.matches(FilterSource::DynamoDb, b"not json"), None);
    assert_eq!(
        filters.explain(FilterSource::DynamoDb, b"7"),
        Verdict::NotAnObject
    );
}

// ---- SQS: the body table of §2.8 ----

fn sqs_record(body: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185"
        },
        "messageAttributes": {},
        "md5OfBody": "098f6bcd4621d373cade4e832627b4f6",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
        "awsRegion": "us-east-2"
    }))
    .unwrap()
}

fn sqs_hit(pattern: &str, body: &str) -> bool {
    compile(&[pattern])
        .matches(FilterSource::Sqs, &sqs_record(body))
        .is_some()
}

#[test]
fn sqs_body_table() {
    let json_body =
        r#"{"RecordNumber":1234,"TimeStamp":"yyyy-mm-ddThh:mm:ss","RequestCode":"AAAA"}"#;
    // Plain string body, plain-string pattern: filtered by the rules.
    assert!(sqs_hit(r#"{"body":["hello"]}"#, "hello"));
    assert!(!sqs_hit(r#"{"body":["hello"]}"#, "goodbye"));
    assert!(sqs_hit(r#"{"body":[{"prefix":"hel"}]}"#, "hello"));
    // Plain string body, no body pattern: metadata only.
    assert!(sqs_hit(r#"{"awsRegion":["us-east-2"]}"#, "hello"));
    assert!(!sqs_hit(r#"{"awsRegion":["eu-west-1"]}"#, "hello"));
    // Plain string body, JSON pattern: dropped, even by a pattern that only asks absence.
    assert!(!sqs_hit(r#"{"body":{"RequestCode":["AAAA"]}}"#, "hello"));
    assert!(!sqs_hit(r#"{"body":{"x":[{"exists":false}]}}"#, "hello"));
    // JSON body, plain-string pattern: dropped, even one that equals the raw text.
    assert!(!sqs_hit(
        &json!({"body": [json_body]}).to_string(),
        json_body
    ));
    assert!(!sqs_hit(r#"{"body":[{"anything-but":"x"}]}"#, json_body));
    assert!(!sqs_hit(r#"{"body":[{"exists":false}]}"#, json_body));
    // JSON body, no body pattern: metadata only.
    assert!(sqs_hit(
        r#"{"attributes":{"ApproximateReceiveCount":["1"]}}"#,
        json_body
    ));
    // JSON body, JSON pattern: filtered by the rules on the parsed body.
    assert!(sqs_hit(r#"{"body":{"RequestCode":["AAAA"]}}"#, json_body));
    assert!(!sqs_hit(r#"{"body":{"RequestCode":["BBBB"]}}"#, json_body));
    assert!(sqs_hit(
        r#"{"body":{"RecordNumber":[{"numeric":[">",1000]}]}}"#,
        json_body
    ));
    // Valid JSON that is not an object is still JSON (the table says "valid JSON").
    assert!(!sqs_hit(r#"{"body":["42"]}"#, "42"));
    assert!(!sqs_hit(r#"{"body":["true"]}"#, "true"));
    assert!(sqs_hit(r#"{"body":{"k":["v"]}}"#, r#"[{"k":"v"}]"#));
}

#[test]
fn sqs_body_and_metadata_together_and_in_or() {
    let body = r#"{"kind":"order","total":12}"#;
    let both = r#"{"body":{"kind":["order"]},"attributes":{"ApproximateReceiveCount":["1"]}}"#;
    assert!(sqs_hit(both, body));
    let either = r#"{"$or":[{"body":["plain"]},{"body":{"kind":["order"]}}]}"#;
    assert!(sqs_hit(either, body));
    assert!(sqs_hit(either, "plain"));
    assert!(!sqs_hit(either, "other"));
}

#[test]
fn sqs_the_delivered_bytes_are_not_changed_by_matching() {
    let record = sqs_record(r#"{"a":1}"#);
    let before = record.clone();
    compile(&[r#"{"body":{"a":[1]}}"#]).matches(FilterSource::Sqs, &record);
    assert_eq!(record, before);
}

// ---- Kinesis: §2.10 ----

fn kinesis_record(data: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "1",
            "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
            "data": STANDARD.encode(data),
            "approximateArrivalTimestamp": 1545084650.987
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": "shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
        "awsRegion": "us-east-2",
        "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream"
    }))
    .unwrap()
}

fn kinesis_hit(pattern: &str, data: &[u8]) -> bool {
    compile(&[pattern])
        .matches(FilterSource::Kinesis, &kinesis_record(data))
        .is_some()
}

#[test]
fn kinesis_data_table() {
    let order = br#"{"record":12345,"order":{"type":"buy","stock":"ANYCO","quantity":1000}}"#;
    // JSON data, JSON pattern: the rules on the decoded data.
    assert!(kinesis_hit(r#"{"data":{"order":{"type":["buy"]}}}"#, order));
    assert!(!kinesis_hit(
        r#"{"data":{"order":{"type":["sell"]}}}"#,
        order
    ));
    assert!(kinesis_hit(
        r#"{"data":{"order":{"quantity":[{"numeric":[">=",1000]}]}}}"#,
        order
    ));
    // JSON data, no data pattern: metadata only.
    assert!(kinesis_hit(r#"{"partitionKey":["1"]}"#, order));
    assert!(!kinesis_hit(r#"{"partitionKey":["2"]}"#, order));
    assert!(kinesis_hit(r#"{"eventSource":["aws:kinesis"]}"#, order));
    // Non-JSON data, JSON pattern: dropped, even one that only asks absence.
    assert!(!kinesis_hit(
        r#"{"data":{"order":{"type":["buy"]}}}"#,
        b"plain text"
    ));
    assert!(!kinesis_hit(
        r#"{"data":{"x":[{"exists":false}]}}"#,
        b"plain text"
    ));
    assert!(!kinesis_hit(
        r#"{"data":{"x":[{"exists":false}]}}"#,
        &[0xff, 0x00, 0x7b]
    ));
    // Non-JSON data, no data pattern: metadata only.
    assert!(kinesis_hit(r#"{"partitionKey":["1"]}"#, b"plain text"));
    assert!(kinesis_hit(
        r#"{"approximateArrivalTimestamp":[{"numeric":[">",1545084650]}]}"#,
        b"x"
    ));
}

#[test]
fn kinesis_lists_of_rules_on_data_are_refused_at_create() {
    for pattern in [
        r#"{"data":["plain"]}"#,
        r#"{"$or":[{"partitionKey":["1"]},{"data":[{"prefix":"a"}]}]}"#,
    ] {
        let filters = compile(&[r#"{"partitionKey":["1"]}"#, pattern]);
        let error = filters.check_source(FilterSource::Kinesis).unwrap_err();
        assert_eq!(error.filter, 1);
        assert_eq!(
            error.key.as_deref(),
            Some(if pattern.contains("$or") {
                "$or.data"
            } else {
                "data"
            })
        );
        assert!(error.to_string().starts_with(AWS_MESSAGE), "{error}");
        // The same pattern is fine for SQS, where plain-string bodies exist.
        filters.check_source(FilterSource::Sqs).unwrap();
    }
    compile(&[r#"{"data":{"a":["b"]}}"#])
        .check_source(FilterSource::Kinesis)
        .unwrap();
}

// ---- DynamoDB: §2.11 ----

fn dynamodb_record(event_name: &str, new_image: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "eventID": "c9fbe7d0261a5163fcb6940593e41797",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-2",
        "dynamodb": {
            "ApproximateCreationDateTime": 1664559083.0,
            "Keys": {"CustomerName": {"S": "Jane Doe"}},
            "NewImage": new_image,
            "SequenceNumber": "111",
            "SizeBytes": 26,
            "StreamViewType": "NEW_IMAGE"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-2:111122223333:table/Customers/stream/2023-10-01T00:00:00.000"
    }))
    .unwrap()
}

#[test]
fn dynamodb_typed_values_metadata_and_numbers() {
    let image = json!({
        "CustomerName": {"S": "Jane Doe"},
        "AccountManager": {"S": "JohnDoe"},
        "PaymentTerms": {"S": "60 days"},
        "Orders": {"N": "12"},
        "Active": {"BOOL": true},
        "Tags": {"SS": ["vip", "eu"]},
        "Address": {"M": {"City": {"S": "Berlin"}}}
    });
    let record = dynamodb_record("INSERT", image);
    let hit = |pattern: &str| {
        let filters = compile(&[pattern]);
        filters.check_source(FilterSource::DynamoDb).unwrap();
        filters.matches(FilterSource::DynamoDb, &record).is_some()
    };
    assert!(hit(
        r#"{"dynamodb":{"NewImage":{"CustomerName":{"S":["Jane Doe"]}}}}"#
    ));
    // Without the type descriptor nothing matches.
    assert!(!hit(
        r#"{"dynamodb":{"NewImage":{"CustomerName":["Jane Doe"]}}}"#
    ));
    assert!(hit(
        r#"{"dynamodb":{"NewImage":{"PaymentTerms":{"S":[{"prefix":"60"}]}}}}"#
    ));
    assert!(hit(
        r#"{"dynamodb":{"NewImage":{"AccountManager":{"S":[{"anything-but":["JaneDoe"]}]}}}}"#
    ));
    assert!(hit(
        r#"{"dynamodb":{"NewImage":{"Active":{"BOOL":[true]}}}}"#
    ));
    assert!(hit(r#"{"dynamodb":{"NewImage":{"Tags":{"SS":["eu"]}}}}"#));
    assert!(hit(
        r#"{"dynamodb":{"NewImage":{"Address":{"M":{"City":{"S":["Berlin"]}}}}}}"#
    ));
    // N values are strings: numeric never matches them, the exact string does.
    assert!(!hit(
        r#"{"dynamodb":{"NewImage":{"Orders":{"N":[{"numeric":[">",10]}]}}}}"#
    ));
    assert!(!hit(r#"{"dynamodb":{"NewImage":{"Orders":{"N":[12]}}}}"#));
    assert!(hit(r#"{"dynamodb":{"NewImage":{"Orders":{"N":["12"]}}}}"#));
    // numeric works on ApproximateCreationDateTime, a JSON number.
    assert!(hit(
        r#"{"dynamodb":{"ApproximateCreationDateTime":[{"numeric":[">",1664559000]}]}}"#
    ));
    assert!(!hit(
        r#"{"dynamodb":{"ApproximateCreationDateTime":[{"numeric":["<",1664559000]}]}}"#
    ));
    // Metadata keys work.
    assert!(hit(r#"{"eventName":["INSERT","MODIFY"]}"#));
    assert!(!hit(r#"{"eventName":["REMOVE"]}"#));
    assert!(hit(
        r#"{"eventName":["INSERT"],"dynamodb":{"Keys":{"CustomerName":{"S":["Jane Doe"]}}}}"#
    ));
    assert!(hit(r#"{"dynamodb":{"OldImage":[{"exists":false}]}}"#));
    // The example of the DynamoDB filtering page: exists on an attribute's type.
    assert!(hit(
        r#"{"dynamodb":{"NewImage":{"AccountManager":{"S":[{"exists":true}]}}}}"#
    ));
    assert!(!hit(
        r#"{"dynamodb":{"NewImage":{"Missing":{"S":[{"exists":true}]}}}}"#
    ));
}

#[test]
fn dynamodb_lists_of_rules_on_the_dynamodb_key_are_refused_at_create() {
    let filters = compile(&[r#"{"dynamodb":[{"exists":true}]}"#]);
    let error = filters.check_source(FilterSource::DynamoDb).unwrap_err();
    assert_eq!(error.key.as_deref(), Some("dynamodb"));
    assert_eq!(error.problem, Problem::PayloadRules { kind: "dynamodb" });
}

// ---- Validation (§2.1, §2.7) ----

#[test]
fn every_refusal_names_the_filter_the_key_and_why() {
    let cases: &[(&str, Option<&str>, Problem)] = &[
        ("null", None, Problem::NotAnObject),
        (r#""aws:sqs""#, None, Problem::NotAnObject),
        ("[1]", None, Problem::NotAnObject),
        (
            r#"{"eventSource":"aws:sqs"}"#,
            Some("eventSource"),
            Problem::NotAList,
        ),
        (r#"{"a":{"b":3}}"#, Some("a.b"), Problem::NotAList),
        (
            r#"{"eventSource":[]}"#,
            Some("eventSource"),
            Problem::EmptyList,
        ),
        ("{}", None, Problem::EmptyObject),
        (r#"{"a":{}}"#, Some("a"), Problem::EmptyObject),
        (r#"{"a":[["x"]]}"#, Some("a"), Problem::NestedList),
        (r#"{"a":[{}]}"#, Some("a"), Problem::NotOneOperator),
        (
            r#"{"a":[{"prefix":"x","suffix":"y"}]}"#,
            Some("a"),
            Problem::NotOneOperator,
        ),
        (
            r#"{"a":[{"contains":"x"}]}"#,
            Some("a"),
            Problem::UnknownOperator("contains".into()),
        ),
        (
            r#"{"a":[{"anything-but":{"contains":"x"}}]}"#,
            Some("a"),
            Problem::UnknownOperator("anything-but/contains".into()),
        ),
        (r#"{"$or":{"a":[1]}}"#, Some("$or"), Problem::OrNotObjects),
        (r#"{"$or":[]}"#, Some("$or"), Problem::OrNotObjects),
        (
            r#"{"$or":[{"a":[1]},["b"]]}"#,
            Some("$or"),
            Problem::OrNotObjects,
        ),
        (
            r#"{"$or":[{"a":[1]},{"b":[]}]}"#,
            Some("$or.b"),
            Problem::EmptyList,
        ),
    ];
    for (pattern, key, problem) in cases {
        let error = refused(&[r#"{"ok":["fine"]}"#, pattern]);
        assert_eq!(error.filter, 1, "{pattern}");
        assert_eq!(error.key.as_deref(), *key, "{pattern}");
        assert_eq!(&error.problem, problem, "{pattern}");
        assert!(
            error
                .to_string()
                .starts_with("Invalid filter pattern definition. filters[1]")
        );
    }
}

#[test]
fn bad_operator_arguments_are_refused() {
    let patterns = [
        r#"{"a":[{"prefix":1}]}"#,
        r#"{"a":[{"prefix":{"equals-ignore-case":1}}]}"#,
        r#"{"a":[{"prefix":{"wildcard":"x"}}]}"#,
        r#"{"a":[{"suffix":["x"]}]}"#,
        r#"{"a":[{"equals-ignore-case":["x"]}]}"#,
        r#"{"a":[{"exists":"true"}]}"#,
        r#"{"a":[{"exists":null}]}"#,
        r#"{"a":[{"anything-but":[]}]}"#,
        r#"{"a":[{"anything-but":["x",1]}]}"#,
        r#"{"a":[{"anything-but":true}]}"#,
        r#"{"a":[{"anything-but":null}]}"#,
        r#"{"a":[{"anything-but":{"prefix":1}}]}"#,
        r#"{"a":[{"anything-but":{"prefix":"a","suffix":"b"}}]}"#,
        r#"{"a":[{"numeric":[">"]}]}"#,
        r#"{"a":[{"numeric":[">","5"]}]}"#,
        r#"{"a":[{"numeric":["!=",5]}]}"#,
        r#"{"a":[{"numeric":[">",5,">",6]}]}"#,
        r#"{"a":[{"numeric":["=",5,"<",6]}]}"#,
        r#"{"a":[{"numeric":[">",10,"<",5]}]}"#,
        r#"{"a":[{"numeric":[">",1,"<",5,"<",6]}]}"#,
        r#"{"a":[{"numeric":5}]}"#,
        r#"{"a":[{"wildcard":"a**b"}]}"#,
        r#"{"a":[{"wildcard":"a\\b"}]}"#,
        r#"{"a":[{"wildcard":3}]}"#,
        r#"{"a":[{"cidr":"10.0.0.0"}]}"#,
        r#"{"a":[{"cidr":"10.0.0.0/33"}]}"#,
        r#"{"a":[{"cidr":"::/129"}]}"#,
        r#"{"a":[{"cidr":"host/8"}]}"#,
    ];
    for pattern in patterns {
        let error = refused(&[pattern]);
        assert_eq!(error.key.as_deref(), Some("a"), "{pattern}");
        assert!(
            matches!(error.problem, Problem::BadArgument { .. }),
            "{pattern}: {error}"
        );
    }
}

#[test]
fn limits_and_json_errors_are_refused() {
    let six: Vec<String> = (0..6).map(|i| format!(r#"{{"n":[{i}]}}"#)).collect();
    let error = Filters::compile(&six).unwrap_err();
    assert_eq!(error.problem, Problem::TooManyFilters { count: 6 });
    assert_eq!(
        error.to_string(),
        "Invalid filter pattern definition. filters[5]: 6 filters; at most 5 are allowed"
    );
    Filters::compile(&six[..5]).unwrap();

    // 4,096 characters (not bytes) is the limit.
    let fits = format!(r#"{{"k":["{}"]}}"#, "é".repeat(MAX_PATTERN_CHARS - 10));
    assert_eq!(fits.chars().count(), MAX_PATTERN_CHARS);
    Filters::compile(&[fits]).unwrap();
    let over = format!(r#"{{"k":["{}"]}}"#, "x".repeat(MAX_PATTERN_CHARS - 9));
    assert_eq!(
        refused(&[&over]).problem,
        Problem::TooLong {
            chars: MAX_PATTERN_CHARS + 1
        }
    );

    let error = refused(&[r#"{"a":["x"]"#]);
    assert!(matches!(error.problem, Problem::NotJson(_)), "{error}");
    assert_eq!(error.key, None);
}

#[test]
fn the_message_reads_aws_first_then_our_detail() {
    let error = refused(&[r#"{"a":["x"]}"#, r#"{"body":{"kind":[]}}"#]);
    assert_eq!(
        error.to_string(),
        "Invalid filter pattern definition. filters[1] key body.kind: the list of rules is empty"
    );
}

#[test]
fn operators_beyond_lambda_are_listed() {
    // Keys come in the order serde_json keeps them: sorted.
    let filters = compile(&[
        r#"{"a":["x"],"b":[{"prefix":"y"}]}"#,
        r#"{"ip":[{"cidr":"10.0.0.0/8"}],"d":{"f":[{"wildcard":"*.png"}]}}"#,
        r#"{"$or":[{"r":[{"anything-but":{"prefix":"us-"}}]},{"s":[{"anything-but":{"suffix":"x"}}]}]}"#,
        r#"{"t":[{"anything-but":{"equals-ignore-case":"x"}},{"anything-but":{"wildcard":"*x"}}]}"#,
    ]);
    assert_eq!(
        filters.beyond_lambda(),
        vec![
            (1, "d.f".to_owned(), "wildcard"),
            (1, "ip".to_owned(), "cidr"),
            (2, "$or.r".to_owned(), "anything-but/prefix"),
            (2, "$or.s".to_owned(), "anything-but/suffix"),
            (3, "t".to_owned(), "anything-but/equals-ignore-case"),
            (3, "t".to_owned(), "anything-but/wildcard"),
        ]
    );
}

// ---- Explain ----

#[test]
fn explain_tells_which_filter_kept_a_record_or_why_each_missed() {
    let filters = compile(&[
        r#"{"body":{"x":["a"]}}"#,
        r#"{"body":{"y":[{"exists":true}]}}"#,
        r#"{"$or":[{"awsRegion":["eu-west-1"]},{"eventSource":["nope"]}]}"#,
        r#"{"body":["plain"]}"#,
    ]);
    let verdict = filters.explain(FilterSource::Sqs, &sqs_record(r#"{"x":"b"}"#));
    let Verdict::Dropped(misses) = verdict else {
        panic!("dropped expected, got {verdict:?}")
    };
    let lines: Vec<String> = misses.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "filter 0: key body.x: no value matched",
            "filter 1: key body.y: the record has no such key",
            "filter 2: key $or: no $or branch matched",
            "filter 3: key body: the record's value is JSON but the pattern gives a list of plain-string rules",
        ]
    );
    assert_eq!(
        filters.explain(FilterSource::Sqs, &sqs_record(r#"{"y":1}"#)),
        Verdict::Matched(1)
    );
    let Verdict::Dropped(misses) = filters.explain(FilterSource::Sqs, &sqs_record("text")) else {
        panic!("dropped expected")
    };
    assert_eq!(misses[0].reason, Reason::TextAgainstObject);
    let data = compile(&[r#"{"data":{"a":[1]}}"#]);
    let Verdict::Dropped(misses) = data.explain(FilterSource::Kinesis, &kinesis_record(b"x"))
    else {
        panic!("dropped expected")
    };
    assert_eq!(
        misses[0].to_string(),
        "filter 0: key data: the record's value is not JSON, so no pattern on it matches"
    );
}

// ---- Properties ----

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z*\\\\/.0-9 -]{0,6}".prop_map(Value::String),
        prop_oneof![
            Just("prefix"),
            Just("suffix"),
            Just("anything-but"),
            Just("numeric"),
            Just("exists"),
            Just("wildcard"),
            Just("cidr"),
            Just("equals-ignore-case"),
            Just("$or"),
            Just(">"),
            Just("<="),
            Just("="),
            Just("10.0.0.0/8"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    "[a-c]{1,2}",
                    Just("prefix".to_owned()),
                    Just("anything-but".to_owned()),
                    Just("numeric".to_owned()),
                    Just("exists".to_owned()),
                    Just("wildcard".to_owned()),
                    Just("cidr".to_owned()),
                    Just("$or".to_owned()),
                    Just("equals-ignore-case".to_owned()),
                    Just("suffix".to_owned()),
                ],
                inner,
                0..4
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A pattern asking for every leaf of `record` exactly, with the same nesting.
fn pattern_of(record: &Value) -> Option<Value> {
    match record {
        Value::Object(map) => {
            let pattern: serde_json::Map<String, Value> = map
                .iter()
                .filter(|(key, _)| key.as_str() != "$or")
                .filter_map(|(key, value)| Some((key.clone(), pattern_of(value)?)))
                .collect();
            (!pattern.is_empty()).then_some(Value::Object(pattern))
        }
        Value::Array(items) => items
            .iter()
            .find(|item| !item.is_object() && !item.is_array())
            .map(|leaf| json!([leaf])),
        leaf => Some(json!([leaf])),
    }
}

proptest! {
    #[test]
    fn compiling_and_matching_arbitrary_json_never_panics(pattern in arbitrary_json(), record in arbitrary_json()) {
        let text = pattern.to_string();
        if let Ok(filters) = Filters::compile(&[text]) {
            let record = serde_json::to_vec(&record).unwrap();
            for source in [FilterSource::Sqs, FilterSource::Kinesis, FilterSource::DynamoDb] {
                let matched = filters.matches(source, &record);
                prop_assert_eq!(matched.is_some(), matches!(filters.explain(source, &record), Verdict::Matched(_)));
            }
        }
    }

    #[test]
    fn a_pattern_built_from_a_records_own_leaves_matches_it(record in arbitrary_json().prop_map(|v| json!({"root": v}))) {
        let Some(pattern) = pattern_of(&record) else { return Ok(()) };
        let filters = Filters::compile(&[pattern.to_string()]).unwrap();
        prop_assert_eq!(filters.matches(FilterSource::DynamoDb, record.to_string().as_bytes()), Some(0));
    }

    #[test]
    fn anything_but_a_value_never_matches_that_value(
        value in prop_oneof![any::<i32>().prop_map(Value::from), "\\PC{0,8}".prop_map(Value::String)],
        other in prop_oneof![any::<i32>().prop_map(Value::from), "\\PC{0,8}".prop_map(Value::String)],
    ) {
        let filters = Filters::compile(&[json!({"k": [{"anything-but": [value]}]}).to_string()]).unwrap();
        let at = |v: &Value| filters.matches(FilterSource::DynamoDb, json!({"k": v}).to_string().as_bytes());
        prop_assert_eq!(at(&value), None);
        prop_assert_eq!(at(&other).is_some(), other != value);
    }

    #[test]
    fn a_wildcard_of_a_strings_own_pieces_matches_it(s in "[ab*]{0,12}", cuts in prop::collection::vec(0usize..13, 0..4)) {
        // Replacing chosen runs of `s` by `*` gives a wildcard that matches `s`.
        let chars: Vec<char> = s.chars().collect();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(chars.len())).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut wildcard = String::new();
        let mut last_star = false;
        for (i, c) in chars.iter().enumerate() {
            if cuts.contains(&i) {
                if !last_star { wildcard.push('*'); }
                last_star = true;
                continue;
            }
            if *c == '*' { wildcard.push('\\'); }
            wildcard.push(*c);
            last_star = false;
        }
        let filters = Filters::compile(&[json!({"k": [{"wildcard": wildcard}]}).to_string()]).unwrap();
        prop_assert_eq!(filters.matches(FilterSource::DynamoDb, json!({"k": s}).to_string().as_bytes()), Some(0));
    }
}

/// Matches per second for typical patterns: `cargo test --lib filter::tests::bench -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn bench_matches_per_second() {
    let cases: [(&str, FilterSource, Vec<u8>, &[&str]); 3] = [
        (
            "sqs json body, 2 filters",
            FilterSource::Sqs,
            sqs_record(r#"{"kind":"order","total":42,"customer":{"tier":"gold","country":"DE"}}"#),
            &[
                r#"{"body":{"kind":["refund"]}}"#,
                r#"{"body":{"kind":["order"],"total":[{"numeric":[">",10]}],"customer":{"tier":[{"anything-but":["free"]}]}}}"#,
            ],
        ),
        (
            "kinesis json data, 1 filter",
            FilterSource::Kinesis,
            kinesis_record(
                br#"{"record":12345,"order":{"type":"buy","stock":"ANYCO","quantity":1000}}"#,
            ),
            &[
                r#"{"partitionKey":["1"],"data":{"order":{"type":["buy"],"quantity":[{"numeric":[">=",100]}]}}}"#,
            ],
        ),
        (
            "dynamodb metadata + typed value, 3 filters",
            FilterSource::DynamoDb,
            dynamodb_record(
                "MODIFY",
                json!({"CustomerName": {"S": "Jane Doe"}, "Orders": {"N": "12"}}),
            ),
            &[
                r#"{"eventName":["REMOVE"]}"#,
                r#"{"dynamodb":{"NewImage":{"CustomerName":{"S":[{"prefix":"John"}]}}}}"#,
                r#"{"eventName":["INSERT","MODIFY"],"dynamodb":{"NewImage":{"CustomerName":{"S":[{"prefix":"Jane"}]}}}}"#,
            ],
        ),
    ];
    for (name, source, record, patterns) in cases {
        let filters = compile(patterns);
        assert!(filters.matches(source, &record).is_some());
        let rounds = 200_000;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(filters.matches(source, std::hint::black_box(&record)));
        }
        let per_second = f64::from(rounds) / started.elapsed().as_secs_f64();
        println!(
            "{name}: {per_second:.0} matches/s ({} bytes per record)",
            record.len()
        );
    }
}

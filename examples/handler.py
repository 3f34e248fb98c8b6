"""An example function for esmd's `command` target.

Reads the event from stdin, logs what it got to stderr and answers on stdout. It takes
all three event kinds (every record names its source in `eventSource`):

- SQS: with ReportBatchItemFailures on, any message whose body contains "poison" is
  reported as failed, so it goes back to the queue (and, after maxReceiveCount, to its DLQ).
- Kinesis: logs the shard and the decoded data of each record; nothing fails.
- DynamoDB Streams: logs the eventName and keys of each record; nothing fails.
"""

import base64
import json
import sys


def log(line):
    print(f"handler: {line}", file=sys.stderr)


event = json.load(sys.stdin)
records = event.get("Records", [])
source = records[0]["eventSource"] if records else ""
failures = []

if source == "aws:sqs":
    failures = [{"itemIdentifier": r["messageId"]} for r in records if "poison" in r["body"]]
    bodies = ", ".join(r["body"][:20] for r in records)
    log(f"{len(records)} record(s): {bodies}")
elif source == "aws:kinesis":
    shard = records[0]["eventID"].split(":")[0]  # eventID is "shardId-...:sequenceNumber"
    log(f"kinesis {shard}, {len(records)} record(s):")
    for r in records:
        log("  " + base64.b64decode(r["kinesis"]["data"]).decode("utf-8", "replace"))
elif source == "aws:dynamodb":
    log(f"dynamodb, {len(records)} record(s):")
    for r in records:
        log(f"  {r['eventName']} {json.dumps(r['dynamodb']['Keys'])}")

json.dump({"batchItemFailures": failures}, sys.stdout)

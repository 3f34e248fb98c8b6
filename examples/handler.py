"""An example function for esmd's `command` target.

Reads the event from stdin, logs one line per invocation to stderr and answers on stdout.
With ReportBatchItemFailures on, any SQS message whose body contains "poison" is reported
as failed, so it goes back to the queue (and, after maxReceiveCount, to its DLQ).
"""

import json
import sys

event = json.load(sys.stdin)
records = event.get("Records", [])
failures = [
    {"itemIdentifier": r["messageId"]}
    for r in records
    if "poison" in r.get("body", "")
]
bodies = ", ".join(r.get("body", "")[:20] for r in records)
print(f"handler: {len(records)} record(s): {bodies}", file=sys.stderr)
json.dump({"batchItemFailures": failures}, sys.stdout)

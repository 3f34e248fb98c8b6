"""esmd benchmarks: the driver behind scripts/bench (run it through that script).

Measures the release esmd against the emulators scripts/bench started and prints one table,
each row with the figure of serverless-offline measured on this kind of machine (the bar,
from the project's peers-measured notes) next to esmd's.

The function is a small HTTP server in this process (an Invoke-compatible `url` target)
that timestamps every invocation on arrival; every message, record or item carries the
time its put call started, so put -> invoke latency is `arrival - put`. Throughput is
counted like the peer figures: records pre-loaded, from the first invocation to the last.

Every esmd run is bounded (each wait has a timeout) and stopped in a `finally`; esmd also
gets SIGTERM from the kernel should this driver die (PR_SET_PDEATHSIG). A measurement that
fails or times out prints `n/a (why)`: figures are printed, never judged.
"""

import argparse
import base64
import ctypes
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
from botocore.config import Config

REGION = "us-east-1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# serverless-offline 12.0.4 (+ -sqs 8.0.0, -kinesis 6.2.3, -dynamodb-streams 8.0.1) polling
# moto 5.2.5 on this kind of machine (2 cores): the figures of peers-measured.md.
PEER = {
    "sqs10": "0.50 s / 0.99 s",
    "sqs1": "5.0 s",
    "window": "p50 6.06 s",
    "sqsdrain": "68 msg/s",
    "kin": "0.80 s",
    "kin100": "0.80 s",
    "kindrain": "637 rec/s",
    "kindrain_kl": "637 rec/s (moto)",
    "ddb": "0.78 s",
    "usage": "210-250 MB / 2.3-2.9 s",
    "start": "2.2-5.3 s",
    "idle10": "not measured (210-250 MB for a run)",
}
GOAL = {
    "sqs10": "tens of ms",
    "sqs1": "tens of ms",
    "window": "about the window",
    "sqsdrain": "as fast as moto serves",
    "kin": "below the idle poll interval",
    "kin100": "below the idle poll interval",
    "kindrain": "an order of magnitude more",
    "kindrain_kl": "an order of magnitude more",
    "ddb": "below the idle poll interval",
    "usage": "a few MB / a fraction",
    "start": "under 100 ms",
    "idle10": "< 20 MB, < 1 % of a core",
}


def log(message):
    print(f"    {message}", file=sys.stderr, flush=True)


def p50_p99(latencies):
    """"p50 X / p99 Y" of a list of seconds (p99 by linear interpolation)."""
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    return f"p50 {fmt_secs(statistics.median(latencies))} / p99 {fmt_secs(p99)}"


def fmt_secs(seconds):
    if seconds is None:
        return "n/a"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


class Timeout(Exception):
    pass


# ---------------------------------------------------------------------------------------
# The function: an Invoke-compatible HTTP server that timestamps each invocation.


def record_items(event):
    """(key, put time) of every record of an SQS, Kinesis or DynamoDB Streams event."""
    out = []
    for record in event.get("Records", []) if isinstance(event, dict) else []:
        try:
            if "body" in record:
                data = json.loads(record["body"])
            elif "kinesis" in record:
                data = json.loads(base64.b64decode(record["kinesis"]["data"]))
            elif "dynamodb" in record:
                image = record["dynamodb"]["NewImage"]
                data = {"k": image["pk"]["S"], "t": float(image["t"]["N"])}
            else:
                continue
            out.append((data["k"], float(data["t"])))
        except (KeyError, ValueError, TypeError):
            continue
    return out


class Sink:
    def __init__(self):
        self.cond = threading.Condition()
        self.reset()

    def reset(self):
        with self.cond:
            self.first = {}  # key -> (arrival of its first invocation, put time)
            self.deliveries = 0
            self.invocations = []  # (arrival, number of records)

    def invoked(self, arrival, event):
        items = record_items(event)
        with self.cond:
            self.invocations.append((arrival, len(items)))
            for key, put in items:
                self.deliveries += 1
                self.first.setdefault(key, (arrival, put))
            self.cond.notify_all()

    def wait_keys(self, keys, timeout):
        """Waits until every key was delivered; raises Timeout with how many were."""
        keys = set(keys)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                missing = keys.difference(self.first)
                if not missing:
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(f"{len(keys) - len(missing)} of {len(keys)} delivered in {timeout:.0f} s")
                self.cond.wait(min(left, 0.5))

    def latencies(self, keys):
        with self.cond:
            return [self.first[k][0] - self.first[k][1] for k in keys if k in self.first]

    def span(self, keys):
        """(first arrival, last arrival, invocations) over the invocations of `keys`."""
        with self.cond:
            arrivals = sorted({self.first[k][0] for k in keys if k in self.first})
            return arrivals[0], arrivals[-1], len(self.invocations)


def start_sink(sink):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            arrival = time.time()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                event = json.loads(body)
            except ValueError:
                event = None
            sink.invoked(arrival, event)
            answer = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ---------------------------------------------------------------------------------------
# esmd processes

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def esmd_env(workdir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ESMD_"))}
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.path.join(workdir, "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=os.path.join(workdir, "aws-credentials"),
        NO_COLOR="1",
    )
    env.pop("RUST_LOG", None)
    return env


class Esmd:
    """One `esmd run`: started on enter (after `t_start` is taken), stopped on exit."""

    runs = []  # (label, wall s, VmHWM kB, CPU s) of every run, for the usage table

    def __init__(self, ctx, label, endpoint, max_concurrency, mappings):
        self.ctx, self.label = ctx, label
        self.dir = tempfile.mkdtemp(prefix=f"{label}-", dir=ctx.work)
        self.config = os.path.join(self.dir, "esmd.toml")
        text = (
            f'[aws]\nregion = "{REGION}"\nendpoint_url = "{endpoint}"\n\n'
            f'[state]\ndir = "{self.dir}/state"\n\n'
            f'[functions.bench]\nurl = "{ctx.function_url}"\n'
            f"max_concurrency = {max_concurrency}\ntimeout_secs = 60\n"
        )
        for mapping in mappings:
            text += '\n[[mappings]]\nfunction_name = "bench"\n'
            for key, value in mapping.items():
                text += f"{key} = {json.dumps(value)}\n"
        with open(self.config, "w") as f:
            f.write(text)
        self.proc = None
        self.usage = None

    def __enter__(self):
        self.log = open(os.path.join(self.dir, "esmd.log"), "wb")
        self.t_start = time.time()
        self.proc = subprocess.Popen(
            [self.ctx.esmd, "run", "--config", self.config, "--graceful-shutdown-limit-secs", "5"],
            cwd=self.dir,
            env=esmd_env(self.dir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            preexec_fn=_die_with_parent,
        )
        return self

    def alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"esmd exited with status {self.proc.returncode}; log: {self.log.name}")

    def read_usage(self):
        """(VmHWM kB, CPU s) of the running process."""
        pid = self.proc.pid
        with open(f"/proc/{pid}/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
        return hwm, cpu

    def __exit__(self, *exc):
        try:
            if self.proc.poll() is None:
                try:
                    self.usage = self.read_usage()
                    Esmd.runs.append((self.label, time.time() - self.t_start, *self.usage))
                except (OSError, StopIteration, IndexError, ValueError):
                    pass
                self.proc.terminate()
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            self.log.close()
        return False


def tree_cpu(pid):
    """User+system CPU seconds of `pid` and its live descendants (an emulator may run under a
    launcher process), from /proc; 0 for processes that are gone."""
    children, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))  # ppid
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo += children.get(p, [])
    return total


# ---------------------------------------------------------------------------------------
# Emulator helpers


class Ctx:
    pass


def client(service, endpoint):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=20),
    )


def wait_ready(name, check, pid, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            raise RuntimeError(f"{name} exited during startup")
        try:
            check()
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{name} not ready after {timeout} s")


def moto_reset(ctx):
    req = urllib.request.Request(f"{ctx.moto}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(req, timeout=10).read()


def new_name(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def body(key, t):
    return json.dumps({"k": key, "t": t})


# SQS


def make_queue(ctx):
    sqs = ctx.sqs
    url = sqs.create_queue(QueueName=new_name("bench"))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def sqs_send(ctx, url, key):
    t = time.time()
    ctx.sqs.send_message(QueueUrl=url, MessageBody=body(key, t))


def sqs_preload(ctx, url, keys):
    for i in range(0, len(keys), 10):
        t = time.time()
        entries = [{"Id": str(j), "MessageBody": body(k, t)} for j, k in enumerate(keys[i : i + 10])]
        failed = ctx.sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
        if failed:
            raise RuntimeError(f"SendMessageBatch failed: {failed}")


def sqs_mapping(arn, batch_size=10, window=0):
    m = {"event_source_arn": arn, "batch_size": batch_size}
    if window:
        m["maximum_batching_window_in_seconds"] = window
    return m


# Kinesis


def make_stream(kinesis, shards=4):
    name = new_name("bench")
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    deadline = time.monotonic() + 30
    while True:
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return name, summary["StreamARN"]
        if time.monotonic() > deadline:
            raise Timeout(f"stream {name} not ACTIVE after 30 s")
        time.sleep(0.1)


def kinesis_put(kinesis, stream, key):
    t = time.time()
    kinesis.put_record(StreamName=stream, Data=body(key, t).encode(), PartitionKey=key)


def kinesis_preload(kinesis, stream, keys):
    for i in range(0, len(keys), 500):
        t = time.time()
        records = [{"Data": body(k, t).encode(), "PartitionKey": k} for k in keys[i : i + 500]]
        for _ in range(10):
            out = kinesis.put_records(StreamName=stream, Records=records)
            if not out.get("FailedRecordCount"):
                break
            records = [r for r, res in zip(records, out["Records"]) if "ErrorCode" in res]
            time.sleep(0.2)
        else:
            raise RuntimeError("PutRecords kept failing")


def kinesis_mapping(arn, idle_ms=None, batch_size=100):
    m = {"event_source_arn": arn, "starting_position": "TRIM_HORIZON", "batch_size": batch_size}
    if idle_ms:
        m["idle_poll_interval_ms"] = idle_ms
    return m


# DynamoDB


def make_table(ctx):
    name = new_name("bench")
    out = ctx.dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    return name, out["TableDescription"]["TableArn"]


def ddb_put(ctx, table, key):
    t = time.time()
    ctx.dynamodb.put_item(TableName=table, Item={"pk": {"S": key}, "t": {"N": repr(t)}})


def ddb_mapping(arn):
    return {"event_source_arn": arn, "starting_position": "TRIM_HORIZON", "batch_size": 100}


# ---------------------------------------------------------------------------------------
# Measurements. Each returns {"cell": table text, "detail": optional line}.


def latency_run(ctx, put, count, gap):
    """Puts `count` keys one at a time, `gap` (lo, hi) seconds apart at random (so puts land
    at every phase of a poll loop), waits for all; returns their latencies."""
    keys = []
    for _ in range(count):
        key = uuid.uuid4().hex
        put(key)
        keys.append(key)
        time.sleep(random.uniform(*gap))
    ctx.sink.wait_keys(keys, 60)
    return ctx.sink.latencies(keys)


def warm_up(ctx, esmd, put, count=1):
    keys = [uuid.uuid4().hex for _ in range(count)]
    for key in keys:
        put(key)
    esmd.alive()
    ctx.sink.wait_keys(keys, 60)
    esmd.alive()
    time.sleep(1)


def m_sqs_batch10(ctx):
    url, arn = make_queue(ctx)
    with Esmd(ctx, "sqs-batch10", ctx.moto, 5, [sqs_mapping(arn)]) as esmd:
        put = lambda k: sqs_send(ctx, url, k)
        warm_up(ctx, esmd, put)
        ctx.sink.reset()
        lat = latency_run(ctx, put, 60, (0.05, 0.25))
    return {
        "cell": p50_p99(lat),
        "detail": f"{len(lat)} messages sent one by one 50-250 ms apart; {len(ctx.sink.invocations)} invocations",
    }


def m_sqs_single(ctx):
    url, arn = make_queue(ctx)
    with Esmd(ctx, "sqs-single", ctx.moto, 5, [sqs_mapping(arn)]) as esmd:
        put = lambda k: sqs_send(ctx, url, k)
        warm_up(ctx, esmd, put)
        lat = []
        for _ in range(6):
            time.sleep(random.uniform(1.5, 2.5))  # idle: esmd sits in a long poll
            key = uuid.uuid4().hex
            put(key)
            ctx.sink.wait_keys([key], 30)
            lat += ctx.sink.latencies([key])
    return {
        "cell": f"p50 {fmt_secs(statistics.median(lat))}, max {fmt_secs(max(lat))}",
        "detail": f"{len(lat)} single messages, each after 1.5-2.5 s of quiet",
    }


def m_sqs_window(ctx):
    url, arn = make_queue(ctx)
    with Esmd(ctx, "sqs-window", ctx.moto, 5, [sqs_mapping(arn, 100, 1)]) as esmd:
        put = lambda k: sqs_send(ctx, url, k)
        warm_up(ctx, esmd, put)
        time.sleep(1.5)
        ctx.sink.reset()
        keys = []
        for _ in range(3):
            burst = [uuid.uuid4().hex for _ in range(20)]
            for key in burst:
                put(key)
            keys += burst
            ctx.sink.wait_keys(burst, 30)
            time.sleep(random.uniform(3, 4))
        lat = ctx.sink.latencies(keys)
    return {
        "cell": f"p50 {fmt_secs(statistics.median(lat))}",
        "detail": f"3 bursts of 20 SendMessage calls: {len(ctx.sink.invocations)} invocations, "
        f"latency min {fmt_secs(min(lat))} max {fmt_secs(max(lat))}",
    }


def m_sqs_drain(ctx):
    n = 300
    url, arn = make_queue(ctx)
    keys = [uuid.uuid4().hex for _ in range(n)]
    sqs_preload(ctx, url, keys)
    ctx.sink.reset()
    moto_cpu = tree_cpu(ctx.moto_pid)
    with Esmd(ctx, "sqs-drain", ctx.moto, 5, [sqs_mapping(arn)]) as esmd:
        ctx.sink.wait_keys(keys, 180)
        first, last, invocations = ctx.sink.span(keys)
        start = esmd.t_start
        deliveries = ctx.sink.deliveries
        moto_cpu = tree_cpu(ctx.moto_pid) - moto_cpu
        esmd_cpu = esmd.read_usage()[1]
    # The reference: moto alone, one boto3 loop receiving 10 and deleting them.
    url2, _ = make_queue(ctx)
    sqs_preload(ctx, url2, [uuid.uuid4().hex for _ in range(n)])
    got, t0 = 0, time.monotonic()
    deadline = t0 + 180
    while got < n and time.monotonic() < deadline:
        msgs = ctx.sqs.receive_message(QueueUrl=url2, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if msgs:
            ctx.sqs.delete_message_batch(
                QueueUrl=url2,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)],
            )
        got += len(msgs)
    moto_rate = got / (time.monotonic() - t0)
    rate = n / (last - first)
    ctx.extra["moto_sqs"] = f"{moto_rate:.0f} msg/s"
    return {
        "cell": f"{rate:.0f} msg/s; CPU esmd {esmd_cpu:.2f} s, moto {moto_cpu:.2f} s",
        "detail": f"{n} pre-loaded, batch 10, max_concurrency 5: {invocations} invocations, "
        f"{deliveries - n} redeliveries; start to last {n / (last - start):.0f} msg/s; "
        f"moto alone (one boto3 receive+delete loop): {moto_rate:.0f} msg/s",
    }


def m_kinesis_latency(ctx, idle_ms):
    stream, arn = make_stream(ctx.kinesis)
    label = f"kinesis-latency-{idle_ms or 'default'}"
    with Esmd(ctx, label, ctx.moto, 4, [kinesis_mapping(arn, idle_ms)]) as esmd:
        put = lambda k: kinesis_put(ctx.kinesis, stream, k)
        warm_up(ctx, esmd, put, 8)
        ctx.sink.reset()
        lat = latency_run(ctx, put, 40, (0.1, 0.4))
    return {
        "cell": p50_p99(lat),
        "detail": f"{len(lat)} PutRecord calls 100-400 ms apart, random partition keys",
    }


def m_kinesis_drain(ctx, where):
    n = 5000
    endpoint = ctx.moto if where == "moto" else ctx.kinesis_local
    kinesis = ctx.kinesis if where == "moto" else client("kinesis", ctx.kinesis_local)
    stream, arn = make_stream(kinesis)
    keys = [uuid.uuid4().hex for _ in range(n)]
    t0 = time.monotonic()
    kinesis_preload(kinesis, stream, keys)
    put_secs = time.monotonic() - t0
    ctx.sink.reset()
    emulator_pid = ctx.moto_pid if where == "moto" else ctx.kinesis_local_pid
    emulator_cpu = tree_cpu(emulator_pid)
    with Esmd(ctx, f"kinesis-drain-{where}", endpoint, 4, [kinesis_mapping(arn)]) as esmd:
        ctx.sink.wait_keys(keys, 240)
        first, last, invocations = ctx.sink.span(keys)
        start = esmd.t_start
        emulator_cpu = tree_cpu(emulator_pid) - emulator_cpu
        esmd_cpu = esmd.read_usage()[1]
    return {
        "cell": f"{n / (last - first):.0f} rec/s; CPU esmd {esmd_cpu:.2f} s, {where} {emulator_cpu:.2f} s",
        "detail": f"{where}: {n} pre-loaded on 4 shards ({put_secs:.1f} s to put), batch 100, "
        f"{invocations} invocations; start to last {n / (last - start):.0f} rec/s; CPU from "
        f"esmd's start to the last delivery, the emulator's process tree beside esmd's",
    }


def m_ddb_latency(ctx):
    table, arn = make_table(ctx)
    with Esmd(ctx, "dynamodb-latency", ctx.moto, 4, [ddb_mapping(arn)]) as esmd:
        put = lambda k: ddb_put(ctx, table, k)
        warm_up(ctx, esmd, put)
        ctx.sink.reset()
        lat = latency_run(ctx, put, 40, (0.1, 0.4))
    return {
        "cell": p50_p99(lat),
        "detail": f"{len(lat)} PutItem calls 100-400 ms apart; default idle poll interval (250 ms)",
    }


def m_usage(ctx):
    """One process, all three sources: 300 SQS messages, 5,000 Kinesis records on 4 shards
    and 200 DynamoDB items, pre-loaded and drained."""
    url, qarn = make_queue(ctx)
    qkeys = [uuid.uuid4().hex for _ in range(300)]
    sqs_preload(ctx, url, qkeys)
    stream, sarn = make_stream(ctx.kinesis)
    kkeys = [uuid.uuid4().hex for _ in range(5000)]
    kinesis_preload(ctx.kinesis, stream, kkeys)
    table, tarn = make_table(ctx)
    dkeys = [uuid.uuid4().hex for _ in range(200)]
    for key in dkeys:
        ddb_put(ctx, table, key)
    ctx.sink.reset()
    mappings = [sqs_mapping(qarn), kinesis_mapping(sarn), ddb_mapping(tarn)]
    with Esmd(ctx, "usage-all-sources", ctx.moto, 10, mappings) as esmd:
        ctx.sink.wait_keys(qkeys + kkeys + dkeys, 300)
        wall = time.time() - esmd.t_start
        time.sleep(1)  # a second of idle polling counts too
    hwm, cpu = esmd.usage
    return {
        "cell": f"{hwm / 1024:.1f} MB / {cpu:.2f} s",
        "detail": f"one esmd, all three sources: 300 SQS messages + 5,000 Kinesis records + "
        f"200 DynamoDB changes drained in {wall:.1f} s (+1 s idle); VmHWM / user+system CPU",
    }


def m_start(ctx):
    results = {"SQS": [], "Kinesis": [], "DynamoDB": []}
    for i in range(3):
        url, arn = make_queue(ctx)
        keys = [uuid.uuid4().hex for _ in range(10)]
        sqs_preload(ctx, url, keys)
        ctx.sink.reset()
        with Esmd(ctx, f"start-sqs-{i}", ctx.moto, 5, [sqs_mapping(arn)]) as esmd:
            results["SQS"].append(wait_first(ctx, esmd) - esmd.t_start)

        stream, sarn = make_stream(ctx.kinesis)
        kinesis_preload(ctx.kinesis, stream, [uuid.uuid4().hex for _ in range(100)])
        ctx.sink.reset()
        with Esmd(ctx, f"start-kinesis-{i}", ctx.moto, 4, [kinesis_mapping(sarn)]) as esmd:
            results["Kinesis"].append(wait_first(ctx, esmd) - esmd.t_start)

        table, tarn = make_table(ctx)
        for _ in range(10):
            ddb_put(ctx, table, uuid.uuid4().hex)
        ctx.sink.reset()
        with Esmd(ctx, f"start-dynamodb-{i}", ctx.moto, 4, [ddb_mapping(tarn)]) as esmd:
            results["DynamoDB"].append(wait_first(ctx, esmd) - esmd.t_start)
    every = [x for xs in results.values() for x in xs]
    detail = "; ".join(
        f"{src} {fmt_secs(min(xs))}-{fmt_secs(max(xs))}" for src, xs in results.items() if xs
    )
    return {
        "cell": f"{fmt_secs(min(every))}-{fmt_secs(max(every))} (p50 {fmt_secs(statistics.median(every))})",
        "detail": f"process start to first invocation, pre-loaded, 3 runs each: {detail}",
    }


def m_idle10(ctx):
    """Ten idle mappings (4 SQS queues, 3 one-shard Kinesis streams, 3 DynamoDB tables), all
    caught up: resident memory and CPU over 20 s, after 5 s to start and reach every tip."""
    mappings = []
    for _ in range(4):
        mappings.append(sqs_mapping(make_queue(ctx)[1]))
    for _ in range(3):
        mappings.append(kinesis_mapping(make_stream(ctx.kinesis, shards=1)[1]))
    for _ in range(3):
        mappings.append(ddb_mapping(make_table(ctx)[1]))
    with Esmd(ctx, "idle-10-mappings", ctx.moto, 4, mappings) as esmd:
        time.sleep(5)
        esmd.alive()
        cpu0, t0 = esmd.read_usage()[1], time.monotonic()
        time.sleep(20)
        esmd.alive()
        cpu = (esmd.read_usage()[1] - cpu0) / (time.monotonic() - t0)
        with open(f"/proc/{esmd.proc.pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return {
        "cell": f"{rss / 1024:.1f} MB, {cpu * 100:.2f} % of a core",
        "detail": "4 SQS queues (20 s long polls), 3 Kinesis streams of 1 shard (1 GetRecords/s each) "
        "and 3 DynamoDB tables (4 GetRecords/s each, as Lambda), nothing to read: VmRSS and "
        "user+system CPU over 20 s",
    }


def wait_first(ctx, esmd, timeout=30):
    deadline = time.monotonic() + timeout
    with ctx.sink.cond:
        while not ctx.sink.invocations:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"no invocation within {timeout} s")
            esmd.alive()
            ctx.sink.cond.wait(min(left, 0.2))
        return ctx.sink.invocations[0][0]


# ---------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--esmd", required=True)
    parser.add_argument("--moto", required=True)
    parser.add_argument("--moto-pid", type=int, required=True)
    parser.add_argument("--kinesis-local")
    parser.add_argument("--kinesis-local-pid", type=int)
    parser.add_argument("--kinesis-local-missing", default="")
    parser.add_argument("--work", required=True)
    parser.add_argument("--only", help="comma-separated row keys (sqs10,sqs1,window,...): run just those")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    sys.setswitchinterval(0.001)  # the sink's timestamps wait less on the sender's GIL

    ctx = Ctx()
    ctx.esmd, ctx.moto, ctx.work = os.path.abspath(args.esmd), args.moto, args.work
    ctx.kinesis_local = args.kinesis_local
    ctx.moto_pid, ctx.kinesis_local_pid = args.moto_pid, args.kinesis_local_pid
    ctx.extra = {}
    sink = Sink()
    server = start_sink(sink)
    ctx.sink = sink
    ctx.function_url = f"http://127.0.0.1:{server.server_address[1]}/2015-03-31/functions/function/invocations"
    ctx.sqs = client("sqs", ctx.moto)
    ctx.kinesis = client("kinesis", ctx.moto)
    ctx.dynamodb = client("dynamodb", ctx.moto)

    wait_ready("moto", lambda: urllib.request.urlopen(f"{ctx.moto}/moto-api/", timeout=1).read(), args.moto_pid)
    if ctx.kinesis_local:
        kl = client("kinesis", ctx.kinesis_local)
        try:
            wait_ready("kinesis-local", kl.list_streams, args.kinesis_local_pid)
        except RuntimeError as e:
            log(f"kinesis-local: {e}")
            args.kinesis_local_missing = str(e)
            ctx.kinesis_local = None

    rows = [
        ("sqs10", "SQS, batch 10: put -> invoke", lambda: m_sqs_batch10(ctx)),
        ("sqs1", "SQS, one message alone: put -> invoke", lambda: m_sqs_single(ctx)),
        ("window", "SQS, batch 100 + window 1 s, burst of 20", lambda: m_sqs_window(ctx)),
        ("sqsdrain", "SQS drain of 300 messages (moto-bound)", lambda: m_sqs_drain(ctx)),
        ("kin", "Kinesis, 4 shards, batch 100: put -> invoke (idle poll 1 s, default)", lambda: m_kinesis_latency(ctx, None)),
        ("kin100", "Kinesis, same, idle_poll_interval_ms = 100", lambda: m_kinesis_latency(ctx, 100)),
        ("kindrain", "Kinesis drain of 5,000 records (moto)", lambda: m_kinesis_drain(ctx, "moto")),
        ("kindrain_kl", "Kinesis drain of 5,000 records (kinesis-local)", lambda: m_kinesis_drain(ctx, "kinesis-local")),
        ("ddb", "DynamoDB Streams: put -> invoke", lambda: m_ddb_latency(ctx)),
        ("usage", "memory (VmHWM) / CPU for a run", lambda: m_usage(ctx)),
        ("start", "start to first batch", lambda: m_start(ctx)),
        ("idle10", "10 idle mappings: RSS, CPU", lambda: m_idle10(ctx)),
    ]
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted.difference(key for key, _, _ in rows)
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}; rows: {','.join(key for key, _, _ in rows)}")
        rows = [row for row in rows if row[0] in wanted]
    results = []
    for key, title, run in rows:
        log(f"measuring: {title}")
        t0 = time.monotonic()
        if key == "kindrain_kl" and not ctx.kinesis_local:
            result = {"cell": f"n/a ({args.kinesis_local_missing or 'kinesis-local not running'})"}
        else:
            try:
                moto_reset(ctx)
                result = run()
            except Timeout as e:
                result = {"cell": f"n/a (timeout: {e})"}
            except Exception as e:  # a figure is printed, never judged: go on with the next
                traceback.print_exc(file=sys.stderr)
                result = {"cell": f"n/a ({type(e).__name__}: {str(e)[:80]})"}
        log(f"  -> {result['cell']}  ({time.monotonic() - t0:.0f} s)")
        results.append((key, title, result))

    server.shutdown()
    print_table(results)
    return 0


def print_table(results):
    header = ("workload", "serverless-offline", "esmd", "what esmd should do")
    table = [header] + [(title, PEER[key], r["cell"], GOAL[key]) for key, title, r in results]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
    print()
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table[1:]:
        print(line(row))
    print()
    print("Details:")
    for key, title, r in results:
        if r.get("detail"):
            print(f"- {title}: {r['detail']}")
    if Esmd.runs:
        print()
        print("Every esmd process (VmHWM from /proc/PID/status, user+system CPU from /proc/PID/stat, read just before SIGTERM):")
        w = max(len(r[0]) for r in Esmd.runs)
        for label, wall, hwm, cpu in Esmd.runs:
            print(f"  {label.ljust(w)}  wall {wall:6.1f} s  VmHWM {hwm / 1024:5.1f} MB  CPU {cpu:5.2f} s")
    print()
    print(
        "serverless-offline: 12.0.4 with -sqs 8.0.0, -kinesis 6.2.3, -dynamodb-streams 8.0.1, polling moto 5.2.5 "
        "(peers-measured.md). esmd: release build, url target = a Python HTTP server in the driver, moto 5.2.5 "
        "through scripts/moto_server.py; all on this machine."
    )


if __name__ == "__main__":
    sys.exit(main())

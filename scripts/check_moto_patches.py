"""Check the SQS fixes of scripts/moto_server.py against stock moto.

Usage: .venv-emu/bin/python scripts/check_moto_patches.py

Starts stock ``moto_server``, then our launcher, and runs each scenario on both: the bug
must show on stock moto (else this check proves nothing) and not on the launcher.

The duplicate-receive race is only a few bytecodes wide, so both servers get a
``sitecustomize`` that sleeps 50 ms at the start of ``Message.mark_received``: any scan
that runs meanwhile sees the message still visible.
"""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

WIDEN_RACE = """
import time
from moto.sqs.models import Message

_mark_received = Message.mark_received

def mark_received(self, *args, **kwargs):
    time.sleep(0.05)
    return _mark_received(self, *args, **kwargs)

Message.mark_received = mark_received
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(argv, site_dir):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=site_dir)
    proc = subprocess.Popen(
        argv + ["--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{argv} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"{argv} not ready after 30 s")


def client(url):
    return boto3.client(
        "sqs",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def bodies(response):
    return [m["Body"] for m in response.get("Messages", [])]


def check_fifo_order(url, stock):
    """m1..m3 of one group time out together: which comes back first? (AWS: m1)"""
    sqs = client(url)
    q = sqs.create_queue(
        QueueName=f"order-{time.time_ns()}.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]
    for body in ["m1", "m2", "m3"]:
        sqs.send_message(QueueUrl=q, MessageBody=body, MessageGroupId="g")
    first = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, VisibilityTimeout=1)
    assert bodies(first) == ["m1", "m2", "m3"], bodies(first)
    time.sleep(1.5)
    again = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=1, VisibilityTimeout=30)
    if stock:
        assert bodies(again) == ["m3"], f"stock moto no longer shows the bug: {again}"
        return "redelivered m3 first"
    assert bodies(again) == ["m1"], f"expected m1 first, got {bodies(again)}"
    # The group stays locked while m1 is in flight, then goes on in order.
    locked = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10)
    assert bodies(locked) == [], f"group not locked: {bodies(locked)}"
    sqs.delete_message(QueueUrl=q, ReceiptHandle=again["Messages"][0]["ReceiptHandle"])
    rest = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10)
    assert bodies(rest) == ["m2", "m3"], f"expected m2, m3, got {bodies(rest)}"
    return "m1 first, group stays locked, then m2, m3"


def check_duplicates(url, stock):
    """Four long polls wait; one message arrives: how many receive it? (AWS: one)"""
    sqs = client(url)
    q = sqs.create_queue(QueueName=f"dup-{time.time_ns()}")["QueueUrl"]
    got = Counter()
    lock = threading.Lock()

    def poll():
        c = client(url)
        r = c.receive_message(QueueUrl=q, WaitTimeSeconds=3, VisibilityTimeout=30)
        with lock:
            got.update(bodies(r))

    threads = [threading.Thread(target=poll) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    sent = time.monotonic()
    sqs.send_message(QueueUrl=q, MessageBody="once")
    for t in threads:
        t.join()
    elapsed = time.monotonic() - sent
    if stock:
        assert got["once"] > 1, f"stock moto no longer shows the bug: {dict(got)}"
        return f"{got['once']} receivers got the message"
    assert got["once"] == 1, f"received {got['once']} times"
    # The long polls wait concurrently: all four end within one WaitTimeSeconds.
    assert elapsed < 4, f"long polls took {elapsed:.1f} s: serialized?"
    return f"1 receiver got the message, polls ended after {elapsed:.1f} s"


def main():
    with tempfile.TemporaryDirectory() as site_dir:
        Path(site_dir, "sitecustomize.py").write_text(WIDEN_RACE)
        servers = {
            "stock moto_server": ([str(BIN / "moto_server")], True),
            "scripts/moto_server.py": (
                [sys.executable, str(ROOT / "scripts" / "moto_server.py")],
                False,
            ),
        }
        failed = 0
        for name, (argv, stock) in servers.items():
            proc, url = start_server(argv, site_dir)
            try:
                for check in (check_fifo_order, check_duplicates):
                    try:
                        outcome = f"ok: {check(url, stock)}"
                    except AssertionError as e:
                        failed += 1
                        outcome = f"FAILED: {e}"
                    print(f"{name:24} {check.__name__:18} {outcome}")
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""Run moto's server (like ``moto_server``) with two SQS bugs of moto 5.2.5 fixed.

Usage: python scripts/moto_server.py --port N [--host 127.0.0.1] [--parent-pid PID]

``--parent-pid PID`` makes the server exit once its parent is no longer PID, i.e. the
process that started it is gone (the test harness passes its own pid, so a killed test
run leaves no server behind).

Patched: ``moto.sqs.models.SQSBackend.receive_message`` (plus a lock around
``delete_message`` and ``change_message_visibility``).

1. FIFO group order. Stock moto computes the locked groups from ``pending_messages``,
   which still holds messages whose visibility timeout has run out; it only drops them one
   by one during the scan. When m1, m2, m3 of one group time out together, m1 and m2 are
   skipped (m2, m3 still "pending") and m3 is delivered first. AWS keeps group order. Fix:
   before each scan, drop timed-out messages from ``pending_messages``, so the locked groups
   are those of messages still actually in flight.

2. Duplicate delivery. The scan (check visible, mark received) is not atomic across
   request threads, so two concurrent long polls woken by one send can both receive the
   same message. Fix: run each scan under one process-wide lock, as a single non-waiting
   pass of stock ``receive_message``; the long-poll wait happens outside the lock, so
   concurrent long polls still work. Deletes, visibility changes and queue attribute
   reads take the same lock, as they edit or count what the scan reads.

3. Queue depth. Stock moto counts visible and not visible messages in two passes, each
   reading the clock again, so a message whose visibility timeout ends between them is in
   neither count and a queue holding one in-flight message can read as empty. Fix: "not
   visible" is every message that the visible count left out.

While waiting, a long poll rescans every 0.25 s (stock: 1 s), so messages whose visibility
timeout expires are picked up promptly, and it sleeps instead of spinning while visible
messages are held back by an in-flight FIFO group.

``scripts/check_moto_patches.py`` reproduces both bugs on stock moto and checks the fixes.
"""

import functools
import os
import sys
import threading
import time

from moto.server import main as moto_server_main
from moto.sqs.models import Queue, SQSBackend

RESCAN_SECONDS = 0.25

_scan_lock = threading.RLock()  # re-entrant: a DLQ move can trigger a nested receive
_stock_receive_message = SQSBackend.receive_message


def _receive_message(
    self,
    queue_name,
    count,
    wait_seconds_timeout,
    visibility_timeout,
    message_attribute_names=None,
):
    queue = self.get_queue(queue_name)
    polling_end = time.monotonic() + wait_seconds_timeout
    while True:
        with _scan_lock:
            for message in list(queue.pending_messages):
                if message.visible:
                    queue.pending_messages.discard(message)
            result = _stock_receive_message(
                self,
                queue_name,
                count,
                0,
                visibility_timeout,
                message_attribute_names,
            )
        remaining = polling_end - time.monotonic()
        if result or remaining <= 0:
            return result
        if queue.messages:  # visible, but its FIFO group is in flight
            time.sleep(min(RESCAN_SECONDS, remaining))
        else:
            queue.wait_for_messages(min(RESCAN_SECONDS, remaining))


def _not_visible_messages(queue):
    """Every message not counted as visible: the two counts always add up."""
    return len(queue._messages) - queue.approximate_number_of_messages


def _locked(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with _scan_lock:
            return method(*args, **kwargs)

    return wrapper


def apply_patches():
    """Patch moto's SQS backend in this process (idempotent)."""
    if SQSBackend.receive_message is _receive_message:
        return
    SQSBackend.receive_message = _receive_message
    SQSBackend.delete_message = _locked(SQSBackend.delete_message)
    SQSBackend.change_message_visibility = _locked(
        SQSBackend.change_message_visibility
    )
    SQSBackend.get_queue_attributes = _locked(SQSBackend.get_queue_attributes)
    Queue.approximate_number_of_messages_not_visible = property(
        _not_visible_messages
    )


def exit_with_parent(parent):
    """Exit as soon as our parent is no longer ``parent`` (it died; we were re-parented)."""

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--parent-pid" in args:
        i = args.index("--parent-pid")
        exit_with_parent(int(args[i + 1]))
        del args[i : i + 2]
    apply_patches()
    moto_server_main(args)

"""moto's server for the tests and the benchmarks, in a process of its own.

Its own process: inside the test process, moto's request handling (pure Python, in threads) shares
one interpreter lock with the observers under test. Under three replicas' load a DynamoDB call then
took 0.48 s (median; 0.1-0.2 s in a process of its own), longer than the reorder window can absorb.

Two changes to moto, for fidelity where the tests and benchmarks depend on it:

DynamoDB gets the per-item atomicity the real one has. moto checks a condition and applies an update
without a lock, so two threads of its server can both create the same new item (one write is lost) or
both pass a version condition. DynamoDB serialises the writes of an item; one lock over moto's item
operations does too (coarser, but the tables are small). The observer's conditional writes are what
the tests check; without this they would check moto's race instead. SQS gets one lock over receiving,
deleting and changing visibility for the same reason: without it, two concurrent receives could hand
one message to both, and the delete with the older receipt handle left it to come back later, which
real SQS does only rarely.

SQS without its O(n) work inside SendMessage and ReceiveMessage. moto 5.2.5 reads `Queue.attributes`
inside send_message (for one flag) and, per message considered, inside receive_message (for the
retention period). Each read computes the queue-wide counts over every message in the queue, so
queueing and draining a 10,000-message backlog costs O(n^2) and minutes of moto's CPU: the benchmark
would measure moto. During those two calls only, the three counts (which neither reads) answer 0.
GetQueueAttributes from a client, and everything else, is unchanged.

    python tests/moto_server.py -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main
from moto.sqs import models

_inside = threading.local()
_COUNTS = (
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
    "approximate_number_of_messages",
)


def _count(original: Any) -> property:
    def get(self: Any) -> int:
        if getattr(_inside, "on", False):
            return 0
        value: int = original.fget(self)
        return value

    return property(get)


def _without_counts(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        _inside.on = True
        try:
            return method(self, *args, **kwargs)
        finally:
            _inside.on = False

    return call


for _name in _COUNTS:
    setattr(models.Queue, _name, _count(vars(models.Queue)[_name]))
models.SQSBackend.send_message = _without_counts(models.SQSBackend.send_message)  # type: ignore[method-assign]
models.SQSBackend.receive_message = _without_counts(models.SQSBackend.receive_message)  # type: ignore[method-assign]


def _atomic(method: Callable[..., Any], lock: threading.RLock) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    return call


_ITEMS = threading.RLock()
for _name in ("put_item", "get_item", "update_item", "delete_item", "transact_write_items"):
    setattr(DynamoDBBackend, _name, _atomic(getattr(DynamoDBBackend, _name), _ITEMS))

_MESSAGES = threading.RLock()
for _name in ("delete_message", "delete_message_batch", "change_message_visibility", "change_message_visibility_batch"):
    setattr(models.SQSBackend, _name, _atomic(getattr(models.SQSBackend, _name), _MESSAGES))
_receive = models.SQSBackend.receive_message


def _receive_atomically(
    self: Any,
    queue_name: str,
    count: int,
    wait_seconds_timeout: int,
    visibility_timeout: int,
    message_attribute_names: list[str] | None = None,
) -> Any:
    """moto's receive, one at a time, with the long poll's waiting done outside the lock."""
    deadline = time.monotonic() + wait_seconds_timeout
    while True:
        with _MESSAGES:
            found = _receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


models.SQSBackend.receive_message = _receive_atomically  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])

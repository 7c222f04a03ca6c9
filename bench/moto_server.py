"""moto's server for the benchmarks, without its O(n) work inside SendMessage and ReceiveMessage.

moto 5.2.5 reads `Queue.attributes` inside send_message (for one flag) and, per
message considered, inside receive_message (for the retention period). Each
read computes the queue-wide counts over every message in the queue, so
queueing and draining a 10,000-message backlog costs O(n^2) and minutes of
moto's CPU: the benchmark would measure moto. During those two calls only,
the three counts (which neither reads) answer 0. GetQueueAttributes from a
client, and everything else, is unchanged.

    python bench/moto_server.py -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

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

if __name__ == "__main__":
    main(sys.argv[1:])

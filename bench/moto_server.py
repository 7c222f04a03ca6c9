"""moto's server for the benchmarks, with one cost removed from SendMessage.

moto 5.2.5's send_message reads one flag through `Queue.attributes`, which
computes every queue-wide count over all messages in the queue: queueing a
10,000-message backlog costs O(n^2) in moto and takes minutes. During
send_message only, `attributes` answers just that flag. GetQueueAttributes and
everything else the observer calls are unchanged.

    python bench/moto_server.py -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from moto.server import main
from moto.sqs import models

_sending = threading.local()
_attributes: Any = vars(models.Queue)["attributes"].fget
_send_message = models.SQSBackend.send_message


def _light_attributes(self: Any) -> dict[str, Any]:
    if getattr(_sending, "on", False):
        return {"ContentBasedDeduplication": str(getattr(self, "content_based_deduplication", False)).lower()}
    answer: dict[str, Any] = _attributes(self)
    return answer


def _send(self: Any, *args: Any, **kwargs: Any) -> Any:
    _sending.on = True
    try:
        return _send_message(self, *args, **kwargs)
    finally:
        _sending.on = False


models.Queue.attributes = property(_light_attributes)  # type: ignore[assignment,method-assign]
models.SQSBackend.send_message = _send  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])

"""Logs as JSON lines (one object per line, CloudWatch-friendly) or plain text for people; either way
without credentials in URLs, whatever a message or a traceback holds."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

import stamina.instrumentation

from ..support.redact import redact

__all__ = ["configure_logging"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr if fmt == "text" else sys.stdout)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    # Our backoff tells each retry to its hooks, which log outages in our words: stamina's own bare
    # `stamina.retry_scheduled` lines (and its counters in the default Prometheus registry) would repeat them.
    stamina.instrumentation.set_on_retry_hooks([])
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("ecs_observer").setLevel(level)

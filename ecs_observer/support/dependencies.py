"""Which services answer: per dependency, when it last answered and its last error, and each outage logged
twice, when it starts and when it ends, whatever the number of calls and routes that fail meanwhile."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .redact import redact

__all__ = ["DEPENDENCIES", "NEEDED", "Dependencies", "Dependency", "dependency_of"]

log = logging.getLogger("ecs_observer")

Dependency = Literal["SQS", "ECS", "Prefect", "state table", "CloudWatch Logs"]
DEPENDENCIES: tuple[Dependency, ...] = ("SQS", "ECS", "Prefect", "state table", "CloudWatch Logs")
# Without these nothing is forwarded; crash logs are best-effort, so CloudWatch Logs alone never makes it unhealthy.
NEEDED: frozenset[Dependency] = frozenset({"SQS", "ECS", "Prefect", "state table"})

# Each retry cause (the label a call site gives `Backoff.call`) is a call to one dependency.
_CAUSES: Mapping[str, Dependency] = {
    "receive": "SQS",
    "delete": "SQS",
    "change_visibility": "SQS",
    "describe_tasks": "ECS",
    "deregister": "ECS",
    "stop_task": "ECS",
    "prefect_api": "Prefect",
    "dynamodb": "state table",
    "crash_logs": "CloudWatch Logs",
}


def dependency_of(cause: str) -> Dependency | None:
    return _CAUSES.get(cause)


@dataclass
class _State:
    answered_at: float | None = None  # wall clock, for people
    error: str | None = None  # the last error, kept after recovery
    error_at: float | None = None
    failing_since: float | None = None  # monotonic; None: answering (or never called)
    failures: int = 0  # failed calls in the current outage


@dataclass
class Dependencies:
    """Per instance (no module state); `clock` and `wall` are for tests."""

    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _states: dict[Dependency, _State] = field(default_factory=lambda: {name: _State() for name in DEPENDENCIES})

    def answered(self, name: Dependency) -> None:
        state = self._states[name]
        state.answered_at = self.wall()
        if state.failing_since is not None:
            log.info(
                "%s answers again, after %.0f s and %d failed call(s)",
                name,
                self.clock() - state.failing_since,
                state.failures,
            )
            state.failing_since = None
            state.failures = 0

    def failed(self, name: Dependency, error: str, *, level: int = logging.WARNING) -> None:
        """A failed call, to be retried: the first of an outage is logged, the others only counted."""
        state = self._states[name]
        state.error, state.error_at = redact(error), self.wall()
        state.failures += 1
        if state.failing_since is None:
            state.failing_since = self.clock()
            log.log(level, "%s is failing: %s (retrying; logged once until it answers again)", name, state.error)

    def failing_for(self, name: Dependency) -> float:
        """Seconds since the current outage of `name` began; 0 while it answers."""
        since = self._states[name].failing_since
        return 0.0 if since is None else self.clock() - since

    def report(self) -> dict[str, dict[str, Any]]:
        """For /healthz: each dependency called so far, when it last answered and its last error."""
        return {
            name: {
                "answering": state.failing_since is None,
                "last_answer": _iso(state.answered_at),
                "last_error": state.error,
                "last_error_at": _iso(state.error_at),
                "failing_for_seconds": round(self.failing_for(name), 1),
            }
            for name, state in self._states.items()
            if state.answered_at is not None or state.error is not None
        }


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))

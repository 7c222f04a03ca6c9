"""What the observer has done, counted per instance (no module-level state).

The same numbers feed the log summaries and, read at scrape time, `/metrics`.
Only counts: what the pipeline decides by (the in-flight bound) it keeps itself.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, fields

from prometheus_client import Histogram

from ..core.run_states import ProposalAnswer
from .backoff import Answered, Retrying
from .dependencies import Dependencies, dependency_of

__all__ = ["Stats"]

log = logging.getLogger("ecs_observer.retry")

# Seconds from the EventBridge event's `time` to acceptance by Prefect.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, float("inf"))


def _latency() -> Histogram:
    return Histogram(
        "ecs_observer_forward_latency_seconds",
        "Seconds from the EventBridge event's time to acceptance by the Prefect API",
        registry=None,
        buckets=_LATENCY_BUCKETS,
    )


@dataclass
class Stats:
    received: int = 0
    batches_received: int = 0  # receives that returned messages
    forwarded: int = 0  # events accepted by the Prefect API
    filtered: int = 0  # state changes of tasks that are not Prefect's
    ignored: int = 0  # messages that are not ECS task state changes
    deduplicated: int = 0  # a task's version already forwarded under another event id
    rejected: int = 0  # messages that cannot be processed, left for the dead-letter queue
    invalid_events: int = 0  # events the Prefect API refused as invalid (422)
    deleted: int = 0
    describe_calls: int = 0
    described_tasks: int = 0  # tasks ECS described (not MISSING, not failed, not in a failed call)
    tag_cache_hits: int = 0
    shared_tag_hits: int = 0  # tags another replica described, read from the shared task state
    run_logs: int = 0  # flow-run log posts (diagnoses, crash logs)
    deregistered: int = 0  # task definitions deregistered
    reschedules: int = 0  # runs rescheduled (AwaitingRetry accepted) after a transient start failure
    sweeps: int = 0  # sweeps done (this replica held the lease)
    sweep_failures: int = 0  # sweeps that could not finish (Prefect or ECS unanswered); the next one tries again
    sqs_calls: Counter[str] = field(default_factory=Counter)  # by API: ReceiveMessage, DeleteMessageBatch, ...
    retries: Counter[str] = field(default_factory=Counter)  # by cause: receive, delete, describe_tasks, prefect_api
    sink_errors: Counter[str] = field(default_factory=Counter)  # by HTTP status, or "connection"
    state_proposals: Counter[ProposalAnswer] = field(default_factory=Counter)  # by Prefect's answer
    reconciled: Counter[str] = field(default_factory=Counter)  # runs a sweep judged, by outcome
    tasks_stopped: Counter[str] = field(default_factory=Counter)  # StopTask calls, by why: cancelled, orphan, ...
    dynamodb_calls: Counter[str] = field(default_factory=Counter)  # by API, for the shared task state
    # Estimated capacity units, "read" and "write": one per item read (strongly consistent, under 4 KB)
    # and one per write, the request count DynamoDB on-demand bills.
    dynamodb_units: Counter[str] = field(default_factory=Counter)
    forward_latency: Histogram = field(default_factory=_latency)
    # Looked up at each Stats(), not bound at import: the simulation's virtual clock replaces `time` here.
    last_sqs_success: float = field(default_factory=lambda: time.monotonic())
    dependencies: Dependencies = field(default_factory=Dependencies)

    def called(self, outcome: Retrying | Answered) -> None:
        """The backoff hook: every retry of every I/O part is counted here, by its cause, and every
        retry and answer tells the dependency called whether it answers (which logs its outages)."""
        name = dependency_of(outcome.cause)
        if isinstance(outcome, Answered):
            if name is not None:
                self.dependencies.answered(name)
            return
        self.retries[outcome.cause] += 1
        error = str(outcome.error)
        if outcome.what is not None:
            error = f"{outcome.what} failed: {error}"
        if name is not None and not outcome.answered:
            self.dependencies.failed(name, error, level=getattr(outcome.error, "level", logging.WARNING))
        else:  # an answer to ask again about, or a call to no known dependency: each retry is news
            log.warning("%s; retrying (attempt %d)", error, outcome.attempt)

    def sqs_succeeded(self) -> None:
        self.last_sqs_success = time.monotonic()
        self.dependencies.answered("SQS")

    def counts(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type in ("int", int)}

    def summary(self, **gauges: int) -> str:
        """The counts, then `gauges` (what the pipeline holds now, e.g. `in_flight`)."""
        text = ", ".join(f"{key}={value}" for key, value in {**self.counts(), **gauges}.items())
        if self.retries:
            text += ", retries=" + "/".join(f"{cause}:{n}" for cause, n in sorted(self.retries.items()))
        return text

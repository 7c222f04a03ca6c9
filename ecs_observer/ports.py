"""The ports: the small interfaces the pipeline needs from the outside world.

The pipeline is written against these alone; `adapters/` implements them
(SQS, ECS, DynamoDB, the Prefect API, memory), and the application shell
plugs one into the other. A test or a benchmark plugs in its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol
from uuid import UUID

from .core.chain import Link
from .core.run_states import LogSource, Proposal, ProposalAnswer, RunLog, RunState
from .core.sweep import RunToReconcile
from .core.task_record import TaskRecord, TaskTags
from .core.task_view import DescribeFailure, TaskView

__all__ = [
    "Claim",
    "ContainerLogs",
    "DescribeFailure",
    "EncodedEvent",
    "EventSink",
    "FlowRuns",
    "Message",
    "MessageQueue",
    "TaskDefinitions",
    "TaskDescriber",
    "TaskStateStore",
    "TaskStopper",
    "TaskView",
]


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


class MessageQueue(Protocol):
    """The queue the observer drains. Batch calls answer the ids of the entries that failed."""

    async def receive(self, max_messages: int, wait_seconds: int, visibility_timeout: int) -> list[Message]: ...

    async def delete(self, messages: Sequence[Message]) -> dict[str, str]: ...

    async def change_visibility(self, messages: Sequence[Message], visibility: int) -> dict[str, str]: ...


class TaskDescriber(Protocol):
    """ECS `DescribeTasks(include=["TAGS"])` for up to 100 tasks of one cluster.

    Answers per task ARN: what ECS shows of it (status, stop, containers, version, all its tags), None
    for a task ECS does not know (MISSING: gone, or not yet visible right after RunTask), or ECS's
    failure for it; raises on an error of the whole call, which the caller retries.
    """

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, TaskView | DescribeFailure | None]: ...


class TaskStopper(Protocol):
    async def stop(self, region: str, cluster: str, task_arn: str, reason: str) -> None:
        """ECS `StopTask` with this reason (ECS keeps it as the task's `stoppedReason`); a task that has
        stopped already counts as done. Raises on errors."""
        ...


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    id: UUID
    json: bytes


class EventSink(Protocol):
    """Delivers events; answers the ids of the events refused as invalid, all others being accepted."""

    async def send(self, events: Sequence[EncodedEvent]) -> dict[UUID, str]: ...

    async def aclose(self) -> None: ...


class FlowRuns(Protocol):
    """Prefect's flow runs: read their states, propose new ones, write their logs.

    Each call returns only once Prefect has answered it (retrying outages itself).
    """

    async def states(self, run_ids: Collection[UUID]) -> Mapping[UUID, RunState]:
        """The current state of each run; a run Prefect does not know is left out."""
        ...

    async def propose(self, run_id: UUID, proposal: Proposal) -> ProposalAnswer:
        """Prefect's answer (`run_states.ProposalAnswer`), once it is not WAIT or has been WAIT a few times."""
        ...

    async def log(self, logs: Sequence[RunLog]) -> None: ...

    def to_reconcile(
        self, final_since: datetime | None, final_types: Collection[str]
    ) -> AsyncIterator[list[RunToReconcile]]:
        """The runs a sweep holds against their tasks, a page at a time: every run Pending, Running or
        Cancelling, and those of `final_types` (CANCELLED, COMPLETED, ...) that became so after `final_since`."""
        ...

    async def reschedules(self, run_id: UUID) -> int:
        """How many AwaitingRetry states of ours (`run_states.RESCHEDULE_MARK`) the run's history holds."""
        ...


class TaskDefinitions(Protocol):
    """ECS task definitions: where a container logs, and deregistration. Raise on errors."""

    async def log_source(self, arn: str, container: str) -> LogSource | None:
        """The `awslogs` configuration of the container of that name, else of the definition's only one;
        None when it does not log with `awslogs`."""
        ...

    async def deregister(self, arn: str) -> None:
        """Deregister it; one already inactive counts as done."""
        ...


class ContainerLogs(Protocol):
    async def tail(self, source: LogSource, task_id: str, lines: int) -> list[tuple[datetime, str]] | None:
        """The last `lines` lines of the task's container, oldest first; None when its stream does not exist."""
        ...


Claim = Literal["mine", "busy", "done"]


class TaskStateStore(Protocol):
    """Calls retry errors themselves (the message waits); they raise only when cancelled.

    `poll_interval`: how often to look for what other replicas write (0: nobody else writes).
    """

    poll_interval: float

    async def load(self, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        """The records of these tasks, in one round trip; tasks never seen are left out."""
        ...

    async def claim(self, task_arn: str, seconds: float) -> bool:
        """True when this replica is to describe the task: no tags are known and no other replica
        holds an unexpired claim. A replica that dies holding a claim delays the task by `seconds`."""
        ...

    async def save_tags(self, task_arn: str, tags: TaskTags, expires: datetime) -> None: ...

    async def record(self, task_arn: str, link: Link, expires: datetime) -> Link:
        """Keep `link` unless a link with its event id, or its version, is kept already; answer the kept
        one, so that a redelivered change, on any replica, gets the `follows` it was forwarded with, and
        the same change under another id is seen to be a duplicate. A `pending` link holds the change's
        place (its successors can follow it) until `settle` decides its `follows`."""
        ...

    async def settle(self, task_arn: str, link: Link, expires: datetime) -> Link:
        """Decide the `follows` of a change recorded as pending: the first to settle it wins, on any
        replica; answer the kept link (recorded as `link` if it is not there at all)."""
        ...

    async def once(self, task_arn: str, what: str, owner: UUID, expires: datetime, lease: float) -> Claim:
        """Whether `owner` (a change's event id) is to do `what` for the task: "mine" for the first to
        ask, and for whoever asks after a claim has lapsed (`lease` seconds: its holder died); "busy"
        while another holds it; "done" once `done` was called. So `what` is done once per task across
        duplicates, redeliveries and replicas, and at least once."""
        ...

    async def done(self, task_arn: str, what: str, expires: datetime) -> None:
        """`what` is done for the task: `once` answers "done" from now on, to every change."""
        ...

    async def lease(self, name: str, owner: UUID, seconds: float) -> bool:
        """Whether `owner` holds the lease `name` (the sweep's) for the next `seconds`: taken when free or
        lapsed, renewed by its holder. One process alone always holds it."""
        ...

"""What the observer remembers per task, behind one interface: in this process, or shared by replicas.

Per task ARN: its Prefect tags (or "not Prefect's", or "ECS no longer knows it"),
and the state changes already forwarded, which later ones `follow`. The memory
store serves one replica; `_dynamo_state.DynamoTaskState` lets several replicas
on one queue share it, so that they chain `follows` and describe each task once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Protocol

from cachetools import LRUCache

from ._chain import Link, add_link, known_link

__all__ = [
    "GONE",
    "NO_TAGS",
    "MemoryTaskState",
    "TaskRecord",
    "TaskStateStore",
    "TaskTags",
    "expires_after",
]

# How long a task's state is kept after its last change: hours once it has stopped
# (late redeliveries and the DLQ redrive still find it), days while it may still change.
STOPPED_RETENTION = timedelta(hours=6)
ACTIVE_RETENTION = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class TaskTags:
    """The Prefect tags of a task; `described` is False when ECS no longer knows the task."""

    tags: Mapping[str, str]
    described: bool = True


NO_TAGS = TaskTags(MappingProxyType({}))
GONE = TaskTags(MappingProxyType({}), described=False)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task's shared state. `tags` is None until some replica has described the task;
    `claimed_until` (epoch seconds) is when another replica's claim to describe it lapses."""

    tags: TaskTags | None = None
    links: tuple[Link, ...] = ()
    claimed_until: float = 0.0


EMPTY = TaskRecord()


def expires_after(status: str, occurred: datetime) -> datetime:
    """When a task's state may be forgotten, counted from the change that wrote it."""
    return occurred + (STOPPED_RETENTION if status == "STOPPED" else ACTIVE_RETENTION)


class TaskStateStore(Protocol):
    """Calls retry errors themselves (the message waits); they raise only when cancelled."""

    async def load(self, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        """The records of these tasks, in one round trip; tasks never seen are left out."""
        ...

    async def claim(self, task_arn: str, seconds: float) -> bool:
        """True when this replica is to describe the task: no tags are known and no other replica
        holds an unexpired claim. A replica that dies holding a claim delays the task by `seconds`."""
        ...

    async def save_tags(self, task_arn: str, tags: TaskTags, expires: datetime) -> None: ...

    async def record(self, task_arn: str, link: Link, expires: datetime) -> Link:
        """Keep `link` unless a link with its event id is kept already; answer the kept one, so that
        a redelivered change, on any replica, gets the `follows` it was forwarded with."""
        ...


class MemoryTaskState:
    """The single-replica store: bounded, least recently used tasks go first."""

    def __init__(self, max_tasks: int) -> None:
        self._tasks: LRUCache[str, TaskRecord] = LRUCache(maxsize=max_tasks)

    async def load(self, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        return {arn: record for arn in task_arns if (record := self._tasks.get(arn)) is not None}

    async def claim(self, task_arn: str, seconds: float) -> bool:
        # One process: its tag lookup already describes each task once.
        return True

    async def save_tags(self, task_arn: str, tags: TaskTags, expires: datetime) -> None:
        self._tasks[task_arn] = replace(self._tasks.get(task_arn, EMPTY), tags=tags)

    async def record(self, task_arn: str, link: Link, expires: datetime) -> Link:
        current = self._tasks.get(task_arn, EMPTY)
        if (kept := known_link(current.links, link.event_id)) is not None:
            return kept
        self._tasks[task_arn] = replace(current, links=add_link(current.links, link))
        return link

    def __len__(self) -> int:
        return len(self._tasks)

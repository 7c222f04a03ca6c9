"""What the observer remembers per task, behind one interface: in this process, or shared by replicas.

Per task ARN: its Prefect tags (or "not Prefect's", or "ECS no longer knows it"),
and the state changes already forwarded, which later ones `follow`. The memory
store serves one replica; `_dynamo_state.DynamoTaskState` lets several replicas
on one queue share it, so that they chain `follows` and describe each task once.
"""

from __future__ import annotations

import asyncio
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
    "StateWatch",
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
        """Keep `link` unless a link with its event id is kept already; answer the kept one, so that
        a redelivered change, on any replica, gets the `follows` it was forwarded with."""
        ...


class MemoryTaskState:
    """The single-replica store: bounded, least recently used tasks go first."""

    poll_interval = 0.0

    def __init__(self, max_tasks: int) -> None:
        self._tasks: LRUCache[str, TaskRecord] = LRUCache(maxsize=max_tasks)

    async def load(self, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        return {arn: record for arn in task_arns if (record := self._tasks.get(arn)) is not None}

    async def claim(self, task_arn: str, seconds: float) -> bool:
        # One process: its tag lookup already describes each task once.
        return True

    async def save_tags(self, task_arn: str, tags: TaskTags, expires: datetime) -> None:
        # "Not Prefect's" is left to the tag lookup's own cache: in one process, keeping it here too
        # would double the memory held for the most numerous tasks.
        if tags.tags:
            self._tasks[task_arn] = replace(self._tasks.get(task_arn, EMPTY), tags=tags)

    async def record(self, task_arn: str, link: Link, expires: datetime) -> Link:
        current = self._tasks.get(task_arn, EMPTY)
        if (kept := known_link(current.links, link.event_id)) is not None:
            return kept
        self._tasks[task_arn] = replace(current, links=add_link(current.links, link))
        return link

    def __len__(self) -> int:
        return len(self._tasks)


class StateWatch:
    """Fresh records of the tasks that wait on other replicas (for tags being described, or for a
    predecessor): one load per poll interval serves all of them, however many wait."""

    def __init__(self, store: TaskStateStore, max_per_load: int = 100) -> None:
        self._store = store
        self._max = max_per_load
        self._waiting: dict[str, asyncio.Future[TaskRecord | None]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def next(self, task_arn: str) -> TaskRecord | None:
        """The task's record as read after this call (None: never seen)."""
        if self._store.poll_interval <= 0:
            return (await self._store.load([task_arn])).get(task_arn)
        future = self._waiting.get(task_arn)
        if future is None:
            future = self._waiting[task_arn] = asyncio.get_running_loop().create_future()
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        return await asyncio.shield(future)

    async def _poll(self) -> None:
        while self._waiting:
            await asyncio.sleep(self._store.poll_interval)
            arns = list(self._waiting)[: self._max]
            found = await self._store.load(arns)
            for arn in arns:
                future = self._waiting.pop(arn)
                if not future.done():
                    future.set_result(found.get(arn))

    async def close(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

"""The single-replica task-state store: in this process's memory, bounded."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from cachetools import LRUCache

from ..core.chain import Link, add_link, kept_link
from ..core.task_record import DONE, EMPTY, TaskRecord, TaskTags

__all__ = ["MemoryTaskState"]


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
        if (kept := kept_link(current.links, link.event_id, link.version)) is not None:
            return kept
        self._tasks[task_arn] = replace(current, links=add_link(current.links, link))
        return link

    async def once(self, task_arn: str, what: str, owner: UUID, expires: datetime) -> bool:
        current = self._tasks.get(task_arn, EMPTY)
        held = dict(current.owners).get(what)
        if held is None:
            self._tasks[task_arn] = replace(current, owners=(*current.owners, (what, owner)))
        return held in (None, owner)

    async def done(self, task_arn: str, what: str, expires: datetime) -> None:
        current = self._tasks.get(task_arn, EMPTY)
        owners = tuple((w, o) for w, o in current.owners if w != what)
        self._tasks[task_arn] = replace(current, owners=(*owners, (what, DONE)))

    def __len__(self) -> int:
        return len(self._tasks)

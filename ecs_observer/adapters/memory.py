"""The single-replica task-state store: in this process's memory, bounded."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from cachetools import LRUCache

from ..core.chain import Link, add_link, kept_link
from ..core.task_record import DONE, EMPTY, TaskRecord, TaskTags
from ..ports import Claim

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

    async def settle(self, task_arn: str, link: Link, expires: datetime) -> Link:
        current = self._tasks.get(task_arn, EMPTY)
        kept = kept_link(current.links, link.event_id, link.version)
        if kept is not None and not (kept.pending and kept.event_id == link.event_id):
            return kept
        self._tasks[task_arn] = replace(current, links=add_link(current.links, link))
        return link

    async def once(self, task_arn: str, what: str, owner: UUID, expires: datetime, lease: float) -> Claim:
        current = self._tasks.get(task_arn, EMPTY)
        held = next((claim for claim in current.claims if claim[0] == what), None)
        if held is not None and held[1] == DONE:
            return "done"
        now = time.time()
        if held is not None and held[2] > now:
            return "busy"
        others = tuple(claim for claim in current.claims if claim[0] != what)
        self._tasks[task_arn] = replace(current, claims=(*others, (what, owner, now + lease)))
        return "mine"

    async def done(self, task_arn: str, what: str, expires: datetime) -> None:
        current = self._tasks.get(task_arn, EMPTY)
        others = tuple(claim for claim in current.claims if claim[0] != what)
        self._tasks[task_arn] = replace(current, claims=(*others, (what, DONE, 0.0)))

    async def lease(self, name: str, owner: UUID, seconds: float) -> bool:
        return True  # one process: nobody else sweeps

    def __len__(self) -> int:
        return len(self._tasks)

"""Decides each event's `follows`, holding back a state change whose predecessor may still be in flight.

SQS does not keep order. A change whose version N-1 has not been seen waits up
to the reorder window for it, so that an out-of-order arrival gets the same
`follows` as an in-order one; a change whose predecessor is known goes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

from cachetools import LRUCache

from ._chain import Link, add_link, awaits_predecessor, choose_follows, known_link
from ._ecs_event import TaskStateChange

__all__ = ["ChainStore", "MemoryChainStore", "Sequencer"]


class ChainStore(Protocol):
    """Where the recent state changes of each task are kept (in memory, or shared by replicas)."""

    async def history(self, task_arn: str) -> Sequence[Link]: ...

    async def record(self, task_arn: str, link: Link) -> None: ...


class MemoryChainStore:
    """The single-replica store: bounded, least recently used tasks go first."""

    def __init__(self, max_tasks: int) -> None:
        self._tasks: LRUCache[str, tuple[Link, ...]] = LRUCache(maxsize=max_tasks)

    async def history(self, task_arn: str) -> Sequence[Link]:
        return self._tasks.get(task_arn, ())

    async def record(self, task_arn: str, link: Link) -> None:
        self._tasks[task_arn] = add_link(self._tasks.get(task_arn, ()), link)

    def __len__(self) -> int:
        return len(self._tasks)


class Sequencer:
    def __init__(self, store: ChainStore, reorder_window: float) -> None:
        self._store = store
        self._window = reorder_window
        # One condition per task with events in flight; removed when its last user leaves.
        self._tasks: dict[str, tuple[asyncio.Condition, list[int]]] = {}

    async def follows(self, change: TaskStateChange) -> UUID | None:
        """Decide and record the `follows` of this change; identical for a redelivered one."""
        condition, users = self._tasks.setdefault(change.task_arn, (asyncio.Condition(), [0]))
        users[0] += 1
        try:
            async with condition:
                return await self._decide(condition, change)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._tasks[change.task_arn]

    async def _decide(self, condition: asyncio.Condition, change: TaskStateChange) -> UUID | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window
        while True:
            history = await self._store.history(change.task_arn)
            if (seen := known_link(history, change.event_id)) is not None:
                return seen.follows
            remaining = deadline - loop.time()
            if remaining <= 0 or not awaits_predecessor(history, change.version):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(condition.wait(), remaining)
        follows = choose_follows(history, change.event_id, change.version, change.occurred)
        await self._store.record(change.task_arn, Link(change.event_id, change.version, change.occurred, follows))
        condition.notify_all()
        return follows

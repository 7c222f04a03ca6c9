"""Decides each event's `follows`, holding back a state change whose predecessor may still be in flight.

SQS does not keep order, and with several replicas the predecessor may be in
another replica's hands. A change whose version N-1 has not been recorded waits
up to the reorder window for it (woken by this replica's records, polling the
store for other replicas'), so that an out-of-order arrival gets the same
`follows` as an in-order one; a change whose predecessor is known goes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from uuid import UUID

from ..core.chain import Link, awaits_predecessor, choose_follows, kept_link
from ..core.ecs_event import TaskStateChange
from ..core.task_record import expires_after
from ..ports import TaskStateStore
from .watch import StateWatch

__all__ = ["Sequencer"]

# How long a waiting change sleeps between looks, unless this replica records a change of its task.
_LOCAL_WAIT = 0.25


class Sequencer:
    def __init__(self, store: TaskStateStore, reorder_window: float, watch: StateWatch | None = None) -> None:
        self._store = store
        self._watch = watch or StateWatch(store)
        self._window = reorder_window
        # One condition per task with events in flight; removed when its last user leaves.
        self._tasks: dict[str, tuple[asyncio.Condition, list[int]]] = {}

    async def follows(self, change: TaskStateChange, history: Sequence[Link] | None = None) -> UUID | None:
        """Decide and record the `follows` of this change; identical for a redelivered one."""
        return (await self.sequence(change, history)).follows

    async def sequence(self, change: TaskStateChange, history: Sequence[Link] | None = None) -> Link:
        """The change's link as kept: its own, with the `follows` it was first decided with, or, for the
        same change under another event id, the link of the event that has it (a duplicate).

        `history` is the task's links as loaded with the change's receive batch (None: load it now).
        """
        condition, users = self._tasks.setdefault(change.task_arn, (asyncio.Condition(), [0]))
        users[0] += 1
        try:
            async with condition:
                return await self._decide(condition, change, history)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._tasks[change.task_arn]

    async def _decide(
        self, condition: asyncio.Condition, change: TaskStateChange, history: Sequence[Link] | None
    ) -> Link:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window
        fresh = history is None
        if history is None:
            history = await self._history(change.task_arn)
        while True:
            if (seen := kept_link(history, change.event_id, change.version)) is not None:
                return seen
            remaining = deadline - loop.time()
            if not awaits_predecessor(history, change.version) or (remaining <= 0 and fresh):
                break
            if fresh:  # a history loaded before the wait began may lack what was recorded since
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(condition.wait(), min(remaining, _LOCAL_WAIT))
            history, fresh = await self._history(change.task_arn), True
        follows = choose_follows(history, change.event_id, change.version, change.occurred)
        link = Link(change.event_id, change.version, change.occurred, follows)
        kept = await self._store.record(change.task_arn, link, expires_after(change.last_status, change.occurred))
        condition.notify_all()
        return kept

    async def _history(self, task_arn: str) -> Sequence[Link]:
        record = await self._watch.next(task_arn)
        return record.links if record is not None else ()

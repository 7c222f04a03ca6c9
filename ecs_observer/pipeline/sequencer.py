"""Decides each event's `follows`, holding back a state change whose predecessor may still be in flight.

SQS does not keep order, and with several replicas the predecessor may be in
another replica's hands. A change whose version N-1 has not been recorded waits
up to the reorder window for it (woken by this replica's records, polling the
store for other replicas'), so that an out-of-order arrival gets the same
`follows` as an in-order one; a change whose predecessor is known goes at once.

A waiting change is recorded first as pending: N-1 is there for N to follow as
soon as N-1 is received (and its task known to be Prefect's), however long N-1
itself then waits for N-2. Otherwise waits would chain, each version waiting for
the one before to be decided, and a window meant for one hand-over between
replicas would have to cover them all.

The window is a quiet period: it counts from that record, and starts again
whenever another change of the task is recorded meanwhile, by any replica. A
task's changes are then still being handed on, and its predecessor is likely
among them, delayed by its replica's tag lookup or a slow store; a predecessor
that never comes costs one window after the task's last change. A task has a
handful of changes, so the wait stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from uuid import UUID

from ..core.chain import Link, awaits_predecessor, choose_follows, kept_link
from ..core.ecs_event import TaskStateChange
from ..core.task_record import expires_after
from ..ports import TaskStateStore
from .watch import StateWatch

__all__ = ["Sequencer"]

# How long a waiting change sleeps between looks, unless this replica records a change of its task.
_LOCAL_WAIT = 0.25


@dataclass
class _Task:
    """This replica's changes of one task in flight: `changed` is set when one of them is recorded;
    `returned`, per change (by version, -1 without one), when its `sequence` returns."""

    changed: asyncio.Event = field(default_factory=asyncio.Event)
    returned: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def earlier(self, version: int | None) -> list[asyncio.Future[None]]:
        if version is None:
            return []
        return [future for v, future in self.returned if v < version and not future.done()]


class Sequencer:
    def __init__(self, store: TaskStateStore, reorder_window: float, watch: StateWatch | None = None) -> None:
        self._store = store
        self._watch = watch or StateWatch(store)
        self._window = reorder_window
        # Per task with changes in flight; removed when its last one returns. No lock: the store
        # decides between concurrent writers, and a change waiting holds nothing up.
        self._tasks: dict[str, _Task] = {}

    async def follows(self, change: TaskStateChange, history: Sequence[Link] | None = None) -> UUID | None:
        """Decide and record the `follows` of this change; identical for a redelivered one."""
        return (await self.sequence(change, history)).follows

    async def sequence(self, change: TaskStateChange, history: Sequence[Link] | None = None) -> Link:
        """The change's link as kept: its own, with the `follows` it was first decided with, or, for the
        same change under another event id, the link of the event that has it (a duplicate).

        `history` is the task's links as loaded with the change's receive batch (None: load it now).
        """
        task = self._tasks.setdefault(change.task_arn, _Task())
        returned = (change.version if change.version is not None else -1, asyncio.get_running_loop().create_future())
        task.returned.append(returned)
        try:
            kept = await self._decide(task, change, history)
            # A change follows a pending predecessor at once, but its decision is handed on only after the
            # predecessor's, here: what the pipeline then does with the task's changes goes in version order.
            if earlier := task.earlier(change.version):
                await asyncio.wait(earlier)
            return kept
        finally:
            returned[1].set_result(None)
            task.returned.remove(returned)
            if not task.returned:
                del self._tasks[change.task_arn]

    async def _decide(self, task: _Task, change: TaskStateChange, history: Sequence[Link] | None) -> Link:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window
        fresh = history is None
        changed = task.changed  # taken before each load: a change recorded after it ends the next wait
        if history is None:
            history = await self._history(change.task_arn)
        expires = expires_after(change.last_status, change.occurred)
        heard = {link.event_id for link in history}  # the task's changes seen recorded, its own pending one too
        placed = False  # recorded as pending: its successors, on any replica, can follow it while it waits
        while True:
            seen = kept_link(history, change.event_id, change.version)
            if seen is not None and (seen.event_id != change.event_id or not seen.pending):
                return seen  # decided before (a redelivery), or the same change under another id
            placed = placed or seen is not None
            if not awaits_predecessor(history, change.version) or (deadline <= loop.time() and fresh):
                break
            if not placed:
                kept = await self._store.record(change.task_arn, self._link(change, None, pending=True), expires)
                task.notify()
                if kept.event_id != change.event_id or not kept.pending:
                    return kept
                placed = True
            if fresh:  # a history loaded before the wait began may lack what was recorded since
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), min(deadline - loop.time(), _LOCAL_WAIT))
            changed = task.changed
            history, fresh = await self._history(change.task_arn), True
            if news := {link.event_id for link in history} - heard:
                # Its own pending record (where the predecessor's replica finds it: that write takes as long,
                # so a slow store does not eat the window), or the task's other changes still being recorded,
                # here or by another replica, with its predecessor likely among them: the window starts again.
                heard |= news
                deadline = self._quiet(deadline)
        link = self._link(change, choose_follows(history, change.event_id, change.version, change.occurred))
        if placed:
            kept = await self._store.settle(change.task_arn, link, expires)
        else:
            kept = await self._store.record(change.task_arn, link, expires)
            if kept.event_id == change.event_id and kept.pending:
                # Placed meanwhile by another holder of the change (a duplicate delivery, on a replica whose
                # history lacked the predecessor), pending: not a decision to forward. The first settling wins.
                kept = await self._store.settle(change.task_arn, link, expires)
        task.notify()
        return kept

    def _quiet(self, deadline: float) -> float:
        """The wait's end once news came: the window starts again (a quiet period, see above)."""
        return max(deadline, asyncio.get_running_loop().time() + self._window)

    @staticmethod
    def _link(change: TaskStateChange, follows: UUID | None, *, pending: bool = False) -> Link:
        return Link(change.event_id, change.version, change.occurred, follows, pending)

    async def _history(self, task_arn: str) -> Sequence[Link]:
        record = await self._watch.next(task_arn)
        return record.links if record is not None else ()

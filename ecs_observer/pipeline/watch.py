"""Fresh task records for the changes that wait on other replicas."""

from __future__ import annotations

from ..core.task_record import TaskRecord
from ..ports import TaskStateStore
from ..support.batcher import Batcher

__all__ = ["StateWatch"]


class StateWatch:
    """Fresh records of the tasks that wait on other replicas (for tags being described, or for a
    predecessor): one load per poll interval serves all of them, however many wait (up to
    `max_per_load` a load; more wait for the next)."""

    def __init__(self, store: TaskStateStore, max_per_load: int = 100) -> None:
        self._store = store
        interval = store.poll_interval
        # A load starts a poll interval after the first question since the previous load ended
        # (one load at a time, each resting an interval after it). Its questions are taken out
        # before it starts: whoever asks while it is under way waits for the next one, which starts
        # after the question, so that nobody is answered with what was read before it.
        self._loads: Batcher[str, TaskRecord | None] = Batcher(
            self._load, linger=interval, max_items=max_per_load, concurrency=1, spacing=interval, distinct=True
        )

    async def next(self, task_arn: str) -> TaskRecord | None:
        """The task's record as read after this call (None: never seen)."""
        if self._store.poll_interval <= 0:
            return (await self._store.load([task_arn])).get(task_arn)
        return await self._loads.ask(task_arn)

    async def _load(self, task_arns: list[str]) -> list[TaskRecord | None]:
        found = await self._store.load(task_arns)
        return [found.get(arn) for arn in task_arns]

    async def close(self) -> None:
        await self._loads.close()

"""Fresh task records for the changes that wait on other replicas."""

from __future__ import annotations

import asyncio

from ..core.task_record import TaskRecord
from ..ports import TaskStateStore

__all__ = ["StateWatch"]


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
            # Taken out before the read: whoever asks while it is under way waits for the next one,
            # which starts after the question, so that nobody is answered with what was read before it.
            batch = {arn: self._waiting.pop(arn) for arn in list(self._waiting)[: self._max]}
            try:
                found = await self._store.load(batch)
            except BaseException:
                for future in batch.values():
                    future.cancel()
                raise
            for arn, future in batch.items():
                if not future.done():
                    future.set_result(found.get(arn))

    async def close(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)

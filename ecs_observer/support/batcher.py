"""Gathers items from many waiters into batches: one call answers them all.

The observer batches five kinds of call (events to Prefect, SQS deletes,
DescribeTasks, run-state reads, shared-state loads), all this one way:

- A batch goes at once when it holds `max_items` items or `max_bytes` bytes, as
  `size` counts them (an item that would take it past `max_bytes` starts the next
  one); else `linger` seconds after its first item, or, with `quiet`, sooner,
  once no item has joined for `quiet` seconds. Batching adds at most `linger`.
- In a backlog (`intake(full=True)`: receives come back full, more items are on
  their way) it goes `backlog_linger` after its first item instead. When the
  intake catches up it goes as in a trickle, its quiet counted from then (at
  once without `quiet`): its items have waited in the queue anyway. `flush()`
  sends it now (nothing more can come: the in-flight bound is reached).
- At most `concurrency` sends run at once; with `spacing`, a slot rests that
  long after each send (a read budget: one load per interval).
- With `distinct`, equal items wait for one answer and are sent once.
- A send's error is every waiter's of that batch: each re-raises it. `close()`
  cancels the waiters and the sends under way; `drain()` sends what waits and
  awaits every send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Batcher"]

T = TypeVar("T")
A = TypeVar("A")


class _Batch(Generic[T, A]):
    __slots__ = ("bytes", "first", "futures", "index", "items", "timer")

    def __init__(self, first: float, distinct: bool) -> None:
        self.items: list[T] = []
        self.futures: list[asyncio.Future[A]] = []
        self.index: dict[T, asyncio.Future[A]] | None = {} if distinct else None
        self.bytes = 0
        self.first = first
        self.timer: asyncio.TimerHandle | None = None


class Batcher(Generic[T, A]):
    """`send` gets a batch's items and answers each, in order."""

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[Sequence[A]]],
        *,
        linger: float,
        quiet: float | None = None,
        backlog_linger: float | None = None,
        max_items: int | None = None,
        max_bytes: int | None = None,
        size: Callable[[T], int] | None = None,
        concurrency: int | None = None,
        spacing: float = 0.0,
        distinct: bool = False,
    ) -> None:
        if (max_bytes is None) != (size is None):
            raise ValueError("max_bytes and size go together")
        self._send = send
        self._linger = linger
        self._quiet = quiet
        self._backlog_linger = linger if backlog_linger is None else backlog_linger
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._size = size
        self._slots = asyncio.Semaphore(concurrency) if concurrency is not None else None
        self._spacing = spacing
        self._distinct = distinct
        self._backlog = False
        self._open: _Batch[T, A] | None = None
        self._sends: dict[asyncio.Task[None], _Batch[T, A]] = {}

    async def ask(self, item: T) -> A:
        """The item's answer, once its batch is sent; a waiter cancelled leaves the batch as it is."""
        return await asyncio.shield(self.submit(item))

    def submit(self, item: T) -> asyncio.Future[A]:
        """Add the item to the open batch; the future holds its answer."""
        batch = self._open
        if batch is not None and batch.index is not None and (known := batch.index.get(item)) is not None:
            return known
        weight = self._size(item) if self._size is not None else 0
        if batch is not None and self._max_bytes is not None and batch.bytes + weight > self._max_bytes:
            self.flush()
            batch = None
        loop = asyncio.get_running_loop()
        if batch is None:
            batch = self._open = _Batch(loop.time(), self._distinct)
        future: asyncio.Future[A] = loop.create_future()
        batch.items.append(item)
        batch.futures.append(future)
        if batch.index is not None:
            batch.index[item] = future
        batch.bytes += weight
        if (self._max_items is not None and len(batch.items) >= self._max_items) or (
            self._max_bytes is not None and batch.bytes >= self._max_bytes
        ):
            self.flush()
        elif batch.timer is None or self._quiet is not None:
            now = loop.time()
            if self._backlog:
                due = batch.first + self._backlog_linger
            else:
                due = batch.first + self._linger
                if self._quiet is not None:
                    due = min(due, now + self._quiet)
            self._arm(batch, due)
        return future

    def intake(self, full: bool) -> None:
        """Told after each receive: full means a backlog; a short one after it, that the intake caught up."""
        was, self._backlog = self._backlog, full
        batch = self._open
        if was and not full and batch is not None:
            now = asyncio.get_running_loop().time()
            due = min(batch.first + self._linger, now + (self._quiet or 0.0))
            if due <= now:
                self.flush()
            else:
                self._arm(batch, due)

    def flush(self) -> None:
        """Send the open batch now."""
        batch, self._open = self._open, None
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        send = asyncio.get_running_loop().create_task(self._run(batch))
        self._sends[send] = batch
        send.add_done_callback(self._sends.pop)

    async def drain(self) -> None:
        """Send what waits and wait for every send under way."""
        self.flush()
        await asyncio.gather(*self._sends, return_exceptions=True)

    async def close(self) -> None:
        """Stop: the waiters of the open batch and of the sends under way are cancelled."""
        batch, self._open = self._open, None
        batches = [batch] if batch is not None else []
        if batch is not None and batch.timer is not None:
            batch.timer.cancel()
        sends = list(self._sends)
        batches += self._sends.values()
        for send in sends:
            send.cancel()
        for each in batches:
            for future in each.futures:
                future.cancel()  # also for a send cancelled before it started, which never sees it
        await asyncio.gather(*sends, return_exceptions=True)

    def _arm(self, batch: _Batch[T, A], due: float) -> None:
        if batch.timer is not None:
            batch.timer.cancel()
        batch.timer = asyncio.get_running_loop().call_at(due, self.flush)

    async def _run(self, batch: _Batch[T, A]) -> None:
        try:
            if self._slots is None:
                await self._answer(batch)
                return
            async with self._slots:
                await self._answer(batch)
                if self._spacing:
                    await asyncio.sleep(self._spacing)
        except asyncio.CancelledError:
            for future in batch.futures:
                future.cancel()
            raise

    async def _answer(self, batch: _Batch[T, A]) -> None:
        try:
            answers = await self._send(batch.items)
            if len(answers) != len(batch.items):
                raise ValueError(f"{len(answers)} answers for {len(batch.items)} items")
        except Exception as exc:
            for future in batch.futures:
                if not future.done():
                    future.set_exception(exc)
                    future.exception()  # retrieved: no "never retrieved" noise for a waiter gone at shutdown
            return
        for future, answer in zip(batch.futures, answers, strict=True):
            if not future.done():
                future.set_result(answer)

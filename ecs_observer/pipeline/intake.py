"""The receive loops: long polls under the in-flight bound, each batch handed on to be dispatched.

Intake owns the bound and its count: a message is in flight from its dispatch
until its handler tells `freed`. Room is reserved before a receive, so that
concurrent receivers cannot overshoot the bound. The batchers (DescribeTasks groups, deletes) are told
whether receives come back full (a backlog: wait for full batches) or short
(caught up: send now), and to send what waits once the bound is reached.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ..ports import Message, MessageQueue
from ..support.stats import Stats
from .config import ObserverConfig
from .leases import SQS_BATCH

__all__ = ["Batcher", "Intake"]


class Batcher(Protocol):
    def intake(self, full: bool) -> None: ...

    def flush(self) -> None: ...


class Intake:
    def __init__(
        self,
        queue: MessageQueue,
        batchers: Sequence[Batcher],
        stats: Stats,
        config: ObserverConfig,
        dispatch: Callable[[list[Message]], None],
    ) -> None:
        self._queue = queue
        self._batchers = batchers
        self._stats = stats
        self._config = config
        self._dispatch = dispatch
        self._backoff = config.backoff.hooked(stats.called)
        self.stopping = asyncio.Event()
        self.why = ""  # why it stopped, for the log
        self._room = asyncio.Event()  # set when in-flight messages finish
        self._held = 0  # messages dispatched and not yet freed
        self._reserved = 0  # room taken by receive calls under way
        self._idle_target: int | None = None
        self._idle_polls = 0
        self._loops: list[asyncio.Task[None]] = []
        self._busy: Callable[[], bool] = lambda: False

    def start(self, until_idle: int | None, busy: Callable[[], bool]) -> None:
        """Start the loops; stop by itself after `until_idle` empty receives in a row while not `busy`."""
        self._idle_target = until_idle
        self._busy = busy
        self._loops = [asyncio.create_task(self._loop()) for _ in range(self._config.receivers)]

    def stop(self, why: str) -> None:
        if not self.stopping.is_set():
            self.why = why
        self.stopping.set()
        self._room.set()

    @property
    def in_flight(self) -> int:
        """Messages dispatched whose handlers have not finished (the metrics and summaries read it)."""
        return self._held

    def freed(self) -> None:
        """A message in flight is done: a waiting receiver may go on."""
        self._held -= 1
        self._room.set()

    async def end(self) -> None:
        """Let long polls under way end by themselves (their messages are dispatched): a cancelled one can
        still take messages on the server side, which would then stay hidden for the whole visibility
        timeout."""
        if not self._loops:
            return
        _, pending = await asyncio.wait(
            self._loops, timeout=min(self._config.wait_time_seconds + 5, self._config.drain_timeout)
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    def health(self) -> tuple[list[str], dict[str, Any]]:
        """Unhealthy reasons (none: healthy) and details. A visibility extension counts as SQS success,
        so an outage of the Prefect API, with receiving paused at the bound, is not a reason to restart."""
        alive = sum(not task.done() for task in self._loops)
        since = time.monotonic() - self._stats.last_sqs_success
        limit = self._config.silence_limit()
        details: dict[str, Any] = {
            "receive_loops_alive": alive,
            "seconds_since_sqs_success": round(since, 1),
            "in_flight": self._held,
        }
        reasons = []
        if self.stopping.is_set():
            reasons.append("stopping")
        elif alive < len(self._loops) or not self._loops:
            reasons.append(f"{len(self._loops) - alive} receive loop(s) ended")
        if since > limit:
            reasons.append(f"no successful SQS call for {since:.0f} s (limit {limit} s)")
        return reasons, details

    async def _loop(self) -> None:
        while not self.stopping.is_set():
            await self._wait_for_room()
            if self.stopping.is_set():
                return  # woken by the stop, not by room: another receive would only be handed back
            self._reserved += SQS_BATCH
            try:
                messages = await self._receive()
            finally:
                self._reserved -= SQS_BATCH
            if self.stopping.is_set() and not messages:
                return
            # A poll under way when the stop came: its messages are handled within the drain like any
            # other. Handed back, each would count a receive, and a message that arrives while several
            # stopping replicas poll went from one to the next into the dead-letter queue (seed 392).
            self._note_idle(not messages)
            self._stats.batches_received += bool(messages)
            full = len(messages) == SQS_BATCH
            for batcher in self._batchers:
                batcher.intake(full)
            self._held += len(messages)  # each handler dispatched frees one
            self._dispatch(messages)

    def _note_idle(self, empty: bool) -> None:
        if self._idle_target is None:
            return
        self._idle_polls = self._idle_polls + 1 if empty and not self._busy() else 0
        if self._idle_polls >= self._idle_target:
            self.stop(f"the queue was empty for {self._idle_polls} receives in a row")

    async def _receive(self) -> list[Message]:
        async def receive() -> list[Message]:
            self._stats.sqs_calls["ReceiveMessage"] += 1
            messages = await self._queue.receive(
                SQS_BATCH, self._config.wait_time_seconds, self._config.visibility_timeout
            )
            self._stats.sqs_succeeded()
            return messages

        return await self._backoff.call("receive", receive, what="ReceiveMessage")

    def _full(self) -> bool:
        return self._held + self._reserved + SQS_BATCH > self._config.max_in_flight

    async def _wait_for_room(self) -> None:
        if self._full():
            # Nothing more comes in until something finishes: waiting batches gain nothing by waiting.
            for batcher in self._batchers:
                batcher.flush()
        while self._full() and not self.stopping.is_set():
            self._room.clear()
            await self._room.wait()

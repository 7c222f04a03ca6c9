"""Gathers events from all messages in flight into batches for the sink.

A batch goes when it holds `max_events` events or `max_bytes` bytes, or when
its first event has waited `linger` seconds, so batching adds at most the
linger to an event's latency. In a backlog (receives come back full) it waits
10 lingers, as the deletes do, and goes at once when the intake catches up or
the in-flight bound is reached: the events have waited in the queue anyway.
"""

from __future__ import annotations

import asyncio
import json
from uuid import UUID

from ..core.translate import PrefectEvent
from ..ports import EncodedEvent, EventSink

__all__ = ["Forwarder"]


class Forwarder:
    def __init__(
        self,
        sink: EventSink,
        *,
        max_events: int = 200,
        max_bytes: int = 1_000_000,
        linger: float = 0.05,
        concurrency: int = 4,
    ) -> None:
        self._sink = sink
        self._max_events = max_events
        self._max_bytes = max_bytes
        self._linger = linger
        self._backlog = False  # set while receives come back full: more events are on their way
        self._batch: list[tuple[EncodedEvent, asyncio.Future[str | None]]] = []
        self._bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._sends: set[asyncio.Task[None]] = set()

    async def forward(self, event: PrefectEvent) -> str | None:
        """Wait until the sink has the event: None once accepted, else why it was refused."""
        encoded = EncodedEvent(event.id, json.dumps(event.to_json(), separators=(",", ":")).encode())
        if self._batch and self._bytes + len(encoded.json) > self._max_bytes:
            self._flush()
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._batch.append((encoded, future))
        self._bytes += len(encoded.json) + 1
        if len(self._batch) >= self._max_events or self._bytes >= self._max_bytes:
            self._flush()
        elif self._timer is None:
            linger = 10 * self._linger if self._backlog else self._linger
            self._timer = asyncio.get_running_loop().call_later(linger, self._flush)
        return await asyncio.shield(future)

    def intake(self, full: bool) -> None:
        """Told after each receive: a short one means the backlog is drained, so a waiting batch goes now."""
        was, self._backlog = self._backlog, full
        if was and not full and self._batch:
            self._flush()

    def flush_all(self) -> None:
        """Send the waiting batch now: no more events can come (the in-flight bound is reached)."""
        if self._batch:
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._batch, self._bytes = self._batch, [], 0
        if batch:
            send = asyncio.get_running_loop().create_task(self._send(batch))
            self._sends.add(send)
            send.add_done_callback(self._sends.discard)

    async def _send(self, batch: list[tuple[EncodedEvent, asyncio.Future[str | None]]]) -> None:
        async with self._slots:
            try:
                refused: dict[UUID, str] = await self._sink.send([encoded for encoded, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:
                # Each waiting handler re-raises it and leaves its message in the queue.
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # retrieved: no "never retrieved" noise for handlers gone at shutdown
                return
        for encoded, future in batch:
            if not future.done():
                future.set_result(refused.get(encoded.id))

    async def close(self) -> None:
        """Stop sending: unfinished events stay unacknowledged, their messages in the queue."""
        if self._timer is not None:
            self._timer.cancel()
        for _, future in self._batch:
            future.cancel()
        self._batch = []
        for send in list(self._sends):
            send.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)

"""Gathers events from all messages in flight into batches for the sink.

A batch goes when it holds `max_events` events or `max_bytes` bytes, or when
its first event has waited `linger` seconds, so batching adds at most the
linger to an event's latency. In a backlog (receives come back full) it waits
10 lingers, as the deletes do, and goes at once when the intake catches up or
the in-flight bound is reached: the events have waited in the queue anyway.
At most `concurrency` batches are sent at once (`support/batcher.py`).
"""

from __future__ import annotations

import json

from ..core.translate import PrefectEvent
from ..ports import EncodedEvent, EventSink
from ..support.batcher import Batcher

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
        # Each event's bytes in the POSTed array, its comma included.
        self.batches: Batcher[EncodedEvent, str | None] = Batcher(
            self._send,
            linger=linger,
            backlog_linger=10 * linger,
            max_items=max_events,
            max_bytes=max_bytes,
            size=lambda encoded: len(encoded.json) + 1,
            concurrency=concurrency,
        )

    async def forward(self, event: PrefectEvent) -> str | None:
        """Wait until the sink has the event: None once accepted, else why it was refused."""
        encoded = EncodedEvent(event.id, json.dumps(event.to_json(), separators=(",", ":")).encode())
        return await self.batches.ask(encoded)

    async def _send(self, batch: list[EncodedEvent]) -> list[str | None]:
        # An error is each waiting handler's: it re-raises it and leaves its message in the queue.
        refused = await self._sink.send(batch)
        return [refused.get(encoded.id) for encoded in batch]

    async def close(self) -> None:
        """Stop sending: unfinished events stay unacknowledged, their messages in the queue."""
        await self.batches.close()

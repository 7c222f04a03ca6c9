"""The Prefect events sink: `POST {PREFECT_API_URL}/events` through the one Prefect client.

A batch is only ever answered "accepted" or "refused as invalid": the client
retries everything else until Prefect answers. On a refusal, the batch is split
to find the events the API refuses, and the rest are forwarded.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from ...ports import EncodedEvent
from .client import PrefectClient

__all__ = ["PrefectApiSink"]

_INVALID = {400, 413, 422}  # the batch itself is at fault: split it to find the culprits


class PrefectApiSink:
    def __init__(self, client: PrefectClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, events: Sequence[EncodedEvent]) -> dict[UUID, str]:
        body = b"[" + b",".join(event.json for event in events) + b"]"
        response = await self._client.request("POST", "/events", content=body, answers=_INVALID)
        if response.status_code < 300:
            return {}
        if len(events) == 1:
            return {events[0].id: f"HTTP {response.status_code}: {response.text[:500]}"}
        middle = len(events) // 2
        refused = await self.send(events[:middle])
        refused.update(await self.send(events[middle:]))
        return refused

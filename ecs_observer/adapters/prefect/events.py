"""The Prefect events sink: `POST {PREFECT_API_URL}/events` through the one Prefect client.

A batch is only ever answered "accepted" or "refused": the client retries
everything else until Prefect answers. Only Prefect's own refusals count: 422,
or a 400 whose body is Prefect's validation error (an event is invalid), and
413 (the batch is too large). Either way the batch is split, down to single
events; an event still refused alone is refused with the reason, and the rest
are forwarded. Any other 4xx (a gateway, a WAF, a proxy answering 400 to
everything) is a fault to retry, never a verdict on the events.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import httpx

from ...ports import EncodedEvent
from .client import PrefectClient

__all__ = ["PrefectApiSink"]

_TOO_LARGE = 413


class PrefectApiSink:
    def __init__(self, client: PrefectClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, events: Sequence[EncodedEvent]) -> dict[UUID, str]:
        body = b"[" + b",".join(event.json for event in events) + b"]"
        response = await self._client.request("POST", "/events", content=body, answers=_refusal)
        if response.status_code < 300:
            return {}
        if len(events) == 1:
            return {events[0].id: f"HTTP {response.status_code}: {response.text[:500]}"}
        middle = len(events) // 2
        refused = await self.send(events[:middle])
        refused.update(await self.send(events[middle:]))
        return refused


def _refusal(response: httpx.Response) -> bool:
    """Prefect's own refusal of the batch (see the module's docstring)."""
    status = response.status_code
    return status in (422, _TOO_LARGE) or (status == 400 and _validation_error(response))


def _validation_error(response: httpx.Response) -> bool:
    """Prefect answers invalid input with `exception_detail` (or FastAPI's `detail`): a list of
    {loc, msg, type}. An HTML page or a gateway's message is not that."""
    try:
        body = response.json()
    except ValueError:
        return False
    if not isinstance(body, dict):
        return False
    detail = body.get("exception_detail", body.get("detail"))
    return isinstance(detail, list) and all(isinstance(d, dict) and "msg" in d for d in detail) and bool(detail)

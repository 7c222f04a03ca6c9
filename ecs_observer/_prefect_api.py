"""The Prefect sink: `POST {PREFECT_API_URL}/events`, retried until each event is accepted or refused.

A batch is only ever answered "accepted" or "refused as invalid" (422), never
"lost": connection errors, timeouts, 408, 429 and 5xx are retried with
exponential backoff and jitter (honouring `Retry-After`); 401/403 and other
configuration errors are logged once and retried slowly, so that fixing the
credentials is all it takes. On a 422, the batch is split to find the events
the API refuses, and the rest are forwarded.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO
from uuid import UUID

import httpx

from ._backoff import Backoff
from ._stats import Stats

__all__ = ["ConsoleSink", "EncodedEvent", "EventSink", "PrefectApiSink", "auth_headers"]

log = logging.getLogger("ecs_observer.prefect")
_INVALID = {400, 413, 422}  # the batch itself is at fault: split it to find the culprits
_TRANSIENT = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    id: UUID
    json: bytes


class EventSink(Protocol):
    """Delivers events; answers the ids of the events refused as invalid, all others being accepted."""

    async def send(self, events: Sequence[EncodedEvent]) -> dict[UUID, str]: ...

    async def aclose(self) -> None: ...


class _Retry(Exception):
    def __init__(self, reason: str, backoff: float | None = None) -> None:
        super().__init__(reason)
        self.backoff = backoff


def auth_headers(api_key: str | None, auth_string: str | None) -> dict[str, str]:
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    if auth_string:
        return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}
    return {}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class PrefectApiSink:
    def __init__(
        self,
        api_url: str,
        *,
        api_key: str | None = None,
        auth_string: str | None = None,
        timeout: float = 30.0,
        backoff: Backoff = Backoff(),
        config_retry: float = 30.0,
        stats: Stats | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = api_url.rstrip("/") + "/events"
        self._client = httpx.AsyncClient(
            headers={"Content-Type": "application/json", **auth_headers(api_key, auth_string)},
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=10, max_keepalive_connections=10),
        )
        self._backoff = backoff
        self._stats = stats or Stats()
        self._config_retry = config_retry
        self._failing_since: str | None = None  # the reason of the current outage, logged once

    async def aclose(self) -> None:
        await self._client.aclose()

    async def send(self, events: Sequence[EncodedEvent]) -> dict[UUID, str]:
        status, detail = await self._post_until_answered(events)
        if status < 300:
            return {}
        if len(events) == 1:
            return {events[0].id: f"HTTP {status}: {detail}"}
        middle = len(events) // 2
        refused = await self.send(events[:middle])
        refused.update(await self.send(events[middle:]))
        return refused

    def _retry_decision(self, exc: Exception) -> bool | float:
        if isinstance(exc, _Retry):
            return True if exc.backoff is None else min(exc.backoff, max(self._backoff.maximum, self._config_retry))
        return isinstance(exc, httpx.TransportError)

    async def _post_until_answered(self, events: Sequence[EncodedEvent]) -> tuple[int, str]:
        body = b"[" + b",".join(event.json for event in events) + b"]"
        async for attempt in self._backoff.attempts(self._retry_decision):
            with attempt:
                try:
                    response = await self._client.post(self._url, content=body)
                except httpx.TransportError as exc:
                    self._failed("connection")
                    self._outage(f"cannot reach the Prefect API at {self._url}: {type(exc).__name__} {exc}")
                    raise
                status = response.status_code
                if status < 300 or status in _INVALID:
                    self._recovered()
                    return status, response.text[:500]
                self._failed(str(status))
                if status in (401, 403):
                    self._outage(
                        f"the Prefect API at {self._url} refuses our credentials (HTTP {status}): check "
                        "PREFECT_API_KEY (Prefect Cloud) or PREFECT_API_AUTH_STRING (self-hosted); nothing is "
                        "deleted from the queue meanwhile",
                        level=logging.ERROR,
                    )
                    raise _Retry(f"HTTP {status}", backoff=self._config_retry)
                if status in _TRANSIENT:
                    self._outage(f"the Prefect API at {self._url} answers HTTP {status}; retrying")
                    raise _Retry(f"HTTP {status}", backoff=_retry_after(response))
                self._outage(
                    f"the Prefect API at {self._url} answers HTTP {status} ({response.text[:200]!r}): "
                    "check PREFECT_API_URL; retrying slowly",
                    level=logging.ERROR,
                )
                raise _Retry(f"HTTP {status}", backoff=self._config_retry)
        raise AssertionError("unreachable: retries are unbounded")

    def _failed(self, cause: str) -> None:
        self._stats.sink_errors[cause] += 1
        self._stats.retries["prefect_api"] += 1

    def _outage(self, reason: str, level: int = logging.WARNING) -> None:
        if self._failing_since != reason:
            self._failing_since = reason
            log.log(level, reason)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info("the Prefect API answers again")
            self._failing_since = None


class ConsoleSink:
    """Prints each event as a JSON line: the demo's sink when no Prefect API is configured."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    async def send(self, events: Sequence[EncodedEvent]) -> dict[UUID, str]:
        for event in events:
            self._stream.write(event.json.decode() + "\n")
        self._stream.flush()
        return {}

    async def aclose(self) -> None:
        return None

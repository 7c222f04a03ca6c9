"""The one HTTP client of the Prefect API (self-hosted or Cloud).

Every request goes out with the same auth and timeout and is retried until
Prefect *answers* it: connection errors, timeouts, 408, 429 and 5xx are retried
with exponential backoff and jitter (honouring `Retry-After`); 401/403 and other
configuration errors are logged once and retried slowly, so that fixing the
credentials is all it takes. The caller names which statuses are answers
(2xx always are), or which responses, and reads them; nothing is ever "lost". The events sink uses it
today; flow-run reads, state proposals and logs go through it too.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import logging
from collections.abc import Callable, Collection
from typing import Any

import httpx

from ...support.backoff import Backoff
from ...support.redact import redact
from ...support.stats import Stats

__all__ = ["Answers", "PrefectClient", "auth_headers"]

log = logging.getLogger("ecs_observer.prefect")
_TRANSIENT = {408, 425, 429, 500, 502, 503, 504}


# Which non-2xx responses the caller reads as Prefect's answer: statuses, or a test of the response.
Answers = Collection[int] | Callable[[httpx.Response], bool]


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


class PrefectClient:
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
        self.api_url = api_url.rstrip("/")
        self._shown = redact(self.api_url)  # for messages: a URL may carry user:password
        self._client = httpx.AsyncClient(
            headers={"Content-Type": "application/json", **auth_headers(api_key, auth_string)},
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=10, max_keepalive_connections=10),
        )
        self._stats = stats or Stats()
        self._backoff = backoff.hooked(self._stats.retried)
        self._config_retry = config_retry
        self._failing_since: str | None = None  # the reason of the current outage, logged once

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self, method: str, path: str, *, content: bytes | None = None, json: Any = None, answers: Answers = ()
    ) -> httpx.Response:
        """`method` on `{api_url}{path}` until Prefect answers: a 2xx or a status in `answers`."""
        url = f"{self.api_url}{path}"

        async def attempt() -> httpx.Response:
            return await self._attempt(method, url, f"{self._shown}{path}", content, json, answers)

        return await self._backoff.call("prefect_api", attempt, on=self._retry_decision)

    def _retry_decision(self, exc: Exception) -> bool | float:
        if isinstance(exc, _Retry):
            return True if exc.backoff is None else min(exc.backoff, max(self._backoff.maximum, self._config_retry))
        return isinstance(exc, httpx.TransportError)

    async def _attempt(
        self, method: str, url: str, shown: str, content: bytes | None, json: Any, answers: Answers
    ) -> httpx.Response:
        try:
            response = await self._client.request(method, url, content=content, json=json)
        except httpx.TransportError as exc:
            self._failed("connection")
            self._outage(f"cannot reach the Prefect API at {shown}: {type(exc).__name__} {redact(str(exc))}")
            raise
        status = response.status_code
        if status < 300 or (answers(response) if callable(answers) else status in answers):
            self._recovered()
            return response
        self._failed(str(status))
        if status in (401, 403):
            self._outage(
                f"the Prefect API at {shown} refuses our credentials (HTTP {status}): check "
                "PREFECT_API_KEY (Prefect Cloud) or PREFECT_API_AUTH_STRING (self-hosted); nothing is "
                "deleted from the queue meanwhile",
                level=logging.ERROR,
            )
            raise _Retry(f"HTTP {status}", backoff=self._config_retry)
        if status in _TRANSIENT:
            self._outage(f"the Prefect API at {shown} answers HTTP {status}; retrying")
            raise _Retry(f"HTTP {status}", backoff=_retry_after(response))
        self._outage(
            f"the Prefect API at {shown} answers HTTP {status} ({response.text[:200]!r}): "
            "check PREFECT_API_URL; retrying slowly",
            level=logging.ERROR,
        )
        raise _Retry(f"HTTP {status}", backoff=self._config_retry)

    def _failed(self, cause: str) -> None:
        self._stats.sink_errors[cause] += 1

    def _outage(self, reason: str, level: int = logging.WARNING) -> None:
        if self._failing_since != reason:
            self._failing_since = reason
            log.log(level, reason)

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info("the Prefect API answers again")
            self._failing_since = None

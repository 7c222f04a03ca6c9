"""The one HTTP client of the Prefect API (self-hosted or Cloud).

Every request goes out with the same auth and timeout and is retried until
Prefect *answers* it: connection errors, timeouts, 408, 429 and 5xx are retried
with exponential backoff and jitter (honouring `Retry-After`); 401/403 and other
configuration errors are retried slowly, so that fixing the credentials is all it
takes. Each outage of the API is logged once, whatever the routes that fail
(`support.dependencies`, through the backoff's hook). The caller names which statuses are answers
(2xx always are), or which responses, and reads them; nothing is ever "lost". The events sink uses it
today; flow-run reads, state proposals and logs go through it too.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import httpx

from ...support.backoff import Backoff
from ...support.redact import redact
from ...support.stats import Stats

__all__ = ["Answers", "NotPrefect", "PrefectClient", "Probe", "Reachable", "Refused", "Unreachable", "auth_headers"]

_TRANSIENT = {408, 425, 429, 500, 502, 503, 504}


# Which non-2xx responses the caller reads as Prefect's answer: statuses, or a test of the response.
Answers = Collection[int] | Callable[[httpx.Response], bool]


class _Retry(Exception):
    """A response to retry; its text is the outage's log line, at `level`."""

    def __init__(self, reason: str, backoff: float | None = None, level: int = logging.WARNING) -> None:
        super().__init__(reason)
        self.backoff = backoff
        self.level = level


@dataclass(frozen=True, slots=True)
class Reachable:
    """The API answered as Prefect does."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The API refuses our credentials: a configuration error."""

    reason: str


@dataclass(frozen=True, slots=True)
class NotPrefect:
    """Something answers at the URL, but not as a Prefect API does: a configuration error."""

    reason: str


@dataclass(frozen=True, slots=True)
class Unreachable:
    """No answer, or a transient one (5xx, 429): the API may come back; the observer retries."""

    reason: str


Probe = Reachable | Refused | NotPrefect | Unreachable


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
        self._backoff = backoff.hooked(self._stats.called)
        self._config_retry = config_retry

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

    async def probe(
        self, path: str = "/flow_runs/filter", body: Any = None, params: dict[str, str] | None = None
    ) -> Probe:
        """One request (a GET with `params`, else a POST of `body`), not retried, read as `run` and `check`
        need at start: does a Prefect API answer at the URL, and accept our credentials? Every reason names
        the URL, without its credentials."""
        shown = f"{self._shown}{path}"
        url = f"{self.api_url}{path}"
        try:
            if params is not None:
                response = await self._client.get(url, params=params)
            else:
                response = await self._client.post(url, json={"limit": 1} if body is None else body)
        except httpx.TransportError as exc:
            return Unreachable(
                f"cannot reach the Prefect API at {shown}: {type(exc).__name__} {redact(str(exc))}".strip()
            )
        status = response.status_code
        if status in (401, 403):
            return Refused(
                f"the Prefect API at {shown} refuses our credentials (HTTP {status}): check PREFECT_API_KEY "
                "(Prefect Cloud) or PREFECT_API_AUTH_STRING (self-hosted)"
            )
        if status in _TRANSIENT:
            return Unreachable(f"the Prefect API at {shown} answers HTTP {status}")
        try:
            shaped = status < 300 and isinstance(response.json(), list | dict)
        except ValueError:
            shaped = False
        if not shaped:
            return NotPrefect(
                f"{shown} answers HTTP {status} ({redact(response.text[:100])!r}), not as a Prefect API: check "
                "PREFECT_API_URL (e.g. http://prefect:4200/api, or a Cloud workspace's "
                "https://api.prefect.cloud/api/accounts/<a>/workspaces/<w>)"
            )
        return Reachable()

    def _retry_decision(self, exc: Exception) -> bool | float:
        if isinstance(exc, _Retry):
            return True if exc.backoff is None else min(exc.backoff, max(self._backoff.maximum, self._config_retry))
        return False

    async def _attempt(
        self, method: str, url: str, shown: str, content: bytes | None, json: Any, answers: Answers
    ) -> httpx.Response:
        try:
            response = await self._client.request(method, url, content=content, json=json)
        except httpx.TransportError as exc:
            self._failed("connection")
            raise _Retry(
                f"cannot reach the Prefect API at {shown}: {type(exc).__name__} {redact(str(exc))}".strip()
            ) from exc
        status = response.status_code
        if status < 300 or (answers(response) if callable(answers) else status in answers):
            return response
        self._failed(str(status))
        if status in (401, 403):
            raise _Retry(
                f"the Prefect API at {shown} refuses our credentials (HTTP {status}): check "
                "PREFECT_API_KEY (Prefect Cloud) or PREFECT_API_AUTH_STRING (self-hosted); nothing is "
                "deleted from the queue meanwhile",
                backoff=self._config_retry,
                level=logging.ERROR,
            )
        if status in _TRANSIENT:
            raise _Retry(f"the Prefect API at {shown} answers HTTP {status}", backoff=_retry_after(response))
        raise _Retry(
            f"the Prefect API at {shown} answers HTTP {status} ({response.text[:200]!r}): "
            "check PREFECT_API_URL; retrying slowly",
            backoff=self._config_retry,
            level=logging.ERROR,
        )

    def _failed(self, cause: str) -> None:
        self._stats.sink_errors[cause] += 1

"""The Prefect sink: accepted, retried, or refused event by event; never lost."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest

from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.ports import EncodedEvent
from ecs_observer.support.backoff import Backoff
from ecs_observer.support.stats import Stats

from .servers import PrefectServer

# Recent: the tests read events back from the last day only (a fixed date here once expired).
_NOW = datetime.now(UTC).isoformat(timespec="milliseconds")


def valid_event(resource: str) -> EncodedEvent:
    event_id = uuid.uuid4()
    body = {
        "id": str(event_id),
        "occurred": _NOW,
        "event": "prefect.ecs.task.running",
        "resource": {"prefect.resource.id": resource},
        "related": [],
        "payload": {},
    }
    return EncodedEvent(event_id, json.dumps(body).encode())


class Scripted(httpx.AsyncBaseTransport):
    """A Prefect API that fails on purpose: answers from a script, then 204; records when each request came."""

    def __init__(self, script: list[Callable[[], httpx.Response]]) -> None:
        self.script = script
        self.requests: list[tuple[float, httpx.Request]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((time.monotonic(), request))
        if self.script:
            return self.script.pop(0)()
        return httpx.Response(204)


def status(code: int, **headers: str) -> Callable[[], httpx.Response]:
    return lambda: httpx.Response(code, headers=headers)


def refuse_connection() -> httpx.Response:
    raise httpx.ConnectError("connection refused")


def gaps(transport: Scripted) -> list[float]:
    times = [t for t, _ in transport.requests]
    return [b - a for a, b in itertools.pairwise(times)]


async def test_batch_reaches_real_prefect_and_invalid_events_are_singled_out(prefect: PrefectServer) -> None:
    resource = f"prefect.ecs.task.{uuid.uuid4().hex}"
    good = [valid_event(resource) for _ in range(5)]
    bad_id = uuid.uuid4()
    # No resource: the real server answers 422 for the batch; the sink splits it to find this one.
    bad = EncodedEvent(bad_id, json.dumps({"id": str(bad_id), "occurred": _NOW, "event": "x"}).encode())
    sink = PrefectApiSink(PrefectClient(prefect.api_url))
    refused = await sink.send([*good[:2], bad, *good[2:]])
    await sink.aclose()
    assert set(refused) == {bad_id}
    assert "422" in refused[bad_id]
    stored = prefect.wait_for_events([resource], count=5)
    assert {e["id"] for e in stored} == {str(e.id) for e in good}


@pytest.mark.parametrize("code", [408, 429, 500, 502, 503, 504])
async def test_transient_answers_are_retried_until_accepted(code: int) -> None:
    transport = Scripted([status(code), status(code), refuse_connection])
    sink = PrefectApiSink(PrefectClient("http://prefect.invalid/api", transport=transport, backoff=Backoff(0.05, 0.2)))
    assert await sink.send([valid_event("prefect.ecs.task.a")]) == {}
    assert len(transport.requests) == 4


async def test_backoff_grows_between_attempts() -> None:
    transport = Scripted([status(503)] * 4)
    sink = PrefectApiSink(PrefectClient("http://prefect.invalid/api", transport=transport, backoff=Backoff(0.1, 5.0)))
    await sink.send([valid_event("prefect.ecs.task.a")])
    waits = gaps(transport)
    assert len(waits) == 4
    assert waits[0] >= 0.1
    assert waits[3] > waits[0] * 2  # exponential, jitter notwithstanding


async def test_retry_after_is_honoured() -> None:
    transport = Scripted([status(429, **{"Retry-After": "1"})])
    sink = PrefectApiSink(PrefectClient("http://prefect.invalid/api", transport=transport, backoff=Backoff(0.01, 5.0)))
    await sink.send([valid_event("prefect.ecs.task.a")])
    assert gaps(transport)[0] >= 1.0


async def test_bad_credentials_are_one_outage_logged_once_and_retried_slowly(caplog: pytest.LogCaptureFixture) -> None:
    transport = Scripted([status(401), status(401), status(403)])
    sink = PrefectApiSink(
        PrefectClient(
            "http://prefect.invalid/api",
            api_key="pnu_secret_value",
            transport=transport,
            backoff=Backoff(0.01, 0.05),
            config_retry=0.3,
        )
    )
    with caplog.at_level(logging.INFO, logger="ecs_observer"):
        assert await sink.send([valid_event("prefect.ecs.task.a")]) == {}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # one outage, one line: not one per attempt, nor per status (401, then 403)
    assert "PREFECT_API_KEY" in errors[0].getMessage()
    assert [r.getMessage() for r in caplog.records][-1].startswith("Prefect answers again, after ")
    assert all(g >= 0.3 for g in gaps(transport))
    assert "pnu_secret_value" not in caplog.text


async def test_api_key_is_a_bearer_token() -> None:
    transport = Scripted([])
    sink = PrefectApiSink(
        PrefectClient("https://api.prefect.cloud/api/accounts/a/workspaces/w", api_key="pnu_k", transport=transport)
    )
    await sink.send([valid_event("prefect.ecs.task.a")])
    request = transport.requests[0][1]
    assert request.headers["Authorization"] == "Bearer pnu_k"
    assert str(request.url) == "https://api.prefect.cloud/api/accounts/a/workspaces/w/events"
    assert json.loads(request.content)[0]["event"] == "prefect.ecs.task.running"


async def test_auth_string_is_basic_auth() -> None:
    transport = Scripted([])
    sink = PrefectApiSink(PrefectClient("http://prefect:4200/api/", auth_string="admin:pass", transport=transport))
    await sink.send([valid_event("prefect.ecs.task.a")])
    request = transport.requests[0][1]
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"admin:pass").decode()
    assert str(request.url) == "http://prefect:4200/api/events"


async def test_refused_single_event_is_reported_not_retried() -> None:
    transport = Scripted([status(422)])
    sink = PrefectApiSink(PrefectClient("http://prefect.invalid/api", transport=transport))
    event = valid_event("prefect.ecs.task.a")
    assert set(await sink.send([event])) == {event.id}
    assert len(transport.requests) == 1


def answer(code: int, body: object) -> Callable[[], httpx.Response]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return lambda: httpx.Response(code, content=content)


PREFECT_422 = {
    "exception_message": "Invalid request received.",
    "exception_detail": [{"loc": ["body", 0, "resource"], "msg": "Field required", "type": "missing"}],
}


async def test_a_gateway_400_or_404_is_retried_never_a_verdict_on_the_events() -> None:
    """A WAF or proxy answering 400 to everything must not send every message to the dead-letter queue."""
    transport = Scripted(
        [
            answer(400, b"<html><body>400 Bad Request</body></html>"),
            answer(400, {"message": "Bad Request"}),
            status(404),
        ]
    )
    stats = Stats()
    client = PrefectClient("http://prefect.invalid/api", transport=transport, config_retry=0.05, stats=stats)
    events = [valid_event("prefect.ecs.task.a") for _ in range(3)]
    assert await PrefectApiSink(client).send(events) == {}
    assert len(transport.requests) == 4
    assert stats.sink_errors == {"400": 2, "404": 1}


async def test_prefects_validation_error_in_a_400_or_422_singles_out_the_event() -> None:
    for code in (400, 422):
        # The batch of 4 is refused, then its first half, then the second event alone; the rest go through.
        invalid = answer(code, PREFECT_422)
        transport = Scripted([invalid, invalid, status(204), invalid])
        events = [valid_event("prefect.ecs.task.a") for _ in range(4)]
        refused = await PrefectApiSink(PrefectClient("http://prefect.invalid/api", transport=transport)).send(events)
        assert set(refused) == {events[1].id}
        assert refused[events[1].id].startswith(f"HTTP {code}: ")
        assert "Field required" in refused[events[1].id]


async def test_413_splits_the_batch_down_to_one_event() -> None:
    transport = Scripted(
        [answer(413, b"Request Entity Too Large"), answer(413, b"too large"), status(204), status(204)]
    )
    events = [valid_event("prefect.ecs.task.a") for _ in range(4)]
    assert await PrefectApiSink(PrefectClient("http://prefect.invalid/api", transport=transport)).send(events) == {}
    sizes = [len(json.loads(request.content)) for _, request in transport.requests]
    assert sizes == [4, 2, 1, 1, 2]
    alone = Scripted([answer(413, b"too large")])
    one = valid_event("prefect.ecs.task.a")
    refused = await PrefectApiSink(PrefectClient("http://prefect.invalid/api", transport=alone)).send([one])
    assert refused == {one.id: "HTTP 413: too large"}


async def test_an_outage_is_one_line_whatever_the_routes_that_fail(caplog: pytest.LogCaptureFixture) -> None:
    """Event posts and flow-run reads alternate while Prefect is down: one line when the outage starts,
    one when it ends, and /healthz's view of Prefect follows."""
    import asyncio

    transport = Scripted([refuse_connection] * 6 + [status(503)] * 4)
    stats = Stats()
    client = PrefectClient("http://prefect.invalid/api", transport=transport, backoff=Backoff(0.01, 0.02), stats=stats)
    with caplog.at_level(logging.DEBUG, logger="ecs_observer"):
        await asyncio.gather(
            client.request("POST", "/events", content=b"[]"),
            client.request("POST", "/flow_runs/filter", json={}),
            client.request("POST", "/logs/", json=[]),
        )
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("ecs_observer")]
    assert len(lines) == 2, lines
    assert lines[0].startswith("Prefect is failing: cannot reach the Prefect API at http://prefect.invalid/api/")
    assert lines[1].startswith("Prefect answers again, after ")
    assert "10 failed call(s)" in lines[1]
    report = stats.dependencies.report()["Prefect"]
    assert report["answering"]
    assert "HTTP 503" in report["last_error"]
    assert report["last_answer"] is not None

"""Faults of the Prefect API: outage, errors, throttling, hangs, refused credentials."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.support.backoff import Backoff

from ..servers import PrefectServer
from ..world import FAST, REGION, depth, observer
from .proxy import Fault, FaultProxy, hang, status
from .scenario import delivered, gaps, run_until, scenario

EVENTS = "POST /api/events"


@pytest.fixture
async def prefect_proxy(prefect: PrefectServer) -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy(f"http://127.0.0.1:{prefect.port}").start()
    yield proxy
    await proxy.stop()


async def test_outage_longer_than_visibility_timeout_loses_nothing(aws: AwsClients, own_prefect: PrefectServer) -> None:
    # Visibility 2 s and 2 receives before the dead-letter queue: 12 s down must push nothing there.
    sc = await scenario(aws, max_receive=2, visibility=2)
    own_prefect.stop()
    sink = PrefectApiSink(PrefectClient(own_prefect.api_url, backoff=Backoff(0.2, 1.0), timeout=2))
    obs = await observer(aws, sc.queue_url, sink, replace(FAST, visibility_timeout=2))
    run = asyncio.create_task(obs.run())
    try:
        await asyncio.sleep(12)
        # Only the untagged task's 8 changes are done (filtered); the 24 others are held, visibility extended.
        assert (obs.stats.forwarded, obs.stats.deleted) == (0, 8)
        assert await depth(aws, sc.dlq_url) == (0, 0)
        assert await depth(aws, sc.queue_url) == (0, 24)
        await asyncio.to_thread(own_prefect.start)
        for _ in range(120):
            await asyncio.sleep(0.5)
            if await depth(aws, sc.queue_url) == (0, 0):
                break
    finally:
        obs.stop()
        await run
        await sink.aclose()
    await delivered(aws, own_prefect, sc)


async def test_errors_throttling_and_hangs_are_retried_with_backoff(
    aws: AwsClients, prefect: PrefectServer, prefect_proxy: FaultProxy
) -> None:
    sc = await scenario(aws)
    prefect_proxy.inject(EVENTS, status(500), status(503), status(429, **{"Retry-After": "1"}), hang(3.0))
    sink = PrefectApiSink(PrefectClient(f"{prefect_proxy.url}/api", backoff=Backoff(0.2, 2.0), timeout=1.0))
    # One batch for all events (long linger), so the attempts below are the retries of one request.
    obs = await observer(aws, sc.queue_url, sink, replace(FAST, linger=2.0, batch_size=1000, reorder_window=0.5))
    await run_until(obs, lambda: obs.stats.deleted >= sc.expected + 8)
    await sink.aclose()
    await delivered(aws, prefect, sc)

    outcomes = prefect_proxy.outcomes(EVENTS)
    assert outcomes[:5] == ["status", "status", "status", "hang", "pass"]
    assert len(outcomes) <= 5 + 3  # bounded: the faults, then one success per batch
    waits = gaps(prefect_proxy.times(EVENTS)[:5])
    assert waits[0] >= 0.2  # backoff after the 500
    assert waits[1] >= 0.4  # doubled after the 503
    assert waits[2] >= 1.0  # Retry-After: 1 honoured after the 429
    assert waits[3] >= 1.0 + 0.8  # the 1-s client timeout, then the next backoff


async def test_refused_credentials_keep_everything_until_fixed(
    aws: AwsClients, guarded_prefect: PrefectServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = guarded_prefect
    # Without visibility extension each message would be received every 2 s, 4 times in 8 s, and the
    # 4th receive would move it to the dead-letter queue. The margin of one receive absorbs moto
    # handing a message out twice under concurrent receives, which real SQS does as well.
    sc = await scenario(aws, visibility=2, max_receive=3)
    wrong = PrefectApiSink(
        PrefectClient(server.api_url, auth_string="admin:wrong", backoff=Backoff(0.1, 0.5), config_retry=0.5)
    )
    obs = await observer(aws, sc.queue_url, wrong, replace(FAST, visibility_timeout=2))
    with caplog.at_level(logging.INFO, logger="ecs_observer"):
        await run_until(obs, lambda: False, within=8)
    await wrong.aclose()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "refuses our credentials (HTTP 401)" in errors[0]
    assert "PREFECT_API_AUTH_STRING" in errors[0]
    assert "Guarded-Passw0rd" not in caplog.text
    assert "wrong" not in caplog.text
    assert (obs.stats.forwarded, obs.stats.deleted) == (0, 8)  # only the untagged task's, filtered
    assert await depth(aws, sc.dlq_url) == (0, 0)

    # Restarted with the right credentials: everything arrives.
    right = PrefectApiSink(PrefectClient(server.api_url, auth_string=server.auth_string))
    again = await observer(aws, sc.queue_url, right)
    await run_until(again, lambda: again.stats.deleted >= sc.expected)
    await right.aclose()
    await delivered(aws, server, sc)


async def test_an_event_prefect_refuses_goes_to_the_dead_letter_queue_and_the_others_arrive(
    aws: AwsClients, prefect: PrefectServer, prefect_proxy: FaultProxy
) -> None:
    sc = await scenario(aws, max_receive=2, visibility=2)
    bad = sc.tagged[1].events[3]
    invalid = {"exception_message": "Invalid request received.", "exception_detail": [{"loc": ["body"], "msg": "no"}]}
    # Its id, not a `follows` naming it: the change after it is valid.
    needle = f'"id":"{bad["id"]}"'.encode()
    prefect_proxy.refuse(EVENTS, needle, Fault("status", status=422, body=json.dumps(invalid).encode()))
    sink = PrefectApiSink(PrefectClient(f"{prefect_proxy.url}/api", backoff=Backoff(0.1, 1.0)))
    obs = await observer(aws, sc.queue_url, sink, replace(FAST, visibility_timeout=2))
    run = asyncio.create_task(obs.run())
    try:
        for _ in range(240):
            await asyncio.sleep(0.25)
            if await depth(aws, sc.dlq_url) == (1, 0) and await depth(aws, sc.queue_url) == (0, 0):
                break
    finally:
        obs.stop()
        await run
        await sink.aclose()
    # The refused change alone is in the dead-letter queue, with the reason logged; every other one arrived.
    sqs = await aws.sqs(REGION)
    assert await depth(aws, sc.dlq_url) == (1, 0)
    (dead,) = (await sqs.receive_message(QueueUrl=sc.dlq_url, WaitTimeSeconds=1))["Messages"]
    assert json.loads(dead["Body"])["id"] == bad["id"]
    assert obs.stats.invalid_events >= 1
    stored = prefect.wait_for_events([t.resource_id for t in sc.tagged], count=sc.expected - 1)
    assert {e["id"] for e in stored} == {e["id"] for t in sc.tagged for e in t.events} - {bad["id"]}


async def test_shutdown_while_waiting_for_room_receives_nothing_more(
    aws: AwsClients, prefect: PrefectServer, prefect_proxy: FaultProxy
) -> None:
    """Receivers waiting for room at the in-flight bound stop without another ReceiveMessage: one would only
    take messages to hand back, adding to their receive counts on the way to the dead-letter queue."""
    sc = await scenario(aws, tagged=3, untagged=0)
    prefect_proxy.inject(EVENTS, hang(30.0), hang(30.0), hang(30.0))
    sink = PrefectApiSink(PrefectClient(f"{prefect_proxy.url}/api", timeout=60))
    config = replace(FAST, receivers=2, max_in_flight=10, drain_timeout=1.0)
    obs = await observer(aws, sc.queue_url, sink, config)
    run = asyncio.create_task(obs.run())
    try:
        for _ in range(100):
            await asyncio.sleep(0.1)
            if obs.in_flight == 10:
                break
        # Room is reserved before each receive, so with all 10 places held no receive is under way:
        # both receivers are waiting for room.
        assert obs.in_flight == 10
        receives = obs.stats.sqs_calls["ReceiveMessage"]
    finally:
        obs.stop()
        await run
        await sink.aclose()
    assert obs.stats.sqs_calls["ReceiveMessage"] == receives

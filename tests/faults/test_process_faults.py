"""The observer's own process: killed, stopped while busy, doubled, or asked about tasks ECS forgot."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.app.demo.samples import state_change

from ..servers import PrefectServer
from ..world import depth, make_queue, observer, send, until
from .proxy import FaultProxy, hang
from .scenario import delivered, scenario

EXE = str(Path(sys.executable).with_name("ecs-observer"))
EVENTS = "POST /api/events"


async def start_observer(queue_url: str, api_url: str, log: Path, **settings: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECS_OBSERVER_")}
    env |= {
        "ECS_OBSERVER_QUEUE_URL": queue_url,
        "PREFECT_API_URL": api_url,
        "ECS_OBSERVER_WAIT_TIME_SECONDS": "1",
        "ECS_OBSERVER_VISIBILITY_TIMEOUT": "5",
        "ECS_OBSERVER_HEALTH_PORT": "0",
        "ECS_OBSERVER_REORDER_WINDOW": "1",
    }
    env |= {f"ECS_OBSERVER_{k.upper()}": v for k, v in settings.items()}
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(EXE, "run", env=env, stdout=out, stderr=asyncio.subprocess.STDOUT)


@pytest.fixture
async def slow_prefect(prefect: PrefectServer) -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy(f"http://127.0.0.1:{prefect.port}").start()
    yield proxy
    await proxy.stop()


async def test_sigkill_mid_batch_then_restart_delivers_everything(
    aws: AwsClients, prefect: PrefectServer, slow_prefect: FaultProxy, tmp_path: Path
) -> None:
    sc = await scenario(aws, tagged=6, visibility=5)
    slow_prefect.inject(EVENTS, hang(3.0))
    first = await start_observer(sc.queue_url, f"{slow_prefect.url}/api", tmp_path / "first.log")

    async def posting() -> bool:
        return bool(slow_prefect.requests[EVENTS])

    assert await until(posting), (tmp_path / "first.log").read_text()
    first.kill()  # SIGKILL while its first batch is on the wire
    assert await first.wait() == -signal.SIGKILL

    second = await start_observer(sc.queue_url, prefect.api_url, tmp_path / "second.log")

    async def drained() -> bool:
        return await depth(aws, sc.queue_url) == (0, 0)

    assert await until(drained, within=90), (tmp_path / "second.log").read_text()
    second.send_signal(signal.SIGTERM)
    assert await second.wait() == 0
    # Each id once (Prefect keeps the first copy); a follows may be missing across the crash, never wrong.
    await delivered(aws, prefect, sc, gaps_allowed=True)


async def test_sigterm_during_a_busy_backlog_exits_0_in_time_and_the_next_observer_finishes(
    aws: AwsClients, prefect: PrefectServer, slow_prefect: FaultProxy, tmp_path: Path
) -> None:
    sc = await scenario(aws, tagged=6, visibility=30)
    slow_prefect.inject(EVENTS, hang(2.0), hang(2.0), hang(2.0), hang(2.0))
    busy = await start_observer(sc.queue_url, f"{slow_prefect.url}/api", tmp_path / "busy.log", drain_timeout="3")

    async def posting() -> bool:
        return bool(slow_prefect.requests[EVENTS])

    assert await until(posting), (tmp_path / "busy.log").read_text()
    started = asyncio.get_running_loop().time()
    busy.send_signal(signal.SIGTERM)
    assert await busy.wait() == 0
    assert asyncio.get_running_loop().time() - started < 3 + 1 + 3  # drain, one long poll, slack
    log = [json.loads(line) for line in (tmp_path / "busy.log").read_text().splitlines()]
    assert any(entry["message"].startswith("stopped: ") for entry in log)

    # What it did not finish is visible again at once (not after the 30-s visibility timeout).
    sink = PrefectApiSink(PrefectClient(prefect.api_url))
    nxt = await observer(aws, sc.queue_url, sink)
    await asyncio.wait_for(nxt.run(until_idle=2), timeout=60)
    await sink.aclose()
    await delivered(aws, prefect, sc, gaps_allowed=True)


async def test_two_observers_on_one_queue_deliver_each_event_once(aws: AwsClients, prefect: PrefectServer) -> None:
    sc = await scenario(aws, tagged=6)
    sinks = [PrefectApiSink(PrefectClient(prefect.api_url)), PrefectApiSink(PrefectClient(prefect.api_url))]
    both = [await observer(aws, sc.queue_url, sink) for sink in sinks]
    await asyncio.wait_for(asyncio.gather(*(o.run(until_idle=3) for o in both)), timeout=90)
    for sink in sinks:
        await sink.aclose()
    assert all(o.stats.received > 0 for o in both)  # both took part
    # Without shared state a task's changes split across the two may lose a follows, never get a wrong one.
    await delivered(aws, prefect, sc, gaps_allowed=True)


async def test_task_whose_tags_are_gone(
    aws: AwsClients, prefect: PrefectServer, caplog: pytest.LogCaptureFixture
) -> None:
    queue_url, _ = await make_queue(aws)
    run_id = "5b0d4bc8-04a1-4c6e-9d3f-6a1f0b9f7e21"
    gone = "arn:aws:ecs:us-east-1:123456789012:task/prefect/00000000000000000000000000000abc"
    unknown = "arn:aws:ecs:us-east-1:123456789012:task/prefect/00000000000000000000000000000def"
    # Stopped long enough ago that MISSING means gone, not "not visible yet".
    now = datetime.now(UTC) - timedelta(minutes=10)
    with_env = state_change(gone, "STOPPED", 9, now, flow_run_id=run_id)
    without_env = state_change(unknown, "STOPPED", 9, now)
    await send(aws, queue_url, [json.dumps(with_env), json.dumps(without_env)])
    sink = PrefectApiSink(PrefectClient(prefect.api_url))
    obs = await observer(aws, queue_url, sink)
    with caplog.at_level(logging.DEBUG, logger="ecs_observer"):
        await asyncio.wait_for(obs.run(until_idle=2), timeout=60)
    await sink.aclose()
    # With PREFECT__FLOW_RUN_ID in the overrides the event still goes, related to its flow run.
    (stored,) = prefect.wait_for_events(
        ["prefect.ecs.task.00000000000000000000000000000abc", "prefect.ecs.task.00000000000000000000000000000def"],
        count=1,
    )
    assert stored["id"] == with_env["id"]
    assert stored["related"][0]["prefect.resource.id"] == f"prefect.flow-run.{run_id}"
    # Without it: filtered with a debug line, no error, one DescribeTasks call, deleted.
    assert obs.stats.filtered >= 1
    assert obs.stats.describe_calls == 1
    assert any("ECS no longer knows it" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert await depth(aws, queue_url) == (0, 0)

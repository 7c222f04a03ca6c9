"""/healthz, /metrics and `ecs-observer healthcheck`, as ECS and Prometheus use them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aioboto3
import httpx

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.ecs import EcsDescriber
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.adapters.sqs import SqsQueue
from ecs_observer.app.health import HealthServer, with_dependencies
from ecs_observer.pipeline.observer import Observer
from ecs_observer.support.backoff import Backoff
from ecs_observer.support.stats import Stats

from .servers import PrefectServer, free_port
from .world import FAST, REGION, depth, make_queue, observer, send, start_tasks

EXE = str(Path(sys.executable).with_name("ecs-observer"))


async def healthcheck(port: int) -> int:
    process = await asyncio.create_subprocess_exec(
        EXE, "healthcheck", "--health-port", str(port), stdout=asyncio.subprocess.DEVNULL
    )
    return await process.wait()


@contextlib.asynccontextmanager
async def observing(
    obs: Observer, sink: PrefectApiSink, unhealthy_after: float | None = None
) -> AsyncIterator[HealthServer]:
    """The observer running with its health server on a free port (with `unhealthy_after`, as the service
    serves it: with its dependencies); stopped, drained and closed after."""
    health = (
        obs.health
        if unhealthy_after is None
        else with_dependencies(obs.health, obs.stats.dependencies, unhealthy_after)
    )
    server = HealthServer(obs.stats, health, port=0, host="127.0.0.1", in_flight=lambda: obs.in_flight)
    await server.start()
    run = asyncio.create_task(obs.run())
    try:
        yield server
    finally:
        obs.stop()
        await run
        await server.stop()
        await sink.aclose()


async def test_healthy_while_observing_and_metrics_count_what_happened(aws: AwsClients, prefect: PrefectServer) -> None:
    queue_url, _ = await make_queue(aws)
    (task,) = await start_tasks(aws, 1)
    (other,) = await start_tasks(aws, 1, tagged=False)
    await send(aws, queue_url, [json.dumps(e) for e in task.events + other.events])
    sink = PrefectApiSink(PrefectClient(prefect.api_url))
    obs = await observer(aws, queue_url, sink)
    async with observing(obs, sink) as server:
        for _ in range(100):
            await asyncio.sleep(0.2)
            if await depth(aws, queue_url) == (0, 0) and obs.in_flight == 0:
                break
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            health = await http.get("/healthz")
            metrics = (await http.get("/metrics")).text
        assert await healthcheck(server.port) == 0
    assert health.status_code == 200
    assert health.json()["ok"] is True
    lines = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
    assert float(lines["ecs_observer_messages_received_total"]) >= 16
    assert float(lines["ecs_observer_events_forwarded_total"]) >= 8
    assert float(lines["ecs_observer_messages_filtered_total"]) >= 8
    assert float(lines["ecs_observer_describe_tasks_calls_total"]) >= 1
    assert float(lines["ecs_observer_in_flight_messages"]) == 0
    assert float(lines["ecs_observer_forward_latency_seconds_count"]) >= 8
    assert float(lines['ecs_observer_forward_latency_seconds_bucket{le="+Inf"}']) >= 8


async def test_unhealthy_when_sqs_does_not_answer(moto_url: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with AwsClients(aioboto3.Session(region_name=REGION), endpoint_url=dead) as unreachable:
        sink = PrefectApiSink(PrefectClient(f"http://127.0.0.1:{free_port()}/api"))
        config = replace(FAST, sqs_silence_limit=1.0)
        obs = await observer(unreachable, f"{dead}/123456789012/nowhere", sink, config)
        async with observing(obs, sink) as server:
            # botocore's own retries of a refused connection come first: poll, don't guess a sleep.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
                for _ in range(100):
                    await asyncio.sleep(0.2)
                    health = await http.get("/healthz")
                    metrics = (await http.get("/metrics")).text
                    if health.status_code == 503 and 'cause="receive"' in metrics:
                        break
            exit_code = await healthcheck(server.port)
    assert health.status_code == 503
    assert "no successful SQS call" in health.json()["reason"]
    assert exit_code == 1
    assert 'ecs_observer_retries_total{cause="receive"}' in metrics


async def test_unhealthy_once_prefect_has_failed_longer_than_the_setting(aws: AwsClients) -> None:
    """SQS answers, Prefect does not: /healthz names each dependency's last answer and error, and turns 503
    once Prefect has failed for longer than ECS_OBSERVER_UNHEALTHY_AFTER (here 2 s)."""
    queue_url, _ = await make_queue(aws)
    (task,) = await start_tasks(aws, 1)
    await send(aws, queue_url, [json.dumps(e) for e in task.events])
    stats = Stats()
    down = f"http://127.0.0.1:{free_port()}/api"
    sink = PrefectApiSink(PrefectClient(down, backoff=Backoff(0.1, 0.5), stats=stats))
    queue = SqsQueue(await aws.sqs(REGION), queue_url)
    obs = Observer(queue, EcsDescriber(aws), MemoryTaskState(1000), sink, replace(FAST, drain_timeout=1), stats)
    async with (
        observing(obs, sink, unhealthy_after=2.0) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http,
    ):
        answers = []
        for _ in range(100):
            await asyncio.sleep(0.2)
            health = await http.get("/healthz")
            answers.append(health.status_code)
            if health.status_code == 503:
                break
        # Every message waits for Prefect: the gauge, /healthz and the summary read intake's count.
        metrics = (await http.get("/metrics")).text
        held, summary = obs.in_flight, obs.summary()
    assert held == len(task.events)
    assert f"\necs_observer_in_flight_messages {held:.1f}\n" in metrics
    assert health.json()["in_flight"] == held
    assert f"in_flight={held}" in summary
    assert answers[0] == 200  # not at once: only after 2 s of failure
    assert health.status_code == 503
    body = health.json()
    assert "Prefect has failed for" in body["reason"]
    assert "no successful SQS call" not in body["reason"]
    deps = body["dependencies"]
    assert deps["SQS"]["answering"]
    assert deps["SQS"]["last_answer"]
    assert deps["ECS"]["answering"]
    assert not deps["Prefect"]["answering"]
    assert deps["Prefect"]["last_answer"] is None
    assert f"cannot reach the Prefect API at {down}/events" in deps["Prefect"]["last_error"]


async def test_healthcheck_fails_when_nothing_answers() -> None:
    assert await healthcheck(free_port()) == 1


def test_healthcheck_with_the_endpoint_off_passes_and_a_bad_port_is_one_line() -> None:
    """With ECS_OBSERVER_HEALTH_PORT=0 the service serves no /healthz: the container check must not fail it."""
    import os
    import subprocess

    env = {**os.environ, "ECS_OBSERVER_HEALTH_PORT": "0"}
    off = subprocess.run([EXE, "healthcheck"], env=env, capture_output=True, text=True, timeout=30)
    assert off.returncode == 0, off
    assert "turns /healthz off" in off.stdout
    bad = subprocess.run([EXE, "healthcheck", "--health-port", "http"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "ecs-observer: invalid configuration: ECS_OBSERVER_HEALTH_PORT: not a port: 'http'"
    ]


def test_healthcheck_loads_no_aws_or_http_library() -> None:
    """ECS runs it every 30 s: it must start in a fraction of the service's import time."""
    import subprocess

    probe = (
        "import sys; from ecs_observer.app.cli import main; code = main(['healthcheck', '--health-port', '1']); "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'aioboto3', 'aiobotocore', 'botocore', 'httpx', 'aiohttp', 'prometheus_client', 'pydantic'}); "
        "print(code, heavy)"
    )
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert answer.stdout.strip() == "1 []", answer

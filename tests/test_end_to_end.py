"""The whole service against moto in server mode and a real Prefect server."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import replace
from typing import Any

import pytest

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.ecs import EcsDescriber
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.adapters.sqs import SqsQueue
from ecs_observer.pipeline.observer import Observer
from ecs_observer.support.backoff import Backoff

from .servers import PrefectServer
from .world import FAST, REGION, assert_chains, by_id, depth, make_queue, observer, send, start_tasks


async def drain(aws: AwsClients, queue_url: str, sink: PrefectApiSink, **config: Any) -> Any:
    obs = await observer(aws, queue_url, sink, replace(FAST, **config))
    await asyncio.wait_for(obs.run(until_idle=2), timeout=120)
    return obs.stats


async def test_lifecycles_arrive_in_prefect_with_their_chains(aws: AwsClients, prefect: PrefectServer) -> None:
    queue_url, dlq_url = await make_queue(aws)
    tagged = await start_tasks(aws, 3, crash_first=True)
    untagged = await start_tasks(aws, 2, tagged=False)
    bodies = [json.dumps(e) for t in tagged + untagged for e in t.events]
    random.Random(1).shuffle(bodies)
    await send(aws, queue_url, bodies)

    sink = PrefectApiSink(PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0)))
    stats = await drain(aws, queue_url, sink)
    await sink.aclose()

    stored = prefect.wait_for_events([t.resource_id for t in tagged + untagged], count=24)
    assert_chains(tagged, stored)
    # SQS delivers at least once: counters may see a message twice, but each one is forwarded or filtered.
    assert stats.forwarded >= 24
    assert stats.filtered >= 16
    assert stats.received == stats.forwarded + stats.filtered
    assert await depth(aws, queue_url) == (0, 0)
    assert await depth(aws, dlq_url) == (0, 0)

    crashed = next(
        e
        for e in stored
        if e["resource"]["prefect.resource.id"] == tagged[0].resource_id and e["event"] == "prefect.ecs.task.stopped"
    )
    assert crashed["resource"]["ecs.taskArn"] == tagged[0].arn
    roles = {r["prefect.resource.role"]: r for r in crashed["related"]}
    assert roles["flow-run"]["prefect.resource.id"] == f"prefect.flow-run.{tagged[0].run_id}"
    assert roles["flow-run"]["prefect.resource.name"] == "run-0"
    assert roles["worker"]["prefect.resource.id"] == "prefect.worker.ecs.ecs-worker"
    assert roles["worker"]["prefect.worker-type"] == "ecs"
    assert {e["event"] for e in stored} == {
        f"prefect.ecs.task.{s}"
        for s in (
            "provisioning",
            "pending",
            "activating",
            "running",
            "deactivating",
            "stopping",
            "deprovisioning",
            "stopped",
        )
    }


async def test_redelivered_message_creates_no_duplicate(aws: AwsClients, prefect: PrefectServer) -> None:
    queue_url, _ = await make_queue(aws)
    (task,) = await start_tasks(aws, 1)
    sink = PrefectApiSink(PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0)))
    await send(aws, queue_url, [json.dumps(e) for e in task.events])
    await drain(aws, queue_url, sink)
    # The same EventBridge events again, as SQS's at-least-once delivery or a replay would bring them.
    await send(aws, queue_url, [json.dumps(e) for e in task.events[2:5]])
    stats = await drain(aws, queue_url, sink)
    await sink.aclose()
    assert stats.forwarded == stats.received >= 3
    assert_chains([task], prefect.wait_for_events([task.resource_id], count=8))
    assert await depth(aws, queue_url) == (0, 0)


async def test_shuffled_backlog_yields_the_same_chains_as_in_order(aws: AwsClients, prefect: PrefectServer) -> None:
    queue_url, _ = await make_queue(aws)
    tasks = await start_tasks(aws, 8)
    # Worst case: each task's changes newest first, tasks interleaved, one message per receive.
    bodies = [json.dumps(e) for t in tasks for e in reversed(t.events)]
    random.Random(7).shuffle(bodies)
    await send(aws, queue_url, bodies)
    sink = PrefectApiSink(PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0)))
    await drain(aws, queue_url, sink, receivers=4, reorder_window=3.0)
    await sink.aclose()
    assert_chains(tasks, prefect.wait_for_events([t.resource_id for t in tasks], count=64))


async def test_poison_messages_reach_the_dead_letter_queue_while_the_rest_flow(
    aws: AwsClients, prefect: PrefectServer, caplog: pytest.LogCaptureFixture
) -> None:
    queue_url, dlq_url = await make_queue(aws, max_receive=2, visibility=1)
    (task,) = await start_tasks(aws, 1)
    good = task.events[0]
    poison = [
        "not json at all",
        "[1, 2, 3]",
        json.dumps({**good, "id": "not-a-uuid"}),
        json.dumps({**good, "detail": {k: v for k, v in good["detail"].items() if k != "taskArn"}}),
        json.dumps({**good, "detail": {**good["detail"], "lastStatus": None}}),
    ]
    bodies = [json.dumps(e) for e in task.events] + poison
    random.Random(3).shuffle(bodies)
    await send(aws, queue_url, bodies)
    sink = PrefectApiSink(PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0)))
    obs = await observer(aws, queue_url, sink, replace(FAST, visibility_timeout=1))
    run = asyncio.create_task(obs.run())
    try:
        for _ in range(120):
            await asyncio.sleep(0.5)
            if await depth(aws, dlq_url) == (5, 0):
                break
    finally:
        obs.stop()
        await run
        await sink.aclose()
    assert await depth(aws, dlq_url) == (5, 0)
    assert await depth(aws, queue_url) == (0, 0)
    assert obs.stats.forwarded >= 8
    assert_chains([task], prefect.wait_for_events([task.resource_id], count=8))
    # Each poison message is logged as a warning once, with its SQS message id, however often it comes back.
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "rejected" in r.getMessage()]
    assert len(warnings) == 5
    assert all(w.startswith("message ") for w in warnings)


async def test_describe_tasks_is_batched_per_100_tasks_and_never_repeated(
    aws: AwsClients, prefect: PrefectServer
) -> None:
    queue_url, _ = await make_queue(aws)
    tasks = await start_tasks(aws, 120, cluster="big") + await start_tasks(aws, 130, tagged=False, cluster="big")
    await send(aws, queue_url, [json.dumps(t.events[0]) for t in tasks])
    sink = PrefectApiSink(PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0)))
    first = await drain(aws, queue_url, sink, receivers=4, describe_linger=1.0)
    # 250 new tasks of one cluster: ceil(250 / 100) = 3 calls in a steady backlog. A receive that moto answers
    # short midway (it does on a loaded machine) sends the partial groups early: at most two calls more.
    assert first.describe_calls <= 5
    # Their later changes: every task is known now, Prefect's or not.
    await send(aws, queue_url, [json.dumps(t.events[1]) for t in tasks])
    second = await drain(aws, queue_url, sink, receivers=4, describe_linger=1.0)
    await sink.aclose()
    assert second.describe_calls <= 5  # a fresh observer: its own cache starts empty
    assert await depth(aws, queue_url) == (0, 0)
    # SQS delivers at least once, so counters may see a message twice; Prefect must hold each event once.
    stored = by_id(prefect.wait_for_events([t.resource_id for t in tasks], count=240, timeout=60))
    assert set(stored) == {t.events[n]["id"] for t in tasks[:120] for n in (0, 1)}


async def test_known_tasks_are_not_described_again(aws: AwsClients, prefect: PrefectServer) -> None:
    queue_url, _ = await make_queue(aws)
    tasks = await start_tasks(aws, 5) + await start_tasks(aws, 5, tagged=False)
    sink = PrefectApiSink(PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0)))
    obs = await observer(aws, queue_url, sink)
    run = asyncio.create_task(obs.run())
    try:
        for round_ in range(3):
            await send(aws, queue_url, [json.dumps(t.events[round_]) for t in tasks])
            for _ in range(100):
                await asyncio.sleep(0.1)
                if obs.stats.deleted >= 10 * (round_ + 1):
                    break
            if round_ == 0:
                calls_after_first = obs.stats.describe_calls
    finally:
        obs.stop()
        await run
        await sink.aclose()
    assert obs.stats.deleted >= 30
    assert await depth(aws, queue_url) == (0, 0)
    assert obs.stats.describe_calls == calls_after_first <= 2
    assert obs.stats.tag_cache_hits >= 20


async def test_ignored_messages_are_deleted(aws: AwsClients, prefect: PrefectServer) -> None:
    queue_url, _ = await make_queue(aws)
    other = {
        "id": "8f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
        "source": "aws.ec2",
        "detail-type": "EC2 Spot Instance",
        "region": REGION,
        "time": "2026-01-01T00:00:00Z",
        "detail": {},
    }
    await send(aws, queue_url, [json.dumps(other)] * 3)
    sink = PrefectApiSink(PrefectClient(prefect.api_url))
    stats = await drain(aws, queue_url, sink)
    await sink.aclose()
    assert stats.ignored == stats.deleted == stats.received >= 3
    assert stats.rejected == 0
    assert await depth(aws, queue_url) == (0, 0)


async def test_outage_holds_a_bounded_number_and_shutdown_returns_them(aws: AwsClients) -> None:
    from .servers import free_port

    queue_url, _ = await make_queue(aws)
    tasks = await start_tasks(aws, 4)
    await send(aws, queue_url, [json.dumps(e) for t in tasks for e in t.events])  # 32 messages
    nothing_listens = f"http://127.0.0.1:{free_port()}/api"
    sink = PrefectApiSink(PrefectClient(nothing_listens, backoff=Backoff(0.1, 0.5)))
    obs = await observer(aws, queue_url, sink, replace(FAST, max_in_flight=10, drain_timeout=1.0))
    run = asyncio.create_task(obs.run())
    for _ in range(100):
        if obs.in_flight == 10:
            break
        await asyncio.sleep(0.1)
    # Room is reserved before each receive: with all 10 places held, no receive is under way or can start.
    assert obs.stats.received == 10  # receiving paused at the bound
    assert await depth(aws, queue_url) == (22, 10)
    started = asyncio.get_running_loop().time()
    obs.stop()
    await run
    await sink.aclose()
    assert asyncio.get_running_loop().time() - started < 1.0 + FAST.wait_time_seconds + 2
    assert obs.stats.deleted == 0
    assert await depth(aws, queue_url) == (32, 0)  # the unfinished ones are visible again at once


async def test_the_same_change_under_two_ids_is_forwarded_once(aws: AwsClients, prefect: PrefectServer) -> None:
    """ECS numbers a task's changes by `detail.version`: a second event of a version already forwarded
    (EventBridge or ECS emitting it twice) is acknowledged and counted, not forwarded."""
    queue_url, _ = await make_queue(aws)
    (task,) = await start_tasks(aws, 1)
    twins = [{**e, "id": str(uuid.uuid4())} for e in (task.events[2], task.events[7])]
    await send(aws, queue_url, [json.dumps(e) for e in task.events])
    sink = PrefectApiSink(PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0)))
    store = MemoryTaskState(100)  # what the observer remembers, kept across its two runs

    async def drain_with_memory() -> Any:
        queue = SqsQueue(await aws.sqs(REGION), queue_url)
        obs = Observer(queue, EcsDescriber(aws), store, sink, FAST)
        await asyncio.wait_for(obs.run(until_idle=2), timeout=120)
        return obs.stats

    first = await drain_with_memory()
    await send(aws, queue_url, [json.dumps(e) for e in twins])
    second = await drain_with_memory()
    await sink.aclose()
    stored = prefect.wait_for_events([task.resource_id], count=8)
    assert_chains([task], stored)
    assert first.deduplicated == 0
    assert second.deduplicated >= 2
    assert second.forwarded == 0
    assert await depth(aws, queue_url) == (0, 0)

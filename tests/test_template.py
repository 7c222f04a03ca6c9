"""End to end through the real events template, offline: CloudFormation, EventBridge and SQS in moto, real Prefect."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from typing import Any

import aioboto3
import pytest

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.dynamodb import TTL_ATTRIBUTE, check_table
from ecs_observer.adapters.ecs import EcsDescriber
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.adapters.sqs import SqsQueue
from ecs_observer.app.demo.sandbox import deploy_events_stack, put_events
from ecs_observer.app.demo.templates import events_template
from ecs_observer.pipeline.observer import Observer

from .servers import PrefectServer
from .world import FAST, REGION, Task, depth, replicas, start_tasks


@pytest.fixture
def session(moto_url: str) -> aioboto3.Session:
    return aioboto3.Session(region_name=REGION)


def chained(events: list[dict[str, Any]]) -> bool:
    """Each event of one task follows the one before it (by occurred), the first follows nothing."""
    ordered = sorted(events, key=lambda e: e["occurred"])
    return [e.get("follows") for e in ordered] == [None] + [e["id"] for e in ordered[:-1]]


async def test_template_routes_watched_clusters_to_the_observer(
    aws: AwsClients, session: aioboto3.Session, prefect: PrefectServer
) -> None:
    suffix = uuid.uuid4().hex[:8]
    watched = await start_tasks(aws, 2, cluster=f"watched-{suffix}")
    untagged = await start_tasks(aws, 1, tagged=False, cluster=f"watched-{suffix}")
    elsewhere = await start_tasks(aws, 1, cluster=f"elsewhere-{suffix}")
    watched_arn = watched[0].events[0]["detail"]["clusterArn"]
    async with session.client("cloudformation") as cfn, session.client("events") as bus:
        outputs = await deploy_events_stack(
            cfn, f"events-{suffix}", queue_name=f"q-{suffix}", cluster_arns=[watched_arn]
        )
        await put_events(bus, [e for t in watched + untagged + elsewhere for e in t.events])

    sink = PrefectApiSink(PrefectClient(prefect.api_url))
    queue = SqsQueue(await aws.sqs(REGION), outputs["QueueUrl"])
    observer = Observer(queue, EcsDescriber(aws), MemoryTaskState(1000), sink, replace(FAST, reorder_window=3.0))
    await asyncio.wait_for(observer.run(until_idle=2), timeout=120)
    await sink.aclose()

    # The rule narrowed to the watched cluster: the other cluster's 8 changes never reached the queue.
    assert observer.stats.received >= 24
    assert observer.stats.received == observer.stats.forwarded + observer.stats.filtered
    all_tasks: list[Task] = watched + untagged + elsewhere
    stored = prefect.wait_for_events([t.resource_id for t in all_tasks], count=16)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for event in stored:
        by_task.setdefault(event["resource"]["prefect.resource.id"], []).append(event)
    assert set(by_task) == {t.resource_id for t in watched}
    for task in watched:
        events = by_task[task.resource_id]
        assert len({e["id"] for e in events}) == 8
        assert chained(events)
        assert {r["prefect.resource.id"] for e in events for r in e["related"]} >= {f"prefect.flow-run.{task.run_id}"}
    assert await depth(aws, outputs["QueueUrl"]) == (0, 0)
    assert await depth(aws, outputs["DeadLetterQueueUrl"]) == (0, 0)


async def test_template_without_clusters_routes_every_cluster_to_replicas_sharing_its_table(
    aws: AwsClients, session: aioboto3.Session, prefect: PrefectServer
) -> None:
    suffix = uuid.uuid4().hex[:8]
    tasks = await start_tasks(aws, 1, cluster=f"a-{suffix}") + await start_tasks(aws, 1, cluster=f"b-{suffix}")
    async with session.client("cloudformation") as cfn, session.client("events") as bus:
        outputs = await deploy_events_stack(cfn, f"events-{suffix}", queue_name=f"q-{suffix}")
        await put_events(bus, [e for t in tasks for e in t.events])
    # The template's table is one the observer accepts and uses: two replicas share it.
    table = outputs["StateTableName"]
    assert table == f"q-{suffix}-state"
    dynamodb = await aws.dynamodb(REGION)
    # moto's CloudFormation ignores TimeToLiveSpecification (which `check` would report), so turn it on
    # as the template declares it, on the attribute the observer writes.
    assert (
        f"TimeToLiveSpecification:\n        AttributeName: {TTL_ATTRIBUTE}\n        Enabled: true" in events_template()
    )
    await dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )
    assert "TTL on 'expires'" in await check_table(dynamodb, table)
    async with replicas(2, outputs["QueueUrl"], outputs["StateTableName"], prefect.api_url) as observers:
        await asyncio.wait_for(asyncio.gather(*(o.run(until_idle=2) for o in observers)), timeout=120)
    stored = prefect.wait_for_events([t.resource_id for t in tasks], count=16)
    assert {e["resource"]["prefect.resource.id"] for e in stored} == {t.resource_id for t in tasks}
    assert len({e["id"] for e in stored}) == 16
    assert all(chained([e for e in stored if e["resource"]["prefect.resource.id"] == t.resource_id]) for t in tasks)

"""Task state shared in DynamoDB (moto): conditional writes, claims, batched reads, the table check."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aioboto3
import pytest

from ecs_observer import TaskStateChange, decode
from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.dynamodb import DynamoTaskState, check_table
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.app.demo.samples import lifecycle
from ecs_observer.core.chain import Link
from ecs_observer.core.task_record import NO_TAGS, TaskTags, expires_after
from ecs_observer.support.stats import Stats

from .world import REGION, make_table

ARN = "arn:aws:ecs:us-east-1:123456789012:task/prefect/"
T0 = datetime(2026, 11, 1, 12, 0, 0, 123000, tzinfo=UTC)


@pytest.fixture
async def replicas(aws: AwsClients) -> AsyncIterator[list[DynamoTaskState]]:
    """Three replicas' stores on one table, each with clients of its own."""
    table = await make_table(aws)
    async with (
        AwsClients(aioboto3.Session(region_name=REGION)) as a,
        AwsClients(aioboto3.Session(region_name=REGION)) as b,
        AwsClients(aioboto3.Session(region_name=REGION)) as c,
    ):
        yield [DynamoTaskState(await clients.dynamodb(REGION), table, Stats()) for clients in (a, b, c)]


def changes(task_arn: str) -> list[TaskStateChange]:
    out = []
    for body in lifecycle(task_arn, T0):
        decoded = decode(json.dumps(body))
        assert isinstance(decoded, TaskStateChange)
        out.append(decoded)
    return out


def link_of(change: TaskStateChange, follows: uuid.UUID | None = None) -> Link:
    return Link(change.event_id, change.version, change.occurred, follows)


async def raw_item(store: DynamoTaskState, task_arn: str) -> dict[str, object]:
    answer = await store._client.get_item(
        TableName=store._table, Key={"task_arn": {"S": task_arn}}, ConsistentRead=True
    )
    return dict(answer["Item"])


@pytest.mark.parametrize("seed", range(4))
async def test_concurrent_writes_from_two_replicas_the_newest_version_wins(
    replicas: list[DynamoTaskState], seed: int
) -> None:
    a, b, _ = replicas
    task_arn = f"{ARN}{uuid.uuid4().hex}"
    life = changes(task_arn)
    order = life[:]
    random.Random(seed).shuffle(order)
    # Each change goes to one of the two replicas; all writes race.
    await asyncio.gather(
        *(
            (a if n % 2 else b).record(task_arn, link_of(c), expires_after(c.last_status, c.occurred))
            for n, c in enumerate(order)
        )
    )
    item = await raw_item(a, task_arn)
    last = life[-1]
    assert item["version"] == {"N": str(last.version)}
    # The stopped task's expiry stands, though older changes may have been written after it.
    assert item["expires"] == {"N": str(int((last.occurred + timedelta(hours=6)).timestamp()))}
    record = (await b.load([task_arn]))[task_arn]
    assert [link.event_id for link in record.links] == [c.event_id for c in life]  # none dropped


async def test_an_older_change_arriving_late_does_not_move_the_state_back(replicas: list[DynamoTaskState]) -> None:
    a, b, _ = replicas
    task_arn = f"{ARN}{uuid.uuid4().hex}"
    life = changes(task_arn)
    stopped, running = life[-1], life[3]
    await a.record(task_arn, link_of(stopped), expires_after(stopped.last_status, stopped.occurred))
    before = await raw_item(a, task_arn)
    await b.record(task_arn, link_of(running), expires_after(running.last_status, running.occurred))
    after = await raw_item(a, task_arn)
    assert (after["version"], after["expires"]) == (before["version"], before["expires"])
    assert len((await a.load([task_arn]))[task_arn].links) == 2


async def test_a_change_recorded_on_two_replicas_keeps_its_first_follows(replicas: list[DynamoTaskState]) -> None:
    a, b, c = replicas
    task_arn = f"{ARN}{uuid.uuid4().hex}"
    change = changes(task_arn)[2]
    first, second = uuid.uuid4(), uuid.uuid4()
    expires = expires_after(change.last_status, change.occurred)
    kept = await a.record(task_arn, link_of(change, first), expires)
    assert kept.follows == first
    assert (await b.record(task_arn, link_of(change, second), expires)).follows == first
    # Racing with identical ids: every replica answers the same follows.
    other = changes(task_arn)[3]
    answers = await asyncio.gather(
        *(store.record(task_arn, link_of(other, uuid.uuid4()), expires) for store in (a, b, c))
    )
    assert len({answer.follows for answer in answers}) == 1


async def test_the_same_version_under_another_id_is_refused_on_every_replica(replicas: list[DynamoTaskState]) -> None:
    a, b, _ = replicas
    task_arn = f"{ARN}{uuid.uuid4().hex}"
    change = changes(task_arn)[2]
    expires = expires_after(change.last_status, change.occurred)
    first = await a.record(task_arn, link_of(change, uuid.uuid4()), expires)
    twin = Link(uuid.uuid4(), change.version, change.occurred, None)
    assert await b.record(task_arn, twin, expires) == first
    assert await a.record(task_arn, twin, expires) == first
    # An older version arriving later is still recorded: only the same version is a duplicate.
    older = changes(task_arn)[1]
    assert (await b.record(task_arn, link_of(older), expires)).event_id == older.event_id


async def test_a_pending_change_is_settled_once_on_any_replica(replicas: list[DynamoTaskState]) -> None:
    a, b, c = replicas
    task_arn = f"{ARN}{uuid.uuid4().hex}"
    change = changes(task_arn)[2]
    expires = expires_after(change.last_status, change.occurred)
    pending = Link(change.event_id, change.version, change.occurred, None, pending=True)
    assert await a.record(task_arn, pending, expires) == pending
    # Its successor sees it at once, pending, on another replica.
    (seen,) = (await b.load([task_arn]))[task_arn].links
    assert seen == pending
    # Settled concurrently by three holders (a redelivery on each replica): one answer wins everywhere.
    answers = await asyncio.gather(
        *(store.settle(task_arn, link_of(change, uuid.uuid4()), expires) for store in (a, b, c))
    )
    assert len(set(answers)) == 1
    assert not answers[0].pending
    assert answers[0].follows is not None
    assert (await c.settle(task_arn, link_of(change, None), expires)) == answers[0]
    assert (await c.record(task_arn, pending, expires)) == answers[0]
    # A change never recorded is recorded by its settling.
    other = changes(task_arn)[4]
    assert await b.settle(task_arn, link_of(other), expires) == link_of(other)


async def test_links_read_back_as_written(replicas: list[DynamoTaskState]) -> None:
    a, b, _ = replicas
    task_arn = f"{ARN}{uuid.uuid4().hex}"
    written = [
        Link(uuid.uuid4(), None, T0, None),
        Link(uuid.uuid4(), 7, T0 + timedelta(seconds=1, milliseconds=5), uuid.uuid4()),
    ]
    for link in written:
        await a.record(task_arn, link, T0)
    assert (await b.load([task_arn]))[task_arn].links == tuple(written)


async def test_one_replica_wins_the_claim_to_describe_a_task(replicas: list[DynamoTaskState]) -> None:
    task_arn = f"{ARN}{uuid.uuid4().hex}"
    won = await asyncio.gather(*(store.claim(task_arn, 30) for store in replicas))
    assert sorted(won) == [False, False, True]
    winner = replicas[won.index(True)]
    tags = TaskTags({"prefect.io/flow-run-id": str(uuid.uuid4())})
    await winner.save_tags(task_arn, tags, T0)
    record = (await replicas[0].load([task_arn]))[task_arn]
    assert record.tags == tags
    assert record.claimed_until == 0.0  # the claim is over once the tags are saved
    # Tags known: nobody describes the task again.
    assert not any(await asyncio.gather(*(store.claim(task_arn, 30) for store in replicas)))


async def test_a_lapsed_claim_can_be_taken_over(replicas: list[DynamoTaskState]) -> None:
    a, b, _ = replicas
    task_arn = f"{ARN}{uuid.uuid4().hex}"
    assert await a.claim(task_arn, 0.5)
    assert not await b.claim(task_arn, 30)
    await asyncio.sleep(0.7)  # a died holding it
    assert await b.claim(task_arn, 30)


async def test_not_prefects_is_remembered_too(replicas: list[DynamoTaskState]) -> None:
    a, b, _ = replicas
    task_arn = f"{ARN}{uuid.uuid4().hex}"
    await a.save_tags(task_arn, NO_TAGS, T0)
    assert (await b.load([task_arn]))[task_arn].tags == NO_TAGS


async def test_loads_read_up_to_100_tasks_per_call(replicas: list[DynamoTaskState]) -> None:
    a, b, _ = replicas
    arns = [f"{ARN}{uuid.uuid4().hex}" for _ in range(250)]
    await asyncio.gather(*(a.save_tags(arn, NO_TAGS, T0) for arn in arns))
    found = await b.load([*arns, f"{ARN}{'0' * 32}"])
    assert set(found) == set(arns)  # a task never seen is left out
    assert b._stats.dynamodb_calls["BatchGetItem"] == 3


async def test_check_table_accepts_the_template_table(aws: AwsClients) -> None:
    table = await make_table(aws)
    assert "TTL on 'expires'" in await check_table(await aws.dynamodb(REGION), table)


async def test_check_table_names_what_is_wrong(aws: AwsClients) -> None:
    client = await aws.dynamodb(REGION)
    no_ttl = await make_table(aws, ttl=False)
    with pytest.raises(RuntimeError, match="TTL is not on for attribute 'expires'"):
        await check_table(client, no_ttl)
    with pytest.raises(Exception, match=r"ResourceNotFoundException|not found"):
        await check_table(client, "no-such-table")


async def test_once_per_task_across_replicas_with_a_lease(replicas: list[DynamoTaskState]) -> None:
    """The diagnosis log is written by one handler: others wait while it holds the claim (also the same
    change on another replica), take over once the claim lapses (its holder died), and skip once done."""
    a, b, _ = replicas
    task_arn = f"{ARN}{uuid.uuid4().hex}"
    me, twin = uuid.uuid4(), uuid.uuid4()
    for store in (a, MemoryTaskState(10)):
        arn = f"{task_arn}-{type(store).__name__}"
        other = b if store is a else store
        assert await store.once(arn, "diagnosis", me, T0, lease=60) == "mine"
        assert await other.once(arn, "diagnosis", me, T0, lease=60) == "busy"  # the same change elsewhere
        assert await other.once(arn, "diagnosis", twin, T0, lease=60) == "busy"
        assert await store.once(arn, "crash-logs", twin, T0, lease=0.2) == "mine"  # another thing: its own claim
        await asyncio.sleep(0.3)
        assert await other.once(arn, "crash-logs", me, T0, lease=60) == "mine"  # lapsed: its holder died
        await store.done(arn, "diagnosis", T0)
        assert await other.once(arn, "diagnosis", twin, T0, lease=60) == "done"
        assert await store.once(arn, "diagnosis", me, T0, lease=60) == "done"

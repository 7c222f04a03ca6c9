"""Builds a small AWS world in moto: a queue with its dead-letter queue, a cluster, tagged and untagged tasks."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aioboto3

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.dynamodb import DynamoTaskState
from ecs_observer.adapters.ecs import EcsDescriber
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.adapters.prefect.flow_runs import PrefectFlowRuns
from ecs_observer.adapters.sqs import SqsQueue
from ecs_observer.app.demo.samples import lifecycle
from ecs_observer.app.demo.sandbox import start_cluster
from ecs_observer.pipeline.observer import Observer, ObserverConfig
from ecs_observer.ports import EventSink, FlowRuns
from ecs_observer.support.backoff import Backoff
from ecs_observer.support.stats import Stats

if TYPE_CHECKING:
    from types_aiobotocore_ecs.type_defs import TagTypeDef

REGION = "us-east-1"
FAST = ObserverConfig(
    receivers=2,
    wait_time_seconds=1,
    visibility_timeout=30,
    reorder_window=2.0,
    backoff=Backoff(0.1, 1.0),
    linger=0.02,
    describe_linger=0.05,
)


@dataclass
class Task:
    arn: str
    run_id: str | None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def resource_id(self) -> str:
        return f"prefect.ecs.task.{self.arn.rsplit('/', 1)[1]}"

    def expected_follows(self) -> dict[str, str | None]:
        ids = [e["id"] for e in self.events]
        return dict(zip(ids, [None, *ids[:-1]], strict=True))


async def make_queue(aws: AwsClients, *, max_receive: int = 5, visibility: int = 30) -> tuple[str, str]:
    sqs = await aws.sqs(REGION)
    name = f"obs-{uuid.uuid4().hex[:10]}"
    dlq = (await sqs.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
    dlq_arn = (await sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)})
    url = (
        await sqs.create_queue(
            QueueName=name, Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": str(visibility)}
        )
    )["QueueUrl"]
    return url, dlq


async def start_tasks(
    aws: AwsClients,
    count: int,
    *,
    tagged: bool = True,
    cluster: str = "prefect",
    start: datetime | None = None,
    crash_first: bool = False,
) -> list[Task]:
    """Run tasks in moto and give each its whole Fargate lifecycle of EventBridge events."""
    ecs = await aws.ecs(REGION)
    where = await start_cluster(ecs, cluster)
    start = start or datetime.now(UTC) - timedelta(minutes=10)
    tasks = []
    for n in range(count):
        run_id = str(uuid.uuid4()) if tagged else None
        tags: list[TagTypeDef] = (
            [
                {"key": "prefect.io/flow-run-id", "value": str(run_id)},
                {"key": "prefect.io/flow-run-name", "value": f"run-{n}"},
                {"key": "prefect.io/worker-name", "value": "ecs-worker"},
            ]
            if tagged
            else [{"key": "owner", "value": "someone-else"}]
        )
        arn = await where.run_task(ecs, tags)
        task = Task(arn, run_id)
        task.events = lifecycle(
            arn,
            start + timedelta(seconds=n),
            cluster_arn=where.arn,
            task_definition_arn=where.task_definition_arn,
            exit_code=1 if crash_first and n == 0 else 0,
        )
        tasks.append(task)
    return tasks


async def send(aws: AwsClients, queue_url: str, bodies: list[str]) -> None:
    sqs = await aws.sqs(REGION)
    for offset in range(0, len(bodies), 10):
        batch = bodies[offset : offset + 10]
        answer = await sqs.send_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(batch)]
        )
        assert not answer.get("Failed"), answer


async def depth(aws: AwsClients, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages."""
    sqs = await aws.sqs(REGION)
    attrs = (
        await sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


async def observer(
    aws: AwsClients, queue_url: str, sink: EventSink, config: ObserverConfig = FAST, runs: FlowRuns | None = None
) -> Observer:
    queue = SqsQueue(await aws.sqs(REGION), queue_url)
    return Observer(queue, EcsDescriber(aws), MemoryTaskState(10_000), sink, config, runs=runs)


def by_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "an event id is stored twice"
    return {e["id"]: e for e in events}


def assert_chains(tasks: list[Task], stored: list[dict[str, Any]], *, gaps_allowed: bool = False) -> None:
    """Exactly the tasks' events are stored, each once, each with the follows of its lifecycle.

    With `gaps_allowed` (an observer lost its memory in a crash, or replicas without shared state each
    saw part of a task's life), a follows may be missing or skip a change it never saw, but it always
    names an earlier change of the same task: never a later one, never another task's.
    """
    events = by_id(stored)
    expected = {i: f for t in tasks for i, f in t.expected_follows().items()}
    assert set(events) == set(expected)
    earlier = {e["id"]: {p["id"] for p in t.events[:n]} for t in tasks for n, e in enumerate(t.events)}
    for event_id, event in events.items():
        follows = event.get("follows")
        if gaps_allowed:
            assert follows is None or follows in earlier[event_id], (event_id, follows)
        else:
            assert follows == expected[event_id], (event_id, follows, expected[event_id])


async def make_table(aws: AwsClients, *, ttl: bool = True) -> str:
    """A state table as infra/events.yaml makes it: partition key task_arn, on demand, TTL on `expires`."""
    dynamodb = await aws.dynamodb(REGION)
    name = f"obs-state-{uuid.uuid4().hex[:10]}"
    await dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "task_arn", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "task_arn", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    if ttl:
        await dynamodb.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"}
        )
    return name


@asynccontextmanager
async def replicas(
    count: int,
    queue_url: str,
    table: str,
    api_url: str,
    config: ObserverConfig = FAST,
    endpoint_url: str | None = None,
    flow_runs: bool = False,
) -> AsyncIterator[list[Observer]]:
    """`count` observers, each with AWS clients and a Prefect client of its own, as separate processes would be."""
    async with AsyncExitStack() as stack:
        observers = []
        for _ in range(count):
            clients = await stack.enter_async_context(
                AwsClients(aioboto3.Session(region_name=REGION), endpoint_url=endpoint_url)
            )
            stats = Stats()
            store = DynamoTaskState(await clients.dynamodb(REGION), table, stats, backoff=Backoff(0.1, 1.0))
            client = PrefectClient(api_url, stats=stats)
            stack.push_async_callback(client.aclose)
            queue = SqsQueue(await clients.sqs(REGION), queue_url)
            runs = PrefectFlowRuns(client) if flow_runs else None
            observers.append(Observer(queue, EcsDescriber(clients), store, PrefectApiSink(client), config, stats, runs))
        yield observers


async def until(check: Callable[[], Awaitable[bool]], within: float = 60.0) -> bool:
    """Poll an async predicate until it holds or time runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.3)
    return False

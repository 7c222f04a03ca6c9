"""Tag lookups: batched per cluster, cached, and never an error taken for "no tags"."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from ecs_observer import TaskStateChange, decode
from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.ecs import EcsDescriber
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.app.demo.samples import described, state_change
from ecs_observer.core.decision import Release, unowned
from ecs_observer.core.task_record import GONE, NO_TAGS, TaskTags
from ecs_observer.core.translate import flow_run_id
from ecs_observer.pipeline.tags import MISSING_GRACE, MISSING_TRIES, TagLookup
from ecs_observer.ports import DescribeFailure, TaskView
from ecs_observer.support.backoff import Backoff
from ecs_observer.support.stats import Stats

from .world import Task, start_tasks


class Throttled:
    """Real DescribeTasks behind the first `failures` calls failing on purpose, as a throttled account does."""

    def __init__(self, real: EcsDescriber, failures: int) -> None:
        self.real = real
        self.failures = failures
        self.batches: list[int] = []

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, TaskView | DescribeFailure | None]:
        self.batches.append(len(task_arns))
        if self.failures:
            self.failures -= 1
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "DescribeTasks")
        return await self.real.describe(region, cluster, task_arns)


def first_change(task: Task) -> TaskStateChange:
    change = decode(json.dumps(task.events[0]))
    assert isinstance(change, TaskStateChange)
    return change


async def test_throttling_is_retried_and_never_means_no_tags(aws: AwsClients) -> None:
    tasks = await start_tasks(aws, 3)
    describer = Throttled(EcsDescriber(aws), failures=3)
    stats = Stats()
    lookup = TagLookup(describer, MemoryTaskState(1000), stats, linger=0.01, backoff=Backoff(0.05, 0.1))
    found = await asyncio.gather(*(lookup.tags_for(first_change(t)) for t in tasks))
    assert [f.tags["prefect.io/flow-run-id"] for f in found] == [t.run_id for t in tasks]
    assert describer.batches == [3, 3, 3, 3]  # one call for all three tasks, retried as one
    assert stats.describe_calls == 4
    assert stats.described_tasks == 3  # the throttled calls described nothing


async def test_lookups_of_one_cluster_share_calls_and_answers_are_cached(aws: AwsClients) -> None:
    tasks = await start_tasks(aws, 150, cluster="shared") + await start_tasks(aws, 20, tagged=False, cluster="other")
    describer = Throttled(EcsDescriber(aws), failures=0)
    stats = Stats()
    lookup = TagLookup(describer, MemoryTaskState(1000), stats, linger=0.2)
    changes = [first_change(t) for t in tasks]
    first = await asyncio.gather(*(lookup.tags_for(c) for c in changes))
    assert sorted(describer.batches) == [20, 50, 100]
    again = await asyncio.gather(*(lookup.tags_for(c) for c in changes))
    assert again == first
    assert stats.tag_cache_hits == 170
    assert len(describer.batches) == 3
    assert all(not f.tags for f in first[150:])  # not Prefect's: cached as such
    # Only Prefect's tags are kept in the cache.
    assert set(first[0].tags) == {"prefect.io/flow-run-id", "prefect.io/flow-run-name", "prefect.io/worker-name"}


async def test_task_unknown_to_ecs_is_reported_gone(aws: AwsClients) -> None:
    (task,) = await start_tasks(aws, 1)
    change = first_change(task)
    gone_arn = task.arn.rsplit("/", 1)[0] + "/ffffffffffffffffffffffffffffffff"
    body = json.loads(json.dumps(task.events[0]).replace(task.arn, gone_arn))
    gone = decode(json.dumps(body))
    assert isinstance(gone, TaskStateChange)
    stats = Stats()
    lookup = TagLookup(EcsDescriber(aws), MemoryTaskState(1000), stats, linger=0.01)
    known, unknown = await asyncio.gather(lookup.tags_for(change), lookup.tags_for(gone))
    assert known.described
    assert not unknown.described
    assert not unknown.tags
    assert stats.described_tasks == 1  # ECS named the other MISSING: asked about, never described


async def test_cache_is_bounded(aws: AwsClients) -> None:
    tasks = await start_tasks(aws, 30, tagged=False, cluster="bounded")
    describer = Throttled(EcsDescriber(aws), failures=0)
    lookup = TagLookup(describer, MemoryTaskState(10), Stats(), cache_size=10, linger=0.01)
    for task in tasks:
        await lookup.tags_for(first_change(task))
    await lookup.tags_for(first_change(tasks[0]))  # evicted long ago: described again
    assert len(describer.batches) == 31


async def test_in_a_backlog_slow_receives_still_share_one_call(aws: AwsClients) -> None:
    tasks = await start_tasks(aws, 30, cluster="backlog")
    describer = Throttled(EcsDescriber(aws), failures=0)
    lookup = TagLookup(describer, MemoryTaskState(1000), Stats(), linger=0.1)
    lookup.intake(full=True)  # receives come back full: a backlog
    waiting = []
    for task in tasks:  # slower than the linger, as receives from a loaded SQS are
        waiting.append(asyncio.ensure_future(lookup.tags_for(first_change(task))))
        await asyncio.sleep(0.02)
    assert describer.batches == []  # 0.6 s in, more than the 0.1-s linger: still gathering
    lookup.intake(full=False)  # a short receive: the backlog is drained
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=1)
    assert describer.batches == [30]


async def test_in_a_trickle_lookups_go_after_one_linger(aws: AwsClients) -> None:
    (task,) = await start_tasks(aws, 1, cluster="trickle")
    describer = Throttled(EcsDescriber(aws), failures=0)
    lookup = TagLookup(describer, MemoryTaskState(1000), Stats(), linger=0.1)
    lookup.intake(full=False)
    started = asyncio.get_running_loop().time()
    await lookup.tags_for(first_change(task))
    assert asyncio.get_running_loop().time() - started < 0.5
    assert describer.batches == [1]


class Answers:
    """DescribeTasks answering from a script, one answer for every task per call: what no real ECS does on
    demand (a new task MISSING for a moment, another account's task denied), the rest as ECS does."""

    def __init__(self, *script: Mapping[str, str] | DescribeFailure | None) -> None:
        self.script = list(script)
        self.calls = 0

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, TaskView | DescribeFailure | None]:
        self.calls += 1
        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        return {arn: described(arn, answer) if isinstance(answer, Mapping) else answer for arn in task_arns}


ARN = "arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef"
RUN_TAGS = {"prefect.io/flow-run-id": "7c2f4b1e-58c8-4d1b-9a4e-0f3c2d1b6a59"}


def change_at(when: datetime, override: str | None = None) -> TaskStateChange:
    decoded = decode(json.dumps(state_change(ARN, "PROVISIONING", 1, when, flow_run_id=override)))
    assert isinstance(decoded, TaskStateChange)
    return decoded


def lookup_with(describer: Answers, stats: Stats | None = None, failure_limit: float = 300.0) -> TagLookup:
    return TagLookup(
        describer,
        MemoryTaskState(100),
        stats or Stats(),
        linger=0.01,
        backoff=Backoff(0.02, 0.05),
        failure_limit=failure_limit,
    )


async def test_missing_just_after_runtask_is_asked_again_not_taken_for_gone() -> None:
    describer = Answers(None, None, RUN_TAGS)
    stats = Stats()
    lookup = lookup_with(describer, stats)
    found = await lookup.tags_for(change_at(datetime.now(UTC)))
    assert dict(found.tags) == RUN_TAGS
    assert describer.calls == 3
    assert stats.retries["describe_tasks"] == 2
    assert lookup.cached(ARN) == found  # never "gone" in the cache


async def test_missing_stays_gone_after_a_few_tries_and_at_once_for_an_old_change() -> None:
    young = Answers(None)
    assert await lookup_with(young).tags_for(change_at(datetime.now(UTC))) == GONE
    assert young.calls == MISSING_TRIES + 1
    old = Answers(None)
    assert await lookup_with(old).tags_for(change_at(datetime.now(UTC) - MISSING_GRACE - timedelta(seconds=1))) == GONE
    assert old.calls == 1


async def test_a_task_ecs_cannot_describe_is_retried_then_never_read_as_no_tags() -> None:
    denied = DescribeFailure("ACCESS_DENIED: not authorized for this task")
    describer = Answers(denied)
    lookup = lookup_with(describer, failure_limit=0.3)
    found = await lookup.tags_for(change_at(datetime.now(UTC) - timedelta(hours=1)))
    assert found.failure == denied.reason
    assert found != NO_TAGS
    assert describer.calls > 1
    assert lookup.cached(ARN) is None  # not kept: the next change asks again
    # Such a change is left for the dead-letter queue with the reason, never deleted as not Prefect's ...
    decision = unowned(change_at(datetime.now(UTC)), found)
    assert decision == Release(f"ECS cannot describe task {ARN}: ACCESS_DENIED: not authorized for this task")
    # ... unless the worker's environment override names its flow run.
    with_override = change_at(datetime.now(UTC), override=RUN_TAGS["prefect.io/flow-run-id"])
    assert str(flow_run_id(with_override, found.tags)) == RUN_TAGS["prefect.io/flow-run-id"]


async def test_a_denial_that_is_lifted_in_time_gives_the_tags() -> None:
    describer = Answers(DescribeFailure("ACCESS_DENIED"), RUN_TAGS)
    found = await lookup_with(describer).tags_for(change_at(datetime.now(UTC)))
    assert dict(found.tags) == RUN_TAGS


class _SaveFails(MemoryTaskState):
    async def save_tags(self, task_arn: str, tags: TaskTags, expires: datetime) -> None:
        raise RuntimeError("the state table is gone")


async def test_tags_that_cannot_be_saved_fail_the_waiting_changes_instead_of_holding_them() -> None:
    unretrieved: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context))
    describer = Answers(RUN_TAGS)
    lookup = TagLookup(describer, _SaveFails(100), Stats(), linger=0.01)
    waiting = [lookup.tags_for(change_at(datetime.now(UTC))) for _ in range(2)]  # one lookup for both
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), timeout=5)
    assert [str(error) for error in results] == ["the state table is gone"] * 2  # their messages stay queued
    assert lookup.cached(ARN) is None
    with pytest.raises(RuntimeError, match="state table"):
        await asyncio.wait_for(lookup.tags_for(change_at(datetime.now(UTC))), timeout=5)
    assert describer.calls == 2  # asked afresh: nothing was left in flight
    gc.collect()  # asyncio reports an exception nobody retrieved when its task is collected
    assert unretrieved == []  # the error reached its waiters alone: no "Task exception was never retrieved"

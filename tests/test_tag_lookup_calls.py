"""The tag lookup as ECS, the state table and `/metrics` see it: which DescribeTasks go, when, for which
tasks, what is counted, logged, saved and claimed (pipeline/tags.py), with no server.

Each test runs on the simulation's virtual loop (tests/sim/clock.py), the observer's clocks pointed at it,
so that a linger, a backoff or a five-minute failure limit takes no time and each call's instant is exact.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar

import pytest

from ecs_observer import TaskStateChange, decode
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.app.demo.samples import described, state_change
from ecs_observer.core.task_record import (
    ACTIVE_RETENTION,
    GONE,
    NO_TAGS,
    STOPPED_RETENTION,
    TaskRecord,
    TaskTags,
)
from ecs_observer.pipeline.config import ObserverConfig
from ecs_observer.pipeline.tags import TagLookup
from ecs_observer.pipeline.watch import StateWatch
from ecs_observer.ports import DescribeFailure, TaskView
from ecs_observer.support.backoff import Backoff
from ecs_observer.support.stats import Stats

from .sim.clock import VirtualClock
from .sim.clock import virtual as run_virtual

T = TypeVar("T")

CLOCK = VirtualClock()  # one for the module: each test moves it on from where the last left it
RUN_ID = "7c2f4b1e-58c8-4d1b-9a4e-0f3c2d1b6a59"
TAGGED = {"prefect.io/flow-run-id": RUN_ID, "team": "data"}
DENIED = DescribeFailure("ACCESS_DENIED")
Answer = TaskView | DescribeFailure | None
Scripts = Mapping[str, Sequence[Mapping[str, str] | DescribeFailure | None]]  # per task: tags, a failure, MISSING


def virtual(main: Callable[[], Awaitable[T]]) -> T:
    return run_virtual(main, CLOCK)


def now() -> float:
    return round(asyncio.get_running_loop().time(), 3)


def arn(n: int, cluster: str | None = "prefect", region: str = "us-east-1") -> str:
    where = f"{cluster}/" if cluster else ""
    return f"arn:aws:ecs:{region}:123456789012:task/{where}{n:032x}"


def change(task_arn: str, status: str = "PROVISIONING", when: datetime | None = None) -> TaskStateChange:
    """A change of the task just now (virtual time), unless `when` says otherwise."""
    decoded = decode(json.dumps(state_change(task_arn, status, 1, when or CLOCK.wall())))
    assert isinstance(decoded, TaskStateChange)
    return decoded


class Ecs:
    """DescribeTasks: each task answered from its script (the last answer repeats), tagged as Prefect's
    by default; `errors` fail the next calls whole, as a throttled account does."""

    def __init__(self, scripts: Scripts | None = None) -> None:
        self.scripts = {task: list(script) for task, script in (scripts or {}).items()}
        self.errors: list[Exception] = []
        self.calls: list[tuple[float, str, str | None, list[str]]] = []

    async def describe(self, region: str, cluster: str | None, task_arns: Sequence[str]) -> Mapping[str, Answer]:
        self.calls.append((now(), region, cluster, list(task_arns)))
        if self.errors:
            raise self.errors.pop(0)
        return {task: self._answer(task) for task in task_arns}

    def _answer(self, task: str) -> Answer:
        script = self.scripts.get(task, [TAGGED])
        answer = script.pop(0) if len(script) > 1 else script[0]
        return described(task, answer) if isinstance(answer, Mapping) else answer

    def times(self) -> list[float]:
        return [call[0] for call in self.calls]


class Store(MemoryTaskState):
    """The state table as one replica of several meets it: `claims` answers its claims in turn (the last
    repeats; True: this replica describes), `records` what its loads read in turn (the last repeats)."""

    poll_interval = 0.0  # the watch loads at once

    def __init__(self, claims: Sequence[bool] = (True,), records: Sequence[TaskRecord | None] = (None,)) -> None:
        super().__init__(1000)
        self.claims = list(claims)
        self.records = list(records)
        self.claimed: list[tuple[str, float]] = []
        self.loads = 0
        self.saved: list[tuple[str, TaskTags, datetime]] = []

    async def claim(self, task_arn: str, seconds: float) -> bool:
        self.claimed.append((task_arn, seconds))
        return self.claims.pop(0) if len(self.claims) > 1 else self.claims[0]

    async def load(self, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        self.loads += 1
        record = self.records.pop(0) if len(self.records) > 1 else self.records[0]
        return {task: record for task in task_arns if record is not None}

    async def save_tags(self, task_arn: str, tags: TaskTags, expires: datetime) -> None:
        self.saved.append((task_arn, tags, expires))


def prefects() -> TaskTags:
    return TaskTags(MappingProxyType({"prefect.io/flow-run-id": RUN_ID}))


def lookup(ecs: Ecs, store: Store | None = None, stats: Stats | None = None, **options: Any) -> TagLookup:
    return TagLookup(ecs, Store() if store is None else store, stats or Stats(), **options)


def test_describe_tasks_goes_per_region_and_cluster_at_most_100_tasks_a_call() -> None:
    ecs = Ecs({arn(n, "batch"): [None] for n in range(3)})  # MISSING, and the changes are old: gone
    stats = Stats()
    tasks = (
        [arn(n) for n in range(230)]
        + [arn(n, "batch") for n in range(3)]
        + [arn(n, region="eu-west-1") for n in range(2)]
        + [arn(n, cluster=None) for n in range(2)]
    )

    async def main() -> list[TaskTags]:
        tag_lookup = lookup(ecs, stats=stats, linger=0.05)
        old = CLOCK.wall() - ACTIVE_RETENTION
        changes = [change(task, when=old if "/batch/" in task else None) for task in tasks]
        return await asyncio.gather(*(tag_lookup.tags_for(c) for c in changes))

    found = virtual(main)
    assert found[:230] == [prefects()] * 230
    assert found[230:233] == [GONE] * 3
    assert sorted((region, str(cluster), len(arns)) for _, region, cluster, arns in ecs.calls) == [
        ("eu-west-1", "prefect", 2),
        ("us-east-1", "None", 2),
        ("us-east-1", "batch", 3),
        ("us-east-1", "prefect", 30),
        ("us-east-1", "prefect", 100),
        ("us-east-1", "prefect", 100),
    ]
    for _, region, cluster, arns in ecs.calls:  # each call names its tasks' own cluster and region
        assert all(task == arn(int(task[-32:], 16), cluster, region) for task in arns)
    assert sum(len(arns) for *_, arns in ecs.calls) == len(tasks)  # each task asked once
    assert stats.describe_calls == 6
    assert stats.described_tasks == len(tasks) - 3  # those MISSING were asked about, not described


def test_a_known_task_is_answered_from_the_cache_and_each_hit_counted() -> None:
    ecs = Ecs()
    stats = Stats()
    tag_lookup = lookup(ecs, stats=stats, linger=0.05)

    async def main() -> list[TaskTags]:
        return [await tag_lookup.tags_for(change(arn(1))) for _ in range(3)]

    assert virtual(main) == [prefects()] * 3
    assert len(ecs.calls) == 1
    assert stats.tag_cache_hits == 2
    assert tag_lookup.cached(arn(1)) == prefects()
    assert tag_lookup.cached(arn(2)) is None


def test_lookups_of_one_task_under_way_share_its_one_description() -> None:
    ecs = Ecs()
    tag_lookup = lookup(ecs, linger=0.05)

    async def main() -> list[TaskTags]:
        return await asyncio.gather(*(tag_lookup.tags_for(change(task)) for task in [arn(1), arn(1), arn(2), arn(1)]))

    assert virtual(main) == [prefects()] * 4
    assert [arns for *_, arns in ecs.calls] == [[arn(1), arn(2)]]


def test_tags_in_the_shared_state_are_taken_kept_and_counted_without_describing() -> None:
    ecs = Ecs()
    stats = Stats()
    store = Store()
    tag_lookup = lookup(ecs, store, stats, linger=0.05)
    theirs = TaskTags(MappingProxyType({"prefect.io/flow-run-id": "another"}))

    async def main() -> list[TaskTags]:
        return [
            await tag_lookup.tags_for(change(arn(1)), TaskRecord(tags=theirs)),
            await tag_lookup.tags_for(change(arn(1))),  # kept for the task's life
            await tag_lookup.tags_for(change(arn(2)), TaskRecord(tags=theirs)),
            await tag_lookup.tags_for(change(arn(3)), TaskRecord()),  # nobody described it yet
        ]

    assert virtual(main) == [theirs, theirs, theirs, prefects()]
    assert stats.shared_tag_hits == 2
    assert stats.tag_cache_hits == 1
    assert tag_lookup.cached(arn(1)) == theirs
    assert [arns for *_, arns in ecs.calls] == [[arn(3)]]
    assert store.claimed == [(arn(3), 30.0)]  # claimed for 30 seconds by default


def test_tags_a_sweep_learnt_are_kept_prefects_only_and_none_without_them() -> None:
    ecs = Ecs()
    tag_lookup = lookup(ecs, linger=0.05)
    assert tag_lookup.learn(arn(1), TAGGED) == prefects()
    assert tag_lookup.cached(arn(1)) == prefects()
    assert tag_lookup.learn(arn(2), {"team": "data"}) is None  # StopTask may have deleted them
    assert tag_lookup.cached(arn(2)) is None

    async def main() -> TaskTags:
        return await tag_lookup.tags_for(change(arn(1)))

    assert virtual(main) == prefects()
    assert ecs.calls == []


def test_a_lone_task_goes_after_one_quiet_linger_a_trickle_after_ten() -> None:
    ecs = Ecs()

    async def main() -> None:
        tag_lookup = lookup(ecs)  # the default linger: 0.05 s
        start = now()
        await tag_lookup.tags_for(change(arn(1)))
        assert ecs.times() == [round(start + 0.05, 3)]
        tag_lookup = lookup(ecs, linger=0.1)
        start = now()
        waiting = []
        for n in range(30):  # a task every 0.06 s: never quiet for a linger
            waiting.append(asyncio.ensure_future(tag_lookup.tags_for(change(arn(100 + n)))))
            await asyncio.sleep(0.06)
        await asyncio.gather(*waiting)
        first, second = ecs.calls[1:3]
        assert first[0] == round(start + 1.0, 3)  # ten lingers after its first task
        assert len(first[3]) == 17  # those asked within the second: 0, 0.06, ..., 0.96
        assert second[0] == round(start + 1.74 + 0.1, 3)  # the last task, then a quiet linger

    virtual(main)


def test_in_a_backlog_a_group_waits_fifty_lingers_unless_the_intake_catches_up() -> None:
    ecs = Ecs()

    async def main() -> None:
        tag_lookup = lookup(ecs, linger=0.05)
        tag_lookup.intake(full=True)  # before any group: a new one starts in the backlog
        start = now()
        await tag_lookup.tags_for(change(arn(1)))
        assert ecs.times() == [round(start + 2.5, 3)]
        tag_lookup.intake(full=False)
        await tag_lookup.tags_for(change(arn(2)))  # a trickle again: one quiet linger
        assert ecs.times()[1] == round(start + 2.55, 3)
        tag_lookup.intake(full=True)  # the group exists now: it is told too
        start = now()
        waiting = asyncio.ensure_future(tag_lookup.tags_for(change(arn(3))))
        await asyncio.sleep(1.0)
        assert len(ecs.calls) == 2  # still gathering
        tag_lookup.intake(full=False)  # a short receive: past ten lingers already, it goes at once
        await waiting
        assert ecs.times()[2] == round(start + 1.0, 3)
        tag_lookup.intake(full=True)
        waiting = asyncio.ensure_future(tag_lookup.tags_for(change(arn(4))))
        await asyncio.sleep(0.5)
        tag_lookup.flush()  # the in-flight bound is reached: nothing more can come
        start = now()
        await waiting
        assert ecs.times()[3] == start

    virtual(main)


def test_missing_just_after_runtask_is_asked_again_with_growing_waits_each_retry_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ecs = Ecs({arn(1): [None, None, None, None, TAGGED]})
    stats = Stats()
    caplog.set_level(logging.INFO, logger="ecs_observer")

    async def main() -> tuple[float, TaskTags]:
        tag_lookup = lookup(ecs, stats=stats, linger=0.05, backoff=Backoff(0.25, 1.0))
        return now(), await tag_lookup.tags_for(change(arn(1)))

    start, found = virtual(main)
    assert found == prefects()
    # Each retry waits its backoff (0.25, 0.5, then 1.0 at most), then a quiet linger.
    waits = [round(b - a, 3) for a, b in zip([start, *ecs.times()], ecs.times(), strict=False)]
    assert waits == [0.05, 0.3, 0.55, 1.05, 1.05]
    assert stats.retries == Counter({"describe_tasks": 4})
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            "ecs_observer.retry",
            logging.WARNING,
            f"DescribeTasks of {arn(1)} failed: MISSING, just after it started?; retrying (attempt {n})",
        )
        for n in range(1, 5)
    ]
    assert stats.dependencies.report()["ECS"]["answering"]  # ECS answered: no outage


def test_a_denied_task_is_asked_again_for_the_failure_limit_then_answered_with_the_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ecs = Ecs({arn(1): [DENIED], arn(2): [DENIED]})
    stats = Stats()
    store = Store()
    caplog.set_level(logging.WARNING, logger="ecs_observer")

    async def main() -> list[float]:
        tag_lookup = lookup(ecs, store, stats, linger=0.05, backoff=Backoff(1.0, 1.0), failure_limit=10.0)
        ended = []
        for task in [arn(1), arn(1), arn(2)]:  # each lookup asks for the whole limit again
            start = now()
            found = await tag_lookup.tags_for(change(task))
            ended.append(round(now() - start, 3))
            assert found == TaskTags(MappingProxyType({}), described=False, failure="ACCESS_DENIED")
            assert dict(found.tags) == {}
            assert found.described is False
            assert found != NO_TAGS
            assert tag_lookup.cached(task) is None  # never kept: the next change asks again
        return ended

    # Asked at 0.05, then every 1.05 s: the first answer past the 10 s limit (at 10.55) is final.
    assert virtual(main) == [10.55] * 3
    assert len(ecs.calls) == 3 * 11
    assert store.saved == []
    assert stats.retries == Counter({"describe_tasks": 30})
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("ecs_observer")]
    assert messages[:2] == [
        f"DescribeTasks of {arn(1)} failed: ACCESS_DENIED; retrying (attempt 1)",
        f"DescribeTasks of {arn(1)} failed: ACCESS_DENIED; retrying (attempt 2)",
    ]
    assert len(messages) == 30


def test_the_default_failure_limit_is_five_minutes() -> None:
    ecs = Ecs({arn(1): [DENIED]})

    async def main() -> float:
        tag_lookup = lookup(ecs, linger=0.05, backoff=Backoff(1.0, 1.0))
        start = now()
        await tag_lookup.tags_for(change(arn(1)))
        return now() - start

    assert round(virtual(main), 3) == 300.35  # asked at 0.05, then every 1.05 s: 286 retries pass 300 s


def test_a_failed_call_is_retried_whole_and_logged_as_an_ecs_outage_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ecs = Ecs()
    ecs.errors = [RuntimeError("Rate exceeded"), RuntimeError("Rate exceeded")]
    stats = Stats()
    caplog.set_level(logging.WARNING, logger="ecs_observer")

    async def main() -> list[TaskTags]:
        tag_lookup = lookup(ecs, stats=stats, linger=0.05)
        return await asyncio.gather(*(tag_lookup.tags_for(change(arn(n, cluster=None))) for n in range(3)))

    assert virtual(main) == [prefects()] * 3
    assert [len(arns) for *_, arns in ecs.calls] == [3, 3, 3]
    assert stats.describe_calls == 3
    assert stats.described_tasks == 3
    assert stats.retries == Counter({"describe_tasks": 2})
    failing = [r.getMessage() for r in caplog.records if "is failing" in r.getMessage()]
    assert failing == [
        "ECS is failing: DescribeTasks for 3 task(s) of cluster default in us-east-1 failed: Rate exceeded "
        "(retrying; logged once until it answers again)"
    ]


def test_described_tags_are_saved_for_the_tasks_life_in_the_shared_state() -> None:
    ecs = Ecs({arn(3): [None]})
    store = Store()

    async def main() -> tuple[TaskStateChange, TaskStateChange, TaskStateChange]:
        tag_lookup = lookup(ecs, store, linger=0.05)
        running, stopped = change(arn(1)), change(arn(2), "STOPPED")
        gone = change(arn(3), when=CLOCK.wall() - ACTIVE_RETENTION)
        await asyncio.gather(*(tag_lookup.tags_for(c) for c in (running, stopped, gone)))
        return running, stopped, gone

    running, stopped, gone = virtual(main)
    assert sorted(store.saved, key=lambda saved: saved[0]) == [
        (arn(1), prefects(), running.occurred + ACTIVE_RETENTION),
        (arn(2), prefects(), stopped.occurred + STOPPED_RETENTION),
        (arn(3), GONE, gone.occurred + ACTIVE_RETENTION),
    ]


def test_a_task_another_replica_claimed_is_awaited_in_the_shared_state_not_described() -> None:
    ecs = Ecs()
    stats = Stats()
    theirs = TaskTags(MappingProxyType({"prefect.io/flow-run-id": "another"}))
    claimed = TaskRecord(claimed_until=CLOCK.epoch_seconds() + 3600)
    store = Store(claims=[False], records=[claimed, claimed, TaskRecord(tags=theirs)])

    async def main() -> TaskTags:
        tag_lookup = lookup(ecs, store, stats, linger=0.05, claim_seconds=7.0)  # its own watch of the store
        found = await asyncio.wait_for(tag_lookup.tags_for(change(arn(1))), timeout=5)
        assert await tag_lookup.tags_for(change(arn(1))) == theirs  # kept
        return found

    assert virtual(main) == theirs
    assert ecs.calls == []
    assert store.claimed == [(arn(1), 7.0)]  # claimed once: the claim held until the tags came
    assert store.loads == 3
    assert stats.shared_tag_hits == 1
    assert stats.tag_cache_hits == 1


@pytest.mark.parametrize("left", [TaskRecord(claimed_until=1.0), None], ids=["claim-lapsed", "no-record"])
def test_a_claim_that_lapses_without_tags_is_taken_over_and_the_task_described(left: TaskRecord | None) -> None:
    ecs = Ecs()
    store = Store(claims=[False, True], records=[left])

    async def main() -> TaskTags:
        return await asyncio.wait_for(lookup(ecs, store, linger=0.05).tags_for(change(arn(1))), timeout=5)

    assert virtual(main) == prefects()
    assert [arns for *_, arns in ecs.calls] == [[arn(1)]]
    assert [task for task, _ in store.claimed] == [arn(1), arn(1)]
    assert store.loads == 1
    assert [task for task, *_ in store.saved] == [arn(1)]


class CountingWatch(StateWatch):
    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.asked: list[str] = []

    async def next(self, task_arn: str) -> TaskRecord | None:
        self.asked.append(task_arn)
        return await super().next(task_arn)


def test_configured_takes_each_setting_and_the_pipelines_watch() -> None:
    ecs = Ecs({arn(1): [None, TAGGED], arn(2): [DENIED]})
    theirs = TaskTags(MappingProxyType({"prefect.io/flow-run-id": "another"}))
    store = Store(claims=[True, True, False, True], records=[TaskRecord(tags=theirs)])
    config = ObserverConfig(
        cache_size=2, describe_linger=0.2, backoff=Backoff(1.0, 1.0), describe_claim=7.0, describe_failure_limit=3.0
    )
    watch = CountingWatch(store)

    async def main() -> None:
        tag_lookup = TagLookup.configured(ecs, store, Stats(), config, watch)
        start = now()
        assert await tag_lookup.tags_for(change(arn(1))) == prefects()  # MISSING first, asked again 1 s later
        assert ecs.times() == [round(start + 0.2, 3), round(start + 1.4, 3)]
        start = now()
        found = await tag_lookup.tags_for(change(arn(2)))  # denied: final past 3 s
        assert found.failure == "ACCESS_DENIED"
        assert round(now() - start, 3) == 3.8  # asked at 0.2, 1.4, 2.6 and 3.8
        assert await tag_lookup.tags_for(change(arn(3))) == theirs  # another replica held its claim
        assert watch.asked == [arn(3)]
        assert await tag_lookup.tags_for(change(arn(4))) == prefects()
        calls = len(ecs.calls)
        assert await tag_lookup.tags_for(change(arn(1))) == prefects()  # two tasks kept: evicted
        assert len(ecs.calls) == calls + 1

    virtual(main)
    assert {seconds for _, seconds in store.claimed} == {7.0}


class BlockingClaims(Store):
    """A state table that never answers a claim; a cancelled claim takes a moment to clean up."""

    def __init__(self) -> None:
        super().__init__()
        self.cleaned = False

    async def claim(self, task_arn: str, seconds: float) -> bool:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)
            self.cleaned = True
            raise
        raise AssertionError("unreachable")


def test_close_cancels_the_lookups_under_way_and_waits_for_them() -> None:
    store = BlockingClaims()

    async def main() -> None:
        tag_lookup = lookup(Ecs(), store, linger=0.05)
        waiting = asyncio.ensure_future(tag_lookup.tags_for(change(arn(1))))
        await asyncio.sleep(0.1)
        await tag_lookup.close()  # returns, though the lookup it cancelled ended so
        assert store.cleaned
        with pytest.raises(asyncio.CancelledError):
            await waiting

    virtual(main)

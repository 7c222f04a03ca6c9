"""`follows`: the previous state change of the same task, if less than 5 minutes earlier."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
import uuid
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from ecs_observer import TaskStateChange, decode
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.app.demo.samples import lifecycle
from ecs_observer.core.chain import Link, add_link, awaits_predecessor, choose_follows, kept_link
from ecs_observer.core.task_record import TaskRecord
from ecs_observer.pipeline.sequencer import Sequencer
from ecs_observer.pipeline.watch import StateWatch

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ARN = "arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef"


def link(version: int | None, at: datetime, follows: uuid.UUID | None = None) -> Link:
    return Link(uuid.uuid4(), version, at, follows)


def test_first_change_follows_nothing() -> None:
    assert choose_follows((), uuid.uuid4(), 1, T0) is None


def test_follows_previous_version() -> None:
    one, two = link(1, T0), link(2, T0 + timedelta(seconds=5))
    assert choose_follows((one, two), uuid.uuid4(), 3, T0 + timedelta(seconds=9)) == two.event_id


def test_four_minutes_59_seconds_chains_five_minutes_does_not() -> None:
    one = link(1, T0)
    assert choose_follows((one,), uuid.uuid4(), 2, T0 + timedelta(minutes=4, seconds=59)) == one.event_id
    assert (
        choose_follows((one,), uuid.uuid4(), 2, T0 + timedelta(minutes=4, seconds=59, microseconds=999_000))
        == one.event_id
    )
    assert choose_follows((one,), uuid.uuid4(), 2, T0 + timedelta(minutes=5)) is None
    assert choose_follows((one,), uuid.uuid4(), 2, T0 + timedelta(hours=1)) is None


def test_a_predecessor_that_occurred_later_chains_only_within_the_window() -> None:
    """Version order and time order can disagree (clock skew, `updatedAt` of another era): the version decides
    which change is the predecessor, and the 5-minute window holds in either direction."""
    later = link(1, T0 + timedelta(minutes=1))
    assert choose_follows((later,), uuid.uuid4(), 2, T0) == later.event_id
    far = link(1, T0 + timedelta(minutes=6))
    assert choose_follows((far,), uuid.uuid4(), 2, T0) is None
    edge = link(1, T0 + timedelta(minutes=5))
    assert choose_follows((edge,), uuid.uuid4(), 2, T0) is None


def test_out_of_order_versions_follow_the_lower_version_not_the_later_arrival() -> None:
    one, three = link(1, T0), link(3, T0 + timedelta(seconds=20))
    # Version 2 arrives after 3: it follows 1, not 3.
    assert choose_follows((one, three), uuid.uuid4(), 2, T0 + timedelta(seconds=10)) == one.event_id


def test_never_follows_itself() -> None:
    me = link(2, T0)
    assert choose_follows((me,), me.event_id, 2, T0) is None


def test_events_without_version_chain_by_time() -> None:
    early, late = link(None, T0), link(None, T0 + timedelta(seconds=30))
    assert choose_follows((early, late), uuid.uuid4(), None, T0 + timedelta(seconds=10)) == early.event_id


def test_awaits_predecessor_only_when_version_minus_one_unseen() -> None:
    assert not awaits_predecessor((), 1)
    assert not awaits_predecessor((), None)
    assert awaits_predecessor((), 2)
    assert not awaits_predecessor((link(1, T0),), 2)
    assert awaits_predecessor((link(1, T0),), 3)


def test_history_is_bounded_and_ordered() -> None:
    history: tuple[Link, ...] = ()
    for version in random.sample(range(1, 100), 99):
        history = add_link(history, link(version, T0 + timedelta(seconds=version)))
    assert len(history) == 32
    assert [entry.version for entry in history] == list(range(68, 100))


def changes(task_arn: str = ARN, count: int = 8, step: timedelta = timedelta(seconds=10)) -> list[TaskStateChange]:
    out = []
    for body in lifecycle(task_arn, T0, step=step):
        decoded = decode(json.dumps(body))
        assert isinstance(decoded, TaskStateChange)
        out.append(decoded)
    return out[:count]


async def follows_in_arrival_order(
    order: list[TaskStateChange], window: float = 2.0
) -> dict[uuid.UUID, uuid.UUID | None]:
    sequencer = Sequencer(MemoryTaskState(100), reorder_window=window)
    results = await asyncio.gather(*(sequencer.follows(c) for c in order))
    return {c.event_id: f for c, f in zip(order, results, strict=True)}


async def test_in_order_lifecycle_chains_each_to_previous() -> None:
    life = changes()
    follows = await follows_in_arrival_order(life)
    assert [follows[c.event_id] for c in life] == [None] + [c.event_id for c in life[:-1]]


async def test_shuffled_lifecycle_gets_same_follows_as_in_order() -> None:
    life = changes()
    expected = await follows_in_arrival_order(life)
    for seed in range(5):
        shuffled = life[:]
        random.Random(seed).shuffle(shuffled)
        assert await follows_in_arrival_order(shuffled) == expected


async def test_reversed_arrival_spaced_in_time_gets_same_follows() -> None:
    life = changes(count=3)
    store = MemoryTaskState(100)
    sequencer = Sequencer(store, reorder_window=2.0)
    late = asyncio.create_task(sequencer.follows(life[2]))
    await asyncio.sleep(0.1)
    assert not late.done()
    middle = asyncio.create_task(sequencer.follows(life[1]))
    await asyncio.sleep(0.1)
    # The middle one waits for the first, but is there to be followed at once: the last one is decided
    # (waits do not chain), and handed on after the middle one (the task's changes act in version order).
    assert await settled(store, life[2]) == life[1].event_id
    assert not late.done()
    assert not middle.done()
    assert await sequencer.follows(life[0]) is None
    assert await middle == life[0].event_id
    assert await late == life[1].event_id


async def test_predecessor_seen_means_no_wait() -> None:
    life = changes(count=2)
    sequencer = Sequencer(MemoryTaskState(100), reorder_window=30.0)
    await sequencer.follows(life[0])
    started = time.monotonic()
    assert await sequencer.follows(life[1]) == life[0].event_id
    assert time.monotonic() - started < 1.0


async def test_missing_predecessor_waits_only_the_window() -> None:
    life = changes(count=3)
    sequencer = Sequencer(MemoryTaskState(100), reorder_window=0.3)
    await sequencer.follows(life[0])
    # Version 2 never comes: 3 gives up after the window and follows 1 (20 s earlier).
    assert await sequencer.follows(life[2]) == life[0].event_id


@pytest.mark.parametrize("window", [0.0, 2.0])
async def test_redelivery_yields_identical_follows(window: float) -> None:
    life = changes(count=3)
    sequencer = Sequencer(MemoryTaskState(100), reorder_window=window)
    first = [await sequencer.follows(c) for c in (life[0], life[2])]  # 2 is missing: 3 follows 1
    await sequencer.follows(life[1])
    # Redelivered 3 keeps the follows it was forwarded with, though 2 is known now.
    assert await sequencer.follows(life[2]) == first[1] == life[0].event_id
    assert await sequencer.follows(life[0]) is None


async def test_tasks_do_not_wait_for_each_other() -> None:
    a, b = changes(ARN), changes(ARN.replace("0123", "9999"))
    sequencer = Sequencer(MemoryTaskState(100), reorder_window=5.0)
    await sequencer.follows(a[0])
    started = time.monotonic()
    assert await sequencer.follows(b[0]) is None
    assert await sequencer.follows(a[1]) == a[0].event_id
    assert time.monotonic() - started < 1.0


async def test_memory_store_is_bounded() -> None:
    store = MemoryTaskState(max_tasks=100)
    for n in range(1000):
        await store.record(f"task-{n}", link(1, T0), T0)
    assert len(store) == 100


def test_kept_link_is_the_changes_own_or_the_one_of_its_version() -> None:
    two, three = link(2, T0), link(3, T0 + timedelta(seconds=5))
    history = (two, three)
    assert kept_link(history, three.event_id, 3) == three  # a redelivery
    assert kept_link(history, uuid.uuid4(), 3) == three  # the same change under another id
    assert kept_link(history, uuid.uuid4(), 4) is None
    assert kept_link((link(None, T0),), uuid.uuid4(), None) is None  # without a version, nothing to compare


async def test_the_same_change_under_another_id_is_a_duplicate_of_the_first() -> None:
    life = changes(count=3)
    sequencer = Sequencer(MemoryTaskState(100), reorder_window=2.0)
    for change in life:
        await sequencer.sequence(change)
    again = dataclasses.replace(life[1], event_id=uuid.uuid4())
    kept = await sequencer.sequence(again)
    assert (kept.event_id, kept.follows) == (life[1].event_id, life[0].event_id)


async def settled(store: MemoryTaskState, change: TaskStateChange) -> uuid.UUID | str | None:
    """What the store holds as the change's `follows` ("pending": not decided yet)."""
    record = (await store.load([change.task_arn]))[change.task_arn]
    kept = kept_link(record.links, change.event_id, change.version)
    assert kept is not None
    return "pending" if kept.pending else kept.follows


def shared_store(poll_interval: float) -> MemoryTaskState:
    """A store that replicas see each other's writes in only by reading it, as the state table."""
    store = MemoryTaskState(100)
    store.poll_interval = poll_interval
    return store


async def test_replicas_chain_a_reversed_backlog_without_waits_chaining() -> None:
    """Versions 8..2 arrive first, spread over two replicas; version 1 arrives a second later.

    Each change is there to be followed as soon as it arrives (pending), so 8..3 are decided at once
    and only 2 waits, for 1. Were a change there only once decided, 8 would wait
    for 7 to be decided, 7 for 6, ...: seven hops between replicas, a look (0.25 s) each, after 1's
    arrival, and the window would run out before the end of the chain.
    """
    store = shared_store(poll_interval=0.25)
    a, b = Sequencer(store, reorder_window=2.0), Sequencer(store, reorder_window=2.0)
    life = changes()
    waiting = [asyncio.create_task((a if n % 2 else b).follows(c)) for n, c in enumerate(life) if n > 0]
    await asyncio.sleep(1.0)
    assert [await settled(store, c) for c in life[1:]] == ["pending"] + [c.event_id for c in life[1:-1]]
    assert await a.follows(life[0]) is None
    assert await asyncio.gather(*waiting) == [c.event_id for c in life[:-1]]


class _SlowWrites(MemoryTaskState):
    """A shared store whose writes take `latency` to land, as DynamoDB's do under load."""

    def __init__(self, latency: float) -> None:
        super().__init__(100)
        self.poll_interval = 0.05
        self.latency = latency

    async def record(self, task_arn: str, link: Link, expires: datetime) -> Link:
        await asyncio.sleep(self.latency)
        return await super().record(task_arn, link, expires)


async def test_the_window_counts_from_the_waiting_changes_record_not_the_stores_latency() -> None:
    """Version 2 arrives at 0 on one replica, version 1 at 0.4 on another; each write takes 0.6 s.

    2 is in the store at 0.6 and 1 at 1.0: 0.4 s apart, as they arrived, within the 0.8-s window. Counted
    from arrival, 2's window would end at 0.8, before 1 lands, and the store's latency would have eaten it.
    """
    store = _SlowWrites(latency=0.6)
    a, b = Sequencer(store, reorder_window=0.8), Sequencer(store, reorder_window=0.8)
    first, second = changes(count=2)
    waiting = asyncio.create_task(a.follows(second))
    await asyncio.sleep(0.4)
    assert await b.follows(first) is None
    assert await waiting == first.event_id


async def test_another_change_of_the_task_recorded_meanwhile_starts_the_window_again() -> None:
    """3 waits for 2 (window 0.6 s); 4 is recorded at 0.4 on another replica, 2 arrives there at 0.8.

    The task's changes were still being handed on at 0.4, so 3 waits until 1.0 and finds 2.
    """
    store = shared_store(poll_interval=0.05)
    a, b = Sequencer(store, reorder_window=0.6), Sequencer(store, reorder_window=0.6)
    _, second, third, fourth = changes(count=4)
    waiting = asyncio.create_task(a.follows(third))
    await asyncio.sleep(0.4)
    assert await b.follows(fourth) == third.event_id  # 3 is there, pending: 4 follows it at once
    await asyncio.sleep(0.4)
    late = asyncio.create_task(b.follows(second))
    assert await waiting == second.event_id
    assert await late is None  # 1 never comes


class _ReadThenPause(MemoryTaskState):
    """Reads as the store does, then holds the answer back until released: a slow round trip."""

    def __init__(self) -> None:
        super().__init__(100)
        self.poll_interval = 0.01
        self.release = asyncio.Event()
        self.reads = 0

    async def load(self, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        found = await super().load(task_arns)
        self.reads += 1
        await self.release.wait()
        return found


async def test_a_watch_answers_with_a_read_made_after_the_question() -> None:
    store = _ReadThenPause()
    watch = StateWatch(store)
    life = changes(count=2)
    early = asyncio.create_task(watch.next(ARN))
    while not store.reads:  # the first read is under way
        await asyncio.sleep(0.01)
    await store.record(ARN, Link(life[0].event_id, 1, life[0].occurred, None), T0 + timedelta(days=1))
    late = asyncio.create_task(watch.next(ARN))  # asked after the write: must see it
    store.release.set()
    assert await early is None
    record = await late
    assert record is not None
    assert [entry.event_id for entry in record.links] == [life[0].event_id]
    await watch.close()


def test_version_order_wins_over_time_order() -> None:
    one, two = link(1, T0 + timedelta(seconds=20)), link(2, T0 + timedelta(seconds=10))  # clocks disagree
    assert choose_follows((one, two), uuid.uuid4(), 3, T0 + timedelta(seconds=30)) == two.event_id
    # Two changes at the same instant go by version.
    first, second = link(1, T0), link(2, T0)
    assert choose_follows((second, first), uuid.uuid4(), 3, T0) == second.event_id


def test_changes_without_a_version_come_before_any_with_one() -> None:
    old_era = link(None, T0 + timedelta(seconds=50))  # later in time, but says nothing of its place
    one = link(1, T0)
    assert choose_follows((old_era, one), uuid.uuid4(), 2, T0 + timedelta(seconds=60)) == one.event_id
    zero = link(0, T0)
    assert choose_follows((old_era, zero), uuid.uuid4(), 1, T0 + timedelta(seconds=60)) == zero.event_id


def test_the_same_change_under_another_id_is_never_its_predecessor() -> None:
    one, twin = link(1, T0), link(2, T0 + timedelta(seconds=10))
    assert choose_follows((one, twin), uuid.uuid4(), 2, twin.occurred) == one.event_id


def test_a_change_without_a_version_is_found_by_its_id() -> None:
    old_era = link(None, T0)
    assert kept_link((old_era,), old_era.event_id, None) == old_era


async def test_a_change_placed_pending_by_a_replica_with_an_older_history_is_settled_by_one_that_knows_more() -> None:
    """Seed 1683: version 2 delivered twice, to two replicas. One had loaded the task before version 1 was
    recorded and placed 2 as pending, to wait for it; the other, whose history had 1, decided 2 at once, but
    its write found 2 there, pending, and it forwarded that: `follows` None. The first settling wins instead."""
    store = shared_store(poll_interval=0.05)
    a, b = Sequencer(store, reorder_window=2.0), Sequencer(store, reorder_window=2.0)
    first, second = changes(count=2)
    await a.follows(first)
    knows_first = (await store.load([ARN]))[ARN].links
    waiting = asyncio.create_task(a.sequence(second, history=()))  # loaded before 1 was recorded
    while (await settled(store, second) if len((await store.load([ARN]))[ARN].links) > 1 else None) != "pending":
        await asyncio.sleep(0.01)
    kept = await b.sequence(second, history=knows_first)
    assert (kept.follows, kept.pending) == (first.event_id, False)
    assert (await waiting).follows == first.event_id

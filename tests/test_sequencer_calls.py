"""The sequencer as the state table sees it: what a change costs in reads and writes, and what it waits for.

A change whose predecessor is recorded goes at once with one write; a redelivery of a decided change writes
nothing and keeps its `follows`; a change that arrives before its predecessor is recorded pending, then
settled to follow it once it comes (or, when it never comes, once the window has been quiet); the same change
under another event id is answered with the first one's link. No server: the single-replica store, counted,
in virtual time (the waits are exact, whatever the machine's load).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta

from ecs_observer import TaskStateChange, decode
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.app.demo.samples import state_change
from ecs_observer.core.chain import Link
from ecs_observer.core.task_record import STOPPED_RETENTION, TaskRecord
from ecs_observer.pipeline.sequencer import Sequencer

from .sim.clock import EPOCH, in_virtual_time

ARN = "arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef"
START = EPOCH - timedelta(minutes=1)  # the virtual clock's wall time starts at EPOCH
WINDOW = 0.3


class Counted(MemoryTaskState):
    """The single-replica store, each call counted, each write's expiry kept."""

    def __init__(self) -> None:
        super().__init__(100)
        self.calls: Counter[str] = Counter()
        self.expiries: list[datetime] = []

    async def load(self, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        self.calls["load"] += 1
        return await super().load(task_arns)

    async def record(self, task_arn: str, link: Link, expires: datetime) -> Link:
        self.calls["record"] += 1
        self.expiries.append(expires)
        return await super().record(task_arn, link, expires)

    async def settle(self, task_arn: str, link: Link, expires: datetime) -> Link:
        self.calls["settle"] += 1
        self.expiries.append(expires)
        return await super().settle(task_arn, link, expires)


def change(version: int, status: str = "RUNNING", event_id: uuid.UUID | None = None) -> TaskStateChange:
    body = state_change(ARN, status, version, START + timedelta(seconds=10 * version), event_id=event_id)
    decoded = decode(json.dumps(body))
    assert isinstance(decoded, TaskStateChange)
    return decoded


async def until(condition: Callable[[], bool]) -> None:
    """Wait (in virtual time) for `condition`, failing rather than spinning when it never comes."""
    async with asyncio.timeout(WINDOW):
        while not condition():
            await asyncio.sleep(0.01)


async def started() -> tuple[Counted, Sequencer, TaskStateChange]:
    """A counted store, and a sequencer that has recorded the task's first change in it."""
    store = Counted()
    sequencer = Sequencer(store, WINDOW)
    first = change(1, "PROVISIONING")
    await sequencer.sequence(first)
    return store, sequencer, first


@in_virtual_time
async def test_a_change_after_its_recorded_predecessor_goes_at_once_with_one_write() -> None:
    store = Counted()
    sequencer = Sequencer(store, WINDOW)
    first, second = change(1, "PROVISIONING"), change(2, "PENDING")
    assert await sequencer.follows(first) is None  # the first change follows nothing
    loop = asyncio.get_running_loop()
    began = loop.time()
    kept = await sequencer.sequence(second)
    assert loop.time() - began < WINDOW / 2  # no wait: its predecessor is known
    assert (kept.event_id, kept.follows, kept.pending) == (second.event_id, first.event_id, False)
    assert store.calls == Counter(load=2, record=2)  # one read and one write each, no settle


@in_virtual_time
async def test_a_history_given_with_the_batch_saves_the_read() -> None:
    store = Counted()
    sequencer = Sequencer(store, WINDOW)
    first = change(1, "PROVISIONING")
    await sequencer.sequence(first, ())
    assert store.calls == Counter(record=1)
    links = (await store.load([ARN]))[ARN].links
    store.calls.clear()
    kept = await sequencer.sequence(change(2, "PENDING"), links)
    assert kept.follows == first.event_id
    assert store.calls == Counter(record=1)


@in_virtual_time
async def test_a_redelivered_change_keeps_its_follows_and_writes_nothing() -> None:
    store = Counted()
    sequencer = Sequencer(store, WINDOW)
    first, second = change(1, "PROVISIONING"), change(2, "PENDING")
    await sequencer.sequence(first)
    decided = await sequencer.sequence(second)
    store.calls.clear()
    again = await sequencer.sequence(second)
    assert again == decided
    assert store.calls == Counter(load=1)


@in_virtual_time
async def test_the_same_change_under_another_id_is_answered_with_the_first_ones_link() -> None:
    store, sequencer, first = await started()
    twin = change(1, "PROVISIONING", event_id=uuid.uuid4())
    kept = await sequencer.sequence(twin)
    assert kept.event_id == first.event_id
    assert store.calls["record"] == 1  # the twin wrote nothing


@in_virtual_time
async def test_a_change_before_its_predecessor_waits_pending_then_follows_it() -> None:
    store, sequencer, first = await started()
    second, third = change(2, "PENDING"), change(3, "RUNNING")
    waiting = asyncio.create_task(sequencer.sequence(third))
    await until(lambda: store.calls["record"] == 2)  # the third, recorded pending: the second can follow it
    pending = (await store.load([ARN]))[ARN].links
    assert [(link.version, link.pending) for link in pending] == [(1, False), (3, True)]
    assert not waiting.done()
    kept_second = await sequencer.sequence(second)
    kept_third = await asyncio.wait_for(waiting, timeout=5 * WINDOW)
    assert kept_second.follows == first.event_id
    assert (kept_third.follows, kept_third.pending) == (second.event_id, False)
    assert store.calls["settle"] == 1  # the pending record settled, once


@in_virtual_time
async def test_a_predecessor_that_never_comes_costs_one_quiet_window() -> None:
    store, sequencer, first = await started()
    loop = asyncio.get_running_loop()
    began = loop.time()
    kept = await asyncio.wait_for(sequencer.sequence(change(3, "RUNNING")), timeout=10 * WINDOW)
    waited = loop.time() - began
    assert WINDOW <= waited < 3 * WINDOW
    assert (kept.follows, kept.pending) == (first.event_id, False)  # the latest change recorded before it
    assert (store.calls["record"], store.calls["settle"]) == (2, 1)


@in_virtual_time
async def test_a_stopped_changes_links_expire_after_the_stopped_retention() -> None:
    store = Counted()
    sequencer = Sequencer(store, WINDOW)
    stopped = change(1, "STOPPED")
    await sequencer.sequence(stopped)
    assert store.expiries == [stopped.occurred + STOPPED_RETENTION]


@in_virtual_time
async def test_a_later_change_returns_after_an_earlier_one_it_follows_pending() -> None:
    """Handed on in version order: the pipeline then proposes the task's states in that order."""
    store, sequencer, _ = await started()
    second, third = change(2, "PENDING"), change(3, "RUNNING")
    order: list[int] = []

    async def sequenced(c: TaskStateChange) -> None:
        await sequencer.sequence(c)
        order.append(c.version or 0)

    later = asyncio.create_task(sequenced(third))
    await until(lambda: store.calls["record"] == 2)
    await asyncio.wait_for(asyncio.gather(sequenced(second), later), timeout=5 * WINDOW)
    assert order == [2, 3]

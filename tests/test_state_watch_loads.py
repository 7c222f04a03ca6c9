"""The state watch's loads as the state table sees them (pipeline/watch.py): one at a time, an interval
apart, each task once, at most 100 tasks a load; with no poll interval each question loads at once.

In virtual time (tests/sim/clock.py): each load's instant is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import TypeVar

from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.core.task_record import TaskRecord
from ecs_observer.pipeline.watch import StateWatch

from .sim.clock import virtual

T = TypeVar("T")


def now() -> float:
    return round(asyncio.get_running_loop().time(), 3)


class Table(MemoryTaskState):
    """A state table polled every `poll_interval` seconds; each load noted with its instant and tasks."""

    def __init__(self, poll_interval: float) -> None:
        super().__init__(1000)
        self.poll_interval = poll_interval
        self.loads: list[tuple[float, list[str]]] = []

    async def load(self, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        self.loads.append((now(), sorted(task_arns)))
        return {arn: TaskRecord(claimed_until=1.0) for arn in task_arns if arn.startswith("known")}


def tasks(n: int, prefix: str = "known") -> list[str]:
    return [f"{prefix}-{i:03}" for i in range(n)]


def test_many_waiting_tasks_are_loaded_100_at_a_time_one_load_an_interval_apart() -> None:
    table = Table(poll_interval=0.25)

    async def main() -> list[TaskRecord | None]:
        watch = StateWatch(table)
        return await asyncio.gather(*(watch.next(arn) for arn in tasks(250)))

    assert virtual(main) == [TaskRecord(claimed_until=1.0)] * 250
    # A full load goes at once, the next an interval after it.
    assert [(at, len(arns)) for at, arns in table.loads] == [(0.0, 100), (0.25, 100), (0.5, 50)]
    assert sorted(arn for _, arns in table.loads for arn in arns) == tasks(250)


def test_a_task_many_wait_on_is_loaded_once_for_all() -> None:
    table = Table(poll_interval=0.25)

    async def main() -> list[TaskRecord | None]:
        watch = StateWatch(table)
        return await asyncio.gather(*(watch.next(arn) for arn in ["known-1", "known-1", "unknown", "known-1"]))

    assert virtual(main) == [TaskRecord(claimed_until=1.0)] * 2 + [None, TaskRecord(claimed_until=1.0)]
    assert table.loads == [(0.25, ["known-1", "unknown"])]


def test_the_watch_takes_its_batch_size_and_spaces_loads_after_each_ends() -> None:
    table = Table(poll_interval=1.0)

    async def main() -> None:
        watch = StateWatch(table, max_per_load=3)
        await asyncio.gather(*(watch.next(arn) for arn in tasks(7)))
        await asyncio.sleep(5)
        await watch.next("known-late")  # long after the last: one interval after it was asked
        await watch.close()

    virtual(main)
    assert [(at, len(arns)) for at, arns in table.loads] == [(0.0, 3), (1.0, 3), (2.0, 1), (8.0, 1)]


def test_with_no_poll_interval_each_question_loads_at_once() -> None:
    table = Table(poll_interval=0.0)

    async def main() -> list[TaskRecord | None]:
        watch = StateWatch(table)
        return await asyncio.gather(*(watch.next(arn) for arn in ["known-1", "known-2", "known-1"]))

    assert virtual(main) == [TaskRecord(claimed_until=1.0)] * 3
    assert table.loads == [(0.0, ["known-1"]), (0.0, ["known-2"]), (0.0, ["known-1"])]

"""What the sweep's tests need beyond tests/world.py: flow runs on ECS tasks, a clock to move, and ECS
answers moto cannot give.

moto stops a task with exit code 0, no stop code, no `startedAt` or `stoppedAt`, and no version;
`Overlay` puts what real ECS would answer over moto's own answer for the tasks a test names (a
container that exited 1, a task that never started). Everything else is moto's.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ecs_observer.adapters.ecs import EcsDescriber, EcsStopper
from ecs_observer.app.demo.sandbox import MOTO_ACCOUNT
from ecs_observer.core.ecs_event import Container
from ecs_observer.core.task_view import DescribeFailure, TaskView
from ecs_observer.pipeline.observer import Observer

from .runs import make_flow_run
from .servers import PrefectServer

ACCOUNT = MOTO_ACCOUNT


@dataclass
class Clock:
    """The sweep's clock: now, moved on by the test (the grace passes without waiting for it)."""

    offset: timedelta = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, minutes: float) -> None:
        self.offset += timedelta(minutes=minutes)


@dataclass
class Overlay:
    """moto's DescribeTasks, with the fields of `views` laid over the tasks they name."""

    real: EcsDescriber
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    described: list[str] = field(default_factory=list)

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, TaskView | DescribeFailure | None]:
        self.described.extend(task_arns)
        found = dict(await self.real.describe(region, cluster, task_arns))
        for arn, fields in self.views.items():
            view = found.get(arn)
            if isinstance(view, TaskView):
                found[arn] = replace(view, **fields)
        return found


def failed(exit_code: int | None = 1, *, started: bool = True, ago: float = 10, **fields: Any) -> dict[str, Any]:
    """Fields of a task that stopped `ago` minutes ago, its container with this exit code."""
    at = datetime.now(UTC) - timedelta(minutes=ago)
    return {
        "last_status": "STOPPED",
        "desired_status": "STOPPED",
        "stopped_at": at,
        "started_at": at - timedelta(minutes=5) if started else None,
        "stop_code": "EssentialContainerExited",
        "stopped_reason": "Essential container in task exited",
        "containers": (Container("prefect", exit_code, None),),
        **fields,
    }


@dataclass
class CountingStopper:
    real: EcsStopper
    stopped: Counter[str] = field(default_factory=Counter)
    reasons: dict[str, str] = field(default_factory=dict)

    async def stop(self, region: str, cluster: str, task_arn: str, reason: str) -> None:
        self.stopped[task_arn] += 1
        self.reasons[task_arn] = reason
        await self.real.stop(region, cluster, task_arn, reason)


def run_on(prefect: PrefectServer, state_type: str, cluster_arn: str | None, task_arn: str | None) -> str:
    """A flow run in `state_type` whose worker started this task (its `infrastructure_pid`)."""
    run_id = make_flow_run(prefect, state_type)
    if task_arn is not None:
        pid = f"{cluster_arn}::{task_arn}" if cluster_arn else task_arn
        prefect.call("PATCH", f"/flow_runs/{run_id}", json={"infrastructure_pid": pid})
    return run_id


@asynccontextmanager
async def running(observer: Observer) -> AsyncIterator[Observer]:
    """The observer's loops running (on an empty queue) while the test sweeps."""
    task = asyncio.create_task(observer.run())
    try:
        yield observer
    finally:
        observer.stop("test over")
        await asyncio.wait_for(task, timeout=60)

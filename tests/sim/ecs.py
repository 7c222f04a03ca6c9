"""ECS as the observer sees it: DescribeTasks with tags, StopTask, task definitions and container logs.

A task is MISSING for `ecs_missing_for` seconds after it starts (DescribeTasks
is eventually consistent right after RunTask), may be undescribable for a while
(ACCESS_DENIED), and always MISSING when its tags are "gone" (it stopped long
ago). Its status at any moment is the one of its lifecycle's changes that
occurred last; StopTask stops it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from ecs_observer.core.ecs_event import Container
from ecs_observer.core.run_states import LogSource
from ecs_observer.ports import DescribeFailure, TaskView

from .clock import VirtualClock
from .faults import Faults, SimError
from .life import Life

__all__ = ["EcsTask", "SimEcs"]


@dataclass
class EcsTask:
    arn: str
    task_id: str
    region: str
    cluster_arn: str
    definition_arn: str
    tags: Mapping[str, str]
    statuses: list[tuple[datetime, str, int]]  # (occurred, lastStatus, version), in version order
    exit_code: int | None  # of the orchestration container when it stops
    stop_code: str
    started: float  # virtual seconds: when it was started (RunTask)
    gone: bool = False  # ECS no longer knows it
    denied_until: float = 0.0
    stops: list[str] = field(default_factory=list)  # StopTask reasons


class SimEcs:
    def __init__(self, faults: Faults, clock: VirtualClock) -> None:
        self._faults = faults
        self._clock = clock
        self.tasks: dict[str, EcsTask] = {}
        self.definitions_logging: set[str] = set()  # definitions whose container logs with awslogs
        self.deregistered: list[str] = []
        self.describes = 0

    def add(self, task: EcsTask) -> None:
        self.tasks[task.arn] = task

    def view(self, task: EcsTask) -> TaskView:
        wall = self._clock.wall()
        seen = [s for s in task.statuses if s[0] <= wall] or task.statuses[:1]
        occurred, status, version = seen[-1]
        stopped = status == "STOPPED"
        return TaskView(
            task_arn=task.arn,
            task_id=task.task_id,
            region=task.region,
            last_status=status,
            desired_status="STOPPED" if stopped or task.stops else "RUNNING",
            version=version,
            tags=MappingProxyType(dict(task.tags)),
            cluster_arn=task.cluster_arn,
            task_definition_arn=task.definition_arn,
            created_at=task.statuses[0][0],
            started_at=task.statuses[min(3, len(task.statuses) - 1)][0] if len(task.statuses) > 3 else None,
            stopped_at=occurred if stopped else None,
            stop_code=task.stop_code if stopped else None,
            stopped_reason="Essential container in task exited" if stopped else None,
            containers=(Container("prefect", task.exit_code if stopped else None, None),),
        )

    async def describe(
        self, life: Life, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, TaskView | DescribeFailure | None]:
        await life.pause(self._faults.latency(0.05))
        if self._faults.happens("ecs: DescribeTasks throttled", self._faults.plan.ecs_error):
            raise SimError("ThrottlingException: Rate exceeded")
        self.describes += 1
        now = asyncio.get_running_loop().time()
        found: dict[str, TaskView | DescribeFailure | None] = {}
        for arn in task_arns:
            task = self.tasks.get(arn)
            if task is not None and not _where(task, region, cluster):
                task = None  # ECS answers a task of another region or cluster as MISSING
            if task is None or task.gone or now < task.started + self._faults.plan.ecs_missing_for:
                if task is not None and not task.gone:
                    self._faults.exercised["ecs: MISSING right after RunTask"] += 1
                found[arn] = None
            elif now < task.denied_until:
                self._faults.exercised["ecs: a task undescribable for a while"] += 1
                found[arn] = DescribeFailure("ACCESS_DENIED: not authorized")
            else:
                found[arn] = self.view(task)
        await life.check()
        return found

    async def stop(self, life: Life, region: str, cluster: str, task_arn: str, reason: str) -> None:
        await life.pause(self._faults.latency(0.05))
        if self._faults.happens("ecs: StopTask throttled", self._faults.plan.ecs_error):
            raise SimError("ThrottlingException")
        task = self.tasks.get(task_arn)
        if task is not None and not _where(task, region, cluster):
            raise SimError("InvalidParameterException: The referenced task was not found.")
        if task is not None:
            task.stops.append(reason)
        await life.check()

    async def log_source(self, life: Life, arn: str, container: str) -> LogSource | None:
        await life.pause(self._faults.latency(0.05))
        if arn not in self.definitions_logging:
            return None
        return LogSource("/ecs/prefect", "prefect", "us-east-1", container)

    async def deregister(self, life: Life, arn: str) -> None:
        await life.pause(self._faults.latency(0.05))
        self.deregistered.append(arn)
        await life.check()

    async def tail(self, life: Life, source: LogSource, task_id: str, lines: int) -> list[tuple[datetime, str]] | None:
        await life.pause(self._faults.latency(0.05))
        task = next((t for t in self.tasks.values() if t.task_id == task_id), None)
        if task is None:
            return None
        last = task.statuses[-1][0]
        return [(last, f"{task_id} line {n}") for n in range(min(lines, 3))]


class EcsView:
    """ECS as one replica reaches it: `TaskDescriber`, `TaskStopper`, `TaskDefinitions`, `ContainerLogs`."""

    def __init__(self, ecs: SimEcs, life: Life, tally: Counter[str]) -> None:
        self._ecs = ecs
        self._life = life
        self.tally = tally  # what the replica asked and was answered (shared by its views)

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, TaskView | DescribeFailure | None]:
        self.tally["describe_calls"] += 1
        found = await self._ecs.describe(self._life, region, cluster, task_arns)
        self.tally["described_tasks"] += sum(isinstance(view, TaskView) for view in found.values())
        return found

    async def stop(self, region: str, cluster: str, task_arn: str, reason: str) -> None:
        await self._ecs.stop(self._life, region, cluster, task_arn, reason)
        self.tally["tasks_stopped"] += 1

    async def log_source(self, arn: str, container: str) -> LogSource | None:
        return await self._ecs.log_source(self._life, arn, container)

    async def deregister(self, arn: str) -> None:
        await self._ecs.deregister(self._life, arn)
        self.tally["deregistered"] += 1

    async def tail(self, source: LogSource, task_id: str, lines: int) -> list[tuple[datetime, str]] | None:
        return await self._ecs.tail(self._life, source, task_id, lines)


def _where(task: EcsTask, region: str, cluster: str | None) -> bool:
    """Whether a call to `region` and `cluster` (its ARN, its name, or None: the default cluster) reaches the task."""
    name = task.cluster_arn.rsplit("/", 1)[-1]
    return region == task.region and (cluster or "default") in (task.cluster_arn, name)

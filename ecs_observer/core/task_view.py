"""A task as DescribeTasks shows it, and the observation a sweep makes of it.

The event path learns of a task from EventBridge; the sweep asks ECS. Both end
in one value, `TaskStateChange`, so that the policy and the effects cannot tell
them apart but by its `source`: a sweep's stopped task does exactly what its
lost STOPPED event would have done.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from uuid import UUID, uuid5

from .ecs_event import FLOW_RUN_ID_ENV, TASK_ARN, Container, Stop, TaskStateChange, parse_uuid

__all__ = ["SWEEP_NAMESPACE", "DescribeFailure", "TaskView", "observation", "sweep_event_id", "view_of"]


# Sweep events' ids: derived from task and version, so that replicas and later sweeps agree.
SWEEP_NAMESPACE = UUID("6f1c2a1e-3b7d-4c55-9e0a-5d2b8f4e7c31")


@dataclass(frozen=True, slots=True)
class DescribeFailure:
    """ECS answered a failure other than MISSING for one task (ACCESS_DENIED for another account's, ...)."""

    reason: str


@dataclass(frozen=True, slots=True)
class TaskView:
    """What DescribeTasks answers of one task (times in UTC; all tags, not only Prefect's)."""

    task_arn: str
    task_id: str
    region: str
    last_status: str
    desired_status: str | None
    version: int | None
    tags: Mapping[str, str]
    cluster_arn: str | None
    task_definition_arn: str | None
    created_at: datetime | None
    started_at: datetime | None
    stopped_at: datetime | None
    stop_code: str | None
    stopped_reason: str | None
    containers: tuple[Container, ...] = ()
    flow_run_id_override: UUID | None = None

    @property
    def stopped(self) -> bool:
        return self.last_status == "STOPPED"


def sweep_event_id(task_arn: str, version: int | None) -> UUID:
    """The same id on every replica and every sweep for one stopped task."""
    return uuid5(SWEEP_NAMESPACE, f"{task_arn}#{version if version is not None else 'STOPPED'}")


def observation(view: TaskView, seen: datetime, run_id: UUID | None = None) -> TaskStateChange:
    """The state change a sweep observed: what the task's STOPPED event would have said. `seen` stands
    for the time ECS did not give (`stoppedAt`); `run_id`, for the flow run when neither the task's tags
    nor its environment override name it (StopTask deletes a task's tags): the run whose
    `infrastructure_pid` names the task."""
    occurred = view.stopped_at or seen
    stop = (
        Stop(view.stop_code, view.stopped_reason, view.containers, started=view.started_at is not None)
        if view.stopped
        else None
    )
    return TaskStateChange(
        event_id=sweep_event_id(view.task_arn, view.version),
        task_arn=view.task_arn,
        task_id=view.task_id,
        region=view.region,
        cluster=view.cluster_arn,
        cluster_arn=view.cluster_arn,
        task_definition_arn=view.task_definition_arn,
        last_status=view.last_status,
        version=view.version,
        occurred=occurred,
        flow_run_id_override=view.flow_run_id_override or run_id,
        emitted=seen,
        stop=stop,
        source="sweep",
    )


def view_of(task: Mapping[str, Any]) -> TaskView | None:
    """A DescribeTasks `tasks` entry as a `TaskView`; None for one without a task ARN."""
    arn = task.get("taskArn")
    found = TASK_ARN.match(arn) if isinstance(arn, str) else None
    if arn is None or found is None:
        return None
    tags = {str(tag["key"]): str(tag.get("value", "")) for tag in task.get("tags") or [] if "key" in tag}
    containers = tuple(
        Container(_text(c.get("name")), _int(c.get("exitCode")), _text(c.get("reason")))
        for c in task.get("containers") or []
        if isinstance(c, Mapping)
    )
    return TaskView(
        task_arn=arn,
        task_id=found["task_id"],
        region=found["region"],
        last_status=str(task.get("lastStatus") or ""),
        desired_status=_text(task.get("desiredStatus")),
        version=_int(task.get("version")),
        tags=MappingProxyType(tags),
        cluster_arn=_text(task.get("clusterArn")),
        task_definition_arn=_text(task.get("taskDefinitionArn")),
        created_at=_time(task.get("createdAt")),
        started_at=_time(task.get("startedAt")),
        stopped_at=_time(task.get("stoppedAt")),
        stop_code=_text(task.get("stopCode")),
        stopped_reason=_text(task.get("stoppedReason")),
        containers=containers,
        flow_run_id_override=_override(task.get("overrides")),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _time(value: object) -> datetime | None:
    """boto gives datetimes; a raw answer epoch seconds or ISO text."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return _time(datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def _override(overrides: object) -> UUID | None:
    if not isinstance(overrides, Mapping):
        return None
    for container in overrides.get("containerOverrides") or []:
        for var in (container.get("environment") or []) if isinstance(container, Mapping) else []:
            found = (
                parse_uuid(var.get("value"))
                if isinstance(var, Mapping) and var.get("name") == FLOW_RUN_ID_ENV
                else None
            )
            if found is not None:
                return found
    return None

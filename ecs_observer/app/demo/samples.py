"""EventBridge "ECS Task State Change" events shaped like the ones AWS sends.

Shipped in the package because `ecs-observer demo` builds its lifecycles from
them at run time; the tests and the benchmarks reuse them, so that all three
exercise the same shapes: numbers as strings, fields that depend on the status,
and the Prefect worker's `PREFECT__FLOW_RUN_ID` container override.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ...core.task_view import TaskView, view_of

__all__ = ["FARGATE_LIFECYCLE", "lifecycle", "state_change"]

FARGATE_LIFECYCLE = (
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
)


def _ms(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def state_change(
    task_arn: str,
    status: str,
    version: int,
    updated_at: datetime,
    *,
    event_id: uuid.UUID | None = None,
    cluster_arn: str | None = None,
    task_definition_arn: str | None = None,
    flow_run_id: str | None = None,
    exit_code: int | None = None,
    stopped: dict[str, Any] | None = None,
    started_at: datetime | None = None,
) -> dict[str, Any]:
    """One event envelope; `flow_run_id` goes into the container environment override, as the worker sets it.

    A STOPPED one says the container exited with `exit_code` (0 by default); `stopped` replaces any of
    its fields (`stopCode`, `stoppedReason`, `containers`), as ECS's other ways of stopping give them."""
    region, account = task_arn.split(":")[3:5]
    container: dict[str, Any] = {"name": "prefect"}
    if flow_run_id is not None:
        container["environment"] = [{"name": "PREFECT__FLOW_RUN_ID", "value": flow_run_id}]
    detail: dict[str, Any] = {
        "taskArn": task_arn,
        "lastStatus": status,
        "desiredStatus": "STOPPED" if status in FARGATE_LIFECYCLE[4:] else "RUNNING",
        "launchType": "FARGATE",
        "cpu": "256",
        "memory": "512",
        "createdAt": _ms(updated_at - timedelta(seconds=version)),
        "updatedAt": _ms(updated_at),
        "version": version,
        "overrides": {"containerOverrides": [container]},
        "containers": [{"name": "prefect", "lastStatus": status, "taskArn": task_arn}],
    }
    if started_at is not None:
        detail["startedAt"] = _ms(started_at)  # ECS gives it once the task has reached RUNNING
    if cluster_arn:
        detail["clusterArn"] = cluster_arn
    if task_definition_arn:
        detail["taskDefinitionArn"] = task_definition_arn
    if status == "STOPPED":
        failed = exit_code not in (None, 0)
        detail["stopCode"] = "EssentialContainerExited"
        detail["stoppedReason"] = "Essential container in task exited"
        detail["containers"][0]["exitCode"] = exit_code if exit_code is not None else 0
        if failed:
            detail["containers"][0]["reason"] = "flow run crashed"
        detail.update(stopped or {})
    return {
        "version": "0",
        "id": str(event_id or uuid.uuid4()),
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": account,
        "time": updated_at.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "region": region,
        "resources": [task_arn],
        "detail": detail,
    }


def lifecycle(
    task_arn: str,
    start: datetime,
    *,
    statuses: tuple[str, ...] = FARGATE_LIFECYCLE,
    step: timedelta = timedelta(seconds=10),
    **fields: Any,
) -> list[dict[str, Any]]:
    """A task's whole life, one event per status, versions from 1, `step` apart; from RUNNING on (if it
    gets there), its events say when it started."""
    last = len(statuses) - 1
    ran = statuses.index("RUNNING") if "RUNNING" in statuses else None
    return [
        state_change(
            task_arn,
            status,
            version,
            start + step * (version - 1),
            started_at=start + step * ran if ran is not None and version - 1 >= ran else None,
            **{k: v for k, v in fields.items() if k not in ("exit_code", "stopped") or version - 1 == last},
        )
        for version, status in enumerate(statuses, start=1)
    ]


def described(task_arn: str, tags: Mapping[str, str], last_status: str = "RUNNING", **fields: Any) -> TaskView:
    """A DescribeTasks answer for one task, as the ECS adapter gives it: for fakes of ECS."""
    view = view_of(
        {
            "taskArn": task_arn,
            "lastStatus": last_status,
            "tags": [{"key": key, "value": value} for key, value in tags.items()],
            **fields,
        }
    )
    assert view is not None, task_arn
    return view

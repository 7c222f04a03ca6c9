"""Why an ECS task stopped, in words a person can act on: pure, from the STOPPED event alone.

The orchestration container is the one the flow runs in: the one named as
configured (`prefect`, as the Prefect ECS worker names it), else the only
container, else (several, none of that name) all of them. The task *failed*
when that container's exit code is non-zero or missing, or when ECS says the
task failed to start (also with no containers at all); a clean exit (0) is not
a failure, whatever stopped the task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .ecs_event import Container, Stop

__all__ = ["Diagnosis", "diagnose", "log_container", "orchestration_containers"]

# ECS's stop codes (DescribeTasks / the STOPPED event's `stopCode`).
FAILED_TO_START = "TaskFailedToStart"
USER_INITIATED = "UserInitiated"
SCHEDULER_INITIATED = "ServiceSchedulerInitiated"
SPOT_INTERRUPTION = "SpotInterruption"
TERMINATION_NOTICE = "TerminationNotice"
_KILLED_BY_ECS = {USER_INITIATED, SCHEDULER_INITIATED, SPOT_INTERRUPTION, TERMINATION_NOTICE}
SIGKILL_EXIT = 137


@dataclass(frozen=True, slots=True)
class Diagnosis:
    kind: str  # a stable slug, the `ecs.diagnosis` label: what an automation matches on
    failed: bool
    summary: str
    resolution: str
    level: Literal["ERROR", "WARNING"]
    exit_code: int | None  # of the orchestration container, when one is known
    reasons: tuple[str, ...]  # the stop reason, then each container's reason, as ECS gave them


# kind -> (level, summary, resolution); the summary may name the exit code.
_CLASSES: dict[str, tuple[Literal["ERROR", "WARNING"], str, str]] = {
    "out-of-memory": (
        "ERROR",
        "the container ran out of memory and was killed",
        "raise the task's or the container's memory (the work pool's `memory`), or make the flow use less",
    ),
    "image-pull-failed": (
        "ERROR",
        "ECS could not pull the container image",
        "check the image name and tag, that it exists, and that the execution role may pull it "
        "(ECR permissions, or registry credentials for a private registry)",
    ),
    "resource-initialization-failed": (
        "ERROR",
        "ECS could not set up the task's resources (secrets, registry auth or network interface)",
        "check that the execution role may read the task's secrets and that its subnets reach "
        "Secrets Manager, SSM and ECR (a NAT gateway, a public IP or VPC endpoints)",
    ),
    "failed-to-start": (
        "ERROR",
        "the task failed to start",
        "read the stop reason: usually a network configuration, a role or a resource limit of the cluster",
    ),
    "spot-interruption": (
        "WARNING",
        "the Spot capacity running the task was reclaimed by AWS",
        "retry the flow run, or run it on on-demand capacity (FARGATE instead of FARGATE_SPOT)",
    ),
    "host-terminated": (
        "WARNING",
        "the container instance running the task was stopped or terminated",
        "retry the flow run; check the cluster's Auto Scaling group and instance events",
    ),
    "stopped-by-scheduler": (
        "WARNING",
        "the ECS service scheduler stopped the task",
        "check the ECS service's events: a deployment, a scale-in or a failed health check",
    ),
    "stopped-by-user": (
        "WARNING",
        "the task was stopped through the ECS API (StopTask) or the console",
        "check CloudTrail for who called StopTask; cancel flow runs through Prefect instead",
    ),
    "exited": (
        "ERROR",
        "the essential container exited with code {code}",
        "read the flow run's logs (and the container's CloudWatch logs) for the error",
    ),
    "killed": (
        "WARNING",
        "the container was killed without an exit code",
        "ECS or the host stopped it: check the stop reason, the cluster's events and CloudTrail",
    ),
    "clean-exit": ("WARNING", "the container exited cleanly (code 0)", "nothing to do"),
}


def orchestration_containers(containers: tuple[Container, ...], name: str) -> tuple[Container, ...]:
    named = tuple(c for c in containers if c.name == name)
    if named:
        return named[:1]
    return containers


def log_container(containers: tuple[Container, ...], name: str) -> str:
    """Whose logs tell why the flow crashed: as `orchestration_containers` picks, the stop's only container
    whatever its name, else the one named `name` (looked up in the task definition)."""
    only = containers[0].name if len(containers) == 1 else None
    return only or name


def diagnose(stop: Stop, container_name: str = "prefect") -> Diagnosis:
    chosen = orchestration_containers(stop.containers, container_name)
    codes = [c.exit_code for c in chosen]
    exit_code = next((code for code in codes if code not in (None, 0)), codes[0] if len(codes) == 1 else None)
    failed = stop.stop_code == FAILED_TO_START or not chosen or any(code != 0 for code in codes)
    reasons = tuple(r for r in (stop.stopped_reason, *(c.reason for c in stop.containers)) if r)
    kind = _kind(stop, reasons, exit_code, failed, missing=not chosen or None in codes)
    level, summary, resolution = _CLASSES[kind]
    return Diagnosis(kind, failed, summary.format(code=exit_code), resolution, level, exit_code, reasons)


def _kind(stop: Stop, reasons: tuple[str, ...], exit_code: int | None, failed: bool, missing: bool) -> str:
    text = " ".join(reasons).lower()
    code = stop.stop_code
    if "outofmemory" in text or (exit_code == SIGKILL_EXIT and code not in _KILLED_BY_ECS):
        return "out-of-memory"
    if "cannotpullcontainer" in text or "pull image manifest" in text:
        return "image-pull-failed"
    if "resourceinitializationerror" in text:
        return "resource-initialization-failed"
    if code == FAILED_TO_START or "cannotstartcontainer" in text or "cannotcreatecontainer" in text:
        return "failed-to-start"
    if code == SPOT_INTERRUPTION or "spot task was interrupted" in text:
        return "spot-interruption"
    if code == TERMINATION_NOTICE or ("host ec2" in text and ("terminated" in text or "stopped" in text)):
        return "host-terminated"
    if code == SCHEDULER_INITIATED:
        return "stopped-by-scheduler"
    if code == USER_INITIATED:
        return "stopped-by-user"
    if not failed:
        return "clean-exit"
    return "killed" if exit_code is None and missing else "exited"

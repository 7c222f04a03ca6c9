"""Which flow-run state an ECS task's change calls for: pure, from the run's current state.

InfrastructurePending while ECS places the task; Crashed when the task failed;
Cancelled when a run still Cancelling loses its task. Prefect's orchestration
has the last word (it may reject or abort a proposal); these rules only avoid
proposing what would be wrong or pointless.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from .diagnosis import Diagnosis
from .ecs_event import TaskStateChange

__all__ = [
    "FINAL",
    "INFRASTRUCTURE_PENDING",
    "PLACING",
    "LogSource",
    "Proposal",
    "RunLog",
    "RunState",
    "crash_logs",
    "diagnosis_log",
    "never_ran",
    "propose",
]

FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
INFRASTRUCTURE_PENDING = "InfrastructurePending"
PLACING = frozenset({"PROVISIONING", "PENDING"})
_MAX_MESSAGE = 1000


@dataclass(frozen=True, slots=True)
class RunState:
    """A flow run's current state, as Prefect answers it: its type (PENDING, RUNNING, ...) and name."""

    type: str
    name: str


@dataclass(frozen=True, slots=True)
class Proposal:
    type: str
    name: str
    message: str

    def to_json(self) -> dict[str, object]:
        return {"state": {"type": self.type, "name": self.name, "message": self.message}, "force": False}


def propose(change: TaskStateChange, diagnosis: Diagnosis | None, current: RunState) -> Proposal | None:
    """The state to propose for the run on this change, or None."""
    if change.last_status in PLACING:
        if current.type in FINAL or current.type in ("RUNNING", "PAUSED", "CANCELLING"):
            return None
        if current.name == INFRASTRUCTURE_PENDING:
            return None
        return Proposal("PENDING", INFRASTRUCTURE_PENDING, "ECS task is pending")
    if change.stop is None or diagnosis is None:
        return None
    code = change.stop.stop_code or "no stop code"
    if current.type == "CANCELLING":
        return Proposal("CANCELLED", "Cancelled", f"ECS task {change.task_id} stopped ({code}) while cancelling")
    if not diagnosis.failed or current.type in FINAL or current.type in ("SCHEDULED", "PAUSED"):
        return None
    return Proposal("CRASHED", "Crashed", crash_message(change, diagnosis))


def crash_message(change: TaskStateChange, diagnosis: Diagnosis) -> str:
    """One line: what stopped, the exit code, and ECS's reason."""
    stop = change.stop
    parts = [f"ECS task {change.task_id} stopped: {diagnosis.summary}"]
    if diagnosis.exit_code is not None and str(diagnosis.exit_code) not in diagnosis.summary:
        parts.append(f"exit code {diagnosis.exit_code}")
    if stop is not None and stop.stop_code:
        parts.append(f"stop code {stop.stop_code}")
    if stop is not None and stop.stopped_reason:
        parts.append(f"reason: {stop.stopped_reason}")
    return " ".join("; ".join(parts).split())[:_MAX_MESSAGE]


@dataclass(frozen=True, slots=True)
class RunLog:
    """One line of a flow run's logs."""

    run_id: UUID
    level: str  # "ERROR", "WARNING", "INFO"
    message: str
    timestamp: datetime


def diagnosis_log(change: TaskStateChange, run_id: UUID, diagnosis: Diagnosis) -> RunLog:
    """The flow-run log of a failed stop: what happened, ECS's reasons, and what to do."""
    lines = [f"ECS task {change.task_id} stopped: {diagnosis.summary}."]
    if diagnosis.exit_code is not None and str(diagnosis.exit_code) not in diagnosis.summary:
        lines[0] = lines[0][:-1] + f" (exit code {diagnosis.exit_code})."
    lines += [f"Reason: {reason}" for reason in diagnosis.reasons]
    lines.append(f"Resolution: {diagnosis.resolution}.")
    return RunLog(run_id, diagnosis.level, "\n".join(lines), change.occurred)


@dataclass(frozen=True, slots=True)
class LogSource:
    """Where ECS's `awslogs` driver put a container's output (from its task definition)."""

    group: str
    stream_prefix: str
    region: str | None
    container: str

    def stream(self, task_id: str) -> str:
        return f"{self.stream_prefix}/{self.container}/{task_id}"


def never_ran(current: RunState) -> bool:
    """A run whose task stopped before the flow reported Running: its own logs never reached Prefect."""
    return current.type in ("SCHEDULED", "PENDING")


def crash_logs(run_id: UUID, task_id: str, lines: list[tuple[datetime, str]]) -> list[RunLog]:
    """The container's last lines as flow-run logs, in their order, after one line that says what they are."""
    if not lines:
        return []
    before = lines[0][0] - timedelta(milliseconds=1)
    head = RunLog(run_id, "INFO", f"The last {len(lines)} line(s) of ECS task {task_id}'s container:", before)
    return [head, *(RunLog(run_id, "INFO", message, when) for when, message in lines)]

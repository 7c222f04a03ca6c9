"""Which flow-run state an ECS task's change calls for: pure, from the run's current state.

InfrastructurePending while ECS places the task; Crashed when the task failed;
Cancelled when a run still Cancelling loses its task. Prefect's orchestration
has the last word (it may reject or abort a proposal); these rules only avoid
proposing what would be wrong or pointless.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from .diagnosis import Diagnosis
from .ecs_event import Stop, TaskStateChange
from .start_failure import interrupted, transient_cause

__all__ = [
    "FINAL",
    "INFRASTRUCTURE_PENDING",
    "PLACING",
    "RESCHEDULE_MARK",
    "LogSource",
    "Proposal",
    "ProposalAnswer",
    "Reschedule",
    "RetryPolicy",
    "RunLog",
    "RunState",
    "crash_logs",
    "diagnosis_log",
    "never_ran",
    "plan_retry",
    "propose",
    "retry_cause",
    "retry_note",
]

FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
INFRASTRUCTURE_PENDING = "InfrastructurePending"
PLACING = frozenset({"PROVISIONING", "PENDING"})
_MAX_MESSAGE = 1000
# How an AwaitingRetry of ours begins: counted in the run's state history, across replicas and restarts.
RESCHEDULE_MARK = "Rescheduled by ecs-observer"


@dataclass(frozen=True, slots=True)
class RunState:
    """A flow run's current state, as Prefect answers it: its type (PENDING, RUNNING, ...) and name;
    `task_arn`, the task its `infrastructure_pid` names (None: none, or not an ECS task)."""

    type: str
    name: str
    task_arn: str | None = None


# Prefect's answer to a proposed state: its orchestration's ACCEPT, REJECT or ABORT; WAIT when it still
# said wait after a few tries; MISSING for a run it does not know. Anything else it says is the adapter's
# to map (`adapters/prefect/flow_runs.py`), so that every comparison with an answer is checked.
ProposalAnswer = Literal["ACCEPT", "REJECT", "ABORT", "WAIT", "MISSING"]


@dataclass(frozen=True, slots=True)
class Proposal:
    type: str
    name: str
    message: str
    scheduled_time: datetime | None = None  # for a Scheduled state: when the worker may start it again

    def to_json(self) -> dict[str, object]:
        state: dict[str, object] = {"type": self.type, "name": self.name, "message": self.message}
        if self.scheduled_time is not None:
            state["state_details"] = {"scheduled_time": self.scheduled_time.isoformat()}
        return {"state": state, "force": False}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Transient start failures are rescheduled `retries` times per flow run, `delay` seconds later;
    with `interrupted`, also runs stopped by a Spot interruption or a host's termination after they started.
    No defaults: the settings' are `ObserverConfig`'s (`retry_policy`)."""

    retries: int
    delay: float
    interrupted: bool


@dataclass(frozen=True, slots=True)
class Reschedule:
    """The run is to be started again: attempt `attempt` of `of` reschedules, at `at`."""

    attempt: int
    of: int
    at: datetime
    cause: str


def retry_cause(stop: Stop | None, policy: RetryPolicy) -> str | None:
    """Why the stop may be worth starting again, or None: rescheduling is off, or the cause is permanent."""
    if stop is None or policy.retries <= 0:
        return None
    cause = transient_cause(stop)
    if cause is None and policy.interrupted and interrupted(stop):
        cause = "interrupted after it started"
    return cause


def plan_retry(cause: str, earlier: int, policy: RetryPolicy, now: datetime) -> Reschedule | None:
    """The next reschedule, or None once `earlier` (our AwaitingRetry states in the run's history) used them all."""
    if earlier >= policy.retries:
        return None
    return Reschedule(earlier + 1, policy.retries, now + timedelta(seconds=policy.delay), cause)


def retry_note(cause: str, plan: Reschedule | None, policy: RetryPolicy) -> str:
    """The diagnosis log's last line for a stop worth starting again: which attempt, or why not."""
    if plan is None:
        return (
            f"Not rescheduled ({cause}): the {policy.retries} reschedule(s) allowed per flow run "
            f"(ECS_OBSERVER_START_RETRIES) are used."
        )
    return (
        f"Rescheduled ({cause}): attempt {plan.attempt} of {plan.of}; the worker starts the run again "
        f"from {plan.at.isoformat(timespec='seconds')}."
    )


def propose(
    change: TaskStateChange, diagnosis: Diagnosis | None, current: RunState, retry: Reschedule | None = None
) -> Proposal | None:
    """The state to propose for the run on this change, or None. `retry`: the stop is to be rescheduled."""
    if current.task_arn is not None and current.task_arn != change.task_arn:
        return None  # the run has moved on to another task (rescheduled, retried): this one is history
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
    if current.type in FINAL or current.type in ("SCHEDULED", "PAUSED"):
        return None
    if not diagnosis.failed:
        if change.source == "sweep" and current.type in ("PENDING", "RUNNING"):
            # Its STOPPED event was lost or came long ago, and the flow never said how it ended.
            when = change.occurred.isoformat(timespec="seconds")
            message = f"ECS task {change.task_id} exited cleanly (code 0) at {when}"
            return Proposal("CRASHED", "Crashed", f"{message}; the flow run never reported a final state")
        return None
    if retry is not None:
        message = (
            f"{RESCHEDULE_MARK} (attempt {retry.attempt} of {retry.of}, {retry.cause}): "
            f"{crash_message(change, diagnosis)}"
        )
        return Proposal("SCHEDULED", "AwaitingRetry", message[:_MAX_MESSAGE], retry.at)
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


def diagnosis_log(change: TaskStateChange, run_id: UUID, diagnosis: Diagnosis, retry_note: str | None = None) -> RunLog:
    """The flow-run log of a failed stop: what happened, ECS's reasons, what to do, and whether the run
    was started again (`retry_note`)."""
    lines = [f"ECS task {change.task_id} stopped: {diagnosis.summary}."]
    if diagnosis.exit_code is not None and str(diagnosis.exit_code) not in diagnosis.summary:
        lines[0] = lines[0][:-1] + f" (exit code {diagnosis.exit_code})."
    lines += [f"Reason: {reason}" for reason in diagnosis.reasons]
    lines.append(f"Resolution: {diagnosis.resolution}.")
    if retry_note:
        lines.append(retry_note)
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

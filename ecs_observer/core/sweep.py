"""What a sweep decides for one flow run, from what Prefect and ECS say of it now: pure.

The event path keeps flow runs true while events arrive. The sweep is for when
none did (a misconfigured rule, an observer down longer than the queue keeps
messages, a message in the dead-letter queue): every run Prefect holds as
Pending, Running or Cancelling is held against its task. Each verdict waits
until what it saw has held for longer than the grace, so that the event path
has had its chance, and nothing is judged that the observer cannot see: another
account's task, an unwatched cluster, another worker type's run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from .ecs_event import TASK_ARN
from .run_states import FINAL, INFRASTRUCTURE_PENDING, PLACING, RunState
from .start_failure import START_TIMEOUT_MARK
from .task_view import DescribeFailure, TaskView

__all__ = [
    "ACTIVE",
    "Crash",
    "Fine",
    "Repair",
    "RunToReconcile",
    "Scope",
    "Skip",
    "StopTask",
    "SweepRules",
    "TaskRef",
    "Verdict",
    "Wait",
    "judge",
    "task_of",
]

ACTIVE = frozenset({"PENDING", "RUNNING", "CANCELLING"})
_MAX_REASON = 255  # StopTask's `reason`
# "<cluster name or ARN>::<task ARN>", as the prefect-aws ECS worker sets `infrastructure_pid`.
_PID = re.compile(r"^(?P<cluster>[^\s:]+|arn:[^\s]+?)::(?P<task>arn:[^\s]+)$")
_CLUSTER_ARN = re.compile(r"^arn:aws[a-z-]*:ecs:(?P<region>[a-z0-9-]+):(?P<account>[^:/\s]+):cluster/(?P<name>.+)$")


@dataclass(frozen=True, slots=True)
class RunToReconcile:
    """A flow run as Prefect holds it: its state, since when, and the task its worker started."""

    run_id: UUID
    name: str
    state: RunState
    state_since: datetime
    infrastructure_pid: str | None


@dataclass(frozen=True, slots=True)
class TaskRef:
    """The task an `infrastructure_pid` names. `cluster` is as DescribeTasks takes it (name or ARN)."""

    task_arn: str
    task_id: str
    region: str
    account: str
    cluster: str
    cluster_name: str


def task_of(pid: str | None) -> TaskRef | None:
    """The ECS task of a prefect-aws worker's `infrastructure_pid`; None for anything else."""
    if not pid or (found := _PID.match(pid.strip())) is None:
        return None
    task, cluster = found["task"], found["cluster"]
    arn = TASK_ARN.match(task)
    if arn is None:
        return None
    named = _CLUSTER_ARN.match(cluster)
    name = named["name"] if named is not None else cluster
    if arn["cluster"] is not None and arn["cluster"] != name:
        return None  # a pid that contradicts itself is nobody's to act on
    return TaskRef(task, arn["task_id"], arn["region"], arn["account"], cluster, name)


@dataclass(frozen=True, slots=True)
class Scope:
    """The tasks this observer may judge: its own account's, and, when set, the watched clusters only
    (as (region, account, cluster name)); else those of its own region, when known (one observer per
    region, each with its own queue, table and grants, must not act on another's)."""

    account: str | None
    clusters: frozenset[tuple[str, str, str]] | None = None
    region: str | None = None

    def watches(self, ref: TaskRef) -> bool:
        if self.account is None or ref.account != self.account:
            return False
        if self.clusters is None:
            return self.region is None or ref.region == self.region
        return (ref.region, ref.account, ref.cluster_name) in self.clusters

    @staticmethod
    def of(account: str | None, cluster_arns: list[str], region: str | None = None) -> Scope:
        clusters = set()
        for arn in cluster_arns:
            if (found := _CLUSTER_ARN.match(arn)) is not None:
                clusters.add((found["region"], found["account"], found["name"]))
        return Scope(account, frozenset(clusters) if cluster_arns else None, region)


@dataclass(frozen=True, slots=True)
class SweepRules:
    """What a sweep may do; no defaults: the settings' are `ObserverConfig`'s (`sweep_rules`)."""

    grace: float
    stop_cancelled: bool
    stop_orphans: bool
    start_timeout: float  # 0: off


@dataclass(frozen=True, slots=True)
class Fine:
    """Nothing to do: the run and its task agree."""

    outcome: Literal["healthy"] = "healthy"


@dataclass(frozen=True, slots=True)
class Wait:
    """Something may be wrong, but it has not held for longer than the grace yet."""

    why: str
    outcome: Literal["waiting"] = "waiting"


@dataclass(frozen=True, slots=True)
class Skip:
    """Not the observer's to judge."""

    why: Literal["not-ecs", "not-watched", "undescribable"]
    outcome: Literal["skipped"] = "skipped"


@dataclass(frozen=True, slots=True)
class Repair:
    """The task stopped and its run does not show it: do what its STOPPED event would have done."""

    task: TaskView
    outcome: Literal["repaired"] = "repaired"


@dataclass(frozen=True, slots=True)
class Crash:
    """The run's task is gone (ECS no longer knows it): propose `state_type` with this message."""

    message: str
    state_type: Literal["CRASHED", "CANCELLED"] = "CRASHED"
    outcome: Literal["crashed-missing"] = "crashed-missing"


@dataclass(frozen=True, slots=True)
class StopTask:
    """Stop the task: its run is cancelled or final, or it did not start in time."""

    reason: str
    why: Literal["cancelled", "orphan", "start-timeout"]
    outcome: Literal["stopped"] = "stopped"


Verdict = Fine | Wait | Skip | Repair | Crash | StopTask


def judge(
    run: RunToReconcile,
    scope: Scope,
    answer: TaskView | DescribeFailure | None,
    first_seen: datetime,
    now: datetime,
    rules: SweepRules,
) -> Verdict:
    """The verdict on one run. `answer`: its task as DescribeTasks answered (None: MISSING); `first_seen`:
    when a sweep first saw the task as it is now (stands in for the `stoppedAt` ECS does not give, dates a
    MISSING, and holds a repair back a grace from when this observer could first have had its event)."""
    ref = task_of(run.infrastructure_pid)
    if ref is None:
        return Skip("not-ecs")
    if not scope.watches(ref):
        return Skip("not-watched")
    if isinstance(answer, DescribeFailure):
        return Skip("undescribable")

    def held(since: datetime | None) -> bool:
        return since is not None and (now - since).total_seconds() > rules.grace

    state = run.state.type
    task_id = ref.task_id
    if answer is None:
        if state not in ACTIVE:
            return Fine()
        if not (held(first_seen) and held(run.state_since)):
            return Wait(f"task {task_id} is MISSING")
        since = first_seen.isoformat(timespec="seconds")
        if state == "CANCELLING":
            return Crash(f"ECS no longer knows task {task_id} (MISSING since {since}) while cancelling", "CANCELLED")
        return Crash(
            f"ECS no longer knows task {task_id} (MISSING in sweeps since {since}: it stopped over an hour ago, "
            f"or never existed), and the flow run never reported a final state"
        )
    if answer.stopped:
        if state not in ACTIVE:
            return Fine()
        stopped = answer.stopped_at or first_seen
        if run.state_since > stopped and run.state.name != INFRASTRUCTURE_PENDING:
            # The run entered its state after the task stopped (a retry, a reschedule picked up): a new
            # attempt whose worker has not yet named its new task. The old stop is not this attempt's.
            # InfrastructurePending is the observer's own, proposed only on a change of the task the run
            # names: this task's PENDING, handled after it stopped (a backlog), not a new attempt.
            return Wait(f"flow run entered {run.state.name or state} after task {task_id} stopped")
        if not (held(stopped) and held(first_seen)):
            # Held from the first sweep that saw it stopped too: until then the event path may not have had its
            # chance (an observer just started on a backlog, or ECS not yet describing the task, whose tags the
            # event path needs as well), and the STOPPED may still wait in the queue behind the task's earlier
            # changes: repaired first, it would follow none of them, and the queued one be its duplicate.
            return Wait(f"task {task_id} stopped")
        return Repair(answer)
    stopping = answer.desired_status == "STOPPED"
    if state in FINAL:
        if stopping or not held(run.state_since):
            return Wait(f"task {task_id} is {answer.last_status}")
        if state == "CANCELLED" and rules.stop_cancelled:
            return StopTask(_reason(run, "is Cancelled"), "cancelled")
        if rules.stop_orphans:
            return StopTask(_reason(run, f"is {run.state.name or state.title()}"), "orphan")
        return Fine()
    if state == "CANCELLING":
        if not rules.stop_cancelled:
            return Fine()
        if stopping or not held(run.state_since):
            return Wait(f"task {task_id} is {answer.last_status}")
        return StopTask(_reason(run, "is Cancelling"), "cancelled")
    if (
        rules.start_timeout > 0
        and answer.last_status in PLACING
        and not stopping
        and answer.created_at is not None
        and (now - answer.created_at).total_seconds() > rules.start_timeout
    ):
        return StopTask(f"{START_TIMEOUT_MARK} {rules.start_timeout:g} s (flow run {run.run_id})", "start-timeout")
    return Fine()


def _reason(run: RunToReconcile, what: str) -> str:
    """StopTask's reason, naming the run: ECS keeps it as the task's `stoppedReason`."""
    reason = f"ecs-observer: flow run {run.run_id} {what}"
    name = " ".join(run.name.split())[: _MAX_REASON - len(reason) - 3]
    return f"{reason} ({name})" if name else reason

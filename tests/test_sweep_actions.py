"""What a sweep asks of ECS, Prefect and the task-state store, and what it answers, counts and logs: no server.

Every port is a small fake of this file (the flow runs are the demo's `MemoryFlowRuns`), the sweep's clock
is moved by the test, and each test reads back the calls made, the outcome of each run, `Stats` and the
log lines an operator sees.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import UUID, uuid4

import pytest

from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.app.demo.runs import MemoryFlowRuns
from ecs_observer.core.decision import Ack, Release
from ecs_observer.core.ecs_event import Container, TaskStateChange
from ecs_observer.core.run_states import FINAL, Proposal, ProposalAnswer, RunState
from ecs_observer.core.sweep import RunToReconcile, Scope
from ecs_observer.core.task_view import DescribeFailure, TaskView
from ecs_observer.pipeline import sweep as sweep_module
from ecs_observer.pipeline.config import ObserverConfig
from ecs_observer.pipeline.sweep import Sweeper
from ecs_observer.support.backoff import Backoff
from ecs_observer.support.stats import Stats

ACCOUNT = "123456789012"
REGION = "us-east-1"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
CONFIG = ObserverConfig(backoff=Backoff(0.001, 0.002))  # a 60 s interval, a 300 s grace, stop_cancelled
_Answer = TaskView | DescribeFailure | None


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)


def task(cluster: str = "prefect", region: str = REGION, account: str = ACCOUNT) -> tuple[str, str]:
    """A new task's (infrastructure_pid, task ARN), as the ECS worker names them."""
    cluster_arn = f"arn:aws:ecs:{region}:{account}:cluster/{cluster}"
    arn = f"arn:aws:ecs:{region}:{account}:task/{cluster}/{uuid4().hex}"
    return f"{cluster_arn}::{arn}", arn


def view(arn: str, status: str = "RUNNING", *, exit_code: int | None = None, **fields: Any) -> TaskView:
    region, cluster = arn.split(":")[3], arn.split("/")[1]
    account = arn.split(":")[4]
    found = TaskView(
        task_arn=arn,
        task_id=arn.rsplit("/", 1)[1],
        region=region,
        last_status=status,
        desired_status=status if status == "STOPPED" else "RUNNING",
        version=4 if status == "STOPPED" else 2,
        tags={"team": "data"},  # no flow-run id: StopTask drops the tags, the run is the pid's
        cluster_arn=f"arn:aws:ecs:{region}:{account}:cluster/{cluster}",
        task_definition_arn=None,
        created_at=T0 - timedelta(hours=2),
        started_at=T0 - timedelta(hours=2),
        stopped_at=None,
        stop_code="EssentialContainerExited" if status == "STOPPED" else None,
        stopped_reason="Essential container in task exited" if status == "STOPPED" else None,
        containers=(Container("prefect", exit_code, None),),
    )
    return replace(found, **fields)


class Runs(MemoryFlowRuns):
    """The demo's flow runs, each added in the state a test needs; each read's arguments kept."""

    def __init__(self) -> None:
        super().__init__([])
        self.reads: list[tuple[datetime | None, frozenset[str]]] = []
        self.fail: Exception | None = None

    def add(self, state: str, pid: str | None, *, since: datetime = T0 - timedelta(hours=1), name: str = "") -> UUID:
        run_id = uuid4()
        self.histories[run_id] = [RunState(state, name or state.title())]
        self.state_messages[run_id] = [""]
        self.state_times[run_id] = [since]
        self.names[run_id] = f"nightly-{run_id.hex[:6]}"
        self.logs[run_id] = []
        if pid is not None:
            self.pids[run_id] = pid
        return run_id

    async def to_reconcile(
        self, final_since: datetime | None, final_types: Collection[str]
    ) -> AsyncIterator[list[RunToReconcile]]:
        self.reads.append((final_since, frozenset(final_types)))
        if self.fail is not None:
            raise self.fail
        async for page in super().to_reconcile(final_since, final_types):
            yield page


@dataclass
class Ecs:
    """DescribeTasks answered from `answers` (MISSING for the others), after `failures` failed calls of a
    cluster (-1: it fails for good)."""

    answers: dict[str, _Answer] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # by cluster as the pid names it
    calls: list[tuple[str, str | None, list[str]]] = field(default_factory=list)

    async def describe(self, region: str, cluster: str | None, task_arns: Sequence[str]) -> Mapping[str, _Answer]:
        self.calls.append((region, cluster, list(task_arns)))
        left = self.failures.get(cluster or "", 0)
        if left:
            self.failures[cluster or ""] = left - 1
            raise RuntimeError("ThrottlingException: Rate exceeded")
        return {arn: self.answers.get(arn) for arn in task_arns}


@dataclass
class Stopper:
    failures: int = 0  # -1: every call fails
    calls: list[tuple[str, str, str, str]] = field(default_factory=list)

    async def stop(self, region: str, cluster: str, task_arn: str, reason: str) -> None:
        self.calls.append((region, cluster, task_arn, reason))
        if self.failures:
            self.failures -= 1
            raise RuntimeError("ServerException: try again")


@dataclass
class EventPath:
    """The observer as the sweep uses it: each observed change and proposal kept, answered as told."""

    outcome: Ack | Release = field(default_factory=lambda: Ack("forwarded"))
    answer: ProposalAnswer = "ACCEPT"
    fail: Exception | None = None
    observed: list[tuple[TaskStateChange, Mapping[str, str]]] = field(default_factory=list)
    proposals: list[tuple[UUID, str, Proposal]] = field(default_factory=list)

    async def observe(self, change: TaskStateChange, tags: Mapping[str, str]) -> Ack | Release:
        self.observed.append((change, tags))
        return self.outcome

    async def propose(self, run_id: UUID, task_arn: str, proposal: Proposal) -> ProposalAnswer | None:
        self.proposals.append((run_id, task_arn, proposal))
        if self.fail is not None:
            raise self.fail
        return self.answer


class Store(MemoryTaskState):
    """The task-state store, its lease answered from `held` (True once it runs out), each ask kept."""

    def __init__(self, *held: bool) -> None:
        super().__init__(10)
        self.held = list(held)
        self.leases: list[tuple[str, UUID, float]] = []

    async def lease(self, name: str, owner: UUID, seconds: float) -> bool:
        self.leases.append((name, owner, seconds))
        return self.held.pop(0) if self.held else True


@dataclass
class World:
    sweeper: Sweeper
    runs: Runs
    ecs: Ecs
    path: EventPath
    stopper: Stopper
    store: Store
    stats: Stats
    clock: Clock


def world(config: ObserverConfig = CONFIG, *, store: Store | None = None, stopper: bool = True) -> World:
    runs, ecs, path, stop, stats, clock = Runs(), Ecs(), EventPath(), Stopper(), Stats(), Clock()
    store = store if store is not None else Store()  # (an empty store is falsy: it has a length)
    sweeper = Sweeper(path, runs, ecs, store, stats, config, Scope(ACCOUNT), stop if stopper else None, clock)
    return World(sweeper, runs, ecs, path, stop, store, stats, clock)


def lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name.startswith("ecs_observer")]


# --- Repairs: a lost STOPPED, done as its event would have done it ----------------------------------------


async def test_a_stop_is_dated_from_the_first_sweep_that_saw_it_and_repaired_a_grace_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = world()
    pid, arn = task()
    run_id = w.runs.add("RUNNING", pid)
    w.ecs.answers[arn] = view(arn)
    caplog.set_level(logging.INFO)
    assert await w.sweeper.sweep() == {run_id: "healthy"}  # seen running: not the time it stopped
    w.clock.advance(6)
    stopped_seen = w.clock.now
    w.ecs.answers[arn] = view(arn, "STOPPED", exit_code=1)  # ECS gives no stoppedAt
    assert await w.sweeper.sweep() == {run_id: "waiting"}  # first seen stopped: the event path's chance
    assert w.path.observed == []
    w.clock.advance(6)
    caplog.clear()
    assert await w.sweeper.sweep() == {run_id: "repaired"}
    ((change, tags),) = w.path.observed
    assert (change.task_arn, change.source, change.last_status) == (arn, "sweep", "STOPPED")
    assert change.occurred == change.emitted == stopped_seen  # when it was first seen stopped
    assert change.flow_run_id_override == run_id  # its tags do not name the run: the pid does
    assert tags == {"team": "data"}
    assert lines(caplog) == [
        f"sweep: flow run {run_id} (nightly-{run_id.hex[:6]}) was Running; its task {arn} had stopped with no "
        "event applied: event forwarded, run updated",
        "sweep: 1 run(s) held against their tasks: 1 repaired",
    ]
    assert w.stats.reconciled == Counter({"healthy": 1, "waiting": 1, "repaired": 1})
    assert w.stats.sweeps == 3


@pytest.mark.parametrize(
    ("outcome", "expected", "level"),
    [
        (Ack("deduplicated"), "repaired", logging.INFO),
        (Ack("filtered", "not a Prefect flow run's task"), "unchanged", logging.INFO),
        (Release("Prefect API unavailable"), "failed", logging.WARNING),
    ],
)
async def test_a_repair_the_event_path_had_made_found_nothing_in_or_could_not_make(
    caplog: pytest.LogCaptureFixture, outcome: Ack | Release, expected: str, level: int
) -> None:
    w = world()
    w.path.outcome = outcome
    pid, arn = task()
    run_id = w.runs.add("RUNNING", pid)
    w.ecs.answers[arn] = view(arn, "STOPPED", exit_code=1, stopped_at=T0 - timedelta(minutes=30))
    assert await w.sweeper.sweep() == {run_id: "waiting"}
    w.clock.advance(6)
    caplog.set_level(logging.INFO)
    assert await w.sweeper.sweep() == {run_id: expected}
    ((change, _),) = w.path.observed
    assert change.occurred == T0 - timedelta(minutes=30)  # ECS's stoppedAt, when it gives one
    assert change.emitted == T0  # when a sweep first saw it stopped
    (logged,) = [text for text in lines(caplog, level) if text.startswith(f"sweep: flow run {run_id}")]
    what = {
        "repaired": f"sweep: flow run {run_id} (nightly-{run_id.hex[:6]}) was Running; its task {arn} had stopped "
        "with no event applied: run updated",
        "unchanged": f"sweep: flow run {run_id}, stopped task {arn}: not a Prefect flow run's task",
        "failed": f"sweep: flow run {run_id}, stopped task {arn}: Prefect API unavailable",
    }
    assert logged == what[expected]
    assert w.stats.reconciled[expected] == 1


async def test_a_run_that_names_its_state_by_type_only_is_logged_by_its_type(caplog: pytest.LogCaptureFixture) -> None:
    w = world()
    pid, arn = task()
    run_id = w.runs.add("PENDING", pid)
    w.runs.histories[run_id] = [RunState("PENDING", "")]
    w.ecs.answers[arn] = view(arn, "STOPPED", exit_code=0, stopped_at=T0 - timedelta(minutes=30))
    await w.sweeper.sweep()
    w.clock.advance(6)
    caplog.set_level(logging.INFO)
    assert await w.sweeper.sweep() == {run_id: "repaired"}
    assert f"sweep: flow run {run_id} (nightly-{run_id.hex[:6]}) was PENDING; its task {arn}" in lines(caplog)[0]


# --- Crashes: a task ECS no longer knows ------------------------------------------------------------------


async def test_a_task_missing_for_the_grace_since_the_first_sweep_that_missed_it_crashes_its_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = world()
    pid, arn = task()
    run_id = w.runs.add("RUNNING", pid)  # ECS answers MISSING
    assert await w.sweeper.sweep() == {run_id: "waiting"}
    w.clock.advance(4)
    assert await w.sweeper.sweep() == {run_id: "waiting"}  # 4 minutes: not yet the grace
    w.clock.advance(2)
    caplog.set_level(logging.INFO)
    assert await w.sweeper.sweep() == {run_id: "crashed-missing"}
    ((proposed_for, proposed_task, proposal),) = w.path.proposals
    assert (proposed_for, proposed_task, proposal.type, proposal.name) == (run_id, arn, "CRASHED", "Crashed")
    assert f"(MISSING in sweeps since {T0.isoformat(timespec='seconds')}:" in proposal.message
    assert lines(caplog)[0] == (
        f"sweep: flow run {run_id} (nightly-{run_id.hex[:6]}): Crashed proposed, ACCEPT: {proposal.message}"
    )
    assert w.stats.reconciled == Counter({"waiting": 2, "crashed-missing": 1})


async def test_a_cancelling_run_whose_task_ecs_forgot_is_proposed_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    w = world()
    pid, arn = task()
    run_id = w.runs.add("CANCELLING", pid)
    await w.sweeper.sweep()
    w.clock.advance(6)
    caplog.set_level(logging.INFO)
    assert await w.sweeper.sweep() == {run_id: "crashed-missing"}
    ((_, proposed_task, proposal),) = w.path.proposals
    assert (proposed_task, proposal.type, proposal.name) == (arn, "CANCELLED", "Cancelled")
    assert "while cancelling" in proposal.message
    assert lines(caplog)[0].startswith(
        f"sweep: flow run {run_id} (nightly-{run_id.hex[:6]}): Cancelled proposed, ACCEPT"
    )


async def test_a_crash_prefect_does_not_accept_leaves_the_run_unchanged_and_one_that_fails_is_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = world()
    w.path.answer = "REJECT"
    pid, arn = task()
    run_id = w.runs.add("RUNNING", pid)
    await w.sweeper.sweep()
    w.clock.advance(6)
    caplog.set_level(logging.INFO)
    assert await w.sweeper.sweep() == {run_id: "unchanged"}
    assert lines(caplog)[0].startswith(f"sweep: flow run {run_id} (nightly-{run_id.hex[:6]}): Crashed proposed, REJECT")
    w.path.fail = RuntimeError("Prefect API unavailable")
    caplog.clear()
    assert await w.sweeper.sweep() == {run_id: "failed"}  # the next sweep tries it again
    assert lines(caplog, logging.WARNING) == [
        f"sweep: flow run {run_id} (task {arn}): crashed-missing failed: Prefect API unavailable"
    ]
    assert w.stats.reconciled == Counter({"waiting": 1, "unchanged": 1, "failed": 1})


# --- Stops ------------------------------------------------------------------------------------------------


async def test_cancelling_runs_have_their_tasks_stopped_each_counted(caplog: pytest.LogCaptureFixture) -> None:
    w = world()
    made = [task() for _ in range(2)]
    run_ids = [w.runs.add("CANCELLING", pid, since=T0 - timedelta(minutes=10)) for pid, _ in made]
    for _, arn in made:
        w.ecs.answers[arn] = view(arn)
    caplog.set_level(logging.INFO)
    assert await w.sweeper.sweep() == dict.fromkeys(run_ids, "stopped:cancelled")
    assert w.stats.tasks_stopped == Counter({"cancelled": 2})
    assert w.stats.reconciled == Counter({"stopped:cancelled": 2})
    cluster = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prefect"
    assert sorted(w.stopper.calls) == sorted(
        (REGION, cluster, arn, f"ecs-observer: flow run {run_id} is Cancelling (nightly-{run_id.hex[:6]})")
        for run_id, (_, arn) in zip(run_ids, made, strict=True)
    )
    assert sorted(lines(caplog)[:2]) == sorted(
        f"sweep: task {arn} stopped (cancelled): ecs-observer: flow run {run_id} is Cancelling "
        f"(nightly-{run_id.hex[:6]})"
        for run_id, (_, arn) in zip(run_ids, made, strict=True)
    )
    assert lines(caplog)[2] == "sweep: 2 run(s) held against their tasks: 2 stopped:cancelled"


async def test_a_stop_task_that_fails_is_retried_as_an_ecs_outage(caplog: pytest.LogCaptureFixture) -> None:
    w = world()
    w.stopper.failures = 2
    pid, arn = task()
    run_id = w.runs.add("CANCELLING", pid, since=T0 - timedelta(minutes=10))
    w.ecs.answers[arn] = view(arn)
    caplog.set_level(logging.INFO)
    assert await w.sweeper.sweep() == {run_id: "stopped:cancelled"}
    assert len(w.stopper.calls) == 3
    assert w.stats.retries == Counter({"stop_task": 2})
    assert lines(caplog, logging.WARNING) == [
        f"ECS is failing: StopTask {arn} failed: ServerException: try again (retrying; logged once until it "
        "answers again)"
    ]
    assert w.stats.tasks_stopped == Counter({"cancelled": 1})


async def test_a_stop_task_that_keeps_failing_is_tried_six_times_and_the_run_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = world()
    w.stopper.failures = -1
    pid, arn = task()
    run_id = w.runs.add("CANCELLING", pid, since=T0 - timedelta(minutes=10))
    w.ecs.answers[arn] = view(arn)
    assert await w.sweeper.sweep() == {run_id: "failed"}
    assert len(w.stopper.calls) == 6
    assert w.stats.retries == Counter({"stop_task": 5})
    assert w.stats.tasks_stopped == Counter()
    assert f"sweep: flow run {run_id} (task {arn}): stopped failed: ServerException: try again" in lines(
        caplog, logging.WARNING
    )


async def test_without_a_stopper_a_task_to_stop_leaves_its_run_unchanged() -> None:
    w = world(stopper=False)
    pid, arn = task()
    run_id = w.runs.add("CANCELLING", pid, since=T0 - timedelta(minutes=10))
    w.ecs.answers[arn] = view(arn)
    assert await w.sweeper.sweep() == {run_id: "unchanged"}
    assert w.stats.tasks_stopped == Counter()


# --- What is read: final runs, and DescribeTasks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("stop_cancelled", "stop_orphans", "since", "types"),
    [
        (True, True, T0 - timedelta(hours=1), frozenset(FINAL)),
        (False, True, T0 - timedelta(hours=1), frozenset(FINAL)),
        (True, False, T0 - timedelta(hours=1), frozenset({"CANCELLED"})),
        (False, False, None, frozenset()),
    ],
)
async def test_final_runs_of_the_last_hour_are_read_only_for_the_stops_that_need_them(
    stop_cancelled: bool, stop_orphans: bool, since: datetime | None, types: frozenset[str]
) -> None:
    w = world(replace(CONFIG, stop_cancelled=stop_cancelled, stop_orphans=stop_orphans))
    await w.sweeper.sweep()
    w.clock.advance(1)
    await w.sweeper.sweep()
    later = since + timedelta(minutes=1) if since is not None else None
    assert w.runs.reads == [(since, types), (later, types)]


async def test_an_orphan_is_stopped_when_asked_and_counted_as_one() -> None:
    w = world(replace(CONFIG, stop_orphans=True))
    pid, arn = task()
    run_id = w.runs.add("COMPLETED", pid, since=T0 - timedelta(minutes=10))
    w.runs.state_times[run_id] = [T0 - timedelta(minutes=10)]
    w.ecs.answers[arn] = view(arn)
    assert await w.sweeper.sweep() == {run_id: "stopped:orphan"}
    assert w.stats.tasks_stopped == Counter({"orphan": 1})
    assert w.stopper.calls[0][3] == f"ecs-observer: flow run {run_id} is Completed (nightly-{run_id.hex[:6]})"


async def test_tasks_are_described_once_each_100_to_a_call_per_region_and_cluster() -> None:
    w = world()
    big = [task("big") for _ in range(250)]
    for pid, arn in big:
        w.runs.add("RUNNING", pid)
        w.ecs.answers[arn] = view(arn)
    w.runs.add("RUNNING", big[0][0])  # a second run naming the same task: described once
    small_pid, small = task("small")
    w.runs.add("RUNNING", small_pid)  # MISSING: not counted as described
    west_pid, west = task("big", region="eu-west-1")
    w.runs.add("RUNNING", west_pid)
    w.ecs.answers[west] = view(west)
    other = w.runs.add("RUNNING", task("big", account="210987654321")[0])
    unnamed = w.runs.add("RUNNING", None)
    outcomes = await w.sweeper.sweep()
    big_cluster = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/big"
    arns = [arn for _, arn in big]
    assert w.ecs.calls == [
        (REGION, big_cluster, arns[:100]),
        (REGION, big_cluster, arns[100:200]),
        (REGION, big_cluster, arns[200:]),
        (REGION, f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/small", [small]),
        ("eu-west-1", f"arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/big", [west]),
    ]
    assert w.stats.describe_calls == 5
    assert w.stats.described_tasks == 251
    assert (outcomes[other], outcomes[unnamed]) == ("skipped:not-watched", "skipped:not-ecs")
    assert Counter(outcomes.values()) == Counter(
        {"healthy": 252, "waiting": 1, "skipped:not-watched": 1, "skipped:not-ecs": 1}
    )


async def test_a_describe_that_fails_is_retried_as_an_ecs_outage_then_answers(caplog: pytest.LogCaptureFixture) -> None:
    w = world()
    pid, arn = task()
    run_id = w.runs.add("RUNNING", pid)
    w.ecs.answers[arn] = view(arn)
    cluster = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/prefect"
    w.ecs.failures[cluster] = 2
    caplog.set_level(logging.INFO)
    assert await w.sweeper.sweep() == {run_id: "healthy"}
    assert (w.stats.describe_calls, w.stats.described_tasks) == (3, 1)
    assert w.stats.retries == Counter({"describe_tasks": 2})
    assert lines(caplog, logging.WARNING) == [
        f"ECS is failing: sweep: DescribeTasks for 1 task(s) of cluster {cluster} in {REGION} failed: "
        "ThrottlingException: Rate exceeded (retrying; logged once until it answers again)"
    ]


async def test_a_describe_that_keeps_failing_is_tried_six_times_and_skips_only_its_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = world()
    gone = w.runs.add("RUNNING", task("gone")[0])
    kept = w.runs.add("RUNNING", task("kept")[0])
    cluster = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/gone"
    w.ecs.failures[cluster] = -1
    assert await w.sweeper.sweep() == {gone: "skipped:undescribable", kept: "waiting"}
    assert [call[1] for call in w.ecs.calls].count(cluster) == 6
    assert w.stats.describe_calls == 7
    assert w.stats.retries == Counter({"describe_tasks": 5})
    assert (
        f"sweep: DescribeTasks for 1 task(s) of cluster {cluster} in {REGION} failed; its runs are skipped this "
        "sweep: ThrottlingException: Rate exceeded"
    ) in lines(caplog, logging.WARNING)
    # Skipped, not dated as MISSING: once ECS answers it again, a grace from then.
    w.ecs.failures[cluster] = 0
    w.clock.advance(6)
    assert (await w.sweeper.sweep())[gone] == "waiting"


async def test_a_task_missing_then_seen_again_is_dated_afresh_when_missing_once_more() -> None:
    w = world()
    pid, arn = task()
    run_id = w.runs.add("RUNNING", pid)
    assert await w.sweeper.sweep() == {run_id: "waiting"}  # MISSING
    w.clock.advance(3)
    w.ecs.answers[arn] = view(arn)
    assert await w.sweeper.sweep() == {run_id: "healthy"}
    w.clock.advance(3)
    w.ecs.answers[arn] = None
    assert await w.sweeper.sweep() == {run_id: "waiting"}  # 6 minutes since the first MISSING, 0 since this one
    assert w.path.proposals == []


async def test_each_sweep_logs_a_summary_of_its_outcomes(caplog: pytest.LogCaptureFixture) -> None:
    w = world()
    caplog.set_level(logging.INFO)
    assert await w.sweeper.sweep() == {}
    pid, arn = task()
    w.runs.add("RUNNING", pid)
    w.ecs.answers[arn] = view(arn)
    w.runs.add("RUNNING", task()[0])
    w.runs.add("PENDING", task()[0])
    await w.sweeper.sweep()
    assert lines(caplog) == [
        "sweep: 0 run(s) held against their tasks: none",
        "sweep: 3 run(s) held against their tasks: 1 healthy, 2 waiting",
    ]


# --- The lease, and the loop ------------------------------------------------------------------------------


async def test_the_lease_is_asked_for_an_interval_and_a_half_by_one_owner_per_replica() -> None:
    first, second = world(), world()
    for w in (first, second):
        await w.sweeper.sweep()
        await w.sweeper.sweep()
    (name, owner, seconds), again = first.store.leases
    assert (name, seconds) == ("sweep", 90.0)
    assert isinstance(owner, UUID)
    assert again == (name, owner, seconds)
    assert second.store.leases[0][1] != owner


async def test_a_lease_lost_while_reading_leaves_the_actions_to_its_new_holder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = world(replace(CONFIG, sweep_interval=1.0), store=Store(False))
    pid, arn = task()
    w.runs.add("CANCELLING", pid, since=T0 - timedelta(minutes=10))
    w.ecs.answers[arn] = view(arn)
    assert await w.sweeper.sweep() == {}
    assert w.stopper.calls == []
    assert (w.stats.sweeps, w.stats.reconciled) == (0, Counter())
    assert lines(caplog, logging.WARNING) == [
        "sweep: the lease passed to another replica while reading; leaving the actions to it"
    ]


async def test_a_sweep_without_an_interval_acts_without_asking_for_the_lease() -> None:
    w = world(replace(CONFIG, sweep_interval=0.0), store=Store(False))
    pid, arn = task()
    run_id = w.runs.add("CANCELLING", pid, since=T0 - timedelta(minutes=10))
    w.ecs.answers[arn] = view(arn)
    assert await w.sweeper.sweep() == {run_id: "stopped:cancelled"}
    assert w.store.leases == []


async def test_the_loop_sweeps_each_interval_while_it_holds_the_lease_and_looks_four_times_as_often_without(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 5:
            raise asyncio.CancelledError
        await asyncio.sleep(0)

    monkeypatch.setattr(
        sweep_module, "asyncio", SimpleNamespace(sleep=sleep, Semaphore=asyncio.Semaphore, gather=asyncio.gather)
    )
    # Another replica holds it; then this one (its sweep asks again before acting); then sweeps that fail.
    w = world(store=Store(False, True, True, False))
    run_id = w.runs.add("RUNNING", task()[0])
    reads = 0
    to_reconcile = w.runs.to_reconcile

    def failing_after_one(since: datetime | None, types: Collection[str]) -> AsyncIterator[list[RunToReconcile]]:
        nonlocal reads
        reads += 1
        w.runs.fail = RuntimeError("Prefect API unavailable") if reads > 1 else None
        return to_reconcile(since, types)

    monkeypatch.setattr(w.runs, "to_reconcile", failing_after_one)
    caplog.set_level(logging.INFO)
    with pytest.raises(asyncio.CancelledError):
        await w.sweeper.run()
    # Not held: 15 s; held: 60 s; not held again: 15 s; then two sweeps that failed: 60 s each.
    assert sleeps == [15.0, 60.0, 15.0, 60.0, 60.0]
    assert (w.stats.sweeps, w.stats.sweep_failures) == (1, 2)
    assert w.stats.reconciled == Counter({"waiting": 1})
    assert run_id in w.runs.histories
    assert (
        lines(caplog, logging.WARNING)
        == [
            "sweep failed; the next one in 60 s tries again: Prefect API unavailable",
        ]
        * 2
    )

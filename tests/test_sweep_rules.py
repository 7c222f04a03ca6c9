"""The sweep's verdicts, pure: every case of issue 15's table, and the guards around them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from ecs_observer.app.demo.samples import described
from ecs_observer.core.ecs_event import Container
from ecs_observer.core.run_states import RunState
from ecs_observer.core.start_failure import START_TIMEOUT_MARK
from ecs_observer.core.sweep import (
    Crash,
    Fine,
    Repair,
    RunToReconcile,
    Scope,
    Skip,
    StopTask,
    SweepRules,
    Verdict,
    Wait,
    judge,
    task_of,
)
from ecs_observer.core.task_view import DescribeFailure, TaskView, observation, sweep_event_id, view_of

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
ACCOUNT = "123456789012"
CLUSTER = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/prefect"
TASK = f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/prefect/0123456789abcdef0123456789abcdef"
PID = f"{CLUSTER}::{TASK}"
SCOPE = Scope(ACCOUNT)
RULES = SweepRules(grace=300.0)
LONG = NOW - timedelta(minutes=10)  # longer ago than the grace
JUST = NOW - timedelta(minutes=1)  # within it
RUN_ID = uuid.UUID("7c2f4b1e-58c8-4d1b-9a4e-0f3c2d1b6a59")


def run(state: str, since: datetime = LONG, pid: str | None = PID, name: str = "") -> RunToReconcile:
    return RunToReconcile(RUN_ID, "crimson-otter", RunState(state, name or state.title()), since, pid)


def task(status: str = "RUNNING", **fields: object) -> TaskView:
    return described(TASK, {"prefect.io/flow-run-id": str(RUN_ID)}, status, **fields)


def stopped(at: datetime | None = LONG, exit_code: int = 1, **fields: object) -> TaskView:
    extra: dict[str, object] = {"containers": [{"name": "prefect", "exitCode": exit_code}], **fields}
    if at is not None:
        extra["stoppedAt"] = at
    return task("STOPPED", desiredStatus="STOPPED", startedAt=LONG - timedelta(minutes=5), **extra)


def verdict(
    r: RunToReconcile, answer: TaskView | DescribeFailure | None, first_seen: datetime = LONG, **rules: object
) -> Verdict:
    return judge(r, SCOPE, answer, first_seen, NOW, SweepRules(**{"grace": 300.0, **rules}))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "answer", "first_seen", "expected"),
    [
        # A task that is fine: nothing to do, whatever the run's state.
        ("RUNNING", task(), LONG, Fine()),
        ("PENDING", task("PENDING"), LONG, Fine()),
        # Stopped, long enough ago: what its STOPPED event would have done.
        ("RUNNING", stopped(), LONG, "repair"),
        ("PENDING", stopped(exit_code=0), LONG, "repair"),
        ("CANCELLING", stopped(), LONG, "repair"),
        # Stopped within the grace: the event path's chance.
        ("RUNNING", stopped(at=JUST), LONG, Wait("task 0123456789abcdef0123456789abcdef stopped")),
        # No stoppedAt: dated by when a sweep first saw it stopped.
        ("RUNNING", stopped(at=None), JUST, Wait("task 0123456789abcdef0123456789abcdef stopped")),
        ("RUNNING", stopped(at=None), LONG, "repair"),
        # A final run with its task stopped: nothing.
        ("COMPLETED", stopped(), LONG, Fine()),
        ("CRASHED", None, LONG, Fine()),
        # MISSING for longer than the grace, run in its state as long: Crashed (Cancelled if cancelling).
        ("RUNNING", None, LONG, "crash"),
        ("PENDING", None, LONG, "crash"),
        ("CANCELLING", None, LONG, "cancel"),
        # MISSING just now (just after RunTask, or one sweep only): wait.
        ("RUNNING", None, JUST, Wait("task 0123456789abcdef0123456789abcdef is MISSING")),
        # ECS cannot say: never judged.
        ("RUNNING", DescribeFailure("ACCESS_DENIED"), LONG, Skip("undescribable")),
        # Cancelling with its task still running, for longer than the grace: stop it.
        ("CANCELLING", task(), LONG, "stop:cancelled"),
        ("CANCELLING", task("PENDING"), LONG, "stop:cancelled"),
        # ... unless a stop is already under way.
        ("CANCELLING", task(desiredStatus="STOPPED"), LONG, Wait("task 0123456789abcdef0123456789abcdef is RUNNING")),
        # Cancelled (Prefect's cleanup forced it) while the task runs: stopped too, as a cancel.
        ("CANCELLED", task(), LONG, "stop:cancelled"),
        # Final otherwise, task running: an orphan, left alone on the defaults.
        ("COMPLETED", task(), LONG, Fine()),
        ("FAILED", task(), LONG, Fine()),
    ],
)
def test_the_verdict_for_each_run_and_task(
    state: str, answer: TaskView | DescribeFailure | None, first_seen: datetime, expected: object
) -> None:
    r = run(state)
    got = verdict(r, answer, first_seen)
    if expected == "repair":
        assert got == Repair(answer)  # type: ignore[arg-type]
    elif expected == "crash":
        assert isinstance(got, Crash)
        assert got.state_type == "CRASHED"
        assert "ECS no longer knows task 0123456789abcdef0123456789abcdef" in got.message
        assert "never reported a final state" in got.message
    elif expected == "cancel":
        assert isinstance(got, Crash)
        assert got.state_type == "CANCELLED"
    elif isinstance(expected, str) and expected.startswith("stop:"):
        assert isinstance(got, StopTask)
        assert got.why == expected.removeprefix("stop:")
        assert str(RUN_ID) in got.reason
        assert len(got.reason) <= 255
    else:
        assert got == expected


def test_missing_counts_only_once_the_run_too_has_been_in_its_state_longer_than_the_grace() -> None:
    # Seen MISSING in sweeps for long, but the run only just became Running (a new attempt): wait.
    assert isinstance(verdict(run("RUNNING", since=JUST), None, LONG), Wait)
    assert isinstance(verdict(run("RUNNING", since=LONG), None, LONG), Crash)


def test_the_grace_is_what_holds_every_verdict_back() -> None:
    # With no grace, what was just seen is acted on; with a grace longer than it held, nothing is.
    assert isinstance(verdict(run("RUNNING"), stopped(at=JUST), JUST, grace=0.0), Repair)
    assert isinstance(verdict(run("RUNNING", since=JUST), None, JUST, grace=0.0), Crash)
    assert isinstance(verdict(run("CANCELLING", since=JUST), task(), JUST, grace=0.0), StopTask)
    for answer in (stopped(), None, task()):
        assert isinstance(verdict(run("CANCELLING"), answer, LONG, grace=3600.0), Wait)


def test_a_cancelling_run_just_cancelled_waits_for_its_worker_first() -> None:
    assert isinstance(verdict(run("CANCELLING", since=JUST), task()), Wait)
    assert isinstance(verdict(run("CANCELLED", since=JUST), task()), Wait)


def test_stopping_cancelled_runs_can_be_turned_off() -> None:
    assert verdict(run("CANCELLING"), task(), stop_cancelled=False) == Fine()
    assert verdict(run("CANCELLED"), task(), stop_cancelled=False) == Fine()


def test_orphans_are_stopped_only_when_asked_and_their_run_is_left_alone() -> None:
    got = verdict(run("COMPLETED", name="Completed"), task(), stop_orphans=True)
    assert isinstance(got, StopTask)
    assert got.why == "orphan"
    assert "is Completed" in got.reason
    assert isinstance(verdict(run("COMPLETED", since=JUST), task(), stop_orphans=True), Wait)
    assert isinstance(verdict(run("COMPLETED"), task(desiredStatus="STOPPED"), stop_orphans=True), Wait)


def test_a_task_that_does_not_start_in_time_is_stopped_as_a_start_timeout() -> None:
    created = {"createdAt": NOW - timedelta(seconds=601)}
    got = verdict(run("PENDING"), task("PENDING", **created), start_timeout=600.0)
    assert isinstance(got, StopTask)
    assert got.why == "start-timeout"
    assert got.reason.startswith(START_TIMEOUT_MARK)
    # Off by default; not yet due; already RUNNING; already stopping.
    assert verdict(run("PENDING"), task("PENDING", **created)) == Fine()
    young = {"createdAt": NOW - timedelta(seconds=599)}
    assert verdict(run("PENDING"), task("PENDING", **young), start_timeout=600.0) == Fine()
    assert verdict(run("RUNNING"), task("RUNNING", **created), start_timeout=600.0) == Fine()
    stopping = {**created, "desiredStatus": "STOPPED"}
    assert verdict(run("PENDING"), task("PROVISIONING", **stopping), start_timeout=600.0) == Fine()


@pytest.mark.parametrize(
    ("pid", "expected"),
    [
        (None, Skip("not-ecs")),
        ("", Skip("not-ecs")),
        ("12345", Skip("not-ecs")),  # a process worker's pid
        ("my-namespace:my-job-abcde", Skip("not-ecs")),  # a Kubernetes worker's
        (f"prefect::{TASK}", None),  # the cluster by name
        (PID, None),  # by ARN
        (f"other::{TASK}", Skip("not-ecs")),  # a pid that contradicts its own task ARN
        (f"{CLUSTER}::{TASK.replace(ACCOUNT, '210987654321')}", Skip("not-watched")),  # another account's task
    ],
)
def test_only_ecs_tasks_of_the_observers_own_account_are_judged(pid: str | None, expected: Verdict | None) -> None:
    got = verdict(run("RUNNING", pid=pid), None, LONG)
    if expected is None:
        assert isinstance(got, Crash)
    else:
        assert got == expected


def test_with_watched_clusters_only_those_are_judged() -> None:
    watched = Scope.of(ACCOUNT, [CLUSTER])
    other = Scope.of(ACCOUNT, [f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/other"])
    elsewhere = Scope.of(ACCOUNT, [f"arn:aws:ecs:eu-west-1:{ACCOUNT}:cluster/prefect"])
    for scope, judged in ((watched, True), (other, False), (elsewhere, False), (Scope(ACCOUNT), True)):
        got = judge(run("RUNNING"), scope, None, LONG, NOW, RULES)
        assert isinstance(got, Crash) if judged else got == Skip("not-watched")
    # No known account: nothing is judged.
    assert judge(run("RUNNING"), Scope(None), None, LONG, NOW, RULES) == Skip("not-watched")


def test_task_of_reads_the_prefect_aws_workers_pid() -> None:
    ref = task_of(PID)
    assert ref is not None
    assert (ref.task_arn, ref.region, ref.account, ref.cluster, ref.cluster_name) == (
        TASK,
        "us-east-1",
        ACCOUNT,
        CLUSTER,
        "prefect",
    )
    by_name = task_of(f"prefect::{TASK}")
    assert by_name is not None
    assert by_name.cluster == "prefect"
    # An old-format task ARN (no cluster in it) is taken with the pid's cluster.
    old = "arn:aws:ecs:us-east-1:123456789012:task/0123456789abcdef0123456789abcdef"
    legacy = task_of(f"default::{old}")
    assert legacy is not None
    assert (legacy.task_arn, legacy.cluster, legacy.cluster_name) == (old, "default", "default")


def test_a_sweeps_observation_is_the_stopped_event_it_stands_for() -> None:
    view = stopped(version=7, stopCode="EssentialContainerExited", stoppedReason="Essential container in task exited")
    change = observation(view, NOW)
    assert change.source == "sweep"
    assert change.event_id == sweep_event_id(TASK, 7) == observation(view, NOW + timedelta(hours=1)).event_id
    assert change.event_id != sweep_event_id(TASK, 8)
    assert change.occurred == LONG  # stoppedAt
    assert change.version == 7
    assert change.stop is not None
    assert change.stop.stop_code == "EssentialContainerExited"
    assert change.stop.containers == (Container("prefect", 1, None),)
    assert change.stop.started
    assert change.flow_run_id_override is None
    # Without stoppedAt, when a sweep first saw it stopped.
    assert observation(stopped(at=None), JUST).occurred == JUST
    never = observation(task("STOPPED", stopCode="TaskFailedToStart"), NOW)
    assert never.stop is not None
    assert not never.stop.started


def test_view_of_is_lenient_with_what_describe_tasks_answers() -> None:
    assert view_of({}) is None
    assert view_of({"taskArn": "not an arn"}) is None
    env = [{"name": "PREFECT__FLOW_RUN_ID", "value": str(RUN_ID)}]
    view = view_of(
        {
            "taskArn": TASK,
            "lastStatus": "STOPPED",
            "version": "4",
            "createdAt": 1_700_000_000.5,
            "startedAt": "2026-12-02T11:00:00Z",
            "stoppedAt": datetime(2026, 12, 2, 11, 5),  # naive: UTC
            "containers": [{"name": "prefect", "exitCode": "137", "reason": "OutOfMemoryError"}, "junk"],
            "overrides": {"containerOverrides": [{"environment": env}]},
            "tags": [{"key": "a", "value": "b"}, {"value": "no key"}],
        }
    )
    assert view is not None
    assert view.version == 4
    assert view.created_at == datetime.fromtimestamp(1_700_000_000.5, UTC)
    assert view.started_at == datetime(2026, 12, 2, 11, 0, tzinfo=UTC)
    assert view.stopped_at == datetime(2026, 12, 2, 11, 5, tzinfo=UTC)
    assert view.containers == (Container("prefect", 137, "OutOfMemoryError"),)
    assert view.flow_run_id_override == RUN_ID
    assert dict(view.tags) == {"a": "b"}
    assert view.task_id == "0123456789abcdef0123456789abcdef"
    odd = view_of({"taskArn": TASK, "version": True, "startedAt": "yesterday", "stoppedAt": [], "overrides": []})
    assert odd is not None
    assert (odd.version, odd.started_at, odd.stopped_at, odd.flow_run_id_override) == (None, None, None, None)

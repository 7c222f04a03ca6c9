"""The sweep's verdicts, pure: every case of issue 15's table, and the guards around them."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ecs_observer.app.demo.samples import described
from ecs_observer.core.ecs_event import Container, Stop, TaskStateChange
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
RULES = SweepRules(grace=300.0, stop_cancelled=True, stop_orphans=False, start_timeout=0.0)
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
    return judge(r, SCOPE, answer, first_seen, NOW, replace(RULES, **rules))  # type: ignore[arg-type]


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
        # Stopped long ago, but first seen so just now (an observer started on a backlog, ECS describing the
        # task only now): its STOPPED may still wait in the queue, the event path's chance.
        ("RUNNING", stopped(), JUST, Wait("task 0123456789abcdef0123456789abcdef stopped")),
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
    assert (ref.task_arn, ref.task_id, ref.region, ref.account, ref.cluster, ref.cluster_name) == (
        TASK,
        "0123456789abcdef0123456789abcdef",
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


def test_the_words_of_each_verdict_name_the_run_the_task_and_when() -> None:
    task_id = "0123456789abcdef0123456789abcdef"
    since = LONG.isoformat(timespec="seconds")
    assert verdict(run("RUNNING"), None, LONG) == Crash(
        f"ECS no longer knows task {task_id} (MISSING in sweeps since {since}: it stopped over an hour ago, "
        "or never existed), and the flow run never reported a final state"
    )
    assert verdict(run("CANCELLING"), None, LONG) == Crash(
        f"ECS no longer knows task {task_id} (MISSING since {since}) while cancelling", "CANCELLED"
    )
    assert verdict(run("CANCELLING"), task(desiredStatus="STOPPED")) == Wait(f"task {task_id} is RUNNING")
    assert verdict(run("COMPLETED"), task("DEACTIVATING", desiredStatus="STOPPED"), stop_orphans=True) == Wait(
        f"task {task_id} is DEACTIVATING"
    )
    assert verdict(run("CANCELLING"), task()) == StopTask(
        f"ecs-observer: flow run {RUN_ID} is Cancelling (crimson-otter)", "cancelled"
    )
    assert verdict(run("CANCELLED"), task()) == StopTask(
        f"ecs-observer: flow run {RUN_ID} is Cancelled (crimson-otter)", "cancelled"
    )
    # The state's name as Prefect gives it, else its type in words.
    assert verdict(run("FAILED", name="AwaitingNothing"), task(), stop_orphans=True) == StopTask(
        f"ecs-observer: flow run {RUN_ID} is AwaitingNothing (crimson-otter)", "orphan"
    )
    nameless = replace(run("COMPLETED"), state=RunState("COMPLETED", ""))
    assert verdict(nameless, task(), stop_orphans=True) == StopTask(
        f"ecs-observer: flow run {RUN_ID} is Completed (crimson-otter)", "orphan"
    )


def test_a_stop_reason_fits_ecs_255_characters_whatever_the_runs_name() -> None:
    long = replace(run("CANCELLING"), name="a  very\tlong   name " * 30)
    got = verdict(long, task())
    assert isinstance(got, StopTask)
    assert len(got.reason) == 255
    assert got.reason.startswith(f"ecs-observer: flow run {RUN_ID} is Cancelling (a very long name a very")
    assert got.reason.endswith(")")
    unnamed = verdict(replace(run("CANCELLING"), name=" "), task())
    assert unnamed == StopTask(f"ecs-observer: flow run {RUN_ID} is Cancelling", "cancelled")


def test_the_grace_and_the_start_timeout_are_strict_bounds() -> None:
    at_grace = NOW - timedelta(seconds=300)
    assert isinstance(verdict(run("RUNNING"), stopped(at=at_grace)), Wait)
    assert isinstance(verdict(run("RUNNING"), stopped(at=at_grace - timedelta(seconds=1))), Repair)
    assert isinstance(verdict(run("RUNNING"), stopped(), at_grace), Wait)
    assert isinstance(verdict(run("RUNNING"), stopped(), at_grace - timedelta(seconds=1)), Repair)
    created = {"createdAt": NOW - timedelta(seconds=600)}
    assert verdict(run("PENDING"), task("PENDING", **created), start_timeout=600.0) == Fine()
    # Any positive start timeout counts, a fraction of a second too.
    young = {"createdAt": NOW - timedelta(seconds=1)}
    assert isinstance(verdict(run("PENDING"), task("PROVISIONING", **young), start_timeout=0.5), StopTask)


def test_no_watched_clusters_means_every_cluster_of_the_account() -> None:
    assert Scope.of(ACCOUNT, []) == Scope(ACCOUNT, None, None)
    assert Scope.of(ACCOUNT, ["not an arn"]) == Scope(ACCOUNT, frozenset())
    ref = task_of(PID)
    assert ref is not None
    assert Scope.of(ACCOUNT, []).watches(ref)
    assert not Scope.of(ACCOUNT, ["not an arn"]).watches(ref)


def test_sweep_event_ids_never_change_between_releases() -> None:
    # Replicas of two versions of the observer, and a sweep after an upgrade, must agree on them.
    assert sweep_event_id(TASK, 7) == uuid.UUID("e558ab51-61b2-549e-9b00-db1db8e67f97")
    assert sweep_event_id(TASK, None) == uuid.UUID("189ce317-7e08-5f7f-a742-e6772cd820b1")


def test_an_observation_is_the_whole_change_its_event_would_have_been() -> None:
    definition = "arn:aws:ecs:us-east-1:123456789012:task-definition/flow:3"
    view = replace(
        stopped(version=7, stopCode="EssentialContainerExited", stoppedReason="Essential container in task exited"),
        cluster_arn=CLUSTER,
        task_definition_arn=definition,
    )
    other_run = uuid.uuid4()
    assert observation(view, NOW, other_run) == TaskStateChange(
        event_id=sweep_event_id(TASK, 7),
        task_arn=TASK,
        task_id="0123456789abcdef0123456789abcdef",
        region="us-east-1",
        cluster=CLUSTER,
        cluster_arn=CLUSTER,
        task_definition_arn=definition,
        last_status="STOPPED",
        version=7,
        occurred=LONG,
        flow_run_id_override=other_run,
        emitted=NOW,
        stop=Stop(
            "EssentialContainerExited", "Essential container in task exited", (Container("prefect", 1, None),), True
        ),
        source="sweep",
    )
    # The task's own override wins over the run the sweep read; a task not stopped has no stop.
    assert observation(replace(view, flow_run_id_override=RUN_ID), NOW, other_run).flow_run_id_override == RUN_ID
    assert observation(view, NOW).flow_run_id_override is None
    assert observation(task(), NOW).stop is None


def test_view_of_reads_every_field_describe_tasks_gives() -> None:
    definition = "arn:aws:ecs:us-east-1:123456789012:task-definition/flow:3"
    env = [{"name": "OTHER", "value": "x"}, "junk", {"name": "PREFECT__FLOW_RUN_ID", "value": str(RUN_ID)}]
    view = view_of(
        {
            "taskArn": TASK,
            "lastStatus": "STOPPED",
            "desiredStatus": "STOPPED",
            "version": "-3",
            "clusterArn": CLUSTER,
            "taskDefinitionArn": definition,
            "createdAt": "2026-12-02T11:00:00Z",
            "startedAt": datetime(2026, 12, 2, 13, 1, tzinfo=timezone(timedelta(hours=2))),
            "stoppedAt": "2026-12-02T11:02:00",
            "stopCode": "EssentialContainerExited",
            "stoppedReason": "Essential container in task exited",
            "containers": [{"name": "prefect", "exitCode": 0}],
            "overrides": {"containerOverrides": ["junk", {"environment": env}]},
            "tags": [{"key": "prefect.io/flow-run-id", "value": str(RUN_ID)}, {"key": "empty"}],
        }
    )
    assert view == TaskView(
        task_arn=TASK,
        task_id="0123456789abcdef0123456789abcdef",
        region="us-east-1",
        last_status="STOPPED",
        desired_status="STOPPED",
        version=-3,
        tags=view.tags if view is not None else {},
        cluster_arn=CLUSTER,
        task_definition_arn=definition,
        created_at=datetime(2026, 12, 2, 11, 0, tzinfo=UTC),
        started_at=datetime(2026, 12, 2, 11, 1, tzinfo=UTC),
        stopped_at=datetime(2026, 12, 2, 11, 2, tzinfo=UTC),
        stop_code="EssentialContainerExited",
        stopped_reason="Essential container in task exited",
        containers=(Container("prefect", 0, None),),
        flow_run_id_override=RUN_ID,
    )
    assert view is not None
    assert dict(view.tags) == {"prefect.io/flow-run-id": str(RUN_ID), "empty": ""}
    empty = view_of({"taskArn": TASK, "clusterArn": "", "stoppedReason": 7, "version": "X3", "lastStatus": None})
    assert empty is not None
    assert (empty.cluster_arn, empty.stopped_reason, empty.version, empty.last_status) == (None, None, None, "")
    not_ours = {"containerOverrides": [{"environment": [{"name": "OTHER", "value": str(RUN_ID)}]}]}
    assert view_of({"taskArn": TASK, "overrides": not_ours}).flow_run_id_override is None  # type: ignore[union-attr]


@pytest.mark.usefixtures("tokyo")
def test_describe_tasks_times_are_utc_whatever_the_machine_s_time_zone() -> None:
    view = view_of(
        {
            "taskArn": TASK,
            "createdAt": datetime(2026, 12, 2, 11, 0),  # naive: UTC, not Tokyo's 11:00
            "startedAt": datetime(2026, 12, 2, 20, 1, tzinfo=timezone(timedelta(hours=9))),
            "stoppedAt": "2026-12-02T11:02:00Z",
        }
    )
    assert view is not None
    assert view.created_at == datetime(2026, 12, 2, 11, 0, tzinfo=UTC)
    assert view.started_at is not None
    assert view.started_at.utcoffset() == timedelta(0)
    assert view.started_at == datetime(2026, 12, 2, 11, 1, tzinfo=UTC)
    assert view.stopped_at == datetime(2026, 12, 2, 11, 2, tzinfo=UTC)


def test_a_run_that_entered_its_state_after_its_task_stopped_is_a_new_attempt_left_alone() -> None:
    # Retried or rescheduled, Pending again, its worker not yet naming the new task: the old stop is history.
    assert verdict(run("PENDING", since=JUST), stopped(at=LONG)) == Wait(
        "flow run entered Pending after task 0123456789abcdef0123456789abcdef stopped"
    )
    assert isinstance(verdict(run("PENDING", since=LONG - timedelta(seconds=1)), stopped(at=LONG)), Repair)


def test_a_run_the_observer_made_infrastructure_pending_after_its_task_stopped_is_repaired() -> None:
    """A backlog after downtime: the task's PENDING handled after the task had stopped, its STOPPED lost.
    The observer's own InfrastructurePending is no new attempt: left to wait, the run would never end."""
    late = run("PENDING", since=JUST, name="InfrastructurePending")
    assert verdict(late, stopped(at=LONG)) == Repair(stopped(at=LONG))


def test_without_watched_clusters_only_the_observers_own_region_is_judged() -> None:
    here, there = Scope.of(ACCOUNT, [], "us-east-1"), Scope.of(ACCOUNT, [], "eu-west-1")
    assert isinstance(judge(run("RUNNING"), here, None, LONG, NOW, RULES), Crash)
    assert judge(run("RUNNING"), there, None, LONG, NOW, RULES) == Skip("not-watched")
    # Watched clusters name their regions themselves.
    assert isinstance(judge(run("RUNNING"), Scope.of(ACCOUNT, [CLUSTER], "eu-west-1"), None, LONG, NOW, RULES), Crash)

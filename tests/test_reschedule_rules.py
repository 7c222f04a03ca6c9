"""Rescheduling a transient start failure, and the sweep's own proposals: pure."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ecs_observer import TaskStateChange, decode
from ecs_observer.app.demo.samples import state_change
from ecs_observer.core.decision import Ack, Forward, settle
from ecs_observer.core.diagnosis import diagnose
from ecs_observer.core.ecs_event import Container, Stop
from ecs_observer.core.run_states import (
    RESCHEDULE_MARK,
    Reschedule,
    RetryPolicy,
    RunState,
    diagnosis_log,
    plan_retry,
    propose,
    retry_cause,
    retry_note,
)
from ecs_observer.core.start_failure import START_TIMEOUT_MARK

from .runs import STATE_NAMES

ARN = "arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef"
OTHER = "arn:aws:ecs:us-east-1:123456789012:task/prefect/fedcba9876543210fedcba9876543210"
WHEN = datetime(2026, 3, 1, tzinfo=UTC)
POLICY = RetryPolicy(retries=2, delay=30.0, interrupted=False)  # the settings' defaults
TIMED_OUT: dict[str, Any] = {
    "stopCode": "UserInitiated",
    "stoppedReason": f"{START_TIMEOUT_MARK} 600 s (flow run x)",
    "containers": [{"name": "prefect"}],
}


def stop_change(started: bool = False, source: str = "event", **stopped: Any) -> TaskStateChange:
    event = state_change(
        ARN, "STOPPED", 3, WHEN, started_at=WHEN - timedelta(minutes=1) if started else None, stopped=stopped or None
    )
    decoded = decode(json.dumps(event))
    assert isinstance(decoded, TaskStateChange)
    return replace(decoded, source="sweep") if source == "sweep" else decoded


def test_a_stopped_event_says_whether_the_task_ever_started() -> None:
    assert stop_change(started=True).stop == Stop(
        "EssentialContainerExited", "Essential container in task exited", (Container("prefect", 0, None),), True
    )
    never = stop_change(**TIMED_OUT).stop
    assert never is not None
    assert not never.started


def test_retry_cause_needs_a_transient_stop_and_retries_left() -> None:
    policy = POLICY
    timed_out = stop_change(**TIMED_OUT).stop
    assert retry_cause(timed_out, policy) == "start timeout"
    assert retry_cause(timed_out, replace(POLICY, retries=0)) is None
    assert retry_cause(timed_out, replace(POLICY, retries=1)) == "start timeout"
    assert retry_cause(None, policy) is None
    assert retry_cause(stop_change(started=True, **TIMED_OUT).stop, policy) is None  # it ran: not a start failure


def test_interrupted_runs_are_rescheduled_only_when_asked() -> None:
    spot = stop_change(started=True, stopCode="SpotInterruption", stoppedReason="Your Spot Task was interrupted.").stop
    assert retry_cause(spot, POLICY) is None
    assert retry_cause(spot, replace(POLICY, interrupted=True)) == "interrupted after it started"
    host = stop_change(started=True, stopCode="TerminationNotice").stop
    assert retry_cause(host, replace(POLICY, interrupted=True)) == "interrupted after it started"
    user = stop_change(started=True, stopCode="UserInitiated").stop
    assert retry_cause(user, replace(POLICY, interrupted=True)) is None


@pytest.mark.parametrize(("earlier", "attempt"), [(0, 1), (1, 2), (2, None), (3, None)])
def test_plan_retry_stops_at_the_limit(earlier: int, attempt: int | None) -> None:
    policy = POLICY
    plan = plan_retry("start timeout", earlier, policy, WHEN)
    if attempt is None:
        assert plan is None
        assert "the 2 reschedule(s) allowed" in retry_note("start timeout", plan, policy)
    else:
        assert plan == Reschedule(attempt, 2, WHEN + timedelta(seconds=30), "start timeout")
        assert f"attempt {attempt} of 2" in retry_note("start timeout", plan, policy)


@pytest.mark.parametrize("state_type", list(STATE_NAMES))
def test_a_rescheduled_stop_proposes_awaiting_retry_where_it_would_crash(state_type: str) -> None:
    change = stop_change(**TIMED_OUT)
    diagnosis = diagnose(change.stop)  # type: ignore[arg-type]
    plan = Reschedule(1, 2, WHEN + timedelta(seconds=30), "start timeout")
    current = RunState(state_type, STATE_NAMES[state_type])
    crash = propose(change, diagnosis, current)
    retried = propose(change, diagnosis, current, plan)
    if crash is not None and crash.type == "CRASHED":
        assert retried is not None
        assert (retried.type, retried.name, retried.scheduled_time) == ("SCHEDULED", "AwaitingRetry", plan.at)
        assert retried.message.startswith(f"{RESCHEDULE_MARK} (attempt 1 of 2, start timeout): ECS task ")
        assert retried.to_json()["state"]["state_details"] == {"scheduled_time": plan.at.isoformat()}  # type: ignore[index]
    else:
        assert retried == crash  # Cancelling goes Cancelled; final, scheduled and paused runs stay


def test_a_clean_exit_crashes_a_run_only_when_a_sweep_finds_it_still_active() -> None:
    clean = stop_change(started=True)
    diagnosis = diagnose(clean.stop)  # type: ignore[arg-type]
    for state_type, name in STATE_NAMES.items():
        assert propose(clean, diagnosis, RunState(state_type, name)) is None or state_type == "CANCELLING"
    swept = stop_change(started=True, source="sweep")
    for state_type, name in STATE_NAMES.items():
        proposal = propose(swept, diagnosis, RunState(state_type, name))
        if state_type in ("PENDING", "RUNNING"):
            assert proposal is not None
            assert (proposal.type, proposal.name) == ("CRASHED", "Crashed")
            assert proposal.message == (
                "ECS task 0123456789abcdef0123456789abcdef exited cleanly (code 0) at 2026-03-01T00:00:00+00:00; "
                "the flow run never reported a final state"
            )
        elif state_type == "CANCELLING":
            assert proposal is not None
            assert proposal.type == "CANCELLED"
        else:
            assert proposal is None


def test_a_run_that_moved_on_to_another_task_is_not_touched_by_the_old_ones_changes() -> None:
    crashed = stop_change(containers=[{"name": "prefect", "exitCode": 1}])
    diagnosis = diagnose(crashed.stop)  # type: ignore[arg-type]
    assert propose(crashed, diagnosis, RunState("RUNNING", "Running", ARN)) is not None
    assert propose(crashed, diagnosis, RunState("RUNNING", "Running", None)) is not None
    assert propose(crashed, diagnosis, RunState("RUNNING", "Running", OTHER)) is None


def test_the_diagnosis_log_says_which_attempt_it_was() -> None:
    change = stop_change(**TIMED_OUT)
    diagnosis = diagnose(change.stop)  # type: ignore[arg-type]
    note = retry_note("start timeout", Reschedule(2, 2, WHEN, "start timeout"), POLICY)
    log = diagnosis_log(change, uuid.uuid4(), diagnosis, note)
    assert log.message.splitlines()[-1] == note
    assert "attempt 2 of 2" in note
    assert diagnosis_log(change, uuid.uuid4(), diagnosis).message.splitlines()[-1].startswith("Resolution:")


def test_a_sweeps_observation_of_a_change_forwarded_before_says_so() -> None:
    change = stop_change(started=True)
    assert settle(Forward(change, None), None) == Ack(
        "deduplicated", f"task {ARN}: effects applied again, event forwarded before"
    )

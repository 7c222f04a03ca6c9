"""The pure flow-run state decision and a change's effects, over every state a run can be in."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import pytest

from ecs_observer import TaskStateChange, decode
from ecs_observer.app.demo.samples import FARGATE_LIFECYCLE, state_change
from ecs_observer.core.decision import (
    DeregisterDefinition,
    ForwardCrashLogs,
    KeepRunTrue,
    WriteDiagnosis,
    effects_of,
)
from ecs_observer.core.diagnosis import diagnose
from ecs_observer.core.run_states import Proposal, RunLog, RunState, crash_logs, diagnosis_log, never_ran, propose
from ecs_observer.core.task_record import expires_after

from .runs import STATE_NAMES

ARN = "arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef"
DEF = "arn:aws:ecs:us-east-1:123456789012:task-definition/flow:3"
RUN = uuid.UUID("7c2f4b1e-58c8-4d1b-9a4e-0f3c2d1b6a59")
STATES = STATE_NAMES


def change(status: str, **stop: Any) -> TaskStateChange:
    event = state_change(ARN, status, 3, datetime(2026, 3, 1, tzinfo=UTC), task_definition_arn=DEF, **stop)
    decoded = decode(json.dumps(event))
    assert isinstance(decoded, TaskStateChange)
    return decoded


@pytest.mark.parametrize("status", ["PROVISIONING", "PENDING"])
@pytest.mark.parametrize("state_type", list(STATES))
def test_infrastructure_pending_only_before_the_run_runs(status: str, state_type: str) -> None:
    proposal = propose(change(status), None, RunState(state_type, STATES[state_type]))
    if state_type in ("SCHEDULED", "PENDING"):
        assert proposal is not None
        assert (proposal.type, proposal.name, proposal.message) == (
            "PENDING",
            "InfrastructurePending",
            "ECS task is pending",
        )
    else:
        assert proposal is None
    assert propose(change(status), None, RunState("PENDING", "InfrastructurePending")) is None


@pytest.mark.parametrize("status", [s for s in FARGATE_LIFECYCLE if s not in ("PROVISIONING", "PENDING", "STOPPED")])
def test_other_changes_propose_nothing(status: str) -> None:
    for state_type, name in STATES.items():
        assert propose(change(status), None, RunState(state_type, name)) is None


@pytest.mark.parametrize("state_type", list(STATES))
@pytest.mark.parametrize("exit_code", [0, 1, 137])
def test_a_stop(state_type: str, exit_code: int) -> None:
    stopped = change("STOPPED", exit_code=exit_code)
    assert stopped.stop is not None
    diagnosis = diagnose(stopped.stop)
    proposal = propose(stopped, diagnosis, RunState(state_type, STATES[state_type]))
    if state_type == "CANCELLING":
        assert proposal is not None
        assert (proposal.type, proposal.name) == ("CANCELLED", "Cancelled")
        assert "EssentialContainerExited" in proposal.message
    elif exit_code and state_type in ("PENDING", "RUNNING"):
        assert proposal is not None
        assert (proposal.type, proposal.name) == ("CRASHED", "Crashed")
        assert proposal.message.startswith("ECS task 0123456789abcdef0123456789abcdef stopped: ")
        assert f"exit code {exit_code}" in proposal.message or f"code {exit_code}" in proposal.message
        assert "\n" not in proposal.message
    else:
        assert proposal is None  # a clean exit, or a run final, scheduled or paused


def test_effects_of_each_change() -> None:
    placed = change("PENDING")
    assert effects_of(placed, RUN, None, {}) == (KeepRunTrue(RUN),)
    assert effects_of(placed, RUN, None, {}, run_states=False) == ()
    assert effects_of(change("RUNNING"), RUN, None, {}) == ()
    clean = change("STOPPED")
    assert clean.stop is not None
    assert effects_of(clean, RUN, diagnose(clean.stop), {}) == (KeepRunTrue(RUN),)
    failed = change("STOPPED", exit_code=1)
    assert failed.stop is not None
    diagnosis = diagnose(failed.stop)
    assert effects_of(failed, RUN, diagnosis, {}, crash_log_lines=100) == (
        KeepRunTrue(RUN),
        WriteDiagnosis(RUN, diagnosis),
        ForwardCrashLogs(RUN, 100),
    )
    assert effects_of(failed, RUN, diagnosis, {}, crash_log_lines=0) == (
        KeepRunTrue(RUN),
        WriteDiagnosis(RUN, diagnosis),
    )
    for tag in ("prefect.io/degregister-task-definition", "prefect.io/deregister-task-definition"):
        tags = MappingProxyType({tag: "True"})
        assert effects_of(clean, RUN, diagnose(clean.stop), tags)[-1] == DeregisterDefinition(DEF)
        # The clean-up is not a flow-run state: it happens with states off too, and only on STOPPED.
        assert effects_of(clean, RUN, diagnose(clean.stop), tags, run_states=False) == (DeregisterDefinition(DEF),)
        assert effects_of(placed, RUN, None, tags) == (KeepRunTrue(RUN),)
    assert effects_of(clean, RUN, diagnose(clean.stop), {"prefect.io/degregister-task-definition": "false"}) == (
        KeepRunTrue(RUN),
    )


def test_logs_a_person_reads() -> None:
    failed = change("STOPPED", exit_code=137)
    assert failed.stop is not None
    entry = diagnosis_log(failed, RUN, diagnose(failed.stop))
    assert entry.level == "ERROR"
    assert entry.timestamp == failed.occurred
    assert entry.message.splitlines() == [
        "ECS task 0123456789abcdef0123456789abcdef stopped: the container ran out of memory and was killed "
        "(exit code 137).",
        "Reason: Essential container in task exited",
        "Reason: flow run crashed",
        "Resolution: raise the task's or the container's memory (the work pool's `memory`), or make the flow use less.",
    ]
    when = datetime(2026, 3, 1, tzinfo=UTC)
    posted = crash_logs(RUN, "abc", [(when, "one"), (when, "two")])
    assert [p.message for p in posted] == ["The last 2 line(s) of ECS task abc's container:", "one", "two"]
    assert posted[0].timestamp < when
    assert crash_logs(RUN, "abc", []) == []
    assert never_ran(RunState("PENDING", "InfrastructurePending"))
    assert not never_ran(RunState("RUNNING", "Running"))


def proposed(current: str, **fields: Any) -> Proposal | None:
    """What a STOPPED change with these fields proposes for a run in state `current`."""
    stopped = change("STOPPED", **fields)
    assert stopped.stop is not None
    return propose(stopped, diagnose(stopped.stop), RunState(current, STATES[current]))


def test_the_crash_message_says_what_stopped_how_and_why_on_one_line() -> None:
    proposal = proposed("RUNNING", exit_code=3, stopped={"stoppedReason": "Essential container\n in task   exited"})
    assert proposal is not None
    assert proposal.message == (
        "ECS task 0123456789abcdef0123456789abcdef stopped: the essential container exited with code 3; "
        "stop code EssentialContainerExited; reason: Essential container in task exited"
    )
    assert proposal.to_json() == {
        "state": {"type": "CRASHED", "name": "Crashed", "message": proposal.message},
        "force": False,
    }
    # No stop code or reason: neither is named.
    bare: dict[str, Any] = {"stopped": {"stopCode": None, "stoppedReason": None, "containers": []}}
    assert proposed("PENDING", **bare) == Proposal(
        "CRASHED",
        "Crashed",
        "ECS task 0123456789abcdef0123456789abcdef stopped: the container was killed without an exit code",
    )
    # An exit code the summary does not name is named apart.
    crashed = proposed("RUNNING", exit_code=137, stopped={"stopCode": None})
    assert crashed is not None
    assert crashed.message == (
        "ECS task 0123456789abcdef0123456789abcdef stopped: the container ran out of memory and was killed; "
        "exit code 137; reason: Essential container in task exited"
    )
    assert proposed("CANCELLING", **bare) == Proposal(
        "CANCELLED", "Cancelled", "ECS task 0123456789abcdef0123456789abcdef stopped (no stop code) while cancelling"
    )
    # A STOPPED change without a diagnosis (the observer always makes one) proposes nothing.
    assert propose(change("STOPPED", exit_code=3), None, RunState("RUNNING", "Running")) is None


def test_crash_logs_are_the_runs_in_order_after_their_heading() -> None:
    first, second = datetime(2026, 3, 1, 12, tzinfo=UTC), datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
    posted = crash_logs(RUN, "abc", [(first, "one"), (second, "two")])
    assert posted == [
        RunLog(RUN, "INFO", "The last 2 line(s) of ECS task abc's container:", first - timedelta(milliseconds=1)),
        RunLog(RUN, "INFO", "one", first),
        RunLog(RUN, "INFO", "two", second),
    ]


def test_only_a_run_that_never_reported_running_never_ran() -> None:
    assert [state for state in STATES if never_ran(RunState(state, STATES[state]))] == ["SCHEDULED", "PENDING"]


def test_the_diagnosis_log_belongs_to_the_run() -> None:
    failed = change("STOPPED", exit_code=1)
    assert failed.stop is not None
    entry = diagnosis_log(failed, RUN, diagnose(failed.stop))
    assert entry.run_id == RUN
    # The exit code is in the summary already: not said twice.
    assert entry.message.splitlines()[0] == (
        "ECS task 0123456789abcdef0123456789abcdef stopped: the essential container exited with code 1."
    )


def test_crash_logs_are_asked_for_only_when_lines_are_wanted() -> None:
    failed = change("STOPPED", exit_code=1)
    assert failed.stop is not None
    diagnosis = diagnose(failed.stop)
    assert ForwardCrashLogs(RUN, 1) in effects_of(failed, RUN, diagnosis, {}, crash_log_lines=1)
    assert not any(isinstance(e, ForwardCrashLogs) for e in effects_of(failed, RUN, diagnosis, {}))
    # Deregistration only for a tag that says true; a missing tag says nothing.
    assert not any(isinstance(e, DeregisterDefinition) for e in effects_of(failed, RUN, diagnosis, {}))
    assert effects_of(failed, RUN, diagnosis, {"prefect.io/deregister-task-definition": " TRUE "})[-1] == (
        DeregisterDefinition(DEF)
    )


def test_a_stopped_tasks_state_is_kept_hours_a_running_ones_days() -> None:
    when = datetime(2026, 3, 1, tzinfo=UTC)
    assert expires_after("STOPPED", when) == when + timedelta(hours=6)
    for status in FARGATE_LIFECYCLE[:-1]:
        assert expires_after(status, when) == when + timedelta(days=7)

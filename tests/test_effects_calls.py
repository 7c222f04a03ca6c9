"""What a change's effects call on Prefect, ECS and CloudWatch Logs, and what they count and log.

`Effects` driven directly with the decisions the core builds from ECS events (`decision.forward`), a
memory task-state store and small port fakes that record each call: no server.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import uuid
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from ecs_observer import TaskStateChange, decode
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.app.demo.runs import MemoryFlowRuns
from ecs_observer.app.demo.samples import state_change
from ecs_observer.core.decision import Forward, forward
from ecs_observer.core.run_states import RESCHEDULE_MARK, LogSource, Proposal, ProposalAnswer, RunLog, RunState
from ecs_observer.core.task_record import DONE, expires_after
from ecs_observer.pipeline.config import ObserverConfig
from ecs_observer.pipeline.effects import Effects
from ecs_observer.ports import Claim
from ecs_observer.support.backoff import Backoff
from ecs_observer.support.stats import Stats

from .sim.clock import EPOCH, in_virtual_time

ARN = "arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef"
OTHER = "arn:aws:ecs:us-east-1:123456789012:task/prefect/fedcba9876543210fedcba9876543210"
TASK_ID = ARN.rsplit("/", 1)[1]
DEFINITION = "arn:aws:ecs:us-east-1:123456789012:task-definition/prefect-flow:7"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SOURCE = LogSource("/ecs/prefect-flow", "ecs", "us-east-1", "prefect")
LINES = [
    (T0 + timedelta(seconds=1), "Traceback (most recent call last):"),
    (T0 + timedelta(seconds=2), "KeyError: 'x'"),
]
CAPACITY = {
    "stopCode": "TaskFailedToStart",
    "stoppedReason": "Capacity is unavailable at this time. Please try again later",
    "containers": [{"name": "prefect", "lastStatus": "STOPPED"}],
}
FAST = Backoff(initial=0.001, maximum=0.001)


def change(status: str, version: int, task_arn: str = ARN, **fields: Any) -> TaskStateChange:
    when = T0 + timedelta(seconds=version)
    decoded = decode(
        json.dumps(state_change(task_arn, status, version, when, task_definition_arn=DEFINITION, **fields))
    )
    assert isinstance(decoded, TaskStateChange)
    return decoded


def decide(
    one: TaskStateChange,
    run: UUID,
    *,
    name: str | None = "sly-fox",
    deregister: bool = False,
    crash_log_lines: int = 0,
    config: ObserverConfig | None = None,
    forwarded_before: bool = False,
) -> Forward:
    """The decision the observer makes for the change of a task tagged with `run`."""
    tags = {"prefect.io/flow-run-id": str(run)}
    if name is not None:
        tags["prefect.io/flow-run-name"] = name
    if deregister:
        tags["prefect.io/deregister-task-definition"] = "true"
    config = config or ObserverConfig()
    return forward(
        one,
        tags,
        run,
        None,
        container_name=config.container_name,
        crash_log_lines=crash_log_lines,
        retry=config.retry_policy(),
        forwarded_before=forwarded_before,
    )


class Runs(MemoryFlowRuns):
    """Prefect's flow runs in memory, recording every read and proposal; a proposal (by run and state name)
    can be answered otherwise than ACCEPT (and then not applied), fail, or be held until let go."""

    def __init__(self, run_ids: Collection[UUID]) -> None:
        super().__init__(run_ids)
        self.reads: list[list[UUID]] = []
        self.proposed: list[tuple[UUID, Proposal]] = []
        self.answers: dict[tuple[UUID, str], ProposalAnswer] = {}
        self.failures: dict[tuple[UUID, str], Exception] = {}
        self.held: dict[tuple[UUID, str], asyncio.Event] = {}
        self.crash_log_failure: Exception | None = None  # for posts of crash logs (not the diagnosis)

    def names_proposed(self) -> list[str]:
        return [proposal.name for _, proposal in self.proposed]

    async def states(self, run_ids: Collection[UUID]) -> Mapping[UUID, RunState]:
        self.reads.append(list(run_ids))
        return await super().states(run_ids)

    async def propose(self, run_id: UUID, proposal: Proposal) -> ProposalAnswer:
        self.proposed.append((run_id, proposal))
        key = (run_id, proposal.name)
        if (gate := self.held.get(key)) is not None:
            await gate.wait()
        if (failure := self.failures.get(key)) is not None:
            raise failure
        if (answer := self.answers.get(key)) is not None:
            return answer
        return await super().propose(run_id, proposal)

    async def log(self, logs: Sequence[RunLog]) -> None:
        if self.crash_log_failure is not None and logs[0].message.startswith("The last"):
            raise self.crash_log_failure
        await super().log(logs)


class Definitions:
    """ECS task definitions: the awslogs source of each container asked for, and deregistrations that
    fail `failures` times first."""

    def __init__(self, source: LogSource | None = SOURCE, failures: int = 0) -> None:
        self.source = source
        self.failures = failures
        self.asked: list[tuple[str, str]] = []
        self.deregisters: list[str] = []  # every attempt

    async def log_source(self, arn: str, container: str) -> LogSource | None:
        self.asked.append((arn, container))
        return self.source

    async def deregister(self, arn: str) -> None:
        self.deregisters.append(arn)
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("ThrottlingException: Rate exceeded")


class Tails:
    """CloudWatch Logs: the container's last lines (None: no stream), failing `failures` times first."""

    def __init__(self, lines: list[tuple[datetime, str]] | None = LINES, failures: int = 0) -> None:
        self.lines = lines
        self.failures = failures
        self.asked: list[tuple[LogSource, str, int]] = []

    async def tail(self, source: LogSource, task_id: str, lines: int) -> list[tuple[datetime, str]] | None:
        self.asked.append((source, task_id, lines))
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("ServiceUnavailableException")
        return self.lines


class Store(MemoryTaskState):
    """The memory store, recording each once-per-task claim asked and each done."""

    def __init__(self) -> None:
        super().__init__(max_tasks=100)
        self.onces: list[tuple[str, str, UUID, datetime, float, Claim]] = []
        self.dones: list[tuple[str, str, datetime]] = []

    async def once(self, task_arn: str, what: str, owner: UUID, expires: datetime, lease: float) -> Claim:
        claim = await super().once(task_arn, what, owner, expires, lease)
        self.onces.append((task_arn, what, owner, expires, lease, claim))
        return claim

    async def done(self, task_arn: str, what: str, expires: datetime) -> None:
        self.dones.append((task_arn, what, expires))
        await super().done(task_arn, what, expires)


def effects_for(
    runs: Runs,
    *,
    store: Store | None = None,
    stats: Stats | None = None,
    definitions: Definitions | None = None,
    tails: Tails | None = None,
    **settings: Any,
) -> Effects:
    config = ObserverConfig(**{"linger": 0.005, "backoff": FAST, **settings})
    return Effects(runs, store if store is not None else Store(), stats or Stats(), config, definitions, tails)


async def apply(effects: Effects, *decisions: Forward) -> None:
    """Schedule each decision's effects, in order, and wait for all of them."""
    tasks = [task for decision in decisions if (task := effects.schedule(decision)) is not None]
    await asyncio.gather(*tasks)
    await asyncio.sleep(0)  # the tasks' done callbacks


def started(effects: Effects, decision: Forward) -> asyncio.Task[None]:
    task = effects.schedule(decision)
    assert task is not None
    return task


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(1.0):
        while not condition():
            await asyncio.sleep(0.001)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """ERROR records of any logger (asyncio's included: a done callback that fails logs one)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name.startswith("ecs_observer")]


# --- the flow run's name in the log lines ---


def wall() -> datetime:
    """The wall clock the observer reads in virtual time (`tests.sim.clock.reading`)."""
    return EPOCH + timedelta(seconds=asyncio.get_running_loop().time())


@in_virtual_time
async def test_an_accepted_proposal_is_logged_at_info_with_the_runs_name_and_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    run = uuid.uuid4()
    runs = Runs([run])
    await apply(effects_for(runs), decide(change("PROVISIONING", 1), run))
    assert messages(caplog, logging.INFO) == [
        f"flow run sly-fox ({run}): InfrastructurePending proposed (task {TASK_ID}): ACCEPT"
    ]


@in_virtual_time
async def test_a_run_without_a_name_is_logged_by_its_id_alone_and_a_refusal_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    run = uuid.uuid4()
    runs = Runs([run])
    runs.answers[(run, "InfrastructurePending")] = "REJECT"
    await apply(effects_for(runs), decide(change("PROVISIONING", 1), run, name=None))
    assert messages(caplog, logging.INFO) == []
    assert f"flow run {run}: InfrastructurePending proposed (task {TASK_ID}): REJECT" in messages(caplog, logging.DEBUG)


@in_virtual_time
async def test_a_sweeps_observation_has_no_event_and_names_the_run_by_its_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    run = uuid.uuid4()
    runs = Runs([run])
    await apply(effects_for(runs), decide(change("PROVISIONING", 1), run, forwarded_before=True))
    assert messages(caplog, logging.INFO) == [
        f"flow run {run}: InfrastructurePending proposed (task {TASK_ID}): ACCEPT"
    ]


# --- InfrastructurePending: once answered, the task's next placing change reads nothing ---


@pytest.mark.parametrize("answer", ["ACCEPT", "REJECT", "ABORT"])
@in_virtual_time
async def test_once_prefect_answered_infrastructure_pending_the_next_placing_change_reads_nothing(
    answer: ProposalAnswer,
) -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    runs.answers[(run, "InfrastructurePending")] = answer
    stats = Stats()
    effects = effects_for(runs, stats=stats)
    await apply(effects, decide(change("PROVISIONING", 1), run))
    await apply(effects, decide(change("PENDING", 2), run))
    assert runs.reads == [[run]]  # one POST /flow_runs/filter, for the first
    assert runs.names_proposed() == ["InfrastructurePending"]
    assert stats.state_proposals == {answer: 1}


@in_virtual_time
async def test_after_wait_infrastructure_pending_is_read_and_proposed_again() -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    runs.answers[(run, "InfrastructurePending")] = "WAIT"
    stats = Stats()
    effects = effects_for(runs, stats=stats)
    await apply(effects, decide(change("PROVISIONING", 1), run))
    await apply(effects, decide(change("PENDING", 2), run))
    assert runs.reads == [[run], [run]]
    assert runs.names_proposed() == ["InfrastructurePending", "InfrastructurePending"]
    assert stats.state_proposals == {"WAIT": 2}


@in_virtual_time
async def test_a_crashed_run_is_still_read_for_a_late_placing_change_of_its_task() -> None:
    """Only InfrastructurePending marks the task placed: after Crashed a (late) PENDING still reads the run."""
    run = uuid.uuid4()
    runs = Runs([run])
    effects = effects_for(runs)
    await apply(effects, decide(change("STOPPED", 8, exit_code=1), run))
    await apply(effects, decide(change("PENDING", 2), run))
    assert runs.reads == [[run], [run]]
    assert runs.names_proposed() == ["Crashed"]


@in_virtual_time
async def test_a_run_prefect_does_not_know_is_counted_missing_each_time(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    run = uuid.uuid4()
    runs = Runs([])
    stats = Stats()
    effects = effects_for(runs, stats=stats)
    await apply(effects, decide(change("PROVISIONING", 1), run))
    await apply(effects, decide(change("PENDING", 2), run))
    assert stats.state_proposals == {"MISSING": 2}
    assert runs.proposed == []
    assert messages(caplog, logging.DEBUG).count(f"flow run {run} of task {ARN} does not exist") == 2


@in_virtual_time
async def test_reads_of_the_same_run_in_one_linger_ask_prefect_for_it_once() -> None:
    """Two tasks of one run (a retry's) placed at once: one read, naming the run once."""
    run = uuid.uuid4()
    runs = Runs([run])
    runs.answers[(run, "InfrastructurePending")] = "WAIT"
    effects = effects_for(runs, linger=0.05)
    await apply(effects, decide(change("PROVISIONING", 1), run), decide(change("PROVISIONING", 1, OTHER), run))
    assert runs.reads == [[run]]
    assert runs.names_proposed() == ["InfrastructurePending", "InfrastructurePending"]


# --- one task's effects in order; other tasks' not held by them ---


@in_virtual_time
async def test_a_tasks_later_effects_wait_for_its_earlier_ones_and_a_redelivery_finds_them_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """InfrastructurePending before Crashed, never after; a redelivery of the stop scheduled while its first
    delivery's Crashed is under way waits for it, then finds the run Crashed and proposes nothing."""
    run = uuid.uuid4()
    runs = Runs([run])
    placing, crash = asyncio.Event(), asyncio.Event()
    runs.held[(run, "InfrastructurePending")] = placing
    runs.held[(run, "Crashed")] = crash
    effects = effects_for(runs)
    stopped = change("STOPPED", 8, exit_code=1)
    first = started(effects, decide(change("PROVISIONING", 1), run))
    second = started(effects, decide(stopped, run))
    await until(lambda: runs.proposed != [])
    await asyncio.sleep(0.02)
    assert runs.names_proposed() == ["InfrastructurePending"]  # the stop's effects wait
    placing.set()
    await first
    await until(lambda: len(runs.proposed) == 2)
    third = started(effects, decide(stopped, run))  # its redelivery, while the first's Crashed is under way
    await asyncio.sleep(0.02)
    crash.set()
    await asyncio.gather(second, third)
    await asyncio.sleep(0)
    assert runs.names_proposed() == ["InfrastructurePending", "Crashed"]
    assert [state.name for state in runs.histories[run]] == ["Pending", "InfrastructurePending", "Crashed"]
    assert errors(caplog) == []  # nothing failed in a done callback either


@in_virtual_time
async def test_another_tasks_effects_go_on_while_one_tasks_are_held() -> None:
    run, other = uuid.uuid4(), uuid.uuid4()
    runs = Runs([run, other])
    held = asyncio.Event()
    runs.held[(run, "InfrastructurePending")] = held
    effects = effects_for(runs)
    first = started(effects, decide(change("PROVISIONING", 1), run))
    second = started(effects, decide(change("PROVISIONING", 1, OTHER), other))
    await asyncio.wait_for(second, 1.0)
    assert runs.histories[other][-1].name == "InfrastructurePending"
    assert not first.done()
    held.set()
    await first


@in_virtual_time
async def test_an_earlier_effect_that_failed_does_not_fail_the_tasks_later_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its failure is its own message's (which comes back); the stop's effects still run."""
    run = uuid.uuid4()
    runs = Runs([run])
    runs.failures[(run, "InfrastructurePending")] = RuntimeError("HTTP 503")
    effects = effects_for(runs)
    first = started(effects, decide(change("PROVISIONING", 1), run))
    second = started(effects, decide(change("STOPPED", 8, exit_code=1), run))
    with pytest.raises(RuntimeError, match="HTTP 503"):
        await first
    await second
    await asyncio.sleep(0)
    assert runs.histories[run][-1].name == "Crashed"
    assert errors(caplog) == []


@in_virtual_time
async def test_a_decision_without_effects_schedules_nothing() -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    assert effects_for(runs).schedule(decide(change("RUNNING", 4), run)) is None
    assert runs.reads == []


@in_virtual_time
async def test_close_returns_once_the_effects_under_way_have_ended() -> None:
    """A stopped replica calls nothing after its run returned (seeds 221, 237)."""
    run = uuid.uuid4()
    runs = Runs([run])
    runs.held[(run, "InfrastructurePending")] = asyncio.Event()  # never let go
    effects = effects_for(runs)
    task = started(effects, decide(change("PROVISIONING", 1), run))
    await until(lambda: runs.proposed != [])
    await effects.close()
    assert task.cancelled()


# --- a transient start failure: AwaitingRetry while reschedules are left, else Crashed ---


def rescheduled_before(runs: Runs, run: UUID, times: int) -> None:
    """The run's history holds `times` AwaitingRetry states of ours, and it is Pending again."""
    for attempt in range(1, times + 1):
        for state, message in (
            (
                RunState("SCHEDULED", "AwaitingRetry"),
                f"{RESCHEDULE_MARK} (attempt {attempt} of 2, capacity unavailable)",
            ),
            (RunState("PENDING", "Pending"), ""),
        ):
            runs.histories[run].append(state)
            runs.state_messages[run].append(message)
            runs.state_times[run].append(T0)


def diagnosis_lines(runs: Runs, run: UUID) -> list[str]:
    (diagnosis,) = [entry for entry in runs.logs[run] if entry.message.startswith(f"ECS task {TASK_ID} stopped")]
    return diagnosis.message.splitlines()


@in_virtual_time
async def test_a_transient_start_failure_is_rescheduled_and_the_diagnosis_says_which_attempt() -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    stats = Stats()
    before = wall()
    await apply(effects_for(runs, stats=stats), decide(change("STOPPED", 3, stopped=CAPACITY), run))
    ((_, proposal),) = runs.proposed
    assert (proposal.type, proposal.name) == ("SCHEDULED", "AwaitingRetry")
    assert proposal.message.startswith(f"{RESCHEDULE_MARK} (attempt 1 of 2, capacity unavailable): ECS task {TASK_ID}")
    assert proposal.scheduled_time is not None
    assert before + timedelta(seconds=30) <= proposal.scheduled_time <= wall() + timedelta(seconds=30)
    assert stats.reschedules == 1
    assert stats.state_proposals == {"ACCEPT": 1}
    at = proposal.scheduled_time.isoformat(timespec="seconds")
    assert diagnosis_lines(runs, run)[-1] == (
        f"Rescheduled (capacity unavailable): attempt 1 of 2; the worker starts the run again from {at}."
    )


@in_virtual_time
async def test_a_run_whose_reschedules_are_used_is_crashed_and_the_diagnosis_says_why() -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    rescheduled_before(runs, run, 2)
    stats = Stats()
    await apply(effects_for(runs, stats=stats), decide(change("STOPPED", 3, stopped=CAPACITY), run))
    assert runs.names_proposed() == ["Crashed"]
    assert stats.reschedules == 0
    assert diagnosis_lines(runs, run)[-1] == (
        "Not rescheduled (capacity unavailable): the 2 reschedule(s) allowed per flow run "
        "(ECS_OBSERVER_START_RETRIES) are used."
    )


@in_virtual_time
async def test_a_second_reschedule_counts_the_first_in_the_runs_history() -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    rescheduled_before(runs, run, 1)
    await apply(effects_for(runs), decide(change("STOPPED", 3, stopped=CAPACITY), run))
    ((_, proposal),) = runs.proposed
    assert proposal.message.startswith(f"{RESCHEDULE_MARK} (attempt 2 of 2, capacity unavailable)")


@pytest.mark.parametrize("answer", ["REJECT", "ABORT"])
@in_virtual_time
async def test_awaiting_retry_refused_falls_back_to_crashed_with_a_note(answer: ProposalAnswer) -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    runs.answers[(run, "AwaitingRetry")] = answer
    stats = Stats()
    await apply(effects_for(runs, stats=stats), decide(change("STOPPED", 3, stopped=CAPACITY), run))
    assert runs.names_proposed() == ["AwaitingRetry", "Crashed"]
    assert runs.histories[run][-1].name == "Crashed"
    assert runs.messages[run].startswith(f"ECS task {TASK_ID} stopped: the task failed to start")
    assert stats.reschedules == 0
    assert stats.state_proposals == {answer: 1, "ACCEPT": 1}
    assert (
        diagnosis_lines(runs, run)[-1]
        == f"Not rescheduled (capacity unavailable): Prefect answered {answer} to AwaitingRetry."
    )


@in_virtual_time
async def test_a_failed_stop_that_is_not_transient_is_crashed_with_a_diagnosis_of_no_reschedule() -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    stats = Stats()
    await apply(effects_for(runs, stats=stats), decide(change("STOPPED", 8, exit_code=1), run))
    assert runs.names_proposed() == ["Crashed"]
    assert diagnosis_lines(runs, run)[-1].startswith("Resolution: ")
    assert stats.run_logs == 1


# --- crash logs: whose, how many lines, and when there are none ---


def crash_log_messages(runs: Runs, run: UUID) -> list[str]:
    return [entry.message for entry in runs.logs[run] if not entry.message.startswith(f"ECS task {TASK_ID} stopped")]


@in_virtual_time
async def test_the_crash_logs_of_the_flows_container_are_posted_before_crashed() -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    definitions, tails, stats = Definitions(), Tails(), Stats()
    effects = effects_for(runs, stats=stats, definitions=definitions, tails=tails)
    await apply(effects, decide(change("STOPPED", 8, exit_code=1), run, crash_log_lines=5))
    assert definitions.asked == [(DEFINITION, "prefect")]
    assert tails.asked == [(SOURCE, TASK_ID, 5)]
    assert crash_log_messages(runs, run) == [
        f"The last 2 line(s) of ECS task {TASK_ID}'s container:",
        "Traceback (most recent call last):",
        "KeyError: 'x'",
    ]
    assert runs.names_proposed() == ["Crashed"]
    assert stats.run_logs == 2  # the crash logs, the diagnosis
    assert stats.retries == {}


@in_virtual_time
async def test_a_stops_only_container_is_the_one_whose_logs_are_read_whatever_its_name() -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    definitions = Definitions()
    stopped = {"containers": [{"name": "main", "lastStatus": "STOPPED", "exitCode": 1}]}
    effects = effects_for(runs, definitions=definitions, tails=Tails())
    await apply(effects, decide(change("STOPPED", 8, stopped=stopped), run, crash_log_lines=5))
    assert definitions.asked == [(DEFINITION, "main")]


@in_virtual_time
async def test_of_several_containers_the_configured_ones_logs_are_read() -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    definitions = Definitions()
    containers = [
        {"name": "sidecar", "lastStatus": "STOPPED", "exitCode": 0},
        {"name": "flow", "lastStatus": "STOPPED", "exitCode": 1},
    ]
    config = ObserverConfig(container_name="flow")
    effects = effects_for(runs, definitions=definitions, tails=Tails(), container_name="flow")
    decision = decide(change("STOPPED", 8, stopped={"containers": containers}), run, crash_log_lines=5, config=config)
    await apply(effects, decision)
    assert definitions.asked == [(DEFINITION, "flow")]


@in_virtual_time
async def test_a_definition_without_awslogs_posts_no_crash_logs_and_says_so_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    run = uuid.uuid4()
    runs = Runs([run])
    tails = Tails()
    effects = effects_for(runs, definitions=Definitions(source=None), tails=tails)
    await apply(effects, decide(change("STOPPED", 8, exit_code=1), run, crash_log_lines=5))
    assert tails.asked == []
    assert crash_log_messages(runs, run) == []
    assert f"task definition {DEFINITION}: no awslogs configuration for the flow's container" in messages(
        caplog, logging.DEBUG
    )


@in_virtual_time
async def test_a_task_without_a_log_stream_posts_no_crash_logs_and_names_the_stream_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    run = uuid.uuid4()
    runs = Runs([run])
    stats = Stats()
    effects = effects_for(runs, stats=stats, definitions=Definitions(), tails=Tails(lines=None))
    await apply(effects, decide(change("STOPPED", 8, exit_code=1), run, crash_log_lines=5))
    assert crash_log_messages(runs, run) == []
    assert stats.run_logs == 1  # the diagnosis alone
    assert f"no log stream ecs/prefect/{TASK_ID} in /ecs/prefect-flow for task {ARN}" in messages(caplog, logging.DEBUG)


@in_virtual_time
async def test_crash_logs_cloudwatch_fails_to_give_are_asked_again_and_counted_as_its_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    stats = Stats()
    tails = Tails(failures=2)
    effects = effects_for(runs, stats=stats, definitions=Definitions(), tails=tails)
    await apply(effects, decide(change("STOPPED", 8, exit_code=1), run, crash_log_lines=5))
    assert len(tails.asked) == 3
    assert stats.retries == {"crash_logs": 2}
    assert len(crash_log_messages(runs, run)) == 3
    assert messages(caplog, logging.WARNING) == [
        f"CloudWatch Logs is failing: fetching the crash logs of task {ARN} failed: ServiceUnavailableException "
        "(retrying; logged once until it answers again)"
    ]


@in_virtual_time
async def test_crash_logs_are_given_up_after_six_attempts_with_a_warning_and_the_run_still_crashed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    stats = Stats()
    tails = Tails(failures=6)
    effects = effects_for(runs, stats=stats, definitions=Definitions(), tails=tails)
    await apply(effects, decide(change("STOPPED", 8, exit_code=1), run, crash_log_lines=5))
    assert len(tails.asked) == 6
    assert stats.retries == {"crash_logs": 5}
    assert crash_log_messages(runs, run) == []
    assert runs.names_proposed() == ["Crashed"]
    assert messages(caplog, logging.WARNING)[-1] == (
        f"fetching the crash logs of task {ARN} failed 6 times; giving up: ServiceUnavailableException"
    )


@pytest.mark.parametrize("side", ["definitions", "container logs"])
@in_virtual_time
async def test_without_task_definitions_or_container_logs_no_crash_logs_are_fetched(
    side: str, caplog: pytest.LogCaptureFixture
) -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    stats = Stats()
    definitions, tails = Definitions(), Tails()
    if side == "definitions":
        effects = effects_for(runs, stats=stats, tails=tails)
    else:
        effects = effects_for(runs, stats=stats, definitions=definitions)
    await apply(effects, decide(change("STOPPED", 8, exit_code=1), run, crash_log_lines=5))
    assert definitions.asked == []
    assert tails.asked == []
    assert stats.retries == {}
    assert messages(caplog, logging.WARNING) == []
    assert runs.names_proposed() == ["Crashed"]


@in_virtual_time
async def test_a_run_that_ran_gets_no_crash_logs() -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    runs.histories[run].append(RunState("RUNNING", "Running"))
    runs.state_messages[run].append("")
    runs.state_times[run].append(T0)
    definitions = Definitions()
    await apply(
        effects_for(runs, definitions=definitions, tails=Tails()),
        decide(change("STOPPED", 8, exit_code=1), run, crash_log_lines=5),
    )
    assert definitions.asked == []
    assert runs.names_proposed() == ["Crashed"]


@in_virtual_time
async def test_crash_logs_prefect_will_not_take_fail_the_message_but_the_run_is_crashed_first() -> None:
    """Their post failing does not hold the state: proposed anyway, then the message comes back."""
    run = uuid.uuid4()
    runs = Runs([run])
    runs.crash_log_failure = RuntimeError("HTTP 503 from /logs/")
    effects = effects_for(runs, definitions=Definitions(), tails=Tails())
    task = started(effects, decide(change("STOPPED", 8, exit_code=1), run, crash_log_lines=5))
    with pytest.raises(RuntimeError, match="HTTP 503"):
        await task
    assert runs.histories[run][-1].name == "Crashed"
    assert runs.logs[run] == []  # the diagnosis is the redelivery's to write


# --- deregistering the worker's task definition ---


@in_virtual_time
async def test_a_tagged_tasks_definition_is_deregistered_once_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    run = uuid.uuid4()
    runs = Runs([run])
    stats = Stats()
    definitions = Definitions(failures=2)
    effects = effects_for(runs, stats=stats, definitions=definitions)
    stopped = change("STOPPED", 8)  # a clean exit: nothing for the run, the definition all the same
    await apply(effects, decide(stopped, run, deregister=True))
    await apply(effects, decide(stopped, run, deregister=True))  # its redelivery
    assert definitions.deregisters == [DEFINITION] * 3
    assert stats.deregistered == 1
    assert stats.retries == {"deregister": 2}
    assert f"task definition {DEFINITION} deregistered (task {TASK_ID} stopped)" in messages(caplog, logging.INFO)
    assert messages(caplog, logging.WARNING) == [
        f"ECS is failing: DeregisterTaskDefinition {DEFINITION} failed: ThrottlingException: Rate exceeded "
        "(retrying; logged once until it answers again)"
    ]


@in_virtual_time
async def test_a_deregistration_ecs_keeps_refusing_is_given_up_after_six_attempts_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    stats = Stats()
    definitions = Definitions(failures=6)
    await apply(
        effects_for(runs, stats=stats, definitions=definitions), decide(change("STOPPED", 8), run, deregister=True)
    )
    assert len(definitions.deregisters) == 6
    assert stats.deregistered == 0
    assert messages(caplog, logging.WARNING)[-1] == (
        f"DeregisterTaskDefinition {DEFINITION} failed 6 times; giving up: ThrottlingException: Rate exceeded"
    )


# --- once per task: the claims asked of the task-state store ---


@in_virtual_time
async def test_each_effect_of_a_stop_is_claimed_and_marked_done_under_its_own_name_until_the_task_expires() -> None:
    """The names are the shared table's attributes (`once_<what>`): replicas of two versions must agree."""
    run = uuid.uuid4()
    runs = Runs([run])
    store = Store()
    effects = effects_for(runs, store=store, definitions=Definitions(), tails=Tails())
    stopped = change("STOPPED", 3, stopped=CAPACITY)
    await apply(effects, decide(stopped, run, deregister=True, crash_log_lines=5))
    expires = expires_after("STOPPED", stopped.occurred)
    whats = ["crash-logs", "run-state", "diagnosis", "deregister"]
    assert store.onces == [(ARN, what, stopped.event_id, expires, 60.0, "mine") for what in whats]
    assert store.dones == [(ARN, what, expires) for what in whats]
    (record,) = (await store.load([ARN])).values()
    assert sorted(record.claims) == sorted((what, DONE, 0.0) for what in whats)


@in_virtual_time
async def test_a_duplicate_of_a_stop_under_another_event_id_does_each_effect_no_second_time() -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    store, stats = Store(), Stats()
    definitions, tails = Definitions(), Tails()
    effects = effects_for(runs, store=store, stats=stats, definitions=definitions, tails=tails)
    stopped = change("STOPPED", 3, stopped=CAPACITY)
    again = change("STOPPED", 3, stopped=CAPACITY)  # the same change, another event id
    await apply(effects, decide(stopped, run, deregister=True, crash_log_lines=5))
    runs.histories[run].append(RunState("PENDING", "Pending"))  # the worker took the rescheduled run back
    runs.state_messages[run].append("")
    runs.state_times[run].append(T0)
    await apply(effects, decide(again, run, deregister=True, crash_log_lines=5))
    assert runs.names_proposed() == ["AwaitingRetry"]
    assert stats.reschedules == 1
    assert stats.run_logs == 2
    assert len(tails.asked) == 1
    assert len(definitions.deregisters) == 1
    assert [claim for *_, claim in store.onces[4:]] == ["done"] * 4


# --- a sweep's own proposal, made only while the run is active on the task ---


@pytest.mark.parametrize(
    ("state", "proposed"),
    [
        (RunState("RUNNING", "Running", ARN), True),
        (RunState("RUNNING", "Running"), True),  # no infrastructure_pid: taken as this task's
        (RunState("RUNNING", "Running", OTHER), False),  # moved on to another task
        (RunState("COMPLETED", "Completed", ARN), False),
        (None, False),  # Prefect does not know it
    ],
)
@in_virtual_time
async def test_a_sweeps_proposal_is_made_only_while_the_run_is_active_on_the_task(
    state: RunState | None, proposed: bool
) -> None:
    run = uuid.uuid4()
    runs = Runs([run] if state is not None else [])
    if state is not None:
        runs.histories[run] = [state]
        if state.task_arn is not None:
            runs.pids[run] = f"prefect::{state.task_arn}"  # as the worker writes it
    stats = Stats()
    effects = effects_for(runs, stats=stats)
    crash = Proposal("CRASHED", "Crashed", f"ECS task {TASK_ID} is gone")
    answer = await effects.propose_while_on(run, ARN, crash)
    assert answer == ("ACCEPT" if proposed else None)
    assert runs.proposed == ([(run, crash)] if proposed else [])
    assert stats.state_proposals == ({"ACCEPT": 1} if proposed else {})


@in_virtual_time
async def test_effects_that_are_done_are_not_kept_so_memory_does_not_grow_with_every_task_seen() -> None:
    run = uuid.uuid4()
    runs = Runs([run])
    effects = effects_for(runs)
    task = started(effects, decide(change("PROVISIONING", 1), run))
    await task
    await asyncio.sleep(0)  # its done callbacks
    gone = weakref.ref(task)
    del task
    gc.collect()
    assert gone() is None

"""What to do with one message, as a value: the pipeline decides, then carries the decision out.

New behaviour lands as a new decision (or, later, an effect a `Forward` carries),
not as another branch among the pipeline's awaits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal
from uuid import UUID

from .chain import Link
from .diagnosis import Diagnosis, diagnose
from .ecs_event import Decoded, Ignored, Rejected, TaskStateChange
from .run_states import PLACING, RetryPolicy, retry_cause
from .task_record import TaskTags
from .task_view import sweep_event_id
from .translate import NotPrefects, PrefectEvent, Translation, build_event, flow_run_id

__all__ = [
    "Ack",
    "Decision",
    "DeregisterDefinition",
    "Effect",
    "Forward",
    "ForwardCrashLogs",
    "KeepRunTrue",
    "Outcome",
    "Release",
    "WriteDiagnosis",
    "batch_order",
    "duplicate",
    "effects_of",
    "forward",
    "resend_as",
    "settle",
    "translate",
    "triage",
    "unowned",
]


@dataclass(frozen=True, slots=True)
class KeepRunTrue:
    """Read the run's state and propose what the change calls for (`run_states.propose`)."""

    run_id: UUID


@dataclass(frozen=True, slots=True)
class WriteDiagnosis:
    """Write the diagnosis of a failed stop to the run's logs, once per stopped task."""

    run_id: UUID
    diagnosis: Diagnosis


@dataclass(frozen=True, slots=True)
class ForwardCrashLogs:
    """Post the container's last lines to the run's logs, once, if the run never reached Running."""

    run_id: UUID
    lines: int


@dataclass(frozen=True, slots=True)
class DeregisterDefinition:
    """Deregister the task definition the Prefect worker registered for this task, once."""

    arn: str


Effect = KeepRunTrue | WriteDiagnosis | ForwardCrashLogs | DeregisterDefinition

# The Prefect ECS worker's spelling, and the right one.
DEREGISTER_TAGS = ("prefect.io/degregister-task-definition", "prefect.io/deregister-task-definition")


def effects_of(
    change: TaskStateChange,
    run_id: UUID,
    diagnosis: Diagnosis | None,
    tags: Mapping[str, str],
    *,
    run_states: bool = True,
    crash_log_lines: int = 0,
) -> tuple[Effect, ...]:
    """What a change of a Prefect task does besides its event: to its flow run (with `run_states`),
    and to the task definition the worker registered for it."""
    effects: list[Effect] = []
    if run_states and change.last_status in PLACING:
        effects.append(KeepRunTrue(run_id))
    if change.stop is not None and diagnosis is not None and run_states:
        # A clean exit changes nothing, but a run still Cancelling is finished: the state is read anyway.
        effects.append(KeepRunTrue(run_id))
        if diagnosis.failed:
            effects.append(WriteDiagnosis(run_id, diagnosis))
            if crash_log_lines > 0:
                effects.append(ForwardCrashLogs(run_id, crash_log_lines))
    if change.stop is not None and change.task_definition_arn and _true(tags, DEREGISTER_TAGS):
        effects.append(DeregisterDefinition(change.task_definition_arn))
    return tuple(effects)


def _true(tags: Mapping[str, str], keys: tuple[str, ...]) -> bool:
    return any(tags.get(key, "").strip().lower() == "true" for key in keys)


# What became of an acknowledged message; each is a count of the stats (`Observer._count`).
Outcome = Literal["ignored", "filtered", "forwarded", "deduplicated"]


@dataclass(frozen=True, slots=True)
class Ack:
    """Delete the message: it is done. `outcome` names what became of it."""

    outcome: Outcome
    note: str = ""


@dataclass(frozen=True, slots=True)
class Release:
    """Stop holding the message: it comes back, and after its redrive count goes to the dead-letter queue."""

    reason: str
    refused_event: bool = False  # the Prefect API refused the message's event


@dataclass(frozen=True, slots=True)
class Forward:
    """Send this event for the change and apply its effects, in the task's version order; the
    message is done once Prefect has answered the event (see `settle`) and every effect.

    `event` is None for a sweep's observation of a change already forwarded: its effects are applied
    again (each is idempotent, or done once per task), since the run still does not show them.
    `retry_cause`: the stop may be rescheduled instead of crashed (`run_states.retry_cause`)."""

    change: TaskStateChange
    event: PrefectEvent | None
    effects: tuple[Effect, ...] = ()
    diagnosis: Diagnosis | None = None
    retry_cause: str | None = None


Decision = Ack | Release | Forward


def forward(
    change: TaskStateChange,
    tags: Mapping[str, str],
    run_id: UUID,
    follows: UUID | None,
    *,
    container_name: str,
    effects: bool = True,
    run_states: bool = True,
    crash_log_lines: int = 0,
    retry: RetryPolicy | None = None,
    forwarded_before: bool = False,
) -> Forward:
    """The one way a change of a Prefect task becomes its event (with the diagnosis of a stop) and its
    effects: the observer's policy, `ecs-observer translate` and the benchmarks all come here.
    `forwarded_before`: a sweep's observation of a change already forwarded, its effects only; `retry`:
    the reschedule policy, for a failed stop's `retry_cause`."""
    diagnosis = diagnose(change.stop, container_name) if change.stop is not None else None
    event = None if forwarded_before else build_event(change, tags, run_id, follows, diagnosis)
    done = (
        effects_of(change, run_id, diagnosis, tags, run_states=run_states, crash_log_lines=crash_log_lines)
        if effects
        else ()
    )
    failed = diagnosis is not None and diagnosis.failed
    cause = retry_cause(change.stop, retry) if retry is not None and failed else None
    return Forward(change, event, done, diagnosis, cause)


def translate(
    change: TaskStateChange, tags: Mapping[str, str], follows: UUID | None, *, container_name: str = "prefect"
) -> Translation:
    """The Prefect event the observer forwards for one change of a task with these tags."""
    run_id = flow_run_id(change, tags)
    if run_id is None:
        return NotPrefects("no prefect.io/flow-run-id tag holding a UUID")
    event = forward(change, tags, run_id, follows, container_name=container_name, effects=False).event
    assert event is not None  # built: not forwarded before
    return event


def triage(decoded: Decoded) -> Ack | Release | TaskStateChange:
    """Decoding's verdict: a change goes on; anything else is decided here."""
    if isinstance(decoded, Ignored):
        return Ack("ignored", decoded.reason)
    if isinstance(decoded, Rejected):
        return Release(decoded.reason)
    return decoded


def unowned(change: TaskStateChange, tags: TaskTags) -> Ack | Release:
    """A change whose task names no flow run: not Prefect's, deleted with why; unless ECS could not
    describe the task, when nobody knows, and the message is left for the dead-letter queue."""
    if tags.failure is not None:
        return Release(f"ECS cannot describe task {change.task_arn}: {tags.failure}")
    gone = "" if tags.described else " (ECS no longer knows it)"
    return Ack("filtered", f"task {change.task_arn} is not Prefect's{gone}")


def resend_as(change: TaskStateChange, kept: Link) -> TaskStateChange | None:
    """The same change as one kept under another id: the change to carry on under the kept id when that one
    is a sweep's repair, else None (a duplicate, acknowledged as such). A message's event has its message to
    come back with until Prefect accepts it; a sweep's has none, and a sweep that failed or was killed after
    recording the change would leave it with no event while its twin's message is deleted. Under the kept
    id the twin is that change's redelivery: it waits for the repair's `follows` if still pending, then
    forwards the same event, which Prefect keeps once."""
    if change.source != "event" or kept.event_id != sweep_event_id(change.task_arn, change.version):
        return None
    return replace(change, event_id=kept.event_id)


def duplicate(change: TaskStateChange, kept: UUID) -> Ack:
    """The same change (task and version) as one already forwarded under another event id."""
    return Ack("deduplicated", f"version {change.version} of task {change.task_arn} is event {kept} already")


def settle(forward: Forward, refused: str | None) -> Ack | Release:
    """Prefect's answer to the event: accepted (None), or refused with a reason."""
    if forward.event is None:
        return Ack("deduplicated", f"task {forward.change.task_arn}: effects applied again, event forwarded before")
    if refused is None:
        return Ack("forwarded")
    return Release(f"the Prefect API refused event {forward.event.id}: {refused}", refused_event=True)


def batch_order(decoded: Decoded) -> tuple[str, int]:
    """Lower versions of a task first, so that a receive batch needs no reorder wait."""
    if isinstance(decoded, TaskStateChange):
        return (decoded.task_arn, decoded.version or 0)
    return ("", 0)

"""The pure translation of an ECS task state change and its tags into a Prefect event.

No I/O, no clock, no globals: everything it needs comes in as arguments, so it
is tested exhaustively and gives the identical event for a redelivered message.
The contract is Prefect's documentation of `prefect.ecs.task.{status}`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from .diagnosis import Diagnosis
from .ecs_event import TaskStateChange, parse_uuid

__all__ = ["NotPrefects", "PrefectEvent", "Translation", "build_event", "flow_run_id"]

FLOW_RUN_ID_TAG = "prefect.io/flow-run-id"
# (resource kind, role, id tag, name tag) of the related resources the documentation lists.
_RELATED_BY_ID = (
    ("flow-run", "flow-run", FLOW_RUN_ID_TAG, "prefect.io/flow-run-name"),
    ("deployment", "deployment", "prefect.io/deployment-id", "prefect.io/deployment-name"),
    ("flow", "flow", "prefect.io/flow-id", "prefect.io/flow-name"),
    ("work-pool", "work-pool", "prefect.io/work-pool-id", "prefect.io/work-pool-name"),
)
WORKER_NAME_TAG = "prefect.io/worker-name"
_MAX_LABEL = 1024
_MAX_REASON = 255  # ECS stop reasons run to about this; longer ones are cut
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class PrefectEvent:
    """A Prefect event, ready for `POST /events`."""

    id: UUID
    event: str
    occurred: str
    resource: Mapping[str, str]
    related: tuple[Mapping[str, str], ...]
    follows: UUID | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": str(self.id),
            "occurred": self.occurred,
            "event": self.event,
            "resource": dict(self.resource),
            "related": [dict(r) for r in self.related],
            "payload": {},
        }
        if self.follows is not None:
            body["follows"] = str(self.follows)
        return body


@dataclass(frozen=True, slots=True)
class NotPrefects:
    """The task was not started by Prefect: nothing to forward."""

    reason: str


Translation = PrefectEvent | NotPrefects


def flow_run_id(change: TaskStateChange, tags: Mapping[str, str]) -> UUID | None:
    """The flow run a task belongs to: its tag, else the worker's environment override."""
    return parse_uuid(tags.get(FLOW_RUN_ID_TAG)) or change.flow_run_id_override


def build_event(
    change: TaskStateChange,
    tags: Mapping[str, str],
    run_id: UUID,
    follows: UUID | None,
    diagnosis: Diagnosis | None = None,
) -> PrefectEvent:
    """The event of a task already known to be Prefect's (`flow_run_id` checked); built by
    `decision.forward` alone, so that the service, `translate` and the benchmarks give the same event.

    A stopped task's resource also says how it stopped (beyond the documented labels), so that an
    automation can match, say, `ecs.diagnosis: out-of-memory`."""
    resource = {
        "prefect.resource.id": f"prefect.ecs.task.{change.task_id}",
        "ecs.taskArn": change.task_arn,
    }
    if change.cluster_arn:
        resource["ecs.clusterArn"] = change.cluster_arn
    if change.task_definition_arn:
        resource["ecs.taskDefinitionArn"] = change.task_definition_arn
    if change.stop is not None and diagnosis is not None:
        resource.update(_stop_labels(change, diagnosis))
    related, warnings = _related(run_id, tags)
    return PrefectEvent(
        id=change.event_id,
        event=f"prefect.ecs.task.{change.status}",
        occurred=change.occurred.isoformat(timespec="milliseconds"),
        resource=resource,
        related=tuple(related),
        follows=follows if follows != change.event_id else None,
        warnings=tuple(warnings),
    )


def _stop_labels(change: TaskStateChange, diagnosis: Diagnosis) -> dict[str, str]:
    assert change.stop is not None
    labels = {"ecs.diagnosis": diagnosis.kind}
    if change.stop.stop_code:
        labels["ecs.stopCode"] = _clean(change.stop.stop_code)[:_MAX_REASON]
    if change.stop.stopped_reason:
        labels["ecs.stoppedReason"] = _clean(change.stop.stopped_reason)[:_MAX_REASON]
    if diagnosis.exit_code is not None:
        labels["ecs.exitCode"] = str(diagnosis.exit_code)
    return labels


def _related(run_id: UUID, tags: Mapping[str, str]) -> tuple[list[dict[str, str]], list[str]]:
    related: list[dict[str, str]] = []
    warnings: list[str] = []
    for kind, role, id_tag, name_tag in _RELATED_BY_ID:
        if kind == "flow-run":
            resource_id: UUID | None = run_id
        elif (raw := tags.get(id_tag)) is None:
            continue
        elif (resource_id := parse_uuid(raw)) is None:
            warnings.append(f"tag {id_tag} is not a UUID; {kind} left out of related resources")
            continue
        entry = {"prefect.resource.id": f"prefect.{kind}.{resource_id}", "prefect.resource.role": role}
        _add_name(entry, tags.get(name_tag))
        related.append(entry)
    if (worker := tags.get(WORKER_NAME_TAG)) is not None:
        slug = _slug(worker)
        if slug:
            entry = {"prefect.resource.id": f"prefect.worker.ecs.{slug}", "prefect.resource.role": "worker"}
            _add_name(entry, worker)
            entry["prefect.worker-type"] = "ecs"
            related.append(entry)
        else:
            warnings.append(f"tag {WORKER_NAME_TAG} has no letters or digits; worker left out of related resources")
    return related, warnings


def _add_name(entry: dict[str, str], raw: str | None) -> None:
    """Tag values are untrusted: drop control characters and keep names bounded."""
    if raw is None:
        return
    name = _clean(raw)[:_MAX_LABEL]
    if name:
        entry["prefect.resource.name"] = name


def _clean(raw: str) -> str:
    """Without control characters, trimmed."""
    # Printable names (nearly all) hold no control or format characters: skip the per-character filter.
    clean = raw if raw.isprintable() else "".join(ch for ch in raw if unicodedata.category(ch)[0] != "C")
    return clean.strip()


def _slug(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    return _NOT_SLUG.sub("-", ascii_name).strip("-")[:_MAX_LABEL]

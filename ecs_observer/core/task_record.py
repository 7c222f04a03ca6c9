"""What the observer knows of one task: its Prefect tags and its recorded state changes.

Plain values; the stores that keep them (in memory, in DynamoDB) are adapters
behind `ports.TaskStateStore`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from uuid import UUID

from .chain import Link

__all__ = [
    "ACTIVE_RETENTION",
    "DONE",
    "EMPTY",
    "GONE",
    "NO_TAGS",
    "STOPPED_RETENTION",
    "TaskRecord",
    "TaskTags",
    "expires_after",
]

# How long a task's state is kept after its last change: hours once it has stopped
# (late redeliveries and the DLQ redrive still find it), days while it may still change.
STOPPED_RETENTION = timedelta(hours=6)
ACTIVE_RETENTION = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class TaskTags:
    """The Prefect tags of a task; `described` is False when ECS no longer knows the task, or (with
    `failure`, ECS's reason) could not say: never to be read as "no tags", nor kept."""

    tags: Mapping[str, str]
    described: bool = True
    failure: str | None = None


NO_TAGS = TaskTags(MappingProxyType({}))
GONE = TaskTags(MappingProxyType({}), described=False)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task's shared state. `tags` is None until some replica has described the task;
    `claimed_until` (epoch seconds) is when another replica's claim to describe it lapses."""

    tags: TaskTags | None = None
    links: tuple[Link, ...] = ()
    claimed_until: float = 0.0
    # (what, the change doing it or DONE, until when its claim holds): see TaskStateStore.once
    claims: tuple[tuple[str, UUID, float], ...] = ()


DONE = UUID(int=0)  # the owner of what has been done: no change's event id


EMPTY = TaskRecord()


def expires_after(status: str, occurred: datetime) -> datetime:
    """When a task's state may be forgotten, counted from the change that wrote it."""
    return occurred + (STOPPED_RETENTION if status == "STOPPED" else ACTIVE_RETENTION)

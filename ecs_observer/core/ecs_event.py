"""Decoding of EventBridge "ECS Task State Change" envelopes.

Pure: bytes in, a `TaskStateChange`, an `Ignored` or a `Rejected` out. Lenient
where AWS is inconsistent (missing optional fields, numbers as strings, 0-3
fractional digits, UUIDs that are not RFC 4122 variants), strict where a message
is truly broken, so that broken messages end in the dead-letter queue instead
of producing a wrong event.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

__all__ = [
    "ECS_SOURCE",
    "TASK_ARN",
    "TASK_STATE_CHANGE",
    "Container",
    "Decoded",
    "Ignored",
    "Rejected",
    "Stop",
    "TaskStateChange",
    "decode",
    "parse_uuid",
]

ECS_SOURCE = "aws.ecs"
TASK_STATE_CHANGE = "ECS Task State Change"
FLOW_RUN_ID_ENV = "PREFECT__FLOW_RUN_ID"

# 8-4-4-4-12 hex digits, any version and variant: EventBridge ids are not always RFC 4122.
_UUID_SHAPE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# arn:<partition>:ecs:<region>:<account>:task/[<cluster>/]<task id>. The account is usually 12 digits, but
# documentation samples, redacted logs and emulators use other shapes; the task id is what matters.
TASK_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):ecs:(?P<region>[a-z0-9-]+):(?P<account>[^/:\s]{1,64}):"
    r"task/(?:(?P<cluster>[A-Za-z0-9_-]{1,255})/)?(?P<task_id>[A-Za-z0-9-]{1,64})$"
)
_STATUS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_MAX_BODY = 256 * 1024  # SQS's own limit; anything larger did not come from EventBridge


def parse_uuid(value: object) -> UUID | None:
    """A UUID from an 8-4-4-4-12 hex string of any variant, else None."""
    if isinstance(value, str) and _UUID_SHAPE.match(value):
        return UUID(value)
    return None


def _uuid_shaped(value: object) -> UUID:
    if isinstance(value, UUID):
        return value
    parsed = parse_uuid(value)
    if parsed is None:
        raise ValueError("not a UUID")
    return parsed


def _utc_ms(value: datetime) -> datetime:
    """Normalise to UTC with millisecond precision; naive timestamps are UTC."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


_Strict = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
UuidShaped = Annotated[UUID, BeforeValidator(_uuid_shaped)]


class _EnvVar(BaseModel):
    model_config = _Strict
    name: str
    value: str | None = None


class _ContainerOverride(BaseModel):
    model_config = _Strict
    environment: list[_EnvVar] = Field(default_factory=list)


class _Overrides(BaseModel):
    model_config = _Strict
    container_overrides: list[_ContainerOverride] = Field(default_factory=list, alias="containerOverrides")


def _int_or_none(value: object) -> int | None:
    """Exit codes come as numbers or strings; anything else is "no exit code", not a broken message."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,10}\s*", value):
        return int(value)
    return None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _objects(value: object) -> list[object]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


_LenientStr = Annotated[str | None, BeforeValidator(_str_or_none)]


class _Container(BaseModel):
    model_config = _Strict
    name: _LenientStr = None
    exit_code: Annotated[int | None, BeforeValidator(_int_or_none)] = Field(default=None, alias="exitCode")
    reason: _LenientStr = None


class _Detail(BaseModel):
    model_config = _Strict
    task_arn: str = Field(alias="taskArn")
    last_status: str = Field(alias="lastStatus")
    cluster_arn: str | None = Field(default=None, alias="clusterArn")
    task_definition_arn: str | None = Field(default=None, alias="taskDefinitionArn")
    version: int | None = Field(default=None, ge=0)
    updated_at: datetime | None = Field(default=None, alias="updatedAt")
    overrides: _Overrides | None = None
    # Read for a diagnosis of STOPPED only, and leniently: a stop is forwarded whatever these hold.
    stop_code: _LenientStr = Field(default=None, alias="stopCode")
    stopped_reason: _LenientStr = Field(default=None, alias="stoppedReason")
    containers: Annotated[list[_Container], BeforeValidator(_objects)] = Field(default_factory=list)
    # Only whether the task ran (reached RUNNING) is read from it: any value but none means it did.
    started_at: object = Field(default=None, alias="startedAt")


class _Envelope(BaseModel):
    model_config = _Strict
    id: UuidShaped
    time: datetime
    detail: _Detail


@dataclass(frozen=True, slots=True)
class Container:
    name: str | None
    exit_code: int | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class Stop:
    """How a task stopped, as its STOPPED event (or DescribeTasks) tells. `started`: the task reached
    RUNNING (ECS gave it a `startedAt`); a task that never did can be started again safely."""

    stop_code: str | None
    stopped_reason: str | None
    containers: tuple[Container, ...]
    started: bool = True


@dataclass(frozen=True, slots=True)
class TaskStateChange:
    """One observation of an ECS task's state, as much of it as the observer needs: a state change from
    EventBridge (`source` "event"), or what a sweep's DescribeTasks answered when no event came ("sweep")."""

    event_id: UUID
    task_arn: str
    task_id: str
    region: str
    cluster: str | None  # ARN or name, whichever the event gives; None for the default cluster
    cluster_arn: str | None
    task_definition_arn: str | None
    last_status: str
    version: int | None
    occurred: datetime
    flow_run_id_override: UUID | None
    emitted: datetime  # the envelope's `time`: when EventBridge emitted the event
    stop: Stop | None = None  # for STOPPED only
    source: Literal["event", "sweep"] = "event"

    @property
    def status(self) -> str:
        return self.last_status.lower()


@dataclass(frozen=True, slots=True)
class Ignored:
    """Not an ECS task state change: deleted without further work."""

    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """Broken beyond use: left for the queue's redrive policy."""

    reason: str


Decoded = TaskStateChange | Ignored | Rejected


def decode(body: str | bytes) -> Decoded:
    """Decode one SQS message body holding a raw EventBridge event."""
    if len(body) > _MAX_BODY:
        return Rejected(f"body of {len(body)} bytes is larger than any EventBridge event")
    try:
        # Bytes are UTF-8 or nothing: json.loads would guess UTF-16 or UTF-32 from their first bytes.
        raw = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
    except UnicodeDecodeError:
        return Rejected("body is not valid UTF-8")
    except RecursionError:
        return Rejected("body is nested too deeply")
    except ValueError as exc:
        return Rejected(f"body is not JSON: {exc}")
    if not isinstance(raw, dict):
        return Rejected(f"body is JSON {type(raw).__name__}, not an object")
    source, detail_type = raw.get("source"), raw.get("detail-type")
    if not isinstance(source, str) or not isinstance(detail_type, str):
        return Rejected("not an EventBridge event: 'source' and 'detail-type' must be strings")
    if source != ECS_SOURCE or detail_type != TASK_STATE_CHANGE:
        return Ignored(f"{source} / {detail_type}")
    try:
        envelope = _Envelope.model_validate(raw)
    except ValidationError as exc:
        return Rejected(_describe(exc))
    return _to_change(envelope)


def _describe(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "event"
    extra = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg'].lower()}{extra}"


def _to_change(envelope: _Envelope) -> Decoded:
    detail = envelope.detail
    arn = TASK_ARN.match(detail.task_arn)
    if arn is None:
        return Rejected(f"detail.taskArn: not an ECS task ARN: {detail.task_arn[:200]!r}")
    if not _STATUS.match(detail.last_status):
        return Rejected(f"detail.lastStatus: not a status: {detail.last_status[:64]!r}")
    occurred = detail.updated_at if detail.updated_at is not None else envelope.time
    return TaskStateChange(
        event_id=envelope.id,
        task_arn=detail.task_arn,
        task_id=arn["task_id"],
        region=arn["region"],
        cluster=detail.cluster_arn or arn["cluster"],
        cluster_arn=detail.cluster_arn,
        task_definition_arn=detail.task_definition_arn,
        last_status=detail.last_status,
        version=detail.version,
        occurred=_utc_ms(occurred),
        flow_run_id_override=_flow_run_id_override(detail.overrides),
        emitted=_utc_ms(envelope.time),
        stop=_stop(detail) if detail.last_status == "STOPPED" else None,
    )


def _stop(detail: _Detail) -> Stop:
    containers = tuple(Container(c.name, c.exit_code, c.reason) for c in detail.containers)
    return Stop(detail.stop_code, detail.stopped_reason, containers, started=detail.started_at not in (None, ""))


def _flow_run_id_override(overrides: _Overrides | None) -> UUID | None:
    """The flow-run id that the Prefect ECS worker puts in the container environment."""
    if overrides is None:
        return None
    for container in overrides.container_overrides:
        for var in container.environment:
            if var.name == FLOW_RUN_ID_ENV and (found := parse_uuid(var.value)) is not None:
                return found
    return None

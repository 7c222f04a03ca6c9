"""Configuration from the environment (prefix `ECS_OBSERVER_`), overridable by command-line flags."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..pipeline.config import ObserverConfig
from .healthcheck import DEFAULT_HEALTH_PORT

__all__ = ["ConfigError", "Settings", "load_settings", "observer_config"]

# The pipeline's defaults are the settings' defaults: one source.
_D = ObserverConfig()

_QUEUE_URL = re.compile(r"^https?://[^/\s]+/(?:\d{12}|queue)/[A-Za-z0-9_-]{1,80}(?:\.fifo)?$")
_PREFECT_AWS = "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_"
_CLUSTER_ARN = re.compile(r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:[^:/\s]+:cluster/[A-Za-z0-9_-]{1,255}$")


class ConfigError(Exception):
    """Missing or invalid configuration, with the setting named."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ECS_OBSERVER_", extra="ignore", populate_by_name=True)

    queue_url: str | None = Field(default=None, description="URL of the SQS queue that EventBridge feeds")
    queue_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("queue_name", "ECS_OBSERVER_QUEUE_NAME", f"{_PREFECT_AWS}QUEUE_NAME"),
        description="name of the queue, when no URL is given",
    )
    queue_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("queue_region", "ECS_OBSERVER_QUEUE_REGION", f"{_PREFECT_AWS}QUEUE_REGION"),
        description="region of the queue (default: the AWS configuration's region)",
    )
    prefect_api_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("prefect_api_url", "PREFECT_API_URL"),
        description="Prefect API URL, e.g. http://prefect:4200/api or a Cloud workspace URL",
    )
    prefect_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("prefect_api_key", "PREFECT_API_KEY"),
        description="Prefect Cloud API key (sent as a Bearer token)",
    )
    prefect_api_auth_string: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("prefect_api_auth_string", "PREFECT_API_AUTH_STRING"),
        description="user:password of a self-hosted server with basic auth",
    )
    watched_clusters: str | None = Field(
        default=None,
        description="comma-separated ARNs of the clusters the observer may describe (the service template's "
        "WatchedClusterArns): `check` probes DescribeTasks on each",
    )
    state_table: str | None = Field(
        default=None,
        description="DynamoDB table for task state shared by several replicas (default: in memory, one replica)",
    )
    describe_claim: float = Field(
        default=_D.describe_claim,
        ge=1,
        le=600,
        description="with a state table: seconds other replicas wait for the one describing a task",
    )
    describe_failure_limit: float = Field(
        default=_D.describe_failure_limit,
        ge=0,
        le=86_400,
        description="seconds a task ECS fails to describe (not MISSING) is asked again before its message is left "
        "for the dead-letter queue (or goes by the environment override)",
    )
    receivers: int = Field(default=_D.receivers, ge=1, le=64, description="concurrent long-polling receive loops")
    max_in_flight: int = Field(
        default=_D.max_in_flight, ge=10, le=100_000, description="messages held at once before receiving pauses"
    )
    wait_time_seconds: int = Field(default=_D.wait_time_seconds, ge=0, le=20, description="SQS long-poll wait")
    visibility_timeout: int = Field(
        default=_D.visibility_timeout,
        ge=5,
        le=43_200,
        description="seconds a received message stays hidden; extended while in flight",
    )
    batch_size: int = Field(default=_D.batch_size, ge=1, le=5000, description="events per POST to the Prefect API")
    batch_bytes: int = Field(
        default=_D.batch_bytes, ge=10_000, le=50_000_000, description="bytes per POST to the Prefect API"
    )
    linger: float = Field(
        default=_D.linger, ge=0, le=5, description="seconds a batch of events or deletes waits for more"
    )
    describe_linger: float = Field(
        default=_D.describe_linger,
        ge=0,
        le=5,
        description="seconds with no new task before a partial DescribeTasks batch goes (10x at most)",
    )
    reorder_window: float = Field(
        default=_D.reorder_window,
        ge=0,
        le=900,
        description="seconds an out-of-order state change waits for its predecessor",
    )
    cache_size: int = Field(
        default=_D.cache_size, ge=100, le=10_000_000, description="tasks whose tags and recent state changes are kept"
    )
    drain_timeout: float = Field(
        default=_D.drain_timeout, ge=0, le=3600, description="seconds to finish in-flight work on SIGTERM"
    )
    flow_run_states: bool = Field(
        default=_D.flow_run_states,
        description="keep flow runs true to their tasks: InfrastructurePending, Crashed, Cancelled, a diagnosis log",
    )
    container_name: str = Field(
        default=_D.container_name,
        min_length=1,
        max_length=255,
        description="the container a flow runs in, whose exit code decides a crash (as the ECS worker names it)",
    )
    crash_log_lines: int = Field(
        default=_D.crash_log_lines,
        ge=0,
        le=10_000,
        description="last lines of a crashed container (CloudWatch Logs) posted to a run that never ran; 0: off",
    )
    sweep_interval: float = Field(
        default=_D.sweep_interval,
        ge=0,
        le=86_400,
        description="seconds between sweeps that hold Prefect's active runs against their tasks (the first at "
        "start); 0 turns the sweep off",
    )
    sweep_grace: float = Field(
        default=_D.sweep_grace,
        ge=0,
        le=86_400,
        description="seconds what a sweep saw must hold before it acts on it (the event path's chance)",
    )
    stop_cancelled: bool = Field(
        default=_D.stop_cancelled,
        description="StopTask for a run that is Cancelling (or was cancelled) while its task still runs",
    )
    stop_orphans: bool = Field(
        default=_D.stop_orphans,
        description="StopTask for a task still running after its run became final (the run is not changed)",
    )
    start_timeout: float = Field(
        default=_D.start_timeout,
        ge=0,
        le=86_400,
        description="StopTask for a task PROVISIONING or PENDING this long, then rescheduled as a transient start "
        "failure; 0 turns it off",
    )
    start_retry_delay: float = Field(
        default=_D.start_retry_delay,
        ge=0,
        le=86_400,
        description="seconds after a transient start failure that the rescheduled run may start again",
    )
    start_retries: int = Field(
        default=_D.start_retries,
        ge=0,
        le=100,
        description="times per flow run a transient start failure is rescheduled (AwaitingRetry) before Crashed; "
        "0 turns rescheduling off",
    )
    reschedule_interrupted: bool = Field(
        default=_D.reschedule_interrupted,
        description="also reschedule runs stopped by a Spot interruption or host termination after they started "
        "(the flow ran partly: for idempotent flows only)",
    )
    http_timeout: float = Field(default=30.0, gt=0, le=600, description="seconds per request to the Prefect API")
    unhealthy_after: float = Field(
        default=300.0,
        ge=0,
        le=86_400,
        description="seconds SQS, ECS, Prefect or the state table may fail without an answer before /healthz "
        "answers 503 (ECS then replaces the task); 0: never for that reason",
    )
    health_port: int = Field(
        default=DEFAULT_HEALTH_PORT, ge=0, le=65535, description="port of /healthz and /metrics; 0 turns them off"
    )
    log_format: Literal["json", "text"] = Field(default="json", description="json lines (CloudWatch) or text")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="log level")

    @field_validator("queue_url")
    @classmethod
    def _valid_queue_url(cls, value: str | None) -> str | None:
        if value is not None and not _QUEUE_URL.match(value):
            raise ValueError("not an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)")
        return value

    @field_validator("watched_clusters")
    @classmethod
    def _valid_clusters(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        for arn in value.split(","):
            if not _CLUSTER_ARN.match(arn.strip()):
                raise ValueError(f"not an ECS cluster ARN: {arn.strip()[:200]!r}")
        return value

    def clusters(self) -> list[str]:
        return [arn.strip() for arn in (self.watched_clusters or "").split(",") if arn.strip()]

    @field_validator("state_table")
    @classmethod
    def _valid_table(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", value):
            raise ValueError("not a DynamoDB table name (3 to 255 of A-Z a-z 0-9 _ . -)")
        return value

    @field_validator("prefect_api_url")
    @classmethod
    def _valid_api_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> Settings:
        if self.prefect_api_key and self.prefect_api_auth_string:
            raise ValueError("set PREFECT_API_KEY or PREFECT_API_AUTH_STRING, not both")
        return self

    def sweeps(self) -> bool:
        """The sweep runs with an interval and with flow-run states on (it keeps runs true to their tasks)."""
        return self.sweep_interval > 0 and self.flow_run_states

    def require_queue(self) -> None:
        if not self.queue_url and not self.queue_name:
            raise ConfigError("ECS_OBSERVER_QUEUE_URL (or ECS_OBSERVER_QUEUE_NAME) is not set")

    def require_prefect(self) -> str:
        if not self.prefect_api_url:
            raise ConfigError("PREFECT_API_URL is not set")
        return self.prefect_api_url


def observer_config(settings: Settings) -> ObserverConfig:
    """The pipeline's config: every setting of the same name, the rest at its default."""
    shared = {
        name: getattr(settings, name) for name in ObserverConfig.__dataclass_fields__ if name in Settings.model_fields
    }
    return ObserverConfig(**shared)


def _env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices) and len(alias.choices) > 1:
        return str(alias.choices[1])
    return f"ECS_OBSERVER_{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with flags on top; a ConfigError names the bad setting."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        where = _env_name(field) if field in Settings.model_fields else "configuration"
        raise ConfigError(f"{where}: {error['msg']}") from None

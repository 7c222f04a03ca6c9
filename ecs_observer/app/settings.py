"""Configuration from the environment (prefix `ECS_OBSERVER_`), overridable by command-line flags.

The shell's own settings are declared here; the pipeline's are declared once, in
`pipeline/config.py`, and `Settings` gets a field of each (same name, type,
default, bounds and description), read back as an `ObserverConfig`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal, get_type_hints

from pydantic import AliasChoices, Field, SecretStr, ValidationError, create_model, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ..pipeline.config import ObserverConfig, settings_of
from .healthcheck import DEFAULT_HEALTH_PORT

__all__ = ["ConfigError", "Settings", "env_name", "load_settings", "observer_config"]

_QUEUE_URL = re.compile(r"^https?://[^/\s]+/(?:\d{12}|queue)/[A-Za-z0-9_-]{1,80}(?:\.fifo)?$")
_PREFECT_AWS = "PREFECT_INTEGRATIONS_AWS_ECS_OBSERVER_SQS_"
_CLUSTER_ARN = re.compile(r"^arn:aws[a-z-]*:ecs:[a-z0-9-]+:[^:/\s]+:cluster/[A-Za-z0-9_-]{1,255}$")


class ConfigError(Exception):
    """Missing or invalid configuration, with the setting named."""


class _ShellSettings(BaseSettings):
    """The settings of the application shell; `Settings` adds the pipeline's."""

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
    http_timeout: float = Field(default=30.0, gt=0, le=600, description="seconds per request to the Prefect API")
    unhealthy_after: float = Field(
        default=300.0,
        ge=0,
        le=86_400,
        description="seconds SQS, ECS, Prefect or the state table may fail without an answer before /healthz "
        "answers 503 (ECS then replaces the task); 0: never for that reason",
    )
    stop_timeout: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="the container's stop timeout (ECS stopTimeout, which the service template passes), which "
        "the drain timeout must stay below: ECS kills the container when it runs out",
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
    def _one_auth(self) -> _ShellSettings:
        if self.prefect_api_key and self.prefect_api_auth_string:
            raise ValueError("set PREFECT_API_KEY or PREFECT_API_AUTH_STRING, not both")
        return self

    @model_validator(mode="after")
    def _drain_within_stop(self) -> _ShellSettings:
        drain = getattr(self, "drain_timeout", None)  # a pipeline setting, added by `Settings`
        if self.stop_timeout is not None and drain is not None and drain >= self.stop_timeout:
            raise ValueError(
                f"ECS_OBSERVER_DRAIN_TIMEOUT ({drain:g} s) must be below the container's stop timeout "
                f"({self.stop_timeout:g} s): ECS would kill the observer mid-drain"
            )
        return self

    def require_queue(self) -> None:
        if not self.queue_url and not self.queue_name:
            raise ConfigError("ECS_OBSERVER_QUEUE_URL (or ECS_OBSERVER_QUEUE_NAME) is not set")

    def require_prefect(self) -> str:
        if not self.prefect_api_url:
            raise ConfigError("PREFECT_API_URL is not set")
        return self.prefect_api_url


def _pipeline_fields() -> dict[str, Any]:
    """A pydantic field for each setting of `ObserverConfig`, as it declares it."""
    types = get_type_hints(ObserverConfig)
    return {
        f.name: (types[f.name], Field(default=f.default, description=f.metadata["description"], **f.metadata["bounds"]))
        for f in settings_of(ObserverConfig)
    }


if TYPE_CHECKING:  # mypy knows the shell's fields; the pipeline's are read through `observer_config`
    Settings = _ShellSettings
else:
    Settings = create_model("Settings", __base__=_ShellSettings, __module__=__name__, **_pipeline_fields())


def observer_config(settings: Settings) -> ObserverConfig:
    """The pipeline's config: each of its settings as given, the rest at its default."""
    return ObserverConfig(**{f.name: getattr(settings, f.name) for f in settings_of(ObserverConfig)})


def env_name(field: str) -> str:
    """The environment variable of a setting: its alias (PREFECT_API_URL), else ECS_OBSERVER_<NAME>."""
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
        message = error["msg"].removeprefix("Value error, ")
        if field not in Settings.model_fields:  # a rule across settings names them itself
            raise ConfigError(message) from None
        raise ConfigError(f"{env_name(field)}: {message}") from None

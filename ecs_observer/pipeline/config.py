"""The pipeline's tunables: each setting declared here once, with its default, bounds and meaning.

`app/settings.py` makes an `ECS_OBSERVER_<NAME>` variable and a flag of each
field declared with `setting`; the others (the summary interval, the SQS
silence limit, the backoff) are for tests and benchmarks to set.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from typing import Any, TypeVar

from ..core.run_states import RetryPolicy
from ..core.sweep import SweepRules
from ..support.backoff import Backoff

__all__ = ["ObserverConfig", "setting", "settings_of"]

_T = TypeVar("_T")


def setting(
    default: _T,
    description: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
) -> _T:
    """A field that is also a setting: its default, its meaning (the flag's help) and its bounds, named
    as pydantic's `Field` names them.

    Not mutated: it runs at import, before mutmut chooses a mutant, so no test could see one; the settings
    tests of tests/test_cli.py check what it declares (each bound, default and description)."""
    given = {"ge": ge, "gt": gt, "le": le, "min_length": min_length, "max_length": max_length}  # pragma: no mutate
    bounds = {name: value for name, value in given.items() if value is not None}  # pragma: no mutate
    metadata = {"setting": True, "description": description, "bounds": bounds}  # pragma: no mutate
    return field(default=default, metadata=metadata)  # pragma: no mutate


@dataclass(frozen=True)
class ObserverConfig:
    describe_claim: float = setting(
        30.0, "with a state table: seconds other replicas wait for the one describing a task", ge=1, le=600
    )
    describe_failure_limit: float = setting(
        300.0,
        "seconds a task ECS fails to describe (not MISSING) is asked again before its message is left for the "
        "dead-letter queue (or goes by the environment override)",
        ge=0,
        le=86_400,
    )
    receivers: int = setting(4, "concurrent long-polling receive loops", ge=1, le=64)
    max_in_flight: int = setting(1000, "messages held at once before receiving pauses", ge=10, le=100_000)
    wait_time_seconds: int = setting(20, "SQS long-poll wait", ge=0, le=20)
    visibility_timeout: int = setting(
        60, "seconds a received message stays hidden; extended while in flight", ge=5, le=43_200
    )
    batch_size: int = setting(200, "events per POST to the Prefect API", ge=1, le=5000)
    batch_bytes: int = setting(1_000_000, "bytes per POST to the Prefect API", ge=10_000, le=50_000_000)
    linger: float = setting(0.05, "seconds a batch of events or deletes waits for more", ge=0, le=5)
    describe_linger: float = setting(
        0.1, "seconds with no new task before a partial DescribeTasks batch goes (10x at most)", ge=0, le=5
    )
    reorder_window: float = setting(2.0, "seconds an out-of-order state change waits for its predecessor", ge=0, le=900)
    cache_size: int = setting(100_000, "tasks whose tags and recent state changes are kept", ge=100, le=10_000_000)
    drain_timeout: float = setting(25.0, "seconds to finish in-flight work on SIGTERM", ge=0, le=3600)
    flow_run_states: bool = setting(
        True, "keep flow runs true to their tasks: InfrastructurePending, Crashed, Cancelled, a diagnosis log"
    )
    container_name: str = setting(
        "prefect",
        "the container a flow runs in, whose exit code decides a crash (as the ECS worker names it)",
        min_length=1,
        max_length=255,
    )
    crash_log_lines: int = setting(
        100,
        "last lines of a crashed container (CloudWatch Logs) posted to a run that never ran; 0: off",
        ge=0,
        le=10_000,
    )
    sweep_interval: float = setting(
        60.0,
        "seconds between sweeps that hold Prefect's active runs against their tasks (the first at start); "
        "0 turns the sweep off",
        ge=0,
        le=86_400,
    )
    sweep_grace: float = setting(
        300.0,
        "seconds what a sweep saw must hold before it acts on it (the event path's chance)",
        ge=0,
        le=86_400,
    )
    stop_cancelled: bool = setting(
        True, "StopTask for a run that is Cancelling (or was cancelled) while its task still runs"
    )
    stop_orphans: bool = setting(
        False, "StopTask for a task still running after its run became final (the run is not changed)"
    )
    start_timeout: float = setting(
        0.0,
        "StopTask for a task PROVISIONING or PENDING this long, then rescheduled as a transient start failure; "
        "0 turns it off",
        ge=0,
        le=86_400,
    )
    start_retry_delay: float = setting(
        30.0,
        "seconds after a transient start failure that the rescheduled run may start again",
        ge=0,
        le=86_400,
    )
    start_retries: int = setting(
        2,
        "times per flow run a transient start failure is rescheduled (AwaitingRetry) before Crashed; "
        "0 turns rescheduling off",
        ge=0,
        le=100,
    )
    reschedule_interrupted: bool = setting(
        False,
        "also reschedule runs stopped by a Spot interruption or host termination after they started "
        "(the flow ran partly: for idempotent flows only)",
    )
    summary_interval: float = 60.0
    sqs_silence_limit: float | None = None  # unhealthy after this long without SQS success; None: derived
    backoff: Backoff = field(default_factory=Backoff)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.start_retries, self.start_retry_delay, self.reschedule_interrupted)

    def sweep_rules(self) -> SweepRules:
        return SweepRules(self.sweep_grace, self.stop_cancelled, self.stop_orphans, self.start_timeout)

    def silence_limit(self) -> float:
        """How long without an SQS success before /healthz turns 503: three long polls, or a visibility
        timeout, and a margin (so a slow receive or a long extension is not an outage)."""
        return self.sqs_silence_limit or max(3 * self.wait_time_seconds, self.visibility_timeout) + 30

    def sweeps(self) -> bool:
        """The sweep runs with an interval and with flow-run states on (it keeps runs true to their tasks)."""
        return self.sweep_interval > 0 and self.flow_run_states


def settings_of(config: type[ObserverConfig]) -> list[Field[Any]]:
    """The fields declared with `setting`, in their order."""
    return [f for f in fields(config) if f.metadata.get("setting")]

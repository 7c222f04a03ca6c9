"""The pipeline's tunables, with their defaults: the one source the settings derive from."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.run_states import RetryPolicy
from ..core.sweep import SweepRules
from ..support.backoff import Backoff

__all__ = ["ObserverConfig"]


@dataclass(frozen=True)
class ObserverConfig:
    receivers: int = 4
    max_in_flight: int = 1000
    wait_time_seconds: int = 20
    visibility_timeout: int = 60
    batch_size: int = 200
    batch_bytes: int = 1_000_000
    linger: float = 0.05
    describe_linger: float = 0.1
    reorder_window: float = 2.0
    cache_size: int = 100_000
    drain_timeout: float = 25.0
    describe_claim: float = 30.0  # with shared state: how long other replicas wait for a claimant's tags
    describe_failure_limit: float = 300.0  # ECS failing to describe a task (not MISSING): retried this long
    flow_run_states: bool = True  # keep flow runs true to their tasks (needs a FlowRuns port)
    container_name: str = "prefect"  # the orchestration container, as the Prefect ECS worker names it
    crash_log_lines: int = 100  # last lines of a crashed container posted to a run that never ran; 0: off
    sweep_interval: float = 60.0  # seconds between sweeps (the first one at start); 0: no sweep
    sweep_grace: float = 300.0  # what a sweep saw must have held this long before it acts on it
    stop_cancelled: bool = True  # StopTask for a run that is Cancelling (or Cancelled) while its task runs
    stop_orphans: bool = False  # StopTask for a task still running after its run became final
    start_timeout: float = 0.0  # StopTask for a task PROVISIONING or PENDING this long (a transient failure); 0: off
    start_retry_delay: float = 30.0  # a transient start failure is rescheduled this much later
    start_retries: int = 2  # reschedules per flow run; then Crashed
    reschedule_interrupted: bool = False  # also reschedule runs a Spot interruption or host termination stopped
    summary_interval: float = 60.0
    sqs_silence_limit: float | None = None  # unhealthy after this long without SQS success; None: derived
    backoff: Backoff = field(default_factory=Backoff)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.start_retries, self.start_retry_delay, self.reschedule_interrupted)

    def sweep_rules(self) -> SweepRules:
        return SweepRules(self.sweep_grace, self.stop_cancelled, self.stop_orphans, self.start_timeout)

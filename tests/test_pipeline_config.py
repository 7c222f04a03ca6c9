"""What the pipeline derives from its settings: the retry policy, the sweep's rules, when /healthz turns 503
for want of SQS, and whether a sweep runs at all (no server)."""

from __future__ import annotations

from ecs_observer.core.run_states import RetryPolicy
from ecs_observer.core.sweep import SweepRules
from ecs_observer.pipeline.config import ObserverConfig


def test_the_retry_policy_and_the_sweep_rules_are_the_settings_given() -> None:
    config = ObserverConfig(
        start_retries=5,
        start_retry_delay=12.0,
        reschedule_interrupted=True,
        sweep_grace=90.0,
        stop_cancelled=False,
        stop_orphans=True,
        start_timeout=600.0,
    )
    assert config.retry_policy() == RetryPolicy(5, 12.0, True)
    assert config.sweep_rules() == SweepRules(90.0, False, True, 600.0)
    assert ObserverConfig().retry_policy() == RetryPolicy(2, 30.0, False)
    assert ObserverConfig().sweep_rules() == SweepRules(300.0, True, False, 0.0)


def test_sqs_silence_is_an_outage_after_three_long_polls_or_a_visibility_timeout_and_30_s() -> None:
    assert ObserverConfig(wait_time_seconds=20, visibility_timeout=30).silence_limit() == 90  # three polls
    assert ObserverConfig(wait_time_seconds=5, visibility_timeout=120).silence_limit() == 150  # the timeout
    assert ObserverConfig(wait_time_seconds=20, visibility_timeout=30, sqs_silence_limit=12.0).silence_limit() == 12


def test_a_sweep_runs_only_with_an_interval_and_flow_run_states_on() -> None:
    assert ObserverConfig().sweeps()
    assert ObserverConfig(sweep_interval=0.5).sweeps()
    assert not ObserverConfig(sweep_interval=0.0).sweeps()
    assert not ObserverConfig(flow_run_states=False).sweeps()
    assert not ObserverConfig(sweep_interval=0.0, flow_run_states=False).sweeps()

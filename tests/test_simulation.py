"""The deterministic simulation (tests/sim) on a fixed set of seeds, in the normal test run.

Each seed is a whole world: tasks' lives shuffled and duplicated, 1 to 3
replicas, faults at random moments and rates, a replica killed and restarted;
the observer under test is the real pipeline on simulated ports, in virtual
time. A failure names its seed and the one command that replays it.
"""

from __future__ import annotations

import pytest

from tests.sim.run import replay_command, simulate

CI_SEEDS = range(0, 160)
# Seeds that once failed, each for a reason of its own (docs/reliability.md, "Deterministic simulation").
REGRESSIONS = {
    23: "replicas each retrying an undescribable task: follows are not asserted exact (a finding, not a fix)",
    58: "a receive spinning a hair before its deadline in virtual time",
    262: "a change whose message SQS's duplicates wore out",
    293: "a deregistration done again across a kill, as documented",
    309: "the same change under two ids across a crash without the state table",
}


def _check(seed: int) -> None:
    outcome = simulate(seed)
    assert outcome.ok, "\n".join(
        [f"seed {seed} ({outcome.scenario}); replay: {replay_command(seed)}"]
        + [f"  {v.invariant}: {v.detail}" for v in outcome.violations[:10]]
    )


@pytest.mark.parametrize("first", range(CI_SEEDS.start, CI_SEEDS.stop, 20))
def test_seeds(first: int) -> None:
    for seed in range(first, first + 20):
        _check(seed)


@pytest.mark.parametrize("seed", sorted(REGRESSIONS))
def test_regression(seed: int) -> None:
    _check(seed)


def test_a_seed_replays_exactly() -> None:
    """The same seed, twice in one process: the same world at the end, to the byte."""
    assert simulate(48).digest == simulate(48).digest

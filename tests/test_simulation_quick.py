"""The quick seed set (tests/sim/quick.py): what `make mutation` tries each pipeline mutant against.

A test per seed, so that mutmut runs a mutant only against the seeds that reach
the function it mutates, and stops at the first seed it fails. The CI seeds
(tests/test_simulation.py) include these; this file is for the mutation run.
"""

from __future__ import annotations

import pytest

from tests.sim.quick import QUICK_SEEDS
from tests.sim.run import replay_command, simulate


@pytest.mark.parametrize("seed", QUICK_SEEDS)
def test_seed(seed: int) -> None:
    outcome = simulate(seed)
    assert outcome.ok, "\n".join(
        [f"seed {seed} ({outcome.scenario}); replay: {replay_command(seed)}"]
        + [f"  {v.invariant}: {v.detail}" for v in outcome.violations[:10]]
    )

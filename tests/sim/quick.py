"""The quick seed set: a few seeds that, together, exercise what the CI seeds exercise of the pipeline.

`make mutation` tries every pipeline mutant against the simulation; the CI seeds
(0-159, about 15 s) are too many for some 1,800 mutants in 30 minutes, so each
mutant meets `QUICK_SEEDS` instead (tests/test_simulation_quick.py). They are
chosen greedily, seed by seed, for what each adds per second it costs: the lines
of the mutated modules it runs (under coverage), the faults it exercises (with
the orchestration answers), and the scenario's shape (backlog or trickle,
replicas, a shared store, kills, the sweep, each kind of stop, run state and
answer, lost STOPPED events, refused events, the in-flight bound).

PYTHONHASHSEED=0 .venv/bin/python -m tests.sim.quick   # choose again from the CI seeds: the set, what it misses

A choice is fixed here, not made at each run, so that a mutant's verdict does not
move with the survey's timings.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from pathlib import Path

from .run import Outcome, simulate
from .scenario import Scenario, draw

__all__ = ["QUICK_SEEDS", "choose", "features"]

# Chosen by `python -m tests.sim.quick` from seeds 0-159 (2026-12-03, see its output for what each adds), and
# four that the named tests of tests/test_simulation.py show catch what no line count sees: a sweep that never
# crashes a forgotten task's run (45) or never stops a cancelled run's task (1), health that stays healthy
# while SQS is down (11), a metric that miscounts (5).
QUICK_SEEDS: tuple[int, ...] = (134, 59, 89, 122, 9, 86, 91, 106, 117, 140, 87, 83, 20, 18, 69, 35, 144, 120, 128, 29)
QUICK_SEEDS += (45, 1, 11, 5)
# Deploys: a replica stopped with work in flight hands it back and calls nothing after its run (237, 221),
# and a message arriving while two replicas stop is handled, not bounced into the dead-letter queue (392).
QUICK_SEEDS += (237, 221, 392)
# A sweep's effects wait for its event: beside it, a repair whose event post raised left a final run, never
# swept again, without its event (161; tests/test_simulation.py).
QUICK_SEEDS += (161,)

# What `make mutation` mutates in its pipeline scope ([tool.mutation.pipeline] in pyproject.toml).
SCOPE = ("ecs_observer/pipeline/", "ecs_observer/support/batcher.py")

Feature = tuple[str, ...]


def features(scenario: Scenario, outcome: Outcome) -> set[Feature]:
    """What a run exercises besides lines: its shape and the faults that happened."""
    found: set[Feature] = {("fault", name) for name, _ in outcome.faults}
    found |= {
        ("shape", scenario.shape),
        ("replicas", str(scenario.replicas)),
        ("shared", str(scenario.shared)),
        ("kills", str(bool(scenario.faults.kills))),
        ("sweeps", str(scenario.sweeps)),
        ("exact", str(scenario.exact)),
        ("outage", str(scenario.faults.outage is not None)),
        ("sqs outage", str(scenario.faults.sqs_outage is not None)),
        ("refused", str(bool(scenario.invalid_events))),
        ("receivers", str(scenario.config.receivers)),
        ("max_in_flight", str(scenario.config.max_in_flight)),
        ("fits in flight", str(len(scenario.deliveries) <= scenario.config.max_in_flight)),
    }
    for task in scenario.tasks:
        prefect = task.run_id is not None
        found |= {("task", "prefect" if prefect else "other", task.stop, str(len(task.statuses)))}
        if prefect:
            found |= {
                ("run state", task.run_state[0]),
                ("run answer", task.run_answer),
                ("run known", str(task.run_known)),
                ("tags gone", str(task.tags_gone)),
                ("deregister", str(task.deregister)),
                ("logs", str(task.logs)),
                ("stop lost", str(task.stop_lost)),
            }
    return found


def _survey(seed: int, root: Path) -> tuple[set[Feature], float, Outcome]:
    """A seed's features (its scope lines under coverage) and its cost (seconds, run without coverage)."""
    import coverage

    began = time.perf_counter()
    simulate(seed)
    cost = time.perf_counter() - began
    cov = coverage.Coverage(data_file=None, include=[f"{root}/{p}{'*' if p.endswith('/') else ''}" for p in SCOPE])
    cov.start()
    try:
        outcome = simulate(seed)
    finally:
        cov.stop()
    data = cov.get_data()
    lines = {
        ("line", Path(f).relative_to(root).as_posix(), str(n))
        for f in data.measured_files()
        for n in data.lines(f) or ()
    }
    return lines | features(draw(seed), outcome), cost, outcome


def choose(seeds: Iterable[int], budget: float) -> tuple[list[tuple[int, int, float]], set[Feature], float]:
    """Greedy: the seed with the most new features per second, until nothing new or `budget` seconds.
    Answers (seed, features it added, its cost) in the order chosen, what no chosen seed exercises, and
    the cost of all the surveyed seeds."""
    root = Path(__file__).resolve().parents[2]
    surveyed = {}
    for seed in seeds:
        found, cost, outcome = _survey(seed, root)
        if outcome.ok:  # a failing seed kills every mutant: useless
            surveyed[seed] = (found, cost)
    everything = set().union(*(f for f, _ in surveyed.values()))
    covered: set[Feature] = set()
    chosen: list[tuple[int, int, float]] = []
    spent = 0.0
    while surveyed:
        seed, (found, cost) = max(surveyed.items(), key=lambda item: (len(item[1][0] - covered) / item[1][1], -item[0]))
        gain = len(found - covered)
        if gain == 0 or spent + cost > budget:
            break
        chosen.append((seed, gain, cost))
        covered |= found
        spent += cost
        del surveyed[seed]
    return chosen, everything - covered, sum(c for _, c in surveyed.values()) + spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.quick", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=160, help="choose from seeds 0..N-1")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds the chosen seeds may take together")
    args = parser.parse_args(argv)
    chosen, missed, total = choose(range(args.seeds), args.budget)
    spent = sum(c for _, _, c in chosen)
    for seed, gain, cost in chosen:
        print(f"seed {seed}: {gain} new feature(s) in {cost:.2f} s")
    print(f"QUICK_SEEDS = {tuple(s for s, _, _ in chosen)}")
    print(f"{len(chosen)} seeds in {spent:.1f} s of the {total:.1f} s all {args.seeds} take")
    lines = sorted(f for f in missed if f[0] == "line")
    print(f"missed: {len(lines)} line(s), and {sorted(f for f in missed if f[0] != 'line')}")
    for feature in lines:
        print(f"  {feature[1]}:{feature[2]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m tests.sim`: one seed to replay, or many in parallel processes with a report.

python -m tests.sim --seed 17 --verbose      # replay one run, print its violations and faults
python -m tests.sim --seeds 2000 --jobs 2    # seeds 0..1999: runs per minute, faults, failures
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections import Counter

from .run import Outcome, replay_command, simulate
from .world import Violation

__all__ = ["main"]


def _one(seed: int) -> Outcome:
    """A seed whose run or checks raise is a failure like any other: reported with its replay, the rest run."""
    try:
        return simulate(seed)
    except Exception as exc:  # any error of the simulation itself is a finding
        return Outcome(seed, "(raised)", (Violation("runs to its end", f"{type(exc).__name__}: {exc}"),), (), 0.0, "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="run this seed alone")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="the first seed")
    parser.add_argument("--jobs", type=int, default=2, help="processes")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.seed is not None:
        outcome = simulate(args.seed)
        print(f"seed {outcome.seed}: {outcome.scenario}")
        print(f"  {outcome.virtual_seconds:.0f} virtual seconds, digest {outcome.digest}")
        if args.verbose:
            for fault, count in outcome.faults:
                print(f"  fault {fault}: {count}")
        for violation in outcome.violations:
            print(f"  VIOLATED {violation.invariant}: {violation.detail}")
        return 0 if outcome.ok else 1
    seeds = range(args.start, args.start + args.seeds)
    began = time.monotonic()
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        outcomes = pool.map(_one, seeds, chunksize=max(1, args.seeds // (args.jobs * 8)))
    elapsed = time.monotonic() - began
    return report(outcomes, elapsed, args.jobs)


def report(outcomes: list[Outcome], elapsed: float, jobs: int) -> int:
    faults: Counter[str] = Counter()
    runs_with: Counter[str] = Counter()
    for outcome in outcomes:
        for fault, count in outcome.faults:
            faults[fault] += count
            runs_with[fault] += 1
    failed = [o for o in outcomes if not o.ok]
    rate = len(outcomes) / elapsed * 60
    print(f"{len(outcomes)} runs in {elapsed:.1f} s with {jobs} process(es): {rate:.0f} runs/minute")
    print("faults exercised (runs, times):")
    for fault in sorted(faults):
        print(f"  {fault}: {runs_with[fault]} runs, {faults[fault]} times")
    print(f"{len(failed)} failed")
    for outcome in failed:
        first = outcome.violations[0]
        print(f"  seed {outcome.seed} ({outcome.scenario}): {first.invariant}: {first.detail}")
        print(f"    replay: {replay_command(outcome.seed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Two observers side by side: the backlog drain for a base commit and a head, interleaved, on one moto and one sink.

Figures from different days differ by their harness (moto's pace and duplicate
deliveries, the backlog's shape, the machine's load) as much as by the observer.
Here both observers drain the same backlog (a fresh queue of the same shape each
run) in one session against the same moto and sink, in turn: base, head, base,
head, ... so that a drift of the machine falls on both. The base (and the head,
when a commit is given) is checked out into a temporary `git worktree` and runs
with this venv's dependencies: the comparison is of the code alone.

    python bench/compare.py --base 1160fd4 [--head <commit>] [--tasks 200] [--rounds 2] [--flow-run-states false]
    python bench/compare.py --base HEAD --base-flow-run-states false --head-flow-run-states true

Without --head the head is this checkout as it is, uncommitted changes included. The second
form prices flow-run states: one observer with them, one without, side by side.
Bases before flow-run states (2026-11-30) ignore the setting: compare them with false.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from backlog_drain import Drain, build, drain
from harness import HERE, clients, moto, sink

ROOT = HERE.parent


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def worktree(commit: str, where: Path) -> Iterator[Path]:
    """`commit` checked out at `where` for the session, removed after."""
    git("worktree", "add", "--detach", str(where), commit)
    try:
        yield where
    finally:
        git("worktree", "remove", "--force", str(where))


def row(label: str, result: Drain) -> str:
    return (
        f"{label:<34} {result.seconds:7.1f} {result.received:9d} {result.cpu:7.2f} {result.cpu_at_ready:8.2f} "
        f"{result.cpu_per_1000:9.2f} {result.rss_mb:7.1f} {result.requests.total():8d}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="commit of the observer to compare against")
    parser.add_argument("--head", help="commit of the other observer (default: this checkout as it is)")
    parser.add_argument("--tasks", type=int, default=200, help="tasks per backlog, 8 messages each")
    parser.add_argument("--rounds", type=int, default=2, help="drains per observer, interleaved")
    parser.add_argument("--flow-run-states", choices=["true", "false"], default="false", help="for both")
    parser.add_argument("--base-flow-run-states", choices=["true", "false"], help="for the base alone")
    parser.add_argument("--head-flow-run-states", choices=["true", "false"], help="for the head alone")
    args = parser.parse_args()
    modes = {
        "base": args.base_flow_run_states or args.flow_run_states,
        "head": args.head_flow_run_states or args.flow_run_states,
    }
    base = git("rev-parse", "--short", args.base)
    head = git("rev-parse", "--short", args.head) if args.head else f"{git('rev-parse', '--short', 'HEAD')}+tree"
    names = {label: f"{label} {commit}" for label, commit in (("base", base), ("head", head))}
    if modes["base"] != modes["head"]:
        names = {label: f"{name} states {modes[label]}" for label, name in names.items()}
    print(
        f"# compare: base {base}, head {head}; {args.tasks * 8} messages a drain, {args.rounds} drains each, "
        f"interleaved, flow-run states: base {modes['base']}, head {modes['head']}"
    )
    print(
        f"# reproduce: python bench/compare.py --base {args.base}"
        + (f" --head {args.head}" if args.head else "")
        + f" --tasks {args.tasks} --rounds {args.rounds}"
        + f" --base-flow-run-states {modes['base']} --head-flow-run-states {modes['head']}"
    )
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        trees = {"base": stack.enter_context(worktree(args.base, tmp / "base")), "head": None}
        if args.head:
            trees["head"] = stack.enter_context(worktree(args.head, tmp / "head"))
        moto_url, sink_url = stack.enter_context(moto()), stack.enter_context(sink())
        sqs, ecs = clients(moto_url)
        results: dict[str, list[Drain]] = {"base": [], "head": []}
        print(f"{'observer':<34} drain s  received   CPU s start-up  CPU/1000  RSS MB  Prefect")
        for n in range(args.rounds):
            for label, tree in trees.items():
                backlog = build(sqs, ecs, args.tasks, f"compare-{label}-{n}")
                log = tmp / f"{label}-{n}.log"
                result = drain(moto_url, sink_url, sqs, backlog, log, modes[label], tree)
                if result.missing or result.left != (0, 0):
                    raise SystemExit(f"{names[label]}: {result.missing} events lost, {result.left} left in the queue")
                results[label].append(result)
                print(row(f"{names[label]} #{n + 1}", result), flush=True)
    cpu = {label: statistics.median(r.cpu for r in runs) for label, runs in results.items()}
    less = {label: statistics.median(r.cpu - r.cpu_at_ready for r in runs) for label, runs in results.items()}
    for what, figures in (("median CPU s", cpu), ("median CPU s after start-up", less)):
        print(
            f"{what}: base {figures['base']:.2f}, head {figures['head']:.2f}; "
            f"head/base {figures['head'] / figures['base']:.3f}"
        )


if __name__ == "__main__":
    main()

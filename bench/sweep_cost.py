"""Sweep cost: Prefect reads, DescribeTasks calls, writes and CPU per sweep over N active runs.

The goal (issue 15): a sweep over N runs needs at most ceil(N/200) Prefect reads of the active runs
and ceil(N/100) DescribeTasks per cluster, and writes nothing when nothing is wrong. The Prefect API
is the local stand-in (bench/sink.py, a process of its own, holding N Running runs on ECS tasks);
ECS is answered from memory (the benchmark measures the observer, not a network); the observer's
sweep, policy, effects and forwarder are the real ones, in this process, whose CPU is measured.

    python bench/sweep_cost.py --runs 10000 --clusters 2 --broken 100
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from harness import sink, sink_stats
from sink import task_arn

from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.adapters.prefect.flow_runs import PrefectFlowRuns
from ecs_observer.app.demo.samples import described
from ecs_observer.core.sweep import Scope
from ecs_observer.core.task_view import DescribeFailure, TaskView
from ecs_observer.pipeline.config import ObserverConfig
from ecs_observer.pipeline.observer import Observer
from ecs_observer.pipeline.sweep import Sweeper
from ecs_observer.ports import Message
from ecs_observer.support.stats import Stats


class InMemoryEcs:
    """DescribeTasks from memory: every task RUNNING, but the `broken` first ones, stopped 10 minutes ago."""

    def __init__(self, broken: set[str]) -> None:
        self.broken = broken
        self.calls = 0
        self.stopped_at = datetime.now(UTC) - timedelta(minutes=10)

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, TaskView | DescribeFailure | None]:
        self.calls += 1
        return {arn: self._view(arn) for arn in task_arns}

    def _view(self, arn: str) -> TaskView:
        if arn not in self.broken:
            return described(arn, {}, "RUNNING")
        return described(
            arn,
            {},
            "STOPPED",
            stoppedAt=self.stopped_at,
            startedAt=self.stopped_at - timedelta(minutes=5),
            stopCode="EssentialContainerExited",
            containers=[{"name": "prefect", "exitCode": 1}],
        )


class NoQueue:
    """The sweep takes no message: a queue that is never asked."""

    async def receive(self, max_messages: int, wait_seconds: int, visibility_timeout: int) -> list[Message]:
        raise AssertionError("the sweep receives nothing")

    async def delete(self, messages: Sequence[Message]) -> dict[str, str]:
        raise AssertionError("the sweep deletes nothing")

    async def change_visibility(self, messages: Sequence[Message], visibility: int) -> dict[str, str]:
        raise AssertionError("the sweep holds no message")


async def sweeps(url: str, runs: int, clusters: int, broken: int, repeat: int) -> list[dict[str, Any]]:
    """`repeat` sweeps, each one's figures; the first is the one that repairs the broken runs."""
    ecs = InMemoryEcs({task_arn(n, clusters)[1] for n in range(broken)})
    stats = Stats()
    client = PrefectClient(f"{url}/api", stats=stats)
    flow_runs = PrefectFlowRuns(client)
    config = ObserverConfig()
    store = MemoryTaskState(runs * 2)
    observer = Observer(NoQueue(), ecs, store, PrefectApiSink(client), config, stats, flow_runs)
    sweeper = Sweeper(observer, flow_runs, ecs, store, stats, config, Scope("123456789012"))
    figures = []
    try:
        for _ in range(repeat):
            before, calls = sink_stats(url)["requests"], ecs.calls
            cpu, wall = time.process_time(), time.perf_counter()
            outcomes = await sweeper.sweep()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            after = sink_stats(url)["requests"]
            delta = {route: after.get(route, 0) - before.get(route, 0) for route in after}
            figures.append(
                {
                    "cpu": cpu,
                    "wall": wall,
                    "reads": delta.get("flow_runs/filter by state", 0),
                    "state reads": delta.get("flow_runs/filter", 0) - delta.get("flow_runs/filter by state", 0),
                    "describe": ecs.calls - calls,
                    "writes": sum(delta.get(route, 0) for route in ("set_state", "logs", "events")),
                    "history reads": delta.get("flow_run_states", 0),
                    "outcomes": sorted(set(outcomes.values())),
                }
            )
    finally:
        await client.aclose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--clusters", type=int, default=2)
    parser.add_argument("--broken", type=int, default=100, help="runs whose task stopped with no event applied")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"# sweep_cost: {args.runs} active runs on {args.clusters} cluster(s), {args.broken} of their tasks stopped")
    print(f"# python {platform.python_version()} on {platform.machine()}")
    print(
        f"# reproduce: python bench/sweep_cost.py --runs {args.runs} --clusters {args.clusters} --broken {args.broken}"
    )
    with sink("--active-runs", str(args.runs), "--clusters", str(args.clusters)) as url:
        figures = asyncio.run(sweeps(url, args.runs, args.clusters, args.broken, args.repeat))
    per_cluster = math.ceil(args.runs / args.clusters)
    print(
        f"goal per sweep: Prefect reads <= ceil(N/200) = {math.ceil(args.runs / 200)}; DescribeTasks <= "
        f"ceil(N/100) per cluster = {args.clusters} x {math.ceil(per_cluster / 100)}; no write when nothing is wrong"
    )
    heads = {
        "sweep": 5,
        "reads": 6,
        "describe": 9,
        "writes": 7,
        "other reads": 12,
        "cpu s": 7,
        "µs/run": 7,
        "wall s": 7,
    }
    print(" ".join(f"{head:>{width}}" for head, width in heads.items()), " outcomes")
    for n, f in enumerate(figures, start=1):
        other = f["state reads"] + f["history reads"]
        print(
            f"{n:>5} {f['reads']:>6} {f['describe']:>9} {f['writes']:>7} {other:>12} {f['cpu']:7.2f} "
            f"{f['cpu'] / args.runs * 1e6:7.1f} {f['wall']:7.2f}  {', '.join(f['outcomes'])}"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()

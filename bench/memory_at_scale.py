"""Memory at scale: 1,000,000 distinct tasks through the tag cache and the chain state.

Half the tasks are Prefect's. Each goes through the real TagLookup (with an
in-memory DescribeTasks), the Sequencer with its in-memory chain store, and
the translation. Prints RSS after 10k, 100k, 500k and 1M tasks: it must stay
bounded once the caches are full (ECS_OBSERVER_CACHE_SIZE, 100,000 by default).

    python bench/memory_at_scale.py [--tasks 1000000] [--cache-size 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.app.demo.samples import described
from ecs_observer.core.decision import translate
from ecs_observer.core.ecs_event import TaskStateChange
from ecs_observer.core.task_view import TaskView
from ecs_observer.pipeline.sequencer import Sequencer
from ecs_observer.pipeline.tags import TagLookup
from ecs_observer.support.stats import Stats

CHECKPOINTS = (10_000, 100_000, 500_000, 1_000_000)


class InMemoryEcs:
    """DescribeTasks for any task: every other one carries a flow-run tag."""

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, TaskView | None]:
        return {
            arn: described(
                arn,
                {"prefect.io/flow-run-id": str(uuid.uuid4()), "prefect.io/flow-run-name": "run"}
                if int(arn[-1], 16) % 2 == 0
                else {"team": "other"},
            )
            for arn in task_arns
        }


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(tasks: int, cache_size: int) -> None:
    store = MemoryTaskState(cache_size)  # one store for both, as in the observer
    lookup = TagLookup(InMemoryEcs(), store, Stats(), cache_size=cache_size, linger=0)
    sequencer = Sequencer(store, reorder_window=0)
    now = datetime.now(UTC)
    rows = []
    began = time.monotonic()
    for n in range(1, tasks + 1):
        task_id = f"{n:032x}"
        change = TaskStateChange(
            event_id=uuid.uuid4(),
            task_arn=f"arn:aws:ecs:us-east-1:123456789012:task/prefect/{task_id}",
            task_id=task_id,
            region="us-east-1",
            cluster="prefect",
            cluster_arn=None,
            task_definition_arn=None,
            last_status="RUNNING",
            version=1,
            occurred=now,
            flow_run_id_override=None,
            emitted=now,
        )
        found = await lookup.tags_for(change)
        if "prefect.io/flow-run-id" in found.tags:
            translate(change, found.tags, await sequencer.follows(change))
        if n in CHECKPOINTS or n == tasks:
            gc.collect()
            rows.append((n, rss_mb(), time.monotonic() - began))
    for n, rss, seconds in rows:
        print(f"{n:>10,} {rss:>10.1f} {rss - rows[0][1]:>+12.1f} {seconds:>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--cache-size", type=int, default=100_000)
    args = parser.parse_args()
    print(f"# memory_at_scale: {args.tasks:,} distinct tasks, caches of {args.cache_size:,} tasks")
    print(f"# reproduce: python bench/memory_at_scale.py --tasks {args.tasks} --cache-size {args.cache_size}")
    print(f"# RSS before: {rss_mb():.1f} MB")
    print(f"{'tasks':>10} {'RSS MB':>10} {'vs 10k MB':>12} {'seconds':>9}")
    asyncio.run(run(args.tasks, args.cache_size))


if __name__ == "__main__":
    main()

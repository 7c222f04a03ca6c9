"""The known set of state changes every fault test starts from, and the check every one ends with."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.pipeline.observer import Observer

from ..servers import PrefectServer
from ..world import Task, assert_chains, depth, make_queue, send, start_tasks


@dataclass
class Scenario:
    queue_url: str
    dlq_url: str
    tagged: list[Task]
    untagged: list[Task]

    @property
    def expected(self) -> int:
        return sum(len(t.events) for t in self.tagged)


async def scenario(
    aws: AwsClients, *, tagged: int = 3, untagged: int = 1, max_receive: int = 5, visibility: int = 30, seed: int = 0
) -> Scenario:
    """Whole lifecycles of tagged and untagged tasks, shuffled into a queue with a dead-letter queue."""
    queue_url, dlq_url = await make_queue(aws, max_receive=max_receive, visibility=visibility)
    mine = await start_tasks(aws, tagged, crash_first=True)
    others = await start_tasks(aws, untagged, tagged=False)
    bodies = [json.dumps(e) for t in mine + others for e in t.events]
    random.Random(seed).shuffle(bodies)
    await send(aws, queue_url, bodies)
    return Scenario(queue_url, dlq_url, mine, others)


async def delivered(aws: AwsClients, prefect: PrefectServer, sc: Scenario, *, gaps_allowed: bool = False) -> None:
    """Each expected event is in Prefect once, with its follows; nothing else; both queues are empty."""
    stored = prefect.wait_for_events([t.resource_id for t in sc.tagged + sc.untagged], count=sc.expected, timeout=60)
    assert_chains(sc.tagged, stored, gaps_allowed=gaps_allowed)
    assert await depth(aws, sc.queue_url) == (0, 0)
    assert await depth(aws, sc.dlq_url) == (0, 0)


async def run_until(observer: Observer, done: Callable[[], bool], within: float = 90.0) -> None:
    """Run the observer until `done()` holds, then stop it and wait for its drain."""
    run = asyncio.create_task(observer.run())
    try:
        deadline = asyncio.get_running_loop().time() + within
        while not done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
    finally:
        observer.stop()
        await run


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]

"""CPU per message, in process: the real decode and decision (the observer's `Policy`: tags, chain, event)
and serialize path.

In-memory adapters stand in for ECS and the chain store; nothing else is faked.
Beside each figure it prints the floor: `json.loads` plus `json.dumps` of the
same messages, measured in the same run, and the ratio.

    python bench/cpu_per_message.py [--messages 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.app.demo.samples import FARGATE_LIFECYCLE, described, state_change
from ecs_observer.core.decision import Forward
from ecs_observer.core.ecs_event import TaskStateChange, decode
from ecs_observer.core.task_view import TaskView
from ecs_observer.pipeline.config import ObserverConfig
from ecs_observer.pipeline.policy import Policy
from ecs_observer.pipeline.sequencer import Sequencer
from ecs_observer.pipeline.tags import TagLookup
from ecs_observer.support.stats import Stats

SIZES = {"1 KB": 1024, "4 KB": 4096, "64 KB": 65536}


class InMemoryEcs:
    """DescribeTasks answered from a dict: the benchmark measures the observer, not a network."""

    def __init__(self, tags: Mapping[str, Mapping[str, str]]) -> None:
        self.tags = tags

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, TaskView | None]:
        return {arn: described(arn, tags) if (tags := self.tags.get(arn)) is not None else None for arn in task_arns}


def padded(body: dict[str, Any], size: int) -> str:
    """Grow a real-shaped event to `size` bytes with the attachment details ECS sends for awsvpc tasks."""
    body["detail"]["attachments"] = []
    text = json.dumps(body)
    n = 0
    while len(text) < size:
        body["detail"]["attachments"].append(
            {
                "id": str(uuid.uuid4()),
                "type": "eni",
                "status": "ATTACHED",
                "details": [
                    {"name": "subnetId", "value": f"subnet-{n:08x}"},
                    {"name": "privateIPv4Address", "value": "10.0.0.1"},
                ],
            }
        )
        text = json.dumps(body)
        n += 1
    return text


def messages(count: int, size: int) -> tuple[list[str], dict[str, dict[str, str]]]:
    """`count` messages: lifecycles of count/8 Prefect tasks, in order, each padded to `size` bytes."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    bodies, tags = [], {}
    for t in range(count // len(FARGATE_LIFECYCLE)):
        arn = f"arn:aws:ecs:us-east-1:123456789012:task/prefect/{uuid.uuid4().hex}"
        tags[arn] = {
            "prefect.io/flow-run-id": str(uuid.uuid4()),
            "prefect.io/flow-run-name": f"run-{t}",
            "prefect.io/deployment-id": str(uuid.uuid4()),
            "prefect.io/worker-name": "ecs-worker",
        }
        for version, status in enumerate(FARGATE_LIFECYCLE, start=1):
            body = state_change(
                arn,
                status,
                version,
                start + timedelta(seconds=version),
                cluster_arn="arn:aws:ecs:us-east-1:123456789012:cluster/prefect",
            )
            bodies.append(padded(body, size))
    return bodies, tags


async def observer_path(bodies: list[str], tags: dict[str, dict[str, str]]) -> float:
    """Seconds of CPU for the whole per-message path over all bodies (tags already cached, as in steady state)."""
    store = MemoryTaskState(1_000_000)  # one store for both, as in the observer
    lookup = TagLookup(InMemoryEcs(tags), store, Stats(), linger=0)
    # The observer's own decision path, events only (flow-run effects are I/O, measured by the backlog bench).
    policy = Policy(lookup, Sequencer(store, reorder_window=0), store, ObserverConfig(), effects=False)
    for arn in tags:  # warm the tag cache: the steady state, where DescribeTasks is rare
        await lookup.tags_for(_change_for(arn))
    started = time.process_time()
    for body in bodies:
        decision = await policy.decide(decode(body), None)
        assert isinstance(decision, Forward)
        assert decision.event is not None
        json.dumps(decision.event.to_json(), separators=(",", ":")).encode()
    return time.process_time() - started


def _change_for(arn: str) -> TaskStateChange:
    change = decode(json.dumps(state_change(arn, "PENDING", 1, datetime(2026, 1, 1, tzinfo=UTC))))
    assert isinstance(change, TaskStateChange)
    return change


def json_floor(bodies: list[str]) -> float:
    started = time.process_time()
    for body in bodies:
        json.dumps(json.loads(body))
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    print(
        f"# cpu_per_message: {args.messages} messages per size; python {platform.python_version()} "
        f"on {platform.machine()}, {platform.processor() or platform.platform()}"
    )
    print(f"# reproduce: python bench/cpu_per_message.py --messages {args.messages}")
    print(f"{'size':>6} {'observer µs/msg':>16} {'json floor µs/msg':>18} {'ratio':>6}")
    for label, size in SIZES.items():
        count = args.messages if size < 65536 else args.messages // 8
        bodies, tags = messages(count, size)
        json_floor(bodies[:500])  # warm-up
        ours = asyncio.run(observer_path(bodies, tags))
        floor = json_floor(bodies)
        n = len(bodies)
        print(f"{label:>6} {ours / n * 1e6:16.1f} {floor / n * 1e6:18.1f} {ours / floor:6.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

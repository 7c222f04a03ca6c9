"""Backlog drain: 10,000 messages queued before the observer starts, against moto in server mode and a local sink.

1,250 tasks with 8 state changes each, half of them not Prefect's, in 3 clusters.
Prints seconds to drain, messages/s, AWS calls per message by API, Prefect
requests and the observer's CPU and peak RSS, and checks that every expected
event reached the sink. bench/compare.py runs the same drain for two commits.

    python bench/backlog_drain.py [--tasks 1250] [--flow-run-states true|false] [--profile FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import clients, create_queue, depth, moto, observer, send_all, sink, sink_stats

from ecs_observer.app.demo.samples import lifecycle

CLUSTERS = 3


@dataclass(frozen=True)
class Backlog:
    """Messages queued before an observer starts, and the ids of the events that must reach the sink."""

    queue_url: str
    bodies: list[str]
    expected: frozenset[str]
    tasks: int


@dataclass(frozen=True)
class Drain:
    """What one observer process did with one backlog. CPU is the whole process's, from its start."""

    messages: int
    seconds: float  # until the queue was empty
    delivered_in: float  # until the last expected event reached the sink
    cpu: float
    cpu_at_ready: float  # when /metrics first answered: start-up, imports most of it
    rss_mb: float
    metrics: dict[str, float]
    requests: Counter[str]  # the sink's, during this drain
    missing: int
    left: tuple[int, int]

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu / self.messages * 1000

    @property
    def received(self) -> int:
        return int(self.metrics["ecs_observer_messages_received_total"])


def build(sqs: Any, ecs: Any, tasks: int, queue_name: str) -> Backlog:
    """A new queue holding `tasks` tasks' 8 changes each, shuffled (the same order for the same `tasks`)."""
    queue_url = create_queue(sqs, queue_name)
    expected: set[str] = set()
    bodies: list[str] = []
    start = datetime.now(UTC) - timedelta(hours=1)
    for c in range(CLUSTERS):
        cluster = ecs.create_cluster(clusterName=f"bench-{c}")["cluster"]["clusterArn"]
        task_def = ecs.register_task_definition(
            family="flow", containerDefinitions=[{"name": "p", "image": "prefect", "memory": 512}]
        )["taskDefinition"]["taskDefinitionArn"]
        for group in range(0, tasks // CLUSTERS + (c < tasks % CLUSTERS), 10):
            prefect = (group // 10) % 2 == 0
            count = min(10, tasks // CLUSTERS + (c < tasks % CLUSTERS) - group)
            # Each of Prefect's tasks runs a flow run of its own, as the ECS worker starts them.
            runs = [{"key": "prefect.io/flow-run-id", "value": str(uuid.uuid4())} for _ in range(count)]
            batches = [(1, [run]) for run in runs] if prefect else [(count, [{"key": "team", "value": "other"}])]
            arns = [
                t["taskArn"]
                for n, tags in batches
                for t in ecs.run_task(
                    cluster=f"bench-{c}", taskDefinition=task_def, launchType="FARGATE", count=n, tags=tags
                )["tasks"]
            ]
            for arn in arns:
                events = lifecycle(arn, start, cluster_arn=cluster, task_definition_arn=task_def)
                bodies += [json.dumps(e) for e in events]
                if prefect:
                    expected |= {e["id"] for e in events}
    random.Random(0).shuffle(bodies)
    send_all(sqs, queue_url, bodies)
    return Backlog(queue_url, bodies, frozenset(expected), tasks)


def drain(
    moto_url: str,
    sink_url: str,
    sqs: Any,
    backlog: Backlog,
    log: Path,
    flow_run_states: str,
    tree: Path | None = None,
    profile: Path | None = None,
) -> Drain:
    """Start an observer (this checkout's, or `tree`'s) on the backlog; stop it once the queue is empty."""
    before = Counter(sink_stats(sink_url)["requests"])
    began, began_wall = time.monotonic(), time.time()
    with observer(
        moto_url, sink_url, backlog.queue_url, log, tree, wait_time_seconds="1", flow_run_states=flow_run_states
    ) as obs:
        cpu_at_ready = obs.cpu_seconds()
        with _profiled(obs.proc.pid, profile):
            # Watch the observer's own counts: GetQueueAttributes is O(n) in moto and would load it.
            # Then the queue, once a second: moto may deliver a message twice, so the count alone can run ahead.
            while True:
                metrics = obs.metrics()
                done = metrics["ecs_observer_messages_deleted_total"] >= len(backlog.bodies)
                if done and metrics["ecs_observer_in_flight_messages"] == 0 and depth(sqs, backlog.queue_url) == (0, 0):
                    break
                time.sleep(1.0 if done else 0.2)
        seconds = time.monotonic() - began
        metrics = obs.metrics()
        left = depth(sqs, backlog.queue_url)
        rss = obs.peak_rss_mb()
        cpu = obs.cpu_seconds()
    stats = sink_stats(sink_url)
    arrivals: dict[str, float] = stats["arrivals"]
    delivered = [arrivals[i] for i in backlog.expected if i in arrivals]
    return Drain(
        messages=len(backlog.bodies),
        seconds=seconds,
        delivered_in=max(delivered, default=began_wall) - began_wall,
        cpu=cpu,
        cpu_at_ready=cpu_at_ready,
        rss_mb=rss,
        metrics=metrics,
        requests=Counter(stats["requests"]) - before,
        missing=len(backlog.expected) - len(delivered),
        left=left,
    )


def _profiled(pid: int, profile: Path | None) -> contextlib.AbstractContextManager[None]:
    if profile is None:
        return contextlib.nullcontext()
    from spy import recording

    return recording(pid, profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1250)
    parser.add_argument(
        "--flow-run-states", choices=["true", "false"], default="true", help="false: events only, as before issue 10"
    )
    parser.add_argument(
        "--profile", type=Path, help="sample the observer with py-spy during the drain into this file, then summarise"
    )
    args = parser.parse_args()
    with moto() as moto_url, sink() as sink_url, tempfile.TemporaryDirectory() as tmp:
        sqs, ecs = clients(moto_url)
        made = time.monotonic()
        backlog = build(sqs, ecs, args.tasks, "backlog")
        print(
            f"# backlog_drain: {len(backlog.bodies)} messages, {args.tasks} tasks ({len(backlog.expected) // 8} "
            f"Prefect's), {CLUSTERS} clusters; set up in {time.monotonic() - made:.0f} s"
        )
        profile = f" --profile {args.profile}" if args.profile else ""
        print(
            f"# reproduce: python bench/backlog_drain.py --tasks {args.tasks} --flow-run-states {args.flow_run_states}"
            + profile
        )
        result = drain(
            moto_url, sink_url, sqs, backlog, Path(tmp) / "observer.log", args.flow_run_states, profile=args.profile
        )
    report(result, backlog)
    if args.profile:
        from spy import summary

        print(summary(args.profile))
        print("# the profile's sampling slows the observer: take CPU figures from a run without --profile")
    if result.missing:
        raise SystemExit(f"LOST {result.missing} events")


def report(result: Drain, backlog: Backlog) -> None:
    n, metrics, expected = result.messages, result.metrics, len(backlog.expected)
    calls = {
        api: metrics.get(f'ecs_observer_sqs_calls_total{{api="{api}"}}', 0.0)
        for api in ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")
    }
    calls["DescribeTasks"] = metrics["ecs_observer_describe_tasks_calls_total"]
    for what, seconds in (
        ("every event reached the sink", result.delivered_in),
        ("the queue was empty", result.seconds),
    ):
        print(f"seconds until {what:<28} {seconds:8.1f}  ({n / seconds:.0f} messages/s)")
    print(f"messages received (moto may deliver twice) {result.received:8d}")
    for api, count in calls.items():
        print(f"{api + ' per message':<40} {count / n:8.4f}  ({count:.0f} calls)")
    print(f"{'AWS calls per message':<40} {sum(calls.values()) / n:8.4f}  (target <= 0.25)")
    print(f"DescribeTasks bound (tasks/100 + 1 per cluster per window): {backlog.tasks / 100 + CLUSTERS:.1f}")
    for route, count in sorted(result.requests.items()):
        print(f"{'Prefect ' + route + ' per Prefect change':<40} {count / expected:8.4f}  ({count} calls)")
    print(f"{'Prefect calls per Prefect change':<40} {result.requests.total() / expected:8.4f}  (target <= 0.5)")
    print(f"Prefect events accepted {expected - result.missing:10d}")
    print(f"observer CPU seconds    {result.cpu:10.1f}  ({result.cpu_per_1000:.2f} per 1,000 messages)")
    print(f"  of which start-up     {result.cpu_at_ready:10.1f}  (until /metrics answered: imports, mostly)")
    print(f"observer peak RSS MB    {result.rss_mb:10.1f}")
    print(f"events delivered        {expected - result.missing}/{expected}; left in queue {result.left}")


if __name__ == "__main__":
    main()

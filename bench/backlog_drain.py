"""Backlog drain: 10,000 messages queued before the observer starts, against moto in server mode and a local sink.

1,250 tasks with 8 state changes each, half of them not Prefect's, in 3 clusters.
Prints seconds to drain, messages/s, AWS calls per message by API, Prefect
requests and the observer's peak RSS, and checks that every expected event
reached the sink.

    python bench/backlog_drain.py [--tasks 1250]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness import clients, create_queue, depth, moto, observer, send_all, sink, sink_stats

from ecs_observer.app.demo.samples import lifecycle

CLUSTERS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1250)
    parser.add_argument(
        "--flow-run-states", choices=["true", "false"], default="true", help="false: events only, as before issue 10"
    )
    args = parser.parse_args()
    with moto() as moto_url, sink() as sink_url, tempfile.TemporaryDirectory() as tmp:
        sqs, ecs = clients(moto_url)
        queue_url = create_queue(sqs, "backlog")
        expected: set[str] = set()
        bodies: list[str] = []
        start = datetime.now(UTC) - timedelta(hours=1)
        made = time.monotonic()
        for c in range(CLUSTERS):
            cluster = ecs.create_cluster(clusterName=f"bench-{c}")["cluster"]["clusterArn"]
            task_def = ecs.register_task_definition(
                family="flow", containerDefinitions=[{"name": "p", "image": "prefect", "memory": 512}]
            )["taskDefinition"]["taskDefinitionArn"]
            for group in range(0, args.tasks // CLUSTERS + (c < args.tasks % CLUSTERS), 10):
                prefect = (group // 10) % 2 == 0
                count = min(10, args.tasks // CLUSTERS + (c < args.tasks % CLUSTERS) - group)
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
        print(
            f"# backlog_drain: {len(bodies)} messages, {args.tasks} tasks ({len(expected) // 8} Prefect's), "
            f"{CLUSTERS} clusters; set up in {time.monotonic() - made:.0f} s"
        )
        print(
            f"# reproduce: python bench/backlog_drain.py --tasks {args.tasks} --flow-run-states {args.flow_run_states}"
        )

        began, began_wall = time.monotonic(), time.time()
        log = Path(tmp) / "observer.log"
        with observer(
            moto_url, sink_url, queue_url, log, wait_time_seconds="1", flow_run_states=args.flow_run_states
        ) as obs:
            # Watch the observer's own counts: GetQueueAttributes is O(n) in moto and would load it.
            # Then the queue, once a second: moto may deliver a message twice, so the count alone can run ahead.
            while True:
                metrics = obs.metrics()
                done = metrics["ecs_observer_messages_deleted_total"] >= len(bodies)
                if done and metrics["ecs_observer_in_flight_messages"] == 0 and depth(sqs, queue_url) == (0, 0):
                    break
                time.sleep(1.0 if done else 0.2)
            seconds = time.monotonic() - began
            metrics = obs.metrics()
            left = depth(sqs, queue_url)
            rss = obs.peak_rss_mb()
            cpu = obs.cpu_seconds()
        stats = sink_stats(sink_url)

    n = len(bodies)
    calls = {
        api: metrics.get(f'ecs_observer_sqs_calls_total{{api="{api}"}}', 0.0)
        for api in ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")
    }
    calls["DescribeTasks"] = metrics["ecs_observer_describe_tasks_calls_total"]
    missing = expected - set(stats["arrivals"])
    delivered_in = max(stats["arrivals"][i] for i in expected if i in stats["arrivals"]) - began_wall
    print(f"seconds until every event reached the sink {delivered_in:8.1f}  ({n / delivered_in:.0f} messages/s)")
    print(f"seconds until the queue was empty          {seconds:8.1f}  ({n / seconds:.0f} messages/s)")
    print(f"messages received (moto may deliver twice) {metrics['ecs_observer_messages_received_total']:8.0f}")
    for api, count in calls.items():
        print(f"{api + ' per message':<40} {count / n:8.4f}  ({count:.0f} calls)")
    print(f"{'AWS calls per message':<40} {sum(calls.values()) / n:8.4f}  (target <= 0.25)")
    print(f"DescribeTasks bound (tasks/100 + 1 per cluster per window): {args.tasks / 100 + CLUSTERS:.1f}")
    prefect_calls = sum(stats["requests"].values())
    for route, count in sorted(stats["requests"].items()):
        print(f"{'Prefect ' + route + ' per Prefect change':<40} {count / len(expected):8.4f}  ({count} calls)")
    print(f"{'Prefect calls per Prefect change':<40} {prefect_calls / len(expected):8.4f}  (target <= 0.5)")
    print(f"Prefect events accepted {len(stats['arrivals']):10d}")
    print(f"observer CPU seconds    {cpu:10.1f}  ({cpu / n * 1000:.2f} per 1,000 messages)")
    print(f"observer peak RSS MB    {rss:10.1f}")
    print(f"events delivered        {len(expected) - len(missing)}/{len(expected)}; left in queue {left}")
    if missing:
        raise SystemExit(f"LOST {len(missing)} events")


if __name__ == "__main__":
    main()

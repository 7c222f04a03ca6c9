"""Steady stream: messages sent at a fixed rate, latency from SendMessage to acceptance by the sink.

For each rate, prints p50, p95 and p99 latency and the observer's CPU seconds per
1,000 messages, and checks that every event reached the sink.

    python bench/steady_stream.py [--rates 50 500] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from harness import clients, create_queue, moto, observer, percentile, sink, sink_stats

from ecs_observer.app.demo.samples import FARGATE_LIFECYCLE, state_change

TASKS = 100


def run_rate(rate: int, seconds: float, tmp: Path) -> None:
    with moto() as moto_url, sink() as sink_url:
        sqs, ecs = clients(moto_url)
        queue_url = create_queue(sqs, f"stream-{rate}")
        cluster = ecs.create_cluster(clusterName="stream")["cluster"]["clusterArn"]
        task_def = ecs.register_task_definition(
            family="flow", containerDefinitions=[{"name": "p", "image": "prefect", "memory": 512}]
        )["taskDefinition"]["taskDefinitionArn"]
        arns: list[str] = []
        for _ in range(TASKS // 10):
            tags = [{"key": "prefect.io/flow-run-id", "value": str(uuid.uuid4())}]
            arns += [
                t["taskArn"]
                for t in ecs.run_task(
                    cluster="stream", taskDefinition=task_def, launchType="FARGATE", count=10, tags=tags
                )["tasks"]
            ]
        with observer(moto_url, sink_url, queue_url, tmp / f"observer-{rate}.log") as obs:
            time.sleep(1)  # the receive loops are polling
            cpu_before = obs.cpu_seconds()
            sent: dict[str, float] = {}
            per_tick = max(1, min(10, rate // 50))  # one SendMessageBatch per tick
            interval = per_tick / rate
            began = time.monotonic()
            n = 0
            while time.monotonic() - began < seconds:
                due = began + (n // per_tick) * interval
                if (pause := due - time.monotonic()) > 0:
                    time.sleep(pause)
                batch = []
                for _ in range(per_tick):
                    arn = arns[n % TASKS]
                    version = n // TASKS + 1  # each task's changes in order, one version apart
                    body = state_change(
                        arn,
                        FARGATE_LIFECYCLE[(version - 1) % 8],
                        version,
                        datetime.now(UTC),
                        cluster_arn=cluster,
                        task_definition_arn=task_def,
                    )
                    batch.append(body)
                    n += 1
                now = time.time()
                sqs.send_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": str(i), "MessageBody": json.dumps(b)} for i, b in enumerate(batch)],
                )
                for body in batch:
                    sent[body["id"]] = now
            achieved = n / (time.monotonic() - began)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the observer's own counts: GetQueueAttributes is O(n) in moto
                metrics = obs.metrics()
                done = metrics["ecs_observer_messages_deleted_total"] >= n
                if done and metrics["ecs_observer_in_flight_messages"] == 0:
                    break
                time.sleep(0.2)
            cpu = obs.cpu_seconds() - cpu_before
        arrivals = sink_stats(sink_url)["arrivals"]
    latencies = [(arrivals[i] - t) * 1000 for i, t in sent.items() if i in arrivals]
    lost = len(sent) - len(latencies)
    print(
        f"{rate:>6} {achieved:>10.0f} {percentile(latencies, 0.5):>8.0f} {percentile(latencies, 0.95):>8.0f} "
        f"{percentile(latencies, 0.99):>8.0f} {cpu / n * 1000:>14.2f} {len(latencies):>9}/{len(sent)}"
    )
    if lost:
        raise SystemExit(f"LOST {lost} events at {rate}/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    print(f"# steady_stream: {args.seconds:.0f} s per rate, {TASKS} tasks, moto server and a local sink")
    rates = " ".join(map(str, args.rates))
    print(f"# reproduce: python bench/steady_stream.py --rates {rates} --seconds {args.seconds:.0f}")
    header = ("rate/s", "achieved/s", "p50 ms", "p95 ms", "p99 ms", "CPU s/1k msgs", "delivered")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (6, 10, 8, 8, 8, 14, 15), strict=True)))
    with tempfile.TemporaryDirectory() as tmp:
        for rate in args.rates:
            run_rate(rate, args.seconds, Path(tmp))


if __name__ == "__main__":
    main()

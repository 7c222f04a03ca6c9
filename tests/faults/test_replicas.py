"""Several observers on one queue sharing task state in DynamoDB (moto), forwarding to a real Prefect server."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from ecs_observer.adapters.aws import AwsClients

from ..servers import PrefectServer
from ..world import assert_chains, depth, make_queue, make_table, replicas, send, start_tasks, until
from .proxy import FaultProxy, aws_error, reset
from .scenario import delivered, run_until, scenario
from .test_process_faults import start_observer


async def test_three_replicas_forward_exactly_the_events_one_observer_does(
    aws: AwsClients, prefect: PrefectServer
) -> None:
    sc = await scenario(aws, tagged=12, untagged=4, seed=6)
    table = await make_table(aws)
    async with replicas(3, sc.queue_url, table, prefect.api_url) as observers:
        await asyncio.wait_for(asyncio.gather(*(o.run(until_idle=3) for o in observers)), timeout=120)
    assert all(o.stats.received > 0 for o in observers)  # all three took part
    # The same ids, each once, and each follows the previous change of its task, as with one observer.
    await delivered(aws, prefect, sc)
    # Each task described once across the replicas; the others read its tags from the table.
    assert sum(o.stats.described_tasks for o in observers) == len(sc.tagged) + len(sc.untagged)
    # Tags learnt from another replica leave no lookup behind (it would grow by one per task).
    assert all(not o._tags._in_flight for o in observers)

    calls = sum((o.stats.dynamodb_calls for o in observers), Counter[str]())
    units = {kind: sum(o.stats.dynamodb_units[kind] for o in observers) for kind in ("read", "write")}
    received = sum(o.stats.received for o in observers)
    print(f"\nDynamoDB for {received} state changes ({sc.expected} of Prefect's): calls {dict(calls)}, units {units}")


@pytest.mark.parametrize(
    ("settings", "exact"),
    [
        # The defaults: a change the killed replica had received but not yet recorded is hidden from the
        # others until its visibility timeout; a successor that waited out the window skips it.
        ({}, False),
        # A window covering the visibility timeout (5 s here) and the killed replica's describe claims
        # (3 s) keeps every `follows` exact (docs/deploy.md).
        ({"describe_claim": "3", "reorder_window": "15"}, True),
    ],
    ids=["defaults", "window-covers-visibility"],
)
async def test_a_replica_killed_midway_loses_nothing(
    aws: AwsClients, prefect: PrefectServer, tmp_path: Path, settings: dict[str, str], exact: bool
) -> None:
    sc = await scenario(aws, tagged=12, untagged=4, visibility=5, seed=7)
    table = await make_table(aws)
    total = sum(len(t.events) for t in sc.tagged + sc.untagged)
    settings = {"state_table": table, **settings}
    logs = [tmp_path / f"replica-{n}.log" for n in range(3)]
    procs = [await start_observer(sc.queue_url, prefect.api_url, log, **settings) for log in logs]
    try:

        async def some_deleted() -> bool:
            return sum(await depth(aws, sc.queue_url)) < total

        assert await until(some_deleted), logs[0].read_text()
        procs[0].kill()  # SIGKILL midway through the backlog
        assert await procs[0].wait() == -signal.SIGKILL
        assert sum(await depth(aws, sc.queue_url)) > 0, "the backlog was done before the kill: nothing tested"

        async def drained() -> bool:
            return await depth(aws, sc.queue_url) == (0, 0)

        assert await until(drained, within=120), logs[1].read_text()
    finally:
        for proc in procs[1:]:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = [await proc.wait() for proc in procs[1:]]
    assert codes == [0, 0]
    # Every event once; with the window covering the hand-back, each follows exactly as with no death.
    await delivered(aws, prefect, sc, gaps_allowed=not exact)


# botocore retries throttling, 500s and resets itself; a denial (an IAM change still propagating) it
# does not, so that the store's own retry is needed too.
_FAULTS = [
    aws_error(400, "AccessDeniedException"),
    aws_error(400, "ProvisionedThroughputExceededException"),
    aws_error(500, "InternalServerError"),
    reset(),
    aws_error(400, "ThrottlingException"),
    aws_error(400, "ProvisionedThroughputExceededException"),
]


async def test_dynamodb_faults_delay_but_never_change_or_lose_events(
    aws: AwsClients, moto_url: str, prefect: PrefectServer
) -> None:
    sc = await scenario(aws, tagged=4, untagged=1, seed=8)
    table = await make_table(aws)
    proxy = await FaultProxy(moto_url).start()
    for operation in ("BatchGetItem", "UpdateItem"):
        proxy.inject(operation, *_FAULTS)
    try:
        async with replicas(2, sc.queue_url, table, prefect.api_url, endpoint_url=proxy.url) as observers:
            await asyncio.gather(
                *(run_until(o, lambda: sum(x.stats.deleted for x in observers) >= sc.expected + 8) for o in observers)
            )
    finally:
        await proxy.stop()
    await delivered(aws, prefect, sc)
    for operation in ("BatchGetItem", "UpdateItem"):
        assert proxy.script[operation] == [], f"{operation}: not every injected fault was met"
        assert "pass" in proxy.outcomes(operation)
    # Both denials were retried by the store (with the observer's Backoff, whose timing the SQS and
    # ECS fault tests measure), and nothing else failed for good.
    assert sum(o.stats.retries["dynamodb"] for o in observers) >= 2


async def test_in_a_steady_stream_the_store_reads_once_per_receive_batch(
    aws: AwsClients, prefect: PrefectServer
) -> None:
    """Changes arriving in order, a step of every task at a time, as flows really run."""
    queue_url, _ = await make_queue(aws)
    tasks = await start_tasks(aws, 4) + await start_tasks(aws, 1, tagged=False)
    table = await make_table(aws)
    steps = len(tasks[0].events)
    async with replicas(2, queue_url, table, prefect.api_url) as observers:
        runs = [asyncio.create_task(o.run()) for o in observers]
        for step in range(steps):
            await send(aws, queue_url, [json.dumps(t.events[step]) for t in tasks])

            async def handled(done: int = len(tasks) * (step + 1)) -> bool:
                return sum(o.stats.deleted for o in observers) >= done

            assert await until(handled, within=30)
        for o in observers:
            o.stop()
        await asyncio.gather(*runs)
    for o in observers:
        # One read per receive batch at most, never one per message; nothing waited for a predecessor.
        assert o.stats.dynamodb_calls["BatchGetItem"] <= o.stats.batches_received
    changes = len(tasks) * steps
    reads = sum(o.stats.dynamodb_units["read"] for o in observers)
    writes = sum(o.stats.dynamodb_calls["UpdateItem"] for o in observers)
    assert sum(o.stats.described_tasks for o in observers) == len(tasks)
    print(f"\nsteady stream, {changes} state changes: {reads} items read, {writes} writes")
    stored = prefect.wait_for_events([t.resource_id for t in tasks], count=4 * steps)
    assert_chains(tasks[:4], stored)

"""The sweep against moto and a real Prefect server: runs kept true when no event comes.

Each test builds runs on ECS tasks, lets the sweep's clock pass the grace (no waiting), sweeps, and
reads back what Prefect holds and what ECS was asked.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.cloudwatch import CloudWatchLogs
from ecs_observer.adapters.dynamodb import DynamoTaskState
from ecs_observer.adapters.ecs import EcsDescriber, EcsStopper, EcsTaskDefinitions
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.adapters.prefect.flow_runs import PrefectFlowRuns
from ecs_observer.adapters.sqs import SqsQueue
from ecs_observer.app.demo.samples import state_change
from ecs_observer.app.demo.sandbox import Cluster, hold_tasks, start_cluster
from ecs_observer.core.ecs_event import Container
from ecs_observer.core.run_states import ProposalAnswer
from ecs_observer.core.start_failure import START_TIMEOUT_MARK
from ecs_observer.core.sweep import Scope
from ecs_observer.core.task_view import sweep_event_id
from ecs_observer.pipeline.observer import Observer
from ecs_observer.pipeline.sweep import Sweeper
from ecs_observer.ports import TaskStateStore
from ecs_observer.support.backoff import Backoff
from ecs_observer.support.stats import Stats

from .runs import history, logs, state_message
from .servers import PrefectServer
from .sweep_world import ACCOUNT, Clock, CountingStopper, Overlay, failed, run_on, running
from .world import FAST, REGION, make_queue, make_table, send, until

CONFIG = replace(FAST, sweep_interval=1.0, start_retry_delay=0.0)


@pytest.fixture
async def held(moto_url: str) -> AsyncIterator[None]:
    await hold_tasks(moto_url)
    yield
    await hold_tasks(moto_url, hold=False)


@dataclass
class Sweep:
    """One observer and its sweeper, on moto and the test Prefect server."""

    observer: Observer
    sweeper: Sweeper
    ecs: Overlay
    stopper: CountingStopper
    clock: Clock
    cluster: Cluster
    queue_url: str
    stats: Stats

    async def task(self, run_id: str | None = None) -> str:
        tags = [{"key": "prefect.io/flow-run-id", "value": run_id}] if run_id else [{"key": "team", "value": "x"}]
        ecs = await self.ecs.real._clients.ecs(REGION)
        return await self.cluster.run_task(ecs, tags)  # type: ignore[arg-type]

    async def run_on_task(self, prefect: PrefectServer, state_type: str) -> tuple[str, str]:
        """A flow run in `state_type` and the task its worker started for it (tagged, its pid): (run, task)."""
        run_id = run_on(prefect, state_type, None, None)
        arn = await self.task(run_id)
        pid = f"{self.cluster.arn}::{arn}"
        prefect.call("PATCH", f"/flow_runs/{run_id}", json={"infrastructure_pid": pid})
        return run_id, arn

    async def stop_in_moto(self, arn: str) -> None:
        ecs = await self.ecs.real._clients.ecs(REGION)
        await ecs.stop_task(cluster=self.cluster.name, task=arn, reason="by the test")


@pytest.fixture
async def sweep(aws: AwsClients, prefect: PrefectServer, held: None) -> Sweep:
    return await make_sweep(aws, prefect, CONFIG)


async def make_sweep(
    aws: AwsClients, prefect: PrefectServer, config: Any, *, table: str | None = None, cluster: Cluster | None = None
) -> Sweep:
    """With `table`, the task state is shared in DynamoDB, as replicas share it."""
    ecs = await aws.ecs(REGION)
    cluster = cluster or await start_cluster(ecs, f"sweep-{uuid.uuid4().hex[:6]}")
    queue_url, _ = await make_queue(aws)
    stats = Stats()
    client = PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0), stats=stats)
    runs = PrefectFlowRuns(client)
    describer = Overlay(EcsDescriber(aws))
    store: TaskStateStore = (
        DynamoTaskState(await aws.dynamodb(REGION), table, stats, backoff=Backoff(0.1, 1.0))
        if table
        else MemoryTaskState(1000)
    )
    observer = Observer(
        SqsQueue(await aws.sqs(REGION), queue_url),
        describer,
        store,
        PrefectApiSink(client),
        config,
        stats,
        runs,
        EcsTaskDefinitions(aws),
        CloudWatchLogs(aws),
    )
    stopper = CountingStopper(EcsStopper(aws))
    clock = Clock()
    sweeper = Sweeper(observer, runs, describer, store, stats, config, Scope(ACCOUNT), stopper, clock)
    return Sweep(observer, sweeper, describer, stopper, clock, cluster, queue_url, stats)


def last(prefect: PrefectServer, run_id: str) -> tuple[str, str]:
    return history(prefect, run_id)[-1]


async def test_a_lost_stopped_event_is_repaired_as_the_event_would_have_done(
    sweep: Sweep, prefect: PrefectServer, aws: AwsClients
) -> None:
    run_id, arn = await sweep.run_on_task(prefect, "RUNNING")
    # It stopped after its run became Running (Prefect takes no state dated in the past): the sweep's clock
    # then moves past the grace.
    sweep.ecs.views[arn] = failed(1, version=9, ago=-0.05)
    sweep.clock.advance(6)
    await sweep.stop_in_moto(arn)
    async with running(sweep.observer):
        # Stopped long enough ago, but seen so for the first time: its STOPPED may still wait in the queue
        # (an observer just started on a backlog), so the event path's chance first.
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "waiting"
        assert last(prefect, run_id) == ("RUNNING", "Running")
        sweep.clock.advance(6)
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "repaired"
        assert last(prefect, run_id) == ("CRASHED", "Crashed")
        assert "the essential container exited with code 1" in state_message(prefect, run_id)
        resource = f"prefect.ecs.task.{arn.rsplit('/', 1)[1]}"
        (event,) = prefect.wait_for_events([resource], count=1)
        assert event["id"] == str(sweep_event_id(arn, 9))
        assert event["event"] == "prefect.ecs.task.stopped"
        assert event["resource"]["ecs.diagnosis"] == "exited"
        assert event["resource"]["ecs.exitCode"] == "1"
        assert any(r["prefect.resource.id"] == f"prefect.flow-run.{run_id}" for r in event["related"])
        diagnoses = [e for e in logs(prefect, run_id) if "Resolution:" in e["message"]]
        assert len(diagnoses) == 1
        # The run is final now: the next sweep finds nothing to do.
        assert UUID(run_id) not in await sweep.sweeper.sweep()
        # EventBridge's own copy of that change, late: the same version, sent again under the sweep's id (in
        # case the sweep's post had not gone through), deleted; Prefect keeps the event once.
        late = state_change(arn, "STOPPED", 9, datetime.now(UTC), exit_code=1)
        await send(aws, sweep.queue_url, [json.dumps(late)])
        assert await until(lambda: _done(sweep.stats, deleted=1))
    assert len(prefect.events([resource])) == 1
    assert len([e for e in logs(prefect, run_id) if "Resolution:" in e["message"]]) == 1


async def _done(stats: Stats, **counts: int) -> bool:
    return all(getattr(stats, name) >= n for name, n in counts.items())


async def test_a_clean_exit_the_run_never_reported_is_crashed_saying_so(sweep: Sweep, prefect: PrefectServer) -> None:
    run_id, arn = await sweep.run_on_task(prefect, "PENDING")
    sweep.ecs.views[arn] = failed(0, version=5, ago=-0.05)
    sweep.clock.advance(6)
    await sweep.stop_in_moto(arn)
    async with running(sweep.observer):
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "waiting"  # first seen stopped
        sweep.clock.advance(6)
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "repaired"
    assert last(prefect, run_id) == ("CRASHED", "Crashed")
    assert "exited cleanly (code 0)" in state_message(prefect, run_id)
    assert "never reported a final state" in state_message(prefect, run_id)


async def test_a_task_ecs_forgot_crashes_its_run_only_once_missing_for_the_grace(
    sweep: Sweep, prefect: PrefectServer
) -> None:
    gone = sweep.cluster.arn.replace(":cluster/", ":task/") + "/" + uuid.uuid4().hex  # moto answers neither
    run_id = run_on(prefect, "RUNNING", sweep.cluster.arn, gone)
    async with running(sweep.observer):
        # Just after RunTask, or seen in one sweep only: MISSING is normal; nothing is done.
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "waiting"
        sweep.clock.advance(4)
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "waiting"
        sweep.clock.advance(2)  # seen MISSING in sweeps 6 minutes apart, the run Running as long
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "crashed-missing"
    assert last(prefect, run_id) == ("CRASHED", "Crashed")
    assert "ECS no longer knows task" in state_message(prefect, run_id)


async def test_a_cancelling_run_stops_its_task_and_is_cancelled_once_it_stopped(
    sweep: Sweep, prefect: PrefectServer
) -> None:
    run_id, arn = await sweep.run_on_task(prefect, "CANCELLING")
    async with running(sweep.observer):
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "waiting"  # its worker's chance first
        assert arn not in sweep.stopper.stopped
        sweep.clock.advance(6)
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "stopped:cancelled"
        assert sweep.stopper.stopped[arn] == 1
        assert sweep.stopper.reasons[arn].startswith(f"ecs-observer: flow run {run_id} is Cancelling (")
        # moto stops at once and gives no stoppedAt: dated from this sweep, acted on after the grace.
        sweep.ecs.views[arn] = {"containers": (Container("prefect", None, None),), "stop_code": "UserInitiated"}
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "waiting"
        sweep.clock.advance(6)
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "repaired"
    assert last(prefect, run_id) == ("CANCELLED", "Cancelled")
    assert sweep.stopper.stopped[arn] == 1


async def test_orphans_are_stopped_only_when_asked_and_their_runs_left_as_they_are(
    aws: AwsClients, prefect: PrefectServer, held: None
) -> None:
    for stop_orphans in (False, True):
        sweep = await make_sweep(aws, prefect, replace(CONFIG, stop_orphans=stop_orphans))
        run_id, arn = await sweep.run_on_task(prefect, "COMPLETED")
        sweep.clock.advance(6)
        async with running(sweep.observer):
            outcomes = await sweep.sweeper.sweep()
        assert sweep.stopper.stopped[arn] == (1 if stop_orphans else 0)  # (earlier tests' runs may be orphans too)
        assert outcomes.get(UUID(run_id)) == ("stopped:orphan" if stop_orphans else None)  # final runs: read only then
        if stop_orphans:
            assert f"flow run {run_id} is Completed" in sweep.stopper.reasons[arn]
        assert history(prefect, run_id) == [("COMPLETED", "Completed")]


async def test_a_task_that_does_not_start_in_time_is_stopped_and_its_run_rescheduled(
    aws: AwsClients, prefect: PrefectServer, held: None
) -> None:
    sweep = await make_sweep(aws, prefect, replace(CONFIG, start_timeout=600.0))
    run_id, arn = await sweep.run_on_task(prefect, "PENDING")
    created = datetime.now(UTC) - timedelta(minutes=11)
    sweep.ecs.views[arn] = {"last_status": "PENDING", "created_at": created}
    async with running(sweep.observer):
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "stopped:start-timeout"
        assert sweep.stopper.reasons[arn].startswith(START_TIMEOUT_MARK)
        # Stopped before it started: no exit code, ECS's stop code for StopTask, our reason (moto kept it).
        sweep.ecs.views[arn] = {"containers": (Container("prefect", None, None),), "stop_code": "UserInitiated"}
        sweep.clock.advance(6)
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "waiting"
        sweep.clock.advance(6)
        assert (await sweep.sweeper.sweep())[UUID(run_id)] == "repaired"
    assert last(prefect, run_id) == ("SCHEDULED", "AwaitingRetry")
    assert "attempt 1 of 2" in state_message(prefect, run_id)
    (diagnosis,) = [e["message"] for e in logs(prefect, run_id) if "Resolution:" in e["message"]]
    assert "Rescheduled (start timeout): attempt 1 of 2" in diagnosis
    assert sweep.stats.reschedules == 1


async def test_the_guards_a_healthy_run_another_account_another_worker_no_pid_write_nothing(
    sweep: Sweep, prefect: PrefectServer
) -> None:
    healthy_run, healthy = await sweep.run_on_task(prefect, "RUNNING")
    runs = {
        "healthy": healthy_run,
        "another account": run_on(
            prefect,
            "RUNNING",
            sweep.cluster.arn.replace(ACCOUNT, "210987654321"),
            healthy.replace(ACCOUNT, "210987654321"),
        ),
        "another worker": run_on(prefect, "RUNNING", None, "4242"),
        "no pid": run_on(prefect, "PENDING", None, None),
    }
    before = {name: history(prefect, run_id) for name, run_id in runs.items()}
    sweep.clock.advance(60)
    async with running(sweep.observer):
        outcomes = await sweep.sweeper.sweep()
    assert {name: outcomes[UUID(run_id)] for name, run_id in runs.items()} == {
        "healthy": "healthy",
        "another account": "skipped:not-watched",
        "another worker": "skipped:not-ecs",
        "no pid": "skipped:not-ecs",
    }
    assert {name: history(prefect, run_id) for name, run_id in runs.items()} == before
    assert healthy not in sweep.stopper.stopped
    assert not prefect.events([f"prefect.ecs.task.{healthy.rsplit('/', 1)[1]}"])
    # The other account's task is never even described; the healthy one once.
    assert sweep.ecs.described.count(healthy) == 1
    assert healthy.replace(ACCOUNT, "210987654321") not in sweep.ecs.described


async def test_one_replica_sweeps_and_another_takes_over_within_two_intervals_when_it_dies(
    aws: AwsClients, prefect: PrefectServer, held: None
) -> None:
    table = await make_table(aws)
    first = await make_sweep(aws, prefect, CONFIG, table=table)
    second = await make_sweep(aws, prefect, CONFIG, table=table, cluster=first.cluster)
    replicas = (first, second)
    made = [await first.run_on_task(prefect, "CANCELLING") for _ in range(3)]
    run_ids, arns = [run_id for run_id, _ in made], [arn for _, arn in made]
    for replica in replicas:
        replica.clock.advance(6)
    async with running(first.observer), running(second.observer):
        loops = [asyncio.create_task(replica.sweeper.run()) for replica in replicas]
        try:

            async def all_stopped() -> bool:
                return sum(sum(r.stopper.stopped[arn] for r in replicas) for arn in arns) >= len(arns)

            assert await until(all_stopped, within=30)
            # A few sweeps on: still each task stopped once, and one replica sweeping.
            holder = first if first.stats.sweeps else second
            standby = second if holder is first else first
            sweeps = holder.stats.sweeps
            assert await until(lambda: _done(holder.stats, sweeps=sweeps + 2), within=30)
            assert standby.stats.sweeps == 0
            assert {arn: sum(r.stopper.stopped[arn] for r in replicas) for arn in arns} == dict.fromkeys(arns, 1)
            # The holder dies (its lease stays in the table until it lapses): the other takes over.
            # Taking over is taking the lease (the sweep itself then reads every run of the shared server).
            took: list[float] = []
            lease = standby.sweeper._lease

            async def timed_lease() -> bool:
                held = await lease()
                if held and not took:
                    took.append(asyncio.get_running_loop().time())
                return held

            standby.sweeper._lease = timed_lease  # type: ignore[method-assign]
            dead = loops[replicas.index(holder)]
            dead.cancel()
            died = asyncio.get_running_loop().time()
            assert await until(lambda: _done(standby.stats, sweeps=1), within=60)
            assert took[0] - died <= 2 * CONFIG.sweep_interval + 0.5
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
    assert {arn: sum(r.stopper.stopped[arn] for r in replicas) for arn in arns} == dict.fromkeys(arns, 1)
    for run_id in run_ids:
        assert last(prefect, run_id) == ("CANCELLING", "Cancelling")  # Cancelled once stopped for the grace


async def test_three_transient_start_failures_in_a_row_reschedule_twice_then_crash(
    sweep: Sweep, prefect: PrefectServer, aws: AwsClients
) -> None:
    run_id = run_on(prefect, "PENDING", None, None)
    reason = (
        "CannotPullContainerError: ref pull has been retried 5 time(s): failed to copy: httpReadSeeker: "
        "failed open: dial tcp 52.94.0.1:443: i/o timeout"
    )
    async with running(sweep.observer):
        for attempt in (1, 2, 3):
            arn = await sweep.task(run_id)  # the worker's new task for this attempt
            prefect.call("PATCH", f"/flow_runs/{run_id}", json={"infrastructure_pid": f"{sweep.cluster.arn}::{arn}"})
            stopped = {"stopCode": "TaskFailedToStart", "stoppedReason": reason, "containers": [{"name": "prefect"}]}
            event = state_change(arn, "STOPPED", 3, datetime.now(UTC), stopped=stopped)  # never started
            await send(aws, sweep.queue_url, [json.dumps(event)])
            assert await until(functools.partial(_done, sweep.stats, forwarded=attempt), within=60)
            assert await until(lambda: _changed(prefect, run_id, "PENDING"), within=60)
            if attempt < 3:
                assert last(prefect, run_id) == ("SCHEDULED", "AwaitingRetry")
                assert f"attempt {attempt} of 2" in state_message(prefect, run_id)
                # The worker picks it up again (the retry delay is 0 here): Pending, then a new task.
                answer = prefect.call(
                    "POST",
                    f"/flow_runs/{run_id}/set_state",
                    json={"state": {"type": "PENDING", "name": "Pending"}, "force": False},
                )
                assert answer.json()["status"] == "ACCEPT"
    assert last(prefect, run_id) == ("CRASHED", "Crashed")
    diagnoses = [e["message"] for e in logs(prefect, run_id) if "Resolution:" in e["message"]]
    assert [d.splitlines()[-1].split(":")[0] for d in diagnoses] == [
        "Rescheduled (image pull timed out)",
        "Rescheduled (image pull timed out)",
        "Not rescheduled (image pull timed out)",
    ]
    assert sweep.stats.reschedules == 2


async def _changed(prefect: PrefectServer, run_id: str, since: str) -> bool:
    return last(prefect, run_id)[0] != since


class _OneClusterGone:
    """DescribeTasks refused for one cluster for good (deleted, or not granted); the other answered."""

    def __init__(self, gone: str) -> None:
        self.gone = gone

    async def describe(self, region: str, cluster: str | None, task_arns: Any) -> dict[str, Any]:
        if cluster is not None and cluster.endswith(f"/{self.gone}"):
            raise RuntimeError("ClusterNotFoundException: Cluster not found.")
        return dict.fromkeys(task_arns)  # MISSING


class _NoRepairs:
    async def observe(self, change: Any, tags: Any) -> Any:
        raise AssertionError("nothing to repair")

    async def propose(self, run_id: UUID, task_arn: str, proposal: Any) -> ProposalAnswer | None:
        return "ACCEPT"


async def test_a_cluster_ecs_will_not_describe_skips_its_runs_and_the_sweep_goes_on() -> None:
    from ecs_observer.app.demo.runs import MemoryFlowRuns

    prefix = f"arn:aws:ecs:us-east-1:{ACCOUNT}"
    gone, kept = uuid.uuid4(), uuid.uuid4()
    runs = MemoryFlowRuns([gone, kept], now=lambda: datetime.now(UTC) - timedelta(hours=1))
    runs.pids[gone] = f"{prefix}:cluster/gone::{prefix}:task/gone/{uuid.uuid4().hex}"
    runs.pids[kept] = f"{prefix}:cluster/kept::{prefix}:task/kept/{uuid.uuid4().hex}"
    stats = Stats()
    config = replace(CONFIG, backoff=Backoff(0.01, 0.02))
    sweeper = Sweeper(
        _NoRepairs(),
        runs,
        _OneClusterGone("gone"),
        MemoryTaskState(10),
        stats,
        config,
        Scope(ACCOUNT),
    )
    first = await sweeper.sweep()
    assert first == {gone: "skipped:undescribable", kept: "waiting"}
    assert stats.sweeps == 1

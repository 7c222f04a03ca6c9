"""Flow runs kept true to their ECS tasks, against a real Prefect server and tasks in moto.

Real flow runs in each starting state; their tasks' lifecycles go through SQS
shuffled, each STOPPED message twice (a redelivery) and once more under another
id; the runs' final states, state histories and logs are read back from Prefect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.cloudwatch import CloudWatchLogs
from ecs_observer.adapters.ecs import EcsDescriber, EcsTaskDefinitions
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.adapters.prefect.flow_runs import PrefectFlowRuns
from ecs_observer.adapters.sqs import SqsQueue
from ecs_observer.app.demo.samples import FARGATE_LIFECYCLE, lifecycle
from ecs_observer.app.demo.sandbox import start_cluster
from ecs_observer.pipeline.observer import Observer
from ecs_observer.support.backoff import Backoff

from .faults.proxy import FaultProxy, hang, reset, status
from .runs import history, logs, make_flow_run, state_message
from .servers import PrefectServer
from .world import FAST, REGION, depth, make_queue, make_table, observer, replicas, send

PULL = "CannotPullContainerError: pull image manifest has been retried 5 time(s): docker.io/acme/flow:nope: not found"
OOM = "OutOfMemoryError: Container killed due to memory usage"
PLACED = ("PROVISIONING", "PENDING", "STOPPED")
PENDING_THEN = [("PENDING", "Pending"), ("PENDING", "InfrastructurePending")]


@dataclass
class Case:
    start: str  # the run's state when its task starts
    expected: list[tuple[str, str]]  # the run's whole state history at the end
    log: str | None  # a piece of the one diagnosis log, or None for no log
    exit_code: int | None = None
    stopped: dict[str, Any] | None = None
    statuses: tuple[str, ...] = FARGATE_LIFECYCLE
    tagged: bool = True  # False: ECS has no tags for it; the environment override names the run
    run_id: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)


def cases() -> dict[str, Case]:
    crashed = [*PENDING_THEN, ("CRASHED", "Crashed")]
    return {
        "oom": Case(
            "PENDING",
            crashed,
            "ran out of memory",
            stopped={"containers": [{"name": "prefect", "exitCode": 137, "reason": OOM}]},
        ),
        "exit 1": Case("PENDING", crashed, "exited with code 1", exit_code=1),
        # A transient start failure: rescheduled (AwaitingRetry), not crashed.
        "failed to start, no containers": Case(
            "PENDING",
            [*PENDING_THEN, ("SCHEDULED", "AwaitingRetry")],
            "failed to start",
            statuses=PLACED,
            stopped={
                "stopCode": "TaskFailedToStart",
                "stoppedReason": "Timeout waiting for network interface provisioning to complete.",
                "containers": [],
            },
        ),
        "image pull": Case(
            "PENDING",
            crashed,
            "could not pull the container image",
            statuses=PLACED,
            stopped={"stopCode": "TaskFailedToStart", "stoppedReason": PULL, "containers": [{"name": "prefect"}]},
        ),
        "spot": Case(
            "PENDING",
            crashed,
            "Spot capacity",
            stopped={
                "stopCode": "SpotInterruption",
                "stoppedReason": "Your Spot Task was interrupted.",
                "containers": [{"name": "prefect"}],
            },
        ),
        "clean exit, completed": Case("COMPLETED", [("COMPLETED", "Completed")], None),
        "clean exit, running": Case("RUNNING", [("RUNNING", "Running")], None),
        "paused": Case("PAUSED", [("PAUSED", "Paused")], "exited with code 1", exit_code=1),
        "cancelling": Case(
            "CANCELLING",
            [("CANCELLING", "Cancelling"), ("CANCELLED", "Cancelled")],
            "stopped through the ECS API",
            stopped={
                "stopCode": "UserInitiated",
                "stoppedReason": "Task stopped by user",
                "containers": [{"name": "prefect", "exitCode": 143}],
            },
        ),
        "tags gone": Case("PENDING", crashed, "exited with code 2", exit_code=2, tagged=False),
    }


async def start(aws: AwsClients, prefect: PrefectServer, all_cases: dict[str, Case]) -> list[str]:
    """Flow runs and their tasks; answers every message body, shuffled, STOPPED ones duplicated."""
    ecs = await aws.ecs(REGION)
    cluster = await start_cluster(ecs, "runs")
    begin = datetime.now(UTC) - timedelta(minutes=5)
    bodies: list[str] = []
    for n, case in enumerate(all_cases.values()):
        case.run_id = make_flow_run(prefect, case.start)
        tags: list[Any] = [{"key": "prefect.io/flow-run-id", "value": case.run_id}] if case.tagged else []
        arn = await cluster.run_task(ecs, tags)
        case.events = lifecycle(
            arn,
            begin + timedelta(seconds=n),
            statuses=case.statuses,
            cluster_arn=cluster.arn,
            task_definition_arn=cluster.task_definition_arn,
            flow_run_id=case.run_id,
            exit_code=case.exit_code or 0,
            stopped=case.stopped,
        )
        stopped = case.events[-1]
        bodies += [json.dumps(e) for e in case.events]
        bodies += [json.dumps(stopped), json.dumps({**stopped, "id": str(uuid.uuid4())})]
    random.shuffle(bodies)
    return bodies


async def test_runs_follow_their_tasks_whatever_the_order_and_duplicates(
    aws: AwsClients, prefect: PrefectServer, caplog: pytest.LogCaptureFixture
) -> None:
    all_cases = cases()
    bodies = await start(aws, prefect, all_cases)
    # A task whose flow run Prefect does not know: its messages are deleted, with a debug line.
    missing = str(uuid.uuid4())
    ecs = await aws.ecs(REGION)
    cluster = await start_cluster(ecs, "runs")
    arn = await cluster.run_task(ecs, [{"key": "prefect.io/flow-run-id", "value": missing}])
    bodies += [json.dumps(e) for e in lifecycle(arn, datetime.now(UTC), exit_code=1)]
    queue_url, _ = await make_queue(aws)
    await send(aws, queue_url, bodies)
    client = PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0))
    obs = await observer(aws, queue_url, PrefectApiSink(client), runs=PrefectFlowRuns(client))
    with caplog.at_level(logging.DEBUG, logger="ecs_observer"):
        await asyncio.wait_for(obs.run(until_idle=3), timeout=120)
    await client.aclose()

    for name, case in all_cases.items():
        assert history(prefect, case.run_id) == case.expected, name
        written = [entry["message"] for entry in logs(prefect, case.run_id)]
        if case.log is None:
            assert written == [], name
        else:
            assert len(written) == 1, (name, written)
            assert case.log in written[0], (name, written)
            assert "Resolution:" in written[0]
    crash = state_message(prefect, all_cases["oom"].run_id)
    assert crash.startswith("ECS task ")
    assert "ran out of memory" in crash
    assert "exit code 137" in crash
    assert "stopped (UserInitiated)" in state_message(prefect, all_cases["cancelling"].run_id)
    assert any(f"flow run {missing}" in r.getMessage() and "does not exist" in r.getMessage() for r in caplog.records)
    assert await depth(aws, queue_url) == (0, 0)
    assert obs.stats.rejected == 0


async def test_stopped_event_says_how_the_task_stopped(aws: AwsClients, prefect: PrefectServer) -> None:
    all_cases = {"oom": cases()["oom"]}
    bodies = await start(aws, prefect, all_cases)
    queue_url, _ = await make_queue(aws)
    await send(aws, queue_url, bodies)
    client = PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0))
    obs = await observer(aws, queue_url, PrefectApiSink(client), replace(FAST, flow_run_states=False))
    await asyncio.wait_for(obs.run(until_idle=2), timeout=60)
    await client.aclose()
    stopped = all_cases["oom"].events[-1]
    resource = f"prefect.ecs.task.{stopped['detail']['taskArn'].rsplit('/', 1)[1]}"
    # One STOPPED event: its copy under another id is the same change (whichever came first is kept).
    events = prefect.wait_for_events([resource], count=len(FARGATE_LIFECYCLE))
    (stopped_event,) = [e for e in events if e["event"] == "prefect.ecs.task.stopped"]
    labels = stopped_event["resource"]
    assert labels["ecs.diagnosis"] == "out-of-memory"
    assert labels["ecs.exitCode"] == "137"
    assert labels["ecs.stopCode"] == "EssentialContainerExited"
    assert labels["ecs.stoppedReason"] == "Essential container in task exited"
    # With flow-run states off, the run is left alone.
    assert history(prefect, all_cases["oom"].run_id) == [("PENDING", "Pending")]


async def test_prefect_failing_during_proposals_and_logs_holds_then_does_each_once(
    aws: AwsClients, prefect: PrefectServer
) -> None:
    all_cases = {"exit 1": cases()["exit 1"]}
    bodies = await start(aws, prefect, all_cases)
    run_id = all_cases["exit 1"].run_id
    queue_url, dlq_url = await make_queue(aws, max_receive=2, visibility=5)
    await send(aws, queue_url, bodies)
    proxy = await FaultProxy(f"http://127.0.0.1:{prefect.port}").start()
    set_state = f"POST /api/flow_runs/{run_id}/set_state"
    proxy.inject(set_state, status(503), reset(), status(500), hang(3.0), status(502))
    proxy.inject("POST /api/flow_runs/filter", status(503), reset())
    proxy.inject("POST /api/logs/", status(503), status(429, **{"Retry-After": "1"}), reset())
    client = PrefectClient(f"{proxy.url}/api", backoff=Backoff(0.2, 1.0), timeout=1.0)
    obs = await observer(
        aws, queue_url, PrefectApiSink(client), replace(FAST, visibility_timeout=5), runs=PrefectFlowRuns(client)
    )
    try:
        await asyncio.wait_for(obs.run(until_idle=3), timeout=120)
    finally:
        await client.aclose()
        await proxy.stop()
    assert history(prefect, run_id) == all_cases["exit 1"].expected
    assert len(logs(prefect, run_id)) == 1
    # Every fault was met and outlived: the proposals went through after them, and nothing was dropped.
    assert proxy.outcomes(set_state)[:5] == ["status", "reset", "status", "hang", "status"]
    assert proxy.outcomes(set_state)[5:].count("pass") == 2  # InfrastructurePending, then Crashed
    assert "pass" in proxy.outcomes("POST /api/logs/")
    assert await depth(aws, queue_url) == (0, 0)
    assert await depth(aws, dlq_url) == (0, 0)


async def test_two_replicas_write_one_diagnosis_per_task(aws: AwsClients, prefect: PrefectServer) -> None:
    all_cases = {name: case for name, case in cases().items() if name in ("oom", "exit 1", "spot", "image pull")}
    bodies = await start(aws, prefect, all_cases)
    queue_url, _ = await make_queue(aws)
    await send(aws, queue_url, bodies)
    table = await make_table(aws)
    async with replicas(2, queue_url, table, prefect.api_url, flow_runs=True) as observers:
        await asyncio.wait_for(asyncio.gather(*(o.run(until_idle=3) for o in observers)), timeout=120)
    for name, case in all_cases.items():
        assert history(prefect, case.run_id) == case.expected, name
        assert len(logs(prefect, case.run_id)) == 1, name
    assert sum(o.stats.run_logs for o in observers) == len(all_cases)
    assert await depth(aws, queue_url) == (0, 0)


async def test_a_run_that_never_ran_gets_its_containers_last_lines_and_the_definition_is_deregistered(
    aws: AwsClients, prefect: PrefectServer
) -> None:
    ecs, logs_client = await aws.ecs(REGION), await aws.logs(REGION)
    cluster = await start_cluster(ecs, "crash-logs")
    # Registered as the Prefect ECS worker does it: container `prefect`, awslogs to group `prefect`.
    definition = cluster.task_definition_arn
    if "prefect" not in [g["logGroupName"] for g in (await logs_client.describe_log_groups())["logGroups"]]:
        await logs_client.create_log_group(logGroupName="prefect")
    begin = datetime.now(UTC) - timedelta(minutes=4)
    bodies: list[str] = []
    runs: dict[str, str] = {}
    for name, start_state, stream in (
        ("never ran", "PENDING", True),
        ("ran", "RUNNING", True),
        ("no stream", "PENDING", False),
    ):
        runs[name] = run_id = make_flow_run(prefect, start_state)
        tags: list[Any] = [
            {"key": "prefect.io/flow-run-id", "value": run_id},
            {"key": "prefect.io/degregister-task-definition", "value": "true"},
        ]
        arn = (await ecs.run_task(cluster=cluster.name, taskDefinition=definition, launchType="FARGATE", tags=tags))[
            "tasks"
        ][0]["taskArn"]
        if stream:
            stream_name = f"prefect/prefect/{arn.rsplit('/', 1)[1]}"
            await logs_client.create_log_stream(logGroupName="prefect", logStreamName=stream_name)
            lines: list[Any] = [
                {"timestamp": int((begin + timedelta(seconds=i)).timestamp() * 1000), "message": f"{name} line {i}"}
                for i in range(150)
            ]
            await logs_client.put_log_events(logGroupName="prefect", logStreamName=stream_name, logEvents=lines)
        events = lifecycle(
            arn, begin + timedelta(seconds=160), cluster_arn=cluster.arn, task_definition_arn=definition, exit_code=1
        )
        bodies += [json.dumps(e) for e in events] + [json.dumps(events[-1])]
    random.shuffle(bodies)
    queue_url, _ = await make_queue(aws)
    await send(aws, queue_url, bodies)
    client = PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0))
    definitions = EcsTaskDefinitions(aws)
    obs = Observer(
        SqsQueue(await aws.sqs(REGION), queue_url),
        EcsDescriber(aws),
        MemoryTaskState(1000),
        PrefectApiSink(client),
        FAST,
        runs=PrefectFlowRuns(client),
        definitions=definitions,
        container_logs=CloudWatchLogs(aws),
    )
    await asyncio.wait_for(obs.run(until_idle=3), timeout=120)
    await client.aclose()

    never_ran = [entry["message"] for entry in logs(prefect, runs["never ran"])]
    crash_lines = [m for m in never_ran if m.startswith("never ran line")]
    assert crash_lines == [f"never ran line {i}" for i in range(50, 150)]  # the last 100, in order
    assert sum("The last 100 line(s)" in m for m in never_ran) == 1
    assert sum("Resolution:" in m for m in never_ran) == 1
    # A run that reached Running sent its own logs; a missing stream is no error.
    assert [m for m in (e["message"] for e in logs(prefect, runs["ran"])) if " line " in m] == []
    assert len(logs(prefect, runs["no stream"])) == 1  # the diagnosis alone
    assert history(prefect, runs["ran"])[-1] == ("CRASHED", "Crashed")
    # Described once for the three tasks; deregistered (once per task; already inactive counts as done).
    assert definitions.described == 1
    status = (await ecs.describe_task_definition(taskDefinition=definition))["taskDefinition"]["status"]
    assert status == "INACTIVE"
    assert obs.stats.deregistered == 3
    assert obs.stats.rejected == 0
    assert await depth(aws, queue_url) == (0, 0)

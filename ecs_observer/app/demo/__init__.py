"""`ecs-observer demo`: the real observer on an embedded moto, no AWS account needed.

Starts moto's server in-process on a free port, deploys the events template
(queue, dead-letter queue, EventBridge rule), starts tagged and untagged tasks,
puts their whole lifecycles through EventBridge in random order (one flow run
runs out of memory before it ever runs, one fails to pull its image for a
network timeout and is rescheduled, and one task's STOPPED event is lost), and
runs the observer until the queue is empty. Then the observer restarts and
sweeps, its clock moved past the grace, and finds the task whose event was lost.
It prints, per task, the chain of states as Prefect will link them, the
flow-run states it sets, and why a task stopped (`--json`: the raw events
instead). With PREFECT_API_URL the events and states go to that Prefect (the
demo's flow runs are created there first); without, the flow runs live in
memory.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import aioboto3

from ...adapters.aws import AwsClients
from ...adapters.cloudwatch import CloudWatchLogs
from ...adapters.ecs import EcsDescriber, EcsStopper, EcsTaskDefinitions
from ...adapters.memory import MemoryTaskState
from ...adapters.prefect.client import PrefectClient, Reachable
from ...adapters.prefect.events import PrefectApiSink
from ...adapters.prefect.flow_runs import PrefectFlowRuns
from ...adapters.sqs import SqsQueue
from ...core.sweep import Scope
from ...pipeline.observer import Observer, ObserverConfig
from ...pipeline.sweep import Sweeper
from ...ports import EventSink, FlowRuns
from ...support.redact import redact
from ...support.stats import Stats
from ..service import prefect_client
from ..settings import Settings
from .runs import MemoryFlowRuns, create_runs, read_back
from .samples import FARGATE_LIFECYCLE, lifecycle
from .sandbox import MOTO_ACCOUNT, deploy_events_stack, free_port, hold_tasks, put_events, start_cluster
from .timeline import RecordingSink, timeline, write

if TYPE_CHECKING:
    from types_aiobotocore_ecs.type_defs import TagTypeDef

__all__ = ["run_demo"]

REGION = "us-east-1"
OOM = {
    "containers": [
        {"name": "prefect", "exitCode": 137, "reason": "OutOfMemoryError: Container killed due to memory usage"}
    ]
}
CRASH_OUTPUT = ["Downloading flow code", "Loading 2.1 GB of input into a DataFrame", "Killed"]
# A transient start failure (as ECS words it): the run is rescheduled, not crashed.
PULL_TIMEOUT = {
    "stopCode": "TaskFailedToStart",
    "stoppedReason": "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref "
    "docker.io/prefecthq/prefect:3-latest: failed to do request: Head "
    '"https://registry-1.docker.io/v2/prefecthq/prefect/manifests/3-latest": dial tcp 54.236.113.205:443: i/o timeout',
    "containers": [{"name": "prefect"}],
}
# The flow runs' parts: what becomes of each task in the demo.
OOM_RUN, PULL_RUN, LOST_RUN = 0, 1, 2


async def run_demo(settings: Settings, as_json: bool = False, tagged: int = 4, untagged: int = 2) -> int:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("ecs-observer demo needs moto: pip install 'ecs-observer[demo]'", file=sys.stderr)
        return 2
    _quiet_moto()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    names = [f"demo-run-{n}" for n in range(tagged)]
    recorder = RecordingSink(echo=sys.stdout if as_json else None)
    client = prefect_client(settings, settings.prefect_api_url) if settings.prefect_api_url else None
    try:
        if client is not None:
            answer = await client.probe()
            if not isinstance(answer, Reachable):  # the demo is over in seconds: nothing to wait for
                print(f"ecs-observer: {answer.reason}", file=sys.stderr)
                return 2
            run_ids = await create_runs(client, names)
            runs: FlowRuns = PrefectFlowRuns(client)
            sink: EventSink = _Both(PrefectApiSink(client), recorder)
        else:
            run_ids = [uuid.uuid4() for _ in names]
            runs, sink = MemoryFlowRuns(run_ids), recorder
        # moto accepts any credentials; these are placeholders, not secrets.
        session = aioboto3.Session(aws_access_key_id="demo", aws_secret_access_key="demo", region_name=REGION)  # noqa: S106
        async with AwsClients(session, endpoint_url=endpoint) as clients:
            await hold_tasks(endpoint)
            queue, pids = await _feed(session, endpoint, clients, run_ids, untagged)
            await _started(runs, client, pids)
            config = ObserverConfig(receivers=2, wait_time_seconds=1, visibility_timeout=30, reorder_window=2.0)
            store = MemoryTaskState(1000)

            def observer() -> Observer:
                return Observer(
                    queue,
                    EcsDescriber(clients),
                    store,
                    sink,
                    config,
                    stats,
                    runs=runs,
                    definitions=EcsTaskDefinitions(clients),
                    container_logs=CloudWatchLogs(clients),
                )

            stats = Stats()
            await observer().run(until_idle=2)
            # The observer restarts, and its first sweep finds what no event said (the grace passed meanwhile).
            heard = set(recorder.events)
            await _sweep(observer(), runs, clients, store, stats, config)
            swept = set(recorder.events) - heard
        held = await read_back(client, run_ids) if client is not None else runs
        assert isinstance(held, MemoryFlowRuns)
        if not as_json:
            write(timeline(list(recorder.events.values()), held.histories, held.messages, held.logs, swept))
    finally:
        server.stop()
        if client is not None:
            await client.aclose()
    s = stats
    target = redact(settings.prefect_api_url) if settings.prefect_api_url else "memory"
    print(
        f"demo: received {s.received}, forwarded {s.forwarded}, filtered {s.filtered} (untagged tasks), "
        f"ignored {s.ignored}, rejected {s.rejected}; DescribeTasks calls {s.describe_calls}; "
        f"flow-run states {dict(s.state_proposals)} and {s.run_logs} log post(s) (flow runs in {target}); "
        f"sweeps {s.sweeps}: {dict(s.reconciled)}, {len(swept)} event(s) forwarded by a sweep",
        file=sys.stderr,
    )
    final = {part: held.histories[run_ids[part]][-1] for part in (OOM_RUN, PULL_RUN, LOST_RUN)}
    as_expected = (
        final[OOM_RUN].type == "CRASHED"
        and final[PULL_RUN].name == "AwaitingRetry"
        and final[LOST_RUN].type == "CRASHED"
        and s.reschedules == 1
    )
    # At least: SQS may deliver a message twice, and Prefect keeps one copy of each id.
    expected = (tagged - 2) * len(FARGATE_LIFECYCLE) + 2 * 3  # two tasks stop once placed
    return 0 if s.rejected == 0 and s.forwarded + len(swept) >= expected and as_expected else 1


async def _started(runs: FlowRuns, client: PrefectClient | None, pids: dict[UUID, str]) -> None:
    """What the ECS worker records of each run once its task is started: the run's `infrastructure_pid`."""
    for run_id, pid in pids.items():
        if client is not None:
            await client.request("PATCH", f"/flow_runs/{run_id}", json={"infrastructure_pid": pid})
        elif isinstance(runs, MemoryFlowRuns):
            runs.pids[run_id] = pid


async def _sweep(
    observer: Observer,
    runs: FlowRuns,
    clients: AwsClients,
    store: MemoryTaskState,
    stats: Stats,
    config: ObserverConfig,
) -> None:
    """Two sweeps, now and 6 minutes on: moto gives a stopped task no `stoppedAt`, so the first sweep dates it
    and the second, past the grace, acts on it."""
    offset = [timedelta()]
    sweeper = Sweeper(
        observer,
        runs,
        EcsDescriber(clients),
        store,
        stats,
        config,
        Scope(MOTO_ACCOUNT),
        EcsStopper(clients),
        clock=lambda: datetime.now(UTC) + offset[0],
    )
    running = asyncio.create_task(observer.run())
    try:
        await sweeper.sweep()
        offset[0] += timedelta(minutes=6)
        await sweeper.sweep()
    finally:
        observer.stop("the demo's sweeps are done")
        await running


def _quiet_moto() -> None:
    """The demo speaks first: moto's notes on the template resources it does not emulate (queue policy,
    alarms) and its server's request lines are moto's business, not the reader's."""
    for name in ("moto", "werkzeug"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"Tried to parse .* not supported by moto", category=UserWarning)


class _Both:
    """Forwards to Prefect and keeps a copy for the timeline."""

    def __init__(self, sink: EventSink, recorder: RecordingSink) -> None:
        self._sink = sink
        self._recorder = recorder

    async def send(self, events: Any) -> dict[UUID, str]:
        refused = await self._sink.send(events)
        await self._recorder.send([e for e in events if e.id not in refused])
        return refused

    async def aclose(self) -> None:
        await self._sink.aclose()


def _tags(n: int, run_id: UUID) -> list[TagTypeDef]:
    return [
        {"key": "prefect.io/flow-run-id", "value": str(run_id)},
        {"key": "prefect.io/flow-run-name", "value": f"demo-run-{n}"},
        {"key": "prefect.io/flow-id", "value": str(uuid.uuid4())},
        {"key": "prefect.io/flow-name", "value": "etl"},
        {"key": "prefect.io/deployment-id", "value": str(uuid.uuid4())},
        {"key": "prefect.io/deployment-name", "value": "etl/nightly"},
        {"key": "prefect.io/work-pool-id", "value": str(uuid.uuid4())},
        {"key": "prefect.io/work-pool-name", "value": "ecs-pool"},
        {"key": "prefect.io/worker-name", "value": "ECSWorker demo"},
    ]


async def _feed(
    session: aioboto3.Session, endpoint: str, clients: AwsClients, run_ids: list[UUID], untagged: int
) -> tuple[SqsQueue, dict[UUID, str]]:
    """The events stack from infra/events.yaml, tasks, and their lifecycles put through EventBridge; each
    flow run's `infrastructure_pid`, as the worker sets it. The first flow run's task runs out of memory while
    placed (its container's output is in CloudWatch Logs); the second's cannot pull its image (a network
    timeout); the third's task stops, but its STOPPED event never reaches the queue."""
    tagged = len(run_ids)
    async with (
        session.client("cloudformation", endpoint_url=endpoint) as cfn,
        session.client("events", endpoint_url=endpoint) as bus,
    ):
        outputs = await deploy_events_stack(cfn, "ecs-observer-demo", queue_name="ecs-observer-demo")
        ecs = await clients.ecs(REGION)
        cluster = await start_cluster(ecs, "prefect-demo")
        envelopes: list[dict[str, Any]] = []
        pids: dict[UUID, str] = {}
        start = datetime.now(UTC) - timedelta(minutes=2)
        for n in range(tagged + untagged):
            other: list[TagTypeDef] = [{"key": "team", "value": "not-prefect"}]
            tags = _tags(n, run_ids[n]) if n < tagged else other
            task_arn = await cluster.run_task(ecs, tags)
            if n < tagged:
                pids[run_ids[n]] = f"{cluster.arn}::{task_arn}"
            placed_only = n in (OOM_RUN, PULL_RUN)
            life = lifecycle(
                task_arn,
                start + timedelta(seconds=n),
                statuses=("PROVISIONING", "PENDING", "STOPPED") if placed_only else FARGATE_LIFECYCLE,
                cluster_arn=cluster.arn,
                task_definition_arn=cluster.task_definition_arn,
                stopped={OOM_RUN: OOM, PULL_RUN: PULL_TIMEOUT}.get(n),
            )
            if n == LOST_RUN:
                life = life[:-1]  # lost: a rule that was off for a while, a message in the dead-letter queue
                await ecs.stop_task(cluster=cluster.name, task=task_arn, reason="Essential container in task exited")
            envelopes += life
            if n == OOM_RUN:
                await _container_output(clients, task_arn, start)
        random.shuffle(envelopes)  # SQS keeps no order either
        # Not an ECS task state change: the template's rule does not route it to the queue.
        envelopes.append(
            {
                "source": "aws.ec2",
                "detail-type": "EC2 Instance State-change Notification",
                "time": start.isoformat(),
                "detail": {"state": "running"},
            }
        )
        await put_events(bus, envelopes)
    return SqsQueue(await clients.sqs(REGION), outputs["QueueUrl"]), pids


async def _container_output(clients: AwsClients, task_arn: str, start: datetime) -> None:
    """What the crashing task's container printed, where awslogs would have put it."""
    logs = await clients.logs(REGION)
    stream = f"prefect/prefect/{task_arn.rsplit('/', 1)[1]}"
    groups = (await logs.describe_log_groups(logGroupNamePrefix="prefect"))["logGroups"]
    if not any(group.get("logGroupName") == "prefect" for group in groups):
        await logs.create_log_group(logGroupName="prefect")
    await logs.create_log_stream(logGroupName="prefect", logStreamName=stream)
    events: list[Any] = [
        {"timestamp": int((start + timedelta(seconds=i + 1)).timestamp() * 1000), "message": line}
        for i, line in enumerate(CRASH_OUTPUT)
    ]
    await logs.put_log_events(logGroupName="prefect", logStreamName=stream, logEvents=events)

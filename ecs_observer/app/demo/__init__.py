"""`ecs-observer demo`: the real observer on an embedded moto, no AWS account needed.

Starts moto's server in-process on a free port, deploys the events template
(queue, dead-letter queue, EventBridge rule), starts tagged and untagged tasks,
puts their whole lifecycles through EventBridge (one flow run crashes), and runs
the observer until the queue is empty, forwarding to PREFECT_API_URL when set,
else printing each event.
"""

from __future__ import annotations

import logging
import random
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aioboto3

from ...adapters.aws import AwsClients
from ...adapters.console import ConsoleSink
from ...adapters.ecs import EcsDescriber
from ...adapters.memory import MemoryTaskState
from ...adapters.sqs import SqsQueue
from ...pipeline.observer import Observer, ObserverConfig
from ...ports import EventSink
from ..service import prefect_sink
from ..settings import Settings
from .samples import FARGATE_LIFECYCLE, lifecycle
from .sandbox import deploy_events_stack, free_port, put_events, start_cluster

if TYPE_CHECKING:
    from types_aiobotocore_ecs.type_defs import TagTypeDef

__all__ = ["run_demo"]

REGION = "us-east-1"


async def run_demo(settings: Settings, tagged: int = 3, untagged: int = 2) -> int:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("ecs-observer demo needs moto: pip install 'ecs-observer[demo]'", file=sys.stderr)
        return 2
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        # moto accepts any credentials; these are placeholders, not secrets.
        session = aioboto3.Session(aws_access_key_id="demo", aws_secret_access_key="demo", region_name=REGION)  # noqa: S106
        async with AwsClients(session, endpoint_url=endpoint) as clients:
            queue = await _feed(session, endpoint, clients, tagged, untagged)
            sink: EventSink = (
                prefect_sink(settings, settings.prefect_api_url) if settings.prefect_api_url else ConsoleSink()
            )
            config = ObserverConfig(receivers=2, wait_time_seconds=1, visibility_timeout=30, reorder_window=2.0)
            observer = Observer(queue, EcsDescriber(clients), MemoryTaskState(1000), sink, config)
            try:
                await observer.run(until_idle=2)
            finally:
                await sink.aclose()
    finally:
        server.stop()
    s = observer.stats
    target = settings.prefect_api_url or "stdout"
    print(
        f"demo: received {s.received}, forwarded {s.forwarded} (to {target}), filtered {s.filtered} "
        f"(untagged tasks), ignored {s.ignored}, rejected {s.rejected}; DescribeTasks calls {s.describe_calls}",
        file=sys.stderr,
    )
    # At least: SQS may deliver a message twice, and Prefect keeps one copy of each id.
    return 0 if s.rejected == 0 and s.forwarded >= tagged * len(FARGATE_LIFECYCLE) else 1


def _tags(n: int) -> list[TagTypeDef]:
    return [
        {"key": "prefect.io/flow-run-id", "value": str(uuid.uuid4())},
        {"key": "prefect.io/flow-run-name", "value": f"demo-run-{n}"},
        {"key": "prefect.io/flow-id", "value": str(uuid.uuid4())},
        {"key": "prefect.io/flow-name", "value": "etl"},
        {"key": "prefect.io/deployment-id", "value": str(uuid.uuid4())},
        {"key": "prefect.io/deployment-name", "value": "etl/nightly"},
        {"key": "prefect.io/work-pool-id", "value": str(uuid.uuid4())},
        {"key": "prefect.io/work-pool-name", "value": "ecs-pool"},
        {"key": "prefect.io/worker-name", "value": "ECSWorker demo"},
    ]


async def _feed(session: aioboto3.Session, endpoint: str, clients: AwsClients, tagged: int, untagged: int) -> SqsQueue:
    """The events stack from infra/events.yaml, tasks, and their lifecycles put through EventBridge."""
    async with (
        session.client("cloudformation", endpoint_url=endpoint) as cfn,
        session.client("events", endpoint_url=endpoint) as bus,
    ):
        outputs = await deploy_events_stack(cfn, "ecs-observer-demo", queue_name="ecs-observer-demo")
        ecs = await clients.ecs(REGION)
        cluster = await start_cluster(ecs, "prefect-demo")
        envelopes: list[dict[str, Any]] = []
        start = datetime.now(UTC) - timedelta(minutes=2)
        for n in range(tagged + untagged):
            other: list[TagTypeDef] = [{"key": "team", "value": "not-prefect"}]
            tags = _tags(n) if n < tagged else other
            task_arn = await cluster.run_task(ecs, tags)
            envelopes += lifecycle(
                task_arn,
                start + timedelta(seconds=n),
                cluster_arn=cluster.arn,
                task_definition_arn=cluster.task_definition_arn,
                exit_code=1 if n == 0 else 0,
            )
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
    return SqsQueue(await clients.sqs(REGION), outputs["QueueUrl"])

"""`ecs-observer demo`: the real observer on an embedded moto, no AWS account needed.

Starts moto's server in-process on a free port, creates a queue, a cluster, a
task definition and tagged and untagged tasks, feeds their whole lifecycles as
EventBridge events (one flow run crashes), and runs the observer until the
queue is empty, forwarding to PREFECT_API_URL when set, else printing events.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aioboto3

from ._aws import AwsClients, EcsDescriber, SqsQueue
from ._observer import Observer, ObserverConfig
from ._prefect_api import ConsoleSink, EventSink
from ._samples import lifecycle
from ._sequencer import MemoryChainStore
from ._service import prefect_sink
from ._settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_ecs.type_defs import TagTypeDef

__all__ = ["run_demo"]

REGION = "us-east-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_demo(settings: Settings, tagged: int = 3, untagged: int = 2) -> int:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("ecs-observer demo needs moto: pip install 'ecs-observer[demo]'", file=sys.stderr)
        return 2
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        # moto accepts any credentials; these are placeholders, not secrets.
        session = aioboto3.Session(aws_access_key_id="demo", aws_secret_access_key="demo", region_name=REGION)  # noqa: S106
        async with AwsClients(session, endpoint_url=f"http://127.0.0.1:{port}") as clients:
            queue = await _feed(clients, tagged, untagged)
            sink: EventSink = (
                prefect_sink(settings, settings.prefect_api_url) if settings.prefect_api_url else ConsoleSink()
            )
            config = ObserverConfig(receivers=2, wait_time_seconds=1, visibility_timeout=30, reorder_window=2.0)
            observer = Observer(queue, EcsDescriber(clients), MemoryChainStore(1000), sink, config)
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
    return 0 if s.rejected == 0 and s.forwarded == tagged * 8 else 1


async def _feed(clients: AwsClients, tagged: int, untagged: int) -> SqsQueue:
    sqs = await clients.sqs(REGION)
    ecs = await clients.ecs(REGION)
    queue_url = (await sqs.create_queue(QueueName="ecs-observer-demo"))["QueueUrl"]
    cluster_arn = (await ecs.create_cluster(clusterName="prefect-demo"))["cluster"]["clusterArn"]
    task_def = await ecs.register_task_definition(
        family="prefect-flow",
        containerDefinitions=[{"name": "prefect", "image": "prefecthq/prefect:3-latest", "memory": 512}],
    )
    task_def_arn = task_def["taskDefinition"]["taskDefinitionArn"]
    events: list[dict[str, Any]] = []
    start = datetime.now(UTC) - timedelta(minutes=2)
    for n in range(tagged + untagged):
        run_id = str(uuid.uuid4())
        tags: list[TagTypeDef] = (
            [
                {"key": "prefect.io/flow-run-id", "value": run_id},
                {"key": "prefect.io/flow-run-name", "value": f"demo-run-{n}"},
                {"key": "prefect.io/flow-id", "value": str(uuid.uuid4())},
                {"key": "prefect.io/flow-name", "value": "etl"},
                {"key": "prefect.io/deployment-id", "value": str(uuid.uuid4())},
                {"key": "prefect.io/deployment-name", "value": "etl/nightly"},
                {"key": "prefect.io/work-pool-id", "value": str(uuid.uuid4())},
                {"key": "prefect.io/work-pool-name", "value": "ecs-pool"},
                {"key": "prefect.io/worker-name", "value": "ECSWorker demo"},
            ]
            if n < tagged
            else [{"key": "team", "value": "not-prefect"}]
        )
        task = await ecs.run_task(cluster="prefect-demo", taskDefinition=task_def_arn, launchType="FARGATE", tags=tags)
        task_arn = task["tasks"][0]["taskArn"]
        events += lifecycle(
            task_arn,
            start + timedelta(seconds=n),
            cluster_arn=cluster_arn,
            task_definition_arn=task_def_arn,
            flow_run_id=run_id if n < tagged else None,
            exit_code=1 if n == 0 else 0,
        )
    events.append(
        {
            "id": str(uuid.uuid4()),
            "source": "aws.ec2",
            "detail-type": "EC2 Instance State-change Notification",
            "time": start.isoformat(),
            "detail": {},
        }
    )
    random.shuffle(events)  # SQS keeps no order either
    for offset in range(0, len(events), 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps(e)} for i, e in enumerate(events[offset : offset + 10])]
        await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
    return SqsQueue(sqs, queue_url)

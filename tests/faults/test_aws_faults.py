"""Faults of SQS and ECS: throttling, 500s and connection resets on every call the observer makes."""

from __future__ import annotations

from dataclasses import replace

import aioboto3

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.ecs import EcsDescriber
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.adapters.sqs import SqsQueue
from ecs_observer.pipeline.observer import Observer
from ecs_observer.support.backoff import Backoff

from ..servers import PrefectServer
from ..world import FAST, REGION
from .proxy import FaultProxy, aws_error, hang, reset
from .scenario import delivered, gaps, run_until, scenario

# Five faults per call: botocore retries 3 times itself (4 attempts), so the observer's own retry is needed too.
_SQS_FAULTS = [
    aws_error(400, "RequestThrottled"),
    aws_error(500, "InternalError"),
    reset(),
    aws_error(400, "ThrottlingException"),
    aws_error(500, "InternalError"),
]
OPERATIONS = {
    "ReceiveMessage": _SQS_FAULTS,
    "DeleteMessageBatch": _SQS_FAULTS,
    "ChangeMessageVisibilityBatch": _SQS_FAULTS,
    "DescribeTasks": [aws_error(400, "ThrottlingException")] * 4 + [aws_error(500, "ServerException"), reset()],
}


async def test_sqs_and_ecs_faults_lose_nothing_and_back_off(
    aws: AwsClients, moto_url: str, prefect: PrefectServer
) -> None:
    # Margins like a deployment's (there 60 s and 10 receives): a visibility change that fails through all of
    # botocore's attempts must not let a held message expire and count a receive toward the dead-letter queue.
    sc = await scenario(aws, visibility=10, max_receive=5)
    aws_proxy = await FaultProxy(moto_url).start()
    prefect_proxy = await FaultProxy(f"http://127.0.0.1:{prefect.port}").start()
    for operation, faults in OPERATIONS.items():
        aws_proxy.inject(operation, *faults)
    # The first POST hangs, so messages are held long enough to need their visibility extended, in several
    # sweeps: enough calls to meet every injected ChangeMessageVisibilityBatch fault while they are held.
    prefect_proxy.inject("POST /api/events", hang(12.0))
    sink = PrefectApiSink(PrefectClient(f"{prefect_proxy.url}/api", timeout=15, backoff=Backoff(0.1, 1.0)))
    try:
        async with AwsClients(aioboto3.Session(region_name=REGION), endpoint_url=aws_proxy.url) as faulty:
            obs = Observer(
                SqsQueue(await faulty.sqs(REGION), sc.queue_url),
                EcsDescriber(faulty),
                MemoryTaskState(1000),
                sink,
                replace(FAST, visibility_timeout=10, backoff=Backoff(0.1, 1.0)),
            )
            await run_until(
                obs,
                lambda: (
                    obs.stats.deleted >= sc.expected + 8
                    and not aws_proxy.script["DeleteMessageBatch"]
                    and not aws_proxy.script["ChangeMessageVisibilityBatch"]
                ),
            )
    finally:
        await sink.aclose()
        await aws_proxy.stop()
        await prefect_proxy.stop()

    await delivered(aws, prefect, sc)
    for operation in OPERATIONS:
        assert aws_proxy.script[operation] == [], f"{operation}: not every injected fault was met"
        outcomes = aws_proxy.outcomes(operation)
        assert "pass" in outcomes, f"{operation} never succeeded after its faults"
    # Backoff, not a tight loop: DescribeTasks's six failures are spread out before it succeeds.
    describe = aws_proxy.times("DescribeTasks")
    first_pass = aws_proxy.outcomes("DescribeTasks").index("pass")
    assert describe[first_pass] - describe[0] >= 0.5
    assert min(gaps(describe[: first_pass + 1])) > 0.005
    # Six DescribeTasks faults outlast botocore's four attempts: the observer's own retry took over.
    assert obs.stats.retries["describe_tasks"] >= 1

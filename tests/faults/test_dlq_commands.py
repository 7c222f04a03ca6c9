"""`ecs-observer dlq show` and `dlq redrive`, against moto with a real redrive policy."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from ecs_observer.adapters.aws import AwsClients

from ..world import REGION, depth, make_queue, send, start_tasks, until
from .proxy import Fault, FaultProxy

EXE = str(Path(sys.executable).with_name("ecs-observer"))


async def cli(*args: str, queue_url: str, endpoint: str | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECS_OBSERVER_")}
    env["ECS_OBSERVER_QUEUE_URL"] = queue_url
    if endpoint is not None:
        env["AWS_ENDPOINT_URL_SQS"] = endpoint
    process = await asyncio.create_subprocess_exec(
        EXE, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def dead_letters(aws: AwsClients, queue_url: str, bodies: list[str], dlq_url: str | None = None) -> None:
    """Send, then receive each body past maxReceiveCount (1) so that SQS moves it to the dead-letter queue;
    with `dlq_url`, wait until all of them are there."""
    await send(aws, queue_url, bodies)
    sqs = await aws.sqs(REGION)
    for _ in range(6):
        await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    if dlq_url is not None:

        async def all_there() -> bool:
            return (await depth(aws, dlq_url))[0] >= len(bodies)

        await until(all_there, within=10)


async def test_show_lists_each_dead_letter_with_the_reason_and_leaves_it(aws: AwsClients) -> None:
    queue_url, dlq_url = await make_queue(aws, max_receive=1)
    (task,) = await start_tasks(aws, 1)
    await dead_letters(
        aws,
        queue_url,
        ["not json", json.dumps({**task.events[0], "id": "nope"}), json.dumps(task.events[0])],
        dlq_url,
    )
    assert (await depth(aws, dlq_url))[0] == 3

    code, out, _ = await cli("dlq", "show", queue_url=queue_url)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[-1] == "3 message(s) in the dead-letter queue"
    text = "\n".join(lines)
    assert "body is not JSON" in text
    assert "id: value error, not a UUID" in text or "id: " in text
    assert "decodes as a task state change" in text
    assert all(" receives " in line and "first received 20" in line for line in lines[:-1])
    assert await depth(aws, dlq_url) == (3, 0)  # still there, visible
    code, out, _ = await cli("dlq", "show", "--limit", "1", queue_url=queue_url)
    assert code == 0
    assert out.strip().splitlines()[-1] == "1 of 3 message(s) in the dead-letter queue shown (raise --limit for more)"
    assert len(out.strip().splitlines()) == 2


async def test_redrive_moves_everything_back(aws: AwsClients) -> None:
    queue_url, dlq_url = await make_queue(aws, max_receive=1)
    (task,) = await start_tasks(aws, 1)
    await dead_letters(aws, queue_url, [json.dumps(e) for e in task.events], dlq_url)
    assert await depth(aws, dlq_url) == (8, 0)

    # moto has no StartMessageMoveTask: this also proves the receive-send-delete fallback.
    code, out, _ = await cli("dlq", "redrive", queue_url=queue_url)
    assert code == 0
    assert out.strip().startswith("moved 8 message(s)")
    assert await depth(aws, dlq_url) == (0, 0)
    assert await depth(aws, queue_url) == (8, 0)
    sqs = await aws.sqs(REGION)
    bodies = []
    for _ in range(3):
        answer = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30)
        bodies += [json.loads(m["Body"])["id"] for m in answer.get("Messages", [])]
    assert sorted(bodies) == sorted(e["id"] for e in task.events)


async def test_queue_without_redrive_policy_is_a_clear_error(aws: AwsClients) -> None:
    sqs = await aws.sqs(REGION)
    plain = (await sqs.create_queue(QueueName="no-redrive"))["QueueUrl"]
    code, _, err = await cli("dlq", "show", queue_url=plain)
    assert code == 2
    assert "has no redrive policy" in err


async def test_an_empty_answer_ends_nothing_while_the_counts_say_messages_wait(aws: AwsClients, moto_url: str) -> None:
    """A short poll may answer empty while messages wait (it samples a few SQS servers): `show` and `redrive`
    go on until the queue's counts say it is empty, so that a small dead-letter queue is reported whole."""
    queue_url, dlq_url = await make_queue(aws, max_receive=1)
    (task,) = await start_tasks(aws, 1)
    await dead_letters(aws, queue_url, [json.dumps(e) for e in task.events[:3]], dlq_url)
    proxy = await FaultProxy(moto_url).start()
    empty = Fault("status", status=200, body=b"{}", headers=(("Content-Type", "application/x-amz-json-1.0"),))
    try:
        proxy.inject("ReceiveMessage", empty, empty)
        code, out, _ = await cli("dlq", "show", queue_url=queue_url, endpoint=proxy.url)
        assert code == 0
        assert out.strip().splitlines()[-1] == "3 message(s) in the dead-letter queue"
        proxy.inject("ReceiveMessage", empty, empty)
        code, out, _ = await cli("dlq", "redrive", queue_url=queue_url, endpoint=proxy.url)
        assert code == 0
        assert out.strip().startswith("moved 3 message(s)")
    finally:
        await proxy.stop()
    assert proxy.outcomes("ReceiveMessage").count("status") == 4

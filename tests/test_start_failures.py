"""Every command, every service down at start: one line naming what failed and what to check, exit 2
(`check`: exit 1, each failed line naming the URL), never a traceback. By queue URL and by queue name."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from ecs_observer.adapters.aws import AwsClients

from .faults.proxy import FaultProxy, aws_error
from .servers import PrefectServer, free_port
from .test_cli import EXE, cli
from .world import make_queue

COMMANDS = (("run",), ("dlq", "show"), ("dlq", "redrive"))  # what reads the queue; `check` and `demo` below


async def clis(*calls: tuple[tuple[str, ...], dict[str, str]]) -> list[subprocess.CompletedProcess[str]]:
    """The commands at once (each is a process of its own), their results in order."""
    return list(await asyncio.gather(*(asyncio.to_thread(cli, *args, env=env, timeout=120) for args, env in calls)))


@pytest.fixture
async def queue(aws: AwsClients) -> dict[str, str]:
    """A queue with its dead-letter queue, by URL and by name."""
    url, _ = await make_queue(aws)
    return {"url": url, "name": url.rsplit("/", 1)[1]}


def by(how: str, queue: dict[str, str]) -> dict[str, str]:
    return {"ECS_OBSERVER_QUEUE_URL": queue["url"]} if how == "url" else {"ECS_OBSERVER_QUEUE_NAME": queue["name"]}


def one_line(result: subprocess.CompletedProcess[str], *pieces: str, code: int = 2) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for piece in pieces:
        assert piece in lines[0], lines[0]
    return lines[0]


def failed_checks(result: subprocess.CompletedProcess[str], *pieces: str) -> list[str]:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL ")]
    assert failed, result.stdout
    for piece in pieces:
        assert piece in failed[0], failed[0]
    return failed


@pytest.mark.parametrize("how", ["url", "name"])
async def test_sqs_unreachable_or_no_such_queue(aws: AwsClients, queue: dict[str, str], how: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    unreachable = {"AWS_ENDPOINT_URL_SQS": dead, "AWS_MAX_ATTEMPTS": "1", "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    missing = {"ECS_OBSERVER_QUEUE_URL": queue["url"].rsplit("/", 1)[0] + "/no-such-queue"}
    if how == "name":
        missing = {"ECS_OBSERVER_QUEUE_NAME": "no-such-queue"}
    off = {"ECS_OBSERVER_HEALTH_PORT": "0", "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    *down, check_down = await clis(*((c, unreachable | by(how, queue)) for c in (*COMMANDS, ("check",))))
    *gone, check_gone = await clis(*((c, off | missing) for c in (*COMMANDS, ("check",))))
    for result in down:
        one_line(result, "SQS", dead)
    for result in gone:
        one_line(result, "no-such-queue")
    failed_checks(check_down, dead)
    failed_checks(check_gone, "no-such-queue")


async def test_aws_refusing_the_credentials_or_throttling(
    aws: AwsClients, moto_url: str, queue: dict[str, str]
) -> None:
    proxy = await FaultProxy(moto_url).start()
    try:
        base = {"AWS_ENDPOINT_URL_SQS": proxy.url, "AWS_MAX_ATTEMPTS": "1", "PREFECT_API_URL": "http://127.0.0.1:9/api"}
        base |= {"ECS_OBSERVER_HEALTH_PORT": "0"}
        for command in COMMANDS:
            proxy.inject("GetQueueAttributes", aws_error(403, "UnrecognizedClientException"))
            one_line(await asyncio.to_thread(cli, *command, env=base | by("url", queue)), "refuses the credentials")
        proxy.inject("GetQueueUrl", aws_error(403, "InvalidClientTokenId"))
        one_line(await asyncio.to_thread(cli, "run", env=base | by("name", queue)), "refuses the credentials")
        for command in COMMANDS[1:]:  # one-shot: `run` would go on and retry
            # botocore retries 3 times (adapters/aws.py: 4 attempts) before the command sees it.
            proxy.inject("GetQueueAttributes", *[aws_error(400, "ThrottlingException")] * 4)
            one_line(await asyncio.to_thread(cli, *command, env=base | by("url", queue)), "throttles")
    finally:
        await proxy.stop()


async def test_prefect_unreachable_refusing_or_not_a_prefect_api(
    queue: dict[str, str], guarded_prefect: PrefectServer, prefect: PrefectServer
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api"
    refusing = {"PREFECT_API_URL": guarded_prefect.api_url, "PREFECT_API_AUTH_STRING": "admin:wrong"}
    root = prefect.api_url.removesuffix("/api")  # the server, but not its API: /api left out
    not_prefect = {"PREFECT_API_URL": root}
    off = by("url", queue) | {"ECS_OBSERVER_HEALTH_PORT": "0"}

    refused, wrong = await clis((("run",), off | refusing), (("run",), off | not_prefect))
    one_line(refused, "PREFECT_API_URL", "refuses our credentials")
    one_line(wrong, root, "not as a Prefect API")
    cases: list[tuple[dict[str, str], str]] = [
        (refusing, "refuses our credentials"),
        (not_prefect, "not as a Prefect API"),
        ({}, dead),
    ]
    for env, piece in cases:
        url = env.get("PREFECT_API_URL", dead)
        demo, checked = await clis(
            (("demo", "--prefect-api-url", url), env), (("check",), off | {"PREFECT_API_URL": url} | env)
        )
        one_line(demo, piece, url)
        failed = failed_checks(checked, url)
        assert failed[0].startswith("FAIL Prefect API answers: ")
        assert piece in failed[0]
        assert "wrong" not in demo.stderr + checked.stdout


async def test_run_with_prefect_not_answering_warns_naming_the_url_then_retries(queue: dict[str, str]) -> None:
    dead = f"http://admin:s3cret@127.0.0.1:{free_port()}/api"
    env = {**by("url", queue), "PREFECT_API_URL": dead, "ECS_OBSERVER_HEALTH_PORT": "0"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ECS_OBSERVER_")}
    process = await asyncio.create_subprocess_exec(
        EXE, "run", env=clean | env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        assert "Prefect is failing: cannot reach the Prefect API at http://***@127.0.0.1:" in line
        assert "starting anyway" in line
        assert process.returncode is None  # it goes on
    finally:
        process.terminate()
        out, err = await asyncio.wait_for(process.communicate(), timeout=40)
    assert "s3cret" not in line + out.decode() + err.decode()
    assert "Traceback" not in err.decode()


async def test_state_table_unknown_or_dynamodb_unreachable(queue: dict[str, str]) -> None:
    off = by("url", queue) | {"ECS_OBSERVER_HEALTH_PORT": "0", "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    unknown = off | {"ECS_OBSERVER_STATE_TABLE": "no-such-table"}
    one_line(await asyncio.to_thread(cli, "run", env=unknown), "ECS_OBSERVER_STATE_TABLE", "no-such-table")
    failed_checks(await asyncio.to_thread(cli, "check", env=unknown), "ResourceNotFoundException")
    dead = f"http://127.0.0.1:{free_port()}"
    gone = unknown | {"AWS_ENDPOINT_URL_DYNAMODB": dead, "AWS_MAX_ATTEMPTS": "1"}
    one_line(await asyncio.to_thread(cli, "run", env=gone), "DynamoDB", dead)
    failed_checks(await asyncio.to_thread(cli, "check", env=gone), dead)


def test_translate_and_healthcheck_with_nothing_there(tmp_path: Path) -> None:
    one_line(cli("translate", str(tmp_path / "nothing.json")), "cannot read", "nothing.json")
    port = str(free_port())
    one_line(cli("healthcheck", "--health-port", port), f"no answer on port {port}", code=1)

"""No secret printed, anywhere: a password in every URL setting and a key in every secret setting, every
command run (the demo and the service included, at DEBUG), and none of them in stdout, stderr or the logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import pytest

from ecs_observer.adapters.aws import AwsClients

from .servers import PrefectServer, free_port
from .test_cli import EXE, cli
from .world import depth, make_queue, send, start_tasks, until

URL_PASSWORD = "Url-Passw0rd-Never-Shown"
QUEUE_PASSWORD = "Queue-Passw0rd-Never-Shown"
API_KEY = "pnu_Api-Key-Never-Shown"
AUTH_PASSWORD = "Auth-Passw0rd-Never-Shown"
AWS_SECRET = "Aws-Secret-Never-Shown"
GUARDED_PASSWORD = "Guarded-Passw0rd"  # tests/conftest.py's guarded_prefect
SECRETS = (URL_PASSWORD, QUEUE_PASSWORD, API_KEY, AUTH_PASSWORD, AWS_SECRET, GUARDED_PASSWORD)


def with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://operator:{password}@{rest}"


def assert_no_secret(*outputs: str) -> None:
    text = "\n".join(outputs)
    for value in SECRETS:
        assert value not in text, f"{value} printed"


@pytest.fixture
async def world(aws: AwsClients, prefect: PrefectServer) -> dict[str, str]:
    """A queue with one Prefect task's lifecycle in it; settings with secrets everywhere one can go."""
    queue_url, _ = await make_queue(aws)
    (task,) = await start_tasks(aws, 1, crash_first=True)
    await send(aws, queue_url, [json.dumps(e) for e in task.events])
    return {
        "ECS_OBSERVER_QUEUE_URL": with_password(queue_url, QUEUE_PASSWORD),
        "PREFECT_API_URL": with_password(prefect.api_url, URL_PASSWORD),
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "ECS_OBSERVER_LOG_LEVEL": "DEBUG",
        "ECS_OBSERVER_WAIT_TIME_SECONDS": "1",
    }


@pytest.mark.parametrize(
    "secret", [{"PREFECT_API_KEY": API_KEY}, {"PREFECT_API_AUTH_STRING": f"admin:{AUTH_PASSWORD}"}]
)
async def test_no_command_prints_a_secret(
    aws: AwsClients, world: dict[str, str], secret: dict[str, str], guarded_prefect: PrefectServer
) -> None:
    env = world | secret
    queue_url = world["ECS_OBSERVER_QUEUE_URL"].replace(f"operator:{QUEUE_PASSWORD}@", "")
    outputs: list[str] = []

    # The service, at DEBUG, until its queue is drained; then SIGTERM and its summary.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ECS_OBSERVER_")}
    process = await asyncio.create_subprocess_exec(
        EXE,
        "run",
        env=clean | env | {"ECS_OBSERVER_HEALTH_PORT": str(free_port())},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def drained() -> bool:
            return await depth(aws, queue_url) == (0, 0)

        assert await until(drained, within=60)
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), timeout=40)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, err.decode()
    assert "forwarded=" in out.decode()  # it did its work, logging at DEBUG
    outputs += [out.decode(), err.decode()]

    commands: list[tuple[str, ...]] = [
        ("check",),
        ("dlq", "show"),
        ("dlq", "redrive"),
        ("healthcheck", "--health-port", str(free_port())),
        ("demo", "--log-level", "DEBUG"),
        ("run", "--receivers", "0"),  # a bad setting: the one-line error
        ("check", "--prefect-api-url", with_password(f"http://127.0.0.1:{free_port()}/api", URL_PASSWORD)),
    ]
    # The demo in a Prefect of its own (it sweeps every active run there), its password in the URL alone.
    guarded = guarded_prefect.api_url.replace("://", f"://admin:{GUARDED_PASSWORD}@", 1)
    demo_env = {k: v for k, v in env.items() if k not in ("PREFECT_API_KEY", "PREFECT_API_AUTH_STRING")}
    demo_env["PREFECT_API_URL"] = guarded
    envs = [demo_env if c[0] == "demo" else env for c in commands]
    results = await asyncio.gather(
        *(asyncio.to_thread(cli, *c, env=e, timeout=180) for c, e in zip(commands, envs, strict=True))
    )
    for command, result in zip(commands, results, strict=True):
        assert "Traceback" not in result.stderr, (command, result.stderr)
        outputs += [result.stdout, result.stderr]
    demo = results[4]
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "flow runs in http://***@127.0.0.1:" in demo.stderr
    translated = cli("translate", env=env, stdin="{}")
    outputs += [translated.stdout, translated.stderr]
    assert_no_secret(*outputs)


def test_a_bad_setting_next_to_secrets_names_the_setting_not_the_value() -> None:
    both = {"PREFECT_API_KEY": API_KEY, "PREFECT_API_AUTH_STRING": f"admin:{AUTH_PASSWORD}"}
    result: subprocess.CompletedProcess[str] = cli("run", env=both | {"ECS_OBSERVER_QUEUE_URL": "nope"})
    assert result.returncode == 2
    assert_no_secret(result.stdout, result.stderr)

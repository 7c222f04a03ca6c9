from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aioboto3
import pytest

from ecs_observer.adapters.aws import AwsClients

from .servers import PrefectServer, free_port, wait_http

REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto in server mode (aioboto3 cannot use moto's in-process mock), in a process of its own (see
    tests/moto_server.py), found through the standard variables."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("moto_server.py")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/moto-api/", server)
        with pytest.MonkeyPatch.context() as env:
            for name, value in {
                "AWS_ENDPOINT_URL_SQS": url,
                "AWS_ENDPOINT_URL_ECS": url,
                "AWS_ENDPOINT_URL_CLOUDFORMATION": url,
                "AWS_ENDPOINT_URL_EVENTBRIDGE": url,
                "AWS_ENDPOINT_URL_DYNAMODB": url,
                "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION,
            }.items():
                env.setenv(name, value)
            for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "PREFECT_API_URL", "PREFECT_API_KEY"):
                env.delenv(name, raising=False)
            yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
async def aws(moto_url: str) -> AsyncIterator[AwsClients]:
    async with AwsClients(aioboto3.Session(region_name=REGION)) as clients:
        yield clients


@pytest.fixture(scope="session")
def prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """One real Prefect server for the session (about 15 s to start)."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def guarded_prefect(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server with basic auth (its `auth_string`), for tests of credentials it refuses; no test
    makes flow runs in it, so a demo or a sweep against it meets none but its own."""
    server = PrefectServer(tmp_path_factory.mktemp("guarded"), auth_string="admin:Guarded-Passw0rd")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_prefect(tmp_path: Path) -> Iterator[PrefectServer]:
    """A Prefect server of the test's own, for tests that stop and start it."""
    server = PrefectServer(tmp_path / "prefect")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A machine whose local time is not UTC, where a naive timestamp read as local would be 9 hours off."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

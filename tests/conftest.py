from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aioboto3
import pytest
from moto.server import ThreadedMotoServer

from ecs_observer.adapters.aws import AwsClients

from .servers import PrefectServer, free_port

REGION = "us-east-1"


def _atomic_dynamodb_items() -> None:
    """Give moto's DynamoDB the per-item atomicity the real one has.

    moto checks a condition and applies an update without a lock, so two threads of its server
    can both create the same new item (one write is lost) or both pass a version condition.
    DynamoDB serialises the writes of an item; one lock over moto's item operations does too
    (coarser, but the tests' tables are small). The observer's conditional writes are what the
    tests check; without this they would check moto's race instead.
    """
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in ("put_item", "get_item", "update_item", "delete_item", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)
        if getattr(original, "_atomic", False):
            continue

        def atomic(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(*args, **kwargs)

        atomic._atomic = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, atomic)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto in server mode (aioboto3 cannot use moto's in-process mock), found through the standard variables."""
    _atomic_dynamodb_items()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
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
    server.stop()


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


@pytest.fixture
def own_prefect(tmp_path: Path) -> Iterator[PrefectServer]:
    """A Prefect server of the test's own, for tests that stop and start it."""
    server = PrefectServer(tmp_path / "prefect")
    server.start()
    yield server
    server.stop()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

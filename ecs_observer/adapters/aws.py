"""The AWS clients, one per service and region, opened once and closed together.

Endpoints and credentials come from the standard AWS configuration
(`AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL_ECS`, `AWS_ENDPOINT_URL_DYNAMODB`, profiles, task roles), which
botocore honours; nothing here needs to know whether it talks to AWS or moto.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import aioboto3
from aiobotocore.config import AioConfig

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_ecs.client import ECSClient
    from types_aiobotocore_logs.client import CloudWatchLogsClient
    from types_aiobotocore_sqs.client import SQSClient

__all__ = ["AwsClients"]

# botocore's own retries are short; the observer's loops retry with longer backoff on top.
_CONFIG = AioConfig(
    retries={"mode": "standard", "max_attempts": 3}, read_timeout=40, connect_timeout=10, max_pool_connections=20
)


class AwsClients:
    """Owns the aioboto3 clients: one per service and region (events name the region of each task)."""

    def __init__(self, session: aioboto3.Session | None = None, endpoint_url: str | None = None) -> None:
        self._session = session or aioboto3.Session()
        self._endpoint_url = endpoint_url  # for the demo's in-process moto; else AWS_ENDPOINT_URL_* apply
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[str, str | None], Any] = {}
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> AwsClients:
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.__aexit__(None, None, None)

    def default_region(self) -> str | None:
        region: str | None = self._session.region_name
        return region

    async def sqs(self, region: str | None) -> SQSClient:
        opened: SQSClient = await self._open("sqs", region)
        return opened

    async def ecs(self, region: str | None) -> ECSClient:
        opened: ECSClient = await self._open("ecs", region)
        return opened

    async def logs(self, region: str | None) -> CloudWatchLogsClient:
        opened: CloudWatchLogsClient = await self._open("logs", region)
        return opened

    async def dynamodb(self, region: str | None) -> DynamoDBClient:
        opened: DynamoDBClient = await self._open("dynamodb", region)
        return opened

    async def account(self) -> str:
        """The AWS account of these credentials (STS GetCallerIdentity)."""
        sts = await self._open("sts", None)
        return str((await sts.get_caller_identity())["Account"])

    async def _open(self, service: str, region: str | None) -> Any:
        """The client of `service` in `region`, opened on first use and closed with the others."""
        async with self._lock:
            key = (service, region)
            if key not in self._clients:
                client = self._session.client(  # type: ignore[call-overload]  # a service name, not a literal
                    service, region_name=region, endpoint_url=self._endpoint_url, config=_CONFIG
                )
                self._clients[key] = await self._stack.enter_async_context(client)
            return self._clients[key]

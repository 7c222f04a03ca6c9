"""The AWS adapters: an SQS queue and ECS `DescribeTasks`, behind small interfaces.

Endpoints and credentials come from the standard AWS configuration
(`AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL_ECS`, `AWS_ENDPOINT_URL_DYNAMODB`, profiles, task roles), which
botocore honours; nothing here needs to know whether it talks to AWS or moto.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import aioboto3
from aiobotocore.config import AioConfig

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient
    from types_aiobotocore_ecs.client import ECSClient
    from types_aiobotocore_sqs.client import SQSClient

__all__ = ["AwsClients", "EcsDescriber", "Message", "MessageQueue", "SqsQueue"]

# botocore's own retries are short; the observer's loops retry with longer backoff on top.
_CONFIG = AioConfig(
    retries={"mode": "standard", "max_attempts": 3}, read_timeout=40, connect_timeout=10, max_pool_connections=20
)


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


class MessageQueue(Protocol):
    """The queue the observer drains. Batch calls answer the ids of the entries that failed."""

    async def receive(self, max_messages: int, wait_seconds: int, visibility_timeout: int) -> list[Message]: ...

    async def delete(self, messages: Sequence[Message]) -> dict[str, str]: ...

    async def change_visibility(self, messages: Sequence[Message], visibility: int) -> dict[str, str]: ...


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
        opened: SQSClient = await self._open(
            ("sqs", region),
            lambda: self._session.client("sqs", region_name=region, endpoint_url=self._endpoint_url, config=_CONFIG),
        )
        return opened

    async def ecs(self, region: str | None) -> ECSClient:
        opened: ECSClient = await self._open(
            ("ecs", region),
            lambda: self._session.client("ecs", region_name=region, endpoint_url=self._endpoint_url, config=_CONFIG),
        )
        return opened

    async def dynamodb(self, region: str | None) -> DynamoDBClient:
        opened: DynamoDBClient = await self._open(
            ("dynamodb", region),
            lambda: self._session.client(
                "dynamodb", region_name=region, endpoint_url=self._endpoint_url, config=_CONFIG
            ),
        )
        return opened

    async def _open(self, key: tuple[str, str | None], factory: Callable[[], AbstractAsyncContextManager[Any]]) -> Any:
        async with self._lock:
            if key not in self._clients:
                self._clients[key] = await self._stack.enter_async_context(factory())
            return self._clients[key]


class SqsQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.url = queue_url

    async def receive(self, max_messages: int, wait_seconds: int, visibility_timeout: int) -> list[Message]:
        answer = await self.client.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=max_messages,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [
            Message(
                message_id=raw["MessageId"],
                receipt_handle=raw["ReceiptHandle"],
                body=raw.get("Body", ""),
                receive_count=int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
            )
            for raw in answer.get("Messages", [])
        ]

    async def waiting(self) -> int:
        answer = await self.client.get_queue_attributes(
            QueueUrl=self.url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(answer.get("Attributes", {}).get("ApproximateNumberOfMessages", "0"))

    async def delete(self, messages: Sequence[Message]) -> dict[str, str]:
        answer = await self.client.delete_message_batch(
            QueueUrl=self.url,
            Entries=[{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)],
        )
        return _failures(messages, answer.get("Failed", []))

    async def change_visibility(self, messages: Sequence[Message], visibility: int) -> dict[str, str]:
        answer = await self.client.change_message_visibility_batch(
            QueueUrl=self.url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": visibility}
                for i, m in enumerate(messages)
            ],
        )
        return _failures(messages, answer.get("Failed", []))


def _failures(messages: Sequence[Message], failed: Sequence[Mapping[str, object]]) -> dict[str, str]:
    """Message id -> reason, for the entries of a batch call that did not succeed."""
    return {
        messages[int(str(entry["Id"]))].message_id: f"{entry.get('Code')}: {entry.get('Message', '')}"
        for entry in failed
    }


class EcsDescriber:
    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, Mapping[str, str] | None]:
        client = await self._clients.ecs(region)
        if cluster is None:
            answer = await client.describe_tasks(tasks=list(task_arns), include=["TAGS"])
        else:
            answer = await client.describe_tasks(cluster=cluster, tasks=list(task_arns), include=["TAGS"])
        found: dict[str, Mapping[str, str] | None] = dict.fromkeys(task_arns)
        for task in answer.get("tasks", []):
            arn = task.get("taskArn")
            if arn in found:
                found[arn] = {tag["key"]: tag.get("value", "") for tag in task.get("tags", []) if "key" in tag}
        failures = [f for f in answer.get("failures", []) if f.get("reason") != "MISSING"]
        if failures:
            # Anything but MISSING (for example ACCESS_DENIED) is an error, never "no tags".
            raise RuntimeError(f"DescribeTasks failures: {failures[:3]}")
        return found

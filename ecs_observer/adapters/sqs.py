"""The SQS queue the observer drains (`ports.MessageQueue`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..ports import Message

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient

__all__ = ["SqsQueue"]


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

"""`ecs-observer dlq show` and `dlq redrive`: read the dead-letter queue and move it back.

The dead-letter queue is found from the source queue's redrive policy. `show`
runs each message through the same decoding and translation as the observer,
so it says why the observer rejects it; `redrive` uses SQS's message move task
where available, else receives, sends and deletes in batches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from tqdm import tqdm

from ..core.ecs_event import Ignored, Rejected, decode
from .settings import ConfigError

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient

__all__ = [
    "DeadLetterQueue",
    "DlqEntry",
    "DlqListing",
    "dead_letter_arn",
    "find_dead_letter_queue",
    "format_entries",
    "why_rejected",
]

log = logging.getLogger("ecs_observer.dlq")
_BATCH = 10
# Long polls: a short poll samples a few SQS servers and can answer empty while messages wait. An empty answer
# ends a listing only once the queue's counts say nothing is left, or after this many (the counts lag).
_POLL_SECONDS = 1
_EMPTY_ANSWERS = 5


@dataclass(frozen=True)
class DlqEntry:
    message_id: str
    first_received: datetime | None
    receive_count: int
    reason: str


@dataclass(frozen=True)
class DlqListing:
    """The messages listed, and how many the queue held (SQS's approximate count), so that a listing cut
    short by `--limit` says what it left out."""

    entries: list[DlqEntry]
    total: int


def why_rejected(body: str) -> str:
    outcome = decode(body)
    if isinstance(outcome, Rejected):
        return outcome.reason
    if isinstance(outcome, Ignored):
        return f"not an ECS task state change ({outcome.reason}); the observer deletes these"
    return "decodes as a task state change: it failed later (the Prefect API refused its event?); see the logs"


@dataclass(frozen=True)
class DeadLetterQueue:
    sqs: SQSClient
    url: str
    arn: str
    source_url: str
    source_arn: str

    async def show(self, limit: int = 1000) -> DlqListing:
        """Up to `limit` messages, left in the queue and visible again afterwards."""
        total = await self._depth(hidden=True)
        entries: list[DlqEntry] = []
        handles: list[str] = []
        empty = 0
        try:
            while len(entries) < limit:
                # Hidden while listing, so that each is seen once; made visible again below.
                answer = await self.sqs.receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=_BATCH,
                    WaitTimeSeconds=_POLL_SECONDS,
                    VisibilityTimeout=60,
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp"],
                )
                messages = answer.get("Messages", [])
                if not messages:
                    empty += 1
                    if empty >= _EMPTY_ANSWERS or await self._depth() == 0:
                        break
                    continue
                for message in messages:
                    attrs = message.get("Attributes", {})
                    first = attrs.get("ApproximateFirstReceiveTimestamp")
                    entries.append(
                        DlqEntry(
                            message_id=message["MessageId"],
                            first_received=datetime.fromtimestamp(int(first) / 1000, UTC) if first else None,
                            receive_count=int(attrs.get("ApproximateReceiveCount", "0")),
                            reason=why_rejected(message.get("Body", "")),
                        )
                    )
                    handles.append(message["ReceiptHandle"])
        finally:
            for start in range(0, len(handles), _BATCH):
                await self.sqs.change_message_visibility_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                        for i, h in enumerate(handles[start : start + _BATCH])
                    ],
                )
        return DlqListing(entries[:limit], max(total, len(entries)))

    async def redrive(self, progress: bool) -> int:
        """Move every message back to the source queue; answers how many were moved."""
        waiting = await self._depth()
        with tqdm(total=waiting, unit="msg", desc="redrive", disable=not progress, file=sys.stderr) as bar:
            try:
                return await self._move_task(bar)
            except (ClientError, BotoCoreError) as exc:
                log.info("SQS message move task unavailable (%s); moving by receive, send and delete", exc)
            return await self._copy(bar)

    async def _depth(self, *, hidden: bool = False) -> int:
        """Messages waiting (with `hidden`, those received by someone else too)."""
        names: list[Any] = ["ApproximateNumberOfMessages"]
        if hidden:
            names.append("ApproximateNumberOfMessagesNotVisible")
        attrs = (await self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=names)).get("Attributes", {})
        return sum(int(attrs.get(name, "0")) for name in names)

    async def _move_task(self, bar: tqdm[Any]) -> int:
        await self.sqs.start_message_move_task(SourceArn=self.arn, DestinationArn=self.source_arn)
        while True:
            await asyncio.sleep(2)
            tasks = (await self.sqs.list_message_move_tasks(SourceArn=self.arn, MaxResults=1))["Results"]
            task = tasks[0] if tasks else {}
            moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
            bar.update(moved - bar.n)
            if task.get("Status") in ("COMPLETED", "FAILED", "CANCELLED"):
                if task.get("Status") != "COMPLETED":
                    raise RuntimeError(f"message move task {task.get('Status')}: {task.get('FailureReason', '')}")
                return moved

    async def _copy(self, bar: tqdm[Any]) -> int:
        moved = empty = 0
        while True:
            answer = await self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=_BATCH, WaitTimeSeconds=_POLL_SECONDS, VisibilityTimeout=60
            )
            messages = answer.get("Messages", [])
            if not messages:
                empty += 1
                if empty >= _EMPTY_ANSWERS or await self._depth() == 0:
                    return moved
                continue
            sent = await self.sqs.send_message_batch(
                QueueUrl=self.source_url,
                Entries=[{"Id": str(i), "MessageBody": m.get("Body", "")} for i, m in enumerate(messages)],
            )
            ok = {int(entry["Id"]) for entry in sent.get("Successful", [])}
            for failure in sent.get("Failed", []):
                log.warning(
                    "could not send message %s back: %s",
                    messages[int(failure["Id"])]["MessageId"],
                    failure.get("Message", failure.get("Code")),
                )
            # Deleted from the dead-letter queue only once it is safely in the source queue.
            if ok:
                await self.sqs.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[{"Id": str(i), "ReceiptHandle": messages[i]["ReceiptHandle"]} for i in sorted(ok)],
                )
            moved += len(ok)
            bar.update(len(ok))


async def dead_letter_arn(sqs: SQSClient, source_url: str) -> tuple[str, str]:
    """The ARN of the queue's dead-letter queue, and the queue's own; by GetQueueAttributes alone (all that
    `check` may call on the observer's role)."""
    attrs = (await sqs.get_queue_attributes(QueueUrl=source_url, AttributeNames=["RedrivePolicy", "QueueArn"]))[
        "Attributes"
    ]
    policy = attrs.get("RedrivePolicy")
    if not policy:
        raise ConfigError(f"ECS_OBSERVER_QUEUE_URL: {source_url} has no redrive policy, so no dead-letter queue")
    return str(json.loads(policy)["deadLetterTargetArn"]), attrs["QueueArn"]


async def find_dead_letter_queue(sqs: SQSClient, source_url: str) -> DeadLetterQueue:
    dlq_arn, source_arn = await dead_letter_arn(sqs, source_url)
    _, _, _, _, account, name = dlq_arn.split(":", 5)
    dlq_url = (await sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account))["QueueUrl"]
    return DeadLetterQueue(sqs, dlq_url, dlq_arn, source_url, source_arn)


def format_entries(listing: DlqListing, emit: Callable[[str], None]) -> None:
    for entry in listing.entries:
        when = entry.first_received.isoformat(timespec="seconds") if entry.first_received else "?"
        emit(f"{entry.message_id}  first received {when}  receives {entry.receive_count}  {entry.reason}")
    shown = len(listing.entries)
    if shown < listing.total:
        emit(f"{shown} of {listing.total} message(s) in the dead-letter queue shown (raise --limit for more)")
    else:
        emit(f"{shown} message(s) in the dead-letter queue")

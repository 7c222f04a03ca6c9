"""The messages the observer holds: deleted in batches once done, kept invisible while in flight.

While the Prefect API or ECS is down, messages wait in flight; their visibility
is extended before it runs out, so that an outage does not count as failed
receives and push good messages into the dead-letter queue. A failed delete
is harmless: the message comes back and yields the identical event, which
Prefect deduplicates by id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ..ports import Message, MessageQueue
from ..support.backoff import AskAgain, Backoff
from ..support.batcher import Batcher
from ..support.stats import Stats

__all__ = ["EntriesFailed", "Leases"]

log = logging.getLogger("ecs_observer.sqs")
SQS_BATCH = 10


class EntriesFailed(AskAgain):
    """Some entries of a batch call failed (message id -> SQS's reason): retried, those alone."""

    def __init__(self, failed: dict[str, str]) -> None:
        entries = "1 entry" if len(failed) == 1 else f"{len(failed)} entries"
        super().__init__(f"{entries} failed: {next(iter(failed.values()))}")
        self.failed = failed


class Leases:
    def __init__(
        self,
        queue: MessageQueue,
        stats: Stats,
        *,
        visibility_timeout: int,
        delete_linger: float = 0.05,
        backoff: Backoff = Backoff(0.2, 5.0),
    ) -> None:
        self._queue = queue
        self._stats = stats
        self._visibility = visibility_timeout
        self._backoff = backoff.hooked(stats.called)
        self._deadlines: dict[str, tuple[Message, float]] = {}  # message id -> (message, visible again at)
        # In a backlog, wait longer for a full batch of 10: one DeleteMessageBatch per 10 messages.
        self.deletes: Batcher[Message, None] = Batcher(
            self._delete, linger=delete_linger, backlog_linger=10 * delete_linger, max_items=SQS_BATCH
        )

    def hold(self, message: Message) -> None:
        self._deadlines[message.message_id] = (message, asyncio.get_running_loop().time() + self._visibility)

    def release(self, message: Message) -> None:
        """Stop extending: the message becomes visible again when its timeout runs out."""
        self._deadlines.pop(message.message_id, None)

    def ack(self, message: Message) -> None:
        """Delete the message, in a batch with others (`deletes`); a failed delete is logged, not raised."""
        self.deletes.submit(message)

    async def _delete(self, batch: Sequence[Message]) -> list[None]:
        """One DeleteMessageBatch, then the entries that failed again (only those), within the same retries:
        a message whose delete keeps failing comes back, and five returns put a good message in the
        dead-letter queue."""
        left = list(batch)

        async def delete() -> None:
            nonlocal left
            self._stats.sqs_calls["DeleteMessageBatch"] += 1
            failed = await self._queue.delete(left)
            self._stats.sqs_succeeded()
            left = [m for m in left if m.message_id in failed]
            if left:
                raise EntriesFailed(failed)

        failed: dict[str, str] = {}
        try:
            await self._backoff.call("delete", delete, limit=5, what="DeleteMessageBatch")
        except EntriesFailed as exc:
            failed = exc.failed
        except Exception as exc:
            log.warning("DeleteMessageBatch failed for %d message(s); they will be redelivered: %s", len(left), exc)
            failed = {m.message_id: str(exc) for m in left}
        for message in batch:
            self.release(message)
            if message.message_id in failed:
                log.warning(
                    "could not delete message %s (it will be redelivered): %s",
                    message.message_id,
                    failed[message.message_id],
                )
            else:
                self._stats.deleted += 1
        return [None] * len(batch)

    async def keep_alive(self) -> None:
        """Extend the visibility of held messages whose timeout is past half; runs until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(1.0, self._visibility / 4))
            now = loop.time()
            due = [m for m, deadline in self._deadlines.values() if deadline - now < self._visibility / 2]
            await self._set_visibility(due, self._visibility)

    async def return_unfinished(self) -> int:
        """Make the messages still held visible at once, for the next observer to take."""
        unfinished = [m for m, _ in self._deadlines.values()]
        await self._set_visibility(unfinished, 0)
        self._deadlines.clear()
        return len(unfinished)

    async def _set_visibility(self, messages: Sequence[Message], visibility: int) -> None:
        now = asyncio.get_running_loop().time()
        for start in range(0, len(messages), SQS_BATCH):
            batch = messages[start : start + SQS_BATCH]
            self._stats.sqs_calls["ChangeMessageVisibilityBatch"] += 1
            try:
                failed = await self._queue.change_visibility(batch, visibility)
                self._stats.sqs_succeeded()
            except Exception as exc:
                self._stats.retries["change_visibility"] += 1
                self._stats.dependencies.failed(
                    "SQS", f"ChangeMessageVisibilityBatch failed for {len(batch)} message(s): {exc}"
                )
                continue
            for message in batch:
                if message.message_id in failed:
                    log.info(
                        "cannot change visibility of message %s: %s", message.message_id, failed[message.message_id]
                    )
                elif visibility and message.message_id in self._deadlines:
                    self._deadlines[message.message_id] = (message, now + visibility)

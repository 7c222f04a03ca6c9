"""SQS as the observer relies on it: visibility timeouts, at-least-once delivery, redrive, batch failures.

One `SimQueue` is the queue; each replica reaches it through a `QueueView`
(the `MessageQueue` port). Receives long-poll, hand out visible messages in a
random order, count receives and move a message received more than
`max_receive` times to the dead-letter queue, as a redrive policy does.
A deletion asks `on_delete` first: the invariant that a message goes only once
its event and effects were answered is checked there, when it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ecs_observer.ports import Message

from .faults import Faults, SimError
from .life import Life

__all__ = ["QueueView", "SimQueue", "Stored"]


@dataclass
class Stored:
    """A message in the queue (or deleted, or in the dead-letter queue)."""

    message_id: str
    body: str
    visible_at: float
    receives: int = 0
    deleted_at: float | None = None
    dead: bool = False  # moved to the dead-letter queue
    handles: list[str] = field(default_factory=list)
    hidden_by: str | None = None  # the replica whose receive or visibility change last hid it


_DUE = 1e-3


class SimQueue:
    def __init__(self, faults: Faults, max_receive: int = 5) -> None:
        self._faults = faults
        self.max_receive = max_receive
        self.messages: dict[str, Stored] = {}
        self.duplicates: dict[str, int] = {}  # per message: deliveries that were SQS's duplicates
        self._arrived = asyncio.Event()
        self.on_delete: Callable[[Stored], None] = lambda stored: None

    def send(self, message_id: str, body: str) -> None:
        now = asyncio.get_running_loop().time()
        self.messages[message_id] = Stored(message_id, body, now)
        self._arrived.set()

    def settled(self) -> bool:
        """Every message deleted or dead-lettered."""
        return all(m.deleted_at is not None or m.dead for m in self.messages.values())

    def _answer_unless_down(self) -> None:
        """Every call fails while SQS is down (`FaultPlan.sqs_outage`)."""
        if self._faults.sqs_down(asyncio.get_running_loop().time()):
            raise SimError("ServiceUnavailable: SQS is down")

    def _visible(self, now: float) -> list[Stored]:
        return [m for m in self.messages.values() if m.deleted_at is None and not m.dead and m.visible_at <= now]

    async def receive(self, life: Life, max_messages: int, wait_seconds: int, visibility: int) -> list[Message]:
        loop = asyncio.get_running_loop()
        await life.pause(self._faults.latency(0.01))
        self._answer_unless_down()
        if self._faults.happens("sqs: ReceiveMessage failed", self._faults.plan.sqs_error):
            raise SimError("ThrottlingException: Rate exceeded")
        deadline = loop.time() + wait_seconds
        while True:
            # Within a millisecond counts as due: a timer may run a hair early, and waiting for "the rest"
            # again and again would spin with no time passing.
            now = loop.time() + _DUE
            visible = self._visible(now)
            if visible:
                break
            if now >= deadline:
                await life.check()
                return []
            later = [m.visible_at for m in self.messages.values() if m.deleted_at is None and not m.dead]
            until = min([deadline, *(t for t in later if t > now)])
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), max(until - now, _DUE))
        chosen = self._faults.rng.sample(visible, min(max_messages, len(visible)))
        if len(chosen) < max_messages and self._faults.happens(
            "sqs: a message delivered twice", self._faults.plan.sqs_duplicate
        ):
            held = [m for m in self.messages.values() if m.deleted_at is None and not m.dead and m not in chosen]
            if held:
                twice = self._faults.rng.choice(held)
                chosen.append(twice)
                self.duplicates[twice.message_id] = self.duplicates.get(twice.message_id, 0) + 1
        answer = []
        for stored in chosen:
            stored.receives += 1
            if stored.receives > self.max_receive:
                stored.dead = True
                continue
            if stored.visible_at <= now:
                stored.visible_at = now + visibility
                stored.hidden_by = life.name
            handle = f"{stored.message_id}#{stored.receives}"
            stored.handles.append(handle)
            answer.append(Message(stored.message_id, handle, stored.body, stored.receives))
        await life.check()
        return answer

    async def delete(self, life: Life, messages: Sequence[Message]) -> dict[str, str]:
        await life.pause(self._faults.latency(0.01))
        self._answer_unless_down()
        if self._faults.happens("sqs: DeleteMessageBatch failed", self._faults.plan.sqs_error):
            raise SimError("InternalError")
        failed = {}
        now = asyncio.get_running_loop().time()
        for message in messages:
            stored = self.messages[message.message_id]
            if self._faults.happens("sqs: a delete entry failed", self._faults.plan.sqs_partial):
                failed[message.message_id] = "InternalError"
            elif stored.deleted_at is None and not stored.dead:
                self.on_delete(stored)
                stored.deleted_at = now
        await life.check()
        return failed

    async def change_visibility(self, life: Life, messages: Sequence[Message], visibility: int) -> dict[str, str]:
        await life.pause(self._faults.latency(0.01))
        self._answer_unless_down()
        if self._faults.happens("sqs: ChangeMessageVisibilityBatch failed", self._faults.plan.sqs_error):
            raise SimError("ThrottlingException")
        failed = {}
        now = asyncio.get_running_loop().time()
        for message in messages:
            stored = self.messages[message.message_id]
            if stored.deleted_at is not None or stored.dead:
                failed[message.message_id] = "ReceiptHandleIsInvalid"
            elif self._faults.happens("sqs: a visibility entry failed", self._faults.plan.sqs_partial):
                failed[message.message_id] = "InternalError"
            else:
                stored.visible_at = now + visibility
                stored.hidden_by = life.name if visibility > 0 else None
                if visibility == 0:
                    self._arrived.set()
        await life.check()
        return failed


class QueueView:
    """The queue as one replica reaches it (`ports.MessageQueue`)."""

    def __init__(self, queue: SimQueue, life: Life, in_flight: Callable[[int], None], tally: Counter[str]) -> None:
        self._queue = queue
        self._life = life
        self._in_flight = in_flight  # told how many messages a receive hands over, before they are dispatched
        self.tally = tally  # what the replica asked and was answered (shared by its views)
        self.answered_at = asyncio.get_running_loop().time()  # SQS's last answer to it (at first: its start)
        self.deleted: list[str] = []  # the message of each entry its deletes had succeed, in order

    async def receive(self, max_messages: int, wait_seconds: int, visibility_timeout: int) -> list[Message]:
        self.tally["sqs_calls:ReceiveMessage"] += 1
        messages = await self._queue.receive(self._life, max_messages, wait_seconds, visibility_timeout)
        self.answered_at = asyncio.get_running_loop().time()
        self.tally["received"] += len(messages)
        self._in_flight(len(messages))
        return messages

    async def delete(self, messages: Sequence[Message]) -> dict[str, str]:
        self.tally["sqs_calls:DeleteMessageBatch"] += 1
        failed = await self._queue.delete(self._life, messages)
        self.answered_at = asyncio.get_running_loop().time()
        self.tally["deleted"] += sum(m.message_id not in failed for m in messages)
        self.tally["delete entries failed"] += len(failed)
        self.deleted += [m.message_id for m in messages if m.message_id not in failed]
        return failed

    async def change_visibility(self, messages: Sequence[Message], visibility: int) -> dict[str, str]:
        self.tally["sqs_calls:ChangeMessageVisibilityBatch"] += 1
        failed = await self._queue.change_visibility(self._life, messages, visibility)
        self.answered_at = asyncio.get_running_loop().time()
        return failed

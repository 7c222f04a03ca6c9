"""The messages held (pipeline/leases.py) against a scripted queue, in virtual time: which DeleteMessageBatch and
ChangeMessageVisibilityBatch calls go, when and with what, what a failure retries and logs, and what is counted.

Each test runs on the simulation's virtual loop (tests/sim/clock.py), so that lingers, backoffs and visibility
timeouts take no time and a call's instant is exact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest

from ecs_observer.pipeline.leases import Leases
from ecs_observer.ports import Message
from ecs_observer.support.stats import Stats

from .sim.clock import virtual

T = TypeVar("T")


def now() -> float:
    return round(asyncio.get_running_loop().time(), 3)


def messages(count: int) -> list[Message]:
    return [Message(f"m{n}", f"receipt-{n}", "{}", 1) for n in range(count)]


def ids(batch: Sequence[Message]) -> list[str]:
    return [message.message_id for message in batch]


class Queue:
    """Notes each batch call; `delete_fails` and `change_fails` answer the failed entries of a call (or raise),
    and with `change_gate` a visibility change waits for it first."""

    def __init__(self) -> None:
        self.deletes: list[tuple[float, list[str]]] = []
        self.changes: list[tuple[float, list[str], int]] = []
        self.delete_fails: Callable[[list[str]], dict[str, str]] = lambda _: {}
        self.change_fails: Callable[[list[str]], dict[str, str]] = lambda _: {}
        self.change_gate: asyncio.Event | None = None

    async def receive(self, max_messages: int, wait_seconds: int, visibility_timeout: int) -> list[Message]:
        raise AssertionError("leases receive nothing")

    async def delete(self, batch: Sequence[Message]) -> dict[str, str]:
        self.deletes.append((now(), ids(batch)))
        return self.delete_fails(ids(batch))

    async def change_visibility(self, batch: Sequence[Message], visibility: int) -> dict[str, str]:
        self.changes.append((now(), ids(batch), visibility))
        if self.change_gate is not None:
            await self.change_gate.wait()
        return self.change_fails(ids(batch))


def raising(error: Exception) -> Callable[[list[str]], dict[str, str]]:
    def fails(_: list[str]) -> dict[str, str]:
        raise error

    return fails


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The observer's warnings (not stamina's own line for each retry)."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and record.name.startswith("ecs_observer")
    ]


def test_a_lone_ack_is_deleted_one_linger_later_and_ten_go_at_once() -> None:
    async def main() -> None:
        queue = Queue()
        leases = Leases(queue, Stats(), visibility_timeout=30)  # the default linger: 0.05 s
        answers = await asyncio.gather(leases.deletes.ask(messages(1)[0]))  # each message of a batch is answered
        assert list(answers) == [None]
        assert queue.deletes == [(0.05, ["m0"])]
        batch = messages(11)
        for message in batch[:10]:
            leases.ack(message)
        await leases.deletes.ask(batch[10])
        assert queue.deletes[1:] == [(0.05, [f"m{n}" for n in range(10)]), (0.1, ["m10"])]  # 10 go at once

    virtual(main)


def test_in_a_backlog_a_delete_waits_ten_lingers_for_a_full_batch() -> None:
    async def main() -> None:
        queue = Queue()
        leases = Leases(queue, Stats(), visibility_timeout=30, delete_linger=0.1)
        leases.deletes.intake(full=True)
        await leases.deletes.ask(messages(1)[0])
        assert queue.deletes == [(1.0, ["m0"])]

    virtual(main)


def test_entries_that_fail_are_retried_alone_up_to_five_calls_then_left_for_redelivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> Stats:
        queue = Queue()
        queue.delete_fails = lambda batch: {"m1": "ReceiptHandleIsInvalid"} if "m1" in batch else {}
        stats = Stats()
        leases = Leases(queue, stats, visibility_timeout=30)
        for message in messages(3):
            leases.hold(message)
            leases.ack(message)
        await asyncio.wait_for(leases.deletes.drain(), 60)
        assert [batch for _, batch in queue.deletes] == [["m0", "m1", "m2"], ["m1"], ["m1"], ["m1"], ["m1"]]
        assert await leases.return_unfinished() == 0  # none is held any more: the failed one comes back by itself
        return stats

    with caplog.at_level(logging.INFO, logger="ecs_observer"):
        stats = virtual(main)
    assert stats.deleted == 2
    assert stats.sqs_calls["DeleteMessageBatch"] == 5
    assert dict(stats.retries) == {"delete": 4}
    assert warnings(caplog) == [
        *(
            f"DeleteMessageBatch failed: 1 entry failed: ReceiptHandleIsInvalid; retrying (attempt {n})"
            for n in range(1, 5)
        ),
        "could not delete message m1 (it will be redelivered): ReceiptHandleIsInvalid",
    ]


def test_entries_that_fail_once_are_deleted_by_the_retry(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> Stats:
        queue = Queue()
        calls = iter([{"m0": "InternalError", "m2": "ReceiptHandleIsInvalid"}])
        queue.delete_fails = lambda _: next(calls, {})
        stats = Stats()
        leases = Leases(queue, stats, visibility_timeout=30)
        for message in messages(3):
            leases.ack(message)
        await leases.deletes.drain()
        assert [batch for _, batch in queue.deletes] == [["m0", "m1", "m2"], ["m0", "m2"]]
        return stats

    with caplog.at_level(logging.INFO, logger="ecs_observer"):
        stats = virtual(main)
    assert stats.deleted == 3
    assert warnings(caplog) == ["DeleteMessageBatch failed: 2 entries failed: InternalError; retrying (attempt 1)"]


def test_a_delete_call_that_keeps_failing_leaves_its_messages_for_redelivery(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> Stats:
        queue = Queue()
        queue.delete_fails = raising(RuntimeError("SQS is down"))
        stats = Stats()
        leases = Leases(queue, stats, visibility_timeout=30)
        for message in messages(2):
            leases.ack(message)
        await asyncio.wait_for(leases.deletes.drain(), 60)
        assert len(queue.deletes) == 5
        return stats

    with caplog.at_level(logging.INFO, logger="ecs_observer"):
        stats = virtual(main)
    assert stats.deleted == 0
    assert dict(stats.retries) == {"delete": 4}
    assert warnings(caplog) == [
        "SQS is failing: DeleteMessageBatch failed: SQS is down (retrying; logged once until it answers again)",
        "DeleteMessageBatch failed for 2 message(s); they will be redelivered: SQS is down",
        "could not delete message m0 (it will be redelivered): SQS is down",
        "could not delete message m1 (it will be redelivered): SQS is down",
    ]


def test_held_messages_are_extended_once_past_half_their_timeout() -> None:
    async def main() -> None:
        queue = Queue()
        leases = Leases(queue, Stats(), visibility_timeout=60)  # looked at every 15 s
        keeping = asyncio.ensure_future(leases.keep_alive())
        first, second = messages(2)
        leases.hold(first)  # visible again at 60
        await asyncio.sleep(10.0)
        leases.hold(second)  # at 70
        await asyncio.sleep(90.0)
        keeping.cancel()
        # Not at 30 (30 s left is not less than half); at 45 both have less, and are extended to 105.
        assert queue.changes == [(45.0, ["m0", "m1"], 60), (90.0, ["m0", "m1"], 60)]

    virtual(main)


def test_with_a_short_timeout_held_messages_are_looked_at_every_quarter_of_it() -> None:
    async def main() -> None:
        queue = Queue()
        leases = Leases(queue, Stats(), visibility_timeout=5)
        leases.hold(messages(1)[0])
        keeping = asyncio.ensure_future(leases.keep_alive())
        await asyncio.sleep(8.0)
        keeping.cancel()
        assert [at for at, _, _ in queue.changes] == [3.75, 7.5]  # looked at every 1.25 s, extended under 2.5 s left

    virtual(main)


def test_a_message_finished_while_its_visibility_is_extended_is_not_held_again() -> None:
    async def main() -> None:
        queue = Queue()
        queue.change_gate = asyncio.Event()
        leases = Leases(queue, Stats(), visibility_timeout=60)
        done, unfinished = messages(2)
        leases.hold(done)
        leases.hold(unfinished)
        keeping = asyncio.ensure_future(leases.keep_alive())
        await asyncio.sleep(50.0)
        assert queue.changes == [(45.0, ["m0", "m1"], 60)]  # still under way
        leases.release(done)  # its handler finished meanwhile
        queue.change_gate.set()
        await asyncio.sleep(0)
        keeping.cancel()
        assert await leases.return_unfinished() == 1
        assert queue.changes[1:] == [(50.0, ["m1"], 0)]

    virtual(main)


def test_returning_unfinished_messages_goes_in_batches_of_ten_and_a_failed_batch_does_not_stop_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> Stats:
        queue = Queue()
        queue.change_fails = raising(RuntimeError("throttled"))
        stats = Stats()
        leases = Leases(queue, stats, visibility_timeout=60)
        for message in messages(12):
            leases.hold(message)
        assert await leases.return_unfinished() == 12
        assert [(batch[0], len(batch), visibility) for _, batch, visibility in queue.changes] == [
            ("m0", 10, 0),
            ("m10", 2, 0),
        ]
        assert await leases.return_unfinished() == 0
        return stats

    with caplog.at_level(logging.INFO, logger="ecs_observer"):
        stats = virtual(main)
    assert stats.sqs_calls["ChangeMessageVisibilityBatch"] == 2
    assert dict(stats.retries) == {"change_visibility": 2}
    assert warnings(caplog) == [
        "SQS is failing: ChangeMessageVisibilityBatch failed for 10 message(s): throttled "
        "(retrying; logged once until it answers again)"
    ]

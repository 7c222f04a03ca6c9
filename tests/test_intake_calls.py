"""The receive loops (pipeline/intake.py) against a scripted queue, in virtual time: what is asked of SQS and
how often, when receiving pauses at the in-flight bound, when it stops by itself, and what /healthz reads.

Each test runs on the simulation's virtual loop (tests/sim/clock.py) with every `ecs_observer` module's clock
pointed at it, so that a long poll takes no time and the seconds since the last SQS success are exact.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TypeVar

import pytest

from ecs_observer.pipeline.config import ObserverConfig
from ecs_observer.pipeline.intake import Intake
from ecs_observer.ports import Message
from ecs_observer.support.backoff import Backoff
from ecs_observer.support.stats import Stats

from .sim.clock import virtual

T = TypeVar("T")


def now() -> float:
    return round(asyncio.get_running_loop().time(), 3)


def messages(count: int, first: int = 0) -> list[Message]:
    return [Message(f"m{n}", f"receipt-{n}", "{}", 1) for n in range(first, first + count)]


class Queue:
    """Each receive answers the next scripted batch (or raises the scripted error), then long polls that find
    nothing; with `gate`, every receive waits for it first, and `hang` polls never answer."""

    def __init__(self, *script: list[Message] | Exception, gate: asyncio.Event | None = None, hang: bool = False):
        self.script = list(script)
        self.gate = gate
        self.hang = hang
        self.receives: list[tuple[float, int, int, int]] = []  # when, max messages, wait, visibility timeout
        self.polling = 0
        self.cancelled = 0

    async def receive(self, max_messages: int, wait_seconds: int, visibility_timeout: int) -> list[Message]:
        self.receives.append((now(), max_messages, wait_seconds, visibility_timeout))
        self.polling += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.script:
                answer = self.script.pop(0)
                if isinstance(answer, Exception):
                    raise answer
                return answer
            if self.hang:
                await asyncio.Event().wait()
            await asyncio.sleep(wait_seconds)
            return []
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.polling -= 1

    async def delete(self, batch: object) -> dict[str, str]:
        raise AssertionError("the intake deletes nothing")

    async def change_visibility(self, batch: object, visibility: int) -> dict[str, str]:
        raise AssertionError("the intake changes no visibility")


class Told:
    """A batcher that notes what the intake tells it."""

    def __init__(self) -> None:
        self.intakes: list[bool] = []
        self.flushes = 0

    def intake(self, full: bool) -> None:
        self.intakes.append(full)

    def flush(self) -> None:
        self.flushes += 1


class Rig:
    def __init__(self, queue: Queue, config: ObserverConfig, fail_on_messages: bool = False) -> None:
        self.queue = queue
        self.stats = Stats()
        self.told = Told()
        self.dispatched: list[list[str]] = []
        self.fail_on_messages = fail_on_messages
        self.intake = Intake(queue, [self.told], self.stats, config, self.dispatch)

    def dispatch(self, batch: list[Message]) -> None:
        self.dispatched.append([message.message_id for message in batch])
        if batch and self.fail_on_messages:
            raise RuntimeError("the handler could not be dispatched")


async def until(condition: Callable[[], bool], limit: float = 100.0) -> None:
    """Wait (in virtual time) for the condition; fail after `limit` virtual seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        assert loop.time() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_each_receive_asks_for_ten_with_the_set_wait_and_visibility_and_the_batches_are_counted() -> None:
    async def main() -> None:
        config = ObserverConfig(receivers=1, wait_time_seconds=7, visibility_timeout=45)
        rig = Rig(Queue(messages(10), messages(3, 10)), config)
        rig.intake.start(None, busy=lambda: False)
        await until(lambda: len(rig.dispatched) == 3)  # the third found nothing, after its long poll
        assert rig.queue.receives[:3] == [(0.0, 10, 7, 45), (0.0, 10, 7, 45), (0.0, 10, 7, 45)]
        assert [len(batch) for batch in rig.dispatched] == [10, 3, 0]
        assert rig.stats.batches_received == 2  # receives that returned messages
        assert rig.stats.sqs_calls["ReceiveMessage"] == 4  # the fourth is under way
        assert rig.told.intakes == [True, False, False]  # a full receive is a backlog; a short one, caught up
        assert rig.intake.in_flight == 13
        rig.intake.stop("done")
        await rig.intake.end()

    virtual(main)


def test_a_failed_receive_is_retried_and_counted_as_an_sqs_outage(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        config = ObserverConfig(receivers=1, wait_time_seconds=1, backoff=Backoff(0.01, 0.1))
        rig = Rig(Queue(RuntimeError("throttled"), messages(1)), config)
        rig.intake.start(None, busy=lambda: False)
        await until(lambda: len(rig.dispatched) == 1)
        assert rig.dispatched == [["m0"]]
        assert dict(rig.stats.retries) == {"receive": 1}
        rig.intake.stop("done")
        await rig.intake.end()

    with caplog.at_level(logging.INFO, logger="ecs_observer"):
        virtual(main)
    failing = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("ecs_")]
    assert failing == [
        "SQS is failing: ReceiveMessage failed: throttled (retrying; logged once until it answers again)"
    ]


def test_it_stops_by_itself_after_so_many_empty_receives_in_a_row() -> None:
    async def main() -> None:
        config = ObserverConfig(receivers=1, wait_time_seconds=1)
        # Empty, empty, two messages (the count starts again), then three empty ones in a row.
        rig = Rig(Queue([], [], messages(2)), config)
        rig.intake.start(3, busy=lambda: False)
        await asyncio.wait_for(rig.intake.stopping.wait(), 100)
        assert len(rig.queue.receives) == 6
        assert rig.intake.why == "the queue was empty for 3 receives in a row"
        await rig.intake.end()

    virtual(main)


def test_empty_receives_while_messages_are_in_flight_do_not_count_as_idle() -> None:
    async def main() -> None:
        config = ObserverConfig(receivers=1, wait_time_seconds=1)
        rig = Rig(Queue(messages(1)), config)
        rig.intake.start(2, busy=lambda: rig.intake.in_flight > 0)
        asyncio.get_running_loop().call_later(5.5, rig.intake.freed)  # its handler finishes
        await asyncio.wait_for(rig.intake.stopping.wait(), 100)
        assert now() == 7.0  # the empty polls ending at 6 and 7, once nothing was in flight
        assert rig.intake.in_flight == 0
        await rig.intake.end()

    virtual(main)


def test_without_until_idle_empty_receives_go_on() -> None:
    async def main() -> None:
        config = ObserverConfig(receivers=1, wait_time_seconds=1)
        rig = Rig(Queue(), config)
        rig.intake.start(None, busy=lambda: False)
        await asyncio.sleep(10.5)
        assert not rig.intake.stopping.is_set()
        assert len(rig.queue.receives) == 11
        rig.intake.stop("done")
        await rig.intake.end()

    virtual(main)


def test_the_first_reason_to_stop_is_kept() -> None:
    async def main() -> None:
        rig = Rig(Queue(hang=True), ObserverConfig(receivers=1))
        assert rig.intake.why == ""
        rig.intake.start(None, busy=lambda: False)
        rig.intake.stop("SIGTERM")
        rig.intake.stop("the queue was empty for 3 receives in a row")
        assert rig.intake.why == "SIGTERM"
        assert rig.intake.health()[0] == ["stopping"]
        await rig.intake.end()

    virtual(main)


def test_health_details_and_the_silence_limit() -> None:
    async def main() -> None:
        config = ObserverConfig(receivers=2, sqs_silence_limit=30.0)
        rig = Rig(Queue(hang=True), config)  # long polls that never answer: no SQS success since the start
        rig.intake.start(None, busy=lambda: False)
        await asyncio.sleep(30.0)
        assert rig.intake.health()[0] == []  # at the limit, not past it
        await asyncio.sleep(1.24)
        assert rig.intake.health() == (
            ["no successful SQS call for 31 s (limit 30.0 s)"],
            {"receive_loops_alive": 2, "seconds_since_sqs_success": 31.2, "in_flight": 0},
        )
        rig.intake.stop("done")
        await rig.intake.end()

    virtual(main)


def test_a_receive_loop_that_ended_makes_it_unhealthy() -> None:
    async def main() -> None:
        config = ObserverConfig(receivers=2)
        rig = Rig(Queue(messages(1), hang=True), config, fail_on_messages=True)
        assert rig.intake.health()[0] == ["0 receive loop(s) ended"]  # not started: no loop at all
        rig.intake.start(None, busy=lambda: False)
        await until(lambda: len(rig.dispatched) == 1)
        await settle()
        reasons, details = rig.intake.health()
        assert reasons == ["1 receive loop(s) ended"]
        assert details["receive_loops_alive"] == 1
        rig.intake.stop("done")
        await rig.intake.end()

    virtual(main)


def test_end_lets_a_long_poll_finish_then_cancels_it_after_the_wait_and_five_seconds() -> None:
    async def main() -> None:
        config = ObserverConfig(receivers=1, wait_time_seconds=10, drain_timeout=25.0)
        rig = Rig(Queue(hang=True), config)
        rig.intake.start(None, busy=lambda: False)
        await settle()
        rig.intake.stop("SIGTERM")
        await rig.intake.end()  # returns, without raising the cancellation of the poll
        assert now() == 15.0
        assert rig.queue.cancelled == 1  # the poll has ended when end() returns
        assert rig.intake.health()[1]["receive_loops_alive"] == 0

    async def within_the_drain_timeout() -> None:
        config = ObserverConfig(receivers=1, wait_time_seconds=10, drain_timeout=3.0)
        rig = Rig(Queue(hang=True), config)
        rig.intake.start(None, busy=lambda: False)
        await settle()
        rig.intake.stop("SIGTERM")
        await rig.intake.end()
        assert now() == 3.0
        assert rig.queue.cancelled == 1

    virtual(main)
    virtual(within_the_drain_timeout)


def test_receiving_pauses_at_the_in_flight_bound_until_a_batch_worth_of_room_is_freed() -> None:
    async def main() -> None:
        config = ObserverConfig(receivers=1, max_in_flight=20, wait_time_seconds=1)
        rig = Rig(Queue(messages(10), messages(10, 10), messages(10, 20)), config)
        rig.intake.start(None, busy=lambda: False)
        await asyncio.sleep(5.0)
        assert len(rig.queue.receives) == 2  # 20 in flight: another full receive would pass the bound
        assert rig.told.flushes == 1  # what waits in the batchers goes now: nothing more comes in
        for _ in range(9):
            rig.intake.freed()
        await asyncio.sleep(5.0)
        assert len(rig.queue.receives) == 2  # 11 in flight: 10 more would still be too many
        rig.intake.freed()
        await until(lambda: len(rig.dispatched) == 3)
        assert rig.dispatched[2] == [f"m{n}" for n in range(20, 30)]
        rig.intake.stop("done")
        await rig.intake.end()

    virtual(main)


def test_concurrent_receives_reserve_room_under_the_bound() -> None:
    async def main() -> None:
        config = ObserverConfig(receivers=3, max_in_flight=20)
        gate = asyncio.Event()
        rig = Rig(Queue(gate=gate), config)
        rig.intake.start(None, busy=lambda: False)
        await asyncio.sleep(1.0)
        assert rig.queue.polling == 2  # each poll may bring 10: a third would pass the bound of 20
        rig.intake.stop("done")
        gate.set()
        await rig.intake.end()
        assert len(rig.queue.receives) == 2

    virtual(main)

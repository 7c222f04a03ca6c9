"""The micro-batcher's contract (support/batcher.py), in virtual time: when a batch goes, who hears what.

Each test runs on the simulation's virtual loop (tests/sim/clock.py), so that a
linger of a second takes no time and a send's instant is exact.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import pytest

from ecs_observer.support.batcher import Batcher

from .sim.clock import virtual

T = TypeVar("T")


def now() -> float:
    return asyncio.get_running_loop().time()


class Recorder:
    """A send that notes when it went and with what; while `hold` is clear it does not answer."""

    def __init__(self, hold: bool = False, fail: Exception | None = None) -> None:
        self.sent: list[tuple[float, list[str]]] = []
        self.released = asyncio.Event()
        if not hold:
            self.released.set()
        self.fail = fail
        self.running = self.most_running = 0
        self.ended: list[float] = []
        self.cancelled = 0

    async def __call__(self, items: list[str]) -> list[str]:
        self.sent.append((round(now(), 3), list(items)))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.released.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
            self.ended.append(round(now(), 3))
        if self.fail is not None:
            raise self.fail
        return [item.upper() for item in items]


async def settle() -> None:
    """Let every ready callback run (the loop's clock moves only when all wait)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_full_batch_goes_at_once() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=10.0, max_items=3)
        answers = asyncio.gather(*(batcher.ask(item) for item in "abcd"))
        await settle()
        assert send.sent == [(0.0, ["a", "b", "c"])]  # the fourth starts the next batch, which lingers
        assert await answers == ["A", "B", "C", "D"]
        assert send.sent[1] == (10.0, ["d"])

    virtual(main)


def test_bytes_bound_a_batch_and_an_item_that_does_not_fit_starts_the_next() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=10.0, max_bytes=10, size=len)
        waiting = [batcher.submit(item) for item in ("aaaa", "bbbb", "ccc", "dddddd", "e")]
        await settle()
        # 8 + 3 > 10: "ccc" opens a batch; 3 + 6 + 1 = 10 fills it, which goes at once.
        assert send.sent == [(0.0, ["aaaa", "bbbb"]), (0.0, ["ccc", "dddddd", "e"])]
        await asyncio.gather(*waiting)

    virtual(main)


def test_max_bytes_needs_a_size() -> None:
    with pytest.raises(ValueError, match=r"^max_bytes and size go together$"):
        Batcher(Recorder(), linger=1.0, max_bytes=10)


def test_a_partial_batch_goes_one_linger_after_its_first_item() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=1.0, max_items=100)
        first = batcher.submit("a")
        await asyncio.sleep(0.6)
        second = batcher.submit("b")  # a later item does not push the batch back
        assert list(await asyncio.gather(first, second)) == ["A", "B"]
        assert send.sent == [(1.0, ["a", "b"])]

    virtual(main)


def test_with_quiet_it_goes_once_no_item_has_joined_for_that_long_within_the_linger() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=1.0, quiet=0.1)
        batcher.submit("a")
        await asyncio.sleep(0.05)
        await batcher.ask("b")
        assert send.sent == [(0.15, ["a", "b"])]  # 0.1 after the last
        items: list[asyncio.Future[str]] = []
        while now() < 1.5:  # one item every 0.07 s, from 0.15: never quiet for 0.1
            items.append(batcher.submit(str(len(items))))
            await asyncio.sleep(0.07)
        await asyncio.gather(*items)
        assert send.sent[1] == (1.15, [str(n) for n in range(15)])  # a linger after its first item

    virtual(main)


def test_in_a_backlog_a_batch_waits_the_backlog_linger() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=0.1, quiet=0.05, backlog_linger=1.0)
        batcher.intake(full=True)
        await batcher.ask("a")
        assert send.sent == [(1.0, ["a"])]
        batcher.intake(full=True)
        await batcher.ask("b")  # still a backlog: the quiet does not count either
        assert send.sent[1] == (2.0, ["b"])

    virtual(main)


def test_when_the_intake_catches_up_a_waiting_batch_goes_at_once() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=0.1, backlog_linger=1.0)
        batcher.intake(full=True)
        waiting = batcher.submit("a")
        await asyncio.sleep(0.3)
        batcher.intake(full=False)
        await waiting
        assert send.sent == [(0.3, ["a"])]

    virtual(main)


def test_with_quiet_a_caught_up_batch_goes_after_a_quiet_within_its_linger() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=1.0, quiet=0.1, backlog_linger=5.0)
        batcher.intake(full=True)
        waiting = [batcher.submit("a")]
        await asyncio.sleep(0.5)
        batcher.intake(full=False)  # the short receive's own items are still to join
        waiting.append(batcher.submit("b"))
        await asyncio.gather(*waiting)
        assert send.sent == [(0.6, ["a", "b"])]
        batcher.intake(full=True)
        late = batcher.submit("c")
        await asyncio.sleep(1.5)  # past its trickle linger, but in a backlog
        batcher.intake(full=False)
        await late
        assert send.sent[1] == (2.1, ["c"])  # at once: its linger has passed

    virtual(main)


def test_a_batch_keeps_waiting_while_receives_stay_full() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=0.1, backlog_linger=1.0)
        batcher.intake(full=True)
        waiting = batcher.submit("a")
        batcher.intake(full=True)
        await waiting
        assert send.sent == [(1.0, ["a"])]

    virtual(main)


def test_flush_sends_the_waiting_batch_now() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=10.0)
        waiting = batcher.submit("a")
        await asyncio.sleep(0.2)
        batcher.flush()
        batcher.flush()  # nothing waits: no empty send
        assert await waiting == "A"
        assert send.sent == [(0.2, ["a"])]
        await asyncio.sleep(0.5)
        await batcher.ask("b")  # the flushed batch's timer is gone: it does not cut this one short
        assert send.sent[1] == (10.7, ["b"])

    virtual(main)


def test_a_failed_send_fails_every_waiter_of_its_batch_and_no_other() -> None:
    boom = RuntimeError("the sink is down")

    async def send(items: list[str]) -> list[str]:
        if "a" in items:
            raise boom
        return [item.upper() for item in items]

    async def main() -> None:
        batcher: Batcher[str, str] = Batcher(send, linger=0.1, max_items=2)
        failed = [batcher.submit(item) for item in "ab"]
        later = batcher.submit("c")
        results = await asyncio.gather(*failed, later, return_exceptions=True)
        assert results == [boom, boom, "C"]

    async def fails_after_taking_the_batch() -> None:
        send = Recorder(hold=True, fail=RuntimeError("timeout"))
        batcher: Batcher[str, str] = Batcher(send, linger=0.1)
        results = asyncio.gather(*(batcher.ask(item) for item in "ab"), return_exceptions=True)
        await asyncio.sleep(0.2)
        send.released.set()
        assert [str(error) for error in await results] == ["timeout", "timeout"]

    virtual(main)
    virtual(fails_after_taking_the_batch)


def test_a_send_answering_too_few_fails_its_waiters() -> None:
    async def short(items: list[str]) -> list[str]:
        return items[:-1]

    async def main() -> None:
        batcher: Batcher[str, str] = Batcher(short, linger=0.1)
        results = await asyncio.gather(batcher.ask("a"), batcher.ask("b"), return_exceptions=True)
        assert [str(error) for error in results] == ["1 answers for 2 items"] * 2

    virtual(main)


def test_close_cancels_the_waiters_and_the_sends_under_way() -> None:
    async def main() -> None:
        send = Recorder(hold=True)
        batcher: Batcher[str, str] = Batcher(send, linger=0.1, max_items=2)
        in_flight = [batcher.submit(item) for item in "ab"]  # full: sent at once, held
        unsent = batcher.submit("c")
        await settle()
        await batcher.close()
        assert send.cancelled == 1
        assert send.running == 0  # close returned after the send ended
        assert all(future.cancelled() for future in (*in_flight, unsent))
        await asyncio.sleep(1.0)
        assert len(send.sent) == 1  # the open batch's timer went with it

    virtual(main)


def test_close_cancels_the_waiters_of_a_send_that_had_not_started() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=0.1)
        waiting = batcher.submit("a")
        batcher.flush()  # its send is created but has not run yet
        await batcher.close()
        assert waiting.cancelled()
        assert send.sent == []

    virtual(main)


def test_drain_sends_what_waits_and_awaits_every_send() -> None:
    async def main() -> None:
        send = Recorder(hold=True)
        batcher: Batcher[str, str] = Batcher(send, linger=10.0, max_items=2)
        waiting = [batcher.submit(item) for item in "abc"]
        asyncio.get_running_loop().call_later(0.5, send.released.set)
        await batcher.drain()
        assert now() == pytest.approx(0.5, abs=1e-3)
        assert [future.result() for future in waiting] == ["A", "B", "C"]
        assert [items for _, items in send.sent] == [["a", "b"], ["c"]]

    virtual(main)


def test_at_most_concurrency_sends_run_at_once() -> None:
    async def main() -> None:
        send = Recorder(hold=True)
        batcher: Batcher[str, str] = Batcher(send, linger=0.1, max_items=1, concurrency=2)
        waiting = [batcher.submit(str(n)) for n in range(5)]
        await asyncio.sleep(1.0)
        assert send.running == 2
        send.released.set()
        assert await asyncio.gather(*waiting) == [str(n) for n in range(5)]
        assert send.most_running == 2

    virtual(main)


def test_with_spacing_a_slot_rests_between_sends() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=0.1, concurrency=1, spacing=1.0)
        first = batcher.submit("a")  # sent at 0.1; its slot rests until 1.1
        await asyncio.sleep(0.5)
        await asyncio.gather(first, batcher.ask("b"))  # its linger ends at 0.6, the rest at 1.1
        await asyncio.sleep(3.0 - now())
        await batcher.ask("c")  # long after the rest: its linger alone
        assert [at for at, _ in send.sent] == [0.1, 1.1, 3.1]

    virtual(main)


def test_distinct_items_wait_for_one_answer_and_are_sent_once() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=0.1, distinct=True)
        assert list(await asyncio.gather(batcher.ask("a"), batcher.ask("b"), batcher.ask("a"))) == ["A", "B", "A"]
        assert send.sent == [(0.1, ["a", "b"])]
        plain: Batcher[str, str] = Batcher(send, linger=0.1)
        await asyncio.gather(plain.ask("a"), plain.ask("a"))
        assert send.sent[1][1] == ["a", "a"]

    virtual(main)


def test_a_question_asked_while_its_batch_is_sent_waits_for_the_next() -> None:
    async def main() -> None:
        send = Recorder(hold=True)
        batcher: Batcher[str, str] = Batcher(send, linger=0.1, distinct=True)
        early = batcher.submit("a")
        await asyncio.sleep(0.2)  # its send is under way
        late = batcher.submit("a")
        assert late is not early
        send.released.set()
        await asyncio.gather(early, late)
        assert [items for _, items in send.sent] == [["a"], ["a"]]

    virtual(main)


def test_a_cancelled_waiter_leaves_the_others_their_answers() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=0.1, distinct=True)
        gone = asyncio.ensure_future(batcher.ask("a"))
        stays = asyncio.ensure_future(batcher.ask("a"))  # the same item: one answer for both
        await settle()
        gone.cancel()
        assert await stays == "A"
        assert send.sent == [(0.1, ["a"])]

    virtual(main)


def test_without_a_backlog_linger_a_batch_waits_its_linger_in_a_backlog_too() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=0.3)
        batcher.intake(full=True)
        await batcher.ask("a")
        assert send.sent == [(0.3, ["a"])]

    virtual(main)


def test_caught_up_within_its_linger_a_batch_goes_at_once_without_what_comes_next() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=1.0, backlog_linger=5.0)
        batcher.intake(full=True)
        waiting = [batcher.submit("a")]
        await asyncio.sleep(0.3)
        batcher.intake(full=False)
        waiting.append(batcher.submit("b"))  # the short receive's own item: the next batch, a linger from now
        await asyncio.gather(*waiting)
        assert send.sent == [(0.3, ["a"]), (1.3, ["b"])]

    virtual(main)


def test_without_spacing_a_slot_is_free_again_as_soon_as_its_send_ends() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=0.1, max_items=1, concurrency=1)
        await asyncio.gather(batcher.ask("a"), batcher.ask("b"))
        assert send.sent == [(0.0, ["a"]), (0.0, ["b"])]

    virtual(main)


def test_a_drain_under_way_when_close_cancels_the_sends_returns_quietly() -> None:
    async def main() -> None:
        send = Recorder(hold=True)
        batcher: Batcher[str, str] = Batcher(send, linger=10.0)
        waiting = batcher.submit("a")
        draining = asyncio.ensure_future(batcher.drain())
        await settle()
        await batcher.close()
        await draining  # not the cancellation of the send it waited for
        assert waiting.cancelled()
        assert send.cancelled == 1

    virtual(main)


def test_after_close_the_old_batch_timer_does_not_cut_a_new_batch_short() -> None:
    async def main() -> None:
        send = Recorder()
        batcher: Batcher[str, str] = Batcher(send, linger=1.0)
        gone = batcher.submit("a")  # due at 1.0
        await asyncio.sleep(0.5)
        await batcher.close()
        assert gone.cancelled()
        await batcher.ask("b")
        assert send.sent == [(1.5, ["b"])]

    virtual(main)

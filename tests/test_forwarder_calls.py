"""The events' way to Prefect (pipeline/forwarder.py) against a recording sink, in virtual time: what each POST
holds, when it goes, how many run at once, and what a waiting handler hears.

Each test runs on the simulation's virtual loop (tests/sim/clock.py), so that a linger takes no time and a
POST's instant is exact.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TypeVar
from uuid import UUID, uuid4

from ecs_observer.core.translate import PrefectEvent
from ecs_observer.pipeline.forwarder import Forwarder
from ecs_observer.ports import EncodedEvent

from .sim.clock import virtual

T = TypeVar("T")


def now() -> float:
    return round(asyncio.get_running_loop().time(), 3)


def event(name: str = "task-1") -> PrefectEvent:
    return PrefectEvent(
        id=uuid4(),
        event="prefect.ecs.task.running",
        occurred="2026-01-01T00:00:00Z",
        resource={"prefect.resource.id": f"prefect.ecs.task.{name}"},
        related=({"prefect.resource.id": "prefect.flow-run.1", "prefect.resource.role": "flow-run"},),
    )


class Sink:
    """Notes each POST; refuses the events named in `refuse`; while `hold` is clear it does not answer."""

    def __init__(self, hold: bool = False) -> None:
        self.posts: list[tuple[float, list[EncodedEvent]]] = []
        self.refuse: dict[UUID, str] = {}
        self.released = asyncio.Event()
        if not hold:
            self.released.set()
        self.running = self.most_running = 0

    async def send(self, events: Sequence[EncodedEvent]) -> dict[UUID, str]:
        self.posts.append((now(), list(events)))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.released.wait()
        finally:
            self.running -= 1
        return {encoded.id: why for encoded, why in ((e, self.refuse.get(e.id)) for e in events) if why is not None}

    async def aclose(self) -> None:
        pass


def test_a_lone_event_goes_one_linger_later_as_compact_json_and_its_handler_hears_the_answer() -> None:
    async def main() -> None:
        sink = Sink()
        forwarder = Forwarder(sink)  # the defaults: a linger of 0.05 s
        accepted, refused = event("a"), event("b")
        sink.refuse[refused.id] = "422: invalid resource"
        answers = await asyncio.gather(forwarder.forward(accepted), forwarder.forward(refused))
        assert list(answers) == [None, "422: invalid resource"]
        [(at, batch)] = sink.posts
        assert at == 0.05
        assert [encoded.id for encoded in batch] == [accepted.id, refused.id]
        body = batch[0].json
        assert json.loads(body) == accepted.to_json()
        assert b" " not in body  # no space after separators: the bytes counted are the bytes POSTed

    virtual(main)


def test_by_default_200_events_go_at_once_and_the_next_waits() -> None:
    async def main() -> None:
        sink = Sink()
        forwarder = Forwarder(sink)
        await asyncio.gather(*(forwarder.forward(event(str(n))) for n in range(201)))
        assert [(at, len(batch)) for at, batch in sink.posts] == [(0.0, 200), (0.05, 1)]

    virtual(main)


def test_by_default_a_million_bytes_with_their_commas_go_at_once() -> None:
    async def main() -> None:
        sink = Sink()
        forwarder = Forwarder(sink)
        # Each event 250,000 bytes in the POSTed array, its comma included: four fill a batch exactly.
        padding = 250_000 - 1 - len(json.dumps(event("").to_json(), separators=(",", ":")))
        events = [event("x" * padding) for _ in range(4)]
        assert all(len(json.dumps(e.to_json(), separators=(",", ":"))) + 1 == 250_000 for e in events)
        await asyncio.gather(*(forwarder.forward(e) for e in events))
        assert [(at, len(batch)) for at, batch in sink.posts] == [(0.0, 4)]  # full: it does not linger

    virtual(main)


def test_by_default_at_most_four_posts_run_at_once() -> None:
    async def main() -> None:
        sink = Sink(hold=True)
        forwarder = Forwarder(sink, max_events=1)
        waiting = asyncio.gather(*(forwarder.forward(event(str(n))) for n in range(6)))
        await asyncio.sleep(1.0)
        assert sink.running == 4
        sink.released.set()
        await waiting
        assert len(sink.posts) == 6
        assert sink.most_running == 4

    virtual(main)


def test_in_a_backlog_events_wait_ten_lingers_for_a_fuller_post() -> None:
    async def main() -> None:
        sink = Sink()
        forwarder = Forwarder(sink, linger=0.1)
        forwarder.batches.intake(full=True)
        await forwarder.forward(event())
        assert [at for at, _ in sink.posts] == [1.0]

    virtual(main)

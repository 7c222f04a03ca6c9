"""The settings the observer hands its parts, and what it counts, as the world sees them: a POST to Prefect's
events route holds at most `batch_size` events and `batch_bytes` bytes (Prefect Cloud refuses a request over
5 MiB); each message of no task's change is counted as ignored.

The simulation's seeds keep the defaults (200 events, 1 MB), which no seed's burst reaches; here one backlog
(seed 32: 43 messages, one replica; its largest POST holds 26 events, 18.7 kB, with the defaults) runs with
each bound set low, and every other invariant must hold too.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from tests.sim.run import simulate
from tests.sim.scenario import Delivery, draw
from tests.sim.world import World


def _world(seed: int, **changes: Any) -> World:
    """The world of the seed's scenario with `changes` made to it, after a run in which every invariant held."""
    scenario = draw(seed)
    worlds: list[World] = []
    outcome = simulate(seed, replace(scenario, **changes), worlds.append)
    assert outcome.ok, outcome.violations[:3]
    return worlds[0]


def _posts(**settings: Any) -> list[tuple[int, int]]:
    """Each POST /events of the run (its events, their bytes), with the settings given."""
    world = _world(32, config=replace(draw(32).config, **settings))
    return [post for replica in world.replicas for post in (replica.prefect.posts if replica.prefect else ())]


def test_a_post_holds_at_most_batch_size_events() -> None:
    posts = _posts(batch_size=3)
    assert max(events for events, _ in posts) == 3  # reached, never passed (the invariant checks each)
    assert sum(events for events, _ in posts) > 3 * 10


def test_a_post_holds_at_most_batch_bytes() -> None:
    posts = _posts(batch_bytes=10_000)
    assert 7_000 < max(size for _, size in posts) <= 10_000  # filled up to the bound: about 750 bytes an event


def test_each_message_of_no_tasks_change_is_counted_ignored() -> None:
    """Three more EventBridge events that are no ECS task's change in a calm backlog (seed 1: one replica, no
    SQS fault): `/metrics`' `ignored` counts each one deleted (the invariant holds it to the messages)."""
    body = json.dumps({"detail-type": "Scheduled Event", "source": "aws.events"})
    others = tuple(Delivery(1.0 + n, f"scheduled-{n}", body) for n in range(3))
    world = _world(1, deliveries=draw(1).deliveries + others)
    assert sum(replica.stats.ignored for replica in world.replicas) == 3

"""The faults of one run: which, how often, when; drawn from the seed, counted as they happen."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

__all__ = ["FaultPlan", "Faults", "SimError"]


class SimError(Exception):
    """An error a simulated service answers: throttling, a 500, a reset connection."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Rates are chances per call (or per entry, for batch calls); times are virtual seconds."""

    sqs_error: float = 0.0  # ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibilityBatch raise
    sqs_partial: float = 0.0  # an entry of a batch call fails
    sqs_duplicate: float = 0.0  # a receive also hands out a message another receiver holds
    ecs_error: float = 0.0  # DescribeTasks raises (throttled)
    ecs_missing_for: float = 0.0  # a new task is MISSING for this long after it starts
    ecs_denied: float = 0.0  # chance a task is undescribable (ACCESS_DENIED) for its first minute
    store_latency: float = 0.001  # each store call takes up to this long
    store_error: float = 0.0  # a store call fails and is retried by the adapter (more latency)
    prefect_latency: float = 0.001
    prefect_error: float = 0.0  # a Prefect call answers 5xx/429/times out: the adapter retries (latency)
    prefect_gives_up: float = 0.0  # a Prefect call raises after all (the port's caller keeps the message)
    outage: tuple[float, float] | None = None  # Prefect answers nothing from .. to (virtual seconds)
    sqs_outage: tuple[float, float] | None = None  # every SQS call fails from .. to (virtual seconds)
    refused: float = 0.0  # chance an event is invalid for Prefect: refused with 422, always
    kills: tuple[float, ...] = ()  # when a replica is killed (and restarted `restart_after` later)
    restart_after: float = 5.0
    # When a replica is stopped gracefully (SIGTERM, as each deploy does) and which one (a fraction of the
    # live ones); its replacement starts at once, as ECS starts a new task before the old one stops.
    stops: tuple[tuple[float, float], ...] = ()

    @staticmethod
    def draw(rng: random.Random, replicas: int) -> FaultPlan:
        """Each fault on in about a third of the runs, at a rate of its own."""

        def some(high: float) -> float:
            return rng.uniform(0.0, high) if rng.random() < 0.35 else 0.0

        outage = None
        if rng.random() < 0.2:
            start = rng.uniform(0.0, 60.0)
            outage = (start, start + rng.choice((5.0, 30.0, 200.0)))
        kills: tuple[float, ...] = ()
        if rng.random() < 0.25:
            kills = tuple(sorted(rng.uniform(0.5, 40.0) for _ in range(rng.randint(1, 2))))
        return FaultPlan(
            sqs_error=some(0.2),
            sqs_partial=some(0.2),
            sqs_duplicate=some(0.2),
            ecs_error=some(0.3),
            ecs_missing_for=rng.choice((0.0, 0.0, 2.0, 5.0)),
            ecs_denied=some(0.3),
            store_latency=rng.choice((0.001, 0.01, 0.1, 0.5)) if replicas > 1 else 0.0,
            store_error=some(0.2) if replicas > 1 else 0.0,
            prefect_latency=rng.choice((0.001, 0.01, 0.2)),
            prefect_error=some(0.3),
            prefect_gives_up=some(0.05),
            outage=outage,
            refused=some(0.1),
            kills=kills,
            restart_after=rng.choice((0.5, 5.0, 60.0)),
        )


class Faults:
    """The plan, the run's random source, and a count of the faults that actually happened."""

    def __init__(self, plan: FaultPlan, rng: random.Random) -> None:
        self.plan = plan
        self.rng = rng
        self.exercised: Counter[str] = Counter()

    def happens(self, name: str, rate: float) -> bool:
        if rate > 0 and self.rng.random() < rate:
            self.exercised[name] += 1
            return True
        return False

    def sqs_down(self, now: float) -> bool:
        down = self.plan.sqs_outage is not None and self.plan.sqs_outage[0] <= now < self.plan.sqs_outage[1]
        if down:
            self.exercised["sqs: outage"] += 1
        return down

    def latency(self, high: float) -> float:
        return self.rng.uniform(0.0, high) if high > 0 else 0.0

"""The simulated services of one run, set up as the scenario says, and the replicas plugged into them."""

from __future__ import annotations

import functools
import random
from collections import Counter
from dataclasses import dataclass, field
from uuid import UUID

from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.core.run_states import RunState
from ecs_observer.core.sweep import Scope
from ecs_observer.core.task_view import sweep_event_id
from ecs_observer.pipeline.observer import Observer
from ecs_observer.pipeline.sweep import Sweeper
from ecs_observer.ports import TaskStateStore
from ecs_observer.support.stats import Stats

from .clock import EPOCH, VirtualClock
from .ecs import EcsTask, EcsView, SimEcs
from .faults import Faults
from .life import Life
from .prefect import PrefectView, SimPrefect, SimRun
from .queue import QueueView, SimQueue
from .scenario import ACCOUNT, CLUSTER_ARN, FOREIGN_ACCOUNT, STOPS, Delivery, Scenario, TaskPlan
from .store import SharedStore, StoreView

__all__ = ["Replica", "Stopped", "Violation", "World"]


@dataclass(frozen=True, slots=True)
class Violation:
    """An invariant that did not hold: which, and what was seen."""

    invariant: str
    detail: str


@dataclass
class Replica:
    """One observer process: its life, and what it was given."""

    name: str
    life: Life
    observer: Observer
    stats: Stats
    sweeper: Sweeper | None = None
    tally: Counter[str] = field(default_factory=Counter)  # what its ports were asked and answered
    queue: QueueView | None = None
    prefect: PrefectView | None = None
    sweeps: list[SweepRecord] = field(default_factory=list)  # each sweep() that returned, as its ports saw it
    stopped: Stopped | None = None  # stopped gracefully during the run (a deploy)


@dataclass
class Stopped:
    """A replica a deploy stopped: when it was told, and when its `run` returned with what its ports had seen."""

    at: float
    returned_at: float | None = None
    tally: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class SweepRecord:
    """One sweep that returned: the runs it read, its outcomes, and what it added to the stats."""

    runs_read: int
    outcomes: dict[UUID, str]
    reconciled: dict[str, int]
    sweeps: int


@dataclass(eq=False)
class World:
    scenario: Scenario
    clock: VirtualClock
    faults: Faults
    queue: SimQueue
    ecs: SimEcs
    store: SharedStore
    prefect: SimPrefect
    violations: list[Violation] = field(default_factory=list)
    replicas: list[Replica] = field(default_factory=list)

    @staticmethod
    def of(scenario: Scenario, clock: VirtualClock) -> World:
        faults = Faults(scenario.faults, random.Random(scenario.seed * 7919 + 1))
        world = World(
            scenario,
            clock,
            faults,
            SimQueue(faults, scenario.max_receive),
            SimEcs(faults, clock),
            SharedStore(faults, clock),
            SimPrefect(faults, clock),
        )
        denial = scenario.faults.ecs_denied
        for plan in scenario.tasks:
            started = (plan.start - EPOCH).total_seconds()
            world.ecs.add(
                EcsTask(
                    arn=plan.arn,
                    task_id=plan.task_id,
                    region="us-east-1",
                    cluster_arn=CLUSTER_ARN,
                    definition_arn=plan.definition_arn,
                    tags=plan.tags,
                    statuses=[(plan.occurred(v), s, v) for v, s in enumerate(plan.statuses, start=1)],
                    exit_code=STOPS[plan.stop][1],
                    stop_code=STOPS[plan.stop][0],
                    started=started,
                    gone=plan.tags_gone,
                    denied_until=max(started, 0.0) + 60.0 if faults.happens("ecs: task denied", denial) else 0.0,
                )
            )
            if plan.logs:
                world.ecs.definitions_logging.add(plan.definition_arn)
            if plan.run_id is not None and plan.run_known:
                world.prefect.runs[plan.run_id] = SimRun(
                    plan.run_id,
                    plan.run_answer,
                    [(RunState(*plan.run_state, plan.arn), "")],
                    plan.start,
                    f"prefect::{plan.arn}",
                )
        world.prefect.invalid = set(scenario.invalid_events)
        if scenario.foreign_run is not None:
            arn = f"arn:aws:ecs:us-east-1:{FOREIGN_ACCOUNT}:task/prefect/{scenario.foreign_run.hex}"
            state = RunState("RUNNING", "Running", arn)
            world.prefect.runs[scenario.foreign_run] = SimRun(
                scenario.foreign_run, "ACCEPT", [(state, "")], EPOCH, f"prefect::{arn}"
            )
        return world

    def violate(self, invariant: str, detail: str) -> None:
        self.violations.append(Violation(invariant, detail))

    def start_replica(self) -> Replica:
        """A new observer process, with empty memory, plugged in as app/service.py plugs in the real adapters."""
        name = f"replica-{len(self.replicas)}"
        life = Life(name)
        stats = Stats()
        config = self.scenario.config
        store: TaskStateStore = (
            StoreView(self.store, life) if self.scenario.shared else MemoryTaskState(config.cache_size)
        )

        def received(count: int) -> None:
            held = observer.in_flight  # intake's own count, which its bound is kept by
            if life.alive and held + count > config.max_in_flight:
                self.violate("in-flight bound", f"{name}: {held} + {count} > {config.max_in_flight}")

        tally: Counter[str] = Counter()
        ecs, prefect = EcsView(self.ecs, life, tally), PrefectView(self.prefect, life, tally)
        queue = QueueView(self.queue, life, received, tally)
        observer = Observer(
            queue,
            ecs,
            store,
            prefect,
            config,
            stats,
            prefect,
            ecs,
            ecs,
        )
        sweeper = None
        if self.scenario.sweeps:
            scope = Scope.of(ACCOUNT, [CLUSTER_ARN])
            sweeper = Sweeper(observer, prefect, ecs, store, stats, config, scope, ecs)
        replica = Replica(name, life, observer, stats, sweeper, tally, queue, prefect)
        if sweeper is not None:
            _record_sweeps(replica, sweeper, prefect, stats)
        self.replicas.append(replica)
        return replica

    def delivery(self, message_id: str) -> Delivery | None:
        return self._deliveries().get(message_id)

    def task(self, task_arn: str) -> TaskPlan:
        return next(t for t in self.scenario.tasks if t.arn == task_arn)

    @functools.cache  # noqa: B019 (one world per run)
    def _deliveries(self) -> dict[str, Delivery]:
        return {d.message_id: d for d in self.scenario.deliveries}

    @functools.cache  # noqa: B019 (one world per run)
    def known_ids(self) -> dict[tuple[str, int], set[UUID]]:
        """Every event id that carries each (task, version)."""
        ids: dict[tuple[str, int], set[UUID]] = {}
        for d in self.scenario.deliveries:
            if d.event_id is not None and d.task_arn is not None and d.version is not None:
                ids.setdefault((d.task_arn, d.version), set()).add(d.event_id)
        for task in self.scenario.tasks:
            last = len(task.statuses)
            if self.scenario.sweeps and task.statuses[-1] == "STOPPED":  # the sweep's STOPPED of a lost one
                ids.setdefault((task.arn, last), set()).add(sweep_event_id(task.arn, last))
        return ids


def _record_sweeps(replica: Replica, sweeper: Sweeper, prefect: PrefectView, stats: Stats) -> None:
    """Each sweep's outcomes and its stats, recorded for `invariants._sweeps` (the loop calls `self.sweep()`)."""
    sweep = sweeper.sweep

    async def recorded() -> dict[UUID, str]:
        read, reconciled, sweeps = prefect.runs_read, Counter(stats.reconciled), stats.sweeps
        outcomes = await sweep()
        added = Counter(stats.reconciled)
        added.subtract(reconciled)
        record = SweepRecord(prefect.runs_read - read, dict(outcomes), _nonzero(added), stats.sweeps - sweeps)
        replica.sweeps.append(record)
        return outcomes

    sweeper.sweep = recorded  # type: ignore[method-assign]


def _nonzero(counts: Counter[str]) -> dict[str, int]:
    return {key: n for key, n in counts.items() if n}

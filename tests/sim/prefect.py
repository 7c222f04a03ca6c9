"""Prefect as the observer relies on it: events kept once by id, flow runs with orchestration answers.

Faults arrive as the adapters pass them on: 5xx, 429 and timeouts are retried
by the Prefect client, so the port's call just takes longer; an outage holds
every call until it ends; a call may still raise (the port's caller keeps the
message); an event chosen as invalid is refused (422) every time. Each run
answers proposals as its orchestration does: ACCEPT, or always REJECT, ABORT
or WAIT; a proposal that would take a final run out of its final state is
rejected, as Prefect's orchestration rules reject it.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from ecs_observer.core.run_states import FINAL, RESCHEDULE_MARK, Proposal, ProposalAnswer, RunLog, RunState
from ecs_observer.core.sweep import RunToReconcile
from ecs_observer.ports import EncodedEvent

from .clock import VirtualClock
from .faults import Faults, SimError
from .life import Life

__all__ = ["PrefectView", "SimPrefect", "SimRun"]


@dataclass
class SimRun:
    run_id: UUID
    answer: ProposalAnswer  # how its orchestration answers every proposal: ACCEPT, REJECT, ABORT, WAIT
    history: list[tuple[RunState, str]]  # (state, message), oldest first
    since: datetime
    pid: str | None  # infrastructure_pid: "<cluster>::<task arn>"
    logs: list[RunLog] = field(default_factory=list)
    proposals: list[tuple[Proposal, ProposalAnswer]] = field(default_factory=list)  # as proposed, with the answer

    @property
    def state(self) -> RunState:
        return self.history[-1][0]


class SimPrefect:
    def __init__(self, faults: Faults, clock: VirtualClock) -> None:
        self._faults = faults
        self._clock = clock
        self.events: dict[UUID, dict[str, Any]] = {}  # accepted, first copy kept
        self.invalid: set[UUID] = set()  # events Prefect refuses
        self.runs: dict[UUID, SimRun] = {}
        self.failed_crash_logs: set[UUID] = set()  # runs whose crash logs' post raised (the caller saw it fail)

    async def _call(self, life: Life, what: str) -> None:
        plan, loop = self._faults.plan, asyncio.get_running_loop()
        await life.pause(self._faults.latency(plan.prefect_latency))
        while self._faults.happens(f"prefect: {what} answered 5xx/429/timeout, retried", plan.prefect_error):
            await life.pause(self._faults.latency(1.0))
        if plan.outage is not None and plan.outage[0] <= loop.time() < plan.outage[1]:
            self._faults.exercised["prefect: outage"] += 1
            await life.pause(plan.outage[1] - loop.time())
        if self._faults.happens(f"prefect: {what} raised", plan.prefect_gives_up):
            raise SimError("the Prefect client gave up")

    async def send(self, life: Life, events: Sequence[EncodedEvent]) -> dict[UUID, str]:
        await self._call(life, "POST /events")
        refused = {}
        for event in events:
            if event.id in self.invalid:
                self._faults.exercised["prefect: an event refused (422)"] += 1
                refused[event.id] = "HTTP 422: invalid event"
            else:
                self.events.setdefault(event.id, json.loads(event.json))
        await life.check()
        return refused

    async def states(self, life: Life, run_ids: Collection[UUID]) -> Mapping[UUID, RunState]:
        await self._call(life, "flow_runs/filter")
        found = {run_id: self.runs[run_id].state for run_id in run_ids if run_id in self.runs}
        await life.check()
        return found

    async def propose(self, life: Life, run_id: UUID, proposal: Proposal) -> ProposalAnswer:
        await self._call(life, "set_state")
        run = self.runs.get(run_id)
        if run is None:
            await life.check()
            return "MISSING"
        answer = run.answer
        if answer == "ACCEPT" and run.state.type in FINAL:
            answer = "REJECT"
        if answer != "ACCEPT":
            self._faults.exercised[f"prefect: orchestration answered {answer}"] += 1
        run.proposals.append((proposal, answer))
        if answer == "ACCEPT":
            run.history.append((RunState(proposal.type, proposal.name, run.state.task_arn), proposal.message))
            run.since = self._clock.wall()
        await life.check()
        return answer

    async def log(self, life: Life, logs: Sequence[RunLog]) -> None:
        try:
            await self._call(life, "logs")
        except SimError:
            self.failed_crash_logs |= {entry.run_id for entry in logs if entry.message.startswith("The last ")}
            raise
        for entry in logs:
            if entry.run_id in self.runs:
                self.runs[entry.run_id].logs.append(entry)
        await life.check()

    async def to_reconcile(
        self, life: Life, final_since: datetime | None, final_types: Collection[str]
    ) -> AsyncIterator[list[RunToReconcile]]:
        await self._call(life, "flow_runs/filter")
        page = [
            RunToReconcile(run.run_id, f"run-{run.run_id.hex[:6]}", run.state, run.since, run.pid)
            for run in self.runs.values()
            if run.state.type in ("PENDING", "RUNNING", "CANCELLING")
            or (run.state.type in final_types and (final_since is None or run.since > final_since))
        ]
        await life.check()
        for start in range(0, len(page), 200):
            yield page[start : start + 200]

    async def reschedules(self, life: Life, run_id: UUID) -> int:
        await self._call(life, "flow_run_states")
        run = self.runs.get(run_id)
        count = sum(message.startswith(RESCHEDULE_MARK) for _, message in run.history) if run else 0
        await life.check()
        return count


class PrefectView:
    """Prefect as one replica reaches it: `EventSink` and `FlowRuns`."""

    def __init__(self, prefect: SimPrefect, life: Life, tally: Counter[str]) -> None:
        self._prefect = prefect
        self._life = life
        self.tally = tally  # what the replica asked and was answered (shared by its views)
        self.runs_read = 0  # runs handed to the sweep, over its life
        self.posts: list[tuple[int, int]] = []  # each POST /events: its events, and their bytes in the array

    async def send(self, events: Sequence[EncodedEvent]) -> dict[UUID, str]:
        self.posts.append((len(events), sum(len(event.json) + 1 for event in events)))
        refused = await self._prefect.send(self._life, events)
        self.tally["refused"] += len(refused)
        return refused

    async def aclose(self) -> None:
        return None

    async def states(self, run_ids: Collection[UUID]) -> Mapping[UUID, RunState]:
        return await self._prefect.states(self._life, run_ids)

    async def propose(self, run_id: UUID, proposal: Proposal) -> ProposalAnswer:
        answer = await self._prefect.propose(self._life, run_id, proposal)
        self.tally[f"state_proposals:{answer}"] += answer != "MISSING"  # counted with the runs not found
        self.tally["reschedules"] += proposal.type == "SCHEDULED" and answer == "ACCEPT"
        return answer

    async def log(self, logs: Sequence[RunLog]) -> None:
        await self._prefect.log(self._life, logs)
        self.tally["run_logs"] += 1

    def to_reconcile(
        self, final_since: datetime | None, final_types: Collection[str]
    ) -> AsyncIterator[list[RunToReconcile]]:
        return self._counted(self._prefect.to_reconcile(self._life, final_since, final_types))

    async def _counted(self, pages: AsyncIterator[list[RunToReconcile]]) -> AsyncIterator[list[RunToReconcile]]:
        async for page in pages:
            self.runs_read += len(page)  # what the sweep read, for the invariant on its outcomes
            yield page

    async def reschedules(self, run_id: UUID) -> int:
        return await self._prefect.reschedules(self._life, run_id)

"""The demo's flow runs: in memory when no Prefect API is given, else created in that Prefect.

In memory, each run starts Pending (as the ECS worker leaves it once it has
submitted the task) and every proposal is accepted; with a Prefect API, the
runs are real and Prefect's orchestration decides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from uuid import UUID

from ...adapters.prefect.client import PrefectClient
from ...adapters.prefect.flow_runs import MAX_RUNS_PER_READ
from ...core.run_states import RESCHEDULE_MARK, Proposal, ProposalAnswer, RunLog, RunState
from ...core.sweep import ACTIVE, RunToReconcile, task_of

__all__ = ["MemoryFlowRuns", "create_runs", "read_back"]


class MemoryFlowRuns:
    """`ports.FlowRuns` in memory: each run's state history (with each state's message and time), its
    name and `infrastructure_pid` (`pids`, set by whoever plays the worker), and its logs."""

    def __init__(self, run_ids: Collection[UUID], now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.now = now
        start = now()
        self.histories: dict[UUID, list[RunState]] = {run_id: [RunState("PENDING", "Pending")] for run_id in run_ids}
        self.state_messages: dict[UUID, list[str]] = {run_id: [""] for run_id in run_ids}
        self.state_times: dict[UUID, list[datetime]] = {run_id: [start] for run_id in run_ids}
        self.messages: dict[UUID, str] = {}  # the last state's message, once one was proposed
        self.names: dict[UUID, str] = {run_id: f"run-{run_id.hex[:8]}" for run_id in run_ids}
        self.pids: dict[UUID, str] = {}
        self.logs: dict[UUID, list[RunLog]] = {run_id: [] for run_id in run_ids}

    def _current(self, run_id: UUID) -> RunState:
        ref = task_of(self.pids.get(run_id))
        return replace(self.histories[run_id][-1], task_arn=ref.task_arn if ref is not None else None)

    async def states(self, run_ids: Collection[UUID]) -> Mapping[UUID, RunState]:
        return {run_id: self._current(run_id) for run_id in run_ids if run_id in self.histories}

    async def propose(self, run_id: UUID, proposal: Proposal) -> ProposalAnswer:
        if run_id not in self.histories:
            return "MISSING"
        self.histories[run_id].append(RunState(proposal.type, proposal.name))
        self.state_messages[run_id].append(proposal.message)
        self.state_times[run_id].append(self.now())
        self.messages[run_id] = proposal.message
        return "ACCEPT"

    async def to_reconcile(
        self, final_since: datetime | None, final_types: Collection[str]
    ) -> AsyncIterator[list[RunToReconcile]]:
        """As Prefect answers it: the active runs, then the final ones of `final_types` that became final
        at or after `final_since` (Prefect's `end_time.after_`), in pages of MAX_RUNS_PER_READ."""
        active = [run_id for run_id in self.histories if self.histories[run_id][-1].type in ACTIVE]
        final: list[UUID] = []
        if final_since is not None and final_types:
            final = [
                run_id
                for run_id in self.histories
                if self.histories[run_id][-1].type in final_types and self.state_times[run_id][-1] >= final_since
            ]
        for part in (active, final):
            for offset in range(0, len(part), MAX_RUNS_PER_READ):
                yield [self._to_reconcile(run_id) for run_id in part[offset : offset + MAX_RUNS_PER_READ]]

    def _to_reconcile(self, run_id: UUID) -> RunToReconcile:
        pid = self.pids.get(run_id)
        return RunToReconcile(run_id, self.names[run_id], self._current(run_id), self.state_times[run_id][-1], pid)

    async def reschedules(self, run_id: UUID) -> int:
        states = zip(self.histories.get(run_id, []), self.state_messages.get(run_id, []), strict=True)
        return sum(1 for state, text in states if state.name == "AwaitingRetry" and text.startswith(RESCHEDULE_MARK))

    async def log(self, logs: Sequence[RunLog]) -> None:
        for entry in logs:
            self.logs.setdefault(entry.run_id, []).append(entry)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def create_runs(client: PrefectClient, names: Sequence[str]) -> list[UUID]:
    """Real flow runs, Pending, in the Prefect the demo forwards to; their ids."""
    flow = (await client.request("POST", "/flows/", json={"name": "ecs-observer-demo"})).json()
    ids = []
    for name in names:
        body = {"flow_id": flow["id"], "name": name, "state": {"type": "PENDING", "name": "Pending"}}
        ids.append(UUID((await client.request("POST", "/flow_runs/", json=body)).json()["id"]))
    return ids


async def read_back(client: PrefectClient, run_ids: Collection[UUID]) -> MemoryFlowRuns:
    """What Prefect now holds of the demo's runs: state histories, last state messages, and logs."""
    found = MemoryFlowRuns(run_ids)
    for run_id in run_ids:
        states = (await client.request("GET", f"/flow_run_states/?flow_run_id={run_id}")).json()
        ordered = sorted(states, key=lambda state: state["timestamp"])
        found.histories[run_id] = [RunState(state["type"], state["name"]) for state in ordered]
        found.state_messages[run_id] = [state.get("message") or "" for state in ordered]
        found.state_times[run_id] = [_time(state["timestamp"]) for state in ordered]
        if ordered:
            found.messages[run_id] = ordered[-1].get("message") or ""
        body = {"logs": {"flow_run_id": {"any_": [str(run_id)]}}, "limit": 200}
        entries = (await client.request("POST", "/logs/filter", json=body)).json()
        found.logs[run_id] = [RunLog(run_id, str(e["level"]), e["message"], e["timestamp"]) for e in entries]
    return found

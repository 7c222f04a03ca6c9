"""The demo's flow runs: in memory when no Prefect API is given, else created in that Prefect.

In memory, each run starts Pending (as the ECS worker leaves it once it has
submitted the task) and every proposal is accepted; with a Prefect API, the
runs are real and Prefect's orchestration decides.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import datetime
from uuid import UUID

from ...adapters.prefect.client import PrefectClient
from ...core.run_states import Proposal, RunLog, RunState
from ...core.sweep import RunToReconcile

__all__ = ["MemoryFlowRuns", "create_runs", "read_back"]


class MemoryFlowRuns:
    """`ports.FlowRuns` in memory: each run's state history and logs."""

    def __init__(self, run_ids: Collection[UUID]) -> None:
        self.histories: dict[UUID, list[RunState]] = {run_id: [RunState("PENDING", "Pending")] for run_id in run_ids}
        self.messages: dict[UUID, str] = {}
        self.logs: dict[UUID, list[RunLog]] = {run_id: [] for run_id in run_ids}

    async def states(self, run_ids: Collection[UUID]) -> Mapping[UUID, RunState]:
        return {run_id: self.histories[run_id][-1] for run_id in run_ids if run_id in self.histories}

    async def propose(self, run_id: UUID, proposal: Proposal) -> str:
        if run_id not in self.histories:
            return "MISSING"
        self.histories[run_id].append(RunState(proposal.type, proposal.name))
        self.messages[run_id] = proposal.message
        return "ACCEPT"

    async def to_reconcile(
        self, final_since: datetime | None, final_types: Collection[str]
    ) -> AsyncIterator[list[RunToReconcile]]:
        raise NotImplementedError
        yield []

    async def reschedules(self, run_id: UUID) -> int:
        raise NotImplementedError

    async def log(self, logs: Sequence[RunLog]) -> None:
        for entry in logs:
            self.logs.setdefault(entry.run_id, []).append(entry)


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
        if ordered:
            found.messages[run_id] = ordered[-1].get("message") or ""
        body = {"logs": {"flow_run_id": {"any_": [str(run_id)]}}, "limit": 200}
        entries = (await client.request("POST", "/logs/filter", json=body)).json()
        found.logs[run_id] = [RunLog(run_id, str(e["level"]), e["message"], e["timestamp"]) for e in entries]
    return found

"""Prefect's flow runs (`ports.FlowRuns`) through the one Prefect client: read states, propose, log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import datetime
from uuid import UUID

from ...core.run_states import Proposal, RunLog, RunState
from ...core.sweep import RunToReconcile
from .client import PrefectClient

__all__ = ["PrefectFlowRuns"]

log = logging.getLogger("ecs_observer.prefect")
MAX_RUNS_PER_READ = 200  # the Prefect API's default page limit
_LEVELS = {"ERROR": 40, "WARNING": 30, "INFO": 20}
# A WAIT answer asks to propose again later; more than a few waits in a row is Prefect's business.
_MAX_WAITS = 3
_MAX_WAIT_SECONDS = 30.0


class PrefectFlowRuns:
    def __init__(self, client: PrefectClient) -> None:
        self._client = client

    async def states(self, run_ids: Collection[UUID]) -> Mapping[UUID, RunState]:
        ids = [str(run_id) for run_id in dict.fromkeys(run_ids)]
        found: dict[UUID, RunState] = {}
        for offset in range(0, len(ids), MAX_RUNS_PER_READ):
            chunk = ids[offset : offset + MAX_RUNS_PER_READ]
            body = {"flow_runs": {"id": {"any_": chunk}}, "limit": len(chunk)}
            answer = await self._client.request("POST", "/flow_runs/filter", json=body)
            for run in answer.json():
                state = run.get("state") or {}
                found[UUID(run["id"])] = RunState(str(state.get("type", "")), str(state.get("name", "")))
        return found

    async def propose(self, run_id: UUID, proposal: Proposal) -> str:
        for _ in range(_MAX_WAITS):
            answer = await self._client.request(
                "POST", f"/flow_runs/{run_id}/set_state", json=proposal.to_json(), answers=(404, 422)
            )
            if answer.status_code == 404:
                return "MISSING"
            if answer.status_code == 422:
                log.warning("the Prefect API refused state %s for flow run %s: %s", proposal.name, run_id, answer.text)
                return "REJECT"
            result = answer.json()
            status = str(result.get("status", "")).upper()
            if status != "WAIT":
                return status
            delay = float((result.get("details") or {}).get("delay_seconds") or 1.0)
            await asyncio.sleep(min(max(delay, 0.0), _MAX_WAIT_SECONDS))
        return "WAIT"

    async def to_reconcile(
        self, final_since: datetime | None, final_types: Collection[str]
    ) -> AsyncIterator[list[RunToReconcile]]:
        raise NotImplementedError
        yield []

    async def reschedules(self, run_id: UUID) -> int:
        raise NotImplementedError

    async def log(self, logs: Sequence[RunLog]) -> None:
        body = [
            {
                "name": "ecs_observer",
                "level": _LEVELS.get(entry.level, 20),
                "message": entry.message,
                "timestamp": entry.timestamp.isoformat(),
                "flow_run_id": str(entry.run_id),
            }
            for entry in logs
        ]
        await self._client.request("POST", "/logs/", json=body, answers=(404, 422))

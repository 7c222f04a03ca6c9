"""Prefect's flow runs (`ports.FlowRuns`) through the one Prefect client: read states, propose, log,
and the paged reads a sweep needs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from ...core.run_states import RESCHEDULE_MARK, Proposal, ProposalAnswer, RunLog, RunState
from ...core.sweep import ACTIVE, RunToReconcile, task_of
from .client import PrefectClient

__all__ = ["PrefectFlowRuns"]

log = logging.getLogger("ecs_observer.prefect")
MAX_RUNS_PER_READ = 200  # the Prefect API's default page limit
_LEVELS = {"ERROR": 40, "WARNING": 30, "INFO": 20}
# Prefect's orchestration statuses (`SetStateStatus`) as our answers. WAIT asks to propose again later; more
# than a few waits in a row is Prefect's business. Any other status is unknown: taken as REJECT (the state
# was not set as proposed, as far as we know) and logged.
_STATUSES: dict[str, ProposalAnswer] = {"ACCEPT": "ACCEPT", "REJECT": "REJECT", "ABORT": "ABORT"}
_MAX_WAITS = 3
_MAX_WAIT_SECONDS = 30.0
# By id: a key that never changes, so a page moves only by the runs entering or leaving the set.
_SORT = "ID_DESC"


def _task_arn(run: Mapping[str, Any]) -> str | None:
    ref = task_of(run.get("infrastructure_pid"))
    return ref.task_arn if ref is not None else None


def _state(run: Mapping[str, Any]) -> RunState:
    state = run.get("state") or {}
    return RunState(str(state.get("type", "")), str(state.get("name", "")), _task_arn(run))


def _time(value: str) -> datetime:
    """Prefect's timestamps ("...Z") as aware UTC datetimes."""
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class PrefectFlowRuns:
    def __init__(self, client: PrefectClient) -> None:
        self._client = client
        self._unknown: set[str] = set()  # statuses logged already: one warning each

    async def states(self, run_ids: Collection[UUID]) -> Mapping[UUID, RunState]:
        ids = [str(run_id) for run_id in dict.fromkeys(run_ids)]
        found: dict[UUID, RunState] = {}
        for offset in range(0, len(ids), MAX_RUNS_PER_READ):
            chunk = ids[offset : offset + MAX_RUNS_PER_READ]
            body = {"flow_runs": {"id": {"any_": chunk}}, "limit": len(chunk)}
            answer = await self._client.request("POST", "/flow_runs/filter", json=body)
            for run in answer.json():
                found[UUID(run["id"])] = _state(run)
        return found

    async def propose(self, run_id: UUID, proposal: Proposal) -> ProposalAnswer:
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
                return _STATUSES.get(status) or self._unknown_status(status, run_id, proposal)
            delay = float((result.get("details") or {}).get("delay_seconds") or 1.0)
            await asyncio.sleep(min(max(delay, 0.0), _MAX_WAIT_SECONDS))
        return "WAIT"

    def _unknown_status(self, status: str, run_id: UUID, proposal: Proposal) -> ProposalAnswer:
        level = logging.DEBUG if status in self._unknown else logging.WARNING
        self._unknown.add(status)
        log.log(
            level,
            "the Prefect API answered status %r to state %s for flow run %s, none of ACCEPT, REJECT, ABORT "
            "or WAIT: taken as REJECT",
            status[:100],
            proposal.name,
            run_id,
        )
        return "REJECT"

    async def to_reconcile(
        self, final_since: datetime | None, final_types: Collection[str]
    ) -> AsyncIterator[list[RunToReconcile]]:
        """Pages of at most MAX_RUNS_PER_READ runs, one read each. Final runs are found by their
        `end_time` (Prefect sets it on entering any final state, forced or not; the state's own
        timestamp cannot be filtered on). Runs without `infrastructure_pid` are yielded too: Prefect
        cannot filter on it, and the core counts them. Offset paging: a run entering the set between two
        reads repeats one run on the next page (yielded once all the same); a run leaving it moves one run
        onto a page already read, which the next sweep reads."""
        seen: set[UUID] = set()
        filters: list[dict[str, Any]] = [{"state": {"type": {"any_": sorted(ACTIVE)}}}]
        if final_since is not None and final_types:
            since = final_since.astimezone(UTC).isoformat()
            filters.append({"state": {"type": {"any_": sorted(final_types)}}, "end_time": {"after_": since}})
        for flow_runs in filters:
            offset = 0
            while True:
                body = {"flow_runs": flow_runs, "sort": _SORT, "limit": MAX_RUNS_PER_READ, "offset": offset}
                runs = (await self._client.request("POST", "/flow_runs/filter", json=body)).json()
                page = [self._to_reconcile(run) for run in runs if UUID(run["id"]) not in seen]
                seen.update(run.run_id for run in page)
                if page:
                    yield page
                if len(runs) < MAX_RUNS_PER_READ:
                    break  # a short page is the last: no read to find the next one empty
                offset += len(runs)

    @staticmethod
    def _to_reconcile(run: Mapping[str, Any]) -> RunToReconcile:
        state = run.get("state") or {}
        pid = run.get("infrastructure_pid")
        return RunToReconcile(
            run_id=UUID(run["id"]),
            name=str(run.get("name", "")),
            state=_state(run),
            state_since=_time(str(state.get("timestamp") or run["updated"])),
            infrastructure_pid=str(pid) if pid else None,
        )

    async def reschedules(self, run_id: UUID) -> int:
        """Counted from the run's state history, so the limit holds across replicas and restarts; another
        AwaitingRetry (Prefect's own flow retries, a user's) is not ours."""
        answer = await self._client.request("GET", f"/flow_run_states/?flow_run_id={run_id}")
        return sum(
            1
            for state in answer.json()
            if state.get("name") == "AwaitingRetry" and str(state.get("message") or "").startswith(RESCHEDULE_MARK)
        )

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

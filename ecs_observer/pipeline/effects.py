"""Applies what a change does to its flow run: the state it calls for, and the diagnosis log.

One task's effects run in the order their decisions were made, which the
reorder window makes version order: InfrastructurePending is proposed before
Crashed, never after. Reads of run states from all messages in flight are
gathered into one `POST /flow_runs/filter` per linger. Each effect is done when
Prefect has answered it (accepted, rejected, aborted, or the run is unknown);
until then its message stays in the queue.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

from ..core.decision import Forward, KeepRunTrue, WriteDiagnosis
from ..core.run_states import RunState, diagnosis_log, propose
from ..core.task_record import expires_after
from ..ports import FlowRuns, TaskStateStore
from ..support.stats import Stats

__all__ = ["Effects"]

log = logging.getLogger("ecs_observer")


class _Reads:
    """Run states, read for many runs at once."""

    def __init__(self, runs: FlowRuns, linger: float) -> None:
        self._runs = runs
        self._linger = linger
        self._waiting: dict[UUID, asyncio.Future[RunState | None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._calls: set[asyncio.Task[None]] = set()

    async def state(self, run_id: UUID) -> RunState | None:
        future = self._waiting.get(run_id)
        if future is None:
            future = self._waiting[run_id] = asyncio.get_running_loop().create_future()
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._linger, self._flush)
        return await asyncio.shield(future)

    def _flush(self) -> None:
        self._timer = None
        waiting, self._waiting = self._waiting, {}
        call = asyncio.get_running_loop().create_task(self._read(waiting))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def _read(self, waiting: dict[UUID, asyncio.Future[RunState | None]]) -> None:
        try:
            found = await self._runs.states(list(waiting))
        except BaseException as exc:
            for future in waiting.values():
                if not future.done():
                    if isinstance(exc, asyncio.CancelledError):
                        future.cancel()
                    else:
                        future.set_exception(exc)
            raise
        for run_id, future in waiting.items():
            if not future.done():
                future.set_result(found.get(run_id))

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for future in self._waiting.values():
            future.cancel()
        for call in self._calls:
            call.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)


class Effects:
    def __init__(self, runs: FlowRuns, store: TaskStateStore, stats: Stats, linger: float = 0.05) -> None:
        self._runs = runs
        self._store = store
        self._stats = stats
        self._reads = _Reads(runs, linger)
        self._tails: dict[str, asyncio.Task[None]] = {}  # per task: its latest effects, which later ones await

    def schedule(self, forward: Forward) -> asyncio.Task[None] | None:
        """Start the effects, after those of the task's earlier decisions. Called without awaiting
        anything since the decision was made, so that the task's version order holds."""
        if not forward.effects:
            return None
        arn = forward.change.task_arn
        task = asyncio.create_task(self._after(self._tails.get(arn), forward))
        self._tails[arn] = task
        task.add_done_callback(lambda done: self._tails.pop(arn) if self._tails.get(arn) is done else None)
        return task

    async def _after(self, previous: asyncio.Task[None] | None, forward: Forward) -> None:
        if previous is not None:
            # Its failure is its own message's business (it stays in the queue); this one goes on.
            await asyncio.gather(asyncio.shield(previous), return_exceptions=True)
        for effect in forward.effects:
            if isinstance(effect, KeepRunTrue):
                await self._keep_true(forward, effect)
            elif isinstance(effect, WriteDiagnosis):
                await self._write_diagnosis(forward, effect)

    async def _keep_true(self, forward: Forward, effect: KeepRunTrue) -> None:
        current = await self._reads.state(effect.run_id)
        if current is None:
            log.debug("flow run %s of task %s does not exist", effect.run_id, forward.change.task_arn)
            self._stats.state_proposals["MISSING"] += 1
            return
        proposal = propose(forward.change, forward.diagnosis, current)
        if proposal is None:
            return
        answer = await self._runs.propose(effect.run_id, proposal)
        self._stats.state_proposals[answer] += 1
        level = logging.INFO if answer == "ACCEPT" else logging.DEBUG
        log.log(
            level,
            "flow run %s: %s proposed (task %s): %s",
            effect.run_id,
            proposal.name,
            forward.change.task_id,
            answer,
        )

    async def _write_diagnosis(self, forward: Forward, effect: WriteDiagnosis) -> None:
        change = forward.change
        expires = expires_after(change.last_status, change.occurred)
        if not await self._store.once(change.task_arn, "diagnosis", change.event_id, expires):
            return
        await self._runs.log([diagnosis_log(change, effect.run_id, effect.diagnosis)])
        await self._store.done(change.task_arn, "diagnosis", expires)
        self._stats.run_logs += 1

    async def close(self) -> None:
        for task in list(self._tails.values()):
            task.cancel()
        await asyncio.gather(*self._tails.values(), return_exceptions=True)
        await self._reads.close()

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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar
from uuid import UUID

from cachetools import LRUCache

from ..core.decision import DeregisterDefinition, Forward, ForwardCrashLogs, KeepRunTrue, WriteDiagnosis
from ..core.diagnosis import log_container
from ..core.ecs_event import TaskStateChange
from ..core.run_states import (
    INFRASTRUCTURE_PENDING,
    PLACING,
    Proposal,
    ProposalAnswer,
    RunState,
    crash_logs,
    diagnosis_log,
    never_ran,
    plan_retry,
    propose,
    retry_note,
)
from ..core.sweep import ACTIVE
from ..core.task_record import expires_after
from ..ports import ContainerLogs, FlowRuns, TaskDefinitions, TaskStateStore
from ..support.batcher import Batcher
from ..support.stats import Stats
from .config import ObserverConfig

__all__ = ["Effects"]

T = TypeVar("T")

log = logging.getLogger("ecs_observer")


# AWS calls for crash logs and deregistration are tried this often, then given up with a warning:
# they must not hold a message (and its task's later changes) for ever.
_AWS_ATTEMPTS = 6
# How long a claim to write a run's log (or fetch crash logs, deregister) holds before another may take it over.
_LEASE = 60.0
_CLAIM_POLL = 0.5


class Effects:
    def __init__(
        self,
        runs: FlowRuns,
        store: TaskStateStore,
        stats: Stats,
        config: ObserverConfig,
        definitions: TaskDefinitions | None = None,
        container_logs: ContainerLogs | None = None,
    ) -> None:
        self._runs = runs
        self._store = store
        self._stats = stats
        self._definitions = definitions
        self._container_logs = container_logs
        self._backoff = config.backoff.hooked(stats.called)
        self._container_name = config.container_name
        self._retry = config.retry_policy()
        self._reads: Batcher[UUID, RunState | None] = Batcher(self._read, linger=config.linger, distinct=True)
        # (run, task) pairs whose InfrastructurePending is answered: the task's next placing change reads nothing.
        self._placed: LRUCache[tuple[UUID, str], bool] = LRUCache(maxsize=10_000)
        self._tails: dict[str, asyncio.Task[None]] = {}  # per task: its latest effects, which later ones await
        # All that run: an earlier one a later one awaits is shielded from its cancellation, so `close`
        # cancels each (seeds 221, 237: a deployed replica's proposals went on after its run returned).
        self._running: set[asyncio.Task[None]] = set()

    def schedule(self, forward: Forward) -> asyncio.Task[None] | None:
        """Start the effects, after those of the task's earlier decisions. Called without awaiting
        anything since the decision was made, so that the task's version order holds."""
        if not forward.effects:
            return None
        arn = forward.change.task_arn
        task = asyncio.create_task(self._after(self._tails.get(arn), forward))
        self._tails[arn] = task
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(lambda done: self._tails.pop(arn) if self._tails.get(arn) is done else None)
        return task

    async def _after(self, previous: asyncio.Task[None] | None, forward: Forward) -> None:
        if previous is not None:
            # Its failure is its own message's business (it stays in the queue); this one goes on.
            await asyncio.gather(asyncio.shield(previous), return_exceptions=True)
        note: str | None = None  # whether the stop was rescheduled, for the diagnosis log
        crash_logs = next((e for e in forward.effects if isinstance(e, ForwardCrashLogs)), None)
        for effect in forward.effects:
            if isinstance(effect, KeepRunTrue):
                note = await self._keep_true(forward, effect, crash_logs)
            elif isinstance(effect, WriteDiagnosis):
                await self._write_diagnosis(forward, effect, note)
            elif isinstance(effect, ForwardCrashLogs):
                continue  # posted by `_keep_true`, before the run leaves the state that calls for them
            else:
                await self._deregister(forward, effect)

    async def _keep_true(
        self, forward: Forward, effect: KeepRunTrue, crash_logs: ForwardCrashLogs | None = None
    ) -> str | None:
        """The run kept true to the change; a transient start failure's reschedule note, for the diagnosis."""
        placed = (effect.run_id, forward.change.task_arn)
        if forward.change.last_status in PLACING and placed in self._placed:
            # This task's InfrastructurePending is set: whatever the run did since, nothing is to propose.
            return None
        current = await self._reads.ask(effect.run_id)
        if current is None:
            log.debug("flow run %s of task %s does not exist", effect.run_id, forward.change.task_arn)
            self._stats.state_proposals["MISSING"] += 1
            return None
        failed: Exception | None = None
        if crash_logs is not None and never_ran(current):
            # Before the proposal: were they posted after it, a redelivery (another effect's post failed)
            # would find the run Crashed, no longer one that never ran, and never post them (seeds 176, 299).
            # Their own post failing does not hold the state: proposed anyway, then the message comes back.
            try:
                await self._crash_logs(forward, crash_logs)
            except Exception as exc:
                failed = exc
        note = await self._settle(forward, effect, current)
        if failed is not None:
            raise failed
        return note

    async def _settle(self, forward: Forward, effect: KeepRunTrue, current: RunState) -> str | None:
        """The proposal the change calls for, if any; a transient start failure's reschedule note."""
        proposal = propose(forward.change, forward.diagnosis, current)
        if proposal is None:
            return None
        if forward.retry_cause is not None and proposal.type == "CRASHED":
            return await self._reschedule(forward, effect, current, forward.retry_cause)
        await self._propose(forward, effect.run_id, proposal)
        return None

    async def _reschedule(self, forward: Forward, effect: KeepRunTrue, current: RunState, cause: str) -> str | None:
        """AwaitingRetry instead of Crashed while the run has reschedules left, else Crashed; once per task,
        so that a duplicate, a replica or a sweep never spends a second one on the same stop."""
        change, note = forward.change, None

        async def decide() -> None:
            nonlocal note
            # Read again under the claim: a handler that held it before may have rescheduled the run, and
            # the worker started it on another task since.
            fresh = (await self._runs.states([effect.run_id])).get(effect.run_id)
            if fresh is None:
                return
            plan = plan_retry(cause, await self._runs.reschedules(effect.run_id), self._retry, datetime.now(UTC))
            proposal = propose(change, forward.diagnosis, fresh, plan)
            if proposal is None:
                return
            answer = await self._propose(forward, effect.run_id, proposal)
            note = retry_note(cause, plan, self._retry)
            if plan is None:
                return
            if answer == "ACCEPT":
                self._stats.reschedules += 1
                return
            # Prefect would not reschedule it: Crashed after all, rather than a run left as it was.
            crash = propose(change, forward.diagnosis, fresh)
            if crash is not None:
                await self._propose(forward, effect.run_id, crash)
            note = f"Not rescheduled ({cause}): Prefect answered {answer} to AwaitingRetry."

        await self._once(change, "run-state", decide)
        return note

    async def _propose(self, forward: Forward, run_id: UUID, proposal: Proposal) -> ProposalAnswer:
        change = forward.change
        answer = await self._runs.propose(run_id, proposal)
        self._stats.state_proposals[answer] += 1
        if proposal.name == INFRASTRUCTURE_PENDING and answer in ("ACCEPT", "ABORT", "REJECT"):
            self._placed[(run_id, change.task_arn)] = True
        level = logging.INFO if answer == "ACCEPT" else logging.DEBUG
        shown = _run_name(forward, run_id)
        log.log(level, "flow run %s: %s proposed (task %s): %s", shown, proposal.name, change.task_id, answer)
        return answer

    async def propose_while_on(self, run_id: UUID, task_arn: str, proposal: Proposal) -> ProposalAnswer | None:
        """A proposal of the sweep's own (the run's task is gone), made only if the run, read now, is still
        active on that task: an event or another replica may have settled it meanwhile."""
        current = await self._reads.ask(run_id)
        if current is None or current.type not in ACTIVE or current.task_arn not in (None, task_arn):
            return None
        answer = await self._runs.propose(run_id, proposal)
        self._stats.state_proposals[answer] += 1
        log.log(
            logging.INFO if answer == "ACCEPT" else logging.DEBUG,
            "flow run %s: %s proposed (task %s is gone): %s",
            run_id,
            proposal.name,
            task_arn,
            answer,
        )
        return answer

    async def _write_diagnosis(self, forward: Forward, effect: WriteDiagnosis, note: str | None) -> None:
        change = forward.change

        async def write() -> None:
            await self._runs.log([diagnosis_log(change, effect.run_id, effect.diagnosis, note)])
            self._stats.run_logs += 1

        await self._once(change, "diagnosis", write)

    async def _crash_logs(self, forward: Forward, effect: ForwardCrashLogs) -> None:
        change = forward.change
        definitions, container_logs, arn = self._definitions, self._container_logs, change.task_definition_arn
        if definitions is None or container_logs is None or not arn:
            return
        container = log_container(change.stop.containers if change.stop is not None else (), self._container_name)

        async def fetch() -> list[tuple[datetime, str]] | None:
            source = await definitions.log_source(arn, container)
            if source is None:
                log.debug("task definition %s: no awslogs configuration for the flow's container", arn)
                return None
            lines = await container_logs.tail(source, change.task_id, effect.lines)
            if lines is None:
                log.debug(
                    "no log stream %s in %s for task %s", source.stream(change.task_id), source.group, change.task_arn
                )
            return lines

        async def post() -> None:
            lines = await self._aws("crash_logs", fetch, f"fetching the crash logs of task {change.task_arn}")
            if lines:
                await self._runs.log(crash_logs(effect.run_id, change.task_id, lines))
                self._stats.run_logs += 1

        await self._once(change, "crash-logs", post)

    async def _deregister(self, forward: Forward, effect: DeregisterDefinition) -> None:
        change, definitions = forward.change, self._definitions
        if definitions is None:
            return

        async def call() -> bool:
            await definitions.deregister(effect.arn)
            return True

        async def deregister() -> None:
            if await self._aws("deregister", call, f"DeregisterTaskDefinition {effect.arn}"):
                self._stats.deregistered += 1
                log.info("task definition %s deregistered (task %s stopped)", effect.arn, change.task_id)

        await self._once(change, "deregister", deregister)

    async def _aws(self, cause: str, call: Callable[[], Awaitable[T]], what: str) -> T | None:
        """A best-effort AWS call: tried a few times, then given up with a warning (None)."""
        try:
            return await self._backoff.call(cause, call, limit=_AWS_ATTEMPTS, what=what)
        except Exception as exc:
            log.warning("%s failed %d times; giving up: %s", what, _AWS_ATTEMPTS, exc)
            return None

    async def _once(self, change: TaskStateChange, what: str, action: Callable[[], Awaitable[None]]) -> None:
        """Do `what` for the task once across duplicates and replicas. While another handler holds it
        (the same change on another replica, or its duplicate), wait: if that one dies, its claim lapses."""
        expires = expires_after(change.last_status, change.occurred)
        while True:
            claim = await self._store.once(change.task_arn, what, change.event_id, expires, _LEASE)
            if claim != "busy":
                break
            await asyncio.sleep(_CLAIM_POLL)
        if claim == "mine":
            await action()
            await self._store.done(change.task_arn, what, expires)

    async def _read(self, run_ids: list[UUID]) -> list[RunState | None]:
        found = await self._runs.states(run_ids)
        return [found.get(run_id) for run_id in run_ids]

    async def close(self) -> None:
        running = list(self._running)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self._reads.close()


def _run_name(forward: Forward, run_id: UUID) -> str:
    """The run as the demo's timeline and Prefect's UI name it (its tag), with its id."""
    related = forward.event.related if forward.event is not None else ()  # none for a sweep's observation
    run = next((r for r in related if r.get("prefect.resource.role") == "flow-run"), {})
    name = run.get("prefect.resource.name")
    return f"{name} ({run_id})" if name else str(run_id)

"""The observer: wires the pipeline and carries out each message's decision.

receive (`Intake`) -> decode -> decide (`Policy`: tags, filter, sequence, build)
-> carry out: acknowledge (`Leases`), release, or forward (`Forwarder`) and
settle on Prefect's answer. Each I/O part comes in through a port
(MessageQueue, TaskDescriber, TaskStateStore, EventSink), so tests run it
against moto, a real Prefect server, or a sink that fails on purpose.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, assert_never
from uuid import UUID

from cachetools import LRUCache

from ..core.decision import Ack, Decision, Forward, Release, batch_order, settle
from ..core.ecs_event import Decoded, TaskStateChange, decode
from ..core.run_states import Proposal, ProposalAnswer
from ..core.task_record import TaskRecord
from ..ports import (
    ContainerLogs,
    EventSink,
    FlowRuns,
    Message,
    MessageQueue,
    TaskDefinitions,
    TaskDescriber,
    TaskStateStore,
)
from ..support.stats import Stats
from .config import ObserverConfig
from .effects import Effects
from .forwarder import Forwarder
from .intake import Intake
from .leases import Leases
from .policy import Policy
from .sequencer import Sequencer
from .tags import TagLookup
from .watch import StateWatch

__all__ = ["Observer", "ObserverConfig"]

log = logging.getLogger("ecs_observer")
_Records = asyncio.Task[Mapping[str, TaskRecord]]  # a receive batch's task state, loaded once


class Observer:
    def __init__(
        self,
        queue: MessageQueue,
        describer: TaskDescriber,
        store: TaskStateStore,
        sink: EventSink,
        config: ObserverConfig,
        stats: Stats | None = None,
        runs: FlowRuns | None = None,
        definitions: TaskDefinitions | None = None,
        container_logs: ContainerLogs | None = None,
    ) -> None:
        """Without `runs` only events are forwarded; without `definitions` and `container_logs`,
        no crash logs are fetched and no task definition is deregistered."""
        self.stats = stats = stats or Stats()
        self._config = config
        self._store = store
        self._watch = StateWatch(store)
        self._tags = TagLookup.configured(describer, store, stats, config, self._watch)
        sequencer = Sequencer(store, config.reorder_window, self._watch)
        self._policy = Policy(self._tags, sequencer, store, config, effects=runs is not None)
        self._effects = Effects(runs, store, stats, config, definitions, container_logs) if runs else None
        self._forwarder = Forwarder(
            sink, max_events=config.batch_size, max_bytes=config.batch_bytes, linger=config.linger
        )
        self._leases = Leases(queue, stats, visibility_timeout=config.visibility_timeout, delete_linger=config.linger)
        batchers = (self._tags, self._leases.deletes, self._forwarder.batches)
        self._intake = Intake(queue, batchers, stats, config, self._dispatch)
        self._handlers: set[asyncio.Task[None]] = set()
        # Bounded, so that each broken message is logged once, not on every redelivery.
        self._logged_rejections: LRUCache[str, bool] = LRUCache(maxsize=10_000)

    @property
    def stopping(self) -> asyncio.Event:
        """Set once the observer stops receiving: what runs beside it (the sweep) stops too."""
        return self._intake.stopping

    @property
    def in_flight(self) -> int:
        """Messages received and not yet finished (the bound is intake's)."""
        return self._intake.in_flight

    def summary(self) -> str:
        """The counts, and the messages in flight, for the log."""
        return self.stats.summary(in_flight=self.in_flight)

    def stop(self, why: str = "asked to stop") -> None:
        """Stop receiving; `run` then drains within the drain timeout and returns."""
        self._intake.stop(why)

    async def run(self, until_idle: int | None = None) -> None:
        """Observe until stopped, or until `until_idle` receives in a row found the queue empty."""
        self._intake.start(until_idle, busy=lambda: bool(self._handlers))
        helpers = [asyncio.create_task(self._leases.keep_alive()), asyncio.create_task(self._summaries())]
        try:
            await self._intake.stopping.wait()
        finally:
            why = self._intake.why or "cancelled"
            log.info("stopping (%s): no new messages; finishing %d in flight", why, len(self._handlers))
            await self._drain()
            returned = await self._leases.return_unfinished()
            if returned:
                log.warning("%d message(s) unfinished at shutdown were returned to the queue", returned)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            log.info("stopped: %s", self.summary())

    def health(self) -> tuple[bool, dict[str, Any]]:
        reasons, details = self._intake.health()
        if reasons:
            details["reason"] = "; ".join(reasons)
        return not reasons, details

    async def _drain(self) -> None:
        """Within the drain timeout: the long polls under way end, and the messages in flight (with those
        the polls bring) are finished; what is left is cancelled, and its messages handed back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.drain_timeout
        ending = asyncio.ensure_future(self._intake.end())  # within the drain timeout too
        while self._handlers or not ending.done():
            waiting: set[asyncio.Future[None]] = {*self._handlers, *(() if ending.done() else (ending,))}
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.wait(waiting, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        await ending
        pending = list(self._handlers)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._policy.close()
        await self._tags.close()
        await self._watch.close()
        if self._effects is not None:
            await self._effects.close()
        await self._forwarder.close()
        await self._leases.deletes.drain()

    def _dispatch(self, messages: list[Message]) -> None:
        decoded = [(message, decode(message.body)) for message in messages]
        # Lower versions of a task first, so that a batch needs no reorder wait.
        decoded.sort(key=lambda pair: batch_order(pair[1]))
        records = self._policy.load([outcome for _, outcome in decoded if isinstance(outcome, TaskStateChange)])
        for message, outcome in decoded:
            self.stats.received += 1
            self._leases.hold(message)
            task = asyncio.create_task(self._handle(message, outcome, records))
            self._handlers.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        self._intake.freed()

    async def _handle(self, message: Message, outcome: Decoded, records: _Records | None) -> None:
        try:
            record = None
            if isinstance(outcome, TaskStateChange) and records is not None:
                record = (await asyncio.shield(records)).get(outcome.task_arn)
            await self._carry_out(message, await self._policy.decide(outcome, record))
        except asyncio.CancelledError:
            # Shutdown: the message stays held, so that it is handed back to the queue at once.
            raise
        except Exception:
            log.exception("message %s failed unexpectedly; it stays in the queue", message.message_id)
            self._leases.release(message)

    async def observe(self, change: TaskStateChange, tags: Mapping[str, str]) -> Ack | Release:
        """The way a sweep's observation goes, with no message: the same policy, effects and events as a
        change from the queue. `tags`: the task's, as the sweep's DescribeTasks answered them."""
        described = self._tags.learn(change.task_arn, tags)
        record = (await self._store.load([change.task_arn])).get(change.task_arn)
        # Not counted as a message's outcome: the sweep counts its runs (`Stats.reconciled`).
        return await self._apply(await self._policy.decide(change, record, described), event_first=True)

    async def propose(self, run_id: UUID, task_arn: str, proposal: Proposal) -> ProposalAnswer | None:
        """A sweep's proposal for a run whose task is gone: made only while the run is still active on that
        task, read afresh. Prefect's answer, or None when nothing was proposed."""
        if self._effects is None:
            return None
        return await self._effects.propose_while_on(run_id, task_arn, proposal)

    async def _apply(self, decision: Decision, *, event_first: bool = False) -> Ack | Release:
        """Carry a decision out: its event and effects answered, the decision's final word.

        A message's effects go beside its event: the message comes back until both are answered. A sweep's
        change has no message (`event_first`): its effects wait for its event to be accepted, or a run made
        final by them would never be swept again, and its event never sent."""
        if not isinstance(decision, Forward):
            return decision
        refused: str | None = None
        if event_first and decision.event is not None:
            refused = await self._forwarder.forward(decision.event)
            if refused is not None:
                return settle(decision, refused)
        effects = self._effects.schedule(decision) if self._effects is not None else None
        if not event_first and decision.event is not None:
            refused = await self._forwarder.forward(decision.event)
        if effects is not None:
            await asyncio.shield(effects)
        settled = settle(decision, refused)
        if isinstance(settled, Ack) and decision.event is not None and decision.change.source == "event":
            latency = (datetime.now(UTC) - decision.change.emitted).total_seconds()
            self.stats.forward_latency.observe(max(0.0, latency))
        return settled

    def _count(self, ack: Ack) -> None:
        """Each outcome its own counter: a new outcome without one fails the type check."""
        match ack.outcome:
            case "forwarded":
                self.stats.forwarded += 1
            case "filtered":
                self.stats.filtered += 1
            case "ignored":
                self.stats.ignored += 1
            case "deduplicated":
                self.stats.deduplicated += 1
            case unknown:
                assert_never(unknown)

    async def _carry_out(self, message: Message, decision: Decision) -> None:
        outcome = await self._apply(decision)
        if isinstance(outcome, Ack):
            self._count(outcome)
            if outcome.note:
                log.debug("message %s %s: %s", message.message_id, outcome.outcome, outcome.note)
            self._leases.ack(message)
        else:
            self._reject(message, outcome)

    def _reject(self, message: Message, release: Release) -> None:
        self.stats.rejected += 1
        self.stats.invalid_events += release.refused_event
        level = logging.DEBUG if message.message_id in self._logged_rejections else logging.WARNING
        self._logged_rejections[message.message_id] = True
        log.log(
            level,
            "message %s rejected, left for the dead-letter queue (receive %d): %s",
            message.message_id,
            message.receive_count,
            release.reason,
        )
        self._leases.release(message)

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self._config.summary_interval)
            log.info("summary: %s", self.summary())

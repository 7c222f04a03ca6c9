"""The pipeline: receive, decode, look up tags, sequence, translate, forward, acknowledge.

This is the only module that wires the parts; each I/O part sits behind an
interface (MessageQueue, TaskDescriber, TaskStateStore, EventSink), so tests run
it against moto, a real Prefect server, or a sink that fails on purpose.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cachetools import LRUCache

from ._aws import Message, MessageQueue
from ._backoff import Backoff
from ._ecs_event import Decoded, Ignored, Rejected, TaskStateChange, decode
from ._forwarder import Forwarder
from ._leases import SQS_BATCH, Leases
from ._prefect_api import EventSink
from ._sequencer import Sequencer
from ._stats import Stats
from ._tags import TagLookup, TaskDescriber
from ._task_state import StateWatch, TaskRecord, TaskStateStore
from ._translate import build_event, flow_run_id

__all__ = ["Observer", "ObserverConfig"]

log = logging.getLogger("ecs_observer")


@dataclass(frozen=True)
class ObserverConfig:
    receivers: int = 4
    max_in_flight: int = 1000
    wait_time_seconds: int = 20
    visibility_timeout: int = 60
    batch_size: int = 200
    batch_bytes: int = 1_000_000
    linger: float = 0.05
    describe_linger: float = 0.1
    reorder_window: float = 2.0
    cache_size: int = 100_000
    drain_timeout: float = 25.0
    describe_claim: float = 30.0  # with shared state: how long other replicas wait for a claimant's tags
    summary_interval: float = 60.0
    sqs_silence_limit: float | None = None  # unhealthy after this long without SQS success; None: derived
    backoff: Backoff = field(default_factory=Backoff)


class Observer:
    def __init__(
        self,
        queue: MessageQueue,
        describer: TaskDescriber,
        store: TaskStateStore,
        sink: EventSink,
        config: ObserverConfig,
        stats: Stats | None = None,
    ) -> None:
        self.stats = stats or Stats()
        self._queue = queue
        self._sink = sink
        self._config = config
        self._watch = StateWatch(store)
        self._tags = TagLookup(
            describer,
            self.stats,
            cache_size=config.cache_size,
            linger=config.describe_linger,
            backoff=config.backoff,
            store=store,
            claim_seconds=config.describe_claim,
            watch=self._watch,
        )
        self._store = store
        self._loads: set[asyncio.Task[Mapping[str, TaskRecord]]] = set()
        self._sequencer = Sequencer(store, config.reorder_window, self._watch)
        self._forwarder = Forwarder(
            sink, max_events=config.batch_size, max_bytes=config.batch_bytes, linger=config.linger
        )
        self._leases = Leases(
            queue, self.stats, visibility_timeout=config.visibility_timeout, delete_linger=config.linger
        )
        self._handlers: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()  # set when in-flight messages finish
        self._reserved = 0  # room taken by receive calls under way
        self._idle_target: int | None = None
        self._idle_polls = 0
        self._stop = asyncio.Event()
        self._receivers: list[asyncio.Task[None]] = []
        # Bounded memories so that each problem is logged once, not on every redelivery.
        self._logged_rejections: LRUCache[str, bool] = LRUCache(maxsize=10_000)
        self._warned_tasks: LRUCache[str, bool] = LRUCache(maxsize=10_000)

    def stop(self) -> None:
        """Stop receiving; `run` then drains within the drain timeout and returns."""
        self._stop.set()
        self._room.set()

    async def run(self, until_idle: int | None = None) -> None:
        """Observe until stopped, or until `until_idle` receives in a row found the queue empty."""
        self._idle_target = until_idle
        receivers = self._receivers = [asyncio.create_task(self._receive_loop()) for _ in range(self._config.receivers)]
        helpers = [asyncio.create_task(self._leases.keep_alive()), asyncio.create_task(self._summaries())]
        try:
            await self._stop.wait()
        finally:
            log.info("stopping: no new messages; finishing %d in flight", len(self._handlers))
            await asyncio.gather(self._end_receives(receivers), self._drain())
            returned = await self._leases.return_unfinished()
            if returned:
                log.warning("%d message(s) unfinished at shutdown were returned to the queue", returned)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            log.info("stopped: %s", self.stats.summary())

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while receiving and SQS answered recently (a visibility extension counts, so an
        outage of the Prefect API, with receiving paused at the bound, is not a reason to restart)."""
        alive = sum(not task.done() for task in self._receivers)
        since = time.monotonic() - self.stats.last_sqs_success
        limit = (
            self._config.sqs_silence_limit
            or max(3 * self._config.wait_time_seconds, self._config.visibility_timeout) + 30
        )
        details: dict[str, Any] = {
            "receive_loops_alive": alive,
            "seconds_since_sqs_success": round(since, 1),
            "in_flight": self.stats.in_flight,
        }
        reasons = []
        if self._stop.is_set():
            reasons.append("stopping")
        elif alive < len(self._receivers) or not self._receivers:
            reasons.append(f"{len(self._receivers) - alive} receive loop(s) ended")
        if since > limit:
            reasons.append(f"no successful SQS call for {since:.0f} s (limit {limit} s)")
        if reasons:
            details["reason"] = "; ".join(reasons)
        return not reasons, details

    async def _end_receives(self, receivers: list[asyncio.Task[None]]) -> None:
        """Let long polls under way end by themselves: a cancelled one can still take messages
        on the server side, which would then stay hidden for the whole visibility timeout."""
        _, pending = await asyncio.wait(
            receivers, timeout=min(self._config.wait_time_seconds + 5, self._config.drain_timeout)
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*receivers, return_exceptions=True)

    async def _drain(self) -> None:
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=self._config.drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for load in self._loads:
            load.cancel()
        await asyncio.gather(*self._loads, return_exceptions=True)
        await self._tags.close()
        await self._watch.close()
        await self._forwarder.close()
        await self._leases.flush()

    async def _receive_loop(self) -> None:
        while not self._stop.is_set():
            await self._wait_for_room()
            # Room is reserved before the call, so that concurrent receivers cannot overshoot the bound.
            self._reserved += SQS_BATCH
            try:
                messages = await self._receive()
            finally:
                self._reserved -= SQS_BATCH
            if self._stop.is_set():
                await self._leases.hand_back(messages)
                return
            self._note_idle(not messages)
            self.stats.batches_received += bool(messages)
            full = len(messages) == SQS_BATCH
            self._tags.intake(full)
            self._leases.intake(full)
            self._dispatch(messages)

    def _note_idle(self, empty: bool) -> None:
        if self._idle_target is None:
            return
        self._idle_polls = self._idle_polls + 1 if empty and not self._handlers else 0
        if self._idle_polls >= self._idle_target:
            self._stop.set()

    async def _receive(self) -> list[Message]:
        async for attempt in self._config.backoff.attempts(Exception):
            with attempt:
                self.stats.sqs_calls["ReceiveMessage"] += 1
                try:
                    messages = await self._queue.receive(
                        SQS_BATCH, self._config.wait_time_seconds, self._config.visibility_timeout
                    )
                except Exception as exc:
                    self.stats.retries["receive"] += 1
                    log.warning("ReceiveMessage failed; retrying (attempt %d): %s", attempt.num, exc)
                    raise
                self.stats.sqs_succeeded()
                return messages
        raise AssertionError("unreachable: retries are unbounded")

    async def _wait_for_room(self) -> None:
        if self.stats.in_flight + self._reserved + SQS_BATCH > self._config.max_in_flight:
            # Nothing more comes in until something finishes: waiting batches gain nothing by waiting.
            self._tags.flush_all()
            self._leases.flush_soon()
        while (
            self.stats.in_flight + self._reserved + SQS_BATCH > self._config.max_in_flight and not self._stop.is_set()
        ):
            self._room.clear()
            await self._room.wait()

    def _dispatch(self, messages: list[Message]) -> None:
        decoded = [(message, decode(message.body)) for message in messages]
        # Lower versions of a task first, so that a batch needs no reorder wait.
        decoded.sort(key=lambda pair: _order(pair[1]))
        records = self._load_state([outcome for _, outcome in decoded if isinstance(outcome, TaskStateChange)])
        for message, outcome in decoded:
            self.stats.received += 1
            self.stats.in_flight += 1
            self._leases.hold(message)
            task = asyncio.create_task(self._handle(message, outcome, records))
            self._handlers.add(task)
            task.add_done_callback(self._finished)

    def _load_state(self, changes: list[TaskStateChange]) -> asyncio.Task[Mapping[str, TaskRecord]] | None:
        """One read of the task state for the whole receive batch. Tasks known here not to be
        Prefect's are left out: most tasks in an account are not, and their answer never changes."""
        wanted = {change.task_arn for change in changes if self._may_be_prefects(change)}
        if not wanted:
            return None
        load = asyncio.create_task(self._store.load(wanted))
        self._loads.add(load)
        load.add_done_callback(self._loads.discard)
        return load

    def _may_be_prefects(self, change: TaskStateChange) -> bool:
        known = self._tags.cached(change.task_arn)
        return known is None or flow_run_id(change, known.tags) is not None

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        self.stats.in_flight -= 1
        self._room.set()

    async def _handle(
        self, message: Message, outcome: Decoded, records: asyncio.Task[Mapping[str, TaskRecord]] | None
    ) -> None:
        try:
            if isinstance(outcome, Ignored):
                self.stats.ignored += 1
                log.debug("message %s ignored: %s", message.message_id, outcome.reason)
                self._leases.ack(message)
            elif isinstance(outcome, Rejected):
                self._reject(message, outcome.reason)
            else:
                record = (await asyncio.shield(records)).get(outcome.task_arn) if records is not None else None
                await self._observe(message, outcome, record)
        except asyncio.CancelledError:
            # Shutdown: the message stays held, so that it is handed back to the queue at once.
            raise
        except Exception:
            log.exception("message %s failed unexpectedly; it stays in the queue", message.message_id)
            self._leases.release(message)

    async def _observe(self, message: Message, change: TaskStateChange, record: TaskRecord | None) -> None:
        tags = await self._tags.tags_for(change, record)
        # The sequencer only sees Prefect's tasks; a check before it keeps others out of its memory.
        run_id = flow_run_id(change, tags.tags)
        if run_id is None:
            self.stats.filtered += 1
            log.debug(
                "task %s is not Prefect's%s", change.task_arn, "" if tags.described else " (ECS no longer knows it)"
            )
            self._leases.ack(message)
            return
        follows = await self._sequencer.follows(change, record.links if record is not None else ())
        event = build_event(change, tags.tags, run_id, follows)
        if event.warnings and change.task_arn not in self._warned_tasks:
            self._warned_tasks[change.task_arn] = True
            for warning in event.warnings:
                log.warning("task %s: %s", change.task_arn, warning)
        refused = await self._forwarder.forward(event)
        if refused is None:
            self.stats.forwarded += 1
            self.stats.forward_latency.observe(max(0.0, (datetime.now(UTC) - change.emitted).total_seconds()))
            self._leases.ack(message)
        else:
            self.stats.invalid_events += 1
            self._reject(message, f"the Prefect API refused event {event.id}: {refused}")

    def _reject(self, message: Message, reason: str) -> None:
        self.stats.rejected += 1
        level = logging.DEBUG if message.message_id in self._logged_rejections else logging.WARNING
        self._logged_rejections[message.message_id] = True
        log.log(
            level,
            "message %s rejected, left for the dead-letter queue (receive %d): %s",
            message.message_id,
            message.receive_count,
            reason,
        )
        self._leases.release(message)

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self._config.summary_interval)
            log.info("summary: %s", self.stats.summary())


def _order(outcome: Decoded) -> tuple[str, int]:
    if isinstance(outcome, TaskStateChange):
        return (outcome.task_arn, outcome.version or 0)
    return ("", 0)

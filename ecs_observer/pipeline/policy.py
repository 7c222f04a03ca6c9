"""The per-message policy: a decoded message in, a `Decision` out.

The rules are the core's (`core.decision`, `core.translate`); this module adds
only the lookups they need: the task's tags (batched DescribeTasks, shared
state) and its previous change (the reorder window).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from cachetools import LRUCache

from ..core.decision import Decision, duplicate, forward, resend_as, triage, unowned
from ..core.ecs_event import Decoded, TaskStateChange
from ..core.task_record import TaskRecord, TaskTags
from ..core.translate import flow_run_id
from ..ports import TaskStateStore
from .config import ObserverConfig
from .sequencer import Sequencer
from .tags import TagLookup

__all__ = ["Policy"]

log = logging.getLogger("ecs_observer")


class Policy:
    def __init__(
        self,
        tags: TagLookup,
        sequencer: Sequencer,
        store: TaskStateStore,
        config: ObserverConfig,
        *,
        effects: bool = True,
    ) -> None:
        """`effects` False: events only (no flow-run or task-definition port to apply them with)."""
        self._tags = tags
        self._sequencer = sequencer
        self._store = store
        self._loads: set[asyncio.Task[Mapping[str, TaskRecord]]] = set()
        self._config = config
        self._effects = effects
        self._retry = config.retry_policy()
        # Bounded, so that a task's tag problems are logged once, not on every change.
        self._warned_tasks: LRUCache[str, bool] = LRUCache(maxsize=10_000)

    def load(self, changes: list[TaskStateChange]) -> asyncio.Task[Mapping[str, TaskRecord]] | None:
        """One read of the task state for a whole receive batch. Tasks known here not to be
        Prefect's are left out: most tasks in an account are not, and their answer never changes."""
        wanted = {change.task_arn for change in changes if self._may_be_prefects(change)}
        if not wanted:
            return None
        load = asyncio.create_task(self._store.load(wanted))
        self._loads.add(load)
        load.add_done_callback(self._loads.discard)
        return load

    async def close(self) -> None:
        for load in self._loads:
            load.cancel()
        await asyncio.gather(*self._loads, return_exceptions=True)

    def _may_be_prefects(self, change: TaskStateChange) -> bool:
        known = self._tags.cached(change.task_arn)
        return known is None or flow_run_id(change, known.tags) is not None

    async def decide(self, decoded: Decoded, record: TaskRecord | None, described: TaskTags | None = None) -> Decision:
        """`record` is the task's shared state, loaded with the message's receive batch; `described`, the
        tags a sweep's DescribeTasks just answered (no lookup of its own then)."""
        change = triage(decoded)
        if not isinstance(change, TaskStateChange):
            return change
        tags = described if described is not None else await self._tags.tags_for(change, record)
        # Checked before sequencing: the sequencer's memory holds Prefect's tasks only. A task known to be
        # Prefect's has its tags at once (from the cache, or the state loaded with the batch), so its change
        # takes its place in the task's chain on receipt, where a successor on another replica finds it.
        run_id = flow_run_id(change, tags.tags)
        if run_id is None:
            return unowned(change, tags)
        kept = await self._sequencer.sequence(change, record.links if record is not None else ())
        if kept.event_id != change.event_id and (twin := resend_as(change, kept)) is not None:
            change = twin
            kept = await self._sequencer.sequence(change)
        forwarded_before = kept.event_id != change.event_id
        if forwarded_before and change.source == "event":
            return duplicate(change, kept.event_id)
        decided = forward(
            change,
            tags.tags,
            run_id,
            kept.follows,
            container_name=self._config.container_name,
            effects=self._effects,
            run_states=self._config.flow_run_states,
            crash_log_lines=self._config.crash_log_lines,
            retry=self._retry,
            forwarded_before=forwarded_before,
        )
        event = decided.event
        if event is not None and event.warnings and change.task_arn not in self._warned_tasks:
            self._warned_tasks[change.task_arn] = True
            for warning in event.warnings:
                log.warning("task %s: %s", change.task_arn, warning)
        return decided

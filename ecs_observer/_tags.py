"""Which tasks are Prefect's: tags from ECS `DescribeTasks`, batched, cached and retried.

The events carry no tags. `DescribeTasks` takes up to 100 tasks of one cluster
and is throttled account-wide, so lookups from all messages in flight are
gathered per (region, cluster) and sent together: at 100 tasks, in a trickle once
no new task has come for a short linger, in a backlog once the intake catches up
or the in-flight bound is reached; the
answer, "these tags" or "none", is cached for the task's whole life (its tags
can be gone once it has stopped). An error is never taken for "no tags": the
call is retried with backoff while the messages wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from cachetools import LRUCache

from ._backoff import Backoff
from ._ecs_event import TaskStateChange
from ._stats import Stats

__all__ = ["MAX_TASKS_PER_CALL", "NO_TAGS", "TagLookup", "TaskDescriber", "TaskTags"]

log = logging.getLogger("ecs_observer.tags")
MAX_TASKS_PER_CALL = 100
PREFECT_TAG_PREFIX = "prefect.io/"


@dataclass(frozen=True, slots=True)
class TaskTags:
    """The Prefect tags of a task; `described` is False when ECS no longer knows the task."""

    tags: Mapping[str, str]
    described: bool = True


NO_TAGS = TaskTags(MappingProxyType({}))
GONE = TaskTags(MappingProxyType({}), described=False)


class TaskDescriber(Protocol):
    """ECS `DescribeTasks(include=["TAGS"])` for up to 100 tasks of one cluster.

    Answers all tags per task ARN, None for a task ECS does not know (any more);
    raises on any error, which the caller retries.
    """

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, Mapping[str, str] | None]: ...


@dataclass
class _Pending:
    futures: dict[str, asyncio.Future[TaskTags]] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    first: float = 0.0


class TagLookup:
    def __init__(
        self,
        describer: TaskDescriber,
        stats: Stats,
        *,
        cache_size: int = 100_000,
        linger: float = 0.05,
        backoff: Backoff = Backoff(),
    ) -> None:
        self._describer = describer
        self._stats = stats
        self._cache: LRUCache[str, TaskTags] = LRUCache(maxsize=cache_size)
        self._linger = linger
        self._backlog = False  # set while receives come back full: more tasks are on their way
        self._backoff = backoff
        self._pending: dict[tuple[str, str | None], _Pending] = {}
        self._in_flight: dict[str, asyncio.Future[TaskTags]] = {}
        self._calls: set[asyncio.Task[None]] = set()

    async def tags_for(self, change: TaskStateChange) -> TaskTags:
        if (cached := self._cache.get(change.task_arn)) is not None:
            self._stats.tag_cache_hits += 1
            return cached
        future = self._in_flight.get(change.task_arn)
        if future is None:
            future = self._enqueue(change)
        return await asyncio.shield(future)

    def _enqueue(self, change: TaskStateChange) -> asyncio.Future[TaskTags]:
        loop = asyncio.get_running_loop()
        key = (change.region, change.cluster)
        pending = self._pending.setdefault(key, _Pending())
        future: asyncio.Future[TaskTags] = loop.create_future()
        pending.futures[change.task_arn] = future
        self._in_flight[change.task_arn] = future
        if len(pending.futures) >= MAX_TASKS_PER_CALL:
            self._flush(key)
            return future
        now = loop.time()
        if pending.timer is None:
            pending.first = now
        else:
            pending.timer.cancel()
        pending.timer = loop.call_at(self._due(pending, now), self._flush, key)
        return future

    def _due(self, pending: _Pending, now: float) -> float:
        """When a partial group goes. In a trickle: once no new task has joined for a linger (debounce),
        within 10 lingers. In a backlog: after 50 lingers, unless 100 tasks, a short receive or a full
        in-flight bound (`flush_all`) come first; its messages have waited in the queue anyway."""
        if self._backlog:
            return pending.first + 50 * self._linger
        return min(now + self._linger, pending.first + 10 * self._linger)

    def flush_all(self) -> None:
        """Send every partial group now: no more tasks can come (the in-flight bound is reached)."""
        for key in list(self._pending):
            self._flush(key)

    def intake(self, full: bool) -> None:
        """Told after each receive: a full one means a backlog, a short one that the intake has caught up."""
        was, self._backlog = self._backlog, full
        if was and not full:
            loop = asyncio.get_running_loop()
            for key, pending in self._pending.items():
                if pending.timer is not None:
                    pending.timer.cancel()
                pending.timer = loop.call_at(self._due(pending, loop.time()), self._flush, key)

    def _flush(self, key: tuple[str, str | None]) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        call = asyncio.get_running_loop().create_task(self._describe(key, pending.futures))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def _describe(self, key: tuple[str, str | None], futures: dict[str, asyncio.Future[TaskTags]]) -> None:
        region, cluster = key
        arns = list(futures)
        try:
            async for attempt in self._backoff.attempts(Exception):
                with attempt:
                    self._stats.describe_calls += 1
                    try:
                        found = await self._describer.describe(region, cluster, arns)
                    except Exception as exc:
                        self._stats.retries["describe_tasks"] += 1
                        log.warning(
                            "DescribeTasks failed for %d task(s) of cluster %s in %s; retrying (attempt %d): %s",
                            len(arns),
                            cluster or "default",
                            region,
                            attempt.num,
                            exc,
                        )
                        raise
        finally:
            for arn in arns:
                self._in_flight.pop(arn, None)
        for arn, future in futures.items():
            tags = found.get(arn)
            result = GONE if tags is None else _prefect_tags(tags)
            self._cache[arn] = result
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        for pending in self._pending.values():
            if pending.timer is not None:
                pending.timer.cancel()
            for future in pending.futures.values():
                future.cancel()
        self._pending.clear()
        for future in self._in_flight.values():
            future.cancel()
        for call in list(self._calls):
            call.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)


def _prefect_tags(tags: Mapping[str, str]) -> TaskTags:
    """Keep only Prefect's tags: the cache holds many tasks that are not Prefect's."""
    kept = {key: value for key, value in tags.items() if key.startswith(PREFECT_TAG_PREFIX)}
    return TaskTags(MappingProxyType(kept)) if kept else NO_TAGS

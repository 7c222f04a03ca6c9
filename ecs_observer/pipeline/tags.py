"""Which tasks are Prefect's: tags from ECS `DescribeTasks`, batched, cached and retried.

The events carry no tags. `DescribeTasks` takes up to 100 tasks of one cluster
and is throttled account-wide, so lookups from all messages in flight are
gathered per (region, cluster) and sent together: at 100 tasks, in a trickle once
no new task has come for a short linger, in a backlog once the intake catches up
or the in-flight bound is reached; the
answer, "these tags" or "none", is cached for the task's whole life (its tags
can be gone once it has stopped). An error is never taken for "no tags": the
call is retried with backoff while the messages wait. Two answers are not final
at once: MISSING for a change of the last few minutes (DescribeTasks is
eventually consistent right after RunTask) is asked again a few times, with
backoff, before the task counts as gone; another failure for one task
(ACCESS_DENIED, ...) is asked again for `failure_limit` seconds, then answered
as "ECS cannot say", which is never cached and never means "not Prefect's".

With several replicas, the answer is also kept in the shared task state: a
replica first claims a task there, and only the claimant describes it; the
others watch the store until its tags appear (or the claim lapses).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from cachetools import LRUCache

from ..core.ecs_event import TaskStateChange
from ..core.task_record import GONE, NO_TAGS, TaskRecord, TaskTags, expires_after
from ..ports import DescribeFailure, TaskDescriber, TaskStateStore, TaskView
from ..support.backoff import Backoff, Retrying
from ..support.batcher import Batcher
from ..support.stats import Stats
from .config import ObserverConfig
from .watch import StateWatch

__all__ = ["MAX_TASKS_PER_CALL", "TagLookup", "prefect_tags"]

log = logging.getLogger("ecs_observer.tags")
MAX_TASKS_PER_CALL = 100
# MISSING for a change younger than this may be ECS not showing a new task yet: asked again this often.
MISSING_GRACE = timedelta(minutes=3)
MISSING_TRIES = 5
PREFECT_TAG_PREFIX = "prefect.io/"


@dataclass
class _Retries:
    attempts: int = 0
    failing_since: float | None = None  # when ECS first failed to describe the task (monotonic)


@dataclass(frozen=True, slots=True)
class _AskAgain:
    """ECS's answer for the task is not final yet: ask again at this (loop) time."""

    at: float


class TagLookup:
    def __init__(
        self,
        describer: TaskDescriber,
        store: TaskStateStore,
        stats: Stats,
        *,
        cache_size: int = 100_000,
        linger: float = 0.05,
        backoff: Backoff = Backoff(),
        claim_seconds: float = 30.0,
        watch: StateWatch | None = None,
        failure_limit: float = 300.0,
    ) -> None:
        self._describer = describer
        self._store = store
        self._watch = watch or StateWatch(self._store)
        self._claim_seconds = claim_seconds
        self._stats = stats
        self._cache: LRUCache[str, TaskTags] = LRUCache(maxsize=cache_size)
        self._linger = linger
        self._backlog = False  # set while receives come back full: more tasks are on their way
        self._backoff = backoff.hooked(stats.called)
        self._groups: dict[tuple[str, str | None], Batcher[TaskStateChange, TaskTags | _AskAgain]] = {}
        self._in_flight: dict[str, asyncio.Future[TaskTags]] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self._failure_limit = failure_limit
        self._retries: dict[str, _Retries] = {}  # tasks to be asked again, and how often they were

    @classmethod
    def configured(
        cls, describer: TaskDescriber, store: TaskStateStore, stats: Stats, config: ObserverConfig, watch: StateWatch
    ) -> TagLookup:
        return cls(
            describer,
            store,
            stats,
            cache_size=config.cache_size,
            linger=config.describe_linger,
            backoff=config.backoff,
            claim_seconds=config.describe_claim,
            watch=watch,
            failure_limit=config.describe_failure_limit,
        )

    def cached(self, task_arn: str) -> TaskTags | None:
        return self._cache.get(task_arn)

    def learn(self, task_arn: str, tags: Mapping[str, str]) -> TaskTags | None:
        """Tags a sweep's DescribeTasks answered, for the task's observation, and kept for its later changes;
        None when there are no Prefect tags: a stopped task may have lost its own (StopTask deletes them),
        and what is known of it (the cache, the shared record) is then asked as for any change."""
        found = prefect_tags(tags)
        if not found.tags:
            return None
        self._cache[task_arn] = found
        return found

    async def tags_for(self, change: TaskStateChange, record: TaskRecord | None = None) -> TaskTags:
        """The task's tags: from this replica's cache, from `record` (the shared state loaded with
        the message's batch), or described once by whichever replica claims the task."""
        if (cached := self._cache.get(change.task_arn)) is not None:
            self._stats.tag_cache_hits += 1
            return cached
        if record is not None and record.tags is not None:
            return self._learnt(change.task_arn, record.tags)
        future = self._in_flight.get(change.task_arn)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._in_flight[change.task_arn] = future
            resolve = asyncio.create_task(self._resolve(change, future))
            self._calls.add(resolve)
            resolve.add_done_callback(self._calls.discard)
        return await asyncio.shield(future)

    async def _resolve(self, change: TaskStateChange, future: asyncio.Future[TaskTags]) -> None:
        try:
            while not await self._store.claim(change.task_arn, self._claim_seconds):
                record = await self._await_claimant(change.task_arn)
                if record.tags is not None:
                    answer = self._learnt(change.task_arn, record.tags)
                    break
                # The claimant saved nothing before its claim lapsed (it died or is stuck): claim again.
            else:
                answer = await self._described(change)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            # The waiting messages fail, and so stay in the queue; the error is theirs alone to report
            # (raised here too, nobody would retrieve it: asyncio would log a traceback).
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved, in case every waiter is gone (cancelled at shutdown)
            return
        finally:
            self._in_flight.pop(change.task_arn, None)
            self._retries.pop(change.task_arn, None)
        if not future.done():
            future.set_result(answer)

    async def _described(self, change: TaskStateChange) -> TaskTags:
        """The tags ECS answers for the task, asked again (with backoff) while its answer is not final."""
        while True:
            answer = await self._group(change).ask(change)
            if isinstance(answer, TaskTags):
                return answer
            await asyncio.sleep(max(0.0, answer.at - asyncio.get_running_loop().time()))

    def _learnt(self, task_arn: str, tags: TaskTags) -> TaskTags:
        """Tags another replica described, read from the shared state: kept here for the task's life."""
        self._stats.shared_tag_hits += 1
        self._cache[task_arn] = tags
        return tags

    async def _await_claimant(self, task_arn: str) -> TaskRecord:
        """Wait until the claimant saves the task's tags, or its claim lapses."""
        while True:
            record = await self._watch.next(task_arn)
            if record is None or record.tags is not None or record.claimed_until < time.time():
                return record or TaskRecord()

    def _group(self, change: TaskStateChange) -> Batcher[TaskStateChange, TaskTags | _AskAgain]:
        """The batcher of the change's (region, cluster): one DescribeTasks is for one cluster."""
        key = region, cluster = change.region, change.cluster
        group = self._groups.get(key)
        if group is None:
            # In a trickle a group goes once no new task has joined for a linger (debounce), within
            # 10 lingers; in a backlog after 50, unless 100 tasks, a short receive or a full in-flight
            # bound (`flush`) come first: its messages have waited in the queue anyway.
            group = self._groups[key] = Batcher(
                lambda changes: self._describe(region, cluster, changes),
                linger=10 * self._linger,
                quiet=self._linger,
                backlog_linger=50 * self._linger,
                max_items=MAX_TASKS_PER_CALL,
            )
            group.intake(self._backlog)
        return group

    def flush(self) -> None:
        """Send every partial group now: no more tasks can come (the in-flight bound is reached)."""
        for group in self._groups.values():
            group.flush()

    def intake(self, full: bool) -> None:
        """Told after each receive: a full one means a backlog, a short one that the intake has caught up."""
        self._backlog = full
        for group in self._groups.values():
            group.intake(full)

    async def _describe(
        self, region: str, cluster: str | None, changes: list[TaskStateChange]
    ) -> list[TaskTags | _AskAgain]:
        arns = [change.task_arn for change in changes]

        async def describe() -> Mapping[str, TaskView | DescribeFailure | None]:
            self._stats.describe_calls += 1
            answer = await self._describer.describe(region, cluster, arns)
            # Only the tasks ECS described: not those of a failed call, nor MISSING or failed ones.
            self._stats.described_tasks += sum(isinstance(view, TaskView) for view in answer.values())
            return answer

        what = f"DescribeTasks for {len(arns)} task(s) of cluster {cluster or 'default'} in {region}"
        found = await self._backoff.call("describe_tasks", describe, what=what)
        results: list[TaskTags | _AskAgain] = []
        for change in changes:
            answer = found.get(change.task_arn)
            result = self._result(change, answer)
            results.append(self._ask_later(change, answer) if result is None else result)
        final = [(change, r) for change, r in zip(changes, results, strict=True) if isinstance(r, TaskTags)]
        # Saved before anyone proceeds: the other replicas watching these tasks stop waiting.
        await asyncio.gather(
            *(
                self._store.save_tags(change.task_arn, r, expires_after(change.last_status, change.occurred))
                for change, r in final
                if r.failure is None
            )
        )
        for change, r in final:
            if r.failure is None:
                self._cache[change.task_arn] = r
        return results

    def _result(self, change: TaskStateChange, answer: TaskView | DescribeFailure | None) -> TaskTags | None:
        """The task's tags from ECS's answer, or None to ask again later."""
        if answer is None:
            young = datetime.now(UTC) - change.occurred < MISSING_GRACE
            tries = self._retries.get(change.task_arn, _Retries()).attempts
            return None if young and tries < MISSING_TRIES else GONE
        if isinstance(answer, DescribeFailure):
            retries = self._retries.setdefault(change.task_arn, _Retries())
            since = retries.failing_since = retries.failing_since or time.monotonic()
            if time.monotonic() - since < self._failure_limit:
                return None
            return TaskTags(MappingProxyType({}), described=False, failure=answer.reason)
        return prefect_tags(answer.tags)

    def _ask_later(self, change: TaskStateChange, answer: TaskView | DescribeFailure | None) -> _AskAgain:
        retries = self._retries.setdefault(change.task_arn, _Retries())
        retries.attempts += 1
        reason = answer.reason if isinstance(answer, DescribeFailure) else "MISSING, just after it started?"
        self._backoff.retrying(
            Retrying(
                "describe_tasks",
                retries.attempts,
                LookupError(reason),
                f"DescribeTasks of {change.task_arn}",
                answered=True,
            )
        )
        return _AskAgain(asyncio.get_running_loop().time() + self._backoff.delay(retries.attempts))

    async def close(self) -> None:
        for future in self._in_flight.values():
            future.cancel()
        for call in self._calls:
            call.cancel()
        await asyncio.gather(*(group.close() for group in self._groups.values()))
        await asyncio.gather(*self._calls, return_exceptions=True)


def prefect_tags(tags: Mapping[str, str]) -> TaskTags:
    """Keep only Prefect's tags: the cache holds many tasks that are not Prefect's."""
    kept = {key: value for key, value in tags.items() if key.startswith(PREFECT_TAG_PREFIX)}
    return TaskTags(MappingProxyType(kept)) if kept else NO_TAGS

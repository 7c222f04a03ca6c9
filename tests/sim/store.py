"""The shared task state (DynamoDB's part) as replicas see it: atomic per call, slow, failing.

Each call takes its latency in two halves around the moment it applies, as a
DynamoDB call applies somewhere between request and answer; a failing call is
retried by the adapter (`TaskStateStore` calls retry themselves), so to the
pipeline it is more latency, and an answer lost after the write was applied is
a retry that finds its own write. The links and once-claims are kept by the
production `MemoryTaskState` (the same contract the DynamoDB adapter keeps,
conditional writes and all), so a change to its rules is a change to the
simulated table; describe claims, tags and the sweep's lease, which the
single-process store need not share, are kept here with DynamoDB's conditions.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.core.chain import Link
from ecs_observer.core.task_record import TaskRecord, TaskTags
from ecs_observer.ports import Claim

from .clock import VirtualClock
from .faults import Faults
from .life import Life

__all__ = ["SharedStore", "StoreView"]


class SharedStore:
    def __init__(self, faults: Faults, clock: VirtualClock) -> None:
        self._faults = faults
        self._clock = clock
        self.table = MemoryTaskState(1_000_000)
        self._tags: dict[str, TaskTags] = {}
        self._claims: dict[str, float] = {}
        self._leases: dict[str, tuple[UUID, float]] = {}
        # Each write's expiry (DynamoDB's TTL), with what it wrote: (call, task, its link, owner or what, expiry).
        self.expiries: list[tuple[str, str, object, datetime]] = []

    async def _half(self, life: Life) -> None:
        plan = self._faults.plan
        await life.pause(self._faults.latency(plan.store_latency / 2))
        while self._faults.happens("store: a call failed and was retried", plan.store_error):
            await life.pause(self._faults.latency(0.2))

    async def load(self, life: Life, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        await self._half(life)
        found = dict(await self.table.load(task_arns))
        for arn in task_arns:
            tags, claim = self._tags.get(arn), self._claims.get(arn, 0.0)
            if tags is not None or claim:
                found[arn] = replace(found.get(arn, TaskRecord()), tags=tags, claimed_until=claim)
        await self._half(life)
        return found

    async def claim(self, life: Life, task_arn: str, seconds: float) -> bool:
        await self._half(life)
        now = self._clock.epoch_seconds()
        mine = task_arn not in self._tags and self._claims.get(task_arn, 0.0) < now
        if mine:
            self._claims[task_arn] = now + seconds
        await self._half(life)
        return mine

    async def save_tags(self, life: Life, task_arn: str, tags: TaskTags, expires: datetime) -> None:
        self.expiries.append(("save_tags", task_arn, None, expires))
        await self._half(life)
        self._tags[task_arn] = tags
        self._claims.pop(task_arn, None)
        await self._half(life)

    async def record(self, life: Life, task_arn: str, link: Link, expires: datetime) -> Link:
        self.expiries.append(("record", task_arn, link, expires))
        await self._half(life)
        kept = await self.table.record(task_arn, link, expires)
        await self._half(life)
        return kept

    async def settle(self, life: Life, task_arn: str, link: Link, expires: datetime) -> Link:
        self.expiries.append(("settle", task_arn, link, expires))
        await self._half(life)
        kept = await self.table.settle(task_arn, link, expires)
        await self._half(life)
        return kept

    async def once(self, life: Life, task_arn: str, what: str, owner: UUID, expires: datetime, lease: float) -> Claim:
        self.expiries.append(("once", task_arn, owner, expires))
        await self._half(life)
        claim = await self.table.once(task_arn, what, owner, expires, lease)
        await self._half(life)
        return claim

    async def done(self, life: Life, task_arn: str, what: str, expires: datetime) -> None:
        self.expiries.append(("done", task_arn, what, expires))
        await self._half(life)
        await self.table.done(task_arn, what, expires)
        await self._half(life)

    async def lease(self, life: Life, name: str, owner: UUID, seconds: float) -> bool:
        await self._half(life)
        now = self._clock.epoch_seconds()
        holder = self._leases.get(name)
        mine = holder is None or holder[0] == owner or holder[1] < now
        if mine:
            self._leases[name] = (owner, now + seconds)
        await self._half(life)
        return mine


class StoreView:
    """The shared state as one replica reaches it (`ports.TaskStateStore`), polled as DynamoDB's is."""

    poll_interval = 0.25

    def __init__(self, store: SharedStore, life: Life) -> None:
        self._store = store
        self._life = life

    async def load(self, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        return await self._store.load(self._life, task_arns)

    async def claim(self, task_arn: str, seconds: float) -> bool:
        return await self._store.claim(self._life, task_arn, seconds)

    async def save_tags(self, task_arn: str, tags: TaskTags, expires: datetime) -> None:
        await self._store.save_tags(self._life, task_arn, tags, expires)

    async def record(self, task_arn: str, link: Link, expires: datetime) -> Link:
        return await self._store.record(self._life, task_arn, link, expires)

    async def settle(self, task_arn: str, link: Link, expires: datetime) -> Link:
        return await self._store.settle(self._life, task_arn, link, expires)

    async def once(self, task_arn: str, what: str, owner: UUID, expires: datetime, lease: float) -> Claim:
        return await self._store.once(self._life, task_arn, what, owner, expires, lease)

    async def done(self, task_arn: str, what: str, expires: datetime) -> None:
        await self._store.done(self._life, task_arn, what, expires)

    async def lease(self, name: str, owner: UUID, seconds: float) -> bool:
        return await self._store.lease(self._life, name, owner, seconds)

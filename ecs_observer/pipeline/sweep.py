"""The sweep: every interval, Prefect's active runs held against their ECS tasks, for when no event came.

One replica sweeps at a time (a lease in the task-state store, renewed each
sweep, taken over once it lapses). A sweep reads every run Pending, Running or
Cancelling (and recently final runs, when a stop feature needs them), a page
of 200 per read; describes their tasks, 100 per DescribeTasks per cluster;
and judges each run (`core.sweep.judge`). A lost STOPPED goes the event path's
way (`Reconciler.observe`), so it does exactly what its event would have done;
a task ECS forgot gets a proposal of the sweep's own; a task to stop is
stopped. What is fine costs no write.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol
from uuid import UUID, uuid4

from ..core.decision import Ack, Release
from ..core.ecs_event import TaskStateChange
from ..core.run_states import FINAL, Proposal, ProposalAnswer
from ..core.sweep import Crash, Repair, RunToReconcile, Scope, Skip, StopTask, TaskRef, Verdict, judge, task_of
from ..core.task_view import DescribeFailure, TaskView, observation
from ..ports import FlowRuns, TaskDescriber, TaskStateStore, TaskStopper
from ..support.stats import Stats
from .config import ObserverConfig
from .tags import MAX_TASKS_PER_CALL

__all__ = ["LEASE", "Reconciler", "Sweeper"]

log = logging.getLogger("ecs_observer.sweep")
LEASE = "sweep"
FINAL_LOOKBACK = timedelta(hours=1)  # ECS keeps a stopped task visible about this long
_CONCURRENT_ACTIONS = 20  # repairs wait up to a reorder window each: many at once, not one after another
_Answer = TaskView | DescribeFailure | None


class Reconciler(Protocol):
    """The event path, as the sweep uses it (`Observer`)."""

    async def observe(self, change: TaskStateChange, tags: Mapping[str, str]) -> Ack | Release: ...

    async def propose(self, run_id: UUID, task_arn: str, proposal: Proposal) -> ProposalAnswer | None: ...


class Sweeper:
    def __init__(
        self,
        reconciler: Reconciler,
        runs: FlowRuns,
        describer: TaskDescriber,
        store: TaskStateStore,
        stats: Stats,
        config: ObserverConfig,
        scope: Scope,
        stopper: TaskStopper | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._reconciler = reconciler
        self._runs = runs
        self._describer = describer
        self._store = store
        self._stats = stats
        self._interval = config.sweep_interval
        self._rules = config.sweep_rules()
        self._scope = scope
        self._stopper = stopper
        self._clock = clock
        self._backoff = config.backoff.hooked(stats.called)
        self._owner = uuid4()
        # (task ARN, what was seen: MISSING or STOPPED) -> when a sweep first saw it so; kept for tasks still swept.
        self._first_seen: dict[tuple[str, str], datetime] = {}
        final = set(FINAL) if self._rules.stop_orphans else {"CANCELLED"} if self._rules.stop_cancelled else set()
        self._final_types = frozenset(final)

    async def run(self) -> None:
        """Sweep every interval while this replica holds the lease (the first sweep at once), until cancelled.
        A replica without it looks again four times an interval, so that it takes over within two."""
        while True:
            try:
                held = await self._lease()
                if held:
                    await self.sweep()
            except Exception as exc:  # the next sweep tries again; nothing is lost meanwhile
                held = True
                self._stats.sweep_failures += 1
                log.warning("sweep failed; the next one in %g s tries again: %s", self._interval, exc)
            await asyncio.sleep(self._interval if held else self._interval / 4)

    async def _lease(self) -> bool:
        return await self._store.lease(LEASE, self._owner, 1.5 * self._interval)

    async def sweep(self) -> dict[UUID, str]:
        """One sweep: every run judged and its verdict carried out; each run's outcome, counted and answered."""
        now = self._clock()
        runs: list[RunToReconcile] = []
        since = now - FINAL_LOOKBACK if self._final_types else None
        async for page in self._runs.to_reconcile(since, self._final_types):
            runs.extend(page)
        refs = {run.run_id: task_of(run.infrastructure_pid) for run in runs}
        answers = await self._describe([ref for ref in refs.values() if ref is not None and self._scope.watches(ref)])
        seen: dict[tuple[str, str], datetime] = {}
        verdicts: list[tuple[RunToReconcile, Verdict]] = []
        for run in runs:
            ref = refs[run.run_id]
            answer = answers.get(ref.task_arn) if ref is not None else None
            first = now
            if ref is not None and self._scope.watches(ref) and (condition := _condition(answer)) is not None:
                key = (ref.task_arn, condition)
                first = seen[key] = self._first_seen.get(key, now)
            verdicts.append((run, judge(run, self._scope, answer, first, now, self._rules)))
        self._first_seen = seen
        outcomes: dict[UUID, str] = {}
        if self._interval > 0 and not await self._lease():
            # Reading took so long that the lease lapsed and another replica holds it: it acts, not this one.
            log.warning("sweep: the lease passed to another replica while reading; leaving the actions to it")
            return outcomes
        limit = asyncio.Semaphore(_CONCURRENT_ACTIONS)

        async def act(run: RunToReconcile, verdict: Verdict) -> None:
            async with limit:
                outcome = outcomes[run.run_id] = await self._act(run, refs[run.run_id], verdict, now)
            self._stats.reconciled[outcome] += 1

        await asyncio.gather(*(act(run, verdict) for run, verdict in verdicts))
        self._stats.sweeps += 1
        counts = Counter(outcomes.values())
        summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items()))
        log.info("sweep: %d run(s) held against their tasks: %s", len(runs), summary or "none")
        return outcomes

    async def _describe(self, refs: Sequence[TaskRef]) -> dict[str, _Answer]:
        """Each task once, 100 to a call, per region and cluster."""
        groups: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)
        for ref in refs:
            groups[(ref.region, ref.cluster)][ref.task_arn] = None
        answers: dict[str, _Answer] = {}
        for (region, cluster), unique in groups.items():
            arns = list(unique)
            for offset in range(0, len(arns), MAX_TASKS_PER_CALL):
                chunk = arns[offset : offset + MAX_TASKS_PER_CALL]

                async def describe(
                    region: str = region, cluster: str = cluster, chunk: list[str] = chunk
                ) -> Mapping[str, _Answer]:
                    self._stats.describe_calls += 1
                    return await self._describer.describe(region, cluster, chunk)

                what = f"sweep: DescribeTasks for {len(chunk)} task(s) of cluster {cluster} in {region}"
                try:
                    found = await self._backoff.call("describe_tasks", describe, limit=6, what=what)
                except Exception as exc:  # one cluster ECS will not describe (gone, denied) is not the sweep's end
                    log.warning("%s failed; its runs are skipped this sweep: %s", what, exc)
                    found = dict.fromkeys(chunk, DescribeFailure(str(exc)))
                else:
                    self._stats.described_tasks += sum(isinstance(view, TaskView) for view in found.values())
                answers.update(found)
        return answers

    async def _act(self, run: RunToReconcile, ref: TaskRef | None, verdict: Verdict, now: datetime) -> str:
        if isinstance(verdict, Skip):
            return f"{verdict.outcome}:{verdict.why}"
        if ref is None or not isinstance(verdict, Repair | Crash | StopTask):
            return verdict.outcome
        try:
            if isinstance(verdict, Repair):
                return await self._repair(run, ref, verdict.task, now)
            if isinstance(verdict, Crash):
                return await self._crash(run, ref, verdict)
            return await self._stop(ref, verdict)
        except Exception as exc:  # one run's trouble is not the sweep's: the next sweep tries it again
            log.warning("sweep: flow run %s (task %s): %s failed: %s", run.run_id, ref.task_arn, verdict.outcome, exc)
            return "failed"

    async def _repair(self, run: RunToReconcile, ref: TaskRef, task: TaskView, now: datetime) -> str:
        seen = self._first_seen.get((ref.task_arn, "STOPPED"), now)
        outcome = await self._reconciler.observe(observation(task, seen, run.run_id), task.tags)
        if isinstance(outcome, Release):
            log.warning("sweep: flow run %s, stopped task %s: %s", run.run_id, ref.task_arn, outcome.reason)
            return "failed"
        if outcome.outcome not in ("forwarded", "deduplicated"):
            log.info("sweep: flow run %s, stopped task %s: %s", run.run_id, ref.task_arn, outcome.note)
            return "unchanged"
        log.info(
            "sweep: flow run %s (%s) was %s; its task %s had stopped with no event applied: %s",
            run.run_id,
            run.name,
            run.state.name or run.state.type,
            ref.task_arn,
            "event forwarded, run updated" if outcome.outcome == "forwarded" else "run updated",
        )
        return "repaired"

    async def _crash(self, run: RunToReconcile, ref: TaskRef, verdict: Crash) -> str:
        name = "Crashed" if verdict.state_type == "CRASHED" else "Cancelled"
        answer = await self._reconciler.propose(
            run.run_id, ref.task_arn, Proposal(verdict.state_type, name, verdict.message)
        )
        log.info("sweep: flow run %s (%s): %s proposed, %s: %s", run.run_id, run.name, name, answer, verdict.message)
        return verdict.outcome if answer == "ACCEPT" else "unchanged"

    async def _stop(self, ref: TaskRef, verdict: StopTask) -> str:
        stopper = self._stopper
        if stopper is None:
            return "unchanged"

        async def stop() -> None:
            await stopper.stop(ref.region, ref.cluster, ref.task_arn, verdict.reason)

        await self._backoff.call("stop_task", stop, limit=6, what=f"StopTask {ref.task_arn}")
        self._stats.tasks_stopped[verdict.why] += 1
        log.info("sweep: task %s stopped (%s): %s", ref.task_arn, verdict.why, verdict.reason)
        return f"{verdict.outcome}:{verdict.why}"


def _condition(answer: _Answer) -> str | None:
    """What a sweep dates by when it first saw it: a task gone, or one stopped (ECS may give no stoppedAt)."""
    if answer is None:
        return "MISSING"
    if isinstance(answer, TaskView) and answer.stopped:
        return "STOPPED"
    return None

"""The per-message policy (pipeline/policy.py) as the pipeline meets it, with no server: which task state
a receive batch loads, which tags and links a decision goes by, what it decides for a duplicate, a sweep's
twin and a crash, and how the settings reach the forwarded decision.

In virtual time (tests/sim/clock.py), on the production in-memory state store.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, TypeVar
from uuid import UUID, uuid4

import pytest

from ecs_observer import TaskStateChange, decode
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.app.demo.samples import described, state_change
from ecs_observer.core.decision import Ack, Forward, KeepRunTrue, WriteDiagnosis, forward
from ecs_observer.core.task_record import TaskRecord, TaskTags
from ecs_observer.core.task_view import sweep_event_id
from ecs_observer.pipeline.config import ObserverConfig
from ecs_observer.pipeline.policy import Policy
from ecs_observer.pipeline.sequencer import Sequencer
from ecs_observer.pipeline.tags import TagLookup
from ecs_observer.ports import DescribeFailure, TaskView
from ecs_observer.support.stats import Stats

from .sim.clock import VirtualClock
from .sim.clock import virtual as run_virtual

T = TypeVar("T")

CLOCK = VirtualClock()
RUN_ID = "7c2f4b1e-58c8-4d1b-9a4e-0f3c2d1b6a59"
OVERRIDE_ID = "0b6f0b7e-3c1a-4f59-9d7e-2a8c4f1e5d33"
TASK = "arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef"
OTHER = "arn:aws:ecs:us-east-1:123456789012:task/prefect/fedcba9876543210fedcba9876543210"


def virtual(main: Callable[[], Awaitable[T]]) -> T:
    return run_virtual(main, CLOCK)


class Ecs:
    """DescribeTasks: `TASK` is Prefect's, any other task is not."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, TaskView | DescribeFailure | None]:
        self.asked += task_arns
        return {
            arn: described(arn, {"prefect.io/flow-run-id": RUN_ID} if arn == TASK else {"team": "data"})
            for arn in task_arns
        }


class Store(MemoryTaskState):
    """The production in-memory state, its loads noted."""

    def __init__(self) -> None:
        super().__init__(1000)
        self.loads: list[list[str]] = []

    async def load(self, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        self.loads.append(sorted(task_arns))
        return await super().load(task_arns)


def change(
    version: int = 1,
    status: str = "PROVISIONING",
    task: str = TASK,
    override: str | None = None,
    when: datetime | None = None,
    **fields: Any,
) -> TaskStateChange:
    body = state_change(task, status, version, when or CLOCK.wall(), flow_run_id=override, **fields)
    decoded = decode(json.dumps(body))
    assert isinstance(decoded, TaskStateChange)
    return decoded


class Setup:
    def __init__(self, config: ObserverConfig | None = None, **options: Any) -> None:
        self.config = config or ObserverConfig(reorder_window=0.5)
        self.ecs = Ecs()
        self.store = Store()
        self.tags = TagLookup(self.ecs, self.store, Stats(), linger=0.01)
        self.policy = Policy(
            self.tags, Sequencer(self.store, self.config.reorder_window), self.store, self.config, **options
        )


def test_a_batch_loads_the_state_of_the_tasks_that_may_be_prefects_only() -> None:
    async def main() -> None:
        setup = Setup()
        setup.tags.learn(TASK, {"prefect.io/flow-run-id": RUN_ID})
        assert setup.tags.learn(OTHER, {"team": "data"}) is None
        await setup.tags.tags_for(change(task=OTHER))  # known now: not Prefect's
        unknown = TASK.replace("0123", "4567")
        load = setup.policy.load([change(task=TASK), change(task=OTHER), change(task=unknown)])
        assert load is not None
        assert await load == {}
        assert setup.store.loads == [sorted([TASK, unknown])]
        assert setup.policy.load([change(task=OTHER), change(2, task=OTHER)]) is None  # nothing to read
        overridden = setup.policy.load([change(task=OTHER, override=OVERRIDE_ID)])  # the worker names its run
        assert overridden is not None
        await overridden
        assert setup.store.loads[-1] == [OTHER]
        await setup.policy.close()

    virtual(main)


class BlockingLoads(Store):
    """A state table whose loads never answer; a cancelled load takes a moment to clean up."""

    def __init__(self) -> None:
        super().__init__()
        self.cleaned = 0

    async def load(self, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)
            self.cleaned += 1
            raise
        raise AssertionError("unreachable")


def test_close_cancels_the_loads_under_way_and_waits_for_them() -> None:
    async def main() -> None:
        setup = Setup()
        store = BlockingLoads()
        policy = Policy(setup.tags, Sequencer(store, 0.5), store, setup.config)
        loads = [policy.load([change(task=TASK)]), policy.load([change(task=OTHER)])]
        await asyncio.sleep(0.1)
        await policy.close()  # returns, though the loads it cancelled ended so
        assert store.cleaned == 2
        for load in loads:
            assert load is not None
            assert load.cancelled()

    virtual(main)


def test_a_decision_takes_the_tags_and_links_loaded_with_its_batch() -> None:
    async def main() -> None:
        setup = Setup()
        first = await setup.policy.decide(change(1), None)
        assert isinstance(first, Forward)
        assert setup.ecs.asked == [TASK]
        setup.store.loads.clear()
        second = change(2, "PENDING")
        record = (await setup.store.load([TASK]))[TASK]
        fresh = Setup()  # another replica: nothing cached, the batch's record has the tags and the links
        fresh.store = setup.store
        fresh.policy = Policy(fresh.tags, Sequencer(setup.store, 0.5), setup.store, fresh.config)
        decided = await fresh.policy.decide(second, record)
        assert isinstance(decided, Forward)
        assert decided.event is not None
        assert decided.event.follows == first.change.event_id  # the link loaded with the batch
        assert setup.store.loads == [[TASK]]  # ours: neither tags nor history read again
        assert fresh.ecs.asked == []

    virtual(main)


def test_tags_a_sweep_described_are_taken_as_they_are() -> None:
    async def main() -> None:
        setup = Setup()
        theirs = TaskTags(MappingProxyType({"prefect.io/flow-run-id": OVERRIDE_ID}))
        decided = await setup.policy.decide(change(1), None, described=theirs)
        assert isinstance(decided, Forward)
        assert decided.effects == (KeepRunTrue(UUID(OVERRIDE_ID)),)
        assert setup.ecs.asked == []

    virtual(main)


def test_the_same_change_under_another_event_id_is_a_duplicate_naming_the_one_kept() -> None:
    async def main() -> None:
        setup = Setup()
        first = change(1)
        assert isinstance(await setup.policy.decide(first, None), Forward)
        again = replace(first, event_id=uuid4())  # EventBridge delivered it twice, under two ids
        decided = await setup.policy.decide(again, None)
        assert decided == Ack("deduplicated", f"version 1 of task {TASK} is event {first.event_id} already")

    virtual(main)


def test_a_sweeps_observation_of_a_change_forwarded_before_applies_its_effects_only() -> None:
    async def main() -> None:
        setup = Setup()
        first = change(1)
        assert isinstance(await setup.policy.decide(first, None), Forward)
        observed = replace(first, source="sweep", event_id=sweep_event_id(TASK, 1))
        decided = await setup.policy.decide(observed, None)
        assert isinstance(decided, Forward)
        assert decided.event is None
        assert decided.effects != ()

    virtual(main)


def test_an_event_for_a_change_a_sweep_repaired_carries_on_under_the_sweeps_id() -> None:
    async def main() -> None:
        setup = Setup()
        event = change(1)
        repair = replace(event, source="sweep", event_id=sweep_event_id(TASK, 1))
        assert isinstance(await setup.policy.decide(repair, None), Forward)
        decided = await setup.policy.decide(event, None)  # its message came after all
        assert isinstance(decided, Forward)
        assert decided.change.event_id == repair.event_id
        assert decided.event is not None
        assert decided.event.id == repair.event_id  # the same event again: Prefect keeps it once

    virtual(main)


def crashed() -> TaskStateChange:
    """The flow's container exited with 1, its sidecar cleanly."""
    containers = [
        {"name": name, "lastStatus": "STOPPED", "exitCode": code, "taskArn": TASK}
        for name, code in (("prefect", 1), ("sidecar", 0))
    ]
    return change(5, "STOPPED", exit_code=1, stopped={"containers": containers})


def test_the_policy_forwards_with_the_configured_container_states_and_effects() -> None:
    run_id = UUID(RUN_ID)
    tags = {"prefect.io/flow-run-id": RUN_ID}

    async def decide(config: ObserverConfig, **options: Any) -> Forward:
        setup = Setup(config, **options)
        decided = await setup.policy.decide(crashed(), None)
        assert isinstance(decided, Forward)
        return decided

    async def main() -> None:
        default = await decide(ObserverConfig(crash_log_lines=7))
        assert default.diagnosis is not None
        assert default.diagnosis.failed
        assert default.effects[:2] == (KeepRunTrue(run_id), WriteDiagnosis(run_id, default.diagnosis))
        assert len(default.effects) == 3  # and its crash logs
        for config in (ObserverConfig(container_name="sidecar"), ObserverConfig(flow_run_states=False)):
            for effects in (True, False):
                decided = await decide(config, effects=effects)
                expected = forward(
                    decided.change,
                    tags,
                    run_id,
                    None,
                    container_name=config.container_name,
                    effects=effects,
                    run_states=config.flow_run_states,
                    crash_log_lines=config.crash_log_lines,
                    retry=config.retry_policy(),
                )
                assert decided == expected
        no_run_states = await decide(ObserverConfig(flow_run_states=False))
        assert no_run_states.effects == ()
        sidecar = await decide(ObserverConfig(container_name="sidecar"))  # the flow runs in the other one
        assert sidecar.diagnosis is not None
        assert not sidecar.diagnosis.failed
        assert (await decide(ObserverConfig(), effects=False)).effects == ()

    virtual(main)


def test_a_tasks_tag_problems_are_logged_once_not_on_every_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ecs_observer")
    odd = TaskTags(MappingProxyType({"prefect.io/flow-run-id": RUN_ID, "prefect.io/deployment-id": "nightly"}))

    async def main() -> list[Forward]:
        setup = Setup()
        decided = [await setup.policy.decide(change(version), None, described=odd) for version in (1, 2, 3)]
        decided.append(await setup.policy.decide(change(1, task=OTHER), None, described=odd))
        return [d for d in decided if isinstance(d, Forward)]

    assert len(virtual(main)) == 4
    assert [r.getMessage() for r in caplog.records if r.name == "ecs_observer"] == [
        f"task {task}: tag prefect.io/deployment-id is not a UUID; deployment left out of related resources"
        for task in (TASK, OTHER)
    ]

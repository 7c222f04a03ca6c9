"""The log lines no quick seed reaches, each reached by a world tweaked to log it, and held to docs/logs.md as
every line of a simulated run is (tests/sim/logs.py): its template under its logger, its level, its values.

The world's other invariants may not hold in such a world (a stream that never exists leaves crash logs
unposted); these tests read only the log lines'. Each runs one small seed, in a fraction of a second.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from ecs_observer.core.task_view import sweep_event_id
from tests.sim.faults import SimError
from tests.sim.life import Life
from tests.sim.logs import LogContract
from tests.sim.run import simulate
from tests.sim.world import World

INVARIANT = "every log line is as docs/logs.md gives it"


def _logged(monkeypatch: pytest.MonkeyPatch, seed: int, tweak: Callable[[World], None]) -> Counter[str]:
    """The run's templates, with how often each was logged; the run's log lines all as the page gives them."""
    seen: Counter[str] = Counter()
    check = LogContract.check

    def counted(self: LogContract, record: logging.LogRecord, who: str = "") -> list[str]:
        seen[str(record.msg)] += 1
        return check(self, record, who)

    monkeypatch.setattr(LogContract, "check", counted)
    wrong = [v.detail for v in simulate(seed, tweak=tweak).violations if v.invariant == INVARIANT]
    assert not wrong, wrong[:3]
    return seen


def test_a_deregistration_that_keeps_failing_is_given_up_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(world: World) -> None:
        async def deregister(life: object, arn: str) -> None:
            raise SimError("AccessDeniedException: not authorized to perform ecs:DeregisterTaskDefinition")

        world.ecs.deregister = deregister  # type: ignore[method-assign]

    assert _logged(monkeypatch, 5, denied)["%s failed %d times; giving up: %s"]


def test_a_missing_log_stream_names_its_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """The line named the task definition's ARN as the task's (before this test)."""

    def no_stream(world: World) -> None:
        async def tail(life: object, source: object, task_id: str, lines: int) -> None:
            return None

        world.ecs.tail = tail  # type: ignore[method-assign]
        world.ecs.definitions_logging.update(t.definition_arn for t in world.scenario.tasks)

    assert _logged(monkeypatch, 3, no_stream)["no log stream %s in %s for task %s"]


def test_a_tag_that_is_not_a_uuid_is_warned_about_with_its_task(monkeypatch: pytest.MonkeyPatch) -> None:
    def bad_tag(world: World) -> None:
        for task in world.ecs.tasks.values():
            if "prefect.io/flow-run-id" in task.tags:
                task.tags = {**task.tags, "prefect.io/deployment-id": "not-a-uuid"}

    assert _logged(monkeypatch, 1, bad_tag)["task %s: %s"]


def test_a_cluster_ecs_will_not_describe_skips_its_runs_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(world: World) -> None:  # for the first five minutes, then IAM has caught up
        answer = world.ecs.describe

        async def describe(life: Life, region: str, cluster: str | None, arns: Sequence[str]) -> Mapping[str, Any]:
            if world.clock.now < 300.0:
                raise SimError("AccessDeniedException: not authorized to perform ecs:DescribeTasks")
            return await answer(life, region, cluster, arns)

        world.ecs.describe = describe  # type: ignore[method-assign,assignment]

    assert _logged(monkeypatch, 1, denied)["%s failed; its runs are skipped this sweep: %s"]


def test_a_repair_whose_event_prefect_refuses_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every event a sweep would forward refused (422): each repair is released, with its reason."""

    def refused(world: World) -> None:
        for task in world.scenario.tasks:
            world.prefect.invalid.update(sweep_event_id(task.arn, v) for v in range(1, len(task.statuses) + 1))

    assert _logged(monkeypatch, 9, refused)["sweep: flow run %s, stopped task %s: %s"]


def test_a_replica_logs_its_summary_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """The periodic `summary:` line (every 60 s) is how an operator reads the counts without `/metrics`,
    the messages in flight among them."""
    lines: list[str] = []

    def nothing(world: World) -> None:
        return None

    check = LogContract.check

    def kept(self: LogContract, record: logging.LogRecord, who: str = "") -> list[str]:
        if record.msg == "summary: %s":
            lines.append(record.getMessage())
        return check(self, record, who)

    monkeypatch.setattr(LogContract, "check", kept)
    assert _logged(monkeypatch, 5, nothing)["summary: %s"] >= 1
    assert lines
    assert all(re.search(r"\bin_flight=\d+\b", line) for line in lines), lines[:2]

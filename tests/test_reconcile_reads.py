"""The sweep's reads of Prefect, against a real Prefect server: the runs to reconcile, paged, and our
reschedules counted; and what Prefect's orchestration answers to our reschedule proposal.

Requests are counted at the transport, under the one client, as Prefect answered them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest

from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.flow_runs import MAX_RUNS_PER_READ, PrefectFlowRuns
from ecs_observer.app.demo.runs import MemoryFlowRuns, create_runs, read_back
from ecs_observer.core.run_states import RESCHEDULE_MARK, Proposal, RunState
from ecs_observer.core.sweep import ACTIVE, RunToReconcile
from ecs_observer.support.backoff import Backoff

from .runs import STATE_NAMES, history
from .servers import PrefectServer

ACCOUNT = "123456789012"
TASK = f"arn:aws:ecs:us-east-1:{ACCOUNT}:task/work/0123456789abcdef0123456789abcdef"
CLUSTER_ARN = f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/work"
OURS = f"{RESCHEDULE_MARK} (attempt 1 of 2, image pull timed out): ECS task 0123 stopped"


class Counting(httpx.AsyncBaseTransport):
    """The real transport, counting the requests Prefect answered with a 2xx (a 503 retried is not a read)."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.answered: Counter[tuple[str, str]] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if response.status_code < 300:
            self.answered[(request.method, request.url.path.removeprefix("/api"))] += 1
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture
async def counted(prefect: PrefectServer) -> AsyncIterator[tuple[PrefectClient, Counting]]:
    transport = Counting()
    client = PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0), transport=transport)
    yield client, transport
    await client.aclose()


async def gather_limited(calls: list[Callable[[], Awaitable[Any]]], limit: int = 8) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(one(call) for call in calls)))


async def make_runs(
    client: PrefectClient, states: list[tuple[str, str]], pids: dict[int, str] | None = None
) -> list[UUID]:
    """Flow runs created in these (type, name) states, as a worker leaves them; `pids` by index."""
    flow = (await client.request("POST", "/flows/", json={"name": "ecs-observer-reconcile"})).json()

    async def make(n: int, state: tuple[str, str]) -> UUID:
        body = {"flow_id": flow["id"], "name": f"sweep-{n}", "state": {"type": state[0], "name": state[1]}}
        run_id = (await client.request("POST", "/flow_runs/", json=body)).json()["id"]
        if pids and n in pids:
            await client.request("PATCH", f"/flow_runs/{run_id}", json={"infrastructure_pid": pids[n]})
        return UUID(run_id)

    return await gather_limited([functools.partial(make, n, state) for n, state in enumerate(states)])


async def count_runs(client: PrefectClient, types: list[str]) -> int:
    body = {"flow_runs": {"state": {"type": {"any_": types}}}}
    return int((await client.request("POST", "/flow_runs/count", json=body)).json())


def active_reads(total: int) -> int:
    return total // MAX_RUNS_PER_READ + 1


async def sweep(runs: PrefectFlowRuns, *args: Any) -> list[list[RunToReconcile]]:
    async def pages() -> list[list[RunToReconcile]]:
        return [page async for page in runs.to_reconcile(*args)]

    # A paging bug must fail the test, not hang it.
    return await asyncio.wait_for(pages(), timeout=60)


async def test_active_runs_are_read_once_each_in_a_read_per_200(counted: tuple[PrefectClient, Counting]) -> None:
    client, transport = counted
    active = [("PENDING", "Pending"), ("PENDING", "InfrastructurePending"), ("RUNNING", "Running")]
    active.append(("CANCELLING", "Cancelling"))
    others = [(t, STATE_NAMES[t]) for t in ("SCHEDULED", "PAUSED", "COMPLETED", "FAILED", "CANCELLED", "CRASHED")]
    states = [active[n % len(active)] for n in range(450)] + others * 10
    pid_of = {0: f"work::{TASK}", 1: "12345", 2: f"{CLUSTER_ARN}::{TASK}"}
    ids = await make_runs(client, states, {n: pid_of[n % 9] for n in range(len(states)) if n % 9 in pid_of})
    ours = {run_id: state for run_id, state in zip(ids, states, strict=True)}
    runs = PrefectFlowRuns(client)

    transport.answered.clear()
    reader = runs.to_reconcile(None, ["CANCELLED"])
    first = await anext(reader)
    reads = transport.answered[("POST", "/flow_runs/filter")]
    # A run that turns active behind the first page's end shifts the next page by one: its first run was
    # read already, and is still yielded once.
    behind = max(str(run_id) for run_id, state in ours.items() if state[0] not in ACTIVE)
    assert behind > str(first[-1].run_id)
    move = {"state": {"type": "RUNNING", "name": "Running"}, "force": True}
    await client.request("POST", f"/flow_runs/{behind}/set_state", json=move)
    transport.answered.clear()
    pages = [first, *await asyncio.wait_for(_rest(reader), timeout=60)]
    reads += transport.answered[("POST", "/flow_runs/filter")]
    assert transport.answered.total() == reads - 1  # nothing else: no writes, no other reads

    seen = [run for page in pages for run in page]
    assert all(len(page) <= MAX_RUNS_PER_READ for page in pages)
    assert len({run.run_id for run in seen}) == len(seen), "a run yielded twice"
    mine = {run.run_id: run for run in seen if run.run_id in ours}
    assert set(mine) == {run_id for run_id, state in ours.items() if state[0] in ACTIVE}
    for n, run_id in enumerate(ids[:450]):
        run = mine[run_id]
        assert (run.state.type, run.state.name) == states[n]
        assert run.name == f"sweep-{n}"
        assert run.state_since.tzinfo is not None
        assert run.state_since.utcoffset() == timedelta(0)
        assert timedelta(0) <= datetime.now(UTC) - run.state_since < timedelta(minutes=10)
        assert run.infrastructure_pid == pid_of.get(n % 9)
        assert run.state.task_arn == (TASK if n % 9 in (0, 2) else None)
    # Everything active on the server (other tests' runs too): one read per 200, the short last page ending
    # it: ceil(N/200), one more when N is a multiple of 200 (an empty page is the only way to know).
    total = await count_runs(client, sorted(ACTIVE))
    assert len(seen) == total - 1  # the run moved in behind the first page waits for the next sweep
    assert reads == active_reads(total) >= 3
    if total % MAX_RUNS_PER_READ:
        assert reads == math.ceil(total / MAX_RUNS_PER_READ)


async def _rest(reader: AsyncIterator[list[RunToReconcile]]) -> list[list[RunToReconcile]]:
    return [page async for page in reader]


async def test_final_runs_only_those_final_since(
    counted: tuple[PrefectClient, Counting], prefect: PrefectServer
) -> None:
    client, transport = counted
    runs = PrefectFlowRuns(client)
    old, cancelled, completed, crashed, cancelling = await make_runs(client, [("RUNNING", "Running")] * 5)

    async def finish(run_id: UUID, type_: str, force: bool) -> None:
        body = {"state": {"type": type_, "name": STATE_NAMES[type_]}, "force": force}
        assert (await client.request("POST", f"/flow_runs/{run_id}/set_state", json=body)).json()["status"] == "ACCEPT"

    await finish(old, "CANCELLED", True)
    # The server's clock: the moment `old` became final; `end_time.after_` includes that moment.
    since = datetime.fromisoformat(prefect.call("GET", f"/flow_runs/{old}").json()["end_time"]) + timedelta(
        microseconds=1
    )
    await finish(cancelled, "CANCELLED", True)  # forced, as a user's cancel from the UI is not
    await finish(completed, "COMPLETED", False)
    await finish(crashed, "CRASHED", False)
    await finish(cancelling, "CANCELLING", False)
    for run_id in (cancelled, completed, crashed):
        assert prefect.call("GET", f"/flow_runs/{run_id}").json()["end_time"] is not None

    def final_of(pages: list[list[RunToReconcile]]) -> dict[UUID, str]:
        mine = (old, cancelled, completed, crashed, cancelling)
        return {run.run_id: run.state.type for page in pages for run in page if run.run_id in mine}

    transport.answered.clear()
    found = final_of(await sweep(runs, since, ["CANCELLED", "COMPLETED"]))
    assert found == {cancelled: "CANCELLED", completed: "COMPLETED", cancelling: "CANCELLING"}
    reads = active_reads(await count_runs(client, sorted(ACTIVE))) + 1  # the final ones: one short page
    assert transport.answered[("POST", "/flow_runs/filter")] == reads
    assert final_of(await sweep(runs, None, ["CANCELLED", "COMPLETED"])) == {cancelling: "CANCELLING"}
    assert final_of(await sweep(runs, since, [])) == {cancelling: "CANCELLING"}
    found = final_of(await sweep(runs, since - timedelta(seconds=60), ["CANCELLED", "CRASHED"]))
    assert found == {old: "CANCELLED", cancelled: "CANCELLED", crashed: "CRASHED", cancelling: "CANCELLING"}


async def test_only_our_reschedules_are_counted(counted: tuple[PrefectClient, Counting]) -> None:
    client, _ = counted
    runs = PrefectFlowRuns(client)
    (run_id, untouched) = await make_runs(client, [("PENDING", "Pending")] * 2)
    later = datetime.now(UTC) + timedelta(seconds=30)

    async def to(type_: str, name: str, message: str = "") -> None:
        assert await runs.propose(run_id, Proposal(type_, name, message, later if type_ == "SCHEDULED" else None)) == (
            "ACCEPT"
        )

    await to("SCHEDULED", "AwaitingRetry", OURS)
    await to("PENDING", "Pending")
    await to("SCHEDULED", "AwaitingRetry", "Retry 1/3 of the flow")  # Prefect's own flow retries: not ours
    await to("PENDING", "Pending")
    await to("SCHEDULED", "Scheduled", f"{RESCHEDULE_MARK}, but not an AwaitingRetry")
    await to("PENDING", "Pending")
    await to("SCHEDULED", "AwaitingRetry", OURS.replace("attempt 1", "attempt 2"))
    assert await runs.reschedules(run_id) == 2
    assert await runs.reschedules(untouched) == 0
    assert await runs.reschedules(uuid.uuid4()) == 0


async def test_states_name_the_task_of_an_ecs_workers_pid(counted: tuple[PrefectClient, Counting]) -> None:
    client, _ = counted
    pids = {
        0: f"work::{TASK}",
        1: f"{CLUSTER_ARN}::{TASK}",
        2: f"other::{TASK}",  # the cluster contradicts the task's ARN
        3: "12345",  # a process worker
        4: "default:flow-pod-abc",  # a Kubernetes worker: namespace and job
        5: f"work::{TASK.replace(':task/', ':container-instance/')}",
    }
    ids = await make_runs(client, [("RUNNING", "Running")] * 7, pids)
    states = await PrefectFlowRuns(client).states([*ids, uuid.uuid4()])
    assert [states[run_id] for run_id in ids] == [
        RunState("RUNNING", "Running", TASK),
        RunState("RUNNING", "Running", TASK),
        *[RunState("RUNNING", "Running")] * 5,
    ]
    assert len(states) == len(ids)


# Our reschedule, proposed from each state (force False, as `propose` does): Prefect's answer, and the state after.
RESCHEDULE_FROM = {
    "pending": (("PENDING", "Pending"), False, "ACCEPT"),
    "infrastructure pending": (("PENDING", "InfrastructurePending"), False, "ACCEPT"),
    "running": (("RUNNING", "Running"), False, "ACCEPT"),
    "scheduled": (("SCHEDULED", "Scheduled"), False, "ACCEPT"),
    "paused": (("PAUSED", "Paused"), False, "ACCEPT"),
    "cancelling": (("CANCELLING", "Cancelling"), False, "REJECT"),
    "crashed, no deployment": (("CRASHED", "Crashed"), False, "ABORT"),
    "cancelled, no deployment": (("CANCELLED", "Cancelled"), False, "ABORT"),
    "completed, no deployment": (("COMPLETED", "Completed"), False, "ABORT"),
    # A deployment's final run is rescheduled: the core must never propose it (it does not).
    "crashed, deployment": (("CRASHED", "Crashed"), True, "ACCEPT"),
    "cancelled, deployment": (("CANCELLED", "Cancelled"), True, "ACCEPT"),
    "completed, deployment": (("COMPLETED", "Completed"), True, "ACCEPT"),
    "failed, deployment": (("FAILED", "Failed"), True, "ACCEPT"),
}


async def test_what_prefect_answers_to_our_reschedule(
    counted: tuple[PrefectClient, Counting], prefect: PrefectServer
) -> None:
    client, _ = counted
    runs = PrefectFlowRuns(client)
    flow = (await client.request("POST", "/flows/", json={"name": "ecs-observer-reschedule"})).json()
    deployment = (await client.request("POST", "/deployments/", json={"name": "ecs", "flow_id": flow["id"]})).json()
    at = (datetime.now(UTC) + timedelta(seconds=30)).replace(microsecond=123456)
    answers: dict[str, tuple[str, tuple[str, str], datetime | None]] = {}
    for case, ((type_, name), deployed, _) in RESCHEDULE_FROM.items():
        body: dict[str, Any] = {"flow_id": flow["id"], "name": case, "state": {"type": type_, "name": "x"}}
        body["state"]["name"] = "Pending" if name == "InfrastructurePending" else name
        if deployed:
            body["deployment_id"] = deployment["id"]
        run_id = UUID((await client.request("POST", "/flow_runs/", json=body)).json()["id"])
        if name == "InfrastructurePending":
            assert await runs.propose(run_id, Proposal("PENDING", name, "ECS task is pending")) == "ACCEPT"
        answer = await runs.propose(run_id, Proposal("SCHEDULED", "AwaitingRetry", OURS, scheduled_time=at))
        state = prefect.call("GET", f"/flow_runs/{run_id}").json()["state"]
        scheduled = state["state_details"].get("scheduled_time")
        answers[case] = (
            answer,
            (state["type"], state["name"]),
            datetime.fromisoformat(scheduled) if scheduled else None,
        )
        if answer == "ACCEPT":
            assert state["message"] == OURS
            # The worker takes it again as any scheduled run: Scheduled -> Pending is accepted at once, the
            # Pending state keeps our time, and Running waits for it (Prefect's WaitForScheduledTime).
            assert await runs.propose(run_id, Proposal("PENDING", "Pending", "")) == "ACCEPT"
            pending = prefect.call("GET", f"/flow_runs/{run_id}").json()["state"]
            assert datetime.fromisoformat(pending["state_details"]["scheduled_time"]) == at
            running = {"state": {"type": "RUNNING", "name": "Running"}, "force": False}
            answer = prefect.call("POST", f"/flow_runs/{run_id}/set_state", json=running).json()
            assert answer["status"] == "WAIT"
            assert answer["details"]["reason"] == "Scheduled time is in the future"
            assert 0 < answer["details"]["delay_seconds"] <= 30
            assert history(prefect, str(run_id))[-2:] == [("SCHEDULED", "AwaitingRetry"), ("PENDING", "Pending")]
    expected = {
        case: (answer, ("SCHEDULED", "AwaitingRetry"), at) if answer == "ACCEPT" else (answer, start, None)
        for case, (start, _, answer) in RESCHEDULE_FROM.items()
    }
    assert answers == expected


async def test_a_rescheduled_run_runs_again_once_its_time_has_come(
    counted: tuple[PrefectClient, Counting], prefect: PrefectServer
) -> None:
    client, _ = counted
    runs = PrefectFlowRuns(client)
    (run_id,) = await make_runs(client, [("PENDING", "InfrastructurePending")])
    at = datetime.now(UTC) + timedelta(seconds=2)
    assert await runs.propose(run_id, Proposal("SCHEDULED", "AwaitingRetry", OURS, scheduled_time=at)) == "ACCEPT"
    assert await runs.propose(run_id, Proposal("PENDING", "Pending", "")) == "ACCEPT"
    # `propose` waits as Prefect's WAIT answers say, until the scheduled time.
    assert await runs.propose(run_id, Proposal("RUNNING", "Running", "")) == "ACCEPT"
    assert datetime.now(UTC) >= at
    assert history(prefect, str(run_id))[-3:] == [
        ("SCHEDULED", "AwaitingRetry"),
        ("PENDING", "Pending"),
        ("RUNNING", "Running"),
    ]


class NewStatus(httpx.AsyncBaseTransport):
    """The real transport, but every set_state answer says `status` instead: no Prefect release answers a
    status we do not know, so this fake stands in for a future one."""

    def __init__(self, status: str) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._status = status

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if not request.url.path.endswith("/set_state") or response.status_code >= 300:
            return response
        await response.aread()
        body = {**response.json(), "status": self._status}
        return httpx.Response(response.status_code, json=body, request=request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_status_prefect_never_answered_before_is_a_reject_logged_once(
    prefect: PrefectServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = PrefectClient(prefect.api_url, backoff=Backoff(0.1, 1.0), transport=NewStatus("deferred"))
    runs = PrefectFlowRuns(client)
    try:
        first, second = await make_runs(client, [("PENDING", "Pending"), ("PENDING", "Pending")])
        with caplog.at_level(logging.DEBUG, "ecs_observer.prefect"):
            answers = [
                await runs.propose(run_id, Proposal("PENDING", "InfrastructurePending", "placing"))
                for run_id in (first, second)
            ]
    finally:
        await client.aclose()
    assert answers == ["REJECT", "REJECT"]
    unknown = [r for r in caplog.records if "'DEFERRED'" in r.getMessage()]
    assert [r.levelno for r in unknown] == [logging.WARNING, logging.DEBUG]
    assert "none of ACCEPT, REJECT, ABORT or WAIT: taken as REJECT" in unknown[0].getMessage()


async def test_memory_runs_page_and_count_as_prefect_does() -> None:
    clock = [datetime(2026, 1, 1, tzinfo=UTC)]
    ids = [uuid.uuid4() for _ in range(460)]
    runs = MemoryFlowRuns(ids, now=lambda: clock[0])
    runs.pids[ids[0]] = f"work::{TASK}"
    runs.pids[ids[1]] = "12345"
    for run_id in ids[450:455]:
        await runs.propose(run_id, Proposal("COMPLETED", "Completed", "done"))
    clock[0] += timedelta(minutes=5)
    since = clock[0]
    for run_id in ids[455:]:
        await runs.propose(run_id, Proposal("CANCELLED", "Cancelled", "cancelled"))
    await runs.propose(ids[2], Proposal("SCHEDULED", "AwaitingRetry", OURS, since))
    await runs.propose(ids[3], Proposal("RUNNING", "Running", ""))

    pages = [page async for page in runs.to_reconcile(None, ["CANCELLED"])]
    assert [len(page) for page in pages] == [200, 200, 49]
    found = {run.run_id: run for page in pages for run in page}
    assert set(found) == set(ids[:450]) - {ids[2]}
    assert found[ids[0]].state == RunState("PENDING", "Pending", TASK)
    assert found[ids[0]].infrastructure_pid == f"work::{TASK}"
    assert found[ids[1]].state.task_arn is None
    assert found[ids[3]].state_since == since
    assert found[ids[4]].state_since == since - timedelta(minutes=5)
    final = [run.run_id async for page in runs.to_reconcile(since, ["CANCELLED", "COMPLETED"]) for run in page]
    assert set(final) == set(found) | set(ids[455:])
    earlier = since - timedelta(minutes=5)
    final = [run.run_id async for page in runs.to_reconcile(earlier, ["COMPLETED"]) for run in page]
    assert set(final) == set(found) | set(ids[450:455])

    assert await runs.reschedules(ids[2]) == 1
    await runs.propose(ids[2], Proposal("PENDING", "Pending", ""))
    await runs.propose(ids[2], Proposal("SCHEDULED", "AwaitingRetry", "Retry 1/3", since))
    assert await runs.reschedules(ids[2]) == 1
    assert await runs.reschedules(ids[3]) == 0
    assert await runs.reschedules(uuid.uuid4()) == 0
    assert runs.messages[ids[2]] == "Retry 1/3"
    assert (await runs.states([ids[0], uuid.uuid4()])) == {ids[0]: RunState("PENDING", "Pending", TASK)}


async def test_demo_reads_back_what_prefect_holds(counted: tuple[PrefectClient, Counting]) -> None:
    client, _ = counted
    (run_id,) = await create_runs(client, ["demo-read-back"])
    at = datetime.now(UTC) + timedelta(seconds=30)
    runs = PrefectFlowRuns(client)
    assert await runs.propose(run_id, Proposal("SCHEDULED", "AwaitingRetry", OURS, at)) == "ACCEPT"
    assert await runs.propose(run_id, Proposal("PENDING", "Pending", "")) == "ACCEPT"
    held = await read_back(client, [run_id])
    assert held.histories[run_id] == [
        RunState("PENDING", "Pending"),
        RunState("SCHEDULED", "AwaitingRetry"),
        RunState("PENDING", "Pending"),
    ]
    assert held.state_messages[run_id][1] == OURS
    assert held.messages[run_id] == ""
    assert all(when.tzinfo is not None for when in held.state_times[run_id])
    assert await held.reschedules(run_id) == 1 == await runs.reschedules(run_id)

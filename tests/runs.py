"""Real flow runs in the test Prefect server: made in a given state, their state history and logs read back."""

from __future__ import annotations

import time
import uuid
from typing import Any

from .servers import PrefectServer

STATE_NAMES = {
    "SCHEDULED": "Scheduled",
    "PENDING": "Pending",
    "RUNNING": "Running",
    "PAUSED": "Paused",
    "CANCELLING": "Cancelling",
    "COMPLETED": "Completed",
    "FAILED": "Failed",
    "CANCELLED": "Cancelled",
    "CRASHED": "Crashed",
}


def make_flow_run(prefect: PrefectServer, state_type: str) -> str:
    """A flow run created in `state_type` (as a worker would have left it), its id."""
    flow = prefect.call("POST", "/flows/", json={"name": "ecs-observer-tests"})
    body = {
        "flow_id": flow.json()["id"],
        "name": f"run-{uuid.uuid4().hex[:8]}",
        "state": {"type": state_type, "name": STATE_NAMES[state_type]},
    }
    run = prefect.call("POST", "/flow_runs/", json=body)
    return str(run.json()["id"])


def history(prefect: PrefectServer, run_id: str) -> list[tuple[str, str]]:
    """The run's states, oldest first, as (type, name)."""
    answer = prefect.call("GET", "/flow_run_states/", params={"flow_run_id": run_id})
    states = sorted(answer.json(), key=lambda state: state["timestamp"])
    return [(state["type"], state["name"]) for state in states]


def state_message(prefect: PrefectServer, run_id: str) -> str:
    answer = prefect.call("GET", f"/flow_runs/{run_id}")
    return str(answer.json()["state"]["message"] or "")


def logs(prefect: PrefectServer, run_id: str) -> list[dict[str, Any]]:
    body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200, "sort": "TIMESTAMP_ASC"}
    answer = prefect.call("POST", "/logs/filter", json=body)
    return list(answer.json())


def wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.3)

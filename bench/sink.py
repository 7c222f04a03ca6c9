"""A local stand-in for the Prefect API: events, flow-run reads, state proposals and logs, each counted.

python bench/sink.py --port 4300      # GET /stats answers {"requests": {route: n}, "arrivals": {id: unix time}}

Every flow run it is asked about exists, Pending until a proposal is accepted (all are),
so that the observer's flow-run effects cost what they cost against Prefect. With
`--active-runs N`, it also holds N Running runs on ECS tasks (`active_runs`), which a
sweep reads by state, a page at a time, as from Prefect.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

_NS = uuid.UUID("0b7c3c1e-8e55-4a8f-9f1e-2d8c4b6a1f00")


def task_arn(n: int, clusters: int) -> tuple[str, str]:
    """Run n's (cluster ARN, task ARN): the same in the sink and in the benchmark that describes them."""
    cluster = f"c{n % clusters}"
    prefix = "arn:aws:ecs:us-east-1:123456789012"
    return f"{prefix}:cluster/{cluster}", f"{prefix}:task/{cluster}/{uuid.uuid5(_NS, str(n)).hex}"


def active_runs(count: int, clusters: int) -> list[dict[str, Any]]:
    """`count` Running runs, each on its ECS task, Running for an hour, newest id first (Prefect's ID_DESC)."""
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    runs = []
    for n in range(count):
        cluster, task = task_arn(n, clusters)
        runs.append(
            {
                "id": str(uuid.uuid5(_NS, f"run-{n}")),
                "name": f"run-{n}",
                "state": {"type": "RUNNING", "name": "Running", "timestamp": since},
                "infrastructure_pid": f"{cluster}::{task}",
                "end_time": None,
            }
        )
    return sorted(runs, key=lambda run: run["id"], reverse=True)


def app(active: int = 0, clusters: int = 1) -> web.Application:
    arrivals: dict[str, float] = {}
    states: dict[str, dict[str, str]] = {}
    requests: Counter[str] = Counter()
    held = active_runs(active, clusters)
    initial = {run["id"]: run["state"] for run in held}

    async def events(request: web.Request) -> web.Response:
        body = await request.json()
        now = time.time()
        requests["events"] += 1
        for event in body:
            arrivals.setdefault(event["id"], now)
        return web.Response(status=204)

    async def read_runs(request: web.Request) -> web.Response:
        requests["flow_runs/filter"] += 1
        body = await request.json()
        wanted = body.get("flow_runs") or {}
        if "id" in wanted:
            ids = wanted["id"]["any_"]
            runs = [
                {"id": i, "state": states.get(i, initial.get(i, {"type": "PENDING", "name": "Pending"}))} for i in ids
            ]
            return web.json_response(runs)
        requests["flow_runs/filter by state"] += 1
        types = set(((wanted.get("state") or {}).get("type") or {}).get("any_") or [])
        matching = [run for run in held if run["state"]["type"] in types]
        offset, limit = int(body.get("offset") or 0), int(body.get("limit") or 200)
        return web.json_response(matching[offset : offset + limit])

    async def run_states(request: web.Request) -> web.Response:
        requests["flow_run_states"] += 1
        return web.json_response([])

    async def set_state(request: web.Request) -> web.Response:
        requests["set_state"] += 1
        proposed = (await request.json())["state"]
        states[request.match_info["id"]] = {"type": proposed["type"], "name": proposed["name"]}
        for run in held:  # a sweep's next read sees the new state, as Prefect's would
            if run["id"] == request.match_info["id"]:
                run["state"] = {**run["state"], "type": proposed["type"], "name": proposed["name"]}
        return web.json_response({"status": "ACCEPT", "state": proposed, "details": {}}, status=201)

    async def logs(request: web.Request) -> web.Response:
        requests["logs"] += 1
        await request.read()
        return web.Response(status=201)

    async def stats(request: web.Request) -> web.Response:
        body = {"requests": dict(requests), "arrivals": arrivals}
        return web.Response(text=json.dumps(body), content_type="application/json")

    application = web.Application(client_max_size=64 * 1024 * 1024)
    application.router.add_post("/api/events", events)
    application.router.add_post("/api/flow_runs/filter", read_runs)
    application.router.add_post("/api/flow_runs/{id}/set_state", set_state)
    application.router.add_post("/api/logs/", logs)
    application.router.add_get("/api/flow_run_states/", run_states)
    application.router.add_get("/stats", stats)
    return application


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--active-runs", type=int, default=0, help="Running runs on ECS tasks, for a sweep")
    parser.add_argument("--clusters", type=int, default=1, help="the clusters those tasks are spread over")
    args = parser.parse_args()
    web.run_app(app(args.active_runs, args.clusters), host="127.0.0.1", port=args.port, print=None, access_log=None)

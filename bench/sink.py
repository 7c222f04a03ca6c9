"""A local stand-in for the Prefect API: events, flow-run reads, state proposals and logs, each counted.

python bench/sink.py --port 4300      # GET /stats answers {"requests": {route: n}, "arrivals": {id: unix time}}

Every flow run it is asked about exists, Pending until a proposal is accepted (all are),
so that the observer's flow-run effects cost what they cost against Prefect.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

from aiohttp import web


def app() -> web.Application:
    arrivals: dict[str, float] = {}
    states: dict[str, dict[str, str]] = {}
    requests: Counter[str] = Counter()

    async def events(request: web.Request) -> web.Response:
        body = await request.json()
        now = time.time()
        requests["events"] += 1
        for event in body:
            arrivals.setdefault(event["id"], now)
        return web.Response(status=204)

    async def read_runs(request: web.Request) -> web.Response:
        requests["flow_runs/filter"] += 1
        ids = (await request.json())["flow_runs"]["id"]["any_"]
        runs = [{"id": i, "state": states.get(i, {"type": "PENDING", "name": "Pending"})} for i in ids]
        return web.json_response(runs)

    async def set_state(request: web.Request) -> web.Response:
        requests["set_state"] += 1
        proposed = (await request.json())["state"]
        states[request.match_info["id"]] = {"type": proposed["type"], "name": proposed["name"]}
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
    application.router.add_get("/stats", stats)
    return application


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    web.run_app(app(), host="127.0.0.1", port=parser.parse_args().port, print=None, access_log=None)

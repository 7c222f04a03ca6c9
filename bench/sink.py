"""A local sink that accepts `POST /events` like the Prefect API and remembers when each event arrived.

python bench/sink.py --port 4300      # GET /stats answers {"requests": n, "arrivals": {id: unix time}}
"""

from __future__ import annotations

import argparse
import json
import time

from aiohttp import web


def app() -> web.Application:
    arrivals: dict[str, float] = {}
    requests = [0]

    async def events(request: web.Request) -> web.Response:
        body = await request.json()
        now = time.time()
        requests[0] += 1
        for event in body:
            arrivals.setdefault(event["id"], now)
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps({"requests": requests[0], "arrivals": arrivals}), content_type="application/json"
        )

    application = web.Application(client_max_size=64 * 1024 * 1024)
    application.router.add_post("/api/events", events)
    application.router.add_get("/stats", stats)
    return application


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    web.run_app(app(), host="127.0.0.1", port=parser.parse_args().port, print=None, access_log=None)

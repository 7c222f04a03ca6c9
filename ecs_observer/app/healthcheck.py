"""`ecs-observer healthcheck`: the container health check, the running service's own verdict over loopback.

ECS runs it every 30 s, so it uses the standard library alone: no settings
model, no AWS or HTTP library to import.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

__all__ = ["DEFAULT_HEALTH_PORT", "EXIT_CONFIG", "HEALTH_PORT_ENV", "main"]

DEFAULT_HEALTH_PORT = 9090
HEALTH_PORT_ENV = "ECS_OBSERVER_HEALTH_PORT"
EXIT_CONFIG = 2


def main(argv: Sequence[str]) -> int:
    """0 when /healthz answers 200 (or the endpoint is turned off), 1 when not, 2 for a bad port."""
    parser = argparse.ArgumentParser(prog="ecs-observer healthcheck", description=__doc__)
    parser.add_argument("--health-port", dest="health_port", default=None, metavar="PORT")
    given = parser.parse_args(argv).health_port
    raw = given if given is not None else os.environ.get(HEALTH_PORT_ENV, str(DEFAULT_HEALTH_PORT))
    try:
        port = int(raw)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        print(f"ecs-observer: invalid configuration: {HEALTH_PORT_ENV}: not a port: {raw!r}", file=sys.stderr)
        return EXIT_CONFIG
    if port == 0:
        # The service serves no /healthz: the process being alive is all there is to check.
        print(f"healthcheck: {HEALTH_PORT_ENV}=0 turns /healthz off; nothing to check, reporting healthy")
        return 0
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as answer:
            print(answer.read().decode(errors="replace"))
            return 0 if answer.status == 200 else 1
    except urllib.error.HTTPError as exc:  # 503: the service says why
        print(exc.read().decode(errors="replace"))
        return 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: no answer on port {port}: {exc}", file=sys.stderr)
        return 1

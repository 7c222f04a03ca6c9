"""Real components for the tests: moto in server mode and a Prefect server in a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from ecs_observer.app.demo.sandbox import free_port

__all__ = ["PrefectServer", "free_port", "wait_http"]


def wait_http(
    url: str,
    process: subprocess.Popen[bytes],
    timeout: float = 60.0,
    ready: Callable[[httpx.Response], bool] = lambda _: True,
) -> None:
    """Until `url` answers (as `ready` wants), while `process` (the server behind it) runs; the caller
    stops the process if this raises."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if ready(httpx.get(url, timeout=2)):
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


class PrefectServer:
    """`prefect server start` on loopback with its own SQLite database; can be stopped and started again."""

    def __init__(self, home: Path, port: int | None = None, auth_string: str | None = None) -> None:
        self.home = home
        self.auth_string = auth_string
        self._auth = httpx.BasicAuth(*auth_string.split(":", 1)) if auth_string else None
        self.port = port or free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home}/prefect.db",
        }
        env.pop("PREFECT_API_URL", None)
        if self.auth_string:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self.auth_string
        prefect = str(Path(sys.executable).with_name("prefect"))
        log = (self.home / "server.log").open("ab")
        self._process = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_http(f"{self.api_url}/health", self._process, timeout, ready=lambda answer: answer.status_code == 200)
        except RuntimeError as exc:
            if self._process.poll() is None:
                self.stop()
            raise RuntimeError(f"Prefect server: {exc}: {(self.home / 'server.log').read_text()[-2000:]}") from None

    def stop(self) -> None:
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGTERM)
            self._process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None
        # The port must be free before a restart on the same address.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.1)

    def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One API request, repeated while the server answers 503: Prefect's answer when SQLite is busy,
        which its own client retries too. Paths are relative to the API; full URLs (next pages) are kept."""
        full = url if url.startswith("http") else f"{self.api_url}{url}"
        deadline = time.monotonic() + 30
        while True:
            answer = httpx.request(method, full, timeout=10, auth=self._auth, **kwargs)
            if answer.status_code != 503 or time.monotonic() > deadline:
                answer.raise_for_status()
                return answer
            time.sleep(0.2)

    def events(self, resource_ids: list[str]) -> list[dict[str, Any]]:
        """Every stored event of these resources, all pages."""
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "filter": {
                "occurred": {
                    "since": (now - timedelta(days=1)).isoformat(),
                    "until": (now + timedelta(days=1)).isoformat(),
                },
                "resource": {"id": resource_ids},
                "order": "ASC",
            },
            "limit": 50,
        }
        answer = self.call("POST", "/events/filter", json=body).json()
        events: list[dict[str, Any]] = answer["events"]
        while answer.get("next_page"):
            answer = self.call("GET", answer["next_page"]).json()
            events += answer["events"]
        return events

    def wait_for_events(self, resource_ids: list[str], count: int, timeout: float = 45.0) -> list[dict[str, Any]]:
        """Poll until `count` events of these resources are visible, then once more to catch extras."""
        deadline = time.monotonic() + timeout
        events = self.events(resource_ids)
        while len(events) < count and time.monotonic() < deadline:
            time.sleep(0.5)
            events = self.events(resource_ids)
        time.sleep(1.5)
        return self.events(resource_ids)

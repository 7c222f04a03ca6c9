"""A reverse proxy that fails on purpose, in front of a real moto or a real Prefect server.

No real component throttles, resets or hangs on demand, so this small fake
does: each request is matched to an operation (the AWS `X-Amz-Target` action,
or `METHOD /path` otherwise), a scripted fault for that operation is applied
if any is left, and everything else is passed through untouched. Every
request is recorded with its time, for assertions on backoff.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

__all__ = ["Fault", "FaultProxy", "aws_error", "hang", "reset", "status"]


@dataclass(frozen=True)
class Fault:
    kind: str  # "status", "hang" or "reset"
    status: int = 0
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0


def status(code: int, **headers: str) -> Fault:
    return Fault("status", status=code, headers=tuple(headers.items()))


def aws_error(code: int, error: str) -> Fault:
    """An AWS JSON-protocol error, e.g. 400 ThrottlingException or 500 InternalFailure."""
    body = json.dumps({"__type": error, "message": f"injected {error}"}).encode()
    return Fault(
        "status",
        status=code,
        body=body,
        headers=(("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-query-error", f"{error};Sender")),
    )


def hang(seconds: float) -> Fault:
    """Answer nothing for this long (past the client's timeout), then pass through."""
    return Fault("hang", seconds=seconds)


def reset() -> Fault:
    """Close the connection without an answer."""
    return Fault("reset")


@dataclass
class FaultProxy:
    upstream: str
    script: dict[str, list[Fault]] = field(default_factory=dict)
    # Every request of an operation whose body holds the bytes gets the fault, for as long as it is set.
    refusals: dict[str, tuple[bytes, Fault]] = field(default_factory=dict)
    requests: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))
    port: int = 0
    _runner: web.AppRunner | None = None
    _targets: list[str] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, operation: str, *faults: Fault) -> None:
        self.script.setdefault(operation, []).extend(faults)

    def refuse(self, operation: str, containing: bytes, fault: Fault) -> None:
        self.refusals[operation] = (containing, fault)

    def times(self, operation: str) -> list[float]:
        return [t for t, _ in self.requests[operation]]

    def outcomes(self, operation: str) -> list[str]:
        return [o for _, o in self.requests[operation]]

    async def start(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    @property
    def targets(self) -> set[str]:
        """Every AWS action that passed through, as `X-Amz-Target` names it (`AmazonSQS.ReceiveMessage`)."""
        return set(self._targets)

    @staticmethod
    def operation(request: web.Request) -> str:
        target = request.headers.get("X-Amz-Target")
        if target:
            return target.rsplit(".", 1)[-1]
        return f"{request.method} {request.path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        operation = self.operation(request)
        if (target := request.headers.get("X-Amz-Target")) is not None:
            self._targets.append(target)
        body = await request.read()
        pending = self.script.get(operation)
        fault = pending.pop(0) if pending else None
        refusal = self.refusals.get(operation)
        if fault is None and refusal is not None and refusal[0] in body:
            fault = refusal[1]
        self.requests[operation].append((time.monotonic(), fault.kind if fault else "pass"))
        if fault is not None and fault.kind == "status":
            return web.Response(status=fault.status, body=fault.body, headers=dict(fault.headers))
        if fault is not None and fault.kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        if fault is not None and fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            passed = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            return web.Response(status=upstream.status, body=payload, headers=passed)

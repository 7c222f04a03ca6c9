"""Processes for the benchmarks: moto, the sink and the observer each in a process of its own.

Separate processes keep the observer's figures its own: CPU and peak RSS are
read from /proc for its pid alone, and AWS call counts from its /metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx

from ecs_observer.app.demo.sandbox import free_port

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
REGION = "us-east-1"


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None, log: Path | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    out = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def moto() -> Iterator[str]:
    port = free_port()
    with process([sys.executable, str(HERE.parent / "tests" / "moto_server.py"), "-H", "127.0.0.1", "-p", str(port)]):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/moto-api/")
        yield url


@contextlib.contextmanager
def sink(*args: str) -> Iterator[str]:
    port = free_port()
    with process([sys.executable, str(HERE / "sink.py"), "--port", str(port), *args]):
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/stats")
        yield url


def sink_stats(url: str) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.get(f"{url}/stats", timeout=30).json()
    return answer


def aws_env(moto_url: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL_SQS": moto_url,
        "AWS_ENDPOINT_URL_ECS": moto_url,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": REGION,
    }


def clients(moto_url: str) -> tuple[Any, Any]:
    kw: dict[str, Any] = {
        "endpoint_url": moto_url,
        "region_name": REGION,
        "aws_access_key_id": "bench",
        "aws_secret_access_key": "bench",
    }
    return boto3.client("sqs", **kw), boto3.client("ecs", **kw)


@dataclass
class Observer:
    proc: subprocess.Popen[bytes]
    metrics_url: str

    def metrics(self) -> dict[str, float]:
        text = httpx.get(self.metrics_url, timeout=10).text
        return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")}

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def observer_command(tree: Path | None = None) -> tuple[list[str], dict[str, str], Path | None]:
    """`ecs-observer run` of this checkout, or of another source tree (a `git worktree` of another commit):
    that tree's own entry point, from its pyproject.toml, run with this venv's dependencies, so that two
    commits differ in their code alone. Arguments, environment and working directory: the tree itself,
    since `python -c` puts the working directory first on sys.path."""
    if tree is None:
        return [str(BIN / "ecs-observer"), "run"], {}, None
    entry = tomllib.loads((tree / "pyproject.toml").read_text())["project"]["scripts"]["ecs-observer"]
    module, function = entry.split(":")
    code = f"import sys; from {module} import {function}; sys.exit({function}())"
    return [sys.executable, "-c", code, "run"], {"PYTHONPATH": str(tree)}, tree


@contextlib.contextmanager
def observer(
    moto_url: str, sink_url: str, queue_url: str, log: Path, tree: Path | None = None, **settings: str
) -> Iterator[Observer]:
    port = free_port()
    command, tree_env, cwd = observer_command(tree)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECS_OBSERVER_", "PREFECT_", "PYTHONPATH"))}
    env |= tree_env
    env |= aws_env(moto_url) | {
        "ECS_OBSERVER_QUEUE_URL": queue_url,
        "PREFECT_API_URL": f"{sink_url}/api",
        "ECS_OBSERVER_HEALTH_PORT": str(port),
        "ECS_OBSERVER_LOG_LEVEL": "WARNING",
    }
    env |= {f"ECS_OBSERVER_{k.upper()}": v for k, v in settings.items()}
    with process(command, env=env, log=log, cwd=cwd) as proc:
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_http(url)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; the observer's log ends:\n{log.read_text()[-2000:]}") from None
        yield Observer(proc, url)


def create_queue(sqs: Any, name: str) -> str:
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "10"})
    url: str = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": policy})["QueueUrl"]
    return url


def depth(sqs: Any, url: str) -> tuple[int, int]:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def send_all(sqs: Any, url: str, bodies: list[str]) -> None:
    for offset in range(0, len(bodies), 10):
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[offset : offset + 10])]
        failed = sqs.send_message_batch(QueueUrl=url, Entries=entries).get("Failed")
        if failed:
            raise RuntimeError(failed)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

"""What the Dockerfile installs works: no container engine runs here, so the same steps run in a fresh venv."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ecs_observer.adapters.aws import AwsClients

from .servers import PrefectServer
from .world import make_queue

ROOT = Path(__file__).resolve().parents[1]


def sh(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, env=env, check=False)


def _name(requirement: str) -> str:
    return re.split(r"[<>=\[;! ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_lock_pins_every_runtime_dependency() -> None:
    declared = {_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    locked = {_name(line) for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line}
    assert declared <= locked


def test_dockerfile_installs_from_the_hashed_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    # The build backend as well: nothing is fetched unpinned when the wheel is built.
    assert "pip install --require-hashes --no-deps -r requirements-build.lock" in dockerfile
    assert "pip wheel --no-deps --no-build-isolation" in dockerfile
    build_lock = (ROOT / "requirements-build.lock").read_text()
    assert re.search(r"^hatchling==[\d.]+ \\\n    --hash=sha256:[0-9a-f]{64}$", build_lock, re.MULTILINE)
    assert "USER 10001" in dockerfile
    assert 'User: "10001"' in (ROOT / "infra" / "service.yaml").read_text()


def test_dockerfile_pulls_one_base_image_by_digest() -> None:
    """A tag moves with every rebuild of the base image; a digest names the bytes. Both stages use the same
    one: the venv built in the first runs on the second's Python."""
    bases = re.findall(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert len(bases) == 2, bases
    assert all(re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", base) for base in bases), bases
    assert len(set(bases)) == 1, bases
    # The refresh command in docs/deploy.md names the same tag.
    assert "imagetools inspect --raw python:3.11-slim-bookworm" in (ROOT / "docs" / "deploy.md").read_text()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Fresh venvs with the Dockerfile's steps: the lock with hashes; the build backend with hashes, which
    alone builds the wheel; then the wheel without dependencies."""
    work = tmp_path_factory.mktemp("image")
    venv = work / "venv"
    assert sh(sys.executable, "-m", "venv", venv).returncode == 0
    pip = venv / "bin" / "pip"
    step = sh(pip, "install", "--require-hashes", "--no-deps", "-r", ROOT / "requirements.lock")
    assert step.returncode == 0, step.stderr[-2000:]
    build = work / "build"
    assert sh(sys.executable, "-m", "venv", build).returncode == 0
    step = sh(build / "bin" / "pip", "install", "--require-hashes", "--no-deps", "-r", ROOT / "requirements-build.lock")
    assert step.returncode == 0, step.stderr[-2000:]
    step = sh(build / "bin" / "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", work / "dist", ROOT)
    assert step.returncode == 0, step.stderr[-2000:]
    (wheel,) = (work / "dist").glob("ecs_observer-*.whl")
    step = sh(pip, "install", "--no-deps", wheel)
    assert step.returncode == 0, step.stderr[-2000:]
    return venv / "bin" / "ecs-observer"


def test_installed_command_answers_help(installed: Path) -> None:
    result = sh(installed, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("run", "check", "translate", "healthcheck", "demo"):
        assert command in result.stdout


async def test_installed_command_checks_against_moto(installed: Path, aws: AwsClients, prefect: PrefectServer) -> None:
    queue_url, _ = await make_queue(aws)
    env = {**os.environ, "ECS_OBSERVER_QUEUE_URL": queue_url, "PREFECT_API_URL": prefect.api_url}
    result = sh(installed, "check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("\nok ") + result.stdout.startswith("ok ") == 10  # every check of test_cli.py

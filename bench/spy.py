"""Sampling profiles of the observer process with py-spy (`pip install py-spy`), and their summary.

py-spy attaches to the running observer by pid, so the profile is of the real
process (asyncio, aiobotocore, httpx, the pipeline) while it drains, start-up
left out. Only samples where a thread was running are kept (py-spy's default
leaves idle waits out), so the shares are shares of CPU, not of wall time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from harness import BIN

__all__ = ["recording", "summary"]


def _py_spy() -> str:
    found = shutil.which("py-spy", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


@contextlib.contextmanager
def recording(pid: int, out: Path, rate: int = 100) -> Iterator[None]:
    """Sample `pid` into `out` (collapsed stacks, one `frame;frame;... count` a line) until the block ends."""
    args = [_py_spy(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--nolineno"]
    spy = subprocess.Popen([*args, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        _, err = spy.communicate(timeout=60)
        if not out.exists():
            print(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}", file=sys.stderr)


def _short(frame: str) -> str:
    """`decide (/…/site-packages/ecs_observer/pipeline/policy.py)` -> `decide (ecs_observer/pipeline/policy.py)`."""
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "/lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    else:
        where = where.replace(str(Path(__file__).resolve().parents[1]) + "/", "")
    return f"{name} ({where}" if where else name


def _package(frame: str) -> str:
    """`x (ecs_observer/pipeline/policy.py)` -> `ecs_observer.pipeline`; `x (asyncio/events.py)` -> `asyncio`."""
    where = frame.partition(" (")[2].rstrip(")")
    parts = where.removesuffix(".py").split("/")
    return ".".join(parts[:2]) if parts[0] == "ecs_observer" and len(parts) > 2 else parts[0]


def summary(path: Path, top: int = 12) -> str:
    """The functions with the most samples of their own (the leaf: where the CPU went) and those with the
    most samples under them (cumulative: what it went on behalf of)."""
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            cumulative[frame] += int(count)
    packages: Counter[str] = Counter()
    for frame, samples in own.items():
        packages[_package(frame)] += samples
    lines = [f"# profile: {total} samples with a thread running ({path})", "own  package (where the samples' leaf is)"]
    lines += [f"{samples / total:4.0%}  {package}" for package, samples in packages.most_common(top)]
    lines.append("own  cumul  function")
    shown = [f for f, _ in own.most_common(top)]
    # Cumulative: below the trunk every sample shares (asyncio's loop, the command's main).
    branches = [f for f, n in cumulative.most_common() if n < 0.9 * total and f not in shown]
    shown += branches[:top]
    for frame in shown:
        lines.append(f"{own[frame] / total:4.0%} {cumulative[frame] / total:6.0%}  {frame}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(Path(sys.argv[1])))

"""`make mutation`: mutmut over each scope of `[tool.mutation]` (pyproject.toml), one score line per scope.

python -m tests.mutation core        # the pure core against its pure tests (about 3 minutes)
python -m tests.mutation pipeline    # the pipeline against the quick seeds of the simulation
python -m tests.mutation all         # both, one after the other
python -m tests.mutation pipeline --only 'ecs_observer.pipeline.sweep.*'   # a slice (fnmatch on mutant names)

mutmut reads its settings from `[tool.mutmut]` of the pyproject.toml in the
directory it runs in, so each scope runs in a directory of its own,
build/mutation/<scope>/: a pyproject.toml with the project's pytest settings and
the scope's `[tool.mutmut]`, and links to the sources and the tests (mutmut
copies both into its mutants/ there). Each scope writes survivors.md beside it:
every mutant not killed, grouped by module, with its diff.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "mutation"
LINKED = ("ecs_observer", "tests", "README.md", "docs")  # the last two: read by tests (settings, logs)

# Run inside a scope's directory: every mutant's status (as `mutmut results --all true` names it), and the
# diff of each one not killed. In a process of its own because mutmut reads its settings once, from the cwd.
_RESULTS = """
import json, sys
from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.file_utils import walk_mutatable_files
found = []
for path in walk_mutatable_files():
    data = SourceFileMutationData(path=path)
    data.load()
    for name, code in data.exit_code_by_key.items():
        status = status_by_exit_code[code]
        diff = get_diff_for_mutant(name, path=path) if status != "killed" else ""
        found.append({"module": str(path), "name": name, "status": status, "diff": diff})
json.dump(found, sys.stdout)
"""


def settings(pyproject: Path = ROOT / "pyproject.toml") -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The project's pytest settings, and each scope's mutmut settings (the shared keys of
    `[tool.mutation]` under the scope's own)."""
    tool = tomllib.loads(pyproject.read_text())["tool"]
    shared = {k: v for k, v in tool["mutation"].items() if not isinstance(v, dict)}
    scopes = {k: shared | v for k, v in tool["mutation"].items() if isinstance(v, dict)}
    return tool["pytest"]["ini_options"], scopes


def _toml(table: str, values: dict[str, Any]) -> str:
    """Strings, numbers, booleans and lists of them: JSON writes each as TOML reads it."""
    return "\n".join([f"[{table}]"] + [f"{key} = {json.dumps(value)}" for key, value in values.items()]) + "\n"


def prepare(scope: str, pytest_options: dict[str, Any], mutmut: dict[str, Any]) -> Path:
    """A fresh directory for the scope: its pyproject.toml, and links to what mutmut copies."""
    where = BUILD / scope
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for name in LINKED:
        (where / name).symlink_to(ROOT / name, target_is_directory=True)
    header = f"# Written by `python -m tests.mutation {scope}` from [tool.mutation.{scope}]: not to edit.\n"
    (where / "pyproject.toml").write_text(
        header + _toml("tool.pytest.ini_options", pytest_options) + "\n" + _toml("tool.mutmut", mutmut)
    )
    return where


def run(
    scope: str,
    pytest_options: dict[str, Any],
    mutmut: dict[str, Any],
    only: list[str] | None = None,
    jobs: int | None = None,
) -> tuple[Counter[str], float]:
    where = prepare(scope, pytest_options, mutmut)
    bin_dir = Path(sys.executable).parent
    began = time.monotonic()
    with open(where / "mutmut.log", "w") as log:
        command = [str(bin_dir / "mutmut"), "run", *(only or [])] + ([f"--max-children={jobs}"] if jobs else [])
        done = subprocess.run(command, cwd=where, stdout=log, stderr=subprocess.STDOUT, check=False)
    elapsed = time.monotonic() - began
    if done.returncode != 0:
        sys.stdout.write((where / "mutmut.log").read_text()[-3000:])
        raise SystemExit(f"mutmut failed in scope {scope} (exit {done.returncode}): {where / 'mutmut.log'}")
    answer = subprocess.run([sys.executable, "-c", _RESULTS], cwd=where, capture_output=True, text=True, check=True)
    found: list[dict[str, str]] = json.loads(answer.stdout)
    if only:  # mutmut lists every mutant of the scope; a slice's score counts only the slice's
        found = [m for m in found if any(fnmatch.fnmatch(m["name"], pattern) for pattern in only)]
    (where / "survivors.md").write_text(survivors(scope, found))
    return Counter(m["status"] for m in found), elapsed


def survivors(scope: str, found: list[dict[str, str]]) -> str:
    """Every mutant not killed, by module, with its diff: what to triage."""
    left = [m for m in found if m["status"] != "killed"]
    lines = [f"# Mutants of scope {scope} not killed: {len(left)} of {len(found)}", ""]
    for module in sorted({m["module"] for m in left}):
        here = [m for m in left if m["module"] == module]
        lines += [f"## {module}: {len(here)}", ""]
        for m in here:
            lines += [f"### {m['name']}: {m['status']}", "", "```diff", m["diff"], "```", ""]
    return "\n".join(lines)


def score_line(scope: str, outcomes: Counter[str]) -> str:
    total = sum(outcomes.values())
    killed = outcomes["killed"]
    return f"mutation score {scope}: {killed} of {total} killed = {killed / max(1, total):.1%}"


def main(argv: list[str] | None = None) -> int:
    pytest_options, scopes = settings()
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.splitlines()[0])
    parser.add_argument("scope", choices=[*scopes, "all"])
    parser.add_argument("--only", action="append", metavar="PATTERN", help="mutant names to run (fnmatch); repeatable")
    parser.add_argument("--jobs", type=int, help="mutants tried at once (mutmut's default: one per core)")
    args = parser.parse_args(argv)
    chosen = list(scopes) if args.scope == "all" else [args.scope]
    lines = []
    for scope in chosen:
        outcomes, elapsed = run(scope, pytest_options, scopes[scope], args.only, args.jobs)
        print(f"{scope}: " + ", ".join(f"{n} {kind}" for kind, n in outcomes.most_common()), f"in {elapsed:.0f} s")
        print(f"  survivors: {(BUILD / scope / 'survivors.md').relative_to(ROOT)}")
        lines.append(score_line(scope, outcomes))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

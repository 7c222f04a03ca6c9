"""The benchmarks' own machinery: what bench/compare.py runs for another commit is that commit's code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from harness import observer_command  # noqa: E402
from spy import summary  # noqa: E402


def test_another_trees_observer_runs_that_trees_code(tmp_path: Path) -> None:
    """This checkout's package is importable everywhere here (the editable install, the working directory):
    the command must still reach the other tree's, through that tree's own entry point."""
    tree = tmp_path / "base"
    (tree / "ecs_observer").mkdir(parents=True)
    (tree / "pyproject.toml").write_text('[project.scripts]\necs-observer = "ecs_observer.elsewhere:main"\n')
    (tree / "ecs_observer" / "__init__.py").write_text("")
    (tree / "ecs_observer" / "elsewhere.py").write_text(
        "import sys\n\ndef main() -> int:\n    print('from the other tree', sys.argv[1:])\n    return 0\n"
    )
    args, env, cwd = observer_command(tree)
    result = subprocess.run(
        args, env=os.environ | env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout == "from the other tree ['run']\n", result.stderr
    # This checkout's own observer is the installed command.
    assert observer_command(None)[0] == [str(Path(sys.executable).parent / "ecs-observer"), "run"]


def test_a_profile_summary_gives_each_function_its_own_and_cumulative_share(tmp_path: Path) -> None:
    profile = tmp_path / "p.txt"
    profile.write_text(
        "main (ecs_observer/app/cli.py);decide (ecs_observer/pipeline/policy.py);loads (json/decoder.py) 3\n"
        "main (ecs_observer/app/cli.py);decide (ecs_observer/pipeline/policy.py) 1\n"
        "main (ecs_observer/app/cli.py);select (selectors.py) 6\n"
    )
    lines = summary(profile).splitlines()
    assert lines[0].startswith("# profile: 10 samples")
    assert {" 60%  selectors", " 30%  json", " 10%  ecs_observer.pipeline"} <= set(lines)
    assert " 60%    60%  select (selectors.py)" in lines
    assert " 10%    40%  decide (ecs_observer/pipeline/policy.py)" in lines

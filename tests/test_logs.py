"""docs/logs.md stays true: it lists every line the code can log, under its logger, at the code's level,
and nothing the code no longer logs (operators' metric filters are built on it). Read from the source, no
server; the simulation checks the values of the lines it sees (tests/sim/logs.py)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sim.logs import DOC, catalogue, placeholders

PACKAGE = Path(__file__).resolve().parents[1] / "ecs_observer"
_METHODS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR", "exception": "ERROR"}


def _loggers(tree: ast.Module) -> dict[str, str]:
    """The module's `name = logging.getLogger("ecs_observer...")`."""
    found = {}
    for node in tree.body:
        call = node.value if isinstance(node, ast.Assign) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.args):
            continue
        arg, name = call.args[0], node.targets[0]  # type: ignore[attr-defined]
        if call.func.attr == "getLogger" and isinstance(arg, ast.Constant) and isinstance(name, ast.Name):
            found[name.id] = str(arg.value)
    return found


def _levels(node: ast.expr) -> set[str] | None:
    """`logging.INFO`, or `logging.A if ... else logging.B`; None when the level is a variable."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "logging":
        return {node.attr}
    if isinstance(node, ast.IfExp):
        body, orelse = _levels(node.body), _levels(node.orelse)
        return body | orelse if body is not None and orelse is not None else None
    return None


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """ast.walk, minus the functions mutmut writes beside the original (`x_f__mutmut_3`): under
    `make mutation` this file reads the mutated copy."""
    for child in ast.iter_child_nodes(node):
        name = getattr(child, "name", "") if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else ""
        if "__mutmut_" in name and not name.endswith("__mutmut_orig"):
            continue  # a mutant (`x_f__mutmut_3`), not the original (`x_f__mutmut_orig`)
        yield child
        yield from _walk(child)


def code_lines() -> dict[tuple[str, str], tuple[str, set[str] | None]]:
    """(logger, template) -> (where, the levels the call can log at) for every log call of the package."""
    lines: dict[tuple[str, str], tuple[str, set[str] | None]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        loggers = _loggers(tree)
        for node in _walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if not (isinstance(node.func.value, ast.Name) and node.func.value.id in loggers):
                continue
            method, where = node.func.attr, f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            if method == "log":
                levels, template = _levels(node.args[0]), node.args[1]
            elif method in _METHODS:
                levels, template = {_METHODS[method]}, node.args[0]
            else:
                continue
            literal = isinstance(template, ast.Constant) and isinstance(template.value, str)
            assert literal, f"{where}: a log line's template is a literal, for docs/logs.md to list it"
            assert isinstance(template, ast.Constant)
            key = (loggers[node.func.value.id], str(template.value))
            known = lines.get(key)
            if known is not None and known[1] is not None and levels is not None:
                levels = known[1] | levels
            lines[key] = (where, levels)
    return lines


def test_every_documented_line_is_logged_by_the_code_at_its_level() -> None:
    code = code_lines()
    for key, line in catalogue().items():
        assert key in code, f"docs/logs.md lists {key[1]!r} under `{key[0]}`; no code logs it there any more"
        where, levels = code[key]
        if levels is not None:
            assert levels <= line.levels, f"{where}: {key[1]!r} logs at {levels}; docs/logs.md gives {line.levels}"


def test_every_line_the_code_logs_is_documented() -> None:
    documented = catalogue()
    missing = [
        f"{where}: `{logger}` {template!r}"
        for (logger, template), (where, _) in code_lines().items()
        if (logger, template) not in documented
    ]
    assert not missing, "not in docs/logs.md:\n" + "\n".join(missing)


def test_the_page_reads_as_it_explains() -> None:
    """Each logger has its section, and the placeholder kinds the page's table names are those read."""
    assert {logger for logger, _ in catalogue()} >= {"ecs_observer", "ecs_observer.sweep", "ecs_observer.sqs"}
    assert placeholders("sweep: flow run %s (task %s): %s failed: %s") == [
        ("%s", "flow run"),
        ("%s", "task"),
        ("%s", "text"),
        ("%s", "text"),
    ]
    assert placeholders("task definition %s deregistered (task %s stopped), after %.0f s") == [
        ("%s", "task definition"),
        ("%s", "task"),
        ("%.0f", "number"),
    ]
    assert "tests/test_logs.py" in DOC.read_text()


@pytest.mark.parametrize("level", ["INFO or", "LOUD", "INFO if REJECT, else DEBUG"])
def test_a_level_the_page_does_not_explain_is_refused(tmp_path: Path, level: str) -> None:
    doc = tmp_path / "logs.md"
    doc.write_text(f"## `ecs_observer`\n\n| Level | Line |\n| --- | --- |\n| {level} | `stopped: %s` |\n")
    with pytest.raises(ValueError, match=r"docs/logs\.md"):
        catalogue.__wrapped__(doc)

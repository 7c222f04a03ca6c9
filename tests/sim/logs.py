"""The log lines as docs/logs.md promises them: each record of an `ecs_observer` logger checked against it.

docs/logs.md lists every line by logger, as its `%`-template, with its level; operators build metric filters
and alarms on them. `LogContract.check` answers what is wrong with one record: a template the page does not
list under its logger (reworded, or new and undocumented), a level it does not give the line, or a value
that is not what its place names. The kind of a value follows from the words before its placeholder
(`flow run %s`: a run's id; `task %s`: a task's ARN or id; `message %s`: a message id; `%d`: a number);
this page's table says the same to the operator.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

__all__ = ["DOC", "Line", "LogContract", "catalogue", "placeholders"]

DOC = Path(__file__).resolve().parents[2] / "docs" / "logs.md"

_LOGGER = re.compile(r"^## `(ecs_observer[\w.]*)`\s*$")
_ROW = re.compile(r"^\| ([A-Z][A-Za-z ,]*?) \| `([^`]+)` \|")
_PLACEHOLDER = re.compile(r"%(?:\.\d+)?[sdrgf]")
_LEVEL = "DEBUG|INFO|WARNING|ERROR|CRITICAL"
_IF = re.compile(rf"^({_LEVEL}) if (\w+), else ({_LEVEL})$")
_THEN = re.compile(rf"^({_LEVEL}), then ({_LEVEL})$")
_ANY = re.compile(rf"^({_LEVEL})(?: or ({_LEVEL}))*$")
_TASK_ARN = re.compile(r"^arn:aws:ecs:[\w-]+:\d{12}:task/[\w-]+/([0-9a-f]{32})$")
_DEFINITION_ARN = re.compile(r"^arn:aws:ecs:[\w-]+:\d{12}:task-definition/[\w-]+:\d+$")
_RUN = re.compile(r"^(?:.+ \()?([0-9a-f-]{36})\)?$")  # `<uuid>` or `<name> (<uuid>)`


_SWEEP = "sweep: %d run(s) held against their tasks: %s"


def _sweep_adds_up(runs: object, summary: object) -> list[str]:
    """The sweep's line, as its reader sums it: its outcomes' counts add up to the runs it read (`none`: 0)."""
    counts = [] if summary == "none" else [part.split(" ", 1)[0] for part in str(summary).split(", ")]
    if not all(count.isdigit() for count in counts) or sum(map(int, counts)) != runs:
        return [f"{_SWEEP!r}: {runs!r} run(s), but the outcomes {summary!r} do not add up to them"]
    return []


@dataclass(frozen=True, slots=True)
class Line:
    """One documented line: the levels it may take and, for a conditional level, its rule."""

    logger: str
    template: str
    levels: frozenset[str]
    when_accept: tuple[str, str] | None = None  # `A if ACCEPT, else B`: (A, B)
    first_then: tuple[str, str] | None = None  # `A, then B`: A the first time for the first value


def _line(logger: str, level: str, template: str) -> Line:
    if (m := _IF.match(level)) is not None:
        if m[2] != "ACCEPT":
            raise ValueError(f"docs/logs.md: {level!r}: only `A if ACCEPT, else B` is understood")
        return Line(logger, template, frozenset({m[1], m[3]}), when_accept=(m[1], m[3]))
    if (m := _THEN.match(level)) is not None:
        return Line(logger, template, frozenset({m[1], m[2]}), first_then=(m[1], m[2]))
    if _ANY.match(level) is None:
        raise ValueError(f"docs/logs.md: level {level!r} of {template!r} is none of the forms the page explains")
    return Line(logger, template, frozenset(level.split(" or ")))


@functools.lru_cache(maxsize=1)
def catalogue(doc: Path = DOC) -> dict[tuple[str, str], Line]:
    """The documented lines by (logger, template), read once per process. A template listed twice under one
    logger (a line logged at two levels from two places) may take either row's levels."""
    lines: dict[tuple[str, str], Line] = {}
    logger: str | None = None
    for text in doc.read_text().splitlines():
        if text.startswith("## "):
            found = _LOGGER.match(text)
            logger = found[1] if found is not None else None
        elif logger is not None and (row := _ROW.match(text)) is not None:
            line = _line(logger, row[1], row[2])
            key = (logger, line.template)
            if key in lines:  # two rows: plain levels only
                line = Line(logger, line.template, lines[key].levels | line.levels)
            lines[key] = line
    return lines


def placeholders(template: str) -> list[tuple[str, str]]:
    """Each placeholder of the template with the kind of value its place names."""
    kinds = []
    for found in _PLACEHOLDER.finditer(template):
        before = template[: found.start()]
        spec = found[0]
        if spec in ("%d",) or spec.endswith(("g", "f")):
            kind = "number"
        elif re.search(r"\bflow run $", before):
            kind = "flow run"
        elif re.search(r"\btask definition $", before):
            kind = "task definition"
        elif re.search(r"\btask $", before):
            kind = "task"
        elif re.search(r"\bmessage $", before):
            kind = "message"
        else:
            kind = "text"
        kinds.append((spec, kind))
    return kinds


@dataclass
class LogContract:
    """The page's promises about the records of one simulated world. `runs`, `tasks`, `messages`: what the
    world knows (its scenario's), so that a value of the right shape but of nothing real is caught too."""

    runs: Collection[UUID]
    tasks: Collection[str]  # ARNs and ids
    messages: Collection[str]
    _first: dict[tuple[str, str, str], str] = field(default_factory=dict)  # `A, then B`: what was logged

    def check(self, record: logging.LogRecord, who: str = "") -> list[str]:
        """What is wrong with the record, each naming the line and the value. `who`: the process that logged
        it (a line logged once per message is once per process: another one has its own memory)."""
        if not record.name.startswith("ecs_observer"):
            return []
        where = f"{record.pathname.rsplit('/', 1)[-1]}:{record.lineno} ({record.name}, {record.msg!r})"
        line = catalogue().get((record.name, str(record.msg)))
        if line is None:
            return [f"{where}: not in docs/logs.md under `{record.name}`"]
        args: tuple[Any, ...] = (
            record.args if isinstance(record.args, tuple) else ((record.args,) if record.args else ())
        )
        wrong = self._level(line, record, args, who)
        kinds = placeholders(line.template)
        if len(args) != len(kinds):
            return [*wrong, f"{where}: {len(args)} value(s) for {len(kinds)} placeholder(s)"]
        for place, ((spec, kind), value) in enumerate(zip(kinds, args, strict=True), start=1):
            why = self._value(kind, value)
            if why is not None:
                wrong.append(f"{where}: value {place} ({spec}, {kind}) is {value!r}: {why}")
        return wrong

    def _level(self, line: Line, record: logging.LogRecord, args: tuple[Any, ...], who: str) -> list[str]:
        level = record.levelname
        if level not in line.levels:
            return [f"{record.msg!r} logged at {level}; docs/logs.md gives {' or '.join(sorted(line.levels))}"]
        if line.when_accept is not None:
            expected = line.when_accept[0] if "ACCEPT" in args else line.when_accept[1]
            if level != expected:
                return [f"{record.msg!r} with {args!r} logged at {level}; docs/logs.md gives {expected}"]
        if line.first_then is not None and args:
            key = (who, line.template, str(args[0]))
            expected = line.first_then[1] if key in self._first else line.first_then[0]
            self._first[key] = level
            if level != expected:
                again = "again" if expected == line.first_then[1] else "the first time"
                return [f"{record.msg!r} logged {again} for {args[0]!r} by {who or '?'} at {level}, not {expected}"]
        if record.msg == _SWEEP and len(args) == 2:
            return _sweep_adds_up(*args)
        return []

    def _value(self, kind: str, value: object) -> str | None:
        if value is None:
            return "the page names a value here"
        if kind == "number":
            return None if isinstance(value, int | float) and not isinstance(value, bool) else "not a number"
        text = str(value)
        if not text.strip():
            return "empty"
        if kind == "flow run":
            found = _RUN.match(text)
            if found is None:
                return "not a flow run's id"
            return None if UUID(found[1]) in self.runs else "no run the world knows"
        if kind == "task":
            if _TASK_ARN.match(text) is None and re.fullmatch(r"[0-9a-f]{32}", text) is None:
                return "not a task's ARN or id"
            return None if text in self.tasks else "no task the world knows"
        if kind == "task definition":
            return None if _DEFINITION_ARN.match(text) is not None else "not a task definition's ARN"
        if kind == "message":
            return None if text in self.messages else "no message the world sent"
        return None

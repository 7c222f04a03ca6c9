"""The demo's output for people: per task, its chain of states, the run's states, and why it stopped."""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TextIO
from uuid import UUID

from ...core.run_states import RunLog, RunState
from ...ports import EncodedEvent

__all__ = ["RecordingSink", "timeline"]


class RecordingSink:
    """Accepts every event and keeps it (printing it too, as a JSON line, with `echo`)."""

    def __init__(self, echo: TextIO | None = None) -> None:
        self.events: dict[str, dict[str, Any]] = {}
        self._echo = echo

    async def send(self, events: Sequence[EncodedEvent]) -> dict[UUID, str]:
        for event in events:
            body = json.loads(event.json)
            self.events[body["id"]] = body
            if self._echo is not None:
                self._echo.write(event.json.decode() + "\n")
        if self._echo is not None:
            self._echo.flush()
        return {}

    async def aclose(self) -> None:
        return None


def timeline(
    events: Sequence[Mapping[str, Any]],
    histories: Mapping[UUID, Sequence[RunState]],
    messages: Mapping[UUID, str],
    logs: Mapping[UUID, Sequence[RunLog]],
    swept: Collection[str] = (),
) -> list[str]:
    """Lines a person reads at a glance. `→` joins two changes when the later one `follows` the earlier;
    `swept`: the ids of events a sweep forwarded (no EventBridge event said it)."""
    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for event in events:
        by_task.setdefault(event["resource"]["prefect.resource.id"], []).append(event)
    lines: list[str] = []
    for task, chain in sorted(by_task.items(), key=lambda item: min(e["occurred"] for e in item[1])):
        run = next(r for r in chain[0]["related"] if r["prefect.resource.role"] == "flow-run")
        run_id = UUID(run["prefect.resource.id"].removeprefix("prefect.flow-run."))
        name = run.get("prefect.resource.name", run_id)
        lines.append(f"task {task.removeprefix('prefect.ecs.task.')}  flow run {name}")
        lines.append(f"  ECS      {_chain(chain)}")
        found = [e["event"].rsplit(".", 1)[1].upper() for e in chain if e["id"] in swept]
        if found:
            lines.append(f"  sweep    {', '.join(found)} found by the sweep: its EventBridge event never came")
        if run_id in histories:
            lines.append(f"  run      {' → '.join(state.name for state in histories[run_id])}")
            if messages.get(run_id) and histories[run_id][-1].type in ("CRASHED", "CANCELLED", "SCHEDULED"):
                lines.append(f"           {messages[run_id]}")
            elif histories[run_id][-1].type == "PENDING":
                lines.append("           (from here the flow itself reports Running, then Completed or Failed)")
        stopped = next((e["resource"] for e in chain if e["event"] == "prefect.ecs.task.stopped"), None)
        written = logs.get(run_id, [])
        diagnosis = next((entry.message for entry in written if "Resolution:" in entry.message), None)
        if stopped is not None and diagnosis is not None:
            resolution = next(line for line in diagnosis.splitlines() if line.startswith("Resolution: "))
            lines.append(f"  why      {stopped.get('ecs.diagnosis', '?')}: {resolution.removeprefix('Resolution: ')}")
            if (retry := diagnosis.splitlines()[-1]).startswith(("Rescheduled", "Not rescheduled")):
                lines.append(f"  retry    {retry}")
        output = [entry.message for entry in written if entry.level in ("INFO", "20")]
        if output:  # a heading, then the lines
            lines.append(f"  logs     the container's last {len(output) - 1} line(s) posted, ending {output[-1]!r}")
    return lines


def _chain(chain: Sequence[Mapping[str, Any]]) -> str:
    """The statuses in `follows` order; ` | ` where one does not follow the one before."""
    ids = {e["id"] for e in chain}
    after = {e["follows"]: e for e in chain if e.get("follows") in ids}
    starts = sorted((e for e in chain if e.get("follows") not in ids), key=lambda e: e["occurred"])
    parts: list[str] = []
    for start in starts:
        walk: list[str] = []
        event: Mapping[str, Any] | None = start
        while event is not None:
            walk.append(event["event"].rsplit(".", 1)[1].upper())
            event = after.get(event["id"])
        parts.append(" → ".join(walk))
    return " | ".join(parts)


def write(lines: Sequence[str], stream: TextIO = sys.stdout) -> None:
    stream.write("\n".join(lines) + "\n")
    stream.flush()

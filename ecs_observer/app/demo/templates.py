"""The CloudFormation templates, from the wheel or from a source checkout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["events_template"]


def events_template() -> str:
    packaged = resources.files("ecs_observer") / "_infra" / "events.yaml"
    if packaged.is_file():
        return packaged.read_text()
    return (Path(__file__).resolve().parents[3] / "infra" / "events.yaml").read_text()

"""The `ecs-observer` command. `healthcheck`, which ECS runs every 30 s, loads the standard library
alone; every other command loads the observer (`commands.py`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["healthcheck"]:
        from .healthcheck import main as healthcheck

        return healthcheck(args[1:])
    from .commands import main as commands

    return commands(args)

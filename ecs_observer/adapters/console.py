"""An event sink that prints each event as a JSON line: the demo's when no Prefect API is given."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO
from uuid import UUID

from ..ports import EncodedEvent

__all__ = ["ConsoleSink"]


class ConsoleSink:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    async def send(self, events: Sequence[EncodedEvent]) -> dict[UUID, str]:
        for event in events:
            self._stream.write(event.json.decode() + "\n")
        self._stream.flush()
        return {}

    async def aclose(self) -> None:
        return None

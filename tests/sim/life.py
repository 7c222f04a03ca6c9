"""A replica's process: alive until killed. A killed process does nothing more, observably.

Every port a replica is given goes through its `Life`: a call made, or answered,
after the kill never returns, as a call of a SIGKILLed process never does. What
the call did at the service before the kill stays done (a write applied, an
answer lost).
"""

from __future__ import annotations

import asyncio

__all__ = ["Life"]


class Life:
    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True
        self._ended = False
        self._never: asyncio.Future[None] | None = None

    def kill(self) -> None:
        self.alive = False

    def end(self) -> None:
        """The run is over: a dead process's calls are cancelled, so that its tasks can be collected."""
        self._ended = True
        if self._never is not None:
            self._never.cancel()

    async def check(self) -> None:
        """Return only while alive; a dead process's call hangs for ever (until the run ends)."""
        if self._ended and not self.alive:
            raise asyncio.CancelledError
        if not self.alive:
            if self._never is None:
                self._never = asyncio.get_running_loop().create_future()
            await self._never

    async def pause(self, seconds: float) -> None:
        """The call takes this long; a process killed meanwhile never sees its answer."""
        await self.check()
        if seconds > 0:
            await asyncio.sleep(seconds)
        await self.check()

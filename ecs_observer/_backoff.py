"""One retry policy for every I/O part: exponential backoff with jitter, via stamina."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import stamina

__all__ = ["Backoff", "RetryOn"]

# An exception type to retry on, or a hook answering "retry?" or how long to wait first.
RetryOn = type[Exception] | Callable[[Exception], bool | float]


@dataclass(frozen=True)
class Backoff:
    """Waits from `initial` doubling up to `maximum`, each with up to `initial` of jitter.

    stamina's default jitter is a flat second, which would swamp short initial waits.
    """

    initial: float = 0.5
    maximum: float = 30.0

    def attempts(self, on: RetryOn, limit: int | None = None) -> AsyncIterator[stamina.Attempt]:
        """For `async for attempt in ...: with attempt: ...`; unbounded unless `limit` is given."""
        return stamina.retry_context(
            on=on,
            attempts=limit,
            timeout=None,
            wait_initial=self.initial,
            wait_max=self.maximum,
            wait_jitter=self.initial,
        ).__aiter__()

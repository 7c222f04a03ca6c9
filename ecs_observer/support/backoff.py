"""One retry policy for every I/O part: exponential backoff with jitter, via stamina.

A call site names its cause; what a retry does besides waiting (counting it,
logging the outage it belongs to) is a hook on the policy, as stamina's
instrumentation hooks are, but held by the `Backoff` value instead of a global
registry. The hooks also hear of each answer (a success, or an error not to retry),
so that an outage is known to end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import stamina

__all__ = ["Answered", "AskAgain", "Backoff", "CallHook", "RetryOn", "Retrying"]

T = TypeVar("T")

# An exception type to retry on, or a hook answering "retry?" or how long to wait first.
RetryOn = type[Exception] | Callable[[Exception], bool | float]


@dataclass(frozen=True, slots=True)
class Retrying:
    """A failed attempt that will be tried again: what a retry hook sees."""

    cause: str  # a stable label, e.g. "describe_tasks" (a metrics label)
    attempt: int
    error: Exception
    what: str | None  # names the call in the outage's log line; None: the error says it all
    answered: bool = False  # the dependency answered; what it said calls for asking again (a task MISSING)


@dataclass(frozen=True, slots=True)
class Answered:
    """A call whose dependency answered: it succeeded, or failed in a way not to retry."""

    cause: str


CallHook = Callable[[Retrying | Answered], None]


class AskAgain(Exception):
    """Raised by a request whose dependency answered with something to ask again about (entries of a
    batch that failed): retried like any error, but not an outage of the dependency."""


@dataclass(frozen=True)
class Backoff:
    """Waits from `initial` doubling up to `maximum`, each with up to `initial` of jitter.

    stamina's default jitter is a flat second, which would swamp short initial waits.
    """

    initial: float = 0.5
    maximum: float = 30.0
    hooks: tuple[CallHook, ...] = field(default=(), compare=False)

    def hooked(self, hook: CallHook) -> Backoff:
        """The same policy, also telling `hook` of each retry and answer (once, however often it is added)."""
        return self if hook in self.hooks else replace(self, hooks=(*self.hooks, hook))

    async def call(
        self,
        cause: str,
        request: Callable[[], Awaitable[T]],
        *,
        on: RetryOn = Exception,
        limit: int | None = None,
        what: str | None = None,
    ) -> T:
        """`request()` until it succeeds, or fails with what `on` does not retry, or `limit` attempts
        have failed (unbounded by default); each retry and the answer are told to the hooks."""
        async for attempt in self._attempts(on, limit):
            with attempt:
                try:
                    answer = await request()
                except Exception as exc:
                    if not _retries(on, exc):
                        self._tell(Answered(cause))
                    elif limit is None or attempt.num < limit:
                        self._tell(Retrying(cause, attempt.num, exc, what, answered=isinstance(exc, AskAgain)))
                    raise
                self._tell(Answered(cause))
                return answer
        raise AssertionError("unreachable: the last attempt returns or raises")

    def delay(self, attempt: int) -> float:
        """The wait before retry number `attempt` (from 1) of a caller that retries by itself. The exponent is
        capped: past attempt 1,024, 2.0 ** attempt overflows a float (a task ECS will not describe, asked again
        for a failure limit of hours, failed its whole DescribeTasks batch with OverflowError)."""
        return float(min(self.initial * 2.0 ** min(attempt - 1, 64), self.maximum))

    def retrying(self, retry: Retrying) -> None:
        """Tell the hooks of a retry made by the caller itself (one scheduled for later)."""
        self._tell(retry)

    def _tell(self, outcome: Retrying | Answered) -> None:
        for hook in self.hooks:
            hook(outcome)

    def _attempts(self, on: RetryOn, limit: int | None) -> AsyncIterator[stamina.Attempt]:
        return stamina.retry_context(
            on=on,
            attempts=limit,
            timeout=None,
            wait_initial=self.initial,
            wait_max=self.maximum,
            wait_jitter=self.initial,
        ).__aiter__()


def _retries(on: RetryOn, exc: Exception) -> bool:
    """Whether stamina will retry `exc`: as it reads `on` (a float is a wait, so a retry)."""
    if isinstance(on, type):
        return isinstance(exc, on)
    return on(exc) is not False

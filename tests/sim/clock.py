"""Virtual time: an event loop whose clock jumps ahead whenever every task waits.

The loop is asyncio's own selector loop with two changes: `time()` reads a
`VirtualClock`, and its selector, instead of blocking for the timeout the loop
asks for, moves the clock on by that much. A run of an hour of virtual time
then takes as long as its callbacks take, and two runs with the same seed take
the same steps: nothing in the loop reads the machine's clock.

The observer also reads the wall clock in a few places (`time.time()` for
claims, `datetime.now(UTC)` for MISSING's grace and latency, `time.monotonic()`
for health). `reading(clock)` points every `ecs_observer` module's `time` and
`datetime` names at the same clock for the length of a run, so production code
needs no clock parameter.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import selectors
import sys
import time as _time
import types
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["Deadlock", "VirtualClock", "VirtualLoop", "in_virtual_time", "reading", "virtual"]

# The wall-clock instant virtual time 0 stands for.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


_GRAIN = 1e-6


class Deadlock(RuntimeError):
    """Nothing is ready and nothing is scheduled (every task waits for something that never comes), or
    the loop spins without end."""


class VirtualClock:
    def __init__(self, epoch: datetime = EPOCH) -> None:
        self.now = 0.0  # seconds since `epoch`
        self.epoch = epoch

    def wall(self) -> datetime:
        return self.epoch + timedelta(seconds=self.now)

    def epoch_seconds(self) -> float:
        return self.epoch.timestamp() + self.now


class _JumpingSelector(selectors.BaseSelector):
    """A selector with no I/O: waiting `timeout` seconds is moving the clock on by that much."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: object = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, fileobj if isinstance(fileobj, int) else fileobj.fileno(), events, data)
        self._keys[key.fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj if isinstance(fileobj, int) else fileobj.fileno())

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise Deadlock("every task waits and no timer is set")
        if timeout > 0:
            # At least a microsecond: real time passes while the loop selects, however short the wait.
            self._clock.now += max(timeout, _GRAIN)
        return []

    def get_map(self) -> dict[int, selectors.SelectorKey]:  # type: ignore[override]
        return self._keys

    def close(self) -> None:
        self._keys.clear()


class VirtualLoop(asyncio.SelectorEventLoop):
    """Raises `Deadlock` after `max_steps` iterations: a run that spins without end is a finding too."""

    def __init__(self, clock: VirtualClock, max_steps: int = 400_000) -> None:
        super().__init__(_JumpingSelector(clock))
        self._virtual = clock
        self._steps_left = max_steps

    def time(self) -> float:
        return self._virtual.now

    def _run_once(self) -> None:
        self._steps_left -= 1
        if self._steps_left < 0:
            raise Deadlock(f"still busy after its step budget, at {self._virtual.now:.1f} virtual seconds")
        if self._scheduled:  # type: ignore[attr-defined]
            # asyncio fires a timer due within the clock's resolution at once; real time then has passed it,
            # virtual time has not, and a loop waiting for that instant would spin short of it (seed 1282).
            due = self._scheduled[0]._when  # type: ignore[attr-defined]
            if 0 < due - self._virtual.now <= self._clock_resolution:  # type: ignore[attr-defined]
                self._virtual.now = due
        super()._run_once()  # type: ignore[misc]


def _time_module(clock: VirtualClock) -> types.ModuleType:
    shim = types.ModuleType("time")
    shim.__dict__.update({name: getattr(_time, name) for name in dir(_time) if not name.startswith("__")})
    shim.__dict__.update(time=clock.epoch_seconds, monotonic=lambda: clock.now, perf_counter=lambda: clock.now)
    return shim


def _datetime_class(clock: VirtualClock) -> type[datetime]:
    class VirtualDatetime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return clock.wall().astimezone(tz) if tz is not None else clock.wall().replace(tzinfo=None)

        @classmethod
        def utcnow(cls) -> datetime:  # type: ignore[override]
            return clock.wall().replace(tzinfo=None)

    return VirtualDatetime


@contextlib.contextmanager
def reading(clock: VirtualClock) -> Iterator[None]:
    """Every loaded `ecs_observer` module reads `clock` through its `time` and `datetime` names."""
    shims: dict[object, object] = {_time: _time_module(clock), datetime: _datetime_class(clock)}
    saved: list[tuple[types.ModuleType, str, object]] = []
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("ecs_observer"):
            continue
        for attr, value in list(vars(module).items()):
            shim = shims.get(value) if isinstance(value, types.ModuleType | type) else None
            if shim is not None:
                saved.append((module, attr, value))
                setattr(module, attr, shim)
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)


def virtual(main: Callable[[], Awaitable[T]], clock: VirtualClock | None = None) -> T:
    """`main()` run in virtual time, the observer's clocks reading it too (`reading`), for the tests that
    drive one part of the pipeline: whatever asyncio would report as unhandled (an exception nobody
    retrieved, a callback that failed) fails the test."""
    clock = clock or VirtualClock()
    loop = VirtualLoop(clock)
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        with reading(clock):
            result = loop.run_until_complete(main())
    finally:
        loop.close()
    assert unhandled == [], unhandled
    return result


def in_virtual_time(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """An async test run by `virtual` (its fixtures and parameters passed on): its waits are exact, whatever
    the machine's load."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        virtual(lambda: test(*args, **kwargs))

    return run

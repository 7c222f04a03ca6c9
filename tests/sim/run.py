"""One simulated run: the scenario's world, its replicas driven through it in virtual time, then the checks.

`simulate(seed)` is all a caller needs: it answers an `Outcome`, and the same
seed always answers the same one (`digest` says so in one word).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import stamina.instrumentation

from ecs_observer.core.task_view import sweep_event_id

from .clock import EPOCH, Deadlock, VirtualClock, VirtualLoop, reading
from .faults import SimError
from .invariants import at_end, awaiting_repair, on_delete
from .logs import LogContract
from .scenario import Scenario, draw
from .world import Replica, Stopped, Violation, World

__all__ = ["LIMIT", "Outcome", "replay_command", "simulate"]

_REPLICA: contextvars.ContextVar[str] = contextvars.ContextVar("replica", default="")
LIMIT = 4 * 3600.0  # virtual seconds a run may take before what is left counts as stuck
_TICK = 1.0


@dataclass(frozen=True, slots=True)
class Outcome:
    seed: int
    scenario: str  # one line: its shape, replicas, sizes
    violations: tuple[Violation, ...]
    faults: tuple[tuple[str, int], ...]  # the faults that happened, with how often
    virtual_seconds: float
    digest: str  # of everything Prefect, SQS and ECS hold at the end: equal for equal runs

    @property
    def ok(self) -> bool:
        return not self.violations


def replay_command(seed: int) -> str:
    return f"PYTHONHASHSEED=0 .venv/bin/python -m tests.sim --seed {seed} --verbose"


def simulate(seed: int, scenario: Scenario | None = None, tweak: Callable[[World], None] | None = None) -> Outcome:
    scenario = scenario or draw(seed)
    clock = VirtualClock()
    loop = VirtualLoop(clock)
    loop.set_exception_handler(lambda loop, context: None)  # a killed replica's tasks die unawaited
    state = random.getstate()
    random.seed(seed)  # the retry jitter (stamina) draws from the global generator
    world = World.of(scenario, clock)
    if tweak is not None:
        tweak(world)
    try:
        with reading(clock), _watching_logs(world):
            try:
                loop.run_until_complete(_drive(world))
            except Deadlock as exc:
                world.violate("no deadlock", str(exc))
            _collect(world, loop)
    finally:
        random.setstate(state)
        loop.close()
    violations = tuple(world.violations) + tuple(at_end(world))
    lost = [t for t in scenario.tasks if t.stop_lost]
    if lost:
        repaired = sum(_repaired(world, t.arn, len(t.statuses)) for t in lost)
        world.faults.exercised["sweep: a STOPPED event lost"] += len(lost)
        world.faults.exercised["sweep: a lost STOPPED repaired"] += repaired
    return Outcome(
        seed,
        describe(scenario),
        violations,
        tuple(sorted(world.faults.exercised.items())),
        clock.now,
        _digest(world),
    )


def _collect(world: World, loop: asyncio.AbstractEventLoop) -> None:
    """End what killed replicas left hanging, so that nothing is left running when the loop closes."""
    for replica in world.replicas:
        replica.life.end()
    left = asyncio.all_tasks(loop)
    for task in left:
        task.cancel()
    if left:
        loop._steps_left = 100_000  # type: ignore[attr-defined]
        with contextlib.suppress(Deadlock):
            loop.run_until_complete(asyncio.wait(left, timeout=60.0))


def _repaired(world: World, task_arn: str, version: int) -> bool:
    return sweep_event_id(task_arn, version) in world.prefect.events


def describe(scenario: Scenario) -> str:
    prefect = sum(t.run_id is not None for t in scenario.tasks)
    return (
        f"{scenario.shape}: {prefect} Prefect task(s), {len(scenario.tasks) - prefect} other(s), "
        f"{len(scenario.deliveries)} message(s), {scenario.replicas} replica(s)"
        f"{' sharing the state table' if scenario.shared else ''}, {len(scenario.faults.kills)} kill(s), "
        f"max_in_flight {scenario.config.max_in_flight}, {'exact' if scenario.exact else 'gaps allowed'}"
        f"{', sweeping' if scenario.sweeps else ''}"
    )


class _LogWatch(logging.Handler):
    """Formats every record the observer logs, as a real handler would, then drops it (the warnings are the
    faults working, counted instead): a record that cannot be formatted, or a traceback (a failure the
    pipeline did not expect; the generic handler that keeps its message logs it), is a violation; so is a
    line that is not as docs/logs.md gives it (tests/sim/logs.py)."""

    def __init__(self, world: World) -> None:
        super().__init__(logging.DEBUG)
        self._world = world
        tasks = world.scenario.tasks
        runs = {t.run_id for t in tasks if t.run_id is not None} | set(world.prefect.runs)
        arns = {t.arn for t in tasks} | {d.task_arn for d in world.scenario.deliveries if d.task_arn}
        self._contract = LogContract(
            runs, arns | {arn.rsplit("/", 1)[-1] for arn in arns}, {d.message_id for d in world.scenario.deliveries}
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception as exc:  # what logging would print as "--- Logging error ---"
            self._world.violate("every log line formats", f"{record.pathname}:{record.lineno}: {exc!r}")
            return
        for wrong in self._contract.check(record, _REPLICA.get()):
            self._world.violate("every log line is as docs/logs.md gives it", wrong)
        for value in record.args if isinstance(record.args, tuple) else ():
            if isinstance(value, BaseException) and not isinstance(value, SimError):  # as a traceback would
                self._world.violate("nothing fails unexpectedly", f"{text}: {value!r}")
        error = record.exc_info[1] if record.exc_info is not None else None
        if error is not None and not isinstance(error, SimError):  # a fault's own error is expected
            self._world.violate("nothing fails unexpectedly", f"{text}: {error!r}")


@contextlib.contextmanager
def _watching_logs(world: World) -> Iterator[None]:
    logger = logging.getLogger("ecs_observer")
    saved = logger.level, logger.propagate, logger.handlers[:]
    hooks = stamina.instrumentation.get_on_retry_hooks()
    stamina.instrumentation.set_on_retry_hooks([])  # as app/logs.py does: our backoff's hooks tell retries
    logger.handlers[:], logger.propagate = [_LogWatch(world)], False
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.setLevel(saved[0])
        logger.propagate, logger.handlers[:] = saved[1], saved[2]
        stamina.instrumentation.set_on_retry_hooks(hooks)


async def _drive(world: World) -> None:
    scenario, loop = world.scenario, asyncio.get_running_loop()
    world.queue.on_delete = lambda stored: world.violations.extend(on_delete(world, stored))
    running: dict[str, asyncio.Task[None]] = {}

    def start() -> None:
        replica = world.start_replica()
        running[replica.name] = asyncio.create_task(_run(replica))

    for _ in range(scenario.replicas):
        start()
    for delivery in scenario.deliveries:
        loop.call_at(delivery.at, world.queue.send, delivery.message_id, delivery.body)
    for at in scenario.faults.kills:
        loop.call_at(at, _kill, world, start)
    for at, pick in scenario.faults.stops:
        loop.call_at(at, _deploy, world, start, running, pick)
    stopped = [at for at, _ in scenario.faults.stops]
    last = max(
        [d.at for d in scenario.deliveries]
        + [k + scenario.faults.restart_after for k in scenario.faults.kills]
        + [at + 2 * scenario.config.drain_timeout for at in stopped]
    )
    if scenario.faults.sqs_outage is not None:
        last = max(last, scenario.faults.sqs_outage[1])
    if scenario.sweeps:  # a lost STOPPED is repaired a grace after it, or after ECS and Prefect answer again,
        # by a sweep within two intervals
        stops = [(t.occurred(len(t.statuses)) - EPOCH).total_seconds() for t in scenario.tasks]
        denied = 60.0 if scenario.faults.ecs_denied > 0 else 0.0  # tasks undescribable for their first minute
        outage = scenario.faults.outage[1] if scenario.faults.outage is not None else 0.0  # Prefect answers again
        last = max(last, denied, outage, *stops) + scenario.config.sweep_grace + 3 * scenario.config.sweep_interval
    # Faults may delay a repair past that: a while longer for what the sweep still has to do (then checked).
    overtime = last + 10 * scenario.config.sweep_interval if scenario.sweeps else last
    while loop.time() <= last or not world.queue.settled() or (loop.time() <= overtime and awaiting_repair(world)):
        if loop.time() > LIMIT:
            world.violate("finishes", f"messages still unfinished after {LIMIT:.0f} virtual seconds")
            break
        await asyncio.sleep(_TICK)
        _check_health(world)
    live = [r for r in world.replicas if r.life.alive]
    for replica in live:
        replica.observer.stop("the run is over")
    done, _ = await asyncio.wait([running[r.name] for r in live], timeout=120.0)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            world.violate("stops cleanly", repr(task.exception()))
    if len(done) < len(live):
        world.violate("stops cleanly", f"{len(live) - len(done)} replica(s) did not stop within 120 s")
    for replica in world.replicas:
        if replica.stopped is not None and replica.life.alive:
            _after_deploy(world, replica, replica.stopped)


def _deploy(world: World, start: Callable[[], None], running: dict[str, asyncio.Task[None]], pick: float) -> None:
    """SIGTERM a live replica, as a deploy does (ECS has started its replacement): it stops receiving,
    finishes what it holds within the drain timeout and hands the rest back to the queue at once."""
    live = [r for r in world.replicas if r.life.alive and not r.observer.stopping.is_set()]
    if not live:
        return
    victim = live[int(pick * len(live))]
    victim.stopped = stopped = Stopped(asyncio.get_running_loop().time())
    world.faults.exercised["process: a replica stopped by a deploy"] += 1
    start()
    victim.observer.stop("SIGTERM")

    def returned(task: asyncio.Task[None]) -> None:
        if not victim.life.alive:
            return  # killed while it drained: its run never returns
        stopped.returned_at, stopped.tally = asyncio.get_running_loop().time(), Counter(victim.tally)
        if task.cancelled() or task.exception() is not None:
            world.violate("stops cleanly", f"{victim.name} stopped by a deploy: {task!r}")
            return
        plan = world.scenario.faults
        if plan.sqs_error or plan.sqs_partial or plan.sqs_outage is not None or plan.prefect_gives_up:
            return  # a hand-back that failed, or a message whose call raised, stays hidden until its timeout
        if victim.stats.rejected:
            return  # so does a message it rejected, for the dead-letter queue
        now = asyncio.get_running_loop().time()
        for stored in world.queue.messages.values():
            hidden = stored.deleted_at is None and not stored.dead and stored.visible_at > now + 1e-3
            if hidden and stored.hidden_by == victim.name:
                detail = f"{victim.name}: message {stored.message_id} hidden until {stored.visible_at:.0f} s"
                world.violate("a stopped replica hands back what it held", f"{detail} (returned at {now:.0f} s)")

    running[victim.name].add_done_callback(returned)


def _after_deploy(world: World, replica: Replica, stopped: Stopped) -> None:
    """A replica a deploy stopped returned within two drain timeouts, and called nothing after that."""
    if stopped.returned_at is None or stopped.returned_at - stopped.at > 2 * world.scenario.config.drain_timeout:
        world.violate(
            "stops cleanly", f"{replica.name}: told to stop at {stopped.at:.0f} s, returned at {stopped.returned_at}"
        )
    elif replica.tally != stopped.tally:
        more = replica.tally - stopped.tally
        world.violate("a stopped replica calls nothing more", f"{replica.name}: {dict(more)} after its run returned")


def _check_health(world: World) -> None:
    """`/healthz` of each live replica tells the truth: unhealthy exactly when SQS has not answered it for
    longer than the silence limit (README: ECS then replaces the task), with its receive loops running."""
    limit, now = world.scenario.config.silence_limit(), asyncio.get_running_loop().time()
    for replica in world.replicas:
        if not replica.life.alive or replica.queue is None or replica.observer.stopping.is_set():
            continue
        if not replica.tally["sqs_calls:ReceiveMessage"]:
            continue  # not started yet
        healthy, details = replica.observer.health()
        silent = now - replica.queue.answered_at
        # Unhealthy says why, as `/healthz` shows it: SQS's silence, named (the other reasons need no SQS fault).
        says_why = healthy or "no successful SQS call for" in str(details.get("reason"))
        if healthy != (silent <= limit) or details["in_flight"] != replica.observer.in_flight or not says_why:
            detail = f"{replica.name} at {now:.0f} s: {healthy}, {details}, SQS silent for {silent:.0f} s"
            world.violate("health true", detail)
            return


async def _run(replica: Replica) -> None:
    """The replica's receive loops, and its sweep beside them (as app/service.py runs them)."""
    _REPLICA.set(replica.name)  # its tasks' log records say whose they are
    if replica.sweeper is None:
        await replica.observer.run()
        return
    sweeping = asyncio.create_task(replica.sweeper.run())
    try:
        await replica.observer.run()
    finally:
        sweeping.cancel()
        await asyncio.gather(sweeping, return_exceptions=True)


def _kill(world: World, start: Callable[[], None]) -> None:
    """SIGKILL a live replica; another, with empty memory, starts `restart_after` later."""
    live: list[Replica] = [r for r in world.replicas if r.life.alive and not r.observer.stopping.is_set()]
    if not live:
        return
    victim = world.faults.rng.choice(live)
    victim.life.kill()
    world.faults.exercised["process: a replica killed and restarted"] += 1
    asyncio.get_running_loop().call_later(world.scenario.faults.restart_after, start)


def _digest(world: World) -> str:
    parts = [repr(sorted((str(k), str(v)) for k, v in world.prefect.events.items()))]
    for run_id in sorted(world.prefect.runs):
        run = world.prefect.runs[run_id]
        parts.append(repr(([s.name for s, _ in run.history], [log.message for log in run.logs])))
    parts.append(repr(sorted((m.message_id, m.deleted_at, m.dead, m.receives) for m in world.queue.messages.values())))
    parts.append(repr(sorted(world.faults.exercised.items())))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

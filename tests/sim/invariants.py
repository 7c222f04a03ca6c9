"""What must hold of a run, as a user of Prefect and of the queue would see it.

`on_delete` is checked at each deletion; `at_end` once the run is over. Each
answers `Violation`s; none is a pass.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from ecs_observer.core.chain import Link
from ecs_observer.core.run_states import FINAL, INFRASTRUCTURE_PENDING, RESCHEDULE_MARK
from ecs_observer.core.sweep import ACTIVE
from ecs_observer.core.task_record import expires_after
from ecs_observer.core.task_view import sweep_event_id
from ecs_observer.support.stats import Stats

from .queue import Stored
from .scenario import Delivery, Scenario, TaskPlan
from .world import Violation, World

__all__ = ["at_end", "expected_history", "on_delete"]


def _effects_apply(task: TaskPlan) -> bool:
    """The run exists and its orchestration accepts what is proposed: its states are predictable."""
    return task.run_id is not None and task.run_known and task.run_answer == "ACCEPT"


def expected_history(task: TaskPlan) -> list[str]:
    """The run's state names once the task's whole life was observed, as README.md says: a transient start
    failure rescheduled (AwaitingRetry), a lost STOPPED of a clean exit found by the sweep Crashed."""
    kind, name = task.run_state
    history = [name]
    if kind == "PENDING":
        history.append(INFRASTRUCTURE_PENDING)
    if task.statuses[-1] != "STOPPED":
        return history
    if kind == "CANCELLING":
        history.append("Cancelled")
    elif kind in ("PENDING", "RUNNING") and task.stop == "capacity":
        history.append("AwaitingRetry")
    elif kind in ("PENDING", "RUNNING") and (task.failed or task.stop_lost):
        history.append("Crashed")
    return history


def allowed_finals(task: TaskPlan, scenario: Scenario) -> set[str]:
    """The run's last state as a user may find it. Beyond `expected_history`: a transient start failure may
    be Crashed (no reschedule planned) or, once its events came out of order, InfrastructurePending again
    after AwaitingRetry (a finding, see docs/reliability.md); with a sweep, a clean exit of a run that never
    reported a final state may be found by the sweep before its event arrives, and is then Crashed."""
    allowed = {expected_history(task)[-1]}
    if _lost_for_good(task):
        allowed |= {task.run_state[1], INFRASTRUCTURE_PENDING}
    active = task.run_state[0] in ("PENDING", "RUNNING")
    if task.stop == "capacity" and active:
        # Crashed only by a sweep: its DescribeTasks gives every stop the same reason here, not a transient one.
        allowed |= {"AwaitingRetry", INFRASTRUCTURE_PENDING} | ({"Crashed"} if scenario.sweeps else set())
    if scenario.sweeps and active and (task.statuses[-1] == "STOPPED" or task.tags_gone):
        allowed.add("Crashed")  # also a task ECS no longer knows: the sweep crashes its run
    return allowed


def _lost_for_good(task: TaskPlan) -> bool:
    """A lost STOPPED that no sweep can repair: the run is not Prefect's known one, no longer active (the
    sweep leaves final, paused and scheduled runs alone), or ECS forgot the task (its run is then crashed
    as MISSING, with no event). Every other lost STOPPED must be repaired: its event, the run's state, the
    diagnosis, as if it had come (docs/reliability.md)."""
    repairable = task.run_id is not None and task.run_known and not task.tags_gone and task.run_state[0] in ACTIVE
    return task.stop_lost and not repairable


def awaiting_repair(world: World) -> bool:
    """A lost STOPPED the sweep must repair is not yet: its event missing, or its run (accepting what is
    proposed) still active. The run goes on for it a while (`run.py`), since faults delay a repair."""
    for task in world.scenario.tasks:
        if not task.stop_lost or _lost_for_good(task) or task.run_id is None:
            continue
        if sweep_event_id(task.arn, len(task.statuses)) not in world.prefect.events:
            return True
        run = world.prefect.runs.get(task.run_id)
        if task.run_answer == "ACCEPT" and run is not None and run.state.type in ACTIVE:
            return True
    for task in world.scenario.tasks:  # the sweep's actions asserted below: a forgotten task, a cancelled run
        run = world.prefect.runs.get(task.run_id) if task.run_id is not None else None
        if run is None or task.run_answer != "ACCEPT" or run.state.type not in ACTIVE:
            continue
        if task.tags_gone and task.statuses[-1] == "STOPPED":
            return True
        if run.state.type == "CANCELLING" and task.statuses[-1] != "STOPPED" and not world.ecs.tasks[task.arn].stops:
            return True
    return False


def _stored_for(world: World, ids: set[UUID]) -> list[UUID]:
    return [i for i in ids if i in world.prefect.events]


def on_delete(world: World, stored: Stored) -> list[Violation]:
    """A message goes only once its event is accepted and its effects answered."""
    delivery = world.delivery(stored.message_id)
    if delivery is None or delivery.event_id is None or delivery.task_arn is None or delivery.version is None:
        return []
    task = world.task(delivery.task_arn)
    if task.run_id is None:
        return []
    found: list[Violation] = []
    what = f"message {stored.message_id[:8]} (task {task.task_id[:8]} v{delivery.version})"
    if delivery.event_id in world.scenario.invalid_events and not world.scenario.sweeps:
        others = world.known_ids()[(task.arn, delivery.version)] - {delivery.event_id}
        if not others:  # else the same change under another id, kept first: a duplicate, its message carries it
            return [Violation("refused events stay in the queue", f"{what} deleted though Prefect refused its event")]
        return []
    if delivery.event_id not in world.prefect.events:
        others = world.known_ids()[(task.arn, delivery.version)] - {delivery.event_id}
        if not others:
            found.append(Violation("deleted only once answered", f"{what} deleted before Prefect had its event"))
        return found  # a duplicate of the same change under another id: that one's message carries the effects
    run = world.prefect.runs.get(task.run_id) if _effects_apply(task) else None
    if run is None:
        return found
    status = task.statuses[delivery.version - 1]
    names = [state.name for state, _ in run.history]
    placing = status in ("PROVISIONING", "PENDING") and task.run_state[0] == "PENDING"
    if placing and INFRASTRUCTURE_PENDING not in names and run.state.type == "PENDING":
        found.append(Violation("deleted only once answered", f"{what} deleted before InfrastructurePending"))
    if status == "STOPPED" and (task.failed or task.run_state[0] == "CANCELLING"):
        if run.state.name not in allowed_finals(task, world.scenario):
            found.append(Violation("deleted only once answered", f"{what} deleted with the run {run.state.name}"))
        if task.failed and not _diagnoses(world, task):
            found.append(Violation("deleted only once answered", f"{what} deleted before its diagnosis was written"))
    return found


def _diagnoses(world: World, task: TaskPlan) -> int:
    run = world.prefect.runs.get(task.run_id) if task.run_id else None
    if run is None:
        return 0
    return sum(log.message.startswith(f"ECS task {task.task_id} stopped:") for log in run.logs)


def _crash_log_posts(world: World, task: TaskPlan) -> int:
    run = world.prefect.runs.get(task.run_id) if task.run_id else None
    return sum(log.message.startswith("The last ") for log in run.logs) if run else 0


def at_end(world: World) -> list[Violation]:
    scenario = world.scenario
    found: list[Violation] = []
    found += _queue(world)
    found += _events(world, scenario)
    found += _runs(world, scenario)
    found += _sweep(world, scenario)
    found += _sweeps(world)
    found += _metrics(world)
    found += _outcomes(world)
    found += _rejections(world)
    found += _posts(world)
    found += _expiries(world)
    for replica in world.replicas:
        held = replica.observer.in_flight
        if replica.life.alive and held != 0:
            found.append(Violation("memory bounded", f"{replica.name} still holds {held} in flight"))
    return found


def _counted(stats: Stats) -> Counter[str]:
    """The replica's metrics that its ports' answers can check, keyed as `World`'s tallies are."""
    counts: Counter[str] = Counter()
    for key in ("received", "deleted", "describe_calls", "described_tasks", "run_logs", "deregistered", "reschedules"):
        counts[key] = getattr(stats, key)
    for api, n in stats.sqs_calls.items():
        counts[f"sqs_calls:{api}"] = n
    for answer, n in stats.state_proposals.items():
        if answer != "MISSING":  # no proposal made: the run was not found
            counts[f"state_proposals:{answer}"] = n
    counts["tasks_stopped"] = sum(stats.tasks_stopped.values())
    return counts


# What the ports saw that no metric counts as such (read by `_rejections`).
_NOT_METRICS = {"delete entries failed", "refused"}


def _metrics(world: World) -> list[Violation]:
    """What `/metrics` and the summaries say a replica did is what its ports saw it do. A killed replica's
    counts may lag: a call answered, then a retry of its failed part cut short by the kill (seed 330)."""
    found = []
    for replica in world.replicas:
        counted, seen = _counted(replica.stats), replica.tally
        for key in sorted((set(counted) | set(seen)) - _NOT_METRICS):
            if counted[key] > seen[key] or (counted[key] < seen[key] and replica.life.alive):
                found.append(
                    Violation("metrics true", f"{replica.name}: {key} {counted[key]}, its ports saw {seen[key]}")
                )
    return found


def _outcomes(world: World) -> list[Violation]:
    """Each message a replica deleted was counted once under its outcome (`/metrics`' `ignored`, `filtered`,
    and `forwarded` or `deduplicated`), as the world knows it: a message of no task's change ignored, a
    change of a task not Prefect's filtered, of a Prefect task forwarded or a duplicate. Counted before
    its delete: at least as many, and as many when no delete failed and the replica lived on."""
    found = []
    plan = world.scenario.faults
    deletes_fail = plan.sqs_error > 0 or plan.sqs_partial > 0 or plan.sqs_outage is not None
    for replica in world.replicas:
        if replica.queue is None:
            continue
        kinds: Counter[str] = Counter()
        for message_id in replica.queue.deleted:
            delivery = world.delivery(message_id)
            if delivery is None or delivery.task_arn is None:
                kinds["ignored"] += 1
            elif world.task(delivery.task_arn).run_id is None:
                kinds["filtered"] += 1
            else:
                kinds["forwarded or deduplicated"] += 1
        stats = replica.stats
        latencies = next(
            s.value for m in stats.forward_latency.collect() for s in m.samples if s.name.endswith("_count")
        )
        if latencies != stats.forwarded:  # observed as each forwarded message is counted, in the same step
            detail = f"{replica.name}: forward latency observed {latencies:.0f} times, forwarded {stats.forwarded}"
            found.append(Violation("outcomes counted", detail))
        counted = {
            "ignored": stats.ignored,
            "filtered": stats.filtered,
            "forwarded or deduplicated": stats.forwarded + stats.deduplicated,
        }
        exact = replica.life.alive and not deletes_fail
        for kind, n in counted.items():
            if n < kinds[kind] or (exact and n != kinds[kind]):
                detail = f"{replica.name}: {kind} {n}, messages of that kind it deleted {kinds[kind]}"
                found.append(Violation("outcomes counted", detail))
    return found


def _rejections(world: World) -> list[Violation]:
    """`rejected` counts the messages a replica left for the dead-letter queue, and `invalid_events` those of
    them whose event Prefect refused: each receive ends deleted or rejected, unless its replica died or was
    stopped, a delete failed, or a Prefect call raised (the message then waits for its timeout, uncounted)."""
    found = []
    plan = world.scenario.faults
    for replica in world.replicas:
        stats, tally = replica.stats, replica.tally
        where = f"{replica.name}: received {stats.received}, deleted {stats.deleted}, rejected {stats.rejected}"
        invalid = f"{where}, invalid events {stats.invalid_events} (Prefect refused {tally['refused']})"
        # A refused event's message is rejected each time it comes (its duplicates too); a sweep's is not.
        # Unless an effect of the same decision raised, or a deploy's drain cut its handler short.
        calm = replica.life.alive and replica.stopped is None and not plan.prefect_gives_up
        refused_one = tally["refused"] > 0 and not world.scenario.sweeps and calm
        if not 0 <= stats.invalid_events <= stats.rejected or (refused_one and not stats.invalid_events):
            found.append(Violation("rejections counted", invalid))
        exact = calm and not (tally["delete entries failed"] or plan.sqs_error or plan.sqs_outage is not None)
        ended = stats.deleted + stats.rejected
        if stats.rejected < 0 or ended > stats.received or (exact and ended != stats.received):
            found.append(Violation("rejections counted", where))
    return found


def _posts(world: World) -> list[Violation]:
    """Each POST to Prefect's events route within `batch_size` events and `batch_bytes` bytes (one event
    larger than that goes alone): Prefect Cloud refuses a request over 5 MiB."""
    found = []
    config = world.scenario.config
    for replica in world.replicas:
        for events, size in replica.prefect.posts if replica.prefect is not None else ():
            if events > config.batch_size or (events > 1 and size > config.batch_bytes):
                detail = (
                    f"{replica.name}: {events} events, {size} bytes (at most {config.batch_size}, {config.batch_bytes})"
                )
                found.append(Violation("events per request within the settings", detail))
    return found


def _expiries(world: World) -> list[Violation]:
    """Each write to the state table shared by replicas (the simulated DynamoDB; a scenario without it uses
    the single-process store, which keeps no expiry) expires (DynamoDB's TTL) as long after its change as
    `core.task_record.expires_after` says: 6 hours for a stopped task's, 7 days for a running one's. Sooner,
    a task's chain, tags or once-claims could be gone while its changes still come; later, the table grows.
    A link names its change (its version and time); a claim, its change's event (a sweep's STOPPED dates
    from when the sweep first saw it, within the hour); tags, some change of the task; `done`, its claim's."""
    found = []
    owners = {event_id: version for (_, version), ids in world.known_ids().items() for event_id in ids}
    claimed: dict[tuple[str, object], set[datetime]] = defaultdict(set)
    near = timedelta(hours=1)

    def due(task: TaskPlan, version: int) -> datetime:
        return expires_after(task.statuses[version - 1], task.occurred(version))

    writes = world.store.expiries
    tasks = {task.arn: task for task in world.scenario.tasks}
    for call, arn, what, expires in writes:
        task = tasks[arn]
        if isinstance(what, Link):
            ok = what.version is None or expires == expires_after(task.statuses[what.version - 1], what.occurred)
        elif call == "once":
            version = owners.get(what) if isinstance(what, UUID) else None
            ok = version is None or abs(expires - due(task, version)) <= near
            claimed[(arn, None)].add(expires)
        elif call == "save_tags":
            ok = any(abs(expires - due(task, v)) <= near for v in range(1, len(task.statuses) + 1))
        else:
            continue
        if not ok:
            found.append(Violation("state kept as long as documented", f"{call} of {arn} ({what}): expires {expires}"))
    for call, arn, what, expires in writes:
        if call == "done" and expires not in claimed[(arn, None)]:
            detail = f"done {what} of {arn}: expires {expires}, its claims {sorted(claimed[(arn, None)])}"
            found.append(Violation("state kept as long as documented", detail))
    return found


def _queue(world: World) -> list[Violation]:
    found = []
    for stored in world.queue.messages.values():
        delivery = world.delivery(stored.message_id)
        if stored.deleted_at is None and not stored.dead:
            found.append(Violation("nothing stuck", f"message {stored.message_id[:8]} never finished"))
        elif stored.dead and delivery is not None and not _may_dead_letter(world, delivery, stored):
            found.append(
                Violation("nothing good dead-lettered", f"message {stored.message_id[:8]}: {delivery.body[:80]}")
            )
    return found


def _may_dead_letter(world: World, delivery: Delivery, stored: Stored) -> bool:
    if delivery.event_id is None:
        return delivery.body.startswith("{not")  # broken on purpose
    if delivery.event_id in world.scenario.invalid_events:
        return True
    return world.queue.duplicates.get(stored.message_id, 0) > 0  # SQS's duplicates used up its receives


def _worn_out(world: World, key: tuple[str, int]) -> bool:
    """A message of this change went to the dead-letter queue on receives SQS's duplicates used up."""
    return any(
        d.message_id in world.queue.messages
        and world.queue.messages[d.message_id].dead
        and world.queue.duplicates.get(d.message_id, 0) > 0
        for d in world.scenario.deliveries
        if (d.task_arn, d.version) == key
    )


def _event_task(event: dict[str, Any]) -> str:
    return str(event["resource"]["ecs.taskArn"])


def _events(world: World, scenario: Scenario) -> list[Violation]:
    found = []
    ids = world.known_ids()
    of_id = {i: key for key, values in ids.items() for i in values}
    stored = world.prefect.events
    for event_id, event in stored.items():
        key = of_id.get(event_id)
        task = world.task(_event_task(event))
        if key is None or task.run_id is None:
            found.append(Violation("no event for a task not Prefect's", f"event {event_id} of {_event_task(event)}"))
    per_version = Counter(of_id[i] for i in stored if i in of_id)
    for key, values in ids.items():
        task = world.task(key[0])
        if task.run_id is None:
            continue
        count = per_version.get(key, 0)
        if count > 1 and not (scenario.restarts and not scenario.shared):  # memory lost with the process
            found.append(Violation("each change once", f"task {task.task_id[:8]} v{key[1]}: {count} events"))
        elif count == 0 and not values & scenario.invalid_events and not _worn_out(world, key):
            if key[1] == len(task.statuses) and _lost_for_good(task):
                continue
            found.append(Violation("every event Prefect should have", f"task {task.task_id[:8]} v{key[1]} missing"))
    for event_id, event in stored.items():
        key = of_id.get(event_id)
        if key is None:
            continue
        arn, version = key
        raw = event.get("follows")
        follows = UUID(raw) if raw else None
        before = ids.get((arn, version - 1), set())
        earlier = set().union(*(ids.get((arn, v), set()) for v in range(1, version)))
        if version == 1:
            ok = follows is None
        elif scenario.exact:
            kept = _stored_for(world, before)
            ok = follows in kept if kept else follows in before
        else:
            ok = follows is None or follows in earlier
        if not ok:
            task = world.task(arn)
            found.append(
                Violation(
                    "follows", f"task {task.task_id[:8]} v{version}: follows {follows}, previous {sorted(before)}"
                )
            )
    return found


def _sweep(world: World, scenario: Scenario) -> list[Violation]:
    """Never an action on a healthy run or another account's task; never more reschedules than allowed."""
    found = []
    for task in scenario.tasks:
        ecs_task = world.ecs.tasks[task.arn]
        run = world.prefect.runs.get(task.run_id) if task.run_id else None
        cancelling = run is not None and any(s.type in ("CANCELLING", "CANCELLED") for s, _ in run.history)
        if ecs_task.stops and not cancelling:
            found.append(Violation("no action on a healthy run", f"task {task.task_id[:8]} stopped: {ecs_task.stops}"))
        still_cancelling = run is not None and run.state.type == "CANCELLING" and task.run_answer == "ACCEPT"
        if scenario.sweeps and task.statuses[-1] != "STOPPED" and still_cancelling and not ecs_task.stops:
            found.append(Violation("a cancelled run's task stopped", f"task {task.task_id[:8]} still runs"))
        if run is not None:
            marks = sum(message.startswith(RESCHEDULE_MARK) for _, message in run.history)
            if marks > scenario.config.start_retries:
                found.append(Violation("reschedules within the limit", f"task {task.task_id[:8]}: {marks}"))
    if scenario.foreign_run is not None:
        run = world.prefect.runs[scenario.foreign_run]
        if run.proposals or run.logs or len(run.history) != 1:
            found.append(Violation("no action on another account's task", f"{run.proposals} {run.logs}"))
    return found


# --- Each sweep's account of itself (the sweep helper's section) ---


def _sweeps(world: World) -> list[Violation]:
    """Each sweep that returned gave every run it read one outcome, counted each once in `reconciled`, and
    counted itself in `sweeps`; a sweep whose lease lapsed while reading did nothing and counted nothing."""
    found = []
    for replica in world.replicas:
        for n, record in enumerate(replica.sweeps):
            where = f"{replica.name} sweep {n}"
            counts = dict(Counter(record.outcomes.values()))
            if record.reconciled != counts:
                found.append(Violation("sweep outcomes counted", f"{where}: reconciled {record.reconciled}, {counts}"))
            if record.outcomes and len(record.outcomes) != record.runs_read:
                found.append(
                    Violation("a sweep judges every run read", f"{where}: {len(record.outcomes)} of {record.runs_read}")
                )
            # Nothing read: acted or lapsed, one cannot tell. Runs read: it acted exactly when it gave outcomes.
            if record.sweeps not in ((0, 1) if record.runs_read == 0 else (1,) if record.outcomes else (0,)):
                found.append(Violation("sweeps counted", f"{where}: sweeps +{record.sweeps}, {record.runs_read} read"))
    return found


def _runs(world: World, scenario: Scenario) -> list[Violation]:
    found = []
    killed = bool(scenario.faults.kills) or (bool(scenario.faults.stops) and not scenario.shared)  # memory lost
    for task in scenario.tasks:
        if task.run_id is None or not task.run_known:
            continue
        run = world.prefect.runs[task.run_id]
        names = [state.name for state, _ in run.history]
        what = f"run of task {task.task_id[:8]} ({task.run_state[1]}, {task.stop})"
        expected = expected_history(task) if task.run_answer == "ACCEPT" else [task.run_state[1]]
        finals = allowed_finals(task, scenario) if task.run_answer == "ACCEPT" else {expected[-1]}
        if names[-1] not in finals:
            found.append(Violation("flow run ends true to its task", f"{what}: {names}, expected {sorted(finals)}"))
        elif scenario.exact and scenario.replicas == 1 and names[-1] == expected[-1] and names != expected:
            found.append(Violation("proposals in version order", f"{what}: {names}, expected {expected}"))
        forgotten = scenario.sweeps and task.tags_gone and task.statuses[-1] == "STOPPED"
        if forgotten and task.run_answer == "ACCEPT" and task.run_state[0] in ACTIVE and run.state.type in ACTIVE:
            # ECS forgot the task (DescribeTasks: MISSING): a sweep crashes the run once that held for the grace
            # (or its event rescheduled it: AwaitingRetry is Scheduled, which a sweep leaves alone).
            found.append(Violation("a forgotten task's run ends", f"{what}: {names}"))
        if any(state.type in FINAL for state, _ in run.history[:-1]):
            found.append(Violation("proposals in version order", f"{what}: left a final state: {names}"))
        diagnoses, wanted = _diagnoses(world, task), int(task.failed and task.statuses[-1] == "STOPPED")
        if task.stop == "capacity" or _lost_for_good(task):
            wanted = min(wanted, diagnoses)  # rescheduled: the diagnosis goes with the reschedule, at most once
        if task.stop_lost and world.faults.exercised["prefect: logs raised"]:
            # A sweep's diagnosis log that failed once its run was crashed is not tried again: a final run
            # is not swept again (docs/reliability.md, "What is not promised"); the state says it.
            wanted = min(wanted, diagnoses)
        if diagnoses != wanted and not (killed and wanted and diagnoses >= 1):
            found.append(Violation("diagnosis once per task", f"{what}: {diagnoses} diagnosis logs"))
        posts = _crash_log_posts(world, task)
        expected_posts = int(task.failed and task.logs and task.run_state[0] in ("PENDING", "SCHEDULED"))
        if (
            expected_posts
            and task.statuses[-1] == "STOPPED"
            and not posts
            and task.run_answer == "ACCEPT"
            and task.stop != "capacity"
            and not _lost_for_good(task)
            and task.run_id not in world.prefect.failed_crash_logs  # their post raised: not again once Crashed
            and not (task.tags_gone and scenario.sweeps)  # crashed as MISSING by a sweep before its STOPPED came
        ):
            found.append(Violation("crash logs posted", f"{what}: none, though its definition logs to CloudWatch"))
        # Best effort: at most once, and only when called for; without the state table a replica's claims die
        # with it, so each kill may post them once more (docs/reliability.md, "What is not promised").
        most = 1 + (0 if scenario.shared else scenario.restarts)
        if posts > most or (posts and not expected_posts and task.stop != "capacity"):
            found.append(Violation("crash logs once per task", f"{what}: {posts} posts, expected {expected_posts}"))
    deregistered = Counter(world.ecs.deregistered)
    for task in scenario.tasks:
        stopped = task.statuses[-1] == "STOPPED"
        wanted = int(task.run_id is not None and task.deregister and not task.tags_gone and stopped)
        got = deregistered.get(task.definition_arn, 0)
        # Best effort: a task ECS showed MISSING too long counts as gone, its tags unknown, and is kept.
        unsure = scenario.faults.ecs_missing_for > 0 or scenario.faults.ecs_denied > 0 or task.stop_lost
        if (got > 1 and not killed) or (got and not wanted) or (got < wanted and not unsure):
            found.append(Violation("deregistered once per task", f"task {task.task_id[:8]}: {got} times"))
    return found

"""The per-message decision, as the pure core makes it."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from types import MappingProxyType

from ecs_observer import TaskStateChange, decode
from ecs_observer.app.demo.samples import state_change
from ecs_observer.core.chain import Link
from ecs_observer.core.decision import (
    Ack,
    Forward,
    Release,
    batch_order,
    duplicate,
    resend_as,
    settle,
    triage,
    unowned,
)
from ecs_observer.core.ecs_event import Decoded, Ignored, Rejected
from ecs_observer.core.task_record import GONE, NO_TAGS, TaskTags
from ecs_observer.core.task_view import sweep_event_id
from ecs_observer.core.translate import build_event

ARN = "arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef"


def change() -> TaskStateChange:
    decoded = decode(json.dumps(state_change(ARN, "RUNNING", 4, datetime(2026, 3, 1, tzinfo=UTC))))
    assert isinstance(decoded, TaskStateChange)
    return decoded


def test_triage_acks_what_is_ignored_releases_what_is_broken_and_passes_changes_on() -> None:
    assert triage(Ignored("aws.ec2 / x")) == Ack("ignored", "aws.ec2 / x")
    assert triage(Rejected("body is not JSON")) == Release("body is not JSON")
    one = change()
    assert triage(one) is one


def test_a_task_that_is_not_prefects_is_acknowledged_with_why() -> None:
    assert unowned(change(), NO_TAGS) == Ack("filtered", f"task {ARN} is not Prefect's")
    assert unowned(change(), GONE) == Ack("filtered", f"task {ARN} is not Prefect's (ECS no longer knows it)")


def test_prefects_answer_settles_a_forward() -> None:
    run = uuid.uuid4()
    tags = TaskTags(MappingProxyType({"prefect.io/flow-run-id": str(run)}))
    one = change()
    event = build_event(one, tags.tags, run, None)
    forward = Forward(one, event)
    assert settle(forward, None) == Ack("forwarded")
    refused = settle(forward, "HTTP 422: no resource")
    assert refused == Release(f"the Prefect API refused event {event.id}: HTTP 422: no resource", True)
    # A sweep's observation of a change forwarded before: its effects again, its event not.
    again = settle(Forward(one, None), None)
    assert isinstance(again, Ack)
    assert again.outcome == "deduplicated"


def test_a_duplicate_is_acknowledged_naming_the_event_that_has_its_version() -> None:
    kept = uuid.UUID("3317b2af-7005-947d-b652-f55e762e571a")
    assert duplicate(change(), kept) == Ack("deduplicated", f"version 4 of task {ARN} is event {kept} already")


def test_the_twin_of_a_sweeps_repair_is_sent_again_under_the_sweeps_id_and_no_other_twin_is() -> None:
    """A sweep's event has no message to come back with: its twin from the queue carries on under its id (a
    redelivery of it, Prefect keeps it once), so a sweep killed or refused after recording loses nothing."""
    one = change()
    repaired = Link(sweep_event_id(ARN, 4), 4, one.occurred, uuid.uuid4())
    assert resend_as(one, repaired) == dataclasses.replace(one, event_id=repaired.event_id)
    assert resend_as(one, dataclasses.replace(repaired, event_id=uuid.uuid4())) is None  # a message carries it
    assert resend_as(one, dataclasses.replace(repaired, event_id=sweep_event_id(ARN, 3))) is None  # not this one
    assert resend_as(one, dataclasses.replace(repaired, pending=True)) == resend_as(one, repaired)  # waits for it
    assert resend_as(dataclasses.replace(one, source="sweep"), repaired) is None  # the sweep itself


def test_ecs_failing_to_describe_leaves_the_message_with_ecs_s_reason() -> None:
    failing = TaskTags(MappingProxyType({}), described=False, failure="ACCESS_DENIED")
    assert unowned(change(), failing) == Release(f"ECS cannot describe task {ARN}: ACCESS_DENIED")


def test_a_receive_batch_goes_task_by_task_in_version_order() -> None:
    one = change()
    other = dataclasses.replace(one, task_arn=ARN + "0", version=None)
    rejected = Rejected("broken")
    batch: list[Decoded] = [one, other, rejected]
    assert sorted(batch, key=batch_order) == [rejected, one, other]
    assert batch_order(one) == (ARN, 4)
    assert batch_order(other) == (ARN + "0", 0)
    assert batch_order(rejected) == ("", 0)

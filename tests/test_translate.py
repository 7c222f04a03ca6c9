"""The pure translation: every status, every related resource, untrusted tags."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from ecs_observer import NotPrefects, PrefectEvent, TaskStateChange, decode, translate
from ecs_observer.app.demo.samples import state_change
from ecs_observer.core.diagnosis import diagnose
from ecs_observer.core.translate import build_event

ARN = "arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef"
CLUSTER = "arn:aws:ecs:us-east-1:123456789012:cluster/prefect"
TASK_DEF = "arn:aws:ecs:us-east-1:123456789012:task-definition/flow:4"
WHEN = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
RUN = "7c2f4b1e-58c8-4d1b-9a4e-0f3c2d1b6a59"
DEPLOYMENT = "11111111-2222-4333-8444-555555555555"
FLOW = "21111111-2222-4333-8444-555555555555"
POOL = "31111111-2222-4333-8444-555555555555"
EVENT_ID = UUID("3317b2af-7005-947d-b652-f55e762e571a")
STATUSES = [
    "PROVISIONING",
    "PENDING",
    "ACTIVATING",
    "RUNNING",
    "DEACTIVATING",
    "STOPPING",
    "DEPROVISIONING",
    "STOPPED",
    "DELETED",
]
ALL_TAGS = {
    "prefect.io/flow-run-id": RUN,
    "prefect.io/flow-run-name": "crimson-otter",
    "prefect.io/deployment-id": DEPLOYMENT,
    "prefect.io/deployment-name": "etl/nightly",
    "prefect.io/flow-id": FLOW,
    "prefect.io/flow-name": "etl",
    "prefect.io/work-pool-id": POOL,
    "prefect.io/work-pool-name": "ecs-pool",
    "prefect.io/worker-name": "ECSWorker 5f1b",
}
RESOURCE_ID = re.compile(
    r"^prefect\.(ecs\.task\.[A-Za-z0-9-]+|(flow-run|deployment|flow|work-pool)\.[0-9a-f-]{36}|worker\.ecs\.[a-z0-9-]+)$"
)


def change(status: str = "RUNNING", **fields: Any) -> TaskStateChange:
    body = state_change(
        ARN, status, 4, WHEN, event_id=EVENT_ID, cluster_arn=CLUSTER, task_definition_arn=TASK_DEF, **fields
    )
    decoded = decode(json.dumps(body))
    assert isinstance(decoded, TaskStateChange)
    return decoded


def event_of(tags: dict[str, str], follows: UUID | None = None, **fields: Any) -> PrefectEvent:
    result = translate(change(**fields), tags, follows)
    assert isinstance(result, PrefectEvent), result
    return result


def related(event: PrefectEvent) -> dict[str, dict[str, str]]:
    return {r["prefect.resource.role"]: dict(r) for r in event.related}


@pytest.mark.parametrize("status", [*STATUSES, "SOMETHING_NEW"])
def test_event_name_for_every_status(status: str) -> None:
    assert event_of(ALL_TAGS, status=status).event == f"prefect.ecs.task.{status.lower()}"


def test_full_event_as_documented() -> None:
    follows = UUID("9b6d7f0e-1c2d-4e3f-8a9b-0c1d2e3f4a5b")
    assert event_of(ALL_TAGS, follows).to_json() == {
        "id": str(EVENT_ID),
        "occurred": "2026-03-01T12:00:00.123+00:00",
        "event": "prefect.ecs.task.running",
        "resource": {
            "prefect.resource.id": "prefect.ecs.task.0123456789abcdef0123456789abcdef",
            "ecs.taskArn": ARN,
            "ecs.clusterArn": CLUSTER,
            "ecs.taskDefinitionArn": TASK_DEF,
        },
        "related": [
            {
                "prefect.resource.id": f"prefect.flow-run.{RUN}",
                "prefect.resource.role": "flow-run",
                "prefect.resource.name": "crimson-otter",
            },
            {
                "prefect.resource.id": f"prefect.deployment.{DEPLOYMENT}",
                "prefect.resource.role": "deployment",
                "prefect.resource.name": "etl/nightly",
            },
            {
                "prefect.resource.id": f"prefect.flow.{FLOW}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": "etl",
            },
            {
                "prefect.resource.id": f"prefect.work-pool.{POOL}",
                "prefect.resource.role": "work-pool",
                "prefect.resource.name": "ecs-pool",
            },
            {
                "prefect.resource.id": "prefect.worker.ecs.ecsworker-5f1b",
                "prefect.resource.role": "worker",
                "prefect.resource.name": "ECSWorker 5f1b",
                "prefect.worker-type": "ecs",
            },
        ],
        "payload": {},
        "follows": str(follows),
    }


def test_only_flow_run_tag_gives_only_flow_run() -> None:
    event = event_of({"prefect.io/flow-run-id": RUN})
    assert event.related == ({"prefect.resource.id": f"prefect.flow-run.{RUN}", "prefect.resource.role": "flow-run"},)
    assert event.warnings == ()
    assert "follows" not in event.to_json()


@pytest.mark.parametrize("missing", ["deployment", "flow", "work-pool"])
def test_each_optional_related_resource_needs_its_id_tag(missing: str) -> None:
    tags = {k: v for k, v in ALL_TAGS.items() if k != f"prefect.io/{missing}-id"}
    roles = related(event_of(tags))
    assert missing not in roles
    assert set(roles) == {"flow-run", "deployment", "flow", "work-pool", "worker"} - {missing}


@pytest.mark.parametrize("name_tag", [k for k in ALL_TAGS if k.endswith("-name") and "worker" not in k])
def test_missing_name_tag_leaves_resource_unnamed(name_tag: str) -> None:
    tags = {k: v for k, v in ALL_TAGS.items() if k != name_tag}
    role = name_tag.removeprefix("prefect.io/").removesuffix("-name")
    entry = related(event_of(tags))[role]
    assert "prefect.resource.name" not in entry
    assert entry["prefect.resource.id"].startswith(f"prefect.{role}.")


def test_id_tag_that_is_not_a_uuid_leaves_resource_out_with_a_warning() -> None:
    tags = {**ALL_TAGS, "prefect.io/deployment-id": "my-deployment", "prefect.io/flow-id": ""}
    event = event_of(tags)
    assert set(related(event)) == {"flow-run", "work-pool", "worker"}
    assert len(event.warnings) == 2
    assert any("prefect.io/deployment-id" in w for w in event.warnings)


def test_uppercase_uuid_tags_are_normalised() -> None:
    event = event_of({"prefect.io/flow-run-id": RUN.upper()})
    assert event.related[0]["prefect.resource.id"] == f"prefect.flow-run.{RUN}"


def test_not_prefects_without_flow_run_id() -> None:
    assert isinstance(translate(change(), {}, None), NotPrefects)
    assert isinstance(translate(change(), {"team": "data"}, None), NotPrefects)
    assert isinstance(translate(change(), {"prefect.io/flow-run-id": "not-a-uuid"}, None), NotPrefects)


def test_flow_run_id_from_environment_when_tags_are_gone() -> None:
    event = event_of({}, flow_run_id=RUN)
    assert related(event)["flow-run"] == {
        "prefect.resource.id": f"prefect.flow-run.{RUN}",
        "prefect.resource.role": "flow-run",
    }


def test_tag_wins_over_environment() -> None:
    other = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    assert (
        related(event_of({"prefect.io/flow-run-id": RUN}, flow_run_id=other))["flow-run"]["prefect.resource.id"]
        == f"prefect.flow-run.{RUN}"
    )


def test_follows_is_never_the_event_itself() -> None:
    assert event_of(ALL_TAGS, follows=EVENT_ID).follows is None


def test_resource_without_optional_arns() -> None:
    body = state_change(ARN, "RUNNING", 4, WHEN, event_id=EVENT_ID)
    decoded = decode(json.dumps(body))
    assert isinstance(decoded, TaskStateChange)
    event = translate(decoded, ALL_TAGS, None)
    assert isinstance(event, PrefectEvent)
    assert dict(event.resource) == {
        "prefect.resource.id": "prefect.ecs.task.0123456789abcdef0123456789abcdef",
        "ecs.taskArn": ARN,
    }


@pytest.mark.parametrize(
    ("worker", "slug"),
    [
        ("ECSWorker 5f1b", "ecsworker-5f1b"),
        ("my_worker.prod", "my-worker-prod"),
        ("Wörker   ünïcode", "worker-unicode"),
        ("  -- edge --  ", "edge"),
        ("a" * 2000, "a" * 1024),
    ],
)
def test_worker_slug(worker: str, slug: str) -> None:
    entry = related(event_of({"prefect.io/flow-run-id": RUN, "prefect.io/worker-name": worker}))["worker"]
    assert entry["prefect.resource.id"] == f"prefect.worker.ecs.{slug}"
    assert entry["prefect.worker-type"] == "ecs"


def test_worker_name_without_letters_is_left_out_with_warning() -> None:
    event = event_of({"prefect.io/flow-run-id": RUN, "prefect.io/worker-name": "!!!"})
    assert "worker" not in related(event)
    assert len(event.warnings) == 1


@pytest.mark.parametrize(
    "hostile",
    ["evil\nname\x00\x1b[31m", "x" * 256, "prefect.flow-run.\u202eabc", "../../etc", "\u0000\u0001"],
)
def test_untrusted_tag_values_stay_inside_documented_patterns(hostile: str) -> None:
    tags = {key: hostile for key in ALL_TAGS if key != "prefect.io/flow-run-id"}
    tags["prefect.io/flow-run-id"] = RUN
    event = event_of(tags)
    for entry in [event.resource, *event.related]:
        assert RESOURCE_ID.match(entry["prefect.resource.id"]), entry
        name = entry.get("prefect.resource.name", "")
        assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in name)
        assert len(name) <= 1024


def test_translation_is_deterministic() -> None:
    assert event_of(ALL_TAGS).to_json() == event_of(ALL_TAGS).to_json()


def stopped_event(**stopped: Any) -> PrefectEvent:
    decoded = decode(
        json.dumps(
            state_change(
                ARN,
                "STOPPED",
                8,
                WHEN,
                event_id=EVENT_ID,
                cluster_arn=CLUSTER,
                task_definition_arn=TASK_DEF,
                exit_code=137,
                stopped=stopped,
            )
        )
    )
    assert isinstance(decoded, TaskStateChange)
    assert decoded.stop is not None
    return build_event(decoded, ALL_TAGS, UUID(RUN), None, diagnose(decoded.stop, "prefect"))


def test_a_stopped_tasks_resource_says_how_it_stopped() -> None:
    reason = "OutOfMemoryError: Container killed due to memory usage\x00" + "x" * 300
    event = stopped_event(stopCode=" EssentialContainerExited ", stoppedReason=reason)
    labels = {key: value for key, value in event.resource.items() if key not in ("prefect.resource.id",)}
    assert labels == {
        "ecs.taskArn": ARN,
        "ecs.clusterArn": CLUSTER,
        "ecs.taskDefinitionArn": TASK_DEF,
        "ecs.diagnosis": "out-of-memory",
        "ecs.stopCode": "EssentialContainerExited",
        # Control characters out, cut at 255 characters.
        "ecs.stoppedReason": ("OutOfMemoryError: Container killed due to memory usage" + "x" * 300)[:255],
        "ecs.exitCode": "137",
    }


def test_a_stop_without_code_reason_or_exit_code_says_only_its_diagnosis() -> None:
    event = stopped_event(stopCode="", stoppedReason=None, containers=[{"name": "prefect"}])
    assert {key for key in event.resource if key.startswith("ecs.") and key not in ("ecs.taskArn",)} == {
        "ecs.clusterArn",
        "ecs.taskDefinitionArn",
        "ecs.diagnosis",
    }


def test_only_a_stopped_change_carries_stop_labels() -> None:
    running = change()
    assert running.stop is None
    decoded_stop = stopped_event().resource
    event = build_event(running, ALL_TAGS, UUID(RUN), None, None)
    assert "ecs.diagnosis" not in event.resource
    assert decoded_stop["ecs.diagnosis"] == "out-of-memory"


def test_reasons_and_warnings_are_worded_for_people() -> None:
    refused = translate(change(), {}, None)
    assert isinstance(refused, NotPrefects)
    assert refused.reason == "no prefect.io/flow-run-id tag holding a UUID"
    event = event_of({"prefect.io/flow-run-id": RUN, "prefect.io/worker-name": "!!!"})
    assert event.warnings == (
        "tag prefect.io/worker-name has no letters or digits; worker left out of related resources",
    )


@pytest.mark.parametrize(
    ("raw", "name"),
    [("plain name", "plain name"), ("  padded  ", "padded"), ("a\x00b\x1bc\u200bd", "abcd"), ("\ttab\n", "tab")],
)
def test_names_are_cleaned_to_what_a_person_can_read(raw: str, name: str) -> None:
    event = event_of({"prefect.io/flow-run-id": RUN, "prefect.io/flow-run-name": raw})
    assert related(event)["flow-run"]["prefect.resource.name"] == name

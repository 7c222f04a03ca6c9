"""Decoding EventBridge envelopes: accept what AWS sends, reject what is truly broken."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from ecs_observer import Ignored, Rejected, TaskStateChange, decode
from ecs_observer.app.demo.samples import state_change

ARN = "arn:aws:ecs:us-west-2:111122223333:task/FargateCluster/c13b4cb40f1f4fe4a2971f76ae5a47ad"
WHEN = datetime(2020, 1, 23, 17, 57, 58, 918000, tzinfo=UTC)


def event(**detail: Any) -> dict[str, Any]:
    body = state_change(
        ARN, "RUNNING", 3, WHEN, cluster_arn="arn:aws:ecs:us-west-2:111122223333:cluster/FargateCluster"
    )
    body["detail"].update(detail)
    return body


def decoded(body: dict[str, Any] | str) -> TaskStateChange:
    result = decode(body if isinstance(body, str) else json.dumps(body))
    assert isinstance(result, TaskStateChange), result
    return result


def rejected(body: object) -> str:
    result = decode(body if isinstance(body, str) else json.dumps(body))
    assert isinstance(result, Rejected), result
    return result.reason


def test_aws_documentation_example_decodes() -> None:
    # The example from AWS's "Amazon ECS task state change events" page, trimmed of unread fields.
    body = {
        "version": "0",
        "id": "3317b2af-7005-947d-b652-f55e762e571a",  # UUID-shaped, version nibble 9: not RFC 4122
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": "111122223333",
        "time": "2020-01-23T17:57:58Z",
        "region": "us-west-2",
        "resources": [ARN],
        "detail": {
            "clusterArn": "arn:aws:ecs:us-west-2:111122223333:cluster/FargateCluster",
            "cpu": "256",
            "createdAt": "2020-01-23T17:57:34.402Z",
            "desiredStatus": "RUNNING",
            "lastStatus": "RUNNING",
            "launchType": "FARGATE",
            "overrides": {"containerOverrides": [{"name": "FargateApp"}]},
            "taskArn": ARN,
            "taskDefinitionArn": "arn:aws:ecs:us-west-2:111122223333:task-definition/sample-fargate:1",
            "updatedAt": "2020-01-23T17:57:58.918Z",
            "version": 3,
        },
    }
    change = decoded(body)
    assert change.event_id == UUID("3317b2af-7005-947d-b652-f55e762e571a")
    assert change.task_id == "c13b4cb40f1f4fe4a2971f76ae5a47ad"
    assert change.region == "us-west-2"
    assert change.status == "running"
    assert change.version == 3
    assert change.occurred == WHEN
    assert change.task_definition_arn == "arn:aws:ecs:us-west-2:111122223333:task-definition/sample-fargate:1"


def test_version_as_string_is_a_number() -> None:
    assert decoded(event(version="7")).version == 7


@pytest.mark.parametrize(
    ("updated_at", "expected_us"),
    [
        ("2020-01-23T17:57:58Z", 0),
        ("2020-01-23T17:57:58.9Z", 900_000),
        ("2020-01-23T17:57:58.91Z", 910_000),
        ("2020-01-23T17:57:58.918Z", 918_000),
        ("2020-01-23T17:57:58.918765Z", 918_000),
        ("2020-01-23T18:57:58.918+01:00", 918_000),
    ],
)
def test_timestamps_with_any_fraction_become_utc_milliseconds(updated_at: str, expected_us: int) -> None:
    occurred = decoded(event(updatedAt=updated_at)).occurred
    assert occurred == datetime(2020, 1, 23, 17, 57, 58, expected_us, tzinfo=UTC)


def test_occurred_falls_back_to_envelope_time() -> None:
    body = event()
    del body["detail"]["updatedAt"]
    body["time"] = "2021-05-06T07:08:09Z"
    assert decoded(body).occurred == datetime(2021, 5, 6, 7, 8, 9, tzinfo=UTC)


def test_optional_fields_may_be_missing() -> None:
    body = event()
    for key in ("clusterArn", "taskDefinitionArn", "version", "overrides", "containers", "createdAt"):
        body["detail"].pop(key, None)
    change = decoded(body)
    assert change.cluster == "FargateCluster"  # from the task ARN
    assert (change.cluster_arn, change.task_definition_arn, change.version) == (None, None, None)


def test_old_style_task_arn_has_no_cluster() -> None:
    change = decoded(
        event(taskArn="arn:aws:ecs:us-east-1:123456789012:task/1dc5c17a-422b-4dc4-b493-371970c6c4d6", clusterArn=None)
    )
    assert change.task_id == "1dc5c17a-422b-4dc4-b493-371970c6c4d6"
    assert change.cluster is None


@pytest.mark.parametrize(
    "account", ["123456789012", "111122223333", "000000000000", "ACCOUNT", "123456789", "xxxx-redacted"]
)
def test_any_account_segment_without_slash_or_colon(account: str) -> None:
    change = decoded(event(taskArn=f"arn:aws:ecs:us-west-2:{account}:task/FargateCluster/c13b4cb40f1f4fe4"))
    assert change.task_id == "c13b4cb40f1f4fe4"
    assert change.region == "us-west-2"


@pytest.mark.parametrize("account", ["", "12/34", "a b", "1:2"])
def test_a_malformed_account_segment_is_still_rejected(account: str) -> None:
    assert rejected(event(taskArn=f"arn:aws:ecs:us-west-2:{account}:task/FargateCluster/c13b")).startswith(
        "detail.taskArn: not an ECS task ARN"
    )


def test_unknown_fields_are_ignored() -> None:
    body = event(brandNewField={"x": [1, 2]})
    body["brandNewTopLevel"] = True
    assert decoded(body).status == "running"


def test_flow_run_id_from_worker_environment_override() -> None:
    run_id = "0b6ef2a2-3f4e-4a9b-9d6a-1c6f0f4d2e11"
    overrides = {
        "containerOverrides": [
            {"name": "x"},
            {"environment": [{"name": "A", "value": "b"}, {"name": "PREFECT__FLOW_RUN_ID", "value": run_id}]},
        ]
    }
    assert decoded(event(overrides=overrides)).flow_run_id_override == UUID(run_id)
    not_uuid = {"containerOverrides": [{"environment": [{"name": "PREFECT__FLOW_RUN_ID", "value": "nope"}]}]}
    assert decoded(event(overrides=not_uuid)).flow_run_id_override is None


@pytest.mark.parametrize(
    ("source", "detail_type"),
    [
        ("aws.ec2", "EC2 Instance State-change Notification"),
        ("aws.ecs", "ECS Container Instance State Change"),
        ("aws.ecs", "ECS Deployment State Change"),
    ],
)
def test_other_events_are_ignored(source: str, detail_type: str) -> None:
    body = {"id": "3317b2af-7005-947d-b652-f55e762e571a", "source": source, "detail-type": detail_type, "detail": {}}
    assert isinstance(decode(json.dumps(body)), Ignored)


def test_broken_messages_are_rejected_with_a_reason() -> None:
    assert "not JSON" in rejected("{not json")
    assert "not JSON" in rejected('{"id": "3317b2af-7005-947d-b652-f55e762e571a", "sour')  # truncated
    assert "not JSON" in rejected("")
    assert "not an object" in rejected("[1, 2]")
    assert "not an object" in rejected('"a string"')
    assert "nested too deeply" in rejected("[" * 100_000 + "]" * 100_000)
    assert "larger than any EventBridge event" in rejected(" " * (1024 * 1024))
    assert "source" in rejected({"detail-type": "ECS Task State Change"})
    assert "source" in rejected({"source": 7, "detail-type": "ECS Task State Change"})


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"id": "not-a-uuid"}, "id"),
        ({"id": 12}, "id"),
        ({"id": None}, "id"),
        ({"time": "yesterday"}, "time"),
        ({"detail": "x"}, "detail"),
        ({"detail": None}, "detail"),
    ],
)
def test_broken_envelope_fields_are_rejected(change: dict[str, Any], where: str) -> None:
    body = event()
    body.update(change)
    assert rejected(body).startswith(where)


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("taskArn", None, "detail.taskArn"),
        ("taskArn", 5, "detail.taskArn"),
        ("taskArn", "arn:aws:ecs:us-east-1:123456789012:cluster/default", "detail.taskArn"),
        ("taskArn", "arn:aws:ecs:us-east-1:123456789012:task/a/b/c", "detail.taskArn"),
        ("taskArn", "arn:aws:ecs:us-east-1:123456789012:task/c/../../x", "detail.taskArn"),
        ("lastStatus", None, "detail.lastStatus"),
        ("lastStatus", "", "detail.lastStatus"),
        ("lastStatus", "RUN NING", "detail.lastStatus"),
        ("lastStatus", ["RUNNING"], "detail.lastStatus"),
        ("version", "three", "detail.version"),
        ("version", -1, "detail.version"),
        ("updatedAt", "soon", "detail.updatedAt"),
        ("clusterArn", 3, "detail.clusterArn"),
        ("overrides", "x", "detail.overrides"),
        ("overrides", {"containerOverrides": {"environment": []}}, "detail.overrides"),
    ],
)
def test_broken_detail_fields_are_rejected(field: str, value: object, where: str) -> None:
    body = event()
    if value is None:
        del body["detail"][field]
    else:
        body["detail"][field] = value
    assert rejected(body).startswith(where)


def test_new_statuses_are_accepted() -> None:
    assert decoded(event(lastStatus="HIBERNATING")).status == "hibernating"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"id": "not-a-uuid"}, "id: value error, not a uuid"),
        # The first problem, and how many more there are.
        ({"id": 5, "time": "x", "detail": {"lastStatus": 3}}, "id: value error, not a uuid (+2 more)"),
        ({"id": 5, "time": "x"}, "id: value error, not a uuid (+1 more)"),
        ({"time": "yesterday"}, "time: input should be a valid datetime or date, input is too short"),
        ({"source": 5}, "not an EventBridge event: 'source' and 'detail-type' must be strings"),
    ],
)
def test_rejections_name_the_first_problem_in_words(change: dict[str, Any], reason: str) -> None:
    body = event()
    body.update({key: value for key, value in change.items() if key != "detail"})
    body["detail"].update(change.get("detail", {}))
    assert rejected(body) == reason


def test_rejections_of_the_body_itself_say_what_it_is() -> None:
    assert rejected("[1, 2]") == "body is JSON list, not an object"
    assert rejected("[" * 100_000 + "]" * 100_000) == "body is nested too deeply"
    ignored = decode(json.dumps({**event(), "source": "aws.ec2", "detail-type": "EC2 Spot Instance Interruption"}))
    assert ignored == Ignored("aws.ec2 / EC2 Spot Instance Interruption")


def test_bytes_are_utf8_or_nothing() -> None:
    body = json.dumps(event(), ensure_ascii=False)
    assert isinstance(decode(body.encode("utf-8")), TaskStateChange)
    # json.loads would guess these from their first bytes and accept them; SQS carries UTF-8 only.
    for encoding in ("utf-16", "utf-32"):
        assert decode(body.encode(encoding)) == Rejected("body is not valid UTF-8"), encoding
    # Without a byte-order mark, ASCII in UTF-16 is valid UTF-8 (with NULs), but not JSON.
    refused = decode(body.encode("utf-16-le"))
    assert isinstance(refused, Rejected)
    assert refused.reason.startswith("body is not JSON: ")


def test_the_size_limit_is_sqs_s_own() -> None:
    body = json.dumps(event())
    limit = 256 * 1024
    exact = body[:-1] + " " * (limit - len(body)) + "}"
    assert len(exact) == limit
    assert isinstance(decode(exact), TaskStateChange)
    assert decode(exact + " ") == Rejected(f"body of {limit + 1} bytes is larger than any EventBridge event")


def test_long_bad_values_are_cut_in_the_reason() -> None:
    arn = "x" * 300
    assert rejected(event(taskArn=arn)) == f"detail.taskArn: not an ECS task ARN: {arn[:200]!r}"
    status = "RUN NING" * 20
    assert rejected(event(lastStatus=status)) == f"detail.lastStatus: not a status: {status[:64]!r}"


def test_emitted_is_the_envelope_time_in_utc_milliseconds() -> None:
    body = event(updatedAt="2020-01-23T17:57:58.918Z")
    body["time"] = "2020-01-23T18:57:59.123456+01:00"
    change = decoded(body)
    assert change.emitted == datetime(2020, 1, 23, 17, 57, 59, 123000, tzinfo=UTC)
    assert change.emitted.tzinfo is UTC
    assert change.occurred == WHEN


@pytest.mark.usefixtures("tokyo")
def test_naive_timestamps_are_utc_whatever_the_machine_s_time_zone() -> None:
    change = decoded(event(updatedAt="2020-01-23T17:57:58.918"))
    assert change.occurred == WHEN
    assert change.occurred.tzinfo is UTC
    aware = decoded(event(updatedAt="2020-01-24T02:57:58.918+09:00"))
    assert aware.occurred == WHEN
    assert aware.occurred.tzinfo is UTC


def test_stop_fields_of_the_wrong_type_mean_nothing_rather_than_a_broken_message() -> None:
    body = event(lastStatus="STOPPED", stopCode=5, stoppedReason=["no"])
    body["detail"]["containers"] = [
        {"name": 7, "exitCode": "137", "reason": {"x": 1}},
        {"name": "b", "exitCode": True},
        {"name": "c", "exitCode": "abc"},
        {"name": "d", "exitCode": 2.5},
        "not an object",
    ]
    stop = decoded(body).stop
    assert stop is not None
    assert (stop.stop_code, stop.stopped_reason) == (None, None)
    assert [(c.name, c.exit_code, c.reason) for c in stop.containers] == [
        (None, 137, None),
        ("b", None, None),
        ("c", None, None),
        ("d", None, None),
    ]
    for containers in (5, "prefect", {"name": "prefect"}):
        body["detail"]["containers"] = containers
        stop = decoded(body).stop
        assert stop is not None
        assert stop.containers == ()

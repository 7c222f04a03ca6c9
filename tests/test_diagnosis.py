"""The diagnosis of a stopped task, from real stop codes, stop reasons and exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from ecs_observer import TaskStateChange, decode
from ecs_observer.app.demo.samples import state_change
from ecs_observer.core.diagnosis import diagnose, log_container
from ecs_observer.core.ecs_event import Container, Stop

P = "prefect"
OOM = "OutOfMemoryError: Container killed due to memory usage"
PULL = (
    "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref "
    "docker.io/prefecthq/prefect:3-missing: docker.io/prefecthq/prefect:3-missing: not found"
)
SECRETS = (
    "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: "
    "unable to retrieve secret from asm: service call has been retried 5 time(s): AccessDeniedException"
)
ENI = "ResourceInitializationError: failed to configure ENI: failed to setup regular eni: context deadline exceeded"
EXITED = "Essential container in task exited"

# (stop code, stopped reason, containers as (name, exit code, reason)) -> (kind, failed, exit code)
CASES = [
    ("EssentialContainerExited", EXITED, [(P, 137, OOM)], ("out-of-memory", True, 137)),
    ("EssentialContainerExited", EXITED, [(P, 137, None)], ("out-of-memory", True, 137)),
    ("EssentialContainerExited", OOM, [(P, None, None)], ("out-of-memory", True, None)),
    ("EssentialContainerExited", EXITED, [(P, 1, None)], ("exited", True, 1)),
    ("EssentialContainerExited", EXITED, [(P, "2", None)], ("exited", True, 2)),
    ("EssentialContainerExited", EXITED, [(P, 0, None)], ("clean-exit", False, 0)),
    ("TaskFailedToStart", PULL, [(P, None, PULL)], ("image-pull-failed", True, None)),
    ("TaskFailedToStart", "CannotPullContainerError: ref pull has been retried", [], ("image-pull-failed", True, None)),
    ("TaskFailedToStart", SECRETS, [(P, None, None)], ("resource-initialization-failed", True, None)),
    ("TaskFailedToStart", ENI, [], ("resource-initialization-failed", True, None)),
    (
        "TaskFailedToStart",
        "Timeout waiting for network interface provisioning to complete.",
        [],
        ("failed-to-start", True, None),
    ),
    ("TaskFailedToStart", None, [], ("failed-to-start", True, None)),
    (
        "EssentialContainerExited",
        "CannotStartContainerError: Error response from daemon",
        [(P, None, None)],
        ("failed-to-start", True, None),
    ),
    ("SpotInterruption", "Your Spot Task was interrupted.", [(P, None, None)], ("spot-interruption", True, None)),
    ("SpotInterruption", "Your Spot Task was interrupted.", [(P, 143, None)], ("spot-interruption", True, 143)),
    (
        "TerminationNotice",
        "Host EC2 (instance i-0a1b2c3d4e5f) terminated.",
        [(P, None, None)],
        ("host-terminated", True, None),
    ),
    (None, "Host EC2 (instance i-0a1b2c3d4e5f) stopped/terminated", [(P, None, None)], ("host-terminated", True, None)),
    (
        "ServiceSchedulerInitiated",
        "Scaling activity initiated by (deployment ecs-svc/123)",
        [(P, 137, None)],
        ("stopped-by-scheduler", True, 137),
    ),
    ("UserInitiated", "Task stopped by user", [(P, 137, None)], ("stopped-by-user", True, 137)),
    ("UserInitiated", "Task stopped by user", [(P, 0, None)], ("stopped-by-user", False, 0)),
    ("EssentialContainerExited", EXITED, [(P, None, None)], ("killed", True, None)),
    (None, None, [], ("killed", True, None)),
    # Several containers: the one named `prefect` decides; a sidecar's failure does not.
    ("EssentialContainerExited", EXITED, [("envoy", 1, None), (P, 0, None)], ("clean-exit", False, 0)),
    ("EssentialContainerExited", EXITED, [("envoy", 0, None), (P, 3, None)], ("exited", True, 3)),
    # The only container counts whatever its name; several, none named so: all of them.
    ("EssentialContainerExited", EXITED, [("flow", 2, None)], ("exited", True, 2)),
    ("EssentialContainerExited", EXITED, [("a", 0, None), ("b", 1, None)], ("exited", True, 1)),
    ("EssentialContainerExited", EXITED, [("a", 0, None), ("b", 0, None)], ("clean-exit", False, None)),
    ("EssentialContainerExited", EXITED, [("a", 0, None), ("b", None, None)], ("killed", True, None)),
    # One exited with a code, another without: the code says what happened.
    ("EssentialContainerExited", EXITED, [("a", 1, None), ("b", None, None)], ("exited", True, 1)),
    # Older events and other launch types give the reason alone, without a stop code that says it.
    (None, None, [(P, None, "pull image manifest has been retried 1 time(s)")], ("image-pull-failed", True, None)),
    (None, "CannotCreateContainerError: API error (500)", [(P, None, None)], ("failed-to-start", True, None)),
    (None, "Your Spot Task was interrupted.", [(P, 143, None)], ("spot-interruption", True, 143)),
    (None, "Host EC2 (instance i-0a1b2c3d4e5f) terminated.", [(P, None, None)], ("host-terminated", True, None)),
    (None, "Host EC2 (instance i-0a1b2c3d4e5f) stopped.", [(P, None, None)], ("host-terminated", True, None)),
    # A host named without stopping or ending is no host loss; the container's exit decides.
    (None, "Host EC2 (instance i-0a1b2c3d4e5f) is draining", [(P, 1, None)], ("exited", True, 1)),
    # A container with an exit code and a failed stop code: exited, not killed.
    ("TaskFailedToStart", "Timeout", [(P, 0, None)], ("failed-to-start", True, 0)),
]


@pytest.mark.parametrize(("stop_code", "reason", "containers", "expected"), CASES)
def test_stop_classes(
    stop_code: str | None,
    reason: str | None,
    containers: list[tuple[str, object, str | None]],
    expected: tuple[str, bool, int | None],
) -> None:
    event = state_change("arn:aws:ecs:us-east-1:123456789012:task/c/0f1e", "STOPPED", 8, datetime.now(UTC))
    detail = event["detail"]
    detail["containers"] = [{"name": n, "exitCode": c, "reason": r} for n, c, r in containers]
    for key, value in (("stopCode", stop_code), ("stoppedReason", reason)):
        if value is None:
            detail.pop(key, None)
        else:
            detail[key] = value
    change = decode(json.dumps(event))
    assert isinstance(change, TaskStateChange)
    assert change.stop is not None
    diagnosis = diagnose(change.stop)
    assert (diagnosis.kind, diagnosis.failed, diagnosis.exit_code) == expected
    assert diagnosis.summary
    assert diagnosis.resolution
    assert "\n" not in diagnosis.summary + diagnosis.resolution
    if reason:
        assert diagnosis.reasons[0] == reason


def test_exit_code_in_the_summary_and_reasons_in_order() -> None:
    stop = Stop("EssentialContainerExited", EXITED, (Container(P, 42, "boom"), Container("log-router", 0, "ok")))
    diagnosis = diagnose(stop)
    assert diagnosis.summary == "the essential container exited with code 42"
    assert diagnosis.reasons == (EXITED, "boom", "ok")
    assert diagnosis.level == "ERROR"


def test_two_containers_of_the_configured_name_the_first_decides() -> None:
    stop = Stop("EssentialContainerExited", EXITED, (Container(P, 0, None), Container(P, 1, None)))
    assert (diagnose(stop).kind, diagnose(stop).failed) == ("clean-exit", False)


def test_a_configured_container_name() -> None:
    stop = Stop("EssentialContainerExited", EXITED, (Container("flow", 1, None), Container(P, 0, None)))
    assert diagnose(stop, "flow").exit_code == 1
    assert diagnose(stop).exit_code == 0


@pytest.mark.parametrize(
    ("containers", "expected"),
    [
        ((Container("envoy", 0, None), Container(P, 1, None)), P),
        ((Container("flow", 1, None),), "flow"),  # the only one, whatever its name
        ((Container("a", 1, None), Container("b", 0, None)), P),  # none singled out: look for the named one
        ((Container(None, 1, None),), P),
        ((), P),
    ],
)
def test_whose_logs_tell_why_the_flow_crashed(containers: tuple[Container, ...], expected: str) -> None:
    assert log_container(containers, P) == expected

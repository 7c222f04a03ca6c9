"""Transient or not: ECS's own words for a task that stopped before it ran.

The reasons are AWS's, as its documentation gives them ("Amazon ECS stopped tasks error messages",
"CannotPullContainer task errors", "ResourceInitializationError" troubleshooting, Fargate's "stopped
task error codes"), with their placeholders filled in.
"""

from __future__ import annotations

import pytest

from ecs_observer.core.ecs_event import Container, Stop
from ecs_observer.core.start_failure import START_TIMEOUT_MARK, interrupted, transient_cause

ECR = "111122223333.dkr.ecr.us-east-1.amazonaws.com"

CASES: list[tuple[str, str | None]] = [
    # Network timeouts pulling the image: transient.
    (
        "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref docker.io/"
        'library/nginx:latest: failed to do request: Head "https://registry-1.docker.io/v2/library/nginx/manifests/'
        'latest": dial tcp 54.236.113.205:443: i/o timeout',
        "image pull timed out",
    ),
    (
        f"CannotPullContainerError: ref pull has been retried 1 time(s): failed to copy: httpReadSeeker: failed open: "
        f'failed to do request: Get "https://{ECR}/v2/flow/blobs/sha256:abc": dial tcp 52.94.0.1:443: i/o timeout',
        "image pull timed out",
    ),
    (
        f"CannotPullContainerError: Error response from daemon: Get https://{ECR}/v2/: net/http: request canceled "
        "while waiting for connection (Client.Timeout exceeded while awaiting headers)",
        "image pull timed out",
    ),
    ("CannotPullContainerError: context canceled", "image pull timed out"),
    (f"CannotPullContainerError: Get https://{ECR}/v2/: net/http: TLS handshake timeout", "image pull timed out"),
    (
        "CannotPullContainerError: failed to copy: httpReadSeeker: failed open: read tcp 10.0.1.5:41234->"
        "52.94.0.1:443: read: connection reset by peer",
        "image pull timed out",
    ),
    # The registry answering 5xx or 429: transient.
    (
        f"CannotPullContainerError: API error (500): Get https://{ECR}/v2/: net/http: request canceled",
        "registry unavailable (5xx)",
    ),
    (
        "CannotPullContainerError: failed to copy: httpReadSeeker: failed open: unexpected status code "
        "https://registry-1.docker.io/v2/library/python/blobs/sha256:abc: 503 Service Unavailable",
        "registry unavailable (5xx)",
    ),
    (
        "CannotPullContainerError: inspect image has been retried 5 time(s): httpReaderSeeker: failed open: "
        "unexpected status code https://registry-1.docker.io/v2/prefecthq/prefect/manifests/3-latest: "
        "429 Too Many Requests - Server message: toomanyrequests: You have reached your pull rate limit. You may "
        "increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit",
        "registry throttled (429)",
    ),
    # Secrets, registry auth and env files timing out: transient.
    (
        "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: "
        "unable to retrieve ecr registry auth: service call has been retried 3 time(s): RequestError: send request "
        'failed caused by: Post "https://api.ecr.us-east-1.amazonaws.com/": dial tcp 10.0.0.1:443: i/o timeout',
        "secrets or registry credentials timed out",
    ),
    (
        "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: "
        "unable to retrieve secret from asm: service call has been retried 5 time(s): RequestCanceled: request "
        "context canceled caused by: context deadline exceeded",
        "secrets or registry credentials timed out",
    ),
    (
        "ResourceInitializationError: failed to download env files: file download command: non empty error stream: "
        "service call has been retried 5 time(s): RequestError: send request failed caused by: Get "
        '"https://flow-config.s3.amazonaws.com/prod.env": dial tcp 52.216.0.1:443: i/o timeout',
        "secrets or registry credentials timed out",
    ),
    # Capacity, networking, runtime: transient.
    ("Timeout waiting for network interface provisioning to complete.", "network interface not provisioned in time"),
    (
        "Capacity is unavailable at this time. Please try again later or in a different availability zone",
        "capacity unavailable",
    ),
    (
        "DockerTimeoutError: Could not transition to started; timed out after waiting 3m0s",
        "container runtime timed out",
    ),
    (
        "ContainerRuntimeTimeoutError: Could not transition to running; timed out after waiting 1m: context deadline "
        "exceeded",
        "container runtime timed out",
    ),
    ("Host EC2 (instance i-0123456789abcdef0) terminated.", "host lost before start"),
    ("Your Spot Task was interrupted.", "Spot capacity lost before start"),
    (f"{START_TIMEOUT_MARK} 600 s (flow run 7c2f4b1e-58c8-4d1b-9a4e-0f3c2d1b6a59)", "start timeout"),
    # The image or tag does not exist, or may not be pulled: permanent.
    (
        "CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref "
        "docker.io/acme/flow:nope: docker.io/acme/flow:nope: not found",
        None,
    ),
    (
        f"CannotPullContainerError: Error response from daemon: manifest for {ECR}/flow:v9 not found: manifest "
        "unknown: Requested image not found",
        None,
    ),
    (
        "CannotPullContainerError: Error response from daemon: pull access denied for acme/flow, repository does not "
        "exist or may require 'docker login': denied: requested access to the resource is denied",
        None,
    ),
    (
        "CannotPullContainerError: AccessDeniedException: User: arn:aws:sts::111122223333:assumed-role/"
        "ecsTaskExecutionRole/abc is not authorized to perform: ecr:GetAuthorizationToken on resource: *",
        None,
    ),
    (f"CannotPullContainerError: Error response from daemon: Get https://{ECR}/v2/: no basic auth credentials", None),
    (
        "CannotPullContainerError: failed to resolve ref ghcr.io/acme/flow:1: failed to authorize: failed to fetch "
        "anonymous token: unexpected status: 401 Unauthorized",
        None,
    ),
    # A missing or denied secret, a missing log group, a broken definition: permanent, even after retries timed out.
    (
        "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: "
        "unable to retrieve secret from asm: service call has been retried 5 time(s): failed to fetch secret "
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-abc123 from secrets manager: "
        "ResourceNotFoundException: Secrets Manager can't find the specified secret.",
        None,
    ),
    (
        "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: "
        "unable to retrieve secrets from ssm: service call has been retried 5 time(s): AccessDeniedException: "
        "User: arn:aws:sts::111122223333:assumed-role/ecsTaskExecutionRole/abc is not authorized to perform: "
        "ssm:GetParameters",
        None,
    ),
    (
        "ResourceInitializationError: unable to pull secrets or registry auth: execution resource retrieval failed: "
        "unable to retrieve secrets from ssm: service call has been retried 1 time(s): invalid parameters: "
        "/prod/db-password",
        None,
    ),
    (
        "ResourceInitializationError: failed to validate logger args: create stream has been retried 1 times: "
        "failed to create Cloudwatch log stream: ResourceNotFoundException: The specified log group does not "
        "exist. : exit status 1",
        None,
    ),
    (
        "CannotStartContainerError: ResourceInitializationError: failed to create new container runtime task: "
        'failed to create shim task: OCI runtime create failed: runc create failed: exec: "prefect": executable '
        "file not found in $PATH: unknown",
        None,
    ),
    # Not a start failure at all, or nothing said: not rescheduled.
    ("Essential container in task exited", None),
    ("OutOfMemoryError: Container killed due to memory usage", None),
    ("Task stopped by user", None),
    ("", None),
]


@pytest.mark.parametrize(("reason", "cause"), CASES, ids=[f"{n:02d}" for n in range(len(CASES))])
def test_ecs_stop_reasons_transient_or_not(reason: str, cause: str | None) -> None:
    before_start = Stop("TaskFailedToStart", reason, (Container("prefect", None, None),), started=False)
    assert transient_cause(before_start) == cause
    # The same words in a container's reason alone (the task's own reason says less).
    in_container = Stop("TaskFailedToStart", "Task failed to start", (Container("prefect", None, reason),), False)
    assert transient_cause(in_container) == cause
    # A task that ran is never a start failure, whatever the words.
    assert transient_cause(Stop("TaskFailedToStart", reason, (), started=True)) is None


def test_there_are_enough_real_cases_of_each_kind() -> None:
    assert len(CASES) >= 25
    assert sum(cause is None for _, cause in CASES) >= 10
    assert sum(cause is not None for _, cause in CASES) >= 15


def test_a_host_or_spot_capacity_lost_before_start_is_transient_by_its_stop_code_too() -> None:
    assert transient_cause(Stop("SpotInterruption", None, (), started=False)) == "Spot capacity lost before start"
    assert transient_cause(Stop("TerminationNotice", None, (), started=False)) == "host lost before start"
    assert transient_cause(Stop("UserInitiated", None, (), started=False)) is None
    assert transient_cause(Stop(None, None, (), started=False)) is None
    assert transient_cause(Stop("", None, (), started=False)) is None


def test_interrupted_is_only_a_spot_or_host_loss_after_the_task_started() -> None:
    assert interrupted(Stop("SpotInterruption", "Your Spot Task was interrupted.", (), started=True))
    assert interrupted(Stop("TerminationNotice", "Host EC2 (instance i-0abc) terminated.", (), started=True))
    assert not interrupted(Stop("SpotInterruption", None, (), started=False))
    assert not interrupted(Stop("UserInitiated", None, (), started=True))
    assert not interrupted(Stop("EssentialContainerExited", None, (), started=True))


def test_a_permanent_reason_wins_over_a_transient_one_in_the_same_stop() -> None:
    # Two containers: the sidecar's pull timed out, the flow's image does not exist. Starting again fails again.
    timed_out, missing = CASES[0][0], CASES[19][0]
    assert transient_cause(Stop(None, timed_out, (), started=False)) is not None
    assert transient_cause(Stop(None, missing, (), started=False)) is None
    both = (Container("log-router", None, timed_out), Container("prefect", None, missing))
    assert transient_cause(Stop("TaskFailedToStart", "Task failed to start", both, started=False)) is None


def test_reasons_are_read_as_one_text_with_spaces_between_them() -> None:
    # ECS splits what happened between the task's reason and a container's: read together, they say it.
    parts = Stop(None, "CannotPullContainerError: failed to copy:", (Container("prefect", None, "i/o timeout"),), False)
    assert transient_cause(parts) == "image pull timed out"

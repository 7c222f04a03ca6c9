"""Whether a task that stopped before it ran failed for a reason that a minute later may not hold.

Pure, from the stop alone. A transient start failure (a network timeout pulling
the image or a secret, a registry answering 5xx or 429, capacity unavailable, an
interface not provisioned in time, the host lost before start, a container
runtime timeout) is worth starting again; a permanent one (an image or tag that
does not exist, a denied pull, a missing secret or log group, a broken task
definition) fails the same way every time, and the run is Crashed at once. When
ECS's words say both (a retry loop that timed out asking for a secret that does
not exist), the permanent one wins: starting again would only fail again.
"""

from __future__ import annotations

import re

from .ecs_event import Stop

__all__ = ["START_TIMEOUT_MARK", "interrupted", "transient_cause"]

# The observer's own StopTask reason for a task that stayed PROVISIONING or PENDING too long: transient.
START_TIMEOUT_MARK = "ecs-observer: the task did not start within"

# What the registry, IAM or the task definition answered for good.
_PERMANENT = re.compile(
    r"not found|manifest unknown|does not exist|no such (?:file|host|image)|repository .* not exist|"
    r"access ?denied|not authorized|unauthorized|forbidden|\b40[13]\b|no basic auth credentials|"
    r"resourcenotfoundexception|parameternotfound|invalid|executable file not found|no space left on device"
)
_NETWORK = (
    r"i/o timeout|context deadline exceeded|tls handshake timeout|request canceled|client\.timeout exceeded|"
    r"connection reset|connection refused|no route to host|context canceled|timed out|timeout"
)
# (what the words say, the cause named in the run's logs), first match wins.
_TRANSIENT: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"network interface provisioning|eni provisioning"), "network interface not provisioned in time"),
    (re.compile(r"capacity is unavailable|insufficient capacity|capacity unavailable"), "capacity unavailable"),
    (
        re.compile(r"dockertimeouterror|containerruntimetimeouterror|could not transition to (?:started|running)"),
        "container runtime timed out",
    ),
    (re.compile(r"toomanyrequests|too many requests|\b429\b|rate limit"), "registry throttled (429)"),
    (
        re.compile(r"\b50[0234]\b|service unavailable|bad gateway|gateway time-?out|internal server error"),
        "registry unavailable (5xx)",
    ),
    (re.compile(rf"cannotpullcontainer.*(?:{_NETWORK})"), "image pull timed out"),
    (re.compile(rf"resourceinitializationerror.*(?:{_NETWORK})"), "secrets or registry credentials timed out"),
    (re.compile(r"host ec2 .*(?:stopped|terminated)"), "host lost before start"),
    (re.compile(r"spot task was interrupted"), "Spot capacity lost before start"),
)
_LOST_BEFORE_START = {
    "TerminationNotice": "host lost before start",
    "SpotInterruption": "Spot capacity lost before start",
}


def transient_cause(stop: Stop) -> str | None:
    """A short name of the transient cause of a stop before RUNNING, or None (it ran, or the cause is
    permanent or unknown)."""
    if stop.started:
        return None
    text = " ".join(r for r in (stop.stopped_reason, *(c.reason for c in stop.containers)) if r).lower()
    if START_TIMEOUT_MARK.lower() in text:
        return "start timeout"
    if _PERMANENT.search(text):
        return None
    for pattern, cause in _TRANSIENT:
        if pattern.search(text):
            return cause
    return _LOST_BEFORE_START.get(stop.stop_code or "")


def interrupted(stop: Stop) -> bool:
    """A task that ran and was then stopped by a Spot interruption or a host's termination."""
    return stop.started and stop.stop_code in _LOST_BEFORE_START

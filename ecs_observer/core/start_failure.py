"""Whether a task that stopped before it ran failed for a reason that a minute later may not hold.

Pure, from the stop alone. A transient start failure (a network timeout pulling
the image or a secret, capacity unavailable, an interface not provisioned in
time, the host lost before start) is worth starting again; a permanent one
(an image that does not exist, a denied pull, a missing secret, a broken task
definition) fails the same way every time, and the run is Crashed at once.
"""

from __future__ import annotations

from .ecs_event import Stop

__all__ = ["START_TIMEOUT_MARK", "interrupted", "transient_cause"]

# The observer's own StopTask reason for a task that stayed PROVISIONING or PENDING too long: transient.
START_TIMEOUT_MARK = "ecs-observer: the task did not start within"


def transient_cause(stop: Stop) -> str | None:
    """A short name of the transient cause of a stop before RUNNING, or None (it ran, or the cause is
    permanent or unknown)."""
    if stop.started:
        return None
    text = " ".join(r for r in (stop.stopped_reason, *(c.reason for c in stop.containers)) if r).lower()
    if START_TIMEOUT_MARK.lower() in text:
        return "start timeout"
    return None


def interrupted(stop: Stop) -> bool:
    """A task that ran and was then stopped by a Spot interruption or a host's termination."""
    return stop.started and stop.stop_code in ("SpotInterruption", "TerminationNotice")

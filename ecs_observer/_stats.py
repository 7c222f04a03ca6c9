"""What the observer has done, counted per instance (no module-level state)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Stats"]


@dataclass
class Stats:
    received: int = 0
    forwarded: int = 0  # events accepted by the Prefect API
    filtered: int = 0  # state changes of tasks that are not Prefect's
    ignored: int = 0  # messages that are not ECS task state changes
    rejected: int = 0  # messages that cannot be processed, left for the dead-letter queue
    invalid_events: int = 0  # events the Prefect API refused as invalid (422)
    deleted: int = 0
    describe_calls: int = 0
    tag_cache_hits: int = 0
    in_flight: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def summary(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.as_dict().items())

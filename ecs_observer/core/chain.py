"""Which earlier state change an event `follows`: pure decisions over a task's history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

__all__ = ["CHAIN_WINDOW", "Link", "add_link", "awaits_predecessor", "choose_follows", "kept_link", "known_link"]

CHAIN_WINDOW = timedelta(minutes=5)
# A task changes state about ten times in its life; more than this is noise we need not keep.
MAX_LINKS_PER_TASK = 32


@dataclass(frozen=True, slots=True)
class Link:
    """A state change as later ones need to see it: decided (its `follows` is final), or `pending`: received
    and waiting for its own predecessor, yet already there for its successors to follow."""

    event_id: UUID
    version: int | None
    occurred: datetime
    follows: UUID | None
    pending: bool = False

    def order(self) -> tuple[int, datetime]:
        # ECS numbers a task's changes by `version`; events of eras without it go by time.
        return (self.version if self.version is not None else -1, self.occurred)


def known_link(history: Sequence[Link], event_id: UUID) -> Link | None:
    """The link of a redelivered event, so that it yields the identical event."""
    return next((link for link in history if link.event_id == event_id), None)


def kept_link(history: Sequence[Link], event_id: UUID, version: int | None) -> Link | None:
    """The link already kept for this change: its own (a redelivery), or, since ECS numbers a task's changes
    by `version`, another event's of the same version (the same change under two ids, a duplicate)."""
    if (own := known_link(history, event_id)) is not None:
        return own
    if version is None:
        return None
    return next((link for link in history if link.version == version), None)


def awaits_predecessor(history: Sequence[Link], version: int | None) -> bool:
    """True while the immediately preceding version of the task has not been seen.

    Versions start at 1; an event without a version cannot tell what it misses.
    """
    if version is None or version <= 1:
        return False
    return not any(link.version == version - 1 for link in history)


def choose_follows(history: Sequence[Link], event_id: UUID, version: int | None, occurred: datetime) -> UUID | None:
    """The latest earlier state change of the task (by version), when the two occurred less than 5 minutes
    apart, in either direction: clocks and `updatedAt` do not always agree with the version order."""
    me = Link(event_id, version, occurred, None).order()
    earlier = [link for link in history if link.event_id != event_id and link.order() < me]
    if not earlier:
        return None
    previous = max(earlier, key=Link.order)
    return previous.event_id if abs(occurred - previous.occurred) < CHAIN_WINDOW else None


def add_link(history: Sequence[Link], link: Link) -> tuple[Link, ...]:
    """The history with one more link, ordered and bounded to the latest ones."""
    kept = [old for old in history if old.event_id != link.event_id]
    kept.append(link)
    kept.sort(key=Link.order)
    return tuple(kept[-MAX_LINKS_PER_TASK:])

"""The task state in a DynamoDB table, shared by the replicas that drain one queue.

One item per task ARN (the partition key `task_arn`):
- `tags` (a map of the Prefect tags; empty: not Prefect's) and `described`
  (false: ECS no longer knew the task), written once, by the claimant;
- `claimed_until`: while a replica describes the task, the others wait for it;
- one attribute `c_<event id>` per recorded state change (`v` version, `t`
  occurred in epoch milliseconds, `f` the event it follows, `p` while that is
  still pending), each written only if absent (and settled only while `p` is
  there), so concurrent writers never drop each other's changes and a
  redelivered change keeps its first `follows`;
- one attribute `v_<version>` per recorded version, holding its event's id, so
  that the same change under another id is recognised as a duplicate;
- one attribute `o_<what>` per thing done once per task (the diagnosis log,
  crash logs, deregistration): the change doing it and until when its claim
  holds, taken only if absent or lapsed, then marked done;
- the sweep's lease is an item of its own (`task_arn` = `lease#<name>`): its
  holder and until when (`h`, `u`), taken only when free, lapsed or already its own;
- `version`, the highest `detail.version` recorded, and `expires`, the TTL
  attribute: both move only forward (conditional on `version`), so an older
  change arriving late never shortens or extends the life of a stopped task.

Reads are strongly consistent: a change waiting for its predecessor must see a
record another replica has just written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from uuid import UUID

from botocore.exceptions import ClientError

from ..core.chain import Link, kept_link
from ..core.task_record import ACTIVE_RETENTION, DONE, TaskRecord, TaskTags
from ..ports import Claim
from ..support.backoff import Backoff
from ..support.stats import Stats

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient

__all__ = ["KEY", "TTL_ATTRIBUTE", "DynamoTaskState", "check_table"]

log = logging.getLogger("ecs_observer.state")

KEY = "task_arn"
TTL_ATTRIBUTE = "expires"
MAX_KEYS_PER_READ = 100
_LINK_PREFIX = "c_"
_ONCE_PREFIX = "o_"
_VERSION_PREFIX = "v_"
_LEASE_PREFIX = "lease#"
_NAMES = {"#tags": "tags", "#described": "described", "#claim": "claimed_until", "#version": "version"}


class _Refused(Exception):
    """A condition did not hold: an answer, not an error, so never retried."""


def _retryable(exc: Exception) -> bool:
    return not isinstance(exc, _Refused)


class _Unprocessed(Exception):
    """BatchGetItem left keys unread (throttled): read them again after a backoff."""


class DynamoTaskState:
    # A change waiting for a predecessor, or a task for its tags, sees another replica's write this soon.
    poll_interval = 0.25

    def __init__(
        self,
        client: DynamoDBClient,
        table: str,
        stats: Stats,
        backoff: Backoff = Backoff(),
    ) -> None:
        self._client = client
        self._table = table
        self._stats = stats
        self._backoff = backoff.hooked(stats.called)

    async def load(self, task_arns: Collection[str]) -> Mapping[str, TaskRecord]:
        arns = list(dict.fromkeys(task_arns))
        found: dict[str, TaskRecord] = {}
        for offset in range(0, len(arns), MAX_KEYS_PER_READ):
            keys: list[Any] = [{KEY: {"S": arn}} for arn in arns[offset : offset + MAX_KEYS_PER_READ]]

            async def read(keys: list[Any] = keys) -> None:
                answer = await self._call(
                    "BatchGetItem",
                    lambda: self._client.batch_get_item(
                        RequestItems={self._table: {"Keys": keys, "ConsistentRead": True}}
                    ),
                )
                # Strongly consistent: one read unit per requested item under 4 KB (ours are 1-2 KB).
                self._stats.dynamodb_units["read"] += len(keys)
                for item in answer.get("Responses", {}).get(self._table, []):
                    found[item[KEY]["S"]] = _record(item)
                keys[:] = answer.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
                if keys:
                    raise _Unprocessed(f"{len(keys)} key(s) left unread")

            await self._backoff.call("dynamodb", read, on=_Unprocessed)
        return found

    async def claim(self, task_arn: str, seconds: float) -> bool:
        now = time.time()  # claims compare wall clocks across replicas (NTP-synced on Fargate)
        return await self._update(
            task_arn,
            "SET #claim = :until, #expires = if_not_exists(#expires, :expires)",
            "attribute_not_exists(#tags) AND (attribute_not_exists(#claim) OR #claim < :now)",
            {
                ":until": {"N": f"{now + seconds:.3f}"},
                ":now": {"N": f"{now:.3f}"},
                ":expires": _epoch(datetime.fromtimestamp(now, UTC) + ACTIVE_RETENTION),
            },
        )

    async def save_tags(self, task_arn: str, tags: TaskTags, expires: datetime) -> None:
        await self._update(
            task_arn,
            "SET #tags = :tags, #described = :described, #expires = if_not_exists(#expires, :expires) REMOVE #claim",
            None,
            {
                ":tags": {"M": {key: {"S": value} for key, value in tags.tags.items()}},
                ":described": {"BOOL": tags.described},
                ":expires": _epoch(expires),
            },
        )

    async def record(self, task_arn: str, link: Link, expires: datetime) -> Link:
        names = {"#link": _LINK_PREFIX + link.event_id.hex}
        value: dict[str, Any] = {":link": _link_value(link), ":expires": _epoch(expires)}
        absent = "attribute_not_exists(#link)"
        also = ""
        if link.version is not None:
            # One event per version: the same change under another id is refused, and so not forwarded twice.
            names["#vkey"] = f"{_VERSION_PREFIX}{link.version}"
            value[":eid"] = {"S": link.event_id.hex}
            absent += " AND attribute_not_exists(#vkey)"
            also = ", #vkey = :eid"
        if link.version is not None and await self._update(
            task_arn,
            f"SET #link = :link{also}, #version = :version, #expires = :expires",
            f"{absent} AND (attribute_not_exists(#version) OR #version < :version)",
            {**value, ":version": {"N": str(link.version)}},
            names,
        ):
            return link
        # A newer change is recorded already (or this one has no version): add the change alone.
        if await self._update(
            task_arn, f"SET #link = :link{also}, #expires = if_not_exists(#expires, :expires)", absent, value, names
        ):
            return link
        # Recorded before, here or by another replica (its first `follows` stands), or a duplicate of its version.
        kept_record = (await self.load([task_arn])).get(task_arn)
        kept = kept_link(kept_record.links, link.event_id, link.version) if kept_record is not None else None
        if kept is None:
            raise RuntimeError(f"DynamoDB refused change {link.event_id} of {task_arn} as recorded, but it is not")
        return kept

    async def settle(self, task_arn: str, link: Link, expires: datetime) -> Link:
        names = {"#link": _LINK_PREFIX + link.event_id.hex, "#pending": "p"}
        if await self._update(
            task_arn, "SET #link = :link", "attribute_exists(#link.#pending)", {":link": _link_value(link)}, names
        ):
            return link
        # Settled first by a redelivery of the change (here or on another replica), or never recorded.
        kept_record = (await self.load([task_arn])).get(task_arn)
        kept = kept_link(kept_record.links, link.event_id, link.version) if kept_record is not None else None
        return kept if kept is not None else await self.record(task_arn, link, expires)

    async def once(self, task_arn: str, what: str, owner: UUID, expires: datetime, lease: float) -> Claim:
        now = time.time()  # leases compare wall clocks across replicas, as describe claims do
        names = {"#owner": _ONCE_PREFIX + what}
        if await self._update(
            task_arn,
            "SET #owner = :claim, #expires = if_not_exists(#expires, :expires)",
            "attribute_not_exists(#owner) OR (#owner.u < :now AND #owner.o <> :done)",
            {
                ":claim": {"M": {"o": {"S": owner.hex}, "u": {"N": f"{now + lease:.3f}"}}},
                ":now": {"N": f"{now:.3f}"},
                ":done": {"S": DONE.hex},
                ":expires": _epoch(expires),
            },
            names,
        ):
            return "mine"
        record = (await self.load([task_arn])).get(task_arn)
        held = next((claim for claim in record.claims if claim[0] == what), None) if record is not None else None
        return "done" if held is not None and held[1] == DONE else "busy"

    async def done(self, task_arn: str, what: str, expires: datetime) -> None:
        await self._update(
            task_arn,
            "SET #owner = :done, #expires = if_not_exists(#expires, :expires)",
            None,
            {":done": {"M": {"o": {"S": DONE.hex}, "u": {"N": "0"}}}, ":expires": _epoch(expires)},
            {"#owner": _ONCE_PREFIX + what},
        )

    async def lease(self, name: str, owner: UUID, seconds: float) -> bool:
        now = time.time()
        return await self._update(
            f"{_LEASE_PREFIX}{name}",
            "SET #holder = :owner, #until = :until, #expires = :expires",
            "attribute_not_exists(#holder) OR #holder = :owner OR #until < :now",
            {
                ":owner": {"S": owner.hex},
                ":until": {"N": f"{now + seconds:.3f}"},
                ":now": {"N": f"{now:.3f}"},
                ":expires": _epoch(datetime.fromtimestamp(now, UTC) + timedelta(seconds=seconds) + timedelta(days=1)),
            },
            {"#holder": "h", "#until": "u"},
        )

    async def _update(
        self,
        task_arn: str,
        expression: str,
        condition: str | None,
        values: Mapping[str, Any],
        names: Mapping[str, str] | None = None,
    ) -> bool:
        """True if written, False if the condition did not hold."""
        every = {**_NAMES, "#expires": TTL_ATTRIBUTE, **(names or {})}
        used = {name: attr for name, attr in every.items() if name in f"{expression} {condition or ''}"}
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "Key": {KEY: {"S": task_arn}},
            "UpdateExpression": expression,
            "ExpressionAttributeNames": used,
            "ExpressionAttributeValues": dict(values),
        }
        if condition is not None:
            arguments["ConditionExpression"] = condition
        # One write unit per KB of the larger of the item before and after, refused writes included:
        # counted as one, since a task's item stays near 1 KB until its last few changes.
        self._stats.dynamodb_units["write"] += 1
        try:
            await self._call("UpdateItem", lambda: self._client.update_item(**arguments))
        except _Refused:
            self._stats.dynamodb_calls["UpdateItem refused by its condition"] += 1
            return False
        return True

    async def _call(self, api: str, request: Callable[[], Awaitable[Any]]) -> Any:
        async def attempt() -> Any:
            self._stats.dynamodb_calls[api] += 1
            try:
                return await request()
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    raise _Refused from None
                raise

        what = f"DynamoDB {api} on table {self._table}"
        return await self._backoff.call("dynamodb", attempt, on=_retryable, what=what)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _epoch(moment: datetime) -> dict[str, str]:
    return {"N": str(int(moment.timestamp()))}


def _link_value(link: Link) -> dict[str, Any]:
    return {
        "M": {
            "v": {"N": str(link.version)} if link.version is not None else {"NULL": True},
            "t": {"N": str(round(link.occurred.timestamp() * 1000))},
            "f": {"S": link.follows.hex} if link.follows is not None else {"NULL": True},
            **({"p": {"BOOL": True}} if link.pending else {}),
        }
    }


def _record(item: Mapping[str, Any]) -> TaskRecord:
    tags = None
    if "tags" in item:
        kept = {key: value["S"] for key, value in item["tags"]["M"].items()}
        tags = TaskTags(MappingProxyType(kept), described=item.get("described", {}).get("BOOL", True))
    links = sorted(
        (_link(name, value["M"]) for name, value in item.items() if name.startswith(_LINK_PREFIX)), key=Link.order
    )
    claimed = float(item["claimed_until"]["N"]) if "claimed_until" in item else 0.0
    claims = tuple(
        (name[len(_ONCE_PREFIX) :], UUID(hex=value["M"]["o"]["S"]), float(value["M"]["u"]["N"]))
        for name, value in item.items()
        if name.startswith(_ONCE_PREFIX) and "M" in value
    )
    return TaskRecord(tags=tags, links=tuple(links), claimed_until=claimed, claims=claims)


def _link(name: str, value: Mapping[str, Any]) -> Link:
    return Link(
        event_id=UUID(hex=name[len(_LINK_PREFIX) :]),
        version=int(value["v"]["N"]) if "N" in value["v"] else None,
        occurred=datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(value["t"]["N"])),
        follows=UUID(hex=value["f"]["S"]) if "S" in value["f"] else None,
        pending="p" in value,
    )


async def check_table(client: DynamoDBClient, table: str) -> str:
    """What `ecs-observer check` says of the table; raises with the reason it cannot serve."""
    description = (await client.describe_table(TableName=table))["Table"]
    schema = [(key["AttributeName"], key["KeyType"]) for key in description.get("KeySchema", [])]
    if schema != [(KEY, "HASH")]:
        raise RuntimeError(f"table {table} must have the partition key {KEY!r} alone (it has {schema})")
    if description.get("TableStatus") not in ("ACTIVE", "UPDATING"):
        raise RuntimeError(f"table {table} is {description.get('TableStatus')}")
    ttl = (await client.describe_time_to_live(TableName=table)).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING") or ttl.get("AttributeName") != TTL_ATTRIBUTE:
        raise RuntimeError(
            f"TTL is not on for attribute {TTL_ATTRIBUTE!r} of table {table} "
            f"({ttl.get('TimeToLiveStatus', 'DISABLED')}, {ttl.get('AttributeName', 'no attribute')}): "
            "old task state would never expire"
        )
    # A write and a read with the actions the observer uses; the probe item expires at once.
    probe = {KEY: {"S": "ecs-observer-check"}}
    await client.update_item(
        TableName=table,
        Key=probe,
        UpdateExpression="SET #expires = :now",
        ExpressionAttributeNames={"#expires": TTL_ATTRIBUTE},
        ExpressionAttributeValues={":now": _epoch(datetime.now(UTC))},
    )
    await client.batch_get_item(RequestItems={table: {"Keys": [probe], "ConsistentRead": True}})
    return f"{table} (TTL on {TTL_ATTRIBUTE!r}; read and write allowed)"

"""Bad input: every kind of broken message, random EventBridge-shaped messages, and untrusted tags."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prefect.server.events.schemas.events import Event as PrefectServerEvent

from ecs_observer import Ignored, NotPrefects, PrefectEvent, Rejected, TaskStateChange, decode, translate
from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.app.demo.samples import FARGATE_LIFECYCLE, state_change

from ..servers import PrefectServer
from ..world import FAST, assert_chains, depth, make_queue, observer, send, start_tasks

ARN = "arn:aws:ecs:us-east-1:123456789012:task/prefect/0123456789abcdef0123456789abcdef"
RESOURCE_ID = re.compile(
    r"^prefect\.(ecs\.task\.[A-Za-z0-9-]{1,64}|(flow-run|deployment|flow|work-pool)\.[0-9a-f]{8}-[0-9a-f]{4}-"
    r"[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|worker\.ecs\.[a-z0-9]+(-[a-z0-9]+)*)$"
)


def good() -> dict[str, Any]:
    return state_change(ARN, "RUNNING", 4, datetime(2026, 3, 1, tzinfo=UTC), cluster_arn="arn:aws:ecs:us-east-1:1:c")


def mutated(path: str, value: object) -> str:
    body = good()
    *parents, leaf = path.split(".")
    target = body
    for key in parents:
        target = target[key]
    target[leaf] = value
    return json.dumps(body)


# Every kind of broken message SQS can carry (an empty, a 1-MiB or a non-UTF-8 body cannot be sent:
# those are in test_decode.py and test_unsendable_bodies below).
BROKEN = {
    "not JSON": "this is not json",
    "JSON array": "[1, 2, 3]",
    "JSON string": '"aws.ecs"',
    "truncated": json.dumps(good())[:150],
    "deeply nested": "[" * 50_000 + "]" * 50_000,
    "id not a UUID": mutated("id", "not-a-uuid"),
    "id a number": mutated("id", 42),
    "time wrong type": mutated("time", ["yesterday"]),
    "source wrong type": mutated("source", {"aws": "ecs"}),
    "detail-type wrong type": mutated("detail-type", 7),
    "detail wrong type": mutated("detail", "RUNNING"),
    "taskArn wrong type": mutated("detail.taskArn", 1234),
    "taskArn unexpected segments": mutated("detail.taskArn", "arn:aws:ecs:us-east-1:123456789012:task/a/b/c/d"),
    "lastStatus wrong type": mutated("detail.lastStatus", {"s": 1}),
    "clusterArn wrong type": mutated("detail.clusterArn", ["c"]),
    "taskDefinitionArn wrong type": mutated("detail.taskDefinitionArn", 5),
    "version wrong type": mutated("detail.version", "four"),
    "updatedAt wrong type": mutated("detail.updatedAt", True),
    "overrides wrong type": mutated("detail.overrides", "none"),
    "environment wrong type": mutated("detail.overrides", {"containerOverrides": [{"environment": "x"}]}),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_each_broken_kind_is_rejected_with_a_reason(kind: str) -> None:
    outcome = decode(BROKEN[kind])
    assert isinstance(outcome, Rejected)
    assert outcome.reason


def test_unsendable_bodies() -> None:
    assert "UTF-8" in decode(b'{"id": "\xff\xfe"}').reason  # type: ignore[union-attr]
    assert "UTF-8" in decode(b"\xff\xfe").reason  # type: ignore[union-attr]
    assert isinstance(decode(""), Rejected)
    assert isinstance(decode("x" * (1024 * 1024)), Rejected)


async def test_broken_messages_end_in_the_dead_letter_queue_while_good_ones_flow(
    aws: AwsClients, prefect: PrefectServer, caplog: pytest.LogCaptureFixture
) -> None:
    queue_url, dlq_url = await make_queue(aws, max_receive=2, visibility=1)
    tasks = await start_tasks(aws, 2)
    bodies = list(BROKEN.values()) + [json.dumps(e) for t in tasks for e in t.events]
    await send(aws, queue_url, bodies)
    sink = PrefectApiSink(PrefectClient(prefect.api_url))
    # A rejected message comes back when the visibility its receive asked for runs out: 2 s, not FAST's 30 s,
    # so that the two receives before the dead-letter queue take seconds, not a minute.
    obs = await observer(aws, queue_url, sink, replace(FAST, visibility_timeout=2))
    run = asyncio.create_task(obs.run())
    try:
        for _ in range(120):
            await asyncio.sleep(0.5)
            if await depth(aws, dlq_url) == (len(BROKEN), 0):
                break
    finally:
        obs.stop()
        await run
        await sink.aclose()
    assert await depth(aws, dlq_url) == (len(BROKEN), 0)
    assert await depth(aws, queue_url) == (0, 0)
    assert_chains(tasks, prefect.wait_for_events([t.resource_id for t in tasks], count=16))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "rejected" in r.getMessage()]
    assert len(warnings) == len(BROKEN)  # one clear line each, though each was received twice
    assert all(re.match(r"^message [0-9a-f-]{36} rejected, left for the dead-letter queue", w) for w in warnings)


# --- random EventBridge-shaped messages --------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = [
    "id",
    "source",
    "detail-type",
    "time",
    "region",
    "detail",
    "detail.taskArn",
    "detail.lastStatus",
    "detail.clusterArn",
    "detail.taskDefinitionArn",
    "detail.version",
    "detail.updatedAt",
    "detail.overrides",
    "detail.overrides.containerOverrides",
    "detail.containers",
]
TAG_KEYS = [
    "prefect.io/flow-run-id",
    "prefect.io/flow-run-name",
    "prefect.io/deployment-id",
    "prefect.io/deployment-name",
    "prefect.io/flow-id",
    "prefect.io/flow-name",
    "prefect.io/work-pool-id",
    "prefect.io/work-pool-name",
    "prefect.io/worker-name",
    "owner",
]
TAG_VALUES = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.text(max_size=256))


@st.composite
def messages(draw: st.DrawFn) -> str:
    body = state_change(
        draw(st.sampled_from([ARN, ARN.replace("/prefect/", "/"), ARN.replace("0123", "ab-c")])),
        draw(st.sampled_from([*FARGATE_LIFECYCLE, "DELETED", "SOMETHING_NEW"])),
        draw(st.integers(0, 50)),
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=draw(st.integers(0, 10**10))),
        event_id=uuid.UUID(int=draw(st.integers(0, 2**128 - 1))),  # any variant, not only RFC 4122
        cluster_arn=draw(st.none() | st.just("arn:aws:ecs:us-east-1:123456789012:cluster/prefect")),
        flow_run_id=draw(st.none() | st.uuids().map(str) | st.text(max_size=10)),
    )
    for path in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        *parents, leaf = path.split(".")
        target: Any = body
        for key in parents:
            target = target.get(key) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            continue
        action = draw(st.sampled_from(["drop", "mistype", "stringify"]))
        if action == "drop":
            target.pop(leaf, None)
        elif action == "mistype":
            target[leaf] = draw(JSON_VALUES)
        elif leaf in target:
            target[leaf] = str(target[leaf])
    body.update(draw(st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=2)))  # extra fields
    return json.dumps(body)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=messages(),
    tags=st.dictionaries(st.sampled_from(TAG_KEYS), TAG_VALUES, max_size=10),
    follows=st.none() | st.uuids(),
)
def test_any_message_gives_a_valid_prefect_event_or_a_reason(
    body: str, tags: dict[str, str], follows: uuid.UUID | None
) -> None:
    decoded = decode(body)
    if isinstance(decoded, Rejected | Ignored):
        assert decoded.reason
        return
    assert isinstance(decoded, TaskStateChange)
    event = translate(decoded, tags, follows)
    if isinstance(event, NotPrefects):
        assert event.reason
        return
    assert isinstance(event, PrefectEvent)
    # Prefect's own server-side schema accepts it.
    PrefectServerEvent.model_validate(event.to_json())
    for resource in [event.resource, *event.related]:
        assert RESOURCE_ID.match(resource["prefect.resource.id"]), resource
        assert not any(ord(c) < 32 for c in resource.get("prefect.resource.name", ""))
    assert event.follows != event.id

"""Assembles the observer from settings and runs it as a service, or checks that it could run."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import httpx
from botocore.exceptions import ClientError

from ._aws import AwsClients, EcsDescriber, SqsQueue
from ._dlq import find_dead_letter_queue, format_entries
from ._dynamo_state import DynamoTaskState, check_table
from ._health import HealthServer
from ._observer import Observer, ObserverConfig
from ._prefect_api import PrefectApiSink, auth_headers
from ._settings import ConfigError, Settings
from ._stats import Stats
from ._task_state import MemoryTaskState, TaskStateStore

__all__ = ["check", "dead_letters", "observer_config", "prefect_sink", "run_service"]

log = logging.getLogger("ecs_observer")


def observer_config(settings: Settings) -> ObserverConfig:
    return ObserverConfig(
        receivers=settings.receivers,
        max_in_flight=settings.max_in_flight,
        wait_time_seconds=settings.wait_time_seconds,
        visibility_timeout=settings.visibility_timeout,
        batch_size=settings.batch_size,
        batch_bytes=settings.batch_bytes,
        linger=settings.linger,
        describe_linger=settings.describe_linger,
        reorder_window=settings.reorder_window,
        cache_size=settings.cache_size,
        drain_timeout=settings.drain_timeout,
        describe_claim=settings.describe_claim,
    )


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if get is not None else None


def prefect_sink(settings: Settings, api_url: str, stats: Stats | None = None) -> PrefectApiSink:
    return PrefectApiSink(
        api_url,
        api_key=_secret(settings.prefect_api_key),
        auth_string=_secret(settings.prefect_api_auth_string),
        timeout=settings.http_timeout,
        stats=stats,
    )


async def _queue(clients: AwsClients, settings: Settings) -> SqsQueue:
    """The queue by URL, or by name through GetQueueUrl (as prefect-aws configures it)."""
    sqs = await clients.sqs(_queue_region(settings, settings.queue_url))
    if settings.queue_url:
        return SqsQueue(sqs, settings.queue_url)
    answer = await sqs.get_queue_url(QueueName=str(settings.queue_name))
    return SqsQueue(sqs, answer["QueueUrl"])


def _queue_region(settings: Settings, url: str | None) -> str | None:
    """The queue's region (the state table lives beside it); None: the AWS configuration's."""
    if settings.queue_region or not url or ".amazonaws.com" not in url:
        return settings.queue_region
    return url.split("//", 1)[1].split(".")[1]  # https://sqs.<region>.amazonaws.com/...


async def _state(clients: AwsClients, settings: Settings, queue: SqsQueue, stats: Stats) -> TaskStateStore:
    if settings.state_table is None:
        return MemoryTaskState(settings.cache_size)
    region = _queue_region(settings, queue.url) or clients.default_region()
    client = await clients.dynamodb(region)
    try:
        await client.describe_table(TableName=settings.state_table)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise ConfigError(
                f"ECS_OBSERVER_STATE_TABLE: no table {settings.state_table!r} in {region} (the queue's region)"
            ) from None
        # Anything else may pass (a denial of DescribeTable alone, throttling): the store's calls retry.
        log.warning("could not describe the state table %s: %s", settings.state_table, exc)
    return DynamoTaskState(client, settings.state_table, stats)


async def run_service(settings: Settings) -> Observer:
    """Run until SIGTERM or SIGINT, then drain and return the observer (for its stats)."""
    settings.require_queue()
    api_url = settings.require_prefect()
    async with AsyncExitStack() as stack:
        clients = await stack.enter_async_context(AwsClients())
        queue = await _queue(clients, settings)
        stats = Stats()
        sink = prefect_sink(settings, api_url, stats)
        stack.push_async_callback(sink.aclose)
        store = await _state(clients, settings, queue, stats)
        observer = Observer(queue, EcsDescriber(clients), store, sink, observer_config(settings), stats)
        if settings.health_port:
            health = HealthServer(stats, observer.health, settings.health_port)
            await health.start()
            stack.push_async_callback(health.stop)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, observer.stop)
        log.info(
            "observing %s; forwarding to %s; task state %s",
            queue.url,
            api_url,
            f"shared in DynamoDB table {settings.state_table}" if settings.state_table else "in memory",
        )
        try:
            await observer.run()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    return observer


async def check(settings: Settings, emit: Callable[[str], None]) -> bool:
    """One line per check, `ok` or the reason; True only if all pass."""
    results: list[bool] = []

    async def step(name: str, probe: Callable[[], Awaitable[str]]) -> None:
        try:
            detail = await probe()
        except Exception as exc:  # every failure becomes a reason on its line
            results.append(False)
            emit(f"FAIL {name}: {type(exc).__name__}: {exc}")
        else:
            results.append(True)
            emit(f"ok   {name}{': ' + detail if detail else ''}")

    async def configuration() -> str:
        settings.require_queue()
        settings.require_prefect()
        return ""

    await step("configuration", configuration)
    if not results[-1]:
        return False
    async with AwsClients() as clients:
        holder: list[SqsQueue] = []

        async def queue() -> str:
            found = await _queue(clients, settings)
            waiting = await found.waiting()
            holder.append(found)
            return f"{found.url} ({waiting} messages waiting)"

        async def receive() -> str:
            if not holder:
                raise RuntimeError("no queue")
            # Peeks without taking: visibility 0 leaves any message for the running observers.
            await holder[0].receive(1, 0, 0)
            return ""

        async def describe() -> str:
            region = settings.queue_region or clients.default_region()
            ecs = await clients.ecs(region)
            try:
                await ecs.describe_tasks(tasks=["0" * 32], include=["TAGS"])
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if "AccessDenied" in code or "Unauthorized" in code or "Unrecognized" in code:
                    raise
                # A probe task in a cluster that may not exist: any answer but a denial shows the permission.
                return f"allowed in {region} ({code} for the probe task)"
            return f"allowed in {region}"

        async def prefect() -> str:
            url = str(settings.prefect_api_url).rstrip("/")
            headers = auth_headers(_secret(settings.prefect_api_key), _secret(settings.prefect_api_auth_string))
            async with httpx.AsyncClient(timeout=10, headers=headers) as http:
                answer = await http.post(f"{url}/events/filter", json={"limit": 1})
            if answer.status_code in (401, 403):
                raise RuntimeError(
                    f"HTTP {answer.status_code}: credentials refused (PREFECT_API_KEY / PREFECT_API_AUTH_STRING)"
                )
            answer.raise_for_status()
            return url

        async def table() -> str:
            if not holder or settings.state_table is None:
                raise RuntimeError("no queue")
            client = await clients.dynamodb(_queue_region(settings, holder[0].url))
            return await check_table(client, settings.state_table)

        await step("queue exists", queue)
        await step("queue can be read", receive)
        await step("ecs:DescribeTasks allowed", describe)
        if settings.state_table is not None:
            await step("state table usable", table)
        await step("Prefect API answers", prefect)
    return all(results)


async def dead_letters(settings: Settings, action: str, limit: int, emit: Callable[[str], None], progress: bool) -> int:
    """`dlq show` or `dlq redrive` for the configured queue's dead-letter queue."""
    settings.require_queue()
    async with AwsClients() as clients:
        queue = await _queue(clients, settings)
        dlq = await find_dead_letter_queue(queue.client, queue.url)
        if action == "show":
            format_entries(await dlq.show(limit), emit)
        else:
            moved = await dlq.redrive(progress)
            emit(f"moved {moved} message(s) from {dlq.url} back to {queue.url}")
    return 0

"""Assembles the observer from settings: the one place that plugs adapters into the pipeline.

`run_service` runs it until SIGTERM; `dead_letters` serves the `dlq` commands.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack

from botocore.exceptions import ClientError, EndpointConnectionError

from ..adapters.aws import AwsClients
from ..adapters.cloudwatch import CloudWatchLogs
from ..adapters.dynamodb import DynamoTaskState
from ..adapters.ecs import EcsDescriber, EcsStopper, EcsTaskDefinitions
from ..adapters.memory import MemoryTaskState
from ..adapters.prefect.client import NotPrefect, PrefectClient, Refused, Unreachable
from ..adapters.prefect.events import PrefectApiSink
from ..adapters.prefect.flow_runs import PrefectFlowRuns
from ..adapters.sqs import SqsQueue
from ..core.sweep import Scope
from ..pipeline.observer import Observer
from ..pipeline.sweep import Sweeper
from ..ports import TaskStateStore
from ..support.redact import redact
from ..support.stats import Stats
from .dlq import find_dead_letter_queue, format_entries
from .errors import explain
from .health import HealthServer, with_dependencies
from .queue_url import account_of, region_of
from .settings import ConfigError, Settings, observer_config

__all__ = [
    "dead_letters",
    "open_queue",
    "prefect_client",
    "prefect_sink",
    "queue_region",
    "region_source",
    "run_service",
    "secret",
]

log = logging.getLogger("ecs_observer")


def secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return str(get()) if get is not None else None


def prefect_client(settings: Settings, api_url: str, stats: Stats | None = None) -> PrefectClient:
    """The one Prefect HTTP client of this process: every route the observer uses goes through it."""
    return PrefectClient(
        api_url,
        api_key=secret(settings.prefect_api_key),
        auth_string=secret(settings.prefect_api_auth_string),
        timeout=settings.http_timeout,
        stats=stats,
    )


def prefect_sink(settings: Settings, api_url: str, stats: Stats | None = None) -> PrefectApiSink:
    return PrefectApiSink(prefect_client(settings, api_url, stats))


async def open_queue(clients: AwsClients, settings: Settings) -> SqsQueue:
    """The queue by URL, or by name through GetQueueUrl (as prefect-aws configures it)."""
    sqs = await clients.sqs(queue_region(settings, settings.queue_url))
    if settings.queue_url:
        return SqsQueue(sqs, settings.queue_url)
    try:
        answer = await sqs.get_queue_url(QueueName=str(settings.queue_name))
    except ClientError as exc:
        if _code(exc) in _NO_QUEUE:
            raise ConfigError(f"ECS_OBSERVER_QUEUE_NAME: no queue named {settings.queue_name!r}") from None
        raise
    except EndpointConnectionError as exc:
        raise ConfigError(f"cannot reach SQS to find queue {settings.queue_name!r}: {exc}") from None
    return SqsQueue(sqs, answer["QueueUrl"])


async def probe_queue(queue: SqsQueue, *, retries: bool = True) -> None:
    """A queue that does not exist, an SQS endpoint that does not answer, or credentials AWS refuses stop
    a command with one line. With `retries` (`run`: its receive loops retry) anything else (throttling, a
    denial while IAM propagates) is a warning; without (a one-shot command), it stops it too."""
    try:
        await queue.waiting()
    except ClientError as exc:
        if _code(exc) in _NO_QUEUE:
            raise ConfigError(f"ECS_OBSERVER_QUEUE_URL: no queue {queue.url}") from None
        if not retries or any(key in _code(exc) for key in _BAD_CREDENTIALS):
            raise
        log.warning("could not read the attributes of queue %s: %s", queue.url, explain(exc))
    except EndpointConnectionError as exc:
        raise ConfigError(f"cannot reach SQS: {exc}") from None


_BAD_CREDENTIALS = ("UnrecognizedClient", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken")


async def probe_prefect(client: PrefectClient, stats: Stats) -> None:
    """As for the queue: refused credentials, or a URL that is not a Prefect API, stop `run` with one
    line; an API that does not answer yet is a warning naming it (its outage, logged once), then retries."""
    answer = await client.probe()
    if isinstance(answer, Refused | NotPrefect):
        raise ConfigError(f"PREFECT_API_URL: {answer.reason}")
    if isinstance(answer, Unreachable):
        stats.dependencies.failed("Prefect", f"{answer.reason}; starting anyway")
    else:
        stats.dependencies.answered("Prefect")


_NO_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def queue_region(settings: Settings, url: str | None) -> str | None:
    """The queue's region (the state table lives beside it); None: the AWS configuration's."""
    return region_source(settings, url)[0]


def region_source(settings: Settings, url: str | None) -> tuple[str | None, str]:
    """The queue's region and where it comes from: the URL, else the setting, else the AWS configuration."""
    if url and (region := region_of(url)) is not None:
        return region, "from the queue URL"
    if settings.queue_region:
        return settings.queue_region, "from ECS_OBSERVER_QUEUE_REGION"
    return None, "from the AWS configuration"


async def _state(clients: AwsClients, settings: Settings, queue: SqsQueue, stats: Stats) -> TaskStateStore:
    if settings.state_table is None:
        return MemoryTaskState(observer_config(settings).cache_size)
    region = queue_region(settings, queue.url) or clients.default_region()
    client = await clients.dynamodb(region)
    try:
        await client.describe_table(TableName=settings.state_table)
    except EndpointConnectionError as exc:
        raise ConfigError(f"ECS_OBSERVER_STATE_TABLE: cannot reach DynamoDB: {exc}") from None
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
        queue = await open_queue(clients, settings)
        await probe_queue(queue)
        stats = Stats()
        client = prefect_client(settings, api_url, stats)
        stack.push_async_callback(client.aclose)
        await probe_prefect(client, stats)
        store = await _state(clients, settings, queue, stats)
        config = observer_config(settings)
        describer, runs = EcsDescriber(clients), PrefectFlowRuns(client)
        observer = Observer(
            queue,
            describer,
            store,
            PrefectApiSink(client),
            config,
            stats,
            runs,
            EcsTaskDefinitions(clients),
            CloudWatchLogs(clients),
        )
        sweeper = None
        if config.sweeps():
            region = queue_region(settings, queue.url) or clients.default_region()
            scope = Scope.of(account_of(queue.url) or await clients.account(), settings.clusters(), region)
            sweeper = Sweeper(observer, runs, describer, store, stats, config, scope, EcsStopper(clients))
        if settings.health_port:
            verdict = with_dependencies(observer.health, stats.dependencies, settings.unhealthy_after)
            health = HealthServer(stats, verdict, settings.health_port, in_flight=lambda: observer.in_flight)
            try:
                await health.start()
            except OSError as exc:
                raise ConfigError(
                    f"ECS_OBSERVER_HEALTH_PORT: cannot serve /healthz on {settings.health_port}: {exc.strerror}"
                ) from None
            stack.push_async_callback(health.stop)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, observer.stop, f"received {signal.Signals(signum).name}")
        region, source = region_source(settings, queue.url)
        log.info(
            "observing %s (region %s, %s); forwarding to %s; task state %s; %s",
            queue.url,
            region or clients.default_region() or "unknown",
            source,
            redact(api_url),
            f"shared in DynamoDB table {settings.state_table}" if settings.state_table else "in memory",
            f"sweeping every {config.sweep_interval:g} s (grace {config.sweep_grace:g} s)"
            if sweeper is not None
            else "no sweep",
        )
        try:
            await asyncio.gather(observer.run(), _beside(observer, sweeper))
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    return observer


async def _beside(observer: Observer, sweeper: Sweeper | None) -> None:
    """The sweep runs beside the receive loops, and stops when they do."""
    if sweeper is None:
        return
    sweeping = asyncio.create_task(sweeper.run())
    try:
        await observer.stopping.wait()
    finally:
        sweeping.cancel()
        await asyncio.gather(sweeping, return_exceptions=True)


async def dead_letters(settings: Settings, action: str, limit: int, emit: Callable[[str], None], progress: bool) -> int:
    """`dlq show` or `dlq redrive` for the configured queue's dead-letter queue."""
    settings.require_queue()
    async with AwsClients() as clients:
        queue = await open_queue(clients, settings)
        await probe_queue(queue, retries=False)
        dlq = await find_dead_letter_queue(queue.client, queue.url)
        if action == "show":
            format_entries(await dlq.show(limit), emit)
        else:
            moved = await dlq.redrive(progress)
            emit(redact(f"moved {moved} message(s) from {dlq.url} back to {queue.url}"))
    return 0

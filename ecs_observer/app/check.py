"""`ecs-observer check`: one line per check, `ok` or the reason, of what `run` needs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

from botocore.exceptions import ClientError

from ..adapters.aws import AwsClients
from ..adapters.dynamodb import check_table
from ..adapters.prefect.client import Reachable
from ..adapters.sqs import SqsQueue
from ..core.sweep import ACTIVE
from ..pipeline.config import ObserverConfig
from ..support.redact import redact
from .dlq import dead_letter_arn
from .errors import OUTAGES, explain
from .service import open_queue, prefect_client, queue_region
from .settings import ConfigError, Settings, observer_config

__all__ = ["check"]

PROBE_LOG_GROUP = "prefect"
PROBE_TASK = "0" * 32  # a task id no task has


class _Failed(Exception):
    """A failed check whose reason is already the whole line."""


_DENIED = ("AccessDenied", "Unauthorized", "Unrecognized")


async def _allowed(region: str | None, probe: Awaitable[object]) -> str:
    """A call on a probe resource that may not exist: any answer but a denial shows the permission."""
    try:
        await probe
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if any(denied in code for denied in _DENIED):
            raise
        return f"allowed in {region} ({code} for the probe)"
    return f"allowed in {region}"


def stops_tasks(config: ObserverConfig) -> bool:
    """Whether the observer may call StopTask: only the sweep stops tasks, and only with a stop feature on."""
    stopping = config.stop_cancelled or config.stop_orphans or config.start_timeout > 0
    return config.sweeps() and stopping


async def check(settings: Settings, emit: Callable[[str], None]) -> bool:
    """One line per check, `ok` or the reason; True only if all pass."""
    results: list[bool] = []
    config = observer_config(settings)

    async def step(name: str, probe: Callable[[], Awaitable[str]]) -> None:
        try:
            detail = await probe()
        except Exception as exc:  # every failure becomes a reason on its line
            results.append(False)
            emit(f"FAIL {name}: {redact(_reason(exc))}")
        else:
            results.append(True)
            emit(f"ok   {name}{': ' + redact(detail) if detail else ''}")

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
            try:
                found = await open_queue(clients, settings)
                waiting = await found.waiting()
            except ConfigError as exc:
                raise _Failed(str(exc)) from None
            except OUTAGES as exc:
                raise _Failed(f"{settings.queue_url or settings.queue_name}: {explain(exc)}") from None
            holder.append(found)
            return f"{found.url} ({waiting} messages waiting)"

        async def dead_letters() -> str:
            if not holder:
                raise _Failed("no queue")
            dlq_arn, _ = await dead_letter_arn(holder[0].client, holder[0].url)
            return dlq_arn

        async def receive() -> str:
            if not holder:
                raise _Failed("no queue")
            # Peeks without taking: visibility 0 leaves any message for the running observers.
            await holder[0].receive(1, 0, 0)
            return ""

        region = settings.queue_region or clients.default_region()

        def ecs_probe(cluster: str | None, call: str) -> Callable[[], Awaitable[str]]:
            """`call` on a task that does not exist, of `cluster` (None: the default cluster of the queue's
            region): ECS answers that there is no such task, IAM refuses only what it does not grant."""

            async def probe() -> str:
                where = cluster.split(":")[3] if cluster else region
                ecs = await clients.ecs(where)
                # The task's ARN, as the sweep names it: IAM evaluates task/<cluster name>/<id> and ecs:cluster.
                task = f"{cluster.replace(':cluster/', ':task/', 1)}/{PROBE_TASK}" if cluster else PROBE_TASK
                on: dict[str, str] = {"cluster": cluster} if cluster else {}
                if call == "StopTask":
                    reason = "ecs-observer check: a probe of a task that does not exist"
                    return await _allowed(where, ecs.stop_task(task=task, reason=reason, **on))
                return await _allowed(where, ecs.describe_tasks(tasks=[task], include=["TAGS"], **on))

            return probe

        async def definitions() -> str:
            ecs = await clients.ecs(region)
            return await _allowed(region, ecs.describe_task_definition(taskDefinition="ecs-observer-check-probe:1"))

        async def crash_logs() -> str:
            logs = await clients.logs(region)
            probe = logs.get_log_events(logGroupName=PROBE_LOG_GROUP, logStreamName="ecs-observer-check", limit=1)
            return f"{await _allowed(region, probe)}, on log group {PROBE_LOG_GROUP!r} (the ECS worker's default)"

        async def prefect() -> str:
            return await _prefect_answers("/events/filter")

        async def flow_runs() -> str:
            if not config.sweeps():
                await _prefect_answers("/flow_runs/filter")
                return ""
            # The sweep's reads: the active runs by state type, a page at a time, and a run's state history
            # (the reschedules it holds; a run id no run has answers an empty one).
            active = sorted(ACTIVE)
            await _prefect_answers(
                "/flow_runs/filter", {"flow_runs": {"state": {"type": {"any_": active}}}, "limit": 1}
            )
            await _prefect_answers("/flow_run_states/", params={"flow_run_id": str(UUID(int=0))})
            return f"as the sweep reads them (runs {', '.join(active)}; their states)"

        async def _prefect_answers(
            path: str, body: dict[str, object] | None = None, params: dict[str, str] | None = None
        ) -> str:
            """The same probe as `run` makes at start; a failure's reason names the URL."""
            client = prefect_client(settings, str(settings.prefect_api_url))
            try:
                answer = await client.probe(path, body, params)
            finally:
                await client.aclose()
            if not isinstance(answer, Reachable):
                raise _Failed(answer.reason)
            return client.api_url

        async def table() -> str:
            if not holder or settings.state_table is None:
                raise _Failed("no queue")
            client = await clients.dynamodb(queue_region(settings, holder[0].url))
            return await check_table(client, settings.state_table)

        await step("queue exists", queue)
        await step("queue has a dead-letter queue", dead_letters)
        await step("queue can be read", receive)
        # As the template grants them: on the tasks of these clusters only (without any, on every cluster).
        clusters: list[str | None] = [*settings.clusters()] or [None]
        calls = ["DescribeTasks", "StopTask"] if stops_tasks(config) else ["DescribeTasks"]
        for call in calls:
            for cluster in clusters:
                await step(f"ecs:{call} allowed{f' on {cluster}' if cluster else ''}", ecs_probe(cluster, call))
        if settings.state_table is not None:
            await step("state table usable", table)
        await step("Prefect API answers", prefect)
        if config.flow_run_states:
            await step("Prefect flow runs readable", flow_runs)
        if config.flow_run_states:
            await step("ecs:DescribeTaskDefinition allowed", definitions)
            if config.crash_log_lines:
                await step("logs:GetLogEvents allowed", crash_logs)
    return all(results)


def _reason(exc: Exception) -> str:
    """A failed check in words: ours as they are, AWS's as every command words them."""
    return str(exc) if isinstance(exc, _Failed) else explain(exc)

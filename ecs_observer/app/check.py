"""`ecs-observer check`: one line per check, `ok` or the reason, of what `run` needs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from botocore.exceptions import ClientError

from ..adapters.aws import AwsClients
from ..adapters.dynamodb import check_table
from ..adapters.prefect.client import auth_headers
from ..adapters.sqs import SqsQueue
from ..support.redact import redact
from .service import open_queue, queue_region, secret
from .settings import Settings

__all__ = ["check"]

PROBE_LOG_GROUP = "prefect"
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


async def check(settings: Settings, emit: Callable[[str], None]) -> bool:
    """One line per check, `ok` or the reason; True only if all pass."""
    results: list[bool] = []

    async def step(name: str, probe: Callable[[], Awaitable[str]]) -> None:
        try:
            detail = await probe()
        except Exception as exc:  # every failure becomes a reason on its line
            results.append(False)
            emit(f"FAIL {name}: {type(exc).__name__}: {redact(str(exc))}")
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
            found = await open_queue(clients, settings)
            waiting = await found.waiting()
            holder.append(found)
            return f"{found.url} ({waiting} messages waiting)"

        async def receive() -> str:
            if not holder:
                raise RuntimeError("no queue")
            # Peeks without taking: visibility 0 leaves any message for the running observers.
            await holder[0].receive(1, 0, 0)
            return ""

        region = settings.queue_region or clients.default_region()

        async def describe() -> str:
            ecs = await clients.ecs(region)
            return await _allowed(region, ecs.describe_tasks(tasks=["0" * 32], include=["TAGS"]))

        def describe_in(cluster: str) -> Callable[[], Awaitable[str]]:
            async def probe() -> str:
                cluster_region = cluster.split(":")[3]
                ecs = await clients.ecs(cluster_region)
                call = ecs.describe_tasks(cluster=cluster, tasks=["0" * 32], include=["TAGS"])
                return await _allowed(cluster_region, call)

            return probe

        async def definitions() -> str:
            ecs = await clients.ecs(region)
            return await _allowed(region, ecs.describe_task_definition(taskDefinition="ecs-observer-check-probe:1"))

        async def crash_logs() -> str:
            logs = await clients.logs(region)
            probe = logs.get_log_events(logGroupName=PROBE_LOG_GROUP, logStreamName="ecs-observer-check", limit=1)
            return f"{await _allowed(region, probe)}, on log group {PROBE_LOG_GROUP!r} (the ECS worker's default)"

        async def prefect() -> str:
            await _prefect_answers("/events/filter", {"limit": 1})
            return str(settings.prefect_api_url).rstrip("/")

        async def flow_runs() -> str:
            await _prefect_answers("/flow_runs/filter", {"limit": 1})
            return ""

        async def _prefect_answers(path: str, body: dict[str, object]) -> None:
            url = str(settings.prefect_api_url).rstrip("/")
            headers = auth_headers(secret(settings.prefect_api_key), secret(settings.prefect_api_auth_string))
            async with httpx.AsyncClient(timeout=10, headers=headers) as http:
                answer = await http.post(f"{url}{path}", json=body)
            if answer.status_code in (401, 403):
                raise RuntimeError(
                    f"HTTP {answer.status_code}: credentials refused (PREFECT_API_KEY / PREFECT_API_AUTH_STRING)"
                )
            answer.raise_for_status()

        async def table() -> str:
            if not holder or settings.state_table is None:
                raise RuntimeError("no queue")
            client = await clients.dynamodb(queue_region(settings, holder[0].url))
            return await check_table(client, settings.state_table)

        await step("queue exists", queue)
        await step("queue can be read", receive)
        if settings.clusters():
            # As the template grants it: on the tasks of these clusters only.
            for cluster in settings.clusters():
                await step(f"ecs:DescribeTasks allowed on {cluster}", describe_in(cluster))
        else:
            await step("ecs:DescribeTasks allowed", describe)
        if settings.state_table is not None:
            await step("state table usable", table)
        await step("Prefect API answers", prefect)
        if settings.flow_run_states:
            await step("Prefect flow runs readable", flow_runs)
            await step("ecs:DescribeTaskDefinition allowed", definitions)
            if settings.crash_log_lines:
                await step("logs:GetLogEvents allowed", crash_logs)
    return all(results)

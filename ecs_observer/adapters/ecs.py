"""ECS: `DescribeTasks` with tags (`ports.TaskDescriber`), `StopTask` (`ports.TaskStopper`), and task
definitions (`ports.TaskDefinitions`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError
from cachetools import LRUCache

from ..core.run_states import LogSource
from ..core.task_view import DescribeFailure, TaskView, view_of
from .aws import AwsClients

__all__ = ["EcsDescriber", "EcsStopper", "EcsTaskDefinitions"]
_MAX_REASON = 255


class EcsDescriber:
    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, TaskView | DescribeFailure | None]:
        client = await self._clients.ecs(region)
        if cluster is None:
            answer = await client.describe_tasks(tasks=list(task_arns), include=["TAGS"])
        else:
            answer = await client.describe_tasks(cluster=cluster, tasks=list(task_arns), include=["TAGS"])
        found: dict[str, TaskView | DescribeFailure | None] = dict.fromkeys(task_arns)
        for task in answer.get("tasks", []):
            view = view_of(task)
            if view is not None and view.task_arn in found:
                found[view.task_arn] = view
        unknown = []
        for failure in answer.get("failures", []):
            reason = str(failure.get("reason", ""))
            if reason == "MISSING":
                continue
            text = f"{reason}: {failure.get('detail', '')}".strip(": ")
            if failure.get("arn") in found:
                found[str(failure["arn"])] = DescribeFailure(text)  # an answer for that task, never "no tags"
            else:
                unknown.append(failure)
        if unknown:
            raise RuntimeError(f"DescribeTasks failures: {unknown[:3]}")  # of the call: retried
        return found


class EcsStopper:
    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    async def stop(self, region: str, cluster: str, task_arn: str, reason: str) -> None:
        client = await self._clients.ecs(region)
        # A task that has stopped already is answered as it is: StopTask is idempotent in ECS.
        await client.stop_task(cluster=cluster, task=task_arn, reason=reason[:_MAX_REASON])


class EcsTaskDefinitions:
    """Each definition is described once (they never change); deregistration is idempotent."""

    def __init__(self, clients: AwsClients, cache_size: int = 1000) -> None:
        self._clients = clients
        self._containers: LRUCache[str, list[Any]] = LRUCache(maxsize=cache_size)
        self._describing: dict[str, asyncio.Task[list[Any]]] = {}  # tasks of one definition crash together
        self.described = 0

    async def log_source(self, arn: str, container: str) -> LogSource | None:
        definitions = self._containers.get(arn)
        if definitions is None:
            describing = self._describing.get(arn)
            if describing is None:
                describing = self._describing[arn] = asyncio.create_task(self._describe(arn))
                describing.add_done_callback(lambda _: self._describing.pop(arn, None))
            definitions = await asyncio.shield(describing)
        chosen = _container(definitions, container)
        if chosen is None:
            return None
        config = chosen.get("logConfiguration") or {}
        options = config.get("options") or {}
        if config.get("logDriver") != "awslogs" or "awslogs-group" not in options:
            return None
        return LogSource(
            group=options["awslogs-group"],
            stream_prefix=options.get("awslogs-stream-prefix", ""),
            region=options.get("awslogs-region"),
            container=str(chosen.get("name", "")),
        )

    async def _describe(self, arn: str) -> list[Any]:
        client = await self._clients.ecs(_region(arn))
        answer = await client.describe_task_definition(taskDefinition=arn)
        self.described += 1
        definitions = list(answer.get("taskDefinition", {}).get("containerDefinitions", []))
        self._containers[arn] = definitions
        return definitions

    async def deregister(self, arn: str) -> None:
        client = await self._clients.ecs(_region(arn))
        try:
            await client.deregister_task_definition(taskDefinition=arn)
        except ClientError as exc:
            message = str(exc.response.get("Error", {}).get("Message", "")).lower()
            if "inactive" not in message:
                raise


def _container(definitions: list[Any], name: str) -> Any:
    """The named container; else the only one."""
    found = next((d for d in definitions if d.get("name") == name), None)
    if found is not None:
        return found
    return definitions[0] if len(definitions) == 1 else None


def _region(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[3] else None

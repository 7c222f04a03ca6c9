"""ECS `DescribeTasks` with tags (`ports.TaskDescriber`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .aws import AwsClients

__all__ = ["EcsDescriber"]


class EcsDescriber:
    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    async def describe(
        self, region: str, cluster: str | None, task_arns: Sequence[str]
    ) -> Mapping[str, Mapping[str, str] | None]:
        client = await self._clients.ecs(region)
        if cluster is None:
            answer = await client.describe_tasks(tasks=list(task_arns), include=["TAGS"])
        else:
            answer = await client.describe_tasks(cluster=cluster, tasks=list(task_arns), include=["TAGS"])
        found: dict[str, Mapping[str, str] | None] = dict.fromkeys(task_arns)
        for task in answer.get("tasks", []):
            arn = task.get("taskArn")
            if arn in found:
                found[arn] = {tag["key"]: tag.get("value", "") for tag in task.get("tags", []) if "key" in tag}
        failures = [f for f in answer.get("failures", []) if f.get("reason") != "MISSING"]
        if failures:
            # Anything but MISSING (for example ACCESS_DENIED) is an error, never "no tags".
            raise RuntimeError(f"DescribeTasks failures: {failures[:3]}")
        return found

"""CloudWatch Logs (`ports.ContainerLogs`): the last lines of a crashed task's container."""

from __future__ import annotations

from datetime import UTC, datetime

from botocore.exceptions import ClientError

from ..core.run_states import LogSource
from .aws import AwsClients

__all__ = ["CloudWatchLogs"]


class CloudWatchLogs:
    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    async def tail(self, source: LogSource, task_id: str, lines: int) -> list[tuple[datetime, str]] | None:
        client = await self._clients.logs(source.region)
        try:
            answer = await client.get_log_events(
                logGroupName=source.group, logStreamName=source.stream(task_id), limit=lines, startFromHead=False
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        events = sorted(answer.get("events", []), key=lambda event: event.get("timestamp", 0))
        return [
            (datetime.fromtimestamp(event.get("timestamp", 0) / 1000, UTC), event.get("message", "").rstrip("\n"))
            for event in events[-lines:]
        ]

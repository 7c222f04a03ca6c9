"""`/healthz` and `/metrics` over HTTP, for the container health check and Prometheus.

Metrics are read from the observer's Stats at scrape time, so the counts are
kept once and the log summaries and `/metrics` always agree; the in-flight
gauge is read from the part that owns the bound (`Observer.in_flight`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..support.dependencies import NEEDED, Dependencies
from ..support.stats import Stats

__all__ = ["HealthServer", "with_dependencies"]

Health = Callable[[], tuple[bool, dict[str, Any]]]


def with_dependencies(health: Health, dependencies: Dependencies, unhealthy_after: float) -> Health:
    """The observer's own verdict (receive loops alive, SQS answering), and each dependency's last answer
    and last error; unhealthy too once one the observer cannot work without (SQS, ECS, Prefect, the state
    table; not CloudWatch Logs, whose crash logs are best-effort) has failed for `unhealthy_after` seconds
    (0: never for that reason)."""

    def verdict() -> tuple[bool, dict[str, Any]]:
        _, details = health()  # unhealthy exactly when it gives a reason
        reasons = [details.pop("reason")] if "reason" in details else []
        if unhealthy_after:
            for name in sorted(NEEDED):
                failing = dependencies.failing_for(name)
                if failing > unhealthy_after:
                    reasons.append(
                        f"{name} has failed for {failing:.0f} s (ECS_OBSERVER_UNHEALTHY_AFTER {unhealthy_after:g} s)"
                    )
        details["dependencies"] = dependencies.report()
        if reasons:
            details["reason"] = "; ".join(reasons)
        return not reasons, details

    return verdict


_COUNTERS = {
    "received": ("messages_received", "SQS messages received"),
    "forwarded": ("events_forwarded", "Events accepted by the Prefect API"),
    "filtered": ("messages_filtered", "State changes of tasks that are not Prefect's"),
    "ignored": ("messages_ignored", "Messages that are not ECS task state changes, deleted"),
    "deduplicated": ("messages_deduplicated", "Changes already forwarded under another event id, deleted"),
    "rejected": ("messages_rejected", "Messages that cannot be processed, left for the dead-letter queue"),
    "invalid_events": ("events_invalid", "Events the Prefect API refused as invalid"),
    "deleted": ("messages_deleted", "Messages deleted from the queue"),
    "describe_calls": ("describe_tasks_calls", "ECS DescribeTasks calls"),
    "described_tasks": ("described_tasks", "Tasks ECS described (not MISSING or failed)"),
    "tag_cache_hits": ("tag_cache_hits", "Tag lookups answered from the cache"),
    "shared_tag_hits": ("shared_tag_hits", "Tag lookups answered by the shared task state (another replica)"),
    "run_logs": ("flow_run_log_posts", "Flow-run log posts: diagnoses and crash logs"),
    "deregistered": ("task_definitions_deregistered", "Task definitions deregistered after their task stopped"),
    "reschedules": ("flow_runs_rescheduled", "Flow runs rescheduled (AwaitingRetry) after a transient start failure"),
    "sweeps": ("sweeps", "Sweeps of Prefect's active runs against their ECS tasks"),
    "sweep_failures": ("sweep_failures", "Sweeps that could not finish (the next one tries again)"),
}


class _StatsCollector(Collector):
    def __init__(self, stats: Stats, in_flight: Callable[[], int]) -> None:
        self._stats = stats
        self._in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        counts = self._stats.counts()
        for field, (name, doc) in _COUNTERS.items():
            yield CounterMetricFamily(f"ecs_observer_{name}", doc, value=counts[field])
        yield GaugeMetricFamily("ecs_observer_in_flight_messages", "Messages held in flight", value=self._in_flight())
        stats = self._stats
        for name, doc, label, counter in (
            ("sqs_calls", "SQS API calls by API", "api", stats.sqs_calls),
            ("retries", "Retried calls by cause", "cause", stats.retries),
            ("sink_errors", "Failed Prefect API requests by status", "status", stats.sink_errors),
            (
                "flow_run_state_proposals",
                "Flow-run state proposals by Prefect's answer",
                "answer",
                stats.state_proposals,
            ),
            ("runs_reconciled", "Flow runs a sweep judged, by outcome", "outcome", stats.reconciled),
            ("tasks_stopped", "ECS tasks stopped by a sweep, by why", "why", stats.tasks_stopped),
            ("dynamodb_calls", "DynamoDB calls for the shared task state, by API", "api", stats.dynamodb_calls),
            (
                "dynamodb_capacity_units",
                "DynamoDB request units (estimated: 1 per item read, 1 per write)",
                "kind",
                stats.dynamodb_units,
            ),
        ):
            family = CounterMetricFamily(f"ecs_observer_{name}", doc, labels=[label])
            for value, n in sorted(counter.items()):
                family.add_metric([value], n)
            yield family
        yield from self._stats.forward_latency.collect()


class HealthServer:
    """Serves `health()` (ok, details) at /healthz, and the stats and `in_flight()` at /metrics."""

    # All interfaces by default: Prometheus scrapes the task from outside the container.
    def __init__(
        self,
        stats: Stats,
        health: Health,
        port: int,
        host: str = "0.0.0.0",  # noqa: S104
        *,
        in_flight: Callable[[], int],
    ) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_StatsCollector(stats, in_flight))
        self._health = health
        self._port = port
        self._host = host
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server  # the bound port, when 0 asked for any free one
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, details = self._health()
        return web.Response(
            status=200 if ok else 503, text=json.dumps({"ok": ok, **details}), content_type="application/json"
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": "text/plain; version=0.0.4"})

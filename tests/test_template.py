"""End to end through the real templates, offline: CloudFormation, EventBridge and SQS in moto, real Prefect."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import aioboto3
import pytest
import yaml
from types_aiobotocore_ecs.type_defs import ContainerDefinitionOutputTypeDef

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.dynamodb import TTL_ATTRIBUTE, check_table
from ecs_observer.adapters.ecs import EcsDescriber
from ecs_observer.adapters.memory import MemoryTaskState
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.adapters.sqs import SqsQueue
from ecs_observer.app.demo.sandbox import deploy_events_stack, put_events
from ecs_observer.app.demo.templates import events_template
from ecs_observer.app.settings import Settings, load_settings, observer_config
from ecs_observer.pipeline.config import ObserverConfig
from ecs_observer.pipeline.observer import Observer

from .servers import PrefectServer
from .test_permissions import ROOT, SERVICE_PARAMETERS, _CloudFormation, allows, task_arn, task_role_policies
from .world import FAST, REGION, Task, depth, replicas, start_tasks


@pytest.fixture
def session(moto_url: str) -> aioboto3.Session:
    return aioboto3.Session(region_name=REGION)


def chained(events: list[dict[str, Any]]) -> bool:
    """Each event of one task follows the one before it (by occurred), the first follows nothing."""
    ordered = sorted(events, key=lambda e: e["occurred"])
    return [e.get("follows") for e in ordered] == [None] + [e["id"] for e in ordered[:-1]]


async def test_template_routes_watched_clusters_to_the_observer(
    aws: AwsClients, session: aioboto3.Session, prefect: PrefectServer
) -> None:
    suffix = uuid.uuid4().hex[:8]
    watched = await start_tasks(aws, 2, cluster=f"watched-{suffix}")
    untagged = await start_tasks(aws, 1, tagged=False, cluster=f"watched-{suffix}")
    elsewhere = await start_tasks(aws, 1, cluster=f"elsewhere-{suffix}")
    watched_arn = watched[0].events[0]["detail"]["clusterArn"]
    async with session.client("cloudformation") as cfn, session.client("events") as bus:
        outputs = await deploy_events_stack(
            cfn, f"events-{suffix}", queue_name=f"q-{suffix}", cluster_arns=[watched_arn]
        )
        await put_events(bus, [e for t in watched + untagged + elsewhere for e in t.events])

    sink = PrefectApiSink(PrefectClient(prefect.api_url))
    queue = SqsQueue(await aws.sqs(REGION), outputs["QueueUrl"])
    observer = Observer(queue, EcsDescriber(aws), MemoryTaskState(1000), sink, replace(FAST, reorder_window=3.0))
    await asyncio.wait_for(observer.run(until_idle=2), timeout=120)
    await sink.aclose()

    # The rule narrowed to the watched cluster: the other cluster's 8 changes never reached the queue.
    assert observer.stats.received >= 24
    assert observer.stats.received == observer.stats.forwarded + observer.stats.filtered
    all_tasks: list[Task] = watched + untagged + elsewhere
    stored = prefect.wait_for_events([t.resource_id for t in all_tasks], count=16)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for event in stored:
        by_task.setdefault(event["resource"]["prefect.resource.id"], []).append(event)
    assert set(by_task) == {t.resource_id for t in watched}
    for task in watched:
        events = by_task[task.resource_id]
        assert len({e["id"] for e in events}) == 8
        assert chained(events)
        assert {r["prefect.resource.id"] for e in events for r in e["related"]} >= {f"prefect.flow-run.{task.run_id}"}
    assert await depth(aws, outputs["QueueUrl"]) == (0, 0)
    assert await depth(aws, outputs["DeadLetterQueueUrl"]) == (0, 0)


async def test_template_without_clusters_routes_every_cluster_to_replicas_sharing_its_table(
    aws: AwsClients, session: aioboto3.Session, prefect: PrefectServer
) -> None:
    suffix = uuid.uuid4().hex[:8]
    tasks = await start_tasks(aws, 1, cluster=f"a-{suffix}") + await start_tasks(aws, 1, cluster=f"b-{suffix}")
    async with session.client("cloudformation") as cfn, session.client("events") as bus:
        outputs = await deploy_events_stack(cfn, f"events-{suffix}", queue_name=f"q-{suffix}")
        await put_events(bus, [e for t in tasks for e in t.events])
    # The template's table is one the observer accepts and uses: two replicas share it.
    table = outputs["StateTableName"]
    assert table == f"q-{suffix}-state"
    dynamodb = await aws.dynamodb(REGION)
    # moto's CloudFormation ignores TimeToLiveSpecification (which `check` would report), so turn it on
    # as the template declares it, on the attribute the observer writes.
    assert (
        f"TimeToLiveSpecification:\n        AttributeName: {TTL_ATTRIBUTE}\n        Enabled: true" in events_template()
    )
    await dynamodb.update_time_to_live(
        TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )
    assert "TTL on 'expires'" in await check_table(dynamodb, table)
    async with replicas(2, outputs["QueueUrl"], outputs["StateTableName"], prefect.api_url) as observers:
        await asyncio.wait_for(asyncio.gather(*(o.run(until_idle=2) for o in observers)), timeout=120)
    stored = prefect.wait_for_events([t.resource_id for t in tasks], count=16)
    assert {e["resource"]["prefect.resource.id"] for e in stored} == {t.resource_id for t in tasks}
    assert len({e["id"] for e in stored}) == 16
    assert all(chained([e for e in stored if e["resource"]["prefect.resource.id"] == t.resource_id]) for t in tasks)


SERVICE_TEMPLATE = (Path(__file__).resolve().parents[1] / "infra" / "service.yaml").read_text()
# The service template's parameters for the sweep, and the settings they reach the container as.
SWEEP_PARAMETERS = {
    "SweepInterval": "sweep_interval",
    "SweepGrace": "sweep_grace",
    "StopCancelled": "stop_cancelled",
    "StopOrphans": "stop_orphans",
    "StartTimeout": "start_timeout",
    "StartRetryDelay": "start_retry_delay",
    "StartRetries": "start_retries",
    "RescheduleInterrupted": "reschedule_interrupted",
}


async def container_settings(session: aioboto3.Session, stack: str, parameters: dict[str, str]) -> Settings:
    """Deploy the service template in moto's CloudFormation; the settings its container's environment makes."""
    return settings_of(await container_definition(session, stack, parameters))


async def container_definition(
    session: aioboto3.Session, stack: str, parameters: dict[str, str]
) -> ContainerDefinitionOutputTypeDef:
    """Deploy the service template in moto's CloudFormation; the observer's container definition."""
    async with session.client("cloudformation") as cfn, session.client("ecs") as ecs:
        await ecs.create_cluster(clusterName=SERVICE_PARAMETERS["ClusterName"])
        await cfn.create_stack(
            StackName=stack,
            TemplateBody=SERVICE_TEMPLATE,
            Capabilities=["CAPABILITY_IAM"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in (SERVICE_PARAMETERS | parameters).items()],
        )
        status = (await cfn.describe_stacks(StackName=stack))["Stacks"][0]["StackStatus"]
        assert status == "CREATE_COMPLETE", status
        resources = (await cfn.list_stack_resources(StackName=stack))["StackResourceSummaries"]
        physical = next(r["PhysicalResourceId"] for r in resources if r["LogicalResourceId"] == "TaskDefinition")
        definition = (await ecs.describe_task_definition(taskDefinition=physical))["taskDefinition"]
    return definition["containerDefinitions"][0]


def settings_of(container: ContainerDefinitionOutputTypeDef) -> Settings:
    """The settings a container definition's environment makes."""
    # moto leaves an AWS::NoValue in the list as null, where CloudFormation drops it.
    environment = [e for e in container["environment"] if e]
    names = [e["name"] for e in environment]
    assert len(names) == len(set(names)), names
    with pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.startswith("ECS_OBSERVER_")]:
            env.delenv(name)
        for entry in environment:
            env.setenv(entry["name"], entry["value"])
        return load_settings()


async def test_service_template_passes_the_sweep_settings_to_the_container(session: aioboto3.Session) -> None:
    suffix = uuid.uuid4().hex[:8]
    # Its defaults are the observer's.
    defaults = await container_settings(session, f"service-{suffix}", {})
    for field in SWEEP_PARAMETERS.values():
        assert getattr(defaults, field) == getattr(ObserverConfig(), field), field
    # Each parameter reaches its setting.
    given = {
        "SweepInterval": "120",
        "SweepGrace": "45",
        "StopCancelled": "false",
        "StopOrphans": "true",
        "StartTimeout": "600",
        "StartRetryDelay": "15",
        "StartRetries": "5",
        "RescheduleInterrupted": "true",
    }
    settings = await container_settings(session, f"service-given-{suffix}", given)
    assert {field: getattr(settings, field) for field in SWEEP_PARAMETERS.values()} == {
        "sweep_interval": 120,
        "sweep_grace": 45,
        "stop_cancelled": False,
        "stop_orphans": True,
        "start_timeout": 600,
        "start_retry_delay": 15,
        "start_retries": 5,
        "reschedule_interrupted": True,
    }


def test_service_template_grants_stop_task_on_the_watched_clusters_only() -> None:
    account, elsewhere = "123456789012", "210987654321"
    a, b, c = (f"arn:aws:ecs:us-east-1:{account}:cluster/{name}" for name in ("a", "b", "c"))
    watched = task_role_policies({"WatchedClusterArns": f"{a},{b}"}, account)
    for cluster in (a, b):
        assert allows(watched, "ecs:StopTask", task_arn(cluster), {"ecs:cluster": cluster}), cluster
    assert not allows(watched, "ecs:StopTask", task_arn(c), {"ecs:cluster": c})
    # Both the resource and the condition name the clusters: either alone refuses another cluster's task.
    assert not allows(watched, "ecs:StopTask", task_arn(c), {"ecs:cluster": a})
    assert not allows(watched, "ecs:StopTask", task_arn(a), {"ecs:cluster": c})
    # Without clusters, the observer watches every cluster of its account and region: StopTask goes as far.
    every = task_role_policies({}, account)
    assert allows(every, "ecs:StopTask", task_arn(c), {"ecs:cluster": c})
    other_account = c.replace(account, elsewhere)
    assert not allows(every, "ecs:StopTask", task_arn(other_account), {"ecs:cluster": other_account})
    other_region = c.replace("us-east-1", "eu-west-1")
    assert not allows(every, "ecs:StopTask", task_arn(other_region), {"ecs:cluster": other_region})
    # No grant when nothing stops tasks: the sweep off, or every stop feature off.
    for off in (
        {"SweepInterval": "0"},
        {"StopCancelled": "false"},
        {"SweepInterval": "0", "StopOrphans": "true", "StartTimeout": "600"},
    ):
        policies = task_role_policies({"WatchedClusterArns": a} | off, account)
        assert not allows(policies, "ecs:StopTask", task_arn(a), {"ecs:cluster": a}), off
        assert allows(policies, "ecs:DescribeTasks", task_arn(a), {"ecs:cluster": a}), off
    for on in ({"StopCancelled": "false", "StopOrphans": "true"}, {"StopCancelled": "false", "StartTimeout": "600"}):
        policies = task_role_policies({"WatchedClusterArns": a} | on, account)
        assert allows(policies, "ecs:StopTask", task_arn(a), {"ecs:cluster": a}), on


def rejected(parameters: dict[str, str]) -> list[str]:
    """The service template's Rules that reject these parameters (the rest at their defaults), as
    CloudFormation evaluates them before it makes anything: Equals, Contains and Ref are all they use."""
    template = yaml.load((ROOT / "infra" / "service.yaml").read_text(), Loader=_CloudFormation)  # noqa: S506
    given = {name: str(p.get("Default", "")) for name, p in template["Parameters"].items()} | parameters

    def value(node: Any) -> Any:
        if isinstance(node, dict) and "Ref" in node:
            return given[node["Ref"]]
        if isinstance(node, dict) and "Equals" in node:
            left, right = (value(n) for n in node["Equals"])
            return str(left) == str(right)
        if isinstance(node, dict) and "Contains" in node:
            options, item = node["Contains"]
            return value(item) in [value(o) for o in options]
        return node

    return [
        name
        for name, rule in template.get("Rules", {}).items()
        if value(rule.get("RuleCondition", True)) and not all(value(a["Assert"]) for a in rule["Assertions"])
    ]


def test_service_template_rules_reject_a_scaling_maximum_below_the_desired_count() -> None:
    assert rejected({}) == []  # the defaults: no scaling
    assert rejected({"AutoScalingMaxCount": "1"}) == ["ScalingMaximum1"]  # empty: 2 with the state table
    assert rejected({"AutoScalingMaxCount": "2"}) == []
    assert rejected({"AutoScalingMaxCount": "3", "DesiredCount": "4"}) == ["ScalingMaximum3"]
    assert rejected({"AutoScalingMaxCount": "20", "DesiredCount": "20"}) == []
    assert rejected({"AutoScalingMaxCount": "0", "DesiredCount": "9"}) == []  # scaling off: any count
    # Every maximum the parameter allows has its rule.
    assert all(rejected({"AutoScalingMaxCount": str(m), "DesiredCount": str(m + 1)}) for m in range(1, 21))


def test_service_template_deregisters_task_definitions_in_its_region_only() -> None:
    """IAM takes no resource for DeregisterTaskDefinition: the grant goes as far as IAM narrows it."""
    policies = task_role_policies({})
    definition = "arn:aws:ecs:{}:123456789012:task-definition/prefect-flow:3"
    here = definition.format(REGION)
    assert allows(policies, "ecs:DeregisterTaskDefinition", here, {"aws:RequestedRegion": REGION})
    elsewhere = definition.format("eu-west-1")
    assert not allows(policies, "ecs:DeregisterTaskDefinition", elsewhere, {"aws:RequestedRegion": "eu-west-1"})


async def test_service_template_drains_within_the_stop_timeout_it_is_given(session: aioboto3.Session) -> None:
    """ECS kills the container when its stop timeout runs out: the drain the template sets ends 5 s before."""
    suffix = uuid.uuid4().hex[:8]
    for given, drain in (({}, 25), ({"StopTimeout": "60"}, 55)):
        container = await container_definition(session, f"service-stop-{drain}-{suffix}", given)
        settings = settings_of(container)
        assert (container["stopTimeout"], settings.stop_timeout, observer_config(settings).drain_timeout) == (
            drain + 5,
            drain + 5,
            drain,
        )
    # Every stop timeout the parameter allows has its drain, shorter, and the observer starts with the pair.
    template = yaml.load(SERVICE_TEMPLATE, Loader=_CloudFormation)  # noqa: S506
    allowed = template["Parameters"]["StopTimeout"]["AllowedValues"]
    assert max(int(stop) for stop in allowed) <= 120  # Fargate's longest
    for stop in allowed:
        drain = template["Mappings"]["DrainTimeouts"][stop]["Seconds"]
        assert int(stop) - int(drain) == 5, stop
        assert observer_config(load_settings(stop_timeout=str(stop), drain_timeout=drain)).drain_timeout == int(drain)

"""The service template's task role against the AWS calls the observer and `check` really make.

moto does not enforce IAM, so the calls are recorded by a proxy in front of it while
the observer goes through a task's whole failed life (tags, shared state, flow-run
states, crash logs, deregistration) and `check` runs; then every one must be an
action the template allows, and every action it allows must be one of them.
A denial is injected by the proxy, as IAM would answer for a cluster not granted; and
the policies, as CloudFormation makes them from the template's parameters (moto's
evaluation of its conditions and functions), must allow the calls on the granted
cluster's tasks and refuse those the proxy refuses.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import aioboto3
import yaml
from moto.cloudformation.parsing import ResourceMap, clean_json
from moto.cloudformation.utils import yaml_tag_constructor

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.cloudwatch import CloudWatchLogs
from ecs_observer.adapters.dynamodb import DynamoTaskState
from ecs_observer.adapters.ecs import EcsDescriber, EcsStopper, EcsTaskDefinitions
from ecs_observer.adapters.prefect.client import PrefectClient
from ecs_observer.adapters.prefect.events import PrefectApiSink
from ecs_observer.adapters.prefect.flow_runs import PrefectFlowRuns
from ecs_observer.adapters.sqs import SqsQueue
from ecs_observer.app.demo.samples import lifecycle
from ecs_observer.app.demo.sandbox import start_cluster
from ecs_observer.pipeline.observer import Observer
from ecs_observer.support.stats import Stats

from .faults.proxy import Fault, FaultProxy
from .runs import history, make_flow_run
from .servers import PrefectServer
from .world import FAST, REGION, make_queue, make_table, send

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("ecs-observer"))
SERVICES = {"AmazonSQS": "sqs", "AmazonEC2ContainerServiceV20141113": "ecs", "DynamoDB_20120810": "dynamodb"}
SERVICES["Logs_20140328"] = "logs"
BATCH_ACTIONS = {"DeleteMessageBatch": "DeleteMessage", "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}


class _CloudFormation(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (`!Ref`, `!Sub`, ...) read as `{tag: value}`."""


def _tagged(loader: yaml.SafeLoader, tag: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        return {tag: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {tag: loader.construct_sequence(node, deep=True)}
    assert isinstance(node, yaml.MappingNode)
    return {tag: loader.construct_mapping(node, deep=True)}


_CloudFormation.add_multi_constructor("!", _tagged)


def granted() -> set[str]:
    """The actions the task role's policies allow (its inline policies and the policies attached to it)."""
    resources = yaml.load((ROOT / "infra" / "service.yaml").read_text(), Loader=_CloudFormation)["Resources"]  # noqa: S506
    documents = [p["PolicyDocument"] for p in resources["TaskRole"]["Properties"]["Policies"]]
    documents += [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::IAM::RolePolicy" and r["Properties"]["RoleName"] == {"Ref": "TaskRole"}
    ]
    actions: set[str] = set()
    for document in documents:
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow"
            found = statement["Action"]
            actions |= {found} if isinstance(found, str) else set(found)
    return actions


class _MotoCloudFormation(yaml.SafeLoader):
    """YAML with the short tags read as moto's CloudFormation reads them (`{"Fn::Sub": ...}`)."""


_MotoCloudFormation.add_multi_constructor("", yaml_tag_constructor)

# The parameters the service template requires, as any deployment gives them.
SERVICE_PARAMETERS = {
    "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ecs-observer:0.1.0",
    "ClusterName": "platform",
    "QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/ecs-observer-events",
    "QueueArn": "arn:aws:sqs:us-east-1:123456789012:ecs-observer-events",
    "PrefectApiUrl": "http://prefect:4200/api",
    "Subnets": "subnet-0123456789abcdef0",
    "SecurityGroups": "sg-0123456789abcdef0",
}


def task_role_policies(parameters: Mapping[str, str], account: str = "123456789012") -> list[dict[str, Any]]:
    """The task role's policy documents as a stack of the service template with these parameters has them:
    its conditions and functions evaluated by moto's CloudFormation (which cannot create an
    AWS::IAM::RolePolicy, but evaluates one as it would)."""
    template = yaml.load((ROOT / "infra" / "service.yaml").read_text(), Loader=_MotoCloudFormation)  # noqa: S506
    stack = f"arn:aws:cloudformation:{REGION}:{account}:stack/ecs-observer/1"
    resolved = ResourceMap(
        stack, "ecs-observer", SERVICE_PARAMETERS | dict(parameters), {}, REGION, account, template, None
    )
    resolved.load()
    resources = template["Resources"]
    documents = [p["PolicyDocument"] for p in resources["TaskRole"]["Properties"]["Policies"]]
    documents += [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::IAM::RolePolicy"
        and r["Properties"]["RoleName"] == {"Ref": "TaskRole"}
        and ("Condition" not in r or resolved.lazy_condition_map[r["Condition"]])
    ]
    return [clean_json(document, resolved) for document in documents]


def allows(documents: list[dict[str, Any]], action: str, resource: str, context: Mapping[str, str]) -> bool:
    """IAM's answer for one call (Allow statements only, as the template has): the action, the resource
    ARN and every condition must match, `*` and `?` as IAM reads them."""

    def listed(value: str | list[str]) -> list[str]:
        return [value] if isinstance(value, str) else value

    for document in documents:
        for statement in document["Statement"]:
            if not any(fnmatchcase(action, a) for a in listed(statement["Action"])):
                continue
            if not any(fnmatchcase(resource, r) for r in listed(statement["Resource"])):
                continue
            conditions = statement.get("Condition") or {}
            assert set(conditions) <= {"ArnEquals", "ArnLike", "StringEquals"}, conditions  # the operators this knows
            if all(
                key in context and any(fnmatchcase(context[key], v) for v in listed(values))
                for keys in conditions.values()
                for key, values in keys.items()
            ):
                return True
    return False


def task_arn(cluster_arn: str, task_id: str = "0" * 32) -> str:
    return f"{cluster_arn.replace(':cluster/', ':task/', 1)}/{task_id}"


def as_iam(target: str) -> str:
    service, action = target.split(".", 1)
    return f"{SERVICES[service]}:{BATCH_ACTIONS.get(action, action)}"


async def test_the_task_role_allows_exactly_what_the_observer_and_check_call(
    aws: AwsClients, moto_url: str, prefect: PrefectServer
) -> None:
    queue_url, _ = await make_queue(aws)
    table = await make_table(aws)
    ecs, logs = await aws.ecs(REGION), await aws.logs(REGION)
    cluster = await start_cluster(ecs, "granted")
    run_id = make_flow_run(prefect, "PENDING")
    tags: list[Any] = [
        {"key": "prefect.io/flow-run-id", "value": run_id},
        {"key": "prefect.io/degregister-task-definition", "value": "true"},
    ]
    arn = await cluster.run_task(ecs, tags)
    # A task whose run was cancelled, that the sweep stops (ECS_OBSERVER_STOP_CANCELLED, on by default).
    cancelled = await cluster.run_task(
        ecs, [{"key": "prefect.io/flow-run-id", "value": make_flow_run(prefect, "CANCELLING")}]
    )
    groups = (await logs.describe_log_groups(logGroupNamePrefix="prefect"))["logGroups"]
    if not any(group.get("logGroupName") == "prefect" for group in groups):
        await logs.create_log_group(logGroupName="prefect")
    stream = f"prefect/prefect/{arn.rsplit('/', 1)[1]}"
    await logs.create_log_stream(logGroupName="prefect", logStreamName=stream)
    await logs.put_log_events(
        logGroupName="prefect", logStreamName=stream, logEvents=[{"timestamp": 0, "message": "x"}]
    )
    events = lifecycle(
        arn,
        datetime.now(UTC) - timedelta(minutes=5),
        statuses=("PROVISIONING", "PENDING", "STOPPED"),
        cluster_arn=cluster.arn,
        task_definition_arn=cluster.task_definition_arn,
        exit_code=1,
    )
    await send(aws, queue_url, [json.dumps(e) for e in events])

    proxy = await FaultProxy(moto_url).start()
    other = cluster.arn.replace(":cluster/granted", ":cluster/not-granted")
    for operation in ("DescribeTasks", "StopTask"):
        denied = {"__type": "AccessDeniedException", "message": f"not authorized to perform ecs:{operation} on {other}"}
        proxy.refuse(
            operation,
            other.encode(),
            Fault(
                "status",
                status=400,
                body=json.dumps(denied).encode(),
                headers=(("Content-Type", "application/x-amz-json-1.1"),),
            ),
        )
    client = PrefectClient(prefect.api_url)
    try:
        async with AwsClients(aioboto3.Session(region_name=REGION), endpoint_url=proxy.url) as clients:
            stats = Stats()
            observer = Observer(
                SqsQueue(await clients.sqs(REGION), queue_url),
                EcsDescriber(clients),
                DynamoTaskState(await clients.dynamodb(REGION), table, stats),
                PrefectApiSink(client),
                FAST,
                stats,
                PrefectFlowRuns(client),
                EcsTaskDefinitions(clients),
                CloudWatchLogs(clients),
            )
            await asyncio.wait_for(observer.run(until_idle=3), timeout=120)
            # The sweep's stop, through the adapter it stops with.
            await EcsStopper(clients).stop(REGION, cluster.arn, cancelled, "ecs-observer: flow run is Cancelling")
        endpoints = {f"AWS_ENDPOINT_URL_{name}": proxy.url for name in ("SQS", "ECS", "DYNAMODB", "CLOUDWATCH_LOGS")}
        env = (
            {k: v for k, v in os.environ.items() if not k.startswith("ECS_OBSERVER_")}
            | endpoints
            | {
                "ECS_OBSERVER_QUEUE_URL": queue_url,
                "PREFECT_API_URL": prefect.api_url,
                "ECS_OBSERVER_STATE_TABLE": table,
                "ECS_OBSERVER_WATCHED_CLUSTERS": f"{cluster.arn},{other}",
            }
        )
        process = await asyncio.create_subprocess_exec(
            EXE, "check", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    finally:
        await client.aclose()
        await proxy.stop()
    assert history(prefect, run_id)[-1] == ("CRASHED", "Crashed")
    assert stats.deregistered == 1
    stopped = (await ecs.describe_tasks(cluster=cluster.arn, tasks=[cancelled]))["tasks"][0]
    assert (stopped["lastStatus"], stopped.get("stoppedReason")) == ("STOPPED", "ecs-observer: flow run is Cancelling")
    # check probes the clusters the template grants, and names the one IAM refuses; on the defaults the sweep
    # is on and stops cancelled runs' tasks, so it probes StopTask and the sweep's reads of Prefect too.
    lines = out.decode().splitlines()
    for operation in ("DescribeTasks", "StopTask"):
        assert any(line.startswith(f"ok   ecs:{operation} allowed on {cluster.arn}: ") for line in lines), lines
        assert any(line.startswith(f"FAIL ecs:{operation} allowed on {other}: ") for line in lines), lines
    assert "ok   Prefect flow runs readable: as the sweep reads them (runs CANCELLING, PENDING, RUNNING" in out.decode()
    assert process.returncode == 1
    # As IAM would answer from the template's policies with the granted cluster watched: the calls the proxy
    # passed on that cluster's tasks are allowed, those it refused on the other cluster are refused.
    policies = task_role_policies({"WatchedClusterArns": cluster.arn}, account=cluster.arn.split(":")[4])
    for action in ("ecs:DescribeTasks", "ecs:StopTask"):
        for task in (arn, cancelled, task_arn(cluster.arn)):
            assert allows(policies, action, task, {"ecs:cluster": cluster.arn}), (action, task)
        assert not allows(policies, action, task_arn(other), {"ecs:cluster": other}), action
    used = {as_iam(target) for target in proxy.targets}
    assert used <= granted(), used - granted()
    # Nothing granted that nothing calls: GetQueueUrl serves a queue given by name, ChangeMessageVisibility
    # messages held through an outage (test_aws_faults.py and test_prefect_faults.py make those calls).
    assert granted() - used == {"sqs:GetQueueUrl", "sqs:ChangeMessageVisibility"}

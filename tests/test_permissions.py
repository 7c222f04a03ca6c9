"""The service template's task role against the AWS calls the observer and `check` really make.

moto does not enforce IAM, so the calls are recorded by a proxy in front of it while
the observer goes through a task's whole failed life (tags, shared state, flow-run
states, crash logs, deregistration) and `check` runs; then every one must be an
action the template allows, and every action it allows must be one of them.
A denial is injected by the proxy, as IAM would answer for a cluster not granted.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aioboto3
import yaml

from ecs_observer.adapters.aws import AwsClients
from ecs_observer.adapters.cloudwatch import CloudWatchLogs
from ecs_observer.adapters.dynamodb import DynamoTaskState
from ecs_observer.adapters.ecs import EcsDescriber, EcsTaskDefinitions
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
    denied = {"__type": "AccessDeniedException", "message": f"not authorized to perform ecs:DescribeTasks on {other}"}
    proxy.refuse(
        "DescribeTasks",
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
    # check probes the clusters the template grants, and names the one IAM refuses.
    lines = out.decode().splitlines()
    assert f"ok   ecs:DescribeTasks allowed on {cluster.arn}" in "\n".join(lines)
    assert any(line.startswith(f"FAIL ecs:DescribeTasks allowed on {other}: ") for line in lines), lines
    assert process.returncode == 1
    used = {as_iam(target) for target in proxy.targets}
    assert used <= granted(), used - granted()
    # Nothing granted that nothing calls: GetQueueUrl serves a queue given by name, ChangeMessageVisibility
    # messages held through an outage (test_aws_faults.py and test_prefect_faults.py make those calls).
    assert granted() - used == {"sqs:GetQueueUrl", "sqs:ChangeMessageVisibility"}

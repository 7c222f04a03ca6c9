"""A small AWS world in moto, the same for the demo and the tests.

Shipped in the package because `ecs-observer demo` builds its world with it at
run time (moto itself is the optional `demo` extra); the tests and the
benchmarks reuse it.

Deploys the real events template, starts ECS tasks with tags, and puts their
state changes through EventBridge, so that the template's rule, not a shortcut,
decides what reaches the queue.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from .templates import events_template

if TYPE_CHECKING:
    from types_aiobotocore_cloudformation.client import CloudFormationClient
    from types_aiobotocore_ecs.client import ECSClient
    from types_aiobotocore_ecs.type_defs import TagTypeDef
    from types_aiobotocore_events.client import EventBridgeClient

__all__ = ["Cluster", "deploy_events_stack", "free_port", "put_events", "start_cluster"]


MOTO_ACCOUNT = "123456789012"  # the account moto answers for


async def hold_tasks(endpoint: str, *, hold: bool = True) -> None:
    """moto's state manager keeps tasks RUNNING until StopTask (else DescribeTasks may move them on)."""
    path, body = (
        ("set-transition", {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000}})
        if hold
        else ("unset-transition", {"model_name": "ecs::task"})
    )
    async with httpx.AsyncClient(timeout=10) as client:
        (await client.post(f"{endpoint}/moto-api/state-manager/{path}", json=body)).raise_for_status()


def free_port() -> int:
    """A free port on loopback, for moto or a Prefect server started in the background."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Cluster:
    arn: str
    name: str
    task_definition_arn: str

    async def run_task(self, ecs: ECSClient, tags: Sequence[TagTypeDef]) -> str:
        answer = await ecs.run_task(
            cluster=self.name, taskDefinition=self.task_definition_arn, launchType="FARGATE", tags=list(tags)
        )
        return answer["tasks"][0]["taskArn"]


async def start_cluster(ecs: ECSClient, name: str) -> Cluster:
    """A cluster and a task definition without awsvpc (moto's RunTask fails on awsvpc), logging as the worker's do."""
    arn = (await ecs.create_cluster(clusterName=name))["cluster"]["clusterArn"]
    task_definition = await ecs.register_task_definition(
        family="prefect-flow",
        containerDefinitions=[
            {
                "name": "prefect",
                "image": "prefecthq/prefect:3-latest",
                "memory": 512,
                # As the Prefect ECS worker configures it.
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": "prefect",
                        "awslogs-region": "us-east-1",
                        "awslogs-stream-prefix": "prefect",
                    },
                },
            }
        ],
    )
    return Cluster(arn, name, task_definition["taskDefinition"]["taskDefinitionArn"])


async def deploy_events_stack(
    cfn: CloudFormationClient, stack_name: str, *, queue_name: str, cluster_arns: Sequence[str] = ()
) -> dict[str, str]:
    """Create the events stack from infra/events.yaml and answer its outputs."""
    await cfn.create_stack(
        StackName=stack_name,
        TemplateBody=events_template(),
        Parameters=[
            {"ParameterKey": "QueueName", "ParameterValue": queue_name},
            {"ParameterKey": "ClusterArns", "ParameterValue": ",".join(cluster_arns)},
        ],
    )
    stack = (await cfn.describe_stacks(StackName=stack_name))["Stacks"][0]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise RuntimeError(f"stack {stack_name}: {stack['StackStatus']} {stack.get('StackStatusReason', '')}")
    return {
        o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", []) if "OutputKey" in o and "OutputValue" in o
    }


async def put_events(events: EventBridgeClient, envelopes: Sequence[dict[str, Any]]) -> None:
    """Put EventBridge envelopes on the default bus, as ECS does; EventBridge gives each its own id."""
    for offset in range(0, len(envelopes), 10):
        batch = envelopes[offset : offset + 10]
        answer = await events.put_events(
            Entries=[
                {
                    "Source": e["source"],
                    "DetailType": e["detail-type"],
                    "Detail": json.dumps(e["detail"]),
                    "Resources": e.get("resources", []),
                    "Time": datetime.fromisoformat(e["time"].replace("Z", "+00:00")),
                }
                for e in batch
            ]
        )
        if answer.get("FailedEntryCount"):
            raise RuntimeError(f"PutEvents failed: {answer['Entries']}")

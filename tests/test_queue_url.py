"""The queue's region, from every form of SQS queue URL."""

from __future__ import annotations

import pytest

from ecs_observer.app.queue_url import region_of
from ecs_observer.app.service import region_source
from ecs_observer.app.settings import load_settings

URLS = [
    ("https://sqs.us-east-1.amazonaws.com/123456789012/ecs-events", "us-east-1"),
    ("https://sqs.eu-central-2.amazonaws.com/123456789012/ecs-events.fifo", "eu-central-2"),
    ("https://eu-west-1.queue.amazonaws.com/123456789012/ecs-events", "eu-west-1"),
    ("https://queue.amazonaws.com/123456789012/ecs-events", "us-east-1"),
    ("https://vpce-0a1b2c3d4e5f6a7b8-abcdefgh.sqs.ap-southeast-2.vpce.amazonaws.com/123456789012/q", "ap-southeast-2"),
    ("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/ecs-events", "cn-north-1"),
    ("https://cn-northwest-1.queue.amazonaws.com.cn/123456789012/q", "cn-northwest-1"),
    ("https://sqs.us-gov-west-1.amazonaws.com/123456789012/ecs-events", "us-gov-west-1"),
    ("https://sqs-fips.us-gov-east-1.amazonaws.com/123456789012/q", "us-gov-east-1"),
    ("https://sqs.us-east-2.api.aws/123456789012/q", "us-east-2"),
    ("http://127.0.0.1:4566/000000000000/ecs-events", None),  # moto, LocalStack: the configuration's region
    ("http://localhost:5000/queue/ecs-events", None),
]


@pytest.mark.parametrize(("url", "region"), URLS)
def test_region_of_every_url_form(url: str, region: str | None) -> None:
    assert region_of(url) == region


def test_the_url_then_the_setting_then_the_aws_configuration() -> None:
    url = "https://eu-west-1.queue.amazonaws.com/123456789012/q"
    assert region_source(load_settings(queue_url=url), url) == ("eu-west-1", "from the queue URL")
    local = "http://127.0.0.1:4566/000000000000/q"
    given = load_settings(queue_url=local, queue_region="ca-central-1")
    assert region_source(given, local) == ("ca-central-1", "from ECS_OBSERVER_QUEUE_REGION")
    assert region_source(load_settings(queue_url=local), local) == (None, "from the AWS configuration")

"""The region of an SQS queue, from its URL, for every form SQS uses."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["account_of", "region_of"]

_REGION = r"(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)"
_FORMS = (
    # sqs.<region>.amazonaws.com(.cn), sqs-fips.<region>.amazonaws.com, sqs.<region>.api.aws (dual stack),
    # vpce-<id>.sqs.<region>.vpce.amazonaws.com (a VPC endpoint)
    re.compile(rf"^(?:.+\.)?sqs(?:-fips)?\.{_REGION}\.(?:vpce\.)?(?:amazonaws\.com(?:\.cn)?|api\.aws)$"),
    # the legacy <region>.queue.amazonaws.com
    re.compile(rf"^{_REGION}\.queue\.amazonaws\.com(?:\.cn)?$"),
)
_US_EAST_1 = "queue.amazonaws.com"  # the oldest form names no region: it is us-east-1


def region_of(url: str) -> str | None:
    """The region the URL names; None for an endpoint that names none (moto, LocalStack, a proxy)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == _US_EAST_1:
        return "us-east-1"
    for form in _FORMS:
        if (match := form.match(host)) is not None:
            return match["region"]
    return None


def account_of(url: str) -> str | None:
    """The account that owns the queue (the URL's first path segment, when it is an account id)."""
    first = urlsplit(url).path.strip("/").split("/", 1)[0]
    return first if re.fullmatch(r"\d{12}", first) else None

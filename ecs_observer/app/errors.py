"""A failed call to AWS or Prefect in one line: what failed, where, and what to check. For the commands'
last resort (never a traceback for an operator's mistake or an outage) and for `check`'s reasons."""

from __future__ import annotations

import httpx
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from ..support.redact import redact

__all__ = ["OUTAGES", "explain"]

# What a command may meet at start when a service is down, refusing or misconfigured.
OUTAGES = (BotoCoreError, ClientError, httpx.HTTPError)

_CREDENTIALS = ("UnrecognizedClient", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken")
_DENIED = ("AccessDenied", "Unauthorized", "NotAuthorized")
_THROTTLED = ("Throttl", "RequestLimitExceeded", "TooManyRequests", "SlowDown")


def explain(exc: BaseException) -> str:
    """One line, credentials in URLs redacted."""
    return redact(_explain(exc))


def _explain(exc: BaseException) -> str:
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach AWS at {exc.kwargs.get('endpoint_url')}: check the network and AWS_ENDPOINT_URL_* if set"
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials: set a profile, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a task role"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        what = f"{exc.operation_name} failed with {code}: {message}".rstrip(": ")
        if any(key in code for key in _CREDENTIALS):
            return f"{what}: AWS refuses the credentials: check the profile, keys or task role"
        if any(key in code for key in _DENIED):
            return f"{what}: check the IAM policy of the role (README, 'Running it', lists what it needs)"
        if any(key in code for key in _THROTTLED):
            return f"{what}: AWS throttles the account; try again in a moment"
        return what
    if isinstance(exc, BotoCoreError):
        return f"AWS call failed: {exc}: check the network and AWS_ENDPOINT_URL_* if set"
    if isinstance(exc, httpx.HTTPError):
        url = exc.request.url if _has_request(exc) else "the Prefect API"
        return f"request to {url} failed: {type(exc).__name__} {exc}: check PREFECT_API_URL and the network"
    return f"{type(exc).__name__}: {exc}"


def _has_request(exc: httpx.HTTPError) -> bool:
    try:
        exc.request  # noqa: B018  # raises when the error has no request
    except RuntimeError:
        return False
    return True

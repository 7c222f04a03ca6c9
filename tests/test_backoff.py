"""The one retry policy: each retry is told to the hooks once, with its cause; nothing else counts."""

from __future__ import annotations

import pytest

from ecs_observer.support.backoff import Answered, AskAgain, Backoff, Retrying
from ecs_observer.support.stats import Stats


async def test_each_retry_is_counted_once_by_cause_and_logged_with_what() -> None:
    stats = Stats()
    seen: list[Retrying | Answered] = []
    backoff = Backoff(0.001, 0.002).hooked(stats.called).hooked(stats.called).hooked(seen.append)
    failures = iter([OSError("reset"), OSError("reset")])

    async def flaky() -> str:
        if (failure := next(failures, None)) is not None:
            raise failure
        return "answer"

    assert await backoff.call("describe_tasks", flaky, what="DescribeTasks") == "answer"
    assert stats.retries == {"describe_tasks": 2}  # the hook was added twice, and counts once
    assert [(r.cause, r.attempt, r.what) for r in seen if isinstance(r, Retrying)] == [
        ("describe_tasks", 1, "DescribeTasks"),
        ("describe_tasks", 2, "DescribeTasks"),
    ]
    assert seen[-1] == Answered("describe_tasks")


async def test_what_is_not_retried_or_the_last_attempt_is_not_counted_as_a_retry() -> None:
    stats = Stats()
    backoff = Backoff(0.001, 0.002).hooked(stats.called)

    async def refused() -> None:
        raise KeyError("no")

    with pytest.raises(KeyError):
        await backoff.call("dynamodb", refused, on=OSError)
    assert stats.retries == {}

    async def down() -> None:
        raise OSError("down")

    with pytest.raises(OSError, match="down"):
        await backoff.call("delete", down, limit=3)
    assert stats.retries == {"delete": 2}  # three attempts, two retries


async def test_a_backoff_hook_answering_a_wait_is_a_retry() -> None:
    stats = Stats()
    backoff = Backoff(0.001, 0.002).hooked(stats.called)
    attempts = iter([True, False])

    async def throttled() -> str:
        if next(attempts):
            raise OSError("429")
        return "ok"

    assert await backoff.call("prefect_api", throttled, on=lambda exc: 0.001) == "ok"
    assert stats.retries == {"prefect_api": 1}


async def test_an_answer_to_ask_again_about_is_retried_but_is_no_outage(caplog: pytest.LogCaptureFixture) -> None:
    """SQS answered, but some entries of a batch failed: retried, logged as a retry, SQS still healthy."""
    stats = Stats()
    backoff = Backoff(0.001, 0.002).hooked(stats.called)
    failures = iter([AskAgain("1 entry failed: InternalError")])

    async def partly() -> str:
        if (failure := next(failures, None)) is not None:
            raise failure
        return "answer"

    assert await backoff.call("delete", partly, what="DeleteMessageBatch") == "answer"
    assert stats.retries == {"delete": 1}
    assert stats.dependencies.failing_for("SQS") == 0
    assert "DeleteMessageBatch failed: 1 entry failed: InternalError; retrying (attempt 1)" in caplog.text


def test_the_delay_of_a_caller_retrying_for_hours_stays_at_the_maximum() -> None:
    """A task ECS will not describe is asked again for `describe_failure_limit` (up to a day): with the default
    backoff, attempt 1,025 comes after 8.5 hours, where 2.0 ** 1024 overflowed and failed its whole batch."""
    backoff = Backoff(0.5, 30.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 7, 8)] == [0.5, 1.0, 2.0, 30.0, 30.0]
    assert backoff.delay(1025) == backoff.delay(100_000) == 30.0

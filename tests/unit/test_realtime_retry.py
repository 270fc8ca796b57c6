"""Retry and reconnect policy of the Realtime client."""

from __future__ import annotations

import math
from typing import Any

import pytest

from gateway.realtime.retry import RetryPolicy, is_retryable_close, is_retryable_status

pytestmark = pytest.mark.unit


def test_defaults_are_valid() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts >= 2
    assert 0 < policy.initial_delay_s <= policy.max_delay_s


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"max_attempts": -3},
        {"max_attempts": 2.5},
        {"max_attempts": True},
        {"initial_delay_s": -0.1},
        {"initial_delay_s": 2.0, "max_delay_s": 1.0},
        {"multiplier": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
        {"initial_delay_s": math.nan},
        {"max_delay_s": math.inf},
        {"multiplier": math.nan},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_policy_is_frozen() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.max_attempts = 9  # type: ignore[misc]


def test_exponential_backoff_capped_without_jitter() -> None:
    policy = RetryPolicy(
        max_attempts=8, initial_delay_s=0.5, max_delay_s=3.0, multiplier=2.0, jitter=0.0
    )
    delays = [policy.delay(attempt, 0.73) for attempt in range(1, 9)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0, None]


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3, jitter=0.0)
    assert policy.delay(1, 0.0) is not None
    assert policy.delay(2, 0.0) is not None
    assert policy.delay(3, 0.0) is None
    assert policy.delay(50, 0.0) is None


def test_one_attempt_means_never_retry() -> None:
    assert RetryPolicy(max_attempts=1).delay(1, 0.5) is None


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("rand", [0.0, 0.1, 0.5, 0.99, 1.0])
def test_jitter_stays_within_bounds(jitter: float, rand: float) -> None:
    policy = RetryPolicy(
        max_attempts=10, initial_delay_s=1.0, max_delay_s=30.0, multiplier=3.0, jitter=jitter
    )
    for attempt in range(1, 10):
        base = policy.backoff(attempt)
        delay = policy.delay(attempt, rand)
        assert delay is not None
        assert base * (1 - jitter) - 1e-12 <= delay <= base + 1e-12
        assert delay == pytest.approx(base * (1 - jitter * rand))


def test_full_jitter_spans_zero_to_backoff() -> None:
    policy = RetryPolicy(initial_delay_s=2.0, max_delay_s=2.0, jitter=1.0)
    assert policy.delay(1, 0.0) == 2.0
    assert policy.delay(1, 1.0) == 0.0
    assert policy.delay(1, 0.5) == 1.0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    policy = RetryPolicy(max_attempts=100_000, initial_delay_s=0.1, max_delay_s=5.0, jitter=0.0)
    assert policy.delay(99_999, 0.5) == 5.0
    assert policy.backoff(10**6) == 5.0


def test_zero_initial_delay_retries_immediately() -> None:
    policy = RetryPolicy(max_attempts=3, initial_delay_s=0.0, max_delay_s=0.0)
    assert policy.delay(1, 0.3) == 0.0


@pytest.mark.parametrize(("attempt", "rand"), [(0, 0.5), (-1, 0.5), (1, -0.01), (1, 1.01)])
def test_bad_arguments_are_refused(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError):
        RetryPolicy().delay(attempt, rand)


@pytest.mark.parametrize("code", [1001, 1005, 1006, 1011, 1012, 1013, 1014, 1015])
def test_transient_close_codes_are_retryable(code: int) -> None:
    assert is_retryable_close(code)


@pytest.mark.parametrize(
    "code", [1000, 1002, 1003, 1007, 1008, 1009, 1010, 4000, 4001, 4999, 3000, 0, 999]
)
def test_final_close_codes_are_not_retryable(code: int) -> None:
    assert not is_retryable_close(code)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_transient_http_statuses_are_retryable(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize(
    "status", [400, 401, 403, 404, 405, 409, 410, 426, 451, 499, 200, 301, 600]
)
def test_final_http_statuses_are_not_retryable(status: int) -> None:
    assert not is_retryable_status(status)


def test_every_status_is_classified_consistently() -> None:
    retryable = {s for s in range(100, 700) if is_retryable_status(s)}
    assert retryable == {408, 429, *range(500, 600)}

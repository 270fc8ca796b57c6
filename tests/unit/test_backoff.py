"""Restart policy of crashed SIP workers: capped doubling, reset after a stable run, jitter."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import pytest

from gateway.control.backoff import RestartDecision, RestartPolicy, RestartTracker

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

NO_JITTER = RestartPolicy(jitter=0.0)


def crash_loop(tracker: RestartTracker, count: int, *, uptime_s: float = 0.2,
               start: float = 1000.0, rand: float = 0.0) -> list[RestartDecision]:
    """``count`` processes that each ran ``uptime_s``, restarted after the delay given."""
    now = start
    decisions = []
    for _ in range(count):
        tracker.started(now)
        now += uptime_s
        decision = tracker.failed(now, rand)
        decisions.append(decision)
        now += decision.delay_s
    return decisions


def test_defaults() -> None:
    policy = RestartPolicy()
    assert (policy.initial_delay_s, policy.max_delay_s, policy.multiplier) == (0.5, 30.0, 2.0)
    assert policy.stable_after_s == 60.0
    assert 0 < policy.jitter < 1


@pytest.mark.parametrize("kwargs", [
    {"initial_delay_s": -0.1},
    {"initial_delay_s": 2.0, "max_delay_s": 1.0},
    {"multiplier": 0.9},
    {"stable_after_s": -1.0},
    {"jitter": -0.1},
    {"jitter": 1.01},
    {"initial_delay_s": math.nan},
    {"max_delay_s": math.inf},
    {"stable_after_s": math.inf},
    {"multiplier": True},
    {"jitter": "0.1"},
])
def test_invalid_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)


def test_policy_is_frozen() -> None:
    with pytest.raises(AttributeError):
        NO_JITTER.jitter = 0.5  # type: ignore[misc]


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = [NO_JITTER.backoff(streak) for streak in range(1, 10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_very_long_crash_loop_stays_at_the_cap() -> None:
    assert NO_JITTER.backoff(100_000) == 30.0


def test_streak_is_one_based() -> None:
    with pytest.raises(ValueError):
        NO_JITTER.backoff(0)


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 4.0), (0.5, 3.6), (1.0, 3.2)])
def test_jitter_shortens_the_wait_within_its_fraction(rand: float, expected: float) -> None:
    policy = RestartPolicy(jitter=0.2)
    assert policy.delay(4, rand) == pytest.approx(expected)


@pytest.mark.parametrize("rand", [-0.01, 1.01, math.nan])
def test_rand_outside_the_unit_interval_is_refused(rand: float) -> None:
    with pytest.raises(ValueError):
        RestartPolicy().delay(1, rand)


def test_a_crash_loop_backs_off() -> None:
    decisions = crash_loop(RestartTracker(NO_JITTER), 9)
    assert [d.delay_s for d in decisions] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert [d.streak for d in decisions] == list(range(1, 10))
    assert not any(d.reset for d in decisions)
    assert all(d.uptime_s == pytest.approx(0.2) for d in decisions)


def test_a_stable_run_resets_the_streak() -> None:
    tracker = RestartTracker(NO_JITTER)
    crash_loop(tracker, 4)
    assert tracker.streak == 4
    tracker.started(5000.0)
    decision = tracker.failed(5000.0 + 60.0)  # exactly stable_after_s
    assert decision == RestartDecision(delay_s=0.5, streak=1, uptime_s=60.0, reset=True)
    assert tracker.failures == 5


def test_a_run_just_short_of_stable_keeps_backing_off() -> None:
    tracker = RestartTracker(NO_JITTER)
    crash_loop(tracker, 3)
    tracker.started(5000.0)
    decision = tracker.failed(5000.0 + 59.9)
    assert (decision.delay_s, decision.streak, decision.reset) == (4.0, 4, False)


def test_the_first_failure_is_not_a_reset_even_after_a_long_run() -> None:
    tracker = RestartTracker(NO_JITTER)
    tracker.started(0.0)
    decision = tracker.failed(3600.0)
    assert (decision.delay_s, decision.streak, decision.reset) == (0.5, 1, False)


def test_a_failure_without_start_counts_as_no_uptime() -> None:
    tracker = RestartTracker(NO_JITTER)
    decision = tracker.failed(10.0)
    assert (decision.uptime_s, decision.delay_s) == (0.0, 0.5)
    # started() is consumed by each failure: a second one without a start has no uptime either
    tracker.started(20.0)
    tracker.failed(200.0)
    assert tracker.failed(400.0).uptime_s == 0.0


def test_a_clock_going_backwards_gives_no_negative_uptime() -> None:
    tracker = RestartTracker(NO_JITTER)
    tracker.started(100.0)
    assert tracker.failed(99.0).uptime_s == 0.0


def test_jitter_comes_from_the_caller() -> None:
    policy = RestartPolicy(initial_delay_s=1.0, max_delay_s=8.0, jitter=0.5)
    full = crash_loop(RestartTracker(policy), 5, rand=0.0)
    half = crash_loop(RestartTracker(policy), 5, rand=1.0)
    assert [d.delay_s for d in full] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert [d.delay_s for d in half] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_a_bad_rand_leaves_the_tracker_unchanged() -> None:
    tracker = RestartTracker(NO_JITTER)
    tracker.started(0.0)
    with pytest.raises(ValueError):
        tracker.failed(1.0, 2.0)
    assert (tracker.streak, tracker.failures) == (0, 0)
    assert tracker.failed(1.0).uptime_s == 1.0


def test_the_module_imports_without_asyncio_or_io_libraries() -> None:
    probe = ("import sys\n"
             "for name in ('asyncio', 'pjsua2', 'websockets', 'aiohttp'):\n"
             "    sys.modules[name] = None\n"
             "import gateway.control.backoff\n")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", probe], capture_output=True,
                          text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr

"""Restart policy for crashed SIP workers, as pure values: how long to wait before a restart.

A worker that exits when nobody asked it to is restarted after a delay that doubles with each
quick failure in a row (0.5 s, 1 s, 2 s, ... capped at 30 s by default), so a worker that
crashes at start does not spin a core, while one that ran for a long time and then died comes
back at once. A worker that stayed up for ``stable_after_s`` is considered healthy again and
its streak of failures starts over. Nothing here sleeps, reads a clock or draws random numbers:
the caller passes the time (any monotonic clock, in seconds) and a uniform random number for the
jitter, so every decision can be replayed in a unit test. :mod:`gateway.control.supervisor`
applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gateway.realtime.retry import capped_backoff, check_backoff

__all__ = ["RestartDecision", "RestartPolicy", "RestartTracker"]


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Capped exponential backoff between restarts, reset after a stable run.

    Attributes:
        initial_delay_s: Wait before restarting after the first quick failure, before jitter.
        max_delay_s: Cap on the wait, before jitter.
        multiplier: Growth of the wait from one quick failure to the next (>= 1).
        stable_after_s: A worker that stayed up this long before failing starts a new streak:
            its restart waits ``initial_delay_s`` again.
        jitter: Fraction of the wait that is randomised, 0..1: the wait is in
            ``[backoff * (1 - jitter), backoff]``. Workers killed together (the OOM killer, a
            bad deploy) then do not all restart in the same instant.

    Raises:
        ValueError: A field is out of range.
    """

    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    multiplier: float = 2.0
    stable_after_s: float = 60.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        for name in ("initial_delay_s", "max_delay_s", "multiplier", "stable_after_s", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number")
        check_backoff(self.initial_delay_s, self.max_delay_s, self.multiplier, self.jitter)
        if self.stable_after_s < 0:
            raise ValueError("stable_after_s must be >= 0")

    def backoff(self, streak: int) -> float:
        """The wait after the ``streak``-th quick failure in a row, before jitter.

        Args:
            streak: 1 for the first failure of a streak, 2 for the next one, and so on.

        Raises:
            ValueError: ``streak`` is below 1.
        """
        if streak < 1:
            raise ValueError("streak is 1-based")
        return capped_backoff(self.initial_delay_s, self.multiplier, self.max_delay_s, streak)

    def delay(self, streak: int, rand: float) -> float:
        """The wait after the ``streak``-th quick failure, jitter applied.

        Args:
            streak: As :meth:`backoff`.
            rand: A uniform random number in ``[0, 1]`` (``random.random()``); ``0`` waits
                the full backoff.

        Raises:
            ValueError: ``streak`` is below 1 or ``rand`` is outside ``[0, 1]``.
        """
        if not 0.0 <= rand <= 1.0:
            raise ValueError("rand must be in [0, 1]")
        return self.backoff(streak) * (1.0 - self.jitter * rand)

    def is_stable(self, uptime_s: float) -> bool:
        """Whether a worker that ran ``uptime_s`` before failing had recovered."""
        return uptime_s >= self.stable_after_s


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """What :meth:`RestartTracker.failed` decided about one failure.

    Attributes:
        delay_s: How long to wait before starting the worker again.
        streak: Quick failures in a row, this one included (1 after a stable run).
        uptime_s: How long the failed process had been up (0 when it never started).
        reset: Whether this failure started a new streak because the worker had been stable.
    """

    delay_s: float
    streak: int
    uptime_s: float
    reset: bool


class RestartTracker:
    """The restart state of one worker under a :class:`RestartPolicy`; times are passed in.

    Call :meth:`started` when a process is started (or an attempt is made), and
    :meth:`failed` when it exits unexpectedly (or could not be started) to learn how long to
    wait before the next attempt.

    Args:
        policy: The backoff rules.
    """

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._streak = 0
        self._started_at: float | None = None
        self._failures = 0

    @property
    def streak(self) -> int:
        """Quick failures in a row so far (0 before the first failure)."""
        return self._streak

    @property
    def failures(self) -> int:
        """Every failure reported, stable runs included."""
        return self._failures

    def started(self, now: float) -> None:
        """A process of this worker was started (or an attempt made) at ``now``."""
        self._started_at = now

    def uptime(self, now: float) -> float:
        """Seconds since the last :meth:`started` (0 before it, never negative)."""
        if self._started_at is None:
            return 0.0
        return max(0.0, now - self._started_at)

    def failed(self, now: float, rand: float = 0.0) -> RestartDecision:
        """The process exited unexpectedly at ``now``: how long until the next attempt.

        Args:
            now: The time of the exit, on the clock :meth:`started` was given.
            rand: A uniform random number in ``[0, 1]`` for the jitter.

        Raises:
            ValueError: ``rand`` is outside ``[0, 1]``.
        """
        uptime = self.uptime(now)
        reset = self._streak > 0 and self.policy.is_stable(uptime)
        if reset:
            self._streak = 0
        delay = self.policy.delay(self._streak + 1, rand)  # validates rand before any change
        self._streak += 1
        self._failures += 1
        self._started_at = None
        return RestartDecision(delay_s=delay, streak=self._streak, uptime_s=uptime, reset=reset)

"""Retry and reconnect policy for the Realtime client, as pure functions.

This module decides *whether* a failed connection is worth another try and *how long* to wait
before it; it never sleeps, opens sockets or reads a clock. The caller supplies the random
number used for jitter, so every decision is reproducible in a unit test. WebSocket close codes
follow RFC 6455 §7.4.1 and the IANA registry (1012-1015); HTTP statuses are those of the
opening handshake.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RetryPolicy", "is_retryable_close", "is_retryable_status"]

#: Close codes after which a new connection may succeed: going away (1001), no status (1005),
#: abnormal closure without a close frame (1006), internal error (1011), service restart
#: (1012), try again later (1013), bad gateway (1014) and TLS handshake failure (1015).
_RETRYABLE_CLOSE_CODES = frozenset({1001, 1005, 1006, 1011, 1012, 1013, 1014, 1015})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with bounded jitter.

    Attempt ``n`` (1-based) is the ``n``-th connection attempt. After it fails, the caller asks
    :meth:`delay` how long to wait before attempt ``n + 1``; ``None`` means give up.

    Attributes:
        max_attempts: Total attempts allowed, including the first (1 = never retry).
        initial_delay_s: Wait after the first failed attempt, before jitter.
        max_delay_s: Cap on the wait, before jitter.
        multiplier: Growth factor of the wait from one attempt to the next (>= 1).
        jitter: Fraction of the wait that is randomised, 0..1. ``0`` waits exactly the
            backoff; ``1`` is "full jitter" (uniform in ``[0, backoff]``); ``0.5`` waits
            between half and all of it. Jitter keeps many calls that lost the same server
            from reconnecting in lockstep.

    Raises:
        ValueError: A field is out of range.
    """

    max_attempts: int = 5
    initial_delay_s: float = 0.5
    max_delay_s: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValueError("max_attempts must be an int")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        check_backoff(self.initial_delay_s, self.max_delay_s, self.multiplier, self.jitter)

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` before jitter, capped at ``max_delay_s``.

        Args:
            attempt: 1-based number of the attempt that failed.

        Raises:
            ValueError: ``attempt`` is below 1.
        """
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        return capped_backoff(self.initial_delay_s, self.multiplier, self.max_delay_s, attempt)

    def longest_wait_s(self) -> float:
        """The most all waits between ``max_attempts`` attempts can add up to (no jitter)."""
        return sum(self.backoff(attempt) for attempt in range(1, self.max_attempts))

    def delay(self, attempt: int, rand: float) -> float | None:
        """How long to wait after failed attempt ``attempt``, or ``None`` to give up.

        Args:
            attempt: 1-based number of the attempt that just failed.
            rand: A uniform random number in ``[0, 1]`` (e.g. ``random.random()``).

        Returns:
            Seconds to wait before the next attempt, in
            ``[backoff * (1 - jitter), backoff]``; ``None`` when ``attempt`` has used up
            ``max_attempts``.

        Raises:
            ValueError: ``attempt`` is below 1 or ``rand`` is outside ``[0, 1]``.
        """
        if not 0.0 <= rand <= 1.0:
            raise ValueError("rand must be in [0, 1]")
        base = self.backoff(attempt)
        if attempt >= self.max_attempts:
            return None
        return base * (1.0 - self.jitter * rand)


def is_retryable_close(code: int) -> bool:
    """Whether a connection closed with WebSocket close ``code`` is worth reopening.

    A normal closure (1000) ends the session on purpose, a policy violation (1008) or an
    application code in the 4000-4999 range (the API closes beta-shaped sessions with 4000)
    will happen again, and the remaining 1xxx codes signal a bug on one side.

    Args:
        code: The close code received, or 1006 when the connection dropped without one.
    """
    return code in _RETRYABLE_CLOSE_CODES


def is_retryable_status(http_status: int) -> bool:
    """Whether a WebSocket handshake refused with ``http_status`` is worth retrying.

    Request timeout (408), rate limiting (429) and server errors (5xx) are transient;
    authentication (401), permission (403), not found (404) and other client errors are not.

    Args:
        http_status: Status of the HTTP response to the upgrade request.
    """
    return http_status in (408, 429) or 500 <= http_status <= 599


def check_backoff(initial_delay_s: float, max_delay_s: float, multiplier: float,
                  jitter: float) -> None:
    """Refuse an exponential backoff that cannot work (shared by every backoff policy).

    Raises:
        ValueError: A value is not finite or out of range.
    """
    values = {"initial_delay_s": initial_delay_s, "max_delay_s": max_delay_s,
              "multiplier": multiplier, "jitter": jitter}
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number")
    if initial_delay_s < 0:
        raise ValueError("initial_delay_s must be >= 0")
    if max_delay_s < initial_delay_s:
        raise ValueError("max_delay_s must be >= initial_delay_s")
    if multiplier < 1:
        raise ValueError("multiplier must be >= 1")
    if not 0 <= jitter <= 1:
        raise ValueError("jitter must be between 0 and 1")


def capped_backoff(initial_delay_s: float, multiplier: float, max_delay_s: float,
                   n: int) -> float:
    """``initial * multiplier ** (n - 1)``, capped at ``max_delay_s`` (``n`` is 1-based)."""
    try:
        raw = initial_delay_s * multiplier ** (n - 1)
    except OverflowError:  # a long failure streak: the cap was reached long ago
        return max_delay_s
    return min(raw, max_delay_s)

"""What a call does when its Realtime session drops or gets old: pure decisions.

The call session reports facts (the WebSocket dropped at ``t``; the agent was speaking; the
caller spoke for 600 ms during the outage; the session is 3,300 s old and quiet) and this module
answers: how long to keep waiting for the reconnect, what to do when the budget runs out
(transfer to the route's fallback URI or hang up), whether to apologise and ask for a response
once the new session is up, and when to rotate a session before the API's 60-minute limit.
Nothing here sleeps, reads a clock or touches a socket; times are passed in.
:class:`SpeechMeter` measures whether the caller spoke during an outage from the PCM16 frames
the session would have sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

#: The API closes a session after 60 minutes; a rotation due at ``rotate_after_s`` waits for a
#: quiet moment at most this long, then happens anyway.
ROTATE_GRACE_S = 120.0
#: How often a due rotation re-checks for a quiet moment.
ROTATE_POLL_S = 0.1
#: After a failed rotation attempt, try again this much later.
ROTATE_RETRY_S = 30.0
#: Caller frames louder than this count as speech during an outage.
SPEECH_DBFS = -45.0
#: This much caller speech during an outage means the caller noticed it.
NOTICED_SPEECH_MS = 200

OnLost = Literal["transfer", "hangup"]


@dataclass(frozen=True)
class ContinuityPolicy:
    """How a call rides out a lost or aged Realtime session.

    Attributes:
        reconnect_budget_s: How long a dropped session may take to come back.
        rotate_after_s: Replace a session this old with a fresh one (``None``: never).
        apology: Line the agent says when the caller noticed the gap ("" says nothing).
        on_lost: When the budget runs out: ``transfer`` to the fallback URI if the route or
            agent has one (else hang up), or always ``hangup``.
    """

    reconnect_budget_s: float = 10.0
    rotate_after_s: float | None = 3300.0
    apology: str = "Sorry, the line dropped for a moment."
    on_lost: OnLost = "transfer"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.reconnect_budget_s) and self.reconnect_budget_s > 0):
            raise ValueError("reconnect_budget_s must be > 0")
        if self.rotate_after_s is not None and not self.rotate_after_s > 0:
            raise ValueError("rotate_after_s must be > 0")

    def budget_left(self, lost_at: float, now: float) -> float:
        """Seconds left to wait for the reconnect (0 once the budget is spent)."""
        return max(0.0, lost_at + self.reconnect_budget_s - now)

    def when_lost(self, fallback: str | None) -> Transfer | HangUp:
        """What to do once the session cannot come back."""
        if self.on_lost == "transfer" and fallback:
            return Transfer(fallback)
        return HangUp()

    def resume(self, gap: Gap) -> Resume:
        """What to do once a new session is configured and has the context."""
        if gap.rotated:
            # Nobody heard anything; a response cut by the hand-over is simply asked again.
            return Resume(apologise=None, respond=gap.response_lost)
        noticed = gap.agent_was_speaking or gap.caller_speech_ms >= NOTICED_SPEECH_MS
        apologise = self.apology if noticed and self.apology.strip() else None
        return Resume(apologise=apologise, respond=apologise is not None or gap.response_lost)

    def rotation(self, age_s: float, quiet: bool) -> float | None:
        """When to rotate a session ``age_s`` old: seconds to wait first, ``None`` = now.

        Args:
            age_s: Seconds since the current session opened.
            quiet: Neither the agent nor the caller is speaking and no tool is running.

        Returns:
            ``None`` to rotate now, else how long to wait before asking again
            (``math.inf`` when rotation is off).
        """
        if self.rotate_after_s is None:
            return math.inf
        if age_s < self.rotate_after_s:
            return self.rotate_after_s - age_s
        if quiet or age_s >= self.rotate_after_s + ROTATE_GRACE_S:
            return None
        return ROTATE_POLL_S


@dataclass(frozen=True)
class Gap:
    """What happened around a session replacement.

    Attributes:
        rotated: The gateway replaced a working session (nothing was lost on the wire).
        agent_was_speaking: Agent audio was playing or streaming when the session dropped.
        caller_speech_ms: Caller speech during the outage (it never reached the model).
        response_lost: A response was requested, active or wanted when the session went.
    """

    rotated: bool = False
    agent_was_speaking: bool = False
    caller_speech_ms: int = 0
    response_lost: bool = False


@dataclass(frozen=True)
class Resume:
    """The plan after a reconnect: say ``apologise`` (if any), else ``respond`` plainly."""

    apologise: str | None
    respond: bool


@dataclass(frozen=True)
class Transfer:
    """REFER the caller to ``uri``."""

    uri: str


@dataclass(frozen=True)
class HangUp:
    """End the call (BYE)."""


class SpeechMeter:
    """Counts milliseconds of caller speech in PCM16 8 kHz frames (20 ms each)."""

    def __init__(self, threshold_dbfs: float = SPEECH_DBFS) -> None:
        self._threshold = 32768.0 * 10 ** (threshold_dbfs / 20)
        self.speech_ms = 0

    def feed(self, frame: bytes) -> None:
        """Measure one frame."""
        samples = np.frombuffer(frame[: len(frame) - len(frame) % 2], dtype="<i2")
        if samples.size == 0:
            return
        rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
        if rms >= self._threshold:
            self.speech_ms += samples.size * 1000 // 8000

"""Whether the control process takes traffic: the state behind ``/readyz``.

The control process moves one :class:`Readiness` forward only: ``starting`` (workers and the
front are coming up) → ``ready`` → ``draining`` (the first SIGTERM; final). ``/readyz`` answers
200 only while ``ready``, so a load balancer or orchestrator stops sending work as soon as a
drain begins. Pure: no I/O.
"""

from __future__ import annotations

import typing
from typing import Final, Literal, TypeAlias

__all__ = ["MAX_REASON_CHARS", "PHASES", "Phase", "Readiness", "ReadinessError"]

Phase: TypeAlias = Literal["starting", "ready", "draining"]
PHASES: Final[tuple[str, ...]] = typing.get_args(Phase)
#: Longest reason kept; longer ones are cut (they come from exception texts and the like).
MAX_REASON_CHARS: Final = 512


class ReadinessError(RuntimeError):
    """A transition that would move readiness backwards (a bug in the caller)."""


class Readiness:
    """The control process's phase and why it is not ready.

    Args:
        reason: Why the process is not ready yet, shown by ``/readyz`` while starting.
    """

    def __init__(self, reason: str = "starting") -> None:
        self._phase: Phase = "starting"
        self._reason = _cut(reason)

    @property
    def phase(self) -> Phase:
        """``starting``, ``ready`` or ``draining``."""
        return self._phase

    @property
    def reason(self) -> str:
        """Why the process is not ready (empty while ready)."""
        return self._reason

    @property
    def is_ready(self) -> bool:
        """Whether ``/readyz`` answers 200."""
        return self._phase == "ready"

    def starting(self, reason: str) -> None:
        """Say what start-up is waiting for, e.g. ``2 of 4 workers up``.

        Raises:
            ReadinessError: The process is already ready or draining.
        """
        if self._phase != "starting":
            raise ReadinessError(f"cannot go back to starting from {self._phase}")
        self._reason = _cut(reason)

    def ready(self) -> None:
        """Start-up is complete: take traffic. Idempotent while ready.

        Raises:
            ReadinessError: The process is draining; a drain is never undone.
        """
        if self._phase == "draining":
            raise ReadinessError("cannot become ready while draining")
        self._phase = "ready"
        self._reason = ""

    def draining(self, reason: str) -> None:
        """Stop taking traffic for good, e.g. ``SIGTERM received``; from any phase."""
        self._phase = "draining"
        self._reason = _cut(reason)


def _cut(reason: str) -> str:
    return reason[:MAX_REASON_CHARS]

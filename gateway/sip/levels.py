"""Audio level sampling for the live monitor's meters: which calls, how often, what scale.

The control process tells a worker which calls someone watches (``watch_levels``, see
``docs/ipc.md``); the SIP thread asks :class:`LevelWatch` on each turn of its loop whether a
sample is due (every :data:`SAMPLE_PERIOD_S`) and for which legs, reads each leg's conference
levels (pjsua2's ``AudioMedia.getRxLevel()``: what the caller sends; ``getTxLevel()``: what is
sent to the caller, the agent), and hands the whole tick to the loop at once. Nobody watching
costs one comparison per turn. Levels are pjsua's 0–255, reported as 0–1. No pjsua2 import (the
reader is passed in), no clock (``now`` is passed in).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

__all__ = ["SAMPLE_PERIOD_S", "LevelSample", "LevelWatch", "leg_levels", "scale"]

#: A sample of every watched call this often (the meters' refresh, ~4 Hz).
SAMPLE_PERIOD_S: Final = 0.25
#: Most legs sampled in one tick (a worker's calls are bounded anyway; this bounds a tick).
MAX_LEGS_PER_TICK: Final = 256
_FULL_SCALE: Final = 255

L = TypeVar("L")


def scale(raw: int) -> float:
    """A pjsua level (0–255) as 0–1, clamped, to 3 decimals."""
    return round(min(max(raw, 0), _FULL_SCALE) / _FULL_SCALE, 3)


@dataclass(frozen=True, slots=True)
class LevelSample:
    """One call's levels at one tick: ``caller`` (heard from the caller) and ``agent``."""

    leg_id: int
    caller: float
    agent: float


class LevelWatch:
    """Which legs are watched and when the next sample is due (module docstring)."""

    def __init__(self, period_s: float = SAMPLE_PERIOD_S) -> None:
        self._period = period_s
        self._all = False
        self._legs: frozenset[int] = frozenset()
        self._next = 0.0

    @property
    def active(self) -> bool:
        """Someone watches at least one call."""
        return self._all or bool(self._legs)

    def watch(self, all_calls: bool, legs: Iterable[int]) -> None:
        """Watch every call, or only ``legs`` (both empty: none)."""
        self._all, self._legs = all_calls, frozenset(legs)

    def due(self, now: float) -> bool:
        """Whether to sample now (and, if so, the next one is a period away)."""
        if not self.active or now < self._next:
            return False
        self._next = now + self._period
        return True

    def sample(self, now: float, legs: Iterable[tuple[int, L]],
               read: Callable[[L], tuple[int, int] | None]) -> list[LevelSample]:
        """The levels of the watched ones of ``legs`` (``(leg id, leg)``) if a sample is due.

        ``read`` gives a leg's raw ``(rx, tx)`` levels, or ``None`` without media; a leg
        whose read fails is left out (the reader logs).
        """
        if not self.due(now):
            return []
        out: list[LevelSample] = []
        for leg_id, leg in legs:
            if not (self._all or leg_id in self._legs):
                continue
            raw = read(leg)
            if raw is not None:
                out.append(LevelSample(leg_id, scale(raw[0]), scale(raw[1])))
            if len(out) >= MAX_LEGS_PER_TICK:
                break
        return out


def leg_levels(leg: Any) -> tuple[int, int] | None:
    """A call leg's raw ``(rx, tx)`` conference levels, or ``None`` without active audio.

    ``leg`` is a :class:`gateway.sip.legs.Leg`; this runs on the ``sip`` thread, the only one
    that may touch it. ``rx`` is what the caller sends, ``tx`` what the caller is sent (the
    agent, or OpenAI's leg on a relayed call). pjsua2 errors (media going away) mean ``None``.
    """
    index = getattr(leg, "media_index", None)
    if index is None:
        return None
    try:
        audio = leg.getAudioMedia(index)
        return int(audio.getRxLevel()), int(audio.getTxLevel())
    except Exception:  # pjsua2's Error, or the call being torn down
        return None

"""How a call ended, as a small closed set: the ``outcome`` label of ``gateway_calls_total``.

Workers say why a call ended in free text (``CallEnded.reason``, worded by
:mod:`gateway.calls`); :func:`outcome_of` sorts it into one :data:`Outcome` so the metric's
cardinality stays fixed. ``worker_died`` is given only by the control process, to the calls
of a worker that went away (:meth:`gateway.control.directory.CallDirectory.worker_down`).
``docs/control.md`` defines each outcome. Pure: no I/O.
"""

from __future__ import annotations

import typing
from typing import Final, Literal, TypeAlias

__all__ = ["OUTCOMES", "Outcome", "outcome_of"]

Outcome: TypeAlias = Literal["ok", "refused", "unanswered", "failed", "worker_died"]
OUTCOMES: Final[tuple[str, ...]] = typing.get_args(Outcome)
#: Reason prefixes (lower case) of calls ended by a failure on the gateway's side, as
#: :mod:`gateway.calls` words them (``internal error: KeyError``, ``Realtime session lost``).
_FAILED_PREFIXES: Final = ("internal error", "realtime session", "agent unavailable", "no media")


def outcome_of(reason: str, *, answered: bool) -> Outcome:
    """Classify a worker's end reason.

    Args:
        reason: ``CallEnded.reason``, e.g. ``refused: 503 Service Unavailable (...)``.
        answered: Whether the call was started (answered and bridged to an agent).

    Returns:
        ``refused`` or ``failed`` by the reason's prefix, else ``ok`` for an answered call
        and ``unanswered`` for one that never was (the caller cancelled, say).
    """
    text = reason.lower()
    if text.startswith("refused"):
        return "refused"
    if text.startswith(_FAILED_PREFIXES):
        return "failed"
    return "ok" if answered else "unanswered"

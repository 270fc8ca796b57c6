"""Scripted failures of the Realtime Calls REST API, to test how a client copes with them.

A test places a call with ``rest_faults``, e.g. ``{"accept": [503, 503]}``: the call's next
requests of that verb are answered with those HTTP statuses, one per request and in order,
before the call sees them (a faulted ``accept`` accepts nothing, a faulted ``refer`` refers
nobody); the requests after them are handled as usual. Each answer carries the error
envelope the API gives for its status: ``404`` is the ``call_not_found`` of a call whose
caller is gone, ``429`` the rate limit, ``500``/``502``/``503``/``504`` a server error. Pure:
no I/O and no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Final

from gateway.sim.calls import VERBS, CallError, not_found

#: The statuses a fault may answer, with the envelope's message and type for each.
FAULTS: Final[Mapping[int, tuple[str, str]]] = {
    429: ("Rate limit reached for requests. Please try again later.", "requests"),
    500: ("The server had an error while processing your request. Sorry about that!",
          "server_error"),
    502: ("Bad gateway.", "server_error"),
    503: ("The server is overloaded or not ready yet.", "server_error"),
    504: ("The server did not answer in time.", "server_error"),
}
#: The statuses :class:`RestFaults` takes: those of :data:`FAULTS` and 404.
FAULT_STATUSES: Final = frozenset({404, *FAULTS})
#: Longest script per verb (a test needs a few; this bounds what ``/sim/calls`` accepts).
MAX_FAULTS: Final = 20


def parse_rest_faults(raw: Any) -> dict[str, tuple[int, ...]]:
    """Check a ``rest_faults`` value: ``{verb: [status, ...]}`` (``None``: no faults).

    Raises:
        ValueError: Not a mapping of REST verbs to lists of :data:`FAULT_STATUSES` (at most
            :data:`MAX_FAULTS` each).
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError("rest_faults must map REST verbs to lists of HTTP statuses")
    faults: dict[str, tuple[int, ...]] = {}
    for verb, statuses in raw.items():
        if verb not in VERBS:
            raise ValueError(f"rest_faults: unknown verb {verb!r} (one of {', '.join(VERBS)})")
        if not isinstance(statuses, list | tuple) or len(statuses) > MAX_FAULTS:
            raise ValueError(f"rest_faults.{verb} must be a list of at most {MAX_FAULTS} "
                             "statuses")
        for status in statuses:
            if isinstance(status, bool) or status not in FAULT_STATUSES:
                allowed = ", ".join(str(s) for s in sorted(FAULT_STATUSES))
                raise ValueError(f"rest_faults.{verb}: {status!r} is not one of {allowed}")
        faults[verb] = tuple(statuses)
    return faults


def fault_error(status: int, call_id: str) -> CallError:
    """The error a faulted request is answered with, in the API's envelope."""
    if status == 404:
        return not_found(call_id)
    message, type_ = FAULTS[status]
    code = "rate_limit_exceeded" if status == 429 else None
    return CallError(status, message, code=code, type=type_)


class RestFaults:
    """The statuses scripted for one call's next REST requests, verb by verb.

    Args:
        faults: ``{verb: [status, ...]}``, checked by :func:`parse_rest_faults`.

    Raises:
        ValueError: A bad script.
    """

    def __init__(self, faults: Mapping[str, Any] | None = None) -> None:
        self._pending = {verb: deque(statuses)
                         for verb, statuses in parse_rest_faults(faults).items()}

    def take(self, verb: str) -> int | None:
        """The status to answer this ``verb`` request with (used up), or ``None``."""
        pending = self._pending.get(verb)
        return pending.popleft() if pending else None

    def pending(self) -> dict[str, list[int]]:
        """What is still scripted, for the call's summary."""
        return {verb: list(statuses) for verb, statuses in self._pending.items() if statuses}

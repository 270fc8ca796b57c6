"""Turning a :class:`~gateway.errors.CallRejected` into the INVITE's final response.

The one place where rejection errors become SIP: status code, reason phrase and extra headers
(``Retry-After`` on every 503, RFC 3261 §20.33: capacity, the agent's Realtime session
unavailable, an internal failure — all are "try again later" and let a PBX or front fail over).
Pure.
"""

from __future__ import annotations

from gateway.errors import CallRejected, CapacityExceeded

#: ``Retry-After`` seconds on a 503 that carries no value of its own.
DEFAULT_RETRY_AFTER_S = 5


def rejection_response(err: CallRejected) -> tuple[int, str, tuple[tuple[str, str], ...]]:
    """``(status, reason, headers)`` to answer an INVITE refused with ``err``."""
    status = err.sip_status if 300 <= err.sip_status <= 699 else 500
    reason = " ".join(err.reason.split())[:100] or "Rejected"  # one line, bounded
    headers: tuple[tuple[str, str], ...] = ()
    if isinstance(err, CapacityExceeded):
        headers = (("Retry-After", str(max(1, err.retry_after_s))),)
    elif status == 503:
        headers = (("Retry-After", str(DEFAULT_RETRY_AFTER_S)),)
    return status, reason, headers

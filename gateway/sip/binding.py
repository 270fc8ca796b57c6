"""Which pjsua2 the gateway runs on, and how many calls it really allows.

Two bindings are supported: the official pjproject source built for a server by
``scripts/build-pjsua2.sh`` (hundreds of call slots, epoll, no aborting assertions) and the
third-party PyPI wheel ``pjsua2-python`` (4 call slots, select(), assertions on). pjsua clamps
``UaConfig.maxCalls`` to its compiled ``PJSUA_MAX_CALLS`` without a word, so the real number of
slots is read back from the running library after ``libInit``; the gateway's capacity follows
from it, never from configuration alone. The open-files limit is raised as far as the process
may, because each call holds two RTP sockets and a WebSocket.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
import resource
from dataclasses import dataclass
from typing import Any, Literal

from gateway.sip._pj import native

log = logging.getLogger("gateway.sip")

#: Distribution name of the third-party wheel.
WHEEL_DISTRIBUTION = "pjsua2-python"
#: Slots asked of pjsua when ``sip.max_calls`` is automatic (pjsua clamps to what it has).
AUTO_SLOTS = 1000
#: Call slots kept free beyond the calls taken, so that INVITEs refused at capacity still
#: reach the gateway's own 503 (with a record) while earlier refusals are in flight. A
#: binding with few slots (the wheel's 4) keeps one.
REFUSAL_SLOTS = 8
#: File descriptors a call needs: RTP + RTCP sockets and the Realtime WebSocket.
FDS_PER_CALL = 3


@dataclass(frozen=True)
class Binding:
    """The pjsua2 in this process.

    Attributes:
        kind: ``source`` (our build of the official release) or ``wheel`` (PyPI).
        distribution: The installed distribution that provides ``pjsua2``.
        version: pjproject's version string, e.g. ``2.17``.
        call_slots: pjsua's call slots (``pjsua_call_get_max_count``), 0 before ``libInit``.
    """

    kind: Literal["source", "wheel"]
    distribution: str
    version: str
    call_slots: int = 0

    @property
    def max_calls(self) -> int:
        """Calls the gateway takes: slots stay free so the calls beyond get our 503."""
        spare = REFUSAL_SLOTS if self.call_slots > 4 * REFUSAL_SLOTS else 1
        return max(1, self.call_slots - spare)


def installed() -> tuple[Literal["source", "wheel"], str]:
    """Which ``pjsua2`` is installed: its kind and distribution, from package metadata."""
    dists = importlib.metadata.packages_distributions().get("pjsua2", [])
    distribution = dists[0] if dists else "unknown"
    return ("wheel" if distribution == WHEEL_DISTRIBUTION else "source"), distribution


def detect(ep: Any) -> Binding:
    """Describe the binding of the created endpoint ``ep`` (after ``libInit``)."""
    kind, distribution = installed()
    try:
        version = str(ep.libVersion().full)
    except Exception:  # an endpoint that is not up yet
        version = "unknown"
    lib = native()
    lib.pjsua_call_get_max_count.restype = ctypes.c_uint
    return Binding(kind, distribution, version, int(lib.pjsua_call_get_max_count()))


def raise_open_files(calls: int) -> int:
    """Raise the soft open-files limit to the hard one; returns the new soft limit.

    Logs a warning when even the hard limit cannot hold ``calls`` calls.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d: %s", soft, exc)
    needed = calls * FDS_PER_CALL + 64
    if soft < needed:
        log.warning("open-files limit %d is below the %d that %d calls need; raise it "
                    "(ulimit -n, LimitNOFILE=)", soft, needed, calls)
    return soft

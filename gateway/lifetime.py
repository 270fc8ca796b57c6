"""Children that do not outlive the gateway: a ``preexec_fn`` asking Linux for a death signal.

The control process starts SIP workers and Kamailio. If it is killed (SIGKILL, OOM) it cannot
stop them, and an orphaned front would keep answering on the SIP port with no worker behind
it. ``prctl(PR_SET_PDEATHSIG)`` makes the kernel signal the child when the thread that forked
it ends; asyncio forks from the event loop's thread, which lives as long as the process.
"""

from __future__ import annotations

import ctypes
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` after which the child gets ``sig`` when its parent dies (Linux only)."""

    def preexec() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
        except (OSError, AttributeError):  # not Linux: the child outlives a killed parent
            pass

    return preexec

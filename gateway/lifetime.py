"""Children that do not outlive the gateway: Linux's parent-death signal (``PR_SET_PDEATHSIG``).

The control process starts SIP workers and Kamailio. If it is killed (SIGKILL, OOM) it cannot
stop them, and an orphaned front would keep answering on the SIP port with no worker behind
it. ``prctl(PR_SET_PDEATHSIG)`` makes the kernel signal the child when the thread that forked
it ends; asyncio forks from the event loop's thread, which lives as long as the process. A
worker forked by the preloaded parent (:mod:`gateway.control.zygote`) arms it itself, towards
that parent, which has it towards the control process: the chain ends with the control
process all the same.
"""

from __future__ import annotations

import ctypes
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def set_death_signal(sig: int) -> bool:
    """Have this process get ``sig`` when its parent dies; ``False`` where that is not Linux.

    The caller checks ``os.getppid()`` afterwards: a parent that died before the call is not
    signalled for.
    """
    try:
        return int(ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))) == 0
    except (OSError, AttributeError):  # not Linux: the child outlives a killed parent
        return False


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` after which the child gets ``sig`` when its parent dies (Linux only)."""

    def preexec() -> None:
        set_death_signal(sig)

    return preexec

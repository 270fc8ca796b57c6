"""The only import of pjsua2 in gateway, plus the two helpers every pjsua2 module needs.

pjsua2 is an untyped SWIG binding with C threads of its own; keeping the import here makes the
boundary visible (``tests/unit/test_boundaries.py``) and gives one place to read frame buffers
fast. ``bytes(frame.buf)`` walks the ``std::vector`` one element at a time (130 µs per 20 ms
frame, pjsua2-notes §3.2); :func:`fast_bytes` reads it through ctypes in about 1.4 µs.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable
from typing import Any

import pjsua2 as pj

__all__ = ["create_endpoint", "error_text", "fast_bytes", "native", "pj"]

_ptr = ctypes.c_void_p.from_address


def native() -> ctypes.CDLL:
    """The binding's own shared object, for the few pjsip C functions SWIG does not expose.

    The wheel links pjproject statically into ``_pjsua2`` and exports its symbols; opening the
    loaded file again returns the same image, so these calls act on the running endpoint.
    """
    from pjsua2 import _pjsua2

    return ctypes.CDLL(_pjsua2.__file__)


def fast_bytes(byte_vector: Any) -> bytes:
    """Copy a pjsua2 ``ByteVector`` (``std::vector<unsigned char>``) into ``bytes``.

    Relies on libstdc++'s vector layout ``{begin, end, capacity}``, which is what the PyPI
    wheel is built with on Linux; ``tests/sip`` checks it against the slow path.
    """
    base = int(byte_vector.this)
    begin = _ptr(base).value
    end = _ptr(base + 8).value
    if not begin or end is None:
        return b""
    return ctypes.string_at(begin, end - begin)


def error_text(exc: BaseException) -> str:
    """A readable reason for a ``pjsua2.Error`` (its ``str()`` is empty) or any exception.

    ``Error.reason`` is pjlib's message, e.g. "Address already in use"; ``title`` names the
    failing call.
    """
    reason = str(getattr(exc, "reason", "") or "").strip()
    if reason:
        status = getattr(exc, "status", None)
        return f"{reason} (pj status {status})" if status is not None else reason
    return str(exc) or type(exc).__name__


def create_endpoint(factory: Callable[[], Any] | None = None) -> Any:
    """Create the process's pjsua2 ``Endpoint`` and call ``libCreate``.

    pjlib prints a start-up banner on stdout before any log configuration can apply; it is
    sent to stderr instead so that stdout stays clean for our own output (``gateway call``
    prints JSON there).
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        ep = factory() if factory is not None else pj.Endpoint()
        ep.libCreate()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return ep

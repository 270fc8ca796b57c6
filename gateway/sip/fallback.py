"""Two small pjsip modules of our own, for requests pjsua mishandles or ignores.

pjsua2 has no callback for either case, so both are plain pjsip modules (``pjsip_module``
from ``pjsip/sip_module.h``) registered through ctypes on the running endpoint:

* **Stray ACKs and INVITEs beyond the slots** (priority 33, right after the dialog layer).
  An ACK reaching this point matched no transaction and no dialog (in practice: one without a
  To tag). RFC 3261 §17.2.3 says such an ACK is absorbed; pjsua 2.15 instead took it for a
  merged request and tried to answer it, which trips an assertion
  (``pjsip_endpt_create_response: method != ACK``) and aborts the whole process. This module
  swallows it first, on either binding. An INVITE reaching this point is a new call; when
  pjsua's call slots are all taken (calls plus refusals still in flight, e.g. in a burst),
  pjsua would answer ``486 Busy Here`` itself, which tells a front or PBX "the callee is
  busy" instead of "try another server". So the module answers ``503`` with ``Retry-After``
  statelessly first, before pjsua allocates anything for the call (no slot, no RTP sockets).
  While the worker drains (SIGTERM), every new INVITE and every OPTIONS probe gets that 503
  too, so the SIP front stops sending calls here while the live ones finish.
* **Unhandled requests** (priority 1000, after every pjsip and pjsua module). It sees only
  what the transaction layer, the dialog layer and pjsua's INVITE, OPTIONS, MESSAGE and
  presence handlers passed on, and answers statelessly what
  :func:`gateway.sip.unhandled.answer_unhandled` says (481, 405 or 501 with ``Allow``) instead
  of letting the sender retransmit into silence for 32 s.

Both run on the ``sip`` thread inside ``libHandleEvents``, like every pjsua callback; their
bodies never raise (ctypes would print the error and return 0, "not handled", which is also
safe). Only the first members of ``pjsip_module`` and ``pjsip_hdr`` (list links, name, id,
priority and the callback pointers) are declared: their layout is fixed by the pjsip API.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.sip._pj import native
from gateway.sip.unhandled import answer_unhandled, method_of

log = logging.getLogger("gateway.sip")

#: After the dialog layer (PJSIP_MOD_PRIORITY_UA_PROXY_LAYER is 32), before pjsua (64).
STRAY_ACK_PRIORITY = 33
#: After every pjsip and pjsua module (PJSIP_MOD_PRIORITY_APPLICATION is 64).
UNHANDLED_PRIORITY = 1000
_PJSIP_H_ALLOW = 4  # pjsip_hdr_e (sip_msg.h)
#: Log one line per this many seconds at most while INVITEs are refused for want of slots.
_FULL_LOG_INTERVAL_S = 1.0

_RxCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)
_AnyCallback = ctypes.c_void_p


class _PjStr(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_char_p), ("slen", ctypes.c_ssize_t)]


class _PjsipModule(ctypes.Structure):
    _fields_ = [
        ("prev", ctypes.c_void_p), ("next", ctypes.c_void_p),
        ("name", _PjStr), ("id", ctypes.c_int), ("priority", ctypes.c_int),
        ("load", _AnyCallback), ("start", _AnyCallback), ("stop", _AnyCallback),
        ("unload", _AnyCallback),
        ("on_rx_request", _RxCallback), ("on_rx_response", _AnyCallback),
        ("on_tx_request", _AnyCallback), ("on_tx_response", _AnyCallback),
        ("on_tsx_state", _AnyCallback),
    ]


class _ListHead(ctypes.Structure):
    _fields_ = [("prev", ctypes.c_void_p), ("next", ctypes.c_void_p)]


def _library() -> ctypes.CDLL:
    lib = native()
    lib.pjsua_get_pjsip_endpt.restype = ctypes.c_void_p
    lib.pjsip_endpt_get_capability.restype = ctypes.c_void_p
    lib.pjsip_endpt_get_capability.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    lib.pjsip_endpt_create_pool.restype = ctypes.c_void_p
    lib.pjsip_endpt_create_pool.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                            ctypes.c_size_t]
    lib.pjsip_hdr_clone.restype = ctypes.c_void_p
    lib.pjsip_hdr_clone.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.pjsip_rx_data_get_info.restype = ctypes.c_char_p
    lib.pjsip_rx_data_get_info.argtypes = [ctypes.c_void_p]
    lib.pjsip_endpt_respond_stateless.restype = ctypes.c_int
    lib.pjsip_endpt_respond_stateless.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p]
    lib.pjsip_endpt_register_module.restype = ctypes.c_int
    lib.pjsip_endpt_register_module.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.pjsip_generic_string_hdr_create.restype = ctypes.c_void_p
    lib.pjsip_generic_string_hdr_create.argtypes = [ctypes.c_void_p, ctypes.c_void_p,
                                                    ctypes.c_void_p]
    lib.pjsua_call_get_count.restype = ctypes.c_uint
    lib.pjsua_call_get_max_count.restype = ctypes.c_uint
    return lib


class _Module:
    """One registered module; the object must outlive the endpoint (pjsip keeps pointers)."""

    def __init__(self, lib: ctypes.CDLL, endpt: int, name: bytes, priority: int,
                 on_rx_request: Callable[[Any], int]) -> None:
        self._name = name
        self._callback = _RxCallback(on_rx_request)
        self._struct = _PjsipModule(name=_PjStr(name, len(name)), id=-1, priority=priority,
                                    on_rx_request=self._callback)
        status = lib.pjsip_endpt_register_module(endpt, ctypes.byref(self._struct))
        if status != 0:
            raise RuntimeError(f"pjsip_endpt_register_module({name!r}) failed: {status}")


class RequestGuards:
    """Both modules, registered on the ``sip`` thread after ``libInit``.

    Keep the object alive until after ``libDestroy``: pjsip holds pointers into it.

    Args:
        retry_after_s: ``Retry-After`` on the 503 for INVITEs beyond the call slots.

    Attributes:
        answered: Unhandled requests answered.
        stray_acks: Stray ACKs absorbed.
        refused_full: INVITEs answered 503 because every call slot was taken.
        draining: Set (from any thread) to refuse new INVITEs and OPTIONS probes with 503.
    """

    def __init__(self, retry_after_s: int) -> None:
        lib = _library()
        self._lib = lib
        self._endpt = lib.pjsua_get_pjsip_endpt()
        self.answered = 0
        self.stray_acks = 0
        self.refused_full = 0
        self.draining = False
        self._slots = int(lib.pjsua_call_get_max_count())
        self._last_full_log = 0.0
        self._pool = lib.pjsip_endpt_create_pool(self._endpt, b"gw-guards", 512, 512)
        # One header list per kind of response, each holding a header in a pool of our own
        # (pjsip_endpt_respond_stateless clones what the list holds).
        self._allow = _header_list(
            lib, self._pool, lib.pjsip_endpt_get_capability(self._endpt, _PJSIP_H_ALLOW, None))
        self._name = ctypes.create_string_buffer(b"Retry-After")
        self._value = ctypes.create_string_buffer(str(retry_after_s).encode())
        name, value = _PjStr(), _PjStr()
        name.ptr, name.slen = ctypes.cast(self._name, ctypes.c_char_p), len(b"Retry-After")
        value.ptr = ctypes.cast(self._value, ctypes.c_char_p)
        value.slen = len(str(retry_after_s))
        retry = lib.pjsip_generic_string_hdr_create(self._pool, ctypes.byref(name),
                                                    ctypes.byref(value)) if self._pool else None
        self._retry_after = _header_list(lib, None, retry)
        self._modules = (
            _Module(lib, self._endpt, b"mod-gateway-stray-ack", STRAY_ACK_PRIORITY,
                    self._on_stray_ack),
            _Module(lib, self._endpt, b"mod-gateway-unhandled", UNHANDLED_PRIORITY,
                    self._on_unhandled),
        )

    def _method(self, rdata: Any) -> str:
        return method_of((self._lib.pjsip_rx_data_get_info(rdata) or b"")
                         .decode("ascii", "replace"))

    def _on_stray_ack(self, rdata: Any) -> int:
        try:
            method = self._method(rdata)
            if self.draining and method in ("INVITE", "OPTIONS"):
                self._lib.pjsip_endpt_respond_stateless(self._endpt, rdata, 503, None,
                                                        ctypes.byref(self._retry_after), None)
                return 1
            if method == "INVITE":
                return self._refuse_if_full(rdata)
            if method != "ACK":
                return 0
            self.stray_acks += 1
            log.info("absorbed an ACK that matches no transaction or dialog")
            return 1
        except BaseException:  # never into pjsip
            return 0

    def _refuse_if_full(self, rdata: Any) -> int:
        # While any slot is free pjsua hands the INVITE to us, and the call manager refuses it
        # with a record; only with none left would pjsua answer 486 itself.
        if int(self._lib.pjsua_call_get_count()) < self._slots:
            return 0
        self._lib.pjsip_endpt_respond_stateless(self._endpt, rdata, 503, None,
                                                ctypes.byref(self._retry_after), None)
        self.refused_full += 1
        now = time.monotonic()
        if now - self._last_full_log >= _FULL_LOG_INTERVAL_S:
            self._last_full_log = now
            log.warning("every call slot is taken: INVITEs answered 503 before pjsua "
                        "(%d so far)", self.refused_full)
        return 1

    def _on_unhandled(self, rdata: Any) -> int:
        try:
            method = self._method(rdata)
            answer = answer_unhandled(method)
            if answer is None:
                return 0
            headers = ctypes.byref(self._allow) if answer.allow else None
            self._lib.pjsip_endpt_respond_stateless(self._endpt, rdata, answer.status, None,
                                                    headers, None)
            self.answered += 1
            log.info("unhandled %s request answered %d %s", method[:32], answer.status,
                     answer.reason)
            return 1
        except BaseException:  # never into pjsip
            return 0


def _header_list(lib: ctypes.CDLL, pool: int | None, hdr: int | None) -> _ListHead:
    """A pjsip header list holding ``hdr`` (cloned into ``pool`` when given), or empty."""
    head = _ListHead()
    address = ctypes.addressof(head)
    head.prev = head.next = address
    if hdr:
        if pool:
            hdr = lib.pjsip_hdr_clone(pool, hdr)
        links = _ListHead.from_address(hdr)
        links.prev = links.next = address
        head.prev = head.next = hdr
    return head

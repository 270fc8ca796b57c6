"""Two small pjsip modules of our own, for requests pjsua mishandles or ignores.

pjsua2 has no callback for either case, so both are plain pjsip modules (``pjsip_module``
from ``pjsip/sip_module.h``) registered through ctypes on the running endpoint:

* **Stray ACKs** (priority 33, right after the dialog layer). An ACK reaching this point
  matched no transaction and no dialog (in practice: one without a To tag). RFC 3261 §17.2.3
  says such an ACK is absorbed; pjsua 2.15 instead took it for a merged request and tried to
  answer it, which trips an assertion (``pjsip_endpt_create_response: method != ACK``) and
  aborts the whole process. This module swallows it first, on either binding.
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

    Attributes:
        answered: Unhandled requests answered.
        stray_acks: Stray ACKs absorbed.
    """

    def __init__(self) -> None:
        lib = _library()
        self._lib = lib
        self._endpt = lib.pjsua_get_pjsip_endpt()
        self.answered = 0
        self.stray_acks = 0
        # One Allow header for every response, cloned into a pool of our own and put in a
        # one-element list (pjsip_endpt_respond_stateless clones what the list holds).
        self._allow = _ListHead()
        head = ctypes.addressof(self._allow)
        self._allow.prev = self._allow.next = head
        self._pool = lib.pjsip_endpt_create_pool(self._endpt, b"gw-guards", 512, 512)
        cap = lib.pjsip_endpt_get_capability(self._endpt, _PJSIP_H_ALLOW, None)
        if cap and self._pool:
            clone = lib.pjsip_hdr_clone(self._pool, cap)
            links = _ListHead.from_address(clone)
            links.prev = links.next = head
            self._allow.prev = self._allow.next = clone
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
            if self._method(rdata) != "ACK":
                return 0
            self.stray_acks += 1
            log.info("absorbed an ACK that matches no transaction or dialog")
            return 1
        except BaseException:  # never into pjsip
            return 0

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

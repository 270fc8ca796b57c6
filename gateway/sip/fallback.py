"""A last-resort pjsip module that answers requests no other module claimed.

pjsua2 has no callback for an unhandled request, so this registers a plain pjsip module
(``pjsip_module`` from ``pjsip/sip_module.h``) through ctypes, with the lowest priority of all:
it sees only what the transaction layer, the dialog layer, pjsua's INVITE, OPTIONS, MESSAGE and
presence handlers all passed on, and answers statelessly what
:func:`gateway.sip.unhandled.answer_unhandled` says (481, 405 or 501 with ``Allow``). It runs on
the ``sip`` thread inside ``libHandleEvents``, like every pjsua callback; its body never
raises (ctypes would print the error and return 0, "not handled", which is also safe).

Only the first members of ``pjsip_module`` and ``pjsip_hdr`` (list links, name, id, priority
and the callback pointers) are declared: their layout is fixed by the pjsip API.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

from gateway.sip._pj import native
from gateway.sip.unhandled import answer_unhandled, method_of

log = logging.getLogger("gateway.sip")

#: After every pjsip and pjsua module (PJSIP_MOD_PRIORITY_APPLICATION is 64).
PRIORITY = 1000
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


class UnhandledRequests:
    """The registered fallback module; keep it alive until the endpoint is destroyed.

    Create it on the ``sip`` thread after ``libInit``.
    """

    def __init__(self) -> None:
        lib = native()
        lib.pjsua_get_pjsip_endpt.restype = ctypes.c_void_p
        lib.pjsip_endpt_get_capability.restype = ctypes.c_void_p
        lib.pjsip_endpt_get_capability.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                                   ctypes.c_void_p]
        lib.pjsip_endpt_create_pool.restype = ctypes.c_void_p
        lib.pjsip_endpt_create_pool.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                                ctypes.c_size_t, ctypes.c_size_t]
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
        self._lib = lib
        self._endpt = lib.pjsua_get_pjsip_endpt()
        self.answered = 0
        # One Allow header for every response, cloned into a pool of our own and put in a
        # one-element list (pjsip_endpt_respond_stateless clones what the list holds).
        self._allow = _ListHead()
        head = ctypes.addressof(self._allow)
        self._allow.prev = self._allow.next = head
        self._pool = lib.pjsip_endpt_create_pool(self._endpt, b"gw-fallback", 512, 512)
        cap = lib.pjsip_endpt_get_capability(self._endpt, _PJSIP_H_ALLOW, None)
        if cap and self._pool:
            clone = lib.pjsip_hdr_clone(self._pool, cap)
            links = _ListHead.from_address(clone)
            links.prev = links.next = head
            self._allow.prev = self._allow.next = clone
        self._name = b"mod-gateway-unhandled"
        self._callback = _RxCallback(self._on_rx_request)
        self._module = _PjsipModule(
            name=_PjStr(self._name, len(self._name)), id=-1, priority=PRIORITY,
            on_rx_request=self._callback)
        status = lib.pjsip_endpt_register_module(self._endpt, ctypes.byref(self._module))
        if status != 0:
            raise RuntimeError(f"pjsip_endpt_register_module failed with status {status}")

    def _on_rx_request(self, rdata: Any) -> int:
        try:
            info = (self._lib.pjsip_rx_data_get_info(rdata) or b"").decode("ascii", "replace")
            method = method_of(info)
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

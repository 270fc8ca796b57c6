"""The front's runtime state as typed values, and the JSON-RPC 2.0 framing it is read with.

Pure: encodes requests for Kamailio's ``jsonrpcs`` module, decodes its replies (turning an
``error`` member into :class:`~gateway.front.errors.FrontRpcError`), and parses the result of
``dispatcher.list`` into one :class:`WorkerState` per worker: the dispatcher flags (first
letter ``A`` active, ``I`` inactive, ``D`` disabled, ``T`` trying; second ``P`` probing or
``X`` not), the live call load (``RUNTIME.DLGLOAD``) and the ``maxload`` cap. It also maps the
admin states a caller asks for to the codes ``dispatcher.set_state`` takes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from gateway.front.errors import FrontRpcError

#: States a worker can be put in through ``dispatcher.set_state``.
AdminState = Literal["active", "inactive", "disabled", "trying"]
#: A worker's dispatcher state as read back.
DispatcherState = Literal["active", "inactive", "disabled", "trying"]

#: ``dispatcher.set_state`` codes: probing stays on except for disabled (drain), which pings
#: skip and never revive.
SET_STATE_CODES: Mapping[AdminState, str] = {
    "active": "ap", "inactive": "ip", "disabled": "d", "trying": "tp"}
_STATE_LETTERS: Mapping[str, DispatcherState] = {
    "A": "active", "I": "inactive", "D": "disabled", "T": "trying"}

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


@dataclass(frozen=True)
class WorkerState:
    """One worker as the dispatcher sees it right now.

    Attributes:
        worker_id: The ``duid`` (the spec's worker id).
        uri: The dispatcher URI.
        flags: Raw dispatcher flags, e.g. ``AP``, ``IP``, ``DX``.
        load: Calls counted on it (alg 10).
        maxload: Its capacity.
        priority: Dispatcher priority (higher first).
    """

    worker_id: str
    uri: str
    flags: str
    load: int
    maxload: int
    priority: int

    @property
    def state(self) -> DispatcherState:
        """Active, inactive (probes failing), disabled (drained by an admin) or trying."""
        return _STATE_LETTERS.get(self.flags[:1].upper(), "inactive")

    @property
    def probing(self) -> bool:
        """Whether OPTIONS probes are sent to it."""
        return "P" in self.flags[1:].upper()

    @property
    def accepting(self) -> bool:
        """Whether a new call could be dispatched to it now."""
        return self.state == "active" and (self.maxload == 0 or self.load < self.maxload)


def encode_request(method: str, params: Sequence[str | int], request_id: int) -> bytes:
    """One JSON-RPC 2.0 request datagram (positional parameters, as Kamailio wants)."""
    doc: dict[str, object] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params:
        doc["params"] = list(params)
    return json.dumps(doc, separators=(",", ":")).encode()


def response_id(data: bytes) -> int | None:
    """The ``id`` of a reply datagram, or ``None`` when it cannot be read."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("id"), int):
        return cast(int, doc["id"])
    return None


def decode_response(data: bytes, method: str) -> JsonValue:
    """The ``result`` of a reply datagram.

    Raises:
        FrontRpcError: The reply is not JSON-RPC, or carries an ``error`` member.
    """
    try:
        doc = json.loads(data)
    except ValueError:
        raise FrontRpcError(f"{method}: the reply is not JSON") from None
    if not isinstance(doc, dict):
        raise FrontRpcError(f"{method}: the reply is not a JSON-RPC object")
    error = doc.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        raise FrontRpcError(f"{method}: {error.get('message', 'error')}",
                            code=code if isinstance(code, int) else None)
    if "result" not in doc:
        raise FrontRpcError(f"{method}: the reply has neither result nor error")
    return cast(JsonValue, doc["result"])


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_dispatcher_list(result: JsonValue) -> tuple[WorkerState, ...]:
    """Workers from a ``dispatcher.list`` result (every set, in Kamailio's order).

    Raises:
        FrontRpcError: The result does not have the ``RECORDS[].SET.TARGETS[].DEST`` shape.
    """
    if not isinstance(result, dict):
        raise FrontRpcError("dispatcher.list: unexpected result")
    out: list[WorkerState] = []
    records = result.get("RECORDS") or []
    if not isinstance(records, list):
        raise FrontRpcError("dispatcher.list: RECORDS is not a list")
    for record in records:
        dset = record.get("SET") if isinstance(record, dict) else None
        targets = dset.get("TARGETS") if isinstance(dset, dict) else None
        if not isinstance(targets, list):
            raise FrontRpcError("dispatcher.list: a SET has no TARGETS")
        for target in targets:
            dest = target.get("DEST") if isinstance(target, dict) else None
            if not isinstance(dest, dict):
                raise FrontRpcError("dispatcher.list: a target has no DEST")
            attrs = dest.get("ATTRS")
            runtime = dest.get("RUNTIME")
            attrs = attrs if isinstance(attrs, dict) else {}
            runtime = runtime if isinstance(runtime, dict) else {}
            out.append(WorkerState(
                worker_id=str(attrs.get("DUID") or ""), uri=str(dest.get("URI", "")),
                flags=str(dest.get("FLAGS", "")), load=_int(runtime.get("DLGLOAD")),
                maxload=_int(attrs.get("MAXLOAD")), priority=_int(dest.get("PRIORITY"))))
    return tuple(out)


# uac_reg record flags (src/modules/uac/uac_reg.c).
_REG_DISABLED = 1 << 0
_REG_ONLINE = 1 << 2


@dataclass(frozen=True)
class RegistrationState:
    """One upstream registration as ``uac.reg_dump`` reports it, without its secrets.

    Attributes:
        user: The registered extension (``l_uuid``).
        registrar: Where the REGISTER goes (``auth_proxy``).
        flags: uac_reg flags (4 online, 1 disabled, 2 ongoing, 8 auth sent, 16 init).
        expires_s: Lifetime asked for.
    """

    user: str
    registrar: str
    flags: int
    expires_s: int

    @property
    def online(self) -> bool:
        """Whether the registrar accepted the last REGISTER and it has not expired."""
        return bool(self.flags & _REG_ONLINE)

    @property
    def disabled(self) -> bool:
        """Whether uac gave up on it (see ``reg_retry_interval``)."""
        return bool(self.flags & _REG_DISABLED)


def parse_reg_dump(result: JsonValue) -> tuple[RegistrationState, ...]:
    """Registrations from a ``uac.reg_dump`` result; passwords and HA1 are dropped here.

    Raises:
        FrontRpcError: The result is not a list of records.
    """
    if not isinstance(result, list):
        raise FrontRpcError("uac.reg_dump: unexpected result")
    out: list[RegistrationState] = []
    for rec in result:
        if not isinstance(rec, dict):
            raise FrontRpcError("uac.reg_dump: a record is not an object")
        out.append(RegistrationState(
            user=str(rec.get("l_uuid") or ""), registrar=str(rec.get("auth_proxy") or ""),
            flags=_int(rec.get("flags")), expires_s=_int(rec.get("expires"))))
    return tuple(out)

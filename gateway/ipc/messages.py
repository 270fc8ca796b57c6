"""The messages between the control process and SIP workers, and their validating codec.

Every message is a frozen, slotted dataclass (defined in :mod:`gateway.ipc.from_worker` and
:mod:`gateway.ipc.from_control`, re-exported here) whose ``type`` class constant names it on the
wire; :data:`WorkerMessage` (worker to control) and :data:`ControlMessage` (control to worker)
are closed unions to dispatch on with ``assert_never``. :func:`encode` turns a message into the
JSON object of one frame and :func:`decode` turns one back, both checking every field (JSON
type, required or not, length and range bounds, closed sets) and the rules between fields, so a
bad message is refused by the sender as well as the receiver. Every problem raises
:class:`IpcError` naming the message type and field, never the value. The protocol is
versioned by :data:`PROTOCOL_VERSION`: any change to a message or field bumps it, and the
control process accepts only its own version in :class:`Hello` (see :func:`negotiate`).
``docs/ipc.md`` is the reference; ``tests/fixtures/ipc/v4.jsonl`` pins the wire format. Pure:
no I/O.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from gateway.errors import GatewayError
from gateway.ipc import checks as c
from gateway.ipc.from_control import (
    Drain as Drain,
    Hangup as Hangup,
    Originate as Originate,
    Reload as Reload,
    Say as Say,
    Shutdown as Shutdown,
    ToolResult as ToolResult,
    Transfer as Transfer,
    WatchLevels as WatchLevels,
    Welcome as Welcome,
)
from gateway.ipc.from_worker import (
    CALL_EVENT_KINDS as CALL_EVENT_KINDS,
    CODECS as CODECS,
    TOOL_OPS as TOOL_OPS,
    CallEnded as CallEnded,
    CallEvent as CallEvent,
    CallEventKind as CallEventKind,
    CallOffered as CallOffered,
    CallStarted as CallStarted,
    Codec as Codec,
    CommandResult as CommandResult,
    Hello as Hello,
    Load as Load,
    RelayOffered as RelayOffered,
    ToolOp as ToolOp,
    ToolRequest as ToolRequest,
)

__all__ = [
    "CALL_EVENT_KINDS", "CODECS", "CONTROL_MESSAGES", "PROTOCOL_VERSION", "TOOL_OPS",
    "WORKER_MESSAGES", "CallEnded", "CallEvent", "CallEventKind", "CallOffered", "CallStarted",
    "Codec", "CommandResult", "ControlMessage", "Drain", "Hangup", "Hello", "IpcError", "Load",
    "Message", "Originate", "RelayOffered", "Reload", "Say", "Shutdown", "ToolOp", "ToolRequest",
    "ToolResult", "Transfer", "WatchLevels", "Welcome", "WorkerMessage", "decode",
    "decode_from_control", "decode_from_worker", "encode", "negotiate",
]

#: Version of this protocol; both ends must speak the same one.
PROTOCOL_VERSION: Final = 4


class IpcError(GatewayError):
    """A message that does not follow the protocol (received, or about to be sent).

    Attributes:
        message_type: The message's ``type`` when it had a usable one.
        field: The offending field (``data.turns[2]`` inside JSON), ``None`` for the message.
        reason: What was wrong, without the value.
    """

    def __init__(
        self, reason: str, *, message_type: str | None = None, field: str | None = None
    ) -> None:
        self.message_type = message_type
        self.field = field
        self.reason = reason
        where = "IPC message" if message_type is None else f"IPC message {message_type!r}"
        super().__init__(f"{where}: {reason}" if field is None else
                         f"{where}: field {field!r} {reason}")


WorkerMessage: TypeAlias = (
    Hello | Load | CallOffered | RelayOffered | CallStarted | CallEvent | CallEnded | ToolRequest
    | CommandResult
)
ControlMessage: TypeAlias = (
    Welcome | Reload | Hangup | Transfer | Say | Originate | Drain | Shutdown | ToolResult
    | WatchLevels
)
Message: TypeAlias = WorkerMessage | ControlMessage
WORKER_MESSAGES: Final[tuple[type[WorkerMessage], ...]] = typing.get_args(WorkerMessage)
CONTROL_MESSAGES: Final[tuple[type[ControlMessage], ...]] = typing.get_args(ControlMessage)

# --------------------------------------------------------------------------- rules across fields

#: ToolRequest payload fields by op: (required, optional); every other one must be absent.
_OP_FIELDS: Final[dict[str, tuple[frozenset[str], frozenset[str]]]] = {
    "python": (frozenset({"path"}), frozenset({"name", "arguments"})),
    "sdk_tool": (frozenset({"agent_path", "agent_name", "tool_name", "arguments_json"}),
                 frozenset({"tool_call_id"})),
    "guardrail": (frozenset({"path", "text"}), frozenset({"name"})),
    "sdk_guardrail": (frozenset({"agent_path", "agent_name", "guardrail_name", "text"}),
                      frozenset()),
}
#: Every payload field, in declaration order (the order problems are reported in).
_PAYLOAD: Final = tuple(
    f.name for f in dataclasses.fields(ToolRequest)
    if any(f.name in r | o for r, o in _OP_FIELDS.values())
)


def _check_tool_request(msg: ToolRequest) -> None:
    required, allowed = _OP_FIELDS[msg.op]
    for name in _PAYLOAD:
        present = getattr(msg, name) is not None
        if name in required and not present:
            raise IpcError(f"is required for op {msg.op!r}", message_type=msg.type, field=name)
        if present and name not in required | allowed:
            raise IpcError(f"is not used by op {msg.op!r}", message_type=msg.type, field=name)


def _check_tool_result(msg: ToolResult) -> None:
    def bad(name: str, reason: str) -> IpcError:
        return IpcError(reason, message_type=msg.type, field=name)

    if msg.ok:
        for name in ("error", "error_type"):
            if getattr(msg, name) is not None:
                raise bad(name, "must be absent when ok is true")
        if (msg.output is None) == (msg.tripped is None):
            raise bad("output", "or 'tripped' (exactly one) is required when ok is true")
        if msg.reason is not None and not msg.tripped:
            raise bad("reason", "must be absent unless tripped is true")
        return
    if not msg.error:
        raise bad("error", "is required when ok is false")
    for name in ("tripped", "reason"):
        if getattr(msg, name) is not None:
            raise bad(name, "must be absent when ok is false")


def _check_command_result(msg: CommandResult) -> None:
    if msg.ok and msg.error is not None:
        raise IpcError("must be absent when ok is true", message_type=msg.type, field="error")
    if not msg.ok and not msg.error:
        raise IpcError("is required when ok is false", message_type=msg.type, field="error")


_RULES: Final[dict[type[Message], Callable[[Any], None]]] = {
    ToolRequest: _check_tool_request,
    ToolResult: _check_tool_result,
    CommandResult: _check_command_result,
}


@dataclass(frozen=True, slots=True)
class _Spec:
    cls: type[Message]
    #: (name, check, required) in declaration order: the order fields are encoded in.
    fields: tuple[tuple[str, c.Check, bool], ...]
    names: frozenset[str]


def _spec(cls: type[Message]) -> _Spec:
    declared = dataclasses.fields(cls)
    specs = tuple(
        (f.name, f.metadata["check"],
         f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        for f in declared
    )
    return _Spec(cls, specs, frozenset(f.name for f in declared))


_SPECS: Final[dict[str, _Spec]] = {cls.type: _spec(cls) for cls in typing.get_args(Message)}


def _checked(spec: _Spec, name: str, check: c.Check, value: Any) -> Any:
    try:
        return check(value)
    except c.Invalid as exc:
        raise IpcError(exc.reason, message_type=spec.cls.type, field=name + exc.path) from None


# --------------------------------------------------------------------------- codec


def encode(msg: Message) -> dict[str, Any]:
    """The JSON object of one frame carrying ``msg``; ``None`` fields are left out.

    Raises:
        IpcError: A field is missing, of the wrong type, out of bounds, or breaks a rule
            between fields.
    """
    spec = _SPECS.get(getattr(type(msg), "type", ""))
    if spec is None or spec.cls is not type(msg):
        raise IpcError(f"{type(msg).__name__} is not an IPC message")
    wire: dict[str, Any] = {"type": spec.cls.type}
    for name, check, _required in spec.fields:
        value = getattr(msg, name)
        if value is not None:
            wire[name] = _checked(spec, name, check, value)
    rule = _RULES.get(spec.cls)
    if rule is not None:
        rule(msg)
    return wire


def decode(data: Mapping[str, Any]) -> Message:
    """The message in one received JSON object, of either direction.

    Raises:
        IpcError: No known string ``type``, an unknown field, or a field missing, of the
            wrong type, out of bounds, or breaking a rule between fields.
    """
    if not isinstance(data, Mapping):
        raise IpcError("is not a JSON object")
    message_type = data.get("type")
    if not isinstance(message_type, str):
        raise IpcError("has no string 'type'", field="type")
    spec = _SPECS.get(message_type)
    if spec is None:
        shown = message_type if len(message_type) <= 40 else message_type[:40] + "..."
        raise IpcError(f"unknown message type {shown!r} (protocol version {PROTOCOL_VERSION})")
    kwargs: dict[str, Any] = {}
    for name, check, required in spec.fields:
        value = data.get(name)
        if value is None:
            if required:
                raise IpcError("is missing", message_type=message_type, field=name)
            continue
        kwargs[name] = _checked(spec, name, check, value)
    for key in data:
        if key != "type" and key not in spec.names:
            shown = key if len(key) <= 40 else key[:40] + "..."
            raise IpcError(f"unknown field {shown!r}", message_type=message_type)
    msg = spec.cls(**kwargs)
    rule = _RULES.get(spec.cls)
    if rule is not None:
        rule(msg)
    return msg


def _directed(data: Mapping[str, Any], wanted: tuple[type[Any], ...], sender: str) -> Any:
    msg = decode(data)
    if not isinstance(msg, wanted):
        raise IpcError(f"is not a message a {sender} sends", message_type=msg.type)
    return msg


def decode_from_worker(data: Mapping[str, Any]) -> WorkerMessage:
    """:func:`decode`, refusing messages only the control process sends.

    Raises:
        IpcError: As :func:`decode`, or the message goes the other way.
    """
    result: WorkerMessage = _directed(data, WORKER_MESSAGES, "worker")
    return result


def decode_from_control(data: Mapping[str, Any]) -> ControlMessage:
    """:func:`decode`, refusing messages only workers send.

    Raises:
        IpcError: As :func:`decode`, or the message goes the other way.
    """
    result: ControlMessage = _directed(data, CONTROL_MESSAGES, "control process")
    return result


def negotiate(hello: Hello, settings_digest: str) -> Welcome:
    """The control process's answer to a worker's :class:`Hello`.

    Args:
        hello: The worker's first message.
        settings_digest: Digest of the settings the worker must run with (lowercase hex).

    Raises:
        IpcError: The worker speaks another protocol version; close the channel.
    """
    if hello.protocol != PROTOCOL_VERSION:
        raise IpcError(
            f"version {hello.protocol} is not supported (this side speaks {PROTOCOL_VERSION})",
            message_type=Hello.type, field="protocol",
        )
    return Welcome(protocol=PROTOCOL_VERSION, settings_digest=settings_digest)

"""Messages a SIP worker sends to the control process, as frozen values.

Lifecycle (:class:`Hello`, :class:`CallOffered`, :class:`CallStarted`, :class:`CallEnded`),
requests (:class:`ToolRequest`), answers (:class:`CommandResult`) and the droppable telemetry
(:class:`Load`, :class:`CallEvent`). Each field carries its wire check in its metadata; the
codec, the rules between fields and the union are in :mod:`gateway.ipc.messages`, which
re-exports everything here. Pure: no I/O.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, TypeAlias

from gateway.ipc import checks as c

__all__ = [
    "CALL_EVENT_KINDS", "CODECS", "RELAY_HEADER", "TOOL_OPS", "CallEnded", "CallEvent",
    "CallEventKind", "CallOffered", "CallStarted", "Codec", "CommandResult", "Hello", "Load",
    "RelayOffered", "ToolOp", "ToolRequest",
]

CallEventKind: TypeAlias = Literal[
    "state", "transcript", "tool", "handoff", "guardrail", "dtmf", "barge_in", "transfer",
    "levels",
]
ToolOp: TypeAlias = Literal["python", "sdk_tool", "guardrail", "sdk_guardrail"]
#: SIP codec names (RFC 3551 encoding names) a call's media can use.
Codec: TypeAlias = Literal["PCMU", "PCMA"]
#: Header of a relay leg's INVITE to OpenAI carrying ``RelayOffered.token``; OpenAI's webhook
#: brings it back in ``sip_headers``.
RELAY_HEADER: Final = "X-Gateway-Relay"
CALL_EVENT_KINDS: Final[tuple[str, ...]] = typing.get_args(CallEventKind)
TOOL_OPS: Final[tuple[str, ...]] = typing.get_args(ToolOp)
CODECS: Final[tuple[str, ...]] = typing.get_args(Codec)


@dataclass(frozen=True, slots=True)
class Hello:
    """First message of a worker: who it is and what it can take.

    ``binding`` describes the pjsua2 build, e.g. ``pjproject 2.15.1 (source build)``;
    ``capacity`` is the number of concurrent calls; ``sip_host``/``sip_port`` is the address
    its SIP endpoint listens on.
    """

    type: ClassVar[str] = "hello"
    worker_id: str = field(metadata=c.meta(c.ID))
    pid: int = field(metadata=c.meta(c.integer(1, 2**31 - 1)))
    protocol: int = field(metadata=c.meta(c.VERSION))
    binding: str = field(metadata=c.meta(c.text(256)))
    capacity: int = field(metadata=c.meta(c.COUNT))
    sip_host: str = field(metadata=c.meta(c.text(255, min_chars=1)))
    sip_port: int = field(metadata=c.meta(c.integer(1, 65535)))


@dataclass(frozen=True, slots=True)
class Load:
    """Calls in progress; sent periodically and whenever it changes (droppable)."""

    type: ClassVar[str] = "load"
    active: int = field(metadata=c.meta(c.COUNT))
    capacity: int = field(metadata=c.meta(c.COUNT))
    draining: bool = field(default=False, metadata=c.meta(c.flag))


@dataclass(frozen=True, slots=True)
class CallOffered:
    """An INVITE reached the worker; ``time`` is Unix time in seconds."""

    type: ClassVar[str] = "call_offered"
    call_id: str = field(metadata=c.meta(c.ID))
    sip_call_id: str = field(metadata=c.meta(c.text(256, min_chars=1)))
    from_user: str = field(metadata=c.meta(c.USER))
    to_user: str = field(metadata=c.meta(c.USER))
    request_uri_user: str = field(metadata=c.meta(c.USER))
    source_ip: str = field(metadata=c.meta(c.ip_address))
    time: float = field(metadata=c.meta(c.TIME))


@dataclass(frozen=True, slots=True)
class RelayOffered:
    """A ``relay:`` route is about to dial OpenAI for call ``call_id`` with ``token``.

    Sent before the relay leg's INVITE, so the control process knows the token when OpenAI's
    webhook brings it back (in ``X-Gateway-Relay``) and runs route ``route``'s agent for it,
    with the caller's INVITE as the agent's templates see it (``headers``: first value of
    each header name).
    """

    type: ClassVar[str] = "relay_offered"
    call_id: str = field(metadata=c.meta(c.ID))
    token: str = field(metadata=c.meta(c.pattern(r"[A-Za-z0-9_-]{16,64}",
                                                 "16-64 URL-safe characters", 64)))
    route: str = field(metadata=c.meta(c.NAME))
    from_user: str = field(metadata=c.meta(c.USER))
    to_user: str = field(metadata=c.meta(c.USER))
    request_uri: str = field(metadata=c.meta(c.text(1024)))
    source_ip: str = field(metadata=c.meta(c.ip_address))
    account: str = field(default="trunk", metadata=c.meta(c.NAME))
    caller_name: str | None = field(default=None, metadata=c.maybe(c.text(128)))
    headers: Mapping[str, str] = field(
        default_factory=dict, metadata=c.meta(c.text_map(64, 128, 1024)))


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The call was answered and bridged to an agent."""

    type: ClassVar[str] = "call_started"
    call_id: str = field(metadata=c.meta(c.ID))
    route: str = field(metadata=c.meta(c.NAME))
    agent: str = field(metadata=c.meta(c.NAME))
    codec: Codec = field(metadata=c.meta(c.choice(CODECS)))


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Something happened on a live call (droppable); ``data`` is small JSON (16 KiB)."""

    type: ClassVar[str] = "call_event"
    call_id: str = field(metadata=c.meta(c.ID))
    kind: CallEventKind = field(metadata=c.meta(c.choice(CALL_EVENT_KINDS)))
    time: float = field(metadata=c.meta(c.TIME))
    data: Mapping[str, Any] = field(
        default_factory=dict, metadata=c.meta(c.json_object(16 * 1024)))


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over; ``record`` is the call record as JSON data (256 KiB)."""

    type: ClassVar[str] = "call_ended"
    call_id: str = field(metadata=c.meta(c.ID))
    reason: str = field(metadata=c.meta(c.REASON))
    record: Mapping[str, Any] = field(
        default_factory=dict, metadata=c.meta(c.json_object(256 * 1024)))


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """Run a tool or guardrail in the control process's pool; answered by :class:`ToolResult`.

    ``op`` decides which payload fields are required and which must be absent (``None``):

    * ``python``: ``path``; optional ``name``, ``arguments`` (validated JSON arguments).
    * ``sdk_tool``: ``agent_path``, ``agent_name``, ``tool_name``, ``arguments_json``;
      optional ``tool_call_id`` (the Realtime ``call_id``).
    * ``guardrail``: ``path``, ``text``; optional ``name``.
    * ``sdk_guardrail``: ``agent_path``, ``agent_name``, ``guardrail_name``, ``text``.
    """

    type: ClassVar[str] = "tool_request"
    request_id: int = field(metadata=c.meta(c.REQUEST_ID))
    call_id: str = field(metadata=c.meta(c.ID))
    op: ToolOp = field(metadata=c.meta(c.choice(TOOL_OPS)))
    timeout_s: float = field(metadata=c.meta(c.number(0.001, 3600)))
    path: str | None = field(default=None, metadata=c.maybe(c.PATH))
    name: str | None = field(default=None, metadata=c.maybe(c.NAME))
    arguments: Mapping[str, Any] | None = field(
        default=None, metadata=c.maybe(c.json_object(256 * 1024)))
    agent_path: str | None = field(default=None, metadata=c.maybe(c.PATH))
    agent_name: str | None = field(default=None, metadata=c.maybe(c.NAME))
    tool_name: str | None = field(default=None, metadata=c.maybe(c.NAME))
    arguments_json: str | None = field(default=None, metadata=c.maybe(c.text(256 * 1024)))
    tool_call_id: str | None = field(default=None, metadata=c.maybe(c.text(128)))
    guardrail_name: str | None = field(default=None, metadata=c.maybe(c.NAME))
    text: str | None = field(default=None, metadata=c.maybe(c.text(c.MAX_TEXT_CHARS)))


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The answer to a command (``Hangup``, ``Transfer``, ``Say``, ``Originate``).

    ``request_id`` is the command's; ``call_id`` is the call an ``Originate`` placed.
    """

    type: ClassVar[str] = "command_result"
    request_id: int = field(metadata=c.meta(c.REQUEST_ID))
    ok: bool = field(metadata=c.meta(c.flag))
    error: str | None = field(default=None, metadata=c.maybe(c.text(512)))
    call_id: str | None = field(default=None, metadata=c.maybe(c.ID))

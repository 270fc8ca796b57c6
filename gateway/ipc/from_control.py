"""Messages the control process sends to a SIP worker, as frozen values.

The handshake answer (:class:`Welcome`), dialplan pushes (:class:`Reload`), commands on one
call (:class:`Hangup`, :class:`Transfer`, :class:`Say`, each answered by a
:class:`~gateway.ipc.from_worker.CommandResult`), worker lifecycle (:class:`Drain`,
:class:`Shutdown`), tool outcomes (:class:`ToolResult`) and which calls' audio levels someone
watches (:class:`WatchLevels`). Each field carries its wire check
in its metadata; the codec, the rules between fields and the union are in
:mod:`gateway.ipc.messages`, which re-exports everything here. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from gateway.ipc import checks as c

__all__ = ["Drain", "Hangup", "Originate", "Reload", "Say", "Shutdown", "ToolResult",
           "Transfer", "WatchLevels", "Welcome"]

@dataclass(frozen=True, slots=True)
class Welcome:
    """The answer to :class:`Hello`: the version in force and a digest of worker settings."""

    type: ClassVar[str] = "welcome"
    protocol: int = field(metadata=c.meta(c.VERSION))
    settings_digest: str = field(
        metadata=c.meta(c.pattern(r"[0-9a-f]+", "lowercase hex digits", 128)))


@dataclass(frozen=True, slots=True)
class Reload:
    """Switch to a dialplan the control process loaded and validated.

    ``plan`` is the finished plan as :func:`gateway.dialplan.wire.encode_plan` text, so a
    worker runs exactly that plan, whatever is on disk now, without importing user code;
    ``path`` names the dialplan file in logs.
    """

    type: ClassVar[str] = "reload"
    version: int = field(metadata=c.meta(c.integer(1, 2**53 - 1)))
    path: str = field(metadata=c.meta(c.PATH))
    plan: str = field(metadata=c.meta(c.pattern(r"[A-Za-z0-9+/]+={0,2}", "base64 text",
                                                c.MAX_TEXT_CHARS)))


@dataclass(frozen=True, slots=True)
class Hangup:
    """End a call (BYE or final response); answered by :class:`CommandResult`."""

    type: ClassVar[str] = "hangup"
    request_id: int = field(metadata=c.meta(c.REQUEST_ID))
    call_id: str = field(metadata=c.meta(c.ID))
    reason: str = field(metadata=c.meta(c.REASON))


@dataclass(frozen=True, slots=True)
class Transfer:
    """Blind-transfer a call to ``target`` (REFER); answered by :class:`CommandResult`."""

    type: ClassVar[str] = "transfer"
    request_id: int = field(metadata=c.meta(c.REQUEST_ID))
    call_id: str = field(metadata=c.meta(c.ID))
    target: str = field(metadata=c.meta(c.uri(512)))


@dataclass(frozen=True, slots=True)
class Say:
    """Have the call's agent say ``text``; answered by :class:`CommandResult`."""

    type: ClassVar[str] = "say"
    request_id: int = field(metadata=c.meta(c.REQUEST_ID))
    call_id: str = field(metadata=c.meta(c.ID))
    text: str = field(metadata=c.meta(c.text(4096, min_chars=1)))


@dataclass(frozen=True, slots=True)
class Originate:
    """Place an outbound call to ``to`` with agent ``agent``.

    Answered by :class:`CommandResult`, with the new call's ``call_id`` when it was placed.
    ``context`` fills the agent's ``{var.NAME}`` template variables; ``max_duration_s`` (0:
    the agent's or the gateway's limit) ends the call; ``ring_timeout_s`` gives up unanswered.
    """

    type: ClassVar[str] = "originate"
    request_id: int = field(metadata=c.meta(c.REQUEST_ID))
    to: str = field(metadata=c.meta(c.uri(512)))
    agent: str = field(metadata=c.meta(c.NAME))
    context: Mapping[str, str] = field(
        default_factory=dict, metadata=c.meta(c.text_map(64, 64, 2048)))
    max_duration_s: float = field(default=0.0, metadata=c.meta(c.number(0, 86_400)))
    ring_timeout_s: float = field(default=30.0, metadata=c.meta(c.number(1, 600)))


@dataclass(frozen=True, slots=True)
class Drain:
    """Take no new calls; live ones may run ``deadline_s`` more seconds, then get BYE."""

    type: ClassVar[str] = "drain"
    deadline_s: float = field(metadata=c.meta(c.number(0, 86_400)))


@dataclass(frozen=True, slots=True)
class Shutdown:
    """End every call now and exit."""

    type: ClassVar[str] = "shutdown"


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The outcome of a :class:`ToolRequest` with the same request id.

    ``ok``: exactly one of ``output`` (tools) and ``tripped`` (guardrails), ``reason`` only
    when tripped. Not ``ok``: ``error`` and optionally ``error_type`` and ``output`` (a failed
    tool's ``{"error": ...}`` text for the model).
    """

    type: ClassVar[str] = "tool_result"
    request_id: int = field(metadata=c.meta(c.REQUEST_ID))
    ok: bool = field(metadata=c.meta(c.flag))
    output: str | None = field(default=None, metadata=c.maybe(c.text(256 * 1024)))
    tripped: bool | None = field(default=None, metadata=c.maybe(c.flag))
    reason: str | None = field(default=None, metadata=c.maybe(c.text(4096)))
    error: str | None = field(default=None, metadata=c.maybe(c.text(2048)))
    error_type: str | None = field(default=None, metadata=c.maybe(c.text(128)))


@dataclass(frozen=True, slots=True)
class WatchLevels:
    """Which calls' audio levels the monitor watches: all (``all_calls``) or ``call_ids``.

    Sent to every worker whenever event streams start or stop; a worker samples the levels
    of its watched calls and reports them as ``levels`` call events, and none when neither
    is set. Ids of other workers' calls are ignored.
    """

    type: ClassVar[str] = "watch_levels"
    all_calls: bool = field(metadata=c.meta(c.flag))
    call_ids: tuple[str, ...] = field(default=(), metadata=c.meta(c.text_list(256, c.ID)))

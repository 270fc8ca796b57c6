"""The dialplan as typed, frozen values: patterns, matches, agents, actions, routes.

The loader builds these from YAML after checking everything (so a :class:`Dialplan` that exists
is valid: every route names an existing agent, every regex compiled, every template variable is
known); the router only reads them. Patterns compile their regex once, here, so matching a call
is a few string comparisons. :meth:`ServerVad.to_realtime` and friends give the GA Realtime
``session.update`` shapes (``audio.input.turn_detection``, ``audio.input.transcription``) so the
session code does not re-derive them. What an agent can do besides talking (tools, handoffs,
output guardrails, DTMF handling) is an :class:`~gateway.agents.spec.AgentCapabilities` value on
its :class:`AgentSpec`. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

from gateway.agents.spec import AgentCapabilities, ToolSpec
from gateway.config import Secret
from gateway.dialplan.template import Template

if TYPE_CHECKING:
    from gateway.dialplan.router import CallInfo

#: Built-in GA Realtime voices (``audio.output.voice``).
VOICES: Final = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin",
                 "cedar")
#: Voice used when an agent names none (OpenAI recommends ``marin`` or ``cedar``).
DEFAULT_VOICE: Final = "marin"

PatternKind = Literal["exact", "prefix", "regex"]
MediaMode = Literal["native", "transcode"]
#: How a call reached the gateway (``match: {ingress: ...}``).
Ingress = Literal["sip", "openai"]
INGRESSES: Final = ("sip", "openai")
Eagerness = Literal["low", "medium", "high", "auto"]
Network = IPv4Network | IPv6Network


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


def _no_tools() -> Mapping[str, ToolSpec]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Pattern:
    """A condition on one string: equal to, starting with, or containing a regex match.

    ``regex`` uses :func:`re.search`, so anchor with ``^``/``$`` to match the whole value.

    Raises:
        ValueError: On construction, when ``kind`` is ``regex`` and ``value`` does not compile.
    """

    kind: PatternKind
    value: str
    _regex: re.Pattern[str] | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind == "regex":
            try:
                compiled = re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
            object.__setattr__(self, "_regex", compiled)

    def matches(self, value: str | None) -> bool:
        """Whether ``value`` satisfies the pattern; ``None`` (absent) never does."""
        if value is None:
            return False
        if self._regex is not None:
            return self._regex.search(value) is not None
        if self.kind == "prefix":
            return value.startswith(self.value)
        return value == self.value


def matches_any(patterns: tuple[Pattern, ...], value: str | None) -> bool:
    """Whether ``value`` matches one of ``patterns``; an empty tuple means "any value"."""
    return not patterns or any(p.matches(value) for p in patterns)


@dataclass(frozen=True)
class HeaderMatch:
    """A condition on a SIP header; ``name`` is lower-case (header names are case-insensitive)."""

    name: str
    patterns: tuple[Pattern, ...]


@dataclass(frozen=True)
class Match:
    """Conditions of a route; all given ones must hold, an empty tuple means "any".

    Each pattern tuple is a list of alternatives (any one may match).
    """

    to: tuple[Pattern, ...] = ()
    from_: tuple[Pattern, ...] = ()
    request_uri: tuple[Pattern, ...] = ()
    headers: tuple[HeaderMatch, ...] = ()
    account: tuple[Pattern, ...] = ()
    source: tuple[Network, ...] = ()
    #: How the call reached the gateway (any of these): ``sip`` (an INVITE to a SIP worker)
    #: or ``openai`` (a ``realtime.call.incoming`` webhook from OpenAI's SIP endpoint).
    ingress: tuple[Ingress, ...] = ()

    def matches(self, call: CallInfo) -> bool:
        """Whether ``call`` satisfies every condition."""
        if self.ingress and call.ingress not in self.ingress:
            return False
        if not (matches_any(self.to, call.to_user) and matches_any(self.from_, call.from_user)
                and matches_any(self.request_uri, call.request_uri)
                and matches_any(self.account, call.account)):
            return False
        for header in self.headers:
            if not matches_any(header.patterns, call.header(header.name)):
                return False
        if self.source:
            ip = call.ip
            # ``in`` between an IPv4 address and an IPv6 network is simply False.
            return ip is not None and any(ip in net for net in self.source)
        return True


@dataclass(frozen=True)
class ServerVad:
    """``server_vad`` turn detection (defaults are the API's)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None

    def to_realtime(self) -> dict[str, object]:
        """The ``audio.input.turn_detection`` object of a GA ``session.update``."""
        out: dict[str, object] = {
            "type": "server_vad", "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }
        if self.idle_timeout_ms is not None:
            out["idle_timeout_ms"] = self.idle_timeout_ms
        return out


@dataclass(frozen=True)
class SemanticVad:
    """``semantic_vad`` turn detection."""

    eagerness: Eagerness = "auto"
    create_response: bool = True
    interrupt_response: bool = True

    def to_realtime(self) -> dict[str, object]:
        """The ``audio.input.turn_detection`` object of a GA ``session.update``."""
        return {"type": "semantic_vad", "eagerness": self.eagerness,
                "create_response": self.create_response,
                "interrupt_response": self.interrupt_response}


#: ``None`` means no turn detection (``turn_detection: none``).
TurnDetection = ServerVad | SemanticVad | None


@dataclass(frozen=True)
class Transcription:
    """Input audio transcription (``audio.input.transcription``)."""

    model: str
    language: str | None = None
    prompt: str | None = None

    def to_realtime(self) -> dict[str, object]:
        """The ``audio.input.transcription`` object of a GA ``session.update``."""
        out: dict[str, object] = {"model": self.model}
        if self.language is not None:
            out["language"] = self.language
        if self.prompt is not None:
            out["prompt"] = self.prompt
        return out


@dataclass(frozen=True)
class AgentSpec:
    """A voice agent a route can hand the call to.

    Attributes:
        name: Key under ``agents:``.
        instructions: System prompt template.
        voice: One of :data:`VOICES`.
        model: Realtime model, or ``None`` for the gateway's configured default.
        media: ``native`` (G.711 straight to the API) or ``transcode`` (24 kHz PCM).
        turn_detection: Server or semantic VAD, or ``None`` for none.
        transcription: Caller-audio transcription, or ``None`` (off).
        greeting: Template the agent says first, or ``None`` (the caller speaks first).
        max_duration_s: Call limit for this agent, or ``None`` for the gateway's.
        fallback: SIP URI the caller is transferred to (REFER) when the agent's Realtime
            session is lost for good mid-call, or ``None`` (hang up). A route's own
            ``fallback`` wins.
        source: File the agent was defined in (for an Agents SDK agent: the file of the route
            that names it).
        line: Line of its definition.
        capabilities: Tools, handoffs, output guardrails and DTMF handling.
    """

    name: str
    instructions: Template
    voice: str = DEFAULT_VOICE
    model: str | None = None
    media: MediaMode = "native"
    turn_detection: TurnDetection = ServerVad()
    transcription: Transcription | None = None
    greeting: Template | None = None
    max_duration_s: int | None = None
    fallback: str | None = None
    source: str = ""
    line: int | None = None
    capabilities: AgentCapabilities = AgentCapabilities()

    @property
    def variables(self) -> frozenset[str]:
        """``{var.NAME}`` names its instructions and greeting use."""
        if self.greeting is None:
            return self.instructions.variables
        return self.instructions.variables | self.greeting.variables


@dataclass(frozen=True)
class Relay:
    """Carry an agent call's media through OpenAI's SIP endpoint, not the gateway's bridge.

    The SIP worker answers the caller, places a second call to ``uri`` (or
    ``openai_calls.sip_uri`` when ``None``) and joins the two in pjsua's conference bridge;
    OpenAI's webhook for that second call is matched back to it, and the agent runs on the
    sideband in the control process.
    """

    uri: str | None = None


@dataclass(frozen=True)
class AgentAction:
    """Answer the call and connect it to agent ``agent``.

    Attributes:
        agent: Name of the agent (a key of :attr:`Dialplan.agents`).
        sdk_agent: For an ``sdk_agent:`` route, the ``pkg.module:attr`` of the Agents SDK
            ``RealtimeAgent``; ``agent`` is then that agent's ``name``.
        relay: For a ``relay:`` route, how the call reaches OpenAI's SIP endpoint; ``None``
            bridges the call's media to the Realtime API in the SIP worker.
    """

    agent: str
    sdk_agent: str | None = None
    relay: Relay | None = None


@dataclass(frozen=True)
class RejectAction:
    """Answer the INVITE with a final SIP response ``code`` (400-699) and ``reason``."""

    code: int
    reason: str


@dataclass(frozen=True)
class ReferAction:
    """Send the call elsewhere: ``uri`` is a ``sip:``, ``sips:`` or ``tel:`` URI."""

    uri: str


Action = AgentAction | RejectAction | ReferAction

#: File formats a route's recording may be written in.
RecordingFormat = Literal["wav"]


@dataclass(frozen=True)
class Recording:
    """Record the call in stereo (caller left, agent right) at the bridge's 8 kHz.

    ``consent`` is said by the agent first, before its greeting, and is in the recording.
    """

    format: RecordingFormat = "wav"
    consent: str | None = None


@dataclass(frozen=True)
class Route:
    """One dialplan entry: conditions, one action, and variables for the agent's templates.

    ``fallback`` (agent routes only) is the SIP URI the caller is transferred to when the
    agent's Realtime session is lost for good mid-call; it overrides the agent's own.
    """

    name: str
    match: Match
    action: Action
    variables: Mapping[str, str] = field(default_factory=_empty)
    fallback: str | None = None
    source: str = ""
    line: int | None = None
    #: Stereo recording of the call (agent routes only), or ``None``.
    recording: Recording | None = None

    @property
    def where(self) -> str:
        """``file:line`` of the route's definition."""
        return f"{self.source}:{self.line}" if self.line is not None else self.source


@dataclass(frozen=True)
class Dialplan:
    """A validated dialplan.

    Attributes:
        routes: In match order (the loaded file's own routes first, then its includes').
        agents: By name, from the file and everything it includes, and every Agents SDK agent
            an ``sdk_agent:`` route reaches (by its ``RealtimeAgent.name``).
        source_files: Every file read, the loaded one first.
        variables: Top-level variables; a route's own variables override them.
        tools: The top-level ``tools:`` definitions, by name.
        python_path: Absolute directories searched first for the plan's Python code, in
            order (``python_path:`` of each file, or the loaded file's directory).
        env_secrets: Environment values the plan put into HTTP tool headers (``${NAME}``),
            for the log redaction filter.
    """

    routes: tuple[Route, ...]
    agents: Mapping[str, AgentSpec]
    source_files: tuple[str, ...]
    variables: Mapping[str, str] = field(default_factory=_empty)
    tools: Mapping[str, ToolSpec] = field(default_factory=_no_tools)
    python_path: tuple[str, ...] = ()
    env_secrets: tuple[Secret, ...] = ()

    def reachable(self, name: str) -> tuple[AgentSpec, ...]:
        """Agent ``name`` and every agent it can reach through handoffs, breadth first."""
        order: list[AgentSpec] = []
        queue = [name]
        seen = {name}
        while queue:
            agent = self.agents.get(queue.pop(0))
            if agent is None:
                continue
            order.append(agent)
            for handoff in agent.capabilities.handoffs:
                if handoff.agent not in seen:
                    seen.add(handoff.agent)
                    queue.append(handoff.agent)
        return tuple(order)

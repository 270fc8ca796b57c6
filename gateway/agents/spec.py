"""What an agent can do on a call, as frozen values: tools, handoffs, guardrails and DTMF.

These are the parsed form of the dialplan's ``tools:`` section and of an agent's ``tools``,
``handoffs``, ``guardrails`` and ``dtmf`` fields (and of an Agents SDK ``RealtimeAgent`` named
by import path). The dialplan loader builds them; the call session and the tool runner read
them. Pure: no imports of user code happen here, only the import paths are kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.config import Secret

#: JSON Schema (draft 2020-12 subset) of a tool's arguments object.
JsonSchema = Mapping[str, Any]

DEFAULT_TOOL_TIMEOUT_S = 10.0
DEFAULT_GUARDRAIL_DEBOUNCE_CHARS = 100


def _empty_schema() -> JsonSchema:
    return {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class PythonTool:
    """A Python callable tool, imported by ``module:function`` path in a tool worker process.

    Attributes:
        name: Tool name the model sees (``^[a-zA-Z0-9_-]{1,64}$``).
        path: ``pkg.module:function``; sync or async.
        description: For the model; from the docstring when not given.
        parameters: JSON schema of the arguments; derived from type hints when not given.
        timeout_s: Longest the call may run; then the model gets an error output.
    """

    name: str
    path: str
    description: str = ""
    parameters: JsonSchema | None = None
    timeout_s: float = DEFAULT_TOOL_TIMEOUT_S


@dataclass(frozen=True)
class HttpTool:
    """A tool that sends its arguments as JSON to a URL and returns the response body.

    Attributes:
        name: Tool name the model sees.
        url: ``http://`` or ``https://`` URL.
        method: ``POST`` (arguments as JSON body), ``PUT``, ``PATCH``, or ``GET`` (arguments as
            query parameters).
        headers: Header values, already resolved from ``${ENV}`` references (secrets).
        description: For the model.
        parameters: JSON schema of the arguments (required for HTTP tools).
        timeout_s: Whole-request time limit.
    """

    name: str
    url: str
    method: Literal["GET", "POST", "PUT", "PATCH"] = "POST"
    headers: Mapping[str, Secret] = field(default_factory=dict)
    description: str = ""
    parameters: JsonSchema = field(default_factory=_empty_schema)
    timeout_s: float = DEFAULT_TOOL_TIMEOUT_S


@dataclass(frozen=True)
class SdkTool:
    """A ``function_tool`` of an Agents SDK ``RealtimeAgent``, run in a tool worker process.

    Attributes:
        name: The tool's name.
        agent_path: ``pkg.module:attr`` of the starting ``RealtimeAgent``.
        agent_name: ``RealtimeAgent.name`` of the agent (the starting one or one reachable
            through its handoffs) that owns the tool.
        description: From the SDK tool.
        parameters: The SDK tool's ``params_json_schema``.
        timeout_s: Longest the call may run.
    """

    name: str
    agent_path: str
    agent_name: str
    description: str = ""
    parameters: JsonSchema = field(default_factory=_empty_schema)
    timeout_s: float = DEFAULT_TOOL_TIMEOUT_S


BuiltinName = Literal["transfer_call", "end_call", "send_dtmf"]


@dataclass(frozen=True)
class BuiltinTool:
    """A call-control tool implemented by the gateway.

    Attributes:
        builtin: ``transfer_call`` (blind transfer by SIP REFER), ``end_call`` (finish the
            sentence, then BYE) or ``send_dtmf`` (RFC 4733).
        name: Name the model sees (defaults to ``builtin``).
        description: For the model (a sensible default per built-in).
        targets: For ``transfer_call``: named SIP URIs the model may pick from, e.g.
            ``{"billing": "sip:billing@pbx"}``. The model never supplies a raw URI unless
            ``allow_any_uri`` is set.
        allow_any_uri: Let the model pass any ``sip:``/``tel:`` URI (off by default).
        timeout_s: How long a transfer may take to report a final NOTIFY.
    """

    builtin: BuiltinName
    name: str = ""
    description: str = ""
    targets: Mapping[str, str] = field(default_factory=dict)
    allow_any_uri: bool = False
    timeout_s: float = 30.0

    @property
    def tool_name(self) -> str:
        """The name the model calls."""
        return self.name or self.builtin


ToolSpec = PythonTool | HttpTool | BuiltinTool | SdkTool


@dataclass(frozen=True)
class HandoffSpec:
    """An agent this agent may hand the call to (one transfer tool per target).

    Attributes:
        agent: Name of the target agent (defined in the dialplan).
        tool_name: Tool the model calls; default ``transfer_to_<agent>``.
        description: When to use it; a default names the target agent.
    """

    agent: str
    tool_name: str = ""
    description: str = ""

    @property
    def name(self) -> str:
        """The tool name the model calls."""
        return self.tool_name or f"transfer_to_{self.agent}"


GuardrailAction = Literal["retry", "say", "transfer", "hangup"]


@dataclass(frozen=True)
class GuardrailSpec:
    """An output guardrail run on the agent's transcript as it streams.

    Exactly one of ``deny_regex``, ``deny_keywords``, ``python`` or ``sdk_agent_path`` is set.

    Attributes:
        name: Reported when it trips.
        deny_regex: Trips when the regex matches the transcript so far.
        deny_keywords: Trips when any keyword appears (case-insensitive, whole words).
        python: ``pkg.module:function(text: str) -> bool | str | dict``; truthy trips it.
        sdk_agent_path: ``pkg.module:attr`` of a ``RealtimeAgent`` whose output guardrail named
            ``name`` (on the agent called ``sdk_agent_name``) is run.
        sdk_agent_name: The ``RealtimeAgent.name`` that owns the SDK guardrail.
        action: ``retry`` (default: the model is told to try again, with ``message``),
            ``say`` (the agent says ``message`` instead), ``transfer`` (to ``target``) or
            ``hangup``.
        message: Corrective instruction (retry) or the line to say (say).
        target: SIP URI for ``transfer``.
    """

    name: str
    deny_regex: str | None = None
    deny_keywords: tuple[str, ...] = ()
    python: str | None = None
    sdk_agent_path: str | None = None
    sdk_agent_name: str | None = None
    action: GuardrailAction = "retry"
    message: str = ""
    target: str | None = None


@dataclass(frozen=True)
class DtmfRule:
    """What a keypad sequence does without asking the model.

    Attributes:
        digits: The sequence, e.g. ``0`` or ``*9``.
        action: ``transfer`` (to ``target``), ``hangup``, or ``say`` (agent says ``message``).
        target: SIP URI for ``transfer``.
        message: Line for ``say``.
    """

    digits: str
    action: Literal["transfer", "hangup", "say"]
    target: str | None = None
    message: str = ""


@dataclass(frozen=True)
class DtmfSpec:
    """How caller DTMF is handled.

    Attributes:
        to_agent: Send digits to the model as a user message.
        batch_ms: Digits arriving within this gap are sent together.
        terminator: A digit that ends a batch at once (``#`` by default; ``""`` for none).
        max_digits: A batch is sent when it reaches this length.
        rules: Sequences handled by the gateway itself (checked before the agent sees them).
    """

    to_agent: bool = True
    batch_ms: int = 1500
    terminator: str = "#"
    max_digits: int = 32
    rules: tuple[DtmfRule, ...] = ()


@dataclass(frozen=True)
class AgentCapabilities:
    """Everything an agent can do besides talking.

    Attributes:
        tools: Tools in the order the model sees them.
        handoffs: Agents it may hand off to.
        guardrails: Output guardrails.
        guardrail_debounce_chars: Run guardrails each time this many new transcript
            characters arrived (and at the end of each item).
        dtmf: Caller DTMF handling.
        sdk_agent: ``pkg.module:attr`` of an Agents SDK ``RealtimeAgent`` the agent came from.
    """

    tools: tuple[ToolSpec, ...] = ()
    handoffs: tuple[HandoffSpec, ...] = ()
    guardrails: tuple[GuardrailSpec, ...] = ()
    guardrail_debounce_chars: int = DEFAULT_GUARDRAIL_DEBOUNCE_CHARS
    dtmf: DtmfSpec = DtmfSpec()
    sdk_agent: str | None = None

"""Turn an OpenAI Agents SDK ``RealtimeAgent`` into dialplan agents the gateway can run.

A dialplan route may name a ``RealtimeAgent`` by import path (``sdk_agent: pkg.module:attr``)
instead of an agent written in YAML. :func:`load_sdk_agent` imports it and converts it, and
every agent reachable through its ``handoffs`` (plain ``RealtimeAgent`` entries or
``realtime_handoff(...)`` objects), into :class:`~gateway.dialplan.schema.AgentSpec` values:
instructions become the agent's (literal) instructions, ``@function_tool`` tools become
:class:`~gateway.agents.spec.SdkTool` (run by the tool worker, which imports the agent again),
handoffs become :class:`~gateway.agents.spec.HandoffSpec` with the SDK's tool name and
description, and output guardrails become SDK-backed
:class:`~gateway.agents.spec.GuardrailSpec`. What cannot run on a phone call is refused with a
clear reason rather than ignored: hosted tools, MCP servers, stored prompts, tools that need
approval and handoffs that take input. ``agents`` (about 1.3 s to import) is imported only
here, on the first call. Callable instructions are evaluated once, at load time, with an empty
run context (``RunContextWrapper(context=None)``): they cannot depend on the call.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any, Final

from gateway.agents.spec import (
    DEFAULT_TOOL_TIMEOUT_S,
    AgentCapabilities,
    GuardrailSpec,
    HandoffSpec,
    SdkTool,
)
from gateway.dialplan.pyimport import ImportProblem, import_object
from gateway.dialplan.schema import AgentSpec
from gateway.dialplan.template import Template
from gateway.errors import GatewayError

#: What to tell an operator whose gateway lacks the optional dependency.
INSTALL_HINT: Final = "openai-agents is not installed: pip install gateway[agents]"
#: Steps an async instructions function may take without waiting on anything.
_MAX_AWAIT_STEPS: Final = 1000


class SdkAgentError(GatewayError):
    """An Agents SDK agent cannot be loaded or cannot run on a call (the reason says why)."""


@dataclass(frozen=True)
class SdkAgentPlan:
    """A ``RealtimeAgent`` and the agents its handoffs reach, as dialplan agents.

    Attributes:
        path: The ``pkg.module:attr`` it was loaded from.
        start: ``RealtimeAgent.name`` of the starting agent.
        agents: Every agent by ``RealtimeAgent.name``, the starting one first, then in the
            order their handoffs are reached (breadth first).
    """

    path: str
    start: str
    agents: Mapping[str, AgentSpec]

    @property
    def starting_agent(self) -> AgentSpec:
        """The agent a call starts with."""
        return self.agents[self.start]


@dataclass(frozen=True)
class _Sdk:
    """The few SDK names the conversion uses, imported lazily."""

    RealtimeAgent: type[Any]
    Handoff: type[Any]
    FunctionTool: type[Any]
    RunContextWrapper: type[Any]


def _import_sdk() -> _Sdk:
    try:
        realtime = importlib.import_module("agents.realtime")
        handoffs = importlib.import_module("agents.handoffs")
        tool = importlib.import_module("agents.tool")
        run_context = importlib.import_module("agents.run_context")
    except ImportError as exc:
        if exc.name in ("agents", "agents.realtime"):
            raise SdkAgentError(INSTALL_HINT) from None
        raise SdkAgentError(f"openai-agents cannot be imported ({type(exc).__name__}: {exc});"
                            " reinstall it: pip install gateway[agents]") from None
    return _Sdk(realtime.RealtimeAgent, handoffs.Handoff, tool.FunctionTool,
                run_context.RunContextWrapper)


def load_sdk_agent(path: str) -> SdkAgentPlan:
    """Import the ``RealtimeAgent`` at ``path`` and convert it and its handoff targets.

    Args:
        path: ``pkg.module:attr`` of an ``agents.realtime.RealtimeAgent``.

    Returns:
        The converted agents.

    Raises:
        SdkAgentError: openai-agents is not installed, the path does not import, the object
            is not a ``RealtimeAgent``, or an agent uses something a call cannot run.
    """
    sdk = _import_sdk()
    try:
        start = import_object(path)
    except ImportProblem as exc:
        raise SdkAgentError(str(exc)) from None
    if not isinstance(start, sdk.RealtimeAgent):
        raise SdkAgentError(f"{path!r} is a {type(start).__name__}, not an"
                            " agents.realtime.RealtimeAgent")
    module = importlib.import_module(path.partition(":")[0])
    order: list[Any] = [start]
    by_name: dict[str, Any] = {start.name: start}
    specs: dict[str, AgentSpec] = {}
    i = 0
    while i < len(order):
        agent = order[i]
        i += 1
        spec, targets = _convert(sdk, agent, path, module, order)
        specs[spec.name] = spec
        for target in targets:
            seen = by_name.get(target.name)
            if seen is None:
                by_name[target.name] = target
                order.append(target)
            elif seen is not target:
                raise SdkAgentError(f"two different RealtimeAgents are named {target.name!r};"
                                    " handoffs find agents by name, so names must be unique")
    return SdkAgentPlan(path=path, start=start.name, agents=MappingProxyType(specs))


def _convert(sdk: _Sdk, agent: Any, path: str, module: ModuleType,
             known: list[Any]) -> tuple[AgentSpec, list[Any]]:
    name: str = agent.name
    if not name.strip():
        raise SdkAgentError("a RealtimeAgent reached from this one has an empty name")
    where = f"agent {name!r}"
    if agent.prompt is not None:
        raise SdkAgentError(f"{where}: stored prompts (prompt=...) are not supported; use"
                            " instructions")
    if agent.mcp_servers:
        raise SdkAgentError(f"{where}: MCP servers are not supported on calls")
    text = _instructions(sdk, agent, where)
    tools = tuple(_tools(sdk, agent, path, where))
    handoffs: list[HandoffSpec] = []
    targets: list[Any] = []
    for item in agent.handoffs:
        converted = _handoff(sdk, item, module, known, where)
        if converted is not None:
            handoffs.append(converted[0])
            targets.append(converted[1])
    guardrails: list[GuardrailSpec] = []
    for guardrail in agent.output_guardrails:
        guardrail_name = guardrail.get_name()
        if any(g.name == guardrail_name for g in guardrails):
            raise SdkAgentError(f"{where}: two output guardrails are named {guardrail_name!r}")
        guardrails.append(GuardrailSpec(name=guardrail_name, sdk_agent_path=path,
                                        sdk_agent_name=name))
    capabilities = AgentCapabilities(tools=tools, handoffs=tuple(handoffs),
                                     guardrails=tuple(guardrails), sdk_agent=path)
    # Literal text: SDK instructions are not dialplan templates, so braces mean braces.
    instructions = Template(text, (text,) if text else ())
    return AgentSpec(name=name, instructions=instructions, capabilities=capabilities), targets


def _instructions(sdk: _Sdk, agent: Any, where: str) -> str:
    value = agent.instructions
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        # The SDK calls instructions(context, agent); a call has no user context at load time.
        result = value(sdk.RunContextWrapper(context=None), agent)
        if inspect.isawaitable(result):
            result = _finish(result, where)
    except SdkAgentError:
        raise
    except Exception as exc:  # user code: report whatever it raised
        raise SdkAgentError(f"{where}: its instructions function raised"
                            f" {type(exc).__name__}: {exc}") from None
    if not isinstance(result, str):
        raise SdkAgentError(f"{where}: its instructions function returned a"
                            f" {type(result).__name__}, not a string")
    return result


def _finish(awaitable: Awaitable[Any], where: str) -> Any:
    """Run an awaitable that needs no event loop (it awaits nothing that waits) to the end."""
    steps = awaitable.__await__()
    try:
        for _ in range(_MAX_AWAIT_STEPS):
            if steps.send(None) is not None:
                # It yielded a future: real I/O or a timer, which needs a running loop.
                break
    except StopIteration as done:
        return done.value
    finally:
        close = getattr(steps, "close", None)
        if close is not None:
            close()
    raise SdkAgentError(f"{where}: its async instructions function waits on I/O; instructions"
                        " are computed once when the dialplan loads, so they must not")


def _tools(sdk: _Sdk, agent: Any, path: str, where: str) -> list[SdkTool]:
    out: list[SdkTool] = []
    for tool in agent.tools:
        label = getattr(tool, "name", type(tool).__name__)
        if not isinstance(tool, sdk.FunctionTool):
            raise SdkAgentError(f"{where}: tool {label!r} is a {type(tool).__name__}; only"
                                " function tools (@function_tool) run on calls")
        if tool.is_enabled is False:
            continue
        if tool.needs_approval is not False:
            raise SdkAgentError(f"{where}: tool {label!r} needs approval, which a caller"
                                " cannot give")
        timeout = tool.timeout_seconds
        out.append(SdkTool(
            name=tool.name, agent_path=path, agent_name=agent.name,
            description=tool.description or "", parameters=tool.params_json_schema,
            timeout_s=float(timeout) if timeout else DEFAULT_TOOL_TIMEOUT_S))
    return out


def _handoff(sdk: _Sdk, item: Any, module: ModuleType, known: list[Any],
             where: str) -> tuple[HandoffSpec, Any] | None:
    if isinstance(item, sdk.RealtimeAgent):
        # What realtime_handoff(item) would give, without building the object.
        return HandoffSpec(agent=item.name, tool_name=sdk.Handoff.default_tool_name(item),
                           description=sdk.Handoff.default_tool_description(item)), item
    if not isinstance(item, sdk.Handoff):
        raise SdkAgentError(f"{where}: handoff {item!r} is neither a RealtimeAgent nor a"
                            " realtime_handoff(...)")
    if item.is_enabled is False:
        return None
    if (item.input_json_schema or {}).get("properties"):
        raise SdkAgentError(f"{where}: handoff {item.tool_name!r} takes input (input_type);"
                            " the gateway performs handoffs itself and cannot pass it on")
    target = _handoff_target(sdk, item, module, known)
    if target is None:
        raise SdkAgentError(f"{where}: cannot find the RealtimeAgent {item.agent_name!r} that"
                            f" handoff {item.tool_name!r} leads to; define it at module level"
                            f" in {module.__name__}")
    return HandoffSpec(agent=target.name, tool_name=item.tool_name,
                       description=item.tool_description or ""), target


def _handoff_target(sdk: _Sdk, item: Any, module: ModuleType, known: list[Any]) -> Any:
    """The agent a ``Handoff`` returns, found without invoking it (that runs ``on_handoff``).

    ``handoff()`` keeps a weak reference to its agent; ``realtime_handoff()`` only keeps it in
    the closure of its invoke function, so look there, then among the module's globals and the
    agents already found, by ``agent_name``.
    """
    name = item.agent_name

    def fits(obj: Any) -> bool:
        return isinstance(obj, sdk.RealtimeAgent) and obj.name == name

    ref = getattr(item, "_agent_ref", None)
    if ref is not None and fits(ref()):
        return ref()
    invoke = item.on_invoke_handoff
    functions = [invoke.func, *invoke.args] if isinstance(invoke, functools.partial) \
        else [invoke]
    for fn in functions:
        if inspect.isfunction(fn):
            for value in inspect.getclosurevars(fn).nonlocals.values():
                if fits(value):
                    return value
    for value in [*vars(module).values(), *known]:
        if fits(value):
            return value
    return None

"""``gateway dialplan check`` and ``gateway dialplan route``: the admin's view of a dialplan.

``check`` validates a file and prints either a one-line summary or every error as
``file:line: field: reason``; ``route`` shows which route, action and agent a made-up call would
get, with the rendered instructions and what the agent can do (tools, handoffs, guardrails,
DTMF rules), so an admin can test a dialplan without placing a call.
Both write to the text stream they are given and return the process exit status; the CLI module
parses arguments and wires them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

from gateway.agents.spec import AgentCapabilities, BuiltinTool, HttpTool, PythonTool, SdkTool
from gateway.dialplan.loader import NO_ENV, load_dialplan
from gateway.dialplan.router import CallInfo, RouteDecision, route_call
from gateway.dialplan.schema import AgentAction, AgentSpec, Dialplan, Ingress, RejectAction
from gateway.errors import ConfigErrors, NoRouteError

#: Exit status when the dialplan file is invalid.
EXIT_INVALID = 1
#: Exit status of ``route`` when no route matches (the call would get 404).
EXIT_NO_ROUTE = 2


def check(path: str | Path, out: TextIO, env: Mapping[str, str] = NO_ENV) -> int:
    """Validate the dialplan at ``path``.

    Prints ``OK: N routes, M agents`` and returns 0, or prints each error as
    ``file:line: field: reason`` and returns 1. ``env`` fills in ``${NAME}`` in HTTP tool
    headers.
    """
    plan = _load(path, out, env)
    if plan is None:
        return EXIT_INVALID
    out.write(f"OK: {_count(len(plan.routes), 'route')}, {_count(len(plan.agents), 'agent')}\n")
    return 0


def route(
    path: str | Path,
    *,
    from_user: str,
    to_user: str,
    request_uri: str | None = None,
    headers: Mapping[str, str] | None = None,
    account: str | None = None,
    source_ip: str = "127.0.0.1",
    caller_name: str | None = None,
    ingress: Ingress = "sip",
    out: TextIO,
    env: Mapping[str, str] = NO_ENV,
) -> int:
    """Show what the dialplan at ``path`` does with a call.

    Args:
        path: The dialplan file.
        from_user: Caller (From user part).
        to_user: Number dialled (To user part).
        request_uri: Request-URI; ``sip:<to_user>@localhost`` when not given.
        headers: SIP headers of the call.
        account: Ingress account or transport name.
        source_ip: Address the INVITE comes from.
        caller_name: From display name.
        ingress: ``sip``, or ``openai`` for a Realtime Calls webhook.
        out: Where to print.
        env: Environment for ``${NAME}`` in HTTP tool headers.

    Returns:
        0 when a route matches, 1 when the dialplan is invalid, 2 when no route matches.
    """
    plan = _load(path, out, env)
    if plan is None:
        return EXIT_INVALID
    call = CallInfo(
        to_user=to_user, from_user=from_user,
        request_uri=request_uri if request_uri is not None else f"sip:{to_user}@localhost",
        headers=dict(headers or {}), account=account, source_ip=source_ip,
        caller_name=caller_name, ingress=ingress,
    )
    try:
        decision = route_call(plan, call)
    except NoRouteError as exc:
        out.write(f"no route ({exc.sip_status})\n")
        return EXIT_NO_ROUTE
    _describe(decision, out)
    return 0


def parse_header_args(items: Iterable[str]) -> dict[str, str]:
    """Turn ``--header K=V`` arguments into a mapping.

    Raises:
        ValueError: When an item has no ``=`` or an empty name.
    """
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"header must be NAME=VALUE, got {item!r}")
        headers[name.strip()] = value
    return headers


def _load(path: str | Path, out: TextIO, env: Mapping[str, str]) -> Dialplan | None:
    try:
        return load_dialplan(path, env)
    except ConfigErrors as exc:
        for error in exc.errors:
            out.write(f"{error}\n")
        return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _describe(decision: RouteDecision, out: TextIO) -> None:
    route = decision.route
    out.write(f"route: {route.name} ({route.where})\n")
    action = decision.action
    if isinstance(action, RejectAction):
        out.write(f"action: reject {action.code} {action.reason}\n")
        return
    if not isinstance(action, AgentAction):
        out.write(f"action: refer {action.uri}\n")
        return
    sdk = f" (Agents SDK: {action.sdk_agent})" if action.sdk_agent else ""
    out.write(f"action: agent {action.agent}{sdk}\n")
    if action.relay is not None:
        out.write(f"relay: {action.relay.uri or '(openai_calls.sip_uri)'}\n")
    if decision.agent is not None:
        _describe_agent(decision.agent, out)
    if decision.greeting is not None:
        out.write(f"greeting: {decision.greeting}\n")
    out.write("instructions:\n")
    for line in (decision.instructions or "").splitlines():
        out.write(f"  {line}\n" if line else "\n")


def _describe_agent(agent: AgentSpec, out: TextIO) -> None:
    td = agent.turn_detection
    out.write(f"voice: {agent.voice}\n")
    out.write(f"model: {agent.model or '(gateway default)'}\n")
    out.write(f"media: {agent.media}\n")
    out.write(f"turn_detection: {td.to_realtime()['type'] if td is not None else 'none'}\n")
    if agent.transcription is not None:
        out.write(f"transcription: {agent.transcription.model}\n")
    if agent.max_duration_s is not None:
        out.write(f"max_duration_s: {agent.max_duration_s}\n")
    _describe_capabilities(agent.capabilities, out)


def _describe_capabilities(caps: AgentCapabilities, out: TextIO) -> None:
    if caps.tools:
        out.write("tools: " + ", ".join(_tool(t) for t in caps.tools) + "\n")
    if caps.handoffs:
        out.write("handoffs: " + ", ".join(f"{h.name} -> {h.agent}" for h in caps.handoffs)
                  + "\n")
    if caps.guardrails:
        out.write("guardrails: " + ", ".join(
            f"{g.name} ({g.action}{' ' + g.target if g.target else ''})" for g in caps.guardrails)
            + "\n")
    dtmf = caps.dtmf
    rules = ", ".join(f"{r.digits} -> {r.action}{' ' + r.target if r.target else ''}"
                      for r in dtmf.rules)
    if dtmf.rules or not dtmf.to_agent:
        out.write(f"dtmf: {'to agent' if dtmf.to_agent else 'not to agent'}"
                  f"{'; ' + rules if rules else ''}\n")


def _tool(tool: PythonTool | HttpTool | BuiltinTool | SdkTool) -> str:
    if isinstance(tool, BuiltinTool):
        return f"{tool.tool_name} (builtin {tool.builtin})" if tool.name \
            else f"{tool.builtin} (builtin)"
    if isinstance(tool, PythonTool):
        return f"{tool.name} (python {tool.path})"
    if isinstance(tool, HttpTool):
        return f"{tool.name} ({tool.method} {tool.url})"
    return f"{tool.name} (Agents SDK)"

"""The YAML dialplan: which agent (or rejection, or transfer) each incoming call gets.

``loader`` turns a file into a validated :class:`Dialplan` (errors with file:line:field),
``router`` picks a route for a :class:`CallInfo`, ``template`` renders agent instructions,
``capabilities`` reads agents' tools, handoffs, guardrails and DTMF handling, ``pyimport``
finds the Python code they name, ``store`` holds the plan in force and reloads it atomically,
and ``commands`` backs
``gateway dialplan check`` and ``gateway dialplan route``. The format is documented in
``docs/dialplan.md``. Pure apart from reading the files and importing the Python tools,
guardrails and Agents SDK agents a plan names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.dialplan.loader import load_dialplan, parse_dialplan
    from gateway.dialplan.router import CallInfo, RouteDecision, route_call
    from gateway.dialplan.schema import (
        Action,
        AgentAction,
        AgentSpec,
        Dialplan,
        Match,
        Pattern,
        ReferAction,
        RejectAction,
        Route,
        SemanticVad,
        ServerVad,
        Transcription,
    )
    from gateway.dialplan.store import DialplanStore

#: Where each name lives; imported on first use, so a SIP worker that only holds finished
#: plans (``schema``, ``wire``) never imports the loader and the YAML parsing behind it.
_HOMES = {
    "load_dialplan": "loader", "parse_dialplan": "loader", "CallInfo": "router",
    "RouteDecision": "router", "route_call": "router", "DialplanStore": "store",
    **dict.fromkeys(("Action", "AgentAction", "AgentSpec", "Dialplan", "Match", "Pattern",
                     "ReferAction", "RejectAction", "Route", "SemanticVad", "ServerVad",
                     "Transcription"), "schema"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = [
    "Action",
    "AgentAction",
    "AgentSpec",
    "CallInfo",
    "Dialplan",
    "DialplanStore",
    "Match",
    "Pattern",
    "ReferAction",
    "RejectAction",
    "Route",
    "RouteDecision",
    "SemanticVad",
    "ServerVad",
    "Transcription",
    "load_dialplan",
    "parse_dialplan",
    "route_call",
]

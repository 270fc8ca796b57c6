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

"""What a call's agent needs from whoever runs its Python tools and guardrails.

Two implementations: :class:`~gateway.agents.runner.ToolRunner`, the pool of tool worker
processes (in a single-process gateway, and in the control process, where one pool serves
every SIP worker), and :class:`~gateway.worker.tools.RemoteTools`, a SIP worker's proxy that
sends each request to the control process's pool. Failures never raise: they are outcomes.
"""

from __future__ import annotations

from typing import Protocol

from gateway.agents.runner import DEFAULT_GUARDRAIL_TIMEOUT_S, GuardrailOutcome, ToolOutcome
from gateway.agents.spec import PythonTool, SdkTool

__all__ = ["ToolService"]


class ToolService(Protocol):
    """Runs a call's Python and Agents SDK tools and guardrails (see the module docstring)."""

    async def call_tool(self, spec: PythonTool | SdkTool, arguments_json: str, *,
                        call_id: str = "", leg_id: int | None = None) -> ToolOutcome:
        """Run a dialplan tool for a function call (``call_id``: the Realtime one)."""
        ...

    async def run_python_guardrail(self, path: str, text: str,
                                   timeout_s: float = DEFAULT_GUARDRAIL_TIMEOUT_S, *,
                                   name: str | None = None,
                                   leg_id: int | None = None) -> GuardrailOutcome:
        """Run a Python guardrail on the agent's transcript so far."""
        ...

    async def run_sdk_guardrail(self, agent_path: str, agent_name: str, guardrail_name: str,
                                text: str, timeout_s: float = DEFAULT_GUARDRAIL_TIMEOUT_S, *,
                                leg_id: int | None = None) -> GuardrailOutcome:
        """Run an Agents SDK output guardrail on the agent's transcript so far."""
        ...

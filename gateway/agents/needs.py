"""Which process-wide agent services a dialplan needs (pure).

Python and Agents SDK tools and guardrails run in tool worker processes; the app starts that
pool only when some agent has one, so a gateway without user code runs no extra processes.
"""

from __future__ import annotations

from gateway.agents.spec import PythonTool, SdkTool
from gateway.dialplan.schema import Dialplan


def needs_workers(plan: Dialplan) -> bool:
    """Whether any agent of ``plan`` has user code to run in a worker process."""
    for agent in plan.agents.values():
        caps = agent.capabilities
        if any(isinstance(t, PythonTool | SdkTool) for t in caps.tools):
            return True
        if any(g.python or g.sdk_agent_path for g in caps.guardrails):
            return True
    return False


def preload_paths(plan: Dialplan) -> tuple[str, ...]:
    """Modules every worker imports at start, so first calls don't pay for imports."""
    paths: set[str] = set()
    for agent in plan.agents.values():
        for tool in agent.capabilities.tools:
            if isinstance(tool, PythonTool):
                paths.add(tool.path.split(":", 1)[0])
            elif isinstance(tool, SdkTool):
                paths.add(tool.agent_path)
        for guard in agent.capabilities.guardrails:
            if guard.python:
                paths.add(guard.python.split(":", 1)[0])
            if guard.sdk_agent_path:
                paths.add(guard.sdk_agent_path)
    return tuple(sorted(paths))

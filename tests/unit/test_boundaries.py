"""Pure modules must not import I/O libraries; only the adapters may."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

#: Module -> libraries it must work without.
PURE = {
    "gateway.errors": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.yamlsrc": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.config": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.media.g711": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.ipc.framing": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.control.directory": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.control.outcomes": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.control.readiness": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.control.topology": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.control.backoff": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.ipc.checks": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.ipc.messages": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.dialplan.wire": ("pjsua2", "websockets", "aiohttp", "asyncio",
                              "gateway.dialplan.loader"),
    "gateway.front.upstream": ("pjsua2", "websockets", "aiohttp", "asyncio"),
}
ADAPTERS_AND_PURE = {
    "gateway.control.supervisor": ("pjsua2", "websockets", "aiohttp"),
    "gateway.media.resample": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.media.framing": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.media.playout": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.realtime.events": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.realtime.protocol": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.realtime.retry": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sim.core": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sim.validate": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sim.vad": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sim.scenario": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sim.audio": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sim.responses": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sim.conversation": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.realtime.session": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.media.bridge": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.media.channel": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.media.formats": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.media.stereo": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.dialplan.recording": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.calls.agent": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.calls.context": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.calls.continuity": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.calls.record": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.calls.turns": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sip.message": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sip.events": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sip.reject": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sip.offer": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sip.liveness": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.sip.unhandled": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.dialplan.schema": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.dialplan.template": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.agents.spec": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.agents.guardrails": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.agents.dtmf": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.agents.handoffs": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.agents.builtins": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.agents.schema": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.agents.arguments": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.agents.needs": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.dialplan.capabilities": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.dialplan.conditions": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.dialplan.pyimport": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.agents.sdk": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.agents.runner": ("pjsua2", "websockets", "aiohttp"),
    "gateway.agents.http_tool": ("pjsua2", "websockets"),
    "gateway.calls.conversation": ("pjsua2", "websockets"),
    "gateway.dialplan.router": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.dialplan.loader": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.realtime.client": ("pjsua2", "aiohttp"),
    "gateway.sim.server": ("pjsua2", "websockets"),
    "gateway.ipc.channel": ("pjsua2", "websockets", "aiohttp"),
    "gateway.ipc.unix": ("pjsua2", "websockets", "aiohttp"),
    # A SIP worker: no user code's runtime (the Agents SDK), no HTTP client until an HTTP
    # tool is called, none of the control process's parts, no YAML (it gets finished plans).
    "gateway.worker.main": ("agents", "aiohttp", "prometheus_client", "gateway.control",
                            "gateway.sim", "gateway.front", "gateway.dialplan.loader"),
}

PROBE = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
import importlib
importlib.import_module({module!r})
"""


def _modules() -> list[tuple[str, tuple[str, ...]]]:
    """Every module listed above; a missing module fails its test rather than skipping it."""
    return [*PURE.items(), *ADAPTERS_AND_PURE.items()]


@pytest.mark.parametrize(("module", "blocked"), _modules())
def test_module_imports_without(module: str, blocked: tuple[str, ...]) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", PROBE.format(blocked=blocked, module=module)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, f"{module} imports one of {blocked}:\n{proc.stderr}"

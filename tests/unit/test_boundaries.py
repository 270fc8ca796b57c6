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
}
OPTIONAL_PURE = {
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
    "gateway.dialplan.router": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.dialplan.loader": ("pjsua2", "websockets", "aiohttp", "asyncio"),
    "gateway.realtime.client": ("pjsua2", "aiohttp"),
    "gateway.sim.server": ("pjsua2", "websockets"),
}

PROBE = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
import importlib
importlib.import_module({module!r})
"""


def _modules() -> list[tuple[str, tuple[str, ...]]]:
    import importlib.util

    out = list(PURE.items())
    for name, blocked in OPTIONAL_PURE.items():
        if importlib.util.find_spec(name) is not None:
            out.append((name, blocked))
    return out


@pytest.mark.parametrize(("module", "blocked"), _modules())
def test_module_imports_without(module: str, blocked: tuple[str, ...]) -> None:
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", PROBE.format(blocked=blocked, module=module)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, f"{module} imports one of {blocked}:\n{proc.stderr}"

"""Tool worker processes: where they find the dialplan's code, and a pool that fails to start.

Real worker processes on this machine; a missing interpreter is a real start failure.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.agents.pool import ToolWorkers
from gateway.agents.runner import ToolRunner
from gateway.agents.spec import PythonTool
from gateway.calls.conversation import AgentServices
from gateway.dialplan import load_dialplan
from gateway.dialplan.pyimport import use_search_path
from tests.conftest import scaled

pytestmark = pytest.mark.component

PLAN = """
tools:
  double: {python: "%s:double"}
agents:
  calc:
    instructions: You double numbers.
    tools: [double]
routes:
  - name: all
    agent: calc
"""

TOOL = '''
def double(x: int) -> int:
    """Double a number.

    Args:
        x: The number.
    """
    return 2 * x
'''


@pytest.fixture(autouse=True)
def own_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give each test its own ``sys.path``: the dialplan loader changes it."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def _write_tool(directory: Path, module: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text(TOOL)


async def test_workers_find_code_on_a_search_path_added_after_they_started(
        tmp_path: Path) -> None:
    module = f"late_tools_{tmp_path.name.replace('-', '_')}"
    _write_tool(tmp_path / "late", module)
    async with ToolRunner(1) as runner:
        # A reloaded dialplan with a new python_path changes the gateway's path like this.
        use_search_path([str(tmp_path / "late")])
        outcome = await runner.call_python(f"{module}:double", {"x": 21}, scaled(20))
    assert outcome.ok, outcome.error
    assert outcome.output == "42"


async def _until(check: Callable[[], bool], timeout_s: float) -> None:
    """Poll ``check`` (the pool publishes itself by setting an attribute) until it holds."""
    async with asyncio.timeout(scaled(timeout_s)):
        for _ in itertools.count():
            if check():
                return
            await asyncio.sleep(0.02)


def _runner(services: AgentServices) -> ToolRunner | None:
    runner = services.runner
    assert runner is None or isinstance(runner, ToolRunner)
    return runner


async def test_a_failed_worker_start_is_logged_and_retried_until_it_works(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    module = f"retry_tools_{tmp_path.name.replace('-', '_')}"
    _write_tool(tmp_path, module)
    dialplan = tmp_path / "plan.yaml"
    dialplan.write_text(PLAN % module)
    plan = load_dialplan(dialplan)  # python_path defaults to the dialplan's directory
    python = tmp_path / "bin" / "python"  # not there yet: every start fails
    services = AgentServices()
    def publish(runner: ToolRunner | None) -> None:
        services.runner = runner

    workers = ToolWorkers(1, publish, python=str(python), retry_s=(0.05, 0.1))
    caplog.set_level(logging.ERROR, logger="gateway")
    try:
        workers.ensure_soon(lambda: plan)
        await _until(lambda: sum("tool worker start failed" in r.getMessage()
                                 for r in caplog.records) >= 2, 20)
        failure = next(r.getMessage() for r in caplog.records
                       if "tool worker start failed" in r.getMessage())
        assert str(python) in failure  # the reason: which interpreter is missing
        assert "retrying in 0.05 s" in failure
        assert _runner(services) is None  # calls meanwhile: "tool workers are not running"
        python.parent.mkdir()
        python.symlink_to(sys.executable)
        await _until(lambda: services.runner is not None, 30)
        runner = _runner(services)
        assert runner is not None
        spec = plan.tools["double"]
        assert isinstance(spec, PythonTool)
        outcome = await runner.call_tool(spec, '{"x": 5}')
        assert outcome.ok, outcome.error
        assert outcome.output == "10"
    finally:
        await workers.close()
    assert _runner(services) is None

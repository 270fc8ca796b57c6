"""A SIP worker's tools, run by the control process's pool over the real IPC channel.

The worker side is :class:`RemoteTools` on a real :func:`connect_unix` channel; the control
side a real :func:`serve_unix` server whose handler hands each ``tool_request`` to a
:class:`ToolBroker` over a real :class:`ToolWorkers` pool (tool worker processes running
``tests/fixtures/tools``). What the model would get back is asserted, and what crossed the
channel: a Python tool's bad arguments are refused in the worker and never sent.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.agents.pool import ToolWorkers
from gateway.agents.runner import GuardrailOutcome, ToolOutcome
from gateway.agents.spec import PythonTool
from gateway.control.tools import ToolBroker, to_result
from gateway.dialplan.loader import parse_dialplan
from gateway.ipc.channel import ControlChannel
from gateway.ipc.messages import ControlMessage, ToolRequest, ToolResult
from gateway.ipc.unix import connect_unix, serve_unix
from gateway.worker.tools import RemoteTools
from tests.conftest import scaled

pytestmark = pytest.mark.component

TOOLS = "tests.fixtures.tools.sample_tools"
PLAN = f"""
tools:
  add: {{python: "{TOOLS}:add"}}
  fail: {{python: "{TOOLS}:fail"}}
agents:
  a:
    instructions: Hi.
    tools: [add, fail]
    guardrails:
      - {{name: refunds, python: "{TOOLS}:deny_refunds"}}
routes:
  - name: all
    agent: a
"""


@dataclass
class Control:
    """The control side: what it received, and its broker."""

    broker: ToolBroker
    requests: list[ToolRequest] = field(default_factory=list)
    channels: list[ControlChannel] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)

    async def handler(self, channel: ControlChannel) -> None:
        self.channels.append(channel)

        async def send(worker_id: str, msg: ControlMessage) -> None:
            assert worker_id == "w1"
            await channel.send(msg)

        self.broker._send = send  # this connection answers its own worker
        async for msg in channel:
            assert isinstance(msg, ToolRequest)
            self.requests.append(msg)
            self.received.set()
            self.broker.submit("w1", msg)


@pytest.fixture
def socket_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rt-") as directory:
        os.chmod(directory, 0o700)
        yield Path(directory) / "control.sock"


@asynccontextmanager
async def linked(socket_path: Path, pool: ToolWorkers,
                 **options: int) -> AsyncIterator[tuple[RemoteTools, Control]]:
    async def unused(worker_id: str, msg: ControlMessage) -> None:
        raise AssertionError("no connection yet")

    control = Control(ToolBroker(pool, unused))
    async with await serve_unix(socket_path, control.handler, name="ctl"):
        channel = await connect_unix(socket_path, name="w1")
        tools = RemoteTools(lambda leg: "w1" if leg is None else f"w1:{leg}", channel,
                            **options)

        async def results() -> None:
            async for msg in channel:
                assert isinstance(msg, ToolResult)
                tools.resolve(msg)
            tools.close(channel.reason or "closed")

        reader = asyncio.create_task(results(), name="test:results")
        try:
            yield tools, control
        finally:
            await channel.close()
            await asyncio.wait((reader,))
            await control.broker.close()


@pytest.fixture
async def pool() -> AsyncIterator[ToolWorkers]:
    workers = ToolWorkers(1)
    await workers.ensure(parse_dialplan(PLAN, "<test>"))
    try:
        yield workers
    finally:
        await workers.close()


def _tool(name: str) -> PythonTool:
    spec = parse_dialplan(PLAN, "<test>").tools[name]
    assert isinstance(spec, PythonTool)
    return spec


async def test_a_tool_runs_in_the_control_pool_and_its_failure_reaches_the_model(
        socket_path: Path, pool: ToolWorkers) -> None:
    async with linked(socket_path, pool) as (tools, control):
        async with asyncio.timeout(scaled(20)):
            added = await tools.call_tool(_tool("add"), '{"a": 2, "b": 3}', leg_id=7)
            failed = await tools.call_tool(_tool("fail"), '{"message": "db down"}', leg_id=7)
    assert added.ok and added.output == "5", added
    assert not failed.ok
    assert failed.error is not None and "ValueError" in failed.error
    assert "db down" in failed.output  # the model is told what went wrong
    assert [(r.op, r.call_id, r.path, dict(r.arguments or {})) for r in control.requests] == [
        ("python", "w1:7", f"{TOOLS}:add", {"a": 2, "b": 3}),
        ("python", "w1:7", f"{TOOLS}:fail", {"message": "db down"})]
    assert tools.pending == 0


async def test_bad_arguments_are_refused_in_the_worker_and_never_sent(
        socket_path: Path, pool: ToolWorkers) -> None:
    async with linked(socket_path, pool) as (tools, control):
        outcome = await tools.call_tool(_tool("add"), '{"a": "two", "b": 3}')
    assert not outcome.ok
    assert outcome.error is not None and outcome.error.startswith("tool add: ")
    assert control.requests == []


async def test_a_guardrail_trips_through_the_control_pool(
        socket_path: Path, pool: ToolWorkers) -> None:
    async with linked(socket_path, pool) as (tools, _control):
        async with asyncio.timeout(scaled(20)):
            tripped = await tools.run_python_guardrail(f"{TOOLS}:deny_refunds",
                                                       "You get a full refund.", name="refunds")
            fine = await tools.run_python_guardrail(f"{TOOLS}:deny_refunds", "Hello there.")
    assert tripped.ok and tripped.tripped and tripped.reason, tripped
    assert fine.ok and not fine.tripped and fine.reason is None


async def test_without_a_running_pool_tools_fail_at_once(socket_path: Path) -> None:
    idle = ToolWorkers(1)  # never started: the plan needed no pool, or its start failed
    async with linked(socket_path, idle) as (tools, _control):
        outcome = await tools.call_tool(_tool("add"), '{"a": 1, "b": 1}')
    assert not outcome.ok and outcome.error == "tool workers are not running"


async def test_a_lost_control_process_fails_waiting_requests_and_refuses_new_ones(
        socket_path: Path, pool: ToolWorkers) -> None:
    async with linked(socket_path, pool) as (tools, control):
        slow = PythonTool("slow", f"{TOOLS}:slow", timeout_s=30)
        waiting = asyncio.create_task(tools.call_tool(slow, '{"seconds": 20}'))
        await asyncio.wait_for(control.received.wait(), scaled(10))
        await control.channels[0].close()  # the control process goes away
        async with asyncio.timeout(scaled(5)):
            lost = await waiting
        after = await tools.call_tool(_tool("add"), '{"a": 1, "b": 1}')
    assert not lost.ok and lost.error is not None
    assert "the control process is not reachable" in lost.error
    assert not after.ok and after.error is not None
    assert "the control process is not reachable" in after.error


async def test_requests_beyond_the_bound_are_refused_as_busy(
        socket_path: Path, pool: ToolWorkers) -> None:
    async with linked(socket_path, pool, max_pending=1) as (tools, control):
        slow = PythonTool("slow", f"{TOOLS}:slow", timeout_s=30)
        first = asyncio.create_task(tools.call_tool(slow, '{"seconds": 1}'))
        await asyncio.wait_for(control.received.wait(), scaled(10))
        second = await tools.call_tool(_tool("add"), '{"a": 1, "b": 1}')
        async with asyncio.timeout(scaled(20)):
            done = await first
    assert not second.ok and second.error is not None and "busy" in second.error
    assert done.ok, done


def test_results_are_cut_to_the_protocol_bounds() -> None:
    long_tool = to_result(1, ToolOutcome(False, "x" * 300_000, "e" * 3000))
    assert long_tool.output is not None and len(long_tool.output) == 256 * 1024
    assert long_tool.error is not None and len(long_tool.error) == 2048
    ok = to_result(2, GuardrailOutcome(True, False, "ignored"))
    assert (ok.ok, ok.tripped, ok.reason) == (True, False, None)
    failed = to_result(3, GuardrailOutcome(False, False, None, None))
    assert (failed.ok, failed.error) == (False, "guardrail failed")

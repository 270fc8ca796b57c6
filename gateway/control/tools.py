"""The control process's one tool pool, serving the tool requests of every SIP worker.

A SIP worker never runs user code: its :class:`~gateway.worker.tools.RemoteTools` sends each
Python or Agents SDK tool call and guardrail check as a ``tool_request``. :class:`ToolBroker`
runs each on the control process's :class:`~gateway.agents.pool.ToolWorkers` pool (N SIP
workers, one pool) in a task of its own and sends the ``tool_result`` back to the worker that
asked. Bounded: at most ``max_running`` requests run or wait in the pool at once; beyond that a
request is answered at once with a "busy" failure (the pool has its own queue limit inside
that). A worker that went away meanwhile just loses its answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from gateway.agents.pool import ToolWorkers
from gateway.agents.runner import GuardrailOutcome, ToolOutcome, ToolRunner
from gateway.agents.spec import SdkTool
from gateway.errors import GatewayError
from gateway.ipc.messages import ControlMessage, ToolRequest, ToolResult

__all__ = ["MAX_RUNNING", "ToolBroker", "to_result"]

log = logging.getLogger("gateway.control")

#: Requests running or waiting in the pool at once, by default.
MAX_RUNNING: Final = 1024
_MAX_OUTPUT: Final = 256 * 1024
_MAX_ERROR: Final = 2048
_MAX_REASON: Final = 4096

#: Sends a message to one worker (``Supervisor.send``).
Send = Callable[[str, ControlMessage], Awaitable[None]]


class ToolBroker:
    """Runs workers' tool requests on the control process's pool (see the module docstring).

    Args:
        pool: The control process's tool worker pool.
        send: Sends the answer to a worker.
        max_running: Requests running at once.
    """

    def __init__(self, pool: ToolWorkers, send: Send, *, max_running: int = MAX_RUNNING) -> None:
        self._pool = pool
        self._send = send
        self._max_running = max_running
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> int:
        """Requests running or waiting in the pool."""
        return len(self._tasks)

    def submit(self, worker_id: str, request: ToolRequest) -> None:
        """Run ``request`` from ``worker_id`` and answer it (never raises)."""
        if len(self._tasks) >= self._max_running:
            log.warning("tool request from worker %s refused: %d already running", worker_id,
                        self._max_running)
            result = ToolResult(request.request_id, False,
                                error="the gateway is busy with other tool calls; try again")
            self._start(worker_id, request, self._answer(worker_id, result))
            return
        self._start(worker_id, request, self._run(worker_id, request))

    async def close(self) -> None:
        """Cancel what runs (their workers get no answer)."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    def _start(self, worker_id: str, request: ToolRequest, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(
            run(), name=f"control:tool:{worker_id}:{request.request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, worker_id: str, request: ToolRequest) -> None:
        runner = self._pool.runner
        if runner is None:
            result = ToolResult(request.request_id, False, error="tool workers are not running")
        else:
            result = await _execute(runner, request)
        await self._answer(worker_id, result)

    async def _answer(self, worker_id: str, result: ToolResult) -> None:
        try:
            await self._send(worker_id, result)
        except GatewayError as exc:  # the worker went away, or a bound was exceeded
            log.warning("tool result %d for worker %s not delivered: %s", result.request_id,
                        worker_id, exc)


async def _execute(runner: ToolRunner, request: ToolRequest) -> ToolResult:
    """Run ``request`` on ``runner``; every field was checked by the IPC codec."""
    if request.op == "python":
        assert request.path is not None
        outcome: ToolOutcome | GuardrailOutcome = await runner.call_python(
            request.path, dict(request.arguments or {}), request.timeout_s,
            name=request.name)
    elif request.op == "sdk_tool":
        assert request.agent_path and request.agent_name and request.tool_name
        tool = SdkTool(request.tool_name, request.agent_path, request.agent_name,
                       timeout_s=request.timeout_s)
        outcome = await runner.call_tool(tool, request.arguments_json or "",
                                         call_id=request.tool_call_id or "")
    elif request.op == "guardrail":
        assert request.path is not None
        outcome = await runner.run_python_guardrail(request.path, request.text or "",
                                                    request.timeout_s, name=request.name)
    else:
        assert request.agent_path and request.agent_name and request.guardrail_name
        outcome = await runner.run_sdk_guardrail(request.agent_path, request.agent_name,
                                                 request.guardrail_name, request.text or "",
                                                 request.timeout_s)
    return to_result(request.request_id, outcome)


def to_result(request_id: int, outcome: ToolOutcome | GuardrailOutcome) -> ToolResult:
    """The ``tool_result`` for an outcome, cut to the protocol's bounds."""
    if isinstance(outcome, ToolOutcome):
        if outcome.ok:
            return ToolResult(request_id, True, output=outcome.output[:_MAX_OUTPUT])
        return ToolResult(request_id, False, output=outcome.output[:_MAX_OUTPUT],
                          error=(outcome.error or "tool failed")[:_MAX_ERROR])
    if not outcome.ok:
        return ToolResult(request_id, False,
                          error=(outcome.error or "guardrail failed")[:_MAX_ERROR])
    reason = (outcome.reason or "")[:_MAX_REASON] if outcome.tripped else ""
    return ToolResult(request_id, True, tripped=outcome.tripped, reason=reason or None)


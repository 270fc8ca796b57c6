"""A SIP worker's tools and guardrails, run by the control process's one tool pool.

User code never runs in a SIP worker: :class:`RemoteTools` implements
:class:`~gateway.agents.service.ToolService` by sending each request as a ``tool_request`` on
the worker's channel and waiting for the ``tool_result`` with the same request id (docs/ipc.md).
Python tools' arguments are checked against their schema here first, as the local pool does, so
a model's bad arguments never cross the channel. Every failure is an outcome: the control
process gone or not answering, too many requests waiting, a request over the protocol's
bounds.

Bounds: at most ``max_pending`` requests wait at once (more fail at once: "busy"), and each
waits at most twice its timeout plus :data:`ANSWER_MARGIN_S` (the control process's pool has
its own limits inside that: a queue wait, the run, one worker restart).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from typing import Final

from gateway.agents.arguments import ToolArgumentError, parse_arguments
from gateway.agents.runner import DEFAULT_GUARDRAIL_TIMEOUT_S, GuardrailOutcome, ToolOutcome
from gateway.agents.spec import PythonTool, SdkTool
from gateway.errors import GatewayError
from gateway.ipc import messages as m
from gateway.ipc.channel import ChannelClosed, WorkerChannel

__all__ = ["ANSWER_MARGIN_S", "RemoteTools"]

log = logging.getLogger("gateway.worker")

#: Added to twice a request's timeout for the longest wait for its answer.
ANSWER_MARGIN_S: Final = 15.0
#: Requests waiting for an answer at once, by default.
MAX_PENDING: Final = 1024


class RemoteTools:
    """Sends tool and guardrail requests to the control process (see the module docstring).

    Args:
        call_id: Maps a leg id (or ``None``) to the id the control process knows the call by.
        channel: The worker's channel to the control process.
        max_pending: Requests that may wait for an answer at once.
    """

    def __init__(self, call_id: Callable[[int | None], str], channel: WorkerChannel, *,
                 max_pending: int = MAX_PENDING) -> None:
        self._call_id = call_id
        self._channel = channel
        self._max_pending = max_pending
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[m.ToolResult]] = {}
        self._closed: str | None = None

    @property
    def pending(self) -> int:
        """Requests waiting for their answer."""
        return len(self._pending)

    def resolve(self, result: m.ToolResult) -> None:
        """Deliver the control process's answer (an unknown or late id is logged and dropped)."""
        future = self._pending.get(result.request_id)
        if future is None or future.done():
            log.debug("tool result %d has no waiting request (late or unknown)",
                      result.request_id)
            return
        future.set_result(result)

    def close(self, reason: str) -> None:
        """Fail every waiting request and refuse new ones (the channel has ended)."""
        self._closed = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ChannelClosed("tools", reason))

    async def call_tool(self, spec: PythonTool | SdkTool, arguments_json: str, *,
                        call_id: str = "", leg_id: int | None = None) -> ToolOutcome:
        """Run a dialplan tool in the control process's pool."""
        label = f"tool {spec.name}"
        if isinstance(spec, SdkTool):
            request = m.ToolRequest(0, "-", "sdk_tool", spec.timeout_s,
                                    agent_path=spec.agent_path, agent_name=spec.agent_name,
                                    tool_name=spec.name, arguments_json=arguments_json,
                                    tool_call_id=call_id[:128] or None)
        else:
            try:
                arguments = parse_arguments(arguments_json, spec.parameters or {"type": "object"})
            except ToolArgumentError as exc:
                return ToolOutcome.failure(f"{label}: {exc}")
            request = m.ToolRequest(0, "-", "python", spec.timeout_s, path=spec.path,
                                    name=spec.name, arguments=arguments)
        started = time.monotonic()
        result = await self._ask(request, label, leg_id)
        elapsed = time.monotonic() - started
        if isinstance(result, str):
            return ToolOutcome.failure(result, elapsed)
        if not result.ok:
            error = result.error or f"{label} failed"
            if result.output is not None:
                return ToolOutcome(False, result.output, error, elapsed)
            return ToolOutcome.failure(error, elapsed)
        return ToolOutcome.success(result.output or "", elapsed)

    async def run_python_guardrail(self, path: str, text: str,
                                   timeout_s: float = DEFAULT_GUARDRAIL_TIMEOUT_S, *,
                                   name: str | None = None,
                                   leg_id: int | None = None) -> GuardrailOutcome:
        """Run a Python guardrail in the control process's pool."""
        request = m.ToolRequest(0, "-", "guardrail", timeout_s, path=path, name=name, text=text)
        return await self._guardrail(request, f"guardrail {name or path}", leg_id)

    async def run_sdk_guardrail(self, agent_path: str, agent_name: str, guardrail_name: str,
                                text: str, timeout_s: float = DEFAULT_GUARDRAIL_TIMEOUT_S, *,
                                leg_id: int | None = None) -> GuardrailOutcome:
        """Run an Agents SDK output guardrail in the control process's pool."""
        request = m.ToolRequest(0, "-", "sdk_guardrail", timeout_s, agent_path=agent_path,
                                agent_name=agent_name, guardrail_name=guardrail_name,
                                text=text)
        return await self._guardrail(request, f"guardrail {guardrail_name}", leg_id)

    async def _guardrail(self, request: m.ToolRequest, label: str,
                         leg_id: int | None) -> GuardrailOutcome:
        started = time.monotonic()
        result = await self._ask(request, label, leg_id)
        elapsed = time.monotonic() - started
        if isinstance(result, str):
            return GuardrailOutcome(False, False, None, result, elapsed)
        if not result.ok:
            return GuardrailOutcome(False, False, None, result.error or f"{label} failed",
                                    elapsed)
        return GuardrailOutcome(True, bool(result.tripped), result.reason, None, elapsed)

    async def _ask(self, template: m.ToolRequest, label: str,
                   leg_id: int | None) -> m.ToolResult | str:
        """The answer to ``template`` (given its request and call ids), or why there is none."""
        if self._closed is not None:
            return f"{label} cannot run: the control process is not reachable ({self._closed})"
        if len(self._pending) >= self._max_pending:
            log.warning("%s refused: %d tool requests already wait for the control process",
                        label, self._max_pending)
            return f"{label} cannot run now: the gateway is busy with other tool calls"
        request_id = next(self._ids)
        request = dataclasses.replace(template, request_id=request_id,
                                      call_id=self._call_id(leg_id))
        timeout_s = request.timeout_s
        future: asyncio.Future[m.ToolResult] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._channel.send(request)
            async with asyncio.timeout(2 * timeout_s + ANSWER_MARGIN_S):
                return await future
        except ChannelClosed as exc:
            return f"{label} cannot run: the control process is not reachable ({exc.reason})"
        except TimeoutError:
            return f"{label}: no answer from the control process within {timeout_s:g} s"
        except GatewayError as exc:  # IpcError / FrameError: over the protocol's bounds
            return f"{label} cannot run: {exc}"
        finally:
            self._pending.pop(request_id, None)

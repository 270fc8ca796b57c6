"""Tool worker process: runs users' Python tools and guardrails away from the audio process.

The gateway process carries the pjsua2 media clock, whose thread needs the GIL 100 times per
call per second; any CPU-bound Python there stalls every call's audio (pjsua2 notes §3.3,
§5.3). So user code, Python tools, Python guardrails and Agents SDK tools and guardrails, runs
here, in a process of its own that :class:`~gateway.agents.runner.ToolRunner` starts with
``python -c`` (a fresh interpreter, never a fork of the gateway) and talks to over a Unix
socket.

Protocol: each message is a 4-byte big-endian length and a UTF-8 JSON object (the framing of
:mod:`gateway.ipc.framing`). The gateway sends ``init`` (its ``sys.path`` and modules to
preload) and the worker answers ``ready``; then, one at a time, a request with ``id`` and
``op`` (``python``, ``sdk_tool``, ``guardrail``, ``sdk_guardrail``) gets exactly one reply with
the same ``id``: ``ok`` true with ``output`` (tools) or ``tripped``/``reason`` (guardrails), or
``ok`` false with ``error`` and ``error_type``. End of input means "exit". Sync functions are
called directly, coroutine results run on one event loop kept for the worker's life; imports
are cached. A tool that hangs or kills the process is the gateway's business: it kills and
replaces the worker.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import datetime
import enum
import importlib
import inspect
import json
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

# Re-exported: the framing lives in gateway.ipc.framing (standard library only, so this fresh
# interpreter pays nothing for it); these names are this protocol's public vocabulary.
from gateway.ipc.framing import (
    HEADER as HEADER,
    FrameError as ProtocolError,
    decode_body as decode_body,
    encode_frame as _encode_frame,
    frame_size,
)

__all__ = [
    "HEADER",
    "MAX_ERROR_CHARS",
    "MAX_FRAME_BYTES",
    "MAX_OUTPUT_CHARS",
    "ProtocolError",
    "ToolHost",
    "decode_body",
    "encode_frame",
    "main",
    "to_output",
]

#: Largest frame either side accepts; a bigger one is a protocol error (this protocol's own
#: limit, above the control channel's 1 MiB default).
MAX_FRAME_BYTES: Final = 8 * 1024 * 1024
#: A tool's output is cut to this many characters (with a note) before it goes to the model.
MAX_OUTPUT_CHARS: Final = 64 * 1024
#: Exception text in an error is cut to this many characters.
MAX_ERROR_CHARS: Final = 500

_PR_SET_PDEATHSIG: Final = 1
#: Set on the ToolContext by openai-agents 0.24 when its default error handler produced the
#: output (a private detail: if it disappears, such failures just count as successes).
_SDK_DEFAULT_FAILURE_ATTR: Final = "_function_tool_default_failure_handled"


def encode_frame(message: Mapping[str, Any]) -> bytes:
    """One protocol frame for ``message`` (at most :data:`MAX_FRAME_BYTES`).

    Raises:
        ProtocolError: The encoded message is too large or not JSON-serialisable.
    """
    return _encode_frame(message, max_size=MAX_FRAME_BYTES)


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [truncated: {len(text)} characters in all]"


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    model_dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(model_dump):
        try:
            return model_dump(mode="json")
        except Exception:  # a broken model_dump falls back to str like any other object
            pass
    return str(value)


def to_output(value: Any) -> str:
    """The ``function_call_output`` text for a tool's return value.

    A ``str`` is used as it is; anything else becomes JSON (dataclasses, pydantic models,
    Enums, sets, dates converted; other objects by ``str()``), falling back to ``str(value)``.
    The result is cut to :data:`MAX_OUTPUT_CHARS`.
    """
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, default=_json_default)
        except (TypeError, ValueError):  # NaN, circular references
            text = str(value)
    return _truncate(text, MAX_OUTPUT_CHARS)


def _describe_exception(exc: BaseException) -> str:
    message = _truncate(str(exc), MAX_ERROR_CHARS)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class _CallFailed(Exception):
    """A request failed in a way that is reported to the model (not a crash)."""

    def __init__(self, error: str, error_type: str) -> None:
        super().__init__(error)
        self.error = error
        self.error_type = error_type


class ToolHost:
    """Runs requests inside the worker: imports, calls, SDK lookups and result encoding.

    One instance per worker process; it keeps imported objects and one event loop.
    """

    def __init__(self) -> None:
        self._objects: dict[str, Any] = {}
        self._loop: asyncio.Runner | None = None

    def close(self) -> None:
        """Close the event loop used for coroutine tools."""
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    def _await(self, value: Any) -> Any:
        if not inspect.isawaitable(value):
            return value
        if self._loop is None:
            self._loop = asyncio.Runner()

        async def wait() -> Any:
            return await value

        return self._loop.run(wait())

    def _import(self, path: str) -> Any:
        if path not in self._objects:
            from gateway.agents.schema import import_object

            self._objects[path] = import_object(path)
        return self._objects[path]

    def handle(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Run one request and build its reply (never raises for a failing tool)."""
        op = message.get("op")
        try:
            if op == "init":
                return self._init(message)
            if op == "python":
                return self._python(message)
            if op == "sdk_tool":
                return self._sdk_tool(message)
            if op == "guardrail":
                return self._guardrail(message)
            if op == "sdk_guardrail":
                return self._sdk_guardrail(message)
            raise _CallFailed(f"unknown request {op!r}", "ProtocolError")
        except _CallFailed as exc:
            return {"ok": False, "error": exc.error, "error_type": exc.error_type}

    def _init(self, message: Mapping[str, Any]) -> dict[str, Any]:
        paths = message.get("sys_path")
        if isinstance(paths, list):
            sys.path[:] = [p for p in paths if isinstance(p, str)]
        warnings: list[str] = []
        for name in message.get("preload", ()):
            try:
                if ":" in name:
                    self._import(name)
                else:
                    importlib.import_module(name)
            except Exception as exc:  # reported to the gateway, which logs it
                warnings.append(f"preload {name}: {_describe_exception(exc)}")
        return {"op": "ready", "ok": True, "pid": os.getpid(), "warnings": warnings}

    def _resolve(self, what: str, path: str) -> Any:
        try:
            return self._import(path)
        except ValueError as exc:
            raise _CallFailed(f"{what} could not be loaded: {exc}", "ImportError") from None

    def _run(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return self._await(fn(*args, **kwargs))
        except (Exception, SystemExit) as exc:
            raise _CallFailed(
                f"{what} raised {_describe_exception(exc)}", type(exc).__name__
            ) from None

    def _python(self, message: Mapping[str, Any]) -> dict[str, Any]:
        path = str(message["path"])
        what = f"tool {message.get('name') or path}"
        fn = self._resolve(what, path)
        if not callable(fn):
            raise _CallFailed(f"{what} is not callable", "TypeError")
        arguments = message.get("arguments") or {}
        from gateway.agents.schema import coerce_arguments

        try:
            inspect.signature(fn).bind(**arguments)
            kwargs = coerce_arguments(fn, arguments)
        except (TypeError, ValueError) as exc:
            raise _CallFailed(
                f"{what} got bad arguments: {_describe_exception(exc)}", "ToolArgumentError"
            ) from None
        return {"ok": True, "output": to_output(self._run(what, fn, **kwargs))}

    def _guardrail(self, message: Mapping[str, Any]) -> dict[str, Any]:
        path = str(message["path"])
        what = f"guardrail {message.get('name') or path}"
        fn = self._resolve(what, path)
        if not callable(fn):
            raise _CallFailed(f"{what} is not callable", "TypeError")
        result = self._run(what, fn, str(message.get("text", "")))
        reason: str | None = None
        if isinstance(result, dict):
            explicit = result.get("reason")
            reason = explicit if isinstance(explicit, str) else to_output(result)
            tripped = bool(result.get("tripped", True)) if result else False
        elif isinstance(result, str):
            reason = result or None
            tripped = bool(result)
        else:
            tripped = bool(result)
        if not tripped:
            reason = None
        return {"ok": True, "tripped": tripped, "reason": reason}

    def _agent(self, agent_path: str, agent_name: str) -> Any:
        from agents import AgentBase

        root = self._resolve(f"agent {agent_path}", agent_path)
        if not isinstance(root, AgentBase):
            raise _CallFailed(f"{agent_path} is not an Agents SDK agent", "TypeError")
        agent = find_sdk_agent(root, agent_name)
        if agent is None:
            raise _CallFailed(
                f"no agent named {agent_name!r} is reachable from {agent_path}", "LookupError"
            )
        return agent

    def _sdk_tool(self, message: Mapping[str, Any]) -> dict[str, Any]:
        from agents import FunctionTool
        from agents.tool_context import ToolContext

        tool_name = str(message["tool_name"])
        what = f"tool {tool_name}"
        agent = self._agent(str(message["agent_path"]), str(message["agent_name"]))
        tool = next(
            (t for t in agent.tools if isinstance(t, FunctionTool) and t.name == tool_name), None
        )
        if tool is None:
            raise _CallFailed(
                f"agent {agent.name!r} has no function tool named {tool_name!r}", "LookupError"
            )
        arguments_json = str(message.get("arguments_json") or "{}")
        context = ToolContext(
            context=None,
            tool_name=tool_name,
            tool_call_id=str(message.get("call_id") or ""),
            tool_arguments=arguments_json,
            agent=agent,
        )
        result = self._run(what, tool.on_invoke_tool, context, arguments_json)
        if getattr(context, _SDK_DEFAULT_FAILURE_ATTR, False):
            # The SDK's default failure_error_function turned an exception (or invalid
            # arguments) into text for the model: still a failure for the gateway.
            raise _CallFailed(f"{what} failed: {to_output(result)}", "SdkToolError")
        return {"ok": True, "output": to_output(result)}

    def _sdk_guardrail(self, message: Mapping[str, Any]) -> dict[str, Any]:
        from agents import RunContextWrapper

        name = str(message["guardrail_name"])
        what = f"guardrail {name}"
        agent = self._agent(str(message["agent_path"]), str(message["agent_name"]))
        guardrail = next((g for g in agent.output_guardrails if g.get_name() == name), None)
        if guardrail is None:
            raise _CallFailed(
                f"agent {agent.name!r} has no output guardrail named {name!r}", "LookupError"
            )
        result = self._run(
            what, guardrail.run, RunContextWrapper(context=None), agent, str(message["text"])
        )
        tripped = bool(result.output.tripwire_triggered)
        info = result.output.output_info
        reason: str | None = None
        if tripped and info is not None:
            reason = info if isinstance(info, str) else to_output(info)
        return {"ok": True, "tripped": tripped, "reason": reason}


def _handoff_agents(handoff: Any, depth: int = 0) -> list[Any]:
    """Agents a ``Handoff`` leads to.

    ``handoff()`` keeps a weak reference to its agent; ``realtime_handoff()`` keeps it only in
    the closure of its invoke function, which is searched (functools.partial and closures, a few
    levels deep) instead of invoking the handoff, so no user ``on_handoff`` code runs.
    """
    from agents import AgentBase

    ref = getattr(handoff, "_agent_ref", None)
    if callable(ref):
        target = ref()
        if isinstance(target, AgentBase):
            return [target]
    found: list[Any] = []
    pending: list[tuple[Any, int]] = [(getattr(handoff, "on_invoke_handoff", None), 0)]
    while pending:
        obj, level = pending.pop()
        if isinstance(obj, AgentBase):
            found.append(obj)
            continue
        if obj is None or level > 3:
            continue
        func = getattr(obj, "func", None)  # functools.partial
        if func is not None:
            pending.append((func, level + 1))
            pending.extend((arg, level + 1) for arg in getattr(obj, "args", ()))
        for cell in getattr(obj, "__closure__", None) or ():
            try:
                pending.append((cell.cell_contents, level + 1))
            except ValueError:  # empty cell
                continue
    return found


def find_sdk_agent(root: Any, name: str) -> Any | None:
    """The agent called ``name``: ``root`` or one reachable through handoffs, breadth first.

    Handoffs may be agents or ``Handoff`` objects (from ``handoff()`` or
    ``realtime_handoff()``).
    """
    from agents import AgentBase

    queue = [root]
    seen: set[int] = set()
    while queue:
        agent = queue.pop(0)
        if id(agent) in seen:
            continue
        seen.add(id(agent))
        if agent.name == name:
            return agent
        for handoff in getattr(agent, "handoffs", ()):
            if isinstance(handoff, AgentBase):
                queue.append(handoff)
            else:
                queue.extend(_handoff_agents(handoff))
    return None


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this worker if the gateway dies, so no orphan keeps spinning."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: end of input still ends an idle worker
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def serve(sock: socket.socket, host: ToolHost) -> None:
    """Answer requests from ``sock`` until end of input."""
    while True:
        header = _recv_exact(sock, HEADER.size)
        if header is None:
            return
        size = frame_size(header, max_size=MAX_FRAME_BYTES)
        body = _recv_exact(sock, size)
        if body is None:
            return
        request = decode_body(body)
        reply = host.handle(request)
        reply["id"] = request.get("id")
        try:
            frame = encode_frame(reply)
        except ProtocolError as exc:
            frame = encode_frame(
                {"id": request.get("id"), "ok": False, "error": f"reply failed: {exc}",
                 "error_type": "ProtocolError"}
            )
        sock.sendall(frame)


def main(argv: Sequence[str]) -> int:
    """Worker entry point: ``<socket fd> <gateway pid>``."""
    fd, parent_pid = int(argv[0]), int(argv[1])
    # The gateway owns the worker's lifetime: a terminal's Ctrl-C is for the gateway only.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    host = ToolHost()
    with socket.socket(fileno=fd) as sock:
        try:
            serve(sock, host)
        except (ConnectionError, ProtocolError):
            return 2
        finally:
            host.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

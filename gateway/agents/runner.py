"""A pool of tool worker processes that runs users' Python code without stalling audio.

The gateway process carries the pjsua2 media clock, so Python tools, Python guardrails and
Agents SDK tools and guardrails run in :mod:`gateway.agents.worker` processes. A
:class:`ToolRunner` keeps ``workers`` of them, each started as a fresh interpreter (``python
-c``, the moral equivalent of multiprocessing's "spawn": never a fork of a process that has
pjsua2 C threads) and connected by a Unix socket read with asyncio streams. Each worker runs
one call at a time; one owned task per worker slot (``tool-runner:worker-{n}``) takes calls
from a bounded queue, sends them and waits for the reply.

Policies:

* Pending calls: at most ``max_pending`` calls wait for a free worker (calls running in a
  worker do not count). A call beyond that gets an immediate ``ok=False`` "busy" outcome; a
  call that waited longer than its own timeout for a worker gets a "busy" outcome without
  running. Either way the conversation goes on.
* Timeout: a call still running after ``timeout_s`` gets a "timed out" outcome, and its worker
  is killed (SIGKILL: a CPU-bound loop cannot be interrupted any other way) and replaced, so
  the pool stays at size.
* Crash: a worker that exits mid-call (``os._exit``, a segfault) is reported as "worker
  crashed" with its exit status, and replaced.
* Cancellation: a cancelled caller gets ``CancelledError`` as usual; a call that had not started
  is skipped, a running one finishes (within its timeout) and its result is discarded, so the
  worker is never left with half a conversation.
* Shutdown: idle workers are told to exit (end of input), busy ones are killed, and every
  process is reaped within a bounded time.
* Search path: a worker imports from the gateway's ``sys.path``, sent at start and sent again
  before the next call whenever it has changed (a reloaded dialplan's ``python_path``), so
  workers always find the modules the dialplan loader found.

Every failure becomes an outcome whose ``output`` is ``{"error": "..."}`` for the model. Logs
name the tool and the kind of failure, never arguments, results or exception text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

from gateway.agents.arguments import ToolArgumentError, parse_arguments
from gateway.agents.spec import GuardrailSpec, PythonTool, SdkTool
from gateway.agents.worker import HEADER, MAX_FRAME_BYTES, ProtocolError, decode_body, encode_frame

__all__ = [
    "DEFAULT_GUARDRAIL_TIMEOUT_S",
    "GuardrailOutcome",
    "ToolOutcome",
    "ToolRunner",
]

log = logging.getLogger(__name__)

DEFAULT_GUARDRAIL_TIMEOUT_S: Final = 5.0
#: How long an idle worker gets to exit after end of input, and a killed one to be reaped.
_EXIT_GRACE_S: Final = 2.0
_RESTART_BACKOFF_S: Final = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: Directory holding the ``gateway`` package, put first on the worker's path before ``init``.
_GATEWAY_ROOT: Final = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BOOTSTRAP: Final = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from gateway.agents.worker import main; sys.exit(main(sys.argv[2:]))"
)


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool call produced, ready for ``function_call_output``.

    Attributes:
        ok: Whether the tool ran and returned.
        output: The text for the model: the tool's result (a string, or JSON), or
            ``{"error": "..."}`` when it failed.
        error: Why it failed (``None`` when ``ok``); safe to log, never holds a secret the
            gateway knows.
        duration_s: Wall time from the call to its outcome, queueing included.
    """

    ok: bool
    output: str
    error: str | None = None
    duration_s: float = 0.0

    @classmethod
    def success(cls, output: str, duration_s: float = 0.0) -> ToolOutcome:
        """A successful outcome."""
        return cls(True, output, None, duration_s)

    @classmethod
    def failure(cls, error: str, duration_s: float = 0.0, **extra: Any) -> ToolOutcome:
        """A failed outcome; ``output`` is ``{"error": error, **extra}`` as JSON."""
        return cls(False, json.dumps({"error": error, **extra}), error, duration_s)


@dataclass(frozen=True)
class GuardrailOutcome:
    """What a guardrail check said about the transcript so far.

    Attributes:
        ok: Whether the check ran (``False``: it failed, timed out or the pool was busy; then
            ``tripped`` is ``False`` and the caller decides whether that is acceptable).
        tripped: Whether the guardrail objects to the text.
        reason: Why, when it tripped and said so.
        error: Why the check did not run.
        duration_s: Wall time, queueing included.
    """

    ok: bool
    tripped: bool
    reason: str | None = None
    error: str | None = None
    duration_s: float = 0.0


@dataclass(frozen=True)
class _Reply:
    reply: Mapping[str, Any] | None
    error: str | None = None


@dataclass(eq=False)
class _Request:
    message: dict[str, Any]
    label: str
    timeout_s: float
    enqueued_at: float
    future: asyncio.Future[_Reply] = field(repr=False)


class _WorkerProcess:
    """One worker process and its socket (owned by exactly one slot task)."""

    def __init__(
        self,
        slot: int,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.slot = slot
        self.process = process
        self.reader = reader
        self.writer = writer
        self._next_id = 0
        #: The ``sys.path`` the worker imports from (sent with ``init``).
        self.sys_path: tuple[str, ...] = ()

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, message: Mapping[str, Any]) -> None:
        self.writer.write(encode_frame(message))
        await self.writer.drain()

    async def receive(self) -> dict[str, Any]:
        header = await self.reader.readexactly(HEADER.size)
        (size,) = HEADER.unpack(header)
        if size > MAX_FRAME_BYTES:
            raise ProtocolError(f"reply of {size} bytes exceeds {MAX_FRAME_BYTES}")
        return decode_body(await self.reader.readexactly(size))

    async def exchange(self, message: Mapping[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        request_id = self._next_id
        await self.send({**message, "id": request_id})
        reply = await self.receive()
        if reply.get("id") != request_id:
            raise ProtocolError(f"reply to request {reply.get('id')!r}, expected {request_id}")
        return reply

    def exit_status(self) -> str:
        code = self.process.returncode
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    async def _close_socket(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass

    async def _reap(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self.process.wait()
        except TimeoutError:
            return False
        return True

    async def kill(self) -> None:
        """SIGKILL the worker and reap it (bounded)."""
        if self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass
        await self._close_socket()
        if not await self._reap(_EXIT_GRACE_S):
            log.error("tool worker %d (pid %d) did not exit after SIGKILL", self.slot, self.pid)

    async def stop(self) -> None:
        """Ask an idle worker to exit (end of input), killing it if it does not in time."""
        await self._close_socket()
        if await self._reap(_EXIT_GRACE_S):
            return
        log.warning("tool worker %d (pid %d) ignored end of input; killing it", self.slot, self.pid)
        await self.kill()

    async def wait_dead(self) -> None:
        """After end of input from the worker: make sure it is gone and reaped."""
        if not await self._reap(0.5):
            await self.kill()
        else:
            await self._close_socket()


class ToolRunner:
    """A fixed-size pool of tool worker processes; an async context manager owned by the app.

    Args:
        workers: Number of worker processes (each runs one call at a time).
        max_pending: Calls that may wait for a free worker; more get an immediate "busy"
            outcome.
        preload: Import paths (``pkg.module`` or ``pkg.module:attr``) every worker imports at
            start, so the first call does not pay for slow imports (the Agents SDK takes about
            a second) inside its timeout. Failures are logged, not fatal.
        start_timeout_s: Longest a worker may take to start and preload.
        python: Interpreter for the workers (default: the gateway's own).
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        max_pending: int = 64,
        preload: Sequence[str] = (),
        start_timeout_s: float = 30.0,
        python: str | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._size = workers
        self._preload = tuple(preload)
        self._start_timeout_s = start_timeout_s
        self._python = python or sys.executable
        self._max_pending = max_pending
        # Unbounded as a container; the bound is enforced in _submit against waiting calls only.
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._idle = 0
        self._slots: list[asyncio.Task[None]] = []
        #: The live worker of each slot; a slot task owns its entry.
        self._workers: dict[int, _WorkerProcess] = {}
        self._full = asyncio.Event()
        self._running = 0
        self._state = "new"

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start every worker; returns when all are ready.

        Raises:
            RuntimeError: A worker could not be started (the others are stopped).
        """
        if self._state != "new":
            raise RuntimeError("a ToolRunner starts once")
        self._state = "starting"
        starts = [
            asyncio.create_task(self._spawn(slot), name=f"tool-runner:worker-{slot}:start")
            for slot in range(self._size)
        ]
        try:
            results = await asyncio.gather(*starts, return_exceptions=True)
        except BaseException:
            await self._discard_started(starts)
            self._state = "closed"
            raise
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self._discard_started(starts)
            self._state = "closed"
            raise RuntimeError(f"tool workers failed to start: {failures[0]}") from failures[0]
        for slot, worker in enumerate(results):
            assert isinstance(worker, _WorkerProcess)
            task = asyncio.create_task(
                self._slot_main(slot, worker), name=f"tool-runner:worker-{slot}"
            )
            self._slots.append(task)
        self._state = "running"
        log.info("tool runner started %d workers", self._size)

    async def _discard_started(self, starts: Sequence[asyncio.Task[_WorkerProcess]]) -> None:
        for task in starts:
            if task.done() and not task.cancelled() and task.exception() is None:
                self._set_worker(task.result().slot, None)
                await task.result().kill()

    async def close(self) -> None:
        """Stop taking calls, answer the queued ones, stop every worker and reap it."""
        if self._state in ("closing", "closed"):
            return
        self._state = "closing"
        for task in self._slots:
            task.cancel()
        results = await asyncio.gather(*self._slots, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, asyncio.CancelledError
            ):
                log.error("tool worker task failed: %r", result)
        self._slots.clear()
        # A slot task cancelled before its first step never ran its cleanup.
        for slot, worker in list(self._workers.items()):
            self._set_worker(slot, None)
            await worker.stop()
        while not self._queue.empty():
            request = self._queue.get_nowait()
            if not request.future.done():
                request.future.set_result(_Reply(None, "the tool runner is shutting down"))
        self._state = "closed"
        log.info("tool runner stopped")

    # -- introspection ----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of worker slots."""
        return self._size

    @property
    def pending(self) -> int:
        """Calls waiting for a free worker."""
        # A call handed to an idle slot stays in the queue until that slot's task resumes;
        # the slot still counts as idle until then, so the two cancel out.
        return max(0, self._queue.qsize() - self._idle)

    @property
    def running(self) -> int:
        """Calls running in a worker now."""
        return self._running

    async def wait_full(self) -> None:
        """Wait until every slot has a live worker (after a replacement, say)."""
        await self._full.wait()

    def _set_worker(self, slot: int, worker: _WorkerProcess | None) -> None:
        if worker is None:
            self._workers.pop(slot, None)
        else:
            self._workers[slot] = worker
        if len(self._workers) == self._size:
            self._full.set()
        else:
            self._full.clear()

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """Process ids of the live workers, by slot."""
        return tuple(self._workers[slot].pid for slot in sorted(self._workers))

    # -- workers ------------------------------------------------------------------------------

    async def _spawn(self, slot: int) -> _WorkerProcess:
        """Start one worker and wait for its ``ready``."""
        parent_sock, child_sock = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                self._python, "-c", _BOOTSTRAP, _GATEWAY_ROOT,
                str(child_sock.fileno()), str(os.getpid()),
                pass_fds=(child_sock.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            parent_sock.close()
            raise
        finally:
            child_sock.close()
        try:
            reader, writer = await asyncio.open_unix_connection(sock=parent_sock)
        except BaseException:
            parent_sock.close()
            process.kill()
            await process.wait()
            raise
        worker = _WorkerProcess(slot, process, reader, writer)
        try:
            async with asyncio.timeout(self._start_timeout_s):
                ready = await self._init(worker, self._preload)
        except BaseException as exc:
            await worker.kill()
            if isinstance(exc, TimeoutError):
                raise RuntimeError(
                    f"tool worker {slot} did not start within {self._start_timeout_s:g} s"
                ) from None
            if isinstance(exc, asyncio.IncompleteReadError | ConnectionError | ProtocolError):
                raise RuntimeError(
                    f"tool worker {slot} failed to start ({worker.exit_status()})"
                ) from None
            raise
        for warning in ready.get("warnings", ()):
            log.warning("tool worker %d: %s", slot, warning)
        self._set_worker(slot, worker)
        log.debug("tool worker %d started (pid %d)", slot, worker.pid)
        return worker

    @staticmethod
    async def _init(worker: _WorkerProcess, preload: Sequence[str]) -> dict[str, Any]:
        """Send ``init`` with the gateway's current ``sys.path``; returns the ``ready`` reply."""
        path = tuple(sys.path)
        ready = await worker.exchange(
            {"op": "init", "sys_path": list(path), "preload": list(preload)})
        worker.sys_path = path
        return ready

    async def _respawn(self, slot: int) -> _WorkerProcess:
        """Start a replacement worker, retrying with backoff until it works or we are cancelled."""
        attempt = 0
        while True:
            try:
                return await self._spawn(slot)
            except Exception as exc:  # keep the pool at size whatever went wrong
                delay = _RESTART_BACKOFF_S[min(attempt, len(_RESTART_BACKOFF_S) - 1)]
                attempt += 1
                log.error("tool worker %d restart failed (%s); retrying in %g s", slot, exc, delay)
                await asyncio.sleep(delay)

    async def _slot_main(self, slot: int, first: _WorkerProcess) -> None:
        """Feed calls from the queue to this slot's worker, replacing it when it dies."""
        worker: _WorkerProcess | None = first
        request: _Request | None = None
        busy = False
        try:
            while True:
                if worker is None:
                    worker = await self._respawn(slot)
                self._idle += 1
                try:
                    request = await self._queue.get()
                finally:
                    self._idle -= 1
                if request.future.done():  # the caller was cancelled or gave up
                    request = None
                    continue
                if time.monotonic() - request.enqueued_at > request.timeout_s:
                    request.future.set_result(_Reply(None, _waited_too_long(request)))
                    request = None
                    continue
                if worker.process.returncode is not None or worker.reader.at_eof():
                    # Died while idle (killed from outside, say): replace it before the call.
                    log.warning("tool worker %d (pid %d) died while idle (%s); replacing it",
                                slot, worker.pid, worker.exit_status())
                    self._set_worker(slot, None)
                    dead_worker, worker = worker, None
                    await dead_worker.wait_dead()
                    worker = await self._respawn(slot)
                busy = True
                self._running += 1
                try:
                    reply, dead = await self._run(worker, request)
                finally:
                    self._running -= 1
                busy = False
                if not request.future.done():
                    request.future.set_result(reply)
                request = None
                if dead:
                    self._set_worker(slot, None)
                    worker = None
        finally:
            if request is not None and not request.future.done():
                request.future.set_result(_Reply(None, "the tool runner is shutting down"))
            self._set_worker(slot, None)
            if worker is not None:
                await (worker.kill() if busy else worker.stop())

    async def _run(self, worker: _WorkerProcess, request: _Request) -> tuple[_Reply, bool]:
        """Run one request; the flag says whether the worker is gone and must be replaced."""
        try:
            async with asyncio.timeout(request.timeout_s):
                if worker.sys_path != tuple(sys.path):
                    await self._init(worker, ())  # a reload moved the dialplan's code
                reply = await worker.exchange(request.message)
        except TimeoutError:
            log.warning(
                "%s timed out after %g s; killing tool worker %d (pid %d)",
                request.label, request.timeout_s, worker.slot, worker.pid,
            )
            await worker.kill()
            return _Reply(None, f"{request.label} timed out after {request.timeout_s:g} s"), True
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await worker.wait_dead()
            status = worker.exit_status()
            log.warning(
                "tool worker %d (pid %d) crashed running %s (%s, %s)",
                worker.slot, worker.pid, request.label, status, type(exc).__name__,
            )
            return _Reply(None, f"the tool worker crashed while running {request.label} "
                                f"({status})"), True
        except ProtocolError as exc:
            log.error("tool worker %d protocol error: %s; killing it", worker.slot, exc)
            await worker.kill()
            return _Reply(None, f"{request.label} failed: tool worker protocol error"), True
        if not reply.get("ok"):
            log.warning("%s failed: %s", request.label, reply.get("error_type") or "error")
        return _Reply(reply, None if reply.get("ok") else str(reply.get("error"))), False

    # -- calls --------------------------------------------------------------------------------

    async def _submit(self, message: dict[str, Any], label: str, timeout_s: float) -> _Reply:
        if self._state != "running":
            return _Reply(None, f"{label} cannot run: the tool runner is not running")
        loop = asyncio.get_running_loop()
        request = _Request(message, label, timeout_s, time.monotonic(), loop.create_future())
        if self.pending >= self._max_pending:
            log.warning("%s refused: %d calls already waiting for a tool worker", label,
                        self._max_pending)
            return _Reply(None, f"{label} cannot run now: the gateway is busy with other tool "
                                "calls; try again shortly")
        self._queue.put_nowait(request)
        # Safety net on top of the slot's own limits: queue wait, run, and one worker restart.
        limit = 2 * timeout_s + self._start_timeout_s + _EXIT_GRACE_S
        try:
            done, _ = await asyncio.wait({request.future}, timeout=limit)
        except asyncio.CancelledError:
            request.future.cancel()
            raise
        if not done:
            request.future.cancel()
            return _Reply(None, _waited_too_long(request))
        return request.future.result()

    async def call_python(
        self,
        path: str,
        arguments: Mapping[str, Any],
        timeout_s: float,
        *,
        name: str | None = None,
    ) -> ToolOutcome:
        """Call a Python tool ``fn(**arguments)`` in a worker.

        Args:
            path: ``pkg.module:function`` (sync or async).
            arguments: Validated JSON arguments (Enum and dataclass parameters are converted
                in the worker).
            timeout_s: Longest the call may run (and, separately, wait for a free worker).
            name: Tool name for messages (default: ``path``).

        Returns:
            The outcome; failures never raise.
        """
        label = f"tool {name or path}"
        message = {"op": "python", "path": path, "name": name, "arguments": dict(arguments)}
        return await self._tool(message, label, timeout_s)

    async def call_sdk_tool(
        self,
        agent_path: str,
        agent_name: str,
        tool_name: str,
        arguments_json: str,
        timeout_s: float,
        *,
        call_id: str = "",
    ) -> ToolOutcome:
        """Invoke an Agents SDK ``FunctionTool`` the way a ``RealtimeSession`` does.

        The worker imports the ``RealtimeAgent`` at ``agent_path``, finds the agent called
        ``agent_name`` (it or one reachable by handoffs), its function tool ``tool_name``, and
        awaits ``tool.on_invoke_tool(ToolContext(...), arguments_json)``. The SDK validates
        the arguments; with its default error handler a raising tool returns the SDK's error
        text as a successful output, as it would under a ``RealtimeSession``.

        Args:
            agent_path: ``pkg.module:attr`` of the starting ``RealtimeAgent``.
            agent_name: ``RealtimeAgent.name`` of the tool's owner.
            tool_name: The function tool's name.
            arguments_json: The model's arguments, as sent.
            timeout_s: Longest the call may run.
            call_id: The Realtime ``call_id`` (put in the ``ToolContext``).

        Returns:
            The outcome; failures never raise.
        """
        message = {
            "op": "sdk_tool", "agent_path": agent_path, "agent_name": agent_name,
            "tool_name": tool_name, "arguments_json": arguments_json, "call_id": call_id,
        }
        return await self._tool(message, f"tool {tool_name}", timeout_s)

    async def call_tool(
        self, spec: PythonTool | SdkTool, arguments_json: str, *, call_id: str = "",
        leg_id: int | None = None,
    ) -> ToolOutcome:
        """Run a dialplan tool for a function call from the model.

        Python tools' arguments are checked against ``spec.parameters`` first (a violation is
        an ``ok=False`` outcome naming the field); SDK tools validate their own.

        Args:
            spec: The tool.
            arguments_json: The model's ``arguments``.
            call_id: The Realtime ``call_id``.
            leg_id: The gateway call it is for (a pool in this process does not need it).

        Returns:
            The outcome; failures never raise.
        """
        if isinstance(spec, SdkTool):
            return await self.call_sdk_tool(
                spec.agent_path, spec.agent_name, spec.name, arguments_json, spec.timeout_s,
                call_id=call_id,
            )
        schema = spec.parameters or {"type": "object"}
        try:
            arguments = parse_arguments(arguments_json, schema)
        except ToolArgumentError as exc:
            return ToolOutcome.failure(f"tool {spec.name}: {exc}")
        return await self.call_python(spec.path, arguments, spec.timeout_s, name=spec.name)

    async def _tool(self, message: dict[str, Any], label: str, timeout_s: float) -> ToolOutcome:
        started = time.monotonic()
        result = await self._submit(message, label, timeout_s)
        elapsed = time.monotonic() - started
        if result.reply is None or not result.reply.get("ok"):
            return ToolOutcome.failure(result.error or f"{label} failed", elapsed)
        return ToolOutcome.success(str(result.reply.get("output", "")), elapsed)

    async def run_python_guardrail(
        self,
        path: str,
        text: str,
        timeout_s: float = DEFAULT_GUARDRAIL_TIMEOUT_S,
        *,
        name: str | None = None,
        leg_id: int | None = None,
    ) -> GuardrailOutcome:
        """Run a Python guardrail ``fn(text) -> bool | str | dict`` in a worker.

        A truthy result trips it. A non-empty ``str`` is the reason; a non-empty ``dict`` trips
        unless it has ``"tripped": false``, its ``"reason"`` (or else the whole dict as JSON)
        being the reason. Async functions are awaited.

        Args:
            path: ``pkg.module:function``.
            text: The agent's transcript so far.
            timeout_s: Longest the check may run.
            name: Guardrail name for messages (default: ``path``).
            leg_id: The gateway call it is for (a pool in this process does not need it).

        Returns:
            The outcome; failures never raise.
        """
        message = {"op": "guardrail", "path": path, "name": name, "text": text}
        return await self._guardrail(message, f"guardrail {name or path}", timeout_s)

    async def run_sdk_guardrail(
        self,
        agent_path: str,
        agent_name: str,
        guardrail_name: str,
        text: str,
        timeout_s: float = DEFAULT_GUARDRAIL_TIMEOUT_S,
        *,
        leg_id: int | None = None,
    ) -> GuardrailOutcome:
        """Run an Agents SDK ``OutputGuardrail`` of a ``RealtimeAgent`` on ``text``.

        The guardrail (matched by ``get_name()``) runs through its own ``run(context, agent,
        agent_output)``, as a ``RealtimeSession`` does; ``tripwire_triggered`` trips it and
        ``output_info`` (text, or JSON) is the reason.

        Returns:
            The outcome; failures never raise.
        """
        message = {
            "op": "sdk_guardrail", "agent_path": agent_path, "agent_name": agent_name,
            "guardrail_name": guardrail_name, "text": text,
        }
        return await self._guardrail(message, f"guardrail {guardrail_name}", timeout_s)

    async def run_guardrail(
        self, spec: GuardrailSpec, text: str, timeout_s: float = DEFAULT_GUARDRAIL_TIMEOUT_S
    ) -> GuardrailOutcome:
        """Run a ``python`` or SDK guardrail from the dialplan.

        Raises:
            ValueError: ``spec`` is a regex or keyword guardrail (those run in the session,
                no worker needed).
        """
        if spec.python:
            return await self.run_python_guardrail(spec.python, text, timeout_s, name=spec.name)
        if spec.sdk_agent_path:
            return await self.run_sdk_guardrail(
                spec.sdk_agent_path, spec.sdk_agent_name or "", spec.name, text, timeout_s
            )
        raise ValueError(f"guardrail {spec.name} does not run in a tool worker")

    async def _guardrail(
        self, message: dict[str, Any], label: str, timeout_s: float
    ) -> GuardrailOutcome:
        started = time.monotonic()
        result = await self._submit(message, label, timeout_s)
        elapsed = time.monotonic() - started
        if result.reply is None or not result.reply.get("ok"):
            return GuardrailOutcome(False, False, None, result.error or f"{label} failed", elapsed)
        reason = result.reply.get("reason")
        return GuardrailOutcome(
            True, bool(result.reply.get("tripped")), reason if isinstance(reason, str) else None,
            None, elapsed,
        )


def _waited_too_long(request: _Request) -> str:
    return (
        f"{request.label} cannot run now: no tool worker was free within "
        f"{request.timeout_s:g} s; try again shortly"
    )

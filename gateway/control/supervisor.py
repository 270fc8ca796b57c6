"""Runs the SIP worker processes: spawn, pair with their IPC connection, restart, drain, stop.

A :class:`Supervisor` starts one child process per :class:`WorkerSpec` (the caller's ``argv``,
in its own session and process group, output inherited or appended to a log file; exec'd, or
with ``start="fork"`` forked from the preloaded parent of :mod:`gateway.control.zygote`, which
shares the imported code and libraries between the workers) and listens on a Unix socket in
its run directory. A connection belongs to a worker once its first message
is a ``Hello`` naming a configured worker id *and* the pid of the process started for it; any
other connection is closed with a logged reason, counted in :attr:`Supervisor.refused`, and
leaves the worker alone. Each worker has one owned task, ``supervisor:{worker_id}``, the only
code that spawns, signals and reaps its processes (but for a cancelled stop, which kills them
all at once); it restarts the worker after an unexpected exit with the delays of
:mod:`gateway.control.backoff`. A worker that closes its connection but stays alive, or says
no ``Hello`` within ``hello_timeout_s``, is killed and restarted. Once a drain or a stop began
nothing is restarted, and a process spawned in that instant is stopped at once. Stopping is
``Shutdown`` over IPC, ``grace_s`` to exit, ``SIGTERM`` to the process group,
``term_grace_s``, ``SIGKILL``; every process is reaped, and whatever is left in a worker's
group when it exits (helpers it forked) is killed. The group id is the worker's pid, which
Linux does not reuse while the group has members, so ``killpg`` only reaches processes
started here. A forked worker is the preloaded parent's child: that parent reaps it and
reports its exit status; should the parent die, its workers die with it (their status then
unknown), are restarted like any other, and the parent is started again when next needed.

Events (:meth:`Supervisor.events`) are one FIFO, in order per worker (``WorkerStarted``,
``WorkerUp``, its messages, ``WorkerDown``), of at most ``event_queue_size`` messages:

* :class:`FromWorker` messages wait for room; the waiting connection stops reading its socket,
  so the worker's own outbox policy applies (``docs/ipc.md``: telemetry is dropped there,
  lifecycle messages wait). Messages still waiting when :meth:`Supervisor.stop` closes the
  socket are discarded and counted in :attr:`Supervisor.dropped`.
* Lifecycle events are never dropped and never wait: they are appended even to a full queue.
  A worker spawns no new process while the queue is full, and a process yields at most three,
  so the queue never holds more than ``event_queue_size + 3 × workers`` events. A consumer
  that stops reading pauses restarts instead of losing events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias

from gateway.control.backoff import RestartPolicy, RestartTracker
from gateway.control.zygote import Child, Spawner, cmdline_room, exit_reason
from gateway.errors import GatewayError
from gateway.ipc import checks
from gateway.ipc.channel import ChannelClosed, ControlChannel, SendQueueFull
from gateway.ipc.framing import MAX_FRAME_BYTES, encode_frame
from gateway.ipc.messages import (
    PROTOCOL_VERSION,
    ControlMessage,
    Drain,
    Hello,
    IpcError,
    Shutdown,
    Welcome,
    WorkerMessage,
    encode,
    negotiate,
)
from gateway.ipc.unix import IpcServer, serve_unix

__all__ = [
    "SOCKET_NAME", "FromWorker", "Supervisor", "SupervisorError", "SupervisorEvent",
    "WorkerDown", "WorkerInfo", "WorkerSpec", "WorkerStarted", "WorkerUnavailable", "WorkerUp",
    "ipc_socket_path",
]

log = logging.getLogger(__name__)

#: File name of the IPC socket inside the run directory.
SOCKET_NAME: Final = "workers.sock"
#: A worker whose processes end this many times before its first hello will not start (a
#: port taken, a bad setting): start-up gives up instead of restarting it for ever.
START_ATTEMPTS: Final = 2
#: How long a process may take to be reaped after SIGKILL before we log it and move on.
_REAP_TIMEOUT_S: Final = 5.0
#: How long an exited worker's socket may stay open (something it forked holds it) before we
#: close it, and how long a stop waits for a connection blocked on a full event queue.
_DELIVERY_WAIT_S: Final = 1.0
_MAX_SOCKET_PATH: Final = 107  # sun_path is 108 bytes on Linux, NUL included

State: TypeAlias = Literal["new", "running", "draining", "stopping", "stopped"]


class SupervisorError(GatewayError):
    """The supervisor cannot do what was asked in its current state."""


class WorkerUnavailable(SupervisorError):
    """The worker is unknown or has no IPC connection now (starting, restarting, gone)."""


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """How to start one worker.

    Attributes:
        worker_id: The id its ``Hello`` must carry (IPC id rules).
        argv: Program and arguments: the worker itself or a program that execs it, since
            the pid in ``Hello`` must be that of the process started.
        env: The worker's whole environment; ``None`` inherits the control process's.
        cwd: Working directory; ``None`` keeps the control process's.
        log_path: File receiving its stdout and stderr (appended); ``None`` inherits them.
        start: ``exec`` runs ``argv``; ``fork`` forks it from the preloaded parent, which
            imported the supervisor's ``preload`` modules: ``argv`` must then be
            ``PYTHON -m MODULE ARGS...``, run as that would run (exec'd after all when the
            preloaded parent cannot fork it, with the reason logged).
    """

    worker_id: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: str | os.PathLike[str] | None = None
    log_path: Path | None = None
    start: Literal["exec", "fork"] = "exec"

    def __post_init__(self) -> None:
        try:
            checks.ID(self.worker_id)
        except checks.Invalid as exc:
            raise ValueError(f"worker_id {exc.reason}") from None
        if isinstance(self.argv, str) or not self.argv:
            raise ValueError("argv must be a non-empty sequence of strings")
        object.__setattr__(self, "argv", tuple(self.argv))
        if self.start not in ("exec", "fork"):
            raise ValueError("start must be 'exec' or 'fork'")
        if self.start == "fork" and (len(self.argv) < 3 or self.argv[1] != "-m"):
            raise ValueError("a forked worker's argv must be PYTHON -m MODULE ...")


@dataclass(frozen=True, slots=True)
class WorkerStarted:
    """A process was spawned for ``worker_id``; ``restarts`` counts the ones before it."""

    worker_id: str
    pid: int
    restarts: int


@dataclass(frozen=True, slots=True)
class WorkerUp:
    """The worker's ``Hello`` was accepted and answered with ``Welcome``."""

    worker_id: str
    pid: int
    hello: Hello


@dataclass(frozen=True, slots=True)
class WorkerDown:
    """A worker's process is gone and reaped, or could not be started (``pid`` ``None``).

    Attributes:
        reason: E.g. ``killed by SIGKILL``, ``exited with status 1``, ``IPC connection lost:
            peer closed the connection``, ``no hello within 30 s``, ``could not start: ...``.
        expected: The supervisor was draining or stopping: the exit was asked for.
        restart_in_s: When the next process is spawned; ``None``: there is none.
    """

    worker_id: str
    pid: int | None
    reason: str
    expected: bool
    restart_in_s: float | None


@dataclass(frozen=True, slots=True)
class FromWorker:
    """A message a connected worker sent after its ``Hello``."""

    worker_id: str
    pid: int
    message: WorkerMessage


SupervisorEvent: TypeAlias = WorkerStarted | WorkerUp | WorkerDown | FromWorker


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A snapshot of one worker: its live process, its connection, its restarts so far."""

    worker_id: str
    pid: int | None
    connected: bool
    restarts: int
    hello: Hello | None


def ipc_socket_path(run_dir: str | os.PathLike[str]) -> Path:
    """The IPC socket path of a :class:`Supervisor` with this run directory (for argv)."""
    return Path(run_dir) / SOCKET_NAME


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class _Events:
    """The event FIFO, with the policy of the module docstring; also its async iterator."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[SupervisorEvent] = deque()
        self._capacity = capacity
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def full(self) -> bool:
        return len(self._items) >= self._capacity

    def push(self, event: SupervisorEvent) -> None:
        self._items.append(event)
        self._readable.set()

    async def push_message(self, event: FromWorker) -> None:
        try:
            while self.full():
                await self.room_changed()
        except asyncio.CancelledError:
            self.dropped += 1
            raise
        self.push(event)

    async def room_changed(self) -> None:
        """Until an event is taken or :meth:`kick`; callers re-check their condition."""
        self._room.clear()
        await self._room.wait()

    def kick(self) -> None:
        self._room.set()

    def close(self) -> None:
        self._closed = True
        self._readable.set()
        self._room.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SupervisorEvent:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        self._room.set()
        return self._items.popleft()


class _Slot:
    """One worker's state; only its own task spawns and reaps its processes."""

    def __init__(self, spec: WorkerSpec, policy: RestartPolicy) -> None:
        self.spec = spec
        self.worker_id = spec.worker_id
        self.tracker = RestartTracker(policy)
        self.task: asyncio.Task[None] | None = None
        self.process: Child | None = None
        self.reaper: asyncio.Task[None] | None = None
        self.exited = False
        self.spawned = asyncio.Event()  # clear while a spawn is under way
        self.spawned.set()
        self.channel: ControlChannel | None = None
        self.hello: Hello | None = None
        self.ipc_lost: str | None = None  # why the process's connection ended
        self.delivered = asyncio.Event()  # clear while a connection may still deliver
        self.delivered.set()
        self.wake = asyncio.Event()
        self.restarts = 0
        #: Processes that ended before this slot's first hello, and the last one's reason.
        self.start_failures = 0
        self.start_failure = ""

    async def nap(self, seconds: float | None) -> None:
        """Until the next wake or ``seconds``; callers re-check what they wait for."""
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()

    async def until(self, done: Callable[[], bool], seconds: float | None) -> bool:
        """Until ``done()`` holds (re-checked on each wake) or ``seconds`` pass."""
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        while not done():
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            await self.nap(left)
        return True


class Supervisor:
    """Runs and supervises the SIP worker processes; an async context manager.

    Args:
        specs: One per worker, unique ids.
        run_dir: Private directory for the IPC socket (made, mode 0700, if missing).
        settings_digest: Lowercase hex digest sent in every ``Welcome``.
        policy: Restart delays (default :class:`RestartPolicy`).
        rand: Uniform random numbers in ``[0, 1]`` for the restart jitter.
        hello_timeout_s: Longest a process may take to say ``Hello`` (a connection to send its
            first message) before it is killed (refused).
        term_grace_s: Time between ``SIGTERM`` and ``SIGKILL``.
        ipc_loss_grace_s: How long a worker whose connection ended may take to exit by itself
            before it is killed (a crash ends both in the same instant, but not in one event).
        event_queue_size: Capacity of the event queue (see the module's policy).
        ipc_options: :class:`~gateway.ipc.channel.IpcChannel` keyword arguments.
        preload: Modules the preloaded parent imports before it forks the ``fork`` workers
            (started with the first of them, from the interpreter its ``argv`` names).

    Raises:
        ValueError: A bad argument.
    """

    def __init__(
        self,
        specs: Sequence[WorkerSpec],
        *,
        run_dir: str | os.PathLike[str],
        settings_digest: str,
        policy: RestartPolicy | None = None,
        rand: Callable[[], float] = random.random,
        hello_timeout_s: float = 30.0,
        term_grace_s: float = 5.0,
        ipc_loss_grace_s: float = 1.0,
        event_queue_size: int = 1024,
        ipc_options: Mapping[str, Any] | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        ids = [spec.worker_id for spec in specs]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError("at least one worker is needed, with unique ids")
        if min(hello_timeout_s, term_grace_s, ipc_loss_grace_s) <= 0 or event_queue_size < 1:
            raise ValueError("timeouts must be positive and event_queue_size at least 1")
        try:
            encode(Welcome(protocol=PROTOCOL_VERSION, settings_digest=settings_digest))
        except IpcError as exc:
            raise ValueError(f"settings_digest {exc.reason}") from None
        self.run_dir = Path(run_dir)
        self.socket_path = ipc_socket_path(run_dir)
        if len(os.fsencode(self.socket_path)) > _MAX_SOCKET_PATH:
            raise ValueError(f"socket path over {_MAX_SOCKET_PATH} bytes: shorten run_dir")
        self._slots = {s.worker_id: _Slot(s, policy or RestartPolicy()) for s in specs}
        self._spawner = Spawner(preload, room=cmdline_room(
            [s.argv for s in specs if s.start == "fork"]))
        self._digest = settings_digest
        self._rand = rand
        self._hello_timeout_s = hello_timeout_s
        self._term_grace_s = term_grace_s
        self._ipc_loss_grace_s = ipc_loss_grace_s
        self._ipc_options = dict(ipc_options or {})
        self._max_frame = int(self._ipc_options.get("max_frame_bytes", MAX_FRAME_BYTES))
        self._events = _Events(event_queue_size)
        self._state: State = "new"
        self._server: IpcServer | None = None
        self._changed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stop_deadline = float("inf")
        self._drain_ends = 0.0
        #: Connections closed because their ``Hello`` matched no started worker.
        self.refused = 0

    # ------------------------------------------------------------------ introspection

    @property
    def state(self) -> State:
        """``new``, ``running``, ``draining``, ``stopping`` or ``stopped``."""
        return self._state

    @property
    def dropped(self) -> int:
        """Worker messages discarded because stop() closed their connection as they waited."""
        return self._events.dropped

    @property
    def worker_ids(self) -> tuple[str, ...]:
        """Configured worker ids, in spec order."""
        return tuple(self._slots)

    def info(self, worker_id: str) -> WorkerInfo:
        """A snapshot of one worker (``KeyError`` for an unknown id)."""
        slot = self._slots[worker_id]
        pid = slot.process.pid if slot.process is not None and not slot.exited else None
        connected = slot.channel is not None
        return WorkerInfo(worker_id, pid, connected, slot.restarts,
                          slot.hello if connected else None)

    def events(self) -> AsyncIterator[SupervisorEvent]:
        """The event stream (``async for``), for one consumer; ends once stopped and read."""
        return self._events

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen on the IPC socket and spawn every worker; does not wait for them.

        Raises:
            SupervisorError: Already started.
            OSError: The run directory or the socket could not be made.
        """
        if self._state != "new":
            raise SupervisorError(f"start() on a {self._state} supervisor")
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.run_dir.stat().st_mode & 0o077:
            log.warning("run directory %s is open to other users: whoever reaches the IPC "
                        "socket can have the dialplan's tools run", self.run_dir)
        self._server = await serve_unix(self.socket_path, self._on_connection,
                                        name="supervisor-ipc", **self._ipc_options)
        self._state = "running"
        for slot in self._slots.values():
            slot.task = asyncio.create_task(self._run_slot(slot),
                                            name=f"supervisor:{slot.worker_id}")
        log.info("supervisor: %d workers, IPC at %s", len(self._slots), self.socket_path)

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait until every worker is connected (its ``Hello`` accepted).

        Raises:
            TimeoutError: Some were not within ``timeout_s`` (the message names them).
            SupervisorError: Not running (not started, draining or stopping), or a worker
                failed :data:`START_ATTEMPTS` times before it ever came up.
        """
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    if self._state != "running":
                        raise SupervisorError(f"wait_ready() on a {self._state} supervisor")
                    if all(slot.channel is not None for slot in self._slots.values()):
                        return
                    failed = next((slot for slot in self._slots.values()
                                   if slot.start_failures >= START_ATTEMPTS), None)
                    if failed is not None:  # a setting the worker cannot start with
                        raise SupervisorError(
                            f"worker {failed.worker_id} failed to start {START_ATTEMPTS} "
                            f"times: {failed.start_failure} (its log says why)")
                    await self._changed.wait()
        except TimeoutError:
            missing = ", ".join(s.worker_id for s in self._slots.values() if s.channel is None)
            raise TimeoutError(f"workers not ready within {timeout_s:g} s: {missing}") from None

    async def send(self, worker_id: str, msg: ControlMessage) -> None:
        """Send ``msg`` to one worker, waiting for room in its outbox (backpressure).

        Raises:
            WorkerUnavailable: Unknown worker, or not connected now.
            IpcError: ``msg`` is invalid.
            FrameError: ``msg`` is over the frame limit.
        """
        slot = self._slots.get(worker_id)
        channel = slot.channel if slot is not None else None
        if channel is None:
            raise WorkerUnavailable(f"worker {worker_id} is not connected")
        try:
            await channel.send(msg)
        except ChannelClosed as exc:
            raise WorkerUnavailable(f"worker {worker_id}: {exc.reason}") from None

    async def broadcast(self, msg: ControlMessage) -> tuple[str, ...]:
        """Send ``msg`` to every connected worker at once; returns the ids it was queued for.

        Raises:
            IpcError: ``msg`` is invalid (checked before anything is sent).
            FrameError: ``msg`` is over the frame limit (likewise).
        """
        encode_frame(encode(msg), max_size=self._max_frame)
        sends: dict[str, asyncio.Task[bool]] = {}
        async with asyncio.TaskGroup() as group:
            for worker_id, slot in self._slots.items():
                if slot.channel is not None:
                    sends[worker_id] = group.create_task(
                        _send_quietly(slot.channel, msg), name=f"supervisor:{worker_id}:send")
        return tuple(worker_id for worker_id, task in sends.items() if task.result())

    async def drain(self, deadline_s: float, *, grace_s: float = 10.0) -> None:
        """Send ``Drain`` to every worker, wait for them to exit by themselves, then stop.

        Workers take no new calls and end their live ones within ``deadline_s``; whatever runs
        ``grace_s`` after that is stopped by :meth:`stop` with ``grace_s``. Called again, or
        on a supervisor not running, it goes straight to :meth:`stop`.

        Raises:
            IpcError: ``deadline_s`` is outside the protocol's range.
        """
        msg = Drain(deadline_s=deadline_s)
        encode(msg)
        if self._state == "running":
            self._state = "draining"
            self._drain_ends = asyncio.get_running_loop().time() + deadline_s
            self._wake_all()
            sent = await self.broadcast(msg)
            log.info("supervisor: draining %d workers (%g s)", len(sent), deadline_s)
            tasks = [s.task for s in self._slots.values() if s.task is not None]
            await asyncio.wait(tasks, timeout=deadline_s + grace_s)
        await self.stop(grace_s)

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop and reap every worker, close the socket and end the event stream.

        ``Shutdown`` over IPC, ``grace_s`` to exit, then ``SIGTERM`` and ``SIGKILL`` to each
        process group. Idempotent; a concurrent call with a shorter ``grace_s`` shortens the
        wait. Cancelled, it kills every worker at once and reaps them before re-raising.
        """
        loop = asyncio.get_running_loop()
        self._stop_deadline = min(self._stop_deadline, loop.time() + max(0.0, grace_s))
        if self._state in ("stopping", "stopped"):
            self._wake_all()
            await self._stopped.wait()
            return
        self._state = "stopping"
        self._wake_all()
        tasks = [s.task for s in self._slots.values() if s.task is not None]
        try:
            if tasks:
                await asyncio.wait(tasks)
        except asyncio.CancelledError:
            self._stop_deadline = loop.time()
            for slot in self._slots.values():  # no more grace; the slots reap them
                if slot.process is not None and not slot.exited:
                    _signal_group(slot.process.pid, signal.SIGKILL)
            self._wake_all()
            raise
        finally:
            await self._finish_stop(tasks)

    async def _finish_stop(self, tasks: list[asyncio.Task[None]]) -> None:
        try:
            pending = [t for t in tasks if not t.done()]
            if pending:  # a cancelled stop: the slots are reaping what it killed
                await asyncio.wait(pending, timeout=2 * _REAP_TIMEOUT_S)
            for task in tasks:
                task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, Exception):
                    log.error("supervisor: worker task failed", exc_info=result)
            if self._server is not None:
                await self._server.close()
        finally:
            try:
                await self._spawner.close()  # the preloaded parent, once its workers are gone
            finally:
                self._events.close()
                self._state = "stopped"
                self._stopped.set()
                self._notify()
                log.info("supervisor stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ one worker

    def _halting(self) -> bool:
        return self._state in ("draining", "stopping", "stopped")

    def _stopping(self) -> bool:
        return self._state in ("stopping", "stopped")

    def _notify(self) -> None:
        self._changed.set()  # wakes wait_ready(), which re-checks
        self._changed = asyncio.Event()

    def _wake_all(self) -> None:
        for slot in self._slots.values():
            slot.wake.set()
        self._events.kick()
        self._notify()

    async def _run_slot(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._halting():
                while self._events.full() and not self._halting():
                    await self._events.room_changed()  # restarts wait for a stuck consumer
                if self._halting():
                    return
                slot.restarts = slot.tracker.failures  # each failure is followed by a restart
                pid, reason = await self._run_process(slot)
                expected = self._halting()
                if slot.hello is None and not expected:  # never came up at all
                    slot.start_failures += 1
                    slot.start_failure = reason
                delay = None if expected else slot.tracker.failed(loop.time(), self._rand()).delay_s
                self._events.push(WorkerDown(slot.worker_id, pid, reason, expected, delay))
                self._notify()
                if delay is None:
                    log.info("worker %s (pid %s) ended: %s", slot.worker_id, pid, reason)
                    return
                log.warning("worker %s (pid %s) %s; restarting in %.2f s", slot.worker_id, pid,
                            reason, delay)
                await slot.until(self._halting, delay)
        finally:
            await self._ensure_dead(slot)

    async def _run_process(self, slot: _Slot) -> tuple[int | None, str]:
        """One process of ``slot``, from spawn to reaped: its pid and why it ended."""
        slot.tracker.started(asyncio.get_running_loop().time())
        slot.exited, slot.ipc_lost = False, None
        slot.spawned.clear()
        try:
            spec = slot.spec
            process = await self._spawner.spawn(spec.argv, fork=spec.start == "fork",
                                                env=spec.env, cwd=spec.cwd,
                                                log_path=spec.log_path)
        except OSError as exc:
            return None, f"could not start: {exc.strerror or type(exc).__name__}"
        finally:
            slot.spawned.set()
        slot.process = process
        slot.reaper = asyncio.create_task(
            self._reap(slot, process), name=f"supervisor:{slot.worker_id}:pid-{process.pid}")
        self._events.push(WorkerStarted(slot.worker_id, process.pid, slot.restarts))
        log.info("worker %s started (pid %d)", slot.worker_id, process.pid)
        reason = await self._watch(slot, process)
        # What it sent before it died comes before its WorkerDown.
        if not await slot.until(slot.delivered.is_set, _DELIVERY_WAIT_S):
            if slot.channel is not None and not slot.channel.closed:  # a helper holds it open
                await slot.channel.close(flush_timeout_s=0)
        await slot.until(lambda: slot.delivered.is_set() or self._stopping(), None)
        await slot.until(slot.delivered.is_set, _DELIVERY_WAIT_S)
        await self._ensure_dead(slot)  # only acts if even SIGKILL did not end it
        return process.pid, reason

    async def _reap(self, slot: _Slot, process: Child) -> None:
        await process.wait()
        slot.exited = True
        _signal_group(process.pid, signal.SIGKILL)  # whatever it forked and left behind
        slot.wake.set()

    async def _watch(self, slot: _Slot, process: Child) -> str:
        """Until ``process`` is reaped, killing it when it must go; returns the reason."""
        loop = asyncio.get_running_loop()
        hello_deadline = loop.time() + self._hello_timeout_s
        while not slot.exited:
            if self._stopping():
                await self._stop_process(slot, process)
                break
            if slot.ipc_lost is not None:
                lost = slot.ipc_lost
                if not await slot.until(lambda: slot.exited, self._ipc_loss_grace_s):
                    log.warning("worker %s (pid %d) lost its IPC connection but runs; killing it",
                                slot.worker_id, process.pid)
                    await self._terminate(slot, process)
                    return f"IPC connection lost: {lost}"
            elif slot.channel is None and loop.time() >= hello_deadline:
                log.warning("worker %s (pid %d) said no hello within %g s; killing it",
                            slot.worker_id, process.pid, self._hello_timeout_s)
                await self._terminate(slot, process)
                return f"no hello within {self._hello_timeout_s:g} s"
            else:
                await slot.nap(hello_deadline - loop.time() if slot.channel is None else None)
        return exit_reason(process)

    async def _stop_process(self, slot: _Slot, process: Child) -> None:
        if slot.channel is None:  # still starting, or its IPC is gone: no calls to end
            await self._terminate(slot, process)
            return
        try:
            slot.channel.send_nowait(Shutdown())
        except (ChannelClosed, SendQueueFull) as exc:
            log.warning("worker %s: shutdown not sent (%s)", slot.worker_id, exc)
        loop = asyncio.get_running_loop()
        while not slot.exited and (left := self._stop_deadline - loop.time()) > 0:
            await slot.nap(left)  # a second stop() may shorten the deadline
        if not slot.exited:
            log.warning("worker %s (pid %d) outlived the stop grace; terminating it",
                        slot.worker_id, process.pid)
            await self._terminate(slot, process)

    async def _terminate(self, slot: _Slot, process: Child) -> None:
        """``SIGTERM`` to the group, ``term_grace_s``, ``SIGKILL``, reaped (bounded)."""
        for sig, wait_s in ((signal.SIGTERM, self._term_grace_s),
                            (signal.SIGKILL, _REAP_TIMEOUT_S)):
            if not slot.exited:
                _signal_group(process.pid, sig)
                await slot.until(lambda: slot.exited, wait_s)
        if not slot.exited:
            log.error("worker %s (pid %d) did not exit after SIGKILL", slot.worker_id,
                      process.pid)

    async def _ensure_dead(self, slot: _Slot) -> None:
        # Last resort for a cancelled or failed slot task, or a process SIGKILL cannot end.
        process, reaper = slot.process, slot.reaper
        if process is not None and not slot.exited:
            _signal_group(process.pid, signal.SIGKILL)
            if reaper is not None:
                await asyncio.wait({reaper}, timeout=_REAP_TIMEOUT_S)
        if reaper is not None and not reaper.done():
            reaper.cancel()
            await asyncio.gather(reaper, return_exceptions=True)

    # ------------------------------------------------------------------ connections

    async def _on_connection(self, channel: ControlChannel) -> None:
        slot = await self._pair(channel)
        if slot is None:
            return  # refused: the server closes the channel
        pid = slot.hello.pid if slot.hello is not None else 0
        try:
            async for message in channel:
                if isinstance(message, Hello):
                    log.warning("worker %s said hello twice; closing its connection",
                                slot.worker_id)
                    break
                await self._events.push_message(FromWorker(slot.worker_id, pid, message))
        finally:
            if slot.channel is channel:
                slot.ipc_lost = channel.reason or "protocol error: a second hello"
                slot.channel = None
                slot.delivered.set()
                slot.wake.set()
                self._notify()

    async def _pair(self, channel: ControlChannel) -> _Slot | None:
        """The slot whose process sent this ``Hello``, answered; ``None`` when refused."""
        try:
            async with asyncio.timeout(self._hello_timeout_s):
                hello = await channel.recv()
        except TimeoutError:
            self._refuse(None, None, f"no first message within {self._hello_timeout_s:g} s")
            return None
        except ChannelClosed as exc:
            self._refuse(None, None, f"closed before its hello ({exc.reason})")
            return None
        if not isinstance(hello, Hello):
            self._refuse(None, None, f"first message was {hello.type!r}, not 'hello'")
            return None
        slot = self._slots.get(hello.worker_id)
        if slot is None:
            self._refuse(hello.worker_id, hello.pid, "no such worker")
            return None
        with contextlib.suppress(TimeoutError):  # its spawn may not have returned yet
            async with asyncio.timeout(self._hello_timeout_s):
                await slot.spawned.wait()
        if self._stopping():
            reason = "the supervisor is stopping"
        elif slot.process is None or slot.exited or slot.process.pid != hello.pid:
            reason = "pid is not that of the process started for this worker"
        elif slot.channel is not None:
            reason = "this worker is already connected"
        else:
            try:
                welcome = negotiate(hello, self._digest)
                channel.send_nowait(welcome)  # a fresh outbox is never full
                if self._state == "draining":  # spawned before the drain, connected after it
                    left = self._drain_ends - asyncio.get_running_loop().time()
                    channel.send_nowait(Drain(deadline_s=max(0.0, left)))
            except IpcError as exc:
                reason = str(exc)
            except ChannelClosed:
                return None
            else:
                return self._accept(slot, channel, hello)
        self._refuse(hello.worker_id, hello.pid, reason)
        return None

    def _refuse(self, worker_id: str | None, pid: int | None, reason: str) -> None:
        self.refused += 1
        log.warning("supervisor: refused an IPC connection (worker %s, pid %s): %s",
                    worker_id or "?", pid if pid is not None else "?", reason)

    def _accept(self, slot: _Slot, channel: ControlChannel, hello: Hello) -> _Slot:
        slot.channel, slot.hello = channel, hello
        slot.delivered.clear()
        slot.wake.set()
        self._events.push(WorkerUp(slot.worker_id, hello.pid, hello))
        self._notify()
        log.info("worker %s (pid %d) connected: capacity %d, SIP %s:%d", slot.worker_id,
                 hello.pid, hello.capacity, hello.sip_host, hello.sip_port)
        return slot


async def _send_quietly(channel: ControlChannel, msg: ControlMessage) -> bool:
    try:
        await channel.send(msg)
    except ChannelClosed:
        return False
    return True

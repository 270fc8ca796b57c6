"""Starts worker processes: by exec, or forked from a preloaded parent that shares its heap.

A fresh interpreter per SIP worker pays for its imports (numpy, websockets, jsonschema,
pjsua2's module, the gateway's own code) in private memory, once per worker. The *preloaded
parent* ("zygote") is one process, started from the control process, that imports them once,
freezes the garbage collector's view of them (``gc.freeze()``) and then forks each worker, so
those pages stay shared copy-on-write between it and every worker. It runs
``python -m gateway.control.zygote FD PAD MODULE...``: single-threaded by construction (no
event loop, no pjsua2 endpoint, OpenBLAS and OpenMP held to one thread by their environment
variables) and checked to be so before every fork. It talks to the control process over a
``SOCK_SEQPACKET`` socket pair, one JSON object per packet: ``spawn`` requests (argv,
environment, working directory, the log file as a passed descriptor) answered with the pid and
a pidfd of the child, and the exit status of each child once it has reaped it.

A forked child is made what ``exec`` would have made: its own session and process group
(``setsid``), the default signal dispositions, stdin on ``/dev/null``, stdout and stderr on the
log file, the requested working directory and environment (variables read at interpreter start
or at import, ``PYTHON*`` and the thread counts, stay the parent's), its own command line shown
in ``/proc/PID/cmdline`` as far as it fits, and ``PR_SET_PDEATHSIG`` (``SIGTERM``) towards its
parent, which itself gets ``SIGKILL`` when the control process dies: a killed control process
still takes its workers with it, one link later. It then runs ``python -m MODULE ARGS`` as a
fresh interpreter would (:func:`runpy.run_module`), exits through the interpreter's own exit
(``atexit``, non-daemon threads) and is reaped by the preloaded parent, which reports its
status. If the preloaded parent itself dies, its children get their death signal too; their
exit status is then unknown, and each one's end is seen on its pidfd.

:class:`Spawner` is what the supervisor uses: ``exec`` as before, or ``fork`` through the
preloaded parent, started when first needed and started again after it died, up to
:data:`MAX_DEATHS` times; a parent that cannot start, or dies that often, is given up with a
logged reason and every later worker is started by ``exec``, which behaves the same but shares
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import runpy
import select
import signal
import socket
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from gateway.lifetime import die_with_parent, set_death_signal

__all__ = ["MAX_DEATHS", "ONE_THREAD_ENV", "Child", "ForkedProcess", "Spawner", "ZygoteError",
           "cmdline_room", "exit_reason"]

log = logging.getLogger(__name__)

_MODULE: Final = "gateway.control.zygote"
#: How often the preloaded parent may die before workers are started by exec for good.
MAX_DEATHS: Final = 3
#: Environment of the preloaded parent on top of the control process's: libraries that would
#: start threads at import (OpenBLAS with numpy) start none, so the parent can fork safely.
ONE_THREAD_ENV: Final = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                         "MKL_NUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1"}
_READY_TIMEOUT_S: Final = 30.0  # its imports; a worker's own start takes as long
_REQUEST_TIMEOUT_S: Final = 10.0
_CLOSE_WAIT_S: Final = 5.0
_HANDSHAKE_S: Final = 5.0
_PACKET: Final = 1 << 20  # requests carry an environment; the socket buffer bounds them anyway


class ZygoteError(Exception):
    """The preloaded parent cannot fork this worker; ``fatal``: nor any other, ever."""

    def __init__(self, reason: str, *, fatal: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fatal = fatal


class Child(Protocol):
    """What the supervisor needs of a worker process (``asyncio.subprocess.Process`` has it)."""

    @property
    def pid(self) -> int:
        """Its process id, also its process group's and session's."""

    @property
    def returncode(self) -> int | None:
        """Its exit code, negative for a signal; ``None`` until it has been reaped."""

    async def wait(self) -> object:
        """Until it has been reaped."""


def exit_reason(child: Child) -> str:
    """``exited with status N``, ``killed by SIGNAME``, or why the status is unknown."""
    if isinstance(child, ForkedProcess) and child.lost is not None:
        return child.lost
    return _status_text(child.returncode)


def _status_text(returncode: int | None) -> str:
    if returncode is None:
        return "still running after SIGKILL"
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def cmdline_room(argvs: Sequence[Sequence[str]]) -> int:
    """Bytes of command line the preloaded parent keeps, so a child can show the longest."""
    return max((len(os.fsencode("\0".join(argv))) + 1 for argv in argvs), default=0)


# ---------------------------------------------------------------------- the preloaded parent


@dataclass(frozen=True, slots=True)
class _Request:
    """What a forked child runs: its ``PYTHON -m MODULE ARGS...``."""

    argv: tuple[str, ...]


def _send(sock: socket.socket, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    socket.send_fds(sock, [json.dumps(message).encode()], list(fds))


#: Signals the preloaded parent ignores, and what it inherited for them (its children get that
#: back: an exec'd worker would have inherited the same from the control process).
_IGNORED: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_inherited: dict[int, Any] = {}


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _set_cmdline(argv: Sequence[str]) -> None:
    """Show ``argv`` in ``/proc/self/cmdline`` (``ps``), truncated to the original's room."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (proc(5) 48, 49)
    except (OSError, IndexError, ValueError):
        return
    room = end - start
    if room <= 1:
        return
    text = os.fsencode("\0".join(argv))[:room - 1]
    ctypes.memmove(start, text.ljust(room, b"\0"), room)  # ends in NUL: no env spill-over


def main(argv: Sequence[str]) -> None:
    """The preloaded parent's program: preload, then fork on request until its socket ends."""
    gc.disable()  # no collection holes in pages the children will share; frozen before forks
    fd = int(argv[0])
    modules = list(argv[2:])
    _set_cmdline([sys.executable, "-m", _MODULE, str(fd), *modules])
    for sig in _IGNORED:
        _inherited[sig] = signal.signal(sig, signal.SIG_IGN)  # it follows the control process
    sock = socket.socket(fileno=fd)
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # whatever it is, the control process falls back to exec
            _send(sock, {"error": f"preloading {name}: {type(exc).__name__}: {exc}"})
            sys.exit(1)
    if (threads := _threads()) != 1:
        _send(sock, {"error": f"{threads} threads after preloading; forking needs one"})
        sys.exit(1)
    gc.freeze()
    _send(sock, {"ready": os.getpid(), "modules": len(sys.modules),
                 "frozen": gc.get_freeze_count()})
    request = _serve(sock)  # returns only in a forked child
    gc.enable()
    module = request.argv[2]
    for name in (module, f"{module}.__main__"):
        sys.modules.pop(name, None)  # run afresh as __main__, as `python -m` would
    sys.argv = ["-m", *request.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    # SystemExit (the module's exit status) or an exception ends the child as it would end
    # `python -m`: through the interpreter's own exit.


def _serve(sock: socket.socket) -> _Request:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    children: dict[int, int] = {}  # pidfd -> pid
    while True:
        for fd, _ in poller.poll():
            if fd != sock.fileno():  # a child ended: reap it, report its status
                pid = children.pop(fd)
                poller.unregister(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                _send(sock, {"exit": pid, "code": os.waitstatus_to_exitcode(status)})
                continue
            data, fds, flags, _ = socket.recv_fds(sock, _PACKET, 1)
            if not data:
                sys.exit(0)  # the control process closed its end, or is gone
            try:
                if flags & socket.MSG_TRUNC:
                    raise ValueError("over the packet limit")
                spawned = _fork(sock, json.loads(data), fds[0] if fds else None, children)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                _send(sock, {"id": _request_id(data), "error": f"bad request: {exc}"})
                spawned = None
            if isinstance(spawned, _Request):
                return spawned  # in the child, which has made the log descriptor its stdout
            for received in fds:
                os.close(received)
            if spawned is not None:
                pidfd, pid = spawned
                children[pidfd] = pid
                poller.register(pidfd, select.POLLIN)


def _request_id(data: bytes) -> int:
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return int(json.loads(data).get("id", 0))
    return 0


def _fork(sock: socket.socket, message: Mapping[str, Any], log_fd: int | None,
          children: Mapping[int, int]) -> _Request | tuple[int, int] | None:
    """Fork one child: in the child the request to run; in the parent (pidfd, pid) or None."""
    request_id = int(message["id"])
    argv = tuple(str(a) for a in message["argv"])
    env = {str(k): str(v) for k, v in message["env"].items()}
    cwd = message.get("cwd")
    if len(argv) < 3 or argv[1] != "-m":
        raise ValueError("argv must be PYTHON -m MODULE ...")
    if (threads := _threads()) != 1:
        _send(sock, {"id": request_id, "error": f"{threads} threads: it must not fork",
                     "fatal": True})
        sys.exit(1)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()  # nothing buffered here is written twice
    gc.freeze()  # what the parent allocated since the last fork, too
    parent = os.getpid()
    ready_r, ready_w = os.pipe()
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(ready_r)
        os.close(ready_w)
        _send(sock, {"id": request_id, "error": exc.strerror or str(exc),
                     "errno": exc.errno or 0})
        return None
    if pid == 0:
        try:
            os.close(ready_r)
            _become(parent, sock, ready_w, log_fd, children, cwd, env, argv)
        except BaseException:  # never back into the parent's loop
            traceback.print_exc()
            os._exit(127)
        return _Request(argv)
    os.close(ready_w)
    failure = _read_handshake(ready_r)
    if failure:  # it could not set itself up and exits: reap it, report why
        os.waitpid(pid, 0)
        errno, _, text = failure.partition(" ")
        _send(sock, {"id": request_id, "error": text, "errno": int(errno or 0)})
        return None
    pidfd = os.pidfd_open(pid)  # before any reaping, so it is surely this child's
    _send(sock, {"id": request_id, "pid": pid}, [pidfd])
    return pidfd, pid


def _read_handshake(fd: int) -> str:
    """The child's set-up outcome: ``""`` once it is ready (or died meanwhile), else its error."""
    chunks: list[bytes] = []
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        while poller.poll(int(_HANDSHAKE_S * 1000)):
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def _become(parent: int, sock: socket.socket, ready_w: int, log_fd: int | None,
            children: Mapping[int, int], cwd: str | None, env: Mapping[str, str],
            argv: Sequence[str]) -> None:
    """In the forked child: turn into what exec would have started, or exit saying why."""
    for sig, handler in _inherited.items():
        signal.signal(sig, handler)
    os.setsid()  # before the parent reports the pid: the supervisor's group kill must reach it
    set_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(128 + signal.SIGTERM)  # had SIGTERM been ignored where it came from
    sock.close()
    for fd in children:
        os.close(fd)
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        if log_fd is not None:
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
        if cwd is not None:
            before = os.getcwd()
            os.chdir(cwd)
            if sys.path and sys.path[0] == before:  # `python -m` puts its cwd first
                sys.path[0] = os.getcwd()
        os.environ.clear()
        os.environ.update(env)
    except OSError as exc:
        os.write(ready_w, f"{exc.errno or 0} {exc.strerror or exc}".encode())
        os._exit(127)
    os.close(ready_w)
    _set_cmdline(argv)


# ---------------------------------------------------------------------- the control process


class ForkedProcess:
    """A child of the preloaded parent, as the supervisor sees a process it started.

    ``returncode`` comes from the parent, which reaps it. When the parent died first, the
    status is lost: ``lost`` says so once the pidfd shows the process gone.
    """

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.lost: str | None = None
        self._pidfd: int | None = pidfd
        self._gone = False
        self._orphaned: str | None = None
        self._loop = asyncio.get_running_loop()
        self._done = self._loop.create_future()
        self._loop.add_reader(pidfd, self._on_gone)

    async def wait(self) -> int | None:
        """Until it has exited (and been reaped); its ``returncode``."""
        await asyncio.shield(self._done)
        return self.returncode

    def exited(self, code: int) -> None:
        """Its parent reaped it: ``code`` as ``asyncio`` gives it (negative: a signal)."""
        self.returncode = code
        self._finish()

    def orphaned(self, reason: str) -> None:
        """Its parent died: it gets its death signal; it ends when the pidfd says so."""
        self._orphaned = reason
        if self._gone:
            self._finish()

    def kill(self) -> None:
        """``SIGKILL`` to it (by pidfd: never to a reused pid), while it is not reaped."""
        if self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def _on_gone(self) -> None:
        self._gone = True
        self._close_pidfd()
        if self._orphaned is not None:
            self._finish()

    def _finish(self) -> None:
        self._close_pidfd()
        if self.returncode is None and self._orphaned is not None:
            self.lost = f"exit status unknown: its preloaded parent {self._orphaned}"
        if not self._done.done():
            self._done.set_result(None)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None


class _Zygote:
    """The control process's handle on one preloaded parent process."""

    def __init__(self, python: str, preload: Sequence[str], room: int) -> None:
        self.python = python
        self._preload = tuple(preload)
        self._room = room
        self._sock: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[Mapping[str, Any]] | None = None
        self._pending: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._next_id = 0
        self._closing = False
        self._kill_timer: asyncio.TimerHandle | None = None
        self.death: str | None = None  # set once it is gone

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self.death is None

    async def start(self) -> Mapping[str, Any]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pad = "." * max(1, self._room)  # command-line room for the children (_set_cmdline)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.python, "-m", _MODULE, str(theirs.fileno()), pad, *self._preload,
                stdin=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                env={**os.environ, **ONE_THREAD_ENV},  # the control process's, as exec would
                start_new_session=True, preexec_fn=die_with_parent(signal.SIGKILL))
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_readable)
        self._watcher = asyncio.create_task(self._watch(self._proc),
                                            name=f"supervisor:zygote:pid-{self._proc.pid}")
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S):
                return await self._ready
        except TimeoutError:
            await self.close()
            raise ZygoteError(f"not ready within {_READY_TIMEOUT_S:g} s", fatal=True) from None
        except BaseException:  # its error, or a cancelled start: it must not stay behind
            await self.close()
            raise

    async def spawn(self, argv: Sequence[str], env: Mapping[str, str], cwd: str | None,
                    log_fd: int | None) -> ForkedProcess:
        if self._sock is None or not self.alive:
            raise ZygoteError(f"it {self.death or 'is not running'}")
        self._next_id += 1
        request_id = self._next_id
        reply: asyncio.Future[ForkedProcess] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        try:
            try:
                _send(self._sock, {"op": "spawn", "id": request_id, "argv": list(argv),
                                   "env": dict(env), "cwd": cwd},
                      [log_fd] if log_fd is not None else [])
            except OSError as exc:  # a full buffer, an oversized request, a closed peer
                raise ZygoteError(f"request not sent: {exc.strerror or exc}") from None
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                return await reply
        except TimeoutError:
            raise ZygoteError(f"no answer within {_REQUEST_TIMEOUT_S:g} s", fatal=True
                              ) from None
        finally:
            self._pending.pop(request_id, None)

    def _on_readable(self) -> None:
        assert self._sock is not None
        while self._sock is not None:
            try:
                data, fds, _, _ = socket.recv_fds(self._sock, _PACKET, 1)
            except BlockingIOError:
                return
            except OSError as exc:
                self._ended(f"broke its connection ({exc.strerror or exc})")
                return
            if not data:
                self._ended("closed its connection")
                return
            try:
                message = json.loads(data)
            except ValueError:
                message = None
            try:
                if not isinstance(message, dict):
                    raise TypeError("not a JSON object")
                self._dispatch(message, fds)  # which closes the descriptors it does not keep
            except (ValueError, KeyError, TypeError, AttributeError):
                if not isinstance(message, dict):
                    for fd in fds:
                        os.close(fd)
                log.error("preloaded parent (pid %s) sent a malformed message", self.pid)

    def _dispatch(self, message: Mapping[str, Any], fds: list[int]) -> None:
        try:
            if "exit" in message:
                child = self._children.pop(int(message["exit"]), None)
                if child is not None:
                    child.exited(int(message["code"]))
            elif "ready" in message:
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(message)
            elif "id" in message:
                self._answered(message, fds)
            elif "error" in message and self._ready is not None and not self._ready.done():
                self._ready.set_exception(ZygoteError(str(message["error"]), fatal=True))
        finally:
            for fd in fds:
                os.close(fd)

    def _answered(self, message: Mapping[str, Any], fds: list[int]) -> None:
        reply = self._pending.pop(int(message["id"]), None)
        if reply is not None and reply.done():
            reply = None
        if "pid" in message and fds:
            # Known here, at once: its exit may be the very next message.
            child = ForkedProcess(int(message["pid"]), fds.pop(0))
            self._children[child.pid] = child
            if reply is not None:
                reply.set_result(child)
            else:  # its request timed out and was started by exec: this one must not run
                log.warning("preloaded parent forked pid %d too late; killing it", child.pid)
                child.kill()
        elif reply is not None and message.get("errno"):
            reply.set_exception(OSError(int(message["errno"]), str(message.get("error"))))
        elif reply is not None:
            reply.set_exception(ZygoteError(str(message.get("error", "no pidfd with the pid")),
                                            fatal=bool(message.get("fatal"))))

    def _ended(self, why: str) -> None:
        """Its connection ended: nothing more comes from it. It is exiting, or else broken."""
        self._drop_socket()
        if not self._closing and self._kill_timer is None:
            self._kill_timer = asyncio.get_running_loop().call_later(
                _CLOSE_WAIT_S, self._kill_if_running, why)

    def _kill_if_running(self, why: str | None) -> None:
        # Not Process.kill(): it reaps a zombie itself, and asyncio would lose the status.
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if why is not None:
                log.warning("preloaded parent (pid %d) %s but runs; killing it", proc.pid, why)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)

    def _drop_socket(self) -> None:
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        if self._sock is not None:
            self._on_readable()  # what it said before it died: statuses, its last error
        self._drop_socket()
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        self.death = f"(pid {proc.pid}) ended: {_status_text(proc.returncode)}"
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ZygoteError(f"it {self.death} before it was ready",
                                                  fatal=True))
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(ZygoteError(f"it {self.death}"))
        children, self._children = self._children, {}
        if not self._closing:
            log.warning("preloaded parent %s; %d worker(s) forked from it get SIGTERM",
                        self.death, len(children))
        for child in children.values():
            child.orphaned(self.death)

    async def close(self) -> None:
        """Close its socket (it exits on that), wait a bounded time, then kill it."""
        self._closing = True
        self._drop_socket()
        proc, watcher = self._proc, self._watcher
        if proc is None or watcher is None:
            return
        if self._ready is None or not self._ready.done() or self._ready.cancelled():
            self._kill_if_running(None)  # still importing: it has no children, nothing to wait for
        done, _ = await asyncio.wait({watcher}, timeout=_CLOSE_WAIT_S)
        if not done:
            self._kill_if_running("did not exit when its connection was closed")
            await asyncio.wait({watcher}, timeout=_CLOSE_WAIT_S)
        if not watcher.done():
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


class Spawner:
    """Starts the supervisor's worker processes, by exec or forked from the preloaded parent.

    Args:
        preload: Modules the preloaded parent imports (the workers' code and libraries).
        room: Command-line bytes to keep for the children (:func:`cmdline_room`).
    """

    def __init__(self, preload: Sequence[str] = (), *, room: int = 0) -> None:
        self.preload = tuple(preload)
        self.room = room
        self._zygote: _Zygote | None = None
        self._lock = asyncio.Lock()
        self.deaths = 0
        #: Why forking was given up (every worker is exec'd from then on); ``None``: it was not.
        self.given_up: str | None = None

    async def spawn(self, argv: Sequence[str], *, fork: bool, env: Mapping[str, str] | None,
                    cwd: str | os.PathLike[str] | None, log_path: Path | None) -> Child:
        """Start ``argv``; forked when ``fork`` and the preloaded parent can, else exec'd.

        Raises:
            OSError: The process could not be started.
        """
        out = log_path.open("ab") if log_path is not None else None
        try:  # the child has its own copy of the log descriptor; ours closes at once
            if fork:
                zygote = await self._zygote_for(argv[0])
                if zygote is not None:
                    try:
                        return await zygote.spawn(
                            argv, dict(env) if env is not None else dict(os.environ),
                            os.fspath(cwd) if cwd is not None else None,
                            out.fileno() if out is not None else None)
                    except ZygoteError as exc:
                        if exc.fatal:
                            await self._give_up(exc.reason)
                        else:
                            log.warning("worker not forked (%s): starting it by exec",
                                        exc.reason)
            return await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT if out is not None else None,
                env=dict(env) if env is not None else None, cwd=cwd,
                start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
        finally:
            if out is not None:
                out.close()

    async def _zygote_for(self, python: str) -> _Zygote | None:
        async with self._lock:
            if self.given_up is not None:
                return None
            zygote = self._zygote
            if zygote is not None and not zygote.alive:
                self.deaths += 1
                self._zygote = zygote = None
                if self.deaths >= MAX_DEATHS:
                    await self._give_up(f"it died {self.deaths} times", locked=True)
                    return None
                log.info("starting the preloaded parent again (it died %d time(s))",
                         self.deaths)
            if zygote is not None:
                if zygote.python != python:
                    log.warning("worker not forked: its interpreter %s is not the preloaded "
                                "parent's %s", python, zygote.python)
                    return None
                return zygote
            zygote = _Zygote(python, self.preload, self.room)
            try:
                ready = await zygote.start()
            except (OSError, ZygoteError) as exc:
                reason = exc.reason if isinstance(exc, ZygoteError) else (
                    f"could not start: {exc.strerror or type(exc).__name__}")
                await self._give_up(reason, locked=True)
                return None
            self._zygote = zygote
            log.info("preloaded parent ready (pid %s): %s modules shared, %s objects frozen",
                     zygote.pid, ready.get("modules"), ready.get("frozen"))
            return zygote

    async def _give_up(self, reason: str, *, locked: bool = False) -> None:
        if self.given_up is None:
            self.given_up = reason
            log.warning("preloaded parent given up (%s): workers start by exec from now on",
                        reason)
        if locked:
            await self._close_zygote()
        else:
            async with self._lock:
                await self._close_zygote()

    async def _close_zygote(self) -> None:
        zygote, self._zygote = self._zygote, None
        if zygote is not None:
            await zygote.close()

    async def close(self) -> None:
        """Stop the preloaded parent (its children should be gone by now)."""
        async with self._lock:
            await self._close_zygote()


if __name__ == "__main__":
    main(sys.argv[1:])

"""The Kamailio front as a child process: run directory, config check, start, RPC, stop.

The only module of the front that runs processes. :class:`KamailioFront` renders the spec
(:mod:`gateway.front.render`), writes the run directory (config, dispatcher list, allow-list,
db_text tables with the secrets at mode 0600), refuses to start when another process already
holds one of the listen addresses (Kamailio's UDP sockets use ``SO_REUSEADDR``, so a stale
instance would silently share the port), checks the config with ``kamailio -c`` (errors are
reported with the offending config lines), starts ``kamailio -f CFG -DD -E -Y RUNDIR`` in its
own session, and is ready when its JSON-RPC socket answers and every listen socket is bound
by that very process. It then reads and sets worker states over JSON-RPC (``dispatcher.list``,
``dispatcher.set_state``; never ``dispatcher.reload``, which zeroes live call loads) and stops
by pid: ``SIGTERM``, ``SIGKILL`` after a grace period, then the run directory is removed.

It uses asyncio subprocesses rather than ``subprocess``: the control process that owns the
front runs an event loop, and with asyncio it can await Kamailio's exit (supervision), the
config check and the stop grace period without blocking that loop or parking a thread per
child. JSON-RPC goes over a non-blocking unix datagram socket on the same loop. The only
blocking work left is writing a few small files and reading ``/proc``, which take
milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import shutil
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from gateway.front import ports
from gateway.front.errors import (
    FrontConfigInvalid,
    FrontError,
    FrontPortBusy,
    FrontRpcError,
    FrontStartError,
    KamailioNotFound,
)
from gateway.front.render import FrontFiles, render
from gateway.front.spec import WORKER_SET, FrontPaths, FrontSpec
from gateway.front.state import (
    SET_STATE_CODES,
    AdminState,
    JsonValue,
    RegistrationState,
    WorkerState,
    decode_response,
    encode_request,
    parse_dispatcher_list,
    parse_reg_dump,
    response_id,
)
from gateway.lifetime import die_with_parent

log = logging.getLogger("gateway.front")

#: How to get Kamailio on Debian/Ubuntu.
INSTALL_HINT = "apt-get install kamailio"
#: How to get the TLS module.
TLS_INSTALL_HINT = "apt-get install kamailio-tls-modules"
#: Where kamailio lives when ``sbin`` is not on ``PATH``.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_CHECK_TIMEOUT_S = 30.0
_POLL_S = 0.02
_READY_RPC_TIMEOUT_S = 0.25
_GROUP_EXIT_S = 3.0
_MAX_DATAGRAM = 1 << 20
_LOG_TAIL_LINES = 60
_CONFIG_LINE = re.compile(r"config file \S+?, line (\d+)")


def find_kamailio(binary: str | Path | None = None) -> Path:
    """The ``kamailio`` executable: ``binary`` if given, else from ``PATH`` or ``sbin``.

    Raises:
        KamailioNotFound: It is not installed (the message says how to install it).
    """
    if binary is not None:
        path = Path(binary)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise KamailioNotFound(f"kamailio not found at {path}; install it: {INSTALL_HINT}")
    found = shutil.which("kamailio")
    if found:
        return Path(found)
    for d in _SBIN_DIRS:
        path = Path(d, "kamailio")
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise KamailioNotFound("kamailio is not installed (looked in PATH and "
                           f"{', '.join(_SBIN_DIRS)}); install it: {INSTALL_HINT}")


def _known_entries(paths: FrontPaths) -> set[str]:
    inside = [paths.config, paths.dispatcher_list, paths.address_list, paths.tls_config,
              paths.db_dir, paths.log, paths.ctl_socket, paths.rpc_socket]
    return {p.name for p in inside if p.parent == paths.run_dir}


def write_run_dir(spec: FrontSpec, files: FrontFiles) -> FrontPaths:
    """Create the run directory (mode 0700) and write every file the front needs.

    Files a previous run left there are replaced; a directory holding anything else is
    refused, since the front removes its run directory when it stops.

    Raises:
        FrontError: The run directory holds files the front did not write.
    """
    paths = spec.paths
    run = paths.run_dir
    if run.exists():
        foreign = sorted(e.name for e in run.iterdir() if e.name not in _known_entries(paths))
        if foreign:
            raise FrontError(f"run directory {run} holds files the front did not write "
                             f"({', '.join(foreign[:5])}); give the front a directory of its own")
        for entry in run.iterdir():
            if entry == paths.log:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    run.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(run, 0o700)
    _write(paths.config, files.config)
    _write(paths.dispatcher_list, files.dispatcher_list)
    if files.address_list is not None:
        _write(paths.address_list, files.address_list)
    if files.tls_config is not None:
        _write(paths.tls_config, files.tls_config)
    if files.uacreg_table is not None and files.version_table is not None:
        paths.db_dir.mkdir(mode=0o700, exist_ok=True)
        _write(paths.db_dir / "uacreg", files.uacreg_table)
        _write(paths.db_dir / "version", files.version_table)
    for sock in (paths.ctl_socket, paths.rpc_socket):
        if sock.is_socket():  # a stale socket outside the run dir, from a dead instance
            sock.unlink()
    return paths


def _write(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def explain_check_failure(output: str, config_text: str) -> str:
    """The interesting part of ``kamailio -c`` output, with the config lines it names."""
    lines = config_text.splitlines()
    errors = [ln.strip() for ln in output.splitlines()
              if "ERROR" in ln or "CRITICAL" in ln or "error" in ln.lower()]
    out = errors[:12] or output.strip().splitlines()[-12:]
    numbers = sorted({int(n) for n in _CONFIG_LINE.findall(output)})
    for n in numbers[:6]:
        text = lines[n - 1] if 0 < n <= len(lines) else "<past the end>"
        out.append(f"  line {n}: {text.strip()}")
    if "tls.so" in output or "<tls>" in output:
        out.append(f"TLS needs Kamailio's TLS module: {TLS_INSTALL_HINT}")
    return "\n".join(out)


async def check_config(binary: Path, config: Path, *,
                       timeout_s: float = _CHECK_TIMEOUT_S) -> None:
    """Run ``kamailio -c -f config``.

    Raises:
        FrontConfigInvalid: Kamailio rejected the config (with the lines it names), or the
            check did not finish in time.
    """
    proc = await asyncio.create_subprocess_exec(
        str(binary), "-c", "-f", str(config), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise FrontConfigInvalid(f"kamailio -c {config} did not finish in {timeout_s} s"
                                 ) from None
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        text = out.decode(errors="replace")
        config_text = await asyncio.to_thread(config.read_text)
        raise FrontConfigInvalid(f"kamailio -c rejected {config}:\n"
                                 f"{explain_check_failure(text, config_text)}")


class _RpcClient:
    """JSON-RPC over Kamailio's unix datagram socket, one request at a time.

    The reply socket is autobound in Linux's abstract namespace: no file to clean up and no
    ``sun_path`` length to worry about.
    """

    def __init__(self, server: Path) -> None:
        self.server = str(server)
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.bind("")
            self._sock = sock
        return self._sock

    async def call(self, method: str, params: Sequence[str | int],
                   timeout_s: float) -> JsonValue:
        async with self._lock:
            loop = asyncio.get_running_loop()
            sock = self._socket()
            request_id = next(self._ids)
            try:
                await loop.sock_sendto(sock, encode_request(method, params, request_id),
                                       self.server)
            except OSError as exc:
                raise FrontRpcError(f"{method}: cannot reach {self.server}: "
                                    f"{exc.strerror or exc}") from None
            try:
                async with asyncio.timeout(timeout_s):
                    while True:
                        data = await loop.sock_recv(sock, _MAX_DATAGRAM)
                        if response_id(data) == request_id:  # skip late answers
                            return decode_response(data, method)
            except TimeoutError:
                raise FrontRpcError(f"{method}: no answer within {timeout_s} s") from None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class KamailioFront:
    """One Kamailio front process, from start to stop.

    Use as ``async with KamailioFront(spec) as front:`` or call :meth:`start` and
    :meth:`stop`; :meth:`stop` is idempotent and removes the run directory the front wrote.
    An instance runs Kamailio once: a supervisor restarts the front with a new instance.

    Args:
        spec: What to run.
        binary: The kamailio executable; default: :func:`find_kamailio`.
        start_timeout_s: How long start-up may take before it is an error.
        stop_grace_s: How long :meth:`stop` waits after ``SIGTERM`` before ``SIGKILL``.
        rpc_timeout_s: Default time limit of one RPC call.
    """

    def __init__(self, spec: FrontSpec, *, binary: str | Path | None = None,
                 start_timeout_s: float = 15.0, stop_grace_s: float = 5.0,
                 rpc_timeout_s: float = 2.0) -> None:
        self.spec = spec
        self.paths = spec.paths
        self._binary = binary
        self.start_timeout_s = start_timeout_s
        self.stop_grace_s = stop_grace_s
        self.rpc_timeout_s = rpc_timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        self._rpc = _RpcClient(self.paths.rpc_socket)
        self._wrote_run_dir = False
        self._last_log = ""

    # Lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the ports, write the run dir, check the config, start and wait until ready.

        Raises:
            KamailioNotFound: Kamailio is not installed.
            FrontPortBusy: A listen address is already taken (or the run dir is in use).
            FrontConfigInvalid: ``kamailio -c`` rejected the generated config.
            FrontStartError: Kamailio exited or was not ready within ``start_timeout_s``.
        """
        if self._proc is not None:
            raise FrontError("the front was already started")
        binary = find_kamailio(self._binary)
        self._refuse_taken_ports()
        await self._refuse_live_run_dir()
        try:
            files = render(self.spec)
            await asyncio.to_thread(write_run_dir, self.spec, files)
            self._wrote_run_dir = True
            await check_config(binary, self.paths.config)
            await self._spawn(binary)
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        log.info("front: kamailio pid %d listening on %s", self.pid,
                 ", ".join(f"{t.transport}:{t.address}" for t in self.spec.listen))

    async def _spawn(self, binary: Path) -> None:
        s = self.spec
        argv = [str(binary), "-f", str(self.paths.config), "-DD", "-E",
                "-Y", str(self.paths.run_dir), "-n", str(s.children),
                "-m", str(s.shm_mb), "-M", str(s.pkg_mb)]
        self.paths.log.parent.mkdir(parents=True, exist_ok=True)
        # The child keeps its own copy of the descriptor; ours closes right away.
        with self.paths.log.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGTERM))

    async def stop(self) -> int | None:
        """Stop Kamailio by pid and remove the run directory.

        ``SIGTERM`` first; ``SIGKILL`` (to the pid, then to what is left of its process
        group) when it has not exited after ``stop_grace_s``. Finishes even when cancelled:
        a cancelled stop kills the process before re-raising.

        Returns:
            Kamailio's exit status (negative: killed by that signal), or ``None`` if it was
            never started.
        """
        proc = self._proc
        try:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(self.stop_grace_s):
                        await proc.wait()
                except TimeoutError:
                    log.warning("front: kamailio pid %d ignored SIGTERM for %.1f s, killing",
                                proc.pid, self.stop_grace_s)
                    self._kill(proc)
                    await proc.wait()
                    await self._wait_group_gone(proc.pid)
        except asyncio.CancelledError:
            if proc is not None and proc.returncode is None:
                self._kill(proc)
            self._cleanup()
            raise
        self._cleanup()
        return None if proc is None else proc.returncode

    @staticmethod
    def _kill(proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        # Its children, orphaned by the SIGKILL, still hold the sockets. The group id is our
        # child's pid, which cannot be reused while the child is unreaped or the group lives.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    @staticmethod
    async def _wait_group_gone(pgid: int) -> None:
        """Wait (bounded) until the killed children have exited and closed their sockets."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _GROUP_EXIT_S
        # Polled: /proc offers no event for the exit of processes that are not our children.
        while True:
            if not ports.live_group_members(pgid) or loop.time() >= deadline:
                return
            await asyncio.sleep(_POLL_S)

    def _cleanup(self) -> None:
        self._rpc.close()
        if not self._wrote_run_dir:
            return  # never ours (a refused start): leave whatever is there alone
        self._last_log = self.log_tail(_LOG_TAIL_LINES)
        shutil.rmtree(self.paths.run_dir, ignore_errors=True)
        self._wrote_run_dir = False
        for sock in (self.paths.ctl_socket, self.paths.rpc_socket):
            with contextlib.suppress(OSError):
                if sock.is_socket():  # kept outside the run directory
                    sock.unlink()

    async def wait(self) -> int:
        """Wait until Kamailio exits (for supervision); returns its exit status.

        Raises:
            FrontError: It was never started.
        """
        if self._proc is None:
            raise FrontError("the front was not started")
        return await self._proc.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    # State -------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """Kamailio's main pid.

        Raises:
            FrontError: Not started.
        """
        if self._proc is None:
            raise FrontError("the front was not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Started and not yet exited."""
        return self._proc is not None and self._proc.returncode is None

    def log_text(self) -> str:
        """Kamailio's log so far (what was kept of it once the run dir is gone)."""
        try:
            return self.paths.log.read_text(errors="replace")
        except OSError:
            return self._last_log

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of Kamailio's log, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    # Start-up checks ---------------------------------------------------------------------

    def _refuse_taken_ports(self) -> None:
        for t in self.spec.listen:
            if ports.address_in_use(t.transport, t.host, t.port):
                owners = ports.socket_owners(ports.socket_inodes(t.transport, t.host, t.port))
                held = f" by {', '.join(owners)}" if owners else ""
                raise FrontPortBusy(
                    f"{t.transport}:{t.address} is already in use{held}; a second Kamailio "
                    "would share a UDP port with it and lose calls to it. Stop it first.")

    async def _refuse_live_run_dir(self) -> None:
        if not self.paths.rpc_socket.is_socket():
            return
        probe = _RpcClient(self.paths.rpc_socket)
        try:
            await probe.call("core.version", (), _READY_RPC_TIMEOUT_S)
        except FrontRpcError:
            return  # a stale socket file: nobody behind it
        finally:
            probe.close()
        raise FrontPortBusy(f"a running Kamailio answers on {self.paths.rpc_socket}; "
                            "stop it or give this front another run directory")

    async def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout_s
        while True:
            if proc.returncode is not None:
                raise FrontStartError(f"kamailio exited with {proc.returncode} during "
                                      f"start-up:\n{self.log_tail()}")
            if self.paths.rpc_socket.is_socket():
                try:
                    await self._rpc.call("core.version", (), _READY_RPC_TIMEOUT_S)
                    break
                except FrontRpcError:
                    pass
            if loop.time() >= deadline:
                raise FrontStartError(f"kamailio not ready within {self.start_timeout_s} s:\n"
                                      f"{self.log_tail()}")
            await asyncio.sleep(_POLL_S)
        # RPC can answer before the TCP/TLS listeners are up (seen under load in CI): wait
        # for every listen address to be held by Kamailio, within the same deadline.
        while (missing := self._check_sockets_are_ours(proc.pid)) is not None:
            if loop.time() >= deadline:
                raise FrontStartError(f"kamailio answers RPC but does not hold "
                                      f"{missing}:\n{self.log_tail()}")
            await asyncio.sleep(_POLL_S)

    def _check_sockets_are_ours(self, pid: int) -> str | None:
        """The first listen address Kamailio does not hold yet, or ``None`` when it holds all.

        Raises:
            FrontPortBusy: Another process holds one of the addresses too.
        """
        mine = set(ports.process_socket_inodes(pid))
        for child in ports.descendant_pids(pid):
            mine |= ports.process_socket_inodes(child)
        for t in self.spec.listen:
            bound = ports.socket_inodes(t.transport, t.host, t.port)
            foreign = bound - mine
            if foreign:
                owners = ", ".join(ports.socket_owners(foreign)) or "another process"
                raise FrontPortBusy(f"{t.transport}:{t.address} is shared with {owners}; "
                                    "refusing to run next to it")
            if not bound & mine:
                return f"{t.transport}:{t.address}"
        return None

    # RPC ---------------------------------------------------------------------------------

    async def rpc(self, method: str, *params: str | int,
                  timeout_s: float | None = None) -> JsonValue:
        """Call one Kamailio RPC method over JSON-RPC and return its result.

        Some results contain secrets (``uac.reg_dump`` has the passwords): never log them.

        Raises:
            FrontRpcError: No answer in time, or an error reply.
        """
        return await self._rpc.call(method, params, timeout_s or self.rpc_timeout_s)

    async def workers(self) -> tuple[WorkerState, ...]:
        """Every worker's dispatcher state (flags, load, maxload), in the spec's order."""
        states = parse_dispatcher_list(await self.rpc("dispatcher.list"))
        order = {w.id: i for i, w in enumerate(self.spec.workers)}
        return tuple(sorted(states, key=lambda s: order.get(s.worker_id, len(order))))

    async def worker(self, worker_id: str) -> WorkerState:
        """One worker's dispatcher state.

        Raises:
            KeyError: No such worker in the dispatcher.
        """
        for state in await self.workers():
            if state.worker_id == worker_id:
                return state
        raise KeyError(worker_id)

    async def set_worker_state(self, worker_id: str, state: AdminState) -> None:
        """Set a worker's dispatcher state (``disabled`` drains it: no new calls).

        Calls already up are unaffected: in-dialog requests follow Record-Route, not the
        dispatcher. ``active`` turns probing back on.

        Raises:
            KeyError: ``worker_id`` is not in the spec.
            FrontRpcError: Kamailio refused the change.
        """
        uri = self.spec.worker(worker_id).uri
        await self.rpc("dispatcher.set_state", SET_STATE_CODES[state], WORKER_SET, uri)
        log.info("front: worker %s set %s", worker_id, state)

    async def drain(self, worker_id: str) -> None:
        """Stop dispatching new calls to ``worker_id`` (state ``disabled``)."""
        await self.set_worker_state(worker_id, "disabled")

    async def wait_for_workers(self, predicate: Callable[[tuple[WorkerState, ...]], bool],
                               timeout_s: float = 10.0) -> tuple[WorkerState, ...]:
        """Poll ``dispatcher.list`` until ``predicate`` holds; returns the states that did.

        Raises:
            FrontError: Not satisfied within ``timeout_s`` (the message has the last states).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            states = await self.workers()
            if predicate(states):
                return states
            if loop.time() >= deadline:
                shown = ", ".join(f"{s.worker_id}={s.flags}/{s.load}" for s in states)
                raise FrontError(f"workers not as expected within {timeout_s} s: {shown}")
            await asyncio.sleep(_POLL_S * 5)

    async def registrations(self) -> tuple[RegistrationState, ...]:
        """The upstream registrations and whether each is online (no secrets)."""
        if not self.spec.registrations:
            return ()
        return parse_reg_dump(await self.rpc("uac.reg_dump"))

"""Bounded child processes for tests: start, wait until ready, always stop and reap.

:class:`ManagedProcess` runs one program (SIPp, Kamailio, tcpdump, a pjsua2 helper) with its
output in a log file. Three things keep a test run from leaving processes behind: the program
runs under ``timeout`` so it dies by itself after ``max_lifetime_s`` even if the test process
is killed; the context manager stops it on exit (the stop signal, then ``SIGKILL`` after a
grace period) and always waits for it; and it runs in its own process group, whose leftover
members (children the program forked, e.g. Kamailio's workers) are killed by that group's id
once the program has gone. GNU ``timeout`` forwards ``SIGTERM``/``SIGINT``/``SIGHUP`` to the
program, so the program sees the stop signal itself; signals it does not forward (``SIGUSR1``)
must be sent to the pid the program reports about itself.

Readiness is a condition, never a sleep: a predicate on the log text and/or a port that is
bound (read from ``/proc/net/{udp,tcp}``, which also works for UDP, where connecting proves
nothing).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

Proto = Literal["udp", "tcp"]

#: Poll interval of every wait in this module.
POLL_S = 0.02
#: Default hard bound on any process's lifetime.
DEFAULT_LIFETIME_S = 600.0
_TCP_LISTEN = "0A"


class ProcessError(RuntimeError):
    """A managed process exited early or did not become ready in time."""


def _hex_addr(host: str, port: int) -> tuple[str, str]:
    packed = socket.inet_aton(host)
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}", f"00000000:{port:04X}"


def port_is_bound(port: int, *, proto: Proto = "udp", host: str = "127.0.0.1") -> bool:
    """Whether some process has ``host:port`` bound (UDP) or listening (TCP), IPv4.

    A socket bound to 0.0.0.0 counts, since it also receives on ``host``.
    """
    wanted = _hex_addr(host, port)
    try:
        lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[1] not in wanted:
            continue
        if proto == "udp" or fields[3] == _TCP_LISTEN:
            return True
    return False


def wait_for_port(port: int, *, proto: Proto = "udp", host: str = "127.0.0.1",
                  timeout_s: float = 10.0,
                  process: ManagedProcess | None = None) -> None:
    """Wait until ``host:port`` is bound, failing fast if ``process`` exits meanwhile.

    Raises:
        ProcessError: ``process`` exited, or the port was not bound within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while not port_is_bound(port, proto=proto, host=host):
        if process is not None and process.returncode is not None:
            raise ProcessError(f"{process.name} exited with {process.returncode} before "
                               f"binding {proto}:{host}:{port}\n{process.log_tail()}")
        if time.monotonic() >= deadline:
            tail = f"\n{process.log_tail()}" if process is not None else ""
            raise ProcessError(f"{proto}:{host}:{port} not bound within {timeout_s} s{tail}")
        time.sleep(POLL_S)


class ManagedProcess:
    """One child process with its output in a log file, always stopped and reaped.

    Use as a context manager (``with ManagedProcess(...) as proc:``) or call :meth:`start`
    and :meth:`stop` yourself. :meth:`stop` is idempotent.

    Args:
        argv: Program and arguments.
        log_path: File receiving stdout and stderr (appended to).
        name: Name used in error messages (default: the program's base name).
        env: Variables set on top of the current environment.
        cwd: Working directory.
        max_lifetime_s: Hard bound: the program gets ``SIGTERM`` after this long, then
            ``SIGKILL`` 3 s later, even if this process has died. ``None`` for no bound
            (avoid).
        stop_signal: Signal :meth:`stop` sends first (``SIGINT`` makes tcpdump flush).
        grace_s: How long :meth:`stop` waits after ``stop_signal`` before ``SIGKILL``.
    """

    def __init__(self, argv: Sequence[str], *, log_path: Path, name: str | None = None,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None,
                 max_lifetime_s: float | None = DEFAULT_LIFETIME_S,
                 stop_signal: int = signal.SIGTERM, grace_s: float = 5.0) -> None:
        if not argv:
            raise ValueError("argv must not be empty")
        self.argv = tuple(argv)
        self.log_path = log_path
        self.name = name or Path(argv[0]).name
        self.env = dict(env or {})
        self.cwd = cwd
        self.max_lifetime_s = max_lifetime_s
        self.stop_signal = stop_signal
        self.grace_s = grace_s
        self._popen: subprocess.Popen[bytes] | None = None
        self._stopped = False

    # Lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the program.

        Raises:
            ProcessError: Already started.
            OSError: The program could not be executed.
        """
        if self._popen is not None:
            raise ProcessError(f"{self.name} already started")
        argv = list(self.argv)
        if self.max_lifetime_s is not None:
            argv = ["timeout", "-k", "3", f"{self.max_lifetime_s:.3f}", *argv]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # The child gets its own copy of the descriptor; ours is closed right away.
        with self.log_path.open("ab") as log:
            self._popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **self.env}, cwd=self.cwd, start_new_session=True)
        return self

    def stop(self) -> int | None:
        """Stop the program and wait for it: ``stop_signal``, then ``SIGKILL`` after the grace.

        Also kills what is left of its process group. Safe to call more than once.

        Returns:
            The exit status (negative: killed by that signal), or ``None`` if never started.
        """
        popen = self._popen
        if popen is None:
            return None
        if not self._exited() and not self._stopped:
            self._stopped = True
            self._signal_pid(self.stop_signal)
            deadline = time.monotonic() + self.grace_s
            while not self._exited() and time.monotonic() < deadline:
                time.sleep(POLL_S)
        return self._reap(kill=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # State -------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether :meth:`start` has been called."""
        return self._popen is not None

    @property
    def pid(self) -> int:
        """Pid of the started child (the ``timeout`` wrapper when there is a lifetime)."""
        if self._popen is None:
            raise ProcessError(f"{self.name} not started")
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once it has exited (reaping it), else ``None``."""
        if self._popen is None or not self._exited():
            return None
        return self._reap(kill=False)

    @property
    def running(self) -> bool:
        """Started and not yet exited."""
        return self._popen is not None and not self._exited()

    def log_text(self) -> str:
        """Everything the program has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    # Waiting -----------------------------------------------------------------------------

    def wait_ready(self, predicate: Callable[[str], bool] | None = None, *,
                   port: int | None = None, proto: Proto = "udp", host: str = "127.0.0.1",
                   timeout_s: float = 10.0) -> None:
        """Wait until ``predicate(log text)`` holds and ``port`` (if given) is bound.

        Raises:
            ProcessError: The program exited first, or was not ready within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            log_ok = predicate is None or predicate(self.log_text())
            port_ok = port is None or port_is_bound(port, proto=proto, host=host)
            if log_ok and port_ok:
                return
            if self.returncode is not None:
                raise ProcessError(f"{self.name} exited with {self.returncode} before it was "
                                   f"ready\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise ProcessError(f"{self.name} not ready within {timeout_s} s\n"
                                   f"{self.log_tail()}")
            time.sleep(POLL_S)

    def wait_for_log(self, predicate: Callable[[str], bool], timeout_s: float = 10.0) -> str:
        """Wait until ``predicate(log text)`` holds, even after the program exited.

        Returns:
            The log text that satisfied the predicate.

        Raises:
            ProcessError: Not satisfied within ``timeout_s`` (or the program exited and the
                final log does not satisfy it).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            exited = self.returncode is not None
            text = self.log_text()
            if predicate(text):
                return text
            if exited:
                raise ProcessError(f"{self.name} exited with {self.returncode}; the log never "
                                   f"matched\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise ProcessError(f"{self.name}: log did not match within {timeout_s} s\n"
                                   f"{self.log_tail()}")
            time.sleep(POLL_S)

    def wait(self, timeout_s: float) -> int:
        """Wait for the program to exit by itself.

        Returns:
            The exit status.

        Raises:
            ProcessError: Not started, or still running after ``timeout_s`` (it keeps running;
                :meth:`stop` ends it).
        """
        if self._popen is None:
            raise ProcessError(f"{self.name} not started")
        deadline = time.monotonic() + timeout_s
        while not self._exited():
            if time.monotonic() >= deadline:
                raise ProcessError(f"{self.name} still running after {timeout_s} s\n"
                                   f"{self.log_tail()}")
            time.sleep(POLL_S)
        return self._reap(kill=False)

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child's pid (forwarded by ``timeout`` for TERM/INT/HUP)."""
        self._signal_pid(sig)

    # Internals ---------------------------------------------------------------------------

    def _signal_pid(self, sig: int) -> None:
        if self._popen is not None and not self._exited():
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(sig)

    def _exited(self) -> bool:
        """Whether the child has exited, without reaping it (its pid stays reserved)."""
        popen = self._popen
        if popen is None:
            return False
        if popen.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # already reaped elsewhere
            popen.poll()
            return True
        return info is not None

    def _reap(self, *, kill: bool) -> int:
        """Kill the process group, then reap the child; returns its exit status.

        Until the child is reaped its pid, which is also the group id (start_new_session),
        cannot be reused, so ``killpg`` here only reaches processes we started: the child if
        ``kill`` and it is still running, and whatever it forked and left behind.
        """
        popen = self._popen
        assert popen is not None
        if popen.returncode is not None:
            return popen.returncode
        if kill or self._exited():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
        return popen.wait(10.0)

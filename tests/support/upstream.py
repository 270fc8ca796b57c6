"""An upstream dispatcher for tests: ``gateway front upstream`` rendered, then Kamailio run.

:func:`render_upstream_cli` runs the real command line (``python -m gateway front upstream
... -o``) into a short run directory, so a test exercises what an operator would run.
:class:`UpstreamKamailio` then runs ``kamailio -f CFG -DD -E -Y RUNDIR`` as a bounded
:class:`~tests.support.procs.ManagedProcess`: it refuses a listen port something already
holds (Kamailio binds UDP with ``SO_REUSEADDR``, so two instances would silently share it),
checks the config with ``kamailio -c``, is ready when its JSON-RPC socket exists and the
port is bound, reads the instances' dispatcher states over JSON-RPC (parsed by
:mod:`gateway.front.state`) and is stopped by pid.
"""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from gateway.front.state import (
    JsonValue,
    WorkerState,
    decode_response,
    encode_request,
    parse_dispatcher_list,
    response_id,
)
from tests.support.procs import POLL_S, ManagedProcess, ProcessError, port_is_bound

REPO = Path(__file__).resolve().parents[2]


def render_upstream_cli(run_dir: Path, listen: tuple[str, int],
                        instances: Sequence[tuple[str, int]], *,
                        extra: Sequence[str] = ()) -> Path:
    """Run ``gateway front upstream`` writing into ``run_dir``; returns the config's path.

    Raises:
        ProcessError: The command failed.
    """
    config = run_dir / "kamailio.cfg"
    argv = [sys.executable, "-m", "gateway", "front", "upstream",
            "--listen", f"{listen[0]}:{listen[1]}", "--run-dir", str(run_dir),
            "-o", str(config), *extra]
    for host, port in instances:
        argv += ["--instance", f"{host}:{port}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO,
                          check=False)
    if proc.returncode != 0:
        raise ProcessError(f"gateway front upstream failed ({proc.returncode}):\n{proc.stderr}")
    return config


class UpstreamKamailio:
    """Kamailio running an upstream config, for a ``with`` block.

    Args:
        config: The rendered ``kamailio.cfg``.
        run_dir: Its ``-Y`` directory (holding the lists the config reads).
        port: The UDP port it listens on (127.0.0.1).
        log_path: Kamailio's stderr.
        max_lifetime_s: Hard bound on its life.
    """

    def __init__(self, config: Path, run_dir: Path, port: int, *, log_path: Path,
                 max_lifetime_s: float = 300.0) -> None:
        self.config = config
        self.run_dir = run_dir
        self.port = port
        self.rpc_socket = run_dir / "kamailio_rpc.sock"
        self._ids = itertools.count(1)
        self._proc = ManagedProcess(
            ["kamailio", "-f", str(config), "-DD", "-E", "-Y", str(run_dir), "-n", "2",
             "-m", "64", "-M", "8"],
            log_path=log_path, name="upstream-kamailio", max_lifetime_s=max_lifetime_s,
            grace_s=5.0)

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT`` for SIPp."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> Self:
        """Check the port and the config, start Kamailio and wait until it is ready.

        Raises:
            ProcessError: The port is taken, the config is refused, or it did not start.
        """
        if port_is_bound(self.port):
            raise ProcessError(f"udp:127.0.0.1:{self.port} is already bound; two Kamailios "
                               "must never share a UDP port")
        check = subprocess.run(["kamailio", "-c", "-f", str(self.config)],
                               capture_output=True, text=True, timeout=30, check=False)
        if check.returncode != 0:
            raise ProcessError(f"kamailio -c rejected {self.config}:\n{check.stderr[-3000:]}")
        self._proc.start()
        try:
            self._proc.wait_ready(lambda _: self.rpc_socket.exists(), port=self.port,
                                  timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Kamailio by pid (``SIGTERM``, ``SIGKILL`` after the grace) and reap it."""
        self._proc.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def log_text(self) -> str:
        """Kamailio's log so far."""
        return self._proc.log_text()

    def rpc(self, method: str, *params: str | int, timeout_s: float = 2.0) -> JsonValue:
        """One JSON-RPC call over the datagram socket (reply socket autobound, abstract).

        Raises:
            ProcessError: No answer in time.
        """
        request_id = next(self._ids)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind("")
            sock.settimeout(timeout_s)
            sock.sendto(encode_request(method, params, request_id), str(self.rpc_socket))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    break
                if response_id(data) == request_id:
                    return decode_response(data, method)
        raise ProcessError(f"{method}: no answer from the upstream within {timeout_s} s")

    def instances(self) -> tuple[WorkerState, ...]:
        """Each instance's dispatcher state (``worker_id`` is ``i1``, ``i2``, ...)."""
        return parse_dispatcher_list(self.rpc("dispatcher.list"))

    def wait_for_instances(self, predicate: Callable[[tuple[WorkerState, ...]], bool],
                           timeout_s: float = 15.0) -> tuple[WorkerState, ...]:
        """Poll :meth:`instances` until ``predicate`` holds; returns the states.

        Raises:
            ProcessError: Not within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.instances()
            if predicate(states):
                return states
            if time.monotonic() >= deadline:
                raise ProcessError(f"instance states never matched: {states}")
            time.sleep(POLL_S * 5)

"""Run the real gateway (``gateway run``) as a subprocess against an in-process simulator.

pjsua2 allows one endpoint per process, so the gateway never lives inside pytest; the
simulator does, so tests can read every Realtime event the gateway sent and when. Everything
binds 127.0.0.1 with free ports, is bounded in time, and is stopped on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.sim.server import SimulatorServer
from tests.conftest import scaled
from tests.support.ports import free_udp_port, free_udp_port_block
from tests.support.procs import ManagedProcess

REPO = Path(__file__).resolve().parents[2]
GATEWAY = [sys.executable, "-m", "gateway"]

#: One agent, no greeting, catch-all route: the caller speaks first.
#: The control API's bearer token every test gateway accepts ($GATEWAY_API_TOKENS).
API_TOKEN = "test-api-token-0123456789abcdef"

QUIET_AGENT = """
agents:
  quiet:
    instructions: You are a test agent. Answer briefly.
routes:
  - name: all
    agent: quiet
"""


@dataclass
class Gateway:
    """A running gateway process."""

    proc: ManagedProcess
    port: int
    rtp_port_start: int
    config_path: Path
    dialplan_path: Path

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT`` for SIPp."""
        return f"127.0.0.1:{self.port}"

    def uri(self, user: str = "100") -> str:
        """A SIP URI of the gateway."""
        return f"sip:{user}@127.0.0.1:{self.port}"

    @property
    def rtp_filter(self) -> str:
        """tcpdump filter for the RTP the gateway sends."""
        return f"udp and src portrange {self.rtp_port_start}-{self.rtp_port_start + 40}"

    @property
    def control_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the control process (SIP workers mode), from its log."""
        match = re.search(r"control HTTP on ([0-9.]+):(\d+)", self.proc.log_text())
        assert match, "the gateway did not log its control HTTP address"
        return f"http://{match.group(1)}:{match.group(2)}"

    @property
    def pid(self) -> int:
        """The gateway's own process id (not the ``timeout`` wrapper's), from its log."""
        match = re.search(r"gateway ready \(pid (\d+)\)", self.proc.log_text())
        assert match, "the gateway did not log its pid"
        return int(match.group(1))

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the gateway process itself."""
        os.kill(self.pid, sig)

    def log(self) -> str:
        """Everything the gateway logged so far."""
        return self.proc.log_text()

    async def wait_log(self, text: str, timeout_s: float = 10.0) -> None:
        """Wait until ``text`` appears in the gateway's log."""
        await asyncio.to_thread(self.proc.wait_for_log, lambda log: text in log, timeout_s)


@contextlib.asynccontextmanager
async def run_gateway(tmp_path: Path, sim: SimulatorServer, dialplan: str = QUIET_AGENT, *,
                      sip: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                      calls: Mapping[str, Any] | None = None, call_content: bool = False,
                      realtime: Mapping[str, Any] | None = None,
                      run_seconds: float = 120.0,
                      drain_timeout_s: float = 3.0, control_port: int = 0,
                      extra: Mapping[str, Any] | None = None) -> AsyncIterator[Gateway]:
    """Start ``gateway run`` with ``dialplan`` and the realtime URL of ``sim``."""
    port = free_udp_port()
    rtp = free_udp_port_block(40)
    dialplan_path = tmp_path / "dialplan.yaml"
    dialplan_path.write_text(dialplan)
    sip_cfg: dict[str, Any] = {"transports": [{"type": "udp", "host": "127.0.0.1",
                                               "port": port}],
                               "rtp_port_start": rtp, "rtp_port_range": 40}
    sip_cfg.update(sip or {})
    # Port 0: the control process's HTTP server (with SIP workers) never collides.
    config = {"realtime": {"url": sim.ws_url, **(realtime or {})}, "sip": sip_cfg,
              "control": {"port": control_port, "drain_timeout_s": drain_timeout_s},
              "dialplan": str(dialplan_path),
              "logging": {"level": "DEBUG", "call_content": call_content},
              "calls": dict(calls or {}), **(extra or {})}
    config_path = tmp_path / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    proc_env = {**os.environ, "OPENAI_API_KEY": "sk-local-test-key",
                "GATEWAY_API_TOKENS": API_TOKEN, **(env or {})}
    proc = ManagedProcess([*GATEWAY, "run", "-c", str(config_path),
                           "--run-seconds", str(run_seconds)],
                          log_path=tmp_path / "gateway.log", name="gateway", env=proc_env,
                          cwd=REPO, max_lifetime_s=run_seconds + 30)
    proc.start()
    try:
        # A control process, its tool pool and a worker: 30 s covers a loaded 2-core box.
        await asyncio.to_thread(proc.wait_for_log, lambda log: "gateway ready" in log,
                                scaled(30.0))
        yield Gateway(proc, port, int(sip_cfg["rtp_port_start"]), config_path, dialplan_path)
    finally:
        await asyncio.to_thread(proc.stop)


async def place_call(gw: Gateway, tmp_path: Path, *, user: str = "100",
                     play: Path | None = None, record: Path | None = None,
                     duration_s: float = 5.0, codec: str | None = None,
                     dtmf: str = "", dtmf_after_s: float = 1.0,
                     timeout_s: float = 60.0) -> dict[str, Any]:
    """Run ``gateway call`` (the pjsua2 test caller) and return its JSON report."""
    argv = [*GATEWAY, "call", gw.uri(user), "--duration", str(duration_s)]
    if play is not None:
        argv += ["--play", str(play)]
    if record is not None:
        argv += ["--record", str(record)]
    if codec is not None:
        argv += ["--codec", codec]
    if dtmf:
        argv += ["--dtmf", dtmf, "--dtmf-after", str(dtmf_after_s)]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        raise
    (tmp_path / "caller.log").write_bytes(err)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert lines, (f"gateway call printed no report (exit status {proc.returncode}); "
                   f"stderr:\n{err.decode()[-2000:]}")
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def control_get(gw: Gateway, path: str) -> dict[str, Any]:
    """GET a JSON document from the gateway's control API, with the test's token (blocking)."""
    request = urllib.request.Request(gw.control_url + path,
                                     headers={"Authorization": f"Bearer {API_TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


def control_post(gw: Gateway, path: str, body: Mapping[str, Any] | None = None,
                 *, timeout_s: float = 40.0) -> tuple[int, dict[str, Any]]:
    """POST JSON to the control API with the test's token: ``(status, body)`` (blocking)."""
    request = urllib.request.Request(
        gw.control_url + path, data=json.dumps(dict(body or {})).encode(), method="POST",
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_until(predicate: Any, timeout_s: float, what: str) -> Any:
    """Poll ``predicate`` (blocking, every 0.1 s) until it is truthy; return its value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)

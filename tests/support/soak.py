"""Memory soak driver: many short SIPp calls through one real gateway, its RSS read between batches.

Shared by the soak test (``tests/sip/test_soak.py``, a few hundred calls, asserts a plateau) and
the soak benchmark (``bench/soak.py``, up to 10,000 calls, reports bytes per call). One
``gateway run`` process is started on 127.0.0.1 with a catch-all agent that greets briefly (so
agent audio flows to the caller and caller audio to the Realtime side), either with the embedded
simulator (``realtime.url: embedded``, what ``gateway run`` does out of the box, so the
simulator's memory counts) or against the URL of a simulator running elsewhere. Calls are
placed by SIPp (``sipp/uac_pcmu.xml``, silence, a short hold) in batches; after each batch has
ended, :func:`read_process` takes ``VmRSS``, the thread count and the open descriptors from
``/proc``. :func:`slope_bytes_per_call` fits RSS against completed calls (least squares), which
averages out the saw-tooth of Python's cyclic garbage collector better than two end points.

Everything binds 127.0.0.1 with free ports, every process runs under a ``timeout`` lifetime
(:class:`~tests.support.procs.ManagedProcess`) and is stopped by its own pid on exit.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import yaml

from tests.support.ports import free_udp_port, free_udp_port_block
from tests.support.procs import ManagedProcess
from tests.support.sipp import SippResult, start_sipp

REPO = Path(__file__).resolve().parents[2]
#: Calls one gateway process serves at once (the wheel's 4 slots minus the 503 one).
MAX_CONCURRENT = 3
#: A catch-all agent with a one-line greeting: every call carries agent audio.
DIALPLAN = {
    "agents": {"soak": {"instructions": "You are the soak-test agent. Answer briefly.",
                        "greeting": "Hello."}},
    "routes": [{"name": "all", "agent": "soak"}],
}
_READY = re.compile(r"gateway ready \(pid (\d+)\)")
_RECORD = b"call record: "


@dataclass(frozen=True)
class ProcessSample:
    """One reading of a process from ``/proc``."""

    rss_kb: int
    threads: int
    fds: int


@dataclass(frozen=True)
class Sample:
    """The gateway after ``calls`` completed calls."""

    calls: int
    elapsed_s: float
    gateway: ProcessSample


def read_process(pid: int) -> ProcessSample:
    """``VmRSS`` (KiB), thread count and open descriptors of ``pid``.

    Raises:
        FileNotFoundError: The process is gone.
    """
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return ProcessSample(rss_kb=int(fields["VmRSS"].split()[0]),
                         threads=int(fields["Threads"].strip()),
                         fds=len(os.listdir(f"/proc/{pid}/fd")))


def slope_bytes_per_call(samples: Sequence[Sample]) -> float:
    """Least-squares slope of RSS (bytes) against completed calls; 0 for fewer than 2 points."""
    if len(samples) < 2:
        return 0.0
    xs = [float(s.calls) for s in samples]
    ys = [s.gateway.rss_kb * 1024.0 for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def write_silence(path: Path, seconds: float = 10.0) -> Path:
    """A raw µ-law file of silence for SIPp's ``rtp_stream`` (looped)."""
    path.write_bytes(b"\xff" * int(8000 * seconds))
    return path


class SoakGateway:
    """One ``gateway run`` process for a soak; a context manager that always stops it.

    Args:
        run_dir: Where the configuration, dialplan and log go.
        realtime_url: ``"embedded"`` for the in-process simulator, else a ``ws://`` URL.
        lifetime_s: Hard bound on the process's life.
        log_level: The gateway's log level (INFO, as deployed, logs a record per call).
    """

    def __init__(self, run_dir: Path, *, realtime_url: str = "embedded",
                 lifetime_s: float = 600.0, log_level: str = "INFO") -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir = run_dir
        self.port = free_udp_port()
        rtp = free_udp_port_block(40)
        dialplan = run_dir / "dialplan.yaml"
        dialplan.write_text(yaml.safe_dump(DIALPLAN, sort_keys=False))
        config = {
            "realtime": {"url": realtime_url},
            "simulator": {"host": "127.0.0.1", "port": 0, "speed": 4.0, "tts": "tone"},
            "sip": {"transports": [{"type": "udp", "host": "127.0.0.1", "port": self.port}],
                    "max_calls": MAX_CONCURRENT, "rtp_port_start": rtp, "rtp_port_range": 40},
            "dialplan": str(dialplan),
            "logging": {"level": log_level, "pjsip_level": 1},
        }
        self.config_path = run_dir / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = run_dir / "gateway.log"
        self.proc = ManagedProcess(
            [sys.executable, "-m", "gateway", "run", "-c", str(self.config_path),
             "--run-seconds", f"{lifetime_s:.0f}"],
            log_path=self.log_path, name="gateway", cwd=REPO, max_lifetime_s=lifetime_s + 20,
            env={"OPENAI_API_KEY": "sk-soak-local"})
        self.pid = 0
        self._log_offset = 0
        self._records = 0

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT`` for SIPp."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.proc.start()
        try:
            self.proc.wait_ready(lambda log: "gateway ready" in log, timeout_s=30.0)
            match = _READY.search(self.proc.log_text())
            assert match, "the gateway did not log its pid"
            self.pid = int(match.group(1))  # the gateway itself, not the timeout wrapper
        except BaseException:
            self.proc.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.proc.stop()

    def records(self) -> int:
        """Call records logged so far (read incrementally: the log grows large)."""
        with self.log_path.open("rb") as f:
            f.seek(self._log_offset)
            chunk = f.read()
        cut = chunk.rfind(b"\n") + 1  # count whole lines only
        self._records += chunk[:cut].count(_RECORD)
        self._log_offset += cut
        return self._records

    def wait_records(self, count: int, timeout_s: float = 10.0) -> int:
        """Wait until ``count`` call records are logged (each session's end); returns the count."""
        deadline = time.monotonic() + timeout_s
        while (seen := self.records()) < count and time.monotonic() < deadline:
            if not self.proc.running:
                raise RuntimeError(f"the gateway exited\n{self.proc.log_tail()}")
            time.sleep(0.05)
        return seen

    def sample(self, calls: int, started: float) -> Sample:
        """Read the gateway's RSS, threads and descriptors now."""
        return Sample(calls, round(time.monotonic() - started, 2), read_process(self.pid))


def run_batch(gw: SoakGateway, *, calls: int, audio: Path, log_dir: Path,
              concurrent: int = MAX_CONCURRENT, rate: float = 20.0,
              hold_ms: int = 300) -> SippResult:
    """Place ``calls`` calls (``concurrent`` at a time) with one SIPp run and wait for it."""
    timeout_s = 30.0 + calls * (hold_ms / 1000 + 1.0) / concurrent
    sipp = start_sipp("uac_pcmu", gw.target, log_dir=log_dir, service="100", calls=calls,
                      concurrent=concurrent, rate=rate, hold_ms=hold_ms,
                      keys={"audio_file": str(audio)}, timeout_s=timeout_s,
                      trace_messages=False)
    with sipp:
        return sipp.result()

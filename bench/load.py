"""Load benchmark: the real gateway under N concurrent SIPp calls, native and transcode media.

Not a test: it measures and reports. It benchmarks the pjsua2 binding of the interpreter that
runs it: ``.venv/bin/python`` has the source build of pjproject (hundreds of call slots),
``.venv-wheel/bin/python`` the PyPI wheel ``pjsua2-python`` (4 slots, 3 calls per process); the
binding is detected with ``importlib.metadata`` and confirmed from the gateway's start-up log.
For each media mode and call count N it starts one Realtime simulator process (``gateway
sim`` with a per-turn timing log, :mod:`bench.simrun`; its own process so its CPU is not
charged to the gateway), ``ceil(N / K)`` gateway processes for ``--calls-per-gateway K``
(default: 3 on the wheel, all N calls in one process on the source build), each with its own
SIP port and an RTP port range sized for its calls, and one SIPp per gateway placing its
share of concurrent PCMU calls. Every caller streams a looped
espeak-ng question (silence, about 2.5 s of speech, silence), so the agent greets, is barged
in on, and answers each question. Once all calls are up and a settling time has passed, a
steady window is measured:

* CPU from ``/proc/PID/stat`` (utime + stime, all threads) of the gateways, the simulator
  (with its espeak-ng children) and SIPp, and the host's busy time from ``/proc/stat``;
* ``VmRSS`` and PSS (``/proc/PID/smaps_rollup``) of every gateway process, and per call
  (all gateway processes together / N);
* the RTP the gateways send to the callers, captured with tcpdump on ``lo`` (needs root):
  rate, inter-packet gaps, RFC 3550 jitter, late (> 40 ms) and lost packets, agent talk time;
* INVITE -> 200 latency from SIPp's message log;
* turn latency (:mod:`bench.turns`): from the end of each question the caller speaks to the
  first agent packet back, and the part of it the gateway adds (inbound + outbound, the
  simulator's own time, which its turn log reports, taken out).

Front mode (``--workers W``): each level runs ONE ``gateway run`` that is a control process
with W SIP workers (``gateway worker``, one pjsua2 endpoint each) behind a Kamailio front
(``sip.workers: W``, ``sip.front: kamailio``, each worker's ``sip.max_calls`` ceil(N / W)
plus a margin), and one SIPp calls the front's address. CPU and memory then cover every
gateway process together, found by walking ``/proc`` from the control process: the control
process, each worker (and what it forked), and the Kamailio front with all its children, and
are also reported per group (control / workers / kamailio); the thread profile is worker
``w1``'s. Its results go to a doc block of their own (``[source, front]``).

The whole set is run ``--repeat`` times (2 by default), each pass starting with an idle
gateway process (0 calls), so run-to-run spread is visible. The results are printed as Markdown
tables, saved as JSON in the run directory, and written into ``docs/benchmarks.md`` between
the generated-block markers of the binding (the other binding's block and the hand-written
notes around them are kept). Every process runs
under a ``timeout`` wrapper and is stopped on exit, including on Ctrl-C, SIGTERM and errors.

Usage (from the repository root, as root)::

    .venv/bin/python -m bench.load --calls 30 60 90 --repeat 1        # source build
    .venv-wheel/bin/python -m bench.load --calls 30 60 --repeat 1     # the wheel, 3 per process
    .venv/bin/python -m bench.load --quick    # smoke run: N=3, short windows, no doc update
    .venv/bin/python -m bench.load --workers 2 --calls 30 60 90 --repeat 1   # through the front
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

import yaml

from bench.metrics import (
    CpuWindow,
    answer_latencies_ms,
    call_records,
    child_pid,
    children,
    cmdline,
    comm,
    cpu_snapshot,
    descendants,
    frame_counters,
    live_since,
    pss_kb,
    rss_kb,
    summarize_rtp,
)
from bench.report import (
    GROUPS,
    GroupUsage,
    IdleResult,
    LevelFailure,
    LevelResult,
    Plan,
    block_label,
    confirm_binding,
    detect_binding,
    machine_info,
    render_block,
    render_tables,
    update_doc,
)
from bench.turns import level_turns
from tests.support.audio import silence_pcm16, speech_pcm16, write_g711
from tests.support.capture import Capture
from tests.support.ports import free_tcp_port, free_udp_port_block
from tests.support.procs import ManagedProcess, wait_for_port
from tests.support.sipp import SippProcess, start_sipp

REPO = Path(__file__).resolve().parents[1]
GATEWAY = [sys.executable, "-m", "gateway"]
DEFAULT_DOC = REPO / "docs" / "benchmarks.md"
#: Calls one gateway process on the wheel serves (``sip.max_calls``: its 4 slots minus the one
#: kept to refuse the next call with 503).
WHEEL_CALLS_PER_GATEWAY = 3
#: Fewest RTP ports reserved per gateway process.
MIN_RTP_PORTS = 20
#: Longest wait for a process to come up or for all calls to be established.
START_TIMEOUT_S = 30.0
#: Calls end this long after the window closes (covers ramp-up and capture start/stop).
HOLD_MARGIN_S = 6.0
#: Calls per second arriving at the gateways, all SIPps together, while ramping up: each SIPp
#: places its calls at this rate and the next SIPp starts when the previous one is done
#: (``--rate``).
CALL_RATE = 20.0
#: Front mode: each worker's ``sip.max_calls`` is ceil(calls / workers) plus this, so an
#: uneven spread by the dispatcher never refuses a call.
WORKER_MARGIN = 2
#: Front mode: how long the control process may take to drain and stop (its workers and the
#: front included) before it is killed; and its ``control.drain_timeout_s``.
FRONT_STOP_GRACE_S = 20.0
FRONT_DRAIN_TIMEOUT_S = 2.0
#: How long the processes a front-mode gateway started may take to go once it has exited.
LEFTOVER_WAIT_S = 5.0
MODES = ("native", "transcode")
GREETING = ("Hello and welcome to the gateway benchmark line. This greeting is deliberately "
            "long, so that the agent is already talking when the measurement starts. Please "
            "ask your question after the tone, and I will answer it as well as I can.")
CALLER_LINE = "Hello, what are your opening hours today?"
#: Caller audio around the question: silence before (the greeting plays) and after (the agent
#: answers); the file is looped by SIPp.
CALLER_LEAD_MS = 3000
CALLER_TAIL_MS = 1500
#: One 20 ms packet of 8 kHz audio, as PCM16 bytes.
PACKET_BYTES_PCM16 = 320
#: The simulator's turn log in each level's directory (:mod:`gateway.sim.turns`).
TURN_LOG = "turns.jsonl"
_PROBLEM = re.compile(r" (WARNING|ERROR|CRITICAL) |Traceback")


class BenchError(RuntimeError):
    """A level could not be measured (a process failed, calls did not come up...)."""


# Processes -----------------------------------------------------------------------------------


class PortPlan:
    """Hands out UDP port blocks that are free now and do not overlap each other.

    Gateways bind their RTP ports only when a call arrives, so a block given to one gateway
    is still "free" for the kernel when the next process asks: remember what was handed out.
    """

    def __init__(self) -> None:
        self._taken: list[tuple[int, int]] = []

    def block(self, count: int) -> int:
        """The first port of ``count`` consecutive free ports."""
        for _ in range(200):
            base = free_udp_port_block(count)
            if all(base + count <= lo or hi <= base for lo, hi in self._taken):
                self._taken.append((base, base + count))
                return base
        raise BenchError(f"no free block of {count} UDP ports")


@dataclass(frozen=True)
class Running:
    """A started program and its own pid (the ``timeout`` wrapper's child)."""

    proc: ManagedProcess
    pid: int


@dataclass(frozen=True)
class GatewayProc:
    """A running gateway process."""

    run: Running
    port: int
    rtp_start: int
    rtp_ports: int
    calls: int

    @property
    def target(self) -> str:
        """``127.0.0.1:PORT`` for SIPp."""
        return f"127.0.0.1:{self.port}"

    @property
    def rtp_range(self) -> tuple[int, int]:
        """First and last port of this gateway's RTP range."""
        return self.rtp_start, self.rtp_start + self.rtp_ports - 1

    @property
    def rtp_filter(self) -> str:
        """tcpdump filter for the RTP this gateway sends and receives on its RTP range (the
        callers' packets to it time the end of their speech)."""
        first, last = self.rtp_range
        return f"portrange {first}-{last}"


def rtp_ports_for(calls: int) -> int:
    """RTP ports to reserve for a gateway process taking ``calls`` calls.

    pjsua binds an RTP/RTCP pair per call, trying pairs upwards from ``rtp_port_start``; a
    pair of another program in the range is skipped, so leave twice the room, plus a margin.
    """
    return max(MIN_RTP_PORTS, 4 * calls + 8)


def start_sim(stack: contextlib.ExitStack, run_dir: Path, speed: float, lifetime_s: float,
              extra_args: Sequence[str] = (),
              env: Mapping[str, str] | None = None) -> tuple[Running, str]:
    """Start the simulator (``gateway sim`` with a turn log, :mod:`bench.simrun`) on a free
    port, its turn log in ``run_dir/TURN_LOG``; returns it and its WebSocket URL.

    ``extra_args`` go to :mod:`bench.simrun` (its SIP endpoint, webhooks), ``env`` to its
    environment (the webhook secret).
    """
    port = free_tcp_port()
    proc = ManagedProcess([sys.executable, "-m", "bench.simrun", "--port", str(port),
                           "--speed", f"{speed:g}", "--turn-log", str(run_dir / TURN_LOG),
                           "--run-seconds", f"{lifetime_s:.0f}", *extra_args],
                          log_path=run_dir / "sim.log", name="sim", env=env, cwd=REPO,
                          max_lifetime_s=lifetime_s + 15)
    stack.enter_context(proc)
    proc.wait_ready(lambda log: "listening on" in log, timeout_s=START_TIMEOUT_S)
    wait_for_port(port, proto="tcp", timeout_s=START_TIMEOUT_S, process=proc)
    return Running(proc, child_pid(proc.pid)), f"ws://127.0.0.1:{port}/v1/realtime"


def write_dialplan(path: Path, mode: str) -> Path:
    """A catch-all agent in ``mode`` that greets at length."""
    plan = {"agents": {"bench": {"instructions": "You are the benchmark agent. Answer briefly.",
                                 "media": mode, "greeting": GREETING}},
            "routes": [{"name": "all", "agent": "bench"}]}
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


#: The gateways' ``calls:`` settings (``--append-chunk-ms``); empty: the defaults.
CALLS_CONFIG: dict[str, object] = {}


def start_gateways(stack: contextlib.ExitStack, run_dir: Path, shares: Sequence[int],
                   sim_url: str, dialplan: Path, ports: PortPlan, lifetime_s: float,
                   max_calls: int | None) -> list[GatewayProc]:
    """Start one gateway process per share of calls, all at once; return when all are ready.

    ``max_calls`` is each process's ``sip.max_calls`` (``--calls-per-gateway``); ``None``
    leaves it automatic: all the binding's call slots but one (hundreds on the source build).
    """
    started: list[tuple[ManagedProcess, int, int, int, int]] = []
    for i, share in enumerate(shares):
        port = ports.block(2)
        rtp_count = rtp_ports_for(share)
        rtp = ports.block(rtp_count)
        sip: dict[str, object] = {
            "transports": [{"type": "udp", "host": "127.0.0.1", "port": port}],
            "rtp_port_start": rtp, "rtp_port_range": rtp_count}
        if max_calls is not None:
            sip["max_calls"] = max_calls
        # control.port 0: each process's HTTP server on a free port (several run at once).
        config = {"realtime": {"url": sim_url}, "sip": sip, **CALLS_CONFIG,
                  "control": {"port": 0},
                  "dialplan": str(dialplan), "logging": {"level": "INFO", "pjsip_level": 1}}
        config_path = run_dir / f"gateway{i}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        env = {"OPENAI_API_KEY": "sk-bench-local", "GATEWAY_REALTIME_URL": sim_url,
               "GATEWAY_LOG_LEVEL": "INFO"}
        proc = ManagedProcess([*GATEWAY, "run", "-c", str(config_path),
                               "--run-seconds", f"{lifetime_s:.0f}"],
                              log_path=run_dir / f"gateway{i}.log", name=f"gateway{i}",
                              env=env, cwd=REPO, max_lifetime_s=lifetime_s + 20)
        stack.enter_context(proc)
        started.append((proc, port, rtp, rtp_count, share))
    out: list[GatewayProc] = []
    # Many processes importing at once on 2 cores take a while: the timeout grows with them.
    ready_s = START_TIMEOUT_S + 2.0 * len(started)
    for proc, port, rtp, rtp_count, share in started:
        proc.wait_ready(lambda log: "gateway ready" in log, timeout_s=ready_s)
        out.append(GatewayProc(Running(proc, child_pid(proc.pid)), port, rtp, rtp_count,
                               share))
    return out


def process_tree(gateways: Sequence[GatewayProc]) -> tuple[dict[str, list[int]], int]:
    """The ``gateway`` group (each ``gateway run``: its control process and every process
    below it, its SIP worker and what that forked) and the pid to profile threads of (the
    first gateway's worker, as it logged when ready; its control process if it did not).
    """
    pids = [p for g in gateways for p in (g.run.pid, *descendants(g.run.pid))]
    ready = _WORKER_READY.findall(gateways[0].run.proc.log_text())
    profiled = int(ready[-1][1]) if ready else gateways[0].run.pid
    return {"gateway": pids}, profiled


# Front mode ----------------------------------------------------------------------------------


def worker_max_calls(calls: int, workers: int, margin: int, cap: int | None) -> int:
    """Each worker's ``sip.max_calls`` for ``calls`` over ``workers``: an equal share plus
    ``margin``, at most ``cap`` (the wheel's 3)."""
    share = -(-calls // workers)
    return share + margin if cap is None else min(cap, share + margin)


class Reaper:
    """Processes a front-mode gateway started (workers, Kamailio and its children) that must
    be gone once the gateway has stopped: it waits for them, then kills by pid what is left.

    They run in sessions of their own, so stopping the ``timeout`` wrapper's process group
    does not reach them; the control process stops them (and they die with it). A process is
    remembered with its start time, so a reused pid is never signalled.
    """

    def __init__(self) -> None:
        self._seen: dict[int, int] = {}

    def track(self, pids: Sequence[int]) -> None:
        """Remember ``pids`` (those still alive)."""
        for pid in pids:
            since = live_since(pid)
            if since is not None:
                self._seen.setdefault(pid, since)

    def alive(self) -> list[int]:
        """The remembered processes still running."""
        return [pid for pid, since in self._seen.items() if live_since(pid) == since]

    def close(self) -> None:
        """Wait (bounded) for every remembered process to go; kill and report the rest."""
        deadline = time.monotonic() + LEFTOVER_WAIT_S
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.alive()
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if left:
            print(f"  left behind by the gateway, killed: "
                  f"{', '.join(f'{pid} {comm(pid)}' for pid in left)}", file=sys.stderr)


@dataclass(frozen=True)
class FrontGateway:
    """One ``gateway run`` in front mode: the control process, its workers, the front
    (``front_pid`` ``None``: a run without a front, its one worker binding the transports)."""

    gw: GatewayProc
    control_pid: int
    #: Worker id (``w1``...) -> pid, as the workers logged when ready.
    workers: dict[str, int]
    front_pid: int | None

    def groups(self) -> dict[str, list[int]]:
        """Every gateway process now, per group: ``control`` (the control process and any
        helper it forked), ``workers`` (each worker and what it forked) and ``kamailio`` (the
        front's main process and all its children).

        Raises:
            BenchError: A worker or the front is no longer the process that started (it died
                and was restarted).
        """
        out: dict[str, list[int]] = {name: [] for name in GROUPS}
        out["control"].append(self.control_pid)
        kids = children(self.control_pid)
        # Workers are forked by the preloaded parent (gateway.control.zygote), a child of
        # the control process; its shared pages are the workers', so it counts with them.
        below = set(descendants(self.control_pid))
        gone = [f"worker {w} (pid {pid})" for w, pid in self.workers.items()
                if pid not in below]
        if self.front_pid is not None and self.front_pid not in kids:
            gone.append(f"kamailio (pid {self.front_pid})")
        if gone:
            raise BenchError(f"no longer running under the control process: {', '.join(gone)}"
                             f"\n{self.gw.run.proc.log_tail()}")
        known = set(self.workers.values())
        for kid in kids:
            if kid == self.front_pid or comm(kid) == "kamailio":
                group = "kamailio"
            elif kid in known or "worker" in cmdline(kid)[2:4] \
                    or "gateway.control.zygote" in cmdline(kid):
                group = "workers"
            else:
                group = "control"
            out[group] += [kid, *descendants(kid)]
        return out


_CONTROL_READY = re.compile(r"gateway ready \(pid (\d+)\)")
_WORKER_READY = re.compile(r"worker (w\d+) ready \(pid (\d+)\)")
_FRONT_READY = re.compile(r"front: kamailio pid (\d+) listening on")


def start_front(stack: contextlib.ExitStack, run_dir: Path, workers: int, per_worker: int,
                sim_url: str, dialplan: Path, ports: PortPlan, lifetime_s: float,
                calls: int) -> FrontGateway:
    """Start one ``gateway run`` with ``workers`` SIP workers of ``per_worker`` calls behind a
    Kamailio front on a free loopback port; return when it says it is ready.

    ``calls`` is what the level will place (the RTP capture and the waits count on it).
    """
    port = ports.block(2)
    rtp_share = rtp_ports_for(per_worker)
    rtp_count = workers * rtp_share
    rtp = ports.block(rtp_count)
    sip: dict[str, object] = {
        "transports": [{"type": "udp", "host": "127.0.0.1", "port": port}],
        "workers": workers, "front": "kamailio", "max_calls": per_worker,
        "worker_port_start": ports.block(workers),
        "rtp_port_start": rtp, "rtp_port_range": rtp_count}
    config = {"realtime": {"url": sim_url}, "sip": sip, **CALLS_CONFIG,
              "control": {"port": 0, "drain_timeout_s": FRONT_DRAIN_TIMEOUT_S},
              "dialplan": str(dialplan), "logging": {"level": "INFO", "pjsip_level": 1}}
    env = {"OPENAI_API_KEY": "sk-bench-local", "GATEWAY_REALTIME_URL": sim_url,
           "GATEWAY_LOG_LEVEL": "INFO"}
    return launch_tree(stack, run_dir, config, env, lifetime_s, port=port, rtp=rtp,
                       rtp_count=rtp_count, calls=calls, workers=workers, front=True)


def launch_tree(stack: contextlib.ExitStack, run_dir: Path, config: Mapping[str, object],
                env: Mapping[str, str], lifetime_s: float, *, port: int, rtp: int,
                rtp_count: int, calls: int, workers: int, front: bool) -> FrontGateway:
    """Write ``config`` and start it as one ``gateway run`` (the control process, ``workers``
    SIP workers, the Kamailio front if ``front``); return when it says it is ready.

    ``port``, ``rtp`` and ``rtp_count`` repeat the config's SIP port and RTP range, ``calls``
    is what the level will place (the RTP capture and the waits count on them).
    """
    config_path = run_dir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(dict(config)))
    # Registered first, so it runs after the gateway has been stopped (an ExitStack unwinds
    # last-in first-out).
    reaper = Reaper()
    stack.callback(reaper.close)
    proc = ManagedProcess([*GATEWAY, "run", "-c", str(config_path),
                           "--run-seconds", f"{lifetime_s:.0f}"],
                          log_path=run_dir / "gateway.log", name="gateway", env=env, cwd=REPO,
                          max_lifetime_s=lifetime_s + FRONT_STOP_GRACE_S + 10,
                          grace_s=FRONT_STOP_GRACE_S)
    stack.enter_context(proc)
    try:
        # Workers import pjsua2 side by side on 2 cores, then Kamailio starts: allow for it.
        proc.wait_ready(lambda log: "gateway ready" in log,
                        timeout_s=START_TIMEOUT_S + 5.0 * workers)
    finally:
        with contextlib.suppress(RuntimeError):  # track what started, even on a failed start
            reaper.track(descendants(child_pid(proc.pid, timeout_s=0.1)))
    log_text = proc.log_text()
    control = _CONTROL_READY.search(log_text)
    front_ready = _FRONT_READY.search(log_text)
    ready = dict(_WORKER_READY.findall(log_text))  # the last line of each worker wins
    if control is None or (front and front_ready is None) or len(ready) != workers:
        raise BenchError(f"the gateway did not log its control pid, {workers} ready workers "
                         f"and the front's pid\n{proc.log_tail()}")
    control_pid = child_pid(proc.pid)
    if int(control[1]) != control_pid:
        raise BenchError(f"the gateway logged pid {control[1]}, its process is {control_pid}")
    gw = GatewayProc(Running(proc, control_pid), port, rtp, rtp_count, calls)
    out = FrontGateway(gw, control_pid, {w: int(pid) for w, pid in sorted(ready.items())},
                       int(front_ready[1]) if front_ready else None)
    reaper.track([pid for pids in out.groups().values() for pid in pids])
    return out


def usage(window: CpuWindow, groups: dict[str, list[int]]) -> tuple[GroupUsage, ...]:
    """CPU over ``window`` and memory now of each gateway process group."""
    return tuple(GroupUsage(name, len(groups[name]), window.groups[name],
                            sum(rss_kb(p) for p in groups[name]) / 1024,
                            sum(pss_kb(p) for p in groups[name]) / 1024) for name in GROUPS)


def same_processes(before: dict[str, list[int]], after: dict[str, list[int]]) -> None:
    """Raise :class:`BenchError` unless ``after`` (per group) holds the pids of ``before``."""
    if {k: sorted(v) for k, v in before.items()} != {k: sorted(v) for k, v in after.items()}:
        raise BenchError(f"the gateway's processes changed during the window: {before} -> "
                         f"{after}")


def caller_audio(path: Path) -> Path:
    """The looped caller file: silence, one spoken question, a shorter silence (raw µ-law).

    Padded with silence to whole 20 ms packets, so that SIPp, which loops the file without a
    break, cuts every pass into the same packets: each question then reaches the VAD in the
    same frames and turns differ only by what the gateway does.
    """
    pcm = silence_pcm16(CALLER_LEAD_MS) + speech_pcm16(CALLER_LINE) + silence_pcm16(
        CALLER_TAIL_MS)
    pcm += bytes(-len(pcm) % PACKET_BYTES_PCM16)
    return write_g711(path, pcm, "ulaw")


def _connected(gw: GatewayProc) -> int:
    return gw.run.proc.log_text().count("Realtime connected")


def wait_calls_up(gateways: Sequence[GatewayProc], sipps: Sequence[SippProcess],
                  rate: float = CALL_RATE) -> None:
    """Wait until every gateway has a Realtime session for each of its calls (placed at
    ``rate`` per second).

    Raises:
        BenchError: A gateway or SIPp exited, a call was refused, or the wait timed out.
    """
    timeout_s = START_TIMEOUT_S + sum(g.calls for g in gateways) / rate
    deadline = time.monotonic() + timeout_s
    while True:
        for gw in gateways:
            if not gw.run.proc.running:
                raise BenchError(f"{gw.run.proc.name} exited\n{gw.run.proc.log_tail()}")
            if "refus" in gw.run.proc.log_text():
                raise BenchError(f"{gw.run.proc.name} refused a call\n{gw.run.proc.log_tail()}")
        for sipp in sipps:
            if not sipp.running:
                raise BenchError(f"SIPp exited early: {sipp.result(1.0).describe()}")
        if all(_connected(gw) >= gw.calls for gw in gateways):
            return
        if time.monotonic() > deadline:
            counts = ", ".join(f"{_connected(g)}/{g.calls}" for g in gateways)
            raise BenchError(f"calls not up within {timeout_s:.0f} s ({counts})")
        time.sleep(0.05)


def _top_threads(window: CpuWindow, count: int = 5) -> tuple[tuple[str, float], ...]:
    ranked = sorted(window.threads.items(), key=lambda kv: -kv[1])[:count]
    return tuple((name, round(pct, 2)) for name, pct in ranked)


def log_problems(gateways: Sequence[GatewayProc]) -> int:
    """WARNING/ERROR lines and tracebacks in the gateways' logs."""
    return sum(len(_PROBLEM.findall(g.run.proc.log_text())) for g in gateways)


# Levels --------------------------------------------------------------------------------------


def run_idle(plan: Plan, ports: PortPlan, run: int) -> tuple[IdleResult, str]:
    """One gateway process (front mode: the whole front, every worker and Kamailio) with the
    simulator up and no call: its fixed cost (and its log)."""
    run_dir = plan.out_dir / f"run{run}" / "idle"
    run_dir.mkdir(parents=True, exist_ok=True)
    lifetime = plan.settle_s + plan.idle_window_s + 60
    with contextlib.ExitStack() as stack:
        sim, url = start_sim(stack, run_dir, plan.sim_speed, lifetime)
        dialplan = write_dialplan(run_dir / "dialplan.yaml", "native")
        front: FrontGateway | None = None
        if plan.workers is None:
            (gw,) = start_gateways(stack, run_dir, [0], url, dialplan, ports, lifetime,
                                   plan.calls_per_gateway)
            gw_groups, profiled = process_tree([gw])
        else:
            # The same layout as the largest level (the idle cost barely depends on it).
            per_worker = worker_max_calls(max(plan.calls), plan.workers, plan.worker_margin,
                                          plan.worker_cap)
            front = start_front(stack, run_dir, plan.workers, per_worker, url, dialplan,
                                ports, lifetime, 0)
            gw = front.gw
            gw_groups = front.groups()
            profiled = front.workers["w1"]
        time.sleep(plan.settle_s)
        groups = {**gw_groups, "sim": [sim.pid]}
        a = cpu_snapshot(groups, children=["sim"], threads_of=profiled)
        time.sleep(plan.idle_window_s)
        b = cpu_snapshot(groups, children=["sim"], threads_of=profiled)
        window = CpuWindow.between(a, b)
        pids = [p for pids in gw_groups.values() for p in pids]
        rss = sum(rss_kb(p) for p in pids) / 1024
        pss = sum(pss_kb(p) for p in pids) / 1024
        per_group = () if front is None else usage(window, gw_groups)
        if front is not None:
            same_processes(gw_groups, front.groups())
        log_text = gw.run.proc.log_text()
    cpu = sum(window.groups[name] for name in gw_groups)
    return IdleResult(run, round(window.seconds, 2), cpu, rss, pss, window.groups["sim"],
                      window.host_busy, _top_threads(window), procs=len(pids),
                      groups=per_group), log_text


def shares_for(calls: int, per_gateway: int | None) -> list[int]:
    """Calls per gateway process: as many full processes as possible, then the rest
    (``per_gateway`` ``None``: all calls in one process)."""
    if per_gateway is None:
        return [calls]
    full, rest = divmod(calls, per_gateway)
    return [per_gateway] * full + ([rest] if rest else [])


def run_level(plan: Plan, mode: str, calls: int, audio: Path, ports: PortPlan,
              idle: IdleResult) -> LevelResult:
    """Measure ``calls`` concurrent calls in media ``mode`` (in the pass of ``idle``)."""
    run_dir = plan.out_dir / f"run{idle.run}" / f"{mode}-n{calls}"
    run_dir.mkdir(parents=True, exist_ok=True)
    rate = plan.call_rate
    ramp_s = calls / rate
    hold_s = plan.settle_s + plan.window_s + HOLD_MARGIN_S + ramp_s
    lifetime = hold_s + 2 * START_TIMEOUT_S + 30
    with contextlib.ExitStack() as stack:
        sim, url = start_sim(stack, run_dir, plan.sim_speed, lifetime)
        dialplan = write_dialplan(run_dir / "dialplan.yaml", mode)
        front: FrontGateway | None = None
        if plan.workers is None:
            gateways = start_gateways(stack, run_dir, shares_for(calls, plan.calls_per_gateway),
                                      url, dialplan, ports, lifetime, plan.calls_per_gateway)
        else:
            per_worker = worker_max_calls(calls, plan.workers, plan.worker_margin,
                                          plan.worker_cap)
            front = start_front(stack, run_dir, plan.workers, per_worker, url, dialplan,
                                ports, lifetime, calls)
            gateways = [front.gw]
        sipps: list[SippProcess] = []
        for gw in gateways:
            sipp = start_sipp("uac_pcmu", gw.target, log_dir=run_dir, service="100",
                              local_port=ports.block(2),
                              # SIPp binds a port pair per call upwards of -mp: reserve them
                              # all, so none lands in a gateway's RTP range (the capture).
                              media_port=ports.block(4 * gw.calls + 4),
                              calls=gw.calls, concurrent=gw.calls, rate=rate,
                              hold_ms=int(hold_s * 1000), keys={"audio_file": str(audio)},
                              timeout_s=hold_s + START_TIMEOUT_S + 10)
            sipps.append(stack.enter_context(sipp))
            time.sleep(gw.calls / rate)  # keep the total arrival rate at `rate`
        wait_calls_up(gateways, sipps, rate)
        time.sleep(plan.settle_s)
        if front is None:
            gw_groups, profiled = process_tree(gateways)
        else:
            gw_groups = front.groups()
            profiled = front.workers["w1"]
        gw_pids = [p for pids in gw_groups.values() for p in pids]
        groups = {**gw_groups, "sim": [sim.pid],
                  "sipp": [child_pid(s.process.pid) for s in sipps]}
        rtp_filter = "udp and (" + " or ".join(g.rtp_filter for g in gateways) + ")"
        # A 256 MiB buffer holds a whole window even if tcpdump falls behind; 256 bytes keep
        # the RTP header and a 20 ms G.711 payload.
        with Capture(run_dir / "rtp.pcap", rtp_filter, max_lifetime_s=plan.window_s + 60,
                     buffer_kib=262_144, snaplen=256) as cap:
            a = cpu_snapshot(groups, children=["sim"], threads_of=profiled)
            time.sleep(plan.window_s)
            b = cpu_snapshot(groups, children=["sim"], threads_of=profiled)
            rss = tuple(rss_kb(p) / 1024 for p in gw_pids)
            pss = tuple(pss_kb(p) / 1024 for p in gw_pids)
            sim_rss = rss_kb(sim.pid) / 1024
            per_group = () if front is None else usage(CpuWindow.between(a, b), gw_groups)
        if front is not None:
            same_processes(gw_groups, front.groups())
        if not all(s.running for s in sipps):
            raise BenchError("a SIPp finished before the window closed: calls ended early")
        results = [s.result() for s in sipps]
        for gw in gateways:
            gw.run.proc.stop()
        problems = log_problems(gateways)
        records = [rec for g in gateways for rec in call_records(g.run.proc.log_text())]
    window = CpuWindow.between(a, b)
    gw_cpu = sum(window.groups[name] for name in gw_groups)
    packets = cap.packets()
    ranges = [g.rtp_range for g in gateways]
    sent = [p for p in packets if any(lo <= p.sport <= hi for lo, hi in ranges)]
    rtp = summarize_rtp(sent, a.wall, b.wall, calls)
    answers = tuple(ms for r in results for ms in answer_latencies_ms(r.messages))
    turns = level_turns(run_dir / TURN_LOG, packets, ranges,
                        [m for r in results for m in r.messages], records)
    # Above idle: the idle cost once per gateway process, or once for the whole front (the
    # idle front has the same control process, workers and Kamailio processes).
    idle_cost = idle.cpu_pct if front is not None else len(gateways) * idle.cpu_pct
    return LevelResult(
        run=idle.run, mode=mode, calls=calls, procs=len(gw_pids),
        window_s=round(window.seconds, 2),
        gw_cpu_pct=gw_cpu, gw_cpu_per_call=gw_cpu / calls,
        gw_net_per_call=(gw_cpu - idle_cost) / calls,
        gw_rss_mb=rss, gw_pss_mb=pss, sim_cpu_pct=window.groups["sim"], sim_rss_mb=sim_rss,
        sipp_cpu_pct=window.groups["sipp"], host_busy_pct=window.host_busy, rtp=rtp,
        answer_ms=answers, calls_ok=sum(r.successful for r in results),
        calls_failed=sum(r.failed for r in results), log_problems=problems,
        call_records=len(records),
        agent_responses=sum(int(rec.get("responses", 0)) for rec in records),
        frame_counters=tuple(sorted(frame_counters(records).items())),
        threads=_top_threads(window), capture_dropped=cap.dropped_by_kernel,
        workers=plan.workers or 0, groups=per_group, turns=turns)


# Command line --------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds every ExitStack, which stops every process


def check_prerequisites(*, front: bool = False) -> None:
    """Fail early, with a clear message, when a tool or privilege is missing (``front``: also
    Kamailio).

    Raises:
        SystemExit: Something is missing.
    """
    missing = [t for t in ("sipp", "tcpdump", "espeak-ng", "timeout") if shutil.which(t) is None]
    if front and shutil.which("kamailio") is None and not Path("/usr/sbin/kamailio").exists():
        missing.append("kamailio")
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)} (see scripts/dev.sh)")
    if os.geteuid() != 0:
        raise SystemExit("tcpdump on lo needs root: run this benchmark as root")


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, nargs="+", default=[3, 6, 12], metavar="N",
                   help="concurrent call counts to measure (default: 3 6 12)")
    p.add_argument("--calls-per-gateway", type=int, metavar="K",
                   help="calls per gateway process, its sip.max_calls (default: what the "
                   f"binding allows: {WHEEL_CALLS_PER_GATEWAY} on the wheel, all of a level's "
                   "calls in one process on the source build)")
    p.add_argument("--workers", type=int, metavar="W",
                   help="front mode: each level runs one `gateway run` with W SIP workers "
                   "behind a Kamailio front (sip.workers: W, sip.front: kamailio), SIPp calls "
                   "the front; CPU and memory cover the control process, every worker and "
                   "every Kamailio process, also per group (default: off)")
    p.add_argument("--rate", type=float, default=CALL_RATE, metavar="R",
                   help=f"new calls per second, all SIPps together (default {CALL_RATE:g})")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                   help="media modes (default: both)")
    p.add_argument("--window", type=float, default=20.0, help="steady window, s (default 20)")
    p.add_argument("--idle-window", type=float, default=20.0,
                   help="idle-process window, s (default 20)")
    p.add_argument("--settle", type=float, default=3.0,
                   help="wait after all calls are up before measuring, s (default 3)")
    p.add_argument("--repeat", type=int, default=2,
                   help="passes over all levels, each with its own idle measurement "
                   "(default 2)")
    p.add_argument("--sim-speed", type=float, default=4.0,
                   help="simulator audio speed (default 4, as `gateway sim`)")
    p.add_argument("--append-chunk-ms", type=int, metavar="MS",
                   help="the gateways' calls.append_chunk_ms: caller audio per "
                        "input_audio_buffer.append (default: the gateway's, 40)")
    p.add_argument("--out", type=Path, help="artefact directory (default: a new /tmp dir)")
    p.add_argument("--doc", type=Path, help=f"Markdown file to update (default: "
                   f"{DEFAULT_DOC.relative_to(REPO)}; --quick runs update nothing unless given)")
    p.add_argument("--no-doc", action="store_true", help="do not update any document")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: N=3, one pass, 6 s window, 4 s idle window, 2 s settle")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (0 ok, 1 a level failed, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    argv_text = shlex.join(sys.argv[1:] if argv is None else list(argv))
    if args.quick:
        args.calls, args.window, args.idle_window, args.settle = [3], 6.0, 4.0, 2.0
        args.repeat = 1
    if any(n < 1 for n in args.calls) or min(args.window, args.idle_window, args.repeat) <= 0:
        raise SystemExit("call counts, windows and --repeat must be positive")
    if args.rate <= 0:
        raise SystemExit("--rate must be positive")
    check_prerequisites(front=args.workers is not None)
    binding = detect_binding()
    per_gateway = args.calls_per_gateway
    worker_cap = WHEEL_CALLS_PER_GATEWAY if binding.kind == "wheel" else None
    if args.workers is not None:
        if args.workers < 2:
            raise SystemExit("--workers must be at least 2 (one worker has no front)")
        if per_gateway is not None:
            raise SystemExit("--calls-per-gateway and --workers exclude each other: in front "
                             "mode each worker takes ceil(calls / workers) calls")
        if worker_cap is not None and any(-(-n // args.workers) > worker_cap
                                          for n in args.calls):
            raise SystemExit(f"the wheel allows {worker_cap} calls per worker: use at least "
                             f"ceil(calls / {worker_cap}) workers")
    elif per_gateway is None and binding.kind == "wheel":
        per_gateway = WHEEL_CALLS_PER_GATEWAY
    if per_gateway is not None and per_gateway < 1:
        raise SystemExit("--calls-per-gateway must be positive")
    if binding.kind == "wheel" and per_gateway is not None \
            and per_gateway > WHEEL_CALLS_PER_GATEWAY:
        raise SystemExit(f"the wheel allows {WHEEL_CALLS_PER_GATEWAY} calls per process "
                         f"(4 call slots, one kept to refuse with 503)")
    if args.append_chunk_ms is not None:
        CALLS_CONFIG["calls"] = {"append_chunk_ms": args.append_chunk_ms}
    doc = None if args.no_doc else (args.doc or (None if args.quick else DEFAULT_DOC))
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="bench-load-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = Plan(tuple(args.calls), tuple(args.modes), args.window, args.idle_window,
                args.settle, args.sim_speed, args.repeat, out_dir, per_gateway,
                workers=args.workers, worker_margin=WORKER_MARGIN, call_rate=args.rate,
                worker_cap=worker_cap if args.workers is not None else None)
    signal.signal(signal.SIGTERM, _on_sigterm)
    machine = machine_info()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    ports = PortPlan()
    idles: list[IdleResult] = []
    levels: list[LevelResult | LevelFailure] = []
    layout = (f"front mode: {args.workers} workers behind Kamailio" if args.workers
              else f"{per_gateway} calls per gateway process" if per_gateway
              else "all calls in one gateway process")
    print(f"artefacts in {out_dir}; binding: {binding.title} ({binding.distribution} "
          f"{binding.distribution_version}), {layout}", file=sys.stderr)
    try:
        audio = caller_audio(out_dir / "caller.ulaw")
        for run in range(1, plan.repeat + 1):
            print(f"run {run}: measuring an idle "
                  f"{'front' if plan.workers else 'gateway process'}...", file=sys.stderr)
            idle, idle_log = run_idle(plan, ports, run)
            idles.append(idle)
            binding = confirm_binding(binding, idle_log)
            for calls in plan.calls:
                for mode in plan.modes:
                    print(f"run {run}: measuring {mode}, {calls} calls...", file=sys.stderr)
                    try:
                        levels.append(run_level(plan, mode, calls, audio, ports, idle))
                    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                        # BenchError, ProcessError (both RuntimeError), a tool that failed:
                        # this level's processes are already stopped; go on with the next.
                        print(f"  failed: {exc}", file=sys.stderr)
                        levels.append(LevelFailure(run, mode, calls,
                                                   str(exc).splitlines()[0]))
    except KeyboardInterrupt:
        print("interrupted: every process this run started has been stopped", file=sys.stderr)
        return 130
    command = f"bench.load {argv_text}".strip()
    interpreter = sys.executable
    with contextlib.suppress(ValueError):
        interpreter = str(Path(sys.executable).relative_to(REPO))
    tables = render_tables(idles, levels, front=plan.workers is not None)
    print(tables)
    record = {"started": started, "command": f"{interpreter} -m {command}",
              "machine": machine,
              "binding": {**asdict(binding), "label": block_label(binding, plan.workers)},
              "plan": {**asdict(plan), "out_dir": str(plan.out_dir)},
              "idle": [asdict(i) for i in idles], "levels": [asdict(lv) for lv in levels]}
    (out_dir / "results.json").write_text(json.dumps(record, indent=2, default=str))
    if doc is not None:
        update_doc(doc, render_block(started=started, command=command, machine=machine,
                                     plan=plan, binding=binding, interpreter=interpreter,
                                     idles=idles, levels=levels, tables=tables),
                   block_label(binding, plan.workers))
        print(f"updated {doc}", file=sys.stderr)
    return 1 if any(isinstance(lv, LevelFailure) for lv in levels) else 0


if __name__ == "__main__":
    raise SystemExit(main())

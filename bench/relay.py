"""Relayed calls vs bridged: what one call costs the gateway's processes each way (issue 10).

Not a test: it measures and reports. A **bridged** call (``native`` media) is today's path:
SIPp (the PBX) -> the SIP worker's media bridge -> a Realtime WebSocket to the simulator, the
agent in the worker. A **relayed** call (``relay: true`` route) is SIPp -> the SIP worker,
which answers only once a second call it places over TLS + SRTP to "OpenAI" (the simulator's
own pjsua2 SIP endpoint, a self-signed certificate made with openssl in the run directory) is
accepted; the two legs are joined in pjsua's conference bridge (no Python per frame), the
simulator posts a signed ``realtime.call.incoming`` to the control process, which accepts over
the Calls REST API and runs the agent on the sideband WebSocket.

Per call count N and mode, one simulator (:mod:`bench.simrun`; for relay with its SIP
endpoint and webhooks) and one ``gateway run`` (a control process and one SIP worker on
loopback, no front), then: an idle window on those very processes before any call; N SIPp
calls (``uac_pcmu``, the looped question of :mod:`bench.load`) at ``--rate``; once every call
is up (bridged: the worker logged ``Realtime connected`` per call; relayed: the control
process logged ``openai call ... -> relayed call ...`` and its sideband's ``Realtime
connected`` per call) and ``--settle`` has passed, a window: CPU (``/proc/PID/stat``) and PSS
(``smaps_rollup``) per group, ``control`` (the control process) and ``workers`` (the worker,
its preloaded parent), with the simulator and SIPp apart; the RTP reaching SIPp (tcpdump on
``lo``, needs root): streams, packet rate, agent talk time, lost and late packets. After the
hang-up, the worker's call records (``kind``, the caller frames their media bridge took:
none for a relayed call) and the agent responses. Both modes run at each N back to back, so
they share the moment.

Usage (from the repository root, as root)::

    .venv/bin/python -m bench.relay                      # N = 10, 30; bridged and relayed
    .venv/bin/python -m bench.relay --calls 5 --window 6 --idle-window 4   # smoke run
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from bench.load import (
    FRONT_DRAIN_TIMEOUT_S,
    GREETING,
    HOLD_MARGIN_S,
    START_TIMEOUT_S,
    BenchError,
    FrontGateway,
    PortPlan,
    Running,
    caller_audio,
    check_prerequisites,
    launch_tree,
    log_problems,
    rtp_ports_for,
    same_processes,
    start_sim,
    usage,
)
from bench.metrics import (
    CpuSnapshot,
    CpuWindow,
    RtpSummary,
    answer_latencies_ms,
    call_records,
    child_pid,
    cmdline,
    cpu_snapshot,
    descendants,
    percentile,
    summarize_rtp,
)
from bench.report import GroupUsage, detect_binding, machine_info
from tests.support.capture import Capture
from tests.support.ports import free_tcp_port
from tests.support.procs import wait_for_port
from tests.support.sipp import SippProcess, start_sipp
from tests.support.tls import self_signed

MODES: Final = ("native", "relay")
#: The gateway's process groups here: no front, so no Kamailio.
GROUPS: Final = ("control", "workers")
WEBHOOK_PATH: Final = "/openai/webhook"
#: Any token of 16+ characters: the control API wants one ($GATEWAY_API_TOKENS).
API_TOKEN: Final = "bench-relay-api-token-0123456789"
#: New calls per second: the simulator's SIP endpoint is one pjsua2 process.
CALL_RATE: Final = 5.0
#: How long every call may take to come up after the last one was placed.
UP_SLACK_S: Final = 15.0
#: How long the call records may take to be logged after SIPp hung up.
RECORDS_TIMEOUT_S: Final = 15.0
_RELAYED = re.compile(r"openai call \S+ -> relayed call ")
_SIDEBAND_UP = re.compile(r"openai:\S+: Realtime connected")
#: pjsua's warning when an RTP port pair it tries is taken (it then tries the next pair).
_BIND_RETRY = re.compile(r" WARNING .*RTP socket bind\(\) at \S+ error: Address already in use")
_FAILED = re.compile(r"refus|relay leg failed|relay call could not be placed|did not answer")


@dataclass(frozen=True)
class Plan:
    """What to run."""

    calls: tuple[int, ...]
    modes: tuple[str, ...]
    window_s: float
    idle_window_s: float
    settle_s: float
    rate: float
    sim_speed: float
    repeat: int
    out_dir: Path


@dataclass(frozen=True)
class Level:
    """One mode at one call count; CPU in % of one core, memory in MiB."""

    run: int
    mode: str
    calls: int
    load_avg: tuple[float, float, float]
    window_s: float
    #: The same processes before the first call, and during the window.
    idle: tuple[GroupUsage, ...]
    busy: tuple[GroupUsage, ...]
    sim_cpu_pct: float
    sipp_cpu_pct: float
    host_busy_pct: float
    #: The RTP reaching SIPp during the window.
    rtp: RtpSummary
    answer_ms: tuple[float, ...]
    calls_ok: int
    calls_failed: int
    #: The worker's call records by ``kind``, and the caller frames their media bridges took
    #: (``media.rx_frames``; a relayed call's stays 0: no frame crossed Python).
    kinds: tuple[tuple[str, int], ...]
    worker_rx_frames: int
    agent_responses: int
    #: WARNING/ERROR lines in the gateway's log, and how many of them are pjsua's RTP bind
    #: retries (a port pair taken, the next one tried).
    log_problems: int
    rtp_bind_retries: int
    #: Busiest threads of the worker and of the control process during the window.
    worker_threads: tuple[tuple[str, float], ...]
    control_threads: tuple[tuple[str, float], ...]

    def cpu(self, group: str | None = None, *, idle: bool = False) -> float:
        """CPU of one group (``None``: all) in the window, or in the idle window."""
        return sum(g.cpu_pct for g in (self.idle if idle else self.busy)
                   if group is None or g.name == group)

    def pss(self, group: str | None = None, *, idle: bool = False) -> float:
        """PSS of one group (``None``: all) at the end of the window or of the idle window."""
        return sum(g.pss_mb for g in (self.idle if idle else self.busy)
                   if group is None or g.name == group)


@dataclass(frozen=True)
class Failure:
    """A level that could not be measured, and why."""

    run: int
    mode: str
    calls: int
    reason: str


# Processes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenAISide:
    """The simulator playing OpenAI's SIP endpoint for relayed calls."""

    sim: Running
    ws_url: str
    tls_port: int
    cert: Path
    secret: str
    #: The simulator's pjsua2 endpoint process (its child), counted with the simulator.
    endpoint_pid: int

    @property
    def api_url(self) -> str:
        """The Calls REST base, ``http://HOST:PORT/v1`` (what ``sim.http_url`` is)."""
        return self.ws_url.replace("ws://", "http://", 1).removesuffix("/realtime")


def start_openai(stack: contextlib.ExitStack, run_dir: Path, speed: float, lifetime_s: float,
                 control_port: int) -> OpenAISide:
    """The simulator with its SIP endpoint on TLS and webhooks to ``control_port``."""
    cert, key = self_signed(run_dir)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    tls_port = free_tcp_port()
    sim, url = start_sim(stack, run_dir, speed, lifetime_s, extra_args=[
        "--sip-tls-port", str(tls_port), "--sip-tls-cert", str(cert), "--sip-tls-key", str(key),
        "--webhook-url", f"http://127.0.0.1:{control_port}{WEBHOOK_PATH}"],
        env={"OPENAI_WEBHOOK_SECRET": secret})
    wait_for_port(tls_port, proto="tcp", timeout_s=START_TIMEOUT_S, process=sim.proc)
    endpoint = [p for p in descendants(sim.pid) if "gateway.sim.sipside" in cmdline(p)]
    if len(endpoint) != 1:
        raise BenchError(f"the simulator's SIP endpoint process not found\n"
                         f"{sim.proc.log_tail()}")
    return OpenAISide(sim, url, tls_port, cert, secret, endpoint[0])


def write_plan(path: Path, relay: bool) -> Path:
    """The catch-all agent of :mod:`bench.load` (native media), relayed if ``relay``."""
    route: dict[str, Any] = {"name": "all", "agent": "bench"}
    if relay:
        route["relay"] = True
    plan = {"agents": {"bench": {"instructions": "You are the benchmark agent. Answer briefly.",
                                 "media": "native", "greeting": GREETING}},
            "routes": [route]}
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def start_gateway(stack: contextlib.ExitStack, run_dir: Path, calls: int, ws_url: str,
                  ports: PortPlan, lifetime_s: float,
                  openai: OpenAISide | None, control_port: int) -> FrontGateway:
    """One ``gateway run``: the control process and one SIP worker on loopback, no front;
    with ``openai``, relayed calls to it on."""
    port = ports.block(2)
    # A relayed call binds RTP for two legs.
    rtp_count = rtp_ports_for(2 * calls if openai else calls)
    rtp = ports.block(rtp_count)
    config: dict[str, Any] = {
        "realtime": {"url": ws_url},
        "sip": {"transports": [{"type": "udp", "host": "127.0.0.1", "port": port}],
                "workers": 1, "front": "none", "rtp_port_start": rtp,
                "rtp_port_range": rtp_count},
        "control": {"port": control_port, "drain_timeout_s": FRONT_DRAIN_TIMEOUT_S},
        "dialplan": str(write_plan(run_dir / "dialplan.yaml", openai is not None)),
        "logging": {"level": "INFO", "pjsip_level": 1}}
    env = {"OPENAI_API_KEY": "sk-bench-local", "GATEWAY_REALTIME_URL": ws_url,
           "GATEWAY_LOG_LEVEL": "INFO", "GATEWAY_API_TOKENS": API_TOKEN}
    if openai is not None:
        config["openai_calls"] = {
            "enabled": True, "webhook_path": WEBHOOK_PATH, "api_url": openai.api_url,
            "sip_uri": f"sip:proj_bench@127.0.0.1:{openai.tls_port};transport=tls",
            "sip_ca_file": str(openai.cert), "sip_srtp": "mandatory"}
        env["OPENAI_WEBHOOK_SECRET"] = openai.secret
    return launch_tree(stack, run_dir, config, env, lifetime_s, port=port, rtp=rtp,
                       rtp_count=rtp_count, calls=calls, workers=1, front=False)


def calls_up(log_text: str, relay: bool) -> int:
    """Calls that are up: bridged, with their Realtime WebSocket; relayed, accepted with their
    sideband attached (the lesser of the two counts)."""
    if not relay:
        return log_text.count("Realtime connected")
    return min(len(_RELAYED.findall(log_text)), len(_SIDEBAND_UP.findall(log_text)))


def wait_up(gw: FrontGateway, sipp: SippProcess, calls: int, relay: bool,
            timeout_s: float) -> None:
    """Wait until all ``calls`` are up.

    Raises:
        BenchError: The gateway or SIPp exited, a call failed, or the wait timed out.
    """
    proc = gw.gw.run.proc
    deadline = time.monotonic() + timeout_s
    while (up := calls_up(proc.log_text(), relay)) < calls:
        text = proc.log_text()
        if not proc.running:
            raise BenchError(f"the gateway exited\n{proc.log_tail()}")
        if (failed := _FAILED.search(text)) is not None:
            raise BenchError(f"a call failed ({failed[0]})\n{proc.log_tail()}")
        if not sipp.running:
            raise BenchError(f"SIPp exited early: {sipp.result(1.0).describe()}")
        if time.monotonic() > deadline:
            raise BenchError(f"calls not up within {timeout_s:.0f} s ({up}/{calls})")
        time.sleep(0.1)


def _wait_records(gw: FrontGateway, count: int) -> str:
    deadline = time.monotonic() + RECORDS_TIMEOUT_S
    while True:
        text = gw.gw.run.proc.log_text()
        if text.count("call record:") >= count or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


# Measuring ----------------------------------------------------------------------------------


def _top(window: CpuWindow, count: int) -> tuple[tuple[str, float], ...]:
    ranked = sorted(window.threads.items(), key=lambda kv: -kv[1])[:count]
    return tuple((name.split(" ", 1)[-1], round(pct, 2)) for name, pct in ranked)


@dataclass(frozen=True)
class _Snap:
    groups: CpuSnapshot
    control: CpuSnapshot


def _snap(groups: dict[str, list[int]], gw: FrontGateway) -> _Snap:
    return _Snap(cpu_snapshot(groups, children=["sim"], threads_of=gw.workers["w1"]),
                 cpu_snapshot({}, threads_of=gw.control_pid))


def _gateway_groups(gw: FrontGateway) -> dict[str, list[int]]:
    """The gateway's processes by group (``kamailio`` is there, empty: no front runs)."""
    tree = gw.groups()
    if tree["kamailio"]:
        raise BenchError(f"a front runs: {tree}")
    return tree


def run_level(plan: Plan, mode: str, calls: int, audio: Path, ports: PortPlan,
              run: int) -> Level:
    """Measure ``calls`` concurrent calls, bridged (``native``) or relayed (``relay``)."""
    run_dir = plan.out_dir / f"run{run}" / f"{mode}-n{calls}"
    run_dir.mkdir(parents=True, exist_ok=True)
    relay = mode == "relay"
    load_avg = os.getloadavg()
    ramp_s = calls / plan.rate
    hold_s = ramp_s + plan.settle_s + plan.window_s + HOLD_MARGIN_S
    lifetime = plan.idle_window_s + hold_s + UP_SLACK_S + 2 * START_TIMEOUT_S + 30
    with contextlib.ExitStack() as stack:
        control_port = free_tcp_port() if relay else 0
        openai = start_openai(stack, run_dir, plan.sim_speed, lifetime, control_port) \
            if relay else None
        if openai is None:
            sim, url = start_sim(stack, run_dir, plan.sim_speed, lifetime)
            sim_pids = [sim.pid]
        else:
            url, sim_pids = openai.ws_url, [openai.sim.pid, openai.endpoint_pid]
        gw = start_gateway(stack, run_dir, calls, url, ports, lifetime, openai, control_port)
        gw_groups = _gateway_groups(gw)
        # The fixed cost of exactly these processes, before any call.
        a = _snap(gw_groups, gw)
        time.sleep(plan.idle_window_s)
        b = _snap(gw_groups, gw)
        idle = usage(CpuWindow.between(a.groups, b.groups), gw_groups)
        media_port = ports.block(4 * calls + 4)  # SIPp binds a port pair per call upwards
        sipp = stack.enter_context(start_sipp(
            "uac_pcmu", gw.gw.target, log_dir=run_dir, service="100",
            local_port=ports.block(2), media_port=media_port, calls=calls, concurrent=calls,
            rate=plan.rate, hold_ms=int(hold_s * 1000), keys={"audio_file": str(audio)},
            timeout_s=hold_s + UP_SLACK_S + START_TIMEOUT_S + 10))
        wait_up(gw, sipp, calls, relay, ramp_s + UP_SLACK_S)
        time.sleep(plan.settle_s)
        same_processes(gw_groups, _gateway_groups(gw))
        groups = {**gw_groups, "sim": sim_pids, "sipp": [child_pid(sipp.process.pid)]}
        last = media_port + 4 * calls + 3
        with Capture(run_dir / "rtp.pcap", f"udp and dst portrange {media_port}-{last}",
                     max_lifetime_s=plan.window_s + 60, buffer_kib=65_536, snaplen=256) as cap:
            a = _snap(groups, gw)
            time.sleep(plan.window_s)
            b = _snap(groups, gw)
            window = CpuWindow.between(a.groups, b.groups)
            busy = usage(window, gw_groups)
        same_processes(gw_groups, _gateway_groups(gw))
        if "call record:" in gw.gw.run.proc.log_text() or not sipp.running:
            raise BenchError("a call ended before the window closed")
        result = sipp.result()
        # Bridged: one record per call (the worker's); relayed: the worker's and the sideband's.
        log_text = _wait_records(gw, calls * (2 if relay else 1))
        gw.gw.run.proc.stop()
        problems = log_problems([gw.gw])
    records = call_records(log_text)
    worker = [r for r in records if "leg_id" in r]
    return Level(
        run=run, mode=mode, calls=calls, load_avg=load_avg, window_s=round(window.seconds, 2),
        idle=_named(idle), busy=_named(busy), sim_cpu_pct=window.groups["sim"],
        sipp_cpu_pct=window.groups["sipp"], host_busy_pct=window.host_busy,
        rtp=summarize_rtp(cap.packets(), a.groups.wall, b.groups.wall, calls),
        answer_ms=tuple(answer_latencies_ms(result.messages)), calls_ok=result.successful,
        calls_failed=result.failed,
        kinds=tuple(sorted(Counter(str(r.get("kind")) for r in worker).items())),
        worker_rx_frames=sum(int(r.get("media", {}).get("rx_frames", 0)) for r in worker),
        agent_responses=sum(int(r.get("responses", 0)) for r in records),
        log_problems=problems, rtp_bind_retries=len(_BIND_RETRY.findall(log_text)),
        worker_threads=_top(window, 5),
        control_threads=_top(CpuWindow.between(a.control, b.control), 3))


def _named(groups: Sequence[GroupUsage]) -> tuple[GroupUsage, ...]:
    return tuple(g for g in groups if g.name in GROUPS)


# Report -------------------------------------------------------------------------------------


def _n(value: float, digits: int = 2) -> str:
    return "–" if value != value else f"{value:.{digits}f}"  # NaN: nothing measured


def _mode(lv: Level) -> str:
    return "relayed" if lv.mode == "relay" else "bridged native"


def _cpu_row(lv: Level) -> str:
    n = lv.calls

    def above(group: str | None, what: str) -> str:
        busy = lv.cpu(group) if what == "cpu" else lv.pss(group)
        idle = lv.cpu(group, idle=True) if what == "cpu" else lv.pss(group, idle=True)
        return _n((busy - idle) / n, 3 if what == "cpu" else 2)

    return (f"| {n} | {_mode(lv)} | {_n(lv.cpu() / n, 3)} | {_n(lv.cpu('control') / n, 3)} "
            f"| {_n(lv.cpu('workers') / n, 3)} | {above(None, 'cpu')} "
            f"| {above('control', 'cpu')} / {above('workers', 'cpu')} "
            f"| {_n(lv.cpu('control', idle=True))} / {_n(lv.cpu('workers', idle=True))} "
            f"| {_n(lv.pss() / n)} | {above('control', 'pss')} / {above('workers', 'pss')} "
            f"| {_n(lv.sim_cpu_pct, 1)} | {_n(lv.host_busy_pct, 1)} "
            f"| {' '.join(f'{x:.2f}' for x in lv.load_avg)} |")


def _call_row(lv: Level) -> str:
    t = lv.rtp
    return (f"| {lv.calls} | {_mode(lv)} | {lv.calls_ok} / {lv.calls_failed} "
            f"| {_n(percentile(lv.answer_ms, 50), 1)} / {_n(percentile(lv.answer_ms, 95), 1)} "
            f"| {', '.join(f'{k} {v}' for k, v in lv.kinds) or 'none'} "
            f"| {lv.worker_rx_frames} | {lv.agent_responses} | {t.streams} "
            f"| {_n(t.pps_per_call, 1)} | {_n(t.talk_pct, 0)} | {t.lost} / {t.late} "
            f"| {lv.log_problems} ({lv.rtp_bind_retries}) |")


def render(levels: Sequence[Level | Failure]) -> str:
    """Markdown: CPU and PSS per call, in all and by group; the calls and their audio."""
    ok = [lv for lv in levels if isinstance(lv, Level)]
    cpu = ["| calls | mode | gw CPU %/call | control %/call | workers %/call "
           "| above idle %/call | above idle control / workers %/call "
           "| idle CPU % control / workers | PSS MB/call | above idle PSS MB/call control / "
           "workers | sim CPU % | host busy % | load avg at start |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
           *map(_cpu_row, ok)]
    calls = ["| calls | mode | SIPp ok / failed | INVITE→200 p50 / p95 ms | worker records "
             "| caller frames into the media bridge | agent responses | RTP streams to SIPp "
             "| pkt/s per call | agent talking % | lost / late | gw log warnings (of which RTP "
             "bind retries) |",
             "|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
             *map(_call_row, ok)]
    threads = [f"* {lv.mode}, {lv.calls} calls: worker "
               + ", ".join(f"`{name}` {pct:.2f}" for name, pct in lv.worker_threads)
               + "; control "
               + ", ".join(f"`{name}` {pct:.2f}" for name, pct in lv.control_threads)
               for lv in ok]
    failed = [f"* **run {f.run}, {f.mode}, {f.calls} calls: not measured**: {f.reason}"
              for f in levels if isinstance(f, Failure)]
    return "\n\n".join([
        "CPU (% of one core) and PSS of the gateway's processes; the simulator apart:",
        "\n".join(cpu), "Calls and their audio:", "\n".join(calls),
        "Busiest threads in the window (% of one core; `(main)` is the asyncio loop, `clock` "
        "the conference bridge, `media` pjmedia's RTP worker):", "\n".join(threads),
        "\n".join(failed)]).rstrip()


# Command line -------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds every ExitStack, which stops every process


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, nargs="+", default=[10, 30], metavar="N",
                   help="concurrent call counts (default: 10 30)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                   help="native: bridged with native media; relay: relayed (default: both)")
    p.add_argument("--rate", type=float, default=CALL_RATE,
                   help=f"new calls per second (default {CALL_RATE:g})")
    p.add_argument("--window", type=float, default=15.0, help="window, s (default 15)")
    p.add_argument("--idle-window", type=float, default=8.0,
                   help="idle window on the same processes before the calls, s (default 8)")
    p.add_argument("--settle", type=float, default=3.0,
                   help="wait after all calls are up, s (default 3)")
    p.add_argument("--repeat", type=int, default=1, help="passes over all levels (default 1)")
    p.add_argument("--sim-speed", type=float, default=4.0,
                   help="simulator audio speed on the WebSocket (default 4)")
    p.add_argument("--out", type=Path, help="artefact directory (default: a new /tmp dir)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (0 ok, 1 a level failed, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    if any(n < 1 for n in args.calls) or min(args.window, args.idle_window, args.rate,
                                             args.repeat) <= 0:
        raise SystemExit("call counts, windows, --rate and --repeat must be positive")
    check_prerequisites()
    if shutil.which("openssl") is None:
        raise SystemExit("missing tool: openssl (the simulator's TLS certificate)")
    if detect_binding().kind == "wheel" and "relay" in args.modes:
        raise SystemExit("a relayed call holds two call slots and the wheel has 4 per "
                         "process: run this with the source build (.venv)")
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="bench-relay-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = Plan(tuple(args.calls), tuple(args.modes), args.window, args.idle_window,
                args.settle, args.rate, args.sim_speed, args.repeat, out_dir)
    signal.signal(signal.SIGTERM, _on_sigterm)
    machine = machine_info()
    print(f"artefacts in {out_dir}", file=sys.stderr)
    ports = PortPlan()
    levels: list[Level | Failure] = []
    try:
        audio = caller_audio(out_dir / "caller.ulaw")
        for run in range(1, plan.repeat + 1):
            for calls in plan.calls:
                for mode in plan.modes:
                    print(f"run {run}: {mode}, {calls} calls...", file=sys.stderr)
                    try:
                        levels.append(run_level(plan, mode, calls, audio, ports, run))
                    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                        print(f"  failed: {exc}", file=sys.stderr)
                        levels.append(Failure(run, mode, calls, str(exc).splitlines()[0]))
    except KeyboardInterrupt:
        print("interrupted: every process this run started has been stopped", file=sys.stderr)
        return 130
    report = render(levels)
    print(report)
    command = shlex.join(["-m", "bench.relay", *(sys.argv[1:] if argv is None else argv)])
    record = {"command": f"{sys.executable} {command}", "machine": machine,
              "plan": {**asdict(plan), "out_dir": str(out_dir)},
              "levels": [asdict(lv) for lv in levels]}
    (out_dir / "results.json").write_text(json.dumps(record, indent=2, default=str))
    (out_dir / "report.md").write_text(report + "\n")
    return 1 if any(isinstance(lv, Failure) for lv in levels) else 0


if __name__ == "__main__":
    raise SystemExit(main())

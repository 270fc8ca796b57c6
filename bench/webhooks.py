"""Webhook calls benchmark: OpenAI's SIP endpoint -> webhook -> accept -> agent on the sideband.

Not a test: it measures and reports. It runs the real control process (``gateway run`` with
``openai_calls`` on) against the simulator playing OpenAI in a process of its own
(:mod:`bench.webhooksim`: signed ``realtime.call.incoming`` webhooks, the Calls REST API, the
sideband WebSocket, and the callers), everything on 127.0.0.1. The agent has a Python tool
(``whoami``) and a Python output guardrail, both run by the control process's tool worker pool.
Two parts, each with a fresh gateway and simulator:

* ``latency``: ``--calls`` calls at ``--rate`` per second (600 at 20/s), each held until its
  sideband opened plus ``--hold-ms``, then hung up by the caller. Per call, in the simulator's
  clock: webhook sent (first attempt) -> accept request received, the goal's figure, HTTP both
  ways included; and its parts: webhook sent -> its 200 read, -> the gateway's route log line
  (1 ms resolution), -> the gateway's ``SidebandRecord.started_at`` (the session object made,
  just before the accept is built and sent; from its ``call record``), that -> accept received,
  and accept -> the sideband's ``session.created``. One host, one ``CLOCK_REALTIME``.
* ``sessions``: ramps to each of ``--levels`` concurrent calls at ``--session-rate``; each
  call loops (the simulator's book): a sentence (guardrail check), ``--tool-interval-s`` of
  waiting, a ``whoami`` call (tool run), and its first answer trips the guardrail once. After
  ``--settle`` a ``--window`` is measured: CPU (``/proc/PID/stat``) and RSS/PSS
  (``smaps_rollup``) of the control process, of its tool workers and of its (idle) SIP worker
  side, each against an idle window of the same gateway before any call; the simulator's CPU
  apart. Health per level: calls up, sidebands never dropped, tool outputs within the window
  for every call, tool calls left without an output, the tool round trip (function call
  written -> output back, simulator clock), error events, and WARNING/ERROR lines in the
  gateway's log other than the expected guardrail trips.

Every process runs under ``timeout`` (:class:`tests.support.procs.ManagedProcess`), is
registered on an ``ExitStack`` as soon as it starts and is stopped by pid on exit, error,
Ctrl-C or SIGTERM; the SIP worker the control process forks is reaped by pid
(:class:`bench.load.Reaper`). Waits are bounded. Prints Markdown tables; writes
``results.json`` and ``report.md`` to ``--out``.

Usage (from the repository root)::

    .venv/bin/python -m bench.webhooks                       # both parts, ~3 min
    .venv/bin/python -m bench.webhooks --part latency --rate 20 --calls 600
    .venv/bin/python -m bench.webhooks --part sessions --levels 100 200 300
    .venv/bin/python -m bench.webhooks --quick               # smoke run, ~1 min
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
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, Final

import yaml

from bench.load import Reaper
from bench.metrics import (
    CpuSnapshot,
    CpuWindow,
    call_records,
    child_pid,
    children,
    cmdline,
    cpu_snapshot,
    descendants,
    percentile,
    pss_kb,
    rss_kb,
)
from bench.report import machine_info
from bench.webhooksim import AGENT_INSTRUCTIONS, READY_PREFIX, RELEASE_PREFIX, RESULTS_FILE
from tests.support.ports import free_tcp_port, free_udp_port, free_udp_port_block
from tests.support.procs import ManagedProcess

REPO = Path(__file__).resolve().parents[1]
GATEWAY = [sys.executable, "-m", "gateway"]
WEBHOOK_PATH: Final = "/openai/webhook"
#: Goals of issue 10.
GOAL_P99_MS: Final = 50.0
GOAL_SESSIONS: Final = 200
#: Longest wait for a process to come up.
START_TIMEOUT_S: Final = 30.0
#: The gateway's stop: SIGTERM drains its webhook calls for ``control.drain_timeout_s``.
DRAIN_TIMEOUT_S: Final = 2
STOP_GRACE_S: Final = 20.0
#: How long every call record may take to be logged once the simulator is done.
RECORDS_TIMEOUT_S: Final = 60.0
#: A tool call this close to the end of the window may have its output after it.
TOOL_GRACE_S: Final = 5.0
GUARDRAIL: Final = "trip_word"
#: Call-record fields that would time the gateway's own part of webhook -> accept (Unix
#: times): when the webhook request reached its handler, when the accept request was sent.
#: Today's records do not have them; the part is then reported as not logged.
INTERNAL_FIELDS: Final = ("webhook_received_at", "accept_sent_at")
_PROBLEM = re.compile(r"^.* (WARNING|ERROR|CRITICAL) .*$|^Traceback.*$", re.MULTILINE)
_EXPECTED = re.compile(rf"guardrail {GUARDRAIL} tripped \(retry\)")
_READY = re.compile(r"gateway ready \(pid (\d+)\)")
_ROUTED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO +gateway\.control: "
                     r"openai call (rtc_[0-9a-f]+) -> route ", re.MULTILINE)


class BenchError(RuntimeError):
    """A part could not be measured (a process failed, calls did not come up...)."""


# Processes ----------------------------------------------------------------------------------


def dialplan() -> dict[str, Any]:
    """One agent with a Python tool and a Python output guardrail, for every webhook call."""
    fixture = "tests.fixtures.tools.import_marker"
    return {
        "python_path": str(REPO),
        "tools": {"whoami": {"python": f"{fixture}:whoami"}},
        "agents": {"bench": {
            "instructions": AGENT_INSTRUCTIONS,
            "tools": ["whoami", {"builtin": "end_call"}],
            "guardrails": [{"name": GUARDRAIL, "python": f"{fixture}:never_allowed",
                            "action": "retry", "message": "Say it without that word."}]}},
        "routes": [{"name": "bench", "match": {"ingress": "openai"}, "agent": "bench"}],
    }


@dataclass(frozen=True)
class Rig:
    """A running simulator and gateway, and the directory they exchange files in."""

    sim: ManagedProcess
    sim_pid: int
    gateway: ManagedProcess
    control_pid: int
    run_dir: Path

    def groups(self) -> dict[str, list[int]]:
        """The gateway's processes: ``control``; ``tools`` (its tool workers and what they
        forked); ``sip`` (the preloaded parent, the SIP worker it forked, theirs)."""
        out: dict[str, list[int]] = {"control": [self.control_pid], "tools": [], "sip": []}
        for kid in children(self.control_pid):
            group = "tools" if "gateway.agents.worker" in " ".join(cmdline(kid)) else "sip"
            out[group] += [kid, *descendants(kid)]
        return out

    def release(self, level: int) -> None:
        """Let the simulator go on (start: 0; after a level: the level)."""
        (self.run_dir / f"{RELEASE_PREFIX}{level}").write_text(f"{time.time()}\n")

    def wait_file(self, name: str, timeout_s: float) -> dict[str, Any]:
        """The JSON the simulator writes to ``name``, once it exists.

        Raises:
            BenchError: A process exited, or the file did not appear in time.
        """
        path = self.run_dir / name
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            for proc in (self.sim, self.gateway):
                if not proc.running:
                    raise BenchError(f"{proc.name} exited\n{proc.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"no {name} within {timeout_s:.0f} s\n{self.sim.log_tail()}")
            time.sleep(0.1)
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def wait_records(self, count: int) -> str:
        """The gateway's log once it holds ``count`` call records (bounded)."""
        deadline = time.monotonic() + RECORDS_TIMEOUT_S
        while True:
            text = self.gateway.log_text()
            if text.count("call record:") >= count or time.monotonic() > deadline:
                return text
            time.sleep(0.25)


def start_rig(stack: contextlib.ExitStack, run_dir: Path, sim_args: Sequence[str],
              lifetime_s: float, tool_workers: int) -> Rig:
    """Start the simulator launcher, then ``gateway run`` taking its webhooks; return both."""
    run_dir.mkdir(parents=True, exist_ok=True)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    sim_port, control_port = free_tcp_port(), free_tcp_port()
    while control_port == sim_port:
        control_port = free_tcp_port()
    sim = ManagedProcess(
        [sys.executable, "-m", "bench.webhooksim", "--port", str(sim_port),
         "--webhook-url", f"http://127.0.0.1:{control_port}{WEBHOOK_PATH}",
         "--dir", str(run_dir), "--run-seconds", f"{lifetime_s:.0f}", *sim_args],
        log_path=run_dir / "sim.log", name="sim", env={"OPENAI_WEBHOOK_SECRET": secret},
        cwd=REPO, max_lifetime_s=lifetime_s + 15)
    stack.enter_context(sim)
    sim.wait_ready(lambda log: "webhook simulator listening" in log, port=sim_port,
                   proto="tcp", timeout_s=START_TIMEOUT_S)
    plan_path = run_dir / "dialplan.yaml"
    plan_path.write_text(yaml.safe_dump(dialplan(), sort_keys=False))
    config = {
        "realtime": {"url": f"ws://127.0.0.1:{sim_port}/v1/realtime"},
        "openai_calls": {"enabled": True, "api_url": f"http://127.0.0.1:{sim_port}/v1",
                         "webhook_path": WEBHOOK_PATH},
        "control": {"port": control_port, "drain_timeout_s": DRAIN_TIMEOUT_S},
        "sip": {"transports": [{"type": "udp", "host": "127.0.0.1", "port": free_udp_port()}],
                "rtp_port_start": free_udp_port_block(40), "rtp_port_range": 40},
        "calls": {"tool_workers": tool_workers},
        "dialplan": str(plan_path), "logging": {"level": "INFO", "pjsip_level": 1}}
    config_path = run_dir / "gateway.yaml"
    config_path.write_text(yaml.safe_dump(config))
    reaper = Reaper()  # registered first: runs after the gateway has been stopped
    stack.callback(reaper.close)
    gateway = ManagedProcess(
        [*GATEWAY, "run", "-c", str(config_path), "--run-seconds", f"{lifetime_s:.0f}"],
        log_path=run_dir / "gateway.log", name="gateway",
        env={"OPENAI_API_KEY": "sk-bench-local", "OPENAI_WEBHOOK_SECRET": secret}, cwd=REPO,
        max_lifetime_s=lifetime_s + STOP_GRACE_S + 10, grace_s=STOP_GRACE_S)
    stack.enter_context(gateway)
    try:
        gateway.wait_ready(lambda log: "gateway ready" in log, timeout_s=START_TIMEOUT_S)
    finally:
        with contextlib.suppress(RuntimeError):
            reaper.track(descendants(child_pid(gateway.pid, timeout_s=0.1)))
    ready = _READY.search(gateway.log_text())
    control_pid = child_pid(gateway.pid)
    if ready is None or int(ready[1]) != control_pid:
        raise BenchError(f"the gateway's pid is {control_pid}, its log says "
                         f"{ready[1] if ready else 'nothing'}\n{gateway.log_tail()}")
    rig = Rig(sim, child_pid(sim.pid), gateway, control_pid, run_dir)
    reaper.track([p for pids in rig.groups().values() for p in pids])
    return rig


# Measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """CPU over a window (% of one core) and memory at its end (MB), per process group."""

    seconds: float
    cpu: dict[str, float]
    rss_mb: dict[str, float]
    pss_mb: dict[str, float]
    procs: dict[str, int]
    host_busy: float


def _snapshot(rig: Rig, groups: Mapping[str, Sequence[int]]) -> CpuSnapshot:
    try:
        return cpu_snapshot({**groups, "sim": [rig.sim_pid]})
    except (FileNotFoundError, ProcessLookupError):
        raise BenchError(f"a process is gone: {dict(groups)}\n{rig.gateway.log_tail()}"
                         ) from None


def usage_between(rig: Rig, groups: dict[str, list[int]], a: CpuSnapshot) -> Usage:
    """CPU since snapshot ``a`` and memory now, of ``groups`` (which must not have changed)."""
    b = _snapshot(rig, groups)
    now = rig.groups()
    if {k: sorted(v) for k, v in now.items()} != {k: sorted(v) for k, v in groups.items()}:
        raise BenchError(f"the gateway's processes changed: {groups} -> {now}")
    window = CpuWindow.between(a, b)
    return Usage(window.seconds, dict(window.groups),
                 {k: sum(rss_kb(p) for p in v) / 1024 for k, v in groups.items()},
                 {k: sum(pss_kb(p) for p in v) / 1024 for k, v in groups.items()},
                 {k: len(v) for k, v in groups.items()}, window.host_busy)


def measure(rig: Rig, seconds: float) -> Usage:
    """:func:`usage_between` over the next ``seconds``, checking the processes meanwhile."""
    groups = rig.groups()
    a = _snapshot(rig, groups)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not (rig.gateway.running and rig.sim.running):
            raise BenchError(f"a process exited during the window\n{rig.gateway.log_tail()}")
        time.sleep(min(left, 0.5))
    return usage_between(rig, groups, a)


@dataclass(frozen=True)
class LogProblems:
    """WARNING/ERROR lines of the gateway's log.

    Attributes:
        trips: The expected ones: the guardrail tripping, once per call by design.
        other: Every other one.
        kinds: Distinct messages of ``other`` (call ids elided) -> count.
        at: Unix time of each of ``other`` (``nan`` for a line without a stamp).
    """

    trips: int
    other: int
    kinds: dict[str, int]
    at: list[float]

    def between(self, start: float, end: float) -> int:
        """How many of ``other`` were logged between ``start`` and ``end``."""
        return sum(1 for t in self.at if start <= t <= end)


def log_problems(log: str) -> LogProblems:
    """The gateway log's WARNING/ERROR lines, the guardrail's expected trips apart."""
    trips = 0
    kinds: dict[str, int] = {}
    at: list[float] = []
    for m in _PROBLEM.finditer(log):
        if _EXPECTED.search(m[0]):
            trips += 1
            continue
        text = re.sub(r"rtc_[0-9a-f]+", "rtc_…", m[0][24:])[:160]
        kinds[text] = kinds.get(text, 0) + 1
        at.append(_log_time(m[0]))
    return LogProblems(trips, len(at), kinds, at)


def _log_time(line: str) -> float:
    try:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return float("nan")


def _ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (b - a) * 1000


@dataclass(frozen=True)
class Dist:
    """Nearest-rank percentiles of a set of durations, ms."""

    n: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Dist:
        """The distribution of the non-``None`` ``values``."""
        vals = [v for v in values if v is not None]
        return cls(len(vals), percentile(vals, 50), percentile(vals, 95), percentile(vals, 99),
                   max(vals) if vals else float("nan"))


def _lag(samples: Sequence[Sequence[float]], start: float, end: float) -> Dist:
    return Dist.of([lag for at, lag in samples if start <= at <= end])


# Part 1: webhook -> accept ------------------------------------------------------------------


def run_latency(stack: contextlib.ExitStack, args: argparse.Namespace, out: Path
                ) -> dict[str, Any]:
    """Calls at ``--rate``, each set up and hung up; returns the figures of the part."""
    duration = args.calls / args.rate
    lifetime = START_TIMEOUT_S + duration + 120
    rig = start_rig(stack, out / "latency",
                    ["--rate", f"{args.rate:g}", "latency", "--calls", str(args.calls),
                     "--hold-ms", f"{args.hold_ms:g}"], lifetime, args.tool_workers)
    time.sleep(args.settle)
    groups = rig.groups()
    a = _snapshot(rig, groups)
    rig.release(0)
    sim = rig.wait_file(RESULTS_FILE, duration + 90)
    usage = usage_between(rig, groups, a)
    log = rig.wait_records(args.calls)
    routed = {m[2]: _log_time(m[1]) for m in _ROUTED.finditer(log)}
    records = {r["call_id"]: r for r in call_records(log) if "call_id" in r}
    rows: list[dict[str, Any]] = sim["calls"]
    for row in rows:
        record = records.get(row["call_id"], {})
        row["routed_at"] = routed.get(row["call_id"])
        row["session_at"] = record.get("started_at")
        # Not in today's call record (see INTERNAL_FIELDS); read when a gateway logs them.
        for name in INTERNAL_FIELDS:
            row[f"gw_{name}"] = record.get(name)
    sent = [r["webhook_sent_at"] for r in rows if r["webhook_sent_at"] is not None]
    problems = log_problems(log)
    figures = {
        "sent_to_accept": Dist.of([_ms(r["webhook_sent_at"], r["accepted_at"]) for r in rows]),
        "sent_to_answered": Dist.of([_ms(r["webhook_sent_at"], r["webhook_answered_at"])
                                     for r in rows]),
        "sent_to_routed": Dist.of([_ms(r["webhook_sent_at"], r["routed_at"]) for r in rows]),
        "sent_to_session": Dist.of([_ms(r["webhook_sent_at"], r["session_at"]) for r in rows]),
        "session_to_accept": Dist.of([_ms(r["session_at"], r["accepted_at"]) for r in rows]),
        "accept_to_sideband": Dist.of([_ms(r["accepted_at"], r["sideband_at"]) for r in rows]),
        "internal": Dist.of([_ms(r["gw_webhook_received_at"], r["gw_accept_sent_at"])
                             for r in rows]),
    }
    return {
        "calls": len(rows), "rate": args.rate,
        "achieved_rate": (len(sent) - 1) / (max(sent) - min(sent)) if len(sent) > 1 else 0.0,
        "accepted": sum(1 for r in rows if r["accepted_at"] is not None),
        "failed": sum(1 for r in rows if r["error"]),
        "errors": sorted({r["error"] for r in rows if r["error"]})[:5],
        "webhook_retries": sum(r["webhook_attempts"] - 1 for r in rows),
        "records": log.count("call record:"),
        "trips": problems.trips, "log_problems": problems.other, "log_kinds": problems.kinds,
        "usage": asdict(usage), "sim_lag": asdict(_lag(sim["lag"], min(sent, default=0),
                                                         float("inf"))),
        "figures": {k: asdict(v) for k, v in figures.items()},
        "rows": rows,
    }


# Part 2: concurrent sessions ----------------------------------------------------------------


def run_sessions(stack: contextlib.ExitStack, args: argparse.Namespace, out: Path
                 ) -> dict[str, Any]:
    """Ramp through ``--levels``, measure each; returns the figures of the part."""
    per_level = [(lv - prev) / args.session_rate + args.settle + args.tool_interval_s
                 + args.window + 30
                 for prev, lv in zip([0, *args.levels], args.levels, strict=False)]
    lifetime = START_TIMEOUT_S + args.idle_window + sum(per_level) + 120
    rig = start_rig(stack, out / "sessions",
                    ["--rate", f"{args.session_rate:g}", "--tool-interval-s",
                     f"{args.tool_interval_s:g}", "sessions", "--levels",
                     *map(str, args.levels)], lifetime, args.tool_workers)
    time.sleep(args.settle)
    idle = measure(rig, args.idle_window)
    rig.release(0)
    windows: list[dict[str, Any]] = []
    for level, budget in zip(args.levels, per_level, strict=True):
        ready = rig.wait_file(f"{READY_PREFIX}{level}", budget)
        print(f"  {level} sessions up in {ready['ramp_s']:.1f} s; measuring...", file=sys.stderr)
        # Every new call has made its first tool call (the loop's first wait) before the window.
        time.sleep(args.settle + args.tool_interval_s)
        start = time.time()
        usage = measure(rig, args.window)
        windows.append({"level": level, "ready": ready, "start": start, "end": time.time(),
                        "usage": usage})
        rig.release(level)
    sim = rig.wait_file(RESULTS_FILE, 60)
    rows: list[dict[str, Any]] = sim["calls"]
    log = rig.wait_records(len(rows))
    records = [r for r in call_records(log) if r.get("ingress") == "openai"]
    problems = log_problems(log)
    levels = [_level_figures(w, rows, idle, sim["lag"], args.tool_interval_s, problems)
              for w in windows]
    errors = [code for r in rows for _, code in r["errors"]]
    return {
        "idle": asdict(idle), "levels": levels, "calls": len(rows),
        "records": len(records),
        "record_tool_calls": sum(len(r.get("tool_calls") or []) for r in records),
        "record_trips": sum(len(r.get("guardrail_events") or []) for r in records),
        "trips": problems.trips, "log_problems": problems.other, "log_kinds": problems.kinds,
        "error_events": _count(errors),
        "ended_by": dict(sorted(_count(str(r["ended_by"]) for r in rows).items())),
        "tool_interval_s": args.tool_interval_s, "rows": rows,
    }


def _count(values: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _level_figures(window: dict[str, Any], rows: Sequence[dict[str, Any]], idle: Usage,
                   lag: Sequence[Sequence[float]], interval_s: float,
                   problems: LogProblems) -> dict[str, Any]:
    level, start, end = window["level"], window["start"], window["end"]
    usage: Usage = window["usage"]
    mine = [r for r in rows if r["level"] <= level]
    healthy = outputs = missing = errors = 0
    rtts: list[float | None] = []
    log_in_window = problems.between(start, end)
    for r in mine:
        done = [(c, o) for c, o in r["tool_calls"] if o is not None and start <= o <= end]
        lost = [c for c, o in r["tool_calls"] if o is None and start <= c <= end - TOOL_GRACE_S]
        failed = [code for at, code in r["errors"] if start <= at <= end]
        outputs += len(done)
        missing += len(lost)
        errors += len(failed)
        rtts += [(o - c) * 1000 for c, o in done]
        alive = (r["accepted_at"] is not None and r["sideband_at"] is not None
                 and not r["error"] and r["sidebands"] == 1 and r["ended_by"] == "caller")
        if alive and done and not lost and not failed and not log_in_window:
            healthy += 1
    # The calls that ramped up to this level, while the previous level's sessions ran.
    ramp = [r for r in rows if r["level"] == level]
    sent = [r["webhook_sent_at"] for r in ramp if r["webhook_sent_at"] is not None]
    per = {k: (usage.cpu[k] - idle.cpu[k]) / level for k in usage.cpu}
    pss = {k: (usage.pss_mb[k] - idle.pss_mb[k]) / level for k in usage.pss_mb}
    return {
        "level": level, "ramp_s": window["ready"]["ramp_s"], "up": window["ready"]["up"],
        "healthy": healthy, "tool_outputs": outputs, "missing_outputs": missing,
        "outputs_per_session_s": outputs / level / usage.seconds,
        "expected_per_session_s": 1 / interval_s,
        "error_events": errors, "log_problems": log_in_window,
        "other_cpu": usage.host_busy - sum(usage.cpu.values()),
        "tool_rtt": asdict(Dist.of(rtts)), "usage": asdict(usage),
        "cpu_per_session_above_idle": per, "pss_per_session_above_idle": pss,
        "sim_lag": asdict(_lag(lag, start, end)),
        "ramp_accept": asdict(Dist.of([_ms(r["webhook_sent_at"], r["accepted_at"])
                                       for r in ramp])),
        "ramp_sim_lag": asdict(_lag(lag, min(sent, default=0.0),
                                    window["ready"]["ready_at"])),
    }


# Report -------------------------------------------------------------------------------------


def _f(value: float, digits: int = 1) -> str:
    return "–" if value != value else f"{value:.{digits}f}"  # NaN


def _dist_row(name: str, d: Mapping[str, float], goal: str = "") -> str:
    return (f"| {name} | {d['n']:.0f} | {_f(d['p50'])} | {_f(d['p95'])} | {_f(d['p99'])} | "
            f"{_f(d['max'])} |{goal}")


def _kinds(kinds: Mapping[str, int]) -> str:
    return "; ".join(f"{n} × `{text}`" for text, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


def render_latency(r: Mapping[str, Any]) -> str:
    """The Markdown of part 1."""
    f = r["figures"]
    met = "met" if f["sent_to_accept"]["p99"] <= GOAL_P99_MS else "**missed**"
    u = r["usage"]
    cores = 100 * (os.cpu_count() or 1)
    lines = [
        f"Webhook -> accept, {r['calls']} calls at {r['rate']:g}/s (achieved "
        f"{r['achieved_rate']:.2f}/s): {r['accepted']} accepted, {r['failed']} failed, "
        f"{r['webhook_retries']} webhook retries, {r['records']} call records.",
        "",
        "| interval (ms) | n | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
        _dist_row("**webhook sent → accept received** (simulator, HTTP both ways; goal p99 ≤ "
                  f"{GOAL_P99_MS:g}: {met})", f["sent_to_accept"]),
        _dist_row("webhook sent → its 200 read (simulator)", f["sent_to_answered"]),
        _dist_row("webhook sent → gateway logs the route (1 ms log stamps)",
                  f["sent_to_routed"]),
        _dist_row("webhook sent → gateway made the sideband session (`started_at`)",
                  f["sent_to_session"]),
        _dist_row("gateway made the session → accept received (build, POST, HTTP)",
                  f["session_to_accept"]),
        _dist_row("accept received → sideband `session.created` written",
                  f["accept_to_sideband"]),
        _dist_row("gateway-internal: webhook received → accept sent (call record)",
                  f["internal"]) if f["internal"]["n"] else
        "| gateway-internal: webhook received → accept sent | – | not in the call record "
        f"(no `{'`, `'.join(INTERNAL_FIELDS)}`) | | | |",
        "",
        f"Over the run ({u['seconds']:.1f} s): control process {u['cpu']['control']:.1f} % of "
        f"one core ({u['cpu']['control'] * u['seconds'] * 10 / max(r['calls'], 1):.2f} ms of "
        f"CPU per call), tool workers {u['cpu']['tools']:.1f} %, SIP side "
        f"{u['cpu']['sip']:.1f} %, simulator {u['cpu']['sim']:.1f} %; host busy "
        f"{u['host_busy']:.0f} % of {cores}, of which none of these "
        f"{max(0.0, u['host_busy'] - sum(u['cpu'].values())):.0f} %; simulator loop lag p99 / "
        f"max {_f(r['sim_lag']['p99'])} / {_f(r['sim_lag']['max'])} ms; gateway log: "
        f"{r['log_problems']} WARNING/ERROR lines"
        + (f" ({_kinds(r['log_kinds'])})" if r["log_kinds"] else "") + ".",
    ]
    return "\n".join(lines)


def render_sessions(r: Mapping[str, Any]) -> str:
    """The Markdown of part 2."""
    idle = r["idle"]
    cores = 100 * (os.cpu_count() or 1)
    lines = [
        f"Concurrent sideband sessions, each with a Python tool every ~{r['tool_interval_s']:g} s"
        f" and a Python output guardrail; idle gateway: control {idle['cpu']['control']:.2f} % "
        f"CPU, {idle['pss_mb']['control']:.1f} MB PSS; tool workers "
        f"{idle['cpu']['tools']:.2f} %, {idle['pss_mb']['tools']:.1f} MB PSS "
        f"({idle['procs']['tools']} processes); SIP side {idle['cpu']['sip']:.2f} %, "
        f"{idle['pss_mb']['sip']:.1f} MB PSS.",
        "",
        "| sessions | up / healthy | control CPU % | control CPU %/session above idle | "
        "control PSS MB | control PSS MB/session above idle | tool workers CPU % / PSS MB | "
        "tool outputs/session/s (at most) | missing outputs | tool round trip p50 / p99 ms | "
        "error events / log problems in window | simulator CPU % / loop lag p99 ms | "
        f"host busy % of {cores} (of which other) | ramp to this level: webhook → accept "
        "p50 / p99 / max ms (simulator loop lag p99 / max) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in r["levels"]:
        u, ra, rl = lv["usage"], lv["ramp_accept"], lv["ramp_sim_lag"]
        lines.append(
            f"| {lv['level']} | {lv['up']} / {lv['healthy']} | {u['cpu']['control']:.1f} | "
            f"{lv['cpu_per_session_above_idle']['control']:.3f} | "
            f"{u['pss_mb']['control']:.1f} | {lv['pss_per_session_above_idle']['control']:.3f} "
            f"| {u['cpu']['tools']:.1f} / {u['pss_mb']['tools']:.1f} | "
            f"{lv['outputs_per_session_s']:.3f} ({lv['expected_per_session_s']:.3f}) | "
            f"{lv['missing_outputs']} | {_f(lv['tool_rtt']['p50'])} / "
            f"{_f(lv['tool_rtt']['p99'])} | {lv['error_events']} / {lv['log_problems']} | "
            f"{u['cpu']['sim']:.1f} / {_f(lv['sim_lag']['p99'])} | {u['host_busy']:.0f} "
            f"({max(0.0, lv['other_cpu']):.0f}) | {_f(ra['p50'])} / {_f(ra['p99'])} / "
            f"{_f(ra['max'])} ({_f(rl['p99'])} / {_f(rl['max'])}) |")
    best = max((lv["level"] for lv in r["levels"] if lv["healthy"] == lv["level"]), default=0)
    met = "met" if best >= GOAL_SESSIONS else "**missed**"
    errors = ", ".join(f"{n} × `{code}`" for code, n in r["error_events"].items()) or "none"
    lines += [
        "",
        f"Most sessions, every one healthy through its window: {best} (goal ≥ {GOAL_SESSIONS}: "
        f"{met}). {r['calls']} calls, {r['records']} call records ({r['record_tool_calls']} "
        f"tool calls, {r['record_trips']} guardrail trips recorded; {r['trips']} trips logged, "
        f"one per call by design); ended by {r['ended_by']}. Error events over the whole run: "
        f"{errors}. Gateway log, WARNING/ERROR lines other than the trips: "
        f"{r['log_problems']}" + (f" ({_kinds(r['log_kinds'])})" if r["log_kinds"] else "")
        + ".",
    ]
    return "\n".join(lines)


# Command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m bench.webhooks",
                                description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("latency", "sessions", "both"), default="both")
    p.add_argument("--rate", type=float, default=20.0,
                   help="latency: calls per second (default 20)")
    p.add_argument("--calls", type=int, default=600, help="latency: calls (default 600)")
    p.add_argument("--hold-ms", type=float, default=300.0,
                   help="latency: a call stays this long after its sideband opened (300)")
    p.add_argument("--levels", type=int, nargs="+", default=[100, 200],
                   help="sessions: concurrent calls to measure at (default 100 200)")
    p.add_argument("--session-rate", type=float, default=20.0,
                   help="sessions: ramp, calls per second (default 20)")
    p.add_argument("--tool-interval-s", type=float, default=10.0,
                   help="sessions: each call waits this long between tool calls (default 10)")
    p.add_argument("--window", type=float, default=20.0, help="sessions: window, s (20)")
    p.add_argument("--idle-window", type=float, default=10.0, help="idle window, s (10)")
    p.add_argument("--settle", type=float, default=5.0,
                   help="wait after start, and after each level is up (plus one tool "
                   "interval), s (5)")
    p.add_argument("--tool-workers", type=int, default=2,
                   help="the gateway's calls.tool_workers (default 2)")
    p.add_argument("--out", type=Path, help="artefact directory (default: a new /tmp dir)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 60 calls, levels 10 20, 6 s windows, tools every 3 s")
    return p


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds the ExitStack, which stops every process


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when measured, 1 when a part failed, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    if args.quick:
        args.calls, args.levels, args.window, args.idle_window, args.settle = \
            60, [10, 20], 6.0, 4.0, 2.0
        args.tool_interval_s = 3.0
    if min(args.rate, args.session_rate, args.calls, args.window, args.idle_window,
           args.tool_interval_s) <= 0 or args.levels != sorted(set(args.levels)) \
            or args.levels[0] < 1 or args.levels[-1] > 500:
        raise SystemExit("rates, counts and windows must be positive; --levels increasing, "
                         "at most 500 (openai_calls.max_sessions)")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _on_sigterm)
    machine = machine_info()
    machine.pop("sipp", None)
    machine.pop("pjsua2", None)
    record: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": shlex.join([".venv/bin/python", "-m", "bench.webhooks",
                               *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine, "args": {k: str(v) for k, v in vars(args).items()}}
    print(f"artefacts in {out}; load average {machine['load average at start']}",
          file=sys.stderr)
    parts: list[tuple[str, Callable[..., dict[str, Any]], Callable[..., str]]] = []
    if args.part in ("latency", "both"):
        parts.append(("latency", run_latency, render_latency))
    if args.part in ("sessions", "both"):
        parts.append(("sessions", run_sessions, render_sessions))
    status = 0
    report: list[str] = []
    try:
        for name, run, render in parts:
            print(f"{name}...", file=sys.stderr)
            try:
                with contextlib.ExitStack() as stack:
                    result = run(stack, args, out)
            except (RuntimeError, OSError, ValueError, KeyError) as exc:
                print(f"  failed: {exc}", file=sys.stderr)
                record[name] = {"failed": str(exc)}
                status = 1
                continue
            record[name] = result
            report.append(render(result))
    except KeyboardInterrupt:
        print("interrupted: every process this run started has been stopped", file=sys.stderr)
        return 130
    record["load_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = "\n\n".join(report)
    print(text)
    (out / "report.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(record, indent=1, default=str))
    return status


if __name__ == "__main__":
    raise SystemExit(main())

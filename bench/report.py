"""Results of the load benchmark and their reporting: machine facts, tables, the doc block.

The result values (:class:`IdleResult`, :class:`LevelResult`, :class:`LevelFailure`) live here
so that ``python -m bench.load`` (where the orchestrator is ``__main__``) and this module agree
on one class for each.

:func:`update_doc` rewrites only the part of ``docs/benchmarks.md`` between the markers of
one binding (:func:`begin_marker` and :func:`end_marker` of ``source`` or ``wheel``), so a run
on one binding leaves the other binding's block and the hand-written notes around them alone;
a file without that binding's markers gets the block appended, and a missing file is created
with a short skeleton. Front-mode runs (``--workers N``: one control process, N SIP workers,
a Kamailio front) have blocks of their own, ``source, front`` and ``wheel, front``
(:func:`block_label`), so they never replace the single-process blocks.
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from bench.metrics import RtpSummary, percentile
from bench.turns import GOAL_P99_MS, TurnLatency, TurnReport

#: Distribution of the third-party PyPI wheel (``gateway.sip.binding.WHEEL_DISTRIBUTION``).
WHEEL_DISTRIBUTION = "pjsua2-python"
#: Distribution our source build installs (``scripts/build-pjsua2.sh``).
SOURCE_DISTRIBUTION = "pjsua2"


#: Names of the gateway's process groups in front mode, in report order.
GROUPS = ("control", "workers", "kamailio")
_FRONT = "front"


def begin_marker(label: str) -> str:
    """The line that opens the generated block ``label`` (``source``, ``wheel``, or one of
    them with ``, front`` for front-mode runs)."""
    kind, _, variant = label.partition(", ")
    how = f"the {kind} binding" + (" with --workers" if variant == _FRONT else "")
    return (f"<!-- bench/load.py [{label}]: generated block begins; re-running the benchmark "
            f"on {how} replaces it -->")


def end_marker(label: str) -> str:
    """The line that closes the generated block of binding ``label``."""
    return f"<!-- bench/load.py [{label}]: generated block ends -->"


@dataclass(frozen=True)
class BindingInfo:
    """The pjsua2 binding benchmarked: the one the interpreter running the bench imports.

    ``kind`` and ``distribution`` come from ``importlib.metadata`` in the bench process;
    ``pjproject`` and ``call_slots`` from the gateway's own start-up log line when it was seen
    (``pjsua2: pjproject 2.17 (source build, pjsua2), 512 call slots: ...``).
    """

    kind: str
    distribution: str
    distribution_version: str
    pjproject: str
    call_slots: int | None = None

    @property
    def label(self) -> str:
        """``source`` or ``wheel``: names the doc block."""
        return self.kind

    @property
    def title(self) -> str:
        """For headings: ``source build (pjproject 2.17)``."""
        what = "source build" if self.kind == "source" else "PyPI wheel"
        return f"{what} (pjproject {self.pjproject})"


def block_label(binding: BindingInfo, workers: int | None) -> str:
    """The doc block a run writes: the binding's (``source``), or in front mode
    (``workers`` set) its front block (``source, front``)."""
    return binding.label if workers is None else f"{binding.label}, {_FRONT}"


@dataclass(frozen=True)
class Plan:
    """What to run: call counts, modes, window lengths, where to put the artefacts."""

    calls: tuple[int, ...]
    modes: tuple[str, ...]
    window_s: float
    idle_window_s: float
    settle_s: float
    sim_speed: float
    repeat: int
    out_dir: Path
    #: Calls per gateway process; ``None``: all of a level's calls in one process.
    calls_per_gateway: int | None = None
    #: Front mode: SIP workers behind Kamailio in one ``gateway run``; ``None``: off.
    workers: int | None = None
    #: Front mode: each worker's ``sip.max_calls`` is ceil(calls / workers) plus this.
    worker_margin: int = 2
    #: New calls per second, all SIPps together.
    call_rate: float = 20.0
    #: Front mode: the most calls a worker can take (the wheel: 3); ``None``: no cap.
    worker_cap: int | None = None


@dataclass(frozen=True)
class GroupUsage:
    """One group of gateway processes in front mode (``control``, ``workers``, ``kamailio``):
    how many processes, their CPU (% of one core) and summed RSS and PSS (MiB)."""

    name: str
    procs: int
    cpu_pct: float
    rss_mb: float
    pss_mb: float


@dataclass(frozen=True)
class IdleResult:
    """One gateway process with no call, in pass ``run`` (1-based)."""

    run: int
    window_s: float
    cpu_pct: float
    rss_mb: float
    pss_mb: float
    sim_cpu_pct: float
    host_busy_pct: float
    threads: tuple[tuple[str, float], ...]
    #: Gateway processes measured (front mode: control, workers and Kamailio's processes);
    #: ``cpu_pct``, ``rss_mb`` and ``pss_mb`` are their sums.
    procs: int = 1
    #: Front mode: the same, per process group.
    groups: tuple[GroupUsage, ...] = ()


@dataclass(frozen=True)
class LevelResult:
    """One mode at one call count in pass ``run``; CPU in % of one core, memory in MiB."""

    run: int
    mode: str
    calls: int
    procs: int
    window_s: float
    gw_cpu_pct: float
    gw_cpu_per_call: float
    gw_net_per_call: float
    gw_rss_mb: tuple[float, ...]
    gw_pss_mb: tuple[float, ...]
    sim_cpu_pct: float
    sim_rss_mb: float
    sipp_cpu_pct: float
    host_busy_pct: float
    rtp: RtpSummary
    answer_ms: tuple[float, ...]
    calls_ok: int
    calls_failed: int
    log_problems: int
    call_records: int
    agent_responses: int
    frame_counters: tuple[tuple[str, int], ...]
    threads: tuple[tuple[str, float], ...]
    capture_dropped: int | None
    #: Front mode: SIP workers of the one ``gateway run`` (``procs`` counts every gateway
    #: process: control, workers, Kamailio); 0: not front mode.
    workers: int = 0
    #: Front mode: CPU and memory per process group.
    groups: tuple[GroupUsage, ...] = ()
    #: Turn latency: every turn measured, and why the simulator's other turns were not.
    turns: TurnReport = TurnReport((), (), 0)

    @property
    def rss_per_call(self) -> float:
        """RSS of all gateway processes together / calls, MiB."""
        return sum(self.gw_rss_mb) / self.calls

    @property
    def pss_per_call(self) -> float:
        """PSS of all gateway processes together / calls, MiB (shared pages counted once)."""
        return sum(self.gw_pss_mb) / self.calls

    def counter(self, name: str) -> int:
        """A frame counter summed over the call records (``media.tx_frames_dropped``...)."""
        return dict(self.frame_counters).get(name, 0)

    @property
    def background_pct(self) -> float:
        """Host CPU not used by the gateways, the simulator or SIPp (tcpdump, other work)."""
        return self.host_busy_pct - self.gw_cpu_pct - self.sim_cpu_pct - self.sipp_cpu_pct

    @property
    def answer_p50_ms(self) -> float:
        """Median INVITE -> 200 time."""
        return percentile(self.answer_ms, 50)

    @property
    def answer_p95_ms(self) -> float:
        """95th percentile INVITE -> 200 time."""
        return percentile(self.answer_ms, 95)


@dataclass(frozen=True)
class LevelFailure:
    """A level that could not be measured, and why."""

    run: int
    mode: str
    calls: int
    reason: str

_SKELETON = """# Benchmarks

Measured with `bench/load.py` (see `bench/README.md` for the method). Each binding's block
is generated by its last full run; the notes after them are written by hand.

{block}

## Notes

(to be written after looking at the numbers)
"""


def _first(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1]
    except OSError:
        pass
    return "?"


def _sipp_version() -> str:
    try:
        out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=5,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return next((line.strip() for line in out.splitlines() if "SIPp v" in line), "?")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def detect_binding() -> BindingInfo:
    """The pjsua2 binding this interpreter has: the PyPI wheel if ``pjsua2-python`` is
    installed (its ``pjsua2/`` package shadows a built ``pjsua2.py``), else our source build.

    The pjproject version is the distribution's (``2.15.1.post1`` -> ``2.15.1``) until the
    gateway's start-up log confirms it.
    """
    wheel = _version(WHEEL_DISTRIBUTION)
    if wheel is not None:
        base = re.match(r"\d+(?:\.\d+)*", wheel)
        return BindingInfo("wheel", WHEEL_DISTRIBUTION, wheel, base[0] if base else wheel)
    source = _version(SOURCE_DISTRIBUTION)
    if source is not None:
        return BindingInfo("source", SOURCE_DISTRIBUTION, source, source)
    raise SystemExit("no pjsua2 binding in this interpreter: run scripts/dev.sh setup")


_BINDING_LOG = re.compile(r"pjsua2: pjproject (\S+) \((PyPI wheel|source build), ([^)]*)\), "
                          r"(\d+) call slots")


def confirm_binding(found: BindingInfo, gateway_log: str) -> BindingInfo:
    """``found`` with the pjproject version and call slots the gateway logged at start.

    Raises:
        RuntimeError: The gateway loaded the other binding than this interpreter reports.
    """
    m = _BINDING_LOG.search(gateway_log)
    if m is None:
        return found
    kind = "wheel" if m[2] == "PyPI wheel" else "source"
    if kind != found.kind:
        raise RuntimeError(f"the gateway runs the {kind} binding ({m[3]}), this interpreter "
                           f"reports the {found.kind} ({found.distribution})")
    return replace(found, pjproject=m[1], call_slots=int(m[4]))


def machine_info() -> dict[str, str]:
    """The facts a reader needs to compare numbers: CPU, memory, OS and versions."""
    mem_kb = _first("/proc/meminfo", "MemTotal").split()[0]
    wheel, source = _version(WHEEL_DISTRIBUTION), _version(SOURCE_DISTRIBUTION)
    pj = (f"PyPI wheel ({WHEEL_DISTRIBUTION} {wheel})" if wheel else
          f"source build ({SOURCE_DISTRIBUTION} {source})" if source else "not installed")
    load = os.getloadavg()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": _first("/proc/cpuinfo", "model name"),
        "ram": f"{int(mem_kb) / 1024 / 1024:.1f} GiB" if mem_kb.isdigit() else "?",
        "os": _first("/etc/os-release", "PRETTY_NAME").strip('"'),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pjsua2": pj,
        "sipp": _sipp_version(),
        "load average at start": " ".join(f"{x:.2f}" for x in load),
    }


def _f(value: float, digits: int = 2) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _spread(values: Sequence[float], digits: int = 2) -> str:
    """``median (min–max)``, or just the value when there is one."""
    if not values:
        return "–"
    mid = statistics.median(values)
    if len(values) == 1:
        return _f(mid, digits)
    return f"{_f(mid, digits)} ({_f(min(values), digits)}–{_f(max(values), digits)})"


def _counters(r: LevelResult) -> str:
    if not r.call_records:
        return "no call records"
    if not r.frame_counters:
        return "not exposed"
    return ", ".join(f"{k} {v}" for k, v in r.frame_counters)


#: Call-record counters of frames lost inside the gateway: caller frames dropped because the
#: loop fell behind, agent frames dropped on a full playout buffer, silence inserted mid-item.
_RX_DROPPED = "media.rx_dropped"
_TX_DROPPED = "media.tx_frames_dropped"
_TX_UNDERRUN = "media.tx_underrun_frames"


def _drops(runs: Sequence[LevelResult]) -> str:
    if not any(r.call_records for r in runs):
        return "no records"
    return " / ".join(str(sum(r.counter(name) for r in runs))
                      for name in (_TX_DROPPED, _TX_UNDERRUN, _RX_DROPPED))


def _idle_other(idle: IdleResult) -> float:
    return max(0.0, idle.host_busy_pct - idle.cpu_pct - idle.sim_cpu_pct)


def _calls_per_proc(r: LevelResult) -> str:
    if r.workers:
        return f"{r.calls / r.workers:.3g}"
    return f"{r.calls / r.procs:.3g}" if r.procs else "–"


def _procs(procs: int, groups: Sequence[GroupUsage]) -> str:
    """``1 + 2 + 9`` (control + workers + Kamailio) in front mode, else the count."""
    return " + ".join(str(g.procs) for g in groups) if groups else str(procs)


def _summary(idles: Sequence[IdleResult], ok: Sequence[LevelResult], front: bool) -> str:
    procs = "gw procs (control + workers + Kamailio)" if front else "gw procs"
    per = "calls/worker" if front else "calls/proc"
    if front:
        idle = (f"| idle front | 0 | {_procs(idles[0].procs, idles[0].groups) if idles else '–'} "
                f"| 0 | {_spread([i.cpu_pct for i in idles])} | – | – "
                f"| {_spread([i.rss_mb for i in idles], 1)} in all "
                f"| {_spread([i.pss_mb for i in idles], 1)} in all | – | – ")
    else:
        idle = (f"| idle process | 0 | 1 | 0 | {_spread([i.cpu_pct for i in idles])} | – | – "
                f"| {_spread([i.rss_mb for i in idles], 1)} per process "
                f"| {_spread([i.pss_mb for i in idles], 1)} per process | – | – ")
    rows = [
        f"| mode | calls | {procs} | {per} | gw CPU % (all procs) | gw CPU %/call "
        "| above idle %/call | gw RSS MB/call | gw PSS MB/call | sim CPU %/call "
        "| SIPp CPU %/call | host busy % (of 200) | playout dropped / underrun / caller dropped "
        "| late > 40 ms | lost | jitter p99 / max ms | INVITE→200 p50 / p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        idle + f"| {_spread([i.host_busy_pct for i in idles], 1)} | – | – | – | – | – |",
    ]
    levels: dict[tuple[str, int], list[LevelResult]] = {}
    for r in ok:
        levels.setdefault((r.mode, r.calls), []).append(r)
    for (mode, calls), runs in levels.items():
        answers = [ms for r in runs for ms in r.answer_ms]
        rows.append(
            f"| {mode} | {calls} | {_procs(runs[0].procs, runs[0].groups)} "
            f"| {_calls_per_proc(runs[0])} "
            f"| {_spread([r.gw_cpu_pct for r in runs], 1)} "
            f"| {_spread([r.gw_cpu_per_call for r in runs], 3)} "
            f"| {_spread([r.gw_net_per_call for r in runs], 3)} "
            f"| {_spread([r.rss_per_call for r in runs], 2)} "
            f"| {_spread([r.pss_per_call for r in runs], 2)} "
            f"| {_spread([r.sim_cpu_pct / r.calls for r in runs])} "
            f"| {_spread([r.sipp_cpu_pct / r.calls for r in runs])} "
            f"| {_spread([r.host_busy_pct for r in runs], 1)} | {_drops(runs)} "
            f"| {sum(r.rtp.late for r in runs)} | {sum(r.rtp.lost for r in runs)} "
            f"| {_f(max(r.rtp.jitter_p99_ms for r in runs))} / "
            f"{_f(max(r.rtp.jitter_max_ms for r in runs))} "
            f"| {_f(percentile(answers, 50), 1)} / {_f(percentile(answers, 95), 1)} |")
    return "\n".join(rows)


def _cpu_table(idles: Sequence[IdleResult], ok: Sequence[LevelResult]) -> str:
    rows = [
        "| run | mode | calls | gw procs | gw CPU % | gw CPU %/call | above idle %/call "
        "| gw RSS MB/proc | gw RSS MB total | gw PSS MB total | sim CPU % | sim RSS MB "
        f"| SIPp CPU % | host busy % (of {os.cpu_count() or 1}00) | of which other |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows += [f"| {i.run} | idle | 0 | {i.procs} | {_f(i.cpu_pct)} | – | – "
             f"| {_f(i.rss_mb / i.procs, 1)} "
             f"| {_f(i.rss_mb, 1)} | {_f(i.pss_mb, 1)} | {_f(i.sim_cpu_pct)} | – | – "
             f"| {_f(i.host_busy_pct, 1)} | {_f(_idle_other(i), 1)} |" for i in idles]
    for r in ok:
        rss = sum(r.gw_rss_mb) / len(r.gw_rss_mb) if r.gw_rss_mb else math.nan
        rows.append(
            f"| {r.run} | {r.mode} | {r.calls} | {r.procs} | {_f(r.gw_cpu_pct)} | "
            f"{_f(r.gw_cpu_per_call, 3)} | {_f(r.gw_net_per_call, 3)} | {_f(rss, 1)} | "
            f"{_f(sum(r.gw_rss_mb), 1)} | {_f(sum(r.gw_pss_mb), 1)} | {_f(r.sim_cpu_pct)} | "
            f"{_f(r.sim_rss_mb, 1)} | {_f(r.sipp_cpu_pct)} | {_f(r.host_busy_pct, 1)} | "
            f"{_f(max(0.0, r.background_pct), 1)} |")
    return "\n".join(rows)


def _group_table(idles: Sequence[IdleResult], ok: Sequence[LevelResult]) -> str:
    """Front mode: CPU and memory of each process group, and its share of the gateway's."""
    rows = [
        "| run | mode | calls | group | procs | CPU % | CPU %/call | share of gw CPU % "
        "| RSS MB | PSS MB | PSS MB/call | share of gw PSS % |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    measured: list[tuple[int, str, int, Sequence[GroupUsage]]] = [
        (i.run, "idle", 0, i.groups) for i in idles]
    measured += [(r.run, r.mode, r.calls, r.groups) for r in ok]
    for run, mode, calls, groups in measured:
        cpu = sum(g.cpu_pct for g in groups)
        pss = sum(g.pss_mb for g in groups)
        for g in groups:
            per_cpu = _f(g.cpu_pct / calls, 3) if calls else "–"
            per_pss = _f(g.pss_mb / calls, 2) if calls else "–"
            rows.append(
                f"| {run} | {mode} | {calls} | {g.name} | {g.procs} | {_f(g.cpu_pct)} "
                f"| {per_cpu} | {_f(100 * g.cpu_pct / cpu if cpu else math.nan, 0)} "
                f"| {_f(g.rss_mb, 1)} | {_f(g.pss_mb, 1)} | {per_pss} "
                f"| {_f(100 * g.pss_mb / pss if pss else math.nan, 0)} |")
    return "\n".join(rows)


def _media_table(ok: Sequence[LevelResult]) -> str:
    rows = [
        "| run | mode | calls | RTP streams | pkt/s per call (slowest) "
        "| gap p50 / p99 / max ms | jitter mean / p99 / max ms | late > 40 ms | lost "
        "| agent talking % | INVITE→200 p50 / p95 ms | calls ok / failed | agent responses "
        "| gw frame-loss counters | gw log warnings | capture drops |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ok:
        t = r.rtp
        rows.append(
            f"| {r.run} | {r.mode} | {r.calls} | {t.streams} | {_f(t.pps_per_call, 1)} "
            f"({_f(t.pps_min, 1)}) | {_f(t.delta_p50_ms)} / {_f(t.delta_p99_ms)} / "
            f"{_f(t.delta_max_ms)} | {_f(t.jitter_mean_ms)} / {_f(t.jitter_p99_ms)} / "
            f"{_f(t.jitter_max_ms)} | {t.late} | {t.lost} | {_f(t.talk_pct, 0)} | "
            f"{_f(r.answer_p50_ms, 1)} / {_f(r.answer_p95_ms, 1)} | {r.calls_ok} / "
            f"{r.calls_failed} | {r.agent_responses} | {_counters(r)} | {r.log_problems} | "
            f"{'–' if r.capture_dropped is None else r.capture_dropped} |")
    return "\n".join(rows)


def _pcts(values: Sequence[float], qs: Sequence[float] = (50, 99), digits: int = 1) -> str:
    return " / ".join(_f(percentile(values, q), digits) for q in qs)


def _goal(values: Sequence[float]) -> str:
    if not values:
        return "–"
    return "yes" if percentile(values, 99) <= GOAL_P99_MS else "**no**"


def _excluded(runs: Sequence[LevelResult]) -> str:
    totals: dict[str, int] = {}
    for r in runs:
        for reason, count in r.turns.excluded:
            totals[reason] = totals.get(reason, 0) + count
    return ", ".join(f"{reason} {n}" for reason, n in sorted(totals.items())) or "–"


def _turn_table(ok: Sequence[LevelResult]) -> str:
    """Turn latency per level, turns pooled over runs."""
    rows = [
        "| mode | calls | turns measured / sim turns | **gw-added p50 / p95 / p99 / max ms** "
        "| gw-added p99 per run | inbound p50 / p99 | outbound p50 / p99 "
        "| sim own p50 / p99 | end of speech → agent audio p50 / p99 "
        f"| sim loop lag p99 / max | p99 ≤ {GOAL_P99_MS:g} ms | not measured |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    levels: dict[tuple[str, int], list[LevelResult]] = {}
    for r in ok:
        levels.setdefault((r.mode, r.calls), []).append(r)
    for (mode, calls), runs in levels.items():
        turns: list[TurnLatency] = [t for r in runs for t in r.turns.turns]
        gw = [t.gateway_ms for t in turns]
        lag = [t.sim_lag_ms for t in turns if t.sim_lag_ms is not None]
        per_run = " / ".join(_f(percentile([t.gateway_ms for t in r.turns.turns], 99), 1)
                             for r in runs)
        rows.append(
            f"| {mode} | {calls} | {len(turns)} / {sum(r.turns.records for r in runs)} "
            f"| **{_pcts(gw, (50, 95, 99, 100))}** | {per_run} "
            f"| {_pcts([t.inbound_ms for t in turns])} "
            f"| {_pcts([t.outbound_ms for t in turns])} "
            f"| {_pcts([t.sim_ms for t in turns])} "
            f"| {_pcts([t.total_ms for t in turns])} "
            f"| {_pcts(lag, (99, 100))} | {_goal(gw)} | {_excluded(runs)} |")
    return "\n".join(rows)


def render_tables(idles: Sequence[IdleResult],
                  levels: Sequence[LevelResult | LevelFailure], *, front: bool = False) -> str:
    """Markdown: a summary over runs, then per run CPU/memory and media/signalling tables;
    in ``front`` mode also CPU and memory per process group (control, workers, Kamailio)."""
    ok = [lv for lv in levels if isinstance(lv, LevelResult)]
    failed = [lv for lv in levels if isinstance(lv, LevelFailure)]
    out = ["Summary (median over runs, min–max in brackets; per call = all gateway processes "
           "together / calls):", _summary(idles, ok, front),
           "CPU and memory, per run:", _cpu_table(idles, ok)]
    if front:
        out += ["CPU and memory per process group, per run (control: the control process; "
                "workers: every SIP worker and what it forked; kamailio: the front's main "
                "process and every child it forked):", _group_table(idles, ok)]
    out += ["Media and signalling, per run:", _media_table(ok)]
    out += ["Turn latency, turns of all runs pooled (ms; gw-added = inbound + outbound, the "
            "simulator's own time and the VAD's silence excluded; method in bench/README.md; "
            "nearest-rank percentiles, so with under 100 turns p99 is the max):",
            _turn_table(ok)]
    if failed:
        out.append("\n".join(f"* **run {f.run}, {f.mode}, {f.calls} calls: not measured**: "
                             f"{f.reason}" for f in failed))
    return "\n\n".join(out)


def _threads(idles: Sequence[IdleResult], levels: Sequence[LevelResult | LevelFailure]) -> str:
    def fmt(threads: Sequence[tuple[str, float]]) -> str:
        return ", ".join(f"`{name.split(' ', 1)[-1]}` {pct:.2f}" for name, pct in threads
                         if pct >= 0.05) or "all < 0.05"

    lines = [f"* idle: {fmt(i.threads)}" for i in idles if i.run == 1]
    lines += [f"* {lv.mode}, {lv.calls} calls: {fmt(lv.threads)}" for lv in levels
              if isinstance(lv, LevelResult) and lv.run == 1]
    return "\n".join(lines)


def _layout(plan: Plan, binding: BindingInfo) -> str:
    if plan.workers is not None:
        return (f"one `gateway run` with {plan.workers} SIP workers behind a Kamailio front "
                f"(`sip.workers: {plan.workers}`, `sip.front: kamailio`, each worker's "
                f"`sip.max_calls` ceil(N/{plan.workers}) + {plan.worker_margin}"
                + (", at most 3 on the wheel" if binding.kind == "wheel" else "") + ")")
    if plan.calls_per_gateway is None:
        return "all N calls in one gateway process"
    limit = " (what the wheel allows)" if binding.kind == "wheel" and \
        plan.calls_per_gateway == 3 else ""
    return (f"ceil(N/{plan.calls_per_gateway}) gateway processes "
            f"({plan.calls_per_gateway} calls each{limit})")


def render_block(*, started: str, command: str, machine: dict[str, str], plan: Plan,
                 binding: BindingInfo, interpreter: str, idles: Sequence[IdleResult],
                 levels: Sequence[LevelResult | LevelFailure], tables: str) -> str:
    """The generated part of the benchmarks document for ``binding`` (its front block when
    ``plan.workers`` is set), markers included."""
    label = block_label(binding, plan.workers)
    front = plan.workers is not None
    facts = "\n".join(f"| {k} | {v} |" for k, v in machine.items())
    slots = f", {binding.call_slots} call slots per process" if binding.call_slots else ""
    passes = f"{plan.repeat} pass" + ("es" if plan.repeat != 1 else "")
    heading = binding.title + (f", front mode ({plan.workers} workers behind Kamailio)"
                               if front else "")
    if front:
        idle = (f"the idle front: the same `gateway run` with its {plan.workers} workers and "
                "Kamailio")
        sipp = "one SIPp calling the front's address"
        above = "the same pass's idle front once"
        summed = ("summed over every gateway process: the control process, each worker and "
                  "whatever it forked, and every Kamailio process (the front's pid and all "
                  "its children, found by walking `/proc/PID/task/*/children` from the "
                  "control process)")
        threads = ("Busiest threads of worker w1 during the window of run 1 (% of one core; "
                   "`(main)` is the worker's asyncio loop, the other `python` thread is the "
                   "SIP thread, `clock` runs the frame callbacks, `media` is pjmedia's RTP "
                   "worker):")
    else:
        idle = "one idle gateway process"
        sipp = "one SIPp per gateway process"
        above = "the same pass's idle cost once per gateway process"
        summed = "summed over the gateway processes"
        threads = ("Busiest threads of gateway process 0 during the window of run 1 (% of one "
                   "core; `(main)` is the asyncio loop, the other `python` thread is the SIP "
                   "thread, `clock` runs the frame callbacks, `media` is pjmedia's RTP "
                   "worker):")
    return f"""{begin_marker(label)}

### {heading}: last run {started}

| machine and binding | |
|---|---|
{facts}
| binding as the gateway logged it | {binding.title}{slots} |

Command (as root, from the repository root): `{interpreter} -m {command}`.
{passes} over the levels; each pass first measures {idle}
(no call, {plan.idle_window_s:g} s). Per level: one simulator process, {_layout(plan, binding)},
{sipp}, calls arriving at {plan.call_rate:g}/s in total; a
{plan.window_s:g} s window starts {plan.settle_s:g} s after every call has its Realtime
session. CPU is utime+stime from `/proc/PID/stat` (10 ms ticks), in % of one core; "per call"
is all gateway processes together divided by the calls; "above idle" subtracts {above};
"of which other" is host busy time used by none of the
measured processes (tcpdump, other work on the box; clamped at 0). RSS is `VmRSS`, PSS the
`Pss` of `/proc/PID/smaps_rollup` (shared pages split between the processes mapping them),
both at the end of the window and {summed}. RTP is what the gateway
sent to the callers (tcpdump on `lo`); jitter p99 is over the RFC 3550 running estimate after
every packet of every stream. "playout dropped / underrun / caller dropped" sum the call
records' `media.tx_frames_dropped`, `media.tx_underrun_frames` and `media.rx_dropped`; "gw log
warnings" counts WARNING/ERROR lines in the gateway logs. Turn latency: the capture also
holds the callers' packets to the gateway; the simulator's own VAD run over them gives the
packet that ended each question's speech and the one that completed the VAD's silence; the
simulator's turn log gives, in its own clock (`time.time()`, the same `CLOCK_REALTIME` as
tcpdump's on one host), when it read the append that made it stop and when it wrote the
answer's first audio delta. "inbound" is that caller packet to the append read, "outbound" the
first delta written to the first voiced agent packet on the wire (less any near-silence the
answer starts with), "sim own" the simulator's time in between (VAD decision, its configured
`response_latency_ms` of {_values(levels, "response_latency_ms")}, speech synthesis), "sim loop
lag" its event-loop lag when the append arrived (time the simulator, not the gateway, was late
reading it), and "end of speech → agent audio" what the caller waits, the VAD's silence
({_values(levels, "silence_ms")}) included.

{tables}

{threads}

{_threads(idles, levels)}

{end_marker(label)}"""


def _values(levels: Sequence[LevelResult | LevelFailure], name: str) -> str:
    """``50 ms``: the distinct values of a turn-report field over the levels."""
    values = sorted({v for lv in levels if isinstance(lv, LevelResult)
                     for v in getattr(lv.turns, name)})
    return ", ".join(f"{v} ms" for v in values) or "?"


def update_doc(path: Path, block: str, label: str) -> None:
    """Replace block ``label``'s generated block of ``path`` with ``block`` (``label`` from
    :func:`block_label`: ``source``, ``wheel``, ``source, front``...).

    Other bindings' blocks and the hand-written text stay; a file without this binding's
    markers gets the block appended, a missing file is created.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_SKELETON.format(block=block))
        return
    text = path.read_text()
    begin_line, end_line = begin_marker(label), end_marker(label)
    begin = text.find(begin_line)
    end = text.find(end_line, begin + 1) if begin != -1 else -1
    if begin == -1 or end == -1:
        path.write_text(text.rstrip("\n") + "\n\n" + block + "\n")
        return
    path.write_text(text[:begin] + block + text[end + len(end_line):])

"""What the load benchmark measures: CPU and memory from ``/proc``, RTP timing, answer latency.

The ``/proc`` readers take plain pids (the program's own pid, not the ``timeout`` wrapper
around it) and return raw counters; :class:`CpuWindow` turns two snapshots into percentages of
one core; :func:`children` and :func:`descendants` walk the process tree (the front mode's
control process, its workers and Kamailio's children). The RTP and SIP parts are pure:
:func:`summarize_rtp` works on captured :class:`~tests.support.rtp.Packet` values trimmed to
the measurement window, :func:`answer_latencies_ms` on SIPp's ``-trace_msg`` log and
:func:`call_records` on the gateway's log. Percentiles are nearest-rank.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.rtp import (
    Packet,
    RtpStream,
    decode_stream,
    frame_dbfs,
    inter_arrival_jitter,
    rtp_streams,
)
from tests.support.sipp import SipMessage

#: Kernel clock ticks per second (``utime``/``stime`` unit).
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: A gateway->caller packet later than this after the previous one counts as a late frame.
LATE_MS = 40.0
#: Frames louder than this carry agent speech (G.711 idle noise is far below).
VOICED_DBFS = -45.0
_SIPP_TIME = "%Y-%m-%d %H:%M:%S.%f"


# /proc ---------------------------------------------------------------------------------------


def _stat_fields(path: Path) -> list[str]:
    text = path.read_text()
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    return text[text.rindex(")") + 2:].split()


def proc_ticks(pid: int, *, children: bool = False) -> int:
    """``utime + stime`` of a process (all its threads), in clock ticks.

    Args:
        pid: The process.
        children: Also add ``cutime + cstime``: CPU of children it has waited for (the
            simulator's espeak-ng runs).
    """
    f = _stat_fields(Path(f"/proc/{pid}/stat"))
    # After the comm, fields are numbered from 3 (state): utime=14, stime=15, cutime=16, ...
    ticks = int(f[11]) + int(f[12])
    if children:
        ticks += int(f[13]) + int(f[14])
    return ticks


def thread_ticks(pid: int) -> dict[str, int]:
    """``utime + stime`` per live thread, keyed ``"TID name"`` (``"(main)"`` marks the first)."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            f = _stat_fields(task / "stat")
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended while we looked
        if task.name == str(pid):
            comm += " (main)"  # the process's first thread: the gateway's asyncio loop
        out[f"{task.name} {comm}"] = int(f[11]) + int(f[12])
    return out


def rss_kb(pid: int) -> int:
    """Resident set size (``VmRSS``) in KiB; 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def pss_kb(pid: int) -> int:
    """Proportional set size (``Pss`` of ``/proc/PID/smaps_rollup``) in KiB; 0 if gone.

    Shared pages (the interpreter, numpy, the pjsua2 library mapped by every gateway process)
    count a 1/n share in each of the n processes mapping them, so summing PSS over processes
    gives the memory they really use together, where summing RSS counts shared pages n times.
    """
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def host_ticks() -> tuple[int, int]:
    """``(busy, total)`` ticks of all CPUs since boot (busy excludes idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - fields[3] - fields[4], total


def child_pid(wrapper_pid: int, timeout_s: float = 5.0) -> int:
    """The pid of the one child of ``wrapper_pid`` (the program a ``timeout`` wrapper runs).

    Raises:
        RuntimeError: No child appeared within ``timeout_s``.
    """
    path = Path(f"/proc/{wrapper_pid}/task/{wrapper_pid}/children")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            kids = path.read_text().split()
        except FileNotFoundError:
            kids = []
        if kids:
            return int(kids[0])
        time.sleep(0.02)
    raise RuntimeError(f"process {wrapper_pid} started no child within {timeout_s} s")


def children(pid: int) -> list[int]:
    """The live children of ``pid``, forked by any of its threads; empty if it is gone."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return out
    for task in tasks:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            out += [int(k) for k in (task / "children").read_text().split()]
    return sorted(set(out))


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children...), parents first."""
    out: list[int] = []
    todo = children(pid)
    while todo:
        kid = todo.pop(0)
        if kid not in out:
            out.append(kid)
            todo += children(kid)
    return out


def live_since(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``starttime``); ``None`` if it is
    gone or a zombie (exited, not yet reaped).

    A pid and its start time name one process even after the pid is reused.
    """
    try:
        f = _stat_fields(Path(f"/proc/{pid}/stat"))
        return None if f[0] in ("Z", "X") else int(f[19])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def cmdline(pid: int) -> list[str]:
    """The arguments of ``pid``; empty if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def comm(pid: int) -> str:
    """The command name of ``pid`` (``/proc/PID/comm``); empty if it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


@dataclass(frozen=True)
class CpuSnapshot:
    """Counters at one instant: per group of processes, the host, and one process's threads."""

    at: float
    wall: float
    groups: Mapping[str, int]
    host: tuple[int, int]
    threads: Mapping[str, int]


def cpu_snapshot(groups: Mapping[str, Sequence[int]], *, children: Iterable[str] = (),
                 threads_of: int | None = None) -> CpuSnapshot:
    """Read the CPU counters of every process in ``groups`` (summed per group).

    Args:
        groups: Group name -> pids.
        children: Groups whose children's CPU counts too (see :func:`proc_ticks`).
        threads_of: Also read the per-thread counters of this pid.
    """
    with_children = set(children)
    sums = {name: sum(proc_ticks(p, children=name in with_children) for p in pids)
            for name, pids in groups.items()}
    threads = thread_ticks(threads_of) if threads_of is not None else {}
    return CpuSnapshot(time.monotonic(), time.time(), sums, host_ticks(), threads)


@dataclass(frozen=True)
class CpuWindow:
    """CPU use between two snapshots, in % of one core (200 % = both cores of a 2-CPU box)."""

    seconds: float
    groups: Mapping[str, float]
    host_busy: float
    threads: Mapping[str, float]

    @classmethod
    def between(cls, a: CpuSnapshot, b: CpuSnapshot) -> CpuWindow:
        """The window from snapshot ``a`` to snapshot ``b``."""
        dt = b.at - a.at
        scale = 100.0 / CLK_TCK / dt
        groups = {k: (b.groups[k] - a.groups[k]) * scale for k in b.groups}
        busy = b.host[0] - a.host[0]
        total = b.host[1] - a.host[1]
        ncpu = os.cpu_count() or 1
        host = 100.0 * ncpu * busy / total if total else math.nan
        threads = {k: (v - a.threads[k]) * scale for k, v in b.threads.items() if k in a.threads}
        return cls(dt, groups, host, threads)


# Statistics ----------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# RTP -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RtpSummary:
    """The RTP the gateway sent to its callers during the window, all calls together.

    ``pps_per_call`` is all packets / window / expected calls, so a missing stream lowers it;
    ``pps_min`` is the slowest stream's own rate. ``deltas_*`` pool the inter-packet arrival
    gaps of every stream; ``jitter_*`` are RFC 3550 estimates per stream (mean of the final
    values, nearest-rank 99th percentile of the running estimate after every packet, pooled
    over streams, and max of the running maxima). ``late`` counts gaps over :data:`LATE_MS`,
    ``lost`` sequence numbers never seen, ``talk_pct`` the share of 20 ms frames carrying agent
    speech.
    """

    streams: int
    packets: int
    pps_per_call: float
    pps_min: float
    delta_p50_ms: float
    delta_p99_ms: float
    delta_max_ms: float
    jitter_mean_ms: float
    jitter_p99_ms: float
    jitter_max_ms: float
    late: int
    lost: int
    talk_pct: float


def _trim(stream: RtpStream, start: float, end: float) -> RtpStream:
    return replace(stream, packets=tuple(p for p in stream.packets if start <= p.at <= end))


def running_jitter_ms(stream: RtpStream, clock_rate: int = 8000) -> list[float]:
    """The RFC 3550 §6.4.1 jitter estimate after each packet of ``stream``, in ms.

    The same estimator as :func:`tests.support.rtp.inter_arrival_jitter`, keeping every
    intermediate value so a percentile over the window can be taken.
    """
    jitter = 0.0
    out: list[float] = []
    for prev, cur in zip(stream.packets, stream.packets[1:], strict=False):
        arrival = (cur.at - prev.at) * clock_rate
        sent = ((cur.rtp.ts - prev.rtp.ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        jitter += (abs(arrival - sent) - jitter) / 16
        out.append(jitter * 1000 / clock_rate)
    return out


def summarize_rtp(packets: Iterable[Packet], start: float, end: float,
                  expected_calls: int) -> RtpSummary:
    """Summarize the RTP streams among ``packets`` between wall times ``start`` and ``end``."""
    streams = [s for s in (_trim(s, start, end) for s in rtp_streams(packets))
               if len(s.packets) >= 2]
    deltas: list[float] = []
    rates: list[float] = []
    jitters: list[float] = []
    running: list[float] = []
    max_jitter = 0.0
    lost = 0
    voiced = frames = 0
    for s in streams:
        stats = inter_arrival_jitter(s)
        lost += stats.lost
        jitters.append(stats.jitter_ms)
        max_jitter = max(max_jitter, stats.max_jitter_ms)
        running += running_jitter_ms(s)
        rates.append(s.packet_rate)
        deltas += [(b.at - a.at) * 1000 for a, b in zip(s.packets, s.packets[1:], strict=False)]
        if s.payload_type in (0, 8):
            levels = frame_dbfs(decode_stream(s))
            frames += len(levels)
            voiced += sum(1 for db in levels if db > VOICED_DBFS)
    total = sum(len(s.packets) for s in streams)
    window = end - start
    return RtpSummary(
        streams=len(streams), packets=total,
        pps_per_call=total / window / expected_calls if window > 0 and expected_calls else 0.0,
        pps_min=min(rates) if rates else 0.0,
        delta_p50_ms=percentile(deltas, 50), delta_p99_ms=percentile(deltas, 99),
        delta_max_ms=max(deltas) if deltas else math.nan,
        jitter_mean_ms=sum(jitters) / len(jitters) if jitters else math.nan,
        jitter_p99_ms=percentile(running, 99),
        jitter_max_ms=max_jitter if streams else math.nan,
        late=sum(1 for d in deltas if d > LATE_MS), lost=lost,
        talk_pct=100.0 * voiced / frames if frames else 0.0)


# SIP -----------------------------------------------------------------------------------------


def answer_latencies_ms(messages: Iterable[SipMessage]) -> list[float]:
    """INVITE -> 200 OK time per call, from SIPp's message log (first INVITE sent, first 200).

    SIPp stamps each logged message with its wall clock; a retransmitted INVITE counts from
    the first transmission, as a caller would.
    """
    sent: dict[str, datetime] = {}
    answered: dict[str, datetime] = {}
    for m in messages:
        if m.method != "INVITE":
            continue
        at = datetime.strptime(m.at, _SIPP_TIME)
        if m.direction == "sent" and not m.is_response:
            sent.setdefault(m.call_id, at)
        elif m.direction == "received" and m.status == 200:
            answered.setdefault(m.call_id, at)
    return [(answered[c] - sent[c]).total_seconds() * 1000 for c in sent if c in answered]


# Gateway logs --------------------------------------------------------------------------------

_RECORD = re.compile(r"call record: (\{.*\})")
#: Call-record fields that would count audio frames lost inside the gateway, if it logs any.
_FRAME_COUNTER = re.compile(r"drop|underrun|overflow|late|lost|discard", re.IGNORECASE)


def call_records(log_text: str) -> list[dict[str, Any]]:
    """The JSON ``call record:`` lines a gateway logged when its calls ended."""
    out: list[dict[str, Any]] = []
    for m in _RECORD.finditer(log_text):
        with contextlib.suppress(ValueError):
            record = json.loads(m[1])
            if isinstance(record, dict):
                out.append(record)
    return out


def frame_counters(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Totals of the integer call-record fields named like frame-loss counters.

    Empty when the gateway exposes none (then only the wire shows losses).
    """
    totals: dict[str, int] = {}
    for record in records:
        for key, value in _flatten(record):
            if _FRAME_COUNTER.search(key) and isinstance(value, int) \
                    and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
    return totals


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value

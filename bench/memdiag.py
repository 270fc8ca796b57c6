"""A memory diagnostic launcher: ``gateway`` with tracemalloc, heap stats and dumps on signals.

Not part of the gateway and never imported by it: it runs the normal command line
(``python -m bench.memdiag run -c gateway.yaml``) after installing two signal handlers, which
run on the main thread (the asyncio loop) between bytecodes, so they see a consistent heap.
Output goes to ``$MEMDIAG_DIR`` (default ``/tmp/memdiag``; this launcher reads it, the gateway
never does).

* ``SIGUSR1`` appends one line to ``stats.txt``: RSS before and after ``malloc_trim(0)``,
  glibc's ``mallinfo2`` over all arenas (C heap in use, free inside the heap, mmapped),
  Python's allocated blocks and the number of objects the collector tracks. C heap in use
  that stays flat while RSS grows means fragmentation, not a leak; RSS that drops after the
  trim is free memory glibc had not returned yet.
* ``SIGUSR2`` writes ``dumpNN.txt``: the same line, object counts per type after a full
  collection (with the change since the previous dump) and, when tracing, the allocation
  sites that grew most since the previous dump (12-frame tracebacks) and the largest ones.

``MEMDIAG_TRACE=0`` skips :mod:`tracemalloc`, which otherwise costs memory and time (roughly
2x slower allocation). Either way RSS under this launcher is not a benchmark figure; use
``bench/soak.py`` for numbers. Used for issue 7: send the signals between batches of calls
(``sipp ... -m 100 -l 3``) and compare.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from types import FrameType

_FRAMES = 12
_state: dict[str, object] = {}


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _type_counts() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def dump(out_dir: Path) -> Path:
    """Write one dump; returns its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = int(_state.get("n", 0)) + 1  # type: ignore[call-overload]
    _state["n"] = index
    counts = _type_counts()
    lines = [f"dump {index} at {time.time():.1f} {stat_line()} "
             f"traced={tracemalloc.get_traced_memory()}"]
    prev_counts = _state.get("counts")
    lines.append("== gc object counts (top 40; delta vs previous dump)")
    for name, n in counts.most_common(40):
        delta = n - prev_counts.get(name, 0) if isinstance(prev_counts, collections.Counter) else 0
        lines.append(f"{n:9d} {delta:+7d} {name}")
    if isinstance(prev_counts, collections.Counter):
        grown = sorted(((counts[k] - prev_counts.get(k, 0), k) for k in counts), reverse=True)
        lines.append("== gc types that grew most")
        lines += [f"{d:+7d} {k}" for d, k in grown[:25] if d > 0]
    if not tracemalloc.is_tracing():
        _state["counts"] = counts
        path = out_dir / f"dump{index:02d}.txt"
        path.write_text("\n".join(lines) + "\n")
        return path
    snap = tracemalloc.take_snapshot().filter_traces(
        (tracemalloc.Filter(False, tracemalloc.__file__),
         tracemalloc.Filter(False, "*/linecache.py")))
    prev = _state.get("snap")
    if isinstance(prev, tracemalloc.Snapshot):
        lines.append("== allocation sites that grew most (traceback)")
        for stat in snap.compare_to(prev, "traceback")[:15]:
            lines.append(f"{stat.size_diff:+10d} B {stat.count_diff:+6d} blocks")
            lines += [f"      {fr}" for fr in stat.traceback.format()[-_FRAMES * 2:]]
    lines.append("== top allocation sites by size (line)")
    lines += [str(s) for s in snap.statistics("lineno")[:25]]
    _state["snap"], _state["counts"] = snap, counts
    path = out_dir / f"dump{index:02d}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL("libc.so.6")


def malloc_stats() -> str:
    """glibc's view of the C heap, all arenas: bytes in use, free inside the heap, mmapped."""
    fn = _libc().mallinfo2
    fn.restype = _MallInfo2
    m = fn()
    return (f"malloc_in_use_kb={m.uordblks // 1024} malloc_free_kb={m.fordblks // 1024} "
            f"malloc_arena_kb={m.arena // 1024} mmapped_kb={m.hblkhd // 1024}")


def stat_line() -> str:
    """One line: RSS before and after ``malloc_trim``, the C heap, Python's blocks and objects."""
    before = _rss_kb()
    _libc().malloc_trim(0)
    return (f"rss_kb={before} rss_after_trim_kb={_rss_kb()} {malloc_stats()} "
            f"py_blocks={sys.getallocatedblocks()} gc_objects={len(gc.get_objects())}")


def main() -> int:
    """Start tracing, install the handler and run the gateway's command line."""
    out_dir = Path(os.environ.get("MEMDIAG_DIR", "/tmp/memdiag"))

    def on_dump(signum: int, frame: FrameType | None) -> None:
        print(f"memdiag: wrote {dump(out_dir)}", file=sys.stderr, flush=True)

    def on_stat(signum: int, frame: FrameType | None) -> None:
        line = stat_line()
        with (out_dir / "stats.txt").open("a") as f:
            f.write(f"{time.time():.1f} {line}\n")

    out_dir.mkdir(parents=True, exist_ok=True)
    if os.environ.get("MEMDIAG_TRACE", "1") != "0":
        tracemalloc.start(_FRAMES)
    signal.signal(signal.SIGUSR2, on_dump)
    signal.signal(signal.SIGUSR1, on_stat)
    from gateway.cli import main as gateway_main

    return gateway_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())

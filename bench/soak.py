"""Soak benchmark: the gateway's memory per completed call over thousands of short calls.

Not a test: it measures and reports. One ``gateway run`` process (``sip.max_calls`` 3) takes
``--calls`` short SIPp calls, ``--concurrent`` at a time, in batches of ``--batch``; after each
batch has ended (SIPp done and every call record logged), ``VmRSS``, threads and open
descriptors of the gateway are read from ``/proc``. After ``--warmup`` calls (pjsip keeps each
finished transaction for its RFC 3261 timers, 32 s over UDP, and the allocators reach their
working size), RSS is fitted against completed calls by least squares: the slope is the memory
each completed call leaves behind, in bytes. With ``--simulator embedded`` (the default, what
``gateway run`` does out of the box) the Realtime simulator runs inside the gateway process and
its memory counts; with ``external`` it is its own ``gateway sim`` process, reported apart.

Bounded: ``--max-minutes`` stops after the batch that crosses it (the report says how many
calls were run); every process runs under a ``timeout`` lifetime and is stopped by pid on exit,
Ctrl-C or SIGTERM. Everything binds 127.0.0.1. The machinery is shared with the soak test
(``tests/support/soak.py``).

Usage (from the repository root)::

    .venv/bin/python -m bench.soak --calls 10000              # ~25 min at ~7 calls/s
    .venv/bin/python -m bench.soak --calls 1000 --warmup 300  # a quick look
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from bench.metrics import child_pid, rss_kb
from bench.report import machine_info
from tests.support.ports import free_tcp_port
from tests.support.procs import ManagedProcess, wait_for_port
from tests.support.soak import (
    MAX_CONCURRENT,
    REPO,
    Sample,
    SoakGateway,
    run_batch,
    slope_bytes_per_call,
    write_silence,
)


@dataclass(frozen=True)
class SoakResult:
    """What one soak run measured."""

    calls_planned: int
    calls_run: int
    calls_ok: int
    calls_failed: int
    warmup_calls: int
    wall_s: float
    calls_per_s: float
    rss_start_kb: int
    rss_warm_kb: int
    rss_end_kb: int
    rss_max_after_warmup_kb: int
    slope_bytes_per_call: float
    end_minus_warm_bytes_per_call: float
    threads_start: int
    threads_end: int
    fds_start: int
    fds_end: int
    sim_rss_start_kb: int | None
    sim_rss_end_kb: int | None


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds the ExitStack, which stops every process


def _start_sim(stack: contextlib.ExitStack, run_dir: Path, lifetime_s: float) -> tuple[int, str]:
    port = free_tcp_port()
    proc = ManagedProcess([sys.executable, "-m", "gateway", "sim", "--port", str(port),
                           "--speed", "4", "--tts", "tone"],
                          log_path=run_dir / "sim.log", name="sim", cwd=REPO,
                          max_lifetime_s=lifetime_s)
    stack.enter_context(proc)
    wait_for_port(port, proto="tcp", timeout_s=30.0, process=proc)
    return child_pid(proc.pid), f"ws://127.0.0.1:{port}/v1/realtime"


def summarize(samples: Sequence[Sample], *, planned: int, warmup: int, ok: int, failed: int,
              wall_s: float, sim_rss: tuple[int, int] | None) -> SoakResult:
    """Fold the samples into the reported numbers (slope over the samples after warm-up)."""
    first, last = samples[0], samples[-1]
    after = [s for s in samples if s.calls >= warmup] or [last]
    warm = after[0]
    span = last.calls - warm.calls
    return SoakResult(
        calls_planned=planned, calls_run=last.calls, calls_ok=ok, calls_failed=failed,
        warmup_calls=warm.calls, wall_s=round(wall_s, 1),
        calls_per_s=round(last.calls / wall_s, 2) if wall_s else 0.0,
        rss_start_kb=first.gateway.rss_kb, rss_warm_kb=warm.gateway.rss_kb,
        rss_end_kb=last.gateway.rss_kb,
        rss_max_after_warmup_kb=max(s.gateway.rss_kb for s in after),
        slope_bytes_per_call=round(slope_bytes_per_call(after), 1),
        end_minus_warm_bytes_per_call=round(
            (last.gateway.rss_kb - warm.gateway.rss_kb) * 1024 / span, 1) if span else 0.0,
        threads_start=first.gateway.threads, threads_end=last.gateway.threads,
        fds_start=first.gateway.fds, fds_end=last.gateway.fds,
        sim_rss_start_kb=sim_rss[0] if sim_rss else None,
        sim_rss_end_kb=sim_rss[1] if sim_rss else None)


def render(result: SoakResult, simulator: str) -> str:
    """The result as a Markdown table."""
    r = result
    rows = [
        ("simulator", simulator),
        ("calls run (planned)", f"{r.calls_run} ({r.calls_planned}); ok {r.calls_ok}, "
                                f"failed {r.calls_failed}"),
        ("wall time", f"{r.wall_s:.0f} s, {r.calls_per_s:.2f} calls/s"),
        ("RSS at start / after warm-up / end", f"{r.rss_start_kb / 1024:.1f} / "
         f"{r.rss_warm_kb / 1024:.1f} (call {r.warmup_calls}) / {r.rss_end_kb / 1024:.1f} MiB"),
        ("highest RSS after warm-up", f"{r.rss_max_after_warmup_kb / 1024:.1f} MiB"),
        ("**RSS slope after warm-up**", f"**{r.slope_bytes_per_call:.0f} B per call**"),
        ("(end - warm-up) / calls", f"{r.end_minus_warm_bytes_per_call:.0f} B per call"),
        ("threads start / end", f"{r.threads_start} / {r.threads_end}"),
        ("open fds start / end", f"{r.fds_start} / {r.fds_end}"),
    ]
    if r.sim_rss_start_kb is not None and r.sim_rss_end_kb is not None:
        rows.append(("external simulator RSS start / end",
                     f"{r.sim_rss_start_kb / 1024:.1f} / {r.sim_rss_end_kb / 1024:.1f} MiB"))
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=10_000, help="calls to place (default 10000)")
    p.add_argument("--batch", type=int, default=100, help="calls per SIPp run / sample (100)")
    p.add_argument("--warmup", type=int, default=500,
                   help="calls before the slope window starts (default 500)")
    p.add_argument("--concurrent", type=int, default=MAX_CONCURRENT,
                   help=f"calls at once, at most {MAX_CONCURRENT} (default {MAX_CONCURRENT})")
    p.add_argument("--rate", type=float, default=20.0, help="SIPp call rate, calls/s (20)")
    p.add_argument("--hold-ms", type=int, default=300, help="each call's hold time (300 ms)")
    p.add_argument("--simulator", choices=("embedded", "external"), default="embedded",
                   help="Realtime simulator in the gateway process or its own (embedded)")
    p.add_argument("--max-minutes", type=float, default=45.0,
                   help="stop after the batch that crosses this wall time (default 45)")
    p.add_argument("--out", type=Path, help="artefact directory (default: a new /tmp dir)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak; returns 0, 1 if calls failed or it stopped early, 130 if interrupted."""
    args = build_parser().parse_args(argv)
    if not 1 <= args.concurrent <= MAX_CONCURRENT or min(args.calls, args.batch) < 1:
        raise SystemExit(f"--calls and --batch must be positive, --concurrent 1..{MAX_CONCURRENT}")
    out_dir = args.out or Path(tempfile.mkdtemp(prefix="bench-soak-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    command = "python -m bench.soak " + shlex.join(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    machine = machine_info()
    budget_s = args.max_minutes * 60
    lifetime_s = budget_s + 600  # a hard bound on every process, past the soft budget
    audio = write_silence(out_dir / "silence.ulaw")
    samples: list[Sample] = []
    ok = failed = 0
    sim_pid: int | None = None
    sim_rss: tuple[int, int] | None = None
    print(f"artefacts in {out_dir}", file=sys.stderr)
    try:
        with contextlib.ExitStack() as stack:
            url = "embedded"
            if args.simulator == "external":
                sim_pid, url = _start_sim(stack, out_dir, lifetime_s)
            gw = stack.enter_context(SoakGateway(out_dir / "gateway", realtime_url=url,
                                                 lifetime_s=lifetime_s))
            started = time.monotonic()
            samples.append(gw.sample(0, started))
            sim_start = rss_kb(sim_pid) if sim_pid else 0
            done = 0
            while done < args.calls and time.monotonic() - started < budget_s:
                n = min(args.batch, args.calls - done)
                result = run_batch(gw, calls=n, audio=audio, log_dir=out_dir / "sipp",
                                   concurrent=args.concurrent, rate=args.rate,
                                   hold_ms=args.hold_ms)
                ok += result.successful
                failed += result.failed
                done += n
                gw.wait_records(ok)
                samples.append(gw.sample(done, started))
                s = samples[-1]
                print(f"{done:6d} calls  rss {s.gateway.rss_kb:7d} kB  threads "
                      f"{s.gateway.threads}  fds {s.gateway.fds}  failed {failed}  "
                      f"{s.elapsed_s:7.1f} s", file=sys.stderr)
                if result.successful == 0:
                    print(f"a whole batch failed: {result.describe()}", file=sys.stderr)
                    break
            wall = time.monotonic() - started
            if sim_pid:
                sim_rss = (sim_start, rss_kb(sim_pid))
    except KeyboardInterrupt:
        print("interrupted: every process this run started has been stopped", file=sys.stderr)
        return 130
    summary = summarize(samples, planned=args.calls, warmup=args.warmup, ok=ok, failed=failed,
                        wall_s=wall, sim_rss=sim_rss)
    table = render(summary, args.simulator)
    print(f"Command: `{command.strip()}`\n\n{table}")
    record = {"command": command.strip(), "machine": machine, "args": vars(args) | {
        "out": str(out_dir)}, "result": asdict(summary), "samples": [asdict(s) for s in samples]}
    (out_dir / "results.json").write_text(json.dumps(record, indent=2, default=str))
    return 0 if failed == 0 and summary.calls_run == args.calls else 1


if __name__ == "__main__":
    raise SystemExit(main())

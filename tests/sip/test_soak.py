"""Soak: hundreds of short calls through one ``gateway run`` leave its memory on a plateau.

Issue 7, finding 3: the memory of ``gateway run`` grew by 50-63 kB per completed call with no
plateau. The holder was the embedded Realtime simulator, which kept every closed session with
every event of its call (all the audio deltas and appends) in ``SimulatorServer.sessions``.
This test runs the gateway as it runs out of the box (``realtime.url: embedded``), places short
calls three at a time with SIPp (a greeting plays, the caller sends silence, BYE after 300 ms)
and reads the gateway's ``VmRSS`` after every batch. The numbers per completed call over
10,000 calls are the benchmark's job (``bench/soak.py``, ``docs/benchmarks.md``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import scaled
from tests.support.soak import Sample, SoakGateway, run_batch, slope_bytes_per_call, write_silence

pytestmark = pytest.mark.sip

CALLS = 600
BATCH = 50
#: Where the plateau is measured from. Before it, RSS rises by 10-15 MiB that stay bounded: the
#: C heap holds each finished call's SIP state for about 32 s (pjsip's transactions wait out
#: their RFC 3261/6026 timers over UDP; measured: 6.3 MiB of C heap in use after 300 calls is
#: freed after 45 s idle), the call-record ring (200 records) fills, and the allocators reach
#: their working size. So the warm-up lasts a fixed time, not a number of calls; three calls at
#: a time with a 300 ms hold cannot exceed about 8 calls/s, so 32 s is over by call ~260.
PLATEAU_FROM = 300
#: Allowed growth from call PLATEAU_FROM to the end (300 calls). The fixed gateway grew 2.4-2.6
#: MiB here, in one last warm-up step between calls ~400 and ~600: each call leaves some cyclic
#: garbage (about 50 objects) until the next full collection, and the pymalloc arenas that peak
#: needs stay mapped afterwards (measured: C heap in use flat, Python blocks +20k then back
#: after the collection, RSS at the high-water mark; the benchmark shows RSS flat from call
#: ~600 to 10,000); the leak grew 14-19 MiB over the same 300 calls (49-63 kB per call,
#: measured with this test and the benchmark on the code before the fix). 6 MiB (20 kB per
#: call) sits 2.3x above the former and 2.4x below the latter.
MAX_GROWTH_KB = 6 * 1024


@pytest.mark.timeout(scaled(240))
def test_memory_of_gateway_run_reaches_a_plateau(tmp_path: Path) -> None:
    audio = write_silence(tmp_path / "silence.ulaw")
    samples: list[Sample] = []
    failed = 0
    with SoakGateway(tmp_path / "gateway", realtime_url="embedded",
                     lifetime_s=scaled(220)) as gw:
        started = time.monotonic()
        samples.append(gw.sample(0, started))
        done = 0
        while done < CALLS:
            result = run_batch(gw, calls=BATCH, audio=audio, log_dir=tmp_path, hold_ms=300)
            assert result.successful > 0, result.describe()
            failed += result.failed
            done += BATCH
            gw.wait_records(done - failed)
            samples.append(gw.sample(done, started))
    table = "\n".join(f"{s.calls:4d} calls {s.gateway.rss_kb:7d} kB {s.gateway.threads} threads "
                      f"{s.gateway.fds} fds" for s in samples)
    print(table)  # shown with -rP: the plateau, for the record
    assert failed <= CALLS // 100, f"{failed} of {CALLS} calls failed\n{table}"
    plateau = [s for s in samples if s.calls >= PLATEAU_FROM]
    base = plateau[0].gateway.rss_kb
    growth = max(s.gateway.rss_kb for s in plateau) - base
    slope = slope_bytes_per_call(plateau)
    assert growth <= MAX_GROWTH_KB, (
        f"RSS grew {growth} kB from call {PLATEAU_FROM} to {CALLS} "
        f"(slope {slope:.0f} B per call); samples:\n{table}")
    # Threads and descriptors were never the problem; a per-call leak of either would be.
    assert samples[-1].gateway.threads <= samples[1].gateway.threads + 2, table
    assert samples[-1].gateway.fds <= samples[1].gateway.fds + 5, table

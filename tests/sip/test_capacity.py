"""One worker process for many calls: the source-built pjsua2 takes 30 at once.

SIPp places 30 concurrent calls to one gateway process; every caller must hear its own agent's
greeting (found in the RTP each call's stream carried, captured by tcpdump), and the 31st caller
gets 503 with Retry-After while the 30 are up. The PyPI wheel has 4 call slots, so there the
test is not applicable and says so; CI runs it on the default (source) build.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.sim.server import SimOptions, SimulatorServer
from gateway.sip import binding
from tests.sip.gateway import run_gateway
from tests.support.audio import silence_pcm16, write_g711
from tests.support.capture import Capture
from tests.support.ports import free_udp_port_block
from tests.support.rtp import decode_stream, frame_dbfs, rtp_streams
from tests.support.sipp import run_sipp_async, start_sipp

pytestmark = [pytest.mark.sip, pytest.mark.timeout(150)]

CALLS = 30
GREETING_AGENT = """
agents:
  greeter:
    instructions: You are a test agent that greets callers.
    greeting: Hello, you are one of many callers.
routes:
  - name: all
    agent: greeter
"""


def _wheel() -> bool:
    return binding.installed()[0] == "wheel"


@pytest.mark.skipif(_wheel(), reason="the PyPI wheel has 4 call slots per process")
async def test_one_process_takes_30_calls_with_agent_audio_and_refuses_the_31st(
        tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(2000))
    media_port = free_udp_port_block(4)
    rtp = free_udp_port_block(2 * CALLS + 8)
    async with SimulatorServer(options=SimOptions(speed=4.0, tts_engine="tone")) as sim, \
            run_gateway(tmp_path, sim, GREETING_AGENT, sip={
                "max_calls": CALLS, "rtp_port_start": rtp,
                "rtp_port_range": 2 * CALLS + 8}) as gw:
        with Capture(tmp_path / "rtp.pcap", f"udp and dst port {media_port}") as cap, \
                start_sipp("uac_pcmu", gw.target, log_dir=tmp_path / "many",
                           media_port=media_port, calls=CALLS, concurrent=CALLS, rate=15,
                           hold_ms=12_000, keys={"audio_file": str(audio)},
                           timeout_s=90) as many:
            await asyncio.to_thread(_wait_sessions, sim, CALLS, 40.0)
            refused = await run_sipp_async("uac_busy_retry_after", gw.target,
                                           log_dir=tmp_path / "extra", timeout_s=15)
            result = await asyncio.to_thread(many.result, 60.0)
        assert refused.ok, refused.describe()
        assert result.ok, result.describe()
        assert "at capacity (30 calls)" in gw.log()
        # The source build moves the frames in C (gateway/sip/gwmedia.c), not in Python.
        assert "media: native media port" in gw.log()
    streams = [s for s in rtp_streams(cap.packets()) if rtp <= s.sport < rtp + 2 * CALLS + 8]
    assert len(streams) == CALLS, f"{len(streams)} gateway RTP streams"
    # Every caller heard its agent: at least half a second of audio above -45 dBFS.
    heard = sum(sum(level > -45.0 for level in frame_dbfs(decode_stream(s))) >= 25
                for s in streams)
    assert heard == CALLS, f"only {heard} of {CALLS} callers heard their agent"


def _wait_sessions(sim: SimulatorServer, count: int, timeout_s: float) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while len(sim.sessions) < count:
        assert time.monotonic() < deadline, f"{len(sim.sessions)} of {count} sessions opened"
        time.sleep(0.1)


@pytest.mark.skipif(_wheel(), reason="the wheel's 64-handle select() ioqueue aborts the "
                    "process on this burst; the SIP front (issue 9) shields it there")
async def test_a_burst_of_invites_against_a_full_worker_leaves_it_serving(
        tmp_path: Path) -> None:
    """100 INVITEs/s against a worker at capacity: each refused with 503, none crash it."""
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(2000))
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, sip={"max_calls": 3}) as gw:
        with start_sipp("uac_pcmu", gw.target, log_dir=tmp_path / "full",
                        media_port=free_udp_port_block(4), calls=3, concurrent=3,
                        hold_ms=10_000, keys={"audio_file": str(audio)}, timeout_s=60) as full:
            await asyncio.to_thread(_wait_sessions, sim, 3, 20.0)
            burst = await run_sipp_async("uac_busy_retry_after", gw.target,
                                         log_dir=tmp_path / "burst", calls=200,
                                         concurrent=200, rate=100, timeout_s=40,
                                         trace_messages=False)
            assert gw.proc.running, "the burst killed the worker"
            held = await asyncio.to_thread(full.result, 40.0)
        assert burst.ok, burst.describe()
        assert held.ok, held.describe()  # the three calls lived through it
        assert gw.proc.running
        after = await run_sipp_async("uac_pcmu", gw.target, log_dir=tmp_path / "after",
                                     media_port=free_udp_port_block(4), hold_ms=1000,
                                     keys={"audio_file": str(audio)}, timeout_s=20)
        assert after.ok, after.describe()

"""Several gateway instances behind one upstream dispatcher, as several hosts would run them.

Real processes only, on 127.0.0.1 (each "host" is told apart by its ports): the upstream is
the Kamailio config ``gateway front upstream`` writes, run as an operator would run it. First
against scripted instances (fake fronts), to read exactly what reaches an instance: the
caller's real source in ``X-Gateway-Upstream-Source`` (a forged copy removed), failover on
silence and 503 but not on 486, and a BYE both ways through the upstream. Then against two
real instances, each a ``gateway run`` with its own Kamailio front and two pjsua2 workers:
SIPp calls to the upstream's address are answered by both instances and every caller hears
its agent in the captured RTP; the upstream's header reaches each instance's dialplan with
the caller's own port; after one instance's control process is killed with SIGKILL (its
workers and Kamailio die with it), new calls still succeed on the other instance.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.front.state import WorkerState
from gateway.sim.server import SimOptions, SimulatorServer
from tests.sip.gateway import Gateway, control_get as _get, run_gateway, wait_until as _wait
from tests.support.audio import silence_pcm16, write_g711
from tests.support.capture import Capture
from tests.support.frontsip import Dialog, FakeWorker, SipEndpoint
from tests.support.ports import free_udp_port, free_udp_port_block
from tests.support.rtp import decode_stream, frame_dbfs, rtp_streams
from tests.support.sipp import run_sipp_async, start_sipp
from tests.support.upstream import UpstreamKamailio, render_upstream_cli

pytestmark = [pytest.mark.sip,
              pytest.mark.skipif(shutil.which("kamailio") is None,
                                 reason="kamailio is installed by scripts/dev.sh setup")]

WORKERS = 2
PER_WORKER = 2
RTP_PER_WORKER = 40
HEADER = "X-Gateway-Upstream-Source"


@pytest.fixture
def upstream_dir() -> Iterator[Path]:
    """A short run directory under /tmp (Kamailio's unix socket paths must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="upstream-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _active(states: tuple[WorkerState, ...]) -> bool:
    return all(s.state == "active" for s in states)


@pytest.mark.timeout(60)
async def test_the_upstream_passes_the_callers_source_and_fails_over(
        tmp_path: Path, upstream_dir: Path) -> None:
    # i1 (listed first: it wins ties) never answers; i2 takes calls.
    with FakeWorker("first", mode="silent") as first, FakeWorker("second") as second:
        port = free_udp_port()
        config = render_upstream_cli(upstream_dir, ("127.0.0.1", port),
                                     [(first.host, first.port), (second.host, second.port)],
                                     extra=["--ping-interval", "1"])
        with UpstreamKamailio(config, upstream_dir, port,
                              log_path=tmp_path / "upstream.log") as up, \
                SipEndpoint("caller", target=("127.0.0.1", port)) as caller:
            await asyncio.to_thread(up.wait_for_instances, _active)
            call = Dialog(caller, f"sip:100@127.0.0.1:{port}")
            forged = (f"{HEADER}: 6.6.6.6;port=1;proto=tls",)
            started = time.monotonic()
            final = await asyncio.to_thread(call.invite, headers=forged)
            assert final.status == 200
            # The silent instance had tm's fr_timer (2 s) to answer, then the call moved on.
            assert time.monotonic() - started >= 1.9
            assert len(first.invites()) == 1
            [invite] = second.invites()
            # What the instance's front passes on to its workers: the caller's own address and
            # port, never what the caller wrote.
            assert invite.headers(HEADER) == [
                f"127.0.0.1;port={caller.port};proto=udp;account=trunk"]
            assert invite.header("Record-Route") == f"<sip:127.0.0.1:{port};lr>"
            # In-dialog both ways through the upstream: the caller's BYE, the instance's BYE.
            assert (await asyncio.to_thread(call.bye)).status == 200
            assert [m.header("Call-ID") for m in second.requests("BYE")] == [call.call_id]
            other = Dialog(caller, f"sip:101@127.0.0.1:{port}")
            assert (await asyncio.to_thread(other.invite)).status == 200
            since = await asyncio.to_thread(second.bye, other.call_id)
            bye = await asyncio.to_thread(
                caller.wait_for, lambda m: m.method == "BYE" and m.status is None)
            assert bye.source == ("127.0.0.1", port)
            assert (await asyncio.to_thread(second.final, other.call_id, "BYE", 5.0,
                                            since)).status == 200
            # A full instance (503) hands the call on; a dialplan's 486 goes to the caller.
            await asyncio.to_thread(up.wait_for_instances, _active)
            first.mode = "busy"
            busy = Dialog(caller, f"sip:102@127.0.0.1:{port}")
            assert (await asyncio.to_thread(busy.invite)).status == 200
            assert "second" in (busy.remote_target or "")
            first.mode = "486"
            refused = Dialog(caller, f"sip:103@127.0.0.1:{port}")
            assert (await asyncio.to_thread(refused.invite)).status == 486
            assert len(second.invites()) == 3
            assert (await asyncio.to_thread(busy.bye)).status == 200
            loads = {s.worker_id: s.load for s in up.instances()}
            assert loads == {"i1": 0, "i2": 0}


def _instance_config() -> dict[str, Any]:
    """One instance (one "host"): its own front port (run_gateway's), worker ports and RTP."""
    return {"workers": WORKERS, "front": "kamailio", "max_calls": PER_WORKER,
            "worker_port_start": free_udp_port_block(WORKERS),
            "rtp_port_start": free_udp_port_block(RTP_PER_WORKER * WORKERS),
            "rtp_port_range": RTP_PER_WORKER * WORKERS,
            # Trust the upstream's header only from the upstream (it is in trunk_allow).
            "front_upstream": ["127.0.0.1"]}


def _dialplan(caller_port: int) -> str:
    # A call whose upstream header names the caller's own port reaches the agent; any other
    # call is refused, so a lost or rewritten header fails the SIPp run.
    return f"""
agents:
  greeter:
    instructions: You are a test agent that greets callers.
    greeting: Hello, you reached one of two gateways.
routes:
  - name: via-upstream
    match:
      headers: {{{HEADER}: {{regex: '^127\\.0\\.0\\.1;port={caller_port};proto=udp'}}}}
    agent: greeter
  - name: other
    reject: {{code: 403}}
"""


def _children(gw: Gateway) -> list[int]:
    """The instance's worker pids and its Kamailio's."""
    pids = [w["pid"] for w in _get(gw, "/v1/calls")["workers"] if w["state"] == "up"]
    front = re.search(r"front: kamailio pid (\d+)", gw.log())
    assert front, "the instance did not log its Kamailio's pid"
    return [*pids, int(front.group(1))]


def _agent_calls(gw: Gateway) -> int:
    return gw.log().count("-> route via-upstream, agent greeter")


@pytest.mark.timeout(240)
async def test_two_instances_share_the_calls_and_one_killed_leaves_the_other(
        tmp_path: Path, upstream_dir: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(2000))
    media_port = free_udp_port_block(4)
    caller_port = free_udp_port()
    up_port = free_udp_port()
    dialplan = _dialplan(caller_port)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with SimulatorServer(options=SimOptions(speed=4.0, tts_engine="tone")) as sim, \
            run_gateway(tmp_path / "a", sim, dialplan, sip=_instance_config()) as a, \
            run_gateway(tmp_path / "b", sim, dialplan, sip=_instance_config()) as b:
        config = render_upstream_cli(upstream_dir, ("127.0.0.1", up_port),
                                     [("127.0.0.1", a.port), ("127.0.0.1", b.port)],
                                     extra=["--ping-interval", "1"])
        with UpstreamKamailio(config, upstream_dir, up_port,
                              log_path=tmp_path / "upstream.log") as up:
            await asyncio.to_thread(up.wait_for_instances, _active)
            calls = 2 * PER_WORKER
            with Capture(tmp_path / "rtp.pcap", f"udp and dst port {media_port}") as cap, \
                    start_sipp("uac_pcmu", up.target, log_dir=tmp_path / "spread",
                               local_port=caller_port, media_port=media_port, calls=calls,
                               concurrent=calls, rate=10, hold_ms=8000,
                               keys={"audio_file": str(audio)}, timeout_s=60) as many:
                spread = await asyncio.to_thread(
                    _wait, lambda: (n := [len(_get(gw, "/v1/calls")["calls"]) for gw in (a, b)])
                    and sum(n) == calls and n, 30.0, f"{calls} live calls")
                result = await asyncio.to_thread(many.result, 60.0)
            assert result.ok, result.describe()
            assert result.final_statuses() == [200] * calls
            # The upstream's call-load dispatching gave each instance half of the calls.
            assert spread == [calls // 2, calls // 2], spread
            assert (_agent_calls(a), _agent_calls(b)) == (calls // 2, calls // 2)
            low = [gw.rtp_port_start for gw in (a, b)]
            streams = [s for s in rtp_streams(cap.packets())
                       if any(p <= s.sport < p + RTP_PER_WORKER * WORKERS for p in low)]
            assert len(streams) == calls, f"{len(streams)} gateway RTP streams"
            heard = sum(sum(level > -45.0 for level in frame_dbfs(decode_stream(s))) >= 25
                        for s in streams)
            assert heard == calls, f"only {heard} of {calls} callers heard their agent"

            # One "host" goes down: SIGKILL to instance a's control process.
            children = _children(a)
            a_run_dir = re.search(r"IPC at (\S+)/ipc/workers.sock", a.log())
            assert a_run_dir
            a.signal(signal.SIGKILL)
            await asyncio.to_thread(
                _wait, lambda: not any(Path(f"/proc/{pid}").exists() for pid in children),
                15.0, "instance a's workers and Kamailio to exit")
            # A killed control process cannot remove its run directory (the next start on
            # that host would); this test removes it itself.
            shutil.rmtree(a_run_dir.group(1), ignore_errors=True)
            # New calls go on through the same address; the first may still be offered to
            # the dead instance (silence, then failover) until the probes take it out.
            after = []
            for i in range(3):
                after.append(await run_sipp_async(
                    "uac_pcmu", up.target, log_dir=tmp_path / f"after{i}",
                    local_port=caller_port, media_port=free_udp_port_block(4), hold_ms=2000,
                    keys={"audio_file": str(audio)}, timeout_s=30))
            assert all(r.ok for r in after), [r.describe() for r in after if not r.ok]
            assert _agent_calls(b) == calls // 2 + 3
            states = await asyncio.to_thread(
                up.wait_for_instances, lambda ss: [s.state for s in ss] != ["active"] * 2,
                10.0)
            by_id = {s.worker_id: s for s in states}
            assert by_id["i1"].state != "active" and by_id["i2"].state == "active", states
            assert "front: worker down sip:127.0.0.1" in up.log_text()

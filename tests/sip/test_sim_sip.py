"""The simulator's SIP endpoint: real SIP callers dial "OpenAI" and the test plays the gateway.

SIPp (or ``gateway call``, the pjsua2 softphone) calls the SIP port of a
:class:`SimulatorServer` started with ``SimOptions(sip_port=0)``; the test does what the
gateway would, over the simulator's own API only: it reads the signed
``realtime.call.incoming`` webhook, accepts / rejects / refers / hangs up with the OpenAI SDK
against ``sim.http_url``, and asks for a greeting with ``response.create`` on the sideband.
What the SIP caller got is asserted from SIPp's message log and from the RTP it received
(captured with tcpdump and decoded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.sim.calls import CallState
from gateway.sim.options import SimOptions
from gateway.sim.server import SimulatorServer
from gateway.sim.simcall import SimCall
from gateway.sim.siplink import SipEndpointError
from tests.component.test_sim_calls import AUTH, SECRET, Receiver, sdk
from tests.conftest import scaled
from tests.support.audio import read_wav, silence_pcm16, tone_pcm16, write_g711, write_wav
from tests.support.capture import Capture
from tests.support.ports import free_tcp_port, free_udp_port_block
from tests.support.rtp import decode_stream, frame_dbfs, rtp_streams
from tests.support.sipp import run_sipp_async, start_sipp
from tests.support.tls import self_signed

pytestmark = [pytest.mark.sip, pytest.mark.timeout(60)]

REPO = Path(__file__).resolve().parents[2]
GREETING = "Say exactly 'Thank you for calling the simulator, how can I help' now."


@contextlib.asynccontextmanager
async def sip_sim(receiver: Receiver | None = None, **options: Any
                  ) -> AsyncIterator[SimulatorServer]:
    """A simulator with its SIP endpoint on free UDP/TCP ports of 127.0.0.1."""
    hook: dict[str, Any] = (
        {"webhook_url": receiver.url, "webhook_secret": SECRET} if receiver is not None else {})
    opts = SimOptions(**{"tts_engine": "tone", "response_latency_ms": 0, "speed": 20.0,
                         "sip_port": 0, **hook, **options})
    async with SimulatorServer(options=opts) as sim:
        yield sim


async def greet(sim: SimulatorServer, call: SimCall) -> None:
    """Accept the call and have the agent greet the caller (a sideband ``response.create``)."""
    async with sdk(sim) as client:
        await client.realtime.calls.accept(call.call_id, type="realtime",
                                           instructions="You are the front desk.")
    async with aiohttp.ClientSession() as http, http.ws_connect(
            f"{sim.ws_url}?call_id={call.call_id}", headers=AUTH) as ws:
        await ws.send_str(json.dumps({"type": "response.create",
                                      "response": {"instructions": GREETING}}))
        await call.wait_for_event("output_audio_buffer.stopped", timeout=scaled(15))


def loud_frames(pcm16: bytes) -> int:
    return sum(level > -45.0 for level in frame_dbfs(pcm16))


async def test_an_accepted_sipp_call_hears_the_agent_and_is_heard(tmp_path: Path) -> None:
    # The caller: 600 ms of 440 Hz (VAD hears speech), then silence, looped by SIPp.
    audio = write_g711(tmp_path / "caller.ulaw", tone_pcm16(440, 600) + silence_pcm16(5400))
    media_port = free_udp_port_block(4)
    async with Receiver() as receiver, sip_sim(receiver) as sim:
        with Capture(tmp_path / "rtp.pcap", f"udp and dst port {media_port}") as cap, \
                start_sipp("uac_pcmu", sim.sip_target("udp"), log_dir=tmp_path,
                           media_port=media_port, hold_ms=5000, service="proj_test",
                           keys={"audio_file": str(audio)}, timeout_s=25) as sipp:
            await receiver.wait_for(1)
            call = await sim.wait_for_call(0)
            await greet(sim, call)
            assert await call.wait_ended(timeout=scaled(15)) == "caller"  # SIPp's BYE
            result = await asyncio.to_thread(sipp.result, scaled(20))
        body, headers, _ = receiver.requests[0]
    assert result.ok, result.describe()
    assert result.final_statuses() == [200]
    assert result.received(method="INVITE", status=180), "no 180 Ringing"
    # The webhook listed the INVITE's headers, in order, as SIPp sent them.
    event = json.loads(body)
    assert event["type"] == "realtime.call.incoming"
    assert event["data"]["call_id"] == call.call_id
    assert event["data"]["sip_media_security"] == "rtp"
    sent = result.sent(method="INVITE")[0]
    names = [h["name"] for h in event["data"]["sip_headers"]]
    assert names == [name for name, _ in sent.headers]
    listed = {h["name"]: h["value"] for h in event["data"]["sip_headers"]}
    assert listed["Call-ID"] == sent.call_id
    assert listed["Subject"] == "uac_pcmu"
    assert "webhook-signature" in {k.lower() for k in headers}
    # The caller's tone reached the session's VAD over RTP.
    assert any(e["type"] == "input_audio_buffer.speech_started" for e in call.sent)
    # The greeting came back as RTP, at 50 packets a second.
    streams = [s for s in rtp_streams(cap.packets()) if s.dport == media_port]
    assert len(streams) == 1, streams
    assert streams[0].payload_type == 0
    assert 45 <= streams[0].packet_rate <= 55
    assert loud_frames(decode_stream(streams[0])) >= 25, "the agent was not heard"


@pytest.mark.parametrize("status", [486, 603])
async def test_a_rejected_call_gets_that_status(tmp_path: Path, status: int) -> None:
    async with sip_sim() as sim:
        sipp = asyncio.create_task(run_sipp_async(
            "uac_expect_status", sim.sip_target("udp"), log_dir=tmp_path,
            keys={"expected_status": str(status)}, timeout_s=15))
        call = await sim.wait_for_call(0, timeout=scaled(10))
        async with sdk(sim) as client:
            if status == 603:
                await client.realtime.calls.reject(call.call_id)  # the API's default
            else:
                await client.realtime.calls.reject(call.call_id, status_code=status)
        result = await sipp
    assert result.ok, result.describe()
    assert result.final_statuses() == [status]


async def test_a_call_ringing_too_long_gets_408(tmp_path: Path) -> None:
    async with sip_sim(ring_timeout_s=1.0) as sim:
        result = await run_sipp_async("uac_expect_status", sim.sip_target("udp"),
                                      log_dir=tmp_path, keys={"expected_status": "408"},
                                      timeout_s=15)
        assert sim.calls[0].state is CallState.TIMED_OUT
    assert result.ok, result.describe()


async def test_hangup_by_the_api_sends_the_caller_a_bye(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(2000))
    async with sip_sim() as sim:
        sipp = asyncio.create_task(run_sipp_async(
            "uac_expect_bye", sim.sip_target("udp"), log_dir=tmp_path,
            keys={"audio_file": str(audio)}, timeout_s=20))
        call = await sim.wait_for_call(0, timeout=scaled(10))
        async with sdk(sim) as client:
            await client.realtime.calls.accept(call.call_id, type="realtime")
            await asyncio.sleep(1.0)
            await client.realtime.calls.hangup(call.call_id)
        result = await sipp
        assert call.record.ended_by == "api"
    assert result.ok, result.describe()
    assert result.received(method="BYE"), "no BYE"


async def test_refer_sends_a_refer_and_the_notify_ends_the_call(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(2000))
    target = "sip:sales@pbx.example.com"
    async with sip_sim() as sim:
        sipp = asyncio.create_task(run_sipp_async(
            "uac_transferee", sim.sip_target("udp"), log_dir=tmp_path,
            keys={"audio_file": str(audio)}, timeout_s=20))
        call = await sim.wait_for_call(0, timeout=scaled(10))
        async with sdk(sim) as client:
            await client.realtime.calls.accept(call.call_id, type="realtime")
            await asyncio.sleep(0.5)
            await client.realtime.calls.refer(call.call_id, target_uri=target)
        assert await call.wait_ended(timeout=scaled(10)) == "transfer"  # NOTIFY 200
        result = await sipp
    assert result.ok, result.describe()
    assert f"REFER Refer-To {target}" in result.action_log


async def test_a_caller_cancel_hangs_up_the_ringing_call(tmp_path: Path) -> None:
    async with sip_sim() as sim:
        result = await run_sipp_async("uac_cancel", sim.sip_target("udp"), log_dir=tmp_path,
                                      timeout_s=15)
        call = sim.calls[0]
        assert await call.wait_ended(timeout=scaled(5)) == "caller"
    assert result.ok, result.describe()
    assert result.final_statuses() == [487]


async def _softphone(uri: str, *args: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """``gateway call`` (the pjsua2 test caller); its JSON report."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "call", uri, *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert lines, f"gateway call printed no report; stderr:\n{err.decode()[-2000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    return report


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_softphone_over_tcp_and_tls_with_srtp_and_dtmf(tmp_path: Path,
                                                            transport: str) -> None:
    tls: dict[str, Any] = {}
    if transport == "tls":
        cert, key = self_signed(tmp_path)
        tls = {"sip_tls_port": free_tcp_port(), "sip_tls_cert_file": str(cert),
               "sip_tls_key_file": str(key)}
    record = tmp_path / "heard.wav"
    play = tmp_path / "silence.wav"
    write_wav(play, silence_pcm16(6000))
    async with sip_sim(**tls) as sim:
        uri = f"sip:proj_test@{sim.sip_target(transport)};transport={transport}"
        caller = asyncio.create_task(_softphone(
            uri, "--transport", transport, "--srtp", "mandatory", "--duration", "4",
            "--dtmf", "5", "--dtmf-after", "0.5", "--play", str(play),
            "--record", str(record)))
        call = await sim.wait_for_call(0, timeout=scaled(10))
        await greet(sim, call)
        dtmf = await call.wait_for_event("input_audio_buffer.dtmf_event_received",
                                         timeout=scaled(10))
        report = await caller
        assert await call.wait_ended(timeout=scaled(5)) == "caller"
    assert report["status"] == 200, report
    assert call.record.media_security == "srtp"
    assert dtmf["event"] == "5"
    pcm, _rate = read_wav(record)
    assert loud_frames(pcm) >= 25, "the softphone did not hear the agent"


async def test_a_taken_sip_port_fails_the_simulators_start() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(SipEndpointError, match="Address already in use"):
            async with SimulatorServer(options=SimOptions(sip_port=port, sip_log_level=0)):
                pass

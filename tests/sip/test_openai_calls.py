"""Calls that reach OpenAI's SIP endpoint: webhook -> dialplan -> accept -> agent on the sideband.

Real processes and real HTTP/WebSockets on 127.0.0.1: ``gateway run`` (the control process,
with ``openai_calls`` on) and, in the test process, the simulator's Realtime Calls side playing
OpenAI: a call placed with ``sim.incoming_call`` posts a signed ``realtime.call.incoming`` to
the gateway's webhook, and the gateway drives the call over the simulator's Calls REST API and
its sideband WebSocket. The simulator's SIP endpoint is not built yet, so the caller is the
simulator's own ``SimCall`` (speech fed into its session, DTMF injected), not a SIP peer.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from gateway.sim.options import SimOptions
from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimulatorServer
from tests.sip.gateway import run_gateway
from tests.support.ports import free_tcp_port

pytestmark = [pytest.mark.sip, pytest.mark.timeout(90)]

SECRET = "whsec_" + base64.b64encode(b"openai-calls-e2e-signing-secret!").decode()

PLAN = """
tools:
  whoami: {python: "tests.fixtures.tools.import_marker:whoami"}
agents:
  concierge:
    instructions: You are the OpenAI SIP concierge of the test.
    greeting: Hello from the sideband.
    tools: [whoami, {builtin: end_call}]
    dtmf:
      rules:
        "0": {transfer: "sip:operator@pbx.example.com"}
routes:
  - name: closed
    match: {ingress: openai, to: "+18005550199"}
    reject: {code: 486}
  - name: direct
    match: {ingress: openai, to: {prefix: "+1800"}}
    agent: concierge
"""

BOOK = """
scenarios:
  concierge:
    match: {instructions: "(?i)OpenAI SIP concierge"}
    turns:
      - call: {name: whoami, arguments: {}}
      - say: "Process {tool_output} answered."
      - - say: "Goodbye."
        - call: {name: end_call, arguments: {reason: done}}
"""


def _headers(to: str) -> list[tuple[str, str]]:
    return [("From", '"Ada" <sip:+14155550123@trunk.example.com>;tag=1'),
            ("To", f"<sip:{to}@sip.api.openai.com>"), ("Call-ID", "e2e-1@trunk")]


def _config(sim: SimulatorServer) -> dict[str, Any]:
    return {"openai_calls": {"enabled": True, "api_url": sim.http_url}}


async def test_a_webhook_call_runs_its_agent_on_the_sideband(tmp_path: Path) -> None:
    port = free_tcp_port()
    options = SimOptions(tts_engine="tone", webhook_url=f"http://127.0.0.1:{port}/openai/webhook",
                         webhook_secret=SECRET)
    async with SimulatorServer(scenarios=parse_scenarios(BOOK), options=options) as sim, \
            run_gateway(tmp_path, sim, PLAN, control_port=port, extra=_config(sim),
                        env={"OPENAI_WEBHOOK_SECRET": SECRET}) as gw:
        call = await sim.incoming_call(_headers("+18005550100"))
        session = await call.wait_accepted(timeout=10)
        # The accept carried the agent and its voice. (It sent no audio.*.format either: the
        # simulator refuses one on a SIP call with 400, as that breaks the real call's audio.)
        assert "OpenAI SIP concierge" in session["instructions"]
        assert session["audio"]["output"]["voice"] == "marin"
        await call.wait_sideband(0, timeout=10)
        await call.wait_for_event("output_audio_buffer.stopped", timeout=10)  # the greeting
        await call.say("What is your process id?")
        output = await call.wait_for_event(
            "conversation.item.added", timeout=20,
            predicate=lambda e: e.get("item", {}).get("type") == "function_call_output")
        pid = int(output["item"]["output"])
        assert pid != gw.pid  # a tool worker process of the control process's pool
        answered = len(call.sent)
        await call.wait_for_event("output_audio_buffer.stopped", timeout=15, after=answered)
        await call.say("Thank you.")
        ended_by = await call.wait_ended(timeout=30)
        await gw.wait_log("call record:")
        log = gw.log()
    assert ended_by == "api"  # the gateway hung up after the farewell
    assert "agent ended the call: done" in log


async def test_routes_reject_and_transfer_webhook_calls(tmp_path: Path) -> None:
    port = free_tcp_port()
    options = SimOptions(tts_engine="tone", webhook_url=f"http://127.0.0.1:{port}/openai/webhook",
                         webhook_secret=SECRET)
    async with SimulatorServer(scenarios=parse_scenarios(BOOK), options=options) as sim, \
            run_gateway(tmp_path, sim, PLAN, control_port=port, extra=_config(sim),
                        env={"OPENAI_WEBHOOK_SECRET": SECRET}):
        closed = await sim.incoming_call(_headers("+18005550199"))
        nowhere = await sim.incoming_call(_headers("+442071838750"))
        assert await closed.wait_rejected(timeout=10) == 486
        assert await nowhere.wait_rejected(timeout=10) == 404
        transfer = await sim.incoming_call(_headers("+18005550100"))
        await transfer.wait_accepted(timeout=10)
        await transfer.wait_sideband(0, timeout=10)
        transfer.send_dtmf("0")
        assert await transfer.wait_referred(timeout=15) == "sip:operator@pbx.example.com"


async def test_bad_signatures_and_duplicates_never_accept_a_call(tmp_path: Path) -> None:
    port = free_tcp_port()
    options = SimOptions(tts_engine="tone", webhook_url=f"http://127.0.0.1:{port}/openai/webhook",
                         webhook_secret=SECRET, webhook_attempts=1)
    async with SimulatorServer(scenarios=parse_scenarios(BOOK), options=options) as sim, \
            run_gateway(tmp_path, sim, PLAN, control_port=port, extra=_config(sim),
                        env={"OPENAI_WEBHOOK_SECRET": SECRET}) as gw:
        forged = await sim.incoming_call(_headers("+18005550100"), webhook_fault="bad_signature")
        stale = await sim.incoming_call(_headers("+18005550100"),
                                        webhook_fault="stale_timestamp")
        twice = await sim.incoming_call(_headers("+18005550100"), duplicates=2)
        await twice.wait_accepted(timeout=10)
        await forged.wait_webhooks()
        await stale.wait_webhooks()
        await gw.wait_log("webhook for call")
        log = gw.log()
    assert forged.state.value == "incoming" and stale.state.value == "incoming"
    assert "webhook refused (401): the signature does not match" in log
    assert "webhook refused (400): webhook-timestamp is more than 300 s in the past" in log
    assert log.count(f"openai call {twice.call_id} -> route direct") == 1


async def test_a_sipp_caller_dials_openai_and_hears_the_gateways_agent(tmp_path: Path) -> None:
    """SIPp -> the simulator's SIP endpoint ("OpenAI") -> webhook -> gateway -> accept ->
    sideband agent; the greeting comes back to SIPp as RTP, the caller's BYE ends it."""
    from tests.support.audio import silence_pcm16, write_g711
    from tests.support.capture import Capture
    from tests.support.ports import free_udp_port_block
    from tests.support.rtp import decode_stream, frame_dbfs, rtp_streams
    from tests.support.sipp import start_sipp

    port = free_tcp_port()
    options = SimOptions(tts_engine="tone", webhook_url=f"http://127.0.0.1:{port}/openai/webhook",
                         webhook_secret=SECRET, sip_port=0)
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(6000))
    media_port = free_udp_port_block(4)
    async with SimulatorServer(scenarios=parse_scenarios(BOOK), options=options) as sim, \
            run_gateway(tmp_path, sim, PLAN, control_port=port, extra=_config(sim),
                        env={"OPENAI_WEBHOOK_SECRET": SECRET}) as gw:
        with Capture(tmp_path / "rtp.pcap", f"udp and dst port {media_port}") as cap, \
                start_sipp("uac_pcmu", sim.sip_target("udp"), log_dir=tmp_path / "sipp",
                           media_port=media_port, hold_ms=6000, service="+18005550100",
                           keys={"audio_file": str(audio)}, timeout_s=30) as sipp:
            call = await sim.wait_for_call(0, timeout=10)
            await call.wait_accepted(timeout=10)
            result = await asyncio.to_thread(sipp.result, 30.0)
            assert await call.wait_ended(timeout=10) == "caller"
        await gw.wait_log("call record:")
        log = gw.log()
    assert result.ok, result.describe()
    assert result.final_statuses() == [200]
    assert f"openai call {call.call_id} -> route direct" in log
    streams = [s for s in rtp_streams(cap.packets()) if s.dport == media_port]
    assert streams, "no RTP reached the caller"
    loud = max(sum(level > -45.0 for level in frame_dbfs(decode_stream(s))) for s in streams)
    assert loud >= 25, f"the caller heard {loud} loud frames of the greeting"


async def test_sigterm_hangs_up_live_webhook_calls_after_the_drain_timeout(
        tmp_path: Path) -> None:
    import signal

    port = free_tcp_port()
    options = SimOptions(tts_engine="tone", webhook_url=f"http://127.0.0.1:{port}/openai/webhook",
                         webhook_secret=SECRET)
    async with SimulatorServer(scenarios=parse_scenarios(BOOK), options=options) as sim, \
            run_gateway(tmp_path, sim, PLAN, control_port=port, extra=_config(sim),
                        env={"OPENAI_WEBHOOK_SECRET": SECRET}, drain_timeout_s=2) as gw:
        call = await sim.incoming_call(_headers("+18005550100"))
        await call.wait_accepted(timeout=10)
        await call.wait_sideband(0, timeout=10)
        gw.signal(signal.SIGTERM)
        await gw.wait_log("draining: 1 OpenAI call(s) may go on for 2 s")
        # The call is not left running without its agent: the gateway hangs it up.
        assert await call.wait_ended(timeout=25) == "api"
        assert await asyncio.to_thread(gw.proc.wait, 30.0) == 0
        log = gw.log()
    assert "the gateway is shutting down" in log

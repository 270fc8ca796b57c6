"""Relayed calls: SIPp -> gateway -> TLS + SRTP -> "OpenAI" SIP -> webhook -> sideband agent.

Real processes on 127.0.0.1: SIPp as the PBX, ``gateway run`` (control process and a SIP
worker), and the simulator in the test process playing OpenAI with its own pjsua2 SIP endpoint
on TLS (a self-signed certificate the gateway checks against its ``sip_ca_file``). The worker
answers SIPp only once the simulator answered the relay leg, joins the two legs in pjsua's
conference bridge, and the agent runs in the control process on the sideband the webhook
(carrying the worker's relay token) brought in.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.sim.options import SimOptions
from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimulatorServer
from tests.sip.gateway import Gateway, control_get, run_gateway, wait_until
from tests.support.audio import silence_pcm16, speech_pcm16, write_g711
from tests.support.capture import Capture
from tests.support.ports import free_tcp_port, free_udp_port_block
from tests.support.rtp import decode_stream, frame_dbfs, rtp_streams
from tests.support.sipp import run_sipp_async, start_sipp
from tests.support.tls import self_signed

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]

SECRET = "whsec_" + base64.b64encode(b"openai-relay-e2e-signing-secret!").decode()

PLAN = """
tools:
  whoami: {python: "tests.fixtures.tools.import_marker:whoami"}
agents:
  relay_concierge:
    instructions: You are the relay concierge of the test.
    greeting: Hello through the relay.
    tools: [whoami, {builtin: end_call}]
    dtmf:
      rules:
        "0": {transfer: "sip:operator@pbx.example.com"}
routes:
  - name: relayed
    match: {to: "200"}
    agent: relay_concierge
    relay: true
"""

BOOK = """
scenarios:
  relay:
    match: {instructions: "(?i)relay concierge"}
    turns:
      - call: {name: whoami, arguments: {}}
      - say: "Process {tool_output} answered."
      - - say: "Goodbye."
        - call: {name: end_call, arguments: {reason: done}}
"""


def _sim(tmp_path: Path, control_port: int) -> SimulatorServer:
    cert, key = self_signed(tmp_path)
    options = SimOptions(
        tts_engine="tone", webhook_url=f"http://127.0.0.1:{control_port}/openai/webhook",
        webhook_secret=SECRET, sip_port=0, sip_tls_port=free_tcp_port(),
        sip_tls_cert_file=str(cert), sip_tls_key_file=str(key))
    return SimulatorServer(scenarios=parse_scenarios(BOOK), options=options)


def _config(tmp_path: Path, sim: SimulatorServer) -> dict[str, Any]:
    return {"openai_calls": {
        "enabled": True, "api_url": sim.http_url,
        "sip_uri": f"sip:proj_test@{sim.sip_target('tls')};transport=tls",
        "sip_ca_file": str(tmp_path / "cert.pem"), "sip_srtp": "mandatory"}}


def _worker_record(gw: Gateway) -> dict[str, Any]:
    """The SIP worker's record of the relayed call (the control process's has no leg_id)."""
    decoder = json.JSONDecoder()
    for line in gw.log().splitlines():
        at = line.find("call record: {")
        if at < 0:
            continue
        record: dict[str, Any] = decoder.raw_decode(line, at + len("call record: "))[0]
        if record.get("kind") == "relayed" and "leg_id" in record:
            return record
    raise AssertionError("no relayed call record of the SIP worker in the gateway log")


def _active(gw: Gateway, slots: int) -> list[dict[str, Any]] | None:
    """The live calls once the worker reports ``slots`` call slots in use."""
    view = control_get(gw, "/v1/calls")
    if [w["active"] for w in view["workers"]] != [slots]:
        return None
    live: list[dict[str, Any]] = view["calls"]
    return live


def _loud_frames(cap: Capture, port: int) -> int:
    streams = [s for s in rtp_streams(cap.packets()) if s.dport == port]
    assert streams, "no RTP reached SIPp"
    return max(sum(level > -45.0 for level in frame_dbfs(decode_stream(s))) for s in streams)


async def test_a_relayed_call_hears_the_agent_and_its_tool_runs_on_the_sideband(
        tmp_path: Path) -> None:
    port = free_tcp_port()
    media_port = free_udp_port_block(4)
    speech = silence_pcm16(3000) + speech_pcm16("What is your process id?") \
        + silence_pcm16(7000)
    audio = write_g711(tmp_path / "caller.ulaw", speech)
    async with _sim(tmp_path, port) as sim, \
            run_gateway(tmp_path, sim, PLAN, control_port=port, extra=_config(tmp_path, sim),
                        env={"OPENAI_WEBHOOK_SECRET": SECRET}) as gw:
        with Capture(tmp_path / "rtp.pcap", f"udp and dst port {media_port}") as cap, \
                start_sipp("uac_pcmu", gw.target, log_dir=tmp_path / "sipp",
                           media_port=media_port, hold_ms=11000, service="200",
                           keys={"audio_file": str(audio)}, timeout_s=40) as sipp:
            call = await sim.wait_for_call(0, timeout=15)
            session = await call.wait_accepted(timeout=10)
            # One relayed call holds two call slots of its worker, and says it is relayed.
            calls = await asyncio.to_thread(wait_until, lambda: _active(gw, 2), 10.0,
                                            "the worker reporting 2 slots in use")
            output = await call.wait_for_event(
                "conversation.item.added", timeout=30,
                predicate=lambda e: e.get("item", {}).get("type") == "function_call_output")
            result = await asyncio.to_thread(sipp.result, 40.0)
            assert await call.wait_ended(timeout=10) == "caller"
        await gw.wait_log('"kind": "relayed", "leg_id"')
        log = gw.log()
        record = _worker_record(gw)
    assert result.ok, result.describe()
    assert result.final_statuses() == [200]
    assert [(c["kind"], c["route"]) for c in calls] == [("relayed", "relayed")]
    assert "relay concierge" in session["instructions"]
    # The relay leg reached "OpenAI" over TLS with SRTP, carrying the worker's token.
    assert call.record.media_security == "srtp"
    headers = {name.lower(): value for name, value in call.record.sip_headers}
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", headers["x-gateway-relay"])
    assert f"openai call {call.call_id} -> relayed call" in log
    # The tool ran in the control process's pool, and its output reached the model.
    assert int(output["item"]["output"]) != gw.pid
    # SIPp heard the agent (the greeting and the answer), carried by pjsua's bridge.
    assert _loud_frames(cap, media_port) >= 40
    # No Python frame work in the worker for this call: its media channel never moved audio.
    assert record["answered"] is True and record["route"] == "relayed"
    assert record["media"]["rx_frames"] == 0 and record["media"]["tx_frames_played"] == 0
    assert record["end_reason"] == "caller hung up"
    assert headers["x-gateway-relay"] not in log  # the token is a credential: never logged


async def test_the_agent_ends_a_relayed_call_and_the_caller_gets_bye(tmp_path: Path) -> None:
    port = free_tcp_port()
    media_port = free_udp_port_block(4)
    speech = silence_pcm16(2500) + speech_pcm16("Who are you?") + silence_pcm16(3500) \
        + speech_pcm16("Thank you.") + silence_pcm16(12000)
    audio = write_g711(tmp_path / "caller.ulaw", speech)
    async with _sim(tmp_path, port) as sim, \
            run_gateway(tmp_path, sim, PLAN, control_port=port, extra=_config(tmp_path, sim),
                        env={"OPENAI_WEBHOOK_SECRET": SECRET}) as gw:
        with start_sipp("uac_expect_bye", gw.target, log_dir=tmp_path / "sipp",
                        media_port=media_port, service="200",
                        keys={"audio_file": str(audio)}, timeout_s=60) as sipp:
            call = await sim.wait_for_call(0, timeout=15)
            assert await call.wait_ended(timeout=45) == "api"  # the agent hung up over REST
            result = await asyncio.to_thread(sipp.result, 20.0)
        await gw.wait_log('"kind": "relayed", "leg_id"')
        record = _worker_record(gw)
    assert result.ok, result.describe()  # SIPp got the BYE and answered it
    assert record["end_reason"] == "OpenAI's leg hung up"


async def test_a_dtmf_rule_on_a_relayed_call_refers_the_caller(tmp_path: Path) -> None:
    """SIPp's RFC 4733 digit crosses the relay, the agent's rule transfers, SIPp gets REFER."""
    port = free_tcp_port()
    media_port = free_udp_port_block(4)
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(15000))
    async with _sim(tmp_path, port) as sim, \
            run_gateway(tmp_path, sim, PLAN, control_port=port, extra=_config(tmp_path, sim),
                        env={"OPENAI_WEBHOOK_SECRET": SECRET}) as gw:
        with start_sipp("uac_rfc4733_transferee", gw.target, log_dir=tmp_path / "sipp",
                        media_port=media_port, service="200",
                        keys={"audio_file": str(audio), "dtmf_digit": "0",
                              "dtmf_delay_ms": "4000"}, timeout_s=60) as sipp:
            call = await sim.wait_for_call(0, timeout=15)
            await call.wait_accepted(timeout=10)
            digit = await call.wait_for_event("input_audio_buffer.dtmf_event_received",
                                              timeout=20)
            result = await asyncio.to_thread(sipp.result, 40.0)
            await call.wait_ended(timeout=10)
        await gw.wait_log('"kind": "relayed", "leg_id"')
        log = gw.log()
        record = _worker_record(gw)
    assert digit["event"] == "0"
    assert result.ok, result.describe()  # REFER to the operator, 202, NOTIFY 200, then BYE
    assert record["end_reason"] == "transferred"
    assert record["dtmf_digits"] == 1
    assert "relayed call" in log and "transfer done" in log


async def test_a_forged_relay_token_is_refused(tmp_path: Path) -> None:
    """A call to OpenAI that claims to be a relay leg, with a token no worker gave: 403."""
    port = free_tcp_port()
    async with _sim(tmp_path, port) as sim, \
            run_gateway(tmp_path, sim, PLAN, control_port=port, extra=_config(tmp_path, sim),
                        env={"OPENAI_WEBHOOK_SECRET": SECRET}) as gw:
        forged = await sim.incoming_call([
            ("From", "<sip:mallory@198.51.100.7>;tag=1"), ("To", "<sip:200@sip.api.openai.com>"),
            ("Call-ID", "forged@198.51.100.7"), ("X-Gateway-Relay", "A" * 32)])
        assert await forged.wait_rejected(timeout=10) == 403
        log = gw.log()
    assert "unknown or spent relay token: 403" in log
    assert forged.session is None  # never accepted


async def test_openai_not_answering_refuses_the_caller_and_cancel_reaches_openai(
        tmp_path: Path) -> None:
    """No webhook reaches the gateway (OpenAI rings on): the caller gets 503 after
    relay_answer_timeout_s; a caller who gives up first cancels the relay leg too."""
    dead = free_tcp_port()  # the simulator's webhooks go nowhere
    config = {"openai_calls": {"relay_answer_timeout_s": 2}}
    async with _sim(tmp_path, dead) as sim:
        extra = _config(tmp_path, sim)
        extra["openai_calls"].update(config["openai_calls"])
        async with run_gateway(tmp_path, sim, PLAN, extra=extra,
                               env={"OPENAI_WEBHOOK_SECRET": SECRET}) as gw:
            refused = await run_sipp_async(
                "uac_expect_status", gw.target, log_dir=tmp_path / "sipp", service="200",
                keys={"expected_status": "503"}, timeout_s=20)
            first = await sim.wait_for_call(0, timeout=5)
            assert await first.wait_ended(timeout=10) == "caller"  # CANCELled by the worker
            cancelled = await run_sipp_async("uac_cancel", gw.target,
                                             log_dir=tmp_path / "sipp2", service="200",
                                             timeout_s=20)
            second = await sim.wait_for_call(1, timeout=5)
            assert await second.wait_ended(timeout=10) == "caller"
            await gw.wait_log("caller cancelled")
            log = gw.log()
    assert refused.ok, refused.describe()
    assert cancelled.ok, cancelled.describe()
    assert "OpenAI did not answer within 2 s" in log


async def test_a_refer_from_openais_leg_transfers_the_pbx_leg(tmp_path: Path) -> None:
    """OpenAI refers the relayed call (its REST refer, here called directly): the worker
    declines the REFER on OpenAI's leg and REFERs the PBX leg (SIPp) instead."""
    port = free_tcp_port()
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(20000))
    async with _sim(tmp_path, port) as sim, \
            run_gateway(tmp_path, sim, PLAN, control_port=port, extra=_config(tmp_path, sim),
                        env={"OPENAI_WEBHOOK_SECRET": SECRET}) as gw:
        with start_sipp("uac_transferee", gw.target, log_dir=tmp_path / "sipp",
                        keys={"audio_file": str(audio)}, service="200", timeout_s=50) as sipp:
            call = await sim.wait_for_call(0, timeout=15)
            await call.wait_sideband(0, timeout=15)
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{sim.http_url}/realtime/calls/{call.call_id}/refer",
                                     json={"target_uri": "sip:desk@127.0.0.1"},
                                     headers={"Authorization": "Bearer sk-test"}) as resp:
                    assert resp.status == 200
            result = await asyncio.to_thread(sipp.result, 40.0)
        await gw.wait_log('"kind": "relayed", "leg_id"')
        log = gw.log()
        record = _worker_record(gw)
    assert result.ok, result.describe()
    assert "REFER Refer-To sip:desk@127.0.0.1" in result.action_log
    assert "OpenAI's leg sent REFER: transferring the caller" in log
    assert record["end_reason"] == "transferred"

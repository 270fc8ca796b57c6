"""Agents on calls OpenAI's SIP endpoint answered: what the sideband does, end to end (issue 10).

Real processes on 127.0.0.1, as in ``test_openai_calls.py``: ``gateway run`` with
``openai_calls`` on, and the simulator playing OpenAI in the test process (webhooks, the Calls
REST API, the sideband by ``call_id`` and, for SIPp callers, its own SIP endpoint). Each test
drives one thing a caller would notice: a handoff re-configures the live session, an output
guardrail cuts the agent off (``response.cancel`` then ``output_audio_buffer.clear``) and acts,
an RFC 4733 key from SIPp makes the simulator REFER SIPp, ``end_call`` lets SIPp hear the
farewell before its BYE, the accept survives REST 5xx and gives up on a caller already gone,
and a lost sideband comes back by ``call_id`` or, when it cannot, the caller goes to the
route's fallback (or is hung up). The simulator's faults are its own (``rest_faults``,
``drop_sideband``, ``refuse_sidebands``): nothing is patched.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.media.g711 import ulaw_decode
from gateway.sim.options import SimOptions
from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimulatorServer
from gateway.sim.simcall import SimCall
from gateway.sim.tts import synthesize
from tests.sip.gateway import Gateway, run_gateway
from tests.support.audio import silence_pcm16, tone_pcm16, write_g711
from tests.support.capture import Capture
from tests.support.ports import free_tcp_port, free_udp_port, free_udp_port_block
from tests.support.rtp import frame_dbfs, looks_like_rtp, parse_rtp
from tests.support.sipp import start_sipp

pytestmark = [pytest.mark.sip, pytest.mark.timeout(90)]

SECRET = "whsec_" + base64.b64encode(b"openai-agents-e2e-signing-secret").decode()
API_KEY = "sk-local-test-key"  # what tests.sip.gateway gives the gateway
OPERATOR = "sip:operator@pbx.example.com"
SUPERVISOR = "sip:supervisor@pbx.example.com"
FALLBACK = "sip:fallback@pbx.example.com"
FAREWELL = "Thank you for calling the closing desk, goodbye for now."
PINEAPPLE = "Let me tell you all about the pineapple harvest this year, it was a long one."

PLAN = f"""
tools:
  whoami: {{python: "tests.fixtures.tools.import_marker:whoami"}}
agents:
  front:
    instructions: You are the front desk of the OpenAI SIP agents test.
    greeting: Hello from the front desk.
    tools: [{{builtin: end_call}}]
    handoffs: [billing]
    dtmf:
      rules:
        "0": {{transfer: "{OPERATOR}"}}
  billing:
    instructions: You are the billing desk of the OpenAI SIP agents test.
    tools: [{{builtin: end_call}}]
  guarded:
    instructions: You are the guarded desk of the OpenAI SIP agents test.
    guardrails:
      - {{name: fruit, deny_keywords: [pineapple], action: say,
          message: "We do not discuss fruit here."}}
    guardrail_debounce_chars: 20
  supervised:
    instructions: You are the supervised desk of the OpenAI SIP agents test.
    guardrails:
      - {{name: fruit, deny_keywords: [pineapple], action: transfer, target: "{SUPERVISOR}"}}
    guardrail_debounce_chars: 20
  closer:
    instructions: You are the closing desk of the OpenAI SIP agents test.
    greeting: Hello from the closing desk.
    tools: [{{builtin: end_call}}]
  steady:
    instructions: You are the steady desk of the OpenAI SIP agents test.
    greeting: Hello from the steady desk.
    tools: [whoami]
routes:
  - {{name: guarded, match: {{ingress: openai, to: "+18005550102"}}, agent: guarded}}
  - {{name: supervised, match: {{ingress: openai, to: "+18005550103"}}, agent: supervised}}
  - {{name: closing, match: {{ingress: openai, to: "+18005550104"}}, agent: closer}}
  - {{name: rescued, match: {{ingress: openai, to: "+18005550105"}}, agent: steady,
      fallback: "{FALLBACK}"}}
  - {{name: steady, match: {{ingress: openai, to: "+18005550106"}}, agent: steady}}
  - {{name: front, match: {{ingress: openai, to: {{prefix: "+1800"}}}}, agent: front}}
"""

BOOK = f"""
scenarios:
  front:
    match: {{instructions: "(?i)front desk of the OpenAI SIP"}}
    turns:
      - - say: "Let me put you through to billing."
        - handoff: billing
  billing:
    match: {{instructions: "(?i)billing desk of the OpenAI SIP"}}
    turns:
      - say: "Billing here, what can I do for you?"
  guarded:
    match: {{instructions: "(?i)(guarded|supervised) desk of the OpenAI SIP"}}
    turns:
      - say: "{PINEAPPLE}"
  closer:
    match: {{instructions: "(?i)closing desk of the OpenAI SIP"}}
    turns:
      - - say: "{FAREWELL}"
        - call: {{name: end_call, arguments: {{reason: done}}}}
  steady:
    match: {{instructions: "(?i)steady desk of the OpenAI SIP"}}
    turns:
      - call: {{name: whoami, arguments: {{}}}}
      - say: "Process {{tool_output}} answered."
"""


@contextlib.asynccontextmanager
async def openai_gateway(tmp_path: Path, *, sip: bool = False
                         ) -> AsyncIterator[tuple[SimulatorServer, Gateway]]:
    """The simulator (with its SIP endpoint if ``sip``) and a gateway taking its webhooks."""
    port = free_tcp_port()
    options = SimOptions(tts_engine="tone", webhook_url=f"http://127.0.0.1:{port}/openai/webhook",
                         webhook_secret=SECRET, sip_port=0 if sip else None)
    async with SimulatorServer(scenarios=parse_scenarios(BOOK), options=options) as sim, \
            run_gateway(tmp_path, sim, PLAN, control_port=port,
                        extra={"openai_calls": {"enabled": True, "api_url": sim.http_url}},
                        env={"OPENAI_WEBHOOK_SECRET": SECRET}) as gw:
        yield sim, gw


def headers(to: str, tag: str = "1") -> list[tuple[str, str]]:
    """The INVITE headers of a call from a trunk to ``to``."""
    return [("From", f'"Ada" <sip:+14155550123@trunk.example.com>;tag={tag}'),
            ("To", f"<sip:{to}@sip.api.openai.com>"), ("Call-ID", f"agents-{tag}@trunk")]


async def record_of(gw: Gateway, call_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """The ``call record:`` the gateway logged for ``call_id``, once it is there."""
    await gw.wait_log(f'"call_id": "{call_id}"', timeout_s)
    for line in re.findall(r"call record: (\{.*\})", gw.log()):
        record: dict[str, Any] = json.loads(line)
        if record["call_id"] == call_id:
            return record
    raise AssertionError(f"no call record for {call_id}")


def client_events(call: SimCall) -> list[dict[str, Any]]:
    """Every client event the call's sidebands received, in order."""
    assert call.core is not None, "the call was never accepted"
    return call.core.received


def first_index(events: list[dict[str, Any]], type_: str) -> int:
    """Index of the first event of ``type_`` (fails the test if none)."""
    found = [i for i, e in enumerate(events) if e["type"] == type_]
    assert found, f"no {type_} in {[e['type'] for e in events]}"
    return found[0]


def no_secrets(log: str) -> None:
    """The gateway's log holds neither the API key nor the webhook secret."""
    assert API_KEY not in log
    assert SECRET not in log and SECRET.removeprefix("whsec_") not in log


async def test_a_handoff_reconfigures_the_sideband_session_and_is_recorded(
        tmp_path: Path) -> None:
    async with openai_gateway(tmp_path) as (sim, gw):
        call = await sim.incoming_call(headers("+18005550101"))
        await call.wait_accepted(timeout=10)
        await call.wait_sideband(0, timeout=10)
        await call.wait_for_event("output_audio_buffer.stopped", timeout=15)  # the greeting
        await call.say("I have a question about my bill.")
        billing = await call.wait_for_event(
            "response.output_audio_transcript.done", timeout=20,
            predicate=lambda e: "Billing here" in e["transcript"])
        await call.hangup()
        record = await record_of(gw, call.call_id)
        no_secrets(gw.log())
    received = client_events(call)
    handoff = next(e for e in call.sent if e["type"] == "response.function_call_arguments.done")
    assert handoff["name"] == "transfer_to_billing"
    # The live session got the billing desk's instructions and tools, before the handoff's
    # output let the model go on (the accept had the front desk's).
    update_at, update = next((i, e["session"]) for i, e in enumerate(received)
                             if e["type"] == "session.update")
    assert "billing desk of the OpenAI SIP agents test" in update["instructions"]
    assert "front desk" not in update["instructions"]
    assert {t["name"] for t in update["tools"]} == {"end_call"}
    output_at = next(i for i, e in enumerate(received)
                     if e["type"] == "conversation.item.create"
                     and e["item"].get("call_id") == handoff["call_id"])
    assert update_at < output_at
    assert json.loads(received[output_at]["item"]["output"])["now_speaking"] == "billing"
    assert call.sent.index(billing) > call.sent.index(handoff)  # billing answered after it
    assert [(h["from_agent"], h["to_agent"]) for h in record["handoffs"]] == [
        ("front", "billing")]
    assert record["handoffs"][0]["tool_call_id"] == handoff["call_id"]
    assert "reason" not in record["handoffs"][0]  # call content stays out of the log
    assert record["accepted"] and record["end_reason"] == "call ended"


@pytest.mark.parametrize("action", ["say", "transfer"])
async def test_an_output_guardrail_cancels_clears_and_acts(tmp_path: Path, action: str) -> None:
    async with openai_gateway(tmp_path) as (sim, gw):
        to = "+18005550102" if action == "say" else "+18005550103"
        call = await sim.incoming_call(headers(to))
        await call.wait_accepted(timeout=10)
        await call.wait_sideband(0, timeout=10)
        await call.say("Tell me about fruit.")
        truncated = await call.wait_for_event("conversation.item.truncated", timeout=20)
        if action == "say":
            await call.wait_for_event(
                "response.output_audio_transcript.done", timeout=20,
                predicate=lambda e: e["transcript"] == "We do not discuss fruit here.")
            await call.hangup()
        else:
            assert await call.wait_referred(timeout=15) == SUPERVISOR
            await call.transfer_result(True)  # the REFER's final NOTIFY: 200
        record = await record_of(gw, call.call_id)
    received = client_events(call)
    types = [e["type"] for e in received]
    # Cut off: the response cancelled, then the audio the caller hears cleared; the server
    # truncates what was not heard (the gateway sends no truncate of its own).
    assert first_index(received, "response.cancel") < first_index(
        received, "output_audio_buffer.clear")
    assert "conversation.item.truncate" not in types
    spoken = "".join(e["delta"] for e in call.sent
                     if e["type"] == "response.output_audio_transcript.delta"
                     and e["item_id"] == truncated["item_id"])
    assert "pineapple" in spoken  # the item cut is the one that tripped the guardrail
    whole_ms = len(synthesize(PINEAPPLE, voice="marin", sample_rate=8000, engine="tone")) / 16
    assert 0 < truncated["audio_end_ms"] < whole_ms - 1000, "the line was not cut short"
    events = record["guardrail_events"]
    assert [(g["guardrail"], g["action"]) for g in events] == [("fruit", action)]
    assert events[0]["item_id"] == truncated["item_id"]
    if action == "say":
        instructions = [(e.get("response") or {}).get("instructions") for e in received
                        if e["type"] == "response.create"]
        assert 'Say exactly "We do not discuss fruit here."' in instructions
        assert record["end_reason"] == "call ended"
    else:
        assert call.record.ended_by == "transfer"
        assert record["end_reason"] == f"guardrail transferred the call to {SUPERVISOR}"


async def test_a_sipp_callers_rfc4733_key_makes_the_simulator_refer_it(tmp_path: Path) -> None:
    """SIPp -> the simulator's SIP endpoint -> webhook -> the front desk; SIPp presses 0 in
    the media (RFC 4733), the DTMF rule transfers, the simulator sends SIPp a REFER, SIPp's
    NOTIFY 200 ends the call and the simulator sends SIPp a BYE."""
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(10000))
    async with openai_gateway(tmp_path, sip=True) as (sim, gw):
        with start_sipp("uac_rfc4733_transferee", sim.sip_target("udp"),
                        log_dir=tmp_path / "sipp", service="+18005550101", timeout_s=30,
                        keys={"audio_file": str(audio), "dtmf_digit": "0",
                              "dtmf_delay_ms": "1500"}) as sipp:
            call = await sim.wait_for_call(0, timeout=10)
            await call.wait_accepted(timeout=10)
            sideband = await call.wait_sideband(0, timeout=10)
            dtmf = await call.wait_for_event("input_audio_buffer.dtmf_event_received",
                                             timeout=15)
            assert not sideband.closed  # the gateway was listening when the key came
            assert await call.wait_referred(timeout=15) == OPERATOR
            assert await call.wait_ended(timeout=15) == "transfer"
            result = await asyncio.to_thread(sipp.result, 30.0)
        record = await record_of(gw, call.call_id)
    assert result.ok, result.describe()
    assert f"REFER Refer-To {OPERATOR}" in result.action_log
    assert result.received(method="REFER")[0].header("Refer-To") == OPERATOR
    assert result.received(method="BYE"), "the simulator did not hang up after the transfer"
    assert dtmf["event"] == "0"
    assert record["dtmf_digits"] == 1
    # The keypad rule transferred the call, not a guardrail: the record must say so.
    assert OPERATOR in record["end_reason"]
    assert "guardrail" not in record["end_reason"], record["end_reason"]


async def test_a_call_transferred_while_the_agent_speaks_is_let_go_when_it_ends(
        tmp_path: Path) -> None:
    """The key is pressed during the greeting: once the REFER is done and the call is over
    (its sideband closed), the gateway has nothing left to wait for."""
    async with openai_gateway(tmp_path) as (sim, gw):
        call = await sim.incoming_call(headers("+18005550101"))
        await call.wait_accepted(timeout=10)
        sideband = await call.wait_sideband(0, timeout=10)
        await call.wait_for_event("output_audio_buffer.started", timeout=10)  # the greeting
        call.send_dtmf("0")
        assert await call.wait_referred(timeout=10) == OPERATOR
        await call.transfer_result(True)  # the caller is through: the call has ended
        assert await sideband.wait_closed(timeout=5) == 1000
        loop = asyncio.get_running_loop()
        ended_at = loop.time()
        record = await record_of(gw, call.call_id, timeout_s=25)
        held_s = loop.time() - ended_at
    assert OPERATOR in record["end_reason"]
    assert held_s < 3.0, f"the gateway held the ended call for {held_s:.1f} s"


async def test_end_call_lets_sipp_hear_the_farewell_before_the_bye(tmp_path: Path) -> None:
    # The caller: quiet while the greeting plays, then 800 ms of "speech", then quiet.
    audio = write_g711(tmp_path / "caller.ulaw", silence_pcm16(4000) + tone_pcm16(440, 800)
                       + silence_pcm16(20000))
    media_port, sip_port = free_udp_port_block(4), free_udp_port()
    async with openai_gateway(tmp_path, sip=True) as (sim, gw):
        with Capture(tmp_path / "caller.pcap",
                     f"udp and (dst port {media_port} or dst port {sip_port})") as cap, \
                start_sipp("uac_expect_bye", sim.sip_target("udp"), log_dir=tmp_path / "sipp",
                           local_port=sip_port, media_port=media_port, service="+18005550104",
                           keys={"audio_file": str(audio)}, timeout_s=30) as sipp:
            call = await sim.wait_for_call(0, timeout=10)
            await call.wait_accepted(timeout=10)
            sideband = await call.wait_sideband(0, timeout=10)
            assert await call.wait_ended(timeout=30) == "api"  # the gateway hung up
            result = await asyncio.to_thread(sipp.result, 20.0)
        record = await record_of(gw, call.call_id)
    assert result.ok, result.describe()
    assert record["end_reason"] == "agent ended the call: done"
    # When the farewell played (the simulator's output_audio_buffer events), and when the BYE
    # and the agent's RTP reached SIPp (tcpdump's clock is the same wall clock).
    started = [t for e, t in zip(sideband.sent, sideband.sent_at, strict=True)
               if e["type"] == "output_audio_buffer.started"]
    stopped = [t for e, t in zip(sideband.sent, sideband.sent_at, strict=True)
               if e["type"] == "output_audio_buffer.stopped"]
    assert len(started) == len(stopped) == 2  # the greeting, then the farewell
    packets = cap.packets()
    bye_at = min(p.ts for p in packets if p.dport == sip_port and p.payload.startswith(b"BYE "))
    loud = [p.ts for p in packets if p.dport == media_port and looks_like_rtp(p.payload)
            and parse_rtp(p.payload).pt == 0
            and frame_dbfs(ulaw_decode(parse_rtp(p.payload).payload))[0] > -45.0]
    farewell = [t for t in loud if t >= started[1] - 0.05]
    expected = sum(level > -45.0 for level in frame_dbfs(
        synthesize(FAREWELL, voice="marin", sample_rate=8000, engine="tone")))
    assert len(farewell) >= expected - 3, f"SIPp heard {len(farewell)}/{expected} frames"
    assert stopped[1] <= bye_at and max(farewell) < bye_at, "the BYE cut the farewell"


async def test_accept_retries_server_errors_but_not_a_caller_already_gone(
        tmp_path: Path) -> None:
    async with openai_gateway(tmp_path) as (sim, gw):
        gone = await sim.incoming_call(headers("+18005550101", "gone"))
        assert await gone.hangup()  # the caller cancels while the webhook is on its way
        flaky = await sim.incoming_call(headers("+18005550101", "flaky"),
                                        rest_faults={"accept": [503, 500]})
        down = await sim.incoming_call(headers("+18005550101", "down"),
                                       rest_faults={"accept": [503, 503, 503]})
        await flaky.wait_accepted(timeout=15)
        await flaky.wait_sideband(0, timeout=10)
        await flaky.wait_for_event("output_audio_buffer.stopped", timeout=15)  # the greeting
        gone_record = await record_of(gw, gone.call_id)
        down_record = await record_of(gw, down.call_id)
        await flaky.hangup()
        flaky_record = await record_of(gw, flaky.call_id)
        log = gw.log()
    assert gone.requests == [("accept", 404)]  # once: a 404 is final
    assert (gone_record["accepted"], gone_record["end_reason"]) == (
        False, "caller gone before accept")
    assert flaky.requests == [("accept", 503), ("accept", 500), ("accept", 200)]
    assert log.count(f"calls accept {flaky.call_id}: ") == 2  # each retry logged
    assert flaky_record["accepted"] and flaky_record["end_reason"] == "call ended"
    # openai_calls.request_attempts accepts, then a reject: the caller is not left ringing.
    assert down.requests == [("accept", 503)] * 3 + [("reject", 200)]
    assert down.state.value == "rejected"
    assert not down_record["accepted"]
    assert down_record["end_reason"].startswith(f"accept failed: accept {down.call_id}: HTTP 503")
    no_secrets(log)


async def test_a_dropped_sideband_reconnects_by_call_id_and_the_agent_goes_on(
        tmp_path: Path) -> None:
    async with openai_gateway(tmp_path) as (sim, gw):
        call = await sim.incoming_call(headers("+18005550106"))
        await call.wait_accepted(timeout=10)
        first = await call.wait_sideband(0, timeout=10)
        await call.wait_for_event("output_audio_buffer.stopped", timeout=15)  # the greeting
        assert await call.drop_sideband() == 1  # TCP cut: the gateway sees 1006
        second = await call.wait_sideband(1, timeout=15)
        assert first.closed and second.query.get("call_id") == call.call_id
        await gw.wait_log("sideband Reconnected")
        before = len(client_events(call))
        await call.say("What is your process id?")
        output = await call.wait_for_event(
            "conversation.item.added", timeout=20,
            predicate=lambda e: e.get("item", {}).get("type") == "function_call_output")
        answer = await call.wait_for_event(
            "response.output_audio_transcript.done", timeout=20,
            predicate=lambda e: e["transcript"].startswith("Process "))
        await call.hangup()
        record = await record_of(gw, call.call_id)
    # The tool ran and its output came back over the new sideband (the first was closed).
    assert any(e["type"] == "conversation.item.create" for e in client_events(call)[before:])
    assert answer["transcript"] == f"Process {output['item']['output']} answered."
    assert record["end_reason"] == "call ended" and record.get("referred_to") is None
    assert call.record.ended_by == "caller"


@pytest.mark.parametrize(("to", "outcome"), [("+18005550105", "referred"),
                                             ("+18005550106", "hung up")])
async def test_a_sideband_that_cannot_come_back_sends_the_caller_to_the_fallback(
        tmp_path: Path, to: str, outcome: str) -> None:
    async with openai_gateway(tmp_path) as (sim, gw):
        call = await sim.incoming_call(headers(to))
        await call.wait_accepted(timeout=10)
        await call.wait_sideband(0, timeout=10)
        await call.wait_for_event("output_audio_buffer.stopped", timeout=15)  # the greeting
        call.refuse_sidebands(503)
        attempts = sim.connect_attempts
        await call.drop_sideband()
        if outcome == "referred":
            assert await call.wait_referred(timeout=20) == FALLBACK
        else:
            assert await call.wait_ended(timeout=20) == "api"
        record = await record_of(gw, call.call_id)
        log = gw.log()
        refused = sim.connect_attempts - attempts
        if outcome == "referred":
            await call.transfer_result(True)
    assert refused == 3  # realtime.connect_attempts reconnects, each refused with 503
    assert len(call.sidebands) == 1  # none attached again
    assert record["end_reason"].startswith("sideband lost")
    if outcome == "referred":
        assert f"call {call.call_id}: sideband lost" in log and "referred to the fallback" in log
        assert call.requests[-1] == ("refer", 200)
    else:
        assert "; hung up" in log and call.requests[-1] == ("hangup", 200)

"""The shipped voice-assistant example over real SIP: tools, a handoff, a guardrail trip,
call control (transfer by REFER, end_call) and DTMF, against the simulator.

The scenario books here chain the whole flow after one caller utterance: every tool output
and handoff makes the gateway ask for the next response, so nothing depends on when the caller
speaks. The dialplan, the example tools and the guardrails are the shipped ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.voice_assistant.tools import book_appointment, get_weather
from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimulatorServer
from tests.sip.gateway import REPO, place_call, run_gateway
from tests.sip.observe import (
    call_record,
    item_audio,
    played_prefix,
    spoken,
    stream_payload,
)
from tests.support.audio import silence_pcm16, speech_pcm16, write_g711, write_wav
from tests.support.capture import Capture
from tests.support.ports import free_udp_port_block
from tests.support.rtp import rtp_streams
from tests.support.sipp import run_sipp_async

pytestmark = [pytest.mark.sip, pytest.mark.timeout(150)]

# Copied to a temporary directory, so its `python_path: ..` is made absolute (the repository).
DIALPLAN = (REPO / "dialplans" / "voice_assistant.yaml").read_text().replace(
    "\npython_path: ..\n", f"\npython_path: {REPO}\n")

CHAINED = """
scenarios:
  assistant:
    match: {instructions: "(?i)friendly voice assistant for"}
    turns:
      - - say: "Let me check."
        - call: {name: get_weather, arguments: {city: "Lisbon"}}
      - - say: "In {tool_output.city} it is {tool_output.conditions}."
        - handoff: bookings
  bookings:
    match: {instructions: "(?i)you run the bookings desk of"}
    turns:
      - - say: "Booking it."
        - call:
            name: book_appointment
            arguments: {date: "2030-05-14", time: "10:30", service: "haircut"}
      - - say: >-
            Confirmation {tool_output.confirmation}. I will now charge your card number
            4111 1111 1111 1111 for the deposit today.
      - - say: "Confirmation {tool_output.confirmation}. You pay at the salon."
        - wait: 200
        - say: "Thank you for calling. Goodbye!"
        - hangup
"""


async def test_voice_assistant_tools_handoff_guardrail_and_end_call(tmp_path: Path) -> None:
    play = tmp_path / "caller.wav"
    write_wav(play, silence_pcm16(3500) + speech_pcm16("What is the weather in Lisbon?")
              + silence_pcm16(30000))
    async with SimulatorServer(scenarios=parse_scenarios(CHAINED)) as sim, \
            run_gateway(tmp_path, sim, DIALPLAN) as gw:
        with Capture(tmp_path / "rtp.pcap", gw.rtp_filter) as cap:
            report = await place_call(gw, tmp_path, play=play, duration_s=45, timeout_s=80)
        await gw.wait_log("call record: ")
        log = gw.log()
        session = sim.sessions[0]
    received = session.received
    outputs = [e["item"] for e in received if e["type"] == "conversation.item.create"
               and e["item"]["type"] == "function_call_output"]
    calls = {e["call_id"]: e for e in session.sent
             if e["type"] == "response.function_call_arguments.done"}
    by_name = {calls[o["call_id"]]["name"]: json.loads(o["output"]) for o in outputs}
    # Tools ran with the scripted arguments, and their real outputs reached the model.
    assert by_name["get_weather"] == get_weather("Lisbon")
    assert by_name["book_appointment"] == book_appointment("2030-05-14", "10:30", "haircut")
    transcripts = list(dict(spoken(session)).values())
    assert any("In Lisbon it is sunny" in t for t in transcripts)
    # The handoff switched the live session to the bookings agent and was recorded.
    assert by_name["transfer_to_bookings"]["ok"] is True
    updates = [e["session"] for e in received if e["type"] == "session.update"]
    assert "bookings desk" in updates[-1]["instructions"]
    assert {t["name"] for t in updates[-1]["tools"]} >= {"book_appointment", "end_call",
                                                          "transfer_to_assistant"}
    record = call_record(log)
    assert [(h["from_agent"], h["to_agent"]) for h in record["handoffs"]] == [
        ("assistant", "bookings")]
    # The model's reason and context come from what the caller said: not logged by default.
    assert "reason" not in record["handoffs"][0] and "context" not in record["handoffs"][0]
    assert all(t["ok"] for t in record["tool_calls"])
    # The card number tripped the guardrail: audio cut, item truncated, model told to retry.
    assert [g["guardrail"] for g in record["guardrail_events"]] == ["card_number"]
    card_item = next(i for i, t in dict(spoken(session)).items() if "4111" in t)
    truncate = next(e for e in received if e["type"] == "conversation.item.truncate")
    assert truncate["item_id"] == card_item
    assert any(e["type"] == "conversation.item.create" and e["item"]["type"] == "message"
               and "card_number" in e["item"]["content"][0]["text"] for e in received)
    payload = stream_payload(rtp_streams(cap.packets())[0])
    card_audio = item_audio(session, card_item)
    heard = played_prefix(card_audio, payload)[1]
    assert heard < len(card_audio) - 8 * 500, "the card number line was not cut"
    assert abs(truncate["audio_end_ms"] - heard / 8) <= 20
    # end_call: the farewell was played to the end, then the gateway hung up.
    farewell = next(i for i, t in dict(spoken(session)).items() if "Goodbye" in t)
    farewell_audio = item_audio(session, farewell)
    assert played_prefix(farewell_audio, payload)[1] == len(farewell_audio)
    assert report["ended_by"] == "remote"
    assert "agent ended the call" in record["end_reason"]


TRANSFER = """
scenarios:
  assistant:
    match: {instructions: "(?i)friendly voice assistant for"}
    turns:
      - - say: "I will put you through to the operator."
        - call: {name: transfer_call, arguments: {target: operator, reason: "caller asked"}}
"""


async def test_transfer_call_sends_refer_and_hangs_up(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "caller.ulaw", silence_pcm16(3500)
                       + speech_pcm16("Operator please.") + silence_pcm16(20000))
    async with SimulatorServer(scenarios=parse_scenarios(TRANSFER)) as sim, \
            run_gateway(tmp_path, sim, DIALPLAN) as gw:
        result = await run_sipp_async("uac_transferee", gw.target, log_dir=tmp_path,
                                      keys={"audio_file": str(audio)}, timeout_s=40)
        assert result.ok, result.describe()
        assert "REFER Refer-To sip:operator@127.0.0.1" in result.action_log
        await gw.wait_log("call record: ")
        record = call_record(gw.log())
    assert record["end_reason"] == "transferred to sip:operator@127.0.0.1"
    assert [t["name"] for t in record["tool_calls"]] == ["transfer_call"]


async def test_dtmf_rule_transfers_without_asking_the_model(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(20000))
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, DIALPLAN) as gw:
        result = await run_sipp_async("uac_dtmf_transferee", gw.target, log_dir=tmp_path,
                                      keys={"audio_file": str(audio), "dtmf_digit": "0",
                                            "dtmf_delay_ms": "1500"}, timeout_s=40)
        assert result.ok, result.describe()
        assert "REFER Refer-To sip:operator@127.0.0.1" in result.action_log
        await gw.wait_log("DTMF rule 0 -> transfer")
        session = sim.sessions[0]
    # The model never heard about the key: the rule handled it.
    assert not any(e["type"] == "conversation.item.create" for e in session.received)


async def test_dtmf_digits_reach_the_agent_as_one_message(tmp_path: Path) -> None:
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, DIALPLAN) as gw:
        await place_call(gw, tmp_path, duration_s=5, dtmf="42#", dtmf_after_s=1.5)
        session = sim.sessions[0]
        item = await session.wait_for_received("conversation.item.create", timeout=5)
    text = item["item"]["content"][0]["text"]
    assert "4 2 #" in text
    assert sum(1 for e in session.received if e["type"] == "conversation.item.create") == 1


SEND_DTMF = """
scenarios:
  assistant:
    match: {instructions: "(?i)friendly voice assistant for"}
    turns:
      - - say: "Pressing one two three."
        - call: {name: send_dtmf, arguments: {digits: "123"}}
      - say: "Done."
"""


async def test_send_dtmf_puts_rfc4733_events_on_the_wire(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "caller.ulaw", silence_pcm16(3500)
                       + speech_pcm16("Please dial one two three.") + silence_pcm16(15000))
    media_port = free_udp_port_block(4)
    async with SimulatorServer(scenarios=parse_scenarios(SEND_DTMF)) as sim, \
            run_gateway(tmp_path, sim, DIALPLAN) as gw:
        with Capture(tmp_path / "rtp.pcap", f"udp and dst port {media_port}") as cap:
            result = await run_sipp_async("uac_pcmu", gw.target, log_dir=tmp_path,
                                          media_port=media_port, hold_ms=12000,
                                          keys={"audio_file": str(audio)}, timeout_s=40)
        assert result.ok, result.describe()
        session = sim.sessions[0]
    output = next(e["item"]["output"] for e in session.received
                  if e["type"] == "conversation.item.create"
                  and e["item"]["type"] == "function_call_output")
    assert json.loads(output) == {"ok": True, "sent": "123"}
    # telephone-event (PT 101 in the caller's offer): RFC 4733 §2.3 payload, event code first.
    events = [p.rtp.payload[0] for s in rtp_streams(cap.packets()) for p in s.packets
              if p.rtp.pt == 101]
    assert [e for i, e in enumerate(events) if i == 0 or events[i - 1] != e] == [1, 2, 3]


GUARDED = """
agents:
  guarded:
    instructions: You are a test agent with a strict guardrail.
    tools: [{builtin: end_call}]
    guardrails:
      - name: forbidden
        deny_keywords: [pineapple]
        action: ACTION
        TARGET
routes:
  - name: all
    agent: guarded
"""

SAYS_FORBIDDEN = """
scenarios:
  guarded:
    match: {instructions: "(?i)strict guardrail"}
    turns:
      - say: "Let me tell you all about the pineapple harvest this year, it was long."
      - say: "Sorry, let us talk about something else entirely."
"""


@pytest.mark.parametrize("action", ["say", "hangup"])
async def test_guardrail_actions_say_a_line_or_hang_up(tmp_path: Path, action: str) -> None:
    extra = 'message: "We do not discuss fruit here."' if action == "say" else ""
    dialplan = GUARDED.replace("ACTION", action).replace("TARGET", extra)
    play = tmp_path / "caller.wav"
    write_wav(play, silence_pcm16(500) + speech_pcm16("Tell me about fruit.")
              + silence_pcm16(12000))
    async with SimulatorServer(scenarios=parse_scenarios(SAYS_FORBIDDEN)) as sim, \
            run_gateway(tmp_path, sim, dialplan) as gw:
        report = await place_call(gw, tmp_path, play=play, duration_s=12)
        await gw.wait_log("call record: ")
        record = call_record(gw.log())
        session = sim.sessions[0]
    assert [(g["guardrail"], g["action"]) for g in record["guardrail_events"]] == [
        ("forbidden", action)]
    assert any(e["type"] == "conversation.item.truncate" for e in session.received)
    if action == "say":
        instructions = [(e.get("response") or {}).get("instructions") for e in session.received
                        if e["type"] == "response.create"]
        assert 'Say exactly "We do not discuss fruit here."' in instructions
        assert any("We do not discuss fruit here." in t for t in dict(spoken(session)).values())
        assert report["ended_by"] == "local"
    else:
        assert report["ended_by"] == "remote"
        assert record["end_reason"] == "guardrail forbidden ended the call"


async def test_guardrail_transfer_action_refers_the_caller(tmp_path: Path) -> None:
    dialplan = GUARDED.replace("ACTION", "transfer").replace(
        "TARGET", 'target: "sip:supervisor@127.0.0.1"')
    audio = write_g711(tmp_path / "caller.ulaw", silence_pcm16(500)
                       + speech_pcm16("Tell me about fruit.") + silence_pcm16(15000))
    async with SimulatorServer(scenarios=parse_scenarios(SAYS_FORBIDDEN)) as sim, \
            run_gateway(tmp_path, sim, dialplan) as gw:
        result = await run_sipp_async("uac_transferee", gw.target, log_dir=tmp_path,
                                      keys={"audio_file": str(audio)}, timeout_s=40)
        assert result.ok, result.describe()
        assert "REFER Refer-To sip:supervisor@127.0.0.1" in result.action_log
        await gw.wait_log("call record: ")
        record = call_record(gw.log())
    assert record["end_reason"] == "guardrail transferred the call to sip:supervisor@127.0.0.1"

"""A call survives its Realtime session: drops, rotation, barge-in settings and failing tools.

The gateway runs as a subprocess against the in-process simulator; the simulator drops the
WebSocket mid-call (:meth:`SimulatorServer.close_all`, with ``abort`` for a TCP cut without a
close frame) or refuses new connections (:meth:`SimulatorServer.fail_next_connects`). Each test
asserts what the caller would notice (the call goes on and ends when the caller hangs up; an
apology; a REFER to the fallback URI; a BYE) and what the replacement session got first: the
session configuration and the replayed conversation, before any caller audio.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimConnection, SimOptions, SimulatorServer
from tests.sip.gateway import Gateway, place_call, run_gateway
from tests.sip.observe import (
    call_record,
    function_calls,
    gateway_stream,
    item_audio,
    played_in_full,
    played_prefix,
    spoken,
    stream_payload,
)
from tests.support.audio import silence_pcm16, speech_pcm16, write_g711, write_wav
from tests.support.capture import Capture
from tests.support.sipp import run_sipp_async

pytestmark = [pytest.mark.sip, pytest.mark.timeout(60)]

TOOLS = "tests.fixtures.tools.sample_tools"
APOLOGY = "Sorry, the line dropped for a moment."
FALLBACK = "sip:operator@127.0.0.1:5999"
GREETING = ("Welcome to the resilience line. This greeting is long on purpose, so that the "
            "connection can drop while the caller is still listening to it.")
AFTER_TOOL = "Your worker answered."


def dialplan(*, greeting: str | None = GREETING, turn_detection: str = "server_vad",
             fallback: str | None = None, tools: str = "") -> str:
    """One agent (transcription on) on a catch-all route."""
    return f"""
{"tools:" if tools else ""}
{tools}
agents:
  tester:
    instructions: You are the resilience tester of the gateway.
    {f'greeting: "{greeting}"' if greeting else ""}
    transcription: gpt-4o-mini-transcribe
    turn_detection: {turn_detection}
    {"tools: [whoami]" if tools else ""}
routes:
  - name: all
    agent: tester
    {f"fallback: {fallback!r}" if fallback else ""}
"""


BOOK = parse_scenarios(f"""
scenarios:
  tester:
    match: {{instructions: "(?i)resilience tester"}}
    turns:
      - user_says: Which worker are you?
        call: {{name: whoami, arguments: {{}}}}
      - say: "{AFTER_TOOL}"
    fallback:
      - say: "I am still here."
""")


def caller_wav(tmp_path: Path, *, lead_ms: int = 1000, text: str = "Which worker are you?",
               name: str = "caller.wav") -> Path:
    """Silence, one sentence, then silence for longer than any call here."""
    path = tmp_path / name
    write_wav(path, silence_pcm16(lead_ms) + speech_pcm16(text) + silence_pcm16(30000))
    return path


def first_audio_index(session: SimConnection) -> int:
    """Index in ``session.received`` of the first caller audio (len when there is none)."""
    return next((i for i, e in enumerate(session.received)
                 if e["type"] == "input_audio_buffer.append"), len(session.received))


def replayed(session: SimConnection) -> list[dict[str, Any]]:
    """The items the gateway created on ``session`` before its first caller audio."""
    head = session.received[:first_audio_index(session)]
    return [e["item"] for e in head if e["type"] == "conversation.item.create"]


async def call_while(gw: Gateway, tmp_path: Path, **kwargs: Any) -> asyncio.Task[dict[str, Any]]:
    """Start ``place_call`` in a task so the test can act on the simulator meanwhile."""
    return asyncio.create_task(place_call(gw, tmp_path, **kwargs), name="test:caller")


# --- drops ----------------------------------------------------------------------------------


async def test_tcp_drop_while_the_agent_speaks_reconnects_and_apologises(
        tmp_path: Path) -> None:
    async with SimulatorServer(scenarios=BOOK, options=SimOptions(speed=4.0)) as sim, \
            run_gateway(tmp_path, sim, dialplan()) as gw:
        caller = await call_while(gw, tmp_path, duration_s=7, timeout_s=30)
        first = await sim.wait_for_session(0, timeout=10)
        await first.wait_for_event("response.output_audio_transcript.delta", timeout=10)
        await sim.close_all(abort=True)  # no close frame: the client sees 1006
        second = await sim.wait_for_session(1, timeout=10)
        await second.wait_for_event("response.done", timeout=10)
        report = await caller
        await gw.wait_log("call record:")
    # The new session was configured before anything else, like the first one.
    assert second.received[0]["type"] == "session.update"
    assert "resilience tester" in second.received[0]["session"]["instructions"]
    assert second.session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    # It got what the caller had heard so far of the greeting, before any caller audio.
    items = replayed(second)
    assert [(i["type"], i.get("role")) for i in items] == [("message", "assistant")]
    text = items[0]["content"][0]["text"]
    assert text and GREETING.startswith(text)
    # The caller heard an apology, then the call went on until the caller hung up.
    assert [line for _, line in spoken(second)] == [APOLOGY]
    assert report["ended_by"] == "local"
    record = call_record(gw.log())
    assert record["end_reason"] == "caller hung up"
    assert record["realtime"] == {"drops": 1, "reconnects": 1, "rotations": 0, "apologies": 1}


async def test_drop_after_a_tool_replays_turns_and_tool_results_quietly(tmp_path: Path) -> None:
    plan = dialplan(greeting=None, tools=f'  whoami: {{python: "{TOOLS}:whoami"}}')
    async with SimulatorServer(scenarios=BOOK) as sim, \
            run_gateway(tmp_path, sim, plan, calls={"tool_workers": 1}) as gw:
        caller = await call_while(gw, tmp_path, play=caller_wav(tmp_path), duration_s=9,
                                  timeout_s=30)
        first = await sim.wait_for_session(0, timeout=10)
        await first.wait_for_event("response.output_audio_transcript.done", timeout=15)
        await first.wait_for_event("response.done", timeout=5,
                                   predicate=lambda e: e["response"]["output"][0]["type"]
                                   == "message")
        await asyncio.sleep(1.5)  # the caller has heard the whole line: nobody notices
        await sim.close_all(1011, "Simulated server failure.")
        second = await sim.wait_for_session(1, timeout=10)
        report = await caller
        await gw.wait_log("call record:")
    calls = function_calls(first)
    assert [c["name"] for c in calls] == ["whoami"]
    items = replayed(second)
    assert [i["type"] if i["type"] != "message" else i["role"] for i in items] == [
        "user", "function_call", "function_call_output", "assistant"]
    assert items[0]["content"][0]["text"] == "Which worker are you?"
    assert (items[1]["call_id"], items[1]["name"]) == (calls[0]["call_id"], "whoami")
    assert (items[2]["call_id"], items[2]["output"]) == (calls[0]["call_id"], calls[0]["output"])
    assert items[3]["content"][0]["text"] == AFTER_TOOL
    # Nothing was lost that the caller heard: no apology, no new response.
    assert not [e for e in second.received if e["type"] == "response.create"]
    assert report["ended_by"] == "local"
    record = call_record(gw.log())
    assert record["end_reason"] == "caller hung up"
    assert record["realtime"] == {"drops": 1, "reconnects": 1, "rotations": 0, "apologies": 0}


async def test_session_that_cannot_come_back_transfers_to_the_fallback(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "caller.ulaw", silence_pcm16(20000))
    async with SimulatorServer(scenarios=BOOK) as sim, \
            run_gateway(tmp_path, sim, dialplan(fallback=FALLBACK),
                        realtime={"reconnect_budget_s": 2}) as gw:
        sipp = asyncio.create_task(run_sipp_async(
            "uac_transferee", gw.target, log_dir=tmp_path, keys={"audio_file": str(audio)},
            timeout_s=40), name="test:sipp")
        first = await sim.wait_for_session(0, timeout=10)
        await first.wait_for_event("response.done", timeout=10)
        sim.fail_next_connects(1000)
        await sim.close_all(1012, "Service restart.")
        result = await sipp
        await gw.wait_log("call record:")
    assert result.ok, result.describe()
    assert f"REFER Refer-To {FALLBACK}" in result.action_log
    record = call_record(gw.log())
    assert record["end_reason"] == "Realtime session lost; transferred to the fallback"
    assert record["realtime"]["drops"] == 1 and record["realtime"]["reconnects"] == 0
    assert len(sim.sessions) == 1 and sim.connect_attempts > 1


async def test_session_that_cannot_come_back_without_fallback_hangs_up(tmp_path: Path) -> None:
    async with SimulatorServer(scenarios=BOOK) as sim, \
            run_gateway(tmp_path, sim, dialplan(), realtime={"reconnect_budget_s": 2}) as gw:
        caller = await call_while(gw, tmp_path, duration_s=20, timeout_s=30)
        first = await sim.wait_for_session(0, timeout=10)
        await first.wait_for_event("response.done", timeout=10)
        sim.fail_next_connects(1000)
        await sim.close_all(abort=True)
        report = await caller
        await gw.wait_log("call record:")
    assert report["ended_by"] == "remote"  # the gateway sent BYE, well before 20 s
    assert report["ended_at"] - report["answered_at"] < 12
    record = call_record(gw.log())
    assert record["end_reason"] == "Realtime session lost"


# --- rotation -------------------------------------------------------------------------------


async def test_session_is_rotated_without_the_caller_noticing(tmp_path: Path) -> None:
    async with SimulatorServer(scenarios=BOOK) as sim, \
            run_gateway(tmp_path, sim, dialplan(greeting="Hello."),
                        realtime={"rotate_after_s": 2}) as gw:
        with Capture(tmp_path / "call.pcap", gw.rtp_filter) as cap:
            report = await place_call(
                gw, tmp_path, play=caller_wav(tmp_path, lead_ms=3500, text="Are you there?"),
                duration_s=8, timeout_s=30)
            await gw.wait_log("call record:")
    assert len(sim.sessions) >= 2
    first, second = sim.sessions[0], sim.sessions[1]
    assert first.close_code == 1000  # closed by the gateway, after the new one took over
    assert second.received[0]["type"] == "session.update"
    assert [(i["type"], i["role"]) for i in replayed(second)] == [("message", "assistant")]
    # The caller's question reached a rotated session, whose answer the caller heard.
    answering = next(s for s in sim.sessions[1:] if spoken(s))
    item_id, _ = spoken(answering)[0]
    played_in_full(item_audio(answering, item_id), gateway_stream(cap.packets(), gw))
    assert report["ended_by"] == "local"
    record = call_record(gw.log())
    assert record["realtime"]["rotations"] >= 1
    assert record["realtime"]["drops"] == record["realtime"]["apologies"] == 0


# --- barge-in setting -----------------------------------------------------------------------


@pytest.mark.parametrize("interrupt", [True, False], ids=["interrupt", "no-interrupt"])
async def test_interrupt_response_setting_decides_barge_in(tmp_path: Path,
                                                           interrupt: bool) -> None:
    td = f"{{type: server_vad, interrupt_response: {str(interrupt).lower()}}}"
    play = tmp_path / "interrupt.wav"
    write_wav(play, silence_pcm16(2500) + speech_pcm16("Sorry, can I stop you there?")
              + silence_pcm16(8000))
    async with SimulatorServer(scenarios=BOOK, options=SimOptions(speed=4.0)) as sim, \
            run_gateway(tmp_path, sim, dialplan(turn_detection=td)) as gw:
        with Capture(tmp_path / "rtp.pcap", gw.rtp_filter) as cap:
            report = await place_call(gw, tmp_path, play=play, duration_s=12, timeout_s=30)
            await gw.wait_log("call record:")
        session = sim.sessions[0]
    sent_types = [e["type"] for e in session.received]
    assert "input_audio_buffer.speech_started" in session.sent_types()
    greeting_id = next(e["item_id"] for e in session.sent
                       if e["type"] == "response.output_audio.delta")
    item = item_audio(session, greeting_id)
    stream = gateway_stream(cap.packets(), gw)
    record = call_record(gw.log())
    # Never a response.cancel: with interrupt_response on, the server cancels by itself.
    assert "response.cancel" not in sent_types
    if interrupt:
        assert "conversation.item.truncate" in sent_types
        _, played = played_prefix(item, stream_payload(stream))
        assert played < len(item) - 8 * 500, "the greeting was not interrupted"
        assert (record["barge_ins"], record["truncates"]) == (1, 1)
    else:
        assert "conversation.item.truncate" not in sent_types
        played_in_full(item, stream)  # the caller heard the whole greeting
        done = next(e for e in session.sent if e["type"] == "response.done")
        assert done["response"]["status"] == "completed"
        assert (record["barge_ins"], record["truncates"]) == (0, 0)
    assert report["ended_by"] == "local"


# --- tools that cannot run ------------------------------------------------------------------


async def test_two_transfers_at_once_each_get_one_output(tmp_path: Path) -> None:
    plan = """
agents:
  tester:
    instructions: You are the resilience tester of the gateway.
    tools: [{builtin: transfer_call, targets: {sales: "sip:sales@127.0.0.1:5999"}}]
routes:
  - name: all
    agent: tester
"""
    book = parse_scenarios("""
scenarios:
  tester:
    match: {instructions: "(?i)resilience tester"}
    turns:
      - - call: {name: transfer_call, arguments: {target: sales, reason: "one"}}
        - call: {name: transfer_call, arguments: {target: sales, reason: "two"}}
      - say: "Still here."
    fallback:
      - say: "Still here."
""")
    audio = write_g711(tmp_path / "caller.ulaw", silence_pcm16(1000)
                       + speech_pcm16("Sales please.") + silence_pcm16(40000))
    async with SimulatorServer(scenarios=book) as sim, run_gateway(tmp_path, sim, plan) as gw:
        result = await run_sipp_async("uac_transferee_refer_fails", gw.target,
                                      log_dir=tmp_path, hold_ms=7000,
                                      keys={"audio_file": str(audio)}, timeout_s=40)
        await gw.wait_log("call record:")
        session = sim.sessions[0]
    assert result.ok, result.describe()
    calls = function_calls(session)
    assert [c["name"] for c in calls] == ["transfer_call", "transfer_call"]
    outputs = [json.loads(c["output"])["error"] for c in calls]
    # One REFER went out (and failed); the other call was refused while it ran.
    assert len(result.received(method="REFER")) == 1
    assert sorted("another transfer" in o for o in outputs) == [False, True]
    outs = [e for e in session.received if e["type"] == "conversation.item.create"
            and e["item"]["type"] == "function_call_output"]
    assert len(outs) == 2
    # Both outputs answered, and no response request was refused for overlapping.
    assert not [e for e in session.sent if e["type"] == "error"
                and e["error"]["code"] == "conversation_already_has_active_response"]
    record = call_record(gw.log())
    assert sorted(t["error"] for t in record["tool_calls"]) == ["busy", "transfer failed"]

"""Realtime Calls media: the caller played by tests, the agent heard in real time, the call's end.

Caller audio fed to a :class:`SimCall` drives VAD turns seen on the sideband; DTMF arrives as
``input_audio_buffer.dtmf_event_received``; the agent's audio goes to the call's RTP sink (not
the sideband) and ``output_audio_buffer.started`` / ``.stopped`` frame the time it plays;
barge-in and ``output_audio_buffer.clear`` cut it and truncate what was not heard; hang-ups
from either side close the sidebands; ``/sim/calls`` does the same over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import numpy as np
import pytest
from openai import NotFoundError
from openai.types.realtime import InputAudioBufferDtmfEventReceivedEvent

from gateway.sim.calls import CallControlError, CallState
from gateway.sim.playout import FRAME_BYTES
from gateway.sim.simcall import SimCall
from gateway.sim.tts import synthesize
from tests.component.test_sim_calls import AUTH, TOOLS, calls_sim, recv, sdk
from tests.conftest import scaled

pytestmark = pytest.mark.component

Event = dict[str, Any]


def rms(pcm16: bytes) -> float:
    samples = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


def caller_speech(text: str = "I need an agent") -> bytes:
    return synthesize(text, voice="echo", sample_rate=8000, engine="tone") + bytes(16 * 1000)


async def answered(sim: Any, instructions: str, **accept: Any) -> tuple[SimCall, list[bytes]]:
    """A call accepted with ``instructions`` (plus ``accept``); the agent frames it plays."""
    call = await sim.incoming_call()
    heard: list[bytes] = []
    call.on_agent_audio = heard.append
    async with sdk(sim) as client:
        await client.realtime.calls.accept(
            call.call_id, type="realtime", instructions=instructions, **accept
        )
    return call, heard


async def raw_sideband(http: aiohttp.ClientSession, sim: Any, call: SimCall) -> Any:
    ws = await http.ws_connect(f"{sim.ws_url}?call_id={call.call_id}", headers=AUTH)
    msg = await ws.receive(timeout=scaled(5))
    assert json.loads(msg.data)["type"] == "session.created"
    return ws


async def read_until(ws: Any, type_: str, seen: list[Event] | None = None) -> Event:
    async with asyncio.timeout(scaled(15)):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            event: Event = json.loads(msg.data)
            if seen is not None:
                seen.append(event)
            if event["type"] == type_:
                return event


# --- the caller ---------------------------------------------------------------------------


async def test_caller_audio_triggers_a_scenario_turn_seen_on_the_sideband() -> None:
    async with calls_sim() as sim, sdk(sim) as client:
        call, heard = await answered(
            sim, "You are the front desk.", tools=[*TOOLS],
            audio={"input": {"transcription": {"model": "gpt-4o-mini-transcribe"}}},
        )
        async with client.realtime.connect(call_id=call.call_id) as conn:
            assert (await recv(conn)).type == "session.created"
            assert await call.play_audio(caller_speech())
            seen: list[Any] = []
            while not seen or seen[-1].type != "output_audio_buffer.stopped":
                seen.append(await recv(conn))
        kinds = [e.type for e in seen]
        assert kinds[:3] == ["input_audio_buffer.speech_started",
                             "input_audio_buffer.speech_stopped",
                             "input_audio_buffer.committed"]
        transcript = next(e for e in seen
                          if e.type == "conversation.item.input_audio_transcription.completed")
        assert transcript.transcript == "I need an agent"
        said = next(e for e in seen if e.type == "response.output_audio_transcript.done")
        assert said.transcript == "Let me transfer you."
        call_done = next(e for e in seen if e.type == "response.function_call_arguments.done")
        assert (call_done.name, json.loads(call_done.arguments)) == ("transfer_call",
                                                                      {"dept": "sales"})
        assert "response.output_audio.delta" not in kinds
        assert kinds.index("output_audio_buffer.started") > kinds.index(
            "response.content_part.added")
        assert kinds.index("output_audio_buffer.stopped") > kinds.index("response.done")
        # The caller heard the agent: 20 ms frames of audible audio, as long as the answer.
        done = next(e for e in seen if e.type == "response.done")
        audio_ms = done.response.usage.output_token_details.audio_tokens * 50
        assert all(len(f) == FRAME_BYTES for f in heard)
        assert abs(len(heard) * 20 - audio_ms) <= 60
        assert rms(b"".join(heard)) > 500
        assert call.to_json()["agent_audio_ms"] == pytest.approx(len(heard) * 20, abs=20)


async def test_dtmf_injection() -> None:
    async with calls_sim() as sim, sdk(sim) as client:
        ringing = await sim.incoming_call()
        with pytest.raises(CallControlError):
            ringing.send_dtmf("1")
        assert not ringing.feed_audio(bytes(320))  # no session yet: dropped
        call, _ = await answered(sim, "Anything")
        async with client.realtime.connect(call_id=call.call_id) as conn:
            await recv(conn)
            call.send_dtmf("5#")
            first, second = await recv(conn), await recv(conn)
        for event, key in ((first, "5"), (second, "#")):
            assert isinstance(event, InputAudioBufferDtmfEventReceivedEvent)
            assert event.event == key and abs(event.received_at - time.time()) < 5
        with pytest.raises(CallControlError):
            call.send_dtmf("9X")
        with pytest.raises(CallControlError):
            call.send_dtmf("")


async def test_output_audio_buffer_events_frame_the_real_time_playout() -> None:
    async with calls_sim(playout_speed=4.0) as sim, aiohttp.ClientSession() as http:
        call, heard = await answered(sim, "Anything")
        ws = await raw_sideband(http, sim, call)
        await ws.send_str(json.dumps({"type": "response.create", "response": {
            "instructions": "Say exactly 'Thank you for calling the simulator' now."}}))
        seen: list[Event] = []
        done = await read_until(ws, "response.done", seen)
        await read_until(ws, "output_audio_buffer.stopped", seen)
        await ws.close()
        sideband = call.sidebands[0]
        at = {e["type"]: sideband.sent_at[i] for i, e in enumerate(sideband.sent)}
        audio_s = done["response"]["usage"]["output_token_details"]["audio_tokens"] * 0.05
        played_s = at["output_audio_buffer.stopped"] - at["output_audio_buffer.started"]
        assert audio_s / 4 * 0.8 <= played_s <= audio_s / 4 + scaled(1.0)
        # Generation (speed 20) finished well before the playout (speed 4).
        assert at["response.done"] < at["output_audio_buffer.stopped"] - audio_s / 8
        started = next(e for e in seen if e["type"] == "output_audio_buffer.started")
        assert started["response_id"] == done["response"]["id"]
        assert len(heard) * 20 == pytest.approx(audio_s * 1000, abs=60)


@pytest.mark.parametrize("interrupt", [True, False])
async def test_barge_in_clears_the_playout_and_truncates_what_was_not_heard(
    interrupt: bool,
) -> None:
    async with calls_sim(playout_speed=4.0) as sim, aiohttp.ClientSession() as http:
        call, heard = await answered(sim, "You are chatty.", audio={"input": {
            "turn_detection": {"type": "server_vad", "interrupt_response": interrupt}}})
        ws = await raw_sideband(http, sim, call)
        await ws.send_str(json.dumps({"type": "response.create"}))
        seen: list[Event] = []
        await read_until(ws, "output_audio_buffer.started", seen)
        await asyncio.sleep(0.25)  # about a second of the answer is heard
        assert await call.play_audio(caller_speech("Stop"))
        await read_until(ws, "input_audio_buffer.speech_started", seen)
        if not interrupt:
            await read_until(ws, "output_audio_buffer.stopped", seen)
            assert "output_audio_buffer.cleared" not in [e["type"] for e in seen]
            await ws.close()
            return
        cleared = await read_until(ws, "output_audio_buffer.cleared", seen)
        truncated = await read_until(ws, "conversation.item.truncated", seen)
        frames_at_cut = len(heard)
        await ws.close()
        started = next(e for e in seen if e["type"] == "output_audio_buffer.started")
        assert cleared["response_id"] == started["response_id"]
        item_id = truncated["item_id"]
        assert truncated["audio_end_ms"] >= 300
        assert truncated["audio_end_ms"] == pytest.approx(frames_at_cut * 20, abs=60)
        assert call.core is not None
        item = call.core.conversation.get(item_id)
        assert item is not None
        heard_words = item["content"][0]["transcript"].split()
        assert 0 < len(heard_words) < 20  # the rest was never heard
        await asyncio.sleep(0.2)
        assert len(heard) <= frames_at_cut + 1  # the agent went quiet
        assert "output_audio_buffer.stopped" not in [e["type"] for e in seen]


async def test_cancel_then_clear_cuts_the_agent_off() -> None:
    async with calls_sim(playout_speed=2.0) as sim, aiohttp.ClientSession() as http:
        call, heard = await answered(sim, "You are chatty.")
        ws = await raw_sideband(http, sim, call)
        await ws.send_str(json.dumps({"type": "response.create"}))
        seen: list[Event] = []
        await read_until(ws, "output_audio_buffer.started", seen)
        await asyncio.sleep(0.2)
        await ws.send_str(json.dumps({"type": "response.cancel"}))
        await ws.send_str(json.dumps({"type": "output_audio_buffer.clear"}))
        await read_until(ws, "output_audio_buffer.cleared", seen)
        truncated = await read_until(ws, "conversation.item.truncated", seen)
        cut = len(heard)
        await ws.close()
        assert truncated["audio_end_ms"] == pytest.approx(cut * 20, abs=60)
        await asyncio.sleep(0.15)
        assert len(heard) <= cut + 1


# --- the end of a call --------------------------------------------------------------------


@pytest.mark.parametrize("abort", [False, True])
async def test_caller_hangup_closes_the_sideband(abort: bool) -> None:
    async with calls_sim() as sim, sdk(sim) as client, aiohttp.ClientSession() as http:
        call, _ = await answered(sim, "Anything")
        ws = await raw_sideband(http, sim, call)
        assert await call.hangup(abort=abort)
        msg = await ws.receive(timeout=scaled(5))
        if abort:
            assert msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        else:
            assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1000
        await ws.close()
        assert await call.wait_ended() == "caller"
        assert not await call.hangup()
        with pytest.raises(NotFoundError):
            await client.realtime.calls.hangup(call.call_id)
        ringing = await sim.incoming_call()
        assert await ringing.hangup()  # CANCEL
        assert (ringing.state, ringing.record.ended_by) == (CallState.ENDED, "caller")


async def test_a_scenario_hangup_ends_the_call_after_the_farewell_played() -> None:
    async with calls_sim(playout_speed=4.0) as sim, aiohttp.ClientSession() as http:
        call, heard = await answered(sim, "Say farewell.")
        ws = await raw_sideband(http, sim, call)
        await ws.send_str(json.dumps({"type": "response.create"}))
        seen: list[Event] = []
        await read_until(ws, "output_audio_buffer.stopped", seen)
        msg = await ws.receive(timeout=scaled(5))
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1000
        await ws.close()
        assert await call.wait_ended() == "server"
        assert heard and "response.done" in [e["type"] for e in seen]


async def test_transfer_result_ends_or_resumes_the_call() -> None:
    async with calls_sim() as sim, sdk(sim) as client, aiohttp.ClientSession() as http:
        call, _ = await answered(sim, "Anything")
        with pytest.raises(CallControlError):
            await call.transfer_result(True)
        await client.realtime.calls.refer(call.call_id, target_uri="sip:sales@example.com")
        await call.transfer_result(False)
        assert call.state is CallState.ACCEPTED
        await client.realtime.calls.refer(call.call_id, target_uri="sip:help@example.com")
        ws = await raw_sideband(http, sim, call)  # a pending transfer keeps the session
        await call.transfer_result(True)
        msg = await ws.receive(timeout=scaled(5))
        assert msg.type == aiohttp.WSMsgType.CLOSE
        await ws.close()
        assert await call.wait_ended() == "transfer"


async def test_stopping_the_simulator_ends_live_calls_and_retries() -> None:
    async with calls_sim(webhook_url="http://127.0.0.1:9/hook",
                         webhook_secret="whsec_" + "QUJDRA==", webhook_attempts=5,
                         webhook_backoff_s=5.0) as sim:
        call, _ = await answered(sim, "You are chatty.")
        call.feed_audio(caller_speech())
        await sim.incoming_call()  # its webhook is waiting to retry
    assert call.core is not None  # kept for inspection; the leak fixture checks the tasks


# --- the HTTP test-control surface --------------------------------------------------------


async def test_http_test_control_places_and_plays_a_call() -> None:
    async with calls_sim() as sim, aiohttp.ClientSession() as http:
        base = sim.control_url
        async with http.post(base, json={
            "sip_headers": [{"name": "From", "value": "sip:+1555@x"}],
            "media_security": "srtp", "scenario": "desk",
        }) as resp:
            assert resp.status == 201
            placed = await resp.json()
        call_id = placed["call_id"]
        assert placed["state"] == "incoming" and placed["media_security"] == "srtp"
        assert (await sim.wait_for_call(0)).call_id == call_id
        async with http.post(f"{base}/{call_id}/dtmf", json={"digits": "1"}) as resp:
            assert resp.status == 409  # no session before accept
        async with http.post(f"{sim.http_url}/realtime/calls/{call_id}/accept",
                             headers=AUTH, json={"type": "realtime"}) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/{call_id}/say", json={"text": "I need an agent"}) as resp:
            assert resp.status == 200
        call = sim.calls[0]
        await call.wait_for_event("response.done")
        async with http.post(f"{base}/{call_id}/audio", data=bytes(3200)) as resp:
            assert resp.status == 200
        async with http.post(f"{base}/{call_id}/dtmf", json={"digits": "42"}) as resp:
            assert resp.status == 200
        dtmf = [e["event"] for e in call.sent if e["type"].endswith("dtmf_event_received")]
        assert dtmf == ["4", "2"]
        async with http.post(f"{base}/{call_id}/transfer", json={"ok": True}) as resp:
            assert resp.status == 409  # nothing referred
        async with http.post(f"{base}/{call_id}/nope", json={}) as resp:
            assert resp.status == 404
        async with http.post(f"{base}/{call_id}/say", json={"text": ""}) as resp:
            assert resp.status == 400
        async with http.post(f"{base}/{call_id}/hangup", json={}) as resp:
            summary = await resp.json()
        assert summary["state"] == "ended" and summary["ended_by"] == "caller"
        assert summary["session"]["model"] == "gpt-realtime-2.1"
        async with http.get(base) as resp:
            assert [c["call_id"] for c in (await resp.json())["calls"]] == [call_id]
        async with http.get(f"{base}/{call_id}") as resp:
            assert (await resp.json())["history"][-1]["state"] == "ended"
        async with http.get(f"{base}/rtc_unknown") as resp:
            assert resp.status == 404
        for bad in ({"duplicates": -1}, {"bogus": 1}, {"webhook_fault": "late"},
                    {"call_id": "nope"}, {"scenario": "missing"}, {"media_security": 3}):
            async with http.post(base, json=bad) as resp:
                assert resp.status == 400, bad
                assert (await resp.json())["error"]["type"] == "sim_control_error"


async def test_long_running_simulators_forget_old_calls() -> None:
    async with calls_sim(keep_closed=1) as sim:
        calls = [await sim.incoming_call() for _ in range(3)]
        for call in calls:
            await call.hangup()
        await asyncio.sleep(0.01)  # their ring timers finish cancelling: the calls are idle
        await sim.incoming_call()
        assert sim.get_call(calls[0].call_id) is None
        assert [c.call_id for c in sim.calls][:1] == [calls[2].call_id]

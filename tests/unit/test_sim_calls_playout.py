"""The agent's audio on a SIP call (playout) and the SIP-call side of the session core (pure)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from gateway.media.g711 import ulaw_encode
from gateway.sim.calls import validate_accept
from gateway.sim.conversation import EventFactory, IdFactory
from gateway.sim.core import APPEND_ON_CALL_CODE, SimSession
from gateway.sim.playout import FRAME_BYTES, MAX_QUEUED_MS, AgentPlayout, rtp_pcm
from gateway.sim.responses import Emit, Pace, Synthesize
from gateway.sim.scenario import parse_scenarios
from gateway.sim.validate import SIP_FORMAT_CODE

pytestmark = pytest.mark.unit

Event = dict[str, Any]


def ms_of_audio(ms: int, level: int = 0) -> bytes:
    """PCM16 8 kHz: ``ms`` of a 400 Hz tone at ``level`` peak (0: silence)."""
    t = np.arange(ms * 8) / 8000
    return (level * np.sin(2 * np.pi * 400 * t)).astype("<i2").tobytes()


def types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def drain(playout: AgentPlayout) -> tuple[list[str], int]:
    """Play everything queued; the event types seen and the number of frames."""
    seen: list[str] = []
    frames = 0
    while True:
        frame, events = playout.take()
        seen += types(events)
        if frame is None:
            return seen, frames
        assert len(frame.pcm16) == FRAME_BYTES
        frames += 1
        seen += types(playout.frame_played())


# --- playout ------------------------------------------------------------------------------


def test_started_with_the_first_frame_and_stopped_after_the_last_once_done() -> None:
    playout = AgentPlayout(EventFactory(IdFactory(1)))
    playout.push("resp_1", "item_1", ms_of_audio(50, 5000))
    frame, events = playout.take()
    assert frame is not None and frame.audio_ms == 20
    assert types(events) == ["output_audio_buffer.started"]
    assert events[0]["response_id"] == "resp_1" and events[0]["event_id"].startswith("event_")
    assert playout.frame_played() == []  # more audio queued
    assert playout.response_done("resp_1") == []  # still 30 ms to play
    seen, frames = drain(playout)
    assert (seen, frames) == (["output_audio_buffer.stopped"], 2)
    assert playout.played_ms("item_1") == 50 and not playout.busy


def test_a_gap_in_generation_does_not_stop_the_buffer() -> None:
    playout = AgentPlayout(EventFactory(IdFactory(1)))
    playout.push("resp_1", "item_1", ms_of_audio(20, 5000))
    assert drain(playout) == (["output_audio_buffer.started"], 1)
    assert playout.busy  # the response is not done: more may come (e.g. next say step)
    playout.push("resp_1", "item_2", ms_of_audio(20, 5000))
    assert drain(playout) == ([], 1)
    assert types(playout.response_done("resp_1")) == ["output_audio_buffer.stopped"]
    assert not playout.busy


def test_a_response_without_audio_has_no_buffer_events() -> None:
    playout = AgentPlayout(EventFactory(IdFactory(1)))
    assert playout.response_done("resp_text") == []
    assert playout.take() == (None, [])


def test_consecutive_responses_each_start_and_stop() -> None:
    playout = AgentPlayout(EventFactory(IdFactory(1)))
    playout.push("resp_1", "item_1", ms_of_audio(20, 5000))
    playout.response_done("resp_1")
    playout.push("resp_2", "item_2", ms_of_audio(40, 5000))
    playout.response_done("resp_2")
    seen, frames = drain(playout)
    assert frames == 3
    assert seen == ["output_audio_buffer.started", "output_audio_buffer.stopped",
                    "output_audio_buffer.started", "output_audio_buffer.stopped"]


def test_clear_cuts_off_and_reports_what_was_heard() -> None:
    playout = AgentPlayout(EventFactory(IdFactory(1)))
    playout.push("resp_1", "item_1", ms_of_audio(1000, 5000))
    for _ in range(3):
        playout.take()
        playout.frame_played()
    events, cut = playout.clear()
    assert types(events) == ["output_audio_buffer.cleared"]
    assert events[0]["response_id"] == "resp_1"
    assert cut is not None and (cut.item_id, cut.played_ms) == ("item_1", 60)
    assert not playout.busy and playout.take() == (None, [])
    assert playout.response_done("resp_1") == []  # cleared: no stopped afterwards
    assert playout.clear() == ([], None)


def test_clear_after_the_item_played_to_its_end_truncates_nothing() -> None:
    playout = AgentPlayout(EventFactory(IdFactory(1)))
    playout.push("resp_1", "item_1", ms_of_audio(20, 5000))
    playout.take()
    events, cut = playout.clear()
    assert types(events) == ["output_audio_buffer.cleared"] and cut is None


def test_a_short_last_frame_is_padded_with_silence() -> None:
    playout = AgentPlayout(EventFactory(IdFactory(1)))
    playout.push("resp_1", "item_1", ms_of_audio(25, 5000))
    playout.take()
    frame, _ = playout.take()
    assert frame is not None and frame.audio_ms == 5
    assert frame.pcm16[80:] == bytes(FRAME_BYTES - 80)


def test_overflow_drops_the_oldest_audio_and_counts_it() -> None:
    playout = AgentPlayout(EventFactory(IdFactory(1)))
    playout.push("resp_1", "item_1", ms_of_audio(MAX_QUEUED_MS + 1000))
    assert playout.queued_ms == MAX_QUEUED_MS
    assert playout.dropped_ms == 1000


def test_rtp_pcm_decodes_mu_law_deltas_to_8_khz_pcm() -> None:
    pcm = ms_of_audio(100, 8000)
    delta = base64.b64encode(ulaw_encode(pcm)).decode()
    out = rtp_pcm({"type": "audio/pcmu"}, delta)
    assert len(out) == len(pcm)
    error = np.abs(np.frombuffer(out, "<i2").astype(int) - np.frombuffer(pcm, "<i2").astype(int))
    assert error.max() < 300  # μ-law quantisation
    pcm24 = base64.b64encode(bytes(4800)).decode()  # 100 ms of 24 kHz silence
    assert len(rtp_pcm({"type": "audio/pcm", "rate": 24000}, pcm24)) == 1600


# --- the session core of a SIP call -------------------------------------------------------


BOOK = parse_scenarios("""
scenarios:
  default:
    turns:
      - user_says: "I need help"
        steps: [{say: "Sure, one moment please while I look into that for you."}]
""")


def call_session(**accept: Any) -> SimSession:
    session = validate_accept({"type": "realtime", **accept}, "gpt-realtime-2.1")
    return SimSession(model="gpt-realtime-2.1", scenarios=BOOK, sip=True, session=session,
                      call_audio=True, ids=IdFactory(7))


def test_the_session_starts_from_the_accept() -> None:
    core = call_session(instructions="You are the front desk.")
    created = core.open()[0]
    assert created["session"]["instructions"] == "You are the front desk."
    assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}


def test_caller_audio_runs_the_vad_and_starts_a_turn() -> None:
    core = call_session(audio={"input": {"transcription": {"model": "gpt-4o-mini-transcribe"}}})
    events = core.caller_audio(ms_of_audio(200) + ms_of_audio(600, 8000) + ms_of_audio(800))
    assert types(events)[:3] == ["input_audio_buffer.speech_started",
                                 "input_audio_buffer.speech_stopped",
                                 "input_audio_buffer.committed"]
    transcript = next(e for e in events
                      if e["type"] == "conversation.item.input_audio_transcription.completed")
    assert transcript["transcript"] == "I need help"
    assert types(events)[-1] == "response.created"
    assert len(core.take_started_responses()) == 1
    assert core.received == []  # RTP audio is not a client event


def test_caller_audio_accepts_odd_lengths_and_chunks_like_one_block() -> None:
    speech = ms_of_audio(200) + ms_of_audio(600, 8000) + ms_of_audio(800)
    whole = call_session().caller_audio(speech)
    core = call_session()
    parts: list[Event] = []
    for i in range(0, len(speech), 333):
        parts += core.caller_audio(speech[i : i + 333])
    stops = [e["audio_end_ms"] for e in whole + parts
             if e["type"] == "input_audio_buffer.speech_stopped"]
    assert len(stops) == 2 and stops[0] == stops[1]


def test_append_and_format_changes_are_refused_on_a_sip_call() -> None:
    core = call_session()
    [error] = core.receive({"type": "input_audio_buffer.append", "audio": "AAAA",
                            "event_id": "c1"})
    assert error["error"]["code"] == APPEND_ON_CALL_CODE and error["error"]["event_id"] == "c1"
    [error] = core.receive({"type": "session.update", "session": {
        "type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}}})
    assert error["error"]["code"] == SIP_FORMAT_CODE
    assert error["error"]["param"] == "session.audio.output.format"
    [updated] = core.receive({"type": "session.update",
                              "session": {"type": "realtime", "instructions": "New"}})
    assert updated["session"]["instructions"] == "New"


def test_dtmf_events_have_the_sdk_shape() -> None:
    core = call_session()
    assert core.dtmf("#", 1_767_225_600) == [
        {"type": "input_audio_buffer.dtmf_event_received", "event": "#",
         "received_at": 1_767_225_600}
    ]
    for bad in ("", "E", "12", "a"):
        with pytest.raises(ValueError):
            core.dtmf(bad, 0)


def test_truncate_played_clamps_and_trims_the_transcript() -> None:
    core = call_session()
    core.receive({"type": "response.create"})
    [run] = core.take_started_responses()
    instruction = run.advance()
    assert isinstance(instruction, Synthesize)
    instruction = run.advance(bytes(48000))  # 1 s of 24 kHz audio
    item_id = ""
    while instruction is not None:
        if isinstance(instruction, Emit):
            for event in instruction.events:
                item_id = event.get("item_id", item_id)
        assert isinstance(instruction, Emit | Pace)
        instruction = run.advance()
    [truncated] = core.truncate_played(item_id, 250)
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 250)
    item = core.conversation.get(item_id)
    assert item is not None
    words = item["content"][0]["transcript"].split()
    assert 0 < len(words) < 11
    # Clamped to what was generated, and nothing for unknown items.
    assert core.truncate_played(item_id, 10_000)[0]["audio_end_ms"] == 250
    assert core.truncate_played("item_nope", 10) == []

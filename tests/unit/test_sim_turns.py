"""The simulator's per-turn timing: turns from real core events, outcomes, lead, lag, JSON."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from gateway.media.g711 import ulaw_encode
from gateway.sim.conversation import IdFactory
from gateway.sim.core import SimSession
from gateway.sim.responses import Emit, ResponseRun, Synthesize
from gateway.sim.turns import (
    MAX_PENDING,
    TurnRecord,
    TurnTimer,
    answer_lead_ms,
    first_voiced_ms,
    max_lag_ms,
)

pytestmark = pytest.mark.unit

Event = dict[str, Any]
PCMU = {"type": "audio/pcmu"}


def tone(ms: int, rate: int, amplitude: float = 8000.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 440 * t) * amplitude).astype("<i2").tobytes()


def silence(ms: int, rate: int) -> bytes:
    return bytes(2 * rate * ms // 1000)


def sip_session(**turn_detection: Any) -> SimSession:
    sim = SimSession(model="gpt-realtime-2.1", ids=IdFactory(3), sip=True)
    if turn_detection:
        sim.receive({"type": "session.update", "session": {
            "type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad", **turn_detection}}}}})
    return sim


def question() -> bytes:
    """1 s of silence, 1 s of tone, 1 s of silence, as G.711 μ-law (one VAD turn)."""
    return ulaw_encode(silence(1000, 8000) + tone(1000, 8000) + silence(1000, 8000))


def stream(sim: SimSession, timer: TurnTimer, audio: bytes, *, start: float = 100.0,
           chunk: int = 320) -> list[TurnRecord]:
    """Append ``audio`` in 40 ms chunks, one per 40 ms of clock, as the gateway does."""
    ended: list[TurnRecord] = []
    for k, i in enumerate(range(0, len(audio), chunk)):
        event = {"type": "input_audio_buffer.append",
                 "audio": base64.b64encode(audio[i : i + chunk]).decode()}
        ended += timer.received(start + 0.04 * k, sim.receive(event), sim.session["audio"]["input"])
    return ended


def response_events(run: ResponseRun, tts: bytes) -> list[Event]:
    """Every event of a run, synthesis answered with ``tts`` (24 kHz PCM16)."""
    events: list[Event] = []
    audio: bytes | None = None
    while (instruction := run.advance(audio)) is not None:
        audio = tts if isinstance(instruction, Synthesize) else None
        if isinstance(instruction, Emit):
            events.extend(instruction.events)
    return events


def test_a_vad_turn_is_timed_from_the_stop_read_to_the_first_delta_written() -> None:
    sim = sip_session()
    timer = TurnTimer(sim.session["id"], 4, 50)
    assert stream(sim, timer, question()) == []
    assert timer.pending == 1
    [run] = sim.take_started_responses()
    timer.lead(run.id, 20.0)
    events = response_events(run, tone(500, 24000))
    first = next(i for i, e in enumerate(events) if e["type"] == "response.output_audio.delta")
    ended = [timer.sent(e, 200.0 + 0.001 * i) for i, e in enumerate(events)]
    records = [r for r in ended if r is not None]
    assert len(records) == 1 and ended[first] is records[0]
    rec = records[0]
    # The stop is decided by the frame 500 ms after the tone ends: audio 2.5 s, the append
    # covering 2.48-2.52 s, sent at 100 + 0.04 * 62.
    assert rec.audio_end_ms == 2500 and rec.audio_start_ms == 1000 - 300
    assert rec.received_at == pytest.approx(100.0 + 0.04 * 62)
    assert rec.first_delta_at == pytest.approx(200.0 + 0.001 * first)
    assert rec.sim_ms == pytest.approx((200.0 + 0.001 * first - rec.received_at) * 1000)
    assert (rec.session, rec.conn, rec.turn, rec.outcome) == (sim.session["id"], 4, 1,
                                                             "answered")
    assert rec.response_id == run.id and rec.lead_ms == 20.0
    assert rec.response_latency_ms == 50
    assert rec.turn_detection is not None and rec.turn_detection["silence_duration_ms"] == 500
    assert rec.input_rate == 8000
    assert timer.pending == 0


def test_a_stop_without_a_response_ends_at_once() -> None:
    sim = sip_session(create_response=False)
    timer = TurnTimer(sim.session["id"], 0, 50)
    [rec] = stream(sim, timer, question())
    assert rec.outcome == "no_response" and rec.response_id is None
    assert rec.first_delta_at is None and rec.sim_ms is None
    assert timer.pending == 0


def test_a_response_cancelled_by_barge_in_before_its_audio_is_recorded_as_cancelled() -> None:
    sim = sip_session()
    timer = TurnTimer(sim.session["id"], 0, 50)
    stream(sim, timer, question())
    [run] = sim.take_started_responses()
    # The caller speaks again before the answer's first audio: speech_started cancels it.
    events = sim.receive({"type": "input_audio_buffer.append",
                          "audio": base64.b64encode(ulaw_encode(tone(300, 8000))).decode()})
    assert timer.received(110.0, events, sim.session["audio"]["input"]) == []
    done = [e for e in events if e["type"] == "response.done"]
    assert done and done[0]["response"]["status"] == "cancelled"
    [rec] = [r for r in (timer.sent(e, 111.0) for e in events) if r is not None]
    assert rec.outcome == "cancelled" and rec.response_id == run.id
    assert rec.first_delta_at is None


def test_audio_of_other_responses_ends_no_turn() -> None:
    sim = sip_session()
    timer = TurnTimer(sim.session["id"], 0, 50)
    # The greeting: a response.create, not a VAD turn.
    greeting = sim.receive({"type": "response.create"})
    assert timer.received(1.0, greeting, sim.session["audio"]["input"]) == []
    [run] = sim.take_started_responses()
    assert all(timer.sent(e, 2.0) is None for e in response_events(run, tone(300, 24000)))
    assert timer.pending == 0


def test_several_turns_are_numbered_in_order() -> None:
    sim = sip_session()
    timer = TurnTimer(sim.session["id"], 0, 0)
    numbers = []
    for n in range(3):
        stream(sim, timer, question(), start=10.0 * n)
        [run] = sim.take_started_responses()
        for event in response_events(run, tone(200, 24000)):
            rec = timer.sent(event, 10.0 * n + 5)
            if rec is not None:
                numbers.append(rec.turn)
    assert numbers == [1, 2, 3]


def test_pending_turns_are_bounded_oldest_dropped() -> None:
    timer = TurnTimer("sess_x", 0, 0)
    for n in range(MAX_PENDING + 2):
        timer.received(float(n), [
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 1000 * n},
            {"type": "response.created", "response": {"id": f"resp_{n}"}}], {})
    assert timer.pending == MAX_PENDING
    assert timer.sent({"type": "response.output_audio.delta", "response_id": "resp_0"},
                      99.0) is None
    rec = timer.sent({"type": "response.output_audio.delta", "response_id": "resp_2"}, 99.0)
    assert rec is not None and rec.turn == 3


def test_record_round_trips_through_json() -> None:
    rec = TurnRecord("sess_a", 2, 1, "answered", 10.5, 10.6, 700, 2500,
                     {"type": "server_vad", "silence_duration_ms": 500}, 8000, "resp_a", 0.0, 50,
                     sim_lag_ms=1.5)
    line = json.dumps(rec.to_json())
    assert TurnRecord.from_json(json.loads(line)) == rec
    with pytest.raises(ValueError, match="not a turn record"):
        TurnRecord.from_json({"session": "sess_a"})


def test_first_voiced_ms_counts_whole_frames_of_near_silence() -> None:
    rate = 8000
    assert first_voiced_ms(silence(40, rate) + tone(100, rate), rate) == 40.0
    assert first_voiced_ms(tone(100, rate), rate) == 0.0
    assert first_voiced_ms(silence(500, rate), rate) is None
    assert first_voiced_ms(b"", rate) is None
    # A quiet tone (-50 dBFS RMS) is not speech; a short loud last partial frame is.
    assert first_voiced_ms(tone(100, rate, amplitude=146.0), rate) is None
    assert first_voiced_ms(silence(30, rate) + tone(5, rate), rate) == 20.0


def test_answer_lead_is_measured_on_what_the_client_receives() -> None:
    pcm = silence(60, 24000) + tone(400, 24000)
    assert answer_lead_ms(pcm, PCMU) == 60.0
    assert answer_lead_ms(pcm, {"type": "audio/pcm", "rate": 24000}) == 60.0
    assert answer_lead_ms(silence(2000, 24000) + tone(100, 24000), PCMU) is None


def test_max_lag_looks_only_around_the_moment() -> None:
    samples = [(1.00, 0.001), (1.01, 0.030), (1.05, 0.002), (1.20, 0.100)]
    assert max_lag_ms(samples, 1.02) == pytest.approx(30.0)
    assert max_lag_ms(samples, 1.06) == pytest.approx(2.0)
    assert max_lag_ms(samples, 2.0) is None
    assert max_lag_ms([], 1.0) is None


def test_turns_module_imports_without_io_libraries() -> None:
    probe = ("import sys\nfor name in ('asyncio', 'aiohttp', 'websockets', 'pjsua2'):\n"
             "    sys.modules[name] = None\nimport gateway.sim.turns\n")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", probe], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr

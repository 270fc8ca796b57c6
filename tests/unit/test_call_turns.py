"""Turn latency, first agent audio and Realtime errors of a call (gateway.calls.turns)."""

from __future__ import annotations

import pytest

from gateway.calls.turns import MAX_CODES, MAX_TURNS, OTHER_CODE, TurnMeter
from gateway.realtime import events as rt

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def _stopped() -> rt.InputAudioBufferSpeechStopped:
    return rt.InputAudioBufferSpeechStopped(event_id="e", audio_end_ms=1000, item_id="i1")


def _started() -> rt.InputAudioBufferSpeechStarted:
    return rt.InputAudioBufferSpeechStarted(event_id="e", audio_start_ms=0, item_id="i1")


def _delta() -> rt.ResponseOutputAudioDelta:
    return rt.ResponseOutputAudioDelta(event_id="e", response_id="r", item_id="a",
                                       output_index=0, content_index=0, delta="AAAA")


def _error(code: str | None, kind: str = "invalid_request_error") -> rt.ErrorEvent:
    return rt.ErrorEvent(event_id="e", error=rt.ErrorDetail(type=kind, message="m", code=code))


def test_a_turn_is_timed_from_speech_stop_to_the_first_reply_audio_only() -> None:
    meter = TurnMeter()
    meter.on_event(_delta(), now=1.0, wall=100.0)  # the greeting: first audio, no turn
    meter.on_event(_stopped(), now=2.0, wall=101.0)
    meter.on_event(_delta(), now=2.35, wall=101.35)
    meter.on_event(_delta(), now=2.4, wall=101.4)  # same reply: not a second turn
    assert meter.turn_latency_ms == [350]
    assert meter.first_audio_at == 100.0


def test_speech_resumed_before_a_reply_restarts_the_turn() -> None:
    meter = TurnMeter()
    meter.on_event(_stopped(), now=1.0, wall=0.0)
    meter.on_event(_started(), now=1.2, wall=0.0)
    meter.on_event(_delta(), now=1.3, wall=0.0)  # barge-in audio of the old reply
    assert meter.turn_latency_ms == []
    meter.on_event(_stopped(), now=2.0, wall=0.0)
    meter.on_event(rt.OutputAudioBufferStarted(event_id="e", response_id="r"), now=2.5, wall=0.0)
    assert meter.turn_latency_ms == [500]


def test_turns_kept_are_bounded() -> None:
    meter = TurnMeter()
    for n in range(MAX_TURNS + 10):
        meter.on_event(_stopped(), now=float(n), wall=0.0)
        meter.on_event(_delta(), now=n + 0.1, wall=0.0)
    assert len(meter.turn_latency_ms) == MAX_TURNS


def test_errors_count_by_code_then_type_with_a_bound() -> None:
    meter = TurnMeter()
    meter.on_event(_error("invalid_value"), now=0.0, wall=0.0)
    meter.on_event(_error("invalid_value"), now=0.0, wall=0.0)
    meter.on_event(_error(None, "server_error"), now=0.0, wall=0.0)
    for n in range(MAX_CODES):
        meter.on_event(_error(f"c{n}"), now=0.0, wall=0.0)
    errors = meter.as_dict()["realtime_errors"]
    assert errors["invalid_value"] == 2
    assert errors["server_error"] == 1
    assert len(errors) == MAX_CODES + 1
    assert errors[OTHER_CODE] == 2

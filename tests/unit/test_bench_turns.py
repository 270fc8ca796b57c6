"""The load benchmark's turn latency on synthetic captures: caller turns, pairing, exclusions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.turns import (
    CallMedia,
    TurnLatency,
    aligned_turns,
    caller_turns,
    calls_media,
    gateway_rtp_ports,
    measure_turns,
    split_rtp,
    voiced,
)
from gateway.media.g711 import ulaw_encode
from gateway.sim.turns import TurnRecord
from tests.support.rtp import Packet, RtpPacket, TimedRtp, build_rtp
from tests.support.sipp import parse_message_log

pytestmark = pytest.mark.unit

SERVER_VAD: dict[str, Any] = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                              "silence_duration_ms": 500}
T0 = 1000.0


def tone(ms: int) -> bytes:
    t = np.arange(8 * ms) / 8000
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return bytes(16 * ms)


def packets(pcm: bytes, start: float, ssrc: int = 1) -> tuple[TimedRtp, ...]:
    """20 ms μ-law packets of ``pcm``, one every 20 ms from ``start``."""
    ulaw = ulaw_encode(pcm)
    return tuple(TimedRtp(start + 0.02 * k, RtpPacket(0, k, 160 * k, ssrc, False,
                                                      ulaw[i : i + 160]))
                 for k, i in enumerate(range(0, len(ulaw), 160)))


def question_call(agent_from_ms: int = 3000, sessions: frozenset[str] = frozenset({"s1"}),
                  capture_from_ms: int = 0) -> CallMedia:
    """A caller saying 1 s..2 s of a 4 s capture; the agent answers from ``agent_from_ms``."""
    caller = packets(silence(1000) + tone(1000) + silence(2000), T0)
    agent = packets(silence(agent_from_ms) + tone(4000 - agent_from_ms), T0, ssrc=2)
    keep = [p for p in caller if p.at >= T0 + capture_from_ms / 1000]
    return CallMedia("call-1", sessions, tuple(keep), agent)


def record(received_at: float, first_delta_at: float | None, *, outcome: str = "answered",
           session: str = "s1", lead: float = 0.0, start_ms: int = 700,
           end_ms: int = 2500, lag: float | None = 1.0, rate: int = 8000) -> TurnRecord:
    return TurnRecord(session, 0, 1, outcome, received_at, first_delta_at, start_ms, end_ms,
                      SERVER_VAD, rate, "resp_1", lead, 50, lag)


def test_caller_turns_find_the_last_speech_packet_and_the_stop_packet() -> None:
    [turn] = caller_turns(question_call().caller, SERVER_VAD)
    # The tone ends at 2.000 s: its last frame is in the packet sent at 1.980 s; the VAD stops
    # after 500 ms of silence, with the frame ending at 2.500 s (packet of 2.480 s).
    assert turn.speech_end_at == pytest.approx(T0 + 1.98)
    assert turn.stop_at == pytest.approx(T0 + 2.48)
    assert turn.length_ms == 2500 - 700 and turn.whole


def test_a_question_whose_start_the_capture_missed_is_not_whole() -> None:
    [turn] = caller_turns(question_call(capture_from_ms=1200).caller, SERVER_VAD)
    assert not turn.whole
    assert turn.stop_at == pytest.approx(T0 + 2.48)


def test_a_transcoding_session_is_analysed_at_its_rate_with_the_gateways_resampler() -> None:
    caller = question_call().caller
    [at_8k] = caller_turns(caller, SERVER_VAD, 8000)
    [at_24k] = caller_turns(caller, SERVER_VAD, 24000)
    # The resampler withholds tens of ms of audio, but the turn is placed by content.
    assert at_24k.stop_at == at_8k.stop_at
    assert at_24k.speech_end_at == at_8k.speech_end_at
    assert abs(at_24k.length_ms - at_8k.length_ms) <= 10


def test_the_simulators_frame_grid_is_found_from_its_turn_lengths() -> None:
    # The tone ends at 2.000 s: a grid 5 ms later than the capture's puts its last samples in
    # the frame 1995-2005 ms, so the stop comes at 2505 ms, in the packet of 2.500 s.
    caller = packets(silence(1003) + tone(997) + silence(2000), T0)
    [plain] = caller_turns(caller, SERVER_VAD)
    [shifted] = caller_turns(caller, SERVER_VAD, phase_ms=5)
    assert plain.length_ms != shifted.length_ms
    assert plain.stop_at == pytest.approx(T0 + 2.48)
    assert shifted.stop_at == pytest.approx(T0 + 2.50)
    sim = record(T0 + 2.53, T0 + 2.6, start_ms=0, end_ms=shifted.length_ms)
    [found] = aligned_turns(caller, [sim], SERVER_VAD, 8000)
    assert found.length_ms == shifted.length_ms and found.stop_at == shifted.stop_at
    same = record(T0 + 2.53, T0 + 2.6, start_ms=0, end_ms=plain.length_ms)
    assert aligned_turns(caller, [same], SERVER_VAD, 8000) == [plain]


def test_no_turns_without_turn_detection() -> None:
    assert caller_turns(question_call().caller, None) == []


def test_a_turn_splits_into_vad_wait_inbound_sim_and_outbound() -> None:
    call = question_call(agent_from_ms=2660)
    # The simulator read the stop 30 ms after the stop packet, wrote audio 60 ms later; the
    # first voiced agent packet is at 2.660 s.
    c = T0 + 2.48 + 0.030
    d = c + 0.060
    report = measure_turns([record(c, d)], [call])
    assert report.excluded == () and report.records == 1
    [t] = report.turns
    assert t.vad_wait_ms == pytest.approx(500.0)
    assert t.inbound_ms == pytest.approx(30.0)
    assert t.sim_ms == pytest.approx(60.0)
    assert t.outbound_ms == pytest.approx((2.66 - 2.57) * 1000)
    assert t.gateway_ms == pytest.approx(t.inbound_ms + t.outbound_ms)
    assert t.total_ms == pytest.approx(t.vad_wait_ms + t.inbound_ms + t.sim_ms + t.outbound_ms)
    assert report.response_latency_ms == (50,) and report.silence_ms == (500,)


def test_the_answers_leading_near_silence_is_not_the_gateways() -> None:
    call = question_call(agent_from_ms=2680)
    c = T0 + 2.51
    plain = measure_turns([record(c, c + 0.06)], [call]).turns[0]
    lead = measure_turns([record(c, c + 0.06, lead=20.0)], [call]).turns[0]
    assert lead.outbound_ms == pytest.approx(plain.outbound_ms - 20.0)
    assert lead.total_ms == pytest.approx(plain.total_ms)


def test_partial_questions_count_and_disagreeing_ones_do_not() -> None:
    c = T0 + 2.51
    partial = measure_turns([record(c, c + 0.06, start_ms=0)],
                            [question_call(agent_from_ms=2700, capture_from_ms=1200)])
    assert len(partial.turns) == 1
    wrong = measure_turns([record(c, c + 0.06, start_ms=100)],
                          [question_call(agent_from_ms=2700)])
    assert wrong.turns == ()
    assert wrong.excluded == (("capture and simulator disagree on the turn", 1),)


@pytest.mark.parametrize(("rec", "call", "reason"), [
    (record(T0 + 2.51, None, outcome="cancelled"), question_call(), "not answered (cancelled)"),
    (record(T0 + 2.51, T0 + 2.57, session="other"), question_call(), "call not captured"),
    (record(T0 + 9.0, T0 + 9.1), question_call(), "outside the capture"),
    (record(T0 + 0.5, T0 + 0.6), question_call(), "outside the capture"),
    (record(T0 + 3.8, T0 + 3.9), question_call(), "no caller stop found"),
    (record(T0 + 2.51, T0 + 2.57), question_call(agent_from_ms=2500),
     "agent talking when the turn ended"),
    (record(T0 + 2.51, T0 + 2.57), question_call(agent_from_ms=4000), "answer after the capture"),
])
def test_turns_that_cannot_be_measured_say_why(rec: TurnRecord, call: CallMedia,
                                               reason: str) -> None:
    report = measure_turns([rec], [call])
    assert report.turns == ()
    assert report.excluded == ((reason, 1),)


def test_voiced_tells_agent_speech_from_silence() -> None:
    assert voiced(packets(silence(40) + tone(40), T0)) == [False, False, True, True]
    dtmf = TimedRtp(T0, RtpPacket(101, 0, 0, 1, False, b"\x01\x0a\x00\xa0"))
    assert voiced([dtmf]) == [False]


def test_split_rtp_by_direction_and_gateway_port() -> None:
    rtp = build_rtp(RtpPacket(0, 1, 160, 9, False, b"\xff" * 160))
    captured = [Packet(2.0, "127.0.0.1", 40000, "127.0.0.1", 5000, rtp),
                Packet(1.0, "127.0.0.1", 5000, "127.0.0.1", 40000, rtp),
                Packet(1.5, "127.0.0.1", 6000, "127.0.0.1", 40000, rtp),
                Packet(1.7, "127.0.0.1", 5060, "127.0.0.1", 5061, b"INVITE sip:x SIP/2.0")]
    agent, caller = split_rtp(captured, [(5000, 5001)])
    assert list(agent) == [5000] and [p.at for p in agent[5000]] == [1.0]
    assert list(caller) == [5000] and [p.at for p in caller[5000]] == [2.0]


OK_200 = """----------------------------------------------- 2026-12-01 10:00:00.100000
UDP message received [300] bytes :

SIP/2.0 200 OK
Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1
Call-ID: 7-123@127.0.0.1
CSeq: 1 INVITE
Content-Type: application/sdp

v=0
c=IN IP4 127.0.0.1
m=audio 52976 RTP/AVP 0 101

"""


def test_the_200_ok_names_the_gateway_port_of_each_call() -> None:
    messages = parse_message_log(OK_200)
    assert gateway_rtp_ports(messages) == {52976: "7-123@127.0.0.1"}
    call = question_call()
    [media] = calls_media({52976: "7-123@127.0.0.1"}, {"7-123@127.0.0.1": ["s9"]},
                          {52976: call.agent}, {52976: call.caller})
    assert media.sessions == frozenset({"s9"}) and media.caller == call.caller


def test_gateway_share_excludes_the_simulator() -> None:
    t = TurnLatency(total_ms=700, vad_wait_ms=500, inbound_ms=40, sim_ms=120, lead_ms=0,
                    outbound_ms=40, sim_lag_ms=None)
    assert t.gateway_ms == 80

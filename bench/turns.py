"""Turn latency under load: end of the caller's speech to the first agent audio, and the part
the gateway adds.

A turn is measured at five instants, on one clock (``CLOCK_REALTIME``: tcpdump's packet
times and the simulator's ``time.time()`` are the same clock on one host):

* ``A``: the caller packet carrying the last speech frame (capture);
* ``A_c``: the caller packet completing the silence the VAD waits for (capture);
* ``C``: the simulator reading the ``input_audio_buffer.append`` whose audio made its VAD stop
  (turn log);
* ``D``: the simulator writing the first ``response.output_audio.delta`` of its answer (turn
  log);
* ``E``: the first voiced agent packet to that caller at or after ``D`` (capture).

``A`` and ``A_c`` are found by running the simulator's own VAD (:class:`EnergyVad` with the
session's ``turn_detection``, from the turn log) over the caller's captured packets, on the
simulator's frame grid (:func:`aligned_turns`), so the capture and the simulator agree on
which audio ended the turn; a turn counts only when both give it about the same length
(:data:`LENGTH_TOLERANCE_MS`; checked when the capture holds the whole question). Then
``E - A`` (the caller's wait) = VAD silence ``A_c - A`` (the caller's own audio) + gateway
inbound ``C - A_c`` + simulator ``D - C`` (its VAD decision, configured latency, synthesis) +
the answer's leading near-silence (``lead_ms``, reported by the simulator) + gateway outbound
``E - lead - D``. The gateway adds inbound + outbound. Pure: works on captured packets, parsed
SIP messages and turn records.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.media.g711 import alaw_decode, ulaw_decode
from gateway.media.resample import Resampler
from gateway.sim.turns import VOICED_DBFS, TurnRecord
from gateway.sim.vad import FRAME_MS, EnergyVad, SpeechStarted
from tests.support.rtp import PT_PCMA, PT_PCMU, Packet, TimedRtp, rtp_in_order
from tests.support.sipp import SipMessage

#: The goal of issue 9: gateway-added turn latency p99 at most this.
GOAL_P99_MS = 40.0
#: The capture and the simulator must agree on a whole turn's length to within this, or they
#: are not looking at the same speech. They differ a little when the gateway's jitter buffer
#: inserts or drops 10 ms frames during the question (pjmedia's PCMU frames are 10 ms): that
#: shifts when the simulator sees the stop, is part of the inbound latency, and must not
#: exclude the turn.
LENGTH_TOLERANCE_MS = 100
#: Longest plausible time from the caller packet that completed the stop to the simulator
#: reading it; a stop further back is not this turn's.
MAX_INBOUND_S = 1.0
#: Sample rate of the callers' G.711.
G711_RATE = 8000
_SDP_AUDIO = re.compile(r"^m=audio (\d+) ", re.MULTILINE)


@dataclass(frozen=True)
class CallerTurn:
    """A turn in the caller's captured audio, as the simulator's VAD rule finds it.

    Attributes:
        speech_end_at: Capture time of the packet carrying the last speech frame (``A``).
        stop_at: Capture time of the packet completing the VAD's silence (``A_c``).
        length_ms: ``audio_end_ms - audio_start_ms`` as the VAD reports it.
        whole: The speech began inside the capture (its start is not cut by it).
    """

    speech_end_at: float
    stop_at: float
    length_ms: int
    whole: bool


@dataclass(frozen=True)
class TurnLatency:
    """One measured turn, in ms (see the module docstring for the instants).

    Attributes:
        total_ms: ``E - A``: the caller's end of speech to the first agent audio.
        vad_wait_ms: ``A_c - A``: the silence the VAD waits for, on the caller's clock.
        inbound_ms: ``C - A_c``: caller packet to the simulator reading the append.
        sim_ms: ``D - C``: the simulator's own time, by its own clock.
        lead_ms: Near-silence at the start of the answer's audio (simulator-reported).
        outbound_ms: ``E - lead - D``: first delta written to the agent packet on the wire.
        sim_lag_ms: The simulator's event-loop lag around ``C`` (``None``: not measured).
    """

    total_ms: float
    vad_wait_ms: float
    inbound_ms: float
    sim_ms: float
    lead_ms: float
    outbound_ms: float
    sim_lag_ms: float | None

    @property
    def gateway_ms(self) -> float:
        """What the gateway adds: inbound + outbound."""
        return self.inbound_ms + self.outbound_ms


@dataclass(frozen=True)
class CallMedia:
    """One call's captured RTP, both directions, and its Realtime session ids."""

    call_id: str
    sessions: frozenset[str]
    caller: tuple[TimedRtp, ...]
    agent: tuple[TimedRtp, ...]


@dataclass(frozen=True)
class TurnReport:
    """The turns of one level: measured ones, and why the others were not."""

    turns: tuple[TurnLatency, ...]
    excluded: tuple[tuple[str, int], ...]
    records: int
    #: The simulator's configured ``response_latency_ms`` values seen in its records.
    response_latency_ms: tuple[int, ...] = ()
    #: The ``silence_duration_ms`` values of the sessions' VAD seen in the records.
    silence_ms: tuple[int, ...] = ()


# Inputs ----------------------------------------------------------------------------------------


def read_turn_log(path: Path) -> list[TurnRecord]:
    """The simulator's turn log (JSON lines); unreadable lines are skipped."""
    out: list[TurnRecord] = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            out.append(TurnRecord.from_json(json.loads(line)))
        except ValueError:
            continue  # a line cut by a killed simulator, or not a record
    return out


def gateway_rtp_ports(messages: Iterable[SipMessage]) -> dict[int, str]:
    """Gateway RTP port -> SIP Call-ID, from the SDP of the 200 OKs to INVITE SIPp received.

    SIPp offers the same media port in every INVITE; the gateway answers each call from a
    port of its own, which names the call's RTP streams in both directions.
    """
    out: dict[int, str] = {}
    for m in messages:
        if m.direction != "received" or m.status != 200 or m.method != "INVITE":
            continue
        port = _SDP_AUDIO.search(m.text)
        call_id = m.header("Call-ID")
        if port is not None and call_id:
            out.setdefault(int(port[1]), call_id.strip())
    return out


def split_rtp(packets: Iterable[Packet], ranges: Sequence[tuple[int, int]]
              ) -> tuple[dict[int, list[TimedRtp]], dict[int, list[TimedRtp]]]:
    """RTP packets by gateway port: ``(agent, caller)``; agent = sent from a port in one of
    ``ranges`` (inclusive), caller = sent to one. Packets in arrival order."""
    def inside(port: int) -> bool:
        return any(lo <= port <= hi for lo, hi in ranges)

    agent: dict[int, list[TimedRtp]] = {}
    caller: dict[int, list[TimedRtp]] = {}
    for pkt, timed in rtp_in_order(packets):
        if inside(pkt.sport):
            agent.setdefault(pkt.sport, []).append(timed)
        elif inside(pkt.dport):
            caller.setdefault(pkt.dport, []).append(timed)
    return agent, caller


def calls_media(ports: Mapping[int, str], sessions: Mapping[str, Iterable[str]],
                agent: Mapping[int, Sequence[TimedRtp]],
                caller: Mapping[int, Sequence[TimedRtp]]) -> list[CallMedia]:
    """Join the SDP ports, the call records' Realtime sessions and the captured streams."""
    return [CallMedia(call_id, frozenset(sessions.get(call_id, ())),
                      tuple(caller.get(port, ())), tuple(agent.get(port, ())))
            for port, call_id in sorted(ports.items())]


def level_turns(turn_log: Path, packets: Sequence[Packet], ranges: Sequence[tuple[int, int]],
                messages: Iterable[SipMessage], records: Iterable[Mapping[str, Any]]
                ) -> TurnReport:
    """Turn latency of one level.

    Args:
        turn_log: The simulator's turn log (read once the simulator has stopped).
        packets: The capture: the RTP the gateways sent and received on their RTP ranges.
        ranges: Each gateway's RTP port range (first, last).
        messages: SIPp's messages: the 200 OKs say which gateway port is which call.
        records: The gateways' call records: which Realtime session is which call.
    """
    agent, caller = split_rtp(packets, ranges)
    sessions: dict[str, list[str]] = {}
    for rec in records:
        call_id, session = rec.get("sip_call_id"), rec.get("rt_session_id")
        if isinstance(call_id, str) and isinstance(session, str):
            sessions.setdefault(call_id, []).append(session)
    calls = calls_media(gateway_rtp_ports(messages), sessions, agent, caller)
    return measure_turns(read_turn_log(turn_log), calls)


# Audio -----------------------------------------------------------------------------------------


def _pcm(rtp: TimedRtp) -> bytes | None:
    if rtp.rtp.pt == PT_PCMU:
        return ulaw_decode(rtp.rtp.payload)
    if rtp.rtp.pt == PT_PCMA:
        return alaw_decode(rtp.rtp.payload)
    return None  # telephone-event or other: not audio


def voiced(packets: Sequence[TimedRtp], threshold_dbfs: float = VOICED_DBFS) -> list[bool]:
    """Per packet: G.711 audio louder than ``threshold_dbfs`` (how ``bench.metrics`` tells
    agent talk from silence and comfort noise)."""
    limit = (32768.0 * 10 ** (threshold_dbfs / 20)) ** 2
    out: list[bool] = []
    for p in packets:
        pcm = _pcm(p)
        if not pcm:
            out.append(False)
            continue
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        out.append(bool(np.mean(x * x) > limit))
    return out


def _caller_audio(packets: Sequence[TimedRtp], rate: int
                  ) -> tuple[bytes, list[int], list[float]]:
    """A caller's audio at ``rate``, and for each audio packet its first 8 kHz sample and
    capture time.

    At another rate than 8 kHz (``audio/pcm`` at 24 kHz: transcode media) it is resampled with
    the gateway's own :class:`Resampler`, whose output is aligned with its input, so the VAD
    sees the samples the simulator saw.
    """
    pcm: list[bytes] = []
    starts: list[int] = []
    times: list[float] = []
    position = 0
    for p in packets:
        audio = _pcm(p)
        if audio is None:
            continue
        starts.append(position)
        times.append(p.at)
        position += len(audio) // 2
        pcm.append(audio)
    joined = b"".join(pcm)
    if rate != G711_RATE and joined:
        up = Resampler(G711_RATE, rate)
        joined = up.process(joined) + up.flush()
    return joined, starts, times


def caller_turns(packets: Sequence[TimedRtp], turn_detection: Mapping[str, Any] | None,
                 rate: int = G711_RATE, *, phase_ms: int = 0) -> list[CallerTurn]:
    """The turns the simulator's VAD finds in a caller's captured packets.

    The VAD cuts 10 ms frames from the first packet, ``phase_ms`` later when given (as if that
    much audio came first). The gateway hands the simulator whole 20 ms frames, so with phase
    0 both cut the same frames out of the same audio; :func:`aligned_turns` finds the phase
    when they do not. Turns are placed in the packets by content (audio position), not by
    when a resampler let the samples out.
    """
    vad = EnergyVad.for_turn_detection(turn_detection, rate)
    if vad is None:
        return []
    audio, starts, times = _caller_audio(packets, rate)
    if not times:
        return []
    pad = phase_ms * rate // 1000
    silence_ms = FRAME_MS * max(1, math.ceil(vad.settings.silence_duration_ms / FRAME_MS))

    def sent_at(ms: int) -> float:
        """Capture time of the packet holding the audio just before VAD time ``ms``."""
        sample = (ms * rate // 1000 - pad) * G711_RATE // rate - 1
        return times[max(0, bisect.bisect_right(starts, sample) - 1)]

    start_ms: int | None = None
    out: list[CallerTurn] = []
    for event in vad.feed(bytes(2 * pad) + audio):
        if isinstance(event, SpeechStarted):
            start_ms = event.audio_start_ms
            continue
        # The last speech frame ends `silence_ms` before the stop.
        begin = 0 if start_ms is None else start_ms
        whole = start_ms is not None and start_ms * rate // 1000 > pad
        out.append(CallerTurn(sent_at(event.audio_end_ms - silence_ms),
                              sent_at(event.audio_end_ms), event.audio_end_ms - begin, whole))
        start_ms = None
    return out


def aligned_turns(packets: Sequence[TimedRtp], records: Sequence[TurnRecord],
                  turn_detection: Mapping[str, Any] | None, rate: int) -> list[CallerTurn]:
    """:func:`caller_turns` on the simulator's frame grid.

    Phase 0 unless another phase (0 to 9 ms) makes more of the call's whole turns exactly as
    long as the simulator reports them. The simulator's 10 ms grid is not where the capture's
    is when what it was given before the turn was not a whole number of frames (a resampler's
    uneven output); its own turn lengths then say where its frames were cut.
    """
    def score(turns: Sequence[CallerTurn]) -> int:
        hits = 0
        for rec in records:
            heard = _heard(turns, rec)
            if heard is not None and heard.whole and rec.audio_start_ms is not None \
                    and rec.audio_end_ms - rec.audio_start_ms == heard.length_ms:
                hits += 1
        return hits

    best = caller_turns(packets, turn_detection, rate)
    wanted = sum(1 for r in records if (h := _heard(best, r)) is not None and h.whole)
    best_score = score(best)
    for phase in range(1, FRAME_MS):
        if best_score >= wanted:
            break
        turns = caller_turns(packets, turn_detection, rate, phase_ms=phase)
        if (hits := score(turns)) > best_score:
            best, best_score = turns, hits
    return best


def _heard(turns: Sequence[CallerTurn], rec: TurnRecord) -> CallerTurn | None:
    """The caller stop the simulator read at ``rec.received_at``: the latest one at most
    :data:`MAX_INBOUND_S` before."""
    found = [t for t in turns if 0 <= rec.received_at - t.stop_at <= MAX_INBOUND_S]
    return found[-1] if found else None


# Turns -----------------------------------------------------------------------------------------


def measure_turns(records: Sequence[TurnRecord], calls: Sequence[CallMedia]) -> TurnReport:
    """Measure every simulator turn that the capture shows whole; count why others are not."""
    by_session = {s: c for c in calls for s in c.sessions}
    excluded: Counter[str] = Counter()
    turns: list[TurnLatency] = []
    cache: dict[tuple[str, int, str], list[CallerTurn]] = {}
    agent: dict[str, tuple[list[float], list[bool]]] = {}

    def key_of(rec: TurnRecord, call: CallMedia) -> tuple[str, int, str]:
        return call.call_id, rec.input_rate, json.dumps(rec.turn_detection, sort_keys=True)

    peers: dict[tuple[str, int, str], list[TurnRecord]] = {}
    for rec in records:
        if rec.session in by_session and rec.outcome == "answered":
            peers.setdefault(key_of(rec, by_session[rec.session]), []).append(rec)
    for rec in sorted(records, key=lambda r: r.received_at):
        call = by_session.get(rec.session)
        if rec.outcome != "answered" or rec.first_delta_at is None:
            excluded[f"not answered ({rec.outcome})"] += 1
            continue
        if call is None or not call.caller or not call.agent:
            excluded["call not captured"] += 1
            continue
        if not call.caller[0].at <= rec.received_at <= call.caller[-1].at:
            excluded["outside the capture"] += 1
            continue
        key = key_of(rec, call)
        if key not in cache:
            cache[key] = aligned_turns(call.caller, peers[key], rec.turn_detection,
                                       rec.input_rate)
        heard = _heard(cache[key], rec)
        if heard is None:
            early = rec.received_at - call.caller[0].at < MAX_INBOUND_S
            excluded["outside the capture" if early else "no caller stop found"] += 1
            continue
        # A question whose start the capture missed still has its end; only a whole one can
        # be compared with what the simulator heard.
        if heard.whole and rec.audio_start_ms is not None and abs(
                (rec.audio_end_ms - rec.audio_start_ms) - heard.length_ms) > LENGTH_TOLERANCE_MS:
            excluded["capture and simulator disagree on the turn"] += 1
            continue
        if call.call_id not in agent:
            agent[call.call_id] = ([p.at for p in call.agent], voiced(call.agent))
        times, loud = agent[call.call_id]
        # The first voiced packet the gateway sent once the simulator had written audio; the
        # agent must have been quiet since the caller's stop, or that packet may be older
        # audio still playing (no barge-in happened).
        since = bisect.bisect_left(times, heard.stop_at)
        after = bisect.bisect_left(times, rec.first_delta_at)
        if any(loud[since:after]):
            excluded["agent talking when the turn ended"] += 1
            continue
        answer = next((times[j] for j in range(after, len(times)) if loud[j]), None)
        if answer is None:
            excluded["answer after the capture"] += 1
            continue
        lead = rec.lead_ms or 0.0
        turns.append(TurnLatency(
            total_ms=(answer - heard.speech_end_at) * 1000,
            vad_wait_ms=(heard.stop_at - heard.speech_end_at) * 1000,
            inbound_ms=(rec.received_at - heard.stop_at) * 1000,
            sim_ms=(rec.first_delta_at - rec.received_at) * 1000,
            lead_ms=lead,
            outbound_ms=(answer - rec.first_delta_at) * 1000 - lead,
            sim_lag_ms=rec.sim_lag_ms))
    silences = {int(r.turn_detection["silence_duration_ms"]) for r in records
                if r.turn_detection and isinstance(r.turn_detection.get("silence_duration_ms"),
                                                   int)}
    return TurnReport(tuple(turns), tuple(sorted(excluded.items())), len(records),
                      tuple(sorted({r.response_latency_ms for r in records})),
                      tuple(sorted(silences)))


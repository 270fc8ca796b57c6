"""Per-turn timing of the simulator, in its own clock: when it had a turn, when it answered.

Benchmarks that measure what a client (the gateway) adds to a conversational turn need the
simulator to say how long it took itself, so that its share can be subtracted rather than
guessed. A :class:`TurnTimer` per session watches the events the core produced for each
client message (with the wall time the message was read) and the events as they are written
to the socket (with the wall time of the write). A VAD turn starts at the
``input_audio_buffer.speech_stopped`` produced by an ``input_audio_buffer.append``; the
``response.created`` the same append produced is the turn's response; the turn ends at that
response's first ``response.output_audio.delta`` written (outcome ``answered``), or at its
``response.done`` when no audio was written (``cancelled``: barge-in or a client cancel;
``no_audio``: a text or empty response). A turn without a response (``create_response``
false, or a response already active) ends at once (``no_response``). Each ended turn is a
:class:`TurnRecord`, one JSON line for the benchmark. :func:`answer_lead_ms` says how much
near-silence the synthesised answer starts with (audio the client cannot be blamed for), and
:func:`max_lag_ms` reads the server's event-loop lag probe around a moment. Pure: no clocks,
no I/O; times are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np

from gateway.sim.audio import PCM_RATE, decode_input, encode_output, format_rate

#: A 20 ms frame (one RTP packet of G.711) louder than this carries speech; the load
#: benchmark tells agent talk from silence with the same rule (``bench.metrics.VOICED_DBFS``).
VOICED_DBFS: Final = -45.0
#: Frame length of :func:`first_voiced_ms`: one 20 ms RTP packet.
VOICED_FRAME_MS: Final = 20
#: Turns waiting for their first audio per session. Overflow policy: the oldest is dropped
#: unrecorded (a response that never sends audio nor ends must not grow memory).
MAX_PENDING: Final = 8
_STOPPED: Final = "input_audio_buffer.speech_stopped"
_STARTED: Final = "input_audio_buffer.speech_started"
_CREATED: Final = "response.created"
_DELTA: Final = "response.output_audio.delta"
_DONE: Final = "response.done"


@dataclass(frozen=True)
class TurnRecord:
    """One VAD turn as the simulator saw it; times are ``time.time()`` seconds.

    Attributes:
        session: The Realtime session id (``sess_...``), as in ``session.created``.
        conn: The simulator's connection number.
        turn: 1 for the session's first VAD turn, then 2, 3...
        outcome: ``answered``, ``cancelled``, ``no_audio`` or ``no_response``.
        received_at: When the simulator read the append whose audio completed the stop.
        first_delta_at: When the first ``response.output_audio.delta`` of the turn's
            response was written to the socket; ``None`` unless answered.
        audio_start_ms: ``audio_start_ms`` of the turn's ``speech_started`` (session audio
            time, prefix padding included); ``None`` when not seen.
        audio_end_ms: ``audio_end_ms`` of its ``speech_stopped`` (the trailing silence
            included).
        turn_detection: The session's ``audio.input.turn_detection`` at the stop.
        input_rate: Sample rate of the session's input audio (8000 for G.711, 24000 for
            ``audio/pcm``): what the VAD analysed.
        response_id: The response the stop created; ``None`` for ``no_response``.
        lead_ms: Audio at the start of the answer before its first voiced 20 ms frame (see
            :func:`first_voiced_ms`); ``None`` when unknown.
        response_latency_ms: The simulator's configured delay before a response's output.
        sim_lag_ms: Largest event-loop lag of the simulator measured around
            ``received_at`` (see :func:`max_lag_ms`); ``None`` when not measured.
    """

    session: str
    conn: int
    turn: int
    outcome: str
    received_at: float
    first_delta_at: float | None
    audio_start_ms: int | None
    audio_end_ms: int
    turn_detection: Mapping[str, Any] | None
    input_rate: int
    response_id: str | None
    lead_ms: float | None
    response_latency_ms: int
    sim_lag_ms: float | None = None

    @property
    def sim_ms(self) -> float | None:
        """The simulator's own time: from reading the stop to writing the first audio."""
        if self.first_delta_at is None:
            return None
        return (self.first_delta_at - self.received_at) * 1000

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one line of the turn log)."""
        out = asdict(self)
        out["turn_detection"] = dict(self.turn_detection) if self.turn_detection else None
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TurnRecord:
        """A record from one parsed line of the turn log.

        Raises:
            ValueError: A field is missing or has the wrong type.
        """
        try:
            td = data["turn_detection"]
            return cls(
                session=str(data["session"]),
                conn=int(data["conn"]),
                turn=int(data["turn"]),
                outcome=str(data["outcome"]),
                received_at=float(data["received_at"]),
                first_delta_at=_opt_float(data["first_delta_at"]),
                audio_start_ms=None if data["audio_start_ms"] is None
                else int(data["audio_start_ms"]),
                audio_end_ms=int(data["audio_end_ms"]),
                turn_detection=dict(td) if isinstance(td, Mapping) else None,
                input_rate=int(data["input_rate"]),
                response_id=None if data["response_id"] is None else str(data["response_id"]),
                lead_ms=_opt_float(data["lead_ms"]),
                response_latency_ms=int(data["response_latency_ms"]),
                sim_lag_ms=_opt_float(data.get("sim_lag_ms")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a turn record: {exc}") from None


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass
class _Open:
    turn: int
    received_at: float
    audio_start_ms: int | None
    audio_end_ms: int
    turn_detection: Mapping[str, Any] | None
    input_rate: int
    response_id: str | None = None
    lead_ms: float | None = None


class TurnTimer:
    """Times the VAD turns of one session.

    Args:
        session: The session id (``sess_...``).
        conn: The connection number.
        response_latency_ms: The simulator's configured response latency, copied into each
            record.
    """

    def __init__(self, session: str, conn: int, response_latency_ms: int) -> None:
        self._session = session
        self._conn = conn
        self._latency = response_latency_ms
        self._turns = 0
        self._speech_start: int | None = None
        self._pending: dict[str, _Open] = {}

    @property
    def pending(self) -> int:
        """Turns waiting for their response's first audio or end."""
        return len(self._pending)

    def received(self, at: float, events: Iterable[Mapping[str, Any]],
                 audio_input: Mapping[str, Any]) -> list[TurnRecord]:
        """Note the server events one client message produced, read at ``at``.

        Args:
            at: When the message was read.
            events: What the core returned for it, in order.
            audio_input: The session's ``audio.input`` now (``format``, ``turn_detection``).

        Returns:
            Turns that ended already (``no_response``).
        """
        done: list[TurnRecord] = []
        stop: _Open | None = None
        td = audio_input.get("turn_detection")
        turn_detection = dict(td) if isinstance(td, Mapping) else None
        for event in events:
            kind = event.get("type")
            if kind == _STARTED:
                self._speech_start = _int_or_none(event.get("audio_start_ms"))
            elif kind == _STOPPED:
                if stop is not None:
                    done.append(self._record(stop, "no_response", None))
                self._turns += 1
                stop = _Open(self._turns, at, self._speech_start,
                             int(event.get("audio_end_ms", 0)), turn_detection,
                             _rate(audio_input.get("format")))
                self._speech_start = None
            elif kind == _CREATED and stop is not None:
                response = event.get("response") or {}
                stop.response_id = str(response.get("id", ""))
                self._open(stop)
                stop = None
        if stop is not None:
            done.append(self._record(stop, "no_response", None))
        return done

    def lead(self, response_id: str, lead_ms: float | None) -> None:
        """Record how the answer of ``response_id`` starts (:func:`first_voiced_ms`)."""
        turn = self._pending.get(response_id)
        if turn is not None and turn.lead_ms is None:
            turn.lead_ms = lead_ms

    def sent(self, event: Mapping[str, Any], at: float) -> TurnRecord | None:
        """Note a server event written to the socket at ``at``.

        Returns:
            The turn it ended, if any.
        """
        if not self._pending:
            return None
        kind = event.get("type")
        if kind == _DELTA:
            turn = self._pending.pop(str(event.get("response_id")), None)
            return None if turn is None else self._record(turn, "answered", at)
        if kind == _DONE:
            response = event.get("response") or {}
            turn = self._pending.pop(str(response.get("id")), None)
            if turn is None:
                return None
            outcome = "cancelled" if response.get("status") == "cancelled" else "no_audio"
            return self._record(turn, outcome, None)
        return None

    def _open(self, turn: _Open) -> None:
        if len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        assert turn.response_id is not None
        self._pending[turn.response_id] = turn

    def _record(self, turn: _Open, outcome: str, first_delta_at: float | None) -> TurnRecord:
        return TurnRecord(
            session=self._session, conn=self._conn, turn=turn.turn, outcome=outcome,
            received_at=turn.received_at, first_delta_at=first_delta_at,
            audio_start_ms=turn.audio_start_ms, audio_end_ms=turn.audio_end_ms,
            turn_detection=turn.turn_detection, input_rate=turn.input_rate,
            response_id=turn.response_id,
            lead_ms=turn.lead_ms, response_latency_ms=self._latency)


def _rate(fmt: Any) -> int:
    try:
        return format_rate(fmt if isinstance(fmt, Mapping) else {"type": "audio/pcm"})
    except ValueError:
        return PCM_RATE


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def first_voiced_ms(pcm16: bytes, rate: int, *, frame_ms: int = VOICED_FRAME_MS,
                    threshold_dbfs: float = VOICED_DBFS) -> float | None:
    """Milliseconds of audio before the first frame louder than ``threshold_dbfs``.

    Frames are ``frame_ms`` long from the first sample, as a client that plays the audio in
    20 ms packets from its start cuts them; a last partial frame counts too.

    Args:
        pcm16: Little-endian PCM16 mono.
        rate: Its sample rate.
        frame_ms: Frame length.
        threshold_dbfs: RMS level (full scale 32768) a frame must exceed.

    Returns:
        A multiple of ``frame_ms``, or ``None`` when no frame is that loud.
    """
    samples = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.float64)
    n = max(1, rate * frame_ms // 1000)
    if not len(samples):
        return None
    pad = (-len(samples)) % n
    frames = np.pad(samples, (0, pad)).reshape(-1, n)
    # Compare mean squares, not dB: no log of zero for digital silence.
    limit = (32768.0 * 10 ** (threshold_dbfs / 20)) ** 2
    counts = np.full(len(frames), n, dtype=np.float64)
    if pad:
        counts[-1] = n - pad
    loud = np.flatnonzero((frames * frames).sum(axis=1) / counts > limit)
    return float(loud[0] * frame_ms) if len(loud) else None


#: Audio of an answer looked at by :func:`answer_lead_ms`; the rest cannot change the result
#: unless the answer starts with this much near-silence (then it is reported as unknown).
LEAD_WINDOW_MS: Final = 1000


def answer_lead_ms(pcm16_24k: bytes, output_format: Mapping[str, Any]) -> float | None:
    """:func:`first_voiced_ms` of an answer as the client receives it.

    The synthesised 24 kHz speech is encoded in the session's output format and decoded again
    (G.711 at 8 kHz), so the level test sees the samples the client plays; only the first
    :data:`LEAD_WINDOW_MS` are converted.

    Args:
        pcm16_24k: The synthesised answer, PCM16 at 24 kHz.
        output_format: The response's ``audio.output.format``.

    Returns:
        Milliseconds before the first voiced frame, or ``None`` when none is in the window.
    """
    head = pcm16_24k[: PCM_RATE * 2 * LEAD_WINDOW_MS // 1000]
    heard = decode_input(output_format, encode_output(output_format, head))
    return first_voiced_ms(heard, format_rate(output_format))


def max_lag_ms(samples: Sequence[tuple[float, float]], at: float, *, before_s: float = 0.02,
               after_s: float = 0.03) -> float | None:
    """The largest event-loop lag measured by wake-ups within ``[at - before_s, at + after_s]``.

    A lag probe sleeps a short interval over and over and records ``(woke_at, late_s)``: how
    much later than asked it woke. A loop busy when a message arrived reads it late, and the
    probe waking at about the same moment is late by about as much, so a large value near
    ``at`` says the simulator, not the client, delayed reading the message.

    Args:
        samples: ``(woke_at, late_s)`` pairs in wake order.
        at: The moment of interest (same clock as ``woke_at``).
        before_s: Wake-ups this long before ``at`` count.
        after_s: Wake-ups this long after ``at`` count.

    Returns:
        Milliseconds, or ``None`` when no wake-up falls in the interval (not measured).
    """
    late = [lag for woke, lag in samples if at - before_s <= woke <= at + after_s]
    return max(late) * 1000 if late else None


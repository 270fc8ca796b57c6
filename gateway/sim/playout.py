"""What the caller hears on a SIP call: the agent's audio played out in real time.

On a Realtime SIP call OpenAI plays the model's audio to the caller over RTP; the sideband
WebSocket only hears about it through ``output_audio_buffer.started`` (a response's audio
begins to play), ``.stopped`` (the buffer drained after ``response.done``: nothing more is
coming) and ``.cleared`` (cut off by barge-in or ``output_audio_buffer.clear``). The model
generates faster than real time, so audio waits here. :class:`AgentPlayout` takes each
response's audio as it is generated (:meth:`AgentPlayout.push`), hands it out in 20 ms frames
of PCM16 at 8 kHz when the adapter's clock asks (:meth:`AgentPlayout.take`, then
:meth:`AgentPlayout.frame_played` once the frame's time is over), and returns the
``output_audio_buffer.*`` events to send at those moments. :meth:`AgentPlayout.clear` cuts the
audio off and says how much of which item the caller heard, for the server-side truncation
of a SIP barge-in. Pure: the adapter owns the clock and the RTP (or test) sink.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.sim.audio import G711_RATE, decode_input, format_rate, resample_pcm16
from gateway.sim.conversation import EventFactory

#: Length of one RTP frame.
FRAME_MS: Final = 20
#: Bytes of one 20 ms frame of PCM16 at 8 kHz.
FRAME_BYTES: Final = G711_RATE * FRAME_MS // 1000 * 2
#: Most generated audio waiting to be played (a response is at most a few minutes of speech).
#: Overflow policy: the oldest audio is dropped and counted in ``dropped_ms``, since real-time
#: audio never waits.
MAX_QUEUED_MS: Final = 300_000
_BYTES_PER_MS: Final = FRAME_BYTES / FRAME_MS


@dataclass(frozen=True)
class Frame:
    """20 ms of agent audio for the caller.

    Attributes:
        pcm16: PCM16 LE mono at 8 kHz, exactly :data:`FRAME_BYTES` (a short last frame of an
            item is padded with silence).
        response_id: The response it belongs to.
        item_id: The assistant item it belongs to.
        audio_ms: Audio in the frame before padding.
    """

    pcm16: bytes
    response_id: str
    item_id: str
    audio_ms: float


@dataclass(frozen=True)
class Cut:
    """What :meth:`AgentPlayout.clear` cut off.

    Attributes:
        response_id: The response whose audio was playing or about to play.
        item_id: The item the caller was hearing (or about to), for truncation.
        played_ms: How much of that item was played.
    """

    response_id: str
    item_id: str
    played_ms: int


@dataclass
class _Chunk:
    response_id: str
    item_id: str
    pcm: bytearray


def rtp_pcm(fmt: Mapping[str, Any], delta_b64: str) -> bytes:
    """The PCM16 8 kHz the caller hears for one ``response.output_audio.delta``.

    Args:
        fmt: The response's output format (``audio/pcmu`` on a SIP call).
        delta_b64: The event's ``delta``.
    """
    raw = base64.b64decode(delta_b64)
    pcm = decode_input(fmt, raw)
    return resample_pcm16(pcm, format_rate(fmt), G711_RATE)


class AgentPlayout:
    """The agent audio queued for the caller and the ``output_audio_buffer`` events.

    Args:
        events: Makes the server events (ids from the session's factory).

    Attributes:
        dropped_ms: Audio dropped because more than :data:`MAX_QUEUED_MS` waited.
        played_total_ms: All audio handed out so far.
    """

    def __init__(self, events: EventFactory) -> None:
        self._events = events
        self._queue: deque[_Chunk] = deque()
        self._queued_bytes = 0
        self._done: set[str] = set()
        self._playing: str | None = None  # started, not yet stopped or cleared
        self._in_frame: Frame | None = None
        self._played: dict[str, float] = {}
        self.dropped_ms = 0.0
        self.played_total_ms = 0.0

    @property
    def busy(self) -> bool:
        """Whether audio is queued or a response's audio has started and not stopped."""
        return bool(self._queue) or self._playing is not None

    @property
    def queued_ms(self) -> float:
        """Audio waiting to be played."""
        return self._queued_bytes / _BYTES_PER_MS

    def played_ms(self, item_id: str) -> float:
        """How much of an item's audio was handed out."""
        return self._played.get(item_id, 0.0)

    def push(self, response_id: str, item_id: str, pcm16: bytes) -> None:
        """Queue generated audio (PCM16 8 kHz) of a response's item."""
        if not pcm16:
            return
        tail = self._queue[-1] if self._queue else None
        if tail is not None and (tail.response_id, tail.item_id) == (response_id, item_id):
            tail.pcm.extend(pcm16)
        else:
            self._queue.append(_Chunk(response_id, item_id, bytearray(pcm16)))
        self._queued_bytes += len(pcm16)
        self._drop_overflow()

    def response_done(self, response_id: str) -> list[dict[str, Any]]:
        """``response.done`` was sent: no more audio will come for that response.

        Returns:
            ``output_audio_buffer.stopped`` if its audio already finished playing.
        """
        if self._playing != response_id and not self._queued(response_id):
            return []  # no audio, or all of it already played and stopped
        self._done.add(response_id)
        if self._in_frame is None:
            return self._maybe_stopped()
        return []

    def take(self) -> tuple[Frame | None, list[dict[str, Any]]]:
        """The next frame to play now, and the events to send before it.

        Returns:
            ``(None, [])`` when nothing is queued; else the frame and
            ``output_audio_buffer.started`` when it is the first of its response (preceded by
            ``.stopped`` of an earlier response whose audio ran out).
        """
        if not self._queue:
            return None, []
        head = self._queue[0]
        data = bytes(head.pcm[:FRAME_BYTES])
        del head.pcm[:FRAME_BYTES]
        self._queued_bytes -= len(data)
        if not head.pcm:
            self._queue.popleft()
        data = data[: len(data) - len(data) % 2]
        audio_ms = len(data) / _BYTES_PER_MS
        frame = Frame(data.ljust(FRAME_BYTES, b"\0"), head.response_id, head.item_id, audio_ms)
        events: list[dict[str, Any]] = []
        if self._playing != head.response_id:
            if self._playing is not None:
                events.append(self._buffer_event("output_audio_buffer.stopped", self._playing))
            self._playing = head.response_id
            events.append(self._buffer_event("output_audio_buffer.started", head.response_id))
        self._played[head.item_id] = self._played.get(head.item_id, 0.0) + audio_ms
        self.played_total_ms += audio_ms
        self._in_frame = frame
        return frame, events

    def frame_played(self) -> list[dict[str, Any]]:
        """The frame from :meth:`take` has finished playing.

        Returns:
            ``output_audio_buffer.stopped`` when that was the last audio of a finished
            response.
        """
        self._in_frame = None
        return self._maybe_stopped()

    def clear(self) -> tuple[list[dict[str, Any]], Cut | None]:
        """Cut the agent off: drop everything queued.

        Returns:
            ``output_audio_buffer.cleared`` (nothing when no audio was playing or queued) and
            what was cut: the next item the caller would have heard, with how much of it was
            played (``None`` when the last item had played to its end).
        """
        head = self._queue[0] if self._queue else None
        response_id = self._playing or (head.response_id if head is not None else None)
        cut = None
        if head is not None:
            cut = Cut(head.response_id, head.item_id, int(self.played_ms(head.item_id)))
        self._queue.clear()
        self._queued_bytes = 0
        self._playing = None
        if response_id is None:
            return [], None
        self._done.discard(response_id)
        return [self._buffer_event("output_audio_buffer.cleared", response_id)], cut

    def _maybe_stopped(self) -> list[dict[str, Any]]:
        playing = self._playing
        if playing is None or playing not in self._done:
            return []
        if self._queued(playing):
            return []
        self._playing = None
        self._done.discard(playing)
        return [self._buffer_event("output_audio_buffer.stopped", playing)]

    def _queued(self, response_id: str) -> bool:
        return any(chunk.response_id == response_id for chunk in self._queue)

    def _drop_overflow(self) -> None:
        limit = int(MAX_QUEUED_MS * _BYTES_PER_MS)
        while self._queued_bytes > limit and self._queue:
            head = self._queue[0]
            excess = min(self._queued_bytes - limit, len(head.pcm))
            excess -= excess % 2
            if excess <= 0:
                break
            del head.pcm[:excess]
            self._queued_bytes -= excess
            self.dropped_ms += excess / _BYTES_PER_MS
            if not head.pcm:
                self._queue.popleft()

    def _buffer_event(self, type_: str, response_id: str) -> dict[str, Any]:
        return self._events.make(type_, response_id=response_id)

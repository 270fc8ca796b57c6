"""Playout buffer of agent audio between the event loop and pjsua2's clock thread.

The Realtime API streams the agent's audio faster than real time; the conference bridge takes
exactly one 20 ms frame per tick. :class:`PlayoutBuffer` sits between them: the event-loop
thread pushes audio of any size, tagged with its ``(item_id, content_index)``, and the clock
thread pops one 320-byte PCM16 8 kHz frame per tick, getting silence when nothing is ready.
Because only popped frames reach the caller, the buffer is also the playback tracker for
barge-in: it counts, per item, the milliseconds popped and received, and :meth:`~PlayoutBuffer.
flush` reports where to ``conversation.item.truncate`` the interrupted item. Pure: one
``threading.Lock`` and no I/O, no asyncio, no pjsua2.

Two ways to consume it. A Python media port pops one frame per clock tick
(:meth:`~PlayoutBuffer.pop_frame`): popped is played. The native media port
(``gateway/sip/gwmedia.c``) plays from a ring of its own that the event loop tops up in
batches: the loop *takes* frames (:meth:`~PlayoutBuffer.take_frames`), which are then in
flight, and *confirms* them (:meth:`~PlayoutBuffer.confirm_played`) once the port reports them
played, so playback tracking stays exact to the frame.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.media.formats import (
    FRAME_MS,
    PCM16_8K_BYTES_PER_MS,
    PCM16_8K_FRAME_BYTES,
    SILENCE_PCM16_8K_FRAME,
)

_logger = logging.getLogger(__name__)

_FRAME: Final = PCM16_8K_FRAME_BYTES
_BYTES_PER_MS: Final = PCM16_8K_BYTES_PER_MS
_SILENCE: Final = SILENCE_PCM16_8K_FRAME
#: Items recently finished or interrupted whose late audio is discarded.
_CLOSED_KEPT: Final = 32


@dataclass(frozen=True, slots=True)
class PlayedState:
    """How much of one agent audio item the caller has heard.

    Attributes:
        item_id: The assistant item's id.
        content_index: The audio content part within the item.
        played_ms: Milliseconds of the item's audio popped for playback to the caller.
        received_ms: Milliseconds of the item's audio pushed into the buffer, including any
            dropped on overflow (that is what the server sent).
    """

    item_id: str
    content_index: int
    played_ms: int
    received_ms: int

    @property
    def audio_end_ms(self) -> int:
        """``audio_end_ms`` for ``conversation.item.truncate``: played, clamped to received."""
        return min(self.played_ms, self.received_ms)


@dataclass(frozen=True, slots=True)
class PlayoutStats:
    """Counters of a playout buffer since it was created.

    Attributes:
        frames_played: Audio frames popped.
        silence_frames_idle: Silence popped with no item in progress (the agent is quiet).
        silence_frames_underrun: Silence popped while an item was in progress but its audio
            had not arrived yet (a gap the caller hears in the middle of speech).
        frames_dropped: Frames refused because the buffer was full (see the overflow policy).
        frames_flushed: Frames thrown away unplayed by :meth:`PlayoutBuffer.flush`.
        late_bytes_discarded: Bytes pushed for an item already interrupted or marked done.
    """

    frames_played: int
    silence_frames_idle: int
    silence_frames_underrun: int
    frames_dropped: int
    frames_flushed: int
    late_bytes_discarded: int


class _Item:
    """Tracking state of one ``(item_id, content_index)``; counts are guarded by the lock."""

    __slots__ = ("content_index", "done", "item_id", "overflowed", "played", "received")

    def __init__(self, item_id: str, content_index: int) -> None:
        self.item_id = item_id
        self.content_index = content_index
        self.received = 0  # bytes pushed, dropped ones included
        self.played = 0  # bytes popped, never more than received
        self.done = False
        self.overflowed = False

    def state(self) -> PlayedState:
        return PlayedState(
            self.item_id,
            self.content_index,
            self.played // _BYTES_PER_MS,
            self.received // _BYTES_PER_MS,
        )


class PlayoutBuffer:
    """Bounded FIFO of agent audio (PCM16 8 kHz) with per-item playback tracking.

    Threads: :meth:`pop_frame` is called by the clock thread once per 20 ms tick. :meth:`push`,
    :meth:`mark_done`, :meth:`flush` and :meth:`current` are called by one other thread (the
    event loop); the partial-frame tail and the table of open items belong to that thread. The
    two sides share the frame queue and the counters under one lock that is only ever held for
    a fixed amount of work (a few deque operations and integer updates; copying and slicing of
    pushed audio happens before the lock is taken), so :meth:`pop_frame` never waits long,
    never blocks on the producer's pace and never raises. :attr:`stats` and :attr:`is_idle`
    may be read from any thread.

    Frames: audio is queued in whole 20 ms frames. A push that ends in a partial frame keeps
    the remainder until the item's next audio completes it; :meth:`mark_done` pads it with
    silence and queues it. Audio for a new item while the previous one still holds a partial
    frame pads and queues that frame first, so order is preserved.

    Overflow policy: drop the newest. When a push does not fit in ``capacity_ms``, the frames
    that fit are queued, the rest are dropped and counted in ``stats.frames_dropped``, and
    every later frame of that item is dropped too, so the caller hears a clean prefix of the
    item and then its end instead of a gap in the middle of a sentence. Dropping the oldest
    instead would cut into the words the caller is hearing right now and make playback jump
    forward. Audio of later items is queued normally once there is room. The item's
    ``received_ms`` still counts the dropped audio, so while it is the last item played
    :meth:`current` and :meth:`flush` still report it (``played_ms < received_ms``) and the
    session may truncate it to what the caller heard.

    Barge-in: :meth:`flush` empties the queue at once (the next pop is silence), closes every
    open item and returns the item being played; the session sends
    ``conversation.item.truncate`` with its :attr:`PlayedState.audio_end_ms`. Audio that still
    arrives for a closed item (deltas already in flight) is discarded and counted.

    Args:
        capacity_ms: Most audio held, in milliseconds (at least one frame). The default 60 s
            absorbs a long answer streamed faster than real time.
        on_drained: Called, without the lock, each time the buffer goes from busy to idle
            (every item done or interrupted and all its frames popped): from the clock thread
            when the last frame is popped, from the producer's thread in :meth:`mark_done` or
            :meth:`flush`. It must be thread-safe and quick, e.g.
            ``lambda: loop.call_soon_threadsafe(event.set)``; exceptions are logged.

    Raises:
        ValueError: ``capacity_ms`` is shorter than one frame.
    """

    def __init__(
        self,
        capacity_ms: int = 60_000,
        *,
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        if capacity_ms < FRAME_MS:
            raise ValueError(f"capacity_ms must be at least {FRAME_MS}, got {capacity_ms}")
        self._capacity = capacity_ms * _BYTES_PER_MS // _FRAME * _FRAME
        self._on_drained = on_drained
        self._lock = threading.Lock()
        # Shared with the clock thread, guarded by _lock. Chunks are whole frames.
        self._queue: deque[tuple[_Item, bytes]] = deque()
        self._head_offset = 0
        self._queued = 0
        self._open = 0  # items with audio pushed and neither done nor interrupted
        self._playing: _Item | None = None  # item of the last popped frame
        self._in_flight: deque[_Item] = deque()  # taken, not yet confirmed played
        self._idle = True
        self._frames_played = 0
        self._silence_idle = 0
        self._silence_underrun = 0
        self._frames_dropped = 0
        self._frames_flushed = 0
        self._late_bytes = 0
        # Producer-thread state, not shared with pop_frame.
        self._items: dict[tuple[str, int], _Item] = {}
        self._closed: dict[tuple[str, int], None] = {}
        self._tail = b""
        self._tail_item: _Item | None = None

    # -- clock thread ---------------------------------------------------------------------

    def pop_frame(self) -> bytes:
        """Take the next 20 ms frame for the caller: 320 bytes of PCM16 8 kHz, always.

        Returns:
            The next queued frame, or a shared silence frame when nothing is queued.
        """
        with self._lock:
            queue = self._queue
            if not queue:
                if self._open:
                    self._silence_underrun += 1
                else:
                    self._silence_idle += 1
                return _SILENCE
            item, frame = self._take_locked()
            self._credit_locked(item)
            drained = not queue and not self._open
            if drained:
                self._idle = True
        if drained:
            self._notify_drained()
        return frame

    # -- consumer in batches (the native port's feeder, on the producer's thread) ----------

    def take_frames(self, count: int) -> list[bytes]:
        """Take up to ``count`` queued frames for a port that plays them later.

        The frames are in flight until :meth:`confirm_played`; the buffer is not idle while
        any are. Silence is never returned: the port counts its own.
        """
        frames: list[bytes] = []
        with self._lock:
            queue = self._queue
            while count > 0 and queue:
                item, frame = self._take_locked()
                self._in_flight.append(item)
                frames.append(frame)
                count -= 1
        return frames

    def confirm_played(self, count: int) -> None:
        """The port played the ``count`` oldest frames in flight: credit them to their items."""
        with self._lock:
            in_flight = self._in_flight
            for _ in range(min(count, len(in_flight))):
                self._credit_locked(in_flight.popleft())
            drained = (not self._idle and not in_flight and not self._queue
                       and not self._open)
            if drained:
                self._idle = True
        if drained:
            self._notify_drained()

    @property
    def frames_in_flight(self) -> int:
        """Frames taken by :meth:`take_frames` and not yet confirmed played."""
        with self._lock:
            return len(self._in_flight)

    @property
    def expecting_audio(self) -> bool:
        """True while an item is open or audio is queued: silence now would be an underrun."""
        with self._lock:
            return bool(self._open or self._queue)

    # -- producer thread ------------------------------------------------------------------

    def push(self, item_id: str, content_index: int, pcm16: bytes) -> None:
        """Queue agent audio of any length for the caller.

        Args:
            item_id: The assistant item the audio belongs to.
            content_index: The content part within the item.
            pcm16: PCM16 little-endian mono at 8 kHz, whole samples.

        Raises:
            ValueError: ``pcm16`` has an odd length.
        """
        size = len(pcm16)
        if size % 2:
            raise ValueError(f"PCM16 data must have an even length, got {size} bytes")
        if not size:
            return
        key = (item_id, content_index)
        if key in self._closed:
            with self._lock:
                self._late_bytes += size
            return
        item = self._items.get(key)
        new_item = item is None
        if item is None:
            item = self._items[key] = _Item(item_id, content_index)
        pieces: list[tuple[_Item, bytes]] = []
        tail = self._tail
        if tail and self._tail_item is not item:
            assert self._tail_item is not None
            pieces.append((self._tail_item, tail + bytes(_FRAME - len(tail))))
            tail = b""
        view = memoryview(pcm16)
        start = 0
        if tail:
            if len(tail) + size < _FRAME:
                self._tail = tail + view
                with self._lock:
                    item.received += size
                return
            start = _FRAME - len(tail)
            pieces.append((item, tail + view[:start]))
        end = start + (size - start) // _FRAME * _FRAME
        if end > start:
            whole = start == 0 and end == size and type(pcm16) is bytes
            pieces.append((item, pcm16 if whole else bytes(view[start:end])))
        self._tail = bytes(view[end:])
        self._tail_item = item if self._tail else None
        with self._lock:
            if new_item:
                self._open += 1
                self._idle = False
            item.received += size
            for owner, chunk in pieces:
                self._enqueue_locked(owner, chunk)

    def mark_done(self, item_id: str) -> None:
        """Declare that all audio of ``item_id`` has been pushed (``response.output_audio.done``).

        Pads and queues the item's partial last frame, and lets the buffer become idle once the
        item has been played out. Unknown, finished or interrupted items are ignored.
        """
        items = [item for key, item in self._items.items() if key[0] == item_id]
        if not items:
            return
        pieces: list[tuple[_Item, bytes]] = []
        for item in items:
            key = (item.item_id, item.content_index)
            del self._items[key]
            self._close(key)
            if self._tail_item is item:
                pieces.append((item, self._tail + bytes(_FRAME - len(self._tail))))
                self._tail = b""
                self._tail_item = None
        with self._lock:
            for item in items:
                item.done = True
                self._open -= 1
            for owner, chunk in pieces:
                self._enqueue_locked(owner, chunk)
            drained = (not self._idle and not self._queue and not self._open
                       and not self._in_flight)
            if drained:
                self._idle = True
        if drained:
            self._notify_drained()

    def flush(self) -> PlayedState | None:
        """Barge-in: drop all queued audio at once and report what the caller heard.

        The next :meth:`pop_frame` returns silence. Every open item is closed: audio still
        arriving for it is discarded. Frames still in flight count as flushed: a port that
        plays in batches must clear its own ring and :meth:`confirm_played` what it did play
        before calling this.

        Returns:
            The item being played (see :meth:`current`) with its played and received ms, or
            ``None`` when no item was in progress.
        """
        with self._lock:
            state = self._current_locked()
            self._frames_flushed += self._queued // _FRAME + len(self._in_flight)
            self._in_flight.clear()
            self._queue.clear()
            self._head_offset = 0
            self._queued = 0
            self._open = 0
            self._playing = None
            drained = not self._idle
            self._idle = True
        for key in self._items:
            self._close(key)
        self._items.clear()
        self._tail = b""
        self._tail_item = None
        if drained:
            self._notify_drained()
        return state

    def current(self) -> PlayedState | None:
        """The item being played, without changing anything.

        That is the item of the next queued frame; else the item of the last popped frame if
        it is not done (waiting for audio) or lost audio to overflow; else an open item whose
        audio has not reached a whole frame yet (played 0). ``None`` when the agent is quiet
        and everything it said was played.
        """
        with self._lock:
            return self._current_locked()

    # -- any thread -----------------------------------------------------------------------

    @property
    def is_idle(self) -> bool:
        """True when no item is in progress and nothing is queued (the agent finished)."""
        with self._lock:
            return self._idle

    @property
    def buffered_ms(self) -> int:
        """Milliseconds of audio queued and not yet popped (partial frames excluded)."""
        with self._lock:
            return self._queued // _BYTES_PER_MS

    @property
    def capacity_ms(self) -> int:
        """Most audio the buffer holds, in milliseconds (whole frames)."""
        return self._capacity // _BYTES_PER_MS

    @property
    def stats(self) -> PlayoutStats:
        """A snapshot of the counters."""
        with self._lock:
            return PlayoutStats(
                frames_played=self._frames_played,
                silence_frames_idle=self._silence_idle,
                silence_frames_underrun=self._silence_underrun,
                frames_dropped=self._frames_dropped,
                frames_flushed=self._frames_flushed,
                late_bytes_discarded=self._late_bytes,
            )

    # -- internals ------------------------------------------------------------------------

    def _take_locked(self) -> tuple[_Item, bytes]:
        """Take the head frame off the (non-empty) queue."""
        queue = self._queue
        item, chunk = queue[0]
        start = self._head_offset
        end = start + _FRAME
        if end == len(chunk):
            queue.popleft()
            self._head_offset = 0
        else:
            self._head_offset = end
        self._queued -= _FRAME
        # Chunks are immutable: a slice is a copy of one frame, the whole chunk none.
        return item, chunk if start == 0 and end == len(chunk) else chunk[start:end]

    def _credit_locked(self, item: _Item) -> None:
        """One frame of ``item`` reached the caller."""
        played = item.played + _FRAME
        # The item's last frame may be padding: never count more than was received.
        item.played = played if played < item.received else item.received
        self._playing = item
        self._frames_played += 1

    def _enqueue_locked(self, item: _Item, chunk: bytes) -> None:
        if not item.overflowed:
            room = self._capacity - self._queued
            if len(chunk) <= room:
                self._queue.append((item, chunk))
                self._queued += len(chunk)
                return
            # Rare (once per overflowing item), so the copy of the part that fits is acceptable.
            item.overflowed = True
            if room:
                self._queue.append((item, chunk[:room]))
                self._queued += room
            self._frames_dropped += (len(chunk) - room) // _FRAME
            return
        self._frames_dropped += len(chunk) // _FRAME

    def _current_locked(self) -> PlayedState | None:
        if self._in_flight:
            return self._in_flight[0].state()
        if self._queue:
            return self._queue[0][0].state()
        playing = self._playing
        if playing is not None and (not playing.done or playing.played < playing.received):
            return playing.state()
        for item in self._items.values():
            return item.state()
        return None

    def _close(self, key: tuple[str, int]) -> None:
        closed = self._closed
        closed[key] = None
        if len(closed) > _CLOSED_KEPT:
            del closed[next(iter(closed))]

    def _notify_drained(self) -> None:
        callback = self._on_drained
        if callback is None:
            return
        try:
            callback()
        except Exception:
            # Called on pjsua2's clock thread, which must never see an exception.
            _logger.exception("playout on_drained callback failed")

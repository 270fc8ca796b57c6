"""The hand-off between one call's pjsua2 media port and the asyncio side.

The pjsua2 conference clock thread calls the port 50 times a second per direction; the asyncio
loop drains caller audio and fills agent audio on its own schedule. This object is all they
share, so it is built for that: the clock side does O(1) work (a deque append, a buffer pop),
never blocks on the loop and never raises.

Overflow policy for caller audio: the receive ring keeps the newest ``rx_capacity_frames``
frames (1 s by default); when the loop falls behind, the oldest frame is dropped and counted in
``rx_dropped``. Real-time audio never waits. Agent audio overflow is the playout buffer's policy.
"""

from __future__ import annotations

from collections import deque

from gateway.media.bridge import MediaBridge
from gateway.media.playout import PlayedState, PlayoutBuffer, PlayoutStats


class MediaChannel:
    """Caller frames in (clock thread -> loop) and agent frames out (loop -> clock thread)."""

    def __init__(self, playout: PlayoutBuffer, *, rx_capacity_frames: int = 50) -> None:
        self.playout = playout
        self._rx: deque[bytes] = deque(maxlen=rx_capacity_frames)
        self.rx_frames = 0
        self.rx_dropped = 0
        self.closed = False

    # Clock-thread side -------------------------------------------------------------------

    def put_caller_frame(self, frame: bytes) -> None:
        """Store one 20 ms caller frame (PCM16 8 kHz); drops the oldest when full."""
        rx = self._rx
        if len(rx) == rx.maxlen:
            self.rx_dropped += 1
        rx.append(frame)
        self.rx_frames += 1

    def next_agent_frame(self) -> bytes:
        """The next 20 ms frame for the caller; silence when the agent is quiet."""
        return self.playout.pop_frame()

    # Loop side ---------------------------------------------------------------------------

    def tick(self) -> list[bytes]:
        """Once per pump tick: the caller frames received since the last tick, oldest first.

        A channel whose port plays from a ring of its own (the native port) also tops that
        ring up from the playout buffer here.
        """
        return self.drain_caller_frames()

    def caller_chunks(self, bridge: MediaBridge) -> list[bytes]:
        """Once per pump tick: the caller audio since the last tick as ``bridge``'s API chunks.

        A port that can encode in C does it there; this one converts the frames.
        """
        return bridge.caller_frames(self.tick())

    def feed(self) -> None:
        """Agent audio was pushed: hand it to the port now if the port has a ring of its own.

        The first frames of an answer then wait for no tick. A per-frame port pops from the
        playout buffer itself, so there is nothing to do here.
        """

    def flush_playout(self) -> PlayedState | None:
        """Barge-in: drop the agent audio not yet played; returns what the caller heard."""
        return self.playout.flush()

    def playout_stats(self) -> PlayoutStats:
        """The playout counters, including silence the port played."""
        return self.playout.stats

    def drain_caller_frames(self) -> list[bytes]:
        """All caller frames received since the last call, oldest first."""
        rx = self._rx
        out: list[bytes] = []
        while True:
            try:
                out.append(rx.popleft())
            except IndexError:
                return out

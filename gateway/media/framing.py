"""Re-chunk a byte stream of audio into fixed-size frames.

Audio reaches the bridge in chunks of whatever size the sender chose (Realtime
``response.output_audio.delta`` payloads, resampler bursts) and must leave in fixed frames (a
20 ms tick of the conference bridge, a 40 ms ``input_audio_buffer.append``). The
:class:`FrameAccumulator` keeps references to the pushed chunks instead of concatenating them,
so a frame costs at most one copy of its own bytes and a chunk that already is exactly one
aligned frame is handed on without copying. Pure; not thread-safe (one owner).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from gateway.media.formats import AudioCodec, silence_byte


class FrameAccumulator:
    """Variable-size chunks in, fixed ``frame_bytes`` frames out, in order, nothing lost.

    Args:
        frame_bytes: Size of every frame, e.g. 320 for 20 ms of PCM16 at 8 kHz.
        codec: Format of the bytes, which decides the silence used to pad the last frame
            (0x00 for PCM16 at any rate, 0xFF for μ-law, 0xD5 for A-law).

    Raises:
        ValueError: ``frame_bytes`` is not positive, or is odd for PCM16.
    """

    __slots__ = ("_chunks", "_frame_bytes", "_offset", "_pad_byte", "_pending")

    def __init__(self, frame_bytes: int, codec: AudioCodec | str = AudioCodec.PCM) -> None:
        codec = AudioCodec(codec)
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be > 0, got {frame_bytes}")
        if codec is AudioCodec.PCM and frame_bytes % 2:
            raise ValueError(f"PCM16 frames need whole samples, got {frame_bytes} bytes")
        self._frame_bytes = frame_bytes
        self._pad_byte = bytes([silence_byte(codec)])
        # Immutable chunks in arrival order; _offset bytes of the first one are already used.
        self._chunks: deque[bytes] = deque()
        self._offset = 0
        self._pending = 0

    @property
    def frame_bytes(self) -> int:
        """Size of every frame this accumulator returns."""
        return self._frame_bytes

    @property
    def pending(self) -> int:
        """Bytes pushed and not yet returned in a frame (may exceed one frame)."""
        return self._pending

    @property
    def ready(self) -> int:
        """Number of whole frames that can be taken now."""
        return self._pending // self._frame_bytes

    def push(self, data: bytes | bytearray | memoryview) -> None:
        """Append a chunk of any size (empty is ignored).

        ``bytes`` are kept by reference; mutable buffers are copied once, because the caller
        may reuse them.
        """
        if not data:
            return
        chunk = data if type(data) is bytes else bytes(data)
        self._chunks.append(chunk)
        self._pending += len(chunk)

    def pop(self) -> bytes | None:
        """Take the next whole frame, or ``None`` if fewer than ``frame_bytes`` are pending."""
        size = self._frame_bytes
        if self._pending < size:
            return None
        self._pending -= size
        chunks = self._chunks
        head = chunks[0]
        start = self._offset
        end = start + size
        if end < len(head):
            self._offset = end
            return head[start:end]
        if end == len(head):
            chunks.popleft()
            self._offset = 0
            return head if start == 0 else head[start:]
        # The frame spans chunks: gather the pieces, one copy in the join.
        pieces = [memoryview(head)[start:]]
        chunks.popleft()
        need = end - len(head)
        while need:
            nxt = chunks[0]
            if len(nxt) <= need:
                pieces.append(memoryview(nxt))
                chunks.popleft()
                need -= len(nxt)
                self._offset = 0
            else:
                pieces.append(memoryview(nxt)[:need])
                self._offset = need
                need = 0
        return b"".join(pieces)

    def __iter__(self) -> Iterator[bytes]:
        """Yield every whole frame ready now (and any completed by pushes during iteration)."""
        while (frame := self.pop()) is not None:
            yield frame

    def flush(self, pad: bool = True) -> bytes:
        """Take everything still pending as one final piece and leave the accumulator empty.

        Whole frames still pending should be taken with :meth:`pop` or iteration first; flush
        returns them joined with the tail.

        Args:
            pad: Pad the tail with the codec's silence up to a whole frame. With ``False`` the
                tail is returned as is.

        Returns:
            The pending bytes (padded if asked), or ``b""`` if nothing was pending.
        """
        if not self._pending:
            return b""
        chunks = iter(self._chunks)
        data = b"".join([memoryview(next(chunks))[self._offset :], *chunks])
        self.clear()
        short = -len(data) % self._frame_bytes
        if pad and short:
            data += self._pad_byte * short
        return data

    def clear(self) -> None:
        """Drop everything pending."""
        self._chunks.clear()
        self._offset = 0
        self._pending = 0

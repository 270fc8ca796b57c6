"""Per-call audio conversion between the SIP side (PCM16 8 kHz frames) and the Realtime session.

Two modes, chosen per agent in the dialplan:

* ``native``: the session speaks G.711 (``audio/pcmu`` or ``audio/pcma``, matching the codec
  negotiated on the call), converted by table lookup; no resampling anywhere.
* ``transcode``: the session speaks ``audio/pcm`` at 24 kHz; one stateful soxr stream per
  direction per call resamples 8 kHz <-> 24 kHz.

Caller audio is gathered into chunks of ``chunk_ms`` before it is sent (each
``input_audio_buffer.append`` costs a JSON message; 40 ms halves them versus 20 ms and keeps VAD
responsive). Pure: bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from gateway.media import g711
from gateway.media.resample import Resampler

MediaMode = Literal["native", "transcode"]
Codec = Literal["PCMU", "PCMA"]

_PCM8K_BYTES_PER_MS = 16
_FRAME_BYTES = 320


class MediaBridge:
    """Converts one call's audio in both directions and accumulates caller chunks.

    Args:
        mode: ``native`` (G.711 to the API) or ``transcode`` (PCM16 24 kHz to the API).
        codec: The codec negotiated on the SIP leg; picks μ-law or A-law in native mode.
        chunk_ms: Caller audio per ``input_audio_buffer.append`` (a multiple of 20).
    """

    def __init__(self, mode: MediaMode, codec: Codec, *, chunk_ms: int = 40) -> None:
        if chunk_ms % 20 or chunk_ms <= 0:
            raise ValueError(f"chunk_ms must be a positive multiple of 20, got {chunk_ms}")
        self.mode: MediaMode = mode
        self.codec: Codec = codec
        self._chunk_bytes = chunk_ms * _PCM8K_BYTES_PER_MS
        self._pending = bytearray()
        self._up: Resampler | None = None
        self._down: Resampler | None = None
        self._encode: Callable[[bytes], bytes]
        self._decode: Callable[[bytes], bytes]
        if mode == "transcode":
            self._up = Resampler(8000, 24000)
            self._down = Resampler(24000, 8000)
            self._encode = self._up.process
            self._decode = self._down.process
        elif codec == "PCMA":
            self._encode, self._decode = g711.alaw_encode, g711.alaw_decode
        else:
            self._encode, self._decode = g711.ulaw_encode, g711.ulaw_decode

    @property
    def native_codec(self) -> Codec | None:
        """The G.711 codec the API gets as is (native mode), ``None`` when transcoding."""
        return self.codec if self.mode == "native" else None

    @property
    def chunk_frames(self) -> int:
        """20 ms frames per caller chunk."""
        return self._chunk_bytes // _FRAME_BYTES

    @property
    def pending_bytes(self) -> int:
        """Caller PCM16 held back for the next chunk."""
        return len(self._pending)

    @property
    def api_format(self) -> dict[str, Any]:
        """The GA ``audio.input.format`` / ``audio.output.format`` object for this call."""
        if self.mode == "transcode":
            return {"type": "audio/pcm", "rate": 24000}
        return {"type": "audio/pcma" if self.codec == "PCMA" else "audio/pcmu"}

    def api_bytes_to_ms(self, nbytes: int) -> float:
        """Duration of ``nbytes`` of API audio (G.711: 8 bytes/ms; PCM16 24 kHz: 48)."""
        return nbytes / (48 if self.mode == "transcode" else 8)

    def caller_frames(self, frames: list[bytes]) -> list[bytes]:
        """Take caller PCM16 8 kHz frames; return API-format chunks ready to append."""
        if not frames:
            return []
        pending = self._pending
        for frame in frames:
            pending += frame
        out: list[bytes] = []
        size = self._chunk_bytes
        while len(pending) >= size:
            out.append(self._encode(bytes(pending[:size])))
            del pending[:size]
        return out

    def agent_audio(self, data: bytes) -> bytes:
        """Convert API audio (one ``response.output_audio.delta``) to PCM16 8 kHz."""
        return self._decode(data)

    def agent_audio_end(self) -> bytes:
        """PCM16 8 kHz still held by the resampler at the end of an agent item (transcode)."""
        return self._down.flush() if self._down is not None else b""

    def reset_agent_stream(self) -> None:
        """Forget resampler history after a barge-in, so old audio never leaks into new."""
        if self._down is not None:
            self._down.reset()

"""Audio formats of the media bridge and the frame arithmetic between them.

Two sides meet in the bridge. The telephone side is what pjsua2's conference bridge hands a
Python port: linear PCM16 little-endian, mono, 8 kHz, in 20 ms frames (160 samples, 320 bytes).
The Realtime side is one of the three GA ``audio.*.format`` types, named here by their wire
strings: ``audio/pcm`` (PCM16 LE mono at 24 kHz, the only rate the API accepts),
``audio/pcmu`` and ``audio/pcma`` (G.711 μ-law and A-law, 8 kHz, one byte per sample). Every
conversion between byte counts and milliseconds goes through this module so that a truncate
position, a pacing interval and a frame size are all computed the same way. Pure constants and
integer arithmetic; no I/O.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from gateway.media.g711 import ALAW_SILENCE, ULAW_SILENCE


class AudioCodec(StrEnum):
    """A Realtime API audio format; the value is the GA ``format.type`` string on the wire.

    ``AudioCodec("audio/pcmu")`` parses a wire value (``ValueError`` for anything else).
    """

    #: PCM16 little-endian mono at 24 kHz (``{"type": "audio/pcm", "rate": 24000}``).
    PCM = "audio/pcm"
    #: G.711 μ-law at 8 kHz (ITU-T G.711).
    PCMU = "audio/pcmu"
    #: G.711 A-law at 8 kHz (ITU-T G.711).
    PCMA = "audio/pcma"


#: Duration of one RTP packet / conference-bridge tick, the unit of everything per frame.
FRAME_MS: Final = 20

#: G.711 and the telephone side of the bridge run at 8 kHz.
TELEPHONE_RATE: Final = 8000
#: ``audio/pcm`` on the Realtime API is always 24 kHz.
REALTIME_PCM_RATE: Final = 24000
#: Bytes per PCM16 sample.
PCM16_SAMPLE_BYTES: Final = 2

#: Samples in one 20 ms frame at 8 kHz (G.711 or PCM16).
FRAME_SAMPLES_8K: Final = TELEPHONE_RATE * FRAME_MS // 1000  # 160
#: Bytes in one 20 ms G.711 frame (one byte per sample).
G711_FRAME_BYTES: Final = FRAME_SAMPLES_8K  # 160
#: Bytes in one 20 ms PCM16 8 kHz frame, the unit pjsua2's bridge reads and writes.
PCM16_8K_FRAME_BYTES: Final = FRAME_SAMPLES_8K * PCM16_SAMPLE_BYTES  # 320
#: Bytes per millisecond of PCM16 at 8 kHz.
PCM16_8K_BYTES_PER_MS: Final = TELEPHONE_RATE * PCM16_SAMPLE_BYTES // 1000  # 16

#: Samples in one 20 ms frame of ``audio/pcm`` at 24 kHz.
FRAME_SAMPLES_24K: Final = REALTIME_PCM_RATE * FRAME_MS // 1000  # 480
#: Bytes in one 20 ms frame of ``audio/pcm`` at 24 kHz.
PCM16_24K_FRAME_BYTES: Final = FRAME_SAMPLES_24K * PCM16_SAMPLE_BYTES  # 960

#: One 20 ms frame of digital silence in each format. Shared immutable objects: hand them out
#: instead of building a new frame per tick.
SILENCE_PCM16_8K_FRAME: Final = bytes(PCM16_8K_FRAME_BYTES)
SILENCE_PCM16_24K_FRAME: Final = bytes(PCM16_24K_FRAME_BYTES)
SILENCE_ULAW_FRAME: Final = bytes([ULAW_SILENCE]) * G711_FRAME_BYTES
SILENCE_ALAW_FRAME: Final = bytes([ALAW_SILENCE]) * G711_FRAME_BYTES

# Every format here has a whole number of bytes per millisecond, so all conversions are exact
# integer arithmetic: 24 kHz PCM16 = 48 B/ms, G.711 = 8 B/ms.
_BYTES_PER_MS: Final[dict[AudioCodec, int]] = {
    AudioCodec.PCM: REALTIME_PCM_RATE * PCM16_SAMPLE_BYTES // 1000,
    AudioCodec.PCMU: TELEPHONE_RATE // 1000,
    AudioCodec.PCMA: TELEPHONE_RATE // 1000,
}
_RATE: Final[dict[AudioCodec, int]] = {
    AudioCodec.PCM: REALTIME_PCM_RATE,
    AudioCodec.PCMU: TELEPHONE_RATE,
    AudioCodec.PCMA: TELEPHONE_RATE,
}
_SAMPLE_BYTES: Final[dict[AudioCodec, int]] = {
    AudioCodec.PCM: PCM16_SAMPLE_BYTES,
    AudioCodec.PCMU: 1,
    AudioCodec.PCMA: 1,
}
_SILENCE_BYTE: Final[dict[AudioCodec, int]] = {
    AudioCodec.PCM: 0x00,
    AudioCodec.PCMU: ULAW_SILENCE,
    AudioCodec.PCMA: ALAW_SILENCE,
}
_SILENCE_FRAME: Final[dict[AudioCodec, bytes]] = {
    AudioCodec.PCM: SILENCE_PCM16_24K_FRAME,
    AudioCodec.PCMU: SILENCE_ULAW_FRAME,
    AudioCodec.PCMA: SILENCE_ALAW_FRAME,
}


def sample_rate(codec: AudioCodec | str) -> int:
    """Sample rate in Hz of a Realtime audio format (24000 for ``audio/pcm``, else 8000).

    Raises:
        ValueError: ``codec`` is not one of the three Realtime format strings.
    """
    return _RATE[AudioCodec(codec)]


def sample_bytes(codec: AudioCodec | str) -> int:
    """Bytes per sample: 2 for ``audio/pcm``, 1 for G.711.

    Raises:
        ValueError: ``codec`` is not one of the three Realtime format strings.
    """
    return _SAMPLE_BYTES[AudioCodec(codec)]


def bytes_per_ms(codec: AudioCodec | str) -> int:
    """Bytes per millisecond: 48 for ``audio/pcm`` (24 kHz PCM16), 8 for G.711.

    Raises:
        ValueError: ``codec`` is not one of the three Realtime format strings.
    """
    return _BYTES_PER_MS[AudioCodec(codec)]


def ms_to_bytes(ms: int, codec: AudioCodec | str) -> int:
    """Length in bytes of ``ms`` milliseconds of audio in ``codec`` (always whole samples).

    Raises:
        ValueError: ``ms`` is negative, or ``codec`` is unknown.
    """
    if ms < 0:
        raise ValueError(f"duration must be >= 0 ms, got {ms}")
    return ms * _BYTES_PER_MS[AudioCodec(codec)]


def bytes_to_ms(nbytes: int, codec: AudioCodec | str) -> int:
    """Whole milliseconds of audio in ``nbytes`` bytes of ``codec``, rounded down.

    Rounding down keeps a ``conversation.item.truncate`` position computed from a byte count
    at or below the length of the audio the server sent, which the API requires.

    Raises:
        ValueError: ``nbytes`` is negative, or ``codec`` is unknown.
    """
    if nbytes < 0:
        raise ValueError(f"byte count must be >= 0, got {nbytes}")
    return nbytes // _BYTES_PER_MS[AudioCodec(codec)]


def frame_bytes(codec: AudioCodec | str, ms: int = FRAME_MS) -> int:
    """Bytes in one frame of ``ms`` milliseconds (default 20) of ``codec``.

    Raises:
        ValueError: ``ms`` is not positive, or ``codec`` is unknown.
    """
    if ms <= 0:
        raise ValueError(f"frame duration must be > 0 ms, got {ms}")
    return ms * _BYTES_PER_MS[AudioCodec(codec)]


def silence_byte(codec: AudioCodec | str) -> int:
    """The byte value that encodes a zero sample: 0x00 (PCM16), 0xFF (μ-law), 0xD5 (A-law).

    PCM16 silence is two zero bytes per sample, so padding PCM16 with this byte is only sample
    aligned when the padded length is even.

    Raises:
        ValueError: ``codec`` is unknown.
    """
    return _SILENCE_BYTE[AudioCodec(codec)]


def silence(codec: AudioCodec | str, ms: int = FRAME_MS) -> bytes:
    """Digital silence of ``ms`` milliseconds (default one 20 ms frame) in ``codec``.

    The default length returns a shared pre-built frame, so calling it per tick allocates
    nothing.

    Raises:
        ValueError: ``ms`` is negative, or ``codec`` is unknown.
    """
    codec = AudioCodec(codec)
    if ms == FRAME_MS:
        return _SILENCE_FRAME[codec]
    return bytes([_SILENCE_BYTE[codec]]) * ms_to_bytes(ms, codec)

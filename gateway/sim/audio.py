"""Conversion between the simulator's session audio formats and linear PCM16.

The simulator thinks in PCM16: VAD reads it and TTS writes it at 24 kHz. The session's
``audio.input.format`` and ``audio.output.format`` (``audio/pcm`` at 24 kHz, ``audio/pcmu`` and
``audio/pcma`` at 8 kHz) decide what crosses the WebSocket. Input is only decoded (G.711 to
8 kHz PCM16; PCM passes through) because VAD works at any rate; output is resampled 24 kHz to
8 kHz with soxr before G.711 encoding. Byte counts convert to milliseconds with the same
arithmetic the API uses for ``audio_end_ms`` (G.711 8 bytes per ms, PCM16 24 kHz 48 bytes per
ms). Pure and stateless: bytes in, bytes out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import soxr

from gateway.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

#: Sample rate of ``audio/pcm`` and of everything the simulator synthesises.
PCM_RATE: Final = 24000
#: Sample rate of G.711 (``audio/pcmu``, ``audio/pcma``).
G711_RATE: Final = 8000

_RATES: Final = {"audio/pcm": PCM_RATE, "audio/pcmu": G711_RATE, "audio/pcma": G711_RATE}
#: Bytes per sample on the wire: PCM16 has two, G.711 one.
_WIDTH: Final = {"audio/pcm": 2, "audio/pcmu": 1, "audio/pcma": 1}


def _kind(fmt: Mapping[str, Any]) -> str:
    kind = fmt.get("type")
    if kind not in _RATES:
        raise ValueError(f"unsupported audio format type: {kind!r}")
    return str(kind)


def format_rate(fmt: Mapping[str, Any]) -> int:
    """Sample rate of a session audio format.

    Args:
        fmt: A GA format object, e.g. ``{"type": "audio/pcmu"}``.

    Returns:
        24000 for ``audio/pcm``, 8000 for ``audio/pcmu`` and ``audio/pcma``.

    Raises:
        ValueError: Unknown format type.
    """
    return _RATES[_kind(fmt)]


def decode_input(fmt: Mapping[str, Any], data: bytes) -> bytes:
    """Decode appended input audio to PCM16 at the format's own rate (no resampling).

    Args:
        fmt: The session's ``audio.input.format``.
        data: Decoded base64 payload of ``input_audio_buffer.append``.

    Returns:
        Little-endian PCM16 mono at :func:`format_rate`.

    Raises:
        ValueError: Unknown format, or PCM16 data of odd length.
    """
    kind = _kind(fmt)
    if kind == "audio/pcmu":
        return ulaw_decode(data)
    if kind == "audio/pcma":
        return alaw_decode(data)
    if len(data) % 2:
        raise ValueError(f"audio/pcm data must have an even length, got {len(data)} bytes")
    return bytes(data)


def encode_output(fmt: Mapping[str, Any], pcm16_24k: bytes) -> bytes:
    """Encode synthesised 24 kHz PCM16 in the session's output format.

    Resampling is stateless, so encode a whole utterance at once (the G.711 result can then be
    split anywhere); encoding many short chunks separately adds small edge artefacts.

    Args:
        fmt: The session's ``audio.output.format``.
        pcm16_24k: Little-endian PCM16 mono at 24 kHz.

    Returns:
        The audio in ``fmt``: PCM16 unchanged, or 8 kHz μ-law / A-law bytes.

    Raises:
        ValueError: Unknown format, or PCM16 data of odd length.
    """
    kind = _kind(fmt)
    if len(pcm16_24k) % 2:
        raise ValueError(f"PCM16 data must have an even length, got {len(pcm16_24k)} bytes")
    if kind == "audio/pcm":
        return bytes(pcm16_24k)
    pcm8k = resample_pcm16(pcm16_24k, PCM_RATE, G711_RATE)
    return ulaw_encode(pcm8k) if kind == "audio/pcmu" else alaw_encode(pcm8k)


def resample_pcm16(pcm16: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample little-endian PCM16 mono with soxr (high quality, stateless).

    Args:
        pcm16: Little-endian PCM16 mono samples.
        in_rate: Sample rate of ``pcm16`` in Hz.
        out_rate: Wanted sample rate in Hz.

    Returns:
        Little-endian PCM16 mono at ``out_rate``; about ``len * out_rate / in_rate`` bytes.
    """
    if in_rate == out_rate or not pcm16:
        return bytes(pcm16)
    samples = np.frombuffer(pcm16, dtype="<i2")
    out = soxr.resample(samples, in_rate, out_rate, quality="HQ")
    return np.asarray(out, dtype="<i2").tobytes()


def bytes_to_ms(fmt: Mapping[str, Any], n: int) -> float:
    """Duration of ``n`` bytes of audio in ``fmt``, in milliseconds.

    Args:
        fmt: A GA format object.
        n: Number of bytes on the wire (after base64 decoding).

    Returns:
        ``n / 8`` for G.711, ``n / 48`` for 24 kHz PCM16.
    """
    kind = _kind(fmt)
    return n / (_RATES[kind] * _WIDTH[kind] / 1000)


def ms_to_bytes(fmt: Mapping[str, Any], ms: float) -> int:
    """Number of bytes holding ``ms`` milliseconds of ``fmt`` audio, whole samples only.

    Args:
        fmt: A GA format object.
        ms: A duration in milliseconds (e.g. a truncate ``audio_end_ms``).

    Returns:
        The byte count, rounded down to a whole sample.
    """
    kind = _kind(fmt)
    samples = int(ms * _RATES[kind] / 1000 + 1e-9)  # absorb float error
    return samples * _WIDTH[kind]

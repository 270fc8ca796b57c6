"""G.711 μ-law and A-law (ITU-T G.711) by numpy table lookup.

PJSIP hands us linear PCM16 at 8 kHz; the Realtime API speaks ``audio/pcmu`` and
``audio/pcma``. Converting is one table lookup per sample: a 256-entry decode table and a
65,536-entry encode table indexed by the 16-bit sample's bit pattern, built once at import with
the reference segment algorithm (the one in ITU-T G.711 Appendix / the classic g711.c). Pure:
bytes in, bytes out; no state, no I/O. ``audioop`` is not used (removed in Python 3.13).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: One 20 ms frame at 8 kHz: 160 samples, 160 bytes of G.711 or 320 bytes of PCM16.
SAMPLES_PER_FRAME = 160

#: μ-law code of a zero sample; a frame of these is digital silence.
ULAW_SILENCE = 0xFF
#: A-law code of the smallest positive sample (+8); the conventional A-law silence.
ALAW_SILENCE = 0xD5

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = code & 0x80
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(sign != 0, -magnitude, magnitude).astype("<i2")


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP) + _ULAW_BIAS
    # Segment (exponent) = position of the highest set bit above bit 7, 0..7.
    exponent = np.floor(np.log2(magnitude >> 7 | 1)).astype(np.int32)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    code: npt.NDArray[np.uint8] = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return code


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (code & 0x70) >> 4
    t = (code & 0x0F) << 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(code & 0x80, t, -t).astype("<i2")


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.int32).astype(np.uint16).view(np.int16).astype(np.int32)
    val = pcm >> 3
    mask = np.where(val >= 0, 0xD5, 0x55)
    val = np.where(val >= 0, val, -val - 1)
    seg_ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(seg_ends, val)  # first segment whose end >= val; 8 = overflow
    shift = np.where(seg < 2, 1, seg)
    aval = (np.minimum(seg, 7) << 4) | ((val >> shift) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


ULAW_TO_PCM16 = _build_ulaw_decode()
PCM16_TO_ULAW = _build_ulaw_encode()
ALAW_TO_PCM16 = _build_alaw_decode()
PCM16_TO_ALAW = _build_alaw_encode()


def _pcm_index(pcm16: bytes) -> npt.NDArray[np.uint16]:
    if len(pcm16) % 2:
        raise ValueError(f"PCM16 data must have an even length, got {len(pcm16)} bytes")
    return np.frombuffer(pcm16, dtype="<u2")


def ulaw_encode(pcm16: bytes) -> bytes:
    """Encode little-endian PCM16 samples to μ-law, one byte per sample."""
    return PCM16_TO_ULAW[_pcm_index(pcm16)].tobytes()


def ulaw_decode(ulaw: bytes) -> bytes:
    """Decode μ-law bytes to little-endian PCM16."""
    return ULAW_TO_PCM16[np.frombuffer(ulaw, dtype=np.uint8)].tobytes()  # table is "<i2"


def alaw_encode(pcm16: bytes) -> bytes:
    """Encode little-endian PCM16 samples to A-law, one byte per sample."""
    return PCM16_TO_ALAW[_pcm_index(pcm16)].tobytes()


def alaw_decode(alaw: bytes) -> bytes:
    """Decode A-law bytes to little-endian PCM16."""
    return ALAW_TO_PCM16[np.frombuffer(alaw, dtype=np.uint8)].tobytes()  # table is "<i2"

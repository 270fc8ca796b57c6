"""Two mono PCM16 tracks into one interleaved stereo track: caller left, agent right.

A call recording is taken as two mono tracks clocked by the same conference bridge (one fed by
the caller's port, one by the port that plays the agent), so sample *n* of one is sample *n*
of the other. They can still differ in length by a frame or two (the recorders attach and
detach one after the other); the shorter one is padded with silence at its end so nothing of
either side is lost. Samples are signed 16-bit little-endian, as WAV stores them. Pure: no
I/O.
"""

from __future__ import annotations

import sys
from array import array
from typing import Final

#: Bytes per sample of one channel (PCM16).
SAMPLE_WIDTH: Final = 2


def _samples(pcm: bytes) -> array[int]:
    data = array("h")
    data.frombytes(pcm[:len(pcm) - len(pcm) % SAMPLE_WIDTH])  # a torn last sample is dropped
    if sys.byteorder == "big":
        data.byteswap()
    return data


def interleave(left: bytes, right: bytes) -> bytes:
    """Stereo PCM16 (``L R L R ...``) of two mono PCM16 tracks, the shorter padded with zeros.

    Args:
        left: The caller's samples.
        right: The agent's samples.
    """
    a, b = _samples(left), _samples(right)
    n = max(len(a), len(b))
    a.extend([0] * (n - len(a)))
    b.extend([0] * (n - len(b)))
    out = array("h", bytes(2 * n * SAMPLE_WIDTH))
    out[0::2] = a
    out[1::2] = b
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def split(stereo: bytes) -> tuple[bytes, bytes]:
    """The left and right mono PCM16 tracks of interleaved stereo PCM16 (for checks)."""
    data = _samples(stereo[:len(stereo) - len(stereo) % (2 * SAMPLE_WIDTH)])
    left, right = data[0::2], data[1::2]
    if sys.byteorder == "big":
        left.byteswap()
        right.byteswap()
    return left.tobytes(), right.tobytes()

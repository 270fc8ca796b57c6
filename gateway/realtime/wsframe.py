"""Masked WebSocket text frames from a client (RFC 6455 §5.2, §5.3), without I/O.

Caller audio is one small text message per ``input_audio_buffer.append``, 25 a second per
call. Framing one through ``websockets`` builds a frame object and a buffer and makes a
``getrandom()`` system call for its 4-byte masking key. :class:`TextFrames` builds the same
bytes with one ``os.urandom`` call per 1,024 keys: 24-25 instead of 27-29 µs of CPU per
message, the send system call included (docs/benchmarks.md, fourth pass). The keys stay
what §5.3 asks, unpredictable to the server: they come from the operating system's CSPRNG,
only fetched in bulk, and each is used once.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Final

__all__ = ["MASK_POOL_BYTES", "TextFrames", "mask"]

#: Entropy fetched at once: 1,024 masking keys.
MASK_POOL_BYTES: Final = 4096

_FIN_TEXT: Final = 0x81  # FIN, opcode 1 (text); RSV bits 0: no extension
_MASKED: Final = 0x80


def mask(data: bytes, key: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``key`` (§5.3; the same operation unmasks)."""
    n = len(data)
    if n == 0:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little")


class TextFrames:
    """Builds single-frame (FIN) masked text messages, as a client sends them."""

    def __init__(self, entropy: Callable[[int], bytes] = os.urandom) -> None:
        self._entropy = entropy
        self._pool = b""
        self._at = 0

    def frame(self, payload: bytes) -> bytes:
        """The frame carrying ``payload`` (UTF-8 text, not checked) as one whole message."""
        n = len(payload)
        if n < 126:
            head = bytes((_FIN_TEXT, _MASKED | n))
        elif n < 65536:
            head = struct.pack("!BBH", _FIN_TEXT, _MASKED | 126, n)
        else:
            head = struct.pack("!BBQ", _FIN_TEXT, _MASKED | 127, n)
        key = self._key()
        return head + key + mask(payload, key)

    def _key(self) -> bytes:
        at = self._at
        if at + 4 > len(self._pool):
            self._pool = self._entropy(MASK_POOL_BYTES)
            if len(self._pool) < 4:
                raise ValueError("the entropy source returned fewer than 4 bytes")
            at = 0
        self._at = at + 4
        return self._pool[at:at + 4]

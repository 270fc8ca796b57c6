"""Length-prefixed JSON frames for local process channels, sans I/O.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of UTF-8 JSON
holding one object. Both the control/worker channel (:mod:`gateway.ipc.channel`) and the tool
worker protocol (:mod:`gateway.agents.worker`) use it. The size limit is checked as soon as a
header is complete, before any of the body is buffered, so a peer cannot make the reader hold
more than one frame's worth of memory. JSON is the standard library's (which also reads and
writes ``NaN``, as the tool worker protocol always has); the control/worker messages refuse
non-finite numbers in their own field checks. :class:`FrameDecoder` turns received bytes into
messages incrementally and does no I/O. Standard library only: the tool worker imports this
from a bare ``python -c``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from typing import Any, Final

from gateway.errors import GatewayError

__all__ = [
    "HEADER",
    "MAX_FRAME_BYTES",
    "FrameDecoder",
    "FrameError",
    "decode_body",
    "encode_frame",
    "frame_size",
]

#: Frame header: the JSON body's length in bytes, network byte order.
HEADER: Final = struct.Struct("!I")
#: Default largest body either side accepts (1 MiB); a bigger one is refused.
MAX_FRAME_BYTES: Final = 1024 * 1024


class FrameError(GatewayError):
    """A frame that is too large, truncated, or not a UTF-8 JSON object.

    The message names the problem and sizes, never the content.

    Attributes:
        reason: What was wrong, e.g. ``frame of 2000000 bytes exceeds the 1048576-byte limit``.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def encode_frame(message: Mapping[str, Any], *, max_size: int = MAX_FRAME_BYTES) -> bytes:
    """One frame carrying ``message``.

    Args:
        message: A JSON object (str keys; JSON values only).
        max_size: Largest body allowed.

    Raises:
        FrameError: The encoded body exceeds ``max_size``, or ``message`` holds a value JSON
            cannot represent (an arbitrary object, a circular reference).
    """
    try:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise FrameError(f"message is not JSON-serialisable: {exc}") from None
    body = text.encode()
    if len(body) > max_size:
        raise FrameError(f"message of {len(body)} bytes exceeds the {max_size}-byte limit")
    return HEADER.pack(len(body)) + body


def frame_size(header: bytes, *, max_size: int = MAX_FRAME_BYTES) -> int:
    """The body size announced by a frame header, checked before the body is read.

    Args:
        header: Exactly :data:`HEADER` ``.size`` bytes.
        max_size: Largest body allowed.

    Raises:
        FrameError: The announced size exceeds ``max_size``.
    """
    (size,) = HEADER.unpack(header)
    if size > max_size:
        raise FrameError(f"frame of {size} bytes exceeds the {max_size}-byte limit")
    return int(size)


def decode_body(body: bytes) -> dict[str, Any]:
    """The JSON object in a frame body.

    Raises:
        FrameError: Not UTF-8, not JSON, or not an object.
    """
    try:
        value = json.loads(body.decode())
    except UnicodeDecodeError as exc:
        raise FrameError(f"frame is not UTF-8 (bad byte at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise FrameError(f"frame is not valid JSON at offset {exc.pos}") from None
    except RecursionError:
        raise FrameError("frame nests too deeply") from None
    if not isinstance(value, dict):
        raise FrameError(f"frame is a JSON {_json_kind(value)}, not an object")
    return value


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


class FrameDecoder:
    """Turns a byte stream into messages; feed it whatever the socket returned.

    An oversized header is fatal: the stream cannot be resynchronised, so every later call
    raises the same :class:`FrameError`. A body that is not a JSON object raises once and is
    skipped (its length was known); what the caller does then is its policy.

    Args:
        max_size: Largest body accepted.
    """

    def __init__(self, max_size: int = MAX_FRAME_BYTES) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._buffer = bytearray()
        self._start = 0  # offset of the first unconsumed byte in _buffer
        self._body_size: int | None = None  # set once the current frame's header is consumed
        self._fatal: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a message (headers included)."""
        pending = len(self._buffer) - self._start
        return pending + (HEADER.size if self._body_size is not None else 0)

    def feed(self, data: bytes) -> None:
        """Add received bytes.

        Raises:
            FrameError: An earlier oversized header made the stream unusable.
        """
        if self._fatal is not None:
            raise self._fatal
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def next_message(self) -> dict[str, Any] | None:
        """The next complete message, or ``None`` until more bytes arrive.

        Raises:
            FrameError: The next frame is oversized (fatal) or its body is not a JSON object
                (that frame is skipped).
        """
        if self._fatal is not None:
            raise self._fatal
        available = len(self._buffer) - self._start
        if self._body_size is None:
            if available < HEADER.size:
                return None
            header = bytes(self._buffer[self._start : self._start + HEADER.size])
            try:
                self._body_size = frame_size(header, max_size=self.max_size)
            except FrameError as exc:
                self._fatal = exc
                raise
            self._start += HEADER.size
            available -= HEADER.size
        if available < self._body_size:
            return None
        end = self._start + self._body_size
        body = bytes(self._buffer[self._start : end])
        self._start = end
        self._body_size = None
        return decode_body(body)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every complete message buffered now (stops at the first that is incomplete)."""
        while (message := self.next_message()) is not None:
            yield message

    def feed_eof(self) -> None:
        """The stream ended; check that it ended between frames.

        Raises:
            FrameError: Part of a frame was left over.
        """
        if self._fatal is not None:
            raise self._fatal
        pending = len(self._buffer) - self._start
        if self._body_size is not None:
            raise FrameError(
                f"stream ended inside a frame ({pending} of {self._body_size} body bytes)"
            )
        if pending:
            raise FrameError(f"stream ended inside a frame header ({pending} of {HEADER.size})")

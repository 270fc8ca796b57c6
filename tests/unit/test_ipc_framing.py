"""Length-prefixed JSON frames: layout, the incremental decoder, limits and bad input."""

from __future__ import annotations

import json
import struct

import pytest

from gateway.agents import worker
from gateway.errors import GatewayError
from gateway.ipc.framing import (
    HEADER,
    MAX_FRAME_BYTES,
    FrameDecoder,
    FrameError,
    decode_body,
    encode_frame,
    frame_size,
)

pytestmark = pytest.mark.unit


def _frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


def test_layout_is_big_endian_length_and_compact_utf8_json() -> None:
    frame = encode_frame({"type": "say", "text": "grüß dich"})
    body = '{"type":"say","text":"grüß dich"}'.encode()
    assert frame == len(body).to_bytes(4, "big") + body
    assert HEADER.size == 4
    assert MAX_FRAME_BYTES == 1024 * 1024


def test_decoder_returns_messages_however_the_bytes_are_split() -> None:
    messages = [{"n": i, "text": "é" * i} for i in range(5)]
    stream = b"".join(encode_frame(m) for m in messages)
    whole = FrameDecoder()
    whole.feed(stream)
    assert list(whole) == messages
    bytewise = FrameDecoder()
    received: list[dict[str, object]] = []
    for i in range(len(stream)):
        bytewise.feed(stream[i : i + 1])
        received.extend(bytewise)
    assert received == messages
    assert bytewise.buffered == 0
    bytewise.feed_eof()  # ended between frames: fine


def test_partial_frame_waits_and_counts_buffered_bytes() -> None:
    frame = encode_frame({"a": 1})
    decoder = FrameDecoder()
    decoder.feed(frame[:2])
    assert decoder.next_message() is None
    assert decoder.buffered == 2
    decoder.feed(frame[2:-1])
    assert decoder.next_message() is None
    assert decoder.buffered == len(frame) - 1
    decoder.feed(frame[-1:])
    assert decoder.next_message() == {"a": 1}
    assert decoder.next_message() is None


def test_oversized_header_is_refused_before_the_body_arrives() -> None:
    decoder = FrameDecoder(max_size=100)
    decoder.feed(struct.pack("!I", 101))  # the header alone
    with pytest.raises(FrameError) as info:
        decoder.next_message()
    assert str(info.value) == "frame of 101 bytes exceeds the 100-byte limit"
    assert info.value.reason == str(info.value)
    # The stream cannot be resynchronised: every later call says the same.
    with pytest.raises(FrameError, match="exceeds the 100-byte limit"):
        decoder.feed(b"x" * 101)
    with pytest.raises(FrameError, match="exceeds the 100-byte limit"):
        decoder.next_message()
    with pytest.raises(FrameError, match="exceeds the 100-byte limit"):
        decoder.feed_eof()


def test_default_limit_is_one_mebibyte() -> None:
    decoder = FrameDecoder()
    decoder.feed(struct.pack("!I", MAX_FRAME_BYTES + 1))
    with pytest.raises(FrameError, match="frame of 1048577 bytes exceeds the 1048576-byte limit"):
        decoder.next_message()
    exact = FrameDecoder()
    body = json.dumps({"pad": "x" * (MAX_FRAME_BYTES - 11)}).encode()
    assert len(body) == MAX_FRAME_BYTES
    exact.feed(_frame(body))
    assert exact.next_message() is not None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "frame is not valid JSON at offset 0"),
        (b"{oops", "frame is not valid JSON at offset 1"),
        (b"\xff\xfe{}", "frame is not UTF-8 (bad byte at offset 0)"),
        (b"[1, 2]", "frame is a JSON array, not an object"),
        (b'"hello"', "frame is a JSON string, not an object"),
        (b"null", "frame is a JSON null, not an object"),
        (b"true", "frame is a JSON boolean, not an object"),
        (b"42", "frame is a JSON number, not an object"),
        (b"[" * 100_000, "frame nests too deeply"),
    ],
)
def test_bad_bodies(body: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_body(body)
    assert str(info.value) == reason


def test_decoder_skips_a_bad_body_and_goes_on() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame({"n": 1}) + _frame(b"[]") + encode_frame({"n": 2}))
    assert decoder.next_message() == {"n": 1}
    with pytest.raises(FrameError, match="JSON array"):
        decoder.next_message()
    assert decoder.next_message() == {"n": 2}


def test_stream_ending_inside_a_frame() -> None:
    frame = encode_frame({"n": 1})
    decoder = FrameDecoder()
    decoder.feed(frame[:3])
    with pytest.raises(FrameError) as info:
        decoder.feed_eof()
    assert str(info.value) == "stream ended inside a frame header (3 of 4)"
    decoder.feed(frame[3:6])
    assert decoder.next_message() is None
    with pytest.raises(FrameError) as info:
        decoder.feed_eof()
    assert str(info.value) == f"stream ended inside a frame (2 of {len(frame) - 4} body bytes)"


def test_encode_refuses_too_large_and_non_json() -> None:
    with pytest.raises(FrameError) as info:
        encode_frame({"pad": "x" * 100}, max_size=50)
    assert str(info.value) == "message of 110 bytes exceeds the 50-byte limit"
    with pytest.raises(FrameError, match="not JSON-serialisable"):
        encode_frame({"when": object()})
    circular: dict[str, object] = {}
    circular["self"] = circular
    with pytest.raises(FrameError, match="not JSON-serialisable"):
        encode_frame(circular)


def test_nan_passes_the_framing_as_the_tool_worker_protocol_always_allowed() -> None:
    # The control/worker messages refuse non-finite numbers in their field checks instead.
    decoder = FrameDecoder()
    decoder.feed(encode_frame({"x": float("inf")}))
    assert decoder.next_message() == {"x": float("inf")}


def test_frame_size() -> None:
    assert frame_size(struct.pack("!I", 10)) == 10
    with pytest.raises(FrameError, match="frame of 11 bytes exceeds the 10-byte limit"):
        frame_size(struct.pack("!I", 11), max_size=10)


def test_errors_belong_to_the_gateway_hierarchy() -> None:
    assert issubclass(FrameError, GatewayError)
    with pytest.raises(ValueError, match="max_size"):
        FrameDecoder(max_size=0)


def test_tool_worker_protocol_uses_this_framing_with_its_own_limit() -> None:
    assert worker.HEADER is HEADER
    assert worker.ProtocolError is FrameError
    assert worker.decode_body is decode_body
    big = {"output": "x" * (2 * MAX_FRAME_BYTES)}
    frame = worker.encode_frame(big)  # the tool worker keeps its 8 MiB limit
    decoder = FrameDecoder(max_size=worker.MAX_FRAME_BYTES)
    decoder.feed(frame)
    assert decoder.next_message() == big
    with pytest.raises(worker.ProtocolError, match="exceeds the 1048576-byte limit"):
        encode_frame(big)
    with pytest.raises(worker.ProtocolError, match="exceeds the 8388608-byte limit"):
        worker.encode_frame({"output": "x" * worker.MAX_FRAME_BYTES})

"""Masked client text frames, parsed back by the websockets library's own server side."""

from __future__ import annotations

import itertools
from collections.abc import Generator

import pytest
from websockets.frames import OP_TEXT, Frame
from websockets.streams import StreamReader

from gateway.realtime.wsframe import MASK_POOL_BYTES, TextFrames, mask

pytestmark = pytest.mark.unit


def parse_as_server(data: bytes) -> Frame:
    """One frame read the way a websockets server reads a client's (mask required)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser: Generator[None, None, Frame] = Frame.parse(
        reader.read_exact, mask=True, max_size=None, extensions=[])
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        assert not reader.buffer  # nothing left over: exactly one frame
        return frame
    raise AssertionError("the frame was incomplete")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 428, 65535, 65536, 70001])
def test_a_frame_of_every_length_class_parses_back_to_its_payload(size: int) -> None:
    payload = bytes(97 + i % 26 for i in range(size))
    data = TextFrames().frame(payload)
    frame = parse_as_server(data)
    assert frame.opcode is OP_TEXT and frame.fin
    assert not (frame.rsv1 or frame.rsv2 or frame.rsv3)
    assert frame.data == payload
    header = 2 + (0 if size < 126 else 2 if size < 65536 else 8)
    assert len(data) == header + 4 + size


def test_the_payload_on_the_wire_is_masked_with_the_frame_key() -> None:
    payload = b'{"type":"input_audio_buffer.append","audio":"AAAA"}'
    data = TextFrames(lambda n: bytes([0x5A, 0x01, 0xFF, 0x80]) * (n // 4)).frame(payload)
    assert data[:2] == bytes([0x81, 0x80 | len(payload)])
    assert data[2:6] == bytes([0x5A, 0x01, 0xFF, 0x80])
    assert data[6:] != payload
    assert mask(data[6:], data[2:6]) == payload


def test_mask_matches_the_rfc_definition_bytewise() -> None:
    key = b"\x01\x80\xfe\x37"
    data = bytes(range(256)) * 2 + b"xyz"
    assert mask(data, key) == bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert mask(b"", key) == b""


def test_keys_are_used_once_and_entropy_is_fetched_in_bulk() -> None:
    calls: list[int] = []
    counter = itertools.count()

    def entropy(n: int) -> bytes:
        calls.append(n)
        return b"".join(next(counter).to_bytes(4, "big") for _ in range(n // 4))

    frames = TextFrames(entropy)
    per_pool = MASK_POOL_BYTES // 4
    keys = [frames.frame(b"x")[2:6] for _ in range(per_pool + 1)]
    assert len(set(keys)) == per_pool + 1  # no key repeats, also across the refill
    assert calls == [MASK_POOL_BYTES, MASK_POOL_BYTES]


def test_a_short_entropy_source_is_refused() -> None:
    with pytest.raises(ValueError, match="fewer than 4 bytes"):
        TextFrames(lambda n: b"\x00").frame(b"x")


def test_the_default_keys_differ_between_frames() -> None:
    frames = TextFrames()
    keys = {frames.frame(b"same")[2:6] for _ in range(64)}
    assert len(keys) > 60  # os.urandom: even one repeat among 64 keys is ~1 in 2 million

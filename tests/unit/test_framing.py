"""gateway.media.framing: variable chunks in, fixed frames out, nothing lost or reordered."""

from __future__ import annotations

import random

import pytest

from gateway.media import formats
from gateway.media.formats import PCM16_8K_FRAME_BYTES, AudioCodec
from gateway.media.framing import FrameAccumulator

pytestmark = pytest.mark.unit


def pattern(n: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.randrange(1, 256) for _ in range(n))


def test_random_chunks_come_out_as_exact_frames_in_order() -> None:
    data = pattern(50_000)
    acc = FrameAccumulator(PCM16_8K_FRAME_BYTES)
    rng = random.Random(2)
    frames: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 7, 100, 319, 320, 321, 640, 999, 4000])
        acc.push(data[pos : pos + size])
        pos += size
        assert acc.ready == acc.pending // 320
        frames.extend(acc)
        assert acc.pending < 320
    assert all(len(f) == 320 for f in frames)
    tail = acc.flush(pad=False)
    assert b"".join(frames) + tail == data
    assert len(tail) == len(data) % 320
    assert acc.pending == 0


def test_pending_and_ready_counts() -> None:
    acc = FrameAccumulator(160, AudioCodec.PCMU)
    assert (acc.pending, acc.ready, acc.frame_bytes) == (0, 0, 160)
    acc.push(b"\x01" * 100)
    assert acc.pop() is None
    acc.push(b"\x02" * 250)
    assert (acc.pending, acc.ready) == (350, 2)
    assert acc.pop() == b"\x01" * 100 + b"\x02" * 60
    assert acc.pop() == b"\x02" * 160
    assert acc.pop() is None
    assert acc.pending == 30


def test_aligned_chunk_is_handed_on_without_copy() -> None:
    acc = FrameAccumulator(320)
    frame = pattern(320)
    acc.push(frame)
    assert acc.pop() is frame


def test_mutable_input_is_copied_on_push() -> None:
    acc = FrameAccumulator(4)
    buf = bytearray(b"abcd")
    acc.push(buf)
    buf[:] = b"zzzz"
    acc.push(memoryview(b"efgh"))
    assert list(acc) == [b"abcd", b"efgh"]


def test_iteration_sees_pushes_made_while_iterating() -> None:
    acc = FrameAccumulator(2)
    acc.push(b"ab")
    out = []
    for frame in acc:
        out.append(frame)
        if len(out) == 1:
            acc.push(b"cd")
    assert out == [b"ab", b"cd"]


@pytest.mark.parametrize(
    ("codec", "pad"),
    [(AudioCodec.PCM, 0x00), (AudioCodec.PCMU, 0xFF), (AudioCodec.PCMA, 0xD5)],
)
def test_flush_pads_with_the_codecs_silence(codec: AudioCodec, pad: int) -> None:
    acc = FrameAccumulator(160, codec)
    acc.push(b"\x11" * 100)
    acc.push(b"\x22" * 10)
    tail = acc.flush()
    assert tail == b"\x11" * 100 + b"\x22" * 10 + bytes([pad]) * 50
    assert acc.pending == 0
    assert acc.flush() == b""


def test_flush_returns_whole_frames_joined_with_the_tail() -> None:
    acc = FrameAccumulator(4, "audio/pcmu")
    acc.push(b"abcdefghij")
    assert acc.pop() == b"abcd"
    assert acc.flush() == b"efghij\xff\xff"


def test_flush_of_aligned_data_adds_no_padding() -> None:
    acc = FrameAccumulator(4)
    acc.push(b"ab")
    acc.push(b"cd")
    assert acc.flush() == b"abcd"


def test_clear_drops_everything() -> None:
    acc = FrameAccumulator(4)
    acc.push(b"abcdef")
    acc.pop()
    acc.clear()
    assert acc.pending == 0
    acc.push(b"wxyz")
    assert acc.pop() == b"wxyz"


def test_empty_push_is_ignored() -> None:
    acc = FrameAccumulator(4)
    acc.push(b"")
    assert acc.pending == 0
    assert list(acc) == []


@pytest.mark.parametrize("size", [0, -320])
def test_frame_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="frame_bytes"):
        FrameAccumulator(size)


def test_pcm16_frames_must_hold_whole_samples() -> None:
    with pytest.raises(ValueError, match="whole samples"):
        FrameAccumulator(321, AudioCodec.PCM)
    FrameAccumulator(161, AudioCodec.PCMU)  # one byte per sample: any size works


def test_unknown_codec_is_rejected() -> None:
    with pytest.raises(ValueError):
        FrameAccumulator(160, "audio/opus")


# -- frame arithmetic (gateway.media.formats) ------------------------------------------------


def test_frame_constants_match_the_formats() -> None:
    assert (formats.FRAME_SAMPLES_8K, formats.PCM16_8K_FRAME_BYTES) == (160, 320)
    assert (formats.FRAME_SAMPLES_24K, formats.PCM16_24K_FRAME_BYTES) == (480, 960)
    assert formats.G711_FRAME_BYTES == 160
    assert formats.SILENCE_PCM16_8K_FRAME == bytes(320)
    assert formats.SILENCE_PCM16_24K_FRAME == bytes(960)
    assert formats.SILENCE_ULAW_FRAME == b"\xff" * 160
    assert formats.SILENCE_ALAW_FRAME == b"\xd5" * 160


@pytest.mark.parametrize(
    ("codec", "rate", "width", "per_ms", "frame", "pad"),
    [
        ("audio/pcm", 24000, 2, 48, 960, 0x00),
        ("audio/pcmu", 8000, 1, 8, 160, 0xFF),
        ("audio/pcma", 8000, 1, 8, 160, 0xD5),
    ],
)
def test_ms_bytes_conversions_per_realtime_format(
    codec: str, rate: int, width: int, per_ms: int, frame: int, pad: int
) -> None:
    assert formats.sample_rate(codec) == rate
    assert formats.sample_bytes(codec) == width
    assert formats.bytes_per_ms(codec) == per_ms
    assert formats.frame_bytes(codec) == frame
    assert formats.frame_bytes(codec, 40) == 2 * frame
    assert formats.ms_to_bytes(1000, codec) == rate * width
    assert formats.bytes_to_ms(rate * width, codec) == 1000
    assert formats.bytes_to_ms(frame - 1, codec) == 19  # rounds down, never past the audio
    for ms in (0, 1, 20, 333, 60_000):
        assert formats.bytes_to_ms(formats.ms_to_bytes(ms, codec), codec) == ms
    assert formats.silence_byte(codec) == pad
    assert formats.silence(codec) == bytes([pad]) * frame
    assert formats.silence(codec) is formats.silence(codec)  # pre-built, no allocation
    assert formats.silence(codec, 30) == bytes([pad]) * (30 * per_ms)
    assert formats.AudioCodec(codec).value == codec


def test_format_arithmetic_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        formats.ms_to_bytes(20, "pcm16")  # beta name: not a GA format type
    with pytest.raises(ValueError):
        formats.ms_to_bytes(-1, AudioCodec.PCMU)
    with pytest.raises(ValueError):
        formats.bytes_to_ms(-1, AudioCodec.PCMU)
    with pytest.raises(ValueError):
        formats.frame_bytes(AudioCodec.PCM, 0)

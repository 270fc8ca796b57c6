"""gateway.media.g711 against ITU-T G.711 reference values and quantiser properties."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from gateway.media import g711
from gateway.media.formats import (
    PCM16_8K_FRAME_BYTES,
    SILENCE_ALAW_FRAME,
    SILENCE_PCM16_8K_FRAME,
    SILENCE_ULAW_FRAME,
)

pytestmark = pytest.mark.unit

# Decoded values are on the 16-bit scale of the codec's output: the standard's μ-law table
# (±8159) times 4 and its A-law table (±4096) times 8.
#
# μ-law, G.711 Table 2a. The transmitted byte is the complement of sign|segment|step. Segment
# s (0-7) of the magnitude spans [2^(s+5) - 33, 2^(s+6) - 33) on the ±8159 scale in 16 steps
# of 2^(s+1), and the decoder outputs the middle of the step: (2q + 33) * 2^s - 33 for step q.
#   0xB7: ~0xB7 = 0x48 = positive, s=4, q=8 -> (16 + 33) * 16 - 33 = 751 -> x4 = 3004.
#   0x37: ~0x37 = 0xC8 = negative, s=4, q=8 -> -3004.
#   0xDA: ~0xDA = 0x25 = positive, s=2, q=5 -> (10 + 33) * 4 - 33 = 139 -> x4 = 556.
#   0x5A: ~0x5A = 0xA5 = negative, s=2, q=5 -> -556.
ULAW_REFERENCE: dict[int, int] = {
    0xFF: 0,
    0x7F: 0,  # "negative zero"
    0x00: -32124,
    0x80: 32124,
    0xB7: 3004,
    0x37: -3004,
    0xDA: 556,
    0x5A: -556,
}

# A-law, G.711 Table 1a. The transmitted byte is sign|segment|step XOR 0x55, sign bit 1 for
# positive. Segments 0 and 1 span [0, 32) and [32, 64) on the ±4096 scale in steps of 2;
# segment s >= 1 spans [2^(s+4), 2^(s+5)) in 16 steps of 2^s. The decoder outputs the middle
# of the step: 2q + 1 in segment 0, (2q + 33) * 2^(s-1) in segment s >= 1.
#   0x8F: 0x8F ^ 0x55 = 0xDA = positive, s=5, q=10 -> (20 + 33) * 16 = 848 -> x8 = 6784.
#   0x0F: 0x0F ^ 0x55 = 0x5A = negative, s=5, q=10 -> -6784.
#   0xD2: 0xD2 ^ 0x55 = 0x87 = positive, s=0, q=7 -> 2 * 7 + 1 = 15 -> x8 = 120.
ALAW_REFERENCE: dict[int, int] = {
    0xD5: 8,
    0x55: -8,
    0xAA: 32256,
    0x2A: -32256,
    0x8F: 6784,
    0x0F: -6784,
    0xD2: 120,
}

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32)


def _pcm(samples: npt.NDArray[np.int32] | list[int]) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def _samples(pcm16: bytes) -> npt.NDArray[np.int32]:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.int32)


@pytest.mark.parametrize(("code", "value"), sorted(ULAW_REFERENCE.items()))
def test_ulaw_decode_matches_g711_table(code: int, value: int) -> None:
    assert _samples(g711.ulaw_decode(bytes([code]))).tolist() == [value]


@pytest.mark.parametrize(("code", "value"), sorted(ALAW_REFERENCE.items()))
def test_alaw_decode_matches_g711_table(code: int, value: int) -> None:
    assert _samples(g711.alaw_decode(bytes([code]))).tolist() == [value]


def test_decoded_bytes_are_little_endian_straight_from_the_tables() -> None:
    # decode returns the table lookup's bytes as they are (no per-call astype copy), so the
    # tables themselves must hold little-endian samples on any host.
    assert g711.ULAW_TO_PCM16.dtype == np.dtype("<i2")
    assert g711.ALAW_TO_PCM16.dtype == np.dtype("<i2")
    assert g711.ulaw_decode(bytes([0x80])) == (32124).to_bytes(2, "little", signed=True)
    assert g711.alaw_decode(bytes([0xAA])) == (32256).to_bytes(2, "little", signed=True)


def test_ulaw_decode_encode_is_identity_except_negative_zero() -> None:
    codes = bytes(range(256))
    back = g711.ulaw_encode(g711.ulaw_decode(codes))
    expected = bytearray(codes)
    expected[0x7F] = 0xFF  # -0 decodes to 0, whose code is +0
    assert back == bytes(expected)


def test_alaw_decode_encode_is_identity_on_all_codes() -> None:
    codes = bytes(range(256))
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes


def _ulaw_half_step(x: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    # Segment from the biased magnitude (|x| + 132 in [2^(s+7), 2^(s+8))); step 2^(s+3).
    biased = np.abs(x) + 132
    segment = np.floor(np.log2(biased)).astype(np.int32) - 7
    half: npt.NDArray[np.int32] = np.left_shift(1, segment + 2)
    return half


def _alaw_half_step(x: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    # The encoder works on floor(x / 8); a negative sample's magnitude is then -x - 1.
    magnitude = np.where(x >= 0, x, -x - 1)
    top = np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32)
    return np.where(magnitude < 256, 8, np.left_shift(1, np.maximum(top - 5, 0)))


@pytest.mark.parametrize(
    ("encode", "decode", "half_step", "limit"),
    [
        (g711.ulaw_encode, g711.ulaw_decode, _ulaw_half_step, 32635),  # μ-law clips above
        (g711.alaw_encode, g711.alaw_decode, _alaw_half_step, 32768),
    ],
    ids=["ulaw", "alaw"],
)
def test_quantisation_error_is_at_most_half_a_step(
    encode: Callable[[bytes], bytes],
    decode: Callable[[bytes], bytes],
    half_step: Callable[[npt.NDArray[np.int32]], npt.NDArray[np.int32]],
    limit: int,
) -> None:
    x = ALL_INT16[np.abs(ALL_INT16) <= limit]
    error = np.abs(_samples(decode(encode(_pcm(x)))) - x)
    bound = half_step(x)
    worst = int(np.argmax(error - bound))
    assert np.all(error <= bound), f"x={x[worst]} error={error[worst]} bound={bound[worst]}"
    # The bound is tight: the widest segment really has errors of half its step.
    assert int(error.max()) == int(bound.max())


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)],
    ids=["ulaw", "alaw"],
)
def test_quantiser_is_monotonic_and_odd_symmetric(
    encode: Callable[[bytes], bytes], decode: Callable[[bytes], bytes]
) -> None:
    y = _samples(decode(encode(_pcm(ALL_INT16))))
    assert np.all(np.diff(y) >= 0)
    assert len(np.unique(y)) in (255, 256)  # μ-law has two codes for zero
    # Decoded levels are symmetric: every positive level has its negative.
    levels = set(np.unique(y).tolist())
    assert {-v for v in levels} == levels


def test_silence_frames() -> None:
    assert g711.ulaw_encode(SILENCE_PCM16_8K_FRAME) == SILENCE_ULAW_FRAME == b"\xff" * 160
    assert g711.ulaw_decode(SILENCE_ULAW_FRAME) == SILENCE_PCM16_8K_FRAME
    assert g711.alaw_encode(SILENCE_PCM16_8K_FRAME) == SILENCE_ALAW_FRAME == b"\xd5" * 160
    # A-law has no zero level: its silence decodes to the smallest step, +8 (-48 dBov or so).
    assert set(_samples(g711.alaw_decode(SILENCE_ALAW_FRAME)).tolist()) == {8}
    assert len(g711.ulaw_decode(SILENCE_ULAW_FRAME)) == PCM16_8K_FRAME_BYTES


@pytest.mark.parametrize("encode", [g711.ulaw_encode, g711.alaw_encode], ids=["ulaw", "alaw"])
def test_odd_length_pcm_is_rejected(encode: Callable[[bytes], bytes]) -> None:
    with pytest.raises(ValueError, match="even length"):
        encode(b"\x00\x01\x02")


@pytest.mark.parametrize("encode", [g711.ulaw_encode, g711.alaw_encode], ids=["ulaw", "alaw"])
def test_empty_input_gives_empty_output(encode: Callable[[bytes], bytes]) -> None:
    assert encode(b"") == b""


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)],
    ids=["ulaw", "alaw"],
)
@pytest.mark.parametrize("amplitude", [16000, 1000], ids=["-6dBFS", "-30dBFS"])
def test_1khz_sine_survives_round_trip(
    encode: Callable[[bytes], bytes], decode: Callable[[bytes], bytes], amplitude: int
) -> None:
    # Companding keeps the SNR roughly level-independent; the phase offset avoids sampling only
    # the sine's zero crossings and peaks.
    t = np.arange(8000) / 8000.0
    x = np.round(amplitude * np.sin(2 * np.pi * 1000 * t + 0.3)).astype(np.int32)
    ulaw_or_alaw = encode(_pcm(x))
    assert len(ulaw_or_alaw) == 8000
    y = _samples(decode(ulaw_or_alaw))
    signal = x.astype(np.float64)
    noise = (y - x).astype(np.float64)
    snr_db = 10 * np.log10(np.sum(signal**2) / np.sum(noise**2))
    assert snr_db > 30
    spectrum = np.abs(np.fft.rfft(y))
    assert np.argmax(spectrum) * 8000 / len(y) == 1000

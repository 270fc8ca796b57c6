"""Simulator audio formats: G.711 decode, 24 kHz -> 8 kHz encode, byte/ms arithmetic."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from gateway.sim.audio import (
    bytes_to_ms,
    decode_input,
    encode_output,
    format_rate,
    ms_to_bytes,
    resample_pcm16,
)

pytestmark = pytest.mark.unit

PCM: dict[str, Any] = {"type": "audio/pcm", "rate": 24000}
PCMU: dict[str, Any] = {"type": "audio/pcmu"}
PCMA: dict[str, Any] = {"type": "audio/pcma"}


def tone(freq: float, seconds: float, rate: int, amplitude: float = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype("<i2").tobytes()


def samples(pcm16: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float64)


def dominant_hz(pcm16: bytes, rate: int) -> float:
    x = samples(pcm16)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def rms(pcm16: bytes) -> float:
    return float(np.sqrt(np.mean(samples(pcm16) ** 2)))


def test_format_rates() -> None:
    assert format_rate(PCM) == 24000
    assert format_rate(PCMU) == 8000
    assert format_rate(PCMA) == 8000


def test_unknown_format_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="audio/opus"):
        format_rate({"type": "audio/opus"})
    with pytest.raises(ValueError):
        decode_input({}, b"\x00\x00")


def test_pcm_input_passes_through_and_needs_even_length() -> None:
    data = tone(440, 0.1, 24000)
    assert decode_input(PCM, data) == data
    with pytest.raises(ValueError):
        decode_input(PCM, b"\x00\x00\x00")


def test_g711_input_decodes_to_8k_pcm16() -> None:
    pcm = tone(440, 0.2, 8000)
    for fmt, enc, dec in ((PCMU, ulaw_encode, ulaw_decode), (PCMA, alaw_encode, alaw_decode)):
        decoded = decode_input(fmt, enc(pcm))
        assert decoded == dec(enc(pcm))
        assert len(decoded) == len(pcm)
        assert abs(dominant_hz(decoded, 8000) - 440) < 10


def test_ulaw_silence_decodes_to_zero() -> None:
    assert set(samples(decode_input(PCMU, b"\xff" * 160))) == {0.0}


def test_pcm_output_is_unchanged() -> None:
    data = tone(300, 0.1, 24000)
    assert encode_output(PCM, data) == data


@pytest.mark.parametrize(("fmt", "dec"), [(PCMU, ulaw_decode), (PCMA, alaw_decode)])
def test_g711_output_resamples_to_8k_and_keeps_the_tone(fmt: dict[str, Any], dec: Any) -> None:
    src = tone(500, 1.0, 24000)
    encoded = encode_output(fmt, src)
    assert len(encoded) == 8000  # one byte per 8 kHz sample: 1 s
    back = dec(encoded)
    assert abs(dominant_hz(back, 8000) - 500) < 5
    assert rms(back) == pytest.approx(rms(src), rel=0.1)


def test_g711_output_removes_content_above_4khz() -> None:
    # 6 kHz cannot exist at 8 kHz; a good resampler filters it instead of aliasing to 2 kHz.
    encoded = encode_output(PCMU, tone(6000, 0.5, 24000))
    assert rms(ulaw_decode(encoded)) < 200


def test_output_rejects_odd_pcm() -> None:
    with pytest.raises(ValueError):
        encode_output(PCMU, b"\x00")


def test_resample_identity_and_empty() -> None:
    data = tone(440, 0.01, 24000)
    assert resample_pcm16(data, 24000, 24000) == data
    assert resample_pcm16(b"", 24000, 8000) == b""
    assert len(resample_pcm16(tone(440, 0.5, 8000), 8000, 24000)) == 24000


def test_bytes_to_ms() -> None:
    assert bytes_to_ms(PCMU, 160) == 20.0
    assert bytes_to_ms(PCMA, 8000) == 1000.0
    assert bytes_to_ms(PCM, 48) == 1.0
    assert bytes_to_ms(PCM, 960) == 20.0
    assert bytes_to_ms(PCM, 24) == 0.5


def test_ms_to_bytes_whole_samples() -> None:
    assert ms_to_bytes(PCMU, 20) == 160
    assert ms_to_bytes(PCM, 20) == 960
    assert ms_to_bytes(PCM, 0.03) == 0  # less than one 24 kHz sample
    assert ms_to_bytes(PCM, 0.5) == 24
    for ms in range(0, 3000, 7):
        assert bytes_to_ms(PCMU, ms_to_bytes(PCMU, ms)) == ms
        assert bytes_to_ms(PCM, ms_to_bytes(PCM, ms)) == ms

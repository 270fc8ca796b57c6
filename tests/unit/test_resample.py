"""gateway.media.resample: what a caller would hear after 8 kHz <-> 24 kHz conversion."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from gateway.media.formats import PCM16_8K_FRAME_BYTES, PCM16_24K_FRAME_BYTES
from gateway.media.resample import Resampler

pytestmark = pytest.mark.unit

#: Documented bound on the audio the filter holds back, in ms (measured 73 ms at "HQ").
MAX_LATENCY_MS = 80


def tone(freq: float, rate: int, seconds: float, amplitude: float = 10000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def samples(pcm16: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm16, dtype="<i2").astype(np.float64)


def rms_db(x: npt.NDArray[np.float64]) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x**2))))


def peak_hz(x: npt.NDArray[np.float64], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def run_in_frames(resampler: Resampler, pcm16: bytes, frame_bytes: int) -> bytes:
    out = [resampler.process(pcm16[i : i + frame_bytes]) for i in range(0, len(pcm16), frame_bytes)]
    return b"".join(out) + resampler.flush()


def test_round_trip_8k_24k_8k_keeps_frequency_and_level() -> None:
    up = Resampler(8000, 24000)
    down = Resampler(24000, 8000)
    source = tone(440, 8000, 2.0)
    wide = run_in_frames(up, source, PCM16_8K_FRAME_BYTES)
    back = run_in_frames(down, wide, PCM16_24K_FRAME_BYTES)

    assert len(wide) == 3 * len(source)
    assert len(back) == len(source)
    # Skip the filters' start-up and end transients (200 ms each side).
    x = samples(source)[1600:-1600]
    w = samples(wide)[4800:-4800]
    y = samples(back)[1600:-1600]
    assert abs(peak_hz(w, 24000) - 440) <= 2
    assert abs(peak_hz(y, 8000) - 440) <= 2
    assert abs(rms_db(w) - rms_db(x)) < 1.0
    assert abs(rms_db(y) - rms_db(x)) < 1.0
    # Output is time-aligned with input (libsoxr compensates its own delay): the waveform
    # itself comes back, not just its spectrum.
    assert np.max(np.abs(y - x)) < 0.01 * 10000


@pytest.mark.parametrize(
    ("in_rate", "out_rate", "frame"),
    [(8000, 24000, PCM16_8K_FRAME_BYTES), (24000, 8000, PCM16_24K_FRAME_BYTES)],
)
def test_20ms_frames_equal_one_shot(in_rate: int, out_rate: int, frame: int) -> None:
    rng = np.random.default_rng(7)
    speechish = (rng.standard_normal(in_rate * 2) * 3000).astype("<i2").tobytes()
    chunked = run_in_frames(Resampler(in_rate, out_rate), speechish, frame)
    whole = Resampler(in_rate, out_rate)
    one_shot = whole.process(speechish) + whole.flush()
    assert len(chunked) == len(one_shot) == len(speechish) * out_rate // in_rate
    assert np.max(np.abs(samples(chunked) - samples(one_shot))) <= 4  # rounding only


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 24000), (24000, 8000)])
def test_no_drift_over_10s_of_20ms_frames(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    frame = tone(300, in_rate, 0.02)
    samples_in = 0
    samples_out = 0
    max_held = 0.0
    for _ in range(500):  # 10 s
        samples_out += len(resampler.process(frame)) // 2
        samples_in += len(frame) // 2
        expected = samples_in * out_rate / in_rate
        # Nothing is lost or invented: what is missing is exactly what the filter holds.
        assert samples_out + resampler.delay_samples == pytest.approx(expected, abs=1)
        max_held = max(max_held, resampler.delay_samples)
    assert max_held <= MAX_LATENCY_MS * out_rate / 1000
    # ... and the held audio never grows: the lag after 10 s is within the bound.
    assert samples_in * out_rate / in_rate - samples_out <= MAX_LATENCY_MS * out_rate / 1000
    samples_out += len(resampler.flush()) // 2
    assert abs(samples_out - samples_in * out_rate // in_rate) <= 2


def test_downsampling_removes_content_above_4khz() -> None:
    down = Resampler(24000, 8000)
    loud = samples(tone(6000, 24000, 1.0))
    out = samples(run_in_frames(down, tone(6000, 24000, 1.0), PCM16_24K_FRAME_BYTES))
    assert rms_db(loud) - rms_db(out[800:-800]) > 40  # without a filter it would alias to 2 kHz

    passband = Resampler(24000, 8000)
    speech_band = samples(run_in_frames(passband, tone(3000, 24000, 1.0), PCM16_24K_FRAME_BYTES))
    assert abs(rms_db(speech_band[800:-800]) - rms_db(loud)) < 0.5


def test_flush_starts_a_new_signal_and_reset_drops_held_audio() -> None:
    resampler = Resampler(8000, 24000)
    first = tone(440, 8000, 0.5)
    out = resampler.process(first)
    assert resampler.delay_samples > 0
    out += resampler.flush()
    assert len(out) == 3 * len(first)
    assert resampler.delay_samples == 0
    # Usable again after flush, with the full length accounted for.
    again = resampler.process(first) + resampler.flush()
    assert len(again) == 3 * len(first)

    resampler.process(first)
    resampler.reset()
    assert resampler.delay_samples == 0
    assert resampler.flush() == b""


def test_rates_are_fixed_by_construction() -> None:
    resampler = Resampler(8000, 24000)
    assert (resampler.in_rate, resampler.out_rate, resampler.quality) == (8000, 24000, "HQ")
    with pytest.raises(AttributeError):
        resampler.in_rate = 16000  # type: ignore[misc]
    with pytest.raises(AttributeError):
        resampler.out_rate = 16000  # type: ignore[misc]
    with pytest.raises(AttributeError):
        resampler.sample_rate = 16000  # type: ignore[attr-defined]


def test_equal_rates_pass_through() -> None:
    same = Resampler(8000, 8000)
    data = tone(440, 8000, 0.02)
    assert same.process(data) == data
    assert same.flush() == b""
    assert same.delay_samples == 0


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="in_rate"):
        Resampler(0, 8000)
    with pytest.raises(ValueError, match="out_rate"):
        Resampler(8000, -1)
    with pytest.raises(ValueError, match="quality"):
        Resampler(8000, 24000, quality="QQ")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="even length"):
        Resampler(8000, 24000).process(b"\x00\x01\x02")


def test_empty_chunk_is_harmless() -> None:
    resampler = Resampler(24000, 8000)
    assert resampler.process(b"") == b""
    assert resampler.flush() == b""

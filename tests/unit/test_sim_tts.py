"""Simulator TTS: espeak-ng speech, tone fallback, async subprocess handling, cache."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from gateway.sim import tts
from gateway.sim.vad import EnergyVad, SpeechStarted, SpeechStopped, VadSettings

# Runs the local espeak-ng binary (no sockets); pure-logic tier otherwise.
pytestmark = pytest.mark.unit

needs_espeak = pytest.mark.skipif(not tts.espeak_available(), reason="espeak-ng not installed")

GREETING = "Hello, thanks for calling. How can I help you today?"


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    tts.clear_cache()
    yield
    tts.clear_cache()


def samples(pcm: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def rms_dbfs(pcm: bytes) -> float:
    x = samples(pcm)
    return float(20 * np.log10(np.sqrt(np.mean(x**2)) / 32768))


def seconds(pcm: bytes, rate: int = 24000) -> float:
    return len(pcm) / 2 / rate


def spectral_centroid(pcm: bytes, rate: int = 24000) -> float:
    x = samples(pcm)
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    return float(np.sum(freqs * spectrum) / np.sum(spectrum))


def dominant_hz(pcm: bytes, rate: int) -> float:
    x = samples(pcm)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def vad_turns(pcm: bytes, rate: int) -> list[SpeechStarted | SpeechStopped]:
    vad = EnergyVad(VadSettings(), rate)
    return vad.feed(pcm + bytes(2 * rate))  # one second of trailing silence ends the turn


# --- espeak-ng ----------------------------------------------------------------------------


@needs_espeak
def test_espeak_speech_has_energy_and_plausible_duration() -> None:
    pcm = tts.synthesize(GREETING, engine="espeak")
    assert len(pcm) % 2 == 0
    assert 1.5 < seconds(pcm) < 8.0  # 11 words at ~175 words per minute
    assert rms_dbfs(pcm) > -35
    assert 100 < spectral_centroid(pcm) < 4000
    events = vad_turns(pcm, 24000)
    assert isinstance(events[0], SpeechStarted)
    assert isinstance(events[-1], SpeechStopped)


@needs_espeak
def test_espeak_at_8khz_has_the_same_duration() -> None:
    wide = tts.synthesize(GREETING, engine="espeak", sample_rate=24000)
    narrow = tts.synthesize(GREETING, engine="espeak", sample_rate=8000)
    assert seconds(narrow, 8000) == pytest.approx(seconds(wide), abs=0.01)


@needs_espeak
def test_longer_text_gives_longer_speech() -> None:
    short = tts.synthesize("Yes.", engine="espeak")
    long = tts.synthesize(GREETING + " " + GREETING, engine="espeak")
    assert seconds(long) > 3 * seconds(short)


@needs_espeak
def test_espeak_voices_differ() -> None:
    audio = {
        v: tts.synthesize("Good morning", voice=v, engine="espeak") for v in tts.VOICE_PROFILES
    }
    assert len(set(audio.values())) == len(tts.VOICE_PROFILES)
    # A deep male voice and a high female voice differ audibly, not just in bytes.
    assert spectral_centroid(audio["ash"]) < spectral_centroid(audio["shimmer"])


@needs_espeak
def test_speed_changes_duration() -> None:
    slow = tts.synthesize(GREETING, engine="espeak", speed=0.5)
    fast = tts.synthesize(GREETING, engine="espeak", speed=1.5)
    assert seconds(slow) > 1.5 * seconds(fast)


@needs_espeak
def test_text_that_looks_like_an_option_is_spoken() -> None:
    pcm = tts.synthesize("--help -v xx", engine="espeak")
    assert seconds(pcm) > 0.3 and rms_dbfs(pcm) > -40


@needs_espeak
async def test_async_matches_sync_and_keeps_the_loop_running() -> None:
    expected = tts.synthesize(GREETING, voice="cedar", engine="espeak")
    tts.clear_cache()
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker(), name="test:ticker")
    try:
        got = await tts.synthesize_async(GREETING, voice="cedar", engine="espeak")
    finally:
        done.set()
        await task
    assert got == expected
    assert ticks > 1  # the loop ran other work while espeak-ng was synthesising


@needs_espeak
async def test_async_cancellation_propagates() -> None:
    task = asyncio.create_task(
        tts.synthesize_async(GREETING * 20, engine="espeak"), name="test:tts"
    )
    await asyncio.sleep(0.01)  # any moment works: before, during or after the spawn
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@needs_espeak
async def test_async_timeout_kills_espeak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts, "ESPEAK_TIMEOUT_S", 0.0001)
    with pytest.raises(RuntimeError, match="timed out"):
        await tts.synthesize_async(GREETING * 30, engine="espeak")
    # auto falls back to tones when espeak-ng fails
    fallback = await tts.synthesize_async(GREETING, engine="auto")
    assert fallback == tts.synthesize(GREETING, engine="tone")


@needs_espeak
def test_sync_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts, "ESPEAK_TIMEOUT_S", 0.0001)
    with pytest.raises(RuntimeError, match="timed out"):
        tts.synthesize(GREETING * 30, engine="espeak")
    assert tts.synthesize(GREETING, engine="auto") == tts.synthesize(GREETING, engine="tone")


def test_missing_espeak_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts, "_ESPEAK", "/nonexistent/espeak-ng")
    assert not tts.espeak_available()
    with pytest.raises(RuntimeError, match="not installed"):
        tts.synthesize("hi", engine="espeak")
    # auto without espeak-ng uses tones
    assert tts.synthesize("hi", engine="auto") == tts.synthesize("hi", engine="tone")


async def test_missing_espeak_async(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts, "_ESPEAK", "/nonexistent/espeak-ng")
    with pytest.raises(RuntimeError, match="not installed"):
        await tts.synthesize_async("hi", engine="espeak")


def test_failing_espeak_reports_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tts, "_ESPEAK", "false")
    with pytest.raises(RuntimeError, match="exit 1"):
        tts.synthesize("hi", engine="espeak")
    monkeypatch.setattr(tts, "espeak_available", lambda: True)
    assert tts.synthesize("hi", engine="auto") == tts.synthesize("hi", engine="tone")


# --- tone engine --------------------------------------------------------------------------


def test_tone_is_deterministic() -> None:
    first = tts.synthesize(GREETING, engine="tone")
    tts.clear_cache()
    second = tts.synthesize(GREETING, engine="tone")
    assert first == second and first is not second


def test_tone_duration_follows_text_length() -> None:
    for text in ("Hi.", GREETING, GREETING * 3):
        expected = 0.060 * len(text)
        assert seconds(tts.synthesize(text, engine="tone")) == pytest.approx(expected, abs=0.18)


def test_tone_is_speech_band_bursts_that_vad_hears_as_one_turn() -> None:
    for rate in (8000, 24000):
        pcm = tts.synthesize(GREETING, engine="tone", sample_rate=rate)
        assert seconds(pcm, rate) == pytest.approx(0.060 * len(GREETING), abs=0.18)
        assert rms_dbfs(pcm) > -25
        assert 300 <= dominant_hz(pcm, rate) <= 700
        events = vad_turns(pcm, rate)
        assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
        # Syllables: the first 120 ms burst is loud, the 60 ms gap after it is silent.
        n = rate // 1000
        assert rms_dbfs(pcm[2 * 20 * n : 2 * 100 * n]) > -25
        assert set(samples(pcm[2 * 125 * n : 2 * 175 * n])) == {0.0}


def test_tone_voices_and_speed_differ() -> None:
    marin = tts.synthesize(GREETING, voice="marin", engine="tone")
    ash = tts.synthesize(GREETING, voice="ash", engine="tone")
    assert marin != ash
    assert spectral_centroid(ash) < spectral_centroid(marin)
    fast = tts.synthesize(GREETING, engine="tone", speed=1.5)
    assert seconds(fast) == pytest.approx(seconds(marin) / 1.5, rel=0.02)


def test_custom_voice_id_maps_to_a_known_voice() -> None:
    custom = tts.synthesize("Hello there", voice="voice_1234", engine="tone")
    assert custom in {
        tts.synthesize("Hello there", voice=v, engine="tone") for v in tts.VOICE_PROFILES
    }


def test_empty_text_is_empty_audio() -> None:
    assert tts.synthesize("", engine="tone") == b""
    assert tts.synthesize("   ", engine="auto") == b""


async def test_async_tone() -> None:
    assert await tts.synthesize_async("Hi there", engine="tone") == tts.synthesize(
        "Hi there", engine="tone"
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"engine": "festival"}, {"sample_rate": 0}, {"speed": 2.0}, {"speed": 0.1}],
)
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        tts.synthesize("hi", **kwargs)  # type: ignore[arg-type]


def test_text_length_is_bounded() -> None:
    with pytest.raises(ValueError, match="too long"):
        tts.synthesize("a" * (tts.MAX_TEXT_CHARS + 1), engine="tone")


# --- cache --------------------------------------------------------------------------------


def test_cache_returns_the_same_audio_and_is_bounded() -> None:
    first = tts.synthesize("cached", engine="tone")
    assert tts.synthesize("cached", engine="tone") is first
    assert tts.synthesize("cached", engine="tone", voice="ash") is not first
    for i in range(tts.CACHE_ENTRIES):
        tts.synthesize(f"filler {i}", engine="tone")
    again = tts.synthesize("cached", engine="tone")
    assert again == first and again is not first  # evicted as least recently used

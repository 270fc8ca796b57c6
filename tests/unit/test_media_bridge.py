from __future__ import annotations

import numpy as np
import pytest

from gateway.media import g711
from gateway.media.bridge import MediaBridge

pytestmark = pytest.mark.unit


def tone(freq: float, ms: int, rate: int = 8000, amp: float = 8000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def peak_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


def frames(pcm: bytes) -> list[bytes]:
    return [pcm[i:i + 320] for i in range(0, len(pcm), 320)]


def test_native_pcmu_chunks_caller_audio_in_40ms() -> None:
    bridge = MediaBridge("native", "PCMU", chunk_ms=40)
    assert bridge.api_format == {"type": "audio/pcmu"}
    out = bridge.caller_frames(frames(bytes(320 * 5)))  # 100 ms of silence
    assert [len(c) for c in out] == [320, 320]  # two 40 ms chunks of μ-law, 20 ms pending
    assert out[0] == bytes([g711.ULAW_SILENCE]) * 320
    assert bridge.api_bytes_to_ms(320) == 40


def test_native_pcma_round_trip_keeps_the_tone() -> None:
    bridge = MediaBridge("native", "PCMA", chunk_ms=20)
    assert bridge.api_format == {"type": "audio/pcma"}
    pcm = tone(440, 200)
    api = b"".join(bridge.caller_frames(frames(pcm)))
    back = bridge.agent_audio(api)
    assert len(back) == len(pcm)
    assert abs(peak_hz(back, 8000) - 440) < 10


def test_transcode_goes_through_24k() -> None:
    bridge = MediaBridge("transcode", "PCMU", chunk_ms=40)
    assert bridge.api_format == {"type": "audio/pcm", "rate": 24000}
    pcm = tone(440, 1000)
    api = b"".join(bridge.caller_frames(frames(pcm)))
    # soxr withholds its filter delay; most of the second arrives at 3x the samples.
    assert 0.9 * 3 * len(pcm) < len(api) <= 3 * len(pcm)
    assert abs(peak_hz(api, 24000) - 440) < 10
    back = bridge.agent_audio(api) + bridge.agent_audio_end()
    assert abs(peak_hz(back, 8000) - 440) < 10
    assert bridge.api_bytes_to_ms(48_000) == 1000


def test_chunk_size_must_be_whole_frames() -> None:
    with pytest.raises(ValueError):
        MediaBridge("native", "PCMU", chunk_ms=30)

"""Test audio: make it (espeak-ng speech, tones), store it (G.711 raw files, WAV), judge it.

The judging helpers answer what a listener would notice: how loud (:func:`rms_dbfs`), which
pitch (:func:`dominant_frequency`), whether it sounds like speech (:func:`speech_like`).
Everything is PCM16 little-endian mono; 8 kHz unless a ``rate`` says otherwise. Only
:func:`speech_pcm16` runs a program (espeak-ng, bounded by a timeout); the rest is pure.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import soxr

from gateway.media.g711 import alaw_encode, ulaw_encode
from tests.support.rtp import frame_dbfs, silent_and_voiced_spans

Law = Literal["ulaw", "alaw"]

#: Longest espeak-ng run we wait for.
ESPEAK_TIMEOUT_S = 20.0


def _samples(pcm16: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.float64)


def _to_pcm16(samples: npt.NDArray[np.float64]) -> bytes:
    return np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()


def read_wav(path: Path) -> tuple[bytes, int]:
    """Read a mono 16-bit PCM WAV file.

    Returns:
        ``(pcm16, sample_rate)``.

    Raises:
        ValueError: Not mono 16-bit PCM.
    """
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getcomptype() != "NONE":
            raise ValueError(f"{path}: need mono 16-bit PCM, got {w.getparams()}")
        return w.readframes(w.getnframes()), w.getframerate()


def write_wav(path: Path, pcm16: bytes, rate: int = 8000) -> None:
    """Write ``pcm16`` as a mono 16-bit WAV file (handy to listen to a failing test)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)


def resample(pcm16: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample PCM16 with soxr (high quality, whole buffer at once)."""
    if in_rate == out_rate:
        return pcm16
    data = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2")
    out = soxr.resample(data, in_rate, out_rate, quality="HQ")
    return np.asarray(out, dtype="<i2").tobytes()


def speech_pcm16(text: str, rate: int = 8000, *, voice: str = "en-us",
                 words_per_minute: int = 160) -> bytes:
    """Speak ``text`` with espeak-ng and return it as PCM16 at ``rate``.

    Raises:
        RuntimeError: espeak-ng is not installed, failed, or took too long.
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed")
    with tempfile.TemporaryDirectory(prefix="speech-") as tmp:
        wav = Path(tmp) / "speech.wav"
        # -w writes a proper WAV header; --stdout leaves the sizes at 0x7fffffff.
        proc = subprocess.run(
            [exe, "-v", voice, "-s", str(words_per_minute), "-w", str(wav), "--", text],
            capture_output=True, timeout=ESPEAK_TIMEOUT_S, check=False)
        if proc.returncode != 0 or not wav.exists():
            raise RuntimeError(f"espeak-ng failed ({proc.returncode}): "
                               f"{proc.stderr.decode(errors='replace')[:500]}")
        pcm, in_rate = read_wav(wav)
    return resample(pcm, in_rate, rate)


def tone_pcm16(freq: float, ms: int, rate: int = 8000, amplitude: float = 0.25) -> bytes:
    """A sine tone.

    Args:
        freq: Frequency in Hz.
        ms: Duration in milliseconds.
        rate: Sample rate.
        amplitude: Peak as a fraction of full scale (0.25 is -12 dBFS peak, -15 dBFS RMS).
    """
    n = rate * ms // 1000
    t = np.arange(n) / rate
    return _to_pcm16(amplitude * 32767 * np.sin(2 * np.pi * freq * t))


def silence_pcm16(ms: int, rate: int = 8000) -> bytes:
    """Digital silence."""
    return bytes(2 * (rate * ms // 1000))


def g711_encode(pcm16: bytes, law: Law) -> bytes:
    """Encode PCM16 with the gateway's G.711 tables."""
    return ulaw_encode(pcm16) if law == "ulaw" else alaw_encode(pcm16)


def write_g711(path: Path, pcm16: bytes, law: Law = "ulaw") -> Path:
    """Write ``pcm16`` as a raw G.711 file (no header): what SIPp's ``rtp_stream`` sends.

    Returns:
        ``path``.
    """
    path.write_bytes(g711_encode(pcm16, law))
    return path


def rms_dbfs(pcm16: bytes) -> float:
    """RMS level in dBFS (full scale 32768); ``-inf`` for digital silence or no samples."""
    x = _samples(pcm16)
    if not len(x):
        return -math.inf
    rms = float(np.sqrt(np.mean(x * x)))
    return 20 * math.log10(rms / 32768.0) if rms > 0 else -math.inf


def _spectrum(pcm16: bytes, rate: int) -> tuple[npt.NDArray[np.float64],
                                                npt.NDArray[np.float64]]:
    x = _samples(pcm16)
    if len(x) < 2:
        return np.zeros(0), np.zeros(0)
    x = (x - x.mean()) * np.hanning(len(x))
    power = (np.abs(np.fft.rfft(x)) ** 2).astype(np.float64)
    freqs = np.fft.rfftfreq(len(x), 1 / rate).astype(np.float64)
    return freqs, power


def dominant_frequency(pcm16: bytes, rate: int = 8000) -> float:
    """Frequency of the strongest spectral peak in Hz (Hann window, parabolic interpolation).

    Returns ``0.0`` for silence or too little audio.
    """
    freqs, power = _spectrum(pcm16, rate)
    if len(power) < 3 or not power.any():
        return 0.0
    k = int(np.argmax(power[1:])) + 1
    if 1 <= k < len(power) - 1:
        a, b, c = np.log(power[k - 1:k + 2] + 1e-12)
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom else 0.0
    else:
        shift = 0.0
    return float((k + shift) * freqs[1])


def band_energy_ratio(pcm16: bytes, low_hz: float, high_hz: float, rate: int = 8000) -> float:
    """Fraction of the signal's energy between ``low_hz`` and ``high_hz``."""
    freqs, power = _spectrum(pcm16, rate)
    total = float(power.sum())
    if total <= 0:
        return 0.0
    return float(power[(freqs >= low_hz) & (freqs <= high_hz)].sum()) / total


def tonality(pcm16: bytes, rate: int = 8000, width_hz: float = 40.0) -> float:
    """Fraction of the energy within ``width_hz`` of the strongest peak (~1 for a pure tone)."""
    freqs, power = _spectrum(pcm16, rate)
    total = float(power.sum())
    if total <= 0:
        return 0.0
    peak = freqs[int(np.argmax(power))]
    return float(power[np.abs(freqs - peak) <= width_hz].sum()) / total


def speech_like(pcm16: bytes, rate: int = 8000) -> bool:
    """Whether audio looks like speech rather than silence, a steady tone or noise.

    Heuristics, each of which espeak-ng speech passes and a tone or silence fails: the voiced
    frames (above -45 dBFS) are at least 25 % of the audio and louder than -40 dBFS; the
    level moves like syllables (at least two voiced spans, or a frame-level spread of more
    than 6 dB over the voiced frames); at least 85 % of the energy is in the telephone voice
    band 200-3400 Hz; and no single narrow peak holds more than half of the energy.
    """
    spans = silent_and_voiced_spans(pcm16, 20, rate=rate)
    voiced_ms = sum(s.duration_ms for s in spans if s.voiced)
    total_ms = sum(s.duration_ms for s in spans)
    if total_ms == 0 or voiced_ms < 0.25 * total_ms:
        return False
    levels = [v for v in frame_dbfs(pcm16, 20, rate) if v > -45.0]
    if not levels or 10 * math.log10(np.mean([10 ** (v / 10) for v in levels])) < -40.0:
        return False
    syllabic = sum(1 for s in spans if s.voiced) >= 2 or float(np.std(levels)) > 6.0
    return (syllabic and band_energy_ratio(pcm16, 200, 3400, rate) >= 0.85
            and tonality(pcm16, rate) < 0.5)

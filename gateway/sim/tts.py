"""Speech for the simulator's responses: espeak-ng when installed, tone bursts otherwise.

The simulator answers with audio that must behave like speech on the far end: it has energy in
the voice band, lasts about as long as the words, and differs by voice. ``espeak-ng`` gives
real (robotic) speech: its 22,050 Hz WAV output is read with :mod:`wave` and resampled with
soxr. Each Realtime voice name maps to a distinct espeak variant and pitch. The ``tone`` engine
needs nothing installed and is deterministic: syllable-like 120 ms bursts of 300-700 Hz with
60 ms gaps, about 60 ms of audio per character. ``auto`` uses espeak-ng when it is on ``PATH``
and falls back to tones if it is missing or fails. Results are kept in a small LRU cache.
This is an I/O adapter (it runs a subprocess); :func:`synthesize_async` never blocks the event
loop on it. Logs never contain the text being spoken.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import shutil
import subprocess
import threading
import wave
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import numpy as np

from gateway.sim.audio import resample_pcm16

_log = logging.getLogger(__name__)

#: Engines accepted by :func:`synthesize`.
ENGINES: Final = ("auto", "espeak", "tone")
#: Upper bound on one espeak-ng run; a hung synthesiser fails instead of stalling a response.
ESPEAK_TIMEOUT_S: Final = 10.0
#: Longest text accepted, to bound run time and memory.
MAX_TEXT_CHARS: Final = 5000
#: Tone engine: audio per character, burst and gap lengths at speed 1.0.
TONE_MS_PER_CHAR: Final = 60.0
TONE_BURST_MS: Final = 120.0
TONE_GAP_MS: Final = 60.0
#: Cache bounds: entries and total bytes; the least recently used entry goes first.
CACHE_ENTRIES: Final = 64
CACHE_BYTES: Final = 32 * 1024 * 1024

_ESPEAK: Final = "espeak-ng"
_BASE_WPM: Final = 175
_TONE_PEAK: Final = 9000.0  # about -14 dBFS RMS: clearly speech for VAD at any default setting
_EDGE_MS: Final = 10.0


@dataclass(frozen=True)
class _VoiceProfile:
    """How one Realtime voice sounds here: espeak variant and pitch, tone base frequency."""

    espeak_voice: str
    pitch: int
    tone_hz: float


#: Realtime voices mapped to distinct espeak-ng voices (gender follows the OpenAI voice). British
#: ones use ``en+variant``: espeak-ng 1.51 ignores the variant in ``en-gb+variant``.
VOICE_PROFILES: Final = {
    "alloy": _VoiceProfile("en-us+f2", 45, 340.0),
    "ash": _VoiceProfile("en-us+m1", 35, 300.0),
    "ballad": _VoiceProfile("en+m2", 45, 320.0),
    "coral": _VoiceProfile("en-us+f4", 65, 460.0),
    "echo": _VoiceProfile("en-us+m4", 50, 360.0),
    "sage": _VoiceProfile("en+f1", 55, 420.0),
    "shimmer": _VoiceProfile("en-us+f5", 75, 500.0),
    "verse": _VoiceProfile("en+m7", 55, 380.0),
    "marin": _VoiceProfile("en-us+f3", 58, 440.0),
    "cedar": _VoiceProfile("en-us+m3", 40, 310.0),
}

_cache: OrderedDict[tuple[str, str, int, str, float], bytes] = OrderedDict()
_cache_bytes = 0
_cache_lock = threading.Lock()


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` program is on ``PATH``."""
    return shutil.which(_ESPEAK) is not None


def synthesize(
    text: str,
    *,
    voice: str = "marin",
    sample_rate: int = 24000,
    engine: str = "auto",
    speed: float = 1.0,
) -> bytes:
    """Speak ``text`` as PCM16, blocking while espeak-ng runs.

    Args:
        text: What to say (at most :data:`MAX_TEXT_CHARS` characters).
        voice: A Realtime voice name; other names (e.g. a custom voice id) map to one of them.
        sample_rate: Output rate in Hz.
        engine: ``espeak``, ``tone``, or ``auto`` (espeak-ng if it works, else tones).
        speed: The session's ``audio.output.speed`` (0.25 to 1.5).

    Returns:
        Little-endian PCM16 mono at ``sample_rate``; empty for empty text.

    Raises:
        ValueError: Bad engine, rate, speed or text length.
        RuntimeError: ``engine="espeak"`` and espeak-ng is missing, failed or timed out.
    """
    key, ready = _lookup(text, voice, sample_rate, engine, speed)
    if ready is not None:
        return ready
    try:
        wav = _run_espeak(_espeak_argv(text, voice, speed))
    except RuntimeError as exc:
        return _fallback(exc, text, voice, sample_rate, engine, speed)
    return _cache_put(key, _wav_to_pcm16(wav, sample_rate))


async def synthesize_async(
    text: str,
    *,
    voice: str = "marin",
    sample_rate: int = 24000,
    engine: str = "auto",
    speed: float = 1.0,
) -> bytes:
    """Like :func:`synthesize`, but espeak-ng runs as an asyncio subprocess.

    The event loop keeps running while espeak-ng works; a timeout or cancellation kills the
    process and waits for it before the exception propagates.

    Args:
        text: What to say.
        voice: A Realtime voice name.
        sample_rate: Output rate in Hz.
        engine: ``espeak``, ``tone`` or ``auto``.
        speed: The session's ``audio.output.speed``.

    Returns:
        Little-endian PCM16 mono at ``sample_rate``.

    Raises:
        ValueError: Bad engine, rate, speed or text length.
        RuntimeError: ``engine="espeak"`` and espeak-ng is missing, failed or timed out.
    """
    key, ready = _lookup(text, voice, sample_rate, engine, speed)
    if ready is not None:
        return ready
    try:
        wav = await _run_espeak_async(_espeak_argv(text, voice, speed))
    except RuntimeError as exc:
        return _fallback(exc, text, voice, sample_rate, engine, speed)
    return _cache_put(key, _wav_to_pcm16(wav, sample_rate))


def _lookup(text: str, voice: str, sample_rate: int, engine: str,
            speed: float) -> tuple[tuple[str, str, int, str, float], bytes | None]:
    """The cache key, and the audio when it needs no espeak-ng run (cached or tones)."""
    key, resolved = _prepare(text, voice, sample_rate, engine, speed)
    cached = _cache_get(key)
    if cached is not None:
        return key, cached
    if resolved == "tone" or not text.strip():
        return key, _cache_put(key, _tone(text, voice, sample_rate, speed))
    return key, None


def _fallback(exc: RuntimeError, text: str, voice: str, sample_rate: int, engine: str,
              speed: float) -> bytes:
    """Tone speech when espeak-ng failed under ``auto``; re-raise for ``espeak``."""
    if engine != "auto":
        raise exc
    _log.warning("espeak-ng failed, using tone speech instead: %s", exc)
    return _tone(text, voice, sample_rate, speed)


def clear_cache() -> None:
    """Empty the synthesis cache (for tests and memory pressure)."""
    global _cache_bytes
    with _cache_lock:
        _cache.clear()
        _cache_bytes = 0


# --- helpers ------------------------------------------------------------------------------


def _prepare(
    text: str, voice: str, sample_rate: int, engine: str, speed: float
) -> tuple[tuple[str, str, int, str, float], str]:
    if engine not in ENGINES:
        raise ValueError(f"unknown TTS engine {engine!r}; use one of {', '.join(ENGINES)}")
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    if not 0.25 <= speed <= 1.5:
        raise ValueError(f"speed must be within 0.25..1.5, got {speed}")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text too long for TTS: {len(text)} > {MAX_TEXT_CHARS} characters")
    resolved = engine
    if engine == "auto":
        resolved = "espeak" if espeak_available() else "tone"
    return (text, voice, sample_rate, resolved, speed), resolved


def _voice_name(voice: str) -> str:
    """The Realtime voice whose sound ``voice`` gets; unknown names (custom ids) map stably."""
    if voice in VOICE_PROFILES:
        return voice
    names = sorted(VOICE_PROFILES)
    return names[zlib.crc32(voice.encode()) % len(names)]


def _profile(voice: str) -> _VoiceProfile:
    return VOICE_PROFILES[_voice_name(voice)]


def _espeak_argv(text: str, voice: str, speed: float) -> list[str]:
    profile = _profile(voice)
    wpm = max(80, min(450, round(_BASE_WPM * speed)))
    # "--" ends the options, so text starting with "-" is spoken, not parsed.
    clean = text.replace("\x00", " ")
    return [
        _ESPEAK,
        "--stdout",
        "-v",
        profile.espeak_voice,
        "-p",
        str(profile.pitch),
        "-s",
        str(wpm),
        "--",
        clean,
    ]


def _run_espeak(argv: list[str]) -> bytes:
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=ESPEAK_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise RuntimeError("espeak-ng is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"espeak-ng timed out after {ESPEAK_TIMEOUT_S:g} s") from exc
    return _check_espeak(done.returncode, done.stdout, done.stderr)


async def _run_espeak_async(argv: list[str]) -> bytes:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise RuntimeError("espeak-ng is not installed") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), ESPEAK_TIMEOUT_S)
    except BaseException as exc:
        # Timeout or cancellation: never leave the process running behind us.
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if isinstance(exc, TimeoutError):
            raise RuntimeError(f"espeak-ng timed out after {ESPEAK_TIMEOUT_S:g} s") from exc
        raise
    assert proc.returncode is not None  # communicate() returns after the process exited
    return _check_espeak(proc.returncode, out, err)


def _check_espeak(returncode: int, out: bytes, err: bytes) -> bytes:
    if returncode != 0 or not out:
        reason = err.decode("utf-8", "replace").strip().splitlines()
        detail = reason[0][:200] if reason else "no output"
        raise RuntimeError(f"espeak-ng failed (exit {returncode}): {detail}")
    return out


def _wav_to_pcm16(wav: bytes, sample_rate: int) -> bytes:
    try:
        with wave.open(io.BytesIO(wav), "rb") as reader:
            channels, width, rate = (
                reader.getnchannels(),
                reader.getsampwidth(),
                reader.getframerate(),
            )
            # espeak-ng streams to stdout, so the header's frame count is a placeholder;
            # read whatever follows the header.
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as exc:
        raise RuntimeError(f"espeak-ng produced an unreadable WAV: {exc}") from exc
    if channels != 1 or width != 2:
        raise RuntimeError(f"espeak-ng produced {channels} channel(s) of {8 * width}-bit audio")
    frames = frames[: len(frames) // 2 * 2]
    if not frames:
        raise RuntimeError("espeak-ng produced no audio")
    return resample_pcm16(frames, rate, sample_rate)


def _tone(text: str, voice: str, sample_rate: int, speed: float) -> bytes:
    """Deterministic speech-like bursts: as many 120 ms syllables as ~60 ms per character fills."""
    if not text.strip():
        return b""
    burst_ms, gap_ms = TONE_BURST_MS / speed, TONE_GAP_MS / speed
    count = max(1, round(TONE_MS_PER_CHAR * len(text) / speed / (burst_ms + gap_ms)))
    burst_n = round(burst_ms * sample_rate / 1000)
    gap = np.zeros(round(gap_ms * sample_rate / 1000))
    edge_n = max(1, min(burst_n // 2, round(_EDGE_MS * sample_rate / 1000)))
    envelope = np.ones(burst_n)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, edge_n))
    envelope[:edge_n] = ramp
    envelope[burst_n - edge_n :] = ramp[::-1]
    t = np.arange(burst_n) / sample_rate
    voice = _voice_name(voice)
    base = VOICE_PROFILES[voice].tone_hz
    parts = []
    for i in range(count):
        # Pitch moves from syllable to syllable, fixed by the text and voice, within 300-700 Hz.
        wobble = zlib.crc32(f"{voice}\x00{text}\x00{i}".encode()) % 200
        freq = min(700.0, base + wobble)
        wave_ = np.sin(2 * math.pi * freq * t) + 0.3 * np.sin(4 * math.pi * freq * t)
        parts += [_TONE_PEAK / 1.3 * wave_ * envelope, gap]
    return np.concatenate(parts).astype("<i2").tobytes()


def _cache_get(key: tuple[str, str, int, str, float]) -> bytes | None:
    with _cache_lock:
        pcm = _cache.get(key)
        if pcm is not None:
            _cache.move_to_end(key)
        return pcm


def _cache_put(key: tuple[str, str, int, str, float], pcm: bytes) -> bytes:
    global _cache_bytes
    if len(pcm) > CACHE_BYTES:
        return pcm
    with _cache_lock:
        old = _cache.pop(key, None)
        if old is not None:
            _cache_bytes -= len(old)
        _cache[key] = pcm
        _cache_bytes += len(pcm)
        while len(_cache) > CACHE_ENTRIES or _cache_bytes > CACHE_BYTES:
            _, dropped = _cache.popitem(last=False)
            _cache_bytes -= len(dropped)
    return pcm

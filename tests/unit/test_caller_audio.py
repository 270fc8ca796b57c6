"""The test caller's one audio source: the --play audio, then silence that outlasts the call."""

from __future__ import annotations

import os
import wave
from pathlib import Path

from gateway.sip.caller import write_call_audio


def _write(path: Path, frames: bytes, *, rate: int = 16000, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)


def test_silence_alone_is_8khz_mono_and_as_long_as_asked(tmp_path: Path) -> None:
    out = write_call_audio(str(tmp_path / "s.wav"), None, 12.5)
    with wave.open(out, "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.getnframes() == 100_000
        assert w.readframes(w.getnframes()) == bytes(200_000)


def test_play_audio_comes_first_in_its_own_format_then_silence(tmp_path: Path) -> None:
    speech = bytes(range(256)) * 40  # 10,240 bytes = 2,560 stereo frames
    _write(tmp_path / "in.wav", speech, rate=16000, channels=2)
    out = write_call_audio(str(tmp_path / "s.wav"), str(tmp_path / "in.wav"), 3.0)
    with wave.open(out, "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 16000)
        assert w.getnframes() == 48_000
        data = w.readframes(w.getnframes())
    assert data[:len(speech)] == speech
    assert data[len(speech):] == bytes(48_000 * 4 - len(speech))


def test_a_play_file_longer_than_the_call_is_kept_whole(tmp_path: Path) -> None:
    speech = b"\x01\x02" * 24_000  # 3 s at 8 kHz
    _write(tmp_path / "in.wav", speech, rate=8000)
    out = write_call_audio(str(tmp_path / "s.wav"), str(tmp_path / "in.wav"), 1.0)
    with wave.open(out, "rb") as w:
        assert w.readframes(w.getnframes()) == speech


def test_the_silence_is_a_hole_not_written_bytes(tmp_path: Path) -> None:
    out = write_call_audio(str(tmp_path / "s.wav"), None, 3600.0)  # an hour: 57.6 MB
    st = os.stat(out)
    assert st.st_size == 44 + 3600 * 16000
    assert st.st_blocks * 512 < 1_000_000


def test_a_call_longer_than_a_wav_can_hold_is_capped_at_the_riff_limit(tmp_path: Path) -> None:
    out = write_call_audio(str(tmp_path / "s.wav"), None, 10.0 ** 9)
    size = os.stat(out).st_size
    assert size - 8 <= 0xFFFF_FFFF and (size - 44) % 2 == 0
    with wave.open(out, "rb") as w:
        assert w.getnframes() == (size - 44) // 2


def test_a_play_file_wave_cannot_read_is_played_as_it_is(tmp_path: Path) -> None:
    odd = tmp_path / "in.wav"
    odd.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x07\x00\x01\x00"
                    b"\x40\x1f\x00\x00\x40\x1f\x00\x00\x01\x00\x08\x00data\x00\x00\x00\x00")
    assert write_call_audio(str(tmp_path / "s.wav"), str(odd), 5.0) == str(odd)
    assert not (tmp_path / "s.wav").exists()

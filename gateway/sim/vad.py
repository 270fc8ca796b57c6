"""Energy-based voice activity detection standing in for the Realtime API's server VAD.

The simulator feeds every appended input chunk (decoded to PCM16) to an :class:`EnergyVad` and
turns its results into ``input_audio_buffer.speech_started`` / ``speech_stopped``. Audio is cut
into 10 ms analysis frames on a fixed grid counted from the first sample of the session, so the
events do not depend on how the client chunks its audio. A frame is speech when its RMS level
reaches the level that ``threshold`` maps to (see :attr:`VadSettings.level_dbfs`); speech
starts after :data:`START_FRAMES` speech frames in a row and stops after
``silence_duration_ms`` of non-speech frames. Times are milliseconds since the start of all
audio written this session, like the API's ``audio_start_ms`` / ``audio_end_ms``. Semantic VAD
has no model here; :meth:`EnergyVad.semantic` approximates it with a silence timeout chosen by
``eagerness``. Pure: no I/O, no clocks; time is the amount of audio fed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

#: Length of one analysis frame.
FRAME_MS: Final = 10
#: Consecutive speech frames (30 ms) needed before speech counts as started; a click or a
#: single loud frame does not start a turn. The onset reported is the first of these frames.
START_FRAMES: Final = 3
#: dBFS level for ``threshold`` 0 and the span up to ``threshold`` 1 (see ``level_dbfs``).
_FLOOR_DBFS: Final = -70.0
_SPAN_DB: Final = 60.0
#: Silence timeout standing in for semantic VAD, per ``eagerness``. The API's eagerness sets
#: how long the model waits for more words (its maximum waits are 8 s / 4 s / 2 s); without a
#: model we wait a fixed, plausible time: slower for ``low``, quicker for ``high``.
SEMANTIC_SILENCE_MS: Final = {"low": 1200, "medium": 700, "auto": 700, "high": 400}


@dataclass(frozen=True)
class VadSettings:
    """Server VAD parameters, as in ``audio.input.turn_detection`` of type ``server_vad``.

    Attributes:
        threshold: 0.0 to 1.0; higher needs louder audio (see :attr:`level_dbfs`).
        prefix_padding_ms: Audio before the detected onset included in ``audio_start_ms``.
        silence_duration_ms: Non-speech needed to end a turn.
    """

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be within 0..1, got {self.threshold}")
        if self.prefix_padding_ms < 0 or self.silence_duration_ms < 0:
            raise ValueError("prefix_padding_ms and silence_duration_ms must not be negative")

    @property
    def level_dbfs(self) -> float:
        """Frame RMS level (dB relative to full scale) that counts as speech.

        ``-70 + 60 * threshold``: 0.0 -> -70 dBFS (anything above line noise), 0.3 -> -52,
        0.5 (default) -> -40, 0.9 -> -16, 1.0 -> -10 dBFS (only very loud audio). A full-scale
        sine is -3 dBFS; normal telephone speech sits around -30 to -20 dBFS.
        """
        return _FLOOR_DBFS + _SPAN_DB * self.threshold

    @classmethod
    def from_turn_detection(cls, turn_detection: Mapping[str, Any]) -> VadSettings:
        """Settings from a validated ``server_vad`` turn detection object (missing -> default).

        Args:
            turn_detection: ``session.audio.input.turn_detection`` of type ``server_vad``.

        Returns:
            The matching settings.
        """
        default = cls()
        return cls(
            threshold=float(turn_detection.get("threshold", default.threshold)),
            prefix_padding_ms=int(
                turn_detection.get("prefix_padding_ms", default.prefix_padding_ms)
            ),
            silence_duration_ms=int(
                turn_detection.get("silence_duration_ms", default.silence_duration_ms)
            ),
        )


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began: ``audio_start_ms`` is the onset minus the prefix padding.

    Attributes:
        audio_start_ms: Session time (ms of audio since the session began) of the start of the
            user turn's audio, never before 0, the last :meth:`EnergyVad.reset` or the previous
            :class:`SpeechStopped`, since earlier audio belongs to an earlier buffer.
    """

    audio_start_ms: int


@dataclass(frozen=True)
class SpeechStopped:
    """Speech ended.

    Attributes:
        audio_end_ms: Session time at which the stop was decided: the end of the last speech
            frame plus ``silence_duration_ms`` (rounded up to whole 10 ms frames, at least one
            frame). As the API documents, it includes the silence, i.e. it is the end of the
            audio that goes into the user turn.
    """

    audio_end_ms: int


class EnergyVad:
    """Frame-energy VAD over a session's input audio.

    Feed decoded PCM16 in any chunk sizes (even split inside a sample); the events are the same
    as for one big chunk. Bytes that do not fill a 10 ms frame wait for the next feed.

    Args:
        settings: Threshold, prefix padding and silence duration.
        sample_rate: Rate of the PCM16 fed (8000 for G.711 sessions, 24000 for ``audio/pcm``);
            must be a multiple of 100 so a frame is whole samples.

    Raises:
        ValueError: Unusable sample rate.
    """

    def __init__(self, settings: VadSettings, sample_rate: int) -> None:
        if sample_rate <= 0 or sample_rate % (1000 // FRAME_MS):
            raise ValueError(f"sample rate must be a positive multiple of 100, got {sample_rate}")
        self._settings = settings
        self._rate = sample_rate
        self._frame = sample_rate * FRAME_MS // 1000
        self._rms_threshold = 32768.0 * 10 ** (settings.level_dbfs / 20)
        self._silence_frames = max(1, math.ceil(settings.silence_duration_ms / FRAME_MS))
        self._prefix = settings.prefix_padding_ms * sample_rate // 1000
        self._bytes_fed = 0
        self._pending = b""
        self._next_frame = 0  # sample index of the first not-yet-analysed sample
        self._floor = 0  # audio before this sample belongs to an earlier buffer
        self._speaking = False
        self._run = 0
        self._run_start = 0
        self._silence = 0

    @classmethod
    def semantic(cls, eagerness: str, sample_rate: int) -> EnergyVad:
        """An approximation of ``semantic_vad``: energy VAD with an eagerness-based timeout.

        Threshold 0.5 and prefix padding 300 ms as for server VAD; the silence needed to end a
        turn is :data:`SEMANTIC_SILENCE_MS` for ``eagerness`` (low 1200 ms, medium and auto
        700 ms, high 400 ms).

        Args:
            eagerness: ``low``, ``medium``, ``high`` or ``auto``.
            sample_rate: Rate of the PCM16 fed.

        Raises:
            ValueError: Unknown eagerness.
        """
        if eagerness not in SEMANTIC_SILENCE_MS:
            raise ValueError(f"unknown eagerness {eagerness!r}")
        return cls(VadSettings(silence_duration_ms=SEMANTIC_SILENCE_MS[eagerness]), sample_rate)

    @classmethod
    def for_turn_detection(
        cls, turn_detection: Mapping[str, Any] | None, sample_rate: int
    ) -> EnergyVad | None:
        """The VAD a session's ``audio.input.turn_detection`` asks for.

        Args:
            turn_detection: A validated turn detection object, or ``None`` (VAD off).
            sample_rate: Rate of the PCM16 fed.

        Returns:
            A server-VAD or semantic-VAD approximation, or ``None`` when turn detection is off.
        """
        if turn_detection is None:
            return None
        if turn_detection.get("type") == "semantic_vad":
            return cls.semantic(str(turn_detection.get("eagerness") or "auto"), sample_rate)
        return cls(VadSettings.from_turn_detection(turn_detection), sample_rate)

    @property
    def settings(self) -> VadSettings:
        """The settings this VAD runs with."""
        return self._settings

    @property
    def sample_rate(self) -> int:
        """Rate of the PCM16 this VAD expects."""
        return self._rate

    @property
    def position_ms(self) -> int:
        """Milliseconds of audio fed since creation, counting whole samples (session time).

        :meth:`reset` does not rewind it: like the API's ``audio_start_ms``, it counts all audio
        written during the session, including audio later cleared.
        """
        return (self._bytes_fed // 2) * 1000 // self._rate

    @property
    def speaking(self) -> bool:
        """Whether speech has started and not yet stopped."""
        return self._speaking

    def feed(self, pcm16: bytes) -> list[SpeechStarted | SpeechStopped]:
        """Analyse more input audio.

        Args:
            pcm16: Little-endian PCM16 mono at :attr:`sample_rate`, any length.

        Returns:
            The speech events completed by this audio, in order (possibly both kinds).
        """
        self._bytes_fed += len(pcm16)
        data = self._pending + pcm16
        frame_bytes = 2 * self._frame
        n_frames = len(data) // frame_bytes
        used = n_frames * frame_bytes
        self._pending = data[used:]
        if not n_frames:
            return []
        frames = np.frombuffer(data[:used], dtype="<i2").astype(np.float64)
        levels = np.sqrt(np.mean(frames.reshape(n_frames, self._frame) ** 2, axis=1))
        events: list[SpeechStarted | SpeechStopped] = []
        for is_speech in (levels >= self._rms_threshold).tolist():
            event = self._step(bool(is_speech))
            if event is not None:
                events.append(event)
        return events

    def reset(self) -> None:
        """Forget the current turn, e.g. after ``input_audio_buffer.clear`` or a manual commit.

        An ongoing turn ends without :class:`SpeechStopped` (its audio was cleared or already
        committed). Whole samples waiting to fill a frame are dropped (a dangling half sample
        is kept for the next feed to complete), the 10 ms frame grid restarts at the current
        position, and the next ``audio_start_ms`` is not earlier than this point.
        :attr:`position_ms` keeps counting: it is session time.
        """
        whole = len(self._pending) // 2
        self._next_frame += whole
        self._pending = self._pending[2 * whole :]
        self._floor = self._next_frame
        self._speaking = False
        self._run = 0
        self._silence = 0

    def _ms(self, sample: int) -> int:
        return sample * 1000 // self._rate

    def _step(self, is_speech: bool) -> SpeechStarted | SpeechStopped | None:
        start = self._next_frame
        end = start + self._frame
        self._next_frame = end
        if not self._speaking:
            if not is_speech:
                self._run = 0
                return None
            if self._run == 0:
                self._run_start = start
            self._run += 1
            if self._run < START_FRAMES:
                return None
            self._speaking = True
            self._silence = 0
            return SpeechStarted(self._ms(max(self._floor, self._run_start - self._prefix)))
        if is_speech:
            self._silence = 0
            return None
        self._silence += 1
        if self._silence < self._silence_frames:
            return None
        self._speaking = False
        self._run = 0
        self._floor = end
        return SpeechStopped(self._ms(end))

"""Turn latency, first agent audio and Realtime errors of one call, from its server events.

:class:`TurnMeter` watches the events the call's agent sees, in order:

* **Turn latency** is the time from ``input_audio_buffer.speech_stopped`` (the API decided
  the caller finished) to the first agent audio of the reply: the first
  ``response.output_audio.delta`` on a bridged call, ``output_audio_buffer.started`` on a
  call whose audio the API sends by SIP itself (direct and relayed calls). It is what the
  model and the network add, as the gateway sees them; the gateway's own media path (jitter
  buffer, playout lead) comes on top and is measured in ``bench/``. A speech stop with no
  reply (the caller went on talking, a tool answered silently) counts nothing.
* **First agent audio**: wall-clock time of the call's first agent audio.
* **Realtime errors** by the API's error code (``code``, else ``type``), at most
  :data:`MAX_CODES` distinct codes per call (the rest count under ``other``).

At most :data:`MAX_TURNS` latencies are kept per call (the first ones). Pure: the caller
passes the clocks; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from gateway.realtime import events as rt

__all__ = ["MAX_CODES", "MAX_TURNS", "OTHER_CODE", "TurnMeter"]

#: Latencies kept per call.
MAX_TURNS: Final = 200
#: Distinct error codes kept per call.
MAX_CODES: Final = 16
#: Where errors beyond :data:`MAX_CODES` distinct codes are counted.
OTHER_CODE: Final = "other"
_MAX_CODE_LEN: Final = 64


@dataclass
class TurnMeter:
    """Times a call's turns and counts its Realtime errors (module docstring)."""

    #: Turn latencies in milliseconds, in the order they happened.
    turn_latency_ms: list[int] = field(default_factory=list)
    #: Wall-clock time (``time.time()``) of the first agent audio, ``None`` before it.
    first_audio_at: float | None = None
    #: Realtime ``error`` events by code.
    realtime_errors: dict[str, int] = field(default_factory=dict)
    _stopped_at: float | None = None

    def on_event(self, event: Any, *, now: float, wall: float) -> None:
        """Account for one server event; ``now`` is a monotonic clock, ``wall`` the time."""
        if isinstance(event, rt.InputAudioBufferSpeechStopped):
            self._stopped_at = now
        elif isinstance(event, rt.InputAudioBufferSpeechStarted):
            self._stopped_at = None  # the caller goes on: the next stop times the turn
        elif isinstance(event, rt.ResponseOutputAudioDelta | rt.OutputAudioBufferStarted):
            if self.first_audio_at is None:
                self.first_audio_at = wall
            if self._stopped_at is not None:
                if len(self.turn_latency_ms) < MAX_TURNS:
                    self.turn_latency_ms.append(max(0, round((now - self._stopped_at) * 1000)))
                self._stopped_at = None
        elif isinstance(event, rt.ErrorEvent):
            self._count_error(event.error.code or event.error.type or "unknown")

    def _count_error(self, code: str) -> None:
        code = code[:_MAX_CODE_LEN]
        if code not in self.realtime_errors and len(self.realtime_errors) >= MAX_CODES:
            code = OTHER_CODE
        self.realtime_errors[code] = self.realtime_errors.get(code, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        """The record's fields: ``turn_latency_ms``, ``first_audio_at``, ``realtime_errors``."""
        return {"turn_latency_ms": list(self.turn_latency_ms),
                "first_audio_at": self.first_audio_at,
                "realtime_errors": dict(self.realtime_errors)}

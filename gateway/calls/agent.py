"""From a dialplan agent to the GA ``session.update`` that configures its Realtime session.

Pure. The audio formats come from the call's media bridge (native G.711 matching the SIP codec,
or PCM16 24 kHz when transcoding), so the session always speaks what the call carries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.dialplan import schema
from gateway.media.bridge import MediaBridge
from gateway.realtime import events as rt


def _format(wire: dict[str, Any]) -> rt.AudioFormat:
    return rt.AudioFormat(type=wire["type"], rate=wire.get("rate"))


def _transcription(agent: schema.AgentSpec) -> rt.InputTranscription | None:
    t = agent.transcription
    if t is None:
        return None
    return rt.InputTranscription(model=t.model, language=t.language, prompt=t.prompt)


def turn_detection(td: schema.ServerVad | schema.SemanticVad | None) -> rt.TurnDetection:
    """The typed GA turn detection for a dialplan setting (``None`` = manual turns)."""
    if td is None:
        return None
    if isinstance(td, schema.SemanticVad):
        return rt.SemanticVad(eagerness=td.eagerness, create_response=td.create_response,
                              interrupt_response=td.interrupt_response)
    return rt.ServerVad(threshold=td.threshold, prefix_padding_ms=td.prefix_padding_ms,
                        silence_duration_ms=td.silence_duration_ms,
                        create_response=td.create_response,
                        interrupt_response=td.interrupt_response,
                        idle_timeout_ms=td.idle_timeout_ms)


def session_config(agent: schema.AgentSpec, instructions: str, bridge: MediaBridge, *,
                   tools: Sequence[Mapping[str, Any]] = ()) -> rt.SessionConfig:
    """The ``session`` of the ``session.update`` that sets ``agent`` up on this call."""
    fmt = _format(bridge.api_format)
    transcription = _transcription(agent)
    return rt.SessionConfig(
        instructions=instructions,
        tools=tuple(tools),
        output_modalities=("audio",),
        audio=rt.AudioConfig(
            input=rt.AudioInputConfig(format=fmt, transcription=transcription,
                                      turn_detection=turn_detection(agent.turn_detection)),
            output=rt.AudioOutputConfig(format=fmt, voice=agent.voice),
        ),
    )


def sip_session_config(agent: schema.AgentSpec, instructions: str, *, model: str,
                       tools: Sequence[Mapping[str, Any]] = ()) -> rt.SessionConfig:
    """The session to accept a call OpenAI's SIP endpoint answered with (Realtime Calls).

    No ``audio.*.format``: on a SIP call the format comes from the SDP, and forcing one
    distorts or silences the audio (a known pitfall; the Agents SDK omits it too).
    """
    transcription = _transcription(agent)
    return rt.SessionConfig(
        model=agent.model or model,
        instructions=instructions,
        tools=tuple(tools),
        output_modalities=("audio",),
        audio=rt.AudioConfig(
            input=rt.AudioInputConfig(transcription=transcription,
                                      turn_detection=turn_detection(agent.turn_detection)),
            output=rt.AudioOutputConfig(voice=agent.voice),
        ),
    )

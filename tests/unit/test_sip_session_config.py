"""The session a Realtime Calls ``accept`` carries: the agent's, without any audio format."""

from __future__ import annotations

import pytest

from gateway.calls.agent import sip_session_config
from gateway.dialplan import parse_dialplan

pytestmark = pytest.mark.unit

PLAN = """
agents:
  desk:
    instructions: You run the front desk.
    voice: cedar
    model: gpt-realtime-mini
    turn_detection: {type: semantic_vad, eagerness: low}
    transcription: {model: gpt-4o-mini-transcribe, language: en}
routes:
  - name: all
    agent: desk
"""


def test_the_accept_session_has_the_agent_and_no_audio_format() -> None:
    agent = parse_dialplan(PLAN, "plan.yaml").agents["desk"]
    tools = [{"type": "function", "name": "lookup", "description": "", "parameters": {}}]
    wire = sip_session_config(agent, "You run the front desk.", model="gpt-realtime-2.1",
                              tools=tools).to_wire()
    assert wire["type"] == "realtime" and wire["model"] == "gpt-realtime-mini"
    assert wire["instructions"] == "You run the front desk."
    assert wire["tools"] == tools and wire["output_modalities"] == ["audio"]
    assert wire["audio"]["output"] == {"voice": "cedar"}
    audio_in = wire["audio"]["input"]
    assert "format" not in audio_in  # SDP decides on a SIP call; forcing one breaks audio
    assert audio_in["turn_detection"]["type"] == "semantic_vad"
    assert audio_in["transcription"]["model"] == "gpt-4o-mini-transcribe"

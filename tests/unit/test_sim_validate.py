"""session.update validation of the simulator: GA defaults, partial updates, API error codes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from openai.types.realtime.realtime_audio_input_turn_detection import SemanticVad, ServerVad
from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest
from openai.types.realtime.realtime_session_create_response import RealtimeSessionCreateResponse
from openai.types.realtime.session_created_event import SessionCreatedEvent
from openai.types.realtime.session_updated_event import SessionUpdatedEvent

from gateway.sim.validate import (
    BETA_MESSAGE,
    DEFAULT_INSTRUCTIONS,
    SessionError,
    apply_session_update,
    check_voice_change,
    default_session,
)

pytestmark = pytest.mark.unit

MODEL = "gpt-realtime-2.1"


def fresh() -> dict[str, Any]:
    return default_session(MODEL, session_id="sess_test", now=1_700_000_000)


def update(session: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return apply_session_update(session, {"type": "realtime", **fields})


def refused(session: dict[str, Any], body: Any) -> SessionError:
    before = copy.deepcopy(session)
    with pytest.raises(SessionError) as info:
        apply_session_update(session, body)
    assert session == before, "a refused update must not change the session"
    assert info.value.type == "invalid_request_error"
    return info.value


def sdk_created(session: dict[str, Any]) -> RealtimeSessionCreateRequest:
    event = SessionCreatedEvent.model_validate(
        {"type": "session.created", "event_id": "event_1", "session": session}
    )
    assert isinstance(event.session, RealtimeSessionCreateRequest)
    return event.session


# --- defaults -----------------------------------------------------------------------------


def test_default_session_has_every_ga_field_with_api_defaults() -> None:
    s = fresh()
    assert s["type"] == "realtime"
    assert s["object"] == "realtime.session"
    assert s["id"] == "sess_test"
    assert s["model"] == MODEL
    assert s["output_modalities"] == ["audio"]
    assert s["instructions"] == DEFAULT_INSTRUCTIONS
    assert s["tools"] == []
    assert s["tool_choice"] == "auto"
    assert s["max_output_tokens"] == "inf"
    assert s["tracing"] is None
    assert s["truncation"] == "auto"
    assert s["prompt"] is None
    assert s["include"] is None
    assert s["expires_at"] == 1_700_000_000 + 3600
    assert s["audio"]["input"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": None,
        "noise_reduction": None,
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "create_response": True,
            "interrupt_response": True,
            "idle_timeout_ms": None,
        },
    }
    assert s["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "marin",
        "speed": 1.0,
    }


def test_default_session_validates_against_sdk_session_created() -> None:
    sdk = sdk_created(fresh())
    RealtimeSessionCreateResponse.model_validate(fresh())
    assert sdk.audio is not None and sdk.audio.input is not None
    assert isinstance(sdk.audio.input.turn_detection, ServerVad)
    assert sdk.audio.input.turn_detection.threshold == 0.5


def test_default_ids_are_fresh_and_shaped_like_the_api() -> None:
    a, b = default_session(MODEL), default_session(MODEL)
    assert a["id"] != b["id"]
    assert a["id"].startswith("sess_") and len(a["id"]) == 26


def test_sip_session_uses_negotiated_g711() -> None:
    s = default_session(MODEL, sip=True)
    assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert s["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    sdk_created(s)


# --- partial updates ----------------------------------------------------------------------


def test_update_changes_only_present_fields_and_does_not_mutate() -> None:
    s = fresh()
    before = copy.deepcopy(s)
    new = update(s, instructions="Be brief.")
    assert s == before
    assert new["instructions"] == "Be brief."
    assert {k: v for k, v in new.items() if k != "instructions"} == {
        k: v for k, v in before.items() if k != "instructions"
    }


def test_update_result_does_not_alias_the_update() -> None:
    parameters: dict[str, Any] = {"type": "object"}
    new = update(fresh(), tools=[{"type": "function", "name": "f", "parameters": parameters}])
    parameters["type"] = "changed"
    assert new["tools"][0]["parameters"] == {"type": "object"}


def test_threshold_only_update_keeps_other_vad_fields() -> None:
    new = update(
        fresh(), audio={"input": {"turn_detection": {"type": "server_vad", "threshold": 0.8}}}
    )
    td = new["audio"]["input"]["turn_detection"]
    assert td["threshold"] == 0.8
    assert td["prefix_padding_ms"] == 300 and td["silence_duration_ms"] == 500
    assert td["create_response"] is True and td["interrupt_response"] is True
    again = update(new, audio={"input": {"turn_detection": {"silence_duration_ms": 200}}})
    assert again["audio"]["input"]["turn_detection"]["threshold"] == 0.8
    assert again["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 200


def test_turn_detection_null_disables_vad_and_can_be_re_enabled() -> None:
    off = update(fresh(), audio={"input": {"turn_detection": None}})
    assert off["audio"]["input"]["turn_detection"] is None
    assert off["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    sdk_created(off)
    on = update(off, audio={"input": {"turn_detection": {"type": "server_vad", "threshold": 0.3}}})
    assert on["audio"]["input"]["turn_detection"]["threshold"] == 0.3
    assert on["audio"]["input"]["turn_detection"]["prefix_padding_ms"] == 300


def test_switching_vad_type_replaces_object_with_that_types_defaults() -> None:
    s = update(
        fresh(), audio={"input": {"turn_detection": {"type": "server_vad", "threshold": 0.9}}}
    )
    sem = update(
        s, audio={"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}
    )
    assert sem["audio"]["input"]["turn_detection"] == {
        "type": "semantic_vad",
        "eagerness": "high",
        "create_response": True,
        "interrupt_response": True,
    }
    sdk = sdk_created(sem)
    assert sdk.audio is not None and sdk.audio.input is not None
    assert isinstance(sdk.audio.input.turn_detection, SemanticVad)
    back = update(sem, audio={"input": {"turn_detection": {"type": "server_vad"}}})
    assert back["audio"]["input"]["turn_detection"]["threshold"] == 0.5


def test_semantic_vad_rejects_server_vad_fields() -> None:
    e = refused(
        fresh(),
        {
            "type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "semantic_vad", "threshold": 0.5}}},
        },
    )
    assert e.code == "unknown_parameter"
    assert e.param == "session.audio.input.turn_detection.threshold"


def test_turn_detection_without_type_when_disabled_is_missing_parameter() -> None:
    off = update(fresh(), audio={"input": {"turn_detection": None}})
    e = refused(off, {"type": "realtime", "audio": {"input": {"turn_detection": {"threshold": 1}}}})
    assert e.code == "missing_required_parameter"
    assert e.param == "session.audio.input.turn_detection.type"


def test_full_phone_leg_update_is_accepted_and_sdk_valid() -> None:
    body = {
        "type": "realtime",
        "model": MODEL,
        "output_modalities": ["audio"],
        "instructions": "You are a phone agent. Be brief.",
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "noise_reduction": {"type": "far_field"},
                "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "create_response": True,
                    "interrupt_response": True,
                    "idle_timeout_ms": 8000,
                },
            },
            "output": {"format": {"type": "audio/pcma"}, "voice": "cedar", "speed": 1.25},
        },
        "tools": [
            {
                "type": "function",
                "name": "transfer_call",
                "description": "Transfer to a human",
                "parameters": {
                    "type": "object",
                    "properties": {"dept": {"type": "string"}},
                    "required": ["dept"],
                },
            }
        ],
        "tool_choice": {"type": "function", "name": "transfer_call"},
        "max_output_tokens": 4096,
        "truncation": {"type": "retention_ratio", "retention_ratio": 0.8},
        "tracing": "auto",
        "include": ["item.input_audio_transcription.logprobs"],
        "prompt": {"id": "pmpt_1", "version": "2", "variables": {"city": "Oslo"}},
    }
    new = apply_session_update(fresh(), body)
    assert new["audio"]["input"]["noise_reduction"] == {"type": "far_field", "strength": 1.0}
    assert new["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 8000
    assert new["audio"]["output"] == {
        "format": {"type": "audio/pcma"},
        "voice": "cedar",
        "speed": 1.25,
    }
    assert new["max_output_tokens"] == 4096
    SessionUpdatedEvent.model_validate(
        {"type": "session.updated", "event_id": "event_2", "session": new}
    )
    sdk_created(new)


def test_null_clears_optional_blocks() -> None:
    s = update(
        fresh(),
        audio={
            "input": {
                "noise_reduction": {"type": "near_field", "strength": 0.4},
                "transcription": {"model": "whisper-1"},
            }
        },
    )
    assert s["audio"]["input"]["noise_reduction"] == {"type": "near_field", "strength": 0.4}
    # Omitting strength keeps the current strength.
    s = update(s, audio={"input": {"noise_reduction": {"type": "far_field"}}})
    assert s["audio"]["input"]["noise_reduction"] == {"type": "far_field", "strength": 0.4}
    s = update(s, audio={"input": {"transcription": {"language": "de"}}})
    assert s["audio"]["input"]["transcription"] == {"model": "whisper-1", "language": "de"}
    cleared = update(s, audio={"input": {"noise_reduction": None, "transcription": None}})
    assert cleared["audio"]["input"]["noise_reduction"] is None
    assert cleared["audio"]["input"]["transcription"] is None


def test_empty_values_clear_instructions_and_tools() -> None:
    s = update(fresh(), tools=[{"type": "function", "name": "a", "parameters": {}}])
    s = update(s, instructions="", tools=[])
    assert s["instructions"] == "" and s["tools"] == []


def test_pcm_rate_defaults_to_24000() -> None:
    s = update(fresh(), audio={"output": {"format": {"type": "audio/pcm"}}})
    assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}


def test_same_model_is_accepted_other_model_refused() -> None:
    assert update(fresh(), model=MODEL)["model"] == MODEL
    e = refused(fresh(), {"type": "realtime", "model": "gpt-realtime-2.1-mini"})
    assert e.code == "invalid_value" and e.param == "session.model"


def test_tracing_cannot_change_once_enabled() -> None:
    s = update(fresh(), tracing={"workflow_name": "calls"})
    assert update(s, tracing={"workflow_name": "calls"})["tracing"] == {"workflow_name": "calls"}
    e = refused(s, {"type": "realtime", "tracing": "auto"})
    assert e.param == "session.tracing"


# --- type and beta shape ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"modalities": ["text", "audio"]},
        {"input_audio_format": "pcm16"},
        {"output_audio_format": "g711_ulaw"},
        {"voice": "alloy"},
        {"turn_detection": {"type": "server_vad"}},
        {"input_audio_transcription": {"model": "whisper-1"}},
        {"input_audio_noise_reduction": {"type": "near_field"}},
        {"max_response_output_tokens": 100},
        {"temperature": 0.8},
        {"speed": 1.0},
        {"type": "realtime", "voice": "alloy"},
        {"type": "realtime", "audio": {"input": {"format": "pcm16"}}},
        {"type": "realtime", "audio": {"output": {"format": "g711_alaw"}}},
    ],
)
def test_beta_shape_is_refused_with_close_4000(body: dict[str, Any]) -> None:
    e = refused(fresh(), body)
    assert e.code == "beta_api_shape_disabled"
    assert e.message == BETA_MESSAGE
    assert e.close_code == 4000
    assert e.to_error() == {
        "type": "invalid_request_error",
        "code": "beta_api_shape_disabled",
        "message": BETA_MESSAGE,
        "param": None,
    }


def test_session_type_is_required() -> None:
    e = refused(fresh(), {"instructions": "hi"})
    assert e.code == "missing_required_parameter" and e.param == "session.type"
    assert e.close_code is None


def test_transcription_sessions_are_not_supported() -> None:
    e = refused(fresh(), {"type": "transcription"})
    assert e.param == "session.type"
    assert "transcription" in e.message and "simulator" in e.message


def test_unknown_session_type() -> None:
    e = refused(fresh(), {"type": "translation"})
    assert e.code == "invalid_value" and e.param == "session.type"


def test_session_must_be_an_object() -> None:
    e = refused(fresh(), "realtime")
    assert e.code == "invalid_type" and e.param == "session"


# --- unknown parameters, types, values ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"foo": 1}, "session.foo"),
        ({"id": "sess_x"}, "session.id"),
        ({"audio": {"inputs": {}}}, "session.audio.inputs"),
        ({"audio": {"input": {"format": {"type": "audio/pcm", "bits": 16}}}}, None),
        ({"audio": {"input": {"format": {"type": "audio/pcmu", "rate": 8000}}}}, None),
        ({"audio": {"input": {"turn_detection": {"type": "server_vad", "x": 1}}}}, None),
        ({"audio": {"output": {"pitch": 2}}}, "session.audio.output.pitch"),
        ({"tools": [{"type": "function", "name": "f", "parameters": {}, "strict": True}]}, None),
        ({"tool_choice": {"type": "function", "name": "f", "extra": 1}}, None),
        ({"truncation": {"type": "retention_ratio", "retention_ratio": 0.5, "x": 1}}, None),
    ],
)
def test_unknown_parameters_at_any_depth(body: dict[str, Any], param: str | None) -> None:
    e = refused(fresh(), {"type": "realtime", **body})
    assert e.code == "unknown_parameter"
    assert e.param is not None and e.message == f"Unknown parameter: '{e.param}'."
    if param is not None:
        assert e.param == param


def test_unknown_parameter_path_inside_format() -> None:
    e = refused(
        fresh(),
        {"type": "realtime", "audio": {"input": {"format": {"type": "audio/pcm", "bits": 16}}}},
    )
    assert e.param == "session.audio.input.format.bits"


TD = "session.audio.input.turn_detection"


def td(**fields: Any) -> dict[str, Any]:
    """A session body setting ``audio.input.turn_detection`` fields."""
    return {"audio": {"input": {"turn_detection": fields}}}


def fmt(side: str, **fields: Any) -> dict[str, Any]:
    """A session body setting ``audio.<side>.format``."""
    return {"audio": {side: {"format": fields}}}


def out(**fields: Any) -> dict[str, Any]:
    """A session body setting ``audio.output`` fields."""
    return {"audio": {"output": fields}}


def fn(name: str = "f", **fields: Any) -> dict[str, Any]:
    """A function tool."""
    return {"type": "function", "name": name, "parameters": {}, **fields}


@pytest.mark.parametrize(
    ("body", "param", "expected", "got"),
    [
        ({"instructions": 3}, "session.instructions", "a string", "an integer"),
        ({"instructions": None}, "session.instructions", "a string", "null"),
        ({"audio": "x"}, "session.audio", "an object", "a string"),
        (
            {"audio": {"input": {"format": "audio/pcm"}}},
            "session.audio.input.format",
            "an object",
            "a string",
        ),
        (out(speed="fast"), "session.audio.output.speed", "a number", "a string"),
        (out(speed=True), "session.audio.output.speed", "a number", "a boolean"),
        (td(prefix_padding_ms=300.5), f"{TD}.prefix_padding_ms", "an integer", "a decimal"),
        (td(create_response=1), f"{TD}.create_response", "a boolean", "an integer"),
        ({"tools": {}}, "session.tools", "an array", "an object"),
        ({"tools": [fn(parameters="{}")]}, "session.tools[0].parameters", "an object", "a string"),
        ({"max_output_tokens": 10.5}, "session.max_output_tokens", "an integer", "a decimal"),
        ({"output_modalities": "audio"}, "session.output_modalities", "an array", "a string"),
    ],
)
def test_wrong_types(body: dict[str, Any], param: str, expected: str, got: str) -> None:
    e = refused(fresh(), {"type": "realtime", **body})
    assert e.code == "invalid_type"
    assert e.param == param
    assert e.message == (f"Invalid type for '{param}': expected {expected}, but got {got} instead.")


def test_invalid_type_message_matches_the_api() -> None:
    e = refused(fresh(), {"type": "realtime", "instructions": 5})
    assert e.message == (
        "Invalid type for 'session.instructions': expected a string, but got an integer instead."
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (out(voice="nova"), "session.audio.output.voice"),
        (out(voice={"name": "v"}), None),
        (fmt("input", type="audio/opus"), "session.audio.input.format.type"),
        (fmt("input", type="audio/pcm", rate=16000), "session.audio.input.format.rate"),
        (fmt("output", type="audio/pcm", rate=8000), "session.audio.output.format.rate"),
        (td(type="server_vad", threshold=1.5), f"{TD}.threshold"),
        (td(type="server_vad", threshold=-0.1), f"{TD}.threshold"),
        (td(type="server_vad", prefix_padding_ms=-1), f"{TD}.prefix_padding_ms"),
        (td(type="server_vad", silence_duration_ms=-5), f"{TD}.silence_duration_ms"),
        (td(type="server_vad", idle_timeout_ms=-5), f"{TD}.idle_timeout_ms"),
        (td(type="semantic_vad", eagerness="eager"), f"{TD}.eagerness"),
        (td(type="vad"), f"{TD}.type"),
        (
            {"audio": {"input": {"noise_reduction": {"type": "studio"}}}},
            "session.audio.input.noise_reduction.type",
        ),
        (out(speed=0.2), "session.audio.output.speed"),
        (out(speed=1.6), "session.audio.output.speed"),
        ({"output_modalities": ["text", "audio"]}, "session.output_modalities"),
        ({"output_modalities": []}, "session.output_modalities"),
        ({"output_modalities": ["video"]}, "session.output_modalities[0]"),
        ({"tool_choice": "sometimes"}, "session.tool_choice"),
        ({"tool_choice": {"type": "function", "name": "missing"}}, "session.tool_choice.name"),
        ({"max_output_tokens": 0}, "session.max_output_tokens"),
        ({"max_output_tokens": 4097}, "session.max_output_tokens"),
        ({"max_output_tokens": "infinite"}, "session.max_output_tokens"),
        ({"tools": [fn(type="retrieval")]}, "session.tools[0].type"),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "session.tools[0].type"),
        ({"tools": [fn("bad name!")]}, "session.tools[0].name"),
        ({"tools": [fn("x" * 65)]}, "session.tools[0].name"),
        ({"tools": [fn("a"), fn("a")]}, "session.tools[1].name"),
        ({"truncation": "never"}, "session.truncation"),
        ({"include": ["everything"]}, "session.include[0]"),
    ],
)
def test_invalid_values(body: dict[str, Any], param: str | None) -> None:
    e = refused(fresh(), {"type": "realtime", **body})
    assert e.code in ("invalid_value", "unknown_parameter")
    if param is not None:
        assert e.code == "invalid_value"
        assert e.param == param


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "function", "parameters": {}}, "session.tools[0].name"),
        ({"type": "function", "name": "f"}, "session.tools[0].parameters"),
        ({"name": "f", "parameters": {}}, "session.tools[0].type"),
    ],
)
def test_tool_required_fields(tool: dict[str, Any], param: str) -> None:
    e = refused(fresh(), {"type": "realtime", "tools": [tool]})
    assert e.code == "missing_required_parameter" and e.param == param


@pytest.mark.parametrize(
    "voice",
    [*"alloy ash ballad coral echo sage shimmer verse marin cedar".split(), {"id": "voice_123"}],
)
def test_every_voice_is_accepted(voice: str | dict[str, str]) -> None:
    new = update(fresh(), audio={"output": {"voice": voice}})
    assert new["audio"]["output"]["voice"] == voice
    sdk_created(new)


@pytest.mark.parametrize("value", [1, 4096, "inf"])
def test_max_output_tokens_limits(value: int | str) -> None:
    assert update(fresh(), max_output_tokens=value)["max_output_tokens"] == value


@pytest.mark.parametrize("choice", ["none", "auto", "required"])
def test_tool_choice_modes(choice: str) -> None:
    assert update(fresh(), tool_choice=choice)["tool_choice"] == choice


def test_vad_boundary_values_are_accepted() -> None:
    td = {"type": "server_vad", "threshold": 0, "prefix_padding_ms": 0, "silence_duration_ms": 0}
    new = update(fresh(), audio={"input": {"turn_detection": td}})
    assert new["audio"]["input"]["turn_detection"]["threshold"] == 0.0
    assert update(fresh(), audio={"output": {"speed": 0.25}})["audio"]["output"]["speed"] == 0.25
    assert update(fresh(), audio={"output": {"speed": 1.5}})["audio"]["output"]["speed"] == 1.5


def test_error_stops_whole_update() -> None:
    s = fresh()
    refused(s, {"type": "realtime", "instructions": "new", "audio": {"output": {"voice": "x"}}})
    assert s["instructions"] == DEFAULT_INSTRUCTIONS


# --- voice lock ---------------------------------------------------------------------------


def test_voice_change_refused_after_audio() -> None:
    s = fresh()
    new = update(s, audio={"output": {"voice": "ash"}})
    check_voice_change(s, new, audio_emitted=False)
    with pytest.raises(SessionError) as info:
        check_voice_change(s, new, audio_emitted=True)
    assert info.value.code == "cannot_update_voice"
    assert info.value.param == "session.audio.output.voice"
    assert "audio" in info.value.message


def test_same_voice_is_fine_after_audio() -> None:
    s = fresh()
    new = update(s, audio={"output": {"voice": "marin", "speed": 1.1}})
    check_voice_change(s, new, audio_emitted=True)

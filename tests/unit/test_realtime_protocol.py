"""Events, session object and wire codec of the Realtime client, checked against the SDK."""

from __future__ import annotations

import base64
import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from openai.types.realtime.realtime_session_create_request_param import (
    RealtimeSessionCreateRequestParam,
)

from gateway.errors import RealtimeError
from gateway.media.g711 import ulaw_decode
from gateway.realtime import events as ev
from gateway.realtime.events import (
    SERVER_EVENT_CLASSES,
    UNSET,
    AudioConfig,
    AudioFormat,
    AudioInputConfig,
    AudioOutputConfig,
    ClientEvent,
    FunctionTool,
    InputTranscription,
    NoiseReduction,
    SemanticVad,
    ServerVad,
    SessionConfig,
)
from gateway.realtime.protocol import ProtocolError, append_message, decode, encode, to_wire

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures" / "realtime"
CLIENT_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeClientEvent)
SERVER_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeServerEvent)
SESSION_ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeSessionCreateRequestParam)
BETA_KEYS = {
    "modalities",
    "input_audio_format",
    "output_audio_format",
    "input_audio_transcription",
    "input_audio_noise_reduction",
    "max_response_output_tokens",
    "temperature",
}

PHONE_SESSION = SessionConfig(
    model="gpt-realtime-2.1",
    instructions="You are a phone agent. Be brief.",
    output_modalities=("audio",),
    audio=AudioConfig(
        input=AudioInputConfig(
            format=AudioFormat.pcmu(),
            noise_reduction=NoiseReduction("far_field", strength=0.8),
            transcription=InputTranscription("gpt-4o-mini-transcribe", language="en"),
            turn_detection=ServerVad(
                threshold=0.5,
                prefix_padding_ms=300,
                silence_duration_ms=500,
                create_response=True,
                interrupt_response=True,
                idle_timeout_ms=8000,
            ),
        ),
        output=AudioOutputConfig(format=AudioFormat.pcmu(), voice="marin", speed=1.1),
    ),
    tools=(
        FunctionTool(
            name="transfer_call",
            description="Transfer to a human",
            parameters={
                "type": "object",
                "properties": {"dept": {"type": "string"}},
                "required": ["dept"],
            },
        ),
    ),
    tool_choice="auto",
    max_output_tokens="inf",
    truncation="auto",
    extra={"tracing": "auto", "reasoning": {"effort": "low"}},
)

CLIENT_EVENTS: list[ClientEvent] = [
    ev.SessionUpdate(PHONE_SESSION),
    ev.SessionUpdate(SessionConfig(instructions=""), event_id="evt_1"),
    ev.SessionUpdate(
        SessionConfig(
            audio=AudioConfig(
                input=AudioInputConfig(
                    format=AudioFormat.pcm(),
                    turn_detection=None,
                    noise_reduction=None,
                    transcription=None,
                )
            )
        )
    ),
    ev.SessionUpdate(
        SessionConfig(
            output_modalities=("text",),
            tools=(),
            tool_choice={"type": "function", "name": "transfer_call"},
            max_output_tokens=1024,
            truncation={"type": "retention_ratio", "retention_ratio": 0.8},
            audio=AudioConfig(
                input=AudioInputConfig(
                    format=AudioFormat.pcma(),
                    turn_detection=SemanticVad(eagerness="high", interrupt_response=True),
                ),
                output=AudioOutputConfig(format=AudioFormat.pcma()),
            ),
        )
    ),
    ev.InputAudioBufferAppend(b"\xff" * 320),
    ev.InputAudioBufferAppend(b"\x00\x01\x02", event_id='evt_"quoted"'),
    ev.InputAudioBufferCommit(),
    ev.InputAudioBufferCommit(event_id="evt_2"),
    ev.InputAudioBufferClear(),
    ev.ConversationItemCreate.user_text("Hi, it's me — ünïcödé"),
    ev.ConversationItemCreate.system_text("Caller is VIP", event_id="evt_3"),
    ev.ConversationItemCreate.function_call_output("call_abc", '{"ok":true}'),
    ev.ConversationItemCreate(
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]},
        previous_item_id="root",
    ),
    ev.ConversationItemTruncate("item_1", 0, 1460),
    ev.ConversationItemTruncate("item_1", 0, 0, event_id="evt_4"),
    ev.ConversationItemDelete("item_2"),
    ev.ResponseCreate(),
    ev.ResponseCreate(
        {"instructions": "Say exactly 'Thanks for calling' now.", "metadata": {"turn": "1"}},
        event_id="evt_5",
    ),
    ev.ResponseCreate({"conversation": "none", "output_modalities": ["text"]}),
    ev.ResponseCancel(),
    ev.ResponseCancel("resp_1", event_id="evt_6"),
    ev.OutputAudioBufferClear(),
]


def assert_no_extra(value: Any, path: str = "$") -> None:
    """Fail when pydantic kept a field the SDK's model does not declare."""
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"{path}: SDK ignored fields {sorted(value.model_extra)}"
        for name in type(value).model_fields:
            assert_no_extra(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            assert_no_extra(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            assert_no_extra(item, f"{path}.{key}")


def walk_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_keys(item)


def fixture_lines(name: str) -> list[str]:
    return (FIXTURES / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()


ALL_FIXTURES = [
    "audio_response",
    "text_response",
    "function_call",
    "vad_events",
    "errors",
    "unknown_events",
]
KNOWN_LINES = [
    line for name in ALL_FIXTURES if name != "unknown_events" for line in fixture_lines(name)
]


# --------------------------------------------------------------------------- client events


def test_client_event_samples_cover_the_whole_union() -> None:
    assert {type(e) for e in CLIENT_EVENTS} == set(typing.get_args(ClientEvent))


@pytest.mark.parametrize("event", CLIENT_EVENTS, ids=lambda e: type(e).__name__)
def test_encoded_client_event_is_accepted_whole_by_the_sdk(event: ClientEvent) -> None:
    text = encode(event)
    sent = json.loads(text)
    model = CLIENT_ADAPTER.validate_json(text)
    assert model.type == event.type == sent["type"]
    assert_no_extra(model)
    # Everything we sent was understood, unchanged.
    assert model.model_dump(mode="json", exclude_unset=True) == sent
    assert sent == json.loads(json.dumps(to_wire(event)))
    if event.event_id is None:
        assert "event_id" not in sent
    else:
        assert sent["event_id"] == event.event_id


def test_audio_append_carries_the_bytes_as_base64() -> None:
    pcm = bytes(range(256)) * 3
    sent = json.loads(encode(ev.InputAudioBufferAppend(pcm)))
    assert sent == {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
    assert base64.b64decode(sent["audio"]) == pcm


@pytest.mark.parametrize("size", [0, 1, 2, 3, 320, 961])
def test_the_append_message_bytes_are_the_encoded_append(size: int) -> None:
    pcm = bytes((i * 37) % 256 for i in range(size))
    assert append_message(pcm) == encode(ev.InputAudioBufferAppend(pcm)).encode()


def test_optional_client_fields_are_omitted_not_null() -> None:
    assert json.loads(encode(ev.ResponseCreate())) == {"type": "response.create"}
    assert json.loads(encode(ev.ResponseCancel())) == {"type": "response.cancel"}
    create = json.loads(encode(ev.ConversationItemCreate.user_text("x")))
    assert "previous_item_id" not in create


def test_function_call_output_item() -> None:
    sent = json.loads(encode(ev.ConversationItemCreate.function_call_output("call_9", "{}")))
    assert sent["item"] == {"type": "function_call_output", "call_id": "call_9", "output": "{}"}


def test_encode_refuses_values_json_cannot_carry() -> None:
    with pytest.raises(TypeError):
        encode(ev.ResponseCreate({"metadata": {"x": object()}}))


# --------------------------------------------------------------------------- session object


def test_phone_session_is_the_ga_shape() -> None:
    wire = PHONE_SESSION.to_wire()
    assert SESSION_ADAPTER.validate_python(wire) == wire
    assert wire["type"] == "realtime"
    assert list(wire)[0] == "type"
    assert wire["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert wire["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 8000
    assert wire["audio"]["output"] == {
        "format": {"type": "audio/pcmu"},
        "voice": "marin",
        "speed": 1.1,
    }
    assert wire["tracing"] == "auto"
    assert wire["reasoning"] == {"effort": "low"}
    assert not BETA_KEYS & set(walk_keys(wire))
    assert "voice" not in wire and "turn_detection" not in wire


def test_unset_fields_are_omitted() -> None:
    assert SessionConfig().to_wire() == {"type": "realtime"}
    wire = SessionConfig(audio=AudioConfig(input=AudioInputConfig())).to_wire()
    assert wire == {"type": "realtime", "audio": {"input": {}}}


def test_explicit_null_differs_from_unset() -> None:
    off = AudioInputConfig(turn_detection=None, noise_reduction=None, transcription=None)
    assert off.to_wire() == {"turn_detection": None, "noise_reduction": None, "transcription": None}
    assert AudioInputConfig(turn_detection=UNSET).to_wire() == {}
    # The SDK's TypedDict param only allows null for turn_detection; its event model (and
    # the API reference of session.update) allows it for all three.
    vad_off = SessionConfig(audio=AudioConfig(input=AudioInputConfig(turn_detection=None)))
    assert SESSION_ADAPTER.validate_python(vad_off.to_wire()) == vad_off.to_wire()
    text = encode(ev.SessionUpdate(SessionConfig(audio=AudioConfig(input=off))))
    model = CLIENT_ADAPTER.validate_json(text)
    assert model.model_dump(mode="json", exclude_unset=True) == json.loads(text)


def test_pcm_format_always_has_rate_24000() -> None:
    assert AudioFormat("audio/pcm").to_wire() == {"type": "audio/pcm", "rate": 24000}
    assert AudioFormat.pcm().sample_rate == 24000
    assert AudioFormat.pcmu().sample_rate == AudioFormat.pcma().sample_rate == 8000


@pytest.mark.parametrize(
    "build",
    [
        lambda: AudioFormat("audio/pcm", 16000),
        lambda: AudioFormat("audio/pcmu", 8000),
        lambda: AudioFormat("pcm16"),  # type: ignore[arg-type]
        lambda: ServerVad(threshold=1.5),
        lambda: ServerVad(silence_duration_ms=-1),
        lambda: SemanticVad(eagerness="eager"),  # type: ignore[arg-type]
        lambda: NoiseReduction("studio"),  # type: ignore[arg-type]
        lambda: AudioOutputConfig(speed=2.0),
        lambda: SessionConfig(output_modalities=("audio", "text")),
        lambda: SessionConfig(max_output_tokens=0),
        lambda: SessionConfig(extra={"modalities": ["audio"]}),
        lambda: SessionConfig(extra={"input_audio_format": "g711_ulaw"}),
        lambda: SessionConfig(extra={"voice": "marin"}),
        lambda: SessionConfig(extra={"type": "transcription"}),
    ],
)
def test_invalid_session_values_are_refused(build: Any) -> None:
    with pytest.raises(ValueError):
        build()


def test_extra_merges_under_typed_fields() -> None:
    config = SessionConfig(
        audio=AudioConfig(output=AudioOutputConfig(speed=1.0)),
        extra={"audio": {"output": {"voice": {"id": "voice_1234"}, "speed": 0.5}}},
    )
    assert config.to_wire()["audio"]["output"] == {"voice": {"id": "voice_1234"}, "speed": 1.0}


def test_merged_session_keeps_earlier_fields_and_applies_nulls() -> None:
    first = SessionConfig(
        model="gpt-realtime-2.1",
        instructions="A",
        audio=AudioConfig(
            input=AudioInputConfig(format=AudioFormat.pcmu(), turn_detection=ServerVad()),
            output=AudioOutputConfig(voice="marin"),
        ),
        tools=(FunctionTool(name="a"), FunctionTool(name="b")),
        extra={"tracing": "auto"},
    )
    second = SessionConfig(
        instructions="B",
        audio=AudioConfig(input=AudioInputConfig(turn_detection=None)),
        tools=(FunctionTool(name="c"),),
        extra={"reasoning": {"effort": "low"}},
    )
    merged = first.merged(second)
    assert merged.model == "gpt-realtime-2.1"
    assert merged.instructions == "B"
    assert merged.audio is not None and merged.audio.input is not None
    assert merged.audio.input.format == AudioFormat.pcmu()
    assert merged.audio.input.turn_detection is None
    assert merged.audio.input.noise_reduction is UNSET
    assert merged.audio.output == AudioOutputConfig(voice="marin")
    assert merged.tools == (FunctionTool(name="c"),)
    assert merged.extra == {"tracing": "auto", "reasoning": {"effort": "low"}}
    assert first.merged(SessionConfig()) == first
    wire = merged.to_wire()
    assert SESSION_ADAPTER.validate_python(wire) == wire


def test_session_lists_become_tuples() -> None:
    config = SessionConfig(output_modalities=["audio"], tools=[FunctionTool(name="a")])  # type: ignore[arg-type]
    assert config.output_modalities == ("audio",)
    assert isinstance(config.tools, tuple)


# --------------------------------------------------------------------------- server events


@pytest.mark.parametrize("line", KNOWN_LINES, ids=lambda s: json.loads(s)["type"])
def test_fixture_events_decode_to_typed_events(line: str) -> None:
    raw = json.loads(line)
    SERVER_ADAPTER.validate_json(line)  # the fixture has the API's shape
    event = decode(line)
    assert not isinstance(event, ev.UnknownServerEvent)
    assert event.type == raw["type"]
    assert event.event_id == raw.get("event_id", "")


def test_fixtures_cover_every_typed_server_event() -> None:
    seen = {type(decode(line)) for line in KNOWN_LINES}
    assert seen == set(SERVER_EVENT_CLASSES)


def test_full_audio_response() -> None:
    events = [decode(line) for line in fixture_lines("audio_response")]
    created = events[0]
    assert isinstance(created, ev.SessionCreated)
    assert created.session["audio"]["output"]["voice"] == "marin"
    deltas = [e for e in events if isinstance(e, ev.ResponseOutputAudioDelta)]
    assert len(deltas) == 3
    audio = b"".join(d.audio() for d in deltas)
    assert len(audio) == 480  # 60 ms of 8 kHz μ-law
    pcm = ulaw_decode(audio)
    samples = [int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm), 2)]
    assert max(samples) > 7000 and min(samples) < -7000  # the 440 Hz tone, not silence
    transcript = "".join(
        e.delta for e in events if isinstance(e, ev.ResponseOutputAudioTranscriptDelta)
    )
    done_transcript = next(e for e in events if isinstance(e, ev.ResponseOutputAudioTranscriptDone))
    assert transcript == done_transcript.transcript == "Hello! How can I help you today?"
    done = events[-1]
    assert isinstance(done, ev.ResponseDone)
    assert done.response.status == "completed"
    assert done.response.id == deltas[0].response_id
    assert done.response.usage == ev.Usage(
        total_tokens=1712,
        input_tokens=1270,
        output_tokens=442,
        input_token_details=done.response.raw["usage"]["input_token_details"],
        output_token_details={"text_tokens": 98, "audio_tokens": 344},
    )
    assert done.response.output[0]["role"] == "assistant"
    limits = next(e for e in events if isinstance(e, ev.RateLimitsUpdated))
    assert [r.name for r in limits.rate_limits] == ["requests", "tokens"]
    assert limits.rate_limits[1].remaining == 3995281
    completed = next(
        e for e in events if isinstance(e, ev.ConversationItemInputAudioTranscriptionCompleted)
    )
    assert completed.transcript == "Hi, I'd like to check my order."


def test_function_call_response() -> None:
    events = [decode(line) for line in fixture_lines("function_call")]
    args = "".join(e.delta for e in events if isinstance(e, ev.ResponseFunctionCallArgumentsDelta))
    done = next(e for e in events if isinstance(e, ev.ResponseFunctionCallArgumentsDone))
    assert args == done.arguments
    assert json.loads(done.arguments) == {"dept": "billing"}
    assert done.name == "transfer_call"
    assert done.call_id == "call_Xy7Zq3Rt9LmN2bVc"
    item_done = next(e for e in events if isinstance(e, ev.ResponseOutputItemDone))
    assert item_done.item["type"] == "function_call"
    response_done = next(e for e in events if isinstance(e, ev.ResponseDone))
    assert response_done.response.metadata == {"turn": "7"}


def test_vad_and_barge_in_events() -> None:
    events = [decode(line) for line in fixture_lines("vad_events")]
    started = next(e for e in events if isinstance(e, ev.InputAudioBufferSpeechStarted))
    assert started.audio_start_ms == 15320
    truncated = next(e for e in events if isinstance(e, ev.ConversationItemTruncated))
    assert (truncated.content_index, truncated.audio_end_ms) == (0, 1460)
    cancelled = next(e for e in events if isinstance(e, ev.ResponseDone))
    assert cancelled.response.status == "cancelled"
    assert cancelled.response.status_details == {"type": "cancelled", "reason": "turn_detected"}
    dtmf = next(e for e in events if isinstance(e, ev.InputAudioBufferDtmfEventReceived))
    assert (dtmf.event, dtmf.received_at, dtmf.event_id) == ("5", 1767222011, "")
    failed = next(
        e for e in events if isinstance(e, ev.ConversationItemInputAudioTranscriptionFailed)
    )
    assert failed.error.code == "audio_unintelligible"
    timeout = next(e for e in events if isinstance(e, ev.InputAudioBufferTimeoutTriggered))
    assert timeout.audio_end_ms - timeout.audio_start_ms == 8000


def test_error_events() -> None:
    errors = [decode(line) for line in fixture_lines("errors")]
    assert all(isinstance(e, ev.ErrorEvent) for e in errors)
    details = [e.error for e in errors if isinstance(e, ev.ErrorEvent)]
    beta = details[0]
    assert beta.code == "beta_api_shape_disabled"
    assert beta.type == "invalid_request_error"
    assert beta.event_id is None and beta.param is None
    assert details[1].code == "conversation_already_has_active_response"
    assert details[1].event_id == "evt_client_42"
    assert details[4].param == "session.audio.input.format.type"
    assert details[5].type == "server_error" and details[5].code is None


def test_unknown_events_are_kept_not_fatal() -> None:
    for line in fixture_lines("unknown_events"):
        event = decode(line)
        assert isinstance(event, ev.UnknownServerEvent)
        raw = json.loads(line)
        assert event.type == raw["type"]
        assert event.raw == raw
        assert event.event_id == raw["event_id"]


def test_audio_delta_with_bad_base64_fails_only_when_decoded() -> None:
    line = json.dumps(
        {
            "type": "response.output_audio.delta",
            "event_id": "e",
            "response_id": "r",
            "item_id": "i",
            "output_index": 0,
            "content_index": 0,
            "delta": "not base64!",
        }
    )
    event = decode(line)
    assert isinstance(event, ev.ResponseOutputAudioDelta)
    with pytest.raises(ValueError):
        event.audio()


def test_decode_accepts_bytes() -> None:
    assert isinstance(decode(fixture_lines("vad_events")[0].encode()), ev.OutputAudioBufferStarted)


def test_optional_fields_may_be_missing_or_null() -> None:
    event = decode('{"type":"input_audio_buffer.committed","item_id":"i","previous_item_id":null}')
    assert event == ev.InputAudioBufferCommitted(item_id="i", previous_item_id=None, event_id="")
    delta = decode('{"type":"conversation.item.input_audio_transcription.delta","item_id":"i"}')
    assert isinstance(delta, ev.ConversationItemInputAudioTranscriptionDelta)
    assert delta.delta == "" and delta.content_index is None


# --------------------------------------------------------------------------- protocol errors


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("{not json", None),
        (b"\xff\xfe", None),
        ("[1, 2]", None),
        ('"text"', None),
        ('{"event_id": "e"}', "type"),
        ('{"type": 7}', "type"),
    ],
)
def test_undecodable_messages(message: str | bytes, field: str | None) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(message)
    assert info.value.field == field
    assert info.value.event_type is None
    assert isinstance(info.value, RealtimeError)
    assert info.value.retryable is False


def _required_fields() -> list[tuple[str, str]]:
    cases = []
    for line in KNOWN_LINES:
        raw = json.loads(line)
        for key in raw:
            if key in ("type", "event_id"):
                continue
            cls = type(decode(line))
            field = next(f for f in cls.__dataclass_fields__.values() if f.name == key)
            if field.default is field.default_factory:  # both MISSING: required
                cases.append((line, key))
    return sorted(set(cases), key=lambda c: (json.loads(c[0])["type"], c[1]))


@pytest.mark.parametrize(
    ("line", "key"),
    _required_fields(),
    ids=lambda v: v if len(v) < 40 else json.loads(v)["type"],
)
def test_missing_required_field_names_event_and_field(line: str, key: str) -> None:
    raw = json.loads(line)
    del raw[key]
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps(raw))
    assert info.value.event_type == raw["type"]
    assert info.value.field == key
    assert raw["type"] in str(info.value) and key in str(info.value)
    raw[key] = None
    with pytest.raises(ProtocolError):
        decode(json.dumps(raw))


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": "10", "item_id": "i"},
            "audio_start_ms",
        ),
        (
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": True, "item_id": "i"},
            "audio_start_ms",
        ),
        ({"type": "conversation.item.added", "item": []}, "item"),
        ({"type": "response.done", "response": {"status": "completed"}}, "response.id"),
        ({"type": "response.done", "response": {"id": "r", "output": ["x"]}}, "response.output[0]"),
        (
            {"type": "response.done", "response": {"id": "r", "usage": {"total_tokens": "1"}}},
            "response.usage.total_tokens",
        ),
        ({"type": "response.created", "response": "resp_1"}, "response"),
        ({"type": "error", "error": {"type": "server_error"}}, "error.message"),
        ({"type": "error", "error": "boom"}, "error"),
        ({"type": "rate_limits.updated", "rate_limits": [{"name": 1}]}, "rate_limits[0].name"),
        ({"type": "rate_limits.updated", "rate_limits": {}}, "rate_limits"),
        ({"type": "session.updated", "session": None}, "session"),
    ],
)
def test_wrong_field_types_are_protocol_errors(event: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(json.dumps(event))
    assert info.value.field == field
    assert info.value.event_type == event["type"]


def test_protocol_error_never_quotes_the_value() -> None:
    secret = "my card number is 4111 1111 1111 1111"
    line = json.dumps(
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "i",
            "content_index": "0",
            "transcript": secret,
        }
    )
    with pytest.raises(ProtocolError) as info:
        decode(line)
    assert "4111" not in str(info.value)
    assert info.value.field == "content_index"


def test_transcription_failure_error_fields_are_optional() -> None:
    event = decode(
        '{"type":"conversation.item.input_audio_transcription.failed","item_id":"i",'
        '"content_index":0,"error":{}}'
    )
    assert isinstance(event, ev.ConversationItemInputAudioTranscriptionFailed)
    assert event.error == ev.ErrorDetail(type="", message="")


def test_text_only_response() -> None:
    events = [decode(line) for line in fixture_lines("text_response")]
    text = "".join(e.delta for e in events if isinstance(e, ev.ResponseOutputTextDelta))
    done = next(e for e in events if isinstance(e, ev.ResponseOutputTextDone))
    assert text == done.text == "Your order ships tomorrow."
    final = events[-1]
    assert isinstance(final, ev.ResponseDone)
    assert final.response.usage is not None and final.response.usage.output_tokens == 10

"""The simulator's pure session core: event sequences, ids, errors, VAD turns, cancel, truncate."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import pytest

from gateway.media.g711 import alaw_encode, ulaw_encode
from gateway.sim.conversation import IdFactory
from gateway.sim.core import SimSession
from gateway.sim.responses import Close, Emit, Pace, Pause, ResponseRun, Synthesize
from gateway.sim.scenario import ScenarioBook, parse_scenarios

pytestmark = pytest.mark.unit

Event = dict[str, Any]

AUDIO_SEQUENCE = [
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
]
AUDIO_CLOSE = [
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
]

BANK = """
scenarios:
  bank:
    match: {instructions: "(?i)bank agent"}
    turns:
      - user_says: What is my balance?
        steps:
          - say: Let me check.
          - call: {name: lookup_balance, arguments: {account: "42"}}
      - say: "Your balance is {tool_output.balance} dollars."
      - [{handoff: Billing Desk}]
      - hangup
    rules:
      - when: "(?i)goodbye"
        steps: [{say: "Bye {user_text}!"}]
    fallback:
      - say: Anything else?
  other:
    match: {instructions: "other agent"}
    turns:
      - say: Other one.
      - say: Other two.
"""


def tone(ms: int, rate: int = 24000, amplitude: float = 8000.0, hz: float = 440.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype("<i2").tobytes()


def silence(ms: int, rate: int = 24000) -> bytes:
    return bytes(2 * rate * ms // 1000)


def fake_tts(ms: int = 1000) -> bytes:
    """What the server's TTS would return: ``ms`` of a 300 Hz tone at 24 kHz."""
    return tone(ms, hz=300.0)


def types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def drive(
    run: ResponseRun,
    *,
    tts_ms: int = 1000,
    max_chunks: int | None = None,
    closes: list[Close] | None = None,
) -> list[Event]:
    """Perform a run's instructions like the server would, without sleeping.

    Stops after ``max_chunks`` paced audio chunks when given (the response stays active).
    """
    events: list[Event] = []
    chunks = 0
    audio: bytes | None = None
    while True:
        instruction = run.advance(audio)
        audio = None
        if instruction is None:
            return events
        if isinstance(instruction, Emit):
            events.extend(instruction.events)
        elif isinstance(instruction, Synthesize):
            audio = fake_tts(tts_ms)
        elif isinstance(instruction, Pace):
            chunks += 1
            if max_chunks is not None and chunks >= max_chunks:
                return events
        elif isinstance(instruction, Close) and closes is not None:
            closes.append(instruction)
        else:
            assert isinstance(instruction, Pause | Close)


def new_session(book: ScenarioBook | None = None, **kwargs: Any) -> SimSession:
    return SimSession(model="gpt-realtime-2.1", scenarios=book, ids=IdFactory(7), **kwargs)


def respond(sim: SimSession, response: dict[str, Any] | None = None, **kw: Any) -> list[Event]:
    """``response.create`` and run it to the end; all events in order."""
    event: Event = {"type": "response.create"}
    if response is not None:
        event["response"] = response
    events = sim.receive(event)
    for run in sim.take_started_responses():
        events += drive(run, **kw)
    return events


def update(sim: SimSession, **session: Any) -> list[Event]:
    return sim.receive({"type": "session.update", "session": {"type": "realtime", **session}})


def append(sim: SimSession, pcm: bytes, chunk: int = 4800) -> list[Event]:
    events: list[Event] = []
    for i in range(0, len(pcm), chunk):
        b64 = base64.b64encode(pcm[i : i + chunk]).decode()
        events += sim.receive({"type": "input_audio_buffer.append", "audio": b64})
    return events


def error_of(events: list[Event]) -> dict[str, Any]:
    assert types(events) == ["error"], types(events)
    err: dict[str, Any] = events[0]["error"]
    return err


# --- session ------------------------------------------------------------------------------


def test_open_sends_session_created_with_the_default_session() -> None:
    sim = new_session()
    [created] = sim.open()
    assert created["type"] == "session.created"
    assert created["event_id"].startswith("event_")
    assert created["session"]["model"] == "gpt-realtime-2.1"
    assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}


def test_sip_session_defaults_to_mu_law() -> None:
    [created] = new_session(sip=True).open()
    assert created["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}


def test_session_update_answers_with_full_effective_session() -> None:
    sim = new_session()
    [updated] = update(sim, instructions="Be brief.")
    assert updated["type"] == "session.updated"
    assert updated["session"]["instructions"] == "Be brief."
    assert updated["session"]["audio"]["output"]["voice"] == "marin"
    assert sim.session["instructions"] == "Be brief."


def test_invalid_session_update_is_an_error_echoing_the_client_event_id() -> None:
    sim = new_session()
    events = sim.receive(
        {
            "type": "session.update",
            "event_id": "evt_client_1",
            "session": {"type": "realtime", "output_modalities": ["audio", "text"]},
        }
    )
    err = error_of(events)
    assert err["type"] == "invalid_request_error"
    assert err["code"] == "invalid_value"
    assert err["event_id"] == "evt_client_1"
    assert err["param"] == "session.output_modalities"
    assert sim.close_request is None


def test_beta_shaped_update_closes_with_4000() -> None:
    sim = new_session()
    err = error_of(
        sim.receive({"type": "session.update", "session": {"modalities": ["text", "audio"]}})
    )
    assert err["code"] == "beta_api_shape_disabled"
    assert sim.close_request is not None and sim.close_request.code == 4000


def test_beta_rejection_for_the_beta_header() -> None:
    sim = new_session()
    assert error_of(sim.beta_rejection())["code"] == "beta_api_shape_disabled"
    assert sim.close_request is not None and sim.close_request.code == 4000


@pytest.mark.parametrize(
    ("message", "code", "param"),
    [
        ("{not json", "invalid_json", None),
        ("[1, 2]", "invalid_type", None),
        ('{"type": "session.fly"}', "invalid_value", "type"),
        ('{"event_id": "x"}', "missing_required_parameter", "type"),
        (
            '{"type": "conversation.item.truncate", "item_id": "item_1"}',
            "missing_required_parameter",
            "content_index",
        ),
        (
            '{"type": "input_audio_buffer.append", "audio": "@@not base64@@"}',
            "invalid_value",
            "audio",
        ),
    ],
)
def test_bad_client_events_are_invalid_request_errors(
    message: str, code: str, param: str | None
) -> None:
    err = error_of(new_session().receive_text(message))
    assert err["type"] == "invalid_request_error"
    assert err["code"] == code
    assert err["param"] == param


def test_voice_cannot_change_after_audio_was_produced() -> None:
    sim = new_session()
    assert types(update(sim, audio={"output": {"voice": "cedar"}})) == ["session.updated"]
    respond(sim)
    err = error_of(update(sim, audio={"output": {"voice": "ash"}}))
    assert err["code"] == "cannot_update_voice"


# --- responses ----------------------------------------------------------------------------


def test_audio_response_follows_the_ga_event_sequence() -> None:
    sim = new_session()
    events = respond(sim, tts_ms=1000)
    kinds = types(events)
    assert kinds[0] == "response.created"
    assert kinds[1:4] == AUDIO_SEQUENCE
    middle = kinds[4:-6]
    assert set(middle) == {"response.output_audio.delta", "response.output_audio_transcript.delta"}
    assert middle.count("response.output_audio.delta") == 10  # 1000 ms in 100 ms chunks
    assert kinds[-6:] == [*AUDIO_CLOSE, "response.done"]

    created = events[0]["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert created["id"].startswith("resp_")
    added = events[1]
    assert added["item"]["status"] == "in_progress" and added["item"]["role"] == "assistant"
    assert events[3]["part"] == {"type": "audio", "transcript": ""}

    transcript = "".join(
        e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
    )
    assert transcript == "Hello from the gateway simulator. How can I help you?"
    pcm = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert pcm == fake_tts(1000)  # audio/pcm output is the synthesised PCM itself

    item_done = events[-3]
    assert item_done["item"]["status"] == "completed"
    assert item_done["item"]["content"] == [{"type": "output_audio", "transcript": transcript}]
    done = events[-1]["response"]
    assert done["status"] == "completed"
    assert done["output"][0]["id"] == added["item"]["id"]
    usage = done["usage"]
    assert usage["output_token_details"]["audio_tokens"] == 20  # 1 token per 50 ms
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert sim.active_response is None


def test_every_event_and_object_id_is_unique_and_shaped_like_the_api() -> None:
    sim = new_session()
    events = sim.open() + respond(sim) + respond(sim)
    event_ids = [e["event_id"] for e in events]
    assert len(set(event_ids)) == len(event_ids)
    assert all(i.startswith("event_") for i in event_ids)
    items = {e["item"]["id"] for e in events if e["type"] == "response.output_item.added"}
    responses = {e["response"]["id"] for e in events if e["type"] == "response.created"}
    assert len(items) == 2 and all(i.startswith("item_") for i in items)
    assert len(responses) == 2 and all(r.startswith("resp_") for r in responses)


def test_pcmu_output_is_encoded_at_8_khz() -> None:
    sim = new_session()
    update(sim, audio={"output": {"format": {"type": "audio/pcmu"}}})
    events = respond(sim, tts_ms=1000)
    deltas = [
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    ]
    assert [len(d) for d in deltas] == [800] * 10  # 100 ms of μ-law = 800 bytes
    assert events[0]["response"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}


def test_text_modality_sends_output_text_events() -> None:
    sim = new_session()
    update(sim, output_modalities=["text"])
    events = respond(sim)
    kinds = types(events)
    assert "response.output_audio.delta" not in kinds
    assert kinds[3] == "response.content_part.added" and events[3]["part"]["type"] == "text"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Hello from the gateway simulator. How can I help you?"
    assert kinds[-5:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    done_item = next(e for e in events if e["type"] == "response.output_item.done")["item"]
    assert done_item["content"] == [{"type": "output_text", "text": text}]


def test_function_call_round_trip_uses_tool_output_template() -> None:
    sim = new_session(parse_scenarios(BANK))
    update(sim, instructions="You are a Bank Agent.")
    assert sim.scenario.name == "bank"
    events = respond(sim)
    kinds = types(events)
    call_start = kinds.index("response.output_item.added", 2)
    assert kinds[call_start:] == [
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    added = events[call_start]["item"]
    assert added["type"] == "function_call" and added["arguments"] == ""
    assert added["name"] == "lookup_balance" and added["call_id"].startswith("call_")
    args_done = events[call_start + 3]
    assert json.loads(args_done["arguments"]) == {"account": "42"}
    assert args_done["call_id"] == added["call_id"]
    assert events[-1]["response"]["output"][1]["arguments"] == args_done["arguments"]

    out = sim.receive(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": added["call_id"],
                "output": json.dumps({"balance": 1234}),
            },
        }
    )
    assert types(out) == ["conversation.item.added", "conversation.item.done"]
    assert out[0]["previous_item_id"] == added["id"]
    second = respond(sim)
    said = next(e for e in second if e["type"] == "response.output_audio_transcript.done")
    assert said["transcript"] == "Your balance is 1234 dollars."


def test_handoff_calls_transfer_tool_and_hangup_prefers_end_call() -> None:
    sim = new_session(parse_scenarios(BANK))
    update(
        sim,
        instructions="bank agent",
        tools=[{"type": "function", "name": "end_call", "parameters": {"type": "object"}}],
    )
    respond(sim)
    respond(sim)
    handoff = respond(sim)
    call = next(e for e in handoff if e["type"] == "response.function_call_arguments.done")
    assert call["name"] == "transfer_to_billing_desk" and call["arguments"] == "{}"
    closes: list[Close] = []
    hangup = respond(sim, closes=closes)
    call = next(e for e in hangup if e["type"] == "response.function_call_arguments.done")
    assert call["name"] == "end_call"
    assert closes == []


def test_hangup_without_end_call_tool_closes_the_session_after_response_done() -> None:
    book = parse_scenarios("scenarios:\n  default:\n    turns:\n      - [{say: Bye.}, hangup]\n")
    sim = new_session(book)
    closes: list[Close] = []
    events = respond(sim, closes=closes)
    assert events[-1]["type"] == "response.done"
    assert closes == [Close(1000, "The scenario ended the call.")]


def test_response_instructions_with_quoted_text_say_it_without_using_a_turn() -> None:
    sim = new_session()
    greeting = respond(sim, {"instructions": "Say exactly 'Thanks for calling ACME' now."})
    said = next(e for e in greeting if e["type"] == "response.output_audio_transcript.done")
    assert said["transcript"] == "Thanks for calling ACME"
    first_turn = respond(sim)
    said = next(e for e in first_turn if e["type"] == "response.output_audio_transcript.done")
    assert said["transcript"].startswith("Hello from the gateway simulator")


def test_rules_match_typed_user_text_before_the_next_turn() -> None:
    sim = new_session(parse_scenarios(BANK))
    update(sim, instructions="bank agent")
    sim.receive(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "ok goodbye"}],
            },
        }
    )
    events = respond(sim)
    said = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    assert said["transcript"] == "Bye ok goodbye!"
    # The rule did not use up a turn, and the typed text is consumed.
    events = respond(sim)
    said = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    assert said["transcript"] == "Let me check."


def test_scenario_switches_on_instructions_with_per_scenario_turn_counters() -> None:
    sim = new_session(parse_scenarios(BANK))

    def say() -> str:
        events = respond(sim)
        return str(
            next(e for e in events if e["type"] == "response.output_audio_transcript.done")[
                "transcript"
            ]
        )

    update(sim, instructions="other agent")
    assert say() == "Other one."
    update(sim, instructions="bank agent")
    assert say() == "Let me check."
    update(sim, instructions="other agent")
    assert say() == "Other two."


def test_requested_scenario_is_used_when_no_match() -> None:
    sim = new_session(parse_scenarios(BANK), scenario="other")
    assert sim.scenario.name == "other"


def test_fallback_when_turns_run_out_and_empty_response_without_fallback() -> None:
    book = parse_scenarios("scenarios:\n  default:\n    turns:\n      - say: Only once.\n")
    sim = new_session(book)
    respond(sim)
    events = respond(sim)
    assert types(events) == ["response.created", "response.done"]
    assert events[-1]["response"]["status"] == "completed"
    assert events[-1]["response"]["output"] == []


def test_out_of_band_response_is_not_added_to_the_conversation() -> None:
    sim = new_session()
    events = respond(sim, {"conversation": "none", "metadata": {"topic": "x"}})
    assert "conversation.item.added" not in types(events)
    assert events[-1]["response"]["conversation_id"] is None
    assert events[-1]["response"]["metadata"] == {"topic": "x"}
    assert sim.conversation.items == []


# --- cancel and concurrency ---------------------------------------------------------------


def test_response_create_while_active_is_refused() -> None:
    sim = new_session()
    sim.receive({"type": "response.create"})
    [run] = sim.take_started_responses()
    err = error_of(sim.receive({"type": "response.create", "event_id": "c2"}))
    assert err["code"] == "conversation_already_has_active_response"
    assert run.id in err["message"] and err["event_id"] == "c2"


def test_cancel_mid_audio_closes_the_item_incomplete() -> None:
    sim = new_session()
    sim.receive({"type": "response.create"})
    [run] = sim.take_started_responses()
    before = drive(run, tts_ms=2000, max_chunks=3)
    assert types(before).count("response.output_audio.delta") == 3
    events = sim.receive({"type": "response.cancel"})
    assert types(events) == [*AUDIO_CLOSE, "response.done"]
    assert events[3]["item"]["status"] == "incomplete"
    done = events[-1]["response"]
    assert done["status"] == "cancelled"
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["output"][0]["status"] == "incomplete"
    assert run.advance() is None  # the run emits nothing more
    assert sim.active_response is None


def test_cancel_before_any_output_sends_only_response_done() -> None:
    sim = new_session()
    sim.receive({"type": "response.create"})
    [run] = sim.take_started_responses()
    assert isinstance(run.advance(), Synthesize)
    events = sim.receive({"type": "response.cancel"})
    assert types(events) == ["response.done"]
    assert run.advance(fake_tts()) is None


def test_cancel_without_active_response_is_an_error() -> None:
    err = error_of(new_session().receive({"type": "response.cancel"}))
    assert err["code"] == "response_cancel_not_active"


# --- input audio and VAD ------------------------------------------------------------------


def test_vad_turn_commits_transcribes_and_responds() -> None:
    sim = new_session(parse_scenarios(BANK))
    update(
        sim,
        instructions="bank agent",
        audio={
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "gpt-4o-mini-transcribe"},
            }
        },
    )
    audio = silence(1000, 8000) + tone(1200, 8000) + silence(1000, 8000)
    events = append(sim, ulaw_encode(audio), chunk=160)
    kinds = types(events)
    assert kinds == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
    ]
    started, stopped, committed, added = events[:4]
    assert started["audio_start_ms"] == 1000 - 300  # onset minus prefix padding
    assert stopped["audio_end_ms"] == 1000 + 1200 + 500  # end of speech plus silence
    item_id = started["item_id"]
    assert stopped["item_id"] == committed["item_id"] == added["item"]["id"] == item_id
    assert committed["previous_item_id"] is None
    assert added["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    assert events[5]["transcript"] == "What is my balance?"
    assert events[5]["usage"]["type"] == "tokens"
    assert sim.conversation.user_audio_ms[item_id] == 2000.0


def test_heard_ms_template_is_the_length_of_the_last_user_audio() -> None:
    sim = new_session()
    respond(sim)  # the greeting turn
    append(sim, tone(1000) + silence(800))
    [run] = sim.take_started_responses()
    events = drive(run)
    said = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    # audio_start_ms 0 (prefix padding clipped), audio_end_ms 1000 + 500 ms of silence.
    assert said["transcript"] == "I heard you for 1500 milliseconds."


def test_barge_in_cancels_the_active_response_with_turn_detected() -> None:
    sim = new_session()
    sim.receive({"type": "response.create"})
    [run] = sim.take_started_responses()
    drive(run, tts_ms=3000, max_chunks=5)
    events = append(sim, tone(300))
    kinds = types(events)
    assert kinds[0] == "input_audio_buffer.speech_started"
    assert kinds[1:] == [*AUDIO_CLOSE, "response.done"]
    done = events[-1]["response"]
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}


def test_no_barge_in_when_interrupt_response_is_false() -> None:
    sim = new_session()
    update(
        sim,
        audio={"input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}},
    )
    sim.receive({"type": "response.create"})
    [run] = sim.take_started_responses()
    drive(run, tts_ms=3000, max_chunks=5)
    assert types(append(sim, tone(300))) == ["input_audio_buffer.speech_started"]
    assert sim.active_response is run


def test_no_vad_events_without_turn_detection() -> None:
    sim = new_session()
    update(sim, audio={"input": {"turn_detection": None}})
    assert append(sim, tone(1000) + silence(1000)) == []


def test_manual_commit_and_clear() -> None:
    sim = new_session()
    update(sim, audio={"input": {"turn_detection": None}})
    err = error_of(sim.receive({"type": "input_audio_buffer.commit"}))
    assert err["code"] == "input_audio_buffer_commit_empty"
    assert err["message"] == "Error committing input audio buffer: the buffer is empty."
    append(sim, silence(50))
    assert error_of(sim.receive({"type": "input_audio_buffer.commit"}))["code"] == (
        "input_audio_buffer_commit_empty"
    )
    append(sim, silence(200))
    events = sim.receive({"type": "input_audio_buffer.commit"})
    assert types(events) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    assert sim.take_started_responses() == []  # a manual commit never creates a response
    append(sim, silence(200))
    assert types(sim.receive({"type": "input_audio_buffer.clear"})) == [
        "input_audio_buffer.cleared"
    ]
    assert error_of(sim.receive({"type": "input_audio_buffer.commit"}))["code"] == (
        "input_audio_buffer_commit_empty"
    )


def test_audio_start_ms_counts_all_audio_of_the_session_across_format_changes() -> None:
    sim = new_session()
    append(sim, silence(1000))  # 1 s at 24 kHz
    update(sim, audio={"input": {"format": {"type": "audio/pcma"}}})
    events = append(sim, alaw_encode(silence(500, 8000) + tone(400, 8000)), chunk=160)
    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    assert started["audio_start_ms"] == 1000 + 500 - 300


# --- items and truncate -------------------------------------------------------------------


def test_item_create_validates_and_orders_items() -> None:
    sim = new_session()
    first = sim.receive(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "VIP"}],
            },
        }
    )
    first_id = first[0]["item"]["id"]
    assert first[0]["previous_item_id"] is None and first_id.startswith("item_")
    root = sim.receive(
        {
            "type": "conversation.item.create",
            "previous_item_id": "root",
            "item": {
                "id": "item_custom",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        }
    )
    assert root[0]["previous_item_id"] is None
    assert [i["id"] for i in sim.conversation.items] == ["item_custom", first_id]
    assert (
        error_of(
            sim.receive(
                {
                    "type": "conversation.item.create",
                    "previous_item_id": "nope",
                    "item": {"type": "function_call_output", "call_id": "c", "output": ""},
                }
            )
        )["param"]
        == "previous_item_id"
    )
    assert (
        error_of(
            sim.receive(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": "robot", "content": []},
                }
            )
        )["param"]
        == "item.role"
    )
    assert (
        error_of(
            sim.receive(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "function_call_output", "output": "x"},
                }
            )
        )["param"]
        == "item.call_id"
    )
    assert (
        error_of(
            sim.receive(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "id": "item_custom",
                        "type": "function_call_output",
                        "call_id": "c",
                        "output": "x",
                    },
                }
            )
        )["param"]
        == "item.id"
    )


def test_delete_and_retrieve() -> None:
    sim = new_session()
    respond(sim)
    item_id = sim.conversation.items[0]["id"]
    [got] = sim.receive({"type": "conversation.item.retrieve", "item_id": item_id})
    assert got["type"] == "conversation.item.retrieved" and got["item"]["id"] == item_id
    [deleted] = sim.receive({"type": "conversation.item.delete", "item_id": item_id})
    assert (deleted["type"], deleted["item_id"]) == ("conversation.item.deleted", item_id)
    assert (
        error_of(sim.receive({"type": "conversation.item.delete", "item_id": item_id}))["param"]
        == "item_id"
    )


def test_truncate_within_sent_audio_and_its_bounds() -> None:
    sim = new_session()
    events = respond(sim, tts_ms=1000)
    item_id = events[1]["item"]["id"]
    too_far = error_of(
        sim.receive(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 1001,
            }
        )
    )
    assert too_far["type"] == "invalid_request_error"
    assert too_far["param"] == "audio_end_ms"
    assert too_far["message"] == "Audio content of 1000ms is already shorter than 1001ms"
    [truncated] = sim.receive(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 500,
        }
    )
    assert truncated["type"] == "conversation.item.truncated"
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 500)
    transcript = sim.conversation.items[0]["content"][0]["transcript"]
    assert transcript == "Hello from the gateway simulator."  # half the words were heard
    # The item is now 500 ms long.
    assert error_of(
        sim.receive(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 600,
            }
        )
    )["param"] == ("audio_end_ms")


def test_truncate_is_bounded_by_audio_sent_so_far_while_streaming() -> None:
    sim = new_session()
    sim.receive({"type": "response.create"})
    [run] = sim.take_started_responses()
    events = drive(run, tts_ms=3000, max_chunks=4)
    item_id = events[1]["item"]["id"]
    assert error_of(
        sim.receive(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 450,
            }
        )
    )["message"] == ("Audio content of 400ms is already shorter than 450ms")
    assert types(
        sim.receive(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 400,
            }
        )
    ) == ["conversation.item.truncated"]


def test_truncate_unknown_item_or_user_item_is_an_error() -> None:
    sim = new_session()
    err = error_of(
        sim.receive(
            {
                "type": "conversation.item.truncate",
                "item_id": "item_nope",
                "content_index": 0,
                "audio_end_ms": 0,
            }
        )
    )
    assert err["param"] == "item_id" and "item_nope" in err["message"]
    sim.receive(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        }
    )
    user_id = sim.conversation.items[0]["id"]
    err = error_of(
        sim.receive(
            {
                "type": "conversation.item.truncate",
                "item_id": user_id,
                "content_index": 0,
                "audio_end_ms": 0,
            }
        )
    )
    assert err["code"] == "unsupported_content_type"


def test_deleting_the_item_being_spoken_does_not_break_the_response() -> None:
    sim = new_session()
    sim.receive({"type": "response.create"})
    [run] = sim.take_started_responses()
    events = drive(run, max_chunks=2)
    item_id = events[1]["item"]["id"]
    assert types(sim.receive({"type": "conversation.item.delete", "item_id": item_id})) == [
        "conversation.item.deleted"
    ]
    rest = drive(run)
    assert types(rest)[-1] == "response.done"
    assert rest[-1]["response"]["status"] == "completed"


def test_output_audio_buffer_clear_names_the_response() -> None:
    sim = new_session()
    events = respond(sim)
    [cleared] = sim.receive({"type": "output_audio_buffer.clear"})
    assert cleared["type"] == "output_audio_buffer.cleared"
    assert cleared["response_id"] == events[0]["response"]["id"]


def test_usage_counts_input_audio_at_100_ms_per_token() -> None:
    sim = new_session()
    respond(sim)
    append(sim, tone(2000) + silence(600))
    [run] = sim.take_started_responses()
    done = drive(run)[-1]["response"]["usage"]
    # 2500 ms of user audio (25 tokens) + 1000 ms earlier assistant audio (20 tokens).
    assert done["input_token_details"]["audio_tokens"] == 45
    assert done["output_token_details"]["audio_tokens"] == math.ceil(1000 / 50)

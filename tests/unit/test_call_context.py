"""The bounded conversation record replayed on a replacement Realtime session."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.calls.context import ConversationContext
from gateway.realtime import events as rt

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


def caller(item_id: str, text: str) -> rt.ConversationItemInputAudioTranscriptionCompleted:
    return rt.ConversationItemInputAudioTranscriptionCompleted(
        item_id=item_id, content_index=0, transcript=text)


def delta(item_id: str, text: str) -> rt.ResponseOutputAudioTranscriptDelta:
    return rt.ResponseOutputAudioTranscriptDelta(
        response_id="resp_1", item_id=item_id, output_index=0, content_index=0, delta=text)


def done(item_id: str, text: str) -> rt.ResponseOutputAudioTranscriptDone:
    return rt.ResponseOutputAudioTranscriptDone(
        response_id="resp_1", item_id=item_id, output_index=0, content_index=0,
        transcript=text)


def call(call_id: str, name: str = "lookup") -> rt.ResponseFunctionCallArgumentsDone:
    return rt.ResponseFunctionCallArgumentsDone(
        response_id="resp_1", item_id=f"item_{call_id}", output_index=0, call_id=call_id,
        name=name, arguments='{"id": 7}')


def items(ctx: ConversationContext) -> list[dict[str, Any]]:
    return [dict(e.item) for e in ctx.replay_items()]


def test_a_conversation_replays_in_order_with_stable_ids() -> None:
    ctx = ConversationContext("gw1i")
    ctx.on_server_event(caller("item_a", "Where is my order?"))
    ctx.on_server_event(call("call_1"))
    ctx.on_client_item({"id": ctx.new_id(), "type": "function_call_output",
                        "call_id": "call_1", "output": '{"status": "shipped"}'})
    ctx.on_server_event(delta("item_b", "It has "))
    ctx.on_server_event(delta("item_b", "shipped"))
    ctx.on_server_event(done("item_b", "It has shipped."))
    ctx.on_server_event(caller("item_c", "   "))  # nothing said: nothing kept
    replay = items(ctx)
    assert [(i["type"], i.get("role")) for i in replay] == [
        ("message", "user"), ("function_call", None), ("function_call_output", None),
        ("message", "assistant")]
    assert replay[0]["content"] == [{"type": "input_text", "text": "Where is my order?"}]
    assert replay[1] | {"id": ""} == {"id": "", "type": "function_call", "call_id": "call_1",
                                      "name": "lookup", "arguments": '{"id": 7}'}
    assert replay[2]["output"] == '{"status": "shipped"}'
    assert replay[3]["content"] == [{"type": "output_text", "text": "It has shipped."}]
    ids = [i["id"] for i in replay]
    assert len(set(ids)) == 4 and all(i.startswith("gw1i") and len(i) <= 32 for i in ids)
    assert [i["id"] for i in items(ctx)] == ids  # the same ids on every replay


def test_a_reply_cut_off_by_the_drop_keeps_what_streamed() -> None:
    ctx = ConversationContext("gw1i")
    ctx.on_server_event(delta("item_b", "Welcome to "))
    ctx.on_server_event(delta("item_b", "the line"))
    assert items(ctx)[0]["content"][0]["text"] == "Welcome to the line"


def test_an_item_sent_twice_is_recorded_once() -> None:
    ctx = ConversationContext("gw1i")
    item = {"id": "gw1i9", "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Caller pressed 4 2"}]}
    ctx.on_client_item(item)
    ctx.on_client_item(item)
    assert len(ctx) == 1
    assert items(ctx)[0]["role"] == "user"


def test_the_record_is_bounded_by_items_and_characters() -> None:
    ctx = ConversationContext("gw1i", max_items=3, max_chars=1000)
    for n in range(10):
        ctx.on_server_event(caller(f"item_{n}", f"turn {n}"))
    assert [i["content"][0]["text"] for i in items(ctx)] == ["turn 7", "turn 8", "turn 9"]
    ctx = ConversationContext("gw1i", max_items=50, max_chars=25)
    for n in range(5):
        ctx.on_server_event(caller(f"item_{n}", f"turn number {n}"))  # 13 chars each
    assert [i["content"][0]["text"] for i in items(ctx)] == ["turn number 4"]


def test_an_output_whose_call_was_dropped_is_not_replayed() -> None:
    ctx = ConversationContext("gw1i", max_items=2)
    ctx.on_server_event(call("call_1"))
    ctx.on_client_item({"id": "gw1i50", "type": "function_call_output", "call_id": "call_1",
                        "output": "1"})
    ctx.on_server_event(caller("item_x", "next"))  # pushes the call out
    assert [i["type"] for i in items(ctx)] == ["message"]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_items"):
        ConversationContext("p", max_items=0)

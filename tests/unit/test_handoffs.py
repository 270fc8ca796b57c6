"""Handoffs: tool shapes (checked with the openai SDK types), session updates, argument parsing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema
import pytest
from openai.types.realtime import RealtimeFunctionTool, RealtimeSessionCreateRequest
from openai.types.realtime.session_update_event import SessionUpdateEvent

from gateway.agents.handoffs import (
    MAX_ARGUMENT_CHARS,
    HandoffHistory,
    HandoffRecord,
    handoff_session_update,
    handoff_tools,
    parse_handoff_arguments,
)
from gateway.agents.spec import HandoffSpec

pytestmark = pytest.mark.unit

AGENTS = {
    "billing": "You are the billing agent.\nYou handle invoices and refunds.",
    "sales": "\n\n   Sells   upgrades.  \nMore text.",
    "support": "",
}


def assert_ga_function_tool(tool: Mapping[str, Any]) -> None:
    """``tool`` is a GA Realtime function tool the SDK parses, with a valid JSON schema."""
    assert set(tool) == {"type", "name", "description", "parameters"}
    assert set(tool) <= set(RealtimeFunctionTool.model_fields)
    event = SessionUpdateEvent.model_validate(
        {"type": "session.update", "session": {"type": "realtime", "tools": [tool]}}
    )
    assert isinstance(event.session, RealtimeSessionCreateRequest)
    assert event.session.tools is not None
    parsed = event.session.tools[0]
    assert isinstance(parsed, RealtimeFunctionTool)
    assert parsed.type == "function" and parsed.name == tool["name"]
    jsonschema.Draft202012Validator.check_schema(tool["parameters"])
    assert tool["parameters"]["type"] == "object"
    json.dumps(tool)  # JSON-ready


def test_default_handoff_tool_shape() -> None:
    [tool] = handoff_tools((HandoffSpec("billing"),), AGENTS)
    assert_ga_function_tool(tool)
    assert tool["name"] == "transfer_to_billing"
    assert tool["description"] == "Hand the call over to billing: You are the billing agent."
    params = tool["parameters"]
    assert set(params["properties"]) == {"reason", "context"}
    assert params["required"] == []
    assert params["additionalProperties"] is False
    validator = jsonschema.Draft202012Validator(params)
    assert validator.is_valid({})
    assert validator.is_valid({"reason": "invoice question", "context": "invoice 42"})
    assert not validator.is_valid({"reason": 3})
    assert not validator.is_valid({"other": "x"})


def test_description_uses_the_first_non_empty_line_normalised() -> None:
    [tool] = handoff_tools((HandoffSpec("sales"),), AGENTS)
    assert tool["description"] == "Hand the call over to sales: Sells upgrades."


def test_description_without_anything_to_say() -> None:
    [tool] = handoff_tools((HandoffSpec("support"),), AGENTS)
    assert tool["description"] == "Hand the call over to support."


def test_long_first_line_is_cut() -> None:
    [tool] = handoff_tools((HandoffSpec("x"),), {"x": "word " * 200})
    assert len(tool["description"]) < 260
    assert tool["description"].endswith("…")


def test_explicit_name_and_description_win() -> None:
    spec = HandoffSpec("billing", tool_name="billing_desk", description="For invoices.")
    [tool] = handoff_tools((spec,), AGENTS)
    assert (tool["name"], tool["description"]) == ("billing_desk", "For invoices.")
    assert_ga_function_tool(tool)


def test_tools_keep_order_and_do_not_share_parameter_objects() -> None:
    tools = handoff_tools((HandoffSpec("sales"), HandoffSpec("billing")), AGENTS)
    assert [t["name"] for t in tools] == ["transfer_to_sales", "transfer_to_billing"]
    tools[0]["parameters"]["properties"]["reason"]["description"] = "mutated"
    again = handoff_tools((HandoffSpec("billing"),), AGENTS)
    assert again[0]["parameters"]["properties"]["reason"]["description"] != "mutated"
    assert tools[1]["parameters"]["properties"]["reason"]["description"] != "mutated"


def test_no_handoffs_no_tools() -> None:
    assert handoff_tools((), AGENTS) == []


@pytest.mark.parametrize(
    ("handoffs", "needle"),
    [
        ((HandoffSpec("nobody"),), "unknown agent"),
        ((HandoffSpec("billing", tool_name="bad name"),), "tool name"),
        ((HandoffSpec("billing", tool_name="x" * 65),), "tool name"),
        ((HandoffSpec("billing"), HandoffSpec("sales", tool_name="transfer_to_billing")), "twice"),
    ],
)
def test_invalid_handoffs_are_refused(handoffs: tuple[HandoffSpec, ...], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        handoff_tools(handoffs, AGENTS)


# --- arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"reason": "billing question", "context": "invoice 42"}', ("billing question",
                                                                     "invoice 42")),
        ('{"reason": "  padded  "}', ("padded", "")),
        ('{"context": "only context"}', ("", "only context")),
        ("{}", ("", "")),
        ("", ("", "")),
        (None, ("", "")),
        ("not json", ("", "")),
        ('{"reason": "cut', ("", "")),
        ("[1, 2]", ("", "")),
        ('"string"', ("", "")),
        ("null", ("", "")),
        ('{"reason": 5, "context": {"a": 1}}', ("", "")),
        ("[" * 100_000, ("", "")),
    ],
)
def test_parse_handoff_arguments_tolerates_anything(
    arguments: str | None, expected: tuple[str, str]
) -> None:
    assert parse_handoff_arguments(arguments) == expected


def test_parse_handoff_arguments_bounds_lengths() -> None:
    reason, context = parse_handoff_arguments(json.dumps({"reason": "r" * 5000, "context": "c"}))
    assert len(reason) == MAX_ARGUMENT_CHARS and context == "c"


# --- session update ------------------------------------------------------------------------


def _validated(session: dict[str, Any]) -> RealtimeSessionCreateRequest:
    event = SessionUpdateEvent.model_validate({"type": "session.update", "session": session})
    assert isinstance(event.session, RealtimeSessionCreateRequest)
    return event.session


def test_session_update_sends_instructions_and_tools() -> None:
    tools = handoff_tools((HandoffSpec("sales"),), AGENTS)
    session = handoff_session_update(
        "You are billing.", tools, voice_locked=True, current_voice="marin", target_voice="cedar"
    )
    assert session == {"type": "realtime", "instructions": "You are billing.", "tools": tools}
    parsed = _validated(session)
    assert parsed.instructions == "You are billing."
    assert parsed.audio is None


def test_session_update_clears_tools_with_an_empty_list() -> None:
    session = handoff_session_update(
        "", [], voice_locked=False, current_voice="marin", target_voice="marin"
    )
    assert session == {"type": "realtime", "instructions": "", "tools": []}
    _validated(session)


def test_voice_changes_only_when_unlocked_and_different() -> None:
    session = handoff_session_update(
        "x", [], voice_locked=False, current_voice="marin", target_voice="cedar"
    )
    assert session["audio"] == {"output": {"voice": "cedar"}}
    assert "voice" not in session  # never the beta top-level field
    parsed = _validated(session)
    assert parsed.audio is not None and parsed.audio.output is not None
    assert parsed.audio.output.voice == "cedar"
    for locked, current, target in [
        (True, "marin", "cedar"),
        (False, "marin", "marin"),
        (False, "marin", None),
    ]:
        update = handoff_session_update(
            "x", [], voice_locked=locked, current_voice=current, target_voice=target
        )
        assert "audio" not in update


def test_voice_is_set_when_none_was_known() -> None:
    session = handoff_session_update(
        "x", [], voice_locked=False, current_voice=None, target_voice="ash"
    )
    assert session["audio"] == {"output": {"voice": "ash"}}


def test_session_update_copies_the_tools() -> None:
    tools = handoff_tools((HandoffSpec("sales"),), AGENTS)
    session = handoff_session_update(
        "x", tools, voice_locked=True, current_voice=None, target_voice=None
    )
    session["tools"][0]["name"] = "changed"
    assert tools[0]["name"] == "transfer_to_sales"


# --- history -------------------------------------------------------------------------------


def _record(n: int, to_agent: str = "billing") -> HandoffRecord:
    return HandoffRecord(float(n), "main", to_agent, f"reason {n}", "", f"call_{n}")


def test_history_records_in_order_as_dicts() -> None:
    assert HandoffHistory().current_agent is None
    history = HandoffHistory()
    assert len(history) == 0
    history.append(_record(1))
    history.append(_record(2, "sales"))
    assert history.current_agent == "sales"
    assert len(history) == 2
    assert history.as_list() == [
        {"at": 1.0, "from_agent": "main", "to_agent": "billing", "reason": "reason 1",
         "context": "", "tool_call_id": "call_1"},
        {"at": 2.0, "from_agent": "main", "to_agent": "sales", "reason": "reason 2",
         "context": "", "tool_call_id": "call_2"},
    ]
    json.dumps(history.as_list())


def test_history_is_bounded_and_counts_drops() -> None:
    history = HandoffHistory(max_records=3)
    for n in range(5):
        history.append(_record(n))
    assert [r.tool_call_id for r in history.records] == ["call_2", "call_3", "call_4"]
    assert history.dropped == 2


def test_history_refuses_zero_capacity() -> None:
    with pytest.raises(ValueError):
        HandoffHistory(max_records=0)

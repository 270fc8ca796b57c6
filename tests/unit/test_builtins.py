"""Built-in call-control tools: shapes the model sees and checks on what the model asks for."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema
import pytest
from openai.types.realtime import RealtimeFunctionTool, RealtimeSessionCreateRequest
from openai.types.realtime.session_update_event import SessionUpdateEvent

from gateway.agents.builtins import (
    DTMF_PATTERN,
    MAX_URI_CHARS,
    builtin_tool,
    builtin_tools,
    dtmf_digits,
    end_call_reason,
    resolve_transfer_target,
)
from gateway.agents.spec import BuiltinTool, PythonTool

pytestmark = pytest.mark.unit

TARGETS = {"billing": "sip:billing@pbx.example.com", "Sales": "sip:+15550100@pbx.example.com"}
TRANSFER = BuiltinTool("transfer_call", targets=TARGETS)
ANY_URI = BuiltinTool("transfer_call", targets=TARGETS, allow_any_uri=True)
ONLY_URI = BuiltinTool("transfer_call", allow_any_uri=True)


def assert_ga_function_tool(tool: Mapping[str, Any]) -> jsonschema.Draft202012Validator:
    """``tool`` is a GA function tool the openai SDK parses; returns its argument validator."""
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
    assert tool["description"]
    json.dumps(tool)
    jsonschema.Draft202012Validator.check_schema(tool["parameters"])
    assert tool["parameters"]["type"] == "object"
    assert tool["parameters"]["additionalProperties"] is False
    return jsonschema.Draft202012Validator(tool["parameters"])


# --- tool shapes ---------------------------------------------------------------------------


def test_transfer_call_offers_target_names_only() -> None:
    tool = builtin_tool(TRANSFER)
    validator = assert_ga_function_tool(tool)
    assert tool["name"] == "transfer_call"
    params = tool["parameters"]
    assert set(params["properties"]) == {"target", "reason"}
    assert params["properties"]["target"]["enum"] == ["billing", "Sales"]
    assert params["required"] == ["target"]
    assert "sip:" not in json.dumps(tool)  # the model never sees the URIs
    assert validator.is_valid({"target": "billing", "reason": "invoice"})
    assert not validator.is_valid({"target": "elsewhere"})
    assert not validator.is_valid({"reason": "no target"})
    assert not validator.is_valid({"target": "billing", "uri": "sip:x@y"})


def test_transfer_call_with_any_uri() -> None:
    tool = builtin_tool(ANY_URI)
    validator = assert_ga_function_tool(tool)
    params = tool["parameters"]
    assert set(params["properties"]) == {"target", "uri", "reason"}
    assert params["properties"]["uri"]["maxLength"] == MAX_URI_CHARS
    assert params["required"] == []
    assert validator.is_valid({"uri": "sip:alice@example.com"})
    assert validator.is_valid({"target": "Sales"})


def test_transfer_call_with_uri_only() -> None:
    tool = builtin_tool(ONLY_URI)
    validator = assert_ga_function_tool(tool)
    assert set(tool["parameters"]["properties"]) == {"uri", "reason"}
    assert tool["parameters"]["required"] == ["uri"]
    assert not validator.is_valid({})


def test_transfer_call_without_destinations_is_refused() -> None:
    with pytest.raises(ValueError, match="targets"):
        builtin_tool(BuiltinTool("transfer_call"))


def test_end_call_shape() -> None:
    tool = builtin_tool(BuiltinTool("end_call"))
    validator = assert_ga_function_tool(tool)
    assert tool["name"] == "end_call"
    assert set(tool["parameters"]["properties"]) == {"reason"}
    assert tool["parameters"]["required"] == []
    assert validator.is_valid({}) and validator.is_valid({"reason": "caller said bye"})


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("123#", True), ("*9", True), ("ABCD", True), ("0" * 32, True), ("", False),
     ("0" * 33, False), ("E", False), ("1 2", False), ("abc", False)],
)
def test_send_dtmf_shape(digits: str, valid: bool) -> None:
    tool = builtin_tool(BuiltinTool("send_dtmf"))
    validator = assert_ga_function_tool(tool)
    assert tool["parameters"]["properties"]["digits"]["pattern"] == DTMF_PATTERN
    assert tool["parameters"]["required"] == ["digits"]
    assert validator.is_valid({"digits": digits}) is valid


def test_custom_name_and_description() -> None:
    tool = builtin_tool(BuiltinTool("end_call", name="hang_up", description="Bye."))
    assert (tool["name"], tool["description"]) == ("hang_up", "Bye.")


def test_bad_tool_name_is_refused() -> None:
    with pytest.raises(ValueError, match="tool name"):
        builtin_tool(BuiltinTool("end_call", name="hang up"))


def test_builtin_tools_skips_other_tools_and_keeps_order() -> None:
    tools = builtin_tools(
        [BuiltinTool("send_dtmf"), PythonTool("lookup", "pkg.mod:lookup"), TRANSFER]
    )
    assert [t["name"] for t in tools] == ["send_dtmf", "transfer_call"]
    assert builtin_tools([]) == []


# --- transfer targets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "uri"),
    [
        ({"target": "billing"}, TARGETS["billing"]),
        ('{"target": "billing", "reason": "invoice"}', TARGETS["billing"]),
        ({"target": "BILLING"}, TARGETS["billing"]),
        ({"target": "sales"}, TARGETS["Sales"]),
    ],
)
def test_named_targets_resolve_to_their_uri(arguments: str | dict[str, Any], uri: str) -> None:
    assert resolve_transfer_target(TRANSFER, arguments) == uri


def test_named_target_wins_over_a_uri() -> None:
    args = {"target": "billing", "uri": "sip:elsewhere@example.com"}
    assert resolve_transfer_target(ANY_URI, args) == TARGETS["billing"]


def test_ambiguous_case_folded_target_is_refused() -> None:
    spec = BuiltinTool("transfer_call", targets={"desk": "sip:a@b", "DESK": "sip:c@d"})
    assert resolve_transfer_target(spec, {"target": "DESK"}) == "sip:c@d"
    with pytest.raises(ValueError, match="Unknown"):
        resolve_transfer_target(spec, {"target": "Desk"})


def test_unknown_target_lists_the_choices() -> None:
    with pytest.raises(ValueError) as info:
        resolve_transfer_target(TRANSFER, {"target": "legal"})
    message = str(info.value)
    assert "Unknown transfer target 'legal'" in message
    assert "billing, Sales" in message
    assert "sip:" not in message


def test_uri_is_refused_without_allow_any_uri() -> None:
    with pytest.raises(ValueError, match="not allowed.*billing, Sales"):
        resolve_transfer_target(TRANSFER, {"uri": "sip:alice@example.com"})


@pytest.mark.parametrize(
    ("arguments", "needle"),
    [
        ({}, "target is one of"),
        ("", "target is one of"),
        (None, "target is one of"),
        ({"target": "", "uri": ""}, "target is one of"),
        ("{not json", "not valid JSON"),
        ("[1]", "JSON object"),
        ({"target": 7}, "must be a string"),
    ],
)
def test_missing_or_malformed_arguments(
    arguments: str | dict[str, Any] | None, needle: str
) -> None:
    with pytest.raises(ValueError, match=needle):
        resolve_transfer_target(TRANSFER, arguments)


def test_uri_only_tool_asks_for_a_uri() -> None:
    with pytest.raises(ValueError, match="sip:, sips: or tel: uri"):
        resolve_transfer_target(ONLY_URI, {})


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:alice@example.com", "sip:alice@example.com"),
        ("SIP:alice@example.com", "sip:alice@example.com"),
        ("sips:bob@10.0.0.1:5061;transport=tls", "sips:bob@10.0.0.1:5061;transport=tls"),
        ("sip:pbx.example.com", "sip:pbx.example.com"),
        ("sip:[2001:db8::1]:5060", "sip:[2001:db8::1]:5060"),
        ("sip:+15550100@gw.example.com;user=phone", "sip:+15550100@gw.example.com;user=phone"),
        ("sip:alice%20smith@example.com", "sip:alice%20smith@example.com"),
        ("tel:+1-201-555-0123", "tel:+1-201-555-0123"),
        ("tel:7042;phone-context=example.com", "tel:7042;phone-context=example.com"),
    ],
)
def test_valid_model_uris_are_accepted(uri: str, expected: str) -> None:
    assert resolve_transfer_target(ONLY_URI, {"uri": uri}) == expected
    assert resolve_transfer_target(ONLY_URI, json.dumps({"uri": uri})) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "sip:a@example.com\r\nX-Evil: 1",
        "sip:a@example.com\nVia: SIP/2.0/UDP evil",
        "sip:a@example.com\r",
        "sip:a@example.com\t",
        "sip:a@ example.com",
        "sip:a@example.com\u2028",
        "sip:a@example.com\x00",
        "sip:a@example.com>;tag=1",
        "<sip:a@example.com>",
        '"Boss" <sip:a@example.com>',
        "sip:a@example.com?Subject=hi",
        "sip:a@example.com?Replaces=abc%3Bto-tag%3D1",
        "sip:a@example.com, sip:b@example.com",
        "sip:a@example.com%0d%0aX-Evil:1",
        "sip:a@example.com;x=%0A",
        'sip:a@example.com;x="y"',
        "http://evil.example.com/",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "sip:",
        "sip:@example.com",
        "sip:a@",
        "sip:a@-example.com",
        "sip:a@example.com:99999999",
        "tel:",
        "tel:abc",
        "tel:+1 555 0100",
        "sip:" + "a" * MAX_URI_CHARS + "@example.com",
        "no-scheme@example.com",
    ],
)
def test_dangerous_or_malformed_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValueError) as info:
        resolve_transfer_target(ONLY_URI, {"uri": uri})
    message = str(info.value)
    assert "\r" not in message and "\n" not in message
    assert len(message) < 200


def test_non_string_uri_is_refused() -> None:
    with pytest.raises(ValueError, match="string"):
        resolve_transfer_target(ONLY_URI, {"uri": ["sip:a@b"]})


def test_echoed_target_is_short_and_on_one_line() -> None:
    with pytest.raises(ValueError) as info:
        resolve_transfer_target(TRANSFER, {"target": "x\r\nVia: evil" + "y" * 500})
    message = str(info.value)
    assert "\r" not in message and "\n" not in message
    assert len(message) < 200


# --- other arguments -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "digits"),
    [({"digits": "123#"}, "123#"), ('{"digits": "*9"}', "*9"), ({"digits": "abcd"}, "ABCD")],
)
def test_dtmf_digits(arguments: str | dict[str, Any], digits: str) -> None:
    assert dtmf_digits(arguments) == digits


@pytest.mark.parametrize(
    "arguments",
    [{}, {"digits": ""}, {"digits": "12E"}, {"digits": "1" * 33}, {"digits": 123},
     {"digits": "1\n2"}, {"digits": "1\n"}, None],
)
def test_bad_dtmf_digits_are_refused(arguments: str | dict[str, Any] | None) -> None:
    with pytest.raises(ValueError, match="digits must be 1 to 32"):
        dtmf_digits(arguments)
    with pytest.raises(ValueError, match="not valid JSON"):
        dtmf_digits("nope")


def test_end_call_reason() -> None:
    assert end_call_reason('{"reason": " caller said goodbye "}') == "caller said goodbye"
    assert end_call_reason({}) == ""
    assert end_call_reason("garbage") == ""
    assert end_call_reason({"reason": 3}) == ""
    assert end_call_reason(None) == ""

"""The control/worker message codec: round trips, the pinned v1 wire format, every refusal."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.ipc.messages import (
    CONTROL_MESSAGES,
    PROTOCOL_VERSION,
    WORKER_MESSAGES,
    CallEnded,
    CallEvent,
    CallOffered,
    CallStarted,
    CommandResult,
    Drain,
    Hangup,
    Hello,
    IpcError,
    Load,
    Message,
    Originate,
    RelayOffered,
    Reload,
    Say,
    Shutdown,
    ToolRequest,
    ToolResult,
    Transfer,
    WatchLevels,
    Welcome,
    decode,
    decode_from_control,
    decode_from_worker,
    encode,
    negotiate,
)

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parent.parent / "fixtures" / "ipc" / "v4.jsonl"

#: One example of every message (several where a field changes the shape), in fixture order.
EXAMPLES: list[Message] = [
    Hello(worker_id="worker-1", pid=4242, protocol=1, binding="pjproject 2.15.1 (source build)",
          capacity=120, sip_host="127.0.0.1", sip_port=5071),
    Load(active=3, capacity=120, draining=False),
    Load(active=0, capacity=120, draining=True),
    CallOffered(call_id="w1-17", sip_call_id="a84b4c76e66710@pbx.example.com",
                from_user="+15550100", to_user="support", request_uri_user="support",
                source_ip="192.0.2.10", time=1767225600.25),
    CallOffered(call_id="w1-18", sip_call_id="x", from_user="", to_user="", request_uri_user="",
                source_ip="2001:db8::1", time=1767225601.0),
    RelayOffered(call_id="w1-19", token="kq3T0b8xV2m_Qe9rYp4LzA-fHn6WcJ1s", route="relayed",
                 from_user="+15550100", to_user="support", request_uri="sip:support@gw.example",
                 source_ip="192.0.2.10", account="pbx", caller_name="Ada",
                 headers={"X-Customer": "A-1001", "Call-ID": "a84b4c@pbx"}),
    CallStarted(call_id="w1-17", route="support-line", agent="concierge", codec="PCMU"),
    CallEvent(call_id="w1-17", kind="state", time=1767225600.5, data={"state": "answered"}),
    CallEvent(call_id="w1-17", kind="transcript", time=1767225602.0,
              data={"role": "caller", "text": "Hallo, ich möchte umbuchen", "final": True}),
    CallEvent(call_id="w1-17", kind="tool", time=1767225603.0,
              data={"name": "lookup_order", "ok": True, "duration_s": 0.125}),
    CallEvent(call_id="w1-17", kind="handoff", time=1767225604.0,
              data={"from": "concierge", "to": "billing"}),
    CallEvent(call_id="w1-17", kind="guardrail", time=1767225605.0,
              data={"name": "no_promises", "tripped": False}),
    CallEvent(call_id="w1-17", kind="dtmf", time=1767225606.0, data={"digits": "12#"}),
    CallEvent(call_id="w1-17", kind="barge_in", time=1767225607.0,
              data={"item_id": "item_1", "audio_end_ms": 1840}),
    CallEvent(call_id="w1-17", kind="transfer", time=1767225608.0,
              data={"target": "sip:agent@pbx.example.com", "status": 202}),
    CallEvent(call_id="w1-17", kind="state", time=1767225609.0),
    CallEvent(call_id="w1-17", kind="levels", time=1767225609.25,
              data={"caller": 0.125, "agent": 0.5}),
    CallEnded(call_id="w1-17", reason="caller hung up",
              record={"route": "support-line", "agent": "billing", "answered": True,
                      "sip_status": 200, "tool_calls": [{"name": "lookup_order", "ok": True}],
                      "realtime": {"drops": 0, "reconnects": 0}, "rt_session_id": None}),
    ToolRequest(request_id=1, call_id="w1-17", op="python", timeout_s=5.0,
                path="tools.orders:lookup_order", name="lookup_order",
                arguments={"order_id": "A-1001", "items": [1, 2], "express": False}),
    ToolRequest(request_id=2, call_id="w1-17", op="sdk_tool", timeout_s=10.0,
                agent_path="agents.shop:concierge", agent_name="Billing",
                tool_name="refund", arguments_json='{"amount": 12.5}',
                tool_call_id="call_8f2a"),
    ToolRequest(request_id=3, call_id="w1-17", op="guardrail", timeout_s=2.5,
                path="tools.guards:no_promises", name="no_promises",
                text="I promise you a full refund."),
    ToolRequest(request_id=4, call_id="w1-17", op="sdk_guardrail", timeout_s=2.5,
                agent_path="agents.shop:concierge", agent_name="Billing",
                guardrail_name="no_legal_advice", text="You should sue them."),
    CommandResult(request_id=7, ok=True),
    CommandResult(request_id=8, ok=False, error="no such call"),
    CommandResult(request_id=11, ok=True, call_id="w1-20"),
    Welcome(protocol=1, settings_digest="9f86d081884c7d659a2feaa0c55ad015"),
    Reload(version=3, path="/etc/gateway/dialplan.yaml", plan="Z2F0ZXdheSBkaWFscGxhbg=="),
    Hangup(request_id=7, call_id="w1-17", reason="operator hung up"),
    Transfer(request_id=9, call_id="w1-17", target="sip:queue@pbx.example.com;transport=tcp"),
    Say(request_id=10, call_id="w1-17", text="Please hold, a colleague will be with you."),
    Originate(request_id=11, to="sip:+15550123@pbx.example.com", agent="concierge",
              context={"business": "Luigi's", "request": "a table for two"},
              max_duration_s=600.0, ring_timeout_s=25.0),
    Drain(deadline_s=300.0),
    Shutdown(),
    ToolResult(request_id=1, ok=True, output='{"status": "shipped"}'),
    ToolResult(request_id=3, ok=True, tripped=True, reason="promised a refund"),
    ToolResult(request_id=4, ok=True, tripped=False),
    ToolResult(request_id=2, ok=False, output='{"error": "tool refund timed out after 10 s"}',
               error="tool refund timed out after 10 s", error_type="TimeoutError"),
    ToolResult(request_id=5, ok=False, error="guardrail x raised ValueError: bad"),
    WatchLevels(all_calls=True),
    WatchLevels(all_calls=False, call_ids=("w1-17", "w1-18")),
]


def _line(msg: Message) -> str:
    return json.dumps(encode(msg), ensure_ascii=False, separators=(",", ":"))


def test_examples_cover_every_message_type() -> None:
    assert {type(m) for m in EXAMPLES} == set(WORKER_MESSAGES) | set(CONTROL_MESSAGES)
    assert not set(WORKER_MESSAGES) & set(CONTROL_MESSAGES)
    assert len({cls.type for cls in (*WORKER_MESSAGES, *CONTROL_MESSAGES)}) == 19


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip_through_json_text(msg: Message) -> None:
    wire = json.loads(json.dumps(encode(msg)))
    assert decode(wire) == msg
    if isinstance(msg, WORKER_MESSAGES):
        assert decode_from_worker(wire) == msg
    else:
        assert decode_from_control(wire) == msg


def test_v1_fixture_decodes_and_reencodes_identically() -> None:
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    decoded = [decode(json.loads(line)) for line in lines]
    assert [_line(m) for m in decoded] == lines
    # The fixture and the examples above are the same messages: a changed field name, default
    # or encoding shows up here as well as in the round trip.
    assert decoded == EXAMPLES
    assert {m.type for m in decoded} == {cls.type for cls in (*WORKER_MESSAGES,
                                                              *CONTROL_MESSAGES)}


def test_none_fields_are_left_out_and_defaults_filled_in() -> None:
    assert encode(CommandResult(request_id=1, ok=True)) == {
        "type": "command_result", "request_id": 1, "ok": True}
    assert encode(Shutdown()) == {"type": "shutdown"}
    assert decode({"type": "load", "active": 1, "capacity": 2}) == Load(1, 2, False)
    assert decode({"type": "command_result", "request_id": 1, "ok": True, "error": None}) == (
        CommandResult(1, True))


def test_encode_normalises_mappings_tuples_and_integer_times() -> None:
    msg = CallEvent(call_id="c1", kind="tool", time=5,
                    data=MappingProxyType({"args": (1, 2), "nested": MappingProxyType({"a": 1})}))
    wire = encode(msg)
    assert wire["data"] == {"args": [1, 2], "nested": {"a": 1}}
    assert type(wire["data"]["nested"]) is dict
    assert wire["time"] == 5.0 and isinstance(wire["time"], float)
    assert decode({**wire, "time": 7}) == CallEvent("c1", "tool", 7.0, wire["data"])


def test_direction_is_checked() -> None:
    with pytest.raises(IpcError, match="is not a message a worker sends") as info:
        decode_from_worker(encode(Welcome(1, "ab")))
    assert info.value.message_type == "welcome"
    with pytest.raises(IpcError, match="is not a message a control process sends"):
        decode_from_control(encode(Load(0, 1)))


def test_negotiate() -> None:
    first = EXAMPLES[0]
    assert isinstance(first, Hello)
    hello = dataclasses.replace(first, protocol=PROTOCOL_VERSION)
    welcome = negotiate(hello, "abc123")
    assert welcome == Welcome(protocol=PROTOCOL_VERSION, settings_digest="abc123")
    with pytest.raises(IpcError) as info:
        negotiate(Hello("w", 1, 1, "", 1, "h", 5060), "abc")
    assert str(info.value) == (
        "IPC message 'hello': field 'protocol' version 1 is not supported (this side speaks 4)")
    assert info.value.field == "protocol"


def test_error_is_a_gateway_error_with_fields() -> None:
    with pytest.raises(GatewayError) as info:
        decode({"type": "say", "request_id": 1, "call_id": "c", "text": ""})
    err = info.value
    assert isinstance(err, IpcError)
    assert (err.message_type, err.field, err.reason) == ("say", "text", "must not be empty")


HELLO = encode(EXAMPLES[0])
OFFER = encode(EXAMPLES[3])
EVENT = {"type": "call_event", "call_id": "c1", "kind": "state", "time": 1.0}
PY_TOOL = {"type": "tool_request", "request_id": 1, "call_id": "c1", "op": "python",
           "timeout_s": 1.0, "path": "m:f"}
SDK_TOOL = {"type": "tool_request", "request_id": 1, "call_id": "c1", "op": "sdk_tool",
            "timeout_s": 1.0, "agent_path": "m:a", "agent_name": "A", "tool_name": "t",
            "arguments_json": "{}"}
RESULT = {"type": "tool_result", "request_id": 1, "ok": True}

BAD: list[tuple[str, Any, str]] = [
    ("not an object", ["hello"], "IPC message: is not a JSON object"),
    ("no type", {"pid": 1}, "IPC message: field 'type' has no string 'type'"),
    ("type not a string", {"type": 3}, "IPC message: field 'type' has no string 'type'"),
    ("unknown type", {"type": "call_parked"},
     "IPC message: unknown message type 'call_parked' (protocol version 4)"),
    ("long unknown type", {"type": "x" * 100},
     f"IPC message: unknown message type '{'x' * 40}...' (protocol version 4)"),
    ("unknown field", {**HELLO, "zone": "eu"}, "IPC message 'hello': unknown field 'zone'"),
    ("unknown null field", {**HELLO, "zone": None}, "IPC message 'hello': unknown field 'zone'"),
    ("missing", {k: v for k, v in HELLO.items() if k != "pid"},
     "IPC message 'hello': field 'pid' is missing"),
    ("null required", {**HELLO, "pid": None}, "IPC message 'hello': field 'pid' is missing"),
    ("int as string", {**HELLO, "pid": "4242"},
     "IPC message 'hello': field 'pid' must be an integer"),
    ("bool as int", {**HELLO, "capacity": True},
     "IPC message 'hello': field 'capacity' must be an integer"),
    ("float as int", {**HELLO, "capacity": 3.0},
     "IPC message 'hello': field 'capacity' must be an integer"),
    ("port range", {**HELLO, "sip_port": 70000},
     "IPC message 'hello': field 'sip_port' must be between 1 and 65535"),
    ("negative count", {"type": "load", "active": -1, "capacity": 1},
     "IPC message 'load': field 'active' must be between 0 and 100000"),
    ("bool", {"type": "load", "active": 1, "capacity": 1, "draining": "yes"},
     "IPC message 'load': field 'draining' must be a boolean"),
    ("string", {**HELLO, "binding": 2},
     "IPC message 'hello': field 'binding' must be a string"),
    ("empty string", {**HELLO, "sip_host": ""},
     "IPC message 'hello': field 'sip_host' must not be empty"),
    ("long string", {**HELLO, "binding": "b" * 257},
     "IPC message 'hello': field 'binding' must be at most 256 characters (got 257)"),
    ("id characters", {**HELLO, "worker_id": "worker 1"},
     "IPC message 'hello': field 'worker_id' must be letters, digits and . _ : @ - only"),
    ("id length", {**HELLO, "worker_id": "w" * 65},
     "IPC message 'hello': field 'worker_id' must be at most 64 characters (got 65)"),
    ("ip", {**OFFER, "source_ip": "pbx.example.com"},
     "IPC message 'call_offered': field 'source_ip' must be an IP address"),
    ("number", {**OFFER, "time": "now"},
     "IPC message 'call_offered': field 'time' must be a number"),
    ("number range", {**OFFER, "time": -1},
     "IPC message 'call_offered': field 'time' must be between 0 and 1e+11"),
    ("codec", {"type": "call_started", "call_id": "c", "route": "r", "agent": "a",
               "codec": "G729"},
     "IPC message 'call_started': field 'codec' must be one of 'PCMU', 'PCMA'"),
    ("event kind", {**EVENT, "kind": "hold"},
     "IPC message 'call_event': field 'kind' must be one of 'state', 'transcript', 'tool', "
     "'handoff', 'guardrail', 'dtmf', 'barge_in', 'transfer', 'levels'"),
    ("data type", {**EVENT, "data": [1]},
     "IPC message 'call_event': field 'data' must be an object"),
    ("data size", {**EVENT, "data": {"text": "x" * 17000}},
     "IPC message 'call_event': field 'data' must be at most 16384 bytes as JSON (got 17011)"),
    ("data depth", {**EVENT, "data": {"a": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}},
     "IPC message 'call_event': field 'data.a[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0]' "
     "must not nest deeper than 16 levels"),
    ("nan in data", {**EVENT, "data": {"mos": float("nan")}},
     "IPC message 'call_event': field 'data.mos' must hold finite numbers only"),
    ("infinite number", {**EVENT, "time": float("inf")},
     "IPC message 'call_event': field 'time' must be between 0 and 1e+11"),
    ("record", {"type": "call_ended", "call_id": "c", "reason": "r", "record": "{}"},
     "IPC message 'call_ended': field 'record' must be an object"),
    ("op", {**PY_TOOL, "op": "shell"},
     "IPC message 'tool_request': field 'op' must be one of 'python', 'sdk_tool', "
     "'guardrail', 'sdk_guardrail'"),
    ("timeout", {**PY_TOOL, "timeout_s": 0},
     "IPC message 'tool_request': field 'timeout_s' must be between 0.001 and 3600"),
    ("request id", {**PY_TOOL, "request_id": 0},
     "IPC message 'tool_request': field 'request_id' must be between 1 and 9007199254740991"),
    ("op needs path", {k: v for k, v in PY_TOOL.items() if k != "path"},
     "IPC message 'tool_request': field 'path' is required for op 'python'"),
    ("op forbids field", {**PY_TOOL, "text": "hi"},
     "IPC message 'tool_request': field 'text' is not used by op 'python'"),
    ("sdk op needs tool", {k: v for k, v in SDK_TOOL.items() if k != "tool_name"},
     "IPC message 'tool_request': field 'tool_name' is required for op 'sdk_tool'"),
    ("sdk op forbids path", {**SDK_TOOL, "path": "m:f"},
     "IPC message 'tool_request': field 'path' is not used by op 'sdk_tool'"),
    ("guardrail needs text", {**PY_TOOL, "op": "guardrail"},
     "IPC message 'tool_request': field 'text' is required for op 'guardrail'"),
    ("arguments", {**PY_TOOL, "arguments": "{}"},
     "IPC message 'tool_request': field 'arguments' must be an object"),
    ("neither output nor tripped", RESULT,
     "IPC message 'tool_result': field 'output' or 'tripped' (exactly one) is required when ok "
     "is true"),
    ("both output and tripped", {**RESULT, "output": "x", "tripped": False},
     "IPC message 'tool_result': field 'output' or 'tripped' (exactly one) is required when ok "
     "is true"),
    ("ok with error", {**RESULT, "output": "x", "error": "e"},
     "IPC message 'tool_result': field 'error' must be absent when ok is true"),
    ("reason without trip", {**RESULT, "tripped": False, "reason": "r"},
     "IPC message 'tool_result': field 'reason' must be absent unless tripped is true"),
    ("failure without error", {**RESULT, "ok": False},
     "IPC message 'tool_result': field 'error' is required when ok is false"),
    ("failure with trip", {**RESULT, "ok": False, "error": "e", "tripped": False},
     "IPC message 'tool_result': field 'tripped' must be absent when ok is false"),
    ("command ok with error", {"type": "command_result", "request_id": 1, "ok": True,
                               "error": "e"},
     "IPC message 'command_result': field 'error' must be absent when ok is true"),
    ("command failure without error", {"type": "command_result", "request_id": 1, "ok": False,
                                       "error": ""},
     "IPC message 'command_result': field 'error' is required when ok is false"),
    ("digest", {"type": "welcome", "protocol": 1, "settings_digest": "ABC"},
     "IPC message 'welcome': field 'settings_digest' must be lowercase hex digits"),
    ("plan not base64", {"type": "reload", "version": 1, "path": "p", "plan": "a b"},
     "IPC message 'reload': field 'plan' must be base64 text"),
    ("plan empty", {"type": "reload", "version": 1, "path": "p", "plan": ""},
     "IPC message 'reload': field 'plan' must not be empty"),
    ("transfer target", {"type": "transfer", "request_id": 1, "call_id": "c",
                         "target": "http://example.com"},
     "IPC message 'transfer': field 'target' must be a sip:, sips: or tel: URI without spaces"),
    ("drain", {"type": "drain", "deadline_s": True},
     "IPC message 'drain': field 'deadline_s' must be a number"),
    ("say length", {"type": "say", "request_id": 1, "call_id": "c", "text": "x" * 4097},
     "IPC message 'say': field 'text' must be at most 4096 characters (got 4097)"),
]


@pytest.mark.parametrize(("data", "message"), [(d, m) for _, d, m in BAD],
                         ids=[name for name, _, _ in BAD])
def test_decode_refuses(data: Any, message: str) -> None:
    with pytest.raises(IpcError) as info:
        decode(data)
    assert str(info.value) == message


BAD_TO_SEND: list[tuple[str, Message, str]] = [
    ("negative", Load(active=-1, capacity=1),
     "IPC message 'load': field 'active' must be between 0 and 100000"),
    ("wrong type", Load(active=1, capacity="2"),  # type: ignore[arg-type]
     "IPC message 'load': field 'capacity' must be an integer"),
    ("enum", CallEvent("c", "hold", 1.0),  # type: ignore[arg-type]
     "IPC message 'call_event': field 'kind' must be one of 'state', 'transcript', 'tool', "
     "'handoff', 'guardrail', 'dtmf', 'barge_in', 'transfer', 'levels'"),
    ("set in data", CallEvent("c", "tool", 1.0, {"tags": {1, 2}}),
     "IPC message 'call_event': field 'data.tags' must hold JSON values only (found set)"),
    ("int key", CallEnded("c", "r", {"legs": {1: "a"}}),
     "IPC message 'call_ended': field 'record.legs' must have string keys only"),
    ("nan", CallEnded("c", "r", {"mos": float("nan")}),
     "IPC message 'call_ended': field 'record.mos' must hold finite numbers only"),
    ("nan number", Drain(deadline_s=float("inf")),
     "IPC message 'drain': field 'deadline_s' must be between 0 and 86400"),
    ("op forbids", ToolRequest(1, "c", "sdk_guardrail", 1.0, path="m:f"),
     "IPC message 'tool_request': field 'path' is not used by op 'sdk_guardrail'"),
    ("op requires", ToolRequest(1, "c", "sdk_guardrail", 1.0, agent_path="m:a", text="t"),
     "IPC message 'tool_request': field 'agent_name' is required for op 'sdk_guardrail'"),
]


@pytest.mark.parametrize(("msg", "message"), [(m, e) for _, m, e in BAD_TO_SEND],
                         ids=[name for name, _, _ in BAD_TO_SEND])
def test_encode_refuses(msg: Message, message: str) -> None:
    with pytest.raises(IpcError) as info:
        encode(msg)
    assert str(info.value) == message


def test_encode_refuses_what_is_not_a_message() -> None:
    with pytest.raises(IpcError, match="IPC message: dict is not an IPC message"):
        encode({"type": "hello"})  # type: ignore[arg-type]


def test_errors_never_echo_values() -> None:
    secret = "+4915112345678"
    cases: list[dict[str, Any]] = [
        {**OFFER, "from_user": secret * 20},
        {**OFFER, "source_ip": secret},
        {**EVENT, "kind": secret},
        {"type": "say", "request_id": 1, "call_id": "c", "text": secret * 400},
        {"type": "transfer", "request_id": 1, "call_id": "c", "target": f"http://{secret}"},
        {**HELLO, "worker_id": f"{secret} x"},
    ]
    for data in cases:
        with pytest.raises(IpcError) as info:
            decode(data)
        assert secret not in str(info.value)

"""The example concierge over a real SIP call: tools, handoffs, guardrails and end_call.

The gateway runs ``dialplans/concierge.yaml`` as a subprocess (from the repository root, so its
tool workers import ``examples.concierge``); the pjsua2 test caller dials it once for the YAML
agents (``100``) and once for the Agents SDK ``RealtimeAgent`` version (``200``), whose
``function_tool``s, ``realtime_handoff``s and ``output_guardrail`` run in the gateway's tool
workers. The caller speaks once; the test's scenario book then chains the whole conversation:
every tool call's output makes the gateway ask for the next response, so extract_quote, the
handoff to the quotes desk, validate_quote, compare_quotes, place_order, the handoff to the
scheduling desk, schedule_appointment and the farewell with end_call all follow without
another word from the caller. The test checks what each side would notice: the arguments and
outputs the simulator saw (outputs compared with calling the deterministic tools directly),
the lines the agent spoke with those outputs, the session updates of the handoffs, the call
record the gateway logged, and in the gateway's RTP that the farewell was heard in full before
the BYE, or that a line with a card number was cut short.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from examples.concierge import tools
from gateway.dialplan.loader import load_dialplan
from gateway.dialplan.router import CallInfo, RouteDecision, route_call
from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimulatorServer
from tests.sip.gateway import REPO, Gateway, place_call, run_gateway
from tests.sip.observe import (
    call_record,
    function_calls,
    gateway_stream,
    item_audio,
    played_prefix,
    spoken,
    stream_payload,
)
from tests.support.audio import silence_pcm16, speech_pcm16, write_wav
from tests.support.capture import Capture
from tests.support.rtp import Packet

pytestmark = [pytest.mark.sip, pytest.mark.timeout(75)]

DIALPLAN = REPO / "dialplans" / "concierge.yaml"
#: The two routes of the example plan: YAML agents, and the same desks as Agents SDK agents.
ROUTES = {"100": ("concierge", "quotes", "scheduling"),
          "200": ("sdk_concierge", "sdk_quotes", "sdk_scheduling")}


def _plan_text() -> str:
    """The example plan, copied to a temporary directory: its ``python_path: ..`` made absolute."""
    return DIALPLAN.read_text().replace("\npython_path: ..\n", f"\npython_path: {REPO}\n")


QUOTE_TEXT = "Acme Plumbing: 450 USD for boiler service"
QUOTES = [QUOTE_TEXT, "Bolt Heating: 520 USD for boiler service"]
ORDER_ARGS: dict[str, Any] = {"vendor": "Acme Plumbing", "service": "boiler service",
                              "amount": 450}
VALIDATE_ARGS: dict[str, Any] = {"vendor": "Acme Plumbing", "amount": 450,
                                 "service": "boiler service"}
VISIT_DAY, VISIT_TIME = "2030-05-14", "10:30"
ORDER_ID = str(tools.place_order(**ORDER_ARGS)["order_id"])
SCHEDULE_ARGS: dict[str, Any] = {"order_id": ORDER_ID, "date": VISIT_DAY, "time": VISIT_TIME}
TO_QUOTES = {"reason": "check and order the quote",
             "context": "Acme Plumbing quoted 450 USD for a boiler service"}
TO_SCHEDULING = {"reason": "book the visit", "context": f"order {ORDER_ID} is placed"}

#: The whole call after one caller utterance. Each response that calls a tool is followed by
#: the next one as soon as its output is in; a handoff's output works the same way, and its
#: session.update selects the next desk's scenario (matched on the shared instructions).
CHAIN_BOOK = """
scenarios:
  concierge:
    match: {instructions: "(?i)you are the concierge of"}
    turns:
      - call: {name: extract_quote, arguments: {text: "@QUOTE@"}}
      - - say: "{tool_output.vendor}, {tool_output.amount} {tool_output.currency}."
        - call: {name: transfer_to_quotes, arguments: @TO_QUOTES@}
  quotes:
    match: {instructions: "(?i)you run the quotes desk of"}
    turns:
      - call: {name: validate_quote, arguments: @VALIDATE@}
      - - say: "The quote is {tool_output.verdict}."
        - call: {name: compare_quotes, arguments: {quotes: @QUOTES@}}
      - - say: "{tool_output.best.vendor} is cheaper by {tool_output.savings} dollars."
        - call: {name: place_order, arguments: @ORDER@}
      - - say: "Order {tool_output.order_id} is placed."
        - call: {name: transfer_to_scheduling, arguments: @TO_SCHEDULING@}
  scheduling:
    match: {instructions: "(?i)you run the scheduling desk of"}
    turns:
      - call: {name: schedule_appointment, arguments: @SCHEDULE@}
      - - say: "Your visit is {tool_output.window}, code {tool_output.confirmation}. Goodbye!"
        - hangup
"""

#: The concierge reads out a (Luhn-valid test) card number; the guardrail stops it and asks
#: again, and the retry says goodbye.
CARD_LINE = "Your card 4111 1111 1111 1111 is on file with us for this booking."
GUARDRAIL_BOOK = f"""
scenarios:
  concierge:
    match: {{instructions: "(?i)you are the concierge of"}}
    turns:
      - say: "{CARD_LINE}"
      - - say: "Payment details stay on file. Goodbye!"
        - hangup
"""


def chain_book() -> str:
    """:data:`CHAIN_BOOK` with the fixed arguments filled in (as JSON flow mappings)."""
    fills = {"@QUOTE@": QUOTE_TEXT, "@TO_QUOTES@": json.dumps(TO_QUOTES),
             "@VALIDATE@": json.dumps(VALIDATE_ARGS), "@QUOTES@": json.dumps(QUOTES),
             "@ORDER@": json.dumps(ORDER_ARGS), "@TO_SCHEDULING@": json.dumps(TO_SCHEDULING),
             "@SCHEDULE@": json.dumps(SCHEDULE_ARGS)}
    text = CHAIN_BOOK
    for marker, value in fills.items():
        text = text.replace(marker, value)
    return text


def caller_wav(tmp_path: Path) -> Path:
    """Silence through the greeting (about 4.5 s) and a second more, one sentence, silence."""
    path = tmp_path / "caller.wav"
    speech = speech_pcm16("Hello, I have a quote from Acme Plumbing.")
    write_wav(path, silence_pcm16(6000) + speech + silence_pcm16(30000))
    return path


def decision_for(user: str) -> RouteDecision:
    """How the example plan routes a call to ``user`` (for the rendered instructions)."""
    plan = load_dialplan(DIALPLAN)
    return route_call(plan, CallInfo(to_user=user, from_user="caller",
                                     request_uri=f"sip:{user}@127.0.0.1", headers={},
                                     account=None, source_ip="127.0.0.1"))


# --- what the simulator and the gateway saw -------------------------------------------------


def gateway_bye(packets: list[Packet], gw: Gateway) -> Packet:
    """The BYE the gateway sent."""
    byes = [p for p in packets if p.sport == gw.port and p.payload.startswith(b"BYE ")]
    assert byes, "the gateway sent no BYE"
    return byes[0]


def capture_filter(gw: Gateway) -> str:
    """The gateway's RTP and its SIP messages (for the BYE)."""
    return (f"udp and (src portrange {gw.rtp_port_start}-{gw.rtp_port_start + 40} "
            f"or src port {gw.port})")


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["100", "200"], ids=["yaml", "agents-sdk"])
async def test_concierge_quotes_orders_schedules_and_hangs_up(tmp_path: Path,
                                                               user: str) -> None:
    concierge, quotes, scheduling = ROUTES[user]
    decision = decision_for(user)
    assert decision.agent is not None and decision.agent.name == concierge
    # call_content on: the record then keeps the model's handoff reason and context.
    async with SimulatorServer(scenarios=parse_scenarios(chain_book())) as sim, \
            run_gateway(tmp_path, sim, _plan_text(), call_content=True) as gw:
        with Capture(tmp_path / "call.pcap", capture_filter(gw)) as cap:
            report = await place_call(gw, tmp_path, user=user, play=caller_wav(tmp_path),
                                      duration_s=45, timeout_s=55)
            await gw.wait_log("call record:")
        session = sim.sessions[0]
    log = gw.log()
    record = call_record(log)

    # Every tool ran with the scripted arguments; its output (what the tool returns when
    # called directly: they are deterministic) went back to the model.
    extracted = tools.extract_quote(QUOTE_TEXT)
    validated = tools.validate_quote(**VALIDATE_ARGS)
    compared = tools.compare_quotes(QUOTES)
    ordered = tools.place_order(**ORDER_ARGS)
    scheduled = tools.schedule_appointment(**SCHEDULE_ARGS)
    expected: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("extract_quote", {"text": QUOTE_TEXT}, extracted),
        ("transfer_to_quotes", TO_QUOTES, {"ok": True, "now_speaking": quotes}),
        ("validate_quote", VALIDATE_ARGS, validated),
        ("compare_quotes", {"quotes": QUOTES}, compared),
        ("place_order", ORDER_ARGS, ordered),
        ("transfer_to_scheduling", TO_SCHEDULING, {"ok": True, "now_speaking": scheduling}),
        ("schedule_appointment", SCHEDULE_ARGS, scheduled),
    ]
    best = cast(dict[str, Any], compared["best"])
    calls = function_calls(session)
    assert [c["name"] for c in calls] == [name for name, _, _ in expected] + ["end_call"]
    for call, (name, arguments, output) in zip(calls, expected, strict=False):
        assert call["arguments"] == arguments, name
        assert call["output"] is not None, f"no function_call_output for {name}"
        assert json.loads(call["output"]) == output, name
    assert ordered["order_id"] == ORDER_ID and scheduled["status"] == "scheduled"

    # The agent's next line was built from each output.
    lines = [text for _, text in spoken(session)]
    assert lines[-5:] == [
        f"{extracted['vendor']}, {extracted['amount']} {extracted['currency']}.",
        f"The quote is {validated['verdict']}.",
        f"{best['vendor']} is cheaper by {compared['savings']} dollars.",
        f"Order {ordered['order_id']} is placed.",
        f"Your visit is {scheduled['window']}, code {scheduled['confirmation']}. Goodbye!",
    ]

    # Each handoff re-configured the live session with the next desk's instructions and
    # tools before its output went back (which started the desk's first response).
    updates = [(i, e["session"]) for i, e in enumerate(session.received)
               if e["type"] == "session.update"]
    assert len(updates) == 3
    desks = [(quotes, {"validate_quote", "compare_quotes", "place_order", "end_call",
                       "transfer_to_scheduling"}, calls[1]),
             (scheduling, {"schedule_appointment", "end_call"}, calls[5])]
    for (index, update), (desk, tool_names, handoff) in zip(updates[1:], desks, strict=True):
        assert update["instructions"] == decision.render(decision.handoff_agents[desk])[0]
        assert {t["name"] for t in update["tools"]} == tool_names
        assert index < handoff["output_index"]
    quote_tools = {t["name"]: t for t in updates[1][1]["tools"]}
    assert set(quote_tools["validate_quote"]["parameters"]["properties"]) == {
        "vendor", "amount", "service"}

    # The call record: the handoffs in order with the model's reason and context, every
    # tool call successful, and the end by the agent.
    assert [(h["from_agent"], h["to_agent"], h["reason"], h["context"])
            for h in record["handoffs"]] == [
        (concierge, quotes, TO_QUOTES["reason"], TO_QUOTES["context"]),
        (quotes, scheduling, TO_SCHEDULING["reason"], TO_SCHEDULING["context"])]
    assert [h["tool_call_id"] for h in record["handoffs"]] == [calls[1]["call_id"],
                                                               calls[5]["call_id"]]
    assert [t["name"] for t in record["tool_calls"]] == [c["name"] for c in calls]
    assert all(t["ok"] for t in record["tool_calls"])
    assert record["agent"] == concierge and record["guardrail_events"] == []
    assert record["end_reason"].startswith("agent ended the call")

    # The farewell was heard in full, and only then did the gateway hang up.
    assert report["status"] == 200 and report["ended_by"] == "remote"
    farewell_id = spoken(session)[-1][0]
    farewell = item_audio(session, farewell_id)
    packets = cap.packets()
    stream = gateway_stream(packets, gw)
    payload = stream_payload(stream)
    start, played = played_prefix(farewell, payload)
    assert played == len(farewell), f"only {played} of {len(farewell)} farewell bytes played"
    last_farewell_packet = stream.packets[(start + played - 1) // 160]
    assert gateway_bye(packets, gw).ts >= last_farewell_packet.at


@pytest.mark.parametrize("user", ["100", "200"], ids=["yaml", "agents-sdk"])
async def test_card_number_guardrail_cuts_the_line_and_retries(tmp_path: Path,
                                                               user: str) -> None:
    concierge = ROUTES[user][0]
    async with SimulatorServer(scenarios=parse_scenarios(GUARDRAIL_BOOK)) as sim, \
            run_gateway(tmp_path, sim, _plan_text()) as gw:
        with Capture(tmp_path / "call.pcap", capture_filter(gw)) as cap:
            report = await place_call(gw, tmp_path, user=user, play=caller_wav(tmp_path),
                                      duration_s=40, timeout_s=50)
            await gw.wait_log("call record:")
        session = sim.sessions[0]
    record = call_record(gw.log())
    lines = spoken(session)
    card_id = next(item for item, text in lines if text == CARD_LINE)

    # The gateway stopped the line: the item was truncated and the model told to try again.
    truncates = [e for e in session.received if e["type"] == "conversation.item.truncate"]
    assert [t["item_id"] for t in truncates] == [card_id]
    retry = [e["item"]["content"][0]["text"] for e in session.received
             if e["type"] == "conversation.item.create"
             and e["item"].get("type") == "message" and e["item"].get("role") == "user"]
    assert len(retry) == 1 and retry[0].startswith("guardrail triggered: card_number.")
    assert lines[-1][1] == "Payment details stay on file. Goodbye!"

    # The caller heard only the start of the card line; the truncate says how much.
    card = item_audio(session, card_id)
    payload = stream_payload(gateway_stream(cap.packets(), gw))
    _, played = played_prefix(card, payload)
    assert 0 < played < len(card) - 8000, (played, len(card))
    assert abs(truncates[0]["audio_end_ms"] - played / 8) <= 40

    events = record["guardrail_events"]
    assert [(e["guardrail"], e["action"], e["item_id"]) for e in events] == [
        ("card_number", "retry", card_id)]
    assert record["agent"] == concierge
    assert record["end_reason"].startswith("agent ended the call")
    assert report["ended_by"] == "remote"

"""The shipped examples: their tools, guards, dialplans and the scenario books that drive them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from agents import GuardrailFunctionOutput, RunContextWrapper

from examples.concierge import sdk_agent, tools as concierge
from examples.voice_assistant import guards, tools as assistant
from gateway.agents.guardrails import check_builtin
from gateway.agents.spec import (
    AgentCapabilities,
    BuiltinTool,
    GuardrailSpec,
    PythonTool,
    SdkTool,
    ToolSpec,
)
from gateway.dialplan import AgentAction, load_dialplan
from gateway.dialplan.capabilities import tool_name
from gateway.dialplan.pyimport import import_callable
from gateway.dialplan.router import CallInfo, RouteDecision, route_call
from gateway.dialplan.schema import AgentSpec, Dialplan
from gateway.sim.scenario import (
    Call,
    Handoff,
    Hangup,
    Say,
    ScenarioBook,
    TemplateContext,
    Wait,
    load_scenarios,
    parse_scenarios,
    render,
    render_value,
    template_names,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DIALPLANS = ROOT / "dialplans"
SCENARIOS = ROOT / "gateway" / "sim" / "scenarios"


# -- voice assistant tools -----------------------------------------------------------------------


def test_get_weather_is_deterministic_for_known_and_unknown_cities() -> None:
    assert assistant.get_weather("  lisbon ") == {
        "city": "Lisbon", "conditions": "sunny", "temperature_c": 24, "wind_kph": 12}
    first = assistant.get_weather("Reykjavik")
    assert first == assistant.get_weather("reykjavik")
    assert first["city"] == "Reykjavik"
    assert first["conditions"] in ("sunny", "partly cloudy", "overcast", "light rain", "windy",
                                   "clear")
    with pytest.raises(ValueError, match="city must not be empty"):
        assistant.get_weather("  ")


def test_book_appointment_books_within_opening_hours_with_a_stable_code() -> None:
    booked = assistant.book_appointment("2030-05-14", "10:30", "Haircut")
    assert booked == {"date": "2030-05-14", "time": "10:30", "service": "haircut",
                      "status": "booked", "duration_min": 30, "confirmation": "APT-9FFFB6"}
    other = assistant.book_appointment("2030-05-14", "11:00", "haircut")
    assert other["confirmation"] != booked["confirmation"]


@pytest.mark.parametrize(("date", "time", "service", "reason"), [
    ("2030-05-12", "10:30", "haircut", "the salon is closed on Sundays"),
    ("2030-05-14", "08:30", "haircut", "appointments run from 09:00 to 18:00"),
    ("2030-05-14", "17:00", "colour", "appointments run from 09:00 to 18:00"),
    ("2030-05-14", "10:00", "massage", "we offer haircut, colour, beard trim, manicure"),
])
def test_book_appointment_explains_why_a_slot_is_unavailable(date: str, time: str, service: str,
                                                             reason: str) -> None:
    result = assistant.book_appointment(date, time, service)
    assert (result["status"], result["reason"]) == ("unavailable", reason)


def test_book_appointment_rejects_malformed_dates() -> None:
    with pytest.raises(ValueError, match="date must be YYYY-MM-DD and time HH:MM"):
        assistant.book_appointment("14/05/2030", "10:30", "haircut")


def test_medical_advice_guard_trips_on_dosing_only() -> None:
    assert guards.medical_advice("Take 400 mg of ibuprofen.") == "dosing advice"
    assert guards.medical_advice("You could double the dose tonight.") == "dosing advice"
    assert guards.medical_advice("Please call your doctor or our nurse line.") == ""


# -- concierge tools -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("Acme Plumbing: 450 USD for boiler service",
     {"vendor": "Acme Plumbing", "amount": 450, "currency": "USD", "service": "boiler service"}),
    ("Bolt Heating quoted 520 dollars for a boiler service",
     {"vendor": "Bolt Heating", "amount": 520, "currency": "USD", "service": "boiler service"}),
    ("Spark Electric: $2,500 for rewiring",
     {"vendor": "Spark Electric", "amount": 2500, "currency": "USD", "service": "rewiring"}),
    ("Window Co offers 12,50 euros for window cleaning",
     {"vendor": "Window Co", "amount": 12.5, "currency": "EUR", "service": "window cleaning"}),
])
def test_extract_quote_reads_vendor_amount_currency_and_service(
        text: str, expected: dict[str, Any]) -> None:
    assert concierge.extract_quote(text) == {"found": True, **expected}


def test_extract_quote_without_a_price() -> None:
    assert concierge.extract_quote("They will call back.") == {
        "found": False, "reason": "no price in the text"}


def test_validate_quote_checks_the_guide_and_the_vendor() -> None:
    assert concierge.validate_quote("Acme Plumbing", 450, "Boiler Service") == {
        "valid": True, "approved_vendor": True, "verdict": "fair",
        "guide_low": 300, "guide_high": 550}
    assert concierge.validate_quote("Acme Plumbing", 900, "boiler service")["verdict"] == \
        "above the guide"
    low = concierge.validate_quote("Dodgy Ltd", 50, "boiler service")
    assert (low["valid"], low["approved_vendor"], low["verdict"]) == \
        (False, False, "below the guide")
    assert concierge.validate_quote("Acme Plumbing", 10, "juggling")["verdict"] == \
        "unknown service"


def test_compare_quotes_finds_the_cheapest_and_the_saving() -> None:
    result = concierge.compare_quotes([
        "Bolt Heating: 520 USD for boiler service",
        "Acme Plumbing: 450 USD for boiler service",
        "no price here",
    ])
    assert result == {"count": 2, "savings": 70, "best": {
        "vendor": "Acme Plumbing", "amount": 450, "currency": "USD",
        "service": "boiler service"}}
    with pytest.raises(ValueError, match="none of the quotes has a price"):
        concierge.compare_quotes(["nothing"])
    with pytest.raises(ValueError, match="different currencies"):
        concierge.compare_quotes(["A: 5 USD for x", "B: 4 EUR for x"])


def test_place_order_and_schedule_appointment_chain_by_order_id() -> None:
    order = concierge.place_order("Acme Plumbing", "boiler service", 450)
    assert order == {"status": "placed", "order_id": "ORD-B4A2B4", "vendor": "Acme Plumbing",
                     "service": "boiler service", "amount": 450}
    assert concierge.place_order("Dodgy Ltd", "boiler service", 450) == {
        "status": "refused", "reason": "Dodgy Ltd is not an approved vendor"}
    with pytest.raises(ValueError, match="amount must be more than 0"):
        concierge.place_order("Acme Plumbing", "boiler service", 0)
    visit = concierge.schedule_appointment(str(order["order_id"]), "2030-05-14", "10:30")
    assert visit == {"order_id": "ORD-B4A2B4", "date": "2030-05-14", "time": "10:30",
                     "status": "scheduled", "window": "10:00-12:00",
                     "confirmation": "VIS-2D5BC9"}
    assert concierge.schedule_appointment("ORD-B4A2B4", "2030-05-18", "10:30")["reason"] == \
        "no visits at weekends"
    assert concierge.schedule_appointment("ORD-B4A2B4", "2030-05-14", "07:00")["reason"] == \
        "visits run from 08:00 to 17:00"
    with pytest.raises(ValueError, match="order_id must look like ORD-1A2B3C"):
        concierge.schedule_appointment("12345", "2030-05-14", "10:30")


def test_sdk_card_number_guardrail_uses_the_luhn_check() -> None:
    assert sdk_agent.contains_card_number("charged to card 4111 1111 1111 1111.")
    assert sdk_agent.contains_card_number("4111-1111-1111-1111")
    assert not sdk_agent.contains_card_number("order 4111 1111 1111 1112")  # Luhn fails
    assert not sdk_agent.contains_card_number("order ORD-B4A2B4 for 450 dollars")
    owner: Any = sdk_agent.quotes
    output = sdk_agent.no_card_numbers.guardrail_function(
        RunContextWrapper(context=None), owner, "card 4111 1111 1111 1111")
    assert isinstance(output, GuardrailFunctionOutput)
    assert output.tripwire_triggered is True


# -- dialplans -----------------------------------------------------------------------------------


def test_example_dialplans_load_with_their_capabilities() -> None:
    va = load_dialplan(DIALPLANS / "voice_assistant.yaml")
    assert list(va.agents) == ["assistant", "bookings"]
    names = [tool_name(t) for t in va.agents["assistant"].capabilities.tools]
    assert names == ["get_weather", "transfer_call", "end_call", "send_dtmf"]
    assert [g.name for g in va.agents["assistant"].capabilities.guardrails] == \
        ["card_number", "rude", "medical"]
    cc = load_dialplan(DIALPLANS / "concierge.yaml")
    assert set(cc.agents) == {"concierge", "quotes", "scheduling", "sdk_concierge",
                              "sdk_quotes", "sdk_scheduling"}
    assert cc.routes[0].action == AgentAction(
        "sdk_concierge", sdk_agent="examples.concierge.sdk_agent:concierge")


@pytest.mark.parametrize(("name", "summary"), [
    ("voice_assistant.yaml", "OK: 1 route, 2 agents"),
    ("concierge.yaml", "OK: 2 routes, 6 agents"),
])
def test_gateway_dialplan_check_prints_ok_for_the_examples(name: str, summary: str) -> None:
    # ``python -m`` puts the working directory on sys.path, so ``examples`` imports.
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "dialplan", "check", f"dialplans/{name}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, summary + "\n", "")


# -- the scenario books, played against the dialplans -------------------------------------------


def _call(to: str) -> CallInfo:
    return CallInfo(to_user=to, from_user="+14155550123", request_uri=f"sip:{to}@gw",
                    headers={}, account=None, source_ip="127.0.0.1")


def _tool_output(tool: ToolSpec, arguments: dict[str, Any]) -> str:
    if isinstance(tool, PythonTool):
        fn = import_callable(tool.path)
    else:
        assert isinstance(tool, SdkTool)
        fn = getattr(concierge, tool.name)  # the SDK agents wrap the same functions
    return json.dumps(fn(**arguments))


def _sdk_guardrail_trips(spec: GuardrailSpec, text: str) -> bool:
    agents = [v for v in vars(sdk_agent).values() if getattr(v, "name", None)
              == spec.sdk_agent_name and hasattr(v, "output_guardrails")]
    [owner] = agents
    [guardrail] = [g for g in owner.output_guardrails if g.get_name() == spec.name]
    result = guardrail.guardrail_function(RunContextWrapper(context=None), owner, text)
    return bool(result.tripwire_triggered)


def _tripped(caps: AgentCapabilities, text: str) -> list[str]:
    out: list[str] = []
    for spec in caps.guardrails:
        if spec.sdk_agent_path is not None:
            tripped = _sdk_guardrail_trips(spec, text)
        elif spec.python is not None:
            tripped = bool(import_callable(spec.python)(text))
        else:
            tripped = check_builtin(spec, text) is not None
        if tripped:
            out.append(spec.name)
    return out


def _play(plan: Dialplan, book: ScenarioBook, to: str) -> list[tuple[str, str]]:
    """Play a call as the simulator and gateway would, checking every step against the plan.

    Returns ``(scenario, event)`` pairs: ``say: TEXT``, ``call NAME``, ``guardrail NAME``
    (the response is cut there and the next turn is the retry), ``handoff AGENT``, ``hangup``.
    """
    decision: RouteDecision = route_call(plan, _call(to))
    agent: AgentSpec | None = decision.agent
    assert agent is not None
    used: dict[str, int] = {}
    tool_output: str | None = None
    events: list[tuple[str, str]] = []
    for _ in range(30):
        instructions, _greeting = decision.render(agent)
        scenario = book.select(instructions, None)
        assert scenario.name != "default", agent.name
        turn = scenario.turns[used.get(scenario.name, 0)]
        used[scenario.name] = used.get(scenario.name, 0) + 1
        ctx = TemplateContext(tool_output=tool_output, user_text=turn.user_says or "")
        caps = agent.capabilities
        tools = {tool_name(t): t for t in caps.tools}
        handoffs = {h.name: h.agent for h in caps.handoffs}
        next_agent = agent
        for step in turn.steps:
            if isinstance(step, Say):
                for name in template_names(step.text):
                    assert render("{" + name + "}", ctx), (scenario.name, name)
                text = render(step.text, ctx)
                tripped = _tripped(caps, text)
                if tripped:
                    events.extend((scenario.name, f"guardrail {n}") for n in tripped)
                    break
                events.append((scenario.name, f"say: {text}"))
            elif isinstance(step, Call):
                tool = tools[step.name]
                assert not isinstance(tool, BuiltinTool)
                arguments = render_value(dict(step.arguments), ctx)
                jsonschema.validate(arguments, dict(tool.parameters or {}))
                tool_output = _tool_output(tool, arguments)
                events.append((scenario.name, f"call {step.name}"))
            elif isinstance(step, Handoff):
                next_agent = decision.handoff_agents[handoffs[step.tool]]
                tool_output = "{}"  # the handoff's own output; the next agent starts afresh
                events.append((scenario.name, f"handoff {step.target}"))
            elif isinstance(step, Hangup):
                assert "end_call" in tools
                events.append((scenario.name, "hangup"))
                return events
            else:
                assert isinstance(step, Wait)
        agent = next_agent
    raise AssertionError(f"the call never hung up: {events}")


def test_scenario_books_load_and_pick_each_agent_by_its_instructions() -> None:
    cases = [
        ("voice_assistant", {"assistant": "assistant", "bookings": "bookings"}),
        ("concierge", {"concierge": "concierge", "quotes": "quotes",
                       "scheduling": "scheduling", "sdk_concierge": "concierge",
                       "sdk_quotes": "quotes", "sdk_scheduling": "scheduling"}),
    ]
    for name, expected in cases:
        path = SCENARIOS / f"{name}.yaml"
        book = parse_scenarios(path.read_text(encoding="utf-8"), str(path))
        assert load_scenarios(path).names() == book.names()
        plan = load_dialplan(DIALPLANS / f"{name}.yaml")
        decision = route_call(plan, _call("100"))
        for agent_name, scenario in expected.items():
            instructions, _ = decision.render(plan.agents[agent_name])
            assert book.select(instructions, None).name == scenario, agent_name


def test_voice_assistant_book_plays_a_whole_call() -> None:
    book = load_scenarios(SCENARIOS / "voice_assistant.yaml")
    events = _play(load_dialplan(DIALPLANS / "voice_assistant.yaml"), book, "100")
    assert events == [
        ("assistant", "say: Let me check the weather in Lisbon."),
        ("assistant", "call get_weather"),
        ("assistant", "say: In Lisbon it is sunny and 24 degrees."),
        ("assistant", "say: Of course, I'll put you through to our bookings desk."),
        ("assistant", "handoff bookings"),
        ("bookings", "say: Booking a haircut for the fourteenth of May at ten thirty."),
        ("bookings", "call book_appointment"),
        ("bookings", "guardrail card_number"),
        ("bookings", "say: You're booked, confirmation APT-9FFFB6. You pay at the salon."),
        ("bookings", "say: Thank you for calling Harbour Hair. Goodbye!"),
        ("bookings", "hangup"),
    ]


CONCIERGE_CALL = [
    ("concierge", "say: Let me read that quote."),
    ("concierge", "call extract_quote"),
    ("concierge", "say: That's Acme Plumbing, 450 USD for a boiler service. Let me pass you to"
                  " our quotes desk."),
    ("concierge", "handoff quotes"),
    ("quotes", "say: Quotes desk here. Let me check that quote."),
    ("quotes", "call validate_quote"),
    ("quotes", "say: The quote looks fair. Let me compare it with Bolt Heating's."),
    ("quotes", "call compare_quotes"),
    ("quotes", "say: Acme Plumbing is cheaper by 70 dollars. Placing the order."),
    ("quotes", "call place_order"),
    ("quotes", "guardrail card_number"),
    ("quotes", "say: Your order number is ORD-B4A2B4; payment details stay on file. Now let's"
               " book the visit."),
    ("quotes", "handoff scheduling"),
    ("scheduling", "say: Scheduling desk. Booking the visit for order ORD-B4A2B4."),
    ("scheduling", "call schedule_appointment"),
    ("scheduling", "say: The vendor comes between 10:00-12:00 on 2030-05-14. Your confirmation"
                   " is VIS-2D5BC9. Goodbye!"),
    ("scheduling", "hangup"),
]


@pytest.mark.parametrize("to", ["100", "200"], ids=["yaml-agents", "sdk-agents"])
def test_concierge_book_plays_the_same_call_with_yaml_and_sdk_agents(to: str) -> None:
    plan = load_dialplan(DIALPLANS / "concierge.yaml")
    book = load_scenarios(SCENARIOS / "concierge.yaml")
    assert _play(plan, book, to) == CONCIERGE_CALL

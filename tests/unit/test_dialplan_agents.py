"""Dialplan agents that act: tools, handoffs, guardrails, DTMF, sdk_agent routes, and errors."""

from __future__ import annotations

import importlib
import importlib.util
import io
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pytest

from gateway.agents.spec import (
    BuiltinTool,
    DtmfRule,
    GuardrailSpec,
    HandoffSpec,
    HttpTool,
    PythonTool,
    SdkTool,
)
from gateway.config import Secret
from gateway.dialplan import AgentAction, DialplanStore, load_dialplan, parse_dialplan
from gateway.dialplan.commands import check, route
from gateway.dialplan.pyimport import (
    ImportProblem,
    default_describer,
    import_callable,
)
from gateway.dialplan.router import CallInfo, route_call
from gateway.dialplan.schema import Dialplan
from gateway.errors import ConfigError, ConfigErrors

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "dialplans"
HERE = "tests.unit.test_dialplan_agents"
ENV = {"ORDERS_TOKEN": "s3cr3t-token"}


# Functions the dialplans below name by import path.

def typed_tool(city: str, days: int = 1, unit: Literal["c", "f"] = "c",
               tags: list[str] | None = None) -> str:
    """Forecast for a city.

    Args:
        city: The city.
        days: How many days,
            counting today.
        unit: Celsius or Fahrenheit.
        tags: Extra labels.

    Returns:
        Text.
    """
    return f"{city} {days} {unit} {tags}"


def untyped_tool(city):  # type: ignore[no-untyped-def]
    """No hints."""
    return city


def varargs_tool(*cities: str) -> str:
    """Star args."""
    return ",".join(cities)


NOT_CALLABLE = 42


def _parse(text: str, env: Mapping[str, str] = ENV, **kwargs: Any) -> Dialplan:
    return parse_dialplan(textwrap.dedent(text), "plan.yaml", env=env, **kwargs)


def _errors(text: str, env: Mapping[str, str] = ENV, **kwargs: Any) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        _parse(text, env, **kwargs)
    return info.value.errors


def _line(text: str, marker: str) -> int:
    lines = [i for i, line in enumerate(textwrap.dedent(text).splitlines(), 1) if marker in line]
    assert len(lines) == 1, marker
    return lines[0]


def _call(to: str = "100") -> CallInfo:
    return CallInfo(to_user=to, from_user="+14155550123", request_uri=f"sip:{to}@gw",
                    headers={}, account=None, source_ip="127.0.0.1")


# -- a complete plan -----------------------------------------------------------------------------


def test_every_capability_field_becomes_spec_values() -> None:
    plan = load_dialplan(FIXTURES / "capabilities_main.yaml", ENV)
    caps = plan.agents["assistant"].capabilities
    weather, orders, transfer, end, dtmf_tool = caps.tools
    assert isinstance(weather, PythonTool)
    assert weather.path == "examples.voice_assistant.tools:get_weather"
    assert weather.timeout_s == 5
    assert weather.description.startswith("Get today's weather")
    assert weather.parameters is not None
    assert weather.parameters["required"] == ["city"]
    assert isinstance(orders, HttpTool)
    assert (orders.url, orders.method, orders.timeout_s) == \
        ("http://127.0.0.1:9000/orders", "POST", 3)
    assert orders.headers == {"Authorization": Secret("Bearer s3cr3t-token"),
                              "X-Tenant": Secret("acme")}
    assert "s3cr3t" not in repr(orders)
    assert orders.parameters["required"] == ["order_id"]
    assert transfer == BuiltinTool("transfer_call", targets={
        "billing": "sip:billing@127.0.0.1", "support": "tel:+18005550100"})
    assert end == BuiltinTool("end_call")
    assert dtmf_tool == BuiltinTool("send_dtmf", name="press_keys",
                                    description="Press keys on the line.")
    assert dtmf_tool.tool_name == "press_keys"
    assert caps.handoffs == (
        HandoffSpec("billing"),
        HandoffSpec("sales", "transfer_to_sales_team", "Caller wants to buy."))
    assert [h.name for h in caps.handoffs] == ["transfer_to_billing", "transfer_to_sales_team"]
    assert caps.guardrails == (
        GuardrailSpec("card_number", deny_regex="@card_numbers",
                      message="Never read out card numbers."),
        GuardrailSpec("ssn", deny_regex=r"\b\d{3}-\d{2}-\d{4}\b"),
        GuardrailSpec("rude", deny_keywords=("idiot", "shut up"), action="say",
                      message="Let's keep this friendly."),
        GuardrailSpec("medical", python="examples.voice_assistant.guards:medical_advice",
                      action="transfer", target="sip:nurse@127.0.0.1"),
        GuardrailSpec("threats", deny_keywords=("bomb",), action="hangup"),
    )
    assert caps.guardrail_debounce_chars == 40
    assert (caps.dtmf.to_agent, caps.dtmf.batch_ms, caps.dtmf.terminator,
            caps.dtmf.max_digits) == (False, 800, "", 6)
    assert caps.dtmf.rules == (
        DtmfRule("0", "transfer", target="sip:operator@127.0.0.1"),
        DtmfRule("*9", "hangup"),
        DtmfRule("#A", "say", message="Goodbye."),
        DtmfRule("1", "hangup"),
    )
    assert caps.sdk_agent is None
    # Tools and agents from the included file resolve; both files' tools are in the plan.
    assert plan.agents["billing"].capabilities.tools == (weather,)
    assert set(plan.tools) == {"lookup_order", "get_weather"}


def test_an_agent_without_capability_fields_gets_empty_defaults() -> None:
    plan = _parse("agents: {a: {instructions: hi}}\nroutes: [{name: r, agent: a}]\n")
    caps = plan.agents["a"].capabilities
    assert (caps.tools, caps.handoffs, caps.guardrails) == ((), (), ())
    assert caps.guardrail_debounce_chars == 100
    assert (caps.dtmf.to_agent, caps.dtmf.batch_ms, caps.dtmf.terminator) == (True, 1500, "#")


def test_route_decision_carries_capabilities_and_every_agent_handoffs_reach() -> None:
    plan = load_dialplan(FIXTURES / "capabilities_main.yaml", ENV)
    decision = route_call(plan, _call())
    assert decision.agent is plan.agents["assistant"]
    assert decision.agent.capabilities.handoffs[0].agent == "billing"
    assert list(decision.handoff_agents) == ["assistant", "billing", "sales"]
    instructions, greeting = decision.render(decision.handoff_agents["billing"])
    assert instructions == "You handle billing for Acme."
    assert greeting is None


def test_python_tool_with_explicit_parameters_keeps_them_and_the_docstring() -> None:
    plan = _parse(f"""\
        tools:
          t:
            python: "{HERE}:untyped_tool"
            parameters: {{type: object, properties: {{city: {{type: string}}}}}}
        agents: {{a: {{instructions: hi, tools: [t]}}}}
        routes: [{{name: r, agent: a}}]
        """)
    tool = plan.agents["a"].capabilities.tools[0]
    assert isinstance(tool, PythonTool)
    assert tool.description == "No hints."
    assert tool.parameters == {"type": "object", "properties": {"city": {"type": "string"}}}


def test_describer_is_pluggable_and_its_output_is_used() -> None:
    seen: list[str] = []

    def describe(path: str) -> tuple[str, Mapping[str, Any]]:
        seen.append(path)
        return "From the describer.", {"type": "object", "properties": {}}

    plan = _parse(f"""\
        tools: {{t: {{python: "{HERE}:typed_tool"}}}}
        agents: {{a: {{instructions: hi, tools: [t]}}}}
        routes: [{{name: r, agent: a}}]
        """, describe=describe)
    assert seen == [f"{HERE}:typed_tool"]
    tool = plan.agents["a"].capabilities.tools[0]
    assert isinstance(tool, PythonTool)
    assert tool.description == "From the describer."


def test_tools_handoffs_and_guardrails_may_come_from_anchors() -> None:
    plan = _parse("""\
        agents:
          a:
            instructions: hi
            guardrails: &g [{name: rude, deny_keywords: [idiot]}]
            handoffs: [b]
          b: {instructions: hello, guardrails: *g}
        routes: [{name: r, agent: a}]
        """)
    assert plan.agents["a"].capabilities.guardrails == plan.agents["b"].capabilities.guardrails


# -- errors --------------------------------------------------------------------------------------

AGENT = "agents:\n  a:\n    instructions: hi\n"
ROUTE = "routes: [{name: r, agent: a}]\n"
TOOL = f"tools:\n  t: {{python: \"{HERE}:typed_tool\"}}\n"

ERROR_CASES = [
    # (document, marker on the expected line, field, part of the reason)
    (AGENT + "    tools: [nope]  # X\n" + ROUTE,
     "# X", "agents.a.tools[0]", "unknown tool 'nope' (tools: none defined)"),
    (TOOL + AGENT + "    tools:\n      - t\n      - t  # X\n" + ROUTE,
     "# X", "agents.a.tools[1]", "two tools named 't'"),
    (TOOL + AGENT + "    tools:\n      - t\n      - {builtin: end_call, name: t}  # X\n" + ROUTE,
     "# X", "agents.a.tools[1]", "two tools named 't'"),
    ("tools:\n  transfer_to_b: {python: \"" + HERE + ":typed_tool\"}\n" + AGENT
     + "    tools: [transfer_to_b]\n    handoffs:\n      - b  # X\n"
     "  b: {instructions: hi}\n" + ROUTE,
     "# X", "agents.a.handoffs[0]", "two tools named 'transfer_to_b'"),
    (AGENT + "    handoffs:\n      - b\n      - {agent: c, tool_name: transfer_to_b}  # X\n"
     "  b: {instructions: hi}\n  c: {instructions: hi}\n" + ROUTE,
     "# X", "agents.a.handoffs[1]", "tools and handoffs share one namespace"),
    (AGENT + "    handoffs: [nobody]  # X\n" + ROUTE,
     "# X", "agents.a.handoffs[0]", "handoff to unknown agent 'nobody' (agents: a)"),
    (AGENT + "    handoffs: [a]  # X\n" + ROUTE,
     "# X", "agents.a.handoffs[0]", "cannot hand off to itself"),
    (AGENT + "    handoffs: [{tool_name: x}]  # X\n" + ROUTE,
     "# X", "agents.a.handoffs[0].agent", "is required"),
    (AGENT + "    handoffs: [{agent: b, tool_name: 'bad name'}]  # X\n  b: {instructions: hi}\n"
     + ROUTE, "# X", "agents.a.handoffs[0].tool_name", "tool names use letters"),
    (AGENT + "    guardrails:\n      - {name: g, deny_regex: '(oops'}  # X\n" + ROUTE,
     "# X", "agents.a.guardrails[0].deny_regex", "invalid regular expression"),
    (AGENT + "    guardrails:\n      - {name: g, deny_regex: '@cards'}  # X\n" + ROUTE,
     "# X", "agents.a.guardrails[0].deny_regex", "unknown detector '@cards'"),
    (AGENT + "    guardrails:\n      - {name: g, deny_regex: ''}  # X\n" + ROUTE,
     "# X", "agents.a.guardrails[0].deny_regex", "must not be empty"),
    (AGENT + "    guardrails:\n      - {name: g, action: retry}  # X\n" + ROUTE,
     "# X", "agents.a.guardrails[0]", "needs one of deny_regex, deny_keywords or python"),
    (AGENT + "    guardrails:\n      - {name: g, deny_regex: x, deny_keywords: [y]}  # X\n"
     + ROUTE, "# X", "agents.a.guardrails[0]", "has 2 kinds (deny_regex, deny_keywords)"),
    (AGENT + "    guardrails:\n      - {name: g, deny_keywords: []}  # X\n" + ROUTE,
     "# X", "agents.a.guardrails[0].deny_keywords", "must be a list of non-empty words"),
    (AGENT + "    guardrails:\n      - {name: g, deny_regex: x, action: transfer,"
     " target: 'billing'}  # X\n" + ROUTE,
     "# X", "agents.a.guardrails[0].target", "must be a sip:, sips: or tel: URI"),
    (AGENT + "    guardrails:\n      - {name: g, deny_regex: x, action: transfer}  # X\n"
     + ROUTE, "# X", "agents.a.guardrails[0].target", "is required for action transfer"),
    (AGENT + "    guardrails:\n      - {name: g, deny_regex: x, target: 'sip:a@b'}  # X\n"
     + ROUTE, "# X", "agents.a.guardrails[0].target", "applies only to action transfer"),
    (AGENT + "    guardrails:\n      - {name: g, deny_regex: x, action: say}  # X\n" + ROUTE,
     "# X", "agents.a.guardrails[0].message", "is required for action say"),
    (AGENT + "    guardrails:\n      - {name: g, deny_regex: x, action: shout}  # X\n" + ROUTE,
     "# X", "agents.a.guardrails[0].action", "must be one of retry, say, transfer, hangup"),
    (AGENT + "    guardrails:\n      - {name: g, deny_regex: x, colour: red}  # X\n" + ROUTE,
     "# X", "agents.a.guardrails[0].colour", "unknown field"),
    (AGENT + "    guardrails:\n      - {name: g, deny_regex: x}\n"
     "      - {name: g, deny_keywords: [y]}  # X\n" + ROUTE,
     "# X", "agents.a.guardrails[1]", "two guardrails named 'g'"),
    (AGENT + f"    guardrails:\n      - {{name: g, python: '{HERE}:nothing_here'}}  # X\n"
     + ROUTE, "# X", "agents.a.guardrails[0].python", f"module '{HERE}' has no attribute"),
    (AGENT + "    tools: [{builtin: teleport}]  # X\n" + ROUTE,
     "# X", "agents.a.tools[0].builtin",
     "unknown built-in 'teleport'; built-ins: transfer_call, end_call, send_dtmf"),
    (AGENT + "    tools:\n      - builtin: transfer_call\n        targets:\n"
     "          billing: 'billing@pbx'  # X\n" + ROUTE,
     "# X", "agents.a.tools[0].targets.billing", "must be a sip:, sips: or tel: URI"),
    (AGENT + "    tools:\n      - {builtin: transfer_call}  # X\n" + ROUTE,
     "# X", "agents.a.tools[0]", "transfer_call needs targets"),
    (AGENT + "    tools:\n      - {builtin: end_call, targets: {a: 'sip:a@b'}}  # X\n" + ROUTE,
     "# X", "agents.a.tools[0].targets", "applies only to builtin transfer_call"),
    (AGENT + "    tools: [42]  # X\n" + ROUTE,
     "# X", "agents.a.tools[0]", "must be the name of a tool"),
    (AGENT + "    dtmf:\n      rules:\n        '9x': hangup  # X\n" + ROUTE,
     "# X", "agents.a.dtmf.rules.9x", "DTMF digits are 0-9, *, #, A-D"),
    (AGENT + "    dtmf:\n      rules:\n        010: hangup  # X\n" + ROUTE,
     "# X", "agents.a.dtmf.rules.8", "YAML read 010 as '8': quote DTMF digits"),
    (AGENT + "    dtmf:\n      rules:\n        '0': {transfer: operator}  # X\n" + ROUTE,
     "# X", "agents.a.dtmf.rules.0.transfer", "must be a sip:, sips: or tel: URI"),
    (AGENT + "    dtmf:\n      rules:\n        '0': {say: hi, hangup: true}  # X\n" + ROUTE,
     "# X", "agents.a.dtmf.rules.0", "needs exactly one of transfer, say or hangup"),
    (AGENT + "    dtmf:\n      rules:\n        '0': dance  # X\n" + ROUTE,
     "# X", "agents.a.dtmf.rules.0", "must be hangup, {transfer: URI} or {say: TEXT}"),
    (AGENT + "    dtmf:\n      rules:\n        'a': hangup\n        'A': hangup  # X\n" + ROUTE,
     "# X", "agents.a.dtmf.rules.A", "the sequence 'A' has a rule already"),
    (AGENT + "    dtmf: {terminator: '##'}  # X\n" + ROUTE,
     "# X", "agents.a.dtmf.terminator", "must be one of 0-9, *, #, A-D"),
    (AGENT + "    dtmf: {batch_ms: -1}  # X\n" + ROUTE,
     "# X", "agents.a.dtmf.batch_ms", "must be >= 0"),
    (AGENT + "    guardrail_debounce_chars: 0  # X\n" + ROUTE,
     "# X", "agents.a.guardrail_debounce_chars", "must be >= 1"),
    ("tools:\n  t:\n    http:\n      url: http://127.0.0.1/x\n      headers:\n"
     "        Authorization: 'Bearer ${MISSING_TOKEN}'  # X\n"
     "    description: d\n    parameters: {type: object}\n" + AGENT + ROUTE,
     "# X", "tools.t.http.headers.Authorization", "environment variable MISSING_TOKEN is not set"),
    ("tools:\n  t:\n    http:\n      url: http://127.0.0.1/x\n      headers:\n"
     "        Authorization: 'Bearer ${bad name}'  # X\n"
     "    description: d\n    parameters: {type: object}\n" + AGENT + ROUTE,
     "# X", "tools.t.http.headers.Authorization", "write environment references as ${NAME}"),
    ("tools:\n  t:\n    http: {url: 'ftp://127.0.0.1/x'}  # X\n"
     "    description: d\n    parameters: {type: object}\n" + AGENT + ROUTE,
     "# X", "tools.t.http.url", "must be an http:// or https:// URL"),
    # A missing field is reported at the first line of the mapping it belongs in.
    ("tools:\n  t:\n    http: http://127.0.0.1/x  # X\n    description: d\n" + AGENT + ROUTE,
     "# X", "tools.t.parameters", "is required for an HTTP tool"),
    ("tools:\n  t:\n    http: http://127.0.0.1/x  # X\n    parameters: {type: object}\n"
     + AGENT + ROUTE, "# X", "tools.t.description", "is required for an HTTP tool"),
    ("tools:\n  t:\n    python: x.y:z  # X\n    http: http://127.0.0.1/x\n" + AGENT + ROUTE,
     "# X", "tools.t", "has both python and http"),
    ("tools:\n  t: {description: d}  # X\n" + AGENT + ROUTE,
     "# X", "tools.t", "needs exactly one of python or http"),
    ("tools:\n  'bad name': {python: x.y:z}  # X\n" + AGENT + ROUTE,
     "# X", "tools.bad name", "tool names use letters"),
    ("tools:\n  t: {python: no_such_module_xyz.tools:f}  # X\n" + AGENT + ROUTE,
     "# X", "tools.t.python", "cannot import module 'no_such_module_xyz.tools'"),
    ("tools:\n  t: {python: 'not a path'}  # X\n" + AGENT + ROUTE,
     "# X", "tools.t.python", "is not a 'package.module:attribute' path"),
    (f"tools:\n  t: {{python: '{HERE}:NOT_CALLABLE'}}  # X\n" + AGENT + ROUTE,
     "# X", "tools.t.python", "is a int, not a function"),
    (f"tools:\n  t:\n    python: '{HERE}:typed_tool'\n    parameters: {{type: string}}  # X\n"
     + AGENT + ROUTE, "# X", "tools.t.parameters", "must be a JSON schema with type: object"),
    (f"tools:\n  t:\n    python: '{HERE}:typed_tool'\n"
     "    parameters: {type: object, properties: {a: {type: 12}}}  # X\n" + AGENT + ROUTE,
     "# X", "tools.t.parameters", "is not a valid JSON schema"),
    (f"tools:\n  t: {{python: '{HERE}:typed_tool', timeout_s: 0}}  # X\n" + AGENT + ROUTE,
     "# X", "tools.t.timeout_s", "must be more than 0"),
    ("agents:\n  a:\n    instructions: hi {var.x}\n    handoffs: [b]\n"
     "  b:\n    instructions: hi {var.y}\nroutes:\n  - name: r\n    agent: a  # X\n"
     "    variables: {x: 1}\n",
     "# X", "routes[0].agent", "agent 'b' (a handoff from 'a' reaches it) uses {var.y}"),
    (AGENT + "routes:\n  - name: r\n    sdk_agent: no_such_module_xyz:agent  # X\n",
     "# X", "routes[0].sdk_agent", "cannot import module 'no_such_module_xyz'"),
    (AGENT + f"routes:\n  - name: r\n    sdk_agent: '{HERE}:typed_tool'  # X\n",
     "# X", "routes[0].sdk_agent", "is a function, not an agents.realtime.RealtimeAgent"),
    (AGENT + "routes:\n  - name: r\n    sdk_agent: not-a-path  # X\n",
     "# X", "routes[0].sdk_agent", "is not a 'package.module:attribute' path"),
    (AGENT + "routes:\n  - name: r\n    sdk_agent:\n      path: examples.concierge.sdk_agent:"
     "concierge\n      handoffs: [a]  # X\n",
     "# X", "routes[0].sdk_agent.handoffs", "handoffs come from its Python definition"),
    (AGENT + "routes:\n  - name: r\n    sdk_agent: 42  # X\n",
     "# X", "routes[0].sdk_agent", "must be an import path"),
    ("agents:\n  sdk_quotes: {instructions: hi}\nroutes:\n  - name: r\n"
     "    sdk_agent: examples.concierge.sdk_agent:concierge  # X\n",
     "# X", "routes[0].sdk_agent", "brings an agent named 'sdk_quotes', which is also the name"),
    (AGENT + "routes:\n  - name: r\n    sdk_agent: examples.concierge.sdk_agent:concierge\n"
     "  - name: s\n    sdk_agent: {path: examples.concierge.sdk_agent:concierge,"
     " voice: ash}  # X\n",
     "# X", "routes[1].sdk_agent", "is used with other settings at plan.yaml:6"),
]


@pytest.mark.parametrize(("text", "marker", "field", "reason"), ERROR_CASES)
def test_each_error_names_file_line_and_field(text: str, marker: str, field: str,
                                              reason: str) -> None:
    errors = _errors(text)
    found = [e for e in errors if e.field == field and reason in e.reason]
    assert found, [str(e) for e in errors]
    assert found[0].source == "plan.yaml"
    assert found[0].line == _line(text, marker), str(found[0])


def test_parameters_that_cannot_be_derived_are_an_error_naming_the_fix() -> None:
    def describe(path: str) -> tuple[str, Mapping[str, Any]]:
        raise ValueError("parameter 'city' has no type hint")

    text = f"tools:\n  t: {{python: '{HERE}:untyped_tool'}}  # X\n" + AGENT + ROUTE
    errors = _errors(text, describe=describe)
    assert [(e.line, e.field) for e in errors] == [(2, "tools.t.python")]
    assert errors[0].reason == ("cannot derive the tool's parameters: parameter 'city' has no"
                                " type hint (write 'parameters:' as a JSON schema instead)")


def test_missing_environment_never_reveals_other_values_and_bad_values_stay_hidden() -> None:
    text = ("tools:\n  t:\n    http:\n      url: http://127.0.0.1/x\n      headers:\n"
            "        A: '${TOKEN}'\n    description: d\n    parameters: {type: object}\n"
            + AGENT + ROUTE)
    errors = _errors(text, env={"TOKEN": "line1\nhunter2"})
    assert len(errors) == 1
    assert "control character" in errors[0].reason
    assert "hunter2" not in str(errors[0])


def test_a_broken_tool_is_reported_once_where_it_is_defined() -> None:
    text = "tools:\n  t: {python: no_such_module_xyz:f}\n" + AGENT + "    tools: [t]\n" + ROUTE
    errors = _errors(text)
    assert [(e.line, e.field) for e in errors] == [(2, "tools.t.python")]


def test_tool_defined_twice_across_files_is_an_error_at_the_second() -> None:
    files = {"other.yaml": "tools:\n  t: {python: '" + HERE + ":typed_tool'}\n"}

    def read(path: str) -> str:
        return files[path]

    text = "include: other.yaml\ntools:\n  t: {python: '" + HERE + ":typed_tool'}\n" + AGENT \
        + ROUTE
    with pytest.raises(ConfigErrors) as info:
        parse_dialplan(text, "plan.yaml", read_text=read)
    [error] = info.value.errors
    assert (error.source, error.line, error.field) == ("other.yaml", 2, "tools.t")
    assert error.reason == "tool 't' is already defined at plan.yaml:3"


def test_check_prints_every_capability_error_in_file_order() -> None:
    out = io.StringIO()
    path = FIXTURES / "capabilities_errors.yaml"
    assert check(path, out) == 1
    lines = out.getvalue().splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        f"{path}:3", f"{path}:7", f"{path}:8", f"{path}:10", f"{path}:12"]
    assert "module 'examples.voice_assistant.tools' has no attribute" in lines[0]
    assert "unknown tool 'nope'" in lines[1]
    assert "cannot hand off to itself" in lines[2]
    assert "invalid regular expression" in lines[3]
    assert "DTMF digits" in lines[4]


def test_check_and_route_use_the_environment_they_are_given() -> None:
    path = FIXTURES / "capabilities_main.yaml"
    out = io.StringIO()
    assert check(path, out) == 1
    assert "environment variable ORDERS_TOKEN is not set" in out.getvalue()
    out = io.StringIO()
    assert check(path, out, ENV) == 0
    assert out.getvalue() == "OK: 1 route, 3 agents\n"
    out = io.StringIO()
    assert route(path, from_user="1", to_user="2", out=out, env=ENV) == 0
    text = out.getvalue()
    assert ("tools: get_weather (python examples.voice_assistant.tools:get_weather), lookup_order"
            " (POST http://127.0.0.1:9000/orders), transfer_call (builtin), end_call (builtin),"
            " press_keys (builtin send_dtmf)\n") in text
    assert "handoffs: transfer_to_billing -> billing, transfer_to_sales_team -> sales\n" in text
    assert "medical (transfer sip:nurse@127.0.0.1)" in text
    assert "dtmf: not to agent; 0 -> transfer sip:operator@127.0.0.1, *9 -> hangup" in text
    assert "s3cr3t" not in text


def test_store_uses_its_environment_on_every_reload(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text((FIXTURES / "capabilities_main.yaml").read_text())
    (tmp_path / "capabilities_shared.yaml").write_text(
        (FIXTURES / "capabilities_shared.yaml").read_text())
    env = dict(ENV)
    store = DialplanStore(plan, env)
    env["ORDERS_TOKEN"] = "rotated"  # the store keeps the mapping it was given
    assert store.reload() is None
    assert store.generation == 2
    tool = store.current.tools["lookup_order"]
    assert isinstance(tool, HttpTool)
    assert tool.headers["Authorization"] == Secret("Bearer rotated")
    with pytest.raises(ConfigErrors):
        DialplanStore(plan)


# -- sdk_agent routes ----------------------------------------------------------------------------


def test_sdk_agent_route_brings_the_agent_and_its_handoff_targets() -> None:
    plan = load_dialplan(FIXTURES / "capabilities_sdk.yaml")
    path = "examples.concierge.sdk_agent:concierge"
    assert plan.routes[0].action == AgentAction("sdk_concierge", sdk_agent=path)
    assert set(plan.agents) == {"front", "sdk_concierge", "sdk_quotes", "sdk_scheduling"}
    concierge = plan.agents["sdk_concierge"]
    assert concierge.capabilities.sdk_agent == path
    assert (concierge.source, concierge.line) == (str(FIXTURES / "capabilities_sdk.yaml"), 9)
    [tool] = concierge.capabilities.tools
    assert isinstance(tool, SdkTool)
    assert (tool.name, tool.agent_path, tool.agent_name) == ("extract_quote", path,
                                                             "sdk_concierge")
    # A YAML agent may hand off to an SDK agent by its name.
    assert plan.agents["front"].capabilities.handoffs == (HandoffSpec("sdk_concierge"),)
    decision = route_call(plan, _call("200"))
    assert decision.agent is concierge
    assert list(decision.handoff_agents) == ["sdk_concierge", "sdk_quotes", "sdk_scheduling"]
    assert decision.instructions is not None
    assert decision.instructions.startswith("You are the concierge of Harbour Home Services.")


def test_sdk_agent_settings_apply_to_every_agent_and_extra_tools_follow_the_sdk_ones() -> None:
    plan = _parse("""\
        routes:
          - name: sdk
            sdk_agent:
              path: examples.concierge.sdk_agent:concierge
              voice: ash
              media: transcode
              greeting: Hello from the SDK.
              tools: [{builtin: end_call}]
              guardrails: [{name: rude, deny_keywords: [idiot]}]
              guardrail_debounce_chars: 20
              dtmf: {rules: {"0": hangup}}
          - name: again
            match: {to: "300"}
            sdk_agent:
              path: examples.concierge.sdk_agent:concierge
              voice: ash
              media: transcode
              greeting: Hello from the SDK.
              tools: [{builtin: end_call}]
              guardrails: [{name: rude, deny_keywords: [idiot]}]
              guardrail_debounce_chars: 20
              dtmf: {rules: {"0": hangup}}
        """)
    for agent in plan.agents.values():
        assert (agent.voice, agent.media) == ("ash", "transcode")
        caps = agent.capabilities
        assert caps.tools[-1] == BuiltinTool("end_call")
        assert all(isinstance(t, SdkTool) for t in caps.tools[:-1])
        assert [g.name for g in caps.guardrails] == ["card_number", "rude"]
        assert caps.guardrails[0].sdk_agent_name == agent.name
        assert caps.guardrail_debounce_chars == 20
        assert caps.dtmf.rules == (DtmfRule("0", "hangup"),)
    assert plan.agents["sdk_concierge"].greeting is not None
    assert plan.agents["sdk_quotes"].greeting is None


def test_sdk_tool_names_colliding_with_added_tools_are_an_error() -> None:
    text = ("tools:\n  extract_quote: {python: 'examples.concierge.tools:extract_quote'}\n"
            "routes:\n  - name: r\n    sdk_agent:\n"
            "      path: examples.concierge.sdk_agent:concierge\n"
            "      tools: [extract_quote]  # X\n")
    errors = _errors(text)
    assert [(e.line, e.field) for e in errors] == [(7, "routes[0].sdk_agent.tools[0]")]
    assert "two tools named 'extract_quote'" in errors[0].reason


LAZY_PROBE = """
import sys
from gateway.dialplan import parse_dialplan
plan = parse_dialplan({text!r}, "plan.yaml")
print("agents" in sys.modules, sorted(plan.agents))
"""

MISSING_PROBE = """
import sys
sys.modules["agents"] = None
from gateway.dialplan import parse_dialplan
from gateway.errors import ConfigErrors
text = "routes:\\n  - name: r\\n    sdk_agent: examples.concierge.sdk_agent:concierge\\n"
try:
    parse_dialplan(text, "plan.yaml")
except ConfigErrors as exc:
    print(exc)
"""


def _probe(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_openai_agents_is_imported_only_for_sdk_agent_routes() -> None:
    assert _probe(LAZY_PROBE.format(
        text="agents: {a: {instructions: hi}}\nroutes: [{name: r, agent: a}]\n")) \
        == "False ['a']"
    assert _probe(LAZY_PROBE.format(
        text="routes:\n  - {name: r, sdk_agent: 'examples.concierge.sdk_agent:concierge'}\n")) \
        == "True ['sdk_concierge', 'sdk_quotes', 'sdk_scheduling']"


def test_missing_openai_agents_is_a_clear_error_at_the_route() -> None:
    assert _probe(MISSING_PROBE) == ("plan.yaml:3: routes[0].sdk_agent: openai-agents is not"
                                     " installed: pip install gateway[agents]")


BOUNDARY_PROBE = """
import sys
for name in ("pjsua2", "websockets", "aiohttp", "asyncio", "agents"):
    sys.modules[name] = None
import gateway.dialplan.loader, gateway.dialplan.capabilities, gateway.dialplan.conditions
import gateway.dialplan.pyimport, gateway.agents.sdk
"""


def test_dialplan_modules_import_without_io_libraries_or_the_sdk() -> None:
    assert _probe(BOUNDARY_PROBE) == ""


# -- the Python tool helpers ---------------------------------------------------------------------


def test_import_callable_reports_each_problem() -> None:
    assert import_callable(f"{HERE}:typed_tool") is typed_tool
    for path, reason in [("nope", "is not a 'package.module:attribute' path"),
                         (f"{HERE}:missing", "has no attribute 'missing'"),
                         (f"{HERE}:NOT_CALLABLE", "is a int, not a function")]:
        with pytest.raises(ImportProblem, match=reason):
            import_callable(path)


def test_default_describer_is_the_tool_runtimes() -> None:
    schema: Any = importlib.import_module("gateway.agents.schema")
    assert default_describer() is schema.describe_tool

"""Scenario files of the simulator: parsing, file:line errors, selection and templates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import gateway.sim
from gateway.errors import ConfigError, ConfigErrors
from gateway.sim.scenario import (
    DEFAULT_GREETING,
    Call,
    Handoff,
    Hangup,
    Say,
    ScenarioBook,
    TemplateContext,
    Turn,
    Wait,
    check_template,
    literal,
    load_scenarios,
    parse_scenarios,
    quoted_text,
    render,
    render_value,
)

pytestmark = pytest.mark.unit

SHIPPED = Path(gateway.sim.__file__).parent / "scenarios" / "default.yaml"

FULL = """\
scenarios:
  agent:
    match:
      instructions: "(?i)agent"
    turns:
      - say: One.
      - user_says: Two please
        say: Two.
      - [{say: Three.}, {wait: 250}, hangup]
      - user_says: Four please
        steps:
          - call: {name: lookup, arguments: {id: "{user_text}"}}
          - handoff: Billing Desk
            tool: go_billing
      - call: {name: raw, arguments: '{"n": 1}'}
      - handoff: sales
      - {hangup: true}
    rules:
      - when: bye
        steps: hangup
    fallback: {say: "Again?"}
"""


def errors_of(text: str) -> list[ConfigError]:
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        parse_scenarios(text, "book.yaml")
    exc = info.value
    if isinstance(exc, ConfigErrors):
        return exc.errors
    assert isinstance(exc, ConfigError)
    return [exc]


def test_all_forms_parse() -> None:
    book = parse_scenarios(FULL, "book.yaml")
    agent = book.get("agent")
    assert agent is not None
    assert agent.match_instructions is not None and agent.match_instructions.search("AGENT")
    assert agent.turns == (
        Turn((Say("One."),)),
        Turn((Say("Two."),), "Two please"),
        Turn((Say("Three."), Wait(250), Hangup())),
        Turn(
            (Call("lookup", {"id": "{user_text}"}), Handoff("Billing Desk", "go_billing")),
            "Four please",
        ),
        Turn((Call("raw", {"n": 1}),)),
        Turn((Handoff("sales", "transfer_to_sales"),)),
        Turn((Hangup(),)),
    )
    assert agent.rules[0].when.pattern == "bye" and agent.rules[0].steps == (Hangup(),)
    assert agent.fallback == (Say("Again?"),)
    assert book.names() == ["agent", "default"]  # the built-in default is added


def test_shipped_example_file_is_valid() -> None:
    book = load_scenarios(SHIPPED)
    assert {"default", "reception", "billing"} <= set(book.names())
    default = book.get("default")
    assert default is not None and default.turns[0].steps == (Say(DEFAULT_GREETING),)


def test_default_book_greets_then_reports_heard_ms() -> None:
    default = ScenarioBook.default().select(None, None)
    assert default.turns == (Turn((Say(DEFAULT_GREETING),)),)
    assert default.fallback == (Say("I heard you for {heard_ms} milliseconds."),)


@pytest.mark.parametrize(
    ("text", "line", "field", "reason"),
    [
        ("scenarios:\n  a:\n    turn: []\n", 3, "scenarios.a.turn", "unknown field"),
        (
            "scenarios:\n  a:\n    match: {instructions: '(('}\n",
            3,
            "scenarios.a.match.instructions",
            "not a valid regular expression",
        ),
        (
            "scenarios:\n  a:\n    turns:\n      - say: hi\n        call: {name: x}\n",
            4,
            "scenarios.a.turns[0]",
            "exactly one of",
        ),
        (
            "scenarios:\n  a:\n    turns:\n      - say: 'Hi {name}'\n",
            4,
            "scenarios.a.turns[0].say",
            "unknown placeholder {name}",
        ),
        (
            "scenarios:\n  a:\n    turns:\n      - say: 'Hi {'\n",
            4,
            "scenarios.a.turns[0].say",
            "unmatched brace",
        ),
        (
            "scenarios:\n  a:\n    turns:\n      - wait: -5\n",
            4,
            "scenarios.a.turns[0].wait",
            "must be >= 0",
        ),
        (
            "scenarios:\n  a:\n    turns:\n      - [{say: hi, user_says: x}]\n",
            4,
            "scenarios.a.turns[0][0].user_says",
            "belongs to a turn",
        ),
        (
            "scenarios:\n  a:\n    turns:\n      - call: {arguments: {}}\n",
            4,
            "scenarios.a.turns[0].call.name",
            "is required",
        ),
        (
            "scenarios:\n  a:\n    turns:\n      - dance\n",
            4,
            "scenarios.a.turns[0]",
            "must be a step",
        ),
        (
            "scenarios:\n  a:\n    rules:\n      - steps: hangup\n",
            4,
            "scenarios.a.rules[0].when",
            "is required",
        ),
        (
            "scenarios:\n  a:\n    turns:\n      - handoff: x\n        tol: y\n",
            5,
            "scenarios.a.turns[0].tol",
            "unknown field",
        ),
        (
            "scenarios:\n  a:\n    turns:\n      - call: {name: f, arguments: [1]}\n",
            4,
            "scenarios.a.turns[0].call.arguments",
            "must be a mapping",
        ),
        ("other: 1\n", 1, "scenarios", "is required"),
        ("scenarios:\n  a:\n    turns: {say: x}\n", 3, "scenarios.a.turns", "must be a list"),
    ],
)
def test_errors_name_file_line_and_field(text: str, line: int, field: str, reason: str) -> None:
    errors = errors_of(text)
    matching = [e for e in errors if e.field == field]
    assert matching, [str(e) for e in errors]
    err = matching[0]
    assert err.source == "book.yaml"
    assert err.line == line
    assert reason in err.reason
    assert str(err).startswith(f"book.yaml:{line}: {field}: ")


def test_several_errors_are_reported_together() -> None:
    errors = errors_of("scenarios:\n  a:\n    turns:\n      - wait: x\n      - say: '{x}'\n")
    assert [e.line for e in errors] == [4, 5]


def test_yaml_syntax_error_has_a_line() -> None:
    [err] = errors_of("scenarios:\n  a: [\n")
    assert err.line is not None


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read scenario file"):
        load_scenarios(tmp_path / "missing.yaml")


def test_selection_order_match_then_requested_then_default() -> None:
    book = parse_scenarios(
        "scenarios:\n"
        "  one:\n    match: {instructions: alpha}\n"
        "  two:\n    match: {instructions: alp}\n"
        "  named: {}\n"
    )
    assert book.select("the alpha agent", "named").name == "one"  # first match wins
    assert book.select("alp", None).name == "two"
    assert book.select("beta", "named").name == "named"
    assert book.select("beta", "unknown").name == "default"
    assert book.select(None, None).name == "default"


def test_handoff_default_tool_name_follows_the_agents_sdk() -> None:
    assert Handoff.default_tool("Billing Desk") == "transfer_to_billing_desk"
    assert Handoff.default_tool("sales-EU") == "transfer_to_sales_eu"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{tool_output}", '{"balance": 12, "who": {"name": "Ann"}, "tags": ["a", "b"]}'),
        ("{tool_output.balance}", "12"),
        ("{tool_output.who.name}", "Ann"),
        ("{tool_output.who}", '{"name": "Ann"}'),
        ("{tool_output.tags.1}", "b"),
        ("{tool_output.missing}", ""),
        ("{user_text} / {heard_ms} ms", "hello / 1500 ms"),
        ("{{literal}} braces", "{literal} braces"),
    ],
)
def test_templates(template: str, expected: str) -> None:
    assert check_template(template) is None
    ctx = TemplateContext(
        '{"balance": 12, "who": {"name": "Ann"}, "tags": ["a", "b"]}', "hello", 1500
    )
    assert render(template, ctx) == expected


def test_templates_with_non_json_or_no_tool_output() -> None:
    assert render("[{tool_output.x}]", TemplateContext("plain text")) == "[]"
    assert render("[{tool_output}]", TemplateContext()) == "[]"
    assert render_value({"a": ["{heard_ms}", 3]}, TemplateContext(heard_ms=7)) == {"a": ["7", 3]}


def test_literal_survives_rendering() -> None:
    assert render(literal("Say {this} }{"), TemplateContext()) == "Say {this} }{"


@pytest.mark.parametrize(
    ("instructions", "quoted"),
    [
        ("Say exactly 'Thanks for calling ACME' now.", "Thanks for calling ACME"),
        ("Greet with 'Welcome to Bob's shop'.", "Welcome to Bob's shop"),
        ("Don't ramble; say 'hi'.", "hi"),
        ('Say "Hello there" to the caller.', "Hello there"),
        ("Say \u201cGood morning\u201d.", "Good morning"),
        ("Be nice and brief.", None),
    ],
)
def test_quoted_text(instructions: str, quoted: str | None) -> None:
    assert quoted_text(instructions) == quoted


def test_scenario_names_are_restricted() -> None:
    errors = errors_of("scenarios:\n  'bad name!': {}\n")
    assert any(re.search("scenario name", e.reason) for e in errors)

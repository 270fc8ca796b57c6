"""Dialplan loading: every field, every error kind with its file:line:field, includes, the store."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.dialplan import (
    AgentAction,
    DialplanStore,
    ReferAction,
    RejectAction,
    SemanticVad,
    ServerVad,
    Transcription,
    load_dialplan,
    parse_dialplan,
)
from gateway.dialplan.schema import Dialplan
from gateway.errors import ConfigError, ConfigErrors

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "dialplans"

AGENT = """\
agents:
  a:
    instructions: "Hello."
"""


def _parse(text: str, files: dict[str, str] | None = None) -> Dialplan:
    def read(path: str) -> str:
        try:
            return (files or {})[path]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory") from None

    return parse_dialplan(textwrap.dedent(text), "plan.yaml", read_text=read)


def _errors(text: str, files: dict[str, str] | None = None) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        _parse(text, files)
    return info.value.errors


def _line(text: str, marker: str) -> int:
    """1-based line of the only line of ``text`` containing ``marker``."""
    lines = [i for i, line in enumerate(textwrap.dedent(text).splitlines(), 1) if marker in line]
    assert len(lines) == 1, marker
    return lines[0]


def _one_error(text: str, files: dict[str, str] | None = None) -> ConfigError:
    errors = _errors(text, files)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


# -- valid plans -------------------------------------------------------------------------------


def test_shipped_default_dialplan_is_one_greeting_assistant_taking_every_call() -> None:
    plan = load_dialplan(ROOT / "dialplans" / "default.yaml")
    assert list(plan.agents) == ["assistant"]
    assistant = plan.agents["assistant"]
    assert assistant.greeting is not None and assistant.greeting.text
    assert assistant.instructions.text.strip()
    assert len(plan.routes) == 1
    route = plan.routes[0]
    assert route.action == AgentAction("assistant")
    assert route.match == type(route.match)()  # no condition: a catch-all


def test_shipped_example_dialplan_loads_and_uses_every_action_and_an_include() -> None:
    plan = load_dialplan(ROOT / "dialplans" / "example.yaml")
    kinds = {type(r.action) for r in plan.routes}
    assert kinds == {AgentAction, RejectAction, ReferAction}
    assert len(plan.source_files) == 2  # example.yaml and the default.yaml it includes
    assert plan.routes[-1].name == "default"  # included routes come last
    agents = plan.agents
    assert {a.media for a in agents.values()} == {"native", "transcode"}
    assert {type(a.turn_detection) for a in agents.values()} >= {ServerVad, SemanticVad}
    assert any(a.transcription is not None for a in agents.values())
    assert any(a.max_duration_s is not None for a in agents.values())
    match_fields = {name for r in plan.routes for name in ("to", "from_", "request_uri", "headers",
                    "account", "source") if getattr(r.match, name)}
    assert match_fields == {"to", "from_", "request_uri", "headers", "account", "source"}


def test_agent_defaults() -> None:
    plan = _parse(AGENT + "routes:\n  - {name: r, agent: a}\n")
    agent = plan.agents["a"]
    assert (agent.voice, agent.model, agent.media) == ("marin", None, "native")
    assert agent.turn_detection == ServerVad()
    assert (agent.transcription, agent.greeting, agent.max_duration_s) == (None, None, None)
    assert (agent.source, agent.line) == ("plan.yaml", 3)


def test_every_agent_field_is_read() -> None:
    plan = _parse("""\
        agents:
          full:
            instructions: |
              Line one for {var.co}.
            voice: cedar
            model: gpt-realtime-2.1-mini
            media: transcode
            turn_detection: {type: server_vad, threshold: 0.7, prefix_padding_ms: 200,
                             silence_duration_ms: 800, create_response: false,
                             interrupt_response: false, idle_timeout_ms: 9000}
            transcription: {model: gpt-4o-mini-transcribe, language: de, prompt: Widgets}
            greeting: "Hi from {var.co}"
            max_duration_s: 120
        variables: {co: Acme}
        routes:
          - {name: r, agent: full}
        """)
    agent = plan.agents["full"]
    assert agent.instructions.text == "Line one for {var.co}.\n"
    assert (agent.voice, agent.model, agent.media) == ("cedar", "gpt-realtime-2.1-mini",
                                                       "transcode")
    assert agent.turn_detection == ServerVad(0.7, 200, 800, False, False, 9000)
    assert agent.transcription == Transcription("gpt-4o-mini-transcribe", "de", "Widgets")
    assert agent.greeting is not None and agent.greeting.text == "Hi from {var.co}"
    assert agent.max_duration_s == 120
    assert plan.variables == {"co": "Acme"}


@pytest.mark.parametrize(("spec", "expected"), [
    ("none", None),
    ("server_vad", ServerVad()),
    ("semantic_vad", SemanticVad()),
    ("{type: semantic_vad, eagerness: high, interrupt_response: false}",
     SemanticVad("high", True, False)),
    ("{type: none}", None),
])
def test_turn_detection_forms(spec: str, expected: object) -> None:
    plan = _parse(AGENT + f"    turn_detection: {spec}\nroutes:\n  - {{name: r, agent: a}}\n")
    assert plan.agents["a"].turn_detection == expected


def test_reject_and_refer_forms() -> None:
    plan = _parse("""\
        routes:
          - {name: bare, reject: 486}
          - {name: full, reject: {code: 603, reason: Go Away}}
          - {name: coded, reject: {code: 499}}
          - {name: transfer, refer: "sips:ops@pbx.example.com;transport=tls"}
          - {name: phone, refer: "tel:+18005550100"}
        """)
    actions = [r.action for r in plan.routes]
    assert actions == [
        RejectAction(486, "Busy Here"), RejectAction(603, "Go Away"), RejectAction(499, "Rejected"),
        ReferAction("sips:ops@pbx.example.com;transport=tls"), ReferAction("tel:+18005550100"),
    ]


def test_route_variables_and_numbers_become_strings() -> None:
    plan = _parse(AGENT + """\
routes:
  - name: r
    agent: a
    variables: {floor: 3, ratio: 1.5, company: Acme}
""")
    assert plan.routes[0].variables == {"floor": "3", "ratio": "1.5", "company": "Acme"}


def test_route_location_is_recorded() -> None:
    text = AGENT + "routes:\n  - name: r   # HERE\n    agent: a\n"
    plan = _parse(text)
    assert plan.routes[0].where == f"plan.yaml:{_line(text, 'HERE')}"


# -- errors ------------------------------------------------------------------------------------

ERROR_CASES = [
    # (document, marker on the expected line, field, part of the reason)
    ("colour: red  # X\n" + AGENT + "routes: [{name: r, agent: a}]\n",
     "# X", "colour", "unknown field"),
    (AGENT + "    colour: red  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.colour", "unknown field"),
    (AGENT + "    handoffs: [b]  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.handoffs[0]", "handoff to unknown agent 'b'"),
    (AGENT + "    voice: robot  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.voice", "must be one of alloy"),
    (AGENT + "    media: mp3  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.media", "must be one of native, transcode"),
    (AGENT + "    model: bad model  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.model", "does not match"),
    (AGENT + "    max_duration_s: 0  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.max_duration_s", "must be >= 1"),
    (AGENT + "    turn_detection: null  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.turn_detection", "write 'none'"),
    (AGENT + "    turn_detection: {type: semantic_vad, threshold: 0.5}  # X\n"
     "routes: [{name: r, agent: a}]\n",
     "# X", "agents.a.turn_detection.threshold", "applies only to type server_vad"),
    (AGENT + "    turn_detection: {type: server_vad, threshold: 1.5}  # X\n"
     "routes: [{name: r, agent: a}]\n",
     "# X", "agents.a.turn_detection.threshold", "must be <= 1.0"),
    (AGENT + "    transcription: {language: en}  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.transcription.model", "is required"),
    ("agents:\n  a:\n    voice: marin  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.instructions", "is required"),
    ("agents:\n  a:\n    instructions: '  '  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.instructions", "must not be empty"),
    ("agents:\n  1a:\n    instructions: hi  # X\nroutes: [{name: r, agent: 1a}]\n",
     "# X", "agents.1a", "agent name must start with a letter"),
    ("agents:\n  a: hello  # X\nroutes: [{name: r, reject: 403}]\n",
     "# X", "agents.a", "must be a mapping"),
    ("agents:\n  a:\n    instructions: 'You are {foo}.'  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.instructions", "unknown template variable {foo}"),
    ("agents:\n  a:\n    instructions: hi\n    greeting: 'Hi {caller.__class__}'  # X\n"
     "routes: [{name: r, agent: a}]\n",
     "# X", "agents.a.greeting", "unknown template variable {caller.__class__}"),
    ("agents:\n  a:\n    instructions: '{caller!r:>10}'  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.instructions", "unknown template variable {caller!r:>10}"),
    ("agents:\n  a:\n    instructions: 'a } b'  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.instructions", "single '}'"),
    ("agents:\n  a:\n    instructions: 'a { b'  # X\nroutes: [{name: r, agent: a}]\n",
     "# X", "agents.a.instructions", "unclosed '{'"),
    ("agents:\n  a:\n    instructions: 'For {var.company}.'\nroutes:\n"
     "  - name: r\n    agent: a  # X\n",
     "# X", "routes[0].agent", "uses {var.company}"),
    (AGENT + "routes:\n  - name: r  # X\n",
     "# X", "routes[0]", "needs one action"),
    (AGENT + "routes:\n  - name: r  # X\n    agent: a\n    reject: 403\n",
     "# X", "routes[0]", "has 2 actions (agent, reject)"),
    (AGENT + "routes:\n  - name: r\n    agent: b  # X\n",
     "# X", "routes[0].agent", "unknown agent 'b' (agents: a)"),
    (AGENT + "routes:\n  - agent: a  # X\n",
     "# X", "routes[0].name", "is required"),
    (AGENT + "routes:\n  - name: 'has space'  # X\n    agent: a\n",
     "# X", "routes[0].name", "does not match"),
    (AGENT + "routes:\n  - name: r\n    agent: a\n    colour: red  # X\n",
     "# X", "routes[0].colour", "unknown field"),
    (AGENT + "routes:\n  - name: r\n    match: {to: {regex: '([a-'}}  # X\n    agent: a\n",
     "# X", "routes[0].match.to.regex", "invalid regular expression"),
    (AGENT + "routes:\n  - name: r\n    match:\n      from: {prefix: '+1', exact: '+1'}  # X\n"
     "    agent: a\n",
     "# X", "routes[0].match.from", "exactly one of exact, prefix or regex"),
    (AGENT + "routes:\n  - name: r\n    match:\n      to: +18005550100  # X\n    agent: a\n",
     "# X", "routes[0].match.to", "quote numbers"),
    (AGENT + "routes:\n  - name: r\n    match:\n      from: no  # X\n    agent: a\n",
     "# X", "routes[0].match.from", "got true/false"),
    (AGENT + "routes:\n  - name: r\n    match:\n      to: [[a]]  # X\n    agent: a\n",
     "# X", "routes[0].match.to[0]", "got a list"),
    (AGENT + "routes:\n  - name: r\n    match:\n      to: []  # X\n    agent: a\n",
     "# X", "routes[0].match.to", "must not be an empty list"),
    (AGENT + "routes:\n  - name: r\n    match:\n      caller: x  # X\n    agent: a\n",
     "# X", "routes[0].match.caller", "unknown field"),
    (AGENT + "routes:\n  - name: r\n    match:\n      headers: {X-A: a, x-a: b}  # X\n"
     "    agent: a\n",
     "# X", "routes[0].match.headers.x-a", "same header as X-A"),
    (AGENT + "routes:\n  - name: r\n    match:\n      headers: {'a b': c}  # X\n    agent: a\n",
     "# X", "routes[0].match.headers.a b", "not a valid SIP header name"),
    (AGENT + "routes:\n  - name: r\n    match:\n      headers: {X-A: }  # X\n    agent: a\n",
     "# X", "routes[0].match.headers.X-A", "needs a value"),
    (AGENT + "routes:\n  - name: r\n    match:\n      source: 10.0.0.1/8  # X\n    agent: a\n",
     "# X", "routes[0].match.source", "has host bits set"),
    (AGENT + "routes:\n  - name: r\n    match:\n      source: ['10.0.0.0/8',\n"
     "               nonsense]  # X\n    agent: a\n",
     "# X", "routes[0].match.source[1]", "invalid network"),
    ("routes:\n  - name: r\n    reject: 200  # X\n",
     "# X", "routes[0].reject", "must be >= 400"),
    ("routes:\n  - name: r\n    reject: {code: 700}  # X\n",
     "# X", "routes[0].reject.code", "must be <= 699"),
    ("routes:\n  - name: r\n    reject: {code: 403, reason: \"a\\nb\"}  # X\n",
     "# X", "routes[0].reject.reason", "one line"),
    ("routes:\n  - name: r\n    reject: busy  # X\n",
     "# X", "routes[0].reject", "SIP status code"),
    ("routes:\n  - name: r\n    refer: 'http://example.com'  # X\n",
     "# X", "routes[0].refer", "sip:, sips: or tel:"),
    ("routes:\n  - name: r\n    refer: 'sip:a b@example.com'  # X\n",
     "# X", "routes[0].refer", "without spaces"),
    ("variables: {9x: y}  # X\nroutes: [{name: r, reject: 403}]\n",
     "# X", "variables.9x", "variable names"),
    ("variables: {x: [1]}  # X\nroutes: [{name: r, reject: 403}]\n",
     "# X", "variables.x", "must be a string or a number"),
    ("routes:\n  - hello  # X\n",
     "# X", "routes[0]", "must be a mapping"),
    ("routes: {a: b}  # X\n",
     "# X", "routes", "must be a list"),
    ("routes:\n  - {name: r, reject: 403}\n  - {name: r, reject: 404}  # X\n",
     "# X", "routes[1].name", "duplicate route name 'r' (first at plan.yaml:2)"),
    ("include: [missing.yaml]  # X\nroutes: [{name: r, reject: 403}]\n",
     "# X", "include[0]", "missing.yaml: cannot read: No such file"),
    ("include: 5  # X\nroutes: [{name: r, reject: 403}]\n",
     "# X", "include", "must be a file name"),
    (AGENT + "agents:  # X\n  b: {instructions: x}\n",
     "# X", "agents", "duplicate key"),
    ("routes:\n  - {name: r, reject: 403\n",
     "", "", "YAML syntax error"),
    ("- a\n- b\n",
     "- a", "", "must be a mapping, got a list"),
]


@pytest.mark.parametrize(("text", "marker", "field", "reason"), ERROR_CASES)
def test_each_error_names_file_line_and_field(text: str, marker: str, field: str,
                                              reason: str) -> None:
    error = _one_error(text)
    assert error.source == "plan.yaml"
    if marker:
        assert error.line == _line(text, marker), str(error)
    else:
        assert error.line is not None
    assert error.field == field, str(error)
    assert reason in error.reason, str(error)
    assert str(error).startswith(f"plan.yaml:{error.line}: ")


def test_template_error_points_at_the_line_inside_a_block() -> None:
    text = """\
        agents:
          a:
            instructions: |
              You work for {var.co}.

              Be brief. {bogus}  # X
              The caller is {caller} and {also_bogus}.  # Y
            voice: marin
        variables: {co: Acme}
        routes: [{name: r, agent: a}]
        """
    errors = _errors(text)
    assert [(e.line, e.field) for e in errors] == [
        (_line(text, "# X"), "agents.a.instructions"),
        (_line(text, "# Y"), "agents.a.instructions"),
    ]
    assert "{bogus}" in errors[0].reason and "{also_bogus}" in errors[1].reason


def test_literal_braces_are_not_variables() -> None:
    plan = _parse("""\
        agents:
          a:
            instructions: 'Reply as JSON like {{"ok": true}}.'
        routes: [{name: r, agent: a}]
        """)
    assert plan.agents["a"].instructions.variables == frozenset()


def test_all_errors_are_collected_in_file_order() -> None:
    text = """\
        agents:
          a:
            instructions: hi
            voice: robot  # A
        routes:
          - name: r
            agent: nobody  # B
          - name: s
            reject: 100  # C
        """
    errors = _errors(text)
    assert [e.line for e in errors] == [_line(text, m) for m in ("# A", "# B", "# C")]


def test_no_routes_is_an_error() -> None:
    error = _one_error(AGENT)
    assert error.field == "routes"
    assert error.reason == "no routes: every call would be refused with 404"


def test_top_level_variable_satisfies_template() -> None:
    plan = _parse("""\
        variables: {company: Acme}
        agents:
          a: {instructions: "For {var.company} and {var.dept}."}
        routes:
          - {name: r, agent: a, variables: {dept: Sales}}
        """)
    assert plan.routes[0].variables == {"dept": "Sales"}


def test_missing_main_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_dialplan(tmp_path / "nope.yaml")
    (error,) = info.value.errors
    assert error.source == str(tmp_path / "nope.yaml")
    assert "cannot read" in error.reason


# -- includes ----------------------------------------------------------------------------------


def test_includes_merge_agents_and_append_routes_depth_first() -> None:
    plan = load_dialplan(FIXTURES / "include_main.yaml")
    assert [r.name for r in plan.routes] == [
        "main-first", "uses-shared-agent", "shared-route", "other-route"]
    assert set(plan.agents) == {"main", "helper", "other"}
    # include_other.yaml is reached twice (directly and through include_shared.yaml): read once.
    assert [Path(f).name for f in plan.source_files] == [
        "include_main.yaml", "include_shared.yaml", "include_other.yaml"]
    # The including file's variables win; included ones fill the gaps.
    assert plan.variables == {"company": "Main Co", "region": "EU"}
    assert plan.routes[2].source.endswith("include_shared.yaml")
    assert plan.agents["helper"].source.endswith("include_shared.yaml")


def test_include_cycle_is_reported_at_the_include_that_closes_it() -> None:
    with pytest.raises(ConfigErrors) as info:
        load_dialplan(FIXTURES / "cycle_a.yaml")
    (error,) = info.value.errors
    assert error.source.endswith("cycle_b.yaml")
    assert (error.line, error.field) == (2, "include[0]")
    assert error.reason.startswith("include cycle: ")
    chain = [Path(p).name for p in error.reason.removeprefix("include cycle: ").split(" -> ")]
    assert chain == ["cycle_a.yaml", "cycle_b.yaml", "cycle_a.yaml"]


def test_file_including_itself_is_a_cycle() -> None:
    with pytest.raises(ConfigErrors) as info:
        load_dialplan(FIXTURES / "self_include.yaml")
    (error,) = info.value.errors
    assert (error.line, error.field) == (1, "include")
    assert "include cycle" in error.reason


def test_agent_defined_in_two_files_is_reported_at_the_second() -> None:
    with pytest.raises(ConfigErrors) as info:
        load_dialplan(FIXTURES / "duplicate_agent.yaml")
    (error,) = info.value.errors
    assert error.source.endswith("duplicate_agent_other.yaml")
    assert error.field == "agents.other"
    assert "already defined at" in error.reason and "include_other.yaml" in error.reason


def test_syntax_error_in_included_file_names_that_file() -> None:
    with pytest.raises(ConfigErrors) as info:
        load_dialplan(FIXTURES / "include_syntax_error.yaml")
    (error,) = info.value.errors
    assert error.source.endswith("syntax_error.yaml")
    assert error.line is not None
    assert "YAML syntax error" in error.reason


def test_included_errors_carry_their_own_file_and_line() -> None:
    errors = _errors(
        "include: [sub/agents.yaml]\nroutes: [{name: r, agent: a}]\n",
        {"sub/agents.yaml": "agents:\n  a:\n    instructions: hi\n    voice: robot\n"},
    )
    assert [(e.source, e.line, e.field) for e in errors] == [
        ("sub/agents.yaml", 4, "agents.a.voice")]


def test_includes_resolve_relative_to_the_including_file() -> None:
    plan = _parse(
        "include: [sub/a.yaml]\nroutes: [{name: r, agent: b}]\n",
        {"sub/a.yaml": "include: [../shared/b.yaml]\n",
         "shared/b.yaml": "agents:\n  b: {instructions: hi}\n"},
    )
    assert plan.source_files == ("plan.yaml", "sub/a.yaml", "shared/b.yaml")


def test_route_in_main_file_may_use_agent_from_include_and_vice_versa() -> None:
    plan = _parse(
        "include: lib.yaml\nagents:\n  main: {instructions: hi}\nroutes: [{name: r, agent: lib}]\n",
        {"lib.yaml": "agents:\n  lib: {instructions: hi}\nroutes: [{name: s, agent: main}]\n"},
    )
    assert [r.action for r in plan.routes] == [AgentAction("lib"), AgentAction("main")]


# -- store -------------------------------------------------------------------------------------

GOOD = "routes:\n  - {name: first, reject: 403}\n"
GOOD_2 = "routes:\n  - {name: second, reject: 404}\n"


def test_store_loads_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(GOOD)
    store = DialplanStore(path)
    assert (store.current.routes[0].name, store.generation, store.path) == ("first", 1, path)
    path.write_text(GOOD_2)
    assert store.reload() is None
    assert (store.current.routes[0].name, store.generation) == ("second", 2)


def test_store_keeps_old_plan_when_reload_fails(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(GOOD)
    store = DialplanStore(path)
    before = store.current
    path.write_text("routes:\n  - {name: first, reject: 200}\n")
    errors = store.reload()
    assert errors is not None
    assert [(e.line, e.field) for e in errors.errors] == [(2, "routes[0].reject")]
    assert store.current is before and store.generation == 1
    path.unlink()
    errors = store.reload()
    assert errors is not None and "cannot read" in errors.errors[0].reason
    assert store.current is before


def test_store_refuses_to_start_on_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("routes: [{name: r}]\n")
    with pytest.raises(ConfigErrors):
        DialplanStore(path)

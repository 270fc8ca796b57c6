"""Scenarios of the Realtime API simulator: what the fake model says and does, turn by turn.

A scenario book is a YAML file of named scenarios. Each scenario lists ``turns`` (one per
response the simulator produces), keyword ``rules`` for typed user input, and a ``fallback``
for when the turns run out. A turn is a list of steps: ``say`` (speak text, with templates
such as ``{tool_output.balance}``), ``call`` (a function call), ``handoff`` (a call to the
``transfer_to_<agent>`` tool), ``hangup`` and ``wait``. A session picks its scenario by
matching the session's instructions (so a handoff that swaps instructions swaps the
scenario), else by ``?scenario=NAME``, else ``default``. This module only parses, validates
(with file:line errors through :mod:`gateway.yamlsrc`) and renders templates; the session
core decides when each turn runs. Pure: no I/O except reading the file in
:func:`load_scenarios`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.errors import ConfigError, ConfigErrors
from gateway.yamlsrc import Reader, YamlDoc, load_yaml

#: Name of the scenario used when nothing else matches.
DEFAULT_SCENARIO: Final = "default"
#: What the built-in default scenario says first.
DEFAULT_GREETING: Final = "Hello from the gateway simulator. How can I help you?"
#: What the built-in default scenario says on every later turn.
DEFAULT_REPLY: Final = "I heard you for {heard_ms} milliseconds."
#: Tool the ``hangup`` step calls when the session declares it.
END_CALL_TOOL: Final = "end_call"

_ACTIONS: Final = ("say", "call", "handoff", "hangup", "wait")
_TEMPLATE: Final = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_FIELD_PATH: Final = re.compile(r"[A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*")
_SCENARIO_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]+")
_MAX_WAIT_MS: Final = 600_000


@dataclass(frozen=True)
class Say:
    """Speak ``text`` (a template) as one assistant message."""

    text: str


@dataclass(frozen=True)
class Call:
    """Call function ``name`` with ``arguments`` (string values are templates)."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Handoff:
    """Hand the call to another agent by calling its transfer tool."""

    target: str
    tool: str

    @staticmethod
    def default_tool(target: str) -> str:
        """The tool name the OpenAI Agents SDK gives a handoff to ``target``.

        Example: ``"Billing Desk"`` becomes ``transfer_to_billing_desk``.
        """
        return "transfer_to_" + re.sub(r"[^a-z0-9]+", "_", target.lower()).strip("_")


@dataclass(frozen=True)
class Hangup:
    """End the call: call ``end_call`` if the session has it, else close the WebSocket."""


@dataclass(frozen=True)
class Wait:
    """Pause ``ms`` milliseconds (wall clock) before the next step."""

    ms: int


Step = Say | Call | Handoff | Hangup | Wait


@dataclass(frozen=True)
class Turn:
    """The steps of one response, and what the caller "said" before it.

    Attributes:
        steps: Steps run in order within one response.
        user_says: Transcript reported for the user audio that leads to this turn (input
            transcription), or ``None``.
    """

    steps: tuple[Step, ...]
    user_says: str | None = None


@dataclass(frozen=True)
class Rule:
    """Steps to run instead of the next turn when the last typed user text matches."""

    when: re.Pattern[str]
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Scenario:
    """One scripted agent.

    Attributes:
        name: Scenario name (the key in the file).
        match_instructions: Selects this scenario when it matches (``re.search``) the
            session's instructions; ``None`` when selected by name only.
        turns: One entry per response, in order.
        rules: Keyword rules tried, in order, against typed user input.
        fallback: Steps for every response after the turns run out.
    """

    name: str
    match_instructions: re.Pattern[str] | None = None
    turns: tuple[Turn, ...] = ()
    rules: tuple[Rule, ...] = ()
    fallback: tuple[Step, ...] = ()


def builtin_default() -> Scenario:
    """The default scenario used when a book defines none named ``default``."""
    return Scenario(
        name=DEFAULT_SCENARIO,
        turns=(Turn((Say(DEFAULT_GREETING),)),),
        fallback=(Say(DEFAULT_REPLY),),
    )


@dataclass(frozen=True)
class ScenarioBook:
    """An ordered set of scenarios; always contains one named ``default``."""

    scenarios: tuple[Scenario, ...] = ()

    def __post_init__(self) -> None:
        names = [s.name for s in self.scenarios]
        if len(set(names)) != len(names):
            raise ValueError("scenario names must be unique")
        if DEFAULT_SCENARIO not in names:
            object.__setattr__(self, "scenarios", (*self.scenarios, builtin_default()))

    @classmethod
    def default(cls) -> ScenarioBook:
        """A book holding only the built-in default scenario."""
        return cls(())

    def get(self, name: str) -> Scenario | None:
        """The scenario called ``name``, or ``None``."""
        for scenario in self.scenarios:
            if scenario.name == name:
                return scenario
        return None

    def names(self) -> list[str]:
        """Scenario names in file order."""
        return [s.name for s in self.scenarios]

    def select(self, instructions: str | None, requested: str | None) -> Scenario:
        """Pick the scenario for a session.

        Args:
            instructions: The session's current instructions.
            requested: The ``?scenario=`` name the client connected with, if any.

        Returns:
            The first scenario whose ``match.instructions`` matches, else ``requested``,
            else ``default``.
        """
        if instructions:
            for scenario in self.scenarios:
                pattern = scenario.match_instructions
                if pattern is not None and pattern.search(instructions):
                    return scenario
        if requested is not None:
            chosen = self.get(requested)
            if chosen is not None:
                return chosen
        default = self.get(DEFAULT_SCENARIO)
        assert default is not None  # guaranteed by __post_init__
        return default


# --- templates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateContext:
    """Values the templates of a ``say`` text (or call argument) can use.

    Attributes:
        tool_output: ``output`` of the last ``function_call_output`` item, or ``None``.
        user_text: Text of the last user message (typed text, or the transcript given to
            the last user audio).
        heard_ms: Length in milliseconds of the last user audio turn.
    """

    tool_output: str | None = None
    user_text: str = ""
    heard_ms: int = 0


def template_names(text: str) -> Iterator[str]:
    """Placeholder names used in ``text`` (``{{`` and ``}}`` are literal braces)."""
    for m in _TEMPLATE.finditer(text):
        if m.group(1) is not None:
            yield m.group(1).strip()


def check_template(text: str) -> str | None:
    """Why ``text`` is not a valid template, or ``None`` when it is."""
    stripped = _TEMPLATE.sub("", text)
    if "{" in stripped or "}" in stripped:
        return "has an unmatched brace (write {{ or }} for a literal brace)"
    for name in template_names(text):
        if name in ("tool_output", "user_text", "heard_ms"):
            continue
        if name.startswith("tool_output.") and _FIELD_PATH.fullmatch(name[len("tool_output.") :]):
            continue
        return (
            f"unknown placeholder {{{name}}}; use {{tool_output}}, "
            "{tool_output.FIELD}, {user_text} or {heard_ms}"
        )
    return None


def render(text: str, ctx: TemplateContext) -> str:
    """Fill the placeholders of ``text`` from ``ctx``.

    ``{tool_output.FIELD}`` reads a (dotted) field of the tool output parsed as JSON; a
    missing field, or output that is not JSON, renders as an empty string. Non-string JSON
    values render as JSON (``42``, ``true``).
    """

    def fill(m: re.Match[str]) -> str:
        whole = m.group(0)
        if whole == "{{":
            return "{"
        if whole == "}}":
            return "}"
        name = m.group(1).strip()
        if name == "user_text":
            return ctx.user_text
        if name == "heard_ms":
            return str(ctx.heard_ms)
        if name == "tool_output":
            return ctx.tool_output or ""
        if name.startswith("tool_output."):
            return _json_field(ctx.tool_output, name[len("tool_output.") :])
        return whole

    return _TEMPLATE.sub(fill, text)


def render_value(value: Any, ctx: TemplateContext) -> Any:
    """Render every string inside a JSON-like value (used for call arguments)."""
    if isinstance(value, str):
        return render(value, ctx)
    if isinstance(value, list):
        return [render_value(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, ctx) for k, v in value.items()}
    return value


def _json_field(output: str | None, path: str) -> str:
    if not output:
        return ""
    try:
        value: Any = json.loads(output)
    except ValueError:
        return ""
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return ""
    if isinstance(value, str):
        return value
    return json.dumps(value)


# --- parsing ------------------------------------------------------------------------------


def load_scenarios(path: str | Path) -> ScenarioBook:
    """Read and validate a scenario file.

    Args:
        path: The YAML file.

    Returns:
        The book, with the built-in ``default`` added when the file defines none.

    Raises:
        ConfigError: One problem, naming file, line and field.
        ConfigErrors: Several problems, each a :class:`ConfigError`.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, None, "", f"cannot read scenario file: {exc.strerror}") from None
    return parse_scenarios(text, source)


def parse_scenarios(text: str, source: str = "<scenarios>") -> ScenarioBook:
    """Parse scenario YAML text (see :func:`load_scenarios`)."""
    doc = load_yaml(text, source)
    top = Reader(doc)
    scenarios: list[Scenario] = []
    if not top.has("scenarios"):
        top.error("scenarios", "is required (a mapping of scenario name to scenario)")
    for name, reader in top.mapping("scenarios"):
        if not _SCENARIO_NAME.fullmatch(name):
            top.error("scenarios", f"scenario name {name!r} must match {_SCENARIO_NAME.pattern}")
        scenarios.append(_parse_scenario(name, reader))
    top.finish()
    _raise(top.errors)
    return ScenarioBook(tuple(scenarios))


def _raise(errors: list[ConfigError]) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(list(errors))


def _parse_scenario(name: str, r: Reader) -> Scenario:
    pattern: re.Pattern[str] | None = None
    if r.has("match"):
        m = r.sub("match")
        pattern = _regex(m, "instructions", required=True)
        m.finish()
    else:
        r.raw("match")
    turns: list[Turn] = []
    raw_turns = r.raw("turns")
    if raw_turns is not None:
        if isinstance(raw_turns, list):
            for i in range(len(raw_turns)):
                turns.append(_parse_turn(r.doc, r.path + ("turns", i), r.errors))
        else:
            r.error("turns", "must be a list (one entry per response)")
    rules: list[Rule] = []
    for rule in r.items("rules"):
        when = _regex(rule, "when", required=True)
        steps = _steps_at(rule, "steps")
        rule.finish()
        if when is not None:
            rules.append(Rule(when, steps))
    fallback = _steps_at(r, "fallback") if r.has("fallback") else ()
    r.raw("fallback")
    r.finish()
    return Scenario(name, pattern, tuple(turns), tuple(rules), fallback)


def _regex(r: Reader, key: str, *, required: bool) -> re.Pattern[str] | None:
    text = r.str(key) if required else r.str(key, None)
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        r.error(key, f"is not a valid regular expression: {exc}")
        return None


def _parse_turn(doc: YamlDoc, path: tuple[str | int, ...], errors: list[ConfigError]) -> Turn:
    value = _value(doc, path)
    if isinstance(value, list):
        return Turn(_parse_steps(doc, path, errors))
    if isinstance(value, dict) and "steps" in value:
        r = Reader(doc, path, errors)
        user_says = r.str("user_says", None)
        steps = _steps_at(r, "steps")
        r.finish()
        return Turn(steps, user_says)
    if isinstance(value, dict) and "user_says" in value:
        r = Reader(doc, path, errors)
        user_says = r.str("user_says", None)
        step = _parse_step_mapping(r)
        return Turn((step,) if step is not None else (), user_says)
    step = _parse_step(doc, path, errors)
    return Turn((step,) if step is not None else ())


def _steps_at(r: Reader, key: str) -> tuple[Step, ...]:
    r.raw(key)
    if not r.has(key):
        r.error(key, "is required (a step or a list of steps)")
        return ()
    return _parse_steps(r.doc, r.path + (key,), r.errors)


def _parse_steps(
    doc: YamlDoc, path: tuple[str | int, ...], errors: list[ConfigError]
) -> tuple[Step, ...]:
    value = _value(doc, path)
    if not isinstance(value, list):
        step = _parse_step(doc, path, errors)
        return (step,) if step is not None else ()
    steps: list[Step] = []
    for i in range(len(value)):
        step = _parse_step(doc, path + (i,), errors)
        if step is not None:
            steps.append(step)
    return tuple(steps)


def _parse_step(
    doc: YamlDoc, path: tuple[str | int, ...], errors: list[ConfigError]
) -> Step | None:
    value = _value(doc, path)
    if value == "hangup":
        return Hangup()
    if isinstance(value, dict):
        r = Reader(doc, path, errors)
        if "user_says" in value:
            r.error("user_says", "belongs to a turn, not to a step inside a list")
            r.raw("user_says")
        return _parse_step_mapping(r)
    where = Reader(doc, path[:-1], errors)
    where.error(
        path[-1], "must be a step: {say: ...}, {call: ...}, {handoff: ...}, {wait: MS} or hangup"
    )
    return None


def _parse_step_mapping(r: Reader) -> Step | None:
    actions = [key for key in _ACTIONS if key in r.data]
    if len(actions) != 1:
        r.error(
            None,
            "must have exactly one of say, call, handoff, hangup, wait"
            + (f"; found {', '.join(actions)}" if actions else ""),
        )
        for key in r.data:
            r.raw(key)
        return None
    action = actions[0]
    step: Step | None = None
    if action == "say":
        text = r.str("say")
        problem = check_template(text)
        if problem:
            r.error("say", problem)
        step = Say(text)
    elif action == "call":
        c = r.sub("call")
        name = c.str("name")
        arguments = _arguments(c)
        c.finish()
        step = Call(name, arguments)
    elif action == "handoff":
        target = r.str("handoff")
        tool = r.str("tool", "") or Handoff.default_tool(target)
        step = Handoff(target, tool)
    elif action == "hangup":
        flag = r.raw("hangup")
        if flag is not True and flag is not None:
            r.error("hangup", "must be true (or write the step as the plain word hangup)")
        step = Hangup()
    else:
        step = Wait(r.int("wait", min=0, max=_MAX_WAIT_MS))
    r.finish()
    return step


def _arguments(c: Reader) -> Mapping[str, Any]:
    raw = c.raw("arguments", {})
    if raw is None:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            c.error("arguments", "must be a mapping or a JSON object string")
            return {}
    if not isinstance(raw, dict):
        c.error("arguments", "must be a mapping or a JSON object string")
        return {}
    for problem in _template_problems(raw):
        c.error("arguments", problem)
    return raw


def _template_problems(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        problem = check_template(value)
        if problem:
            yield problem
    elif isinstance(value, list):
        for v in value:
            yield from _template_problems(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _template_problems(v)


def _value(doc: YamlDoc, path: tuple[str | int, ...]) -> Any:
    value = doc.data
    for part in path:
        value = value[part]
    return value


# --- greeting pattern ---------------------------------------------------------------------

_QUOTED: Final = re.compile(
    r"(?<!\w)'((?:[^'\n]|(?<=\w)'(?=\w))+)'(?!\w)"  # 'text', apostrophes inside words allowed
    r'|"([^"\n]+)"'
    r"|\u201c([^\u201d\n]+)\u201d"  # curly double quotes
    r"|\u2018([^\u2019\n]+)\u2019"  # curly single quotes
)


def quoted_text(instructions: str) -> str | None:
    """The first quoted text in response ``instructions``, or ``None``.

    Implements the greeting pattern ``{"response": {"instructions": "Say exactly 'Thanks for
    calling' now."}}``: the simulator says the quoted text instead of the next scenario turn.
    Single, double and curly quotes work; an apostrophe inside a word (``don't``) is not a
    quote.
    """
    m = _QUOTED.search(instructions)
    if m is None:
        return None
    text = next(g for g in m.groups() if g is not None).strip()
    return text or None


def literal(text: str) -> str:
    """``text`` escaped so that :func:`render` returns it unchanged."""
    return text.replace("{", "{{").replace("}", "}}")

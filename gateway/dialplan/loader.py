"""Read a YAML dialplan (and the files it includes) into a validated :class:`Dialplan`.

Dialplans are written by PBX admins, so the loader checks everything before the gateway takes a
single call with it, and reports every problem at once as ``file:line: field: reason`` (one
:class:`~gateway.errors.ConfigErrors`): unknown keys, wrong types, a route without exactly one
action, an agent that does not exist, a regex that does not compile, a template naming an
unknown variable (pointing at the line inside a ``|`` block), duplicate route or agent names,
reject codes out of range, include cycles, and everything about agents' tools, handoffs,
guardrails and DTMF (parsed by :mod:`gateway.dialplan.capabilities`). Includes are resolved
relative to the including file; their agents and tools join the plan, their routes come after
the including file's own routes, and their top-level variables are used only where the
including file does not set the same name. A file reached twice (not in a cycle) is read once.
Reading files goes through a replaceable function so the parsing itself stays pure; the only
other effects are importing the Python tools, guardrails and Agents SDK agents the plan names
(``sdk_agent:`` routes, through :mod:`gateway.agents.sdk`), so a wrong path fails here, and
putting the plan's search path for them first on ``sys.path`` beforehand: the loaded file's
``python_path:`` directories (its own directory when it has none), then those of its includes
in reading order, each relative to the file that names it.
"""

from __future__ import annotations

import os.path
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

import yaml

from gateway.agents.spec import ToolSpec
from gateway.dialplan.capabilities import (
    SIP_URI_RE,
    URI_RE,
    CapabilityParser,
    PendingCapabilities,
    Where,
)
from gateway.dialplan.conditions import MatchParser
from gateway.dialplan.pyimport import PATH_RE, Describe, default_describer, use_search_path
from gateway.dialplan.recording import parse_recording
from gateway.dialplan.schema import (
    DEFAULT_VOICE,
    VOICES,
    Action,
    AgentAction,
    AgentSpec,
    Dialplan,
    Eagerness,
    MediaMode,
    ReferAction,
    RejectAction,
    Relay,
    Route,
    SemanticVad,
    ServerVad,
    Transcription,
    TurnDetection,
)
from gateway.dialplan.template import (
    VARIABLE_NAME_RE,
    Template,
    TemplateProblem,
    parse_template,
)
from gateway.errors import ConfigError, ConfigErrors
from gateway.yamlsrc import Reader, YamlDoc, load_yaml

if TYPE_CHECKING:
    from gateway.agents.sdk import SdkAgentPlan

#: Reads an included file; raises ``OSError`` or ``UnicodeDecodeError`` when it cannot.
ReadText = Callable[[str], str]

#: Deepest include nesting accepted (cycles are caught earlier; this stops symlink loops).
MAX_INCLUDE_DEPTH: Final = 16
#: The default ``env``: no environment variables at all.
NO_ENV: Final[Mapping[str, str]] = MappingProxyType({})

_NAME_RE: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_AGENT_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_MODEL_RE: Final = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
_LANGUAGE_RE: Final = r"[a-z]{2,3}"
_REASON_RE: Final = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_BLOCK_LITERAL: Final = "|"
_EAGERNESS: Final[dict[str, Eagerness]] = {
    "low": "low", "medium": "medium", "high": "high", "auto": "auto"}

#: RFC 3261 section 21 reason phrases for ``reject: CODE`` without a reason.
REASON_PHRASES: Final = {
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


def load_dialplan(path: str | Path, env: Mapping[str, str] = NO_ENV) -> Dialplan:
    """Load and validate the dialplan at ``path`` and everything it includes.

    Args:
        path: The dialplan file.
        env: Environment for ``${NAME}`` references in HTTP tool headers (none by default).

    Raises:
        ConfigErrors: Every problem found, each with file, line and field.
    """
    source = str(path)
    try:
        text = _read_file(source)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigErrors([ConfigError(source, None, "", _read_failure(exc))]) from None
    return parse_dialplan(text, source, env=env)


def parse_dialplan(text: str, source: str, *, read_text: ReadText | None = None,
                   env: Mapping[str, str] = NO_ENV, describe: Describe | None = None) -> Dialplan:
    """Validate dialplan ``text``; ``source`` names it in errors and anchors relative includes.

    Args:
        text: The YAML document.
        source: Its path (or a label such as ``<default>``).
        read_text: Reads an included file by path; defaults to reading it from disk as UTF-8.
        env: Environment for ``${NAME}`` references in HTTP tool headers; the values become
            :class:`~gateway.config.Secret` and never appear in errors.
        describe: Gives ``(description, parameters)`` of a Python tool written without
            ``parameters``; defaults to :func:`~gateway.dialplan.pyimport.default_describer`.

    Raises:
        ConfigErrors: Every problem found, each with file, line and field.
    """
    builder = _Builder(read_text or _read_file, env, describe)
    routes = builder.load(text, source, ())
    return builder.finish(routes, source)


def _read_file(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _read_failure(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "cannot read: not UTF-8 text"
    return f"cannot read: {exc.strerror or exc}"


@dataclass(frozen=True)
class _PendingRoute:
    route: Route
    # Where the route's ``name:`` and ``agent:`` are, for errors found once every file is read.
    name_at: Where
    agent_at: Where


@dataclass(frozen=True)
class _Settings:
    """An agent's fields other than instructions and capabilities."""

    voice: str
    model: str | None
    media: MediaMode
    turn_detection: TurnDetection
    transcription: Transcription | None
    greeting: Template | None
    max_duration_s: int | None
    fallback: str | None = None


@dataclass(frozen=True)
class _SdkAgent:
    """An agent an ``sdk_agent:`` route brought in, waiting for names to be resolved."""

    spec: AgentSpec
    pending: PendingCapabilities
    path: str
    options: object  # the route's settings as written, to spot conflicting reuse
    at: Where


class _Builder:
    """Collects agents, routes and errors over a file and its includes."""

    def __init__(self, read_text: ReadText, env: Mapping[str, str],
                 describe: Describe | None) -> None:
        self.read_text = read_text
        self.errors: list[ConfigError] = []
        self.matches = MatchParser(self.errors)
        self.caps = CapabilityParser(self.errors, env, describe or default_describer(),
                                     self._key_texts)
        self.agents: dict[str, AgentSpec] = {}
        self.pending: dict[str, PendingCapabilities] = {}
        self.tools: dict[str, tuple[ToolSpec | None, Where]] = {}
        self.sdk_plans: dict[str, SdkAgentPlan | None] = {}
        self.sdk_agents: dict[str, _SdkAgent] = {}
        self.variables: dict[str, str] = {}
        self.files: list[str] = []
        self.shown: dict[str, str] = {}  # absolute path -> path as written, for messages
        self.texts: dict[str, str] = {}
        self.unparsed: set[str] = set()
        self.routes_written = False  # any non-empty ``routes:``, even a broken one
        self.routes_line: int | None = None  # of the loaded file's ``routes:``, if any
        self.python_path: list[str] = []  # absolute directories, in search order

    # -- files ------------------------------------------------------------------------------

    def load(self, text: str, source: str, stack: tuple[str, ...]) -> list[_PendingRoute]:
        """Read one file; return its routes followed by those of its includes."""
        key = os.path.abspath(source)
        self.shown[key] = source
        self.files.append(source)
        self.texts[source] = text
        try:
            doc = load_yaml(text, source)
        except ConfigError as exc:
            self.errors.append(exc)
            self.unparsed.add(source)
            return []
        top = Reader(doc, (), self.errors)
        if not isinstance(doc.data, dict | None):
            self.unparsed.add(source)  # already reported; "no routes" would only add noise
        if isinstance(doc.data, dict) and doc.data.get("routes") not in (None, []):
            self.routes_written = True
        if not stack:
            self.routes_line = doc.lines.get(("routes",))
        includes = self._includes(top)
        self._python_path(top, loaded=not stack)  # before any import below
        for name, value in self._variables(top, "variables").items():
            self.variables.setdefault(name, value)
        for tool, spec, at in self.caps.tool_definitions(top):
            first = self.tools.get(tool)
            if first is not None:
                self.errors.append(at.error(f"tool {tool!r} is already defined at"
                                            f" {first[1].at}"))
            else:
                self.tools[tool] = (spec, at)
        for name, agent_reader in self._mapping_items(top, "agents"):
            self._agent(name, agent_reader)
        routes = [self._route(route) for route in self._list_items(top, "routes")]
        top.finish()
        for target, at in includes:
            routes.extend(self._include(target, at, stack + (key,)))
        return routes

    def _includes(self, top: Reader) -> list[tuple[str, Where]]:
        value = top.raw("include")
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            top.error("include", "must be a file name or a list of file names")
            return []
        base = os.path.dirname(top.doc.source)
        out: list[tuple[str, Where]] = []
        for i, item in enumerate(items):
            path = ("include",) if isinstance(value, str) else ("include", i)
            at = self._where(top.doc, path)
            if not isinstance(item, str) or not item:
                self.errors.append(at.error("must be a file name"))
                continue
            out.append((os.path.normpath(os.path.join(base, item)), at))
        return out

    def _python_path(self, top: Reader, *, loaded: bool) -> None:
        """Add the file's ``python_path:`` directories to the plan's search path and use it."""
        value = top.raw("python_path")
        base = os.path.dirname(top.doc.source)
        if value is None:
            # Only a real file has a directory; a text given with a label has none.
            if loaded and os.path.isfile(top.doc.source):
                self.python_path.append(os.path.abspath(base or os.curdir))
        else:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list):
                top.error("python_path", "must be a directory or a list of directories")
                items = []
            for i, item in enumerate(items):
                at = self._where(top.doc, ("python_path",) if isinstance(value, str)
                                 else ("python_path", i))
                if not isinstance(item, str) or not item:
                    self.errors.append(at.error("must be a directory name"))
                    continue
                directory = os.path.abspath(os.path.join(base, item))
                if not os.path.isdir(directory):
                    self.errors.append(at.error(f"{item}: no such directory (relative to"
                                                f" {base or os.curdir})"))
                    continue
                self.python_path.append(directory)
        use_search_path(self.python_path)

    def _include(self, target: str, at: Where, stack: tuple[str, ...]) -> list[_PendingRoute]:
        key = os.path.abspath(target)
        if key in stack:
            chain = stack[stack.index(key):] + (key,)
            self.errors.append(at.error(
                "include cycle: " + " -> ".join(self.shown[p] for p in chain)))
            return []
        if key in self.shown:
            return []
        if len(stack) >= MAX_INCLUDE_DEPTH:
            self.errors.append(at.error(f"includes nested deeper than {MAX_INCLUDE_DEPTH}"))
            return []
        try:
            text = self.read_text(target)
        except (OSError, UnicodeDecodeError) as exc:
            self.errors.append(at.error(f"{target}: {_read_failure(exc)}"))
            return []
        return self.load(text, target, stack)

    # -- agents -----------------------------------------------------------------------------

    def _agent(self, name: str, r: Reader) -> None:
        at = self._where(r.doc, r.path)
        if not _AGENT_NAME_RE.fullmatch(name):
            r.error(None, "agent name must start with a letter and use only letters, digits,"
                          " '_' and '-' (at most 64)")
        instructions = self._template(r, "instructions", required=True)
        settings = self._settings(r)
        pending = self.caps.agent(r)
        r.finish()
        if instructions is None:
            instructions = Template("", ())
        spec = AgentSpec(
            name=name, instructions=instructions, voice=settings.voice, model=settings.model,
            media=settings.media, turn_detection=settings.turn_detection,
            transcription=settings.transcription, greeting=settings.greeting,
            max_duration_s=settings.max_duration_s, fallback=settings.fallback,
            source=at.source, line=at.line,
        )
        first = self.agents.get(name)
        if first is not None:
            r.error(None, f"agent {name!r} is already defined at {first.source}:{first.line}")
            return
        self.agents[name] = spec
        self.pending[name] = pending

    def _settings(self, r: Reader) -> _Settings:
        voice = r.str("voice", DEFAULT_VOICE, choices=VOICES)
        model = r.str("model", "", pattern=_MODEL_RE) or None
        media = r.str("media", "native", choices=("native", "transcode"))
        turn_detection = self._turn_detection(r)
        transcription = self._transcription(r)
        greeting = self._template(r, "greeting", required=False)
        max_duration = r.int("max_duration_s", min=1, max=86400) if r.has("max_duration_s") \
            else None
        return _Settings(voice, model, "transcode" if media == "transcode" else "native",
                         turn_detection, transcription, greeting, max_duration,
                         self._fallback(r))

    @staticmethod
    def _fallback(r: Reader) -> str | None:
        """An optional ``fallback:`` SIP URI (where a call goes if its agent is lost)."""
        if not r.has("fallback"):
            r.raw("fallback")
            return None
        uri = r.str("fallback")
        r.check("fallback", URI_RE.fullmatch(uri) is not None,
                "must be a sip:, sips: or tel: URI without spaces or <>\"")
        return uri

    def _template(self, r: Reader, key: str, *, required: bool) -> Template | None:
        if not required and not r.has(key):
            r.raw(key)
            return None
        text = r.str(key)
        if required and isinstance(r.data.get(key), str) and not text.strip():
            r.error(key, "must not be empty")
        template, problems = parse_template(text)
        for problem in problems:
            line = self._line_in_value(r.doc, r.path + (key,), text, problem)
            self.errors.append(ConfigError(r.doc.source, line, r.field_name(key),
                                           problem.message))
        return template

    def _line_in_value(self, doc: YamlDoc, path: tuple[str | int, ...], value: str,
                       problem: TemplateProblem) -> int | None:
        """Line of ``problem`` inside a scalar: exact for ``|`` blocks and one-line values."""
        line = doc.line_of(path)
        node = self._node(doc, path)
        if line is not None and isinstance(node, yaml.ScalarNode) \
                and node.style == _BLOCK_LITERAL:
            # A literal block starts on the line after its '|' and keeps every line break, so
            # counting them maps the offset straight to the file.
            return line + 1 + value[:problem.offset].count("\n")
        return line

    def _node(self, doc: YamlDoc, path: tuple[str | int, ...]) -> yaml.Node | None:
        # Only reached for a wrong template or DTMF rules, so composing the file again costs
        # nothing worth caching.
        node: yaml.Node | None = yaml.compose(self.texts.get(doc.source, ""),
                                              Loader=yaml.SafeLoader)
        for part in path:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if _key_text(k) == part), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
            else:
                return None
        return node

    def _key_texts(self, doc: YamlDoc, path: tuple[str | int, ...]) -> Mapping[str, str]:
        """Plain keys of the mapping at ``path`` that YAML did not read as strings."""
        node = self._node(doc, path)
        if not isinstance(node, yaml.MappingNode):
            return {}
        return {_key_text(k): k.value for k, _ in node.value
                if isinstance(k, yaml.ScalarNode) and k.style is None
                and k.tag != "tag:yaml.org,2002:str"}

    def _turn_detection(self, r: Reader) -> TurnDetection:
        key = "turn_detection"
        if key not in r.data:
            return ServerVad()
        value = r.raw(key)
        if value is None:
            r.error(key, "write 'none' to turn turn detection off, or leave the field out")
            return ServerVad()
        if isinstance(value, str):
            if value == "none":
                return None
            if value == "server_vad":
                return ServerVad()
            if value == "semantic_vad":
                return SemanticVad()
            r.error(key, f"must be server_vad, semantic_vad, none or a mapping; got {value!r}")
            return ServerVad()
        if not isinstance(value, dict):
            r.error(key, "must be server_vad, semantic_vad, none or a mapping")
            return ServerVad()
        td = r.sub(key)
        kind = td.str("type", choices=("server_vad", "semantic_vad", "none"))
        create = td.bool("create_response", True)
        interrupt = td.bool("interrupt_response", True)
        if kind == "semantic_vad":
            for other in ("threshold", "prefix_padding_ms", "silence_duration_ms",
                          "idle_timeout_ms"):
                if other in td.data:
                    td.raw(other)
                    td.error(other, "applies only to type server_vad")
            eagerness = td.str("eagerness", "auto", choices=("low", "medium", "high", "auto"))
            td.finish()
            return SemanticVad(_EAGERNESS.get(eagerness, "auto"), create, interrupt)
        if "eagerness" in td.data:
            td.raw("eagerness")
            td.error("eagerness", "applies only to type semantic_vad")
        threshold = td.float("threshold", 0.5, min=0.0, max=1.0)
        padding = td.int("prefix_padding_ms", 300, min=0, max=10_000)
        silence = td.int("silence_duration_ms", 500, min=0, max=10_000)
        idle = td.int("idle_timeout_ms", min=0, max=600_000) if td.has("idle_timeout_ms") \
            else None
        td.finish()
        if kind == "none":
            return None
        return ServerVad(threshold, padding, silence, create, interrupt, idle)

    def _transcription(self, r: Reader) -> Transcription | None:
        key = "transcription"
        value = r.raw(key)
        if value is None:
            return None
        if isinstance(value, str):
            r.check(key, re.fullmatch(_MODEL_RE, value) is not None, "is not a model name")
            return Transcription(value)
        if not isinstance(value, dict):
            r.error(key, "must be a model name or {model: ..., language: ..., prompt: ...}")
            return None
        tr = r.sub(key)
        model = tr.str("model", pattern=_MODEL_RE)
        language = tr.str("language", "", pattern=_LANGUAGE_RE) or None
        prompt = tr.str("prompt", "") or None
        tr.finish()
        return Transcription(model, language, prompt)

    # -- routes -----------------------------------------------------------------------------

    def _route(self, r: Reader) -> _PendingRoute:
        at = self._where(r.doc, r.path)
        name_at = self._where(r.doc, r.path + ("name",))
        name = r.str("name", pattern=_NAME_RE)
        match = self.matches.match(r)
        present = [k for k in ("agent", "sdk_agent", "reject", "refer") if r.has(k)]
        if not present:
            r.error(None, "needs one action: agent, reject or refer")
        elif len(present) > 1:
            r.error(None, f"has {len(present)} actions ({', '.join(present)}); keep exactly one")
        action: Action = RejectAction(500, "Server Internal Error")
        agent_at = at
        for key in reversed(present):
            if key == "agent":
                agent_at = self._where(r.doc, r.path + ("agent",))
                action = AgentAction(r.str("agent"))
            elif key == "sdk_agent":
                agent_at = self._where(r.doc, r.path + ("sdk_agent",))
                action = self._sdk_route(r, agent_at)
            elif key == "reject":
                action = self._reject(r)
            else:
                action = self._refer(r)
        variables = self._variables(r, "variables")
        fallback = self._fallback(r)
        if fallback is not None and not isinstance(action, AgentAction):
            r.error("fallback", "applies to agent routes only (agent or sdk_agent)")
        relay = self._relay(r)
        if relay is not None:
            if isinstance(action, AgentAction):
                action = replace(action, relay=relay)
            else:
                r.error("relay", "applies to agent routes only (agent or sdk_agent)")
        recording = parse_recording(r, agent_route=isinstance(action, AgentAction),
                                    relayed=relay is not None)
        r.finish()
        route = Route(name=name, match=match, action=action,
                      variables=MappingProxyType(variables), fallback=fallback,
                      source=at.source, line=at.line, recording=recording)
        return _PendingRoute(route, name_at, agent_at)

    def _sdk_route(self, r: Reader, at: Where) -> AgentAction:
        """An ``sdk_agent:`` action: load the SDK agent and bring its agents into the plan."""
        value = r.raw("sdk_agent")
        if isinstance(value, str):
            path = r.str("sdk_agent")
            settings = _Settings(DEFAULT_VOICE, None, "native", ServerVad(), None, None, None)
            extra = PendingCapabilities(at=at)
        elif isinstance(value, dict):
            sr = r.sub("sdk_agent")
            path = sr.str("path")
            settings = self._settings(sr)
            if "handoffs" in sr.data:
                sr.raw("handoffs")
                sr.error("handoffs", "an Agents SDK agent's handoffs come from its Python"
                                     " definition")
            extra = self.caps.agent(sr, handoffs=False)
            sr.finish()
        else:
            r.error("sdk_agent", "must be an import path 'package.module:agent' or {path: ...,"
                                 " voice: ..., tools: [...]}")
            return AgentAction("")
        if not path:
            return AgentAction("")
        if not PATH_RE.fullmatch(path):
            self.errors.append(at.error(f"{path!r} is not a 'package.module:attribute' path"))
            return AgentAction("", sdk_agent=path)
        plan = self._sdk_plan(path, at)
        if plan is None:
            return AgentAction("", sdk_agent=path)
        options = {k: v for k, v in value.items() if k != "path"} \
            if isinstance(value, dict) else {}
        for spec in plan.agents.values():
            self._add_sdk_agent(_SdkAgent(
                spec=replace(
                    spec, voice=settings.voice, model=settings.model, media=settings.media,
                    turn_detection=settings.turn_detection, transcription=settings.transcription,
                    greeting=settings.greeting if spec.name == plan.start else None,
                    max_duration_s=settings.max_duration_s, fallback=settings.fallback,
                    source=at.source, line=at.line),
                pending=extra.with_sdk(spec.capabilities, at), path=path, options=options,
                at=at))
        return AgentAction(plan.start, sdk_agent=path)

    def _sdk_plan(self, path: str, at: Where) -> SdkAgentPlan | None:
        if path not in self.sdk_plans:
            # Imported here: gateway.agents.sdk uses the dialplan schema (an import cycle at
            # module level), and only plans with sdk_agent routes need it.
            from gateway.agents.sdk import SdkAgentError, load_sdk_agent

            try:
                self.sdk_plans[path] = load_sdk_agent(path)
            except SdkAgentError as exc:
                self.sdk_plans[path] = None
                self.errors.append(at.error(str(exc)))
        return self.sdk_plans[path]

    def _add_sdk_agent(self, agent: _SdkAgent) -> None:
        name = agent.spec.name
        first = self.sdk_agents.get(name)
        if first is None:
            self.sdk_agents[name] = agent
        elif first.path != agent.path:
            self.errors.append(agent.at.error(
                f"{agent.path} brings an agent named {name!r}, and so does {first.path} (at"
                f" {first.at.at}); Agents SDK agent names must be unique in a dialplan"))
        elif first.options != agent.options:
            self.errors.append(agent.at.error(
                f"{agent.path} is used with other settings at {first.at.at}; its agents can"
                " have only one set of settings (use the same sdk_agent settings everywhere)"))

    def _reject(self, r: Reader) -> RejectAction:
        value = r.raw("reject")
        if isinstance(value, int) and not isinstance(value, bool):
            code = r.int("reject", min=400, max=699)
            return RejectAction(code, REASON_PHRASES.get(code, "Rejected"))
        if not isinstance(value, dict):
            r.error("reject", "must be a SIP status code (400-699) or {code: ..., reason: ...}")
            return RejectAction(500, "Server Internal Error")
        rr = r.sub("reject")
        code = rr.int("code", min=400, max=699)
        reason = rr.str("reason", "") or REASON_PHRASES.get(code, "Rejected")
        rr.check("reason", _REASON_RE.fullmatch(reason) is not None,
                 "must be one line of at most 128 characters")
        rr.finish()
        return RejectAction(code, reason)

    def _relay(self, r: Reader) -> Relay | None:
        """``relay: true`` (``openai_calls.sip_uri``) or ``relay: {uri: SIP_URI}``."""
        value = r.raw("relay")
        if value is None or value is False:
            return None
        if value is True:
            return Relay()
        if not isinstance(value, dict):
            r.error("relay", "must be true (dial openai_calls.sip_uri) or {uri: SIP_URI}")
            return None
        rr = r.sub("relay")
        uri = rr.str("uri")
        rr.check("uri", SIP_URI_RE.fullmatch(uri) is not None,
                 "must be a sip: or sips: URI without spaces or <>\"")
        rr.finish()
        return Relay(uri)

    def _refer(self, r: Reader) -> ReferAction:
        uri = r.str("refer")
        r.check("refer", URI_RE.fullmatch(uri) is not None,
                "must be a sip:, sips: or tel: URI without spaces or <>\"")
        return ReferAction(uri)

    # -- shared -----------------------------------------------------------------------------

    def _variables(self, r: Reader, key: str) -> dict[str, str]:
        if not r.has(key):
            r.raw(key)
            return {}
        vr = r.sub(key)
        out: dict[str, str] = {}
        for name, value in vr.data.items():
            vr.raw(name)
            if not VARIABLE_NAME_RE.fullmatch(name):
                vr.error(name, "variable names use letters, digits and '_' and do not start"
                               " with a digit")
            elif isinstance(value, str):
                out[name] = value
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out[name] = str(value)
            else:
                vr.error(name, "must be a string or a number")
        return out

    def _mapping_items(self, r: Reader, key: str) -> list[tuple[str, Reader]]:
        value = r.raw(key)
        if value is None:
            return []
        if not isinstance(value, dict):
            r.error(key, "must be a mapping of names to definitions")
            return []
        out: list[tuple[str, Reader]] = []
        for name, item in value.items():
            if isinstance(item, dict):
                out.append((name, Reader(r.doc, r.path + (key, name), self.errors)))
            else:
                r.errors.append(self._where(r.doc, r.path + (key, name)).error(
                    "must be a mapping with instructions, voice, ..."))
        return out

    def _list_items(self, r: Reader, key: str) -> Iterator[Reader]:
        # A generator, so errors about items come out in file order with the items' own.
        value = r.raw(key)
        if value is None:
            return
        if not isinstance(value, list):
            r.error(key, "must be a list")
            return
        for i, item in enumerate(value):
            if isinstance(item, dict):
                yield Reader(r.doc, r.path + (key, i), self.errors)
            else:
                self.errors.append(self._where(r.doc, r.path + (key, i)).error(
                    "must be a mapping with name, match and an action"))

    def _where(self, doc: YamlDoc, path: tuple[str | int, ...]) -> Where:
        return Where.of(doc, path)

    # -- the whole plan ---------------------------------------------------------------------

    def finish(self, pending: list[_PendingRoute], source: str) -> Dialplan:
        """Cross-file checks; build the plan or raise every error collected."""
        self._resolve_agents()
        names: dict[str, Route] = {}
        for item in pending:
            route = item.route
            first = names.get(route.name)
            if first is not None and route.name:
                self.errors.append(item.name_at.error(
                    f"duplicate route name {route.name!r} (first at {first.where})"))
            names.setdefault(route.name, route)
            if isinstance(route.action, AgentAction):
                self._check_agent(item, route.action.agent, route)
        if not self.routes_written and source not in self.unparsed:
            self.errors.append(ConfigError(source, self.routes_line, "routes",
                                           "no routes: every call would be refused with 404"))
        if self.errors:
            order = {source: i for i, source in enumerate(self.files)}
            # Stable sort: errors on one line keep the order they were found in.
            raise ConfigErrors(sorted(
                self.errors, key=lambda e: (order.get(e.source, len(order)), e.line or 0)))
        return self._plan(pending)

    def _plan(self, pending: list[_PendingRoute]) -> Dialplan:
        return Dialplan(
            routes=tuple(item.route for item in pending),
            agents=MappingProxyType(dict(self.agents)),
            source_files=tuple(self.files),
            variables=MappingProxyType(dict(self.variables)),
            tools=MappingProxyType({name: spec for name, (spec, _) in self.tools.items()
                                    if spec is not None}),
            python_path=tuple(dict.fromkeys(self.python_path)),
            env_secrets=tuple(self.caps.env_secrets),
        )

    def _resolve_agents(self) -> None:
        """Add the Agents SDK agents, then resolve every agent's tool and handoff names."""
        for name, sdk in self.sdk_agents.items():
            clash = self.agents.get(name)
            if clash is not None:
                self.errors.append(sdk.at.error(
                    f"{sdk.path} brings an agent named {name!r}, which is also the name of the"
                    f" agent defined at {clash.source}:{clash.line}"))
                continue
            self.agents[name] = sdk.spec
            self.pending[name] = sdk.pending
        names = frozenset(self.agents)
        for name, agent in self.agents.items():
            capabilities = self.caps.resolve(name, self.pending[name], self.tools, names)
            self.agents[name] = replace(agent, capabilities=capabilities)

    def _check_agent(self, item: _PendingRoute, name: str, route: Route) -> None:
        if not name:
            return
        if name not in self.agents:
            known = ", ".join(sorted(self.agents)) or "none defined"
            self.errors.append(item.agent_at.error(f"unknown agent {name!r} (agents: {known})"))
            return
        defined = set(route.variables) | set(self.variables)
        for agent in self._plan([]).reachable(name):
            missing = sorted(agent.variables - defined)
            if not missing:
                continue
            used = ", ".join("{var." + v + "}" for v in missing)
            through = "" if agent.name == name else \
                f" (a handoff from {name!r} reaches it)"
            self.errors.append(item.agent_at.error(
                f"agent {agent.name!r}{through} uses {used}, which neither this route's"
                " variables nor the top-level variables define"))


def _key_text(node: yaml.Node) -> str:
    # The loader turns non-string keys into strings the same way (str of the value), so a
    # path built from the loaded data finds the node.
    if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:str":
        value = yaml.safe_load(node.value) if node.style is None else node.value
        return str(value)
    return str(node.value)

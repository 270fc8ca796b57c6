"""Read a YAML dialplan (and the files it includes) into a validated :class:`Dialplan`.

Dialplans are written by PBX admins, so the loader checks everything before the gateway takes a
single call with it, and reports every problem at once as ``file:line: field: reason`` (one
:class:`~gateway.errors.ConfigErrors`): unknown keys, wrong types, a route without exactly one
action, an agent that does not exist, a regex that does not compile, a template naming an
unknown variable (pointing at the line inside a ``|`` block), duplicate route or agent names,
reject codes out of range, include cycles. Includes are resolved relative to the including file;
their agents join the plan, their routes come after the including file's own routes, and their
top-level variables are used only where the including file does not set the same name. A file
reached twice (not in a cycle) is read once. Reading files goes through a replaceable function
so the parsing itself stays pure.
"""

from __future__ import annotations

import os.path
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import ip_network
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import yaml

from gateway.dialplan.schema import (
    DEFAULT_VOICE,
    VOICES,
    Action,
    AgentAction,
    AgentSpec,
    Dialplan,
    Eagerness,
    HeaderMatch,
    Match,
    Network,
    Pattern,
    ReferAction,
    RejectAction,
    Route,
    SemanticVad,
    ServerVad,
    Transcription,
    TurnDetection,
)
from gateway.dialplan.template import (
    HEADER_NAME_RE,
    VARIABLE_NAME_RE,
    Template,
    TemplateProblem,
    parse_template,
)
from gateway.errors import ConfigError, ConfigErrors
from gateway.yamlsrc import Reader, YamlDoc, load_yaml

#: Reads an included file; raises ``OSError`` or ``UnicodeDecodeError`` when it cannot.
ReadText = Callable[[str], str]

#: Deepest include nesting accepted (cycles are caught earlier; this stops symlink loops).
MAX_INCLUDE_DEPTH: Final = 16
#: Keys reserved for a later release; named in the error so nobody thinks it is a typo.
_PLANNED: Final = ("tools", "handoffs", "guardrails")

_NAME_RE: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_AGENT_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_MODEL_RE: Final = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
_LANGUAGE_RE: Final = r"[a-z]{2,3}"
_URI_RE: Final = re.compile(r"(?:sips?|tel):[^\s<>\"]+")
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


def load_dialplan(path: str | Path) -> Dialplan:
    """Load and validate the dialplan at ``path`` and everything it includes.

    Raises:
        ConfigErrors: Every problem found, each with file, line and field.
    """
    source = str(path)
    try:
        text = _read_file(source)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigErrors([ConfigError(source, None, "", _read_failure(exc))]) from None
    return parse_dialplan(text, source)


def parse_dialplan(text: str, source: str, *, read_text: ReadText | None = None) -> Dialplan:
    """Validate dialplan ``text``; ``source`` names it in errors and anchors relative includes.

    Args:
        text: The YAML document.
        source: Its path (or a label such as ``<default>``).
        read_text: Reads an included file by path; defaults to reading it from disk as UTF-8.

    Raises:
        ConfigErrors: Every problem found, each with file, line and field.
    """
    builder = _Builder(read_text or _read_file)
    routes = builder.load(text, source, ())
    return builder.finish(routes, source)


def _read_file(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _read_failure(exc: OSError | UnicodeDecodeError) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "cannot read: not UTF-8 text"
    return f"cannot read: {exc.strerror or exc}"


@dataclass(frozen=True)
class _Where:
    source: str
    line: int | None
    field: str

    def error(self, reason: str) -> ConfigError:
        return ConfigError(self.source, self.line, self.field, reason)


@dataclass(frozen=True)
class _PendingRoute:
    route: Route
    # Where the route's ``name:`` and ``agent:`` are, for errors found once every file is read.
    name_at: _Where
    agent_at: _Where


class _Builder:
    """Collects agents, routes and errors over a file and its includes."""

    def __init__(self, read_text: ReadText) -> None:
        self.read_text = read_text
        self.errors: list[ConfigError] = []
        self.agents: dict[str, AgentSpec] = {}
        self.variables: dict[str, str] = {}
        self.files: list[str] = []
        self.shown: dict[str, str] = {}  # absolute path -> path as written, for messages
        self.texts: dict[str, str] = {}
        self.unparsed: set[str] = set()
        self.routes_written = False  # any non-empty ``routes:``, even a broken one
        self.routes_line: int | None = None  # of the loaded file's ``routes:``, if any

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
        for name, value in self._variables(top, "variables").items():
            self.variables.setdefault(name, value)
        for name, agent_reader in self._mapping_items(top, "agents"):
            self._agent(name, agent_reader)
        routes = [self._route(route) for route in self._list_items(top, "routes")]
        top.finish()
        for target, at in includes:
            routes.extend(self._include(target, at, stack + (key,)))
        return routes

    def _includes(self, top: Reader) -> list[tuple[str, _Where]]:
        value = top.raw("include")
        if value is None:
            return []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            top.error("include", "must be a file name or a list of file names")
            return []
        base = os.path.dirname(top.doc.source)
        out: list[tuple[str, _Where]] = []
        for i, item in enumerate(items):
            path = ("include",) if isinstance(value, str) else ("include", i)
            at = self._where(top.doc, path)
            if not isinstance(item, str) or not item:
                self.errors.append(at.error("must be a file name"))
                continue
            out.append((os.path.normpath(os.path.join(base, item)), at))
        return out

    def _include(self, target: str, at: _Where, stack: tuple[str, ...]) -> list[_PendingRoute]:
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
        self._planned(r)
        instructions = self._template(r, "instructions", required=True)
        voice = r.str("voice", DEFAULT_VOICE, choices=VOICES)
        model = r.str("model", "", pattern=_MODEL_RE) or None
        media = r.str("media", "native", choices=("native", "transcode"))
        turn_detection = self._turn_detection(r)
        transcription = self._transcription(r)
        greeting = self._template(r, "greeting", required=False)
        max_duration = r.int("max_duration_s", min=1, max=86400) if r.has("max_duration_s") \
            else None
        r.finish()
        if instructions is None:
            instructions = Template("", ())
        spec = AgentSpec(
            name=name, instructions=instructions, voice=voice, model=model,
            media="transcode" if media == "transcode" else "native",
            turn_detection=turn_detection, transcription=transcription, greeting=greeting,
            max_duration_s=max_duration, source=at.source, line=at.line,
        )
        first = self.agents.get(name)
        if first is not None:
            r.error(None, f"agent {name!r} is already defined at {first.source}:{first.line}")
            return
        self.agents[name] = spec

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
        if line is not None and self._style(doc, path) == _BLOCK_LITERAL:
            # A literal block starts on the line after its '|' and keeps every line break, so
            # counting them maps the offset straight to the file.
            return line + 1 + value[:problem.offset].count("\n")
        return line

    def _style(self, doc: YamlDoc, path: tuple[str | int, ...]) -> str | None:
        # Only reached when a template is wrong, so composing the file again costs nothing.
        node: yaml.Node | None = yaml.compose(self.texts.get(doc.source, ""),
                                              Loader=yaml.SafeLoader)
        for part in path:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if k.value == part), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
            else:
                return None
        return node.style if isinstance(node, yaml.ScalarNode) else None

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
        match = self._match(r)
        present = [k for k in ("agent", "reject", "refer") if r.has(k)]
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
            elif key == "reject":
                action = self._reject(r)
            else:
                action = self._refer(r)
        variables = self._variables(r, "variables")
        r.finish()
        route = Route(name=name, match=match, action=action,
                      variables=MappingProxyType(variables), source=at.source, line=at.line)
        return _PendingRoute(route, name_at, agent_at)

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

    def _refer(self, r: Reader) -> ReferAction:
        uri = r.str("refer")
        r.check("refer", _URI_RE.fullmatch(uri) is not None,
                "must be a sip:, sips: or tel: URI without spaces or <>\"")
        return ReferAction(uri)

    def _match(self, route: Reader) -> Match:
        if "match" in route.data and route.data["match"] is None:
            route.raw("match")
            return Match()
        r = route.sub("match")
        match = Match(
            to=self._patterns(r, "to"),
            from_=self._patterns(r, "from"),
            request_uri=self._patterns(r, "request_uri"),
            headers=self._headers(r),
            account=self._patterns(r, "account"),
            source=self._networks(r),
        )
        r.finish()
        return match

    def _patterns(self, r: Reader, key: str) -> tuple[Pattern, ...]:
        value = r.raw(key)
        if value is None:
            return ()
        if isinstance(value, list):
            if not value:
                r.error(key, "must not be an empty list (leave the field out to match anything)")
            items = [(item, r.path + (key, i)) for i, item in enumerate(value)]
        else:
            items = [(value, r.path + (key,))]
        out: list[Pattern] = []
        for item, path in items:
            pattern = self._pattern(r.doc, path, item, r.errors)
            if pattern is not None:
                out.append(pattern)
        return tuple(out)

    def _pattern(self, doc: YamlDoc, path: tuple[str | int, ...], value: Any,
                 errors: list[ConfigError]) -> Pattern | None:
        if isinstance(value, str):
            return Pattern("exact", value)
        if not isinstance(value, dict):
            if isinstance(value, bool):
                what = "true/false (quote words such as \"no\" and \"off\")"
            elif isinstance(value, int | float):
                what = ("a number (quote numbers, e.g. \"+18005550100\", so YAML keeps '+' and"
                        " leading zeros)")
            else:
                what = "a list" if isinstance(value, list) else "null"
            errors.append(self._where(doc, path).error(
                f"must be a string, {{exact: ...}}, {{prefix: ...}} or {{regex: ...}}, got {what}"))
            return None
        pr = Reader(doc, path, errors)
        kinds = [k for k in ("exact", "prefix", "regex") if k in pr.data]
        if len(kinds) != 1:
            pr.error(None, "needs exactly one of exact, prefix or regex")
        pattern: Pattern | None = None
        for kind in kinds:
            text = pr.str(kind)
            if kind == "exact":
                pattern = Pattern("exact", text)
            elif kind == "prefix":
                pattern = Pattern("prefix", text)
            else:
                try:
                    pattern = Pattern("regex", text)
                except ValueError as exc:
                    pr.error(kind, str(exc))
        pr.finish()
        return pattern

    def _headers(self, r: Reader) -> tuple[HeaderMatch, ...]:
        if not r.has("headers"):
            r.raw("headers")
            return ()
        hr = r.sub("headers")
        seen: dict[str, str] = {}
        out: list[HeaderMatch] = []
        for name, value in hr.data.items():
            if value is None:
                hr.raw(name)
                hr.error(name, "needs a value; use {regex: \"\"} to match any value")
                continue
            patterns = self._patterns(hr, name)
            if not HEADER_NAME_RE.fullmatch(name):
                hr.error(name, "is not a valid SIP header name")
                continue
            lower = name.lower()
            if lower in seen:
                hr.error(name, f"same header as {seen[lower]} (header names ignore case)")
                continue
            seen[lower] = name
            out.append(HeaderMatch(lower, patterns))
        return tuple(out)

    def _networks(self, r: Reader) -> tuple[Network, ...]:
        value = r.raw("source")
        if value is None:
            return ()
        items = [(value, r.path + ("source",))] if isinstance(value, str) else \
            [(item, r.path + ("source", i)) for i, item in enumerate(value)] \
            if isinstance(value, list) else None
        if items is None:
            r.error("source", "must be a network (\"10.0.0.0/8\") or a list of networks")
            return ()
        if not items:
            r.error("source", "must not be an empty list (leave the field out to match anything)")
        out: list[Network] = []
        for item, path in items:
            at = self._where(r.doc, path)
            if not isinstance(item, str):
                self.errors.append(at.error("must be a network as a string, e.g. \"10.0.0.0/8\""))
                continue
            try:
                out.append(ip_network(item))
            except ValueError as exc:
                self.errors.append(at.error(f"invalid network: {exc}"))
        return tuple(out)

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

    def _planned(self, r: Reader) -> None:
        for key in _PLANNED:
            if key in r.data:
                r.raw(key)
                r.error(key, f"{key} are not supported yet")

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

    def _where(self, doc: YamlDoc, path: tuple[str | int, ...]) -> _Where:
        return _Where(doc.source, doc.line_of(path), _dotted(path))

    # -- the whole plan ---------------------------------------------------------------------

    def finish(self, pending: list[_PendingRoute], source: str) -> Dialplan:
        """Cross-file checks; build the plan or raise every error collected."""
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
        return Dialplan(
            routes=tuple(item.route for item in pending),
            agents=MappingProxyType(dict(self.agents)),
            source_files=tuple(self.files),
            variables=MappingProxyType(dict(self.variables)),
        )

    def _check_agent(self, item: _PendingRoute, name: str, route: Route) -> None:
        if not name:
            return
        agent = self.agents.get(name)
        if agent is None:
            known = ", ".join(sorted(self.agents)) or "none defined"
            self.errors.append(item.agent_at.error(f"unknown agent {name!r} (agents: {known})"))
            return
        missing = sorted(agent.variables - set(route.variables) - set(self.variables))
        if missing:
            used = ", ".join("{var." + v + "}" for v in missing)
            self.errors.append(item.agent_at.error(
                f"agent {name!r} uses {used}, which neither this route's variables nor the"
                " top-level variables define"))


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out

"""Read what dialplan agents can do besides talking: tools, handoffs, guardrails and DTMF.

The top-level ``tools:`` section defines named tools (a Python function or an HTTP endpoint);
an agent's ``tools`` list names them or adds a gateway built-in, its ``handoffs`` name other
agents, its ``guardrails`` check what it says, and ``dtmf`` decides what keypad input does.
Parsing happens per file and keeps where each entry was written; names are only resolved once
every file is read (:meth:`CapabilityParser.resolve`), because an agent may use a tool or hand
off to an agent defined in another included file. Errors carry file, line and field like the
rest of the loader. ``${NAME}`` in HTTP headers is filled in from the environment mapping the
loader was given; the values become :class:`~gateway.config.Secret` and never appear in a
message. Python tools and guardrails are imported here so a bad path fails at load time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from gateway.agents.guardrails import CARD_NUMBERS
from gateway.agents.spec import (
    DEFAULT_GUARDRAIL_DEBOUNCE_CHARS,
    DEFAULT_TOOL_TIMEOUT_S,
    AgentCapabilities,
    BuiltinName,
    BuiltinTool,
    DtmfRule,
    DtmfSpec,
    GuardrailAction,
    GuardrailSpec,
    HandoffSpec,
    HttpTool,
    PythonTool,
    ToolSpec,
)
from gateway.config import Secret
from gateway.dialplan.pyimport import Describe, ImportProblem, docstring_summary, import_callable
from gateway.dialplan.template import HEADER_NAME_RE
from gateway.errors import ConfigError
from gateway.yamlsrc import Reader, YamlDoc, dotted

#: Path of a value inside a YAML document.
YamlPath = tuple[str | int, ...]
#: Raw text of the plain (unquoted) keys of the mapping at a path that YAML did not read as
#: strings, by the string the loader turned them into (``010`` -> ``{"8": "010"}``).
KeyTexts = Callable[[YamlDoc, YamlPath], Mapping[str, str]]

#: A sip:, sips: or tel: URI as written in a dialplan (no spaces, ``<``, ``>`` or ``"``).
URI_RE: Final = re.compile(r"(?:sips?|tel):[^\s<>\"]+")
#: A URI the gateway can place a SIP call to (a relay route's ``uri``).
SIP_URI_RE: Final = re.compile(r"sips?:[^\s<>\"]+")
#: Tool names the Realtime API accepts.
TOOL_NAME_RE: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")
#: The keys of a DTMF sequence (RFC 4733 section 3.2 events 0-15).
DTMF_RE: Final = re.compile(r"[0-9*#A-D]+")
BUILTINS: Final[Mapping[str, BuiltinName]] = {
    "transfer_call": "transfer_call", "end_call": "end_call", "send_dtmf": "send_dtmf"}
GUARDRAIL_KINDS: Final = ("deny_regex", "deny_keywords", "python")
_ACTIONS: Final[Mapping[str, GuardrailAction]] = {
    "retry": "retry", "say": "say", "transfer": "transfer", "hangup": "hangup"}
_METHODS: Final[Mapping[str, Literal["GET", "POST", "PUT", "PATCH"]]] = {
    "GET": "GET", "POST": "POST", "PUT": "PUT", "PATCH": "PATCH"}
_NAME_RE: Final = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_ENV_REF_RE: Final = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_MAX_TIMEOUT_S: Final = 600.0


@dataclass(frozen=True)
class Where:
    """Where something was written: file, line and dotted field, for errors found later."""

    source: str
    line: int | None
    field: str

    @staticmethod
    def of(doc: YamlDoc, path: YamlPath) -> Where:
        """The location of the value at ``path`` in ``doc``."""
        return Where(doc.source, doc.line_of(path), dotted(path))

    @property
    def at(self) -> str:
        """``file:line``."""
        return f"{self.source}:{self.line}" if self.line is not None else self.source

    def error(self, reason: str) -> ConfigError:
        """A :class:`ConfigError` at this place."""
        return ConfigError(self.source, self.line, self.field, reason)


@dataclass(frozen=True)
class ToolRef:
    """An entry of an agent's ``tools``: a top-level tool's name, or a complete tool."""

    tool: str | ToolSpec
    at: Where


@dataclass(frozen=True)
class PendingHandoff:
    """A handoff whose target is checked once every agent is known."""

    spec: HandoffSpec
    at: Where


@dataclass(frozen=True)
class PendingGuardrail:
    """A guardrail and where it was written (for duplicate-name errors)."""

    spec: GuardrailSpec
    at: Where


@dataclass(frozen=True)
class PendingCapabilities:
    """An agent's capabilities as written, before tool and agent names are resolved."""

    at: Where
    tools: tuple[ToolRef, ...] = ()
    handoffs: tuple[PendingHandoff, ...] = ()
    guardrails: tuple[PendingGuardrail, ...] = ()
    debounce_chars: int = DEFAULT_GUARDRAIL_DEBOUNCE_CHARS
    dtmf: DtmfSpec = DtmfSpec()
    sdk_agent: str | None = None

    def with_sdk(self, sdk: AgentCapabilities, at: Where) -> PendingCapabilities:
        """These capabilities added to those of an Agents SDK agent (the SDK's come first)."""
        return PendingCapabilities(
            at=at,
            tools=tuple(ToolRef(tool, at) for tool in sdk.tools) + self.tools,
            handoffs=tuple(PendingHandoff(h, at) for h in sdk.handoffs) + self.handoffs,
            guardrails=tuple(PendingGuardrail(g, at) for g in sdk.guardrails) + self.guardrails,
            debounce_chars=self.debounce_chars, dtmf=self.dtmf, sdk_agent=sdk.sdk_agent)


def tool_name(tool: ToolSpec) -> str:
    """The name the model calls ``tool`` by."""
    return tool.tool_name if isinstance(tool, BuiltinTool) else tool.name


class CapabilityParser:
    """Parses ``tools:`` definitions and agents' capability fields, collecting errors.

    Args:
        errors: Where errors go (shared with the loader).
        env: Environment for ``${NAME}`` in HTTP headers.
        describe: Gives ``(description, parameters)`` of a Python tool without ``parameters``.
        key_texts: See :data:`KeyTexts` (to insist on quoted DTMF digits).
    """

    def __init__(self, errors: list[ConfigError], env: Mapping[str, str], describe: Describe,
                 key_texts: KeyTexts) -> None:
        self.errors = errors
        self.env = env
        self.describe = describe
        self.key_texts = key_texts
        #: Every environment value put into a header, for the log redaction filter.
        self.env_secrets: list[Secret] = []

    # -- tools: --------------------------------------------------------------------------------

    def tool_definitions(self, top: Reader) -> list[tuple[str, ToolSpec | None, Where]]:
        """The top-level ``tools:`` of one file, in file order, as ``(name, spec, where)``.

        ``spec`` is ``None`` for an invalid definition: that was reported, and references to
        the tool should not be reported again.
        """
        value = top.raw("tools")
        if value is None:
            return []
        if not isinstance(value, dict):
            top.error("tools", "must be a mapping of tool names to definitions")
            return []
        out: list[tuple[str, ToolSpec | None, Where]] = []
        for name, item in value.items():
            path = top.path + ("tools", name)
            at = Where.of(top.doc, path)
            if not TOOL_NAME_RE.fullmatch(name):
                self.errors.append(at.error("tool names use letters, digits, '_' and '-'"
                                            " (at most 64)"))
            if not isinstance(item, dict):
                self.errors.append(at.error("must be a mapping with python: or http:"))
                out.append((name, None, at))
                continue
            out.append((name, self._tool(name, Reader(top.doc, path, self.errors)), at))
        return out

    def _tool(self, name: str, r: Reader) -> ToolSpec | None:
        kinds = [k for k in ("python", "http") if k in r.data]
        if len(kinds) != 1:
            r.error(None, "needs exactly one of python or http" if not kinds
                    else "has both python and http; keep exactly one")
        description = r.str("description", "")
        parameters = self._parameters(r)
        timeout = self._timeout(r, DEFAULT_TOOL_TIMEOUT_S)
        spec: ToolSpec | None = None
        if kinds == ["python"]:
            spec = self._python_tool(r, name, description, parameters, timeout)
        elif kinds == ["http"]:
            spec = self._http_tool(r, name, description, parameters, timeout)
        else:
            for kind in kinds:
                r.raw(kind)
        r.finish()
        return spec

    def _python_tool(self, r: Reader, name: str, description: str,
                     parameters: Mapping[str, Any] | None, timeout: float) -> PythonTool | None:
        path = r.str("python")
        if not path:
            return None
        try:
            fn = import_callable(path)
        except ImportProblem as exc:
            r.error("python", str(exc))
            return None
        if parameters is None:
            try:
                derived, parameters = self.describe(path)
            except Exception as exc:  # user code and hints: anything may go wrong
                r.error("python", f"cannot derive the tool's parameters: {exc} (write"
                                  " 'parameters:' as a JSON schema instead)")
                return None
            description = description or derived
        description = description or docstring_summary(fn)
        return PythonTool(name=name, path=path, description=description,
                          parameters=parameters, timeout_s=timeout)

    def _http_tool(self, r: Reader, name: str, description: str,
                   parameters: Mapping[str, Any] | None, timeout: float) -> HttpTool | None:
        if isinstance(r.data.get("http"), str):
            url = r.str("http")
            method = "POST"
            headers: dict[str, Secret] = {}
            url_key, url_reader = "http", r
        else:
            hr = r.sub("http")
            url = hr.str("url")
            method = hr.str("method", "POST", choices=tuple(_METHODS))
            headers = self._headers(hr)
            hr.finish()
            url_key, url_reader = "url", hr
        if url:
            parts = urlsplit(url)
            url_reader.check(url_key, parts.scheme in ("http", "https") and bool(parts.netloc)
                             and not any(c.isspace() for c in url),
                             "must be an http:// or https:// URL")
        if not description:
            r.error("description", "is required for an HTTP tool (nothing to derive it from)")
        if parameters is None:
            r.error("parameters", "is required for an HTTP tool: a JSON schema with type: object")
            return None
        verb = _METHODS.get(method)
        if verb is None:
            return None
        return HttpTool(name=name, url=url, method=verb, headers=MappingProxyType(headers),
                        description=description, parameters=parameters, timeout_s=timeout)

    def _headers(self, hr: Reader) -> dict[str, Secret]:
        value = hr.raw("headers")
        if value is None:
            return {}
        if not isinstance(value, dict):
            hr.error("headers", "must be a mapping of header names to values")
            return {}
        sub = hr.sub("headers")
        out: dict[str, Secret] = {}
        for name, raw in value.items():
            sub.raw(name)
            if not HEADER_NAME_RE.fullmatch(name):
                sub.error(name, "is not a valid HTTP header name")
                continue
            if not isinstance(raw, str):
                sub.error(name, "must be a string (quote it)")
                continue
            resolved = self._expand(sub, name, raw)
            if resolved is not None:
                out[name] = Secret(resolved)
        return out

    def _expand(self, r: Reader, key: str, text: str) -> str | None:
        """``text`` with each ``${NAME}`` replaced from the environment; ``None`` on errors."""
        ok = True

        def replace(match: re.Match[str]) -> str:
            nonlocal ok
            name = match.group(1)
            if not _ENV_NAME_RE.fullmatch(name):
                r.error(key, "write environment references as ${NAME} (letters, digits, '_')")
                ok = False
                return ""
            if name not in self.env:
                r.error(key, f"environment variable {name} is not set")
                ok = False
                return ""
            self.env_secrets.append(Secret(self.env[name]))
            return self.env[name]

        value = _ENV_REF_RE.sub(replace, text)
        if ok and _CONTROL_RE.search(value):
            # Never show the value: it usually holds a credential.
            r.error(key, "must be one line (a control character or line break is in it, or in"
                         " the environment variable it uses)")
            return None
        return value if ok else None

    def _parameters(self, r: Reader) -> Mapping[str, Any] | None:
        value = r.raw("parameters")
        if value is None:
            return None
        if not isinstance(value, dict) or value.get("type") != "object":
            r.error("parameters", "must be a JSON schema with type: object")
            return None
        # Imported here: only plans with hand-written schemas pay for it.
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import Draft202012Validator, validator_for

        try:
            validator_for(value, default=Draft202012Validator).check_schema(value)
        except SchemaError as exc:
            r.error("parameters", f"is not a valid JSON schema: {exc.message}")
            return None
        return value

    def _timeout(self, r: Reader, default: float) -> float:
        timeout = r.float("timeout_s", default, max=_MAX_TIMEOUT_S)
        r.check("timeout_s", timeout > 0, "must be more than 0")
        return timeout

    # -- an agent's fields -------------------------------------------------------------------

    def agent(self, r: Reader, *, handoffs: bool = True) -> PendingCapabilities:
        """Read ``tools``, ``handoffs``, ``guardrails``, ``guardrail_debounce_chars``, ``dtmf``.

        Args:
            r: The agent's mapping.
            handoffs: Whether ``handoffs`` is allowed here (not for Agents SDK agents, whose
                handoffs come from Python).
        """
        at = Where.of(r.doc, r.path)
        tools = self._tool_refs(r)
        pending_handoffs = self._handoffs(r) if handoffs else ()
        guardrails = self._guardrails(r)
        debounce = r.int("guardrail_debounce_chars", DEFAULT_GUARDRAIL_DEBOUNCE_CHARS, min=1,
                         max=100_000)
        return PendingCapabilities(at=at, tools=tools, handoffs=pending_handoffs,
                                   guardrails=guardrails, debounce_chars=debounce,
                                   dtmf=self._dtmf(r))

    def _list(self, r: Reader, key: str, what: str) -> list[tuple[Any, YamlPath]]:
        value = r.raw(key)
        if value is None:
            return []
        if not isinstance(value, list):
            r.error(key, f"must be a list of {what}")
            return []
        return [(item, r.path + (key, i)) for i, item in enumerate(value)]

    def _tool_refs(self, r: Reader) -> tuple[ToolRef, ...]:
        out: list[ToolRef] = []
        for item, path in self._list(r, "tools", "tool names and {builtin: ...} entries"):
            at = Where.of(r.doc, path)
            if isinstance(item, str):
                out.append(ToolRef(item, at))
            elif isinstance(item, dict) and "builtin" in item:
                builtin = self._builtin(Reader(r.doc, path, self.errors))
                if builtin is not None:
                    out.append(ToolRef(builtin, at))
            else:
                self.errors.append(at.error(
                    "must be the name of a tool under the top-level tools: or {builtin: ...}"))
        return tuple(out)

    def _builtin(self, br: Reader) -> BuiltinTool | None:
        kind = br.str("builtin")
        name = br.str("name", "")
        br.check("name", not name or TOOL_NAME_RE.fullmatch(name) is not None,
                 "tool names use letters, digits, '_' and '-' (at most 64)")
        description = br.str("description", "")
        timeout = self._timeout(br, 30.0)
        targets: dict[str, str] = {}
        allow_any = False
        if kind == "transfer_call":
            targets = self._targets(br)
            allow_any = br.bool("allow_any_uri", False)
            if not targets and not allow_any:
                br.error(None, "transfer_call needs targets (names for SIP URIs the agent may"
                               " pick), or allow_any_uri: true")
        else:
            for key in ("targets", "allow_any_uri"):
                if key in br.data:
                    br.raw(key)
                    br.error(key, "applies only to builtin transfer_call")
        br.finish()
        builtin = BUILTINS.get(kind)
        if builtin is None:
            if kind:
                br.error("builtin", f"unknown built-in {kind!r}; built-ins: "
                                    + ", ".join(BUILTINS))
            return None
        return BuiltinTool(builtin=builtin, name=name, description=description,
                           targets=MappingProxyType(targets), allow_any_uri=allow_any,
                           timeout_s=timeout)

    def _targets(self, br: Reader) -> dict[str, str]:
        value = br.raw("targets")
        if value is None:
            return {}
        if not isinstance(value, dict):
            br.error("targets", "must be a mapping of names to sip:, sips: or tel: URIs")
            return {}
        tr = br.sub("targets")
        out: dict[str, str] = {}
        for name in value:
            uri = tr.str(name)
            if not re.fullmatch(_NAME_RE, name):
                tr.error(name, "target names use letters, digits, '_', '.' and '-'")
            elif not URI_RE.fullmatch(uri):
                tr.error(name, "must be a sip:, sips: or tel: URI without spaces or <>\"")
            else:
                out[name] = uri
        return out

    def _handoffs(self, r: Reader) -> tuple[PendingHandoff, ...]:
        out: list[PendingHandoff] = []
        for item, path in self._list(r, "handoffs", "agent names and {agent: ...} entries"):
            at = Where.of(r.doc, path)
            if isinstance(item, str) and item:
                out.append(PendingHandoff(HandoffSpec(agent=item), at))
            elif isinstance(item, dict):
                hr = Reader(r.doc, path, self.errors)
                agent = hr.str("agent")
                name = hr.str("tool_name", "")
                hr.check("tool_name", not name or TOOL_NAME_RE.fullmatch(name) is not None,
                         "tool names use letters, digits, '_' and '-' (at most 64)")
                description = hr.str("description", "")
                hr.finish()
                if agent:
                    out.append(PendingHandoff(HandoffSpec(agent, name, description), at))
            else:
                self.errors.append(at.error("must be an agent name or {agent: ..., tool_name:"
                                            " ..., description: ...}"))
        return tuple(out)

    def _guardrails(self, r: Reader) -> tuple[PendingGuardrail, ...]:
        out: list[PendingGuardrail] = []
        for item, path in self._list(r, "guardrails", "guardrail mappings"):
            at = Where.of(r.doc, path)
            if not isinstance(item, dict):
                self.errors.append(at.error("must be a mapping with name, one of deny_regex,"
                                            " deny_keywords or python, and an action"))
                continue
            spec = self._guardrail(Reader(r.doc, path, self.errors))
            if spec is not None:
                out.append(PendingGuardrail(spec, at))
        return tuple(out)

    def _guardrail(self, gr: Reader) -> GuardrailSpec | None:
        name = gr.str("name", pattern=_NAME_RE)
        kinds = [k for k in GUARDRAIL_KINDS if k in gr.data]
        if not kinds:
            gr.error(None, "needs one of deny_regex, deny_keywords or python")
        elif len(kinds) > 1:
            gr.error(None, f"has {len(kinds)} kinds ({', '.join(kinds)}); keep exactly one")
        regex = self._deny_regex(gr) if "deny_regex" in kinds else None
        keywords: tuple[str, ...] = ()
        if "deny_keywords" in kinds:
            keywords = tuple(gr.str_list("deny_keywords"))
            gr.check("deny_keywords", not isinstance(gr.data["deny_keywords"], list)
                     or (bool(keywords) and all(k.strip() for k in keywords)),
                     "must be a list of non-empty words or phrases")
        python: str | None = None
        if "python" in kinds:
            python = gr.str("python")
            try:
                import_callable(python)
            except ImportProblem as exc:
                gr.error("python", str(exc))
        action = gr.str("action", "retry", choices=tuple(_ACTIONS))
        message = gr.str("message", "")
        target = gr.str("target", "") or None
        if action == "transfer":
            if target is None:
                gr.error("target", "is required for action transfer (a sip:, sips: or tel: URI)")
            elif not URI_RE.fullmatch(target):
                gr.error("target", "must be a sip:, sips: or tel: URI without spaces or <>\"")
        elif target is not None:
            gr.error("target", "applies only to action transfer")
        if action == "say":
            gr.check("message", bool(message.strip()), "is required for action say: the line"
                                                       " the agent says instead")
        gr.finish()
        if len(kinds) != 1:
            return None
        return GuardrailSpec(name=name, deny_regex=regex, deny_keywords=keywords, python=python,
                             action=_ACTIONS.get(action, "retry"), message=message,
                             target=target)

    def _deny_regex(self, gr: Reader) -> str:
        text = gr.str("deny_regex")
        if text == CARD_NUMBERS:
            return text
        if text.startswith("@"):
            gr.error("deny_regex", f"unknown detector {text!r}; the only one is {CARD_NUMBERS}")
        elif not text:
            gr.error("deny_regex", "must not be empty (it would match everything)")
        else:
            try:
                re.compile(text)
            except re.error as exc:
                gr.error("deny_regex", f"invalid regular expression: {exc}")
        return text

    def _dtmf(self, r: Reader) -> DtmfSpec:
        if not r.has("dtmf"):
            r.raw("dtmf")
            return DtmfSpec()
        dr = r.sub("dtmf")
        to_agent = dr.bool("to_agent", True)
        batch_ms = dr.int("batch_ms", 1500, min=0, max=60_000)
        terminator = dr.str("terminator", "#").upper()
        dr.check("terminator", len(terminator) <= 1 and DTMF_RE.fullmatch(terminator or "0")
                 is not None, "must be one of 0-9, *, #, A-D, or \"\" for none (quote it)")
        max_digits = dr.int("max_digits", 32, min=1, max=256)
        rules = self._dtmf_rules(dr)
        dr.finish()
        return DtmfSpec(to_agent=to_agent, batch_ms=batch_ms, terminator=terminator,
                        max_digits=max_digits, rules=rules)

    def _dtmf_rules(self, dr: Reader) -> tuple[DtmfRule, ...]:
        value = dr.raw("rules")
        if value is None:
            return ()
        if not isinstance(value, dict):
            dr.error("rules", "must be a mapping of digits to hangup, {transfer: URI} or"
                              " {say: TEXT}")
            return ()
        texts = self.key_texts(dr.doc, dr.path + ("rules",))
        rr = dr.sub("rules")
        out: dict[str, DtmfRule] = {}
        for digits, action in value.items():
            rr.raw(digits)
            raw = texts.get(digits)
            if raw is not None and raw != digits:
                rr.error(digits, f"YAML read {raw} as {digits!r}: quote DTMF digits"
                                 f" (\"{raw}\")")
                continue
            keys = digits.upper()
            if not DTMF_RE.fullmatch(keys):
                rr.error(digits, "DTMF digits are 0-9, *, #, A-D (quote them: \"*9\")")
                continue
            if keys in out:
                rr.error(digits, f"the sequence {keys!r} has a rule already")
                continue
            rule = self._dtmf_rule(rr, digits, keys, action)
            if rule is not None:
                out[keys] = rule
        return tuple(out.values())

    def _dtmf_rule(self, rr: Reader, key: str, keys: str, action: Any) -> DtmfRule | None:
        if action == "hangup":
            return DtmfRule(keys, "hangup")
        if not isinstance(action, dict):
            rr.error(key, "must be hangup, {transfer: URI} or {say: TEXT}")
            return None
        ar = rr.sub(key)
        kinds = [k for k in ("transfer", "say", "hangup") if k in ar.data]
        if len(kinds) != 1:
            ar.error(None, "needs exactly one of transfer, say or hangup")
            for kind in kinds:
                ar.raw(kind)
            ar.finish()
            return None
        rule: DtmfRule | None = None
        if kinds == ["transfer"]:
            target = ar.str("transfer")
            if URI_RE.fullmatch(target):
                rule = DtmfRule(keys, "transfer", target=target)
            else:
                ar.error("transfer", "must be a sip:, sips: or tel: URI without spaces or <>\"")
        elif kinds == ["say"]:
            message = ar.str("say")
            if message.strip():
                rule = DtmfRule(keys, "say", message=message)
            else:
                ar.error("say", "must not be empty")
        elif ar.bool("hangup"):
            rule = DtmfRule(keys, "hangup")
        else:
            ar.error("hangup", "must be true (or write the plain word hangup)")
        ar.finish()
        return rule

    # -- resolving names ---------------------------------------------------------------------

    def resolve(self, agent: str, pending: PendingCapabilities,
                tools: Mapping[str, tuple[ToolSpec | None, Where]],
                agents: Collection[str]) -> AgentCapabilities:
        """Check ``pending`` against every tool and agent of the plan and build the value.

        Args:
            agent: Name of the agent the capabilities belong to.
            pending: What was written.
            tools: Every top-level tool of the plan, by name (``None``: defined but invalid).
            agents: Every agent name of the plan.
        """
        used: dict[str, Where] = {}
        specs: list[ToolSpec] = []
        for ref in pending.tools:
            if isinstance(ref.tool, str):
                found = tools.get(ref.tool)
                if found is None:
                    known = ", ".join(sorted(tools)) or "none defined"
                    self.errors.append(ref.at.error(
                        f"unknown tool {ref.tool!r} (tools: {known})"))
                    continue
                if found[0] is None:
                    continue  # its definition is wrong, and that was reported there
                spec = found[0]
            else:
                spec = ref.tool
            name = tool_name(spec)
            if self._duplicate(agent, name, ref.at, used):
                continue
            specs.append(spec)
        handoffs: list[HandoffSpec] = []
        for item in pending.handoffs:
            target = item.spec.agent
            if target == agent:
                self.errors.append(item.at.error(f"agent {agent!r} cannot hand off to itself"))
                continue
            if target not in agents:
                known = ", ".join(sorted(agents)) or "none defined"
                self.errors.append(item.at.error(
                    f"handoff to unknown agent {target!r} (agents: {known})"))
                continue
            name = item.spec.name
            if not TOOL_NAME_RE.fullmatch(name):
                self.errors.append(item.at.error(
                    f"handoff tool name {name!r} is not ^[a-zA-Z0-9_-]{{1,64}}$; set tool_name"))
                continue
            if self._duplicate(agent, name, item.at, used):
                continue
            handoffs.append(item.spec)
        guardrails: dict[str, PendingGuardrail] = {}
        for guardrail in pending.guardrails:
            first = guardrails.get(guardrail.spec.name)
            if first is not None:
                self.errors.append(guardrail.at.error(
                    f"agent {agent!r} has two guardrails named {guardrail.spec.name!r}"
                    f" (first at {first.at.at})"))
                continue
            guardrails[guardrail.spec.name] = guardrail
        return AgentCapabilities(
            tools=tuple(specs), handoffs=tuple(handoffs),
            guardrails=tuple(g.spec for g in guardrails.values()),
            guardrail_debounce_chars=pending.debounce_chars, dtmf=pending.dtmf,
            sdk_agent=pending.sdk_agent)

    def _duplicate(self, agent: str, name: str, at: Where, used: dict[str, Where]) -> bool:
        first = used.get(name)
        if first is None:
            used[name] = at
            return False
        self.errors.append(at.error(
            f"agent {agent!r} has two tools named {name!r} (first at {first.at}); tools and"
            " handoffs share one namespace: rename one with name: or tool_name:"))
        return True

"""Safe templates for agent instructions and greetings: ``{caller}``, ``{var.company}``.

A dialplan author writes instructions such as ``You answer calls for {var.company}.``; the router
fills them in per call. This is deliberately not :meth:`str.format`: only a fixed set of names
exists, there is no attribute or index access and no format spec, so neither the author nor a
caller can reach Python objects. Templates are parsed once, at load time, into literal text and
fields; every problem (unknown name, stray brace) is reported with its offset so the loader can
point at the exact line. Values that come from the call (numbers, display name, headers) are
controlled by the caller, so rendering strips control characters from them and caps their
length; dialplan variables are trusted and inserted as written. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

#: Names filled from the call (and the matched route) at render time.
CALL_FIELDS: Final = ("caller", "callee", "caller_name", "request_uri", "route")
#: Longest caller-controlled value inserted into a template, in characters.
MAX_CALL_VALUE_CHARS: Final = 256

#: A SIP header name is an RFC 3261 ``token`` (section 25.1).
HEADER_NAME_RE: Final = re.compile(r"[A-Za-z0-9!%*_+`'~.-]+")
#: A dialplan variable name.
VARIABLE_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]+")
_SHOWN_NAME_CHARS: Final = 40


@dataclass(frozen=True)
class Field:
    """One ``{...}`` placeholder.

    Attributes:
        kind: ``call`` (one of :data:`CALL_FIELDS`), ``header`` or ``var``.
        key: The call field, the header name in lower case, or the variable name.
    """

    kind: Literal["call", "header", "var"]
    key: str


@dataclass(frozen=True)
class TemplateProblem:
    """A mistake in a template, at character ``offset`` of its text."""

    offset: int
    message: str


@dataclass(frozen=True)
class RenderContext:
    """The values a template is rendered with.

    Attributes:
        call: Values of :data:`CALL_FIELDS` (missing ones render empty).
        headers: SIP headers of the call, keyed by lower-case name.
        variables: Dialplan variables (top-level merged with the route's).
    """

    call: Mapping[str, str]
    headers: Mapping[str, str]
    variables: Mapping[str, str]


@dataclass(frozen=True)
class Template:
    """A parsed template: literal strings and :class:`Field` placeholders, in order."""

    text: str
    parts: tuple[str | Field, ...]

    @property
    def variables(self) -> frozenset[str]:
        """Names of the ``{var.NAME}`` placeholders used."""
        return frozenset(p.key for p in self.parts if isinstance(p, Field) and p.kind == "var")

    def render(self, context: RenderContext) -> str:
        """Fill in the placeholders.

        A missing header, call field or variable renders as the empty string. Values from the
        call have control characters replaced by a space and are cut to
        :data:`MAX_CALL_VALUE_CHARS`, so a caller cannot smuggle line breaks into instructions.
        """
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif part.kind == "var":
                out.append(context.variables.get(part.key, ""))
            elif part.kind == "header":
                out.append(_clean(context.headers.get(part.key, "")))
            else:
                out.append(_clean(context.call.get(part.key, "")))
        return "".join(out)


def parse_template(text: str) -> tuple[Template, list[TemplateProblem]]:
    """Parse ``text`` into a :class:`Template`.

    ``{{`` and ``}}`` stand for literal braces. Placeholders are ``{caller}``, ``{callee}``,
    ``{caller_name}``, ``{request_uri}``, ``{route}``, ``{header.NAME}`` and ``{var.NAME}``,
    written exactly so (no spaces, no format spec).

    Returns:
        The template (unknown placeholders are kept as literal text) and every problem found;
        the caller decides whether problems are fatal.
    """
    parts: list[str | Field] = []
    problems: list[TemplateProblem] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        brace = _next_brace(text, i)
        if brace > i:
            literal.append(text[i:brace])
            i = brace
            continue
        if text.startswith("{{", i) or text.startswith("}}", i):
            literal.append(text[i])
            i += 2
            continue
        if text[i] == "}":
            problems.append(TemplateProblem(i, "single '}'; write '}}' for a literal brace"))
            literal.append("}")
            i += 1
            continue
        end = text.find("}", i + 1)
        nested = text.find("{", i + 1)
        if end == -1 or (nested != -1 and nested < end):
            problems.append(TemplateProblem(i, "unclosed '{'; write '{{' for a literal brace"))
            literal.append("{")
            i += 1
            continue
        inner = text[i + 1 : end]
        field = _field(inner)
        if field is None:
            problems.append(TemplateProblem(i, _unknown(inner)))
            literal.append(text[i : end + 1])
        else:
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(field)
        i = end + 1
    if literal:
        parts.append("".join(literal))
    return Template(text, tuple(parts)), problems


def _next_brace(text: str, start: int) -> int:
    positions = [p for p in (text.find("{", start), text.find("}", start)) if p != -1]
    return min(positions) if positions else len(text)


def _field(inner: str) -> Field | None:
    if inner in CALL_FIELDS:
        return Field("call", inner)
    kind, dot, key = inner.partition(".")
    if not dot:
        return None
    if kind == "header" and HEADER_NAME_RE.fullmatch(key):
        return Field("header", key.lower())
    if kind == "var" and VARIABLE_NAME_RE.fullmatch(key):
        return Field("var", key)
    return None


def _unknown(inner: str) -> str:
    shown = inner if len(inner) <= _SHOWN_NAME_CHARS else inner[:_SHOWN_NAME_CHARS] + "..."
    shown = _CONTROL_RE.sub(" ", shown)
    known = ", ".join("{" + name + "}" for name in CALL_FIELDS)
    return (
        f"unknown template variable {{{shown}}}; known: {known}, {{header.NAME}}, {{var.NAME}}"
        " (write '{{' and '}}' for literal braces)"
    )


def _clean(value: str) -> str:
    return _CONTROL_RE.sub(" ", value[:MAX_CALL_VALUE_CHARS])

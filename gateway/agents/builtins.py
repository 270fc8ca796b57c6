"""The gateway's call-control tools as the model sees them, and checks on what the model asks.

:func:`builtin_tool` gives the GA Realtime function tool (``{"type": "function", ...}``) for a
:class:`~gateway.agents.spec.BuiltinTool`: ``transfer_call`` (blind transfer by SIP REFER to
one of the configured targets), ``end_call`` (say goodbye, then BYE) and ``send_dtmf``
(RFC 4733 digits). Tool arguments come from the model and therefore, indirectly, from the
caller, so :func:`resolve_transfer_target` and :func:`dtmf_digits` check them before the
session acts, raising :class:`ValueError` whose message is fit to return to the model as the
tool's output. A model-supplied URI (only with ``allow_any_uri``) must be a plain ``sip:``,
``sips:`` or ``tel:`` URI: no whitespace or line breaks, no ``<>"``, no URI headers (``?``,
which a REFER would copy into the new INVITE), bounded length. No I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from gateway.agents.spec import BuiltinTool, ToolSpec

__all__ = [
    "DTMF_PATTERN",
    "MAX_URI_CHARS",
    "builtin_tool",
    "builtin_tools",
    "dtmf_digits",
    "end_call_reason",
    "resolve_transfer_target",
]

#: What ``send_dtmf`` accepts (RFC 4733 events 0-15), also the tool's JSON-schema pattern.
DTMF_PATTERN: Final = "^[0-9*#A-D]{1,32}$"
#: Longest URI the model may pass to ``transfer_call``.
MAX_URI_CHARS: Final = 256

_DTMF = re.compile(r"[0-9*#A-D]{1,32}")
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: sip:/sips: URI: optional userinfo, then a host (name, IPv4 or [IPv6]), optional port and
#: ``;params``. Only RFC 3261 unreserved characters, escapes and the few delimiters a
#: userinfo or parameter needs; no ``?`` headers, no ``<>",``, no whitespace.
_SIP_URI = re.compile(
    r"(?:[A-Za-z0-9\-_.!~*'()&=+$;%]+(?::[A-Za-z0-9\-_.!~*'()&=+$%]*)?@)?"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::[0-9]{1,5})?"
    r"(?:;[A-Za-z0-9\-_.!~*'()%]+(?:=[A-Za-z0-9\-_.!~*'()%\[\]:]+)?)*"
)
#: tel: URI (RFC 3966): a number with visual separators, optional ``;params``.
_TEL_URI = re.compile(
    r"\+?[0-9*#\-.()]*[0-9][0-9*#\-.()]*"
    r"(?:;[A-Za-z0-9\-_.!~*'()%]+(?:=[A-Za-z0-9\-_.!~*'()%+]+)?)*"
)
#: Percent-escapes of control characters (a CR/LF smuggled through decoding).
_ESCAPED_CONTROL = re.compile(r"%(?:[01][0-9A-Fa-f]|7[Ff])")

_DEFAULT_DESCRIPTIONS: Final[Mapping[str, str]] = {
    "transfer_call": (
        "Transfer the caller to another destination. Tell the caller you are transferring "
        "them before calling this; the call leaves you once it succeeds."
    ),
    "end_call": (
        "End the phone call. Say goodbye first; the line is hung up after you finish speaking."
    ),
    "send_dtmf": (
        "Press keys on the phone keypad (DTMF), e.g. to navigate a phone menu or enter an "
        "extension."
    ),
}


def _reason_property(what: str) -> dict[str, Any]:
    return {"type": "string", "description": what}


def _transfer_parameters(spec: BuiltinTool) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required: list[str] = []
    names = list(spec.targets)
    if names:
        properties["target"] = {
            "type": "string",
            "enum": names,
            "description": "Where to transfer the caller: one of " + ", ".join(names) + ".",
        }
    if spec.allow_any_uri:
        properties["uri"] = {
            "type": "string",
            "maxLength": MAX_URI_CHARS,
            "description": (
                "A sip:, sips: or tel: URI to transfer to"
                + (", when none of the named targets fits." if names else ".")
            ),
        }
    if not spec.allow_any_uri:
        required.append("target")
    elif not names:
        required.append("uri")
    properties["reason"] = _reason_property("Why the caller is being transferred.")
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _parameters(spec: BuiltinTool) -> dict[str, Any]:
    if spec.builtin == "transfer_call":
        return _transfer_parameters(spec)
    if spec.builtin == "end_call":
        return {
            "type": "object",
            "properties": {"reason": _reason_property("Why the call is ending.")},
            "required": [],
            "additionalProperties": False,
        }
    return {
        "type": "object",
        "properties": {
            "digits": {
                "type": "string",
                "pattern": DTMF_PATTERN,
                "description": "Keys to press, in order: 0-9, *, #, A-D (at most 32).",
            }
        },
        "required": ["digits"],
        "additionalProperties": False,
    }


def builtin_tool(spec: BuiltinTool) -> dict[str, Any]:
    """The GA function tool object for a built-in.

    Args:
        spec: The built-in.

    Returns:
        ``{"type": "function", "name", "description", "parameters"}``.

    Raises:
        ValueError: The name is not ``^[a-zA-Z0-9_-]{1,64}$``, or a ``transfer_call`` has
            neither targets nor ``allow_any_uri``.
    """
    if not _TOOL_NAME.match(spec.tool_name):
        raise ValueError(f"tool name {spec.tool_name!r} is not ^[a-zA-Z0-9_-]{{1,64}}$")
    if spec.builtin == "transfer_call" and not spec.targets and not spec.allow_any_uri:
        raise ValueError(f"{spec.tool_name}: transfer_call needs targets or allow_any_uri")
    return {
        "type": "function",
        "name": spec.tool_name,
        "description": spec.description or _DEFAULT_DESCRIPTIONS[spec.builtin],
        "parameters": _parameters(spec),
    }


def builtin_tools(tools: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """:func:`builtin_tool` of every built-in among ``tools``, order kept (others skipped)."""
    return [builtin_tool(tool) for tool in tools if isinstance(tool, BuiltinTool)]


def _arguments(arguments: str | Mapping[str, Any] | None) -> Mapping[str, Any]:
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except (ValueError, RecursionError):
            raise ValueError("The arguments were not valid JSON; call the tool again.") from None
        if not isinstance(parsed, dict):
            raise ValueError("The arguments must be a JSON object; call the tool again.")
        return parsed
    return arguments


def _shown(value: str) -> str:
    """``value`` safe to echo to the model: one line, short."""
    flat = "".join(c if c.isprintable() else " " for c in value)
    return repr(flat[:40] + ("…" if len(flat) > 40 else ""))


def _check_uri(uri: str) -> str:
    if len(uri) > MAX_URI_CHARS:
        raise ValueError(f"That URI is too long (at most {MAX_URI_CHARS} characters).")
    if any(c.isspace() or not c.isprintable() for c in uri):
        raise ValueError("A transfer URI must not contain spaces, tabs or line breaks.")
    if _ESCAPED_CONTROL.search(uri):
        raise ValueError("A transfer URI must not contain escaped control characters.")
    scheme, colon, rest = uri.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips", "tel"):
        raise ValueError("A transfer URI must start with sip:, sips: or tel:.")
    pattern = _TEL_URI if scheme == "tel" else _SIP_URI
    if not pattern.fullmatch(rest):
        raise ValueError(
            f"{_shown(uri)} is not a valid {scheme}: URI (URI headers with '?' are not allowed)."
        )
    return f"{scheme}:{rest}"


def resolve_transfer_target(
    spec: BuiltinTool, arguments: str | Mapping[str, Any] | None
) -> str:
    """The SIP URI to transfer to, from a ``transfer_call`` call's arguments.

    A named ``target`` is looked up in ``spec.targets`` (exactly, then ignoring case) and wins
    over ``uri``. A ``uri`` is taken only with ``allow_any_uri`` and only if it passes the
    checks described in the module docstring; its scheme is lower-cased.

    Args:
        spec: The ``transfer_call`` built-in.
        arguments: The call's ``arguments`` JSON string, or the parsed object.

    Returns:
        The URI: a configured one verbatim, or the checked model-supplied one.

    Raises:
        ValueError: Unknown target, URI not allowed or invalid, nothing given, or bad JSON;
            the message tells the model what to do instead.
    """
    args = _arguments(arguments)
    names = ", ".join(spec.targets) or "none configured"
    target = args.get("target")
    uri = args.get("uri")
    if target is not None and target != "":
        if not isinstance(target, str):
            raise ValueError(f"target must be a string: one of {names}.")
        if target in spec.targets:
            return spec.targets[target]
        folded = [name for name in spec.targets if name.casefold() == target.casefold()]
        if len(folded) == 1:
            return spec.targets[folded[0]]
        raise ValueError(f"Unknown transfer target {_shown(target)}. Choose one of: {names}.")
    if uri is not None and uri != "":
        if not spec.allow_any_uri:
            raise ValueError(
                f"Transferring to an arbitrary address is not allowed. Choose one of: {names}."
            )
        if not isinstance(uri, str):
            raise ValueError("uri must be a string.")
        return _check_uri(uri)
    if spec.targets:
        raise ValueError(f"Say where to transfer the caller: target is one of {names}.")
    raise ValueError("Say where to transfer the caller: give a sip:, sips: or tel: uri.")


def dtmf_digits(arguments: str | Mapping[str, Any] | None) -> str:
    """The keys a ``send_dtmf`` call asks for.

    Args:
        arguments: The call's ``arguments`` JSON string, or the parsed object.

    Returns:
        The digits (lower-case ``a-d`` are upper-cased).

    Raises:
        ValueError: Missing or not 1-32 of ``0-9 * # A-D``; the message is for the model.
    """
    digits = _arguments(arguments).get("digits")
    if not isinstance(digits, str) or not _DTMF.fullmatch(digits.upper()):
        raise ValueError("digits must be 1 to 32 of 0-9, *, #, A-D, e.g. \"123#\".")
    return digits.upper()


def end_call_reason(arguments: str | Mapping[str, Any] | None) -> str:
    """The ``reason`` of an ``end_call`` call, ``""`` when missing or unreadable."""
    try:
        reason = _arguments(arguments).get("reason")
    except ValueError:
        return ""
    return reason.strip()[:1000] if isinstance(reason, str) else ""

"""Field checks of the IPC protocol: JSON types, bounds and closed sets, sans I/O.

Each check takes a field's value (from the wire, or from a message being encoded) and returns
the value to keep, or raises :class:`Invalid` with a reason that names what was wrong but never
echoes the value: fields carry numbers, transcripts and tool arguments, and these reasons end
up in logs. A message field carries its check in its dataclass metadata (:func:`meta`,
:func:`maybe`), so a field and its bounds are declared together; the field kinds shared by
several messages (ids, names, times) are defined at the end. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = [
    "COUNT", "ID", "MAX_TEXT_CHARS", "NAME", "PATH", "REASON", "REQUEST_ID", "TIME", "USER",
    "VERSION", "Check", "Invalid", "choice", "flag", "integer", "ip_address", "json_object",
    "maybe", "meta", "number", "optional", "pattern", "text", "text_map", "uri",
]

#: Returns the checked value (possibly normalised, e.g. int to float) or raises Invalid.
Check = Callable[[Any], Any]

_URI_SCHEMES: Final = ("sip:", "sips:", "tel:")


class Invalid(Exception):
    """One field's value is wrong; ``reason`` completes "field 'x' ...".

    Attributes:
        reason: E.g. ``must be at most 64 characters``.
        path: Where inside the field, for nested JSON (``.turns[2]``); empty at top level.
    """

    def __init__(self, reason: str, path: str = "") -> None:
        self.reason = reason
        self.path = path
        super().__init__(reason)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def text(max_chars: int, *, min_chars: int = 0) -> Check:
    """A string of ``min_chars`` to ``max_chars`` characters."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid("must be a string")
        if len(value) < min_chars:
            raise Invalid("must not be empty" if min_chars == 1 else
                          f"must be at least {min_chars} characters")
        if len(value) > max_chars:
            raise Invalid(f"must be at most {max_chars} characters (got {len(value)})")
        return value

    return check


def pattern(regex: str, description: str, max_chars: int) -> Check:
    """A string of at most ``max_chars`` characters matching ``regex`` in full."""
    compiled = re.compile(regex)
    bounded = text(max_chars, min_chars=1)

    def check(value: Any) -> str:
        checked: str = bounded(value)
        if compiled.fullmatch(checked) is None:
            raise Invalid(f"must be {description}")
        return checked

    return check


def integer(low: int, high: int) -> Check:
    """An integer (not a boolean) from ``low`` to ``high`` inclusive."""

    def check(value: Any) -> int:
        if not _is_int(value):
            raise Invalid("must be an integer")
        if not low <= value <= high:
            raise Invalid(f"must be between {low} and {high}")
        return int(value)

    return check


def number(low: float, high: float) -> Check:
    """A finite number from ``low`` to ``high`` inclusive, kept as a ``float``."""

    def check(value: Any) -> float:
        if not (_is_int(value) or isinstance(value, float)):
            raise Invalid("must be a number")
        result = float(value)
        if not math.isfinite(result) or not low <= result <= high:
            raise Invalid(f"must be between {low:g} and {high:g}")
        return result

    return check


def flag(value: Any) -> bool:
    """A boolean."""
    if not isinstance(value, bool):
        raise Invalid("must be a boolean")
    return value


def choice(values: tuple[str, ...]) -> Check:
    """One of ``values``."""
    allowed = frozenset(values)
    listing = ", ".join(repr(v) for v in values)

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise Invalid(f"must be one of {listing}")
        return value

    return check


def optional(inner: Check) -> Check:
    """``None`` or a value ``inner`` accepts."""

    def check(value: Any) -> Any:
        return None if value is None else inner(value)

    return check


def ip_address(value: Any) -> str:
    """An IPv4 or IPv6 address in text form (kept as written)."""
    if not isinstance(value, str) or len(value) > 64:
        raise Invalid("must be an IP address")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise Invalid("must be an IP address") from None
    return value


def uri(max_chars: int) -> Check:
    """A ``sip:``, ``sips:`` or ``tel:`` URI of at most ``max_chars`` characters."""
    bounded = text(max_chars, min_chars=1)

    def check(value: Any) -> str:
        checked: str = bounded(value)
        lowered = checked.lower()
        if not lowered.startswith(_URI_SCHEMES) or any(c.isspace() for c in checked):
            raise Invalid("must be a sip:, sips: or tel: URI without spaces")
        return checked

    return check


def text_map(max_entries: int, max_key_chars: int, max_value_chars: int) -> Check:
    """An object of string values (e.g. path to file text), kept as a ``dict``."""
    key_check = text(max_key_chars, min_chars=1)
    value_check = text(max_value_chars)

    def check(value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise Invalid("must be an object")
        if len(value) > max_entries:
            raise Invalid(f"must have at most {max_entries} entries")
        result: dict[str, str] = {}
        for index, (key, item) in enumerate(value.items()):
            try:
                result[key_check(key)] = value_check(item)
            except Invalid as exc:
                raise Invalid(exc.reason, f"[{index}]") from None
        return result

    return check


def text_list(max_items: int, item: Check) -> Check:
    """An array of strings each passing ``item``, kept as a ``tuple``."""

    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list | tuple):
            raise Invalid("must be an array")
        if len(value) > max_items:
            raise Invalid(f"must have at most {max_items} items")
        result: list[str] = []
        for index, entry in enumerate(value):
            try:
                result.append(item(entry))
            except Invalid as exc:
                raise Invalid(exc.reason, f"[{index}]") from None
        return tuple(result)

    return check


def _plain(value: Any, path: str, depth: int, max_depth: int) -> Any:
    """``value`` as plain JSON data (dict, list, str, int, float, bool, None)."""
    if value is None or isinstance(value, str | bool):
        return value
    if _is_int(value):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Invalid("must hold finite numbers only", path)
        return value
    if depth >= max_depth:
        raise Invalid(f"must not nest deeper than {max_depth} levels", path)
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise Invalid("must have string keys only", path)
            result[key] = _plain(item, f"{path}.{key}", depth + 1, max_depth)
        return result
    if isinstance(value, list | tuple):
        return [_plain(item, f"{path}[{i}]", depth + 1, max_depth) for i, item in enumerate(value)]
    raise Invalid(f"must hold JSON values only (found {type(value).__name__})", path)


def json_object(max_bytes: int, *, max_depth: int = 16) -> Check:
    """A JSON object of at most ``max_bytes`` once encoded, returned as plain ``dict`` data.

    Mappings and tuples (in a message being encoded) become dicts and lists, so what is
    encoded is exactly what the peer decodes.
    """

    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise Invalid("must be an object")
        plain: dict[str, Any] = _plain(value, "", 0, max_depth)
        size = len(json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode())
        if size > max_bytes:
            raise Invalid(f"must be at most {max_bytes} bytes as JSON (got {size})")
        return plain

    return check


def meta(check: Check) -> Mapping[str, Any]:
    """Dataclass field metadata carrying ``check`` (the field is required on the wire)."""
    return {"check": check}


def maybe(check: Check) -> Mapping[str, Any]:
    """Dataclass field metadata for a field that may be absent (``None``)."""
    return {"check": optional(check)}


# --------------------------------------------------------------------------- shared field kinds

#: Request ids of commands and tool requests: positive and exact in every JSON implementation.
REQUEST_ID: Final = integer(1, 2**53 - 1)
#: Worker and call ids: they appear in task names and log lines.
ID: Final = pattern(r"[A-Za-z0-9._:@-]+", "letters, digits and . _ : @ - only", 64)
#: Route, agent, tool and guardrail names.
NAME: Final = text(128, min_chars=1)
#: File paths and ``pkg.module:attr`` import paths.
PATH: Final = text(4096, min_chars=1)
#: SIP URI user parts (may be empty: ``sip:host``).
USER: Final = text(128)
#: Why a call ended or a command failed.
REASON: Final = text(512)
#: Unix time in seconds.
TIME: Final = number(0, 1e11)
#: Numbers of calls.
COUNT: Final = integer(0, 100_000)
#: Protocol versions.
VERSION: Final = integer(1, 1_000_000)
#: Longest free text (dialplan source, guardrail transcript); the frame limit still applies.
MAX_TEXT_CHARS: Final = 512 * 1024

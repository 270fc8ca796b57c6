"""Read a route's ``match:`` conditions: patterns, SIP headers and source networks.

Patterns are compiled here, once, so a bad regex is a load error with its line and matching a
call later is string comparisons only. Errors are collected with file, line and field like the
rest of the loader. Pure: no I/O.
"""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

from gateway.dialplan.capabilities import Where, YamlPath
from gateway.dialplan.schema import INGRESSES, HeaderMatch, Ingress, Match, Network, Pattern
from gateway.dialplan.template import HEADER_NAME_RE
from gateway.errors import ConfigError
from gateway.yamlsrc import Reader, YamlDoc


class MatchParser:
    """Parses ``match:`` mappings, appending problems to ``errors``."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors

    def match(self, route: Reader) -> Match:
        """The ``match`` of a route (``Match()`` when absent or null)."""
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
            ingress=self._ingress(r),
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

    def _pattern(self, doc: YamlDoc, path: YamlPath, value: Any,
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
            errors.append(Where.of(doc, path).error(
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

    @staticmethod
    def _ingress(r: Reader) -> tuple[Ingress, ...]:
        value = r.raw("ingress")
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value if isinstance(value, list) else None
        if not items or not all(isinstance(i, str) and i in INGRESSES for i in items):
            r.error("ingress", "must be sip, openai or a list of them")
            return ()
        return tuple(i for i in INGRESSES if i in items)

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
            at = Where.of(r.doc, path)
            if not isinstance(item, str):
                self.errors.append(at.error("must be a network as a string, e.g. \"10.0.0.0/8\""))
                continue
            try:
                out.append(ip_network(item))
            except ValueError as exc:
                self.errors.append(at.error(f"invalid network: {exc}"))
        return tuple(out)

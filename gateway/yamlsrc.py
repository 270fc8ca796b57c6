"""YAML documents that remember where every value came from, and a typed reader over them.

Configuration, dialplans and simulator scenarios are all YAML written by people, so every error
must point at a file and line. :func:`load_yaml` parses with PyYAML's safe loader and keeps the
line of each value by its path; :class:`Reader` pulls typed fields out of a mapping, collecting
errors (with file, line and dotted field path) instead of stopping at the first one, and
reports unknown keys so a typo never passes silently. Pure: no I/O beyond what the caller reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import yaml

from gateway.errors import ConfigError, ConfigErrors

Path = tuple[str | int, ...]
T = TypeVar("T")

_MISSING: Any = object()

# Reader's getters are named after the types they return; these aliases keep the builtins
# usable in its annotations.
_str = str
_int = int
_float = float
_bool = bool


@dataclass
class YamlDoc:
    """A parsed YAML document: plain Python data plus the line of every value."""

    source: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        """Line of the value at ``path``, or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]


def load_yaml(text: str, source: str) -> YamlDoc:
    """Parse one YAML document, keeping line numbers.

    Raises:
        ConfigError: On a syntax error or a duplicate mapping key (with its line).
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            raise ConfigError(source, line, "", f"YAML syntax error: {exc.problem}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(source, None, "", f"YAML error: {exc}") from None
        doc = YamlDoc(source, None)
        if node is not None:
            doc.data = _build(loader, node, (), doc)
        return doc
    finally:
        loader.dispose()


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: Path, doc: YamlDoc) -> Any:
    doc.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise ConfigError(
                    doc.source, key_node.start_mark.line + 1, dotted(path + (key,)),
                    "duplicate key",
                )
            out[key] = _build(loader, value_node, path + (key,), doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, path + (i,), doc) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def dotted(path: Path) -> str:
    """``agents.a.tools[2]`` for ``("agents", "a", "tools", 2)``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


class Reader:
    """Typed, error-collecting access to one mapping inside a :class:`YamlDoc`.

    Every getter returns a usable value even when the input is bad (the default, or a zero
    value), records a :class:`ConfigError`, and lets the caller go on, so one run reports
    every problem. Call :meth:`raise_errors` at the end.
    """

    def __init__(self, doc: YamlDoc, path: Path = (), errors: list[ConfigError] | None = None):
        self.doc = doc
        self.path = path
        self.errors: list[ConfigError] = [] if errors is None else errors
        value = self._value_at(path)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.error(None, f"must be a mapping, got {_type_name(value)}")
            value = {}
        self.data: dict[_str, Any] = value
        self._used: set[_str] = set()

    def _value_at(self, path: Path) -> Any:
        value = self.doc.data
        for part in path:
            if isinstance(part, _int):
                value = value[part]
            else:
                value = value.get(part) if isinstance(value, dict) else None
        return value

    def field_name(self, key: _str | _int | None) -> _str:
        """Dotted path of ``key`` under this reader."""
        return dotted(self.path if key is None else self.path + (key,))

    def error(self, key: _str | _int | None, reason: _str) -> None:
        """Record an error about ``key`` (or this mapping itself when ``key`` is None)."""
        path = self.path if key is None else self.path + (key,)
        self.errors.append(ConfigError(self.doc.source, self.doc.line_of(path), dotted(path),
                                       reason))

    def has(self, key: _str) -> _bool:
        """Whether ``key`` is present (and not null)."""
        return self.data.get(key) is not None

    def raw(self, key: _str, default: Any = None) -> Any:
        """The plain value at ``key``, unchecked."""
        self._used.add(key)
        return self.data.get(key, default)

    def _get(self, key: _str, default: Any, kinds: tuple[type, ...], what: _str) -> Any:
        self._used.add(key)
        value = self.data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if default is _MISSING:
                self.error(key, "is required")
                return kinds[0]()
            return default
        # bool is an int in Python; never accept it where a number is wanted.
        if not isinstance(value, kinds) or (isinstance(value, _bool) and bool not in kinds):
            self.error(key, f"must be {what}, got {_type_name(value)}")
            return default if default is not _MISSING else kinds[0]()
        return value

    def str(self, key: _str, default: Any = _MISSING, *, choices: tuple[_str, ...] = (),
            pattern: _str | None = None) -> _str:
        """A string field, optionally restricted to ``choices`` or a regex ``pattern``."""
        value: _str = self._get(key, default, (str,), "a string")
        if value and choices and value not in choices:
            self.error(key, f"must be one of {', '.join(choices)}; got {value!r}")
        elif value and pattern and not re.fullmatch(pattern, value):
            self.error(key, f"does not match {pattern}")
        return value

    def secret(self, key: _str, default: Any = _MISSING) -> _str:
        """A string field whose value never appears in an error message."""
        value: _str = self._get(key, default, (str,), "a string")
        return value

    def int(self, key: _str, default: Any = _MISSING, *, min: _int | None = None,
            max: _int | None = None) -> _int:
        """An integer field within ``[min, max]``."""
        value: _int = self._get(key, default, (int,), "an integer")
        self._check_range(key, value, min, max)
        return value

    def float(self, key: _str, default: Any = _MISSING, *, min: _float | None = None,
              max: _float | None = None) -> _float:
        """A number field within ``[min, max]``."""
        value = self._get(key, default, (float, _int), "a number")
        self._check_range(key, value, min, max)
        return float(value)

    def bool(self, key: _str, default: Any = _MISSING) -> _bool:
        """A boolean field."""
        value: _bool = self._get(key, default, (bool,), "true or false")
        return value

    def str_list(self, key: _str, default: Any = _MISSING) -> list[_str]:
        """A list of strings."""
        value: list[Any] = self._get(key, default, (list,), "a list")
        for i, item in enumerate(value):
            if not isinstance(item, _str):
                self.errors.append(ConfigError(
                    self.doc.source, self.doc.line_of(self.path + (key, i)),
                    dotted(self.path + (key, i)), f"must be a string, got {_type_name(item)}"))
        return [item for item in value if isinstance(item, _str)]

    def _check_range(self, key: _str, value: _float, lo: _float | None, hi: _float | None) -> None:
        if lo is not None and value < lo:
            self.error(key, f"must be >= {lo}; got {value}")
        elif hi is not None and value > hi:
            self.error(key, f"must be <= {hi}; got {value}")

    def sub(self, key: _str) -> Reader:
        """A reader over the mapping at ``key`` (an empty one when absent)."""
        self._used.add(key)
        return Reader(self.doc, self.path + (key,), self.errors)

    def items(self, key: _str) -> Iterator[Reader]:
        """Readers over each mapping in the list at ``key``."""
        self._used.add(key)
        value = self.data.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.error(key, f"must be a list, got {_type_name(value)}")
            return
        for i in range(len(value)):
            yield Reader(self.doc, self.path + (key, i), self.errors)

    def mapping(self, key: _str) -> Iterator[tuple[_str, Reader]]:
        """``(name, reader)`` for each entry of the mapping at ``key``."""
        self._used.add(key)
        value = self.data.get(key)
        if value is None:
            return
        if not isinstance(value, dict):
            self.error(key, f"must be a mapping, got {_type_name(value)}")
            return
        for name in value:
            yield name, Reader(self.doc, self.path + (key, name), self.errors)

    def check(self, key: _str, ok: _bool, reason: _str) -> None:
        """Record ``reason`` against ``key`` unless ``ok``."""
        if not ok:
            self.error(key, reason)

    def convert(self, key: _str, value: Any, fn: Callable[[Any], T], default: T) -> T:
        """Apply ``fn``; a ``ValueError`` becomes a config error on ``key``."""
        try:
            return fn(value)
        except ValueError as exc:
            self.error(key, str(exc))
            return default

    def finish(self) -> None:
        """Record an error for every key that no getter asked for."""
        for key in self.data:
            if key not in self._used:
                self.error(key, "unknown field")

    def raise_errors(self) -> None:
        """Raise all collected errors together, if any."""
        if self.errors:
            raise ConfigErrors(list(self.errors))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)

"""Find the Python callables a dialplan names by ``pkg.module:function``, and describe tools.

A dialplan's ``python:`` tools and guardrails name user code. The loader imports it once, so a
typo or a missing module is a load error with a line number rather than a failed call. To
describe a tool to the model it needs a description and a JSON schema of the arguments; the
tool runtime's ``gateway.agents.schema.describe_tool`` is the one source of truth for both and
is used whenever it is installed. :func:`describe_python_tool` is the fallback, deriving the
schema from simple type hints (``str``, ``int``, ``float``, ``bool``, ``list[...]``,
``Literal[...]``, ``X | None``) and the description from a Google-style docstring.
Importing runs the module's top-level code, nothing else; nothing is called.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, Union

#: ``(description, parameters JSON schema)`` for a ``pkg.module:function`` path.
Describe = Callable[[str], tuple[str, Mapping[str, Any]]]

#: ``pkg.module:attr`` (the attribute may be dotted, e.g. ``module:Class.method``).
PATH_RE: Final = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
    r"(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_SCHEMA_MODULE: Final = "gateway.agents.schema"
_SCALARS: Final[Mapping[Any, str]] = {str: "string", int: "integer", float: "number",
                                      bool: "boolean"}
_SECTION_RE: Final = re.compile(r"^(Args|Arguments|Parameters|Returns|Raises|Yields|Example|"
                                r"Examples|Note|Notes|Attributes):\s*$")
_ARG_RE: Final = re.compile(r"^\s+(\*{0,2}[A-Za-z_][A-Za-z0-9_]*)\s*(?:\([^)]*\))?:\s*(.*)$")


class ImportProblem(Exception):
    """A ``pkg.module:attr`` path cannot be imported, or its target is unusable."""


def import_object(path: str) -> Any:
    """Import the object ``path`` names.

    Args:
        path: ``pkg.module:attr``.

    Raises:
        ImportProblem: The path is malformed, the module does not import (its own error is
            quoted), or the attribute does not exist.
    """
    if not PATH_RE.fullmatch(path):
        raise ImportProblem(f"{path!r} is not a 'package.module:attribute' path")
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # user code: any error it raises on import is a config problem
        raise ImportProblem(f"cannot import module {module_name!r}: "
                            f"{type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportProblem(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def import_callable(path: str) -> Callable[..., Any]:
    """Import ``path`` and check it is callable.

    Raises:
        ImportProblem: As :func:`import_object`, or the object is not callable.
    """
    obj = import_object(path)
    if not callable(obj):
        raise ImportProblem(f"{path!r} is a {type(obj).__name__}, not a function")
    return typing.cast(Callable[..., Any], obj)


def default_describer() -> Describe:
    """``gateway.agents.schema.describe_tool`` when that module exists, else the fallback."""
    try:
        module = importlib.import_module(_SCHEMA_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != _SCHEMA_MODULE:
            raise  # the module exists but one of its own imports is missing: a real bug
        return describe_python_tool
    describe = getattr(module, "describe_tool", None)
    if not callable(describe):
        return describe_python_tool
    return typing.cast(Describe, describe)


def docstring_summary(obj: object) -> str:
    """The docstring of ``obj`` up to its first section (``Args:``, ``Returns:``...)."""
    doc = inspect.getdoc(obj) or ""
    lines: list[str] = []
    for line in doc.splitlines():
        if _SECTION_RE.match(line):
            break
        lines.append(line)
    return " ".join(" ".join(lines).split())


def describe_python_tool(path: str) -> tuple[str, Mapping[str, Any]]:
    """Describe the function ``path`` names as a tool: its docstring and a JSON schema.

    Raises:
        ImportProblem: The function cannot be imported.
        ValueError: A parameter has no type hint, or one this fallback cannot express.
    """
    fn = import_callable(path)
    try:
        hints = typing.get_type_hints(fn)
        signature = inspect.signature(fn)
    except (NameError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot read the signature of {path!r}: {exc}") from None
    arg_docs = _arg_docs(inspect.getdoc(fn) or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ValueError(f"parameter {name!r}: *args and **kwargs cannot be described")
        if name not in hints:
            raise ValueError(f"parameter {name!r} has no type hint")
        schema, optional = _schema(hints[name], name)
        if name in arg_docs:
            schema["description"] = arg_docs[name]
        properties[name] = schema
        if param.default is param.empty and not optional:
            required.append(name)
    parameters = {"type": "object", "properties": properties, "required": required,
                  "additionalProperties": False}
    return docstring_summary(fn), parameters


def _schema(hint: Any, name: str) -> tuple[dict[str, Any], bool]:
    """JSON schema of ``hint``, and whether ``None`` is allowed."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(members) == 1 and len(typing.get_args(hint)) == 2:
            return _schema(members[0], name)[0], True
        raise ValueError(f"parameter {name!r}: unions other than 'X | None' are not supported")
    if origin is Literal:
        values = list(typing.get_args(hint))
        kinds = {_SCALARS.get(type(v)) for v in values}
        if None in kinds or len(kinds) != 1:
            raise ValueError(f"parameter {name!r}: Literal values must share one simple type")
        return {"type": kinds.pop(), "enum": values}, False
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        out: dict[str, Any] = {"type": "array"}
        if args:
            out["items"] = _schema(args[0], name)[0]
        return out, False
    if origin is dict or hint is dict:
        return {"type": "object"}, False
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}, False
    raise ValueError(f"parameter {name!r}: type {hint!r} is not supported; give 'parameters'")


def _arg_docs(doc: str) -> dict[str, str]:
    """``{name: description}`` from the ``Args:`` section of a Google-style docstring."""
    out: dict[str, str] = {}
    in_args = False
    current: str | None = None
    for line in doc.splitlines():
        if _SECTION_RE.match(line):
            in_args = line.split(":")[0] in ("Args", "Arguments", "Parameters")
            current = None
            continue
        if not in_args:
            continue
        match = _ARG_RE.match(line)
        indent = len(line) - len(line.lstrip())
        if match and indent <= 4:
            current = match.group(1).lstrip("*")
            out[current] = match.group(2).strip()
        elif current is not None and line.strip():
            out[current] = f"{out[current]} {line.strip()}".strip()
    return out

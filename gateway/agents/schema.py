"""Tool descriptions and argument schemas derived from Python functions, and import by path.

A Python tool named in the dialplan without explicit ``parameters`` gets its description from
its docstring's summary and the JSON schema of its arguments from its type hints, with
per-argument descriptions from the Google-style ``Args:`` section (``Attributes:`` for
dataclasses and TypedDicts). Supported annotations: ``str``, ``int``, ``float``, ``bool``,
``None``, ``Any``, ``Literal[...]``, ``Enum`` subclasses, ``X | None`` / ``Optional[X]`` and other
unions, ``list[T]`` / ``Sequence[T]``, ``dict[str, T]`` / ``Mapping[str, T]``, ``TypedDict`` and
dataclasses (nested objects, inlined), and ``Annotated[T, "description"]``. Anything else is a
``ValueError`` naming the function and the parameter. :func:`coerce_arguments` turns validated
JSON arguments back into the Enum members and dataclass instances the function expects; it runs
in the tool worker process. Pure: importing user code is the only side effect, and only
:func:`import_object` / :func:`describe_tool` do it.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args, get_origin, get_type_hints, is_typeddict

from gateway.agents.spec import JsonSchema

__all__ = [
    "Docstring",
    "coerce_arguments",
    "describe_tool",
    "function_schema",
    "import_object",
    "parse_docstring",
]

_PATH_RE: Final = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")

#: Google-style section headers; only ``Args`` and ``Attributes`` (and aliases) are read.
_PARAM_SECTIONS: Final = frozenset(
    {"args", "arguments", "parameters", "params", "attributes", "keyword args",
     "keyword arguments"}
)
_OTHER_SECTIONS: Final = frozenset(
    {"returns", "return", "yields", "yield", "raises", "examples", "example", "notes", "note",
     "warnings", "warning", "see also", "todo", "references", "methods"}
)
_SECTION_RE: Final = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
_ENTRY_RE: Final = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")

_SUPPORTED: Final = (
    "str, int, float, bool, None, Any, Literal[...], Enum, X | None, unions, list[T], "
    "Sequence[T], dict[str, T], Mapping[str, T], TypedDict, dataclass, Annotated[T, ...]"
)


@dataclass(frozen=True)
class Docstring:
    """The parts of a Google-style docstring a tool schema uses.

    Attributes:
        summary: Text before the first section, paragraphs separated by a blank line and the
            lines of each paragraph joined by spaces.
        params: Descriptions from the ``Args:`` (or ``Attributes:``) section, by name.
    """

    summary: str = ""
    params: Mapping[str, str] = field(default_factory=dict)


def parse_docstring(doc: str | None) -> Docstring:
    """Split a Google-style docstring into its summary and per-parameter descriptions.

    Args:
        doc: The raw ``__doc__`` (``None`` gives an empty result).

    Returns:
        The summary and the ``Args:``/``Attributes:`` entries; entries may span several
        indented lines and may carry a ``(type)`` after the name, which is dropped.
    """
    if not doc:
        return Docstring()
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    entry_indent: int | None = None
    current: str | None = None
    for raw in lines:
        stripped = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        header = _SECTION_RE.match(raw)
        if indent == 0 and header and header.group(1).lower() in _PARAM_SECTIONS | _OTHER_SECTIONS:
            section = header.group(1).lower()
            entry_indent = None
            current = None
            continue
        if section is None:
            summary.append(stripped)
            continue
        if section not in _PARAM_SECTIONS or not stripped:
            continue
        if entry_indent is None:
            entry_indent = indent
        entry = _ENTRY_RE.match(stripped) if indent <= entry_indent else None
        if entry is not None:
            current = entry.group(1)
            params[current] = entry.group(2).strip()
        elif current is not None:
            params[current] = f"{params[current]} {stripped}".strip()
    return Docstring(summary=_paragraphs(summary), params=params)


def _paragraphs(lines: Sequence[str]) -> str:
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        if line:
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


class _Unsupported(Exception):
    """An annotation with no JSON schema; ``where`` is the path inside the parameter."""

    def __init__(self, annotation: Any, where: str, why: str = "") -> None:
        self.annotation = annotation
        self.where = where
        self.why = why
        super().__init__(why)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and get_origin(annotation) is None:
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _is_union(annotation: Any) -> bool:
    origin = get_origin(annotation)
    return origin is typing.Union or origin is types.UnionType


def _strip_annotated(annotation: Any) -> tuple[Any, str]:
    """The annotated type and the first string in ``Annotated`` metadata (or ``""``)."""
    description = ""
    while get_origin(annotation) is typing.Annotated:
        args = get_args(annotation)
        annotation = args[0]
        description = description or next((m for m in args[1:] if isinstance(m, str)), "")
    return annotation, description


def _literal_schema(values: Sequence[Any], annotation: Any, where: str) -> dict[str, Any]:
    json_values: list[Any] = []
    for value in values:
        if isinstance(value, enum.Enum):
            value = value.value
        if value is not None and not isinstance(value, str | int | float | bool):
            raise _Unsupported(annotation, where, f"value {value!r} is not a JSON scalar")
        json_values.append(value)
    kinds = {_json_type(v) for v in json_values}
    schema: dict[str, Any] = {}
    if len(kinds) == 1:
        schema["type"] = kinds.pop()
    schema["enum"] = json_values
    return schema


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _json_default(value: Any) -> tuple[bool, Any]:
    """Whether ``value`` can be a schema ``default``, and its JSON form."""
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False, None
    return True, value


def _object_schema(
    cls: type, where: str, seen: tuple[type, ...]
) -> dict[str, Any]:
    """Schema of a TypedDict or dataclass, fields inlined."""
    if cls in seen:
        raise _Unsupported(cls, where, f"{cls.__qualname__} refers to itself")
    seen = (*seen, cls)
    try:
        hints = get_type_hints(cls, include_extras=True)
    except Exception as exc:  # NameError and friends from unresolvable forward references
        raise _Unsupported(cls, where, f"cannot resolve the type hints of {cls.__qualname__}: "
                           f"{exc}") from exc
    doc = cls.__doc__
    if dataclasses.is_dataclass(cls) and doc and doc.startswith(f"{cls.__name__}("):
        doc = None  # the signature dataclasses writes when there is no docstring
    parsed = parse_docstring(doc)
    properties: dict[str, Any] = {}
    required: list[str] = []
    if is_typeddict(cls):
        required_keys: frozenset[str] = getattr(cls, "__required_keys__", frozenset())
        for name, annotation in hints.items():
            # Read Required/NotRequired from the resolved hints too: with postponed
            # annotations Python 3.11 cannot see them when it computes __required_keys__.
            origin = get_origin(annotation)
            is_required = origin is typing.Required or (
                origin is not typing.NotRequired and name in required_keys
            )
            if origin is typing.Required or origin is typing.NotRequired:
                annotation = get_args(annotation)[0]
            prop = _schema(annotation, f"{where}.{name}", seen)
            _describe(prop, parsed.params.get(name, ""))
            properties[name] = prop
            if is_required:
                required.append(name)
    else:
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            prop = _schema(hints[f.name], f"{where}.{f.name}", seen)
            _describe(prop, parsed.params.get(f.name, ""))
            if f.default is not dataclasses.MISSING:
                ok, value = _json_default(f.default)
                if ok:
                    prop.setdefault("default", value)
            elif f.default_factory is dataclasses.MISSING:
                required.append(f.name)
            properties[f.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    if parsed.summary:
        schema["description"] = parsed.summary
    return schema


def _describe(schema: dict[str, Any], description: str) -> None:
    if description and "description" not in schema:
        schema["description"] = description


def _schema(annotation: Any, where: str, seen: tuple[type, ...] = ()) -> dict[str, Any]:
    """JSON schema of one annotation; raises :class:`_Unsupported`."""
    annotation, description = _strip_annotated(annotation)
    schema = _bare_schema(annotation, where, seen)
    _describe(schema, description)
    return schema


def _bare_schema(annotation: Any, where: str, seen: tuple[type, ...]) -> dict[str, Any]:
    if annotation is Any:
        return {}
    if annotation is None or annotation is type(None):
        return {"type": "null"}
    if annotation is str:
        return {"type": "string"}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _literal_schema([m.value for m in annotation], annotation, where)
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return _literal_schema(args, annotation, where)
    if _is_union(annotation):
        options = [_schema(arg, where, seen) for arg in args if arg is not type(None)]
        if type(None) in args:
            options.append({"type": "null"})
        return {"anyOf": options}
    if annotation is list or origin in (list, Sequence):
        if not args:
            return {"type": "array"}
        return {"type": "array", "items": _schema(args[0], f"{where}[]", seen)}
    if annotation is dict or origin in (dict, Mapping):
        if not args:
            return {"type": "object"}
        key, value = args
        if key is not str:
            raise _Unsupported(annotation, where, "object keys must be str")
        return {"type": "object", "additionalProperties": _schema(value, f"{where}{{}}", seen)}
    if isinstance(annotation, type) and (
        is_typeddict(annotation) or dataclasses.is_dataclass(annotation)
    ):
        return _object_schema(annotation, where, seen)
    raise _Unsupported(annotation, where)


def _callable_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}:{name}"


def function_schema(fn: Callable[..., Any]) -> tuple[str, JsonSchema]:
    """Describe a tool function for the model: its description and its arguments' schema.

    Args:
        fn: A sync or async function taking named arguments (no ``*args``/``**kwargs``, no
            positional-only parameters), every parameter annotated.

    Returns:
        The docstring summary and a JSON schema (``type: object``, ``properties``, ``required``
        for parameters without a default, ``additionalProperties: false``).

    Raises:
        ValueError: A parameter cannot be expressed in JSON schema; the message names the
            function, the parameter (and the field inside it) and the annotation.
    """
    name = _callable_name(fn)
    if not callable(fn):
        raise ValueError(f"{name}: a tool must be a function, not {type(fn).__name__}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot read the signature: {exc}") from exc
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:  # NameError etc. from unresolvable forward references
        raise ValueError(f"{name}: cannot resolve the type hints: {exc}") from exc
    parsed = parse_docstring(inspect.getdoc(fn))
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in signature.parameters.values():
        pname = param.name
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise ValueError(
                f"{name}: parameter '{star}{pname}' is not supported: a tool takes named "
                "JSON arguments"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise ValueError(
                f"{name}: parameter '{pname}' is positional-only: a tool takes named arguments"
            )
        if pname not in hints:
            raise ValueError(f"{name}: parameter '{pname}' has no type annotation")
        try:
            prop = _schema(hints[pname], pname)
        except _Unsupported as exc:
            inside = f" (at {exc.where})" if exc.where != pname else ""
            why = f": {exc.why}" if exc.why else f"; supported: {_SUPPORTED}"
            raise ValueError(
                f"{name}: parameter '{pname}'{inside}: unsupported type annotation "
                f"{_type_name(exc.annotation)}{why}"
            ) from None
        _describe(prop, parsed.params.get(pname, ""))
        if param.default is param.empty:
            required.append(pname)
        else:
            ok, value = _json_default(param.default)
            if ok:
                prop.setdefault("default", value)
        properties[pname] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return parsed.summary, schema


def import_object(path: str) -> Any:
    """Import ``package.module:attribute`` (the attribute may be dotted) and return it.

    Args:
        path: The import path.

    Returns:
        The object.

    Raises:
        ValueError: The path is malformed, the module cannot be imported (or raised while
            importing), or the attribute does not exist; the cause is chained.
    """
    if not _PATH_RE.match(path):
        raise ValueError(f"{path!r} is not an import path: expected 'package.module:attribute'")
    module_name, _, attr_path = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module '{module_name}': {exc}") from exc
    except Exception as exc:
        raise ValueError(
            f"importing module '{module_name}' raised {type(exc).__name__}: {exc}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ValueError(f"module '{module_name}' has no attribute '{attr_path}'") from exc
    return obj


def describe_tool(path: str) -> tuple[str, JsonSchema]:
    """Import the tool function at ``path`` and derive its description and argument schema.

    Used when the dialplan is loaded, for Python tools without explicit ``parameters``.

    Args:
        path: ``package.module:function``.

    Returns:
        As :func:`function_schema`.

    Raises:
        ValueError: The import fails, the object is not callable, or a parameter is unsupported.
    """
    fn = import_object(path)
    if not callable(fn):
        raise ValueError(f"{path}: is a {type(fn).__name__}, not a function")
    return function_schema(fn)


def _needs_coercion(annotation: Any, seen: tuple[type, ...] = ()) -> bool:
    """Whether JSON values for ``annotation`` must be converted (Enum, dataclass inside)."""
    annotation, _ = _strip_annotated(annotation)
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum) or dataclasses.is_dataclass(annotation):
            return True
        if is_typeddict(annotation) and annotation not in seen:
            try:
                hints = get_type_hints(annotation)
            except Exception:
                return False
            return any(_needs_coercion(h, (*seen, annotation)) for h in hints.values())
    return any(_needs_coercion(arg, seen) for arg in get_args(annotation))


def _coerce(value: Any, annotation: Any) -> Any:
    annotation, _ = _strip_annotated(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return value if isinstance(value, annotation) else annotation(value)
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            return value
        hints = get_type_hints(annotation)
        return annotation(**{k: _coerce(v, hints.get(k, Any)) for k, v in value.items()})
    if isinstance(annotation, type) and is_typeddict(annotation):
        if not isinstance(value, dict):
            return value
        hints = get_type_hints(annotation)
        return {k: _coerce(v, hints.get(k, Any)) for k, v in value.items()}
    origin = get_origin(annotation)
    args = get_args(annotation)
    if _is_union(annotation):
        if value is None:
            return None
        for arg in args:
            if arg is type(None) or not _needs_coercion(arg):
                continue
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                continue
        return value
    if origin in (list, Sequence) and args and isinstance(value, list):
        return [_coerce(v, args[0]) for v in value]
    if origin in (dict, Mapping) and len(args) == 2 and isinstance(value, dict):
        return {k: _coerce(v, args[1]) for k, v in value.items()}
    return value


def coerce_arguments(fn: Callable[..., Any], arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Convert JSON arguments to what ``fn``'s annotations ask for (Enum members, dataclasses).

    Arguments whose annotation involves no Enum or dataclass are passed through unchanged.

    Args:
        fn: The tool function.
        arguments: Arguments already validated against :func:`function_schema`'s schema.

    Returns:
        Keyword arguments for ``fn``.

    Raises:
        ValueError: A value cannot be converted (e.g. not a member of the Enum).
        TypeError: A dataclass rejects the given fields.
    """
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception:
        return dict(arguments)
    result: dict[str, Any] = {}
    for key, value in arguments.items():
        annotation = hints.get(key)
        if annotation is not None and _needs_coercion(annotation):
            result[key] = _coerce(value, annotation)
        else:
            result[key] = value
    return result

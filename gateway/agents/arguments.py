"""Validation of the JSON arguments the model sends with a function call.

The model's ``arguments`` string is parsed and checked against the tool's JSON schema (draft
2020-12) before any tool code runs. A failure becomes a :class:`ToolArgumentError` whose
message the model can act on: which field, what was expected, what came instead. Messages name
fields and describe values by their JSON type; a string value is shown only when it is short,
and then never when it looks like a credential, so a key the caller read out never ends up in
logs or back in the conversation. Pure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from gateway.agents.spec import JsonSchema

__all__ = [
    "ArgumentValidator",
    "ToolArgumentError",
    "check_schema",
    "parse_arguments",
]

#: Most problems listed in one message (the most relevant first).
MAX_REPORTED_ERRORS: Final = 3
#: Strings up to this length may be quoted in a message (unless they look like a secret).
_SHOWN_STRING_CHARS: Final = 12
_SECRET_RE: Final = re.compile(
    r"^(sk-|pk-|rk-|ghp_|gho_|github_pat_|xox[abprs]-|AKIA|ASIA|AIza|eyJ|Bearer\s|Basic\s)"
    r"|(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9+/_=-]{10,}$"
)


class ToolArgumentError(ValueError):
    """The model's arguments are not valid JSON or do not match the tool's schema.

    Attributes:
        problems: One line per problem, most relevant first.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid arguments: " + "; ".join(self.problems))


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def describe_value(value: Any) -> str:
    """A safe description of a JSON value for an error message.

    Numbers, booleans and null are shown; a string only when short and not secret-looking;
    arrays and objects only by kind and size.
    """
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, str):
        if len(value) <= _SHOWN_STRING_CHARS and not _SECRET_RE.search(value):
            return json.dumps(value)
        return f"a string of {len(value)} characters"
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    if isinstance(value, dict):
        return f"an object with {len(value)} fields"
    return _json_kind(value)


def _field(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _names(values: Iterable[Any]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _expected_type(schema_type: Any) -> str:
    if isinstance(schema_type, list):
        return " or ".join(str(t) for t in schema_type)
    return str(schema_type)


def _problem(error: ValidationError) -> str:
    """One line for one schema violation, without echoing long or secret-looking values."""
    where = _field(error.absolute_path)
    at = f"field '{where}'" if where else "arguments"
    value = error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    kind = error.validator
    expected: Any = error.validator_value
    if kind == "required":
        missing = [name for name in expected if isinstance(value, dict) and name not in value]
        return f"{at}: missing required field {_names(missing)}"
    if kind == "additionalProperties":
        known = set(schema.get("properties", {}))
        extra = sorted(k for k in value if k not in known) if isinstance(value, dict) else []
        return f"{at}: unexpected field {_names(extra)}"
    if kind == "type":
        return f"{at}: expected {_expected_type(expected)}, got {_json_kind(value)}"
    if kind in ("enum", "const"):
        allowed = expected if kind == "enum" else [expected]
        shown = ", ".join(json.dumps(v) for v in allowed[:10])
        more = ", ..." if len(allowed) > 10 else ""
        return f"{at}: must be one of {shown}{more}, got {describe_value(value)}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        return f"{at}: {describe_value(value)} fails {kind} {expected}"
    if kind in ("minLength", "maxLength"):
        length = len(value) if isinstance(value, str) else "?"
        return f"{at}: length {length} fails {kind} {expected}"
    if kind in ("minItems", "maxItems", "minProperties", "maxProperties"):
        size = len(value) if isinstance(value, list | dict) else "?"
        return f"{at}: size {size} fails {kind} {expected}"
    if kind == "pattern":
        return f"{at}: {describe_value(value)} does not match the pattern {expected}"
    if kind == "uniqueItems":
        return f"{at}: items must be unique"
    if kind in ("anyOf", "oneOf"):
        types = [e.validator_value for e in error.context or () if e.validator == "type"]
        if types and len(types) == len(error.context or ()):
            wanted = " or ".join(_expected_type(t) for t in types)
            return f"{at}: expected {wanted}, got {_json_kind(value)}"
        return f"{at}: {describe_value(value)} matches none of the allowed forms"
    return f"{at}: {describe_value(value)} fails '{kind}'"


def check_schema(schema: JsonSchema) -> None:
    """Check that ``schema`` is a valid draft 2020-12 schema describing an object.

    Raises:
        ValueError: The schema is invalid (the message names the offending keyword).
    """
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = _field(exc.absolute_path) or "(root)"
        raise ValueError(f"invalid JSON schema at {where}: {exc.message}") from None
    if schema.get("type", "object") != "object":
        raise ValueError("a tool's parameters schema must have type 'object'")


class ArgumentValidator:
    """A compiled tool schema; :meth:`parse` checks one call's arguments against it.

    Args:
        schema: The tool's ``parameters`` (assumed valid; see :func:`check_schema`).
    """

    def __init__(self, schema: JsonSchema) -> None:
        self._validator = Draft202012Validator(schema)

    def parse(self, arguments_json: str) -> dict[str, Any]:
        """Parse and validate a function call's ``arguments``.

        An empty string counts as ``{}`` (the model sends that for tools without arguments).

        Args:
            arguments_json: The JSON text from the model.

        Returns:
            The arguments object.

        Raises:
            ToolArgumentError: Not JSON, not an object, or schema violations (up to
                :data:`MAX_REPORTED_ERRORS`, most relevant first).
        """
        if not arguments_json.strip():
            value: Any = {}
        else:
            try:
                value = json.loads(arguments_json)
            except json.JSONDecodeError as exc:
                raise ToolArgumentError(
                    [f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]
                ) from None
        if not isinstance(value, dict):
            raise ToolArgumentError([f"arguments must be a JSON object, got {_json_kind(value)}"])
        errors = sorted(self._validator.iter_errors(value), key=lambda e: list(map(str, e.path)))
        if errors:
            best = best_match(errors)
            problems: list[str] = []
            for error in [best, *errors] if best is not None else errors:
                line = _problem(error)
                if line not in problems:
                    problems.append(line)
                if len(problems) == MAX_REPORTED_ERRORS:
                    break
            raise ToolArgumentError(problems)
        return value


def parse_arguments(arguments_json: str, schema: JsonSchema) -> dict[str, Any]:
    """Parse and validate a function call's ``arguments`` against ``schema``.

    Args:
        arguments_json: The JSON text from the model.
        schema: The tool's ``parameters``.

    Returns:
        The arguments object.

    Raises:
        ToolArgumentError: See :meth:`ArgumentValidator.parse`.
    """
    return ArgumentValidator(schema).parse(arguments_json)

"""Validation of the model's function-call arguments and the messages it gets back."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.agents.arguments import (
    ArgumentValidator,
    ToolArgumentError,
    check_schema,
    describe_value,
    parse_arguments,
)

pytestmark = pytest.mark.unit

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "nights": {"type": "integer", "minimum": 1},
        "mode": {"type": "string", "enum": ["fast", "slow"]},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["sku"],
                "additionalProperties": False,
            },
        },
        "code": {"type": "string", "pattern": "^[0-9]{4}$"},
    },
    "required": ["city"],
    "additionalProperties": False,
}


def _problems(arguments_json: str, schema: dict[str, Any] = SCHEMA) -> tuple[str, ...]:
    with pytest.raises(ToolArgumentError) as info:
        parse_arguments(arguments_json, schema)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("invalid arguments: ")
    return info.value.problems


def test_valid_arguments_are_returned() -> None:
    args = '{"city": "Oslo", "nights": 2, "items": [{"sku": "A", "qty": 1}], "note": null}'
    assert parse_arguments(args, SCHEMA) == {
        "city": "Oslo", "nights": 2, "items": [{"sku": "A", "qty": 1}], "note": None
    }


def test_empty_string_means_no_arguments() -> None:
    empty = {"type": "object", "properties": {}, "additionalProperties": False}
    assert parse_arguments("", empty) == {}
    assert parse_arguments("  ", empty) == {}
    assert _problems("", SCHEMA) == ("arguments: missing required field 'city'",)


def test_bad_json_names_the_position() -> None:
    assert _problems('{"city": "Oslo",}') == (
        "not valid JSON: Expecting property name enclosed in double quotes at line 1 column 17",
    )


@pytest.mark.parametrize(("text", "kind"), [("[1]", "an array"), ('"x"', "a string"),
                                             ("3", "a number"), ("null", "null")])
def test_arguments_must_be_an_object(text: str, kind: str) -> None:
    assert _problems(text) == (f"arguments must be a JSON object, got {kind}",)


@pytest.mark.parametrize(
    ("arguments_json", "problem"),
    [
        ('{"nights": 1}', "arguments: missing required field 'city'"),
        ('{"city": "Oslo", "pool": true}', "arguments: unexpected field 'pool'"),
        ('{"city": 3}', "field 'city': expected string, got a number"),
        ('{"city": "Oslo", "nights": 0}', "field 'nights': 0 fails minimum 1"),
        ('{"city": "Oslo", "nights": "two"}', "field 'nights': expected integer, got a string"),
        ('{"city": "Oslo", "mode": "warp"}',
         "field 'mode': must be one of \"fast\", \"slow\", got \"warp\""),
        ('{"city": "Oslo", "note": 5}', "field 'note': expected string or null, got a number"),
        ('{"city": "Oslo", "items": [{"sku": "A"}, {"qty": 2}]}',
         "field 'items[1]': missing required field 'sku'"),
        ('{"city": "Oslo", "items": [{"sku": "A", "qty": "x"}]}',
         "field 'items[0].qty': expected integer, got a string"),
        ('{"city": "Oslo", "code": "12a"}',
         "field 'code': \"12a\" does not match the pattern ^[0-9]{4}$"),
        ('{"city": "' + "x" * 30 + '"}', "field 'city': length 30 fails maxLength 20"),
    ],
)
def test_schema_violations_name_the_field(arguments_json: str, problem: str) -> None:
    assert _problems(arguments_json) == (problem,)


def test_several_problems_are_reported_at_most_three() -> None:
    problems = _problems('{"city": 1, "nights": "x", "mode": 3, "code": 4, "extra": 1}')
    assert len(problems) == 3
    assert len(set(problems)) == 3


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
        "Bearer abc",
        "ghp_1234567890abcdef",
        "AKIAIOSFODNN7EXAMPLE",
        "hunter2hunter2",
        "a long sentence that the caller said",
    ],
)
def test_values_that_may_be_secrets_are_not_echoed(secret: str) -> None:
    schema = {
        "type": "object",
        "properties": {"mode": {"enum": ["a"]}, "pin": {"pattern": "^[0-9]+$"}},
        "additionalProperties": False,
    }
    for key in ("mode", "pin"):
        (problem,) = _problems(f'{{"{key}": "{secret}"}}', schema)
        assert secret not in problem
        assert f"a string of {len(secret)} characters" in problem


def test_describe_value() -> None:
    assert describe_value("red") == '"red"'
    assert describe_value("abc123def456") == "a string of 12 characters"  # token-like
    assert describe_value(3.5) == "3.5"
    assert describe_value(None) == "null"
    assert describe_value([1, 2]) == "an array of 2 items"
    assert describe_value({"a": 1}) == "an object with 1 fields"


def test_validator_is_reusable() -> None:
    validator = ArgumentValidator(SCHEMA)
    assert validator.parse('{"city": "A"}') == {"city": "A"}
    with pytest.raises(ToolArgumentError):
        validator.parse('{"city": 1}')
    assert validator.parse('{"city": "B"}') == {"city": "B"}


def test_check_schema() -> None:
    check_schema(SCHEMA)
    with pytest.raises(ValueError, match=r"invalid JSON schema at properties\.a"):
        check_schema({"type": "object", "properties": {"a": {"type": "banana"}}})
    with pytest.raises(ValueError, match="must have type 'object'"):
        check_schema({"type": "array"})

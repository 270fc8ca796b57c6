"""Tool schemas derived from type hints and Google docstrings, import by path, coercion."""

from __future__ import annotations

import enum
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict

import pytest
from jsonschema import Draft202012Validator

from gateway.agents.arguments import parse_arguments
from gateway.agents.schema import (
    coerce_arguments,
    describe_tool,
    function_schema,
    import_object,
    parse_docstring,
)
from tests.fixtures.tools.sample_tools import Colour, Point, paint

pytestmark = pytest.mark.unit


class Size(enum.Enum):
    SMALL = 1
    LARGE = 2


class Address(TypedDict):
    """A postal address.

    Attributes:
        street: Street and number.
        zip: Postal code.
    """

    street: str
    zip: NotRequired[str]


@dataclass(frozen=True)
class Item:
    """One line of an order.

    Attributes:
        sku: Stock keeping unit.
        qty: How many.
    """

    sku: str
    qty: int = 1
    tags: list[str] = field(default_factory=list)


@dataclass
class Order:
    items: list[Item]
    ship_to: Address | None = None


def _checked(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    Draft202012Validator.check_schema(schema)
    return schema


def test_primitives_required_defaults_and_docstring() -> None:
    def book(city: str, nights: int, budget: float = 100.0, pets: bool = False) -> str:
        """Book a hotel room.

        Books the cheapest room that fits.

        Args:
            city: Where to stay.
            nights (int): How many nights; counted
                from tonight.
            budget: Most per night.

        Returns:
            The booking reference.

        Raises:
            ValueError: Never.
        """
        return ""

    description, schema = function_schema(book)
    assert description == "Book a hotel room.\n\nBooks the cheapest room that fits."
    assert _checked(schema) == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "Where to stay."},
            "nights": {
                "type": "integer",
                "description": "How many nights; counted from tonight.",
            },
            "budget": {"type": "number", "description": "Most per night.", "default": 100.0},
            "pets": {"type": "boolean", "default": False},
        },
        "required": ["city", "nights"],
        "additionalProperties": False,
    }


def test_literal_enum_optional_and_unions() -> None:
    def pick(
        mode: Literal["fast", "slow"],
        size: Size,
        colour: Colour = Colour.RED,
        note: str | None = None,
        level: Optional[int] = None,  # noqa: UP045 - the typing spelling must work too
        key: int | str = 0,
        flag: Literal[1, "x", None] = None,
    ) -> None:
        """Pick things."""

    _, schema = function_schema(pick)
    props = _checked(schema)["properties"]
    assert props["mode"] == {"type": "string", "enum": ["fast", "slow"]}
    assert props["size"] == {"type": "integer", "enum": [1, 2]}
    assert props["colour"] == {"type": "string", "enum": ["red", "green"], "default": "red"}
    assert props["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    assert props["level"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert props["key"] == {"anyOf": [{"type": "integer"}, {"type": "string"}], "default": 0}
    assert props["flag"] == {"enum": [1, "x", None], "default": None}
    assert schema["required"] == ["mode", "size"]


def test_containers_any_and_annotated() -> None:
    def store(
        names: list[str],
        scores: dict[str, float],
        rows: Sequence[list[int]],
        meta: Mapping[str, Any],
        anything: Any,
        plain_list: list,  # type: ignore[type-arg]
        plain_dict: dict,  # type: ignore[type-arg]
        city: Annotated[str, "The city, spelled out"],
    ) -> None:
        """Store."""

    _, schema = function_schema(store)
    props = _checked(schema)["properties"]
    assert props["names"] == {"type": "array", "items": {"type": "string"}}
    assert props["scores"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["rows"] == {
        "type": "array", "items": {"type": "array", "items": {"type": "integer"}}
    }
    assert props["meta"] == {"type": "object", "additionalProperties": {}}
    assert props["anything"] == {}
    assert props["plain_list"] == {"type": "array"}
    assert props["plain_dict"] == {"type": "object"}
    assert props["city"] == {"type": "string", "description": "The city, spelled out"}


def test_typeddict_and_dataclass_become_nested_objects() -> None:
    def place(order: Order, express: bool = False) -> None:
        """Place an order.

        Args:
            order: What to ship.
        """

    _, schema = function_schema(place)
    order = _checked(schema)["properties"]["order"]
    assert order["type"] == "object"
    assert order["additionalProperties"] is False
    assert order["required"] == ["items"]
    assert order["description"] == "What to ship."
    assert "description" not in order["properties"]["items"]  # dataclass without docstring
    item = order["properties"]["items"]["items"]
    assert item == {
        "type": "object",
        "properties": {
            "sku": {"type": "string", "description": "Stock keeping unit."},
            "qty": {"type": "integer", "description": "How many.", "default": 1},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["sku"],
        "additionalProperties": False,
        "description": "One line of an order.",
    }
    address = order["properties"]["ship_to"]["anyOf"][0]
    assert address["properties"] == {
        "street": {"type": "string", "description": "Street and number."},
        "zip": {"type": "string", "description": "Postal code."},
    }
    assert address["required"] == ["street"]
    assert address["additionalProperties"] is False
    # The schema accepts what the annotations describe and rejects the rest.
    good = '{"order": {"items": [{"sku": "A1"}], "ship_to": {"street": "Main 1"}}}'
    assert parse_arguments(good, schema)["order"]["items"] == [{"sku": "A1"}]
    with pytest.raises(ValueError, match=r"order\.items\[0\]"):
        parse_arguments('{"order": {"items": [{"sku": "A1", "colour": "red"}]}}', schema)


def test_async_function_and_no_docstring() -> None:
    async def ping() -> None:
        pass

    assert function_schema(ping) == (
        "", {"type": "object", "properties": {}, "additionalProperties": False}
    )



@pytest.mark.parametrize(
    ("define", "message"),
    [
        ("def f(*names: str) -> None: ...", r"parameter '\*names' is not supported"),
        ("def f(**extra: str) -> None: ...", r"parameter '\*\*extra' is not supported"),
        ("def f(a: int, /) -> None: ...", r"parameter 'a' is positional-only"),
        ("def f(a) -> None: ...", r"parameter 'a' has no type annotation"),
        ("def f(tags: set[str]) -> None: ...", r"parameter 'tags': unsupported type annotation se"),
        ("def f(x: complex) -> None: ...", r"parameter 'x': unsupported type annotation complex"),
        ("def f(m: dict[int, str]) -> None: ...", r"parameter 'm'.*object keys must be str"),
        ("def f(x: 'Missing') -> None: ...", r"cannot resolve the type hints"),
        ("def f(x: Literal[1.5j]) -> None: ...", r"parameter 'x'.*not a JSON scalar"),
    ],
)
def test_unsupported_signatures_name_the_parameter(define: str, message: str) -> None:
    namespace: dict[str, Any] = {"Literal": Literal}
    exec(define, namespace)
    with pytest.raises(ValueError, match=message):
        function_schema(namespace["f"])


@dataclass
class _Bad:
    ok: int
    when: complex


@dataclass
class _Node:
    children: list[_Node]


def test_nested_unsupported_field_is_located() -> None:
    def f(payload: list[_Bad]) -> None: ...

    with pytest.raises(ValueError) as info:
        function_schema(f)
    text = str(info.value)
    assert "parameter 'payload' (at payload[].when)" in text
    assert "unsupported type annotation complex" in text
    assert "<locals>.f:" in text  # names the function


def test_recursive_type_is_refused() -> None:
    def f(tree: _Node) -> None: ...

    with pytest.raises(ValueError, match="_Node refers to itself"):
        function_schema(f)


def test_parse_docstring_variants() -> None:
    doc = parse_docstring(
        """Summary line
        continues here.

        Second paragraph.

        Arguments:
            *args: Ignored stars.
            name (str, optional): The name.
              More about the name.

            other: Another.

        Example:
            >>> f()
        """
    )
    assert doc.summary == "Summary line continues here.\n\nSecond paragraph."
    assert dict(doc.params) == {
        "args": "Ignored stars.",
        "name": "The name. More about the name.",
        "other": "Another.",
    }
    assert parse_docstring(None).summary == ""


def test_describe_tool_imports_by_path() -> None:
    description, schema = describe_tool("tests.fixtures.tools.sample_tools:add")
    assert description == "Add two numbers."
    assert schema["properties"]["a"] == {"type": "integer", "description": "First addend."}
    assert schema["required"] == ["a", "b"]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.fixtures.tools.sample_tools.add", "is not an import path"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("tests.fixtures.tools.sample_tools:nope", "has no attribute 'nope'"),
        ("tests.fixtures.tools.sample_tools:NOT_CALLABLE", "is a int, not a function"),
    ],
)
def test_describe_tool_errors(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        describe_tool(path)


def test_import_object_dotted_attribute() -> None:
    assert import_object("tests.fixtures.tools.sample_tools:Colour.RED") is Colour.RED


def test_coerce_arguments_builds_enums_and_dataclasses() -> None:
    args = coerce_arguments(
        paint, {"colour": "green", "at": {"x": 1, "y": 2}, "points": [{"x": 3, "y": 4}]}
    )
    assert args == {"colour": Colour.GREEN, "at": Point(1, 2), "points": [Point(3, 4)]}
    assert coerce_arguments(paint, {"colour": "red", "at": {"x": 0, "y": 0}, "points": None})[
        "points"
    ] is None
    with pytest.raises(ValueError):
        coerce_arguments(paint, {"colour": "purple", "at": {"x": 0, "y": 0}})


def test_schema_and_arguments_are_pure() -> None:
    probe = (
        "import sys\n"
        "for name in ('asyncio', 'aiohttp', 'websockets', 'pjsua2'):\n"
        "    sys.modules[name] = None\n"
        "import gateway.agents.schema, gateway.agents.arguments\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", probe],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr

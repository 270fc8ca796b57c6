"""Ids, server-event construction and the conversation item store of the simulated session.

Every server event carries a unique ``event_id``; items, responses and function calls get ids
shaped like the real API's (``item_...``, ``resp_...``, ``call_...``). :class:`Conversation`
keeps the ordered items of the default conversation together with what the session core
needs to answer later client events: how many milliseconds of audio were sent for each
assistant item (the bound for ``conversation.item.truncate``) and the length of each user
audio item (for usage). Pure: no I/O, no clock; randomness only for ids.
"""

from __future__ import annotations

import copy
import random
import string
from dataclasses import dataclass, field
from typing import Any, Final

_ALPHABET: Final = string.ascii_letters + string.digits


class IdFactory:
    """Makes unique API-shaped ids: a prefix, ``_`` and 21 letters or digits.

    A per-factory counter is folded into every id, so ids never repeat within a factory even
    if the random part did. Pass ``seed`` for reproducible ids in tests.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._count = 0

    def new(self, prefix: str) -> str:
        """A fresh id such as ``event_Bx3...``.

        Args:
            prefix: ``event``, ``item``, ``resp``, ``call``, ``conv`` ...
        """
        self._count += 1
        n, counter = self._count, ""
        while n:
            n, digit = divmod(n, len(_ALPHABET))
            counter = _ALPHABET[digit] + counter
        rand = "".join(self._rng.choice(_ALPHABET) for _ in range(21 - len(counter)))
        return f"{prefix}_{rand}{counter}"


class EventFactory:
    """Builds server events with a fresh ``event_id`` each."""

    def __init__(self, ids: IdFactory) -> None:
        self.ids = ids

    def make(self, type_: str, **fields: Any) -> dict[str, Any]:
        """A server event dict: ``type``, ``event_id``, then ``fields`` in order."""
        return {"type": type_, "event_id": self.ids.new("event"), **fields}

    def error(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        client_event_id: str | None = None,
        type_: str = "invalid_request_error",
    ) -> dict[str, Any]:
        """An ``error`` event; ``client_event_id`` echoes the offending client event."""
        return self.make(
            "error",
            error={
                "type": type_,
                "code": code,
                "message": message,
                "param": param,
                "event_id": client_event_id,
            },
        )


def public_item(item: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``item`` as events show it: audio data removed, as the API does."""
    out = copy.deepcopy(item)
    for part in out.get("content") or []:
        if isinstance(part, dict):
            part.pop("audio", None)
    return out


@dataclass
class Conversation:
    """Ordered items of the session's default conversation.

    Attributes:
        id: Conversation id reported in responses (``conv_...``).
        items: Items in conversation order (stored with audio data, if any).
        assistant_audio_ms: Audio sent so far per assistant message item id.
        user_audio_ms: Length of each committed user audio item.
        audio_emitted: Whether any response has produced audio (voice is then fixed).
    """

    id: str
    items: list[dict[str, Any]] = field(default_factory=list)
    assistant_audio_ms: dict[str, float] = field(default_factory=dict)
    user_audio_ms: dict[str, float] = field(default_factory=dict)
    audio_emitted: bool = False

    def get(self, item_id: str) -> dict[str, Any] | None:
        """The item with ``item_id``, or ``None``."""
        for item in self.items:
            if item.get("id") == item_id:
                return item
        return None

    def last_id(self) -> str | None:
        """Id of the last item, or ``None`` when empty."""
        return self.items[-1]["id"] if self.items else None

    def add(self, item: dict[str, Any], after: str | None = None) -> str | None:
        """Insert ``item``; return the id of the item now before it (``None`` at the start).

        Args:
            item: The item (with an ``id``).
            after: Insert after this item id; ``"root"`` inserts at the beginning;
                ``None`` appends. The caller checks that the id exists.
        """
        if after is None:
            previous = self.last_id()
            self.items.append(item)
            return previous
        if after == "root":
            self.items.insert(0, item)
            return None
        index = next(i for i, it in enumerate(self.items) if it.get("id") == after)
        self.items.insert(index + 1, item)
        return after

    def delete(self, item_id: str) -> bool:
        """Remove an item; ``False`` when there is none with that id."""
        for i, item in enumerate(self.items):
            if item.get("id") == item_id:
                del self.items[i]
                self.assistant_audio_ms.pop(item_id, None)
                self.user_audio_ms.pop(item_id, None)
                return True
        return False

    def input_tokens(self, instructions: str, tools: list[Any]) -> tuple[int, int]:
        """Plausible ``(text_tokens, audio_tokens)`` of the whole conversation as input.

        Text is counted at 4 characters a token; user audio at one token per 100 ms and
        earlier assistant audio at one token per 50 ms (the API's published rates).
        """
        chars = len(instructions) + sum(len(str(t)) for t in tools)
        for item in self.items:
            for part in item.get("content") or []:
                if isinstance(part, dict):
                    chars += len(part.get("text") or "") + len(part.get("transcript") or "")
            chars += len(str(item.get("arguments") or "")) + len(str(item.get("output") or ""))
        audio = sum(ms / 100 for ms in self.user_audio_ms.values())
        audio += sum(ms / 50 for ms in self.assistant_audio_ms.values())
        return tokens_for_chars(chars), int(audio + 0.999)


def tokens_for_chars(chars: int) -> int:
    """Token estimate for ``chars`` characters of text (4 characters a token, rounded up)."""
    return (chars + 3) // 4


# --- client item validation ---------------------------------------------------------------


class ClientEventError(Exception):
    """A client event the API refuses; becomes an ``error`` event."""

    def __init__(
        self,
        code: str | None,
        message: str,
        param: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.type = type_


def normalize_item(
    raw: dict[str, Any], conversation: Conversation, ids: IdFactory
) -> dict[str, Any]:
    """Validate the ``item`` of ``conversation.item.create`` and give it server fields.

    Args:
        raw: The client's item.
        conversation: Where it will go (ids must be new).
        ids: Source of the item id (and call id) when the client gave none.

    Returns:
        The stored item: ``id``, ``object``, ``status: completed`` and the typed fields.

    Raises:
        ClientEventError: The API would refuse the item.
    """
    kind = raw.get("type")
    item_id = raw.get("id")
    if item_id is not None:
        if not isinstance(item_id, str) or not item_id:
            raise invalid_type("item.id", "a non-empty string", item_id)
        if conversation.get(item_id) is not None:
            raise ClientEventError(
                "invalid_value", f"Item with id '{item_id}' already exists.", "item.id"
            )
    item: dict[str, Any] = {
        "id": item_id or ids.new("item"),
        "object": "realtime.item",
        "type": kind,
        "status": "completed",
    }
    if kind == "message":
        role = raw.get("role")
        allowed = {
            "user": ("input_text", "input_audio", "input_image"),
            "system": ("input_text",),
            "assistant": ("output_text", "output_audio"),
        }
        if role not in allowed:
            raise ClientEventError(
                "invalid_value",
                f"Invalid value for 'item.role': {role!r}. Supported "
                "values are: 'user', 'system' and 'assistant'.",
                "item.role",
            )
        content = raw.get("content")
        if not isinstance(content, list):
            raise invalid_type("item.content", "an array", content)
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in allowed[role]:
                supported = ", ".join(f"'{t}'" for t in allowed[role])
                raise ClientEventError(
                    "invalid_value",
                    f"Invalid 'item.content[{i}].type' for a {role} "
                    f"message. Supported values are: {supported}.",
                    f"item.content[{i}].type",
                )
            parts.append(copy.deepcopy(part))
        item["role"] = role
        item["content"] = parts
    elif kind == "function_call_output":
        item["call_id"] = required(raw, "call_id", str, "item.")
        item["output"] = required(raw, "output", str, "item.")
    elif kind == "function_call":
        item["name"] = required(raw, "name", str, "item.")
        item["call_id"] = raw.get("call_id") or ids.new("call")
        item["arguments"] = required(raw, "arguments", str, "item.")
    else:
        raise ClientEventError(
            "invalid_value",
            f"Invalid value for 'item.type': {kind!r}. Supported values "
            "are: 'message', 'function_call' and 'function_call_output'.",
            "item.type",
        )
    return item


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a decimal",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), "an unsupported value")


def invalid_type(param: str, expected: str, value: Any) -> ClientEventError:
    """The API's ``invalid_type`` error for ``param``."""
    return ClientEventError(
        "invalid_type",
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param,
    )


def required(obj: dict[str, Any], key: str, kind: type, prefix: str = "") -> Any:
    """``obj[key]`` checked to be present and of ``kind`` (``prefix`` names the parent)."""
    if key not in obj or obj[key] is None:
        raise ClientEventError(
            "missing_required_parameter",
            f"Missing required parameter: '{prefix}{key}'.",
            prefix + key,
        )
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        expected = {str: "a string", int: "an integer", dict: "an object"}.get(kind, "a value")
        raise invalid_type(prefix + key, expected, value)
    return value

"""Wire codec of the Realtime API: typed events to JSON text and back, sans I/O.

:func:`encode` turns a client event into the text of one WebSocket message with a single
``json.dumps`` (caller audio, the hot path, uses a string template around the standard
library's base64). :func:`decode` turns one received message into a typed server event: an
unknown ``type`` becomes :class:`~gateway.realtime.events.UnknownServerEvent`; malformed JSON,
a missing required field or a field of the wrong JSON type raises :class:`ProtocolError`
naming the event type and field (never the value, which may be call content). Field checks
are derived once, at import, from the event dataclasses' annotations.
"""

from __future__ import annotations

import base64
import binascii
import json
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from typing import Any, Final, assert_never

from gateway.errors import RealtimeError
from gateway.realtime.events import (
    SERVER_EVENT_CLASSES,
    ClientEvent,
    ConversationItemCreate,
    ConversationItemDelete,
    ConversationItemInputAudioTranscriptionFailed,
    ConversationItemTruncate,
    ErrorDetail,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    OutputAudioBufferClear,
    RateLimit,
    ResponseCancel,
    ResponseCreate,
    ResponseInfo,
    ServerEvent,
    SessionUpdate,
    UnknownServerEvent,
    Usage,
)

__all__ = ["ProtocolError", "append_message", "decode", "encode", "to_wire"]


class ProtocolError(RealtimeError):
    """A server message that cannot be decoded; never retryable.

    Attributes:
        event_type: The message's ``type`` when it had one.
        field: Dotted path of the offending field, e.g. ``response.id``.
    """

    def __init__(
        self, reason: str, *, event_type: str | None = None, field: str | None = None
    ) -> None:
        self.event_type = event_type
        self.field = field
        where = "server message" if event_type is None else f"server event {event_type!r}"
        text = f"{where}: {reason}" if field is None else f"{where}: field {field!r} {reason}"
        super().__init__(text, retryable=False)


# --------------------------------------------------------------------------- encode

_APPEND_PREFIX: Final = b'{"type":"input_audio_buffer.append","audio":"'


def append_message(audio: bytes) -> bytes:
    """The UTF-8 message of ``input_audio_buffer.append`` with ``audio`` and no event id.

    The same text as ``encode(InputAudioBufferAppend(audio))``, built as bytes for the
    socket without an event object or a text round trip (caller audio's hot path).
    """
    return _APPEND_PREFIX + binascii.b2a_base64(audio, newline=False) + b'"}'


def _json_default(value: object) -> object:
    # Mappings that are not dicts (MappingProxyType in frozen events) serialise as objects.
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def to_wire(event: ClientEvent) -> dict[str, Any]:
    """The JSON object of a client event (audio as base64 text).

    Args:
        event: Any client event.
    """
    wire: dict[str, Any] = {"type": event.type}
    if event.event_id is not None:
        wire["event_id"] = event.event_id
    match event:
        case SessionUpdate():
            wire["session"] = event.session.to_wire()
        case InputAudioBufferAppend():
            wire["audio"] = base64.b64encode(event.audio).decode("ascii")
        case InputAudioBufferCommit() | InputAudioBufferClear() | OutputAudioBufferClear():
            pass
        case ConversationItemCreate():
            if event.previous_item_id is not None:
                wire["previous_item_id"] = event.previous_item_id
            wire["item"] = event.item
        case ConversationItemTruncate():
            wire["item_id"] = event.item_id
            wire["content_index"] = event.content_index
            wire["audio_end_ms"] = event.audio_end_ms
        case ConversationItemDelete():
            wire["item_id"] = event.item_id
        case ResponseCreate():
            if event.response is not None:
                wire["response"] = event.response
        case ResponseCancel():
            if event.response_id is not None:
                wire["response_id"] = event.response_id
        case _:
            assert_never(event)
    return wire


def encode(event: ClientEvent) -> str:
    """The text of the WebSocket message carrying ``event``.

    Args:
        event: Any client event.

    Raises:
        TypeError: An item or response mapping holds a value JSON cannot represent.
    """
    if isinstance(event, InputAudioBufferAppend):
        # Hot path, 25-50 times a second per call: base64 text needs no JSON escaping.
        if event.event_id is None:
            return append_message(event.audio).decode("ascii")
        audio = base64.b64encode(event.audio).decode("ascii")
        return (
            '{"type":"input_audio_buffer.append","event_id":'
            + json.dumps(event.event_id, ensure_ascii=False)
            + ',"audio":"'
            + audio
            + '"}'
        )
    return json.dumps(
        to_wire(event), separators=(",", ":"), ensure_ascii=False, default=_json_default
    )


# --------------------------------------------------------------------------- decode

#: Converts a present, non-null JSON value of ``field`` in an event of ``type``.
_Convert = Callable[[Any, str, str], Any]


def _kind_check(kinds: tuple[type, ...], label: str) -> _Convert:
    rejects_bool = bool not in kinds

    def check(value: Any, event_type: str, path: str) -> Any:
        if not isinstance(value, kinds) or (rejects_bool and isinstance(value, bool)):
            raise ProtocolError(f"must be {label}", event_type=event_type, field=path)
        return value

    return check


_STR: Final = _kind_check((str,), "a string")
_INT: Final = _kind_check((int,), "an integer")
_NUMBER: Final = _kind_check((int, float), "a number")
_BOOL: Final = _kind_check((bool,), "a boolean")
_OBJECT: Final = _kind_check((dict,), "an object")
_ARRAY: Final = _kind_check((list,), "an array")


def _take(
    data: Mapping[str, Any],
    key: str,
    convert: _Convert,
    event_type: str,
    prefix: str,
    *,
    required: bool = False,
    default: Any = None,
) -> Any:
    """``data[key]`` checked by ``convert``; a missing or null value is ``default``."""
    value = data.get(key)
    if value is None:
        if required:
            raise ProtocolError("is missing", event_type=event_type, field=prefix + key)
        return default
    return convert(value, event_type, prefix + key)


def _error_detail(value: Any, event_type: str, path: str, *, strict: bool) -> ErrorDetail:
    obj = _OBJECT(value, event_type, path)
    p = path + "."
    return ErrorDetail(
        type=_take(obj, "type", _STR, event_type, p, required=strict, default=""),
        message=_take(obj, "message", _STR, event_type, p, required=strict, default=""),
        code=_take(obj, "code", _STR, event_type, p),
        param=_take(obj, "param", _STR, event_type, p),
        event_id=_take(obj, "event_id", _STR, event_type, p),
    )


def _strict_error(value: Any, event_type: str, path: str) -> ErrorDetail:
    return _error_detail(value, event_type, path, strict=True)


def _loose_error(value: Any, event_type: str, path: str) -> ErrorDetail:
    # Every field of a transcription failure's error is optional in the API reference.
    return _error_detail(value, event_type, path, strict=False)


def _usage(value: Any, event_type: str, path: str) -> Usage:
    obj = _OBJECT(value, event_type, path)
    p = path + "."
    return Usage(
        total_tokens=_take(obj, "total_tokens", _INT, event_type, p, default=0),
        input_tokens=_take(obj, "input_tokens", _INT, event_type, p, default=0),
        output_tokens=_take(obj, "output_tokens", _INT, event_type, p, default=0),
        input_token_details=_take(obj, "input_token_details", _OBJECT, event_type, p, default={}),
        output_token_details=_take(obj, "output_token_details", _OBJECT, event_type, p, default={}),
    )


def _response(value: Any, event_type: str, path: str) -> ResponseInfo:
    obj = _OBJECT(value, event_type, path)
    p = path + "."
    output = _take(obj, "output", _ARRAY, event_type, p, default=[])
    for index, item in enumerate(output):
        _OBJECT(item, event_type, f"{p}output[{index}]")
    return ResponseInfo(
        id=_take(obj, "id", _STR, event_type, p, required=True),
        status=_take(obj, "status", _STR, event_type, p, default=""),
        status_details=_take(obj, "status_details", _OBJECT, event_type, p),
        output=tuple(output),
        usage=_take(obj, "usage", _usage, event_type, p),
        conversation_id=_take(obj, "conversation_id", _STR, event_type, p),
        metadata=_take(obj, "metadata", _OBJECT, event_type, p),
        raw=obj,
    )


def _rate_limits(value: Any, event_type: str, path: str) -> tuple[RateLimit, ...]:
    limits = []
    for index, entry in enumerate(_ARRAY(value, event_type, path)):
        p = f"{path}[{index}]."
        obj = _OBJECT(entry, event_type, p[:-1])
        limits.append(
            RateLimit(
                name=_take(obj, "name", _STR, event_type, p),
                limit=_take(obj, "limit", _INT, event_type, p),
                remaining=_take(obj, "remaining", _INT, event_type, p),
                reset_seconds=_take(obj, "reset_seconds", _NUMBER, event_type, p),
            )
        )
    return tuple(limits)


_BY_HINT: Final[dict[Any, _Convert]] = {
    str: _STR,
    int: _INT,
    float: _NUMBER,
    bool: _BOOL,
    ErrorDetail: _strict_error,
    ResponseInfo: _response,
}


def _converter(cls: type[Any], name: str, hint: Any) -> _Convert:
    if cls is ConversationItemInputAudioTranscriptionFailed and name == "error":
        return _loose_error
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, type(str | None)) and len(args) == 1:
        hint = args[0]
    origin = typing.get_origin(hint)
    if origin is Mapping:
        return _OBJECT
    if origin is list:
        return _ARRAY
    if origin is tuple and typing.get_args(hint)[0] is RateLimit:
        return _rate_limits
    if hint in _BY_HINT:
        return _BY_HINT[hint]
    raise TypeError(f"{cls.__name__}.{name}: no decoder for {hint!r}")  # a bug in events.py


def _field_specs(cls: type[Any]) -> tuple[tuple[str, _Convert, bool], ...]:
    hints = typing.get_type_hints(cls)
    return tuple(
        (
            f.name,
            _converter(cls, f.name, hints[f.name]),
            f.default is MISSING and f.default_factory is MISSING,
        )
        for f in fields(cls)
    )


def _decoder(cls: type[Any]) -> Callable[[dict[str, Any]], ServerEvent]:
    specs = _field_specs(cls)
    event_type: str = cls.type

    def decode_event(data: dict[str, Any]) -> ServerEvent:
        kwargs: dict[str, Any] = {}
        for name, convert, required in specs:
            value = data.get(name)
            if value is None:
                if required:
                    raise ProtocolError("is missing", event_type=event_type, field=name)
                continue
            kwargs[name] = convert(value, event_type, name)
        event: ServerEvent = cls(**kwargs)
        return event

    return decode_event


_DECODERS: Final[dict[str, Callable[[dict[str, Any]], ServerEvent]]] = {
    cls.type: _decoder(cls) for cls in SERVER_EVENT_CLASSES
}


def decode(message: str | bytes) -> ServerEvent:
    """The typed server event carried by one WebSocket message.

    Args:
        message: The message text (or UTF-8 bytes).

    Returns:
        The typed event, or :class:`~gateway.realtime.events.UnknownServerEvent` for a
        ``type`` this package does not model.

    Raises:
        ProtocolError: The message is not a JSON object with a string ``type``, or a known
            event lacks a required field or has a field of the wrong JSON type.
    """
    try:
        data = json.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", None)
        where = "" if pos is None else f" at offset {pos}"
        raise ProtocolError(f"is not valid JSON{where}") from None
    if not isinstance(data, dict):
        raise ProtocolError("is not a JSON object")
    event_type = data.get("type")
    if not isinstance(event_type, str):
        raise ProtocolError("has no string 'type'", field="type")
    decoder = _DECODERS.get(event_type)
    if decoder is None:
        return UnknownServerEvent(type=event_type, raw=data)
    return decoder(data)

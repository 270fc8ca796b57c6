"""Validation of ``session.update`` for the local Realtime API simulator, GA shape only.

The simulator must refuse what the real GA Realtime API refuses, with the same error codes,
so the gateway's error handling is exercised before it meets the real service. This module
holds the effective session object (the one reported in ``session.created`` and
``session.updated``), its defaults, and the partial-update rules: only fields present in an
update change, nested objects merge, ``null`` clears (``turn_detection``, ``noise_reduction``,
``transcription``, ``tracing``, ``prompt``, ``include``). Beta-shaped sessions are refused with
``beta_api_shape_disabled`` and close code 4000, as the real API now does. The same rules
validate the flat session body of a Realtime Calls ``accept`` (``root=""``), where, as on any
SIP call, ``audio.*.format`` is refused (``sip_call``). Field names and
defaults follow ``openai.types.realtime.realtime_session_create_request`` and its children.
Pure: dicts in, dicts out, no I/O; an update is applied to a copy, so a refused update leaves
the session untouched.
"""

from __future__ import annotations

import copy
import math
import re
import secrets
import string
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

#: The built-in voices of the GA API; a custom voice is ``{"id": "voice_..."}``.
VOICES: Final = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
#: ``audio.*.format.type`` values; ``audio/pcm`` is 24 kHz PCM16, the others 8 kHz G.711.
FORMAT_TYPES: Final = ("audio/pcm", "audio/pcmu", "audio/pcma")
#: The only ``rate`` the API accepts for ``audio/pcm``.
PCM_RATE: Final = 24000
#: Message of the error the real API sends for the retired beta shape.
BETA_MESSAGE: Final = (
    "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API."
)
#: WebSocket close code the real API uses after a beta-shape error.
BETA_CLOSE_CODE: Final = 4000
#: Instructions reported in ``session.created`` when the client sets none.
DEFAULT_INSTRUCTIONS: Final = (
    "You are a helpful, friendly voice assistant. Speak clearly, keep answers short, and "
    "answer in the language the user speaks."
)
#: Session lifetime reported in ``expires_at`` (the API's 60-minute maximum).
SESSION_LIFETIME_S: Final = 3600
#: Error code of the simulator's refusal of ``audio.*.format`` on a SIP call (not a real API
#: code: the real API accepts the field, and the call's audio breaks).
SIP_FORMAT_CODE: Final = "sip_audio_format_not_allowed"

_BETA_KEYS: Final = frozenset(
    """
    modalities input_audio_format output_audio_format voice turn_detection
    input_audio_transcription input_audio_noise_reduction max_response_output_tokens
    temperature speed
    """.split()
)
_BETA_FORMATS: Final = frozenset({"pcm16", "g711_ulaw", "g711_alaw"})
_TOP_KEYS: Final = tuple(
    """
    type model output_modalities instructions audio tools tool_choice max_output_tokens
    tracing truncation prompt include reasoning parallel_tool_calls
    """.split()
)
#: The fields of a GA session object (a ``session.update``'s ``session``, an accept body).
SESSION_KEYS: Final = _TOP_KEYS
_SERVER_VAD_KEYS: Final = tuple(
    """
    type threshold prefix_padding_ms silence_duration_ms create_response
    interrupt_response idle_timeout_ms
    """.split()
)
_SEMANTIC_VAD_KEYS: Final = ("type", "eagerness", "create_response", "interrupt_response")
_EAGERNESS: Final = ("low", "medium", "high", "auto")
_TOOL_NAME: Final = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_MAX_OUTPUT_TOKENS: Final = 4096
_SPEED_RANGE: Final = (0.25, 1.5)
_ID_ALPHABET: Final = string.ascii_letters + string.digits


class SessionError(Exception):
    """A ``session.update`` the real API would refuse.

    The simulator sends it as an ``error`` event (``to_error()``) and, when ``close_code`` is
    set, closes the WebSocket with that code afterwards.

    Attributes:
        type: The API error type, ``invalid_request_error``.
        code: The API error code, e.g. ``unknown_parameter`` or ``beta_api_shape_disabled``.
        message: Human-readable message in the API's wording.
        param: Dotted path of the offending field, e.g. ``session.audio.input.format.type``.
        close_code: WebSocket close code to send after the error (4000 for the beta shape),
            or ``None`` when the session stays open.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        close_code: int | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.type = type
        self.code = code
        self.message = message
        self.param = param
        self.close_code = close_code

    def to_error(self) -> dict[str, Any]:
        """The ``error`` object of an ``error`` server event (without ``event_id``)."""
        return {"type": self.type, "code": self.code, "message": self.message, "param": self.param}


def default_session(
    model: str,
    *,
    sip: bool = False,
    session_id: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The effective session the API reports in ``session.created`` before any update.

    Args:
        model: The model the client connected with (``?model=``).
        sip: A session attached to a SIP call: formats are the negotiated G.711 μ-law
            (``audio/pcmu``) instead of 24 kHz PCM.
        session_id: Session id to report; a fresh ``sess_...`` id when omitted.
        now: Unix time used for ``expires_at``; the current time when omitted.

    Returns:
        A new dict with every field present, in the GA shape.
    """
    fmt: dict[str, Any] = {"type": "audio/pcmu"} if sip else {"type": "audio/pcm", "rate": PCM_RATE}
    created = time.time() if now is None else now
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id or new_session_id(),
        "model": model,
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "expires_at": int(created) + SESSION_LIFETIME_S,
        "audio": {
            "input": {
                "format": dict(fmt),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": server_vad_defaults(),
            },
            "output": {"format": dict(fmt), "voice": "marin", "speed": 1.0},
        },
        "include": None,
    }


def new_session_id() -> str:
    """A fresh id shaped like the API's (``sess_`` and 21 letters or digits)."""
    return "sess_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(21))


def server_vad_defaults() -> dict[str, Any]:
    """The ``server_vad`` turn detection object with the API's defaults."""
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
        "idle_timeout_ms": None,
    }


def semantic_vad_defaults() -> dict[str, Any]:
    """The ``semantic_vad`` turn detection object with the API's defaults."""
    return {
        "type": "semantic_vad",
        "eagerness": "auto",
        "create_response": True,
        "interrupt_response": True,
    }


def apply_session_update(
    current: dict[str, Any],
    update: Any,
    *,
    root: str = "session",
    sip_call: bool = False,
) -> dict[str, Any]:
    """Validate the ``session`` of a ``session.update`` and apply it.

    Args:
        current: The effective session (as from :func:`default_session`); not mutated.
        update: The ``session`` member of the client event, as decoded from JSON.
        root: Path prefix of the object in error messages and ``param``: ``session`` for a
            ``session.update``, ``""`` for the flat body of ``POST /v1/realtime/calls/{id}/accept``.
        sip_call: The session belongs to a SIP call, whose audio format is negotiated in SDP:
            ``audio.input.format`` and ``audio.output.format`` are refused
            (:data:`SIP_FORMAT_CODE`). The real API accepts them and the call's audio breaks;
            the simulator refuses them so the gateway is tested not to send them.

    Returns:
        The new effective session, a separate object from ``current`` and ``update``.

    Raises:
        SessionError: The update is refused; nothing was applied.
    """
    session = _object(update, root or "body")
    if sip_call:
        _refuse_sip_format(session, root)
    _reject_beta(session)
    type_path = _at(root, "type")
    if "type" not in session:
        raise _missing(type_path)
    kind = session["type"]
    if not isinstance(kind, str):
        raise _type_error(type_path, "a string", kind)
    if kind == "transcription":
        raise SessionError(
            "invalid_value",
            f"The simulator does not support transcription sessions ({type_path} "
            "'transcription'); use 'realtime'.",
            param=type_path,
        )
    if kind != "realtime":
        raise _value_error(type_path, kind, ("realtime", "transcription"))
    _check_keys(session, _TOP_KEYS, root)

    new = copy.deepcopy(current)
    for key, value in session.items():
        if key == "type":
            continue
        path = _at(root, key)
        if key == "audio":
            new["audio"] = _merge_audio(new.get("audio") or {}, value, path)
        elif key == "tracing":
            new["tracing"] = _tracing(current.get("tracing"), value, path)
        elif key == "model":
            new["model"] = _model(current.get("model"), value, path)
        else:
            new[key] = _SIMPLE_FIELDS[key](value, path)
    if "tool_choice" in session:
        _check_tool_choice_target(new["tool_choice"], new.get("tools") or [], root)
    return new


def _refuse_sip_format(session: Mapping[str, Any], root: str) -> None:
    audio = session.get("audio")
    if not isinstance(audio, dict):
        return
    for side in ("input", "output"):
        block = audio.get(side)
        if isinstance(block, dict) and "format" in block:
            path = _at(root, f"audio.{side}.format")
            raise SessionError(
                SIP_FORMAT_CODE,
                f"Do not set '{path}' on a SIP call: its audio format is negotiated in SDP. "
                "(Simulator rule: the real API accepts the field and the call's audio comes "
                "out distorted or silent.)",
                param=path,
            )


def check_voice_change(
    current: Mapping[str, Any], new: Mapping[str, Any], audio_emitted: bool
) -> None:
    """Refuse a voice change once the model has produced audio, as the API does.

    Args:
        current: The effective session before the update.
        new: The session :func:`apply_session_update` returned for the update.
        audio_emitted: Whether any response in this session has produced audio.

    Raises:
        SessionError: ``cannot_update_voice`` when the voice differs and audio was emitted.
    """
    if audio_emitted and _voice_of(current) != _voice_of(new):
        raise SessionError(
            "cannot_update_voice",
            "Cannot update a session's voice after the model has responded with audio.",
            param="session.audio.output.voice",
        )


def _voice_of(session: Mapping[str, Any]) -> Any:
    return ((session.get("audio") or {}).get("output") or {}).get("voice")


# --- errors -------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "an unsupported value"


def _type_error(path: str, expected: str, value: Any) -> SessionError:
    return SessionError(
        "invalid_type",
        f"Invalid type for '{path}': expected {expected}, but got {_type_name(value)} instead.",
        param=path,
    )


def _value_error(path: str, value: Any, supported: tuple[str, ...]) -> SessionError:
    choices = ", ".join(f"'{s}'" for s in supported[:-1]) + f" and '{supported[-1]}'"
    if len(supported) == 1:
        choices = f"'{supported[0]}'"
    return SessionError(
        "invalid_value",
        f"Invalid value for '{path}': {value!r}. Supported values are: {choices}.",
        param=path,
    )


def _range_error(path: str, value: Any, low: float, high: float | None) -> SessionError:
    bound = f"between {low} and {high}" if high is not None else f"at least {low}"
    return SessionError(
        "invalid_value",
        f"Invalid value for '{path}': expected a value {bound}, but got {value!r} instead.",
        param=path,
    )


def _missing(path: str) -> SessionError:
    return SessionError(
        "missing_required_parameter", f"Missing required parameter: '{path}'.", param=path
    )


def _beta_error() -> SessionError:
    # The real API names no param for this error; the session is closed right after it.
    return SessionError("beta_api_shape_disabled", BETA_MESSAGE, close_code=BETA_CLOSE_CODE)


# --- primitive checks ---------------------------------------------------------------------


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _type_error(path, "an object", value)
    return value


def _at(path: str, key: str) -> str:
    """``path.key``, or just ``key`` at the root of a flat body (``path`` empty)."""
    return f"{path}.{key}" if path else key


def _check_keys(obj: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in obj:
        if key not in allowed:
            where = _at(path, key)
            raise SessionError("unknown_parameter", f"Unknown parameter: '{where}'.", param=where)


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _type_error(path, "a string", value)
    return value


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _type_error(path, "a boolean", value)
    return value


def _integer(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(path, "an integer", value)
    return value


def _number(value: Any, path: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(path, "a number", value)
    if not math.isfinite(value) or not low <= value <= high:
        raise _range_error(path, value, low, high)
    return float(value)


def _ms(value: Any, path: str) -> int:
    ms = _integer(value, path)
    if ms < 0:
        raise _range_error(path, value, 0, None)
    return ms


def _enum(value: Any, path: str, supported: tuple[str, ...]) -> str:
    text = _string(value, path)
    if text not in supported:
        raise _value_error(path, value, supported)
    return text


def _string_list(value: Any, path: str) -> list[str]:
    if not isinstance(value, list):
        raise _type_error(path, "an array", value)
    return [_string(item, f"{path}[{i}]") for i, item in enumerate(value)]


# --- top-level fields ---------------------------------------------------------------------


def _reject_beta(session: Mapping[str, Any]) -> None:
    for key in session:
        if key in _BETA_KEYS:
            raise _beta_error()
    audio = session.get("audio")
    if not isinstance(audio, dict):
        return
    for side in ("input", "output"):
        block = audio.get(side)
        if isinstance(block, dict) and isinstance(block.get("format"), str):
            if block["format"] in _BETA_FORMATS:
                raise _beta_error()


def _model(current: Any, value: Any, path: str) -> str:
    model = _string(value, path)
    if current is not None and model != current:
        raise SessionError(
            "invalid_value",
            f"Cannot change the model of a session: it is '{current}', the update asks for "
            f"'{model}'. Open a new session instead.",
            param=path,
        )
    return model


def _output_modalities(value: Any, path: str) -> list[str]:
    items = _string_list(value, path)
    for i, item in enumerate(items):
        _enum(item, f"{path}[{i}]", ("audio", "text"))
    if items not in (["audio"], ["text"]):
        raise SessionError(
            "invalid_value",
            f"Invalid value for '{path}': {items!r}. Use exactly ['audio'] (audio plus "
            "transcript) or ['text']; both at once is not supported.",
            param=path,
        )
    return items


def _instructions(value: Any, path: str) -> str:
    return _string(value, path)


def _tools(value: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _type_error(path, "an array", value)
    tools: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, raw in enumerate(value):
        tool = _function_tool(raw, f"{path}[{i}]")
        if tool["name"] in seen:
            raise SessionError(
                "invalid_value",
                f"Invalid value for '{path}[{i}].name': duplicate tool name '{tool['name']}'.",
                param=f"{path}[{i}].name",
            )
        seen.add(tool["name"])
        tools.append(tool)
    return tools


def _function_tool(raw: Any, path: str) -> dict[str, Any]:
    tool = _object(raw, path)
    if "type" not in tool:
        raise _missing(f"{path}.type")
    _function_kind(tool["type"], f"{path}.type")
    _check_keys(tool, ("type", "name", "description", "parameters"), path)
    for required in ("name", "parameters"):
        if required not in tool:
            raise _missing(f"{path}.{required}")
    name = _string(tool["name"], f"{path}.name")
    if not _TOOL_NAME.fullmatch(name):
        raise SessionError(
            "invalid_value",
            f"Invalid value for '{path}.name': {name!r} does not match pattern "
            f"'{_TOOL_NAME.pattern}'.",
            param=f"{path}.name",
        )
    result: dict[str, Any] = {"type": "function", "name": name}
    if "description" in tool:
        result["description"] = _string(tool["description"], f"{path}.description")
    result["parameters"] = copy.deepcopy(_object(tool["parameters"], f"{path}.parameters"))
    return result


def _function_kind(value: Any, path: str) -> None:
    """``type`` of a tool or tool choice: ``function``; MCP is refused with its own message."""
    kind = _string(value, path)
    if kind == "mcp":
        raise SessionError(
            "invalid_value",
            f"Invalid value for '{path}': the simulator supports only function tools, "
            "not 'mcp'.",
            param=path,
        )
    _enum(kind, path, ("function", "mcp"))


def _tool_choice(value: Any, path: str) -> str | dict[str, Any]:
    if isinstance(value, str):
        return _enum(value, path, ("none", "auto", "required"))
    choice = _object(value, path)
    if "type" not in choice:
        raise _missing(f"{path}.type")
    _function_kind(choice["type"], f"{path}.type")
    _check_keys(choice, ("type", "name"), path)
    if "name" not in choice:
        raise _missing(f"{path}.name")
    return {"type": "function", "name": _string(choice["name"], f"{path}.name")}


def _check_tool_choice_target(choice: Any, tools: list[dict[str, Any]], root: str) -> None:
    if isinstance(choice, dict) and choice["name"] not in {t.get("name") for t in tools}:
        path = _at(root, "tool_choice.name")
        raise SessionError(
            "invalid_value",
            f"Invalid value for '{path}': no tool named "
            f"'{choice['name']}' is configured in {_at(root, 'tools')}.",
            param=path,
        )


def _max_output_tokens(value: Any, path: str) -> int | str:
    if value == "inf":
        return "inf"
    if isinstance(value, str):
        raise SessionError(
            "invalid_value",
            f"Invalid value for '{path}': {value!r}. Use an integer from 1 to "
            f"{_MAX_OUTPUT_TOKENS} or 'inf'.",
            param=path,
        )
    tokens = _integer(value, path)
    if not 1 <= tokens <= _MAX_OUTPUT_TOKENS:
        raise _range_error(path, value, 1, _MAX_OUTPUT_TOKENS)
    return tokens


def _tracing(current: Any, value: Any, path: str) -> Any:
    if value is None or value == "auto":
        tracing: Any = value
    elif isinstance(value, str):
        raise _value_error(path, value, ("auto",))
    else:
        obj = _object(value, path)
        _check_keys(obj, ("workflow_name", "group_id", "metadata"), path)
        for key in ("workflow_name", "group_id"):
            if key in obj:
                _string(obj[key], f"{path}.{key}")
        if "metadata" in obj:
            _object(obj["metadata"], f"{path}.metadata")
        tracing = copy.deepcopy(obj)
    if current is not None and tracing != current:
        raise SessionError(
            "invalid_value",
            "Tracing cannot be modified once it has been enabled for a session.",
            param=path,
        )
    return tracing


def _truncation(value: Any, path: str) -> str | dict[str, Any]:
    if isinstance(value, str):
        return _enum(value, path, ("auto", "disabled"))
    obj = _object(value, path)
    _check_keys(obj, ("type", "retention_ratio", "token_limits"), path)
    for required in ("type", "retention_ratio"):
        if required not in obj:
            raise _missing(f"{path}.{required}")
    result: dict[str, Any] = {
        "type": _enum(obj["type"], f"{path}.type", ("retention_ratio",)),
        "retention_ratio": _number(obj["retention_ratio"], f"{path}.retention_ratio", 0.0, 1.0),
    }
    if "token_limits" in obj:
        limits = _object(obj["token_limits"], f"{path}.token_limits")
        _check_keys(limits, ("post_instructions",), f"{path}.token_limits")
        result["token_limits"] = {
            key: _ms(val, f"{path}.token_limits.{key}") for key, val in limits.items()
        }
    return result


def _prompt(value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    obj = _object(value, path)
    _check_keys(obj, ("id", "version", "variables"), path)
    if "id" not in obj:
        raise _missing(f"{path}.id")
    result: dict[str, Any] = {"id": _string(obj["id"], f"{path}.id")}
    if obj.get("version") is not None:
        result["version"] = _string(obj["version"], f"{path}.version")
    if obj.get("variables") is not None:
        variables = _object(obj["variables"], f"{path}.variables")
        for key, val in variables.items():
            if not isinstance(val, str | dict):
                raise _type_error(f"{path}.variables.{key}", "a string or an object", val)
        result["variables"] = copy.deepcopy(variables)
    return result


def _include(value: Any, path: str) -> list[str] | None:
    if value is None:
        return None
    items = _string_list(value, path)
    for i, item in enumerate(items):
        _enum(item, f"{path}[{i}]", ("item.input_audio_transcription.logprobs",))
    return items


def _reasoning(value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    obj = _object(value, path)
    _check_keys(obj, ("effort",), path)
    result: dict[str, Any] = {}
    if "effort" in obj:
        result["effort"] = _enum(
            obj["effort"], f"{path}.effort", ("minimal", "low", "medium", "high", "xhigh")
        )
    return result


def _parallel_tool_calls(value: Any, path: str) -> bool:
    return _boolean(value, path)


_SIMPLE_FIELDS: Final[dict[str, Callable[[Any, str], Any]]] = {
    "output_modalities": _output_modalities,
    "instructions": _instructions,
    "tools": _tools,
    "tool_choice": _tool_choice,
    "max_output_tokens": _max_output_tokens,
    "truncation": _truncation,
    "prompt": _prompt,
    "include": _include,
    "reasoning": _reasoning,
    "parallel_tool_calls": _parallel_tool_calls,
}


# --- audio --------------------------------------------------------------------------------


def _merge_audio(current: dict[str, Any], value: Any, path: str) -> dict[str, Any]:
    audio = _object(value, path)
    _check_keys(audio, ("input", "output"), path)
    result = dict(current)
    if "input" in audio:
        result["input"] = _merge_input(
            dict(current.get("input") or {}), audio["input"], f"{path}.input"
        )
    if "output" in audio:
        result["output"] = _merge_output(
            dict(current.get("output") or {}), audio["output"], f"{path}.output"
        )
    return result


def _merge_input(current: dict[str, Any], value: Any, path: str) -> dict[str, Any]:
    block = _object(value, path)
    _check_keys(block, ("format", "transcription", "noise_reduction", "turn_detection"), path)
    if "format" in block:
        current["format"] = _format(block["format"], f"{path}.format")
    if "transcription" in block:
        current["transcription"] = _transcription(
            current.get("transcription"), block["transcription"], f"{path}.transcription"
        )
    if "noise_reduction" in block:
        current["noise_reduction"] = _noise_reduction(
            current.get("noise_reduction"), block["noise_reduction"], f"{path}.noise_reduction"
        )
    if "turn_detection" in block:
        current["turn_detection"] = _turn_detection(
            current.get("turn_detection"), block["turn_detection"], f"{path}.turn_detection"
        )
    return current


def _merge_output(current: dict[str, Any], value: Any, path: str) -> dict[str, Any]:
    block = _object(value, path)
    _check_keys(block, ("format", "voice", "speed"), path)
    if "format" in block:
        current["format"] = _format(block["format"], f"{path}.format")
    if "voice" in block:
        current["voice"] = _voice(block["voice"], f"{path}.voice")
    if "speed" in block:
        current["speed"] = _number(block["speed"], f"{path}.speed", *_SPEED_RANGE)
    return current


def _format(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, str) and value in _BETA_FORMATS:
        raise _beta_error()
    fmt = _object(value, path)
    if "type" not in fmt:
        raise _missing(f"{path}.type")
    kind = _enum(fmt["type"], f"{path}.type", FORMAT_TYPES)
    if kind != "audio/pcm":
        # G.711 is always 8 kHz; the SDK's AudioPCMU/AudioPCMA have no rate field.
        _check_keys(fmt, ("type",), path)
        return {"type": kind}
    _check_keys(fmt, ("type", "rate"), path)
    rate = _integer(fmt.get("rate", PCM_RATE), f"{path}.rate")
    if rate != PCM_RATE:
        raise SessionError(
            "invalid_value",
            f"Invalid value for '{path}.rate': {rate}. audio/pcm supports only {PCM_RATE} Hz.",
            param=f"{path}.rate",
        )
    return {"type": kind, "rate": rate}


def _voice(value: Any, path: str) -> str | dict[str, str]:
    if isinstance(value, dict):
        _check_keys(value, ("id",), path)
        if "id" not in value:
            raise _missing(f"{path}.id")
        return {"id": _string(value["id"], f"{path}.id")}
    return _enum(value, path, tuple(sorted(VOICES)))


def _transcription(current: Any, value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    obj = _object(value, path)
    _check_keys(obj, ("model", "language", "prompt", "languages", "keywords", "delay"), path)
    result: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
    for key, val in obj.items():
        sub = f"{path}.{key}"
        if key in ("languages", "keywords"):
            result[key] = _string_list(val, sub)
        elif key == "delay":
            result[key] = _enum(val, sub, ("minimal", "low", "medium", "high", "xhigh"))
        else:
            result[key] = _string(val, sub)
    return result


def _noise_reduction(current: Any, value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    obj = _object(value, path)
    _check_keys(obj, ("type", "strength"), path)
    # Strength defaults to 1 when noise reduction is first enabled and is kept when omitted.
    result: dict[str, Any] = dict(current) if isinstance(current, dict) else {"strength": 1.0}
    if "type" in obj:
        result["type"] = _enum(obj["type"], f"{path}.type", ("near_field", "far_field"))
    elif "type" not in result:
        raise _missing(f"{path}.type")
    if "strength" in obj:
        result["strength"] = _number(obj["strength"], f"{path}.strength", 0.0, math.inf)
    return {"type": result["type"], "strength": result["strength"]}


def _turn_detection(current: Any, value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    obj = _object(value, path)
    if "type" in obj:
        kind = _enum(obj["type"], f"{path}.type", ("server_vad", "semantic_vad"))
    elif isinstance(current, dict):
        kind = current["type"]
    else:
        raise _missing(f"{path}.type")
    same_type = isinstance(current, dict) and current.get("type") == kind
    if kind == "server_vad":
        _check_keys(obj, _SERVER_VAD_KEYS, path)
        result = dict(current) if same_type else server_vad_defaults()
    else:
        _check_keys(obj, _SEMANTIC_VAD_KEYS, path)
        result = dict(current) if same_type else semantic_vad_defaults()
    for key, val in obj.items():
        sub = f"{path}.{key}"
        if key == "threshold":
            result[key] = _number(val, sub, 0.0, 1.0)
        elif key in ("prefix_padding_ms", "silence_duration_ms"):
            result[key] = _ms(val, sub)
        elif key == "idle_timeout_ms":
            result[key] = None if val is None else _ms(val, sub)
        elif key in ("create_response", "interrupt_response"):
            result[key] = _boolean(val, sub)
        elif key == "eagerness":
            result[key] = _enum(val, sub, _EAGERNESS)
    return result

"""The typed GA Realtime ``session`` object and its parts, for ``session.update``.

:class:`SessionConfig` and its pieces (audio formats, VAD, transcription, tools) are frozen
values whose :meth:`SessionConfig.to_wire` emits the GA shape only, never the retired beta keys.
``UNSET`` marks a nullable field left out of an update, as opposed to ``None``, which sends
``null``. Pure: no I/O.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias


class Unset(enum.Enum):
    """Type of :data:`UNSET`: a field left out of an update, as opposed to ``null``."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


#: A nullable session field that is not part of this update (``None`` sends ``null``).
UNSET: Final = Unset.UNSET

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})

#: Top-level session keys of the retired beta shape; the GA API refuses them.
_BETA_SESSION_KEYS: Final = frozenset(
    {
        "modalities",
        "input_audio_format",
        "output_audio_format",
        "voice",
        "speed",
        "turn_detection",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "max_response_output_tokens",
        "temperature",
    }
)


def _check_range(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")


def _check_ms(name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be an int >= 0")


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``top``: nested mappings merge, other values replace."""
    merged = dict(base)
    for key, value in top.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = _deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def _wire_value(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_wire_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _wire_value(v) for k, v in value.items()}
    to_wire = getattr(value, "to_wire", None)
    return value if to_wire is None else to_wire()


def _to_wire(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The GA JSON object of a session dataclass.

    ``None`` and UNSET fields are omitted, except that ``None`` in a field whose default is
    UNSET is an explicit ``null``.
    """
    wire: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in skip or value is UNSET or (value is None and f.default is not UNSET):
            continue
        wire[f.name] = _wire_value(value)
    return wire


_MERGED_PARTS: Final = ("audio", "input", "output")


def _merge(base: Any, update: Any) -> Any:
    """``base`` with every field set in ``update`` replaced; audio sections merge per field."""
    changes: dict[str, Any] = {}
    for f in fields(update):
        new, old = getattr(update, f.name), getattr(base, f.name)
        if new is UNSET or (new is None and f.default is not UNSET) or f.name == "type":
            continue
        if f.name in _MERGED_PARTS and old is not None:
            changes[f.name] = _merge(old, new)
        elif f.name == "extra":
            changes[f.name] = _deep_merge(old, new) if new else old
        else:
            changes[f.name] = new
    return replace(base, **changes)


# --------------------------------------------------------------------------- session object


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """An ``audio.input.format`` / ``audio.output.format`` object.

    Attributes:
        type: ``audio/pcm`` (PCM16 little-endian mono, 24 kHz), ``audio/pcmu`` (G.711 μ-law,
            8 kHz) or ``audio/pcma`` (G.711 A-law, 8 kHz).
        rate: 24000 for ``audio/pcm`` (filled in when omitted), ``None`` for G.711.
    """

    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
    rate: int | None = None

    def __post_init__(self) -> None:
        if self.type == "audio/pcm":
            if self.rate is None:
                object.__setattr__(self, "rate", 24000)
            elif self.rate != 24000:
                raise ValueError("audio/pcm only supports rate 24000")
        elif self.type not in ("audio/pcmu", "audio/pcma"):
            raise ValueError(f"unknown audio format type {self.type!r}")
        elif self.rate is not None:
            raise ValueError(f"{self.type} takes no rate")

    @classmethod
    def pcm(cls) -> AudioFormat:
        """PCM16 little-endian mono at 24 kHz."""
        return cls("audio/pcm", 24000)

    @classmethod
    def pcmu(cls) -> AudioFormat:
        """G.711 μ-law at 8 kHz."""
        return cls("audio/pcmu")

    @classmethod
    def pcma(cls) -> AudioFormat:
        """G.711 A-law at 8 kHz."""
        return cls("audio/pcma")

    @property
    def sample_rate(self) -> int:
        """Samples per second of this format."""
        return 24000 if self.type == "audio/pcm" else 8000

    def to_wire(self) -> dict[str, Any]:
        """The GA JSON object."""
        return _to_wire(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerVad:
    """``turn_detection`` of type ``server_vad``; ``None`` fields are left to the server.

    Attributes:
        threshold: Activation threshold 0..1 (server default 0.5).
        prefix_padding_ms: Audio kept before detected speech (server default 300).
        silence_duration_ms: Silence that ends a turn (server default 500).
        create_response: Start a response when the caller stops speaking.
        interrupt_response: Cancel the response in progress when the caller starts speaking.
        idle_timeout_ms: After the last response finished playing plus this, the server
            commits the buffer and prompts the model (``input_audio_buffer.timeout_triggered``).
        type: Always ``server_vad``.
    """

    type: Literal["server_vad"] = "server_vad"
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None

    def __post_init__(self) -> None:
        if self.type != "server_vad":
            raise ValueError("ServerVad.type must be 'server_vad'")
        if self.threshold is not None:
            _check_range("threshold", self.threshold, 0.0, 1.0)
        _check_ms("prefix_padding_ms", self.prefix_padding_ms)
        _check_ms("silence_duration_ms", self.silence_duration_ms)
        _check_ms("idle_timeout_ms", self.idle_timeout_ms)

    def to_wire(self) -> dict[str, Any]:
        """The GA JSON object, with unset fields omitted."""
        return _to_wire(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class SemanticVad:
    """``turn_detection`` of type ``semantic_vad``; ``None`` fields are left to the server.

    Attributes:
        eagerness: How soon the model answers (``auto`` = ``medium``).
        create_response: Start a response when the turn ends.
        interrupt_response: Cancel the response in progress when the caller starts speaking.
        type: Always ``semantic_vad``.
    """

    type: Literal["semantic_vad"] = "semantic_vad"
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None

    def __post_init__(self) -> None:
        if self.type != "semantic_vad":
            raise ValueError("SemanticVad.type must be 'semantic_vad'")
        if self.eagerness not in (None, "low", "medium", "high", "auto"):
            raise ValueError(f"unknown eagerness {self.eagerness!r}")

    def to_wire(self) -> dict[str, Any]:
        """The GA JSON object, with unset fields omitted."""
        return _to_wire(self)


#: ``audio.input.turn_detection``: a VAD, ``None`` for an explicit ``null`` (the client
#: commits and asks for responses), or :data:`UNSET` to leave it out of the update.
TurnDetection: TypeAlias = ServerVad | SemanticVad | None | Literal[Unset.UNSET]


@dataclass(frozen=True, slots=True)
class NoiseReduction:
    """``audio.input.noise_reduction``.

    Attributes:
        type: ``near_field`` (headset) or ``far_field`` (speakerphone, room).
        strength: Suppression strength; ``None`` keeps the server's value.
    """

    type: Literal["near_field", "far_field"]
    strength: float | None = None

    def __post_init__(self) -> None:
        if self.type not in ("near_field", "far_field"):
            raise ValueError(f"unknown noise reduction type {self.type!r}")
        if self.strength is not None:
            _check_range("strength", self.strength, 0.0, math.inf)

    def to_wire(self) -> dict[str, Any]:
        """The GA JSON object."""
        return _to_wire(self)


@dataclass(frozen=True, slots=True)
class InputTranscription:
    """``audio.input.transcription``: asynchronous transcription of the caller.

    Attributes:
        model: Transcription model, e.g. ``gpt-4o-mini-transcribe``.
        language: ISO-639-1 hint, e.g. ``en``.
        prompt: Free-text guidance for the transcriber.
    """

    model: str
    language: str | None = None
    prompt: str | None = None

    def to_wire(self) -> dict[str, Any]:
        """The GA JSON object."""
        return _to_wire(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioInputConfig:
    """``audio.input``: the audio the gateway appends.

    ``format`` is omitted when ``None``; the other three are omitted when :data:`UNSET` and
    sent as ``null`` (turned off) when ``None``.

    Attributes:
        format: Format of the appended audio.
        noise_reduction: Noise reduction.
        transcription: Caller transcription.
        turn_detection: Server or semantic VAD; ``None`` for manual turns.
    """

    format: AudioFormat | None = None
    noise_reduction: NoiseReduction | None | Literal[Unset.UNSET] = UNSET
    transcription: InputTranscription | None | Literal[Unset.UNSET] = UNSET
    turn_detection: TurnDetection = UNSET

    def to_wire(self) -> dict[str, Any]:
        """The GA JSON object."""
        return _to_wire(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioOutputConfig:
    """``audio.output``: the audio the model sends back; ``None`` fields are omitted.

    Attributes:
        format: Output audio format.
        voice: Voice name (``marin``, ``cedar``, ...); fixed once the model has spoken.
        speed: Speech speed 0.25..1.5 (1.0 normal); change only between turns.
    """

    format: AudioFormat | None = None
    voice: str | None = None
    speed: float | None = None

    def __post_init__(self) -> None:
        if self.speed is not None:
            _check_range("speed", self.speed, 0.25, 1.5)

    def to_wire(self) -> dict[str, Any]:
        """The GA JSON object."""
        return _to_wire(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioConfig:
    """``audio``: the input and output halves (``None`` halves are omitted).

    Attributes:
        input: Caller audio settings.
        output: Model audio settings.
    """

    input: AudioInputConfig | None = None
    output: AudioOutputConfig | None = None

    def to_wire(self) -> dict[str, Any]:
        """The GA JSON object."""
        return _to_wire(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionTool:
    """A function tool the model may call.

    Attributes:
        name: Function name the model uses in ``function_call`` items.
        description: When and how to call it, for the model.
        parameters: JSON Schema of the arguments object.
        type: Always ``function``.
    """

    type: Literal["function"] = "function"
    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({"type": "object", "properties": {}})
    )

    def to_wire(self) -> dict[str, Any]:
        """The GA JSON object."""
        return _to_wire(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """A GA ``session`` object (``type: "realtime"``) for ``session.update``.

    ``None`` fields are not part of the update (the server keeps its value); see
    :class:`AudioInputConfig` for the fields that can be sent as ``null``. Lists are stored
    as tuples.

    Attributes:
        type: Always ``realtime``.
        model: Realtime model; cannot change once the session started.
        instructions: System prompt; ``""`` clears it.
        output_modalities: ``("audio",)`` or ``("text",)`` (not both).
        audio: Input and output audio settings.
        tools: Function tools (or raw GA tool objects, e.g. MCP); ``()`` clears them.
        tool_choice: ``"auto"``, ``"none"``, ``"required"`` or ``{"type":"function",...}``.
        max_output_tokens: Output cap per response, or ``"inf"``.
        truncation: ``"auto"``, ``"disabled"`` or a retention-ratio object.
        extra: Further GA session fields (``tracing``, ``reasoning``, ``prompt``, a custom
            ``audio.output.voice`` object, ...), deep-merged under the typed fields.

    Raises:
        ValueError: A value is out of range, or ``extra`` holds ``type`` or a beta key.
    """

    type: Literal["realtime"] = "realtime"
    model: str | None = None
    instructions: str | None = None
    output_modalities: tuple[Literal["audio", "text"], ...] | None = None
    audio: AudioConfig | None = None
    tools: tuple[FunctionTool | Mapping[str, Any], ...] | None = None
    tool_choice: str | Mapping[str, Any] | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    truncation: str | Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def __post_init__(self) -> None:
        if self.type != "realtime":
            raise ValueError("SessionConfig.type must be 'realtime'")
        if self.output_modalities is not None:
            mods = tuple(self.output_modalities)
            if mods not in (("audio",), ("text",)):
                raise ValueError("output_modalities must be ('audio',) or ('text',)")
            object.__setattr__(self, "output_modalities", mods)
        if self.tools is not None:
            object.__setattr__(self, "tools", tuple(self.tools))
        mot: object = self.max_output_tokens
        if mot is not None and mot != "inf":
            if isinstance(mot, bool) or not isinstance(mot, int) or mot < 1:
                raise ValueError("max_output_tokens must be an int >= 1 or 'inf'")
        beta = sorted(_BETA_SESSION_KEYS.intersection(self.extra))
        if beta:
            raise ValueError(f"extra holds beta session keys {beta}; use the GA fields")
        if "type" in self.extra:
            raise ValueError("extra must not set 'type'")

    def to_wire(self) -> dict[str, Any]:
        """The GA JSON ``session`` object, with unset fields omitted."""
        typed = _to_wire(self, skip=("extra",))
        if not self.extra:
            return typed
        merged = _deep_merge(_wire_value(self.extra), typed)
        return {key: merged[key] for key in [*typed, *(k for k in merged if k not in typed)]}

    def merged(self, update: SessionConfig) -> SessionConfig:
        """The effective configuration after sending ``update`` on top of this one.

        Fields set in ``update`` replace ours; ``audio`` and its halves merge field by field,
        ``extra`` merges deeply; everything else (``tools``, a VAD or format object) is
        replaced whole, as the API does for lists.
        """
        merged: SessionConfig = _merge(self, update)
        return merged

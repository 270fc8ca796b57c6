"""Typed events of the OpenAI Realtime API (GA shape only), as frozen values.

Client events (what the gateway sends) and server events (what it receives) are closed unions
of frozen, slotted dataclasses whose names and fields follow the API verbatim, so a call
session can dispatch on them exhaustively with ``assert_never``. :class:`SessionConfig` is the
typed GA session object; its :meth:`SessionConfig.to_wire` never produces the retired beta
keys. Server events keep open-ended parts (items, session objects) as the decoded JSON
mappings and keep output audio as base64 text until :meth:`ResponseOutputAudioDelta.audio` is
called, so only the events that are used pay for conversion. :class:`UnknownServerEvent`
carries any event type this module does not model, so a new API event never kills a call.
Pure: no I/O, no asyncio; JSON text conversion lives in :mod:`gateway.realtime.protocol`.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final, TypeAlias

# Re-exported: the session object is part of this module's vocabulary (``rt.SessionConfig``).
from gateway.realtime.session import (
    UNSET as UNSET,
    AudioConfig as AudioConfig,
    AudioFormat as AudioFormat,
    AudioInputConfig as AudioInputConfig,
    AudioOutputConfig as AudioOutputConfig,
    FunctionTool as FunctionTool,
    InputTranscription as InputTranscription,
    NoiseReduction as NoiseReduction,
    SemanticVad as SemanticVad,
    ServerVad as ServerVad,
    SessionConfig as SessionConfig,
    TurnDetection as TurnDetection,
    Unset as Unset,
)

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})

# --------------------------------------------------------------------------- client events
# Every client event takes an optional ``event_id``; the server echoes it in the ``error``
# event a bad client event causes.


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """``session.update``: change the fields of the session set in ``session``."""

    type: ClassVar[str] = "session.update"
    session: SessionConfig
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class InputAudioBufferAppend:
    """``input_audio_buffer.append``: raw caller audio (base64 happens in the encoder)."""

    type: ClassVar[str] = "input_audio_buffer.append"
    audio: bytes = field(repr=False)
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class InputAudioBufferCommit:
    """``input_audio_buffer.commit``: turn the buffer into a user item (manual turns)."""

    type: ClassVar[str] = "input_audio_buffer.commit"
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class InputAudioBufferClear:
    """``input_audio_buffer.clear``: discard uncommitted caller audio."""

    type: ClassVar[str] = "input_audio_buffer.clear"
    event_id: str | None = None


def _text_message(role: str, text: str) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}


@dataclass(frozen=True, slots=True)
class ConversationItemCreate:
    """``conversation.item.create``: add ``item`` after ``previous_item_id`` (or at the end).

    ``previous_item_id`` ``"root"`` inserts at the start; ``None`` appends.
    """

    type: ClassVar[str] = "conversation.item.create"
    item: Mapping[str, Any]
    previous_item_id: str | None = None
    event_id: str | None = None

    @classmethod
    def user_text(cls, text: str, *, event_id: str | None = None) -> ConversationItemCreate:
        """A user message with one ``input_text`` part."""
        return cls(_text_message("user", text), event_id=event_id)

    @classmethod
    def system_text(cls, text: str, *, event_id: str | None = None) -> ConversationItemCreate:
        """A system message with one ``input_text`` part (e.g. call context)."""
        return cls(_text_message("system", text), event_id=event_id)

    @classmethod
    def function_call_output(
        cls, call_id: str, output: str, *, event_id: str | None = None
    ) -> ConversationItemCreate:
        """The result (usually JSON text) of function call ``call_id``.

        The model does not continue on its own: send ``response.create`` after it.
        """
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        return cls(item, event_id=event_id)


@dataclass(frozen=True, slots=True)
class ConversationItemTruncate:
    """``conversation.item.truncate``: keep ``audio_end_ms`` ms of an assistant item's audio."""

    type: ClassVar[str] = "conversation.item.truncate"
    item_id: str
    content_index: int
    audio_end_ms: int
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConversationItemDelete:
    """``conversation.item.delete``: remove an item from the conversation."""

    type: ClassVar[str] = "conversation.item.delete"
    item_id: str
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseCreate:
    """``response.create``; ``response`` holds overrides for this response only, if any."""

    type: ClassVar[str] = "response.create"
    response: Mapping[str, Any] | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseCancel:
    """``response.cancel``: stop ``response_id``, or the active response when ``None``."""

    type: ClassVar[str] = "response.cancel"
    response_id: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class OutputAudioBufferClear:
    """``output_audio_buffer.clear``: cut off server-side audio (WebRTC/SIP sessions only)."""

    type: ClassVar[str] = "output_audio_buffer.clear"
    event_id: str | None = None


#: Every event the gateway sends.
ClientEvent: TypeAlias = (
    SessionUpdate | InputAudioBufferAppend | InputAudioBufferCommit | InputAudioBufferClear
    | ConversationItemCreate | ConversationItemTruncate | ConversationItemDelete | ResponseCreate
    | ResponseCancel | OutputAudioBufferClear
)


# --------------------------------------------------------------------------- server events
# Keyword-only, field names verbatim from the API. ``event_id`` (the server's id of the event)
# defaults to "" because the API omits it on some events (dtmf_event_received). Shared
# fields: ``response_id`` the response, ``item_id`` the conversation item, ``output_index`` the
# item's position in the response output, ``content_index`` the part's position in the item.


@dataclass(frozen=True, slots=True, kw_only=True)
class _Event:
    event_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorDetail:
    """The ``error`` object of an ``error`` event or of a failed transcription.

    Attributes:
        type: ``invalid_request_error``, ``server_error``, ...
        message: Human-readable text from the API.
        code: Machine code, e.g. ``beta_api_shape_disabled``.
        param: The offending parameter.
        event_id: ``event_id`` of the client event that caused the error.
    """

    type: str
    message: str
    code: str | None = None
    param: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorEvent(_Event):
    """``error``: most errors leave the session open."""

    type: ClassVar[str] = "error"
    error: ErrorDetail


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCreated(_Event):
    """``session.created``: first event of a connection, with the full default session."""

    type: ClassVar[str] = "session.created"
    session: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionUpdated(_Event):
    """``session.updated``: the full effective session after a ``session.update``."""

    type: ClassVar[str] = "session.updated"
    session: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class _ItemEvent(_Event):
    item: Mapping[str, Any]
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemAdded(_ItemEvent):
    """``conversation.item.added``: an item entered the conversation (maybe still empty)."""

    type: ClassVar[str] = "conversation.item.added"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemDone(_ItemEvent):
    """``conversation.item.done``: an item is final (without audio data)."""

    type: ClassVar[str] = "conversation.item.done"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemCreated(_ItemEvent):
    """``conversation.item.created``: legacy name, still in the SDK's union."""

    type: ClassVar[str] = "conversation.item.created"


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemTruncated(_Event):
    """``conversation.item.truncated``: the item's audio now ends at ``audio_end_ms``."""

    type: ClassVar[str] = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemDeleted(_Event):
    """``conversation.item.deleted``."""

    type: ClassVar[str] = "conversation.item.deleted"
    item_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemInputAudioTranscriptionDelta(_Event):
    """``conversation.item.input_audio_transcription.delta``: partial caller transcript."""

    type: ClassVar[str] = "conversation.item.input_audio_transcription.delta"
    item_id: str
    content_index: int | None = None
    delta: str = ""
    logprobs: list[Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemInputAudioTranscriptionCompleted(_Event):
    """``conversation.item.input_audio_transcription.completed``; ``usage`` is its billing."""

    type: ClassVar[str] = "conversation.item.input_audio_transcription.completed"
    item_id: str
    content_index: int
    transcript: str
    usage: Mapping[str, Any] | None = None
    logprobs: list[Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationItemInputAudioTranscriptionFailed(_Event):
    """``conversation.item.input_audio_transcription.failed``."""

    type: ClassVar[str] = "conversation.item.input_audio_transcription.failed"
    item_id: str
    content_index: int
    error: ErrorDetail


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferSpeechStarted(_Event):
    """``input_audio_buffer.speech_started``: the caller started talking (barge-in cue).

    ``audio_start_ms`` counts from the start of all audio appended in the session.
    """

    type: ClassVar[str] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferSpeechStopped(_Event):
    """``input_audio_buffer.speech_stopped``."""

    type: ClassVar[str] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferCommitted(_Event):
    """``input_audio_buffer.committed``: ``item_id`` is the user item made of the buffer."""

    type: ClassVar[str] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferCleared(_Event):
    """``input_audio_buffer.cleared``."""

    type: ClassVar[str] = "input_audio_buffer.cleared"


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferTimeoutTriggered(_Event):
    """``input_audio_buffer.timeout_triggered``: the VAD's ``idle_timeout_ms`` fired."""

    type: ClassVar[str] = "input_audio_buffer.timeout_triggered"
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class InputAudioBufferDtmfEventReceived(_Event):
    """``input_audio_buffer.dtmf_event_received`` (SIP only): key ``event``, unix time."""

    type: ClassVar[str] = "input_audio_buffer.dtmf_event_received"
    event: str
    received_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _OutputAudioBufferEvent(_Event):
    response_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputAudioBufferStarted(_OutputAudioBufferEvent):
    """``output_audio_buffer.started`` (WebRTC/SIP sessions only)."""

    type: ClassVar[str] = "output_audio_buffer.started"


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputAudioBufferStopped(_OutputAudioBufferEvent):
    """``output_audio_buffer.stopped`` (WebRTC/SIP sessions only)."""

    type: ClassVar[str] = "output_audio_buffer.stopped"


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputAudioBufferCleared(_OutputAudioBufferEvent):
    """``output_audio_buffer.cleared`` (WebRTC/SIP sessions only)."""

    type: ClassVar[str] = "output_audio_buffer.cleared"


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """``response.usage``: tokens billed for one response (input = the whole conversation).

    Attributes:
        total_tokens: Input plus output tokens.
        input_tokens: Tokens read.
        output_tokens: Tokens generated.
        input_token_details: Text/audio/image/cached split of the input.
        output_token_details: Text/audio split of the output.
    """

    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    input_token_details: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    output_token_details: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseInfo:
    """The ``response`` object of ``response.created`` and ``response.done``.

    Attributes:
        id: Response id (``resp_...``).
        status: ``in_progress``, ``completed``, ``cancelled``, ``failed`` or ``incomplete``.
        status_details: ``{type, reason, error}``; ``reason`` is e.g. ``turn_detected``.
        output: The output items.
        usage: Token counts (on ``response.done``).
        conversation_id: Conversation the output went to.
        metadata: The metadata given in ``response.create``.
        raw: The whole response object as received.
    """

    id: str
    status: str = ""
    status_details: Mapping[str, Any] | None = None
    output: tuple[Mapping[str, Any], ...] = ()
    usage: Usage | None = None
    conversation_id: str | None = None
    metadata: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseCreated(_Event):
    """``response.created`` (status ``in_progress``)."""

    type: ClassVar[str] = "response.created"
    response: ResponseInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseDone(_Event):
    """``response.done``: the response completed, was cancelled, failed or is incomplete."""

    type: ClassVar[str] = "response.done"
    response: ResponseInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class _OutputItemEvent(_Event):
    response_id: str
    output_index: int
    item: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputItemAdded(_OutputItemEvent):
    """``response.output_item.added`` (the item has no content yet)."""

    type: ClassVar[str] = "response.output_item.added"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputItemDone(_OutputItemEvent):
    """``response.output_item.done`` (also sent on interrupt or cancel)."""

    type: ClassVar[str] = "response.output_item.done"


@dataclass(frozen=True, slots=True, kw_only=True)
class _PartEvent(_Event):
    response_id: str
    item_id: str
    output_index: int
    content_index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseContentPartAdded(_PartEvent):
    """``response.content_part.added``; ``part`` is ``{type, text?, audio?, transcript?}``."""

    type: ClassVar[str] = "response.content_part.added"
    part: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseContentPartDone(_PartEvent):
    """``response.content_part.done``; ``part`` is ``{type, text?, audio?, transcript?}``."""

    type: ClassVar[str] = "response.content_part.done"
    part: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputAudioDelta(_PartEvent):
    """``response.output_audio.delta``: a chunk of model speech, base64 in ``delta``.

    The text is decoded only when :meth:`audio` is called, so skipped events cost nothing.
    """

    type: ClassVar[str] = "response.output_audio.delta"
    delta: str = field(repr=False)

    def audio(self) -> bytes:
        """The audio bytes, in the session's output format.

        Raises:
            binascii.Error: ``delta`` is not valid base64 (a ``ValueError``).
        """
        return base64.b64decode(self.delta, validate=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputAudioDone(_PartEvent):
    """``response.output_audio.done``: the model finished speaking this part."""

    type: ClassVar[str] = "response.output_audio.done"


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputAudioTranscriptDelta(_PartEvent):
    """``response.output_audio_transcript.delta``: text of what the model is saying."""

    type: ClassVar[str] = "response.output_audio_transcript.delta"
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputAudioTranscriptDone(_PartEvent):
    """``response.output_audio_transcript.done``: the whole transcript of the part."""

    type: ClassVar[str] = "response.output_audio_transcript.done"
    transcript: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputTextDelta(_PartEvent):
    """``response.output_text.delta`` (text-only sessions)."""

    type: ClassVar[str] = "response.output_text.delta"
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseOutputTextDone(_PartEvent):
    """``response.output_text.done`` (text-only sessions)."""

    type: ClassVar[str] = "response.output_text.done"
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseFunctionCallArgumentsDelta(_Event):
    """``response.function_call_arguments.delta``: JSON text added to the arguments."""

    type: ClassVar[str] = "response.function_call_arguments.delta"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseFunctionCallArgumentsDone(_Event):
    """``response.function_call_arguments.done`` (also sent on interrupt or cancel).

    Answer with :meth:`ConversationItemCreate.function_call_output` for ``call_id``.
    """

    type: ClassVar[str] = "response.function_call_arguments.done"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """One entry of ``rate_limits.updated`` (``name`` is ``requests`` or ``tokens``)."""

    name: str | None = None
    limit: int | None = None
    remaining: int | None = None
    reset_seconds: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitsUpdated(_Event):
    """``rate_limits.updated``: sent at the start of each response."""

    type: ClassVar[str] = "rate_limits.updated"
    rate_limits: tuple[RateLimit, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownServerEvent:
    """A server event of a type this module does not model: kept, never fatal.

    Attributes:
        type: The event's ``type``.
        raw: The whole decoded JSON object.
    """

    type: str
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def event_id(self) -> str:
        """The server event id, or ``""``."""
        value = self.raw.get("event_id")
        return value if isinstance(value, str) else ""


#: Every server event: the typed ones and the catch-all.
ServerEvent: TypeAlias = (
    ErrorEvent | SessionCreated | SessionUpdated | ConversationItemAdded | ConversationItemDone
    | ConversationItemCreated | ConversationItemTruncated | ConversationItemDeleted
    | ConversationItemInputAudioTranscriptionDelta
    | ConversationItemInputAudioTranscriptionCompleted
    | ConversationItemInputAudioTranscriptionFailed | InputAudioBufferSpeechStarted
    | InputAudioBufferSpeechStopped | InputAudioBufferCommitted | InputAudioBufferCleared
    | InputAudioBufferTimeoutTriggered | InputAudioBufferDtmfEventReceived
    | OutputAudioBufferStarted | OutputAudioBufferStopped | OutputAudioBufferCleared
    | ResponseCreated | ResponseOutputItemAdded | ResponseOutputItemDone
    | ResponseContentPartAdded | ResponseContentPartDone | ResponseOutputAudioDelta
    | ResponseOutputAudioDone | ResponseOutputAudioTranscriptDelta
    | ResponseOutputAudioTranscriptDone | ResponseOutputTextDelta | ResponseOutputTextDone
    | ResponseFunctionCallArgumentsDelta | ResponseFunctionCallArgumentsDone | ResponseDone
    | RateLimitsUpdated | UnknownServerEvent
)

#: The typed server event classes: every member of :data:`ServerEvent` but the catch-all.
SERVER_EVENT_CLASSES: Final[tuple[type[Any], ...]] = tuple(
    cls for cls in ServerEvent.__args__ if cls is not UnknownServerEvent
)


@dataclass(frozen=True, slots=True)
class Reconnected:
    """Pseudo-event from the client: the WebSocket was replaced after a drop.

    The session configuration was sent again before any audio, but the new connection may be
    a new server session: conversation items, the input buffer and any response in progress
    may be gone, and a ``session.created`` with a new session id follows.

    Attributes:
        attempt: Connection attempts this reconnect took (1 = the first try worked).
        close_code: Close code of the connection that was lost (``None`` after a rotation).
        rotated: The client replaced a working connection on purpose
            (:meth:`gateway.realtime.client.RealtimeClient.rotate`); nothing was lost.
    """

    attempt: int
    close_code: int | None = None
    rotated: bool = False


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """Pseudo-event from the client: the WebSocket dropped and a reconnect has begun.

    Sent only with ``reconnect`` on, before the first new attempt. A :class:`Reconnected`
    follows if a new connection opens; otherwise iteration ends with the connect error.

    Attributes:
        close_code: Close code of the connection that was lost (1006 without a close frame).
    """

    close_code: int


#: What iterating a :class:`gateway.realtime.client.RealtimeClient` yields.
StreamEvent: TypeAlias = ServerEvent | Reconnected | ConnectionLost

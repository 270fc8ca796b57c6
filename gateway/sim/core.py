"""The simulated Realtime session: a sans-I/O state machine over GA client events.

:class:`SimSession` receives client events one at a time (:meth:`SimSession.receive_text` or
:meth:`SimSession.receive`) and returns the server events to send in reply, in order. It
validates ``session.update`` through :mod:`gateway.sim.validate`, decodes appended audio and
runs the energy VAD over it (``speech_started`` / ``speech_stopped`` / commit / user item /
input transcription / automatic response, barge-in cancellation), keeps the conversation
items, answers truncate, delete and retrieve, and starts responses. A started response is a
:class:`~gateway.sim.responses.ResponseRun` that the server adapter drives and paces; the
core only decides *what* it says, from the session's scenario (chosen by instructions, then
by name). Protocol errors become ``error`` events with the real API's codes; the session
stays open unless :attr:`SimSession.close_request` is set. A SIP call's session
(``call_audio``) takes the caller's RTP audio from :meth:`SimSession.caller_audio` instead of
``input_audio_buffer.append``, reports keypad presses (:meth:`SimSession.dtmf`) and lets the
call's playout truncate what the caller did not hear (:meth:`SimSession.truncate_played`).
Pure: no sockets, clocks or tasks.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from gateway.sim.audio import G711_RATE, bytes_to_ms, decode_input, format_rate, resample_pcm16
from gateway.sim.conversation import (
    ClientEventError,
    Conversation,
    EventFactory,
    IdFactory,
    invalid_type,
    normalize_item,
    public_item,
    required,
)
from gateway.sim.responses import ResponseRun, ResponseSpec
from gateway.sim.scenario import (
    Say,
    Scenario,
    ScenarioBook,
    Step,
    TemplateContext,
    literal,
    quoted_text,
)
from gateway.sim.vad import EnergyVad, SpeechStarted, SpeechStopped
from gateway.sim.validate import (
    BETA_CLOSE_CODE,
    BETA_MESSAGE,
    SessionError,
    apply_session_update,
    check_voice_change,
    default_session,
)

#: The client event types of the GA API.
CLIENT_EVENT_TYPES: Final = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.truncate",
    "conversation.item.delete",
    "conversation.item.retrieve",
    "response.create",
    "response.cancel",
    "output_audio_buffer.clear",
)
#: Shortest buffer the API commits.
MIN_COMMIT_MS: Final = 100.0
#: Keys of RFC 4733 telephone-events, as ``input_audio_buffer.dtmf_event_received`` reports them.
DTMF_KEYS: Final = frozenset("0123456789*#ABCD")
#: Error code for ``input_audio_buffer.append`` on a SIP call (simulator's choice: the caller's
#: audio arrives over RTP, so appending on the sideband is refused rather than mixed in).
APPEND_ON_CALL_CODE: Final = "input_audio_buffer_append_not_supported"
_CLOSE_REASON_MAX: Final = 120


@dataclass(frozen=True)
class CloseRequest:
    """The core wants the WebSocket closed after the events it returned."""

    code: int
    reason: str


Events = list[dict[str, Any]]


class SimSession:
    """One simulated Realtime session.

    Args:
        model: Model named in ``?model=`` (or the default for ``?call_id=`` sessions).
        scenarios: The scenario book.
        scenario: Name given with ``?scenario=``, used when no ``match`` selects one.
        sip: A sideband session attached to a SIP call (G.711 μ-law formats by default).
        chunk_ms: Audio per ``response.output_audio.delta``.
        ids: Id source; pass a seeded :class:`IdFactory` for reproducible tests.
        session: The effective session to start from (a Realtime Calls ``accept``
            configures it); :func:`~gateway.sim.validate.default_session` when ``None``.
        call_audio: The session is a SIP call's: the caller's audio comes from
            :meth:`caller_audio` (RTP), ``input_audio_buffer.append`` is refused, and
            ``session.update`` may not set ``audio.*.format`` (negotiated in SDP).

    Attributes:
        session: The effective session object (as in ``session.updated``).
        conversation: Items of the default conversation.
        scenario: The scenario currently selected.
        received: Every client event received, parsed, in order.
        close_request: Set when the session must be closed (e.g. beta shape, code 4000).
    """

    def __init__(
        self,
        *,
        model: str,
        scenarios: ScenarioBook | None = None,
        scenario: str | None = None,
        sip: bool = False,
        chunk_ms: int = 100,
        ids: IdFactory | None = None,
        session: dict[str, Any] | None = None,
        call_audio: bool = False,
    ) -> None:
        self.ids = ids or IdFactory()
        self.events = EventFactory(self.ids)
        self.session: dict[str, Any] = (
            copy.deepcopy(session) if session is not None else default_session(model, sip=sip)
        )
        self.call_audio = call_audio
        self.conversation = Conversation(self.ids.new("conv"))
        self.received: list[dict[str, Any]] = []
        self.close_request: CloseRequest | None = None
        self.chunk_ms = chunk_ms
        self._book = scenarios or ScenarioBook.default()
        self._requested = scenario
        self.scenario: Scenario = self._book.select(self._instructions(), scenario)
        self._turns: dict[str, int] = {}
        self._active: ResponseRun | None = None
        self._started: list[ResponseRun] = []
        self._last_response_id: str | None = None
        # Input audio: session time, the uncommitted buffer and the VAD over it.
        self._input_ms = 0.0
        self._buffer_ms = 0.0
        self._vad: EnergyVad | None = None
        self._vad_base_ms = 0
        self._speech_item: str | None = None
        self._speech_start_ms = 0
        self._build_vad()
        # Template context.
        self._tool_output: str | None = None
        self._user_text = ""
        self._pending_text: str | None = None
        self._heard_ms = 0
        self._handlers: dict[str, Callable[[dict[str, Any]], Events]] = {
            "session.update": self._session_update,
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit_manual,
            "input_audio_buffer.clear": self._clear,
            "conversation.item.create": self._item_create,
            "conversation.item.truncate": self._truncate,
            "conversation.item.delete": self._delete,
            "conversation.item.retrieve": self._retrieve,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
            "output_audio_buffer.clear": self._output_clear,
        }

    # --- public API -----------------------------------------------------------------------

    def open(self) -> Events:
        """The events sent right after the WebSocket opens: ``session.created``."""
        return [self.events.make("session.created", session=copy.deepcopy(self.session))]

    def beta_rejection(self) -> Events:
        """The error sent to a client that connected with an ``OpenAI-Beta`` header.

        Also sets :attr:`close_request` to code 4000, as the API closes such sockets.
        """
        exc = SessionError("beta_api_shape_disabled", BETA_MESSAGE, close_code=BETA_CLOSE_CODE)
        return self._session_error(exc, None)

    @property
    def active_response(self) -> ResponseRun | None:
        """The response in progress, or ``None``."""
        if self._active is not None and self._active.finished:
            self._active = None
        return self._active

    def take_started_responses(self) -> list[ResponseRun]:
        """Responses started since the last call, for the server to drive (oldest first)."""
        runs, self._started = self._started, []
        return runs

    def caller_audio(self, pcm16: bytes, sample_rate: int = G711_RATE) -> Events:
        """Audio the caller sent over RTP on a SIP call, decoded to PCM16.

        It goes through the same buffer and VAD as appended audio, so turns, barge-in and
        automatic responses behave the same; it is not a client event (not in
        :attr:`received`).

        Args:
            pcm16: Little-endian PCM16 mono, any length (odd trailing byte dropped).
            sample_rate: Its rate (8000 for G.711 RTP).

        Returns:
            The server events this audio causes (VAD events, commit, response start).
        """
        pcm16 = pcm16[: len(pcm16) - len(pcm16) % 2]
        ms = len(pcm16) / 2 / sample_rate * 1000
        rate = self._vad.sample_rate if self._vad is not None else sample_rate
        return self._take_input(resample_pcm16(pcm16, sample_rate, rate), ms)

    def dtmf(self, key: str, received_at: int) -> Events:
        """A keypad press the caller sent (RFC 4733 telephone-event) on a SIP call.

        Args:
            key: One of ``0-9 * # A-D``.
            received_at: Unix time (s) the server received it.

        Returns:
            ``input_audio_buffer.dtmf_event_received`` (without ``event_id``, as the SDK's
            type has none).

        Raises:
            ValueError: Not a DTMF key.
        """
        if key not in DTMF_KEYS or len(key) != 1:
            raise ValueError(f"not a DTMF key: {key!r}")
        return [
            {"type": "input_audio_buffer.dtmf_event_received", "event": key,
             "received_at": int(received_at)}
        ]

    def truncate_played(self, item_id: str, audio_end_ms: int) -> Events:
        """Truncate an assistant item to the audio the caller heard (server side, SIP barge-in).

        Args:
            item_id: The assistant message that was playing.
            audio_end_ms: How much of it was played, clamped to the audio generated.

        Returns:
            ``conversation.item.truncated``, or nothing for an item that is gone or has no
            audio.
        """
        item = self.conversation.get(item_id)
        sent = self.conversation.assistant_audio_ms.get(item_id)
        if item is None or not sent:
            return []
        return self._apply_truncate(item, 0, max(0, min(audio_end_ms, int(sent + 1e-6))))

    def receive_text(self, data: str | bytes) -> Events:
        """Handle one WebSocket message (JSON text) from the client."""
        try:
            event = json.loads(data)
        except ValueError as exc:
            return [self.events.error("invalid_json", f"Invalid JSON in client event: {exc}")]
        if not isinstance(event, dict):
            return [
                self.events.error("invalid_type", "Invalid client event: expected a JSON object.")
            ]
        return self.receive(event)

    def receive(self, event: dict[str, Any]) -> Events:
        """Handle one parsed client event.

        Returns:
            Server events to send now, in order. Responses started by this event are also
            available from :meth:`take_started_responses`.
        """
        self.received.append(event)
        client_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        kind = event.get("type")
        try:
            if kind is None:
                raise ClientEventError(
                    "missing_required_parameter", "Missing required parameter: 'type'.", "type"
                )
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                supported = ", ".join(f"'{t}'" for t in CLIENT_EVENT_TYPES)
                raise ClientEventError(
                    "invalid_value",
                    f"Invalid value: '{kind}'. Supported values are: {supported}.",
                    "type",
                )
            return handler(event)
        except ClientEventError as exc:
            return [
                self.events.error(
                    exc.code,
                    exc.message,
                    param=exc.param,
                    client_event_id=client_id,
                    type_=exc.type,
                )
            ]
        except SessionError as exc:
            return self._session_error(exc, client_id)

    # --- session --------------------------------------------------------------------------

    def _session_error(self, exc: SessionError, client_id: str | None) -> Events:
        if exc.close_code is not None:
            self.close_request = CloseRequest(exc.close_code, exc.message[:_CLOSE_REASON_MAX])
        return [
            self.events.error(
                exc.code, exc.message, param=exc.param, client_event_id=client_id, type_=exc.type
            )
        ]

    def _session_update(self, event: dict[str, Any]) -> Events:
        if "session" not in event:
            raise ClientEventError(
                "missing_required_parameter", "Missing required parameter: 'session'.", "session"
            )
        new = apply_session_update(self.session, event["session"], sip_call=self.call_audio)
        check_voice_change(self.session, new, self.conversation.audio_emitted)
        old, self.session = self.session, new
        if _input_config(old) != _input_config(new):
            self._build_vad()
        self.scenario = self._book.select(self._instructions(), self._requested)
        return [self.events.make("session.updated", session=copy.deepcopy(new))]

    def _instructions(self) -> str:
        value = self.session.get("instructions")
        return value if isinstance(value, str) else ""

    def _input(self) -> dict[str, Any]:
        audio = self.session.get("audio") or {}
        return dict(audio.get("input") or {})

    def _output(self) -> dict[str, Any]:
        audio = self.session.get("audio") or {}
        return dict(audio.get("output") or {})

    def _build_vad(self) -> None:
        inp = self._input()
        rate = format_rate(inp.get("format") or {"type": "audio/pcm"})
        self._vad = EnergyVad.for_turn_detection(inp.get("turn_detection"), rate)
        self._vad_base_ms = round(self._input_ms)
        self._speech_item = None

    # --- input audio ----------------------------------------------------------------------

    def _append(self, event: dict[str, Any]) -> Events:
        if self.call_audio:
            raise ClientEventError(
                APPEND_ON_CALL_CODE,
                "input_audio_buffer.append is not supported on a SIP call: the caller's audio "
                "arrives over RTP.",
            )
        audio = required(event, "audio", str)
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ClientEventError(
                "invalid_value", "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio"
            ) from None
        fmt = self._input().get("format") or {"type": "audio/pcm", "rate": 24000}
        try:
            pcm = decode_input(fmt, raw)
        except ValueError as exc:
            raise ClientEventError("invalid_value", f"Invalid 'audio': {exc}.", "audio") from None
        return self._take_input(pcm, bytes_to_ms(fmt, len(raw)))

    def _take_input(self, pcm: bytes, ms: float) -> Events:
        self._input_ms += ms
        self._buffer_ms += ms
        events: Events = []
        if self._vad is not None:
            for vad_event in self._vad.feed(pcm):
                events.extend(self._on_vad(vad_event))
        return events

    def _on_vad(self, vad_event: SpeechStarted | SpeechStopped) -> Events:
        td = self._input().get("turn_detection") or {}
        if isinstance(vad_event, SpeechStarted):
            self._speech_item = self.ids.new("item")
            self._speech_start_ms = self._vad_base_ms + vad_event.audio_start_ms
            events = [
                self.events.make(
                    "input_audio_buffer.speech_started",
                    audio_start_ms=self._speech_start_ms,
                    item_id=self._speech_item,
                )
            ]
            active = self.active_response
            if active is not None and td.get("interrupt_response", True):
                events.extend(active.cancel("turn_detected"))
            return events
        end_ms = self._vad_base_ms + vad_event.audio_end_ms
        item_id = self._speech_item or self.ids.new("item")
        self._speech_item = None
        events = [
            self.events.make(
                "input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=item_id
            )
        ]
        events.extend(self._commit(item_id, float(end_ms - self._speech_start_ms)))
        if td.get("create_response", True) and self.active_response is None:
            events.extend(self._start_response({}))
        return events

    def _commit_manual(self, event: dict[str, Any]) -> Events:
        if self._buffer_ms <= 0:
            raise ClientEventError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: the buffer is empty.",
            )
        if self._buffer_ms < MIN_COMMIT_MS:
            raise ClientEventError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS:.0f}ms of audio, but buffer only has {self._buffer_ms:.2f}ms "
                "of audio.",
            )
        item_id = self._speech_item or self.ids.new("item")
        events = self._commit(item_id, self._buffer_ms)
        self._reset_vad()
        return events

    def _clear(self, event: dict[str, Any]) -> Events:
        self._buffer_ms = 0.0
        self._reset_vad()
        return [self.events.make("input_audio_buffer.cleared")]

    def _reset_vad(self) -> None:
        if self._vad is not None:
            self._vad.reset()
        self._speech_item = None

    def _commit(self, item_id: str, audio_ms: float) -> Events:
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        previous = self.conversation.add(item)
        self.conversation.user_audio_ms[item_id] = audio_ms
        self._buffer_ms = 0.0
        self._heard_ms = round(audio_ms)
        events = [
            self.events.make(
                "input_audio_buffer.committed", previous_item_id=previous, item_id=item_id
            ),
            self.events.make(
                "conversation.item.added", previous_item_id=previous, item=public_item(item)
            ),
            self.events.make(
                "conversation.item.done", previous_item_id=previous, item=public_item(item)
            ),
        ]
        if self._input().get("transcription") is not None:
            transcript = self._peek_user_says() or ""
            item["content"][0]["transcript"] = transcript
            if transcript:
                self._user_text = transcript
            audio_tokens = int(audio_ms / 100 + 0.999)
            text_tokens = (len(transcript) + 3) // 4
            events.append(
                self.events.make(
                    "conversation.item.input_audio_transcription.completed",
                    item_id=item_id,
                    content_index=0,
                    transcript=transcript,
                    usage={
                        "type": "tokens",
                        "input_tokens": audio_tokens,
                        "output_tokens": text_tokens,
                        "total_tokens": audio_tokens + text_tokens,
                        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                    },
                )
            )
        return events

    # --- conversation items ---------------------------------------------------------------

    def _item_create(self, event: dict[str, Any]) -> Events:
        raw = required(event, "item", dict)
        after = event.get("previous_item_id")
        if after is not None:
            if not isinstance(after, str):
                raise invalid_type("previous_item_id", "a string", after)
            if after != "root" and self.conversation.get(after) is None:
                raise ClientEventError(
                    "invalid_value",
                    f"Invalid 'previous_item_id': no item with id '{after}' exists.",
                    "previous_item_id",
                )
        item = normalize_item(raw, self.conversation, self.ids)
        previous = self.conversation.add(item, after)
        self._note_item(item)
        return [
            self.events.make(
                "conversation.item.added", previous_item_id=previous, item=public_item(item)
            ),
            self.events.make(
                "conversation.item.done", previous_item_id=previous, item=public_item(item)
            ),
        ]

    def _note_item(self, item: dict[str, Any]) -> None:
        if item["type"] == "function_call_output":
            self._tool_output = item["output"]
        elif item["type"] == "message" and item["role"] == "user":
            texts = [p.get("text") for p in item["content"] if p.get("type") == "input_text"]
            text = " ".join(t for t in texts if isinstance(t, str))
            if text:
                self._user_text = text
                self._pending_text = text

    def _truncate(self, event: dict[str, Any]) -> Events:
        item_id = required(event, "item_id", str)
        content_index = required(event, "content_index", int)
        audio_end_ms = required(event, "audio_end_ms", int)
        if audio_end_ms < 0:
            raise ClientEventError(
                "invalid_value", "Invalid 'audio_end_ms': must be 0 or greater.", "audio_end_ms"
            )
        item = self.conversation.get(item_id)
        if item is None:
            raise ClientEventError(
                "invalid_value", f"Item with item_id '{item_id}' not found.", "item_id"
            )
        sent = self.conversation.assistant_audio_ms.get(item_id)
        if item.get("role") != "assistant" or not sent:
            raise ClientEventError(
                "unsupported_content_type",
                "Only model output audio messages can be truncated",
                "item_id",
            )
        if content_index != 0:
            raise ClientEventError(
                "invalid_value",
                f"Invalid 'content_index': {content_index}. "
                "The item has one content part (index 0).",
                "content_index",
            )
        if audio_end_ms > sent + 1e-6:
            raise ClientEventError(
                "invalid_value",
                f"Audio content of {int(sent + 1e-6)}ms is already shorter than {audio_end_ms}ms",
                "audio_end_ms",
            )
        return self._apply_truncate(item, content_index, audio_end_ms)

    def _apply_truncate(
        self, item: dict[str, Any], content_index: int, audio_end_ms: int
    ) -> Events:
        item_id = item["id"]
        sent = self.conversation.assistant_audio_ms.get(item_id) or 0.0
        part = item["content"][0]
        transcript = part.get("transcript")
        if isinstance(transcript, str) and sent > 0:
            # The API drops the transcript of audio the caller never heard.
            words = transcript.split()
            part["transcript"] = " ".join(words[: int(len(words) * audio_end_ms / sent)])
        self.conversation.assistant_audio_ms[item_id] = float(audio_end_ms)
        return [
            self.events.make(
                "conversation.item.truncated",
                item_id=item_id,
                content_index=content_index,
                audio_end_ms=audio_end_ms,
            )
        ]

    def _delete(self, event: dict[str, Any]) -> Events:
        item_id = required(event, "item_id", str)
        if not self.conversation.delete(item_id):
            raise ClientEventError(
                "invalid_value", f"Item with item_id '{item_id}' not found.", "item_id"
            )
        return [self.events.make("conversation.item.deleted", item_id=item_id)]

    def _retrieve(self, event: dict[str, Any]) -> Events:
        item_id = required(event, "item_id", str)
        item = self.conversation.get(item_id)
        if item is None:
            raise ClientEventError(
                "invalid_value", f"Item with item_id '{item_id}' not found.", "item_id"
            )
        return [self.events.make("conversation.item.retrieved", item=copy.deepcopy(item))]

    # --- responses ------------------------------------------------------------------------

    def _response_create(self, event: dict[str, Any]) -> Events:
        active = self.active_response
        if active is not None:
            raise ClientEventError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {active.id}. Wait "
                "until the response is finished before creating a new response.",
            )
        params = event.get("response")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise invalid_type("response", "an object", params)
        return self._start_response(params)

    def _response_cancel(self, event: dict[str, Any]) -> Events:
        active = self.active_response
        wanted = event.get("response_id")
        if active is None or (wanted is not None and wanted != active.id):
            raise ClientEventError(
                "response_cancel_not_active", "Cancellation failed: no active response found"
            )
        return active.cancel("client_cancelled")

    def _output_clear(self, event: dict[str, Any]) -> Events:
        active = self.active_response
        response_id = active.id if active is not None else self._last_response_id
        return [self.events.make("output_audio_buffer.cleared", response_id=response_id or "")]

    def _start_response(self, params: dict[str, Any]) -> Events:
        spec = self._response_spec(params)
        run = ResponseRun(spec, self.conversation, self.events)
        self._active = run
        self._last_response_id = run.id
        self._started.append(run)
        return [run.created_event()]

    def _response_spec(self, params: dict[str, Any]) -> ResponseSpec:
        modalities = params.get("output_modalities", self.session.get("output_modalities"))
        if modalities not in (["audio"], ["text"]):
            raise ClientEventError(
                "invalid_value",
                f"Invalid value for 'response.output_modalities': "
                f"{modalities!r}. Use ['audio'] or ['text'].",
                "response.output_modalities",
            )
        output = self._output()
        override = (params.get("audio") or {}).get("output") or {}
        if not isinstance(override, dict):
            raise invalid_type("response.audio.output", "an object", override)
        fmt = override.get("format") or output.get("format") or {"type": "audio/pcm", "rate": 24000}
        try:
            format_rate(fmt)
        except ValueError:
            raise ClientEventError(
                "invalid_value",
                f"Invalid value for 'response.audio.output.format': {fmt!r}.",
                "response.audio.output.format",
            ) from None
        conversation = params.get("conversation", "auto")
        metadata = params.get("metadata")
        tools = params.get("tools", self.session.get("tools")) or []
        tool_names = frozenset(
            str(t["name"]) for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
        )
        instructions = params.get("instructions")
        steps = self._choose_steps(instructions if isinstance(instructions, str) else None)
        return ResponseSpec(
            steps=steps,
            context=TemplateContext(self._tool_output, self._user_text, self._heard_ms),
            modalities=tuple(modalities),
            output_format=dict(fmt),
            voice=override.get("voice") or output.get("voice") or "marin",
            speed=float(output.get("speed") or 1.0),
            in_conversation=conversation != "none",
            metadata=metadata if isinstance(metadata, dict) else None,
            max_output_tokens=params.get(
                "max_output_tokens", self.session.get("max_output_tokens", "inf")
            ),
            tool_names=tool_names,
            input_tokens=self.conversation.input_tokens(
                instructions if isinstance(instructions, str) else self._instructions(), tools
            ),
            chunk_ms=self.chunk_ms,
        )

    def _choose_steps(self, instructions: str | None) -> tuple[Step, ...]:
        quoted = quoted_text(instructions) if instructions else None
        if quoted is not None:
            return (Say(literal(quoted)),)
        scenario = self.scenario
        pending, self._pending_text = self._pending_text, None
        if pending is not None:
            for rule in scenario.rules:
                if rule.when.search(pending):
                    return rule.steps
        index = self._turns.get(scenario.name, 0)
        if index < len(scenario.turns):
            self._turns[scenario.name] = index + 1
            return scenario.turns[index].steps
        return scenario.fallback

    def _peek_user_says(self) -> str | None:
        index = self._turns.get(self.scenario.name, 0)
        if index < len(self.scenario.turns):
            return self.scenario.turns[index].user_says
        return None


def _input_config(session: dict[str, Any]) -> tuple[str, str]:
    inp = (session.get("audio") or {}).get("input") or {}
    return (
        json.dumps(inp.get("format"), sort_keys=True),
        json.dumps(inp.get("turn_detection"), sort_keys=True),
    )

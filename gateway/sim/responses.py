"""One simulated model response: the exact GA event sequence for a scenario turn.

A :class:`ResponseRun` turns the steps of a scenario turn into the events the real API sends:
``response.output_item.added``, ``conversation.item.added``, ``response.content_part.added``,
interleaved ``response.output_audio.delta`` / ``response.output_audio_transcript.delta``, the
``.done`` events, function-call argument events, and finally ``response.done`` with usage. It
is sans-I/O: :meth:`ResponseRun.advance` returns one :data:`Instruction` at a time (events to
send, text to synthesise, audio time to pace, a pause, or a close), and the server adapter
performs it and calls again. :meth:`ResponseRun.cancel` ends the run at once with the events
the API sends for a cancelled response (open item marked ``incomplete``, ``response.done``
with ``status_details.reason``).
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.sim.audio import bytes_to_ms, encode_output, ms_to_bytes
from gateway.sim.conversation import Conversation, EventFactory, public_item, tokens_for_chars
from gateway.sim.scenario import (
    END_CALL_TOOL,
    Call,
    Handoff,
    Hangup,
    Say,
    Step,
    TemplateContext,
    Wait,
    render,
    render_value,
)

#: Close code and reason when a ``hangup`` step ends a session that has no ``end_call`` tool.
HANGUP_CLOSE: Final = (1000, "The scenario ended the call.")
_ARGUMENT_DELTA_CHARS: Final = 24


@dataclass(frozen=True)
class Emit:
    """Send these server events now, in order."""

    events: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Synthesize:
    """Synthesise ``text`` with ``voice`` at ``speed`` as 24 kHz PCM16 for the next ``advance``."""

    text: str
    voice: str
    speed: float = 1.0


@dataclass(frozen=True)
class Pace:
    """``audio_ms`` of audio were just emitted; keep sending at the configured speed."""

    audio_ms: float


@dataclass(frozen=True)
class Pause:
    """Wait ``ms`` milliseconds of wall-clock time (a scenario ``wait`` step)."""

    ms: int


@dataclass(frozen=True)
class Close:
    """Close the WebSocket with ``code`` and ``reason`` (after everything already emitted)."""

    code: int
    reason: str


Instruction = Emit | Synthesize | Pace | Pause | Close


@dataclass(frozen=True)
class ResponseSpec:
    """Everything a response needs, fixed when it is created.

    Attributes:
        steps: Scenario steps to perform.
        context: Template values for ``say`` texts and call arguments.
        modalities: ``("audio",)`` or ``("text",)``.
        output_format: GA format object of the audio deltas.
        voice: Voice name or custom ``{"id": ...}`` voice.
        speed: The session's ``audio.output.speed`` (speaking rate, 0.25 to 1.5).
        in_conversation: ``False`` for ``conversation: "none"`` (out-of-band) responses.
        metadata: ``response.metadata`` to echo, or ``None``.
        max_output_tokens: The effective ``max_output_tokens``.
        tool_names: Function tools the session or response declares.
        input_tokens: ``(text, audio)`` input token estimate for usage.
        chunk_ms: Audio per ``response.output_audio.delta``.
    """

    steps: tuple[Step, ...]
    context: TemplateContext
    modalities: tuple[str, ...]
    output_format: Mapping[str, Any]
    voice: Any
    speed: float = 1.0
    in_conversation: bool = True
    metadata: Mapping[str, Any] | None = None
    max_output_tokens: int | str = "inf"
    tool_names: frozenset[str] = frozenset()
    input_tokens: tuple[int, int] = (0, 0)
    chunk_ms: int = 100


@dataclass
class _OpenMessage:
    item: dict[str, Any]
    output_index: int
    audio: bool
    text_so_far: str = ""


class ResponseRun:
    """The state and event stream of one response.

    Attributes:
        id: The response id (``resp_...``).
        finished: Whether ``response.done`` has been produced.
        status: ``in_progress``, then ``completed`` or ``cancelled``.
        output: Output items in output order (their latest state).
    """

    def __init__(self, spec: ResponseSpec, conversation: Conversation, events: EventFactory):
        self.spec = spec
        self.id = events.ids.new("resp")
        self.status = "in_progress"
        self.finished = False
        self.output: list[dict[str, Any]] = []
        self._conv = conversation
        self._ev = events
        self._open: _OpenMessage | None = None
        self._audio_ms = 0.0
        self._text_chars = 0
        self._gen = self._script()
        self._started = False

    # --- driving --------------------------------------------------------------------------

    def created_event(self) -> dict[str, Any]:
        """The ``response.created`` event (sent as soon as the response exists)."""
        return self._ev.make("response.created", response=self._response_object(None, None))

    def advance(self, audio: bytes | None = None) -> Instruction | None:
        """The next instruction, or ``None`` when the run is over (done or cancelled).

        Args:
            audio: The PCM16 24 kHz result when the previous instruction was
                :class:`Synthesize`; ignored otherwise.
        """
        try:
            if not self._started:
                self._started = True
                return next(self._gen)
            return self._gen.send(audio)
        except StopIteration:
            return None

    def cancel(self, reason: str) -> list[dict[str, Any]]:
        """End the run now.

        Args:
            reason: ``client_cancelled`` or ``turn_detected``.

        Returns:
            The closing events: the open item's ``.done`` events (status ``incomplete``) and
            ``response.done`` with status ``cancelled``. Empty when already finished.
        """
        if self.finished:
            return []
        events = self._close_open("incomplete") if self._open is not None else []
        self.status = "cancelled"
        events.append(self._done_event({"type": "cancelled", "reason": reason}))
        self.finished = True
        self._gen.close()
        return events

    # --- the script -----------------------------------------------------------------------

    def _script(self) -> Generator[Instruction, bytes | None, None]:
        close: Close | None = None
        for step in self.spec.steps:
            if isinstance(step, Say):
                yield from self._say(render(step.text, self.spec.context))
            elif isinstance(step, Call):
                arguments = render_value(dict(step.arguments), self.spec.context)
                yield Emit(tuple(self._function_call(step.name, json.dumps(arguments))))
            elif isinstance(step, Handoff):
                yield Emit(tuple(self._function_call(step.tool, "{}")))
            elif isinstance(step, Hangup):
                if END_CALL_TOOL in self.spec.tool_names:
                    yield Emit(tuple(self._function_call(END_CALL_TOOL, "{}")))
                else:
                    close = Close(*HANGUP_CLOSE)
            elif isinstance(step, Wait):
                yield Pause(step.ms)
        self.status = "completed"
        self.finished = True
        yield Emit((self._done_event(None),))
        if close is not None:
            yield close

    def _say(self, text: str) -> Generator[Instruction, bytes | None, None]:
        text = text.strip()
        if not text:
            return
        audio_mode = "audio" in self.spec.modalities
        pcm = b""
        if audio_mode:
            pcm = (yield Synthesize(text, _voice_name(self.spec.voice), self.spec.speed)) or b""
        events = self._open_message(audio_mode)
        words = re.findall(r"\S+\s*", text)
        if not audio_mode:
            for word in words:
                events.append(self._content_event("response.output_text.delta", delta=word))
                self._note_text(word)
            events.extend(self._close_open("completed"))
            yield Emit(tuple(events))
            return
        fmt = self.spec.output_format
        encoded = encode_output(fmt, pcm)
        step = max(ms_to_bytes(fmt, self.spec.chunk_ms), 2)
        chunks = [encoded[i : i + step] for i in range(0, len(encoded), step)] or [b""]
        said = 0
        for k, chunk in enumerate(chunks):
            if chunk:
                events.append(self._content_event("response.output_audio.delta", delta=_b64(chunk)))
            upto = len(words) if k == len(chunks) - 1 else round((k + 1) * len(words) / len(chunks))
            if upto > said:
                delta = "".join(words[said:upto])
                said = upto
                events.append(
                    self._content_event("response.output_audio_transcript.delta", delta=delta)
                )
                self._note_text(delta)
            ms = bytes_to_ms(fmt, len(chunk))
            self._note_audio(ms)
            yield Emit(tuple(events))
            events = []
            if ms:
                yield Pace(ms)
        yield Emit(tuple(self._close_open("completed")))

    # --- events ---------------------------------------------------------------------------

    def _open_message(self, audio: bool) -> list[dict[str, Any]]:
        item: dict[str, Any] = {
            "id": self._ev.ids.new("item"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        events = self._add_item(item)
        self._open = _OpenMessage(item, len(self.output) - 1, audio)
        part: dict[str, Any] = (
            {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        )
        events.append(self._content_event("response.content_part.added", part=part))
        item["content"] = [
            {"type": "output_audio", "transcript": ""}
            if audio
            else {"type": "output_text", "text": ""}
        ]
        if audio:
            self._conv.assistant_audio_ms.setdefault(item["id"], 0.0)
        return events

    def _add_item(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        self.output.append(item)
        events = [
            self._ev.make(
                "response.output_item.added",
                response_id=self.id,
                output_index=len(self.output) - 1,
                item=public_item(item),
            )
        ]
        if self.spec.in_conversation:
            previous = self._conv.add(item)
            events.append(
                self._ev.make(
                    "conversation.item.added", previous_item_id=previous, item=public_item(item)
                )
            )
        return events

    def _finish_item(self, item: dict[str, Any], status: str) -> list[dict[str, Any]]:
        item["status"] = status
        index = self.output.index(item)
        events = [
            self._ev.make(
                "response.output_item.done",
                response_id=self.id,
                output_index=index,
                item=public_item(item),
            )
        ]
        if self.spec.in_conversation:
            # The client may have deleted the item meanwhile; it is then reported without a
            # predecessor.
            position = next((i for i, it in enumerate(self._conv.items) if it is item), 0)
            previous = self._conv.items[position - 1]["id"] if position else None
            events.append(
                self._ev.make(
                    "conversation.item.done", previous_item_id=previous, item=public_item(item)
                )
            )
        return events

    def _content_event(self, type_: str, **fields: Any) -> dict[str, Any]:
        assert self._open is not None
        return self._ev.make(
            type_,
            response_id=self.id,
            item_id=self._open.item["id"],
            output_index=self._open.output_index,
            content_index=0,
            **fields,
        )

    def _note_text(self, delta: str) -> None:
        assert self._open is not None
        self._open.text_so_far += delta
        self._text_chars += len(delta)
        key = "transcript" if self._open.audio else "text"
        self._open.item["content"][0][key] = self._open.text_so_far

    def _note_audio(self, ms: float) -> None:
        assert self._open is not None
        self._audio_ms += ms
        item_id = self._open.item["id"]
        self._conv.assistant_audio_ms[item_id] = self._conv.assistant_audio_ms.get(item_id, 0) + ms
        if ms:
            self._conv.audio_emitted = True

    def _close_open(self, status: str) -> list[dict[str, Any]]:
        open_ = self._open
        assert open_ is not None
        text = open_.text_so_far
        if open_.audio:
            events = [
                self._content_event("response.output_audio.done"),
                self._content_event("response.output_audio_transcript.done", transcript=text),
                self._content_event(
                    "response.content_part.done", part={"type": "audio", "transcript": text}
                ),
            ]
        else:
            events = [
                self._content_event("response.output_text.done", text=text),
                self._content_event(
                    "response.content_part.done", part={"type": "text", "text": text}
                ),
            ]
        events.extend(self._finish_item(open_.item, status))
        self._open = None
        return events

    def _function_call(self, name: str, arguments: str) -> list[dict[str, Any]]:
        call_id = self._ev.ids.new("call")
        item: dict[str, Any] = {
            "id": self._ev.ids.new("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": call_id,
            "arguments": "",
        }
        events = self._add_item(item)
        index = len(self.output) - 1
        for i in range(0, len(arguments), _ARGUMENT_DELTA_CHARS):
            events.append(
                self._ev.make(
                    "response.function_call_arguments.delta",
                    response_id=self.id,
                    item_id=item["id"],
                    output_index=index,
                    call_id=call_id,
                    delta=arguments[i : i + _ARGUMENT_DELTA_CHARS],
                )
            )
        events.append(
            self._ev.make(
                "response.function_call_arguments.done",
                response_id=self.id,
                item_id=item["id"],
                output_index=index,
                call_id=call_id,
                name=name,
                arguments=arguments,
            )
        )
        item["arguments"] = arguments
        self._text_chars += len(arguments) + len(name)
        events.extend(self._finish_item(item, "completed"))
        return events

    def _done_event(self, details: dict[str, Any] | None) -> dict[str, Any]:
        return self._ev.make(
            "response.done", response=self._response_object(details, self._usage())
        )

    def _response_object(
        self, details: dict[str, Any] | None, usage: dict[str, Any] | None
    ) -> dict[str, Any]:
        spec = self.spec
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": self.status,
            "status_details": details,
            "output": [public_item(item) for item in self.output],
            "conversation_id": self._conv.id if spec.in_conversation else None,
            "output_modalities": list(spec.modalities),
            "max_output_tokens": spec.max_output_tokens,
            "audio": {"output": {"format": dict(spec.output_format), "voice": spec.voice}},
            "usage": usage,
            "metadata": dict(spec.metadata) if spec.metadata is not None else None,
        }

    def _usage(self) -> dict[str, Any]:
        text_in, audio_in = self.spec.input_tokens
        text_out = tokens_for_chars(self._text_chars)
        audio_out = math.ceil(self._audio_ms / 50 - 1e-9)
        inputs, outputs = text_in + audio_in, text_out + audio_out
        return {
            "total_tokens": inputs + outputs,
            "input_tokens": inputs,
            "output_tokens": outputs,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": audio_in,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }


def _voice_name(voice: Any) -> str:
    if isinstance(voice, Mapping):
        return str(voice.get("id", "marin"))
    return str(voice)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

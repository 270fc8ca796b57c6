"""The conversation record a replacement Realtime session needs, kept bounded.

A Realtime server session keeps its conversation to itself: when the WebSocket drops (or the
gateway rotates the session before the API's duration limit) the new session starts empty.
:class:`ConversationContext` follows the call as it goes (caller transcriptions when
transcription is on, the agent's output transcripts, function calls and their outputs, and the
text items the gateway itself added) and renders it as ``conversation.item.create`` items to
replay on the new session. It holds at most ``max_items`` entries and ``max_chars`` characters,
dropping the oldest first. Each entry has a client-chosen item id, also used when the item is
first sent, so an item sent twice across a reconnect is refused by the server as a duplicate
instead of appearing twice. Pure: no I/O, nothing logged (the record is call content).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.realtime import events as rt

#: Entries kept for replay; older ones are dropped first.
MAX_ITEMS = 48
#: Characters of text kept for replay (transcripts, arguments, outputs) in total.
MAX_CHARS = 16_000

Kind = Literal["user", "assistant", "system", "function_call", "function_call_output"]


@dataclass
class _Entry:
    kind: Kind
    text: str = ""  # message text, function arguments or function output
    name: str = ""
    call_id: str = ""

    @property
    def size(self) -> int:
        return len(self.text) + len(self.name)


class ConversationContext:
    """A bounded, ordered record of what was said and done on a call (see module docstring).

    Args:
        id_prefix: Prefix of the item ids this record gives out (unique per call, short: the
            API limits item ids to 32 characters).
        max_items: Most entries kept.
        max_chars: Most text characters kept in total.
    """

    def __init__(self, id_prefix: str, *, max_items: int = MAX_ITEMS,
                 max_chars: int = MAX_CHARS) -> None:
        if max_items < 1 or max_chars < 1:
            raise ValueError("max_items and max_chars must be >= 1")
        self._prefix = id_prefix
        self._max_items = max_items
        self._max_chars = max_chars
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._chars = 0
        self._next = 0
        #: Server item id of an agent reply -> our entry id (replies stream in as deltas).
        self._replies: dict[str, str] = {}
        #: Server item id of a caller turn -> our entry id.
        self._turns: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def new_id(self) -> str:
        """A fresh item id for an item the gateway creates."""
        self._next += 1
        return f"{self._prefix}{self._next}"

    # Recording ---------------------------------------------------------------------------

    def on_server_event(self, event: object) -> None:
        """Record what a server event adds to the conversation (others are ignored)."""
        if isinstance(event, rt.ConversationItemInputAudioTranscriptionCompleted):
            if event.transcript.strip():
                self._set(self._turns, event.item_id, _Entry("user", event.transcript))
        elif isinstance(event, rt.ResponseOutputAudioTranscriptDelta):
            key = self._replies.get(event.item_id)
            entry = self._entries.get(key) if key is not None else None
            if entry is None:
                self._set(self._replies, event.item_id, _Entry("assistant", event.delta))
            else:
                self._grow(entry, entry.text + event.delta)
        elif isinstance(event, (rt.ResponseOutputAudioTranscriptDone, rt.ResponseOutputTextDone)):
            text = (event.transcript if isinstance(event, rt.ResponseOutputAudioTranscriptDone)
                    else event.text)
            key = self._replies.get(event.item_id)
            entry = self._entries.get(key) if key is not None else None
            if entry is None:
                self._set(self._replies, event.item_id, _Entry("assistant", text))
            else:
                self._grow(entry, text)
        elif isinstance(event, rt.ResponseFunctionCallArgumentsDone):
            self._add(self.new_id(), _Entry("function_call", event.arguments, event.name,
                                            event.call_id))

    def on_client_item(self, item: Mapping[str, Any]) -> None:
        """Record an item the gateway sent in ``conversation.item.create`` (it has an ``id``)."""
        item_id = str(item.get("id") or self.new_id())
        kind = item.get("type")
        if kind == "function_call_output":
            self._add(item_id, _Entry("function_call_output", str(item.get("output", "")),
                                      call_id=str(item.get("call_id", ""))))
        elif kind == "message" and item.get("role") in ("user", "system"):
            text = " ".join(str(part.get("text", "")) for part in item.get("content") or ()
                            if isinstance(part, Mapping))
            self._add(item_id, _Entry("user" if item.get("role") == "user" else "system", text))

    # Replay ------------------------------------------------------------------------------

    def replay_items(self) -> list[rt.ConversationItemCreate]:
        """The record as ``conversation.item.create`` events, oldest first.

        A function output whose call was dropped from the record is left out too (the API
        refuses an output for a call it does not know).
        """
        calls = {e.call_id for e in self._entries.values() if e.kind == "function_call"}
        out: list[rt.ConversationItemCreate] = []
        for item_id, entry in self._entries.items():
            item: dict[str, Any]
            if entry.kind == "function_call":
                item = {"type": "function_call", "call_id": entry.call_id, "name": entry.name,
                        "arguments": entry.text}
            elif entry.kind == "function_call_output":
                if entry.call_id not in calls:
                    continue
                item = {"type": "function_call_output", "call_id": entry.call_id,
                        "output": entry.text}
            elif entry.kind == "assistant":
                item = {"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": entry.text}]}
            else:
                item = {"type": "message", "role": entry.kind,
                        "content": [{"type": "input_text", "text": entry.text}]}
            out.append(rt.ConversationItemCreate({"id": item_id, **item}))
        return out

    # Internals ---------------------------------------------------------------------------

    def _set(self, index: dict[str, str], server_id: str, entry: _Entry) -> None:
        key = self.new_id()
        index[server_id] = key
        self._add(key, entry)

    def _add(self, key: str, entry: _Entry) -> None:
        if key in self._entries:
            return  # the same item sent again (e.g. across a reconnect): keep the first
        self._entries[key] = entry
        self._chars += entry.size
        self._trim()

    def _grow(self, entry: _Entry, text: str) -> None:
        self._chars += len(text) - len(entry.text)
        entry.text = text
        self._trim()

    def _trim(self) -> None:
        while self._entries and (len(self._entries) > self._max_items
                                 or (self._chars > self._max_chars and len(self._entries) > 1)):
            _, dropped = self._entries.popitem(last=False)
            self._chars -= dropped.size
        live = set(self._entries)
        for index in (self._replies, self._turns):
            for server_id in [s for s, k in index.items() if k not in live]:
                del index[server_id]

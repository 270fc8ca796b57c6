"""Handoffs between agents on one call, as pure values: the tools, the update, the history.

An agent's ``handoffs`` become GA Realtime function tools (``transfer_to_<agent>`` by default)
the model calls when the caller needs another agent. When it does, the call session parses the
call's arguments with :func:`parse_handoff_arguments`, records a :class:`HandoffRecord`, and
sends the ``session.update`` built by :func:`handoff_session_update`: the target's
instructions and tools, and its voice only while the API still accepts a voice change. The
tool call's output and the follow-up ``response.create`` are the session's business. No I/O.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.agents.spec import HandoffSpec

__all__ = [
    "MAX_ARGUMENT_CHARS",
    "HandoffHistory",
    "HandoffRecord",
    "handoff_session_update",
    "handoff_tools",
    "parse_handoff_arguments",
]

#: Tool names the Realtime API accepts.
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
#: Longest ``reason``/``context`` kept from the model (longer text is cut).
MAX_ARGUMENT_CHARS: Final = 1000
#: Longest agent summary put into a default tool description.
_MAX_SUMMARY_CHARS: Final = 200

_PARAMETERS: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {
        "reason": {
            "type": "string",
            "description": "Why the call is being handed over, in a few words.",
        },
        "context": {
            "type": "string",
            "description": (
                "What the next agent needs to know: the caller's request and any details "
                "already collected, so the caller does not have to repeat them."
            ),
        },
    },
    "required": [],
    "additionalProperties": False,
}


def _summary(description: str) -> str:
    for line in description.splitlines():
        line = " ".join(line.split())
        if line:
            if len(line) > _MAX_SUMMARY_CHARS:
                return line[: _MAX_SUMMARY_CHARS - 1].rstrip() + "…"
            return line
    return ""


def _parameters() -> dict[str, Any]:
    # A fresh deep copy per tool: the session may serialise or mutate what it gets.
    copied: dict[str, Any] = json.loads(json.dumps(_PARAMETERS))
    return copied


def handoff_tools(
    handoffs: Sequence[HandoffSpec], agents: Mapping[str, str]
) -> list[dict[str, Any]]:
    """The GA function tools (``{"type": "function", ...}``) for an agent's handoffs.

    Each tool takes two optional strings the model fills in: ``reason`` and ``context``.

    Args:
        handoffs: The agent's handoffs, in the order the model sees them.
        agents: For each agent that may be a target, a description of it or its rendered
            instructions; the first non-empty line goes into the default tool description
            ``"Hand the call over to <agent>: <line>"``.

    Returns:
        One tool object per handoff, ready for ``session.tools``.

    Raises:
        ValueError: A target agent is not in ``agents``, a tool name is not
            ``^[a-zA-Z0-9_-]{1,64}$`` or two handoffs share a tool name.
    """
    tools: list[dict[str, Any]] = []
    names: set[str] = set()
    for handoff in handoffs:
        if handoff.agent not in agents:
            raise ValueError(f"handoff to unknown agent {handoff.agent!r}")
        name = handoff.name
        if not _TOOL_NAME.match(name):
            raise ValueError(f"handoff tool name {name!r} is not ^[a-zA-Z0-9_-]{{1,64}}$")
        if name in names:
            raise ValueError(f"handoff tool name {name!r} is used twice")
        names.add(name)
        description = handoff.description
        if not description:
            summary = _summary(agents[handoff.agent])
            description = f"Hand the call over to {handoff.agent}"
            description += f": {summary}" if summary else "."
        tools.append(
            {
                "type": "function",
                "name": name,
                "description": description,
                "parameters": _parameters(),
            }
        )
    return tools


def _text_field(value: object) -> str:
    if not isinstance(value, str):
        return ""
    value = value.strip()
    return value[:MAX_ARGUMENT_CHARS]


def parse_handoff_arguments(arguments_json: str | None) -> tuple[str, str]:
    """The ``reason`` and ``context`` of a handoff tool call, tolerating anything.

    Args:
        arguments_json: The ``arguments`` string of ``response.function_call_arguments.done``.

    Returns:
        ``(reason, context)``: each stripped and cut to :data:`MAX_ARGUMENT_CHARS`, ``""``
        when missing, not a string, or when the arguments are not a JSON object.
    """
    if not arguments_json:
        return "", ""
    try:
        parsed = json.loads(arguments_json)
    except (ValueError, RecursionError):
        return "", ""
    if not isinstance(parsed, dict):
        return "", ""
    return _text_field(parsed.get("reason")), _text_field(parsed.get("context"))


def handoff_session_update(
    instructions: str,
    tools: Sequence[Mapping[str, Any]],
    *,
    voice_locked: bool,
    current_voice: str | None,
    target_voice: str | None,
) -> dict[str, Any]:
    """The ``session`` object of the GA ``session.update`` that switches to another agent.

    Instructions and tools are always sent (``[]`` clears the tools). The voice is sent only
    when it differs and is not locked: the API refuses to change ``audio.output.voice`` once
    the model has produced audio in the session, so in practice a handoff after the greeting
    keeps the first agent's voice (the Agents SDK documents the same limit).

    Args:
        instructions: The target agent's rendered instructions.
        tools: The target agent's tools (its own, its handoffs' and built-ins).
        voice_locked: The model has produced audio in this session.
        current_voice: Voice in use.
        target_voice: The target agent's voice, or ``None`` to keep the current one.

    Returns:
        E.g. ``{"type": "realtime", "instructions": ..., "tools": [...]}``, with
        ``"audio": {"output": {"voice": ...}}`` when the voice changes.
    """
    session: dict[str, Any] = {
        "type": "realtime",
        "instructions": instructions,
        "tools": [dict(tool) for tool in tools],
    }
    if not voice_locked and target_voice and target_voice != current_voice:
        session["audio"] = {"output": {"voice": target_voice}}
    return session


@dataclass(frozen=True, slots=True)
class HandoffRecord:
    """One handoff, as kept in the call record.

    Attributes:
        at: When it happened (wall clock, Unix seconds).
        from_agent: Agent that handed over.
        to_agent: Agent that took the call.
        reason: The model's ``reason`` (may be empty).
        context: The model's ``context`` (may be empty).
        tool_call_id: ``call_id`` of the function call.
    """

    at: float
    from_agent: str
    to_agent: str
    reason: str
    context: str
    tool_call_id: str

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "at": self.at,
            "from_agent": self.from_agent,
            "to_agent": self.to_agent,
            "reason": self.reason,
            "context": self.context,
            "tool_call_id": self.tool_call_id,
        }


class HandoffHistory:
    """The handoffs of one call, oldest first.

    Overflow policy: at most ``max_records`` are kept; past that the oldest is dropped and
    counted in :attr:`dropped`, so a model looping between two agents cannot grow the record
    without bound.

    Args:
        max_records: Records kept (>= 1).

    Raises:
        ValueError: ``max_records`` is below 1.
    """

    def __init__(self, max_records: int = 100) -> None:
        if max_records < 1:
            raise ValueError("max_records must be >= 1")
        self._records: deque[HandoffRecord] = deque(maxlen=max_records)
        self.dropped = 0

    def append(self, record: HandoffRecord) -> None:
        """Add a handoff."""
        if len(self._records) == self._records.maxlen:
            self.dropped += 1
        self._records.append(record)

    @property
    def records(self) -> tuple[HandoffRecord, ...]:
        """The kept records, oldest first."""
        return tuple(self._records)

    @property
    def current_agent(self) -> str | None:
        """The agent of the last handoff, or ``None`` before any."""
        return self._records[-1].to_agent if self._records else None

    def as_list(self) -> list[dict[str, object]]:
        """JSON-ready records for the call record."""
        return [record.as_dict() for record in self._records]

    def __len__(self) -> int:
        return len(self._records)

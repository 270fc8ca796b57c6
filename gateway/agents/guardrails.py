"""Output guardrails as pure decisions: when to check, what trips, and what to do about it.

The call session feeds the agent's streamed transcript (``response.output_audio_transcript``
``.delta``/``.done``, or ``response.output_text.*`` in text mode) to a
:class:`TranscriptMonitor`, which says when a guardrail check is due: each time an item's
accumulated text crosses a multiple of the debounce length, as the Agents SDK does, and once
more with the full text when the item is done. Built-in guardrails (``deny_regex``,
``deny_keywords`` and the reserved :data:`CARD_NUMBERS` regex) are checked here, in-process;
``python`` and SDK guardrails are run by the tool worker and only their verdict comes back.
When one trips, :func:`plan_trip` lists the steps the session performs, in order: flush the
caller's playout, cancel the response, truncate the item, then retry, say a fixed line,
transfer or hang up. No I/O and no clocks: the session passes times in.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from gateway.agents.spec import GuardrailAction, GuardrailSpec

__all__ = [
    "CARD_NUMBERS",
    "CancelResponse",
    "CheckRequest",
    "CompiledGuardrails",
    "CreateResponse",
    "FlushPlayout",
    "GuardrailEvent",
    "HangUp",
    "SendUserMessage",
    "Step",
    "Transfer",
    "TranscriptMonitor",
    "Trip",
    "TruncateItem",
    "check_builtin",
    "compile_guardrails",
    "find_card_numbers",
    "is_builtin",
    "luhn_valid",
    "plan_trip",
]

#: Reserved ``deny_regex`` value selecting the built-in card-number detector (13-19 digits,
#: optionally grouped by spaces or dashes, that pass the Luhn check). As a literal regex it
#: would only match the text ``@card_numbers``, so a gateway that did not know it would fail
#: safe rather than trip on everything.
CARD_NUMBERS: Final = "@card_numbers"

#: Closed items remembered so late deltas for them are ignored. Overflow policy: the oldest is
#: forgotten; a late delta for it would start a fresh buffer, which costs one extra check.
_MAX_CLOSED_ITEMS: Final = 256

#: A run of digits joined by at most three spaces or dashes between any two of them.
_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9](?:[ -]{0,3}[0-9])*(?![0-9])")
_SEPARATORS = re.compile(r"[ -]+")
_CARD_MIN_DIGITS: Final = 13
_CARD_MAX_DIGITS: Final = 19


# --- when to check -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """A guardrail check the session should run now.

    Attributes:
        item_id: The assistant item the text belongs to.
        text: The item's whole text so far (the full transcript when ``final``).
        final: The item is done; this is the last check for it.
    """

    item_id: str
    text: str
    final: bool


@dataclass(slots=True)
class _ItemState:
    text: str = ""
    checks: int = 0
    checked: str | None = None


class TranscriptMonitor:
    """Accumulates the agent's text per item and says when guardrails must run.

    A check is requested each time an item's length reaches the next multiple of
    ``debounce_chars`` (one request even when a delta jumps over several multiples), and once
    at the end of the item with the full transcript, unless that exact text was just checked.
    After :meth:`mark_tripped`, the item gets no more checks.

    Args:
        debounce_chars: Characters between two checks (>= 1).

    Raises:
        ValueError: ``debounce_chars`` is below 1.
    """

    def __init__(self, debounce_chars: int) -> None:
        if isinstance(debounce_chars, bool) or debounce_chars < 1:
            raise ValueError("debounce_chars must be >= 1")
        self._debounce = debounce_chars
        self._items: dict[str, _ItemState] = {}
        # Items that are done or tripped; values unused (an ordered set).
        self._closed: OrderedDict[str, None] = OrderedDict()

    def on_delta(self, item_id: str, text: str) -> CheckRequest | None:
        """Add a transcript delta; return a check request when a debounce boundary is crossed.

        Args:
            item_id: Assistant item the delta belongs to.
            text: The delta.

        Returns:
            A non-final :class:`CheckRequest` with the text so far, or ``None``.
        """
        if item_id in self._closed or not text:
            return None
        state = self._items.setdefault(item_id, _ItemState())
        state.text += text
        length = len(state.text)
        if length < (state.checks + 1) * self._debounce:
            return None
        state.checks = length // self._debounce
        state.checked = state.text
        return CheckRequest(item_id, state.text, final=False)

    def on_done(self, item_id: str, transcript: str) -> CheckRequest | None:
        """Close an item; return the final check unless it would repeat the last one.

        Args:
            item_id: Assistant item that is done.
            transcript: Its full transcript, which the server sends with ``.done`` and which
                wins over the concatenated deltas.

        Returns:
            A final :class:`CheckRequest`, or ``None`` when the item tripped, was already
            closed, is empty, or its full text is exactly what was last checked.
        """
        if item_id in self._closed:
            return None
        state = self._items.pop(item_id, None)
        self._close(item_id)
        if not transcript or (state is not None and state.checked == transcript):
            return None
        return CheckRequest(item_id, transcript, final=True)

    def mark_tripped(self, item_id: str) -> None:
        """Stop checking ``item_id``: a guardrail tripped on it (later deltas are ignored)."""
        self._items.pop(item_id, None)
        self._close(item_id)

    def text(self, item_id: str) -> str:
        """The text accumulated so far for an open item (``""`` when unknown or closed)."""
        state = self._items.get(item_id)
        return state.text if state is not None else ""

    def clear(self) -> None:
        """Forget every open item (e.g. on a handoff or reconnect); closed items stay closed."""
        self._items.clear()

    def _close(self, item_id: str) -> None:
        self._closed[item_id] = None
        self._closed.move_to_end(item_id)
        while len(self._closed) > _MAX_CLOSED_ITEMS:
            self._closed.popitem(last=False)


# --- what trips ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trip:
    """A guardrail that tripped and what its spec says to do.

    Attributes:
        guardrail: The guardrail's name.
        reason: Why. Built-ins never put transcript text here; a ``python`` or SDK
            guardrail's own reason is whatever its code returned.
        action: ``retry``, ``say``, ``transfer`` or ``hangup``.
        message: Corrective instruction (retry) or line to say (say).
        target: SIP URI for ``transfer``.
    """

    guardrail: str
    reason: str
    action: GuardrailAction
    message: str = ""
    target: str | None = None

    @classmethod
    def from_spec(cls, spec: GuardrailSpec, reason: str) -> Trip:
        """A trip of ``spec`` (also for ``python`` and SDK guardrails run elsewhere)."""
        return cls(spec.name, reason, spec.action, spec.message, spec.target)


def luhn_valid(digits: str) -> bool:
    """Whether a number passes the Luhn (mod 10) check used by payment card numbers.

    Args:
        digits: The number; spaces and dashes are ignored.

    Returns:
        ``True`` for at least two digits whose Luhn sum is a multiple of 10; ``False`` for
        fewer digits or any character other than an ASCII digit, space or dash.
    """
    plain = _SEPARATORS.sub("", digits)
    if len(plain) < 2 or not plain.isascii() or not plain.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(plain)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def find_card_numbers(text: str) -> list[str]:
    """Card numbers in ``text``: 13-19 digits that pass :func:`luhn_valid`.

    Digits may be grouped with spaces or dashes. Within a longer run of groups (a card number
    followed by its security code, say), every span of whole groups is tried, so the grouping
    a speaker used decides the candidates; an ungrouped run of 20 or more digits is not a card.

    Args:
        text: Transcript text.

    Returns:
        The matching numbers as plain digit strings, in order of appearance.
    """
    found: list[str] = []
    for run in _DIGIT_RUN.finditer(text):
        groups = _SEPARATORS.split(run.group())
        found.extend(_card_in_groups(groups))
    return found


def _card_in_groups(groups: list[str]) -> list[str]:
    hits: list[str] = []
    start = 0
    while start < len(groups):
        best: tuple[str, int] | None = None
        digits = ""
        for end in range(start, len(groups)):
            digits += groups[end]
            if len(digits) > _CARD_MAX_DIGITS:
                break
            if len(digits) >= _CARD_MIN_DIGITS and luhn_valid(digits):
                best = (digits, end + 1)
        if best is None:
            start += 1
        else:
            hits.append(best[0])
            start = best[1]
    return hits


@dataclass(frozen=True, slots=True)
class _Matcher:
    kind: str
    regex: re.Pattern[str] | None


def is_builtin(spec: GuardrailSpec) -> bool:
    """Whether ``spec`` is checked in-process (``deny_regex`` or ``deny_keywords``)."""
    return spec.deny_regex is not None or bool(spec.deny_keywords)


def _keyword_regex(keywords: tuple[str, ...]) -> re.Pattern[str]:
    phrases: list[str] = []
    for keyword in keywords:
        words = keyword.split()
        if not words:
            raise ValueError("deny_keywords must not contain empty keywords")
        phrases.append(r"\s+".join(re.escape(word) for word in words))
    # Longest first so a phrase wins over a keyword that starts it; the look-arounds make
    # the match whole-word even for keywords that begin or end with punctuation.
    phrases.sort(key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(phrases) + r")(?!\w)", re.IGNORECASE)


@lru_cache(maxsize=256)
def _matcher(spec: GuardrailSpec) -> _Matcher:
    kinds = [
        spec.deny_regex is not None,
        bool(spec.deny_keywords),
        spec.python is not None,
        spec.sdk_agent_path is not None,
    ]
    if sum(kinds) != 1:
        raise ValueError(
            f"guardrail {spec.name!r}: exactly one of deny_regex, deny_keywords, python, "
            "sdk_agent_path must be set"
        )
    if spec.action == "transfer" and not spec.target:
        raise ValueError(f"guardrail {spec.name!r}: action transfer needs a target")
    if spec.action == "say" and not spec.message.strip():
        raise ValueError(f"guardrail {spec.name!r}: action say needs a message")
    if spec.deny_regex == CARD_NUMBERS:
        return _Matcher("card_numbers", None)
    if spec.deny_regex is not None:
        try:
            return _Matcher("deny_regex", re.compile(spec.deny_regex))
        except re.error as exc:
            message = f"guardrail {spec.name!r}: deny_regex does not compile: {exc}"
            raise ValueError(message) from exc
    if spec.deny_keywords:
        return _Matcher("deny_keywords", _keyword_regex(spec.deny_keywords))
    return _Matcher("external", None)


def check_builtin(spec: GuardrailSpec, text: str) -> Trip | None:
    """Run a built-in guardrail on ``text`` (compiled on first use, then cached).

    Args:
        spec: A ``deny_regex`` (incl. :data:`CARD_NUMBERS`) or ``deny_keywords`` guardrail.
        text: The transcript so far.

    Returns:
        The :class:`Trip`, or ``None`` when the text passes.

    Raises:
        ValueError: The spec is invalid (see :func:`compile_guardrails`) or not built-in.
    """
    matcher = _matcher(spec)
    if matcher.kind == "card_numbers":
        return Trip.from_spec(spec, "card number") if find_card_numbers(text) else None
    if matcher.regex is None:
        raise ValueError(f"guardrail {spec.name!r} is not built-in; the tool worker runs it")
    if matcher.regex.search(text) is None:
        return None
    return Trip.from_spec(spec, f"matched {matcher.kind}")


@dataclass(frozen=True)
class CompiledGuardrails:
    """An agent's guardrails, validated, split by where they run.

    Attributes:
        builtin: Checked here by :meth:`check`, in order.
        external: ``python`` and SDK guardrails, run by the tool worker.
    """

    builtin: tuple[GuardrailSpec, ...] = ()
    external: tuple[GuardrailSpec, ...] = ()

    def check(self, text: str) -> Trip | None:
        """The first built-in guardrail that trips on ``text``, or ``None``."""
        for spec in self.builtin:
            trip = check_builtin(spec, text)
            if trip is not None:
                return trip
        return None


def compile_guardrails(specs: Iterable[GuardrailSpec]) -> CompiledGuardrails:
    """Validate guardrails once, compiling every regex and keyword list.

    Args:
        specs: The agent's guardrails.

    Returns:
        The guardrails split into built-in and external ones, order kept.

    Raises:
        ValueError: A regex does not compile, a keyword is empty, not exactly one kind is set,
            ``transfer`` has no target or ``say`` no message. The message names the guardrail.
    """
    builtin: list[GuardrailSpec] = []
    external: list[GuardrailSpec] = []
    for spec in specs:
        _matcher(spec)
        (builtin if is_builtin(spec) else external).append(spec)
    return CompiledGuardrails(tuple(builtin), tuple(external))


# --- what to do about it -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlushPlayout:
    """Drop the agent audio queued for the caller (``output_audio_buffer.clear`` on SIP)."""


@dataclass(frozen=True, slots=True)
class CancelResponse:
    """Send ``response.cancel``; a ``response_cancel_not_active`` error back is harmless."""


@dataclass(frozen=True, slots=True)
class TruncateItem:
    """Send ``conversation.item.truncate`` at what the caller heard (the session counts it).

    Attributes:
        item_id: The assistant item that tripped.
    """

    item_id: str


@dataclass(frozen=True, slots=True)
class SendUserMessage:
    """Add a user ``message`` item (``conversation.item.create`` with ``input_text``).

    Attributes:
        text: The message.
    """

    text: str


@dataclass(frozen=True, slots=True)
class CreateResponse:
    """Send ``response.create``, with per-response ``instructions`` when set.

    Attributes:
        instructions: Overrides the session instructions for this response only.
    """

    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class Transfer:
    """Blind-transfer the call (SIP REFER) to ``target``.

    Attributes:
        target: SIP URI.
    """

    target: str


@dataclass(frozen=True, slots=True)
class HangUp:
    """End the call (BYE)."""


Step = (
    FlushPlayout | CancelResponse | TruncateItem | SendUserMessage | CreateResponse | Transfer
    | HangUp
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def plan_trip(trip: Trip, *, item_id: str, default_retry_message: str) -> list[Step]:
    """The steps to perform, in order, when a guardrail trips on ``item_id``.

    First the agent is silenced: playout flushed, response cancelled, item truncated (so the
    server forgets the words the caller did not hear). Then, by action: ``retry`` tells the
    model which guardrail tripped plus the corrective message and asks for a new response;
    ``say`` asks for a response that says the message verbatim; ``transfer`` and ``hangup``
    hand over to the call control. A ``say`` without a message or a ``transfer`` without a
    target (which :func:`compile_guardrails` refuses) falls back to ``retry`` rather than
    leaving the caller in silence.

    Args:
        trip: What tripped.
        item_id: The assistant item it tripped on.
        default_retry_message: Corrective instruction when the guardrail has none.

    Returns:
        The ordered steps.
    """
    steps: list[Step] = [FlushPlayout(), CancelResponse(), TruncateItem(item_id)]
    action = trip.action
    message = _one_line(trip.message)
    if action == "say" and not message:
        action = "retry"
    if action == "transfer" and not trip.target:
        action = "retry"
    if action == "retry":
        advice = message or _one_line(default_retry_message)
        text = f"guardrail triggered: {trip.guardrail}."
        steps.append(SendUserMessage(f"{text} {advice}" if advice else text))
        steps.append(CreateResponse())
    elif action == "say":
        quoted = message.replace('"', "'")
        steps.append(CreateResponse(instructions=f'Say exactly "{quoted}"'))
    elif action == "transfer":
        assert trip.target is not None
        steps.append(Transfer(trip.target))
    else:
        steps.append(HangUp())
    return steps


@dataclass(frozen=True, slots=True)
class GuardrailEvent:
    """A guardrail trip as kept in the call record.

    Attributes:
        at: When it tripped (wall clock, Unix seconds).
        item_id: Assistant item it tripped on.
        guardrail: Guardrail name.
        action: What was done.
        reason: Why (never transcript text).
        excerpt_chars: Length of the text that was checked.
        final: It tripped on the item's full transcript.
        text: The checked text, only when the operator turned content logging on.
    """

    at: float
    item_id: str
    guardrail: str
    action: GuardrailAction
    reason: str
    excerpt_chars: int
    final: bool = False
    text: str | None = None

    @classmethod
    def from_trip(
        cls, trip: Trip, request: CheckRequest, *, at: float, include_text: bool = False
    ) -> GuardrailEvent:
        """Record ``trip`` of ``request``; the text is kept only with ``include_text``."""
        return cls(
            at=at,
            item_id=request.item_id,
            guardrail=trip.guardrail,
            action=trip.action,
            reason=trip.reason,
            excerpt_chars=len(request.text),
            final=request.final,
            text=request.text if include_text else None,
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form; ``text`` appears only when it was kept."""
        out: dict[str, object] = {
            "at": self.at,
            "item_id": self.item_id,
            "guardrail": self.guardrail,
            "action": self.action,
            "reason": self.reason,
            "excerpt_chars": self.excerpt_chars,
            "final": self.final,
        }
        if self.text is not None:
            out["text"] = self.text
        return out

"""Caller keypad input as pure decisions: gateway rules first, then batches for the agent.

The call session passes each DTMF digit it receives (RFC 4733 events from the SIP leg, or
``input_audio_buffer.dtmf_event_received`` on Realtime SIP) with the time it arrived, and
calls :meth:`DtmfCollector.on_timer` when :meth:`DtmfCollector.next_deadline` passes. A batch
starts with the first digit after the previous one ended. The gateway's rules (``*9`` =
operator, say) are recognised at the start of a batch with longest-match semantics: a rule
fires at once when no longer rule could still match, otherwise when the caller pauses for
``batch_ms``; its digits are consumed and what follows is matched again. A batch that does
not start with a rule goes to the agent, ended by the terminator key (included), by reaching
``max_digits`` or by a ``batch_ms`` pause. So an account number containing ``0`` reaches the
agent whole even when ``0`` is a rule. With ``to_agent`` off, a key that starts no rule is
dropped at once, so a rule typed right after a stray key still works. No I/O, no clocks:
times are passed in, in seconds; a key counts as in the same batch when it comes strictly
less than ``batch_ms`` after the previous one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.agents.spec import DtmfRule, DtmfSpec

__all__ = [
    "DIGITS",
    "DtmfCollector",
    "DtmfDecision",
    "RuleMatched",
    "SendToAgent",
    "agent_message",
]

#: Keys a DTMF event can carry (RFC 4733 §3.2 events 0-15).
DIGITS: Final = frozenset("0123456789*#ABCD")


@dataclass(frozen=True, slots=True)
class RuleMatched:
    """The caller entered a rule's sequence; the session performs its action.

    Attributes:
        rule: The rule.
    """

    rule: DtmfRule


@dataclass(frozen=True, slots=True)
class SendToAgent:
    """Tell the agent what the caller pressed (see :func:`agent_message`).

    Attributes:
        digits: The keys, in order, terminator included when it ended the batch.
    """

    digits: str


DtmfDecision = RuleMatched | SendToAgent


def agent_message(digits: str) -> str:
    """The user message telling the model which keys were pressed.

    Args:
        digits: Keys, e.g. ``"123#"``.

    Returns:
        E.g. ``"The caller pressed the keys: 1 2 3 #"``.
    """
    return "The caller pressed the keys: " + " ".join(digits)


def _normalise(digit: str) -> str | None:
    key = digit.strip().upper()
    return key if len(key) == 1 and key in DIGITS else None


class DtmfCollector:
    """Turns a stream of timed digits into rule matches and agent batches.

    Args:
        spec: How DTMF is handled for the current agent (a handoff builds a new collector).

    Raises:
        ValueError: A rule's digits are empty, repeated or contain a key outside ``0-9*#A-D``;
            the terminator is not one key; ``batch_ms`` is negative or ``max_digits`` below 1.
    """

    def __init__(self, spec: DtmfSpec) -> None:
        if spec.batch_ms < 0:
            raise ValueError("batch_ms must be >= 0")
        if spec.max_digits < 1:
            raise ValueError("max_digits must be >= 1")
        if spec.terminator and _normalise(spec.terminator) != spec.terminator:
            raise ValueError("terminator must be one of 0-9 * # A-D, or empty")
        seen: set[str] = set()
        for rule in spec.rules:
            if not rule.digits or any(c not in DIGITS for c in rule.digits):
                raise ValueError(f"DTMF rule {rule.digits!r}: digits must be 0-9 * # A-D")
            if rule.digits in seen:
                raise ValueError(f"DTMF rule {rule.digits!r} is defined twice")
            seen.add(rule.digits)
        self._spec = spec
        self._gap = spec.batch_ms / 1000.0
        # Longest first, so the first prefix found is the longest match.
        self._rules = sorted(spec.rules, key=lambda r: len(r.digits), reverse=True)
        self._buf = ""
        self._to_agent = False  # the current batch is for the agent; no rule can start it
        self._last_at: float | None = None

    @property
    def pending(self) -> str:
        """Keys received and not yet decided on."""
        return self._buf

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` must be called (``batch_ms`` after the last key), or ``None``."""
        if not self._buf or self._last_at is None:
            return None
        return self._last_at + self._gap

    def on_digit(self, digit: str, now: float) -> list[DtmfDecision]:
        """Take one key.

        A batch whose deadline passed before ``now`` (the timer not yet delivered) is decided
        first. Keys outside ``0-9 * # A-D`` are ignored (lower-case ``a-d`` are accepted).

        Args:
            digit: The key.
            now: When it arrived, in seconds.

        Returns:
            Decisions in the order the session must act on them (often none yet).
        """
        key = _normalise(digit)
        if key is None:
            return []
        out = self.on_timer(now)
        self._last_at = now
        self._feed(key, out)
        return out

    def on_timer(self, now: float) -> list[DtmfDecision]:
        """Decide the batch if the caller paused for ``batch_ms``.

        Args:
            now: Current time, in seconds.

        Returns:
            The rule matches and agent batch of the pending keys, or nothing when the deadline
            has not passed yet.
        """
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        out: list[DtmfDecision] = []
        # The pause ends the wait for longer rules: resolve until only an agent batch is left.
        while self._buf and not self._to_agent:
            self._resolve(out)
        self._flush(out)
        return out

    def _feed(self, key: str, out: list[DtmfDecision]) -> None:
        self._buf += key
        if self._to_agent:
            if key == self._spec.terminator or len(self._buf) >= self._spec.max_digits:
                self._flush(out)
            return
        if any(
            len(rule.digits) > len(self._buf) and rule.digits.startswith(self._buf)
            for rule in self._rules
        ):
            return  # a longer rule may still match: wait for the next key or the pause
        self._resolve(out)

    def _resolve(self, out: list[DtmfDecision]) -> None:
        """Stop waiting for longer rules: fire the longest rule the buffer starts with.

        Keys after the rule are fed again, as a new batch. A buffer that starts with no rule
        becomes an agent batch, or loses its first key when DTMF does not go to the agent.
        Every call consumes at least one key, so callers may loop on it.
        """
        buf, self._buf = self._buf, ""
        rest = buf[1:]
        for rule in self._rules:
            if buf.startswith(rule.digits):
                out.append(RuleMatched(rule))
                rest = buf[len(rule.digits):]
                break
        else:
            if self._spec.to_agent:
                self._to_agent = True
                rest = buf
        for key in rest:
            self._feed(key, out)

    def _flush(self, out: list[DtmfDecision]) -> None:
        if self._to_agent and self._buf:
            out.append(SendToAgent(self._buf))
        self._buf = ""
        self._to_agent = False

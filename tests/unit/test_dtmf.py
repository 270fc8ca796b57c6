"""Caller DTMF: batching for the agent, terminator, max digits, rules with longest match."""

from __future__ import annotations

import math
import random

import pytest

from gateway.agents.dtmf import DtmfCollector, DtmfDecision, RuleMatched, SendToAgent, agent_message
from gateway.agents.spec import DtmfRule, DtmfSpec

pytestmark = pytest.mark.unit

OPERATOR = DtmfRule("0", "transfer", target="sip:operator@pbx")
STAR = DtmfRule("*", "say", message="Press nine for the operator.")
STAR9 = DtmfRule("*9", "transfer", target="sip:desk@pbx")
STAR98 = DtmfRule("*98", "hangup")
HASH = DtmfRule("#", "hangup")


def _collector(
    *rules: DtmfRule,
    to_agent: bool = True,
    batch_ms: int = 1500,
    terminator: str = "#",
    max_digits: int = 32,
) -> DtmfCollector:
    return DtmfCollector(DtmfSpec(to_agent, batch_ms, terminator, max_digits, rules))


def _keys(
    collector: DtmfCollector, keys: str, start: float = 0.0, step: float = 0.1
) -> list[DtmfDecision]:
    """Press ``keys`` ``step`` seconds apart (all inside one batch gap); return decisions."""
    out: list[DtmfDecision] = []
    for n, key in enumerate(keys):
        out += collector.on_digit(key, start + n * step)
    return out


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        DtmfSpec(batch_ms=-1),
        DtmfSpec(max_digits=0),
        DtmfSpec(terminator="##"),
        DtmfSpec(terminator="x"),
        DtmfSpec(terminator="a"),
        DtmfSpec(rules=(DtmfRule("", "hangup"),)),
        DtmfSpec(rules=(DtmfRule("*9x", "hangup"),)),
        DtmfSpec(rules=(DtmfRule("1", "hangup"), DtmfRule("1", "say", message="x"))),
    ],
)
def test_invalid_specs_are_refused(spec: DtmfSpec) -> None:
    with pytest.raises(ValueError):
        DtmfCollector(spec)


def test_agent_message() -> None:
    assert agent_message("123#") == "The caller pressed the keys: 1 2 3 #"
    assert agent_message("*") == "The caller pressed the keys: *"


# --- batching for the agent ----------------------------------------------------------------


def test_batch_is_sent_batch_ms_after_the_last_key() -> None:
    collector = _collector()
    assert collector.on_digit("1", 0.0) == []
    assert collector.on_digit("2", 0.5) == []
    assert collector.on_digit("3", 1.0) == []
    assert collector.pending == "123"
    assert collector.next_deadline() == pytest.approx(2.5)
    assert collector.on_timer(2.49) == []
    assert collector.on_timer(2.5) == [SendToAgent("123")]
    assert collector.next_deadline() is None
    assert collector.pending == ""
    assert collector.on_timer(10.0) == []


def test_nothing_pending_means_no_deadline() -> None:
    collector = _collector()
    assert collector.next_deadline() is None
    assert collector.on_timer(100.0) == []


def test_terminator_ends_the_batch_and_is_included() -> None:
    collector = _collector()
    assert _keys(collector, "12#") == [SendToAgent("12#")]
    assert collector.next_deadline() is None


def test_lone_terminator_is_sent() -> None:
    assert _keys(_collector(), "#") == [SendToAgent("#")]


def test_custom_and_empty_terminator() -> None:
    assert _keys(_collector(terminator="*"), "12*") == [SendToAgent("12*")]
    no_terminator = _collector(terminator="")
    assert _keys(no_terminator, "12#") == []
    assert no_terminator.on_timer(100.0) == [SendToAgent("12#")]


def test_max_digits_ends_the_batch() -> None:
    collector = _collector(max_digits=4)
    assert _keys(collector, "12345") == [SendToAgent("1234")]
    assert collector.pending == "5"
    assert collector.on_timer(100.0) == [SendToAgent("5")]


def test_a_late_key_first_flushes_the_expired_batch() -> None:
    collector = _collector()
    assert collector.on_digit("1", 0.0) == []
    # The session's timer for 1.5 s did not fire before the next key at 2.0 s.
    assert collector.on_digit("2", 2.0) == [SendToAgent("1")]
    assert collector.pending == "2"
    assert collector.next_deadline() == pytest.approx(3.5)


def test_key_exactly_at_the_deadline_starts_a_new_batch() -> None:
    collector = _collector()
    collector.on_digit("1", 0.0)
    assert collector.on_digit("2", 1.5) == [SendToAgent("1")]


def test_zero_batch_ms_sends_at_the_next_timer() -> None:
    collector = _collector(batch_ms=0)
    assert collector.on_digit("7", 3.0) == []
    assert collector.next_deadline() == 3.0
    assert collector.on_timer(3.0) == [SendToAgent("7")]


@pytest.mark.parametrize("bad", ["x", "", "10", "E", "**", "\n", "٣"])
def test_invalid_keys_are_ignored(bad: str) -> None:
    collector = _collector()
    assert collector.on_digit(bad, 0.0) == []
    assert collector.pending == ""
    assert collector.next_deadline() is None


def test_lower_case_and_padded_keys_are_normalised() -> None:
    collector = _collector()
    assert _keys(collector, "a") == []
    assert collector.on_digit(" d ", 0.2) == []
    assert collector.on_timer(10.0) == [SendToAgent("AD")]


def test_invalid_key_does_not_move_the_deadline() -> None:
    collector = _collector()
    collector.on_digit("1", 0.0)
    collector.on_digit("x", 1.0)
    assert collector.next_deadline() == pytest.approx(1.5)


# --- rules ---------------------------------------------------------------------------------


def test_exact_rule_with_no_longer_rule_fires_at_once() -> None:
    collector = _collector(OPERATOR)
    assert collector.on_digit("0", 0.0) == [RuleMatched(OPERATOR)]
    assert collector.pending == ""
    assert collector.next_deadline() is None


def test_prefix_of_a_rule_waits_and_does_not_fire_alone() -> None:
    collector = _collector(STAR9)
    assert collector.on_digit("*", 0.0) == []
    assert collector.next_deadline() == pytest.approx(1.5)
    assert collector.on_digit("9", 0.4) == [RuleMatched(STAR9)]
    assert collector.next_deadline() is None


def test_unfinished_rule_goes_to_the_agent_after_the_pause() -> None:
    collector = _collector(STAR9)
    assert collector.on_digit("*", 0.0) == []
    assert collector.on_timer(1.5) == [SendToAgent("*")]


def test_shorter_rule_waits_for_a_longer_one() -> None:
    collector = _collector(STAR, STAR9)
    assert collector.on_digit("*", 0.0) == []
    assert collector.on_digit("9", 0.3) == [RuleMatched(STAR9)]


def test_shorter_rule_fires_at_the_deadline() -> None:
    collector = _collector(STAR, STAR9)
    assert collector.on_digit("*", 0.0) == []
    assert collector.on_timer(1.5) == [RuleMatched(STAR)]


def test_shorter_rule_fires_when_the_longer_one_cannot_match() -> None:
    collector = _collector(STAR, STAR9)
    assert _keys(collector, "*5") == [RuleMatched(STAR)]
    assert collector.pending == "5"
    assert collector.on_timer(10.0) == [SendToAgent("5")]


def test_longest_rule_wins_at_the_deadline() -> None:
    collector = _collector(STAR, STAR9, STAR98)
    assert _keys(collector, "*9") == []
    assert collector.on_timer(10.0) == [RuleMatched(STAR9)]
    assert _keys(collector, "*98", start=20.0) == [RuleMatched(STAR98)]


def test_keys_after_a_rule_start_a_new_batch() -> None:
    collector = _collector(OPERATOR)
    assert _keys(collector, "00") == [RuleMatched(OPERATOR), RuleMatched(OPERATOR)]
    assert _keys(collector, "012#", start=5.0) == [RuleMatched(OPERATOR), SendToAgent("12#")]


def test_rules_are_recognised_only_at_the_start_of_a_batch() -> None:
    collector = _collector(OPERATOR)
    # An account number containing 0 must reach the agent whole.
    assert _keys(collector, "1023#") == [SendToAgent("1023#")]
    assert _keys(collector, "50", start=5.0) == []
    assert collector.on_timer(10.0) == [SendToAgent("50")]


def test_terminator_during_a_rule_prefix_goes_to_the_agent() -> None:
    collector = _collector(STAR9)
    assert _keys(collector, "*#") == [SendToAgent("*#")]


def test_rule_made_of_the_terminator_fires_at_batch_start_only() -> None:
    collector = _collector(HASH)
    assert _keys(collector, "#") == [RuleMatched(HASH)]
    assert _keys(collector, "1#", start=5.0) == [SendToAgent("1#")]


def test_rule_prefix_then_max_digits() -> None:
    collector = _collector(STAR9, max_digits=2)
    assert _keys(collector, "*12") == [SendToAgent("*1")]
    assert collector.pending == "2"


def test_expired_rule_prefix_is_decided_before_the_next_key() -> None:
    collector = _collector(STAR9)
    assert collector.on_digit("*", 0.0) == []
    assert collector.on_digit("9", 5.0) == [SendToAgent("*")]
    assert collector.pending == "9"


# --- not to the agent ----------------------------------------------------------------------


def test_without_to_agent_other_keys_are_dropped_at_once() -> None:
    collector = _collector(STAR9, to_agent=False)
    assert _keys(collector, "123#") == []
    assert collector.pending == ""
    assert collector.next_deadline() is None
    assert collector.on_timer(100.0) == []


def test_without_to_agent_a_rule_after_stray_keys_still_fires() -> None:
    collector = _collector(STAR9, to_agent=False)
    assert _keys(collector, "5*9") == [RuleMatched(STAR9)]


def test_without_to_agent_an_unfinished_rule_is_dropped_after_the_pause() -> None:
    collector = _collector(STAR9, to_agent=False)
    assert collector.on_digit("*", 0.0) == []
    assert collector.on_timer(1.5) == []
    assert collector.pending == ""


def test_without_to_agent_rules_are_rescanned_after_a_mismatch() -> None:
    collector = _collector(STAR, STAR9, to_agent=False)
    assert _keys(collector, "**9") == [RuleMatched(STAR), RuleMatched(STAR9)]


# --- invariants ----------------------------------------------------------------------------


def _replay(decisions: list[DtmfDecision]) -> str:
    return "".join(d.rule.digits if isinstance(d, RuleMatched) else d.digits for d in decisions)


@pytest.mark.parametrize("seed", range(30))
def test_every_key_is_decided_once_and_in_order(seed: int) -> None:
    rng = random.Random(seed)
    rules = (OPERATOR, STAR, STAR9, STAR98, DtmfRule("12", "hangup"))
    max_digits = rng.randint(1, 6)
    chosen = rng.sample(rules, rng.randint(0, len(rules)))
    collector = _collector(*chosen, max_digits=max_digits, batch_ms=rng.choice([0, 300, 1500]))
    pressed = "".join(rng.choice("0123456789*#") for _ in range(rng.randint(1, 40)))
    now = 0.0
    decisions: list[DtmfDecision] = []
    for key in pressed:
        now += rng.choice([0.05, 0.2, 1.0, 3.0])
        deadline = collector.next_deadline()
        if deadline is not None and deadline <= now and rng.random() < 0.5:
            decisions += collector.on_timer(deadline)  # sometimes the timer fires in time
        decisions += collector.on_digit(key, now)
    decisions += collector.on_timer(math.inf)
    assert _replay(decisions) == pressed
    assert collector.pending == "" and collector.next_deadline() is None
    for decision in decisions:
        if isinstance(decision, SendToAgent):
            assert 1 <= len(decision.digits) <= max_digits

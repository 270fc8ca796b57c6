"""Output guardrails: debounced checks, built-in matchers, card numbers and trip plans."""

from __future__ import annotations

import random

import pytest

from gateway.agents.guardrails import (
    CARD_NUMBERS,
    CancelResponse,
    CheckRequest,
    CreateResponse,
    FlushPlayout,
    GuardrailEvent,
    HangUp,
    SendUserMessage,
    TranscriptMonitor,
    Transfer,
    Trip,
    TruncateItem,
    check_builtin,
    compile_guardrails,
    find_card_numbers,
    is_builtin,
    luhn_valid,
    plan_trip,
)
from gateway.agents.spec import GuardrailAction, GuardrailSpec

pytestmark = pytest.mark.unit

VISA = "4111111111111111"
MASTERCARD = "5555555555554444"
AMEX = "378282246310005"


# --- TranscriptMonitor ---------------------------------------------------------------------


@pytest.mark.parametrize("debounce", [0, -1, True])
def test_monitor_refuses_bad_debounce(debounce: int) -> None:
    with pytest.raises(ValueError):
        TranscriptMonitor(debounce)


def test_no_check_below_the_first_boundary() -> None:
    monitor = TranscriptMonitor(10)
    assert monitor.on_delta("i1", "abc") is None
    assert monitor.on_delta("i1", "defghi") is None  # 9 chars
    assert monitor.text("i1") == "abcdefghi"


def test_check_exactly_at_each_boundary() -> None:
    monitor = TranscriptMonitor(10)
    assert monitor.on_delta("i1", "a" * 9) is None
    assert monitor.on_delta("i1", "b") == CheckRequest("i1", "a" * 9 + "b", final=False)
    assert monitor.on_delta("i1", "c" * 9) is None  # 19
    request = monitor.on_delta("i1", "d")  # 20
    assert request is not None
    assert len(request.text) == 20
    assert not request.final


def test_a_delta_jumping_several_boundaries_asks_once() -> None:
    monitor = TranscriptMonitor(10)
    request = monitor.on_delta("i1", "x" * 35)
    assert request is not None and len(request.text) == 35
    # 36..39 are below the next multiple (40): no check; 40 is.
    assert monitor.on_delta("i1", "y" * 4) is None
    request = monitor.on_delta("i1", "z")
    assert request is not None and len(request.text) == 40


def test_empty_delta_never_asks() -> None:
    monitor = TranscriptMonitor(1)
    assert monitor.on_delta("i1", "") is None
    assert monitor.on_delta("i1", "a") is not None


def test_debounce_one_checks_every_nonempty_delta() -> None:
    monitor = TranscriptMonitor(1)
    texts = [r.text for d in ["a", "bc", "d"] if (r := monitor.on_delta("i1", d)) is not None]
    assert texts == ["a", "abc", "abcd"]


def _sdk_reference(deltas: list[str], debounce: int) -> list[int]:
    """The Agents SDK's debounce rule (session._record_output_guardrail_delta), restated."""
    text, runs, lengths = "", 0, []
    for delta in deltas:
        text += delta
        if len(text) >= (runs + 1) * debounce:
            runs = max(runs + 1, len(text) // debounce)
            lengths.append(len(text))
    return lengths


@pytest.mark.parametrize("seed", range(20))
def test_debounce_matches_the_agents_sdk(seed: int) -> None:
    rng = random.Random(seed)
    debounce = rng.choice([1, 7, 10, 100])
    deltas = ["w" * rng.randint(0, 40) for _ in range(rng.randint(1, 60))]
    monitor = TranscriptMonitor(debounce)
    lengths = [len(r.text) for d in deltas if (r := monitor.on_delta("i", d)) is not None]
    assert lengths == _sdk_reference(deltas, debounce)
    assert len(set(lengths)) == len(lengths)  # never twice for the same length


def test_final_check_carries_the_full_transcript() -> None:
    monitor = TranscriptMonitor(100)
    monitor.on_delta("i1", "Hello the")
    # The server's .done transcript wins over the concatenated deltas.
    assert monitor.on_done("i1", "Hello there.") == CheckRequest("i1", "Hello there.", final=True)


def test_final_check_without_any_delta() -> None:
    monitor = TranscriptMonitor(100)
    assert monitor.on_done("i9", "Short.") == CheckRequest("i9", "Short.", final=True)


def test_final_check_is_skipped_when_that_text_was_just_checked() -> None:
    monitor = TranscriptMonitor(5)
    assert monitor.on_delta("i1", "12345") is not None
    assert monitor.on_done("i1", "12345") is None


def test_final_check_runs_when_text_grew_after_the_last_check() -> None:
    monitor = TranscriptMonitor(5)
    assert monitor.on_delta("i1", "12345") is not None
    assert monitor.on_delta("i1", "6") is None
    assert monitor.on_done("i1", "123456") == CheckRequest("i1", "123456", final=True)


def test_empty_item_gets_no_final_check() -> None:
    monitor = TranscriptMonitor(5)
    assert monitor.on_done("i1", "") is None


def test_done_closes_the_item() -> None:
    monitor = TranscriptMonitor(1)
    assert monitor.on_done("i1", "abc") is not None
    assert monitor.on_done("i1", "abc") is None
    assert monitor.on_delta("i1", "late") is None
    assert monitor.text("i1") == ""


def test_trip_stops_all_checks_for_the_item() -> None:
    monitor = TranscriptMonitor(2)
    assert monitor.on_delta("i1", "ab") is not None
    monitor.mark_tripped("i1")
    assert monitor.on_delta("i1", "cdefgh") is None
    assert monitor.on_done("i1", "abcdefgh") is None
    # Other items are unaffected.
    assert monitor.on_delta("i2", "ab") is not None


def test_items_are_independent() -> None:
    monitor = TranscriptMonitor(4)
    assert monitor.on_delta("a", "xxx") is None
    assert monitor.on_delta("b", "yyy") is None
    request = monitor.on_delta("a", "x")
    assert request == CheckRequest("a", "xxxx", final=False)
    assert monitor.text("b") == "yyy"


def test_clear_forgets_open_items_but_not_closed_ones() -> None:
    monitor = TranscriptMonitor(4)
    monitor.on_delta("open", "xyz")
    monitor.on_done("closed", "done")
    monitor.clear()
    assert monitor.text("open") == ""
    assert monitor.on_done("closed", "done") is None


def test_closed_items_are_remembered_boundedly() -> None:
    monitor = TranscriptMonitor(3)
    for n in range(1000):
        monitor.on_done(f"i{n}", "x")
    # The most recent ones still ignore late deltas ...
    assert monitor.on_delta("i999", "abc") is None
    # ... the oldest were forgotten, so a late delta starts a fresh buffer (one extra check).
    assert monitor.on_delta("i0", "abc") is not None


# --- built-in guardrails -------------------------------------------------------------------


def _regex(pattern: str, action: GuardrailAction = "retry", message: str = "") -> GuardrailSpec:
    return GuardrailSpec(name="rx", deny_regex=pattern, action=action, message=message)


def _keywords(*words: str) -> GuardrailSpec:
    return GuardrailSpec(name="kw", deny_keywords=words)


def test_compile_splits_builtin_and_external_keeping_order() -> None:
    a = _regex("secret")
    b = GuardrailSpec(name="py", python="pkg.mod:check")
    c = _keywords("lawsuit")
    d = GuardrailSpec(name="sdk", sdk_agent_path="pkg.mod:agent", sdk_agent_name="Main")
    compiled = compile_guardrails([a, b, c, d])
    assert compiled.builtin == (a, c)
    assert compiled.external == (b, d)
    assert is_builtin(a) and is_builtin(c) and not is_builtin(b) and not is_builtin(d)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (_regex("(unclosed"), "'rx'"),
        (_regex("a{2,1}"), "deny_regex"),
        (GuardrailSpec(name="kw", deny_keywords=("ok", "  ")), "empty"),
        (GuardrailSpec(name="none"), "exactly one"),
        (GuardrailSpec(name="two", deny_regex="x", python="m:f"), "exactly one"),
        (_regex("x", action="transfer"), "target"),
        (_regex("x", action="say"), "message"),
        (_regex("x", action="say", message="   "), "message"),
    ],
)
def test_compile_refuses_invalid_guardrails(spec: GuardrailSpec, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        compile_guardrails([spec])


def test_deny_regex_searches_anywhere() -> None:
    spec = _regex(r"\bpassword\b")
    assert check_builtin(spec, "ok so far") is None
    trip = check_builtin(spec, "Your password is hunter2")
    assert trip == Trip("rx", "matched deny_regex", "retry", "", None)


def test_deny_regex_is_case_sensitive_unless_told() -> None:
    assert check_builtin(_regex("Secret"), "a secret") is None
    assert check_builtin(_regex("(?i)Secret"), "a secret") is not None


def test_trip_reason_never_contains_the_text() -> None:
    text = "the password is hunter2"
    trip = check_builtin(_regex("hunter2"), text)
    assert trip is not None and "hunter2" not in trip.reason
    trip = check_builtin(_keywords("hunter2"), text)
    assert trip is not None and "hunter2" not in trip.reason


@pytest.mark.parametrize(
    ("keywords", "text", "trips"),
    [
        (("lawsuit",), "They filed a lawsuit.", True),
        (("lawsuit",), "LAWSUIT!", True),
        (("lawsuit",), "lawsuits are expensive", False),
        (("class",), "a classic example", False),
        (("class",), "a subclass", False),
        (("class",), "first-class service", True),
        (("refund policy",), "Our refund policy says", True),
        (("refund policy",), "our Refund   Policy", True),
        (("refund policy",), "refund\npolicy", True),
        (("refund policy",), "refund policies", False),
        (("refund policy",), "refund, policy", False),
        (("c++",), "we use C++ here", True),
        (("c++",), "we use abc++ here", False),
        (("$100",), "that costs $100.", True),
        (("café",), "the CAFÉ is open", True),
        (("café",), "cafés", False),
        (("a.b",), "axb", False),  # keywords are literal, not regexes
        (("foo", "bar"), "no match here", False),
        (("foo", "bar"), "a bar", True),
    ],
)
def test_deny_keywords_match_whole_words_case_insensitively(
    keywords: tuple[str, ...], text: str, trips: bool
) -> None:
    assert (check_builtin(_keywords(*keywords), text) is not None) is trips


def test_check_builtin_refuses_external_guardrails() -> None:
    with pytest.raises(ValueError, match="not built-in"):
        check_builtin(GuardrailSpec(name="py", python="m:f"), "text")


def test_compiled_check_returns_the_first_trip_in_order() -> None:
    first = GuardrailSpec(name="first", deny_keywords=("alpha",), action="hangup")
    second = GuardrailSpec(name="second", deny_regex="alpha|beta")
    compiled = compile_guardrails([first, second])
    assert compiled.check("nothing") is None
    both = compiled.check("alpha beta")
    assert both is not None and both.guardrail == "first" and both.action == "hangup"
    only_second = compiled.check("beta")
    assert only_second is not None and only_second.guardrail == "second"


def test_trip_copies_action_message_and_target_from_the_spec() -> None:
    spec = GuardrailSpec(
        name="legal", deny_keywords=("sue",), action="transfer", target="sip:legal@pbx",
        message="unused",
    )
    assert check_builtin(spec, "I will sue") == Trip(
        "legal", "matched deny_keywords", "transfer", "unused", "sip:legal@pbx"
    )
    assert Trip.from_spec(spec, "python said so").reason == "python said so"


# --- card numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "number", [VISA, MASTERCARD, AMEX, "6011111111111117", "79927398713", "4012888888881881"]
)
def test_luhn_accepts_valid_numbers(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize(
    "number",
    ["4111111111111112", "79927398710", "1234567812345678", "", "0", "4111x1111", "４１１１",
     "4111 1111 1111 111a"],
)
def test_luhn_refuses_invalid_input(number: str) -> None:
    assert not luhn_valid(number)


def test_luhn_ignores_spaces_and_dashes() -> None:
    assert luhn_valid("4111 1111-1111 1111")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (f"Your card is {VISA}.", [VISA]),
        ("Your card is 4111 1111 1111 1111, right?", [VISA]),
        ("4111-1111-1111-1111", [VISA]),
        ("4111 - 1111 - 1111 - 1111", [VISA]),
        ("4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", [VISA]),
        ("Amex 3782 822463 10005 ok", [AMEX]),
        ("card 4111 1111 1111 1111 code 123", [VISA]),
        ("card 4111 1111 1111 1111 123", [VISA]),  # security code right after the number
        (f"{VISA} and {MASTERCARD}", [VISA, MASTERCARD]),
        ("4111111111111112", []),  # fails Luhn
        ("411111111111", []),  # 12 digits
        ("41111111111111110000", []),  # 20 digits in one group is not a card
        ("Call +1 415 555 0123", []),
        ("order 2024-06-01 at 10:30", []),
        ("", []),
    ],
)
def test_find_card_numbers(text: str, found: list[str]) -> None:
    assert find_card_numbers(text) == found


def test_card_numbers_builtin_guardrail() -> None:
    spec = GuardrailSpec(name="card_number", deny_regex=CARD_NUMBERS, message="Never read cards.")
    compiled = compile_guardrails([spec])
    assert compiled.builtin == (spec,)
    assert check_builtin(spec, "the order number is 1234567812345678") is None
    trip = check_builtin(spec, "your card 4111 1111 1111 1111 is on file")
    assert trip is not None
    assert trip.guardrail == "card_number" and trip.reason == "card number"
    assert "4111" not in trip.reason


def test_user_written_card_regex_works_too() -> None:
    spec = _regex(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
    compile_guardrails([spec])
    assert check_builtin(spec, "card 4111-1111-1111-1111 ok") is not None
    assert check_builtin(spec, "code 1234") is None


def test_streamed_card_number_trips_by_the_final_check() -> None:
    spec = GuardrailSpec(name="card_number", deny_regex=CARD_NUMBERS)
    compiled = compile_guardrails([spec])
    monitor = TranscriptMonitor(20)
    transcript = "Sure, the card on file is 4111 1111 1111 1111."
    trips: list[tuple[CheckRequest, Trip]] = []
    for start in range(0, len(transcript), 6):
        request = monitor.on_delta("item", transcript[start : start + 6])
        if request is not None and (trip := compiled.check(request.text)) is not None:
            trips.append((request, trip))
            monitor.mark_tripped("item")
    final = monitor.on_done("item", transcript)
    if final is not None and (trip := compiled.check(final.text)) is not None:
        trips.append((final, trip))
    assert len(trips) == 1
    assert trips[0][1].guardrail == "card_number"


# --- plans ---------------------------------------------------------------------------------

SILENCE = [FlushPlayout(), CancelResponse(), TruncateItem("item_1")]


def test_retry_plan_with_the_guardrails_message() -> None:
    trip = Trip("card_number", "card number", "retry", "Do not read card numbers aloud.")
    assert plan_trip(trip, item_id="item_1", default_retry_message="Try again.") == [
        *SILENCE,
        SendUserMessage("guardrail triggered: card_number. Do not read card numbers aloud."),
        CreateResponse(),
    ]


def test_retry_plan_falls_back_to_the_default_message() -> None:
    trip = Trip("rx", "matched deny_regex", "retry")
    steps = plan_trip(trip, item_id="item_1", default_retry_message="Rephrase without it.")
    assert steps[3] == SendUserMessage("guardrail triggered: rx. Rephrase without it.")
    bare = plan_trip(trip, item_id="item_1", default_retry_message="")
    assert bare[3] == SendUserMessage("guardrail triggered: rx.")


def test_say_plan_quotes_the_line_on_one_line() -> None:
    trip = Trip("legal", "r", "say", 'I can\'t discuss that.\nSay "help" for more.')
    assert plan_trip(trip, item_id="item_1", default_retry_message="x") == [
        *SILENCE,
        CreateResponse(instructions='Say exactly "I can\'t discuss that. Say \'help\' for more."'),
    ]


def test_transfer_and_hangup_plans() -> None:
    transfer = Trip("legal", "r", "transfer", target="sip:legal@pbx")
    assert plan_trip(transfer, item_id="item_1", default_retry_message="x") == [
        *SILENCE, Transfer("sip:legal@pbx")
    ]
    hangup = Trip("abuse", "r", "hangup")
    assert plan_trip(hangup, item_id="item_1", default_retry_message="x") == [*SILENCE, HangUp()]


@pytest.mark.parametrize("trip", [Trip("g", "r", "say", "  "), Trip("g", "r", "transfer")])
def test_incomplete_say_or_transfer_fall_back_to_retry(trip: Trip) -> None:
    steps = plan_trip(trip, item_id="item_1", default_retry_message="Try again.")
    assert steps[3:] == [SendUserMessage("guardrail triggered: g. Try again."), CreateResponse()]


def test_guardrail_event_keeps_no_text_by_default() -> None:
    trip = Trip("card_number", "card number", "retry")
    request = CheckRequest("item_1", "card 4111 1111 1111 1111", final=True)
    event = GuardrailEvent.from_trip(trip, request, at=12.5)
    assert event.as_dict() == {
        "at": 12.5,
        "item_id": "item_1",
        "guardrail": "card_number",
        "action": "retry",
        "reason": "card number",
        "excerpt_chars": len(request.text),
        "final": True,
    }
    assert "4111" not in repr(event)
    with_text = GuardrailEvent.from_trip(trip, request, at=12.5, include_text=True)
    assert with_text.as_dict()["text"] == request.text

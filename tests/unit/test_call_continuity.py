"""The pure decisions behind a call riding out a lost or aged Realtime session."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.calls.continuity import (
    NOTICED_SPEECH_MS,
    ROTATE_GRACE_S,
    ROTATE_POLL_S,
    ContinuityPolicy,
    Gap,
    HangUp,
    Resume,
    SpeechMeter,
    Transfer,
)
from gateway.calls.conversation import tool_error_category

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

POLICY = ContinuityPolicy(reconnect_budget_s=10, rotate_after_s=3300, apology="Sorry.")


def test_budget_counts_down_from_the_drop_and_stops_at_zero() -> None:
    assert POLICY.budget_left(100.0, 100.0) == 10.0
    assert POLICY.budget_left(100.0, 107.5) == 2.5
    assert POLICY.budget_left(100.0, 125.0) == 0.0


@pytest.mark.parametrize(("on_lost", "fallback", "expected"), [
    ("transfer", "sip:desk@pbx", Transfer("sip:desk@pbx")),
    ("transfer", None, HangUp()),
    ("hangup", "sip:desk@pbx", HangUp()),
])
def test_when_lost_transfers_only_with_a_fallback_and_the_setting(
        on_lost: str, fallback: str | None, expected: object) -> None:
    policy = ContinuityPolicy(on_lost=on_lost)  # type: ignore[arg-type]
    assert policy.when_lost(fallback) == expected


@pytest.mark.parametrize(("gap", "expected"), [
    # Nobody noticed and nothing was in flight: carry on silently.
    (Gap(), Resume(None, False)),
    # The agent was cut off mid-sentence: apologise.
    (Gap(agent_was_speaking=True, response_lost=True), Resume("Sorry.", True)),
    # The caller spoke into the void: apologise so they repeat.
    (Gap(caller_speech_ms=NOTICED_SPEECH_MS), Resume("Sorry.", True)),
    (Gap(caller_speech_ms=NOTICED_SPEECH_MS - 20), Resume(None, False)),
    # A tool result waited for its response: ask for it, no apology.
    (Gap(response_lost=True), Resume(None, True)),
    # A rotation is never apologised for, even if a response had to be asked again.
    (Gap(rotated=True, agent_was_speaking=True, response_lost=True), Resume(None, True)),
])
def test_resume_plan(gap: Gap, expected: Resume) -> None:
    assert POLICY.resume(gap) == expected


def test_no_apology_line_means_a_plain_response() -> None:
    policy = ContinuityPolicy(apology="  ")
    assert policy.resume(Gap(agent_was_speaking=True, response_lost=True)) == Resume(None, True)
    assert policy.resume(Gap(agent_was_speaking=True)) == Resume(None, False)


def test_rotation_waits_for_its_time_then_a_quiet_moment_then_forces() -> None:
    assert POLICY.rotation(1000.0, quiet=True) == 2300.0
    assert POLICY.rotation(3300.0, quiet=True) is None
    assert POLICY.rotation(3300.0, quiet=False) == ROTATE_POLL_S
    assert POLICY.rotation(3300.0 + ROTATE_GRACE_S, quiet=False) is None
    assert ContinuityPolicy(rotate_after_s=None).rotation(5000.0, quiet=True) == math.inf


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="reconnect_budget_s"):
        ContinuityPolicy(reconnect_budget_s=0)
    with pytest.raises(ValueError, match="rotate_after_s"):
        ContinuityPolicy(rotate_after_s=0)


def test_speech_meter_counts_loud_frames_only() -> None:
    meter = SpeechMeter()
    silence = b"\x00\x00" * 160
    tone = (np.sin(np.arange(160) / 3) * 8000).astype("<i2").tobytes()
    faint = (np.sin(np.arange(160) / 3) * 50).astype("<i2").tobytes()
    for frame in (silence, faint, tone, tone, silence, b""):
        meter.feed(frame)
    assert meter.speech_ms == 40


@pytest.mark.parametrize(("error", "category"), [
    (None, None),
    ("ValueError: the order system is down", "exception"),
    ("tool slow timed out after 2 s", "timeout"),
    ("tool lookup: HTTP 500 Internal Server Error: {\"secret\": 1}", "http 500"),
    ("tool crash: invalid arguments: 'code' expected integer", "invalid arguments"),
    ("the tool worker crashed while running tool x (exit 9)", "worker crashed"),
    ("tool x cannot run now: the gateway is busy with other tool calls", "busy"),
    ("tool lookup could not connect to 10.0.0.1:80 (ConnectionRefusedError)", "connect failed"),
    ("HTTP tools are not available", "unavailable"),
    ("the transfer failed (486 Busy Here); the caller is still on the line", "transfer failed"),
    ("another transfer is in progress", "busy"),
    ("unknown tool 'nope'", "unknown tool"),
])
def test_tool_error_categories_carry_no_content(error: str | None, category: str | None) -> None:
    assert tool_error_category(error) == category

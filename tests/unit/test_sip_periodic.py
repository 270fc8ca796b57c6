"""The SIP thread's periodic checks (RTP inactivity, answer deadline) on stand-in legs.

These run on the SIP thread outside any pjsua2 callback, so an exception from one leg
(pjsua2 raising for a stream or an INVITE it no longer has) must be logged and counted,
must not skip the other legs, and must not end the thread. Stand-ins replace the legs
(``Leg`` subclasses ``pjsua2.Call``, which needs a running endpoint); the user agent itself is
real and is not started. The same checks run against real calls in ``tests/sip``
(``test_harness.py``: the answer deadline; ``test_hostile_peers.py``: silent callers).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, cast

import pytest

from gateway.config import SipSettings
from gateway.sip.legs import Leg
from gateway.sip.ua import SipUserAgent

pytestmark = pytest.mark.unit


@dataclasses.dataclass
class StandInLeg:
    leg_id: int
    packets: int | Exception | None = 0
    answered: bool = True
    confirmed: bool = True
    local_hangup: bool = False
    expect_rtp: bool = True
    offered_at: float = 0.0
    rtp_watch: Any = None
    cause: str | None = None
    responses: list[int] = dataclasses.field(default_factory=list)

    @property
    def session_leg(self) -> int:
        return self.leg_id

    def rx_packets(self) -> int | None:
        if isinstance(self.packets, Exception):
            raise self.packets
        return self.packets

    def hangup(self, prm: Any) -> None:
        self.responses.append(int(prm.statusCode))

    def answer(self, prm: Any) -> None:
        if isinstance(self.packets, Exception):
            raise self.packets
        self.responses.append(int(prm.statusCode))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(time, "monotonic", c)  # what gateway.sip.ua reads
    return c


def user_agent(*legs: StandInLeg, deadline_s: float = 45.0) -> SipUserAgent:
    ua = SipUserAgent(SipSettings(rtp_timeout_s=2.0), answer_deadline_s=deadline_s)
    for leg in legs:
        ua._legs[leg.leg_id] = cast(Leg, leg)
        ua._current[leg.leg_id] = leg.leg_id
    return ua


def test_a_leg_whose_stream_read_fails_does_not_stop_the_rtp_watch(clock: Clock) -> None:
    broken = StandInLeg(1, packets=RuntimeError("no stream"))
    silent = StandInLeg(2, packets=50)
    ua = user_agent(broken, silent)
    ua._check_media()
    clock.now += 1.0
    ua._check_media()
    assert silent.responses == []
    clock.now += 1.0
    ua._check_media()  # 2 s without a new packet: the silent caller is hung up
    assert silent.responses == [200]
    assert silent.cause == "no RTP from the caller for 2 s"
    assert ua.stats.rtp_timeouts == 1
    assert ua.stats.callback_errors == 3  # the broken leg, once per check; logged each time
    assert broken.responses == []


def test_the_answer_deadline_is_checked_every_quarter_second_not_every_poll(
        clock: Clock) -> None:
    # Checked on every libHandleEvents poll, this walked every leg 100+ times a second.
    late = StandInLeg(1, answered=False, offered_at=clock.now - 9.9)
    ua = user_agent(late, deadline_s=10.0)
    ua._expire_unanswered()  # checked: 9.9 s, not due; next check in 0.25 s
    clock.now += 0.2
    for _ in range(100):  # due now (10.1 s), but polls within the quarter second skip it
        ua._expire_unanswered()
    assert late.responses == []
    clock.now += 0.1
    ua._expire_unanswered()
    assert late.responses == [503]


def test_an_expired_leg_that_cannot_be_answered_does_not_stop_the_others(clock: Clock) -> None:
    broken = StandInLeg(1, packets=RuntimeError("INVITE already answered"), answered=False,
                        offered_at=clock.now)
    waiting = StandInLeg(2, answered=False, offered_at=clock.now)
    answered = StandInLeg(3, offered_at=clock.now)
    ua = user_agent(broken, waiting, answered, deadline_s=10.0)
    ua._expire_unanswered()
    assert waiting.responses == []
    clock.now += 10.5
    ua._expire_unanswered()
    assert waiting.responses == [503] and waiting.answered
    assert answered.responses == []
    assert ua.stats.answer_deadline_expired == 2
    assert ua.stats.callback_errors == 1

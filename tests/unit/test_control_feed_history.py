"""The event feed's history of live calls: bounds, replay order, ``Last-Event-ID``, levels."""

from __future__ import annotations

import pytest

from gateway.control.feed import ALL_CALLS, CallFeed, FeedEvent, Subscription

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]


async def _drain(sub: Subscription) -> list[FeedEvent]:
    got: list[FeedEvent] = []
    while (event := await sub.next(0.01)) is not None:
        got.append(event)
    return got


async def test_a_late_subscriber_gets_the_history_in_order_then_live_events() -> None:
    feed = CallFeed(first_seq=1)
    feed.publish("w1:1", "started", {"agent": "frontdesk"})
    feed.publish("w1:2", "started", {"agent": "quotes"})
    feed.publish("w1:1", "transcript", {"role": "agent", "text": "hello"})
    feed.publish("w1:1", "handoff", {"from_agent": "frontdesk", "to_agent": "quotes"})
    every, one = feed.subscribe(ALL_CALLS), feed.subscribe("w1:1")
    feed.publish("w1:1", "transcript", {"role": "agent", "text": "live"})
    got = await _drain(every)
    assert [(e.seq, e.call_id, e.event, e.replay) for e in got] == [
        (1, "w1:1", "started", True), (2, "w1:2", "started", True),
        (3, "w1:1", "transcript", True), (4, "w1:1", "handoff", True),
        (5, "w1:1", "transcript", False)]
    assert [(e.seq, e.replay) for e in await _drain(one)] == [
        (1, True), (3, True), (4, True), (5, False)]


async def test_last_event_id_replays_only_what_came_after_it() -> None:
    feed = CallFeed(first_seq=10)
    for n in range(5):
        feed.publish("w1:1", "dtmf", {"n": n})  # seqs 10..14
    sub = feed.subscribe(ALL_CALLS, after=12)
    assert [e.data["n"] for e in await _drain(sub)] == [3, 4]
    assert await _drain(feed.subscribe(ALL_CALLS, after=14)) == []


async def test_an_ended_call_drops_its_history() -> None:
    feed = CallFeed()
    feed.publish("w1:1", "started", {})
    feed.publish("w1:2", "started", {})
    feed.publish("w1:1", "ended", {"reason": "caller hung up"})
    assert feed.history("w1:1") == [] and len(feed.history("w1:2")) == 1 and feed.kept == 1
    assert [e.call_id for e in await _drain(feed.subscribe(ALL_CALLS))] == ["w1:2"]
    feed.forget("w1:2")
    assert feed.kept == 0


def test_history_is_bounded_per_call_in_total_and_in_calls() -> None:
    feed = CallFeed(history_size=3, history_total=5, history_calls=2, first_seq=1)
    for n in range(10):
        feed.publish("w1:1", "dtmf", {"n": n})
    assert [e.data["n"] for e in feed.history("w1:1")] == [7, 8, 9]
    for n in range(3):
        feed.publish("w1:2", "dtmf", {"n": n})
    # Six kept would pass the total: the call holding the oldest event gives it up.
    assert [e.data["n"] for e in feed.history("w1:1")] == [8, 9] and feed.kept == 5
    feed.publish("w1:3", "dtmf", {"n": 0})  # a third call: the quietest one is forgotten
    assert feed.history("w1:1") == [] and len(feed.history("w1:2")) == 3
    assert feed.kept == 4


async def test_levels_are_not_kept_and_go_first_under_backpressure() -> None:
    feed = CallFeed(queue_size=4)
    feed.publish("w1:1", "levels", {"caller": 0.5, "agent": 0.0})  # nobody watches: nothing
    sub = feed.subscribe(ALL_CALLS)
    feed.publish("w1:1", "levels", {"caller": 0.1, "agent": 0.2})
    feed.publish("w1:1", "state", {"state": "a"})
    feed.publish("w1:1", "levels", {"caller": 0.3, "agent": 0.4})  # half full: skipped
    for n in range(3):
        feed.publish("w1:1", "dtmf", {"n": n})
    assert feed.history("w1:1")[0].event == "state" and feed.kept == 4
    got = await _drain(sub)
    # The full queue made room by dropping its levels event, not a line.
    assert [e.event for e in got] == ["state", "dtmf", "dtmf", "dtmf"]
    assert sub.lost == 0 and sub.skipped == 2


def test_subscriptions_starting_and_stopping_are_announced() -> None:
    changes: list[tuple[bool, frozenset[str]]] = []
    feed = CallFeed(on_watch=lambda: changes.append(feed.watched()))
    every = feed.subscribe(ALL_CALLS)
    feed.subscribe("w1:1")
    feed.unsubscribe(every)
    feed.unsubscribe(every)  # twice: no news
    feed.publish("w1:1", "ended", {})
    assert changes == [(True, frozenset()), (True, frozenset({"w1:1"})),
                       (False, frozenset({"w1:1"})), (False, frozenset())]


def test_history_is_bounded_in_bytes() -> None:
    feed = CallFeed(history_bytes=100, first_seq=1)
    for n in range(5):
        feed.publish("w1:1", "transcript", {"text": "x" * 30, "n": n})  # 50 bytes each
    assert [e.data["n"] for e in feed.history("w1:1")] == [3, 4] and feed.kept_bytes == 100
    feed.publish("w1:1", "ended", {})
    assert feed.kept_bytes == 0 and feed.kept == 0

"""The workers are told whose levels are watched: on each change, coalesced, never repeated."""

from __future__ import annotations

import asyncio

import pytest

from gateway.control.feed import ALL_CALLS, CallFeed
from gateway.control.watchers import LevelWatchers
from gateway.ipc.messages import ControlMessage, WatchLevels

pytestmark = [pytest.mark.unit, pytest.mark.timeout(5)]


async def test_stream_changes_reach_the_workers_as_the_latest_watched_set() -> None:
    sent: list[ControlMessage] = []

    async def broadcast(msg: ControlMessage) -> None:
        sent.append(msg)

    watchers = LevelWatchers()
    feed = CallFeed(on_watch=watchers.changed)
    watchers.feed = feed
    feed.subscribe("w1:2")  # no workers yet: nothing to send
    watchers.broadcast = broadcast
    one = feed.subscribe("w1:1")
    every = feed.subscribe(ALL_CALLS)  # a burst: one message, the latest state
    for _ in range(3):
        await asyncio.sleep(0)
    assert sent == [WatchLevels(all_calls=True)]
    feed.unsubscribe(every)
    feed.unsubscribe(one)
    for _ in range(3):
        await asyncio.sleep(0)
    assert sent[-1] == WatchLevels(all_calls=False, call_ids=("w1:2",))
    assert watchers.message() == sent[-1]
    await watchers.close()

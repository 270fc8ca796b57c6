"""The API's event streams over real HTTP: the history replayed after the snapshot, and a
reconnect with ``Last-Event-ID`` that brings only what it missed.

The control application (``build_app`` with ``install_api``) on 127.0.0.1, its directory and
feed fed the way the control process feeds them (:func:`gateway.control.app._publish` first,
then the directory); the streams are read as a client would, line by line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.control.actions import CallActions
from gateway.control.api import ApiContext, install_api
from gateway.control.app import _publish
from gateway.control.commands import CommandDesk
from gateway.control.feed import CallFeed
from gateway.control.http import build_app, start_http, stop_http
from gateway.ipc.messages import CallEvent, ControlMessage, WorkerMessage
from tests.component.test_control_http import Clock, hello, make_state, offered, started

pytestmark = [pytest.mark.component, pytest.mark.timeout(20)]

Event = tuple[str | None, str, dict[str, Any]]


class _Gateway:
    def __init__(self) -> None:
        self.clock = Clock()
        self.state = make_state(self.clock)
        self.feed = CallFeed(first_seq=100)
        self.state.directory.worker_up(hello("w1"))
        self.url = ""

    def message(self, msg: WorkerMessage) -> None:
        _publish(self.feed, msg)
        self.state.directory.on_message("w1", msg)

    def say(self, call_id: str, role: str, text: str) -> None:
        self.message(CallEvent(call_id=call_id, kind="transcript", time=self.clock.now,
                               data={"role": role, "text": text}))


async def _nowhere(worker_id: str, msg: ControlMessage) -> None:
    raise AssertionError("no command expected")


@pytest.fixture
async def gateway() -> AsyncIterator[_Gateway]:
    gw = _Gateway()
    app = build_app(gw.state)
    actions = CallActions(gw.state.directory, CommandDesk(_nowhere), lambda: None)
    install_api(app, ApiContext(gw.state.directory, actions, gw.feed, list))
    server = await start_http(app, "127.0.0.1", 0)
    gw.url = f"http://127.0.0.1:{server.port}"
    try:
        yield gw
    finally:
        gw.feed.close()
        await stop_http(server)


async def _read(resp: aiohttp.ClientResponse, count: int) -> list[Event]:
    events: list[Event] = []
    seq: str | None = None
    name = ""
    while len(events) < count:
        line = (await resp.content.readline()).decode().rstrip("\n")
        if line.startswith("id: "):
            seq = line[4:]
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((seq, name, json.loads(line[6:])))
            seq = None
    return events


async def test_a_late_stream_replays_the_live_calls_then_a_reconnect_only_the_rest(
        gateway: _Gateway) -> None:
    gateway.message(offered("w1-1"))
    gateway.message(started("w1-1"))
    gateway.say("w1-1", "agent", "Front desk, how can I help?")
    gateway.message(offered("w1-2"))
    gateway.message(CallEvent(call_id="w1-1", kind="handoff", time=gateway.clock.now,
                              data={"from_agent": "frontdesk", "to_agent": "quotes"}))
    gateway.message(CallEvent(call_id="w1-2", kind="levels", time=gateway.clock.now,
                              data={"caller": 0.2, "agent": 0.0}))  # never kept
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.url + "/v1/events") as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            first = await asyncio.wait_for(_read(resp, 6), 5)
            gateway.say("w1-1", "caller", "live line")
            live = await asyncio.wait_for(_read(resp, 1), 5)
        # The stream dropped; meanwhile the call went on.
        gateway.say("w1-1", "agent", "missed line")
        last = live[0][0]
        assert last is not None
        async with http.get(gateway.url + "/v1/events",
                            headers={"Last-Event-ID": last}) as resp:
            again = await asyncio.wait_for(_read(resp, 2), 5)
        async with http.get(gateway.url + "/v1/calls/w1-1/events") as resp:
            one = await asyncio.wait_for(_read(resp, 7), 5)

    assert first[0][:2] == (None, "snapshot")
    assert [c["call_id"] for c in first[0][2]["calls"]] == ["w1-1", "w1-2"]
    assert [(seq, name, data["call_id"], data.get("replay")) for seq, name, data in first[1:]
            ] == [("100", "offered", "w1-1", True), ("101", "started", "w1-1", True),
                  ("102", "transcript", "w1-1", True), ("103", "offered", "w1-2", True),
                  ("104", "handoff", "w1-1", True)]
    assert live == [("105", "transcript", {"call_id": "w1-1", "role": "caller",
                                           "text": "live line", "time": gateway.clock.now})]
    assert [name for _, name, _ in again] == ["snapshot", "transcript"]
    assert again[1][0] == "106" and again[1][2]["text"] == "missed line"
    assert again[1][2]["replay"] is True
    assert [name for _, name, _ in one] == ["snapshot", "offered", "started", "transcript",
                                            "handoff", "transcript", "transcript"]

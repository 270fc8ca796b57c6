"""The control API's event feed and bearer-token middleware (real aiohttp test server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gateway.config import Secret
from gateway.control.auth import bearer_auth
from gateway.control.feed import ALL_CALLS, CallFeed, FeedFull

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

TOKEN = "a-long-random-token-0123456789"


async def test_events_reach_the_calls_and_the_all_calls_subscribers() -> None:
    feed = CallFeed()
    one, every = feed.subscribe("w1:1"), feed.subscribe(ALL_CALLS)
    feed.publish("w1:2", "started", {"agent": "a"})
    feed.publish("w1:1", "tool", {"name": "lookup"})
    feed.publish("w1:1", "ended", {"reason": "caller hung up"})
    got = [e async for e in feed.stream(one, 0.01) if e is not None]
    assert [(e.event, e.data) for e in got] == [("tool", {"name": "lookup"}),
                                                ("ended", {"reason": "caller hung up"})]
    assert [e.call_id for e in [await every.next(0.01) for _ in range(3)] if e] == [
        "w1:2", "w1:1", "w1:1"]
    assert feed.subscribers == 1  # the ended call's stream is gone, '*' stays


async def test_a_slow_subscriber_loses_its_oldest_events_and_is_told() -> None:
    feed = CallFeed(queue_size=2)
    sub = feed.subscribe("w1:1")
    for n in range(5):
        feed.publish("w1:1", "dtmf", {"n": n})
    first = await sub.next(0.01)
    assert first is not None and first.data == {"n": 3} and sub.lost == 3
    assert await asyncio.wait_for(sub.next(0.01), 1) is not None
    assert await sub.next(0.01) is None  # a heartbeat's worth of silence


def test_subscribers_are_bounded() -> None:
    feed = CallFeed(max_subscribers=1)
    feed.subscribe("w1:1")
    with pytest.raises(FeedFull):
        feed.subscribe("w1:2")


@pytest.fixture
async def server() -> AsyncIterator[str]:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[bearer_auth(
        [Secret(TOKEN), Secret("another-token-abcdefghijk")], open_paths=["/healthz"])])
    for path in ("/healthz", "/v1/calls"):
        app.router.add_get(path, ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("header", "status"), [
    (None, 401), ("Bearer", 401), ("Basic " + TOKEN, 401), ("Bearer " + TOKEN[:-1], 401),
    ("Bearer " + TOKEN + "x", 401), ("Bearer " + TOKEN, 200), ("bearer  " + TOKEN, 200),
    ("Bearer another-token-abcdefghijk", 200),
])
async def test_only_a_configured_token_opens_the_api(server: str, header: str | None,
                                                     status: int) -> None:
    headers = {"Authorization": header} if header is not None else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(server + "/v1/calls", headers=headers) as resp:
            assert resp.status == status
            if status == 401:
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(server + "/healthz") as resp:
            assert resp.status == 200


async def test_without_any_token_configured_the_api_is_closed() -> None:
    app = web.Application(middlewares=[bearer_auth([], open_paths=["/healthz"])])

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/v1/calls", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/calls"
            async with http.get(url, headers={"Authorization": "Bearer " + TOKEN}) as resp:
                assert resp.status == 401
                assert "no API token is configured" in await resp.text()
    finally:
        await runner.cleanup()

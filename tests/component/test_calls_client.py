"""The Calls REST client over real HTTP: the simulator's API, and a server that fails on purpose.

Against the simulator (which plays OpenAI's Calls API with its error envelopes): accept,
refer, hangup of a placed call; 404 for an unknown call read as :class:`CallGone`; a 400 read
into the error's fields. Against a small aiohttp server that answers 503 or stalls before it
succeeds (the simulator has no fault switch for REST): retries with backoff, and no retry on a
client error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.realtime.calls import CallGone, CallsApiError, CallsClient
from gateway.realtime.retry import RetryPolicy
from gateway.sim.server import SimulatorServer

pytestmark = pytest.mark.component

FAST = RetryPolicy(max_attempts=3, initial_delay_s=0.01, max_delay_s=0.05)


async def test_a_call_is_accepted_referred_and_hung_up_at_the_simulator() -> None:
    async with SimulatorServer() as sim:
        call = await sim.incoming_call([("From", "<sip:1@a>"), ("To", "<sip:2@b>")],
                                       deliver=False)
        async with CallsClient(sim.http_url, "sk-test", retry=FAST) as client:
            await client.accept(call.call_id, {"instructions": "Hi.", "model": "gpt-realtime"})
            assert (await call.wait_accepted())["instructions"] == "Hi."
            await client.refer(call.call_id, "sip:desk@pbx.example.com")
            assert await call.wait_referred() == "sip:desk@pbx.example.com"
            await client.hangup(call.call_id)
            assert await call.wait_ended() == "api"
            with pytest.raises(CallGone) as gone:
                await client.hangup(call.call_id)  # ended: the API says 404
    assert gone.value.status == 404 and gone.value.code == "call_not_found"


async def test_a_bad_body_is_a_clear_error_with_the_envelope_fields() -> None:
    async with SimulatorServer() as sim:
        call = await sim.incoming_call(deliver=False)
        async with CallsClient(sim.http_url, "sk-test", retry=FAST) as client:
            with pytest.raises(CallsApiError) as bad:
                await client.accept(call.call_id, {"audio": {"output": {"voice": 7}}})
            with pytest.raises(CallsApiError) as not_an_id:
                await client.reject("../admin")
    assert bad.value.status == 400 and not bad.value.retryable
    assert bad.value.param is not None and "voice" in bad.value.param
    assert str(bad.value).startswith(f"accept {call.call_id}: HTTP 400: ")
    assert str(not_an_id.value) == "reject: not a call id"


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[str, list[str]]]:
    """A server whose first two answers fail (503, then a stall), then 200; 400 for /bad."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.match_info["op"])
        if request.match_info["call"] == "bad":
            return web.json_response({"error": {"message": "nope", "type": "invalid_request_"
                                                "error", "code": "x", "param": "status_code"}},
                                     status=400)
        if len(seen) == 1:
            return web.json_response({"error": {"message": "busy"}}, status=503)
        if len(seen) == 2:
            await asyncio.sleep(1.0)  # past the client's timeout
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/realtime/calls/{call}/{op}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", seen
    finally:
        await runner.cleanup()


async def test_5xx_and_timeouts_are_retried_until_the_request_succeeds(
        flaky: tuple[str, list[str]]) -> None:
    base, seen = flaky
    async with CallsClient(base, "sk-test", timeout_s=0.3, retry=FAST) as client:
        await client.hangup("rtc_1")
    assert seen == ["hangup", "hangup", "hangup"]


async def test_a_client_error_is_not_retried(flaky: tuple[str, list[str]]) -> None:
    base, seen = flaky
    async with CallsClient(base, "sk-test", retry=FAST) as client:
        with pytest.raises(CallsApiError) as info:
            await client.reject("bad", 486)
    assert seen == ["reject"]
    assert (info.value.status, info.value.code, info.value.param) == (400, "x", "status_code")

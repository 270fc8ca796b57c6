"""The simulator times each webhook attempt: when it was sent and when its answer was read.

``Attempt.answered_at`` is what ``bench/webhooks.py`` reads to time the gateway's webhook
endpoint from outside; these tests hold it to a receiver on 127.0.0.1 that answers after a
known delay, and to attempts that got no answer.
"""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from aiohttp import web

from gateway.sim.server import SimOptions, SimulatorServer

pytestmark = [pytest.mark.component, pytest.mark.timeout(30)]

SECRET = "whsec_" + base64.b64encode(b"webhook-timing-test-signing-key!").decode()
#: How long the receiver waits before it answers.
STALL_S = 0.2


async def _stalling(request: web.Request) -> web.Response:
    await request.read()
    await asyncio.sleep(STALL_S)
    return web.json_response({"ok": True})


async def test_a_delivered_attempt_records_when_its_answer_was_read() -> None:
    app = web.Application()
    app.router.add_post("/hook", _stalling)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        options = SimOptions(tts_engine="tone", webhook_url=url, webhook_secret=SECRET)
        async with SimulatorServer("127.0.0.1", 0, options=options) as sim:
            call = await sim.incoming_call()
            [delivery] = await call.wait_webhooks()
            [attempt] = delivery.attempts
            summary = call.to_json()["deliveries"][0]["attempts"][0]
    finally:
        await runner.cleanup()
    assert attempt.status == 200 and attempt.answered_at is not None
    assert STALL_S <= attempt.answered_at - attempt.at < STALL_S + 2.0
    assert attempt.answered_at <= time.time()
    assert summary["answered_at"] == attempt.answered_at


async def test_an_attempt_without_an_answer_has_no_answer_time() -> None:
    app = web.Application()
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    await runner.cleanup()  # nothing listens there any more
    options = SimOptions(tts_engine="tone", webhook_url=f"http://127.0.0.1:{port}/hook",
                         webhook_secret=SECRET, webhook_attempts=1)
    async with SimulatorServer("127.0.0.1", 0, options=options) as sim:
        call = await sim.incoming_call()
        [delivery] = await call.wait_webhooks()
    [attempt] = delivery.attempts
    assert attempt.status is None and attempt.error
    assert attempt.answered_at is None

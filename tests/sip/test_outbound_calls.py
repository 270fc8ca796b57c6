"""Outbound calls: ``POST /v1/calls`` -> a SIP worker calls a real pjsua2 peer -> the agent talks.

Real processes on 127.0.0.1: ``gateway run``, the simulator in the test process, the echo user
agent (``tests/support/echo_ua.py``, pjsua2) as the called party, and an aiohttp server in the
test process receiving the signed status webhooks (verified with the ``standardwebhooks``
package, as a user's endpoint would).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimulatorServer
from tests.sip.gateway import control_get, control_post, run_gateway, wait_until
from tests.support.echo_ua import EchoUa
from tests.support.ports import free_tcp_port

pytestmark = [pytest.mark.sip, pytest.mark.timeout(90)]

SECRET = "whsec_" + base64.b64encode(b"outbound-status-hooks-secret-32b").decode()

PLAN = """
agents:
  caller_agent:
    instructions: "You are calling {var.business} to ask for {var.request}."
    greeting: "Hello, I am calling for a customer."
routes:
  - name: nothing-inbound
    reject: 403
"""

BOOK = """
scenarios:
  out:
    match: {instructions: "(?i)You are calling"}
    turns:
      - say: "Thanks."
"""


@asynccontextmanager
async def _hook_receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []
    verifier = Webhook(SECRET)

    async def receive(request: web.Request) -> web.Response:
        body = await request.text()
        got.append(verifier.verify(body, dict(request.headers)))  # raises if forged
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/status", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_tcp_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/status", got
    finally:
        await runner.cleanup()


def _config() -> dict[str, Any]:
    return {"sip": {"outbound_allow": [r"sip:[a-z0-9-]+@127\.0\.0\.1:\d+"]}}


async def test_an_outbound_call_reaches_the_callee_with_its_agent_and_reports_status(
        tmp_path: Path) -> None:
    with EchoUa(tmp_path / "callee", max_calls=2) as callee:
        async with SimulatorServer(scenarios=parse_scenarios(BOOK)) as sim, \
                _hook_receiver() as (hook_url, statuses), \
                run_gateway(tmp_path, sim, PLAN, sip=_config()["sip"],
                            env={"GATEWAY_STATUS_WEBHOOK_SECRET": SECRET}) as gw:
            placed = await asyncio.to_thread(control_post, gw, "/v1/calls", {
                "to": f"sip:bye-6000@{callee.address}", "agent": "caller_agent",
                "context": {"business": "Luigi's", "request": "a table for two"},
                "status_webhook": hook_url})
            session = await sim.wait_for_session(0, timeout=10)
            await asyncio.to_thread(wait_until, lambda: any(
                s["status"] == "completed" for s in statuses), 30.0, "the completed status")
            busy = await asyncio.to_thread(control_post, gw, "/v1/calls", {
                "to": f"sip:reject-486@{callee.address}", "agent": "caller_agent",
                "status_webhook": hook_url})
            await asyncio.to_thread(wait_until, lambda: any(
                s["status"] == "busy" for s in statuses), 30.0, "the busy status")
            forbidden = await asyncio.to_thread(control_post, gw, "/v1/calls", {
                "to": "sip:+15550100@pbx.example.com", "agent": "caller_agent"})
            unknown = await asyncio.to_thread(control_post, gw, "/v1/calls", {
                "to": f"sip:x@{callee.address}", "agent": "nobody"})
            call = await asyncio.to_thread(control_get, gw, f"/v1/calls/{placed[1]['call_id']}")
            log = gw.log()
        answered = callee.events("CallState", state="CONFIRMED")
    assert placed[0] == 201 and placed[1]["status"] == "queued"
    instructions = json.dumps(session.session)
    assert "calling Luigi's to ask for a table for two" in instructions
    first = [s["status"] for s in statuses if s["call_id"] == placed[1]["call_id"]]
    assert first[0] == "queued" and first[-1] == "completed" and "answered" in first
    assert busy[0] == 201
    busy_events = [s for s in statuses if s["call_id"] == busy[1]["call_id"]]
    assert busy_events[-1]["status"] == "busy" and busy_events[-1]["sip_status"] == 486
    assert forbidden[0] == 403 and "sip.outbound_allow" in forbidden[1]["reason"]
    assert unknown[0] == 404 and "no agent 'nobody'" in unknown[1]["reason"]
    assert call["call"]["end_reason"] == "callee hung up"
    assert answered, "the callee never answered"
    assert SECRET not in log

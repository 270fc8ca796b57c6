"""The control API on a real gateway: bearer tokens, hang up / transfer / say, event streams.

Real processes on 127.0.0.1: ``gateway run`` (control process and a SIP worker), SIPp as the
caller, the simulator in the test process; the API is called over real HTTP with the test
token every test gateway gets (``tests.sip.gateway.API_TOKEN``).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.sim.server import SimulatorServer
from tests.sip.gateway import (
    API_TOKEN,
    QUIET_AGENT,
    Gateway,
    control_get,
    control_post,
    run_gateway,
    wait_until,
)
from tests.support.audio import silence_pcm16, write_g711
from tests.support.sipp import start_sipp

pytestmark = [pytest.mark.sip, pytest.mark.timeout(90)]


def _status(gw: Gateway, path: str, token: str | None) -> tuple[int, dict[str, Any], str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(gw.control_url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read()), resp.headers.get("WWW-Authenticate", "")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), exc.headers.get("WWW-Authenticate", "")


def _live_call(gw: Gateway) -> dict[str, Any]:
    call: dict[str, Any] = wait_until(
        lambda: next((c for c in control_get(gw, "/v1/calls")["calls"]
                      if c["state"] == "started"), None), 20.0, "a started call")
    return call


async def test_every_v1_endpoint_needs_the_token_and_the_probes_do_not(tmp_path: Path) -> None:
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, QUIET_AGENT) as gw:
        missing = await asyncio.to_thread(_status, gw, "/v1/calls", None)
        wrong = await asyncio.to_thread(_status, gw, "/v1/calls", "x" * 31)
        right = await asyncio.to_thread(_status, gw, "/v1/calls", API_TOKEN)
        spec = await asyncio.to_thread(_status, gw, "/v1/openapi.json", API_TOKEN)
        health = await asyncio.to_thread(_status, gw, "/healthz", None)
        ready = await asyncio.to_thread(_status, gw, "/readyz", None)
        unknown_hangup = await asyncio.to_thread(control_post, gw, "/v1/calls/w1:99/hangup")
        bad_field = await asyncio.to_thread(control_post, gw, "/v1/calls/w1:1/transfer",
                                            {"target": "sip:a@b", "when": "now"})
        bad_target = await asyncio.to_thread(control_post, gw, "/v1/calls/w1:1/transfer",
                                             {"target": "ftp://x"})
        log = gw.log()
    assert missing[:2] == (401, {"error": "unauthorized",
                                 "reason": "missing 'Authorization: Bearer <token>'"})
    assert missing[2].startswith("Bearer")
    assert wrong[:2] == (401, {"error": "unauthorized", "reason": "wrong bearer token"})
    assert right[0] == 200 and "calls" in right[1]
    assert spec[0] == 200 and "/v1/calls/{call_id}/transfer" in spec[1]["paths"]
    assert health[0] == 200 and ready[0] == 200
    assert unknown_hangup == (404, {"error": "not_found", "reason": "no live call has this id"})
    assert bad_field[0] == 400 and "unknown field(s): when" in bad_field[1]["reason"]
    assert bad_target[0] == 400 and "'target' must be a sip:" in bad_target[1]["reason"]
    assert API_TOKEN not in log and "x" * 31 not in log


async def test_the_operator_hangs_up_a_call_and_its_event_stream_ends(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(20000))
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, QUIET_AGENT) as gw, \
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
        with start_sipp("uac_expect_bye", gw.target, log_dir=tmp_path / "sipp",
                        keys={"audio_file": str(audio)}, timeout_s=40) as sipp:
            call = await asyncio.to_thread(_live_call, gw)
            events: list[tuple[str, dict[str, Any]]] = []
            async with http.get(f"{gw.control_url}/v1/calls/{call['call_id']}/events") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "text/event-stream"
                hangup = asyncio.create_task(asyncio.to_thread(
                    control_post, gw, f"/v1/calls/{call['call_id']}/hangup",
                    {"reason": "operator test"}))
                events = await asyncio.wait_for(_read_sse(resp), 20)
            status, body = await hangup
            result = await asyncio.to_thread(sipp.result, 20.0)
        again = await asyncio.to_thread(control_post, gw,
                                        f"/v1/calls/{call['call_id']}/hangup")
        await gw.wait_log("call record: ")
        log = gw.log()
    assert (status, body["ok"]) == (200, True)
    assert result.ok, result.describe()  # SIPp got the BYE
    assert events[0][0] == "snapshot" and events[0][1]["call"]["call_id"] == call["call_id"]
    assert events[-1][0] == "ended"
    assert again == (409, {"error": "conflict", "reason": "the call has ended"})
    assert "operator test" in log


async def test_the_operator_transfers_a_call_and_makes_the_agent_say_a_line(
        tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(20000))
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, QUIET_AGENT) as gw:
        with start_sipp("uac_transferee", gw.target, log_dir=tmp_path / "sipp",
                        keys={"audio_file": str(audio)}, timeout_s=40) as sipp:
            call = await asyncio.to_thread(_live_call, gw)
            session = await sim.wait_for_session(0, timeout=10)
            said = await asyncio.to_thread(control_post, gw, f"/v1/calls/{call['call_id']}/say",
                                           {"text": "Please hold the line."})
            create = await session.wait_for_received("response.create", timeout=10)
            moved = await asyncio.to_thread(control_post, gw,
                                            f"/v1/calls/{call['call_id']}/transfer",
                                            {"target": "sip:desk@127.0.0.1"})
            result = await asyncio.to_thread(sipp.result, 30.0)
    assert said[0] == 200
    assert "Please hold the line." in json.dumps(create)
    assert moved == (200, {"ok": True, "call_id": call["call_id"], "result": "transferred"})
    assert result.ok, result.describe()
    assert "REFER Refer-To sip:desk@127.0.0.1" in result.action_log


async def _read_sse(resp: aiohttp.ClientResponse) -> list[tuple[str, dict[str, Any]]]:
    """Events of an SSE response until ``ended`` (or the stream's end)."""
    events: list[tuple[str, dict[str, Any]]] = []
    name, data = "", ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and name:
            events.append((name, json.loads(data)))
            if name == "ended":
                break
            name, data = "", ""
    return events

"""Tools that go wrong on a real SIP call: the model is told, the caller keeps hearing the agent.

The gateway runs as a subprocess (from the repository root, so its tool workers import
``tests.fixtures.tools``) with a dialplan written here; the pjsua2 test caller, or SIPp for the
transfer, speaks once and the test's scenario book chains the rest: each tool's output makes the
gateway ask for the next response, whose line quotes that output (``{tool_output...}``). The
tests cover a tool that raises, one that outlives its ``timeout_s`` (sleeping, or spinning on a
CPU), arguments that break the tool's schema, an HTTP tool with a secret header, and a blind
transfer that the far end reports busy. Each asserts what the model was told (the
``function_call_output`` the simulator received), that the call went on (the next line's audio
in the gateway's RTP, the caller ending the call), and the gateway's call record.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimulatorServer
from tests.sip.gateway import place_call, run_gateway
from tests.sip.observe import (
    call_record,
    function_calls,
    gateway_stream,
    item_audio,
    output_of,
    played_in_full,
    spoken,
)
from tests.support.audio import silence_pcm16, speech_pcm16, write_g711, write_wav
from tests.support.capture import Capture
from tests.support.ports import free_udp_port_block
from tests.support.rtp import rtp_streams
from tests.support.sipp import run_sipp_async

pytestmark = [pytest.mark.sip, pytest.mark.timeout(60)]

TOOLS = "tests.fixtures.tools.sample_tools"
SECRET = "tok-9f8e7d6c5b4a39281706"
SALES = "sip:sales@127.0.0.1:5999"


def dialplan(agent_tools: str, tools: str = "") -> str:
    """A one-agent plan: ``agent_tools`` is the agent's tool list (flow YAML), ``tools`` the
    body of the top-level ``tools:`` (indented YAML), if any."""
    return f"""
{"tools:" if tools else ""}
{tools}
agents:
  tester:
    instructions: You are the tool tester of the gateway.
    tools: {agent_tools}
routes:
  - name: all
    agent: tester
"""


def book(turns: str) -> str:
    """A scenario book for the tester agent with these ``turns:`` (indented YAML)."""
    return f"""
scenarios:
  tester:
    match: {{instructions: "(?i)tool tester"}}
    turns:
{turns}
"""


def caller_wav(tmp_path: Path) -> Path:
    """A second of silence, one sentence, then silence for longer than any call here."""
    path = tmp_path / "caller.wav"
    write_wav(path, silence_pcm16(1000) + speech_pcm16("Please check my order.")
              + silence_pcm16(30000))
    return path


# --- what the simulator and the gateway saw -------------------------------------------------


# --- the tests -------------------------------------------------------------------------------


async def test_a_tool_that_raises_is_reported_and_the_call_goes_on(tmp_path: Path) -> None:
    plan = dialplan("[fail]", f'  fail: {{python: "{TOOLS}:fail"}}')
    turns = """
      - call: {name: fail, arguments: {message: "the order system is down"}}
      - say: "Sorry. {tool_output.error}"
"""
    async with SimulatorServer(scenarios=parse_scenarios(book(turns))) as sim, \
            run_gateway(tmp_path, sim, plan) as gw:
        with Capture(tmp_path / "call.pcap", gw.rtp_filter) as cap:
            report = await place_call(gw, tmp_path, play=caller_wav(tmp_path), duration_s=12,
                                      timeout_s=30)
            await gw.wait_log("call record:")
        session = sim.sessions[0]
    calls = function_calls(session)
    error = output_of(calls, "fail")["error"]
    assert "ValueError" in error and "the order system is down" in error
    # The next line quoted the error, and the caller heard all of it.
    item_id, line = spoken(session)[-1]
    assert line == f"Sorry. {error}"
    played_in_full(item_audio(session, item_id), gateway_stream(cap.packets(), gw))
    # Nobody hung up on the caller: the call lasted until the caller ended it.
    assert report["ended_by"] == "local"
    record = call_record(gw.log())
    assert record["end_reason"] == "caller hung up"
    assert [(t["name"], t["ok"]) for t in record["tool_calls"]] == [("fail", False)]
    # The record (logged at INFO) names the kind of failure only: the message is call content.
    assert record["tool_calls"][0]["error"] == "exception"
    assert "the order system is down" not in json.dumps(record)


#: Said before the tool is called, in the same response: the caller hears it while it runs.
LONG_LINE = ("Let me look that up for you. This can take a little while, so please stay on "
             "the line while I check the order system for you.")


@pytest.mark.parametrize(("tool", "arguments"), [("slow", {"seconds": 30}), ("spin", {})],
                         ids=["sleeping", "cpu-bound"])
async def test_a_tool_past_its_timeout_is_cut_off_without_stalling_audio(
        tmp_path: Path, tool: str, arguments: dict[str, Any]) -> None:
    tools = (f'  {tool}: {{python: "{TOOLS}:{tool}", timeout_s: 2}}\n'
             f'  whoami: {{python: "{TOOLS}:whoami"}}')
    plan = dialplan(f"[{tool}, whoami]", tools)
    turns = f"""
      - - say: "{LONG_LINE}"
        - call: {{name: {tool}, arguments: {json.dumps(arguments)}}}
      - - say: "{{tool_output.error}}."
        - call: {{name: whoami, arguments: {{}}}}
      - say: "A new worker, {{tool_output}}, answered."
"""
    async with SimulatorServer(scenarios=parse_scenarios(book(turns))) as sim, \
            run_gateway(tmp_path, sim, plan, calls={"tool_workers": 1}) as gw:
        with Capture(tmp_path / "call.pcap", gw.rtp_filter) as cap:
            report = await place_call(gw, tmp_path, play=caller_wav(tmp_path), duration_s=24,
                                      timeout_s=40)
            await gw.wait_log("call record:")
        session = sim.sessions[0]
    log = gw.log()
    calls = function_calls(session)
    assert [c["name"] for c in calls] == [tool, "whoami"]
    error = output_of(calls, tool)["error"]
    assert error == f"tool {tool} timed out after 2 s"
    # The output came back about timeout_s after the call: the next response (which the
    # gateway asks for right after sending it) started 2-3 s after the call was made.
    t_call = session.sent_at[calls[0]["sent_index"]]
    t_next = next(session.sent_at[i] for i, e in enumerate(session.sent)
                  if i > calls[0]["sent_index"] and e["type"] == "response.created")
    assert 2.0 <= t_next - t_call <= 3.0, t_next - t_call

    # Meanwhile the caller kept hearing the agent: the long line played in full across the
    # whole tool call, 50 packets a second, never a gap over 100 ms.
    stream = gateway_stream(cap.packets(), gw)
    line_id = next(item for item, text in spoken(session) if text == LONG_LINE)
    first, last = played_in_full(item_audio(session, line_id), stream)
    assert first < t_call and last > t_next
    during = [p.at for p in stream.packets if t_call <= p.at <= t_next]
    gaps = [b - a for a, b in zip(during, during[1:], strict=False)]
    assert max(gaps) <= 0.100, max(gaps)
    assert 45 <= (len(during) - 1) / (during[-1] - during[0]) <= 55

    # The stuck worker was killed and replaced: the next tool call ran in a new process.
    killed = re.search(rf"tool {tool} timed out after 2 s; killing tool worker 0 \(pid (\d+)\)",
                       log)
    assert killed, "the gateway did not log killing the worker"
    new_pid = output_of(calls, "whoami")
    assert isinstance(new_pid, int) and new_pid != int(killed.group(1))
    assert spoken(session)[-1][1] == f"A new worker, {new_pid}, answered."
    assert spoken(session)[-2][1] == f"{error}."

    assert report["ended_by"] == "local"
    record = call_record(log)
    assert [(t["name"], t["ok"]) for t in record["tool_calls"]] == [(tool, False),
                                                                    ("whoami", True)]
    assert record["end_reason"] == "caller hung up"


async def test_arguments_against_the_schema_are_refused_before_the_tool_runs(
        tmp_path: Path) -> None:
    # crash() kills its worker: had it run, the worker's pid would change.
    tools = (f'  crash: {{python: "{TOOLS}:crash"}}\n'
             f'  whoami: {{python: "{TOOLS}:whoami"}}')
    plan = dialplan("[crash, whoami]", tools)
    turns = """
      - call: {name: whoami, arguments: {}}
      - call: {name: crash, arguments: {code: "three"}}
      - - say: "{tool_output.error}"
        - call: {name: whoami, arguments: {}}
      - say: "Still worker {tool_output}."
"""
    async with SimulatorServer(scenarios=parse_scenarios(book(turns))) as sim, \
            run_gateway(tmp_path, sim, plan, calls={"tool_workers": 1}) as gw:
        report = await place_call(gw, tmp_path, play=caller_wav(tmp_path), duration_s=14,
                                  timeout_s=30)
        await gw.wait_log("call record:")
        session = sim.sessions[0]
    log = gw.log()
    calls = function_calls(session)
    assert [c["name"] for c in calls] == ["whoami", "crash", "whoami"]
    assert calls[1]["arguments"] == {"code": "three"}
    error = json.loads(calls[1]["output"])["error"]
    assert error.startswith("tool crash: invalid arguments:") and "'code'" in error
    assert "expected integer" in error
    before, after = (json.loads(calls[i]["output"]) for i in (0, 2))
    assert isinstance(before, int) and before == after
    assert not re.search(r"tool worker \d+ \(pid \d+\) crashed", log)
    assert [text for _, text in spoken(session)] == [error, f"Still worker {before}."]
    assert report["ended_by"] == "local"
    record = call_record(log)
    assert [(t["name"], t["ok"]) for t in record["tool_calls"]] == [
        ("whoami", True), ("crash", False), ("whoami", True)]


async def test_http_tool_sends_the_arguments_with_a_secret_header(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    answer = '{"order_id": "A-17", "status": "shipped", "eta": "Tuesday"}'

    async def orders(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "path": request.path,
                     "authorization": request.headers.get("Authorization"),
                     "body": await request.json()})
        return web.Response(text=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/orders", orders)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        tools = f"""  lookup_order:
    http:
      url: "http://127.0.0.1:{port}/orders"
      method: POST
      headers: {{Authorization: "Bearer ${{ORDERS_TOKEN}}"}}
    description: Look up an order.
    parameters:
      type: object
      properties: {{order_id: {{type: string}}}}
      required: [order_id]
    timeout_s: 5"""
        turns = """
      - call: {name: lookup_order, arguments: {order_id: "A-17"}}
      - say: "Your order is {tool_output.status} and arrives on {tool_output.eta}."
"""
        async with SimulatorServer(scenarios=parse_scenarios(book(turns))) as sim, \
                run_gateway(tmp_path, sim, dialplan("[lookup_order]", tools),
                            env={"ORDERS_TOKEN": SECRET}) as gw:
            with Capture(tmp_path / "call.pcap", gw.rtp_filter) as cap:
                report = await place_call(gw, tmp_path, play=caller_wav(tmp_path),
                                          duration_s=10, timeout_s=30)
                await gw.wait_log("call record:")
            session = sim.sessions[0]
    finally:
        await runner.cleanup()
    # The service got the model's arguments as JSON, with the secret from the environment.
    assert seen == [{"method": "POST", "path": "/orders", "authorization": f"Bearer {SECRET}",
                     "body": {"order_id": "A-17"}}]
    # Its answer went to the model as it was, and the next line used it.
    calls = function_calls(session)
    assert [c["output"] for c in calls] == [answer]
    item_id, line = spoken(session)[-1]
    assert line == "Your order is shipped and arrives on Tuesday."
    played_in_full(item_audio(session, item_id), gateway_stream(cap.packets(), gw))
    assert report["ended_by"] == "local"
    record = call_record(gw.log())
    assert [(t["name"], t["ok"]) for t in record["tool_calls"]] == [("lookup_order", True)]
    # The secret went to the service only: never into the log (at DEBUG) or the conversation.
    assert SECRET not in gw.log()
    assert SECRET not in json.dumps(session.received)
    assert "lookup_order: HTTP 200" in gw.log()


async def test_failed_blind_transfer_is_reported_and_the_caller_stays(tmp_path: Path) -> None:
    plan = dialplan(f'[{{builtin: transfer_call, targets: {{sales: "{SALES}"}}}}]')
    turns = """
      - - say: "Transferring you to sales."
        - call: {name: transfer_call, arguments: {target: sales, reason: "wants sales"}}
      - say: "Sorry, sales is busy. {tool_output.error}"
"""
    audio = write_g711(tmp_path / "caller.ulaw", silence_pcm16(1000)
                       + speech_pcm16("Put me through to sales, please.") + silence_pcm16(40000))
    media_port = free_udp_port_block(4)
    async with SimulatorServer(scenarios=parse_scenarios(book(turns))) as sim, \
            run_gateway(tmp_path, sim, plan) as gw:
        with Capture(tmp_path / "call.pcap", f"udp and dst port {media_port}") as cap:
            result = await run_sipp_async("uac_transferee_refer_fails", gw.target,
                                          log_dir=tmp_path, media_port=media_port,
                                          hold_ms=11000, keys={"audio_file": str(audio)},
                                          timeout_s=40)
            await gw.wait_log("call record:")
        session = sim.sessions[0]
    # The caller was REFERred to the configured target, answered 486 Busy Here, then stayed
    # on the line until it hung up itself (a BYE from the gateway would fail the scenario).
    assert result.ok, result.describe()
    assert "REFER Refer-To " + SALES in result.action_log
    assert [m.status for m in result.received(method="NOTIFY")] == [200, 200]
    assert result.received(method="BYE", status=200)
    assert not [m for m in result.received(method="BYE") if not m.is_response]
    # The model was told the transfer failed and why, and its next line was heard.
    calls = function_calls(session)
    assert [c["name"] for c in calls] == ["transfer_call"]
    error = output_of(calls, "transfer_call")["error"]
    assert "486" in error and "still on the line" in error
    item_id, line = spoken(session)[-1]
    assert line == f"Sorry, sales is busy. {error}"
    stream = next(s for s in rtp_streams(cap.packets()) if s.dport == media_port)
    played_in_full(item_audio(session, item_id), stream)
    log = gw.log()
    assert "transfer progress: 486 Busy Here (final)" in log
    record = call_record(log)
    assert [(t["name"], t["ok"]) for t in record["tool_calls"]] == [("transfer_call", False)]
    assert record["end_reason"] == "caller hung up"

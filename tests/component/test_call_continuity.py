"""Realtime continuity and call-session robustness over real sockets (the simulator).

The Realtime client reconnects with the caller's prelude (replayed items) before any audio,
and rotates to a new session on request; the call agent answers every function call once and
serializes its response requests; the call session logs its record when cancelled, always
sees the caller's hangup, refuses a second concurrent transfer, and survives a codec change
after its Realtime session ended. The SIP side is a small recording stand-in for the user
agent (our own ``SipControl`` protocol), the Realtime side the real simulator.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.agents.http_tool import HttpToolClient
from gateway.calls.conversation import AgentServices, CallAgent, TransferResult
from gateway.calls.session import CallSession, SessionSettings
from gateway.dialplan import parse_dialplan
from gateway.dialplan.router import CallInfo, RouteDecision, route_call
from gateway.errors import CallRejected
from gateway.media.channel import MediaChannel
from gateway.media.playout import PlayedState, PlayoutBuffer
from gateway.realtime import events as ev
from gateway.realtime.client import RealtimeClient, RealtimeConnectError, RealtimeConnectOptions
from gateway.realtime.retry import RetryPolicy
from gateway.sim.server import SimulatorServer
from gateway.sip.events import CallState, IncomingCall, LegEnded, MediaActive, TransferProgress

pytestmark = [pytest.mark.component, pytest.mark.timeout(30)]

FAST_RETRY = RetryPolicy(max_attempts=4, initial_delay_s=0.01, max_delay_s=0.05, jitter=0.5)
PLAN = """
tools:
  lookup:
    http: {url: "http://127.0.0.1:9/lookup"}
    description: Look something up.
    parameters: {type: object, properties: {q: {type: string}}}
agents:
  tester:
    instructions: You are the continuity tester.
    tools: [lookup, {builtin: transfer_call, targets: {desk: "sip:desk@127.0.0.1"}}]
routes:
  - name: all
    agent: tester
"""


def options(sim: SimulatorServer, **overrides: Any) -> RealtimeConnectOptions:
    values: dict[str, Any] = {"url": sim.ws_url, "model": "gpt-realtime-2.1",
                              "api_key": "sk-test", "retry": FAST_RETRY}
    values.update(overrides)
    return RealtimeConnectOptions(**values)


async def next_of(client: RealtimeClient, cls: type[Any]) -> Any:
    async with asyncio.timeout(10):
        while True:
            event = await client.recv()
            if isinstance(event, cls):
                return event


def decision() -> RouteDecision:
    plan = parse_dialplan(PLAN, "plan.yaml", read_text=lambda _: "")
    return route_call(plan, CallInfo(to_user="100", from_user="200",
                                     request_uri="sip:100@127.0.0.1", headers={},
                                     account="trunk", source_ip="127.0.0.1"))


# --- the client -----------------------------------------------------------------------------


async def test_reconnect_announces_the_loss_and_sends_the_prelude_before_audio(
        simulator: SimulatorServer) -> None:
    prelude = [ev.ConversationItemCreate.user_text("What the caller said before.")]
    async with RealtimeClient(options(simulator, reconnect=True), name="t",
                              prelude=lambda: prelude) as client:
        await client.send(ev.SessionUpdate(ev.SessionConfig(instructions="Be brief.")))
        await next_of(client, ev.SessionUpdated)
        await simulator.close_all(abort=True)
        lost = await next_of(client, ev.ConnectionLost)
        back = await next_of(client, ev.Reconnected)
        client.send_audio(b"\xff" * 320)
        second = await simulator.wait_for_session(1)
        await second.wait_for_received("input_audio_buffer.append")
    assert lost.close_code == 1006 and back.close_code == 1006 and not back.rotated
    assert [e["type"] for e in second.received[:3]] == [
        "session.update", "conversation.item.create", "input_audio_buffer.append"]
    assert second.received[1]["item"]["content"][0]["text"] == "What the caller said before."


async def test_rotate_configures_the_new_session_then_switches(
        simulator: SimulatorServer) -> None:
    calls = 0

    def prelude() -> list[ev.ClientEvent]:
        nonlocal calls
        calls += 1
        return [ev.ConversationItemCreate.system_text("context")]

    async with RealtimeClient(options(simulator, reconnect=True), name="t",
                              prelude=prelude) as client:
        await client.send(ev.SessionUpdate(ev.SessionConfig(instructions="Be brief.")))
        await next_of(client, ev.SessionUpdated)
        first = simulator.sessions[0]
        assert await client.rotate() == 1
        rotated = await next_of(client, ev.Reconnected)
        client.send_audio(b"\xff" * 320)
        second = simulator.sessions[1]
        await second.wait_for_received("input_audio_buffer.append")
        assert await first.wait_closed() == 1000
        assert client.stats.rotations == 1 and client.stats.reconnects == 0
    assert rotated.rotated and calls == 1
    assert [e["type"] for e in second.received[:3]] == [
        "session.update", "conversation.item.create", "input_audio_buffer.append"]
    assert second.received[0]["session"]["instructions"] == "Be brief."
    assert not [e for e in first.received if e["type"] == "input_audio_buffer.append"]


async def test_a_failed_rotation_keeps_the_current_session(simulator: SimulatorServer) -> None:
    async with RealtimeClient(options(simulator), name="t") as client:
        simulator.fail_next_connects(10)
        with pytest.raises(RealtimeConnectError, match="HTTP 503"):
            await client.rotate()
        await client.send(ev.SessionUpdate(ev.SessionConfig(instructions="Still here.")))
        await next_of(client, ev.SessionUpdated)
    assert len(simulator.sessions) == 1


# --- the call agent -------------------------------------------------------------------------


class Control:
    """Records what the agent asks of its call (our CallControl protocol)."""

    def __init__(self) -> None:
        self.sent: list[ev.ClientEvent] = []
        self.transfers = 0

    async def send(self, event: ev.ClientEvent) -> None:
        self.sent.append(event)

    def flush_playout(self) -> PlayedState | None:
        return None

    async def wait_playout_idle(self, timeout_s: float) -> bool:
        return True

    def end_call(self, reason: str) -> None:
        pass

    async def transfer(self, uri: str, timeout_s: float) -> TransferResult:
        raise RuntimeError("SIP command queue full")

    def send_dtmf(self, digits: str) -> None:
        raise RuntimeError("SIP command queue full")

    def of(self, cls: type[Any]) -> list[Any]:
        return [e for e in self.sent if isinstance(e, cls)]


def function_call(call_id: str, name: str, arguments: str = "{}") -> Any:
    return ev.ResponseFunctionCallArgumentsDone(response_id="resp_1", item_id=f"it_{call_id}",
                                                output_index=0, call_id=call_id, name=name,
                                                arguments=arguments)


def response(kind: type[Any], rid: str = "resp_1") -> Any:
    return kind(response=ev.ResponseInfo(id=rid, status="completed"))


async def test_every_function_call_gets_one_output_even_when_the_tool_path_raises() -> None:
    control = Control()
    http = HttpToolClient()  # never opened: calling it raises
    agent = CallAgent(decision(), control, AgentServices(http=http), name="t")
    try:
        await agent.on_event(response(ev.ResponseCreated))
        await agent.on_event(function_call("call_1", "lookup", '{"q": "x"}'))
        await agent.on_event(function_call("call_2", "transfer_call",
                                           '{"target": "desk", "reason": "r"}'))
        await agent.on_event(function_call("call_1", "lookup", '{"q": "x"}'))  # repeated
        await agent.on_event(response(ev.ResponseDone))
        async with asyncio.timeout(5):
            await asyncio.gather(*agent._tasks)  # the tool tasks: both answer and finish
    finally:
        await agent.close()
    outputs = [e.item for e in control.of(ev.ConversationItemCreate)]
    assert sorted(o["call_id"] for o in outputs) == ["call_1", "call_2"]
    assert all('"error"' in o["output"] for o in outputs)
    assert len(control.of(ev.ResponseCreate)) == 1
    errors = sorted(t["error"] for t in agent.activity.tool_calls)
    assert errors == ["exception", "exception"]  # no exception text without call_content


async def test_response_requests_are_serialized_and_a_refused_one_is_sent_later() -> None:
    control = Control()
    agent = CallAgent(decision(), control, AgentServices(), name="t")
    await agent.request_response("first")
    await agent.request_response("second")  # before response.created: must wait
    assert len(control.of(ev.ResponseCreate)) == 1
    await agent.on_event(response(ev.ResponseCreated, "resp_1"))
    await agent.on_event(response(ev.ResponseDone, "resp_1"))
    requests = control.of(ev.ResponseCreate)
    assert [r.response["instructions"] for r in requests] == ["first", "second"]
    # Server VAD started a response just as ours went out: ours is refused, then resent.
    await agent.on_event(response(ev.ResponseCreated, "resp_2"))
    await agent.on_event(response(ev.ResponseDone, "resp_2"))
    await agent.request_response("third")
    third = control.of(ev.ResponseCreate)[-1]
    await agent.on_event(response(ev.ResponseCreated, "resp_vad"))
    await agent.on_event(ev.ErrorEvent(error=ev.ErrorDetail(
        type="invalid_request_error", code="conversation_already_has_active_response",
        message="Conversation already has an active response", event_id=third.event_id)))
    assert len(control.of(ev.ResponseCreate)) == 3
    await agent.on_event(response(ev.ResponseDone, "resp_vad"))
    requests = control.of(ev.ResponseCreate)
    assert [r.response["instructions"] for r in requests] == ["first", "second", "third",
                                                               "third"]
    await agent.close()


# --- the call session -----------------------------------------------------------------------


class Sip:
    """Records SIP commands; a hangup ends the leg like the user agent would."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, Any]] = []
        self.session: CallSession | None = None

    def answer(self, leg_id: int, status: int, reason: str = "",
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.commands.append(("answer", status))

    def reject(self, leg_id: int, err: CallRejected) -> None:
        self.commands.append(("reject", err.sip_status))

    def hangup(self, leg_id: int, status: int = 603, reason: str = "") -> None:
        self.commands.append(("hangup", status))
        if self.session is not None:
            asyncio.get_running_loop().call_soon(
                self.session.on_sip_event, LegEnded(leg_id, 200, "OK"))

    def transfer(self, leg_id: int, target_uri: str) -> None:
        self.commands.append(("transfer", target_uri))

    def send_dtmf(self, leg_id: int, digits: str) -> None:
        self.commands.append(("dtmf", digits))

    def relay(self, leg_id: int, uri: str, headers: tuple[tuple[str, str], ...]) -> None:
        self.commands.append(("relay", uri))

    def new_leg_id(self) -> int:
        raise AssertionError("no outbound call expected")

    def new_channel(self) -> MediaChannel:
        raise AssertionError("no outbound call expected")

    def originate(self, leg_id: int, channel: MediaChannel, uri: str,
                  account: str | None = None) -> None:
        raise AssertionError("no outbound call expected")


def offer(leg_id: int = 7) -> IncomingCall:
    return IncomingCall(leg_id=leg_id, sip_call_id=f"call-{leg_id}", from_uri="sip:200@x",
                        from_user="200", from_name=None, to_uri="sip:100@x", to_user="100",
                        request_uri="sip:100@127.0.0.1", headers=(), source_ip="127.0.0.1",
                        source_port=5062, transport="udp", account="trunk",
                        media=MediaChannel(PlayoutBuffer()))


@pytest.fixture
async def session(simulator: SimulatorServer) -> AsyncIterator[tuple[CallSession, Sip]]:
    sip = Sip()
    call = CallSession(offer(), decision(), sip, options(simulator), SessionSettings())
    sip.session = call
    yield call, sip


async def start(call: CallSession, simulator: SimulatorServer) -> asyncio.Task[Any]:
    task = asyncio.create_task(call.run(), name="test:session")
    conn = await simulator.wait_for_session(0)
    call.on_sip_event(MediaActive(call.leg_id, "PCMU"))
    await conn.wait_for_received("session.update")
    return task


def records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("call record:")]


async def test_a_cancelled_session_logs_its_record_once_and_reraises(
        session: tuple[CallSession, Sip], simulator: SimulatorServer,
        caplog: pytest.LogCaptureFixture) -> None:
    call, sip = session
    caplog.set_level(logging.INFO, logger="gateway.call")
    task = await start(call, simulator)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(records(caplog)) == 1
    assert re.search(r'"end_reason": "cancelled"', records(caplog)[0])
    assert ("hangup", 603) in sip.commands or any(c[0] == "hangup" for c in sip.commands)


async def test_the_callers_hangup_ends_the_call_even_with_a_full_event_queue(
        session: tuple[CallSession, Sip], simulator: SimulatorServer) -> None:
    call, _ = session
    task = await start(call, simulator)
    # A stuck moment: more events than the queue holds arrive before the session runs.
    for _ in range(80):
        call.on_sip_event(CallState(call.leg_id, "CONFIRMED", 200, "OK"))
    call.on_sip_event(LegEnded(call.leg_id, 200, "OK"))
    record = await asyncio.wait_for(task, 10)
    assert record.end_reason == "caller hung up"


async def test_a_second_concurrent_transfer_is_refused(
        session: tuple[CallSession, Sip], simulator: SimulatorServer) -> None:
    call, sip = session
    task = await start(call, simulator)
    first = asyncio.create_task(call.transfer("sip:a@x", 5), name="test:transfer-1")
    await asyncio.sleep(0)
    second = await call.transfer("sip:b@x", 5)
    assert (second.ok, second.status) == (False, 491)
    call.on_sip_event(TransferProgress(call.leg_id, 200, "OK", final=True))
    assert (await first).ok
    assert [c for c in sip.commands if c[0] == "transfer"] == [("transfer", "sip:a@x")]
    call.end_call("done")
    await asyncio.wait_for(task, 10)


async def test_a_codec_change_after_the_session_ended_is_ignored(
        session: tuple[CallSession, Sip], simulator: SimulatorServer) -> None:
    call, _ = session
    task = await start(call, simulator)
    call.end_call("done")
    record = await asyncio.wait_for(task, 10)
    await call._configure("PCMA")  # a re-INVITE that lost the race: no assertion, no send
    assert record.codec == "PCMU"

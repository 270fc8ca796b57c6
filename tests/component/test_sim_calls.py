"""Realtime Calls against the official SDK: webhooks, REST call control, sideband by call_id.

The simulator stands in for OpenAI's SIP side: a test places an incoming call, the signed
``realtime.call.incoming`` webhook reaches a local receiver and must verify and parse with
``openai.OpenAI().webhooks.unwrap``; the SDK's ``client.realtime.calls.*`` drive the call and
get the simulator's errors as the SDK's exception types; a sideband opened with
``client.realtime.connect(call_id=...)`` sees the session the accept configured.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from openai import (
    AsyncOpenAI,
    BadRequestError,
    InvalidWebhookSignatureError,
    NotFoundError,
    OpenAI,
)
from openai.types.realtime import RealtimeFunctionToolParam
from openai.types.webhooks import RealtimeCallIncomingWebhookEvent

from gateway.sim.calls import CallState
from gateway.sim.scenario import ScenarioBook, parse_scenarios
from gateway.sim.server import SimOptions, SimulatorServer
from gateway.sim.simcall import CallOutcomeError
from tests.component.test_sim_fidelity import check_against_sdk
from tests.conftest import scaled

pytestmark = pytest.mark.component

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
AUTH = {"Authorization": "Bearer test-key"}
BOOK = parse_scenarios("""
scenarios:
  desk:
    match: {instructions: "(?i)front desk"}
    turns:
      - user_says: I need an agent
        steps:
          - say: Let me transfer you.
          - call: {name: transfer_call, arguments: {dept: sales}}
    fallback: [{say: "Anything else?"}]
  chatty:
    match: {instructions: "(?i)chatty"}
    turns:
      - say: >-
          This is a long answer that goes on and on so that the caller has every chance to
          interrupt it long before it is finished, which is what the caller does here.
  farewell:
    match: {instructions: "(?i)farewell"}
    turns:
      - [{say: Goodbye now.}, hangup]
""")
FAST: dict[str, Any] = {
    "speed": 20.0,
    "tts_engine": "tone",
    "response_latency_ms": 0,
    "playout_speed": 10.0,
    "webhook_attempts": 3,
    "webhook_backoff_s": 0.05,
    "webhook_timeout_s": 0.5,
}
TOOLS: list[RealtimeFunctionToolParam] = [
    {
        "type": "function",
        "name": "transfer_call",
        "description": "Transfer the caller",
        "parameters": {"type": "object", "properties": {"dept": {"type": "string"}}},
    },
    {"type": "function", "name": "end_call", "parameters": {"type": "object"}},
]
INVITE = [
    ("From", '"Ada" <sip:+14155550100@pbx.example.com>;tag=9fxced76sl'),
    ("To", "<sip:proj_test@sip.api.openai.com>"),
    ("Call-ID", "3848276298220188511@pbx.example.com"),
    ("X-Account", "42"),
    ("X-Account", "43"),
]


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records deliveries and answers as told.

    ``answers`` are used in order, then 200: an int is the status to answer, a float the
    seconds to stall before answering 200 (to exceed the sender's timeout).
    """

    def __init__(self, answers: list[int | float] | None = None) -> None:
        self.answers = list(answers or [])
        self.requests: list[tuple[bytes, dict[str, str], float]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((await request.read(), dict(request.headers), time.time()))
        self._changed.set()
        action = self.answers.pop(0) if self.answers else 200
        if isinstance(action, float):
            await asyncio.sleep(action)
            return web.Response(status=200)
        return web.Response(status=action)

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(scaled(10)):
            while len(self.requests) < count:
                self._changed.clear()
                await self._changed.wait()

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def calls_sim(
    receiver: Receiver | None = None, book: ScenarioBook = BOOK, **options: Any
) -> AsyncIterator[SimulatorServer]:
    """A simulator whose webhooks go to ``receiver`` (none without one)."""
    hook: dict[str, Any] = (
        {"webhook_url": receiver.url, "webhook_secret": SECRET} if receiver is not None else {}
    )
    async with SimulatorServer(
        "127.0.0.1", 0, book, SimOptions(**{**FAST, **hook, **options})
    ) as sim:
        yield sim


@contextlib.asynccontextmanager
async def sdk(sim: SimulatorServer) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(base_url=sim.http_url, api_key="test-key", max_retries=0)
    try:
        yield client
    finally:
        await client.close()


async def recv(conn: Any) -> Any:
    """The next event of an SDK connection, untyped (the union is checked elsewhere)."""
    async with asyncio.timeout(scaled(10)):
        return await conn.recv()


def unwrap(payload: bytes, headers: dict[str, str]) -> Any:
    return OpenAI(api_key="x", webhook_secret=SECRET).webhooks.unwrap(payload, headers)


# --- webhooks -----------------------------------------------------------------------------


async def test_webhook_verifies_and_parses_with_the_sdk() -> None:
    async with Receiver() as receiver, calls_sim(receiver) as sim:
        call = await sim.incoming_call(INVITE, media_security="srtp")
        [delivery] = await call.wait_webhooks()
        assert delivery.delivered and [a.status for a in delivery.attempts] == [200]
        [(payload, headers, _)] = receiver.requests
        event = unwrap(payload, headers)
        assert isinstance(event, RealtimeCallIncomingWebhookEvent)
        assert (event.type, event.object) == ("realtime.call.incoming", "event")
        assert event.id.startswith("evt_") and abs(event.created_at - time.time()) < 5
        assert event.data.call_id == call.call_id and call.call_id.startswith("rtc_")
        assert [(h.name, h.value) for h in event.data.sip_headers] == INVITE
        assert event.data.sip_media_security == "srtp"
        assert headers["webhook-id"] == delivery.webhook_id
        assert headers["User-Agent"].startswith("OpenAI/1.0")
        assert call.state is CallState.INCOMING  # acknowledging is not accepting


async def test_an_unanswered_webhook_is_retried_with_the_same_webhook_id() -> None:
    # A 500, then no answer within the timeout, then 200: three attempts.
    async with Receiver([500, 1.0]) as receiver, calls_sim(receiver) as sim:
        call = await sim.incoming_call(media_security=None)
        [delivery] = await call.wait_webhooks()
        assert delivery.delivered
        assert [(a.status, a.error) for a in delivery.attempts] == [
            (500, None), (None, "timeout"), (200, None)
        ]
        await receiver.wait_for(3)
        ids = {headers["webhook-id"] for _, headers, _ in receiver.requests}
        bodies = {payload for payload, _, _ in receiver.requests}
        assert ids == {delivery.webhook_id} and len(bodies) == 1
        for payload, headers, _ in receiver.requests:  # each attempt is signed on its own
            assert unwrap(payload, headers).data.sip_media_security is None
        gaps = [b[2] - a[2] for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
        assert gaps[0] >= 0.05 and gaps[1] >= 0.5  # backoff; then timeout + doubled backoff


async def test_delivery_gives_up_after_the_configured_attempts() -> None:
    async with Receiver([503] * 10) as receiver, calls_sim(receiver, webhook_attempts=2) as sim:
        call = await sim.incoming_call()
        [delivery] = await call.wait_webhooks()
        assert delivery.finished and not delivery.delivered
        assert [a.status for a in delivery.attempts] == [503, 503]
        assert call.to_json()["deliveries"][0]["attempts"][1]["status"] == 503


async def test_an_unreachable_receiver_is_an_attempt_error() -> None:
    async with Receiver() as receiver:
        url = receiver.url
    async with calls_sim(webhook_url=url, webhook_secret=SECRET, webhook_attempts=2) as sim:
        call = await sim.incoming_call()
        [delivery] = await call.wait_webhooks()
        assert not delivery.delivered
        assert all(a.status is None and a.error for a in delivery.attempts)


async def test_a_duplicated_call_has_distinct_webhook_and_event_ids() -> None:
    async with Receiver() as receiver, calls_sim(receiver) as sim:
        call = await sim.incoming_call(duplicates=1)
        await call.wait_webhooks()
        await receiver.wait_for(2)
        events = [unwrap(p, h) for p, h, _ in receiver.requests]
        assert {e.data.call_id for e in events} == {call.call_id}
        assert len({e.id for e in events}) == 2
        assert len({h["webhook-id"] for _, h, _ in receiver.requests}) == 2


@pytest.mark.parametrize("fault", ["bad_signature", "stale_timestamp", "future_timestamp"])
async def test_spoilt_webhooks_fail_the_sdks_verification(fault: Any) -> None:
    async with Receiver() as receiver, calls_sim(receiver) as sim:
        call = await sim.incoming_call(webhook_fault=fault)
        await call.wait_webhooks()
        [(payload, headers, _)] = receiver.requests
        with pytest.raises(InvalidWebhookSignatureError):
            unwrap(payload, headers)
        assert json.loads(payload)["data"]["call_id"] == call.call_id


async def test_no_webhook_without_a_url_or_when_told_not_to() -> None:
    async with Receiver() as receiver, calls_sim(receiver) as sim:
        quiet = await sim.incoming_call(deliver=False)
        assert quiet.deliveries == [] and await quiet.wait_webhooks() == []
    async with calls_sim() as sim:
        call = await sim.incoming_call()
        assert call.deliveries == [] and sim.get_call(call.call_id) is call


# --- REST call control through the SDK ----------------------------------------------------


async def test_sdk_accept_with_every_parameter_then_refer_then_hangup() -> None:
    async with calls_sim() as sim, sdk(sim) as client:
        call = await sim.incoming_call(INVITE)
        states: list[str] = []
        call.on_state_change = lambda c: states.append(str(c.state))
        await client.realtime.calls.accept(
            call.call_id,
            type="realtime",
            model="gpt-realtime-2.1-mini",
            instructions="You are the front desk of ACME.",
            audio={
                "input": {
                    "noise_reduction": {"type": "near_field"},
                    "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 400,
                                       "idle_timeout_ms": 8000},
                },
                "output": {"voice": "cedar", "speed": 1.2},
            },
            tools=[*TOOLS],
            tool_choice="auto",
            output_modalities=["audio"],
            max_output_tokens=800,
            truncation={"type": "retention_ratio", "retention_ratio": 0.5},
            tracing={"workflow_name": "phone"},
            include=["item.input_audio_transcription.logprobs"],
            prompt={"id": "pmpt_1", "variables": {"who": "Ada"}},
            reasoning={"effort": "low"},
            parallel_tool_calls=False,
        )
        session = await call.wait_accepted()
        assert session["model"] == "gpt-realtime-2.1-mini"
        assert session["instructions"] == "You are the front desk of ACME."
        assert session["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "cedar",
                                              "speed": 1.2}
        assert [t["name"] for t in session["tools"]] == ["transfer_call", "end_call"]
        assert call.state is CallState.ACCEPTED

        await client.realtime.calls.refer(call.call_id, target_uri="tel:+14155550123")
        assert await call.wait_referred() == "tel:+14155550123"
        await client.realtime.calls.hangup(call.call_id)
        assert await call.wait_ended() == "api"
        assert [s for s, _ in call.record.history] == ["incoming", "accepted", "referred",
                                                       "ended"]
        assert states == ["accepted", "referred", "ended"]  # what the SIP endpoint will act on


async def test_sdk_reject_with_and_without_status() -> None:
    async with calls_sim() as sim, sdk(sim) as client:
        busy, declined = await sim.incoming_call(), await sim.incoming_call()
        await client.realtime.calls.reject(busy.call_id, status_code=486)
        await client.realtime.calls.reject(declined.call_id)
        assert await busy.wait_rejected() == 486
        assert await declined.wait_rejected() == 603
        with pytest.raises(CallOutcomeError):
            await busy.wait_accepted()


async def test_sdk_gets_the_simulators_errors_as_its_exception_types() -> None:
    async with calls_sim() as sim, sdk(sim) as client:
        calls = client.realtime.calls
        with pytest.raises(NotFoundError) as not_found:
            await calls.accept("rtc_nope", type="realtime")
        assert (not_found.value.status_code, not_found.value.code) == (404, "call_not_found")
        assert not_found.value.type == "invalid_request_error"

        call = await sim.incoming_call()
        with pytest.raises(BadRequestError) as fmt:
            await calls.accept(call.call_id, type="realtime",
                               audio={"output": {"format": {"type": "audio/pcmu"}}})
        assert (fmt.value.code, fmt.value.param) == (
            "sip_audio_format_not_allowed", "audio.output.format"
        )
        with pytest.raises(BadRequestError) as voice:
            await calls.accept(call.call_id, type="realtime",
                               audio={"output": {"voice": "nova"}})
        assert (voice.value.code, voice.value.param) == ("invalid_value", "audio.output.voice")
        with pytest.raises(BadRequestError) as early:
            await calls.hangup(call.call_id)
        assert early.value.code == "invalid_call_state"
        assert call.state is CallState.INCOMING  # refused requests change nothing

        await calls.accept(call.call_id, type="realtime")
        for attempt in (calls.accept(call.call_id, type="realtime"),
                        calls.reject(call.call_id, status_code=486)):
            with pytest.raises(BadRequestError) as state:
                await attempt
            assert state.value.code == "invalid_call_state"
        with pytest.raises(BadRequestError) as target:
            await calls.refer(call.call_id, target_uri="https://example.com")
        assert (target.value.code, target.value.param) == ("invalid_value", "target_uri")
        with pytest.raises(BadRequestError) as status:
            await calls.reject((await sim.incoming_call()).call_id, status_code=200)
        assert status.value.param == "status_code"

        await calls.hangup(call.call_id)
        with pytest.raises(NotFoundError):
            await calls.hangup(call.call_id)  # an ended call is gone


async def test_rest_needs_credentials_and_known_verbs() -> None:
    async with calls_sim() as sim, aiohttp.ClientSession() as http:
        call = await sim.incoming_call()
        url = f"{sim.http_url}/realtime/calls/{call.call_id}"
        async with http.post(f"{url}/accept", json={"type": "realtime"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "invalid_api_key"
        async with http.post(f"{url}/answer", headers=AUTH) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["message"].startswith("Invalid URL (POST ")
        async with http.post(f"{url}/accept", headers=AUTH, data=b"{oops") as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
            assert (error["type"], error["code"], error["param"]) == (
                "invalid_request_error", None, None
            )
        async with http.post(f"{url}/accept", headers=AUTH, json={"type": "realtime"}) as resp:
            assert resp.status == 200 and await resp.read() == b""
        async with http.post(f"{url}/hangup", headers={"api-key": "k"}) as resp:
            assert resp.status == 200
        assert call.record.ended_by == "api"


async def test_ring_timeout() -> None:
    async with calls_sim(ring_timeout_s=0.3) as sim, sdk(sim) as client:
        call = await sim.incoming_call()
        states: list[str] = []
        call.on_state_change = lambda c: states.append(str(c.state))
        started = time.monotonic()
        await call.wait_timed_out(timeout=scaled(5))
        assert states == ["timed_out"]
        assert time.monotonic() - started >= 0.25
        with pytest.raises(NotFoundError):
            await client.realtime.calls.accept(call.call_id, type="realtime")
        with pytest.raises(CallOutcomeError):
            await call.wait_ended()


async def test_an_accepted_call_does_not_time_out() -> None:
    async with calls_sim(ring_timeout_s=0.2) as sim, sdk(sim) as client:
        call = await sim.incoming_call()
        await client.realtime.calls.accept(call.call_id, type="realtime")
        await asyncio.sleep(0.4)
        assert call.state is CallState.ACCEPTED


# --- the sideband -------------------------------------------------------------------------


async def handshake_status(sim: SimulatorServer, query: str) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(f"{sim.ws_url}?{query}", headers=AUTH)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101


async def test_sideband_only_while_the_call_has_a_session() -> None:
    async with calls_sim(detached_sidebands=False) as sim, sdk(sim) as client:
        call = await sim.incoming_call()
        assert await handshake_status(sim, f"call_id={call.call_id}") == 404
        await client.realtime.calls.accept(call.call_id, type="realtime")
        assert await handshake_status(sim, f"call_id={call.call_id}") == 101
        await client.realtime.calls.hangup(call.call_id)
        assert await handshake_status(sim, f"call_id={call.call_id}") == 404
        assert await handshake_status(sim, "call_id=rtc_never_placed") == 404
        rejected = await sim.incoming_call()
        await client.realtime.calls.reject(rejected.call_id)
        assert await handshake_status(sim, f"call_id={rejected.call_id}") == 404
    async with calls_sim() as sim:  # the default keeps detached sidebands for old tests
        assert await handshake_status(sim, "call_id=rtc_never_placed") == 101


async def test_sdk_sideband_sees_the_accepts_session_and_can_update_it() -> None:
    async with calls_sim() as sim, sdk(sim) as client:
        call = await sim.incoming_call()
        await client.realtime.calls.accept(
            call.call_id, type="realtime", model="gpt-realtime-2", tools=[*TOOLS],
            instructions="You are the front desk.", audio={"output": {"voice": "cedar"}},
        )
        async with client.realtime.connect(call_id=call.call_id) as conn:
            created = await recv(conn)
            assert created.type == "session.created"
            assert created.session.instructions == "You are the front desk."
            assert created.session.model == "gpt-realtime-2"
            assert created.session.audio.output.voice == "cedar"
            assert created.session.audio.input.format.type == "audio/pcmu"
            await conn.session.update(
                session={"type": "realtime", "instructions": "You are the front desk, v2."}
            )
            updated = await recv(conn)
            assert updated.type == "session.updated"
            assert updated.session.instructions == "You are the front desk, v2."
            assert [t.name for t in updated.session.tools] == ["transfer_call", "end_call"]
            await conn.session.update(session={
                "type": "realtime", "audio": {"input": {"format": {"type": "audio/pcma"}}}
            })
            error = await recv(conn)
            assert error.type == "error" and error.error.code == "sip_audio_format_not_allowed"
        sideband = await call.wait_sideband(0)
        assert sideband.call is call and sideband.query == {"call_id": call.call_id}
        assert call.session is not None
        assert call.session["instructions"] == "You are the front desk, v2."


async def test_every_sideband_event_validates_against_the_sdk() -> None:
    async with calls_sim() as sim, sdk(sim) as client, aiohttp.ClientSession() as http:
        call = await sim.incoming_call()
        await client.realtime.calls.accept(
            call.call_id, type="realtime", instructions="You are the front desk.", tools=[*TOOLS],
            audio={"input": {"transcription": {"model": "gpt-4o-mini-transcribe"}}},
        )
        ws = await http.ws_connect(f"{sim.ws_url}?call_id={call.call_id}", headers=AUTH)
        raw: list[str] = []

        async def until(type_: str) -> dict[str, Any]:
            async with asyncio.timeout(scaled(10)):
                while True:
                    msg = await ws.receive()
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    raw.append(msg.data)
                    event: dict[str, Any] = json.loads(msg.data)
                    if event["type"] == type_:
                        return event

        await until("session.created")
        await ws.send_str(json.dumps({"type": "response.create", "response": {
            "instructions": "Say exactly 'Thanks for calling' now."}}))
        await until("output_audio_buffer.stopped")
        assert await call.say("I need an agent", trailing_silence_ms=900)
        await until("response.done")
        await until("output_audio_buffer.stopped")
        call.send_dtmf("7")
        await until("input_audio_buffer.dtmf_event_received")
        await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA"}))
        await until("error")
        await ws.close()
        seen = [check_against_sdk(message) for message in raw]
        assert {"output_audio_buffer.started", "output_audio_buffer.stopped",
                "input_audio_buffer.dtmf_event_received",
                "conversation.item.input_audio_transcription.completed",
                "response.function_call_arguments.done"} <= set(seen)
        assert "response.output_audio.delta" not in seen  # agent audio goes to RTP


async def test_two_sidebands_share_the_session_and_errors_go_to_the_sender() -> None:
    async with calls_sim() as sim, sdk(sim) as client:
        call = await sim.incoming_call()
        await client.realtime.calls.accept(call.call_id, type="realtime")
        async with (client.realtime.connect(call_id=call.call_id) as one,
                    client.realtime.connect(call_id=call.call_id) as two):
            assert (await recv(one)).type == (await recv(two)).type == "session.created"
            await one.send({"type": "no.such.event"})  # type: ignore[arg-type]
            assert (await recv(one)).type == "error"
            await two.response.create(response={"instructions": "Say 'Hi' now."})
            assert (await recv(one)).type == "response.created"  # not the error
            assert (await recv(two)).type == "response.created"
        assert len(call.sidebands) == 2
        errors = [e for c in call.sidebands for e in c.sent if e["type"] == "error"]
        assert len(errors) == 1 and errors[0] in call.sidebands[0].sent


async def test_a_beta_sideband_is_refused_and_the_call_goes_on() -> None:
    async with calls_sim() as sim, sdk(sim) as client, aiohttp.ClientSession() as http:
        call = await sim.incoming_call()
        await client.realtime.calls.accept(call.call_id, type="realtime")
        ws = await http.ws_connect(f"{sim.ws_url}?call_id={call.call_id}",
                                   headers={**AUTH, "OpenAI-Beta": "realtime=v1"})
        msg = await ws.receive(timeout=scaled(5))
        assert json.loads(msg.data)["error"]["code"] == "beta_api_shape_disabled"
        msg = await ws.receive(timeout=scaled(5))
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4000
        await ws.close()
        assert call.state is CallState.ACCEPTED and call.sidebands == []
        assert await handshake_status(sim, f"call_id={call.call_id}") == 101

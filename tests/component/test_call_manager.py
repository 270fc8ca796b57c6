"""The call manager without a SIP stack: admission of a made-up INVITE, the Realtime handshake
it starts (against a real aiohttp server on 127.0.0.1), and its own shutdown."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.calls.manager import CallManager
from gateway.config import RealtimeSettings, Secret, Settings
from gateway.dialplan import parse_dialplan
from gateway.dialplan.schema import Dialplan
from gateway.errors import CallRejected
from gateway.media.channel import MediaChannel
from gateway.media.playout import PlayoutBuffer
from gateway.sip.events import IncomingCall, LegEnded, SipEvent
from tests.conftest import scaled

pytestmark = pytest.mark.component

_legs = itertools.count(1)

PLAN = """
agents:
  helper:
    instructions: You help.
routes:
  - name: first-copy
    match: {headers: {X-Route: alpha}}
    reject: 486
  - name: second-copy
    match: {headers: {X-Route: beta}}
    reject: 480
  - name: agent
    agent: helper
"""


@dataclass
class RecordingSip:
    """The SIP command side, recording what the manager and sessions asked for.

    A refusal or hangup is confirmed with ``LegEnded`` to ``events``, as the user agent does.
    """

    rejected: list[tuple[int, int]] = field(default_factory=list)
    answered: list[tuple[int, int]] = field(default_factory=list)
    hung_up: list[int] = field(default_factory=list)
    events: Callable[[SipEvent], None] | None = None

    def answer(self, leg_id: int, status: int, reason: str = "",
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.answered.append((leg_id, status))

    def reject(self, leg_id: int, err: CallRejected) -> None:
        self.rejected.append((leg_id, err.sip_status))
        if self.events is not None:
            asyncio.get_running_loop().call_soon(
                self.events, LegEnded(leg_id, err.sip_status, err.reason))

    def hangup(self, leg_id: int, status: int = 603, reason: str = "") -> None:
        self.hung_up.append(leg_id)
        if self.events is not None:
            asyncio.get_running_loop().call_soon(self.events, LegEnded(leg_id, status, reason))

    def transfer(self, leg_id: int, target_uri: str) -> None:
        raise AssertionError("no transfer expected")

    def send_dtmf(self, leg_id: int, digits: str) -> None:
        raise AssertionError("no DTMF expected")

    def relay(self, leg_id: int, uri: str, headers: tuple[tuple[str, str], ...]) -> None:
        raise AssertionError("no relay expected")

    def new_leg_id(self) -> int:
        raise AssertionError("no outbound call expected")

    def new_channel(self) -> MediaChannel:
        raise AssertionError("no outbound call expected")

    def originate(self, leg_id: int, channel: MediaChannel, uri: str,
                  account: str | None = None) -> None:
        raise AssertionError("no outbound call expected")


def _plan() -> Dialplan:
    return parse_dialplan(PLAN, "<manager-test>")


def _offer(headers: tuple[tuple[str, str], ...] = ()) -> IncomingCall:
    return IncomingCall(
        leg_id=next(_legs), sip_call_id="test-call", from_uri="sip:1001@127.0.0.1",
        from_user="1001", from_name=None, to_uri="sip:100@127.0.0.1", to_user="100",
        request_uri="sip:100@127.0.0.1", headers=headers, source_ip="127.0.0.1",
        source_port=5062, transport="udp", account="trunk",
        media=MediaChannel(PlayoutBuffer()))


@pytest.mark.parametrize(("headers", "code"), [
    ((("X-Route", "alpha"), ("X-Route", "beta")), 486),
    ((("X-Route", "beta"), ("x-route", "alpha")), 480),
])
def test_a_repeated_header_routes_on_its_first_value(
        headers: tuple[tuple[str, str], ...], code: int) -> None:
    sip = RecordingSip()
    manager = CallManager(Settings(), sip, _plan, "ws://127.0.0.1:9/v1/realtime")
    offer = _offer(headers)
    manager.on_sip_event(offer)
    assert sip.rejected == [(offer.leg_id, code)]


@dataclass
class Handshakes:
    server: TestServer
    seen: list[Mapping[str, str]]
    arrived: asyncio.Event

    @property
    def url(self) -> str:
        return str(self.server.make_url("/v1/realtime")).replace("http://", "ws://")


@pytest.fixture
async def handshakes() -> AsyncIterator[Handshakes]:
    """A WebSocket endpoint that records each upgrade request's headers and refuses it."""
    seen: list[Mapping[str, str]] = []
    arrived = asyncio.Event()

    async def realtime(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        arrived.set()
        return web.json_response({"error": {"message": "recorded"}}, status=403)

    app = web.Application()
    app.router.add_get("/v1/realtime", realtime)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield Handshakes(server, seen, arrived)
    finally:
        await server.close()


async def _handshake(settings: Settings, url: str, backend: Handshakes) -> Mapping[str, str]:
    sip = RecordingSip()
    async with CallManager(settings, sip, _plan, url) as manager:
        sip.events = manager.on_sip_event
        manager.on_sip_event(_offer())
        await asyncio.wait_for(backend.arrived.wait(), scaled(10))
    return backend.seen[0]


async def test_no_placeholder_bearer_token_goes_to_a_real_api(handshakes: Handshakes) -> None:
    # Azure-style: the credential is an api-key header from the environment, no API key.
    settings = Settings(realtime=RealtimeSettings(
        url=handshakes.url, headers={"api-key": Secret("azure-key-0123456789")}))
    headers = await _handshake(settings, handshakes.url, handshakes)
    assert headers.get("api-key") == "azure-key-0123456789"
    assert "Authorization" not in headers


async def test_a_configured_api_key_is_sent_as_bearer(handshakes: Handshakes) -> None:
    settings = Settings(realtime=RealtimeSettings(url=handshakes.url,
                                                  api_key=Secret("sk-test-0123456789")))
    headers = await _handshake(settings, handshakes.url, handshakes)
    assert headers.get("Authorization") == "Bearer sk-test-0123456789"


async def test_the_embedded_simulator_gets_the_token_it_requires(
        handshakes: Handshakes) -> None:
    # realtime.url: embedded, no key: the simulator refuses a handshake without credentials.
    headers = await _handshake(Settings(), handshakes.url, handshakes)
    assert headers.get("Authorization") == "Bearer local-simulator"


async def test_close_cancelled_while_stopping_the_tick_stays_cancelled() -> None:
    manager = CallManager(Settings(), RecordingSip(), _plan, "ws://127.0.0.1:9/v1/realtime")
    await manager.__aenter__()
    closing = asyncio.create_task(manager.close(), name="test:close")
    await asyncio.sleep(0)  # close() cancelled the tick and waits for it to finish
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert manager._tick is not None and manager._tick.done()

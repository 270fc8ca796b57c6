"""The OpenAI webhook endpoint over real HTTP: signatures, timestamps, replays, duplicates.

Deliveries are signed the way OpenAI signs them (Standard Webhooks, the ``standardwebhooks``
reference code) and posted with aiohttp to a real server on 127.0.0.1 running
:class:`WebhookInbox`. What is asserted is the HTTP answer and which calls reached the handler:
nothing unverified, nothing twice.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from gateway.control.webhook_event import IncomingCallEvent, call_info
from gateway.control.webhooks import MAX_BODY_BYTES, WebhookInbox

pytestmark = pytest.mark.component

SECRET = "whsec_" + base64.b64encode(b"gateway-test-signing-secret-0001").decode()
PATH = "/openai/webhook"


def incoming(call_id: str = "rtc_abc123", **data: Any) -> dict[str, Any]:
    return {"object": "event", "id": "evt_1", "type": "realtime.call.incoming",
            "created_at": int(time.time()),
            "data": {"call_id": call_id, "sip_headers": [
                {"name": "From", "value": '"Ada" <sip:+14155550123@trunk.example.com>;tag=9'},
                {"name": "To", "value": "<sip:+18005550100@sip.api.openai.com>"},
                {"name": "X-Tenant", "value": "acme"},
                {"name": "Call-ID", "value": "03782086-4ce9"}],
                "sip_media_security": "srtp", **data}}


def signed(body: bytes, webhook_id: str, *, at: float | None = None,
           secret: str = SECRET) -> dict[str, str]:
    when = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    signature = Webhook(secret).sign(webhook_id, when, body.decode())
    return {"webhook-id": webhook_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signature, "content-type": "application/json"}


@dataclass
class Endpoint:
    url: str
    inbox: WebhookInbox
    calls: list[IncomingCallEvent] = field(default_factory=list)
    up: list[bool] = field(default_factory=lambda: [True])

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as session, \
                session.post(self.url, data=body, headers=headers) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    holder: list[Endpoint] = []
    up = [True]
    inbox = WebhookInbox(SECRET, lambda call: holder[0].calls.append(call), ready=lambda: up[0])
    app = web.Application(client_max_size=MAX_BODY_BYTES * 2)
    app.router.add_post(PATH, inbox.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    holder.append(Endpoint(f"http://127.0.0.1:{port}{PATH}", inbox, up=up))
    try:
        yield holder[0]
    finally:
        await runner.cleanup()


async def test_a_signed_call_is_handed_over_once_with_its_headers(endpoint: Endpoint) -> None:
    body = json.dumps(incoming()).encode()
    status, answer = await endpoint.post(body, signed(body, "wh_1"))
    assert (status, answer["ok"]) == (200, True)
    [call] = endpoint.calls
    assert (call.call_id, call.event_id, call.media_security) == ("rtc_abc123", "evt_1", "srtp")
    info = call_info(call)
    assert (info.ingress, info.from_user, info.to_user, info.caller_name) == (
        "openai", "+14155550123", "+18005550100", "Ada")
    assert info.header("x-tenant") == "acme" and info.account is None


async def test_replays_and_redeliveries_never_reach_the_handler_twice(
        endpoint: Endpoint) -> None:
    body = json.dumps(incoming()).encode()
    first = await endpoint.post(body, signed(body, "wh_1"))
    replay = await endpoint.post(body, signed(body, "wh_1"))
    again = await endpoint.post(body, signed(body, "wh_2"))  # same call, new delivery id
    assert [first[0], replay[0], again[0]] == [200, 200, 200]
    assert [replay[1]["note"], again[1]["note"]] == ["duplicate delivery", "duplicate call"]
    assert len(endpoint.calls) == 1
    assert endpoint.inbox.counts["duplicate"] == 2


@pytest.mark.parametrize(("change", "status", "reason"), [
    ("wrong secret", 401, "the signature does not match"),
    ("tampered body", 401, "the signature does not match"),
    ("malformed signature", 401, "the signature is malformed"),
    ("no signature", 400, "webhook-id, webhook-timestamp and webhook-signature headers are "
                          "required"),
    ("stale", 400, "webhook-timestamp is more than 300 s in the past"),
    ("future", 400, "webhook-timestamp is more than 300 s in the future"),
    ("not a number", 400, "webhook-timestamp is not a Unix time"),
])
async def test_unverified_deliveries_are_refused_with_a_reason(
        endpoint: Endpoint, change: str, status: int, reason: str) -> None:
    body = json.dumps(incoming()).encode()
    headers = signed(body, "wh_1")
    if change == "wrong secret":
        other = "whsec_" + base64.b64encode(b"someone-else's-secret-000000000").decode()
        headers = signed(body, "wh_1", secret=other)
    elif change == "tampered body":
        body = body.replace(b"rtc_abc123", b"rtc_evil99")
    elif change == "malformed signature":
        headers["webhook-signature"] = "v1"
    elif change == "no signature":
        del headers["webhook-signature"]
    elif change == "stale":
        headers = signed(body, "wh_1", at=time.time() - 400)
    elif change == "future":
        headers = signed(body, "wh_1", at=time.time() + 400)
    else:
        headers["webhook-timestamp"] = "yesterday"
    got = await endpoint.post(body, headers)
    assert got == (status, {"error": reason})
    assert endpoint.calls == []
    # A refused delivery is not remembered: the genuine one still goes through.
    good = json.dumps(incoming()).encode()
    assert (await endpoint.post(good, signed(good, "wh_1")))[0] == 200
    assert len(endpoint.calls) == 1


async def test_while_starting_deliveries_get_503_and_their_retry_is_handled(
        endpoint: Endpoint) -> None:
    body = json.dumps(incoming()).encode()
    endpoint.up[0] = False
    status, _ = await endpoint.post(body, signed(body, "wh_1"))
    assert status == 503 and endpoint.calls == []
    endpoint.up[0] = True
    status, _ = await endpoint.post(body, signed(body, "wh_1"))
    assert status == 200 and len(endpoint.calls) == 1


async def test_other_event_types_are_acknowledged_and_ignored(endpoint: Endpoint) -> None:
    body = json.dumps({"object": "event", "id": "evt_2", "type": "response.completed",
                       "created_at": 1, "data": {"id": "resp_1"}}).encode()
    assert (await endpoint.post(body, signed(body, "wh_3")))[0] == 200
    assert endpoint.calls == [] and endpoint.inbox.counts["ignored:response.completed"] == 1


@pytest.mark.parametrize(("data", "reason"), [
    ({"call_id": "../../admin"}, "data.call_id: must be a call id (letters, digits, _ and -)"),
    ({"sip_headers": "From: x"}, "data.sip_headers: must be a list"),
    ({"sip_headers": [{"name": "From"}]},
     "data.sip_headers[0]: must be {name: string, value: string}"),
])
async def test_a_malformed_call_event_is_refused_naming_the_field(
        endpoint: Endpoint, data: dict[str, Any], reason: str) -> None:
    event = incoming()
    event["data"].update(data)
    body = json.dumps(event).encode()
    assert await endpoint.post(body, signed(body, "wh_4")) == (400, {"error": reason})
    assert endpoint.calls == []


async def test_an_oversized_body_is_refused_before_verification(endpoint: Endpoint) -> None:
    body = json.dumps(incoming(padding="x" * MAX_BODY_BYTES)).encode()
    status, answer = await endpoint.post(body, signed(body, "wh_5"))
    assert (status, answer) == (413, {"error": "the body is too large"})

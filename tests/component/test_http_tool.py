"""HTTP tools against a real aiohttp server on 127.0.0.1: bodies, queries, headers, failures."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.agents.http_tool import ERROR_SNIPPET_CHARS, HttpToolClient
from gateway.agents.runner import ToolOutcome
from gateway.agents.spec import HttpTool
from gateway.config import Secret
from tests.conftest import scaled

pytestmark = pytest.mark.component

TOKEN = "tok-3f9a8b7c6d5e4f3a2b1c"
API_KEY = "key-0a1b2c3d4e5f6a7b8c9d"
HEADERS = {"Authorization": Secret(f"Bearer {TOKEN}"), "X-Api-Key": Secret(API_KEY)}


@dataclass
class Backend:
    server: TestServer
    release: asyncio.Event
    #: (Authorization, X-Api-Key) as each /echo request carried them.
    seen: list[tuple[str | None, str | None]]

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


def _echo(request: web.Request, body: Any) -> web.Response:
    return web.json_response(
        {
            "method": request.method,
            "query": [[k, v] for k, v in request.query.items()],
            "json": body,
            "authorization": request.headers.get("Authorization"),
            "api_key": request.headers.get("X-Api-Key"),
            "user_agent": request.headers.get("User-Agent"),
            "content_type": request.headers.get("Content-Type"),
        }
    )


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    release = asyncio.Event()
    seen: list[tuple[str | None, str | None]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization"), request.headers.get("X-Api-Key")))
        body = await request.json() if request.can_read_body else None
        return _echo(request, body)

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        text = f"failure for {request.headers.get('Authorization')}: " + "detail " * 200
        return web.Response(status=code, text=text)

    async def hang(request: web.Request) -> web.Response:
        async with asyncio.timeout(scaled(10)):
            await release.wait()
        return web.Response(text="late")

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="é" * 100_000)  # 200,000 bytes of UTF-8

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/echo")

    async def leaky(request: web.Request) -> web.Response:
        return web.Response(text=f"you sent {request.headers.get('Authorization')} and "
                                 f"{request.headers.get('X-Api-Key')}")

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/hang", hang)
    app.router.add_get("/big", big)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/leaky", leaky)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Backend(server, release, seen)
    finally:
        release.set()
        await server.close()


@pytest.fixture
async def client() -> AsyncIterator[HttpToolClient]:
    async with HttpToolClient(user_agent="gateway-test") as http:
        yield http


def _tool(
    url: str,
    method: Literal["GET", "POST", "PUT", "PATCH"] = "POST",
    timeout_s: float = 5,
) -> HttpTool:
    return HttpTool(name="crm", url=url, method=method, headers=HEADERS,
                    timeout_s=scaled(timeout_s))


def _assert_no_secret(outcome: ToolOutcome, caplog: pytest.LogCaptureFixture) -> None:
    for text in (outcome.output, outcome.error or "", repr(outcome), caplog.text):
        assert TOKEN not in text
        assert API_KEY not in text


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_body_methods_send_json_and_headers(
    backend: Backend, client: HttpToolClient, method: Literal["POST", "PUT", "PATCH"]
) -> None:
    arguments = {"order_id": "A17", "items": [{"sku": "x", "qty": 2}], "rush": True}
    outcome = await client.call(_tool(backend.url("/echo"), method), arguments)
    assert outcome.ok, outcome.error
    assert outcome.error is None
    assert 0 < outcome.duration_s < scaled(5)
    # The server got the real header values; the model's copy of its echo is scrubbed.
    assert backend.seen == [(f"Bearer {TOKEN}", API_KEY)]
    assert json.loads(outcome.output) == {
        "method": method,
        "query": [],
        "json": arguments,
        "authorization": "***",
        "api_key": "***",
        "user_agent": "gateway-test",
        "content_type": "application/json",
    }


async def test_get_sends_query_parameters(backend: Backend, client: HttpToolClient) -> None:
    arguments = {"q": "blue shoes", "page": 2, "exact": False, "tag": ["a", "b"],
                 "filter": {"max": 5}, "skip": None}
    outcome = await client.call(_tool(backend.url("/echo"), "GET"), arguments)
    assert outcome.ok, outcome.error
    body = json.loads(outcome.output)
    assert body["method"] == "GET"
    assert body["json"] is None
    assert body["query"] == [
        ["q", "blue shoes"], ["page", "2"], ["exact", "false"], ["tag", "a"], ["tag", "b"],
        ["filter", '{"max":5}'],
    ]


async def test_non_2xx_is_an_error_with_status_and_bounded_snippet(
    backend: Backend, client: HttpToolClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outcome = await client.call(_tool(backend.url("/status/503"), "GET"), {})
    assert outcome.ok is False
    assert outcome.error is not None
    assert outcome.error.startswith(
        "tool crm: HTTP 503 Service Unavailable: failure for ***: detail"
    )
    assert outcome.error.endswith("...")
    snippet = outcome.error.split(": ", 2)[2]
    assert len(snippet) == ERROR_SNIPPET_CHARS + 3
    assert json.loads(outcome.output) == {"error": outcome.error, "status": 503}
    _assert_no_secret(outcome, caplog)


async def test_redirects_are_not_followed(backend: Backend, client: HttpToolClient) -> None:
    outcome = await client.call(_tool(backend.url("/redirect"), "GET"), {})
    assert outcome.ok is False
    assert json.loads(outcome.output)["status"] == 302


async def test_timeout(
    backend: Backend, client: HttpToolClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    outcome = await client.call(
        HttpTool(name="crm", url=backend.url("/hang"), method="GET", headers=HEADERS,
                 timeout_s=0.3),
        {},
    )
    assert time.monotonic() - started < 0.3 + scaled(1)
    assert outcome.ok is False
    assert outcome.error == "tool crm timed out after 0.3 s"
    _assert_no_secret(outcome, caplog)


async def test_large_body_is_truncated_with_a_note(backend: Backend) -> None:
    async with HttpToolClient(max_body_bytes=1001) as http:
        outcome = await http.call(_tool(backend.url("/big"), "GET"), {})
    assert outcome.ok
    text, note = outcome.output.split("\n")
    assert text == "é" * 500  # the character cut in half at byte 1001 is dropped, not mangled
    assert note == "[truncated: the response was longer than 1001 bytes]"


async def test_default_limit_is_64_kib(backend: Backend, client: HttpToolClient) -> None:
    outcome = await client.call(_tool(backend.url("/big"), "GET"), {})
    assert outcome.output.endswith("[truncated: the response was longer than 65536 bytes]")
    assert len(outcome.output.split("\n")[0].encode()) == 65536


async def test_secrets_echoed_by_the_server_are_scrubbed(
    backend: Backend, client: HttpToolClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outcome = await client.call(_tool(backend.url("/leaky"), "GET"), {})
    assert outcome.output == "you sent *** and ***"
    _assert_no_secret(outcome, caplog)


async def test_connection_refused(
    client: HttpToolClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = await client.call(_tool(f"http://127.0.0.1:{port}/x"), {"a": 1})
    assert outcome.ok is False
    assert outcome.error == (
        f"tool crm could not connect to 127.0.0.1:{port} (ConnectionRefusedError)"
    )
    _assert_no_secret(outcome, caplog)


async def test_client_must_be_open() -> None:
    http = HttpToolClient()
    with pytest.raises(RuntimeError, match="not open"):
        await http.call(_tool("http://127.0.0.1:9/x"), {})

"""The monitor page's files over real HTTP: served without a token, with a strict policy.

The application is the control process's (``build_app``, the bearer-token middleware with the
monitor's open paths, ``install_monitor``) on 127.0.0.1; the API next to the page still wants
its token, also for paths that try to climb out of ``/monitor/``. The page's own files are
checked for what the policy relies on: no inline script, nothing from another origin, no
markup built from strings.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from importlib import resources

import aiohttp
import pytest

from gateway.config import Secret
from gateway.control.auth import bearer_auth
from gateway.control.directory import CallDirectory
from gateway.control.http import ControlState, HttpServer, build_app, start_http, stop_http
from gateway.control.metrics import ControlMetrics
from gateway.control.monitor import (
    CONTENT_SECURITY_POLICY,
    FILES,
    OPEN_PATHS,
    OPEN_PREFIXES,
    install_monitor,
)
from gateway.control.readiness import Readiness

pytestmark = [pytest.mark.component, pytest.mark.timeout(20)]

TOKEN = "monitor-test-token-0123456789"


@pytest.fixture
async def server() -> AsyncIterator[str]:
    directory = CallDirectory()
    state = ControlState(directory, ControlMetrics(directory), Readiness("starting"))
    app = build_app(state, middlewares=[bearer_auth([Secret(TOKEN)], open_paths=OPEN_PATHS,
                                                    open_prefixes=OPEN_PREFIXES)])
    install_monitor(app)
    http: HttpServer = await start_http(app, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{http.port}"
    finally:
        await stop_http(http)


async def test_the_page_is_served_without_a_token_under_the_policy(server: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(server + "/monitor", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/monitor/"
        for name, media_type in {"": FILES["index.html"], **FILES}.items():
            async with http.get(f"{server}/monitor/{name}") as resp:
                body = await resp.read()
                assert resp.status == 200, name
                assert resp.headers["Content-Type"] == media_type
                assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
                assert resp.headers["X-Content-Type-Options"] == "nosniff"
                assert body == resources.files("gateway.control.monitor").joinpath(
                    name or "index.html").read_bytes()
        async with http.get(server + "/monitor/secrets.txt") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"] == "not_found"
        async with http.get(server + "/v1/calls") as resp:
            assert resp.status == 401
        async with http.get(server + "/v1/calls",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200


@pytest.mark.parametrize("path", ["/monitor/../v1/calls", "/monitor/%2e%2e/v1/calls",
                                  "/monitor/..%2fv1/calls", "/monitor/./../v1/calls"])
async def test_no_path_under_the_open_prefix_reaches_the_api(server: str, path: str) -> None:
    # Raw request lines: a client library would normalise the dots away before sending.
    host, port = server.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    status = int(answer.split(b" ", 2)[1])
    assert status in (401, 404), answer[:200]
    assert b'"calls"' not in answer


def _text(name: str) -> str:
    return resources.files("gateway.control.monitor").joinpath(name).read_text()


def test_the_page_loads_only_its_own_files_and_never_parses_markup() -> None:
    html = _text("index.html")
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S)
    assert scripts and all(not body.strip() for body in scripts)  # no inline code
    assert re.search(r"<[^>]*\son[a-z]+\s*=", html, re.I) is None  # no inline handlers
    assert "style=" not in html
    referenced = set(re.findall(r'(?:src|href)="([^"]+)"', html))
    referenced |= {f"{m}.js" for js in FILES if js.endswith(".js")
                   for m in re.findall(r'from "\./([a-z]+)\.js"', _text(js))}
    assert referenced <= set(FILES), referenced - set(FILES)
    for name in FILES:
        if name.endswith((".js", ".css", ".html")):
            text = _text(name)
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                         "eval(", "new Function", "http://", "https://", "localStorage"):
                assert sink not in text, f"{name} uses {sink}"

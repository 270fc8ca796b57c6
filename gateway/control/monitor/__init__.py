"""The live call monitor: a web page the control process serves at ``/monitor/``.

The page is plain HTML, CSS and JavaScript modules shipped as package data beside this
module (no build step, nothing fetched from elsewhere). It holds no data itself, so its files
are served without a token (:func:`gateway.control.auth.bearer_auth` exempts
:data:`OPEN_PATHS` and :data:`OPEN_PREFIXES`): the page asks the operator for an API token,
keeps it in ``sessionStorage`` and sends it as ``Authorization: Bearer`` with every request to
``/v1``. It reads ``GET /v1/events`` with ``fetch`` and parses the event stream itself, since
``EventSource`` cannot send that header and a token in a URL would end up in access logs.
Every file is answered with a Content-Security-Policy that allows only the page's own origin
(no inline script or style, no other host), so text a caller said cannot run as code even if
a bug inserted it as markup. ``docs/control.md``, "Live call monitor", describes the page.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

from aiohttp import web

__all__ = ["OPEN_PATHS", "OPEN_PREFIXES", "install_monitor"]

#: Served without a token: the redirect and the page's own files.
OPEN_PATHS: Final = ("/monitor",)
OPEN_PREFIXES: Final = ("/monitor/",)

#: The page's files and their media types; nothing else under ``/monitor/`` is served.
FILES: Final = {
    "index.html": "text/html; charset=utf-8",
    "monitor.css": "text/css; charset=utf-8",
    "monitor.js": "text/javascript; charset=utf-8",
    "sse.js": "text/javascript; charset=utf-8",
    "view.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

#: Same origin only; no framing (click-jacking the end-call button), no form posts, no
#: ``<base>`` rewriting of the scripts' URLs.
CONTENT_SECURITY_POLICY: Final = ("default-src 'self'; base-uri 'none'; form-action 'none'; "
                                  "frame-ancestors 'none'")
_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # A new gateway version brings new files: revalidate instead of running stale code.
    "Cache-Control": "no-cache",
}

_ASSETS: Final = web.AppKey("monitor_assets", dict[str, bytes])


def install_monitor(app: web.Application) -> None:
    """Add ``GET /monitor`` (a redirect) and the page's files under ``/monitor/`` to ``app``.

    The files are read once, here, from the installed package.
    """
    package = resources.files(__name__)
    app[_ASSETS] = {name: package.joinpath(name).read_bytes() for name in FILES}
    app.router.add_get("/monitor", _redirect)
    app.router.add_get("/monitor/", _index)
    app.router.add_get("/monitor/{name}", _asset)


async def _redirect(request: web.Request) -> web.StreamResponse:
    # Relative URLs in the page (monitor.js, the API) resolve against the trailing slash.
    raise web.HTTPFound("/monitor/")


async def _index(request: web.Request) -> web.Response:
    return _file(request, "index.html")


async def _asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound(text="no such file of the monitor")
    return _file(request, name)


def _file(request: web.Request, name: str) -> web.Response:
    body = request.app[_ASSETS][name]
    return web.Response(body=body, headers={"Content-Type": FILES[name], **_HEADERS})

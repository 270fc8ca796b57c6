"""The control process's HTTP server: health, readiness, metrics and the calls API (aiohttp).

:func:`build_app` makes the application over one :class:`ControlState` (held under the typed
key :data:`CONTROL_STATE`): ``GET /healthz``, ``GET /readyz``, ``GET /metrics`` and
``GET /v1/calls``, ``GET /v1/calls/{call_id}``. Every error, including unknown paths (404),
wrong methods (405) and a handler's failure (500), is a JSON object ``{"error": code,
"reason": text}``, made by one middleware that sits outermost, so a middleware passed in
(bearer-token checks are next) can fail a request by raising an ``aiohttp.web.HTTPException``
and still answer JSON with its headers kept. :func:`start_http` binds it (port 0 picks a free
port, reported in :attr:`HttpServer.port`) and :func:`stop_http` shuts it down in order: stop
listening, let requests in flight finish for up to ``shutdown_timeout_s``, close the rest.
The control process starts it first and stops it last. ``docs/control.md`` is the reference.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from gateway.control.directory import CallDirectory
from gateway.control.metrics import ControlMetrics
from gateway.control.readiness import Readiness
from gateway.records.store import RecordStore, RecordStoreError

__all__ = [
    "CONTROL_STATE", "ControlState", "HttpServer", "build_app", "start_http", "stop_http",
]

log = logging.getLogger(__name__)

#: Largest request body accepted; no endpoint takes a body yet.
MAX_BODY_BYTES: Final = 64 * 1024
#: How long requests in flight may take to finish when the server stops.
SHUTDOWN_TIMEOUT_S: Final = 5.0
#: Headers of an ``HTTPException`` that the JSON body replaces (lower case).
_BODY_HEADERS: Final = frozenset({"content-type", "content-length"})


@dataclass(frozen=True, slots=True)
class ControlState:
    """What the HTTP handlers read; the control process mutates the parts, never replaces them.

    Attributes:
        directory: Workers and calls.
        metrics: The registry ``/metrics`` exposes.
        readiness: What ``/readyz`` answers.
    """

    directory: CallDirectory
    metrics: ControlMetrics
    readiness: Readiness
    #: The call records, for calls no longer in memory (``None``: records are off).
    records: RecordStore | None = None


CONTROL_STATE: Final = web.AppKey("control_state", ControlState)


def build_app(
    state: ControlState, *, middlewares: Iterable[Middleware] = ()
) -> web.Application:
    """The control application, not yet started.

    Args:
        state: Shared with the control process.
        middlewares: Run inside the JSON error middleware, in order, around every request
            (matched or not). An authentication middleware goes here; it sees
            ``request.path`` to exempt the probes (``/healthz``, ``/readyz``) and raises
            e.g. ``web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})`` to refuse.

    Returns:
        The application; later issues add their routes to ``app.router`` before it starts.
    """
    app = web.Application(middlewares=[_json_errors, *middlewares],
                          client_max_size=MAX_BODY_BYTES)
    app[CONTROL_STATE] = state
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/v1/calls", _calls)
    app.router.add_get("/v1/calls/{call_id}", _call)
    return app


# Handlers ----------------------------------------------------------------------------------


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    readiness = request.app[CONTROL_STATE].readiness
    if readiness.is_ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": readiness.phase, "reason": readiness.reason},
                             status=503)


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[CONTROL_STATE].metrics.render(
        request.headers.get(hdrs.ACCEPT))
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})


async def _calls(request: web.Request) -> web.Response:
    state = request.app[CONTROL_STATE]
    directory = state.directory
    body: dict[str, Any] = {"calls": directory.live_calls(), "workers": directory.workers()}
    query = request.query
    if "records" in query:
        if state.records is None:
            raise web.HTTPNotFound(text="call records are off (records.enabled)")
        limit = _int_param(query.get("records", ""), 1, 1000, "records")
        try:
            body["records"] = await state.records.list(
                limit=limit, kind=query.get("kind") or None, state=query.get("state") or None,
                route=query.get("route") or None)
        except RecordStoreError as exc:
            raise web.HTTPServiceUnavailable(text=f"call records unavailable: {exc}") from None
    return web.json_response(body, dumps=_dumps)


async def _call(request: web.Request) -> web.Response:
    state = request.app[CONTROL_STATE]
    call_id = request.match_info["call_id"]
    found = state.directory.call(call_id)
    if found is None and state.records is not None:
        try:
            record = await state.records.get(call_id)
        except RecordStoreError as exc:
            raise web.HTTPServiceUnavailable(text=f"call records unavailable: {exc}") from None
        if record is not None:
            return web.json_response({"call": {**record, "live": False}}, dumps=_dumps)
    if found is None:
        return _error(404, "not_found", "no live or recorded call has this id")
    return web.json_response({"call": found})


def _int_param(text: str, low: int, high: int, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"query {name!r} must be an integer") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"query {name!r} must be {low}-{high}")
    return value


def _dumps(data: Any) -> str:
    return json.dumps(data, default=str)


# Errors ------------------------------------------------------------------------------------


def _error(status: int, code: str, reason: str, headers: dict[str, str] | None = None
           ) -> web.Response:
    return web.json_response({"error": code, "reason": reason}, status=status,
                             headers=headers)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are not errors
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
        return _error(exc.status, _code(exc), _reason(request, exc), headers)
    except Exception:
        log.exception("control HTTP %s %s failed", request.method, request.path)
        return _error(500, "internal_error", "the request failed inside the gateway")


def _code(exc: web.HTTPException) -> str:
    # "Method Not Allowed" -> "method_not_allowed"
    return "_".join(exc.reason.lower().replace("-", " ").split()) or "error"


def _reason(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed here; allowed: {allowed}"
    text = exc.text
    # aiohttp's default text is "<status>: <reason phrase>", which says nothing more.
    if text and text != f"{exc.status}: {exc.reason}":
        return text
    if isinstance(exc, web.HTTPNotFound):
        return "no such endpoint"  # the router's own 404
    return exc.reason


# Server ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpServer:
    """A started control server.

    Attributes:
        runner: The aiohttp runner (owns the server and the application's lifecycle).
        site: The listening TCP site.
        host: The host it was asked to bind.
        port: The port it is bound to (the one chosen when asked for 0).
    """

    runner: web.AppRunner
    site: web.TCPSite
    host: str
    port: int


async def start_http(
    app: web.Application, host: str, port: int, *,
    shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
) -> HttpServer:
    """Serve ``app`` on ``host``:``port`` (0 picks a free port).

    Signals are left to the control process; the access log goes to ``aiohttp.access``.

    Raises:
        OSError: The address cannot be bound (nothing is left running).
    """
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1])
    log.info("control HTTP listening on %s port %d", host, bound)
    return HttpServer(runner=runner, site=site, host=host, port=bound)


async def stop_http(server: HttpServer) -> None:
    """Stop listening, let requests in flight finish (up to the shutdown timeout), clean up.

    A cancellation while stopping waits for the stop to finish, then is re-raised, so no
    socket is left open; a second cancellation abandons the wait.
    """
    stopping = asyncio.create_task(server.runner.cleanup(), name="control:http-stop")
    try:
        await asyncio.shield(stopping)
    except asyncio.CancelledError:
        await stopping
        raise
    log.info("control HTTP stopped")

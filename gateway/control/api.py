"""The control API's call actions and event streams (aiohttp handlers).

Installed on the control application next to the read-only endpoints of
:mod:`gateway.control.http`, behind :func:`gateway.control.auth.bearer_auth`:

* ``POST /v1/calls`` ``{"to", "agent", "context"?, "max_duration_s"?, "ring_timeout_s"?,
  "status_webhook"?}``: place a call (:mod:`gateway.control.outbound`), ``201`` with its id;
* ``POST /v1/calls/{call_id}/hangup`` ``{"reason"?}``;
* ``POST /v1/calls/{call_id}/transfer`` ``{"target"}`` (a ``sip:``, ``sips:`` or ``tel:``
  URI; answers once the transfer took or failed);
* ``POST /v1/calls/{call_id}/say`` ``{"text"}`` (the agent says it word for word next);
* ``GET /v1/calls/{call_id}/events`` and ``GET /v1/events`` (every call): Server-Sent
  Events, a ``snapshot`` first, then the live calls' history (``"replay": true``; after
  the ``Last-Event-ID`` a reconnecting client sends), then the events as they happen
  (:mod:`gateway.control.feed`), each with its seq as ``id:``, ``: ping`` comments in
  silence, ended after ``ended``;
* ``GET /v1/openapi.json``: the API's OpenAPI document (:mod:`gateway.control.openapi`).

Bodies are JSON objects with known fields only; a bad one is ``400`` naming the field.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web

from gateway.control.actions import ActionResult, CallActions
from gateway.control.directory import CallDirectory
from gateway.control.feed import ALL_CALLS, CallFeed, FeedEvent, FeedFull
from gateway.control.openapi import openapi_document
from gateway.control.outbound import OriginateRequest, Outbound
from gateway.dialplan.capabilities import URI_RE

__all__ = ["ApiContext", "install_api"]

log = logging.getLogger("gateway.control")

#: Longest text a ``say`` may ask for, and a hangup reason.
MAX_SAY_CHARS: Final = 2000
MAX_REASON_CHARS: Final = 256
#: An SSE comment is sent after this long without an event (proxies keep the stream open).
HEARTBEAT_S: Final = 15.0


class ApiContext:
    """What the handlers need: where calls are, how to act on them, their events."""

    def __init__(self, directory: CallDirectory, actions: CallActions, feed: CallFeed,
                 live_direct: Callable[[], list[dict[str, Any]]],
                 outbound: Outbound | None = None) -> None:
        self.directory = directory
        self.actions = actions
        self.feed = feed
        self.live_direct = live_direct
        self.outbound = outbound


_CONTEXT: Final = web.AppKey("api_context", ApiContext)


def install_api(app: web.Application, context: ApiContext) -> None:
    """Add the API's routes to ``app`` (before it starts)."""
    app[_CONTEXT] = context
    app.router.add_post("/v1/calls", _originate)
    app.router.add_post("/v1/calls/{call_id}/hangup", _hangup)
    app.router.add_post("/v1/calls/{call_id}/transfer", _transfer)
    app.router.add_post("/v1/calls/{call_id}/say", _say)
    app.router.add_get("/v1/calls/{call_id}/events", _call_events)
    app.router.add_get("/v1/events", _all_events)
    app.router.add_get("/v1/openapi.json", _openapi)


# Actions -----------------------------------------------------------------------------------


async def _hangup(request: web.Request) -> web.Response:
    body = await _body(request, allowed=("reason",))
    reason = _text(body, "reason", MAX_REASON_CHARS, required=False) or "ended by the operator"
    result = await request.app[_CONTEXT].actions.hangup(_call_id(request), reason)
    return _answer(request, "hangup", result)


async def _transfer(request: web.Request) -> web.Response:
    body = await _body(request, allowed=("target",))
    target = _text(body, "target", 1024, required=True)
    if not URI_RE.fullmatch(target):
        raise _bad("target", "must be a sip:, sips: or tel: URI without spaces or <>\"")
    result = await request.app[_CONTEXT].actions.transfer(_call_id(request), target)
    return _answer(request, "transfer", result)


async def _say(request: web.Request) -> web.Response:
    body = await _body(request, allowed=("text",))
    text = _text(body, "text", MAX_SAY_CHARS, required=True)
    result = await request.app[_CONTEXT].actions.say(_call_id(request), text)
    return _answer(request, "say", result)


def _answer(request: web.Request, action: str, result: ActionResult) -> web.Response:
    call_id = _call_id(request)
    log.info("control API: %s on call %s: %d %s", action, call_id, result.status,
             result.reason)
    if result.ok:
        return web.json_response({"ok": True, "call_id": call_id, "result": result.reason})
    code = {404: "not_found", 409: "conflict"}.get(result.status, "bad_gateway")
    return web.json_response({"error": code, "reason": result.reason}, status=result.status)


async def _originate(request: web.Request) -> web.Response:
    outbound = request.app[_CONTEXT].outbound
    if outbound is None:
        raise web.HTTPServiceUnavailable(text="outbound calls are not available")
    body = await _body(request, allowed=("to", "agent", "context", "max_duration_s",
                                         "ring_timeout_s", "status_webhook"))
    to = _text(body, "to", 512, required=True)
    if not re.fullmatch(r"sips?:[^\s<>\"]+", to):
        raise _bad("to", "must be a sip: or sips: URI")
    agent = _text(body, "agent", 128, required=True)
    context = body.get("context", {})
    if not isinstance(context, dict) or len(context) > 64 or not all(
            isinstance(k, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", k)
            and isinstance(v, str) and len(v) <= 2048 for k, v in context.items()):
        raise _bad("context", "must be an object of at most 64 variable names (letters, "
                              "digits, _) to strings of at most 2048 characters")
    hook = body.get("status_webhook")
    if hook is not None:
        if not isinstance(hook, str) or not re.fullmatch(r"https?://[^\s]{1,2000}", hook):
            raise _bad("status_webhook", "must be an http:// or https:// URL")
        if not outbound.hooks.enabled:
            raise _bad("status_webhook", "needs $GATEWAY_STATUS_WEBHOOK_SECRET (whsec_...) "
                                         "to sign the deliveries")
    originate = OriginateRequest(
        to, agent, context, _number(body, "max_duration_s", 0.0, 0, 86_400),
        _number(body, "ring_timeout_s", 30.0, 1, 600), hook)
    call_id, why = await outbound.originate(originate)
    if call_id is None:
        status = 403 if "outbound_allow" in why else 404 if why.startswith("no agent") else 503
        code = {403: "forbidden", 404: "not_found"}.get(status, "service_unavailable")
        log.info("control API: outbound call refused: %s", why)
        return web.json_response({"error": code, "reason": why}, status=status)
    log.info("control API: outbound call %s placed (agent %s)", call_id, agent)
    return web.json_response({"call_id": call_id, "status": "queued"}, status=201)


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not low <= value <= high:
        raise _bad(name, f"must be a number from {low:g} to {high:g}")
    return float(value)


# Events ------------------------------------------------------------------------------------


async def _call_events(request: web.Request) -> web.StreamResponse:
    context = request.app[_CONTEXT]
    call_id = _call_id(request)
    snapshot = context.directory.call(call_id) or next(
        (c for c in context.live_direct() if c["call_id"] == call_id), None)
    if snapshot is None:
        raise web.HTTPNotFound(text="no live or recently ended call has this id")
    return await _stream(request, call_id, {"call": snapshot},
                         ended=not snapshot.get("live", False))


async def _all_events(request: web.Request) -> web.StreamResponse:
    context = request.app[_CONTEXT]
    calls = [*context.directory.live_calls(), *context.live_direct()]
    return await _stream(request, ALL_CALLS, {"calls": calls}, ended=False)


async def _stream(request: web.Request, call_id: str, snapshot: dict[str, Any], *,
                  ended: bool) -> web.StreamResponse:
    feed = request.app[_CONTEXT].feed
    try:
        sub = feed.subscribe(call_id, after=None if ended else _last_event_id(request))
    except FeedFull as exc:
        raise web.HTTPServiceUnavailable(text=str(exc)) from None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await response.write(_sse("snapshot", snapshot))
        if ended:
            return response
        async for event in feed.stream(sub, HEARTBEAT_S):
            if event is None:
                await response.write(b": ping\n\n")
                continue
            await response.write(_sse(event.event, _payload(event), event.seq))
            if sub.lost:
                await response.write(_sse("lost", {"events": sub.lost}))
                sub.lost = 0
    except (ConnectionResetError, ConnectionError):
        pass  # the client went away
    finally:
        feed.unsubscribe(sub)
    return response


def _last_event_id(request: web.Request) -> int | None:
    """A reconnecting client's ``Last-Event-ID`` (a feed seq), or ``None``."""
    value = request.headers.get("Last-Event-ID", "").strip()
    return int(value) if value.isdigit() and len(value) <= 20 else None


def _payload(event: FeedEvent) -> dict[str, Any]:
    if event.replay:
        return {"call_id": event.call_id, **event.data, "replay": True}
    return {"call_id": event.call_id, **event.data}


def _sse(event: str, data: dict[str, Any], seq: int | None = None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


# Request bodies ----------------------------------------------------------------------------


def _call_id(request: web.Request) -> str:
    return request.match_info["call_id"]


async def _body(request: web.Request, *, allowed: tuple[str, ...]) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown field(s): {', '.join(unknown)}; "
                                      f"allowed: {', '.join(allowed)}")
    return body


def _text(body: dict[str, Any], name: str, max_chars: int, *, required: bool) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise _bad(name, "is required")
        return ""
    if not isinstance(value, str) or not value.strip():
        raise _bad(name, "must be a non-empty string")
    if len(value) > max_chars:
        raise _bad(name, f"must be at most {max_chars} characters")
    return value.strip()


def _bad(name: str, reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=f"field {name!r} {reason}")

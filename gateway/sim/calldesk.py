"""The Realtime Calls desk of the simulator: REST call control, sideband binding, test control.

:class:`CallDesk` is mounted by :class:`~gateway.sim.server.SimulatorServer`. It serves the
REST call control ``POST /v1/realtime/calls/{call_id}/accept|reject|refer|hangup`` (Bearer
auth; rules and error envelopes of :mod:`gateway.sim.calls`: 200 with an empty body, 400, 401,
404), finds the call a sideband WebSocket (``/v1/realtime?call_id=``) binds to, and offers the
test-control surface: the Python API (:meth:`CallDesk.incoming_call`, then
:class:`~gateway.sim.simcall.SimCall`) and its HTTP form under ``/sim/calls`` (no auth; not
part of the OpenAI API): ``POST /sim/calls`` places a call, ``GET /sim/calls[/{id}]`` shows
calls, ``POST /sim/calls/{id}/audio|say|dtmf|hangup|transfer`` plays the caller, and
``POST /sim/calls/{id}/drop_sideband|refuse_sidebands`` plays a failing API (``rest_faults`` on
``POST /sim/calls`` scripts REST answers: :mod:`gateway.sim.restfaults`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from gateway.sim.calls import (
    VERBS,
    CallControlError,
    CallError,
    RealtimeCall,
    default_sip_headers,
    invalid_url,
    missing_api_key,
    new_id,
    normalize_sip_headers,
    not_found,
    parse_body,
)
from gateway.sim.options import SimOptions
from gateway.sim.restfaults import RestFaults
from gateway.sim.scenario import ScenarioBook
from gateway.sim.signing import FAULTS, WebhookFault
from gateway.sim.simcall import Drive, SimCall
from gateway.sim.webhooks import DeliveryPolicy, WebhookSender

if TYPE_CHECKING:
    from gateway.sim.server import _Changes

_log = logging.getLogger(__name__)

#: REST call control, under the API's ``/v1``.
CALLS_PATH: Final = "/v1/realtime/calls"
#: The test-control surface (not part of the OpenAI API).
SIM_CALLS_PATH: Final = "/sim/calls"
_CREATE_KEYS: Final = frozenset(
    {"sip_headers", "media_security", "call_id", "duplicates", "webhook_fault", "deliver",
     "scenario", "rest_faults"}
)


class CallDesk:
    """The Realtime Calls of one simulator: REST, sideband binding and test control.

    Args:
        options: The simulator's options (webhook, ring timeout, playout speed ...).
        scenarios: What the calls' sessions say.
        changes: The simulator's change notifier (for waiters).
        drive: Runs one response against an outlet (the simulator's pacing and TTS).

    Attributes:
        calls: Every call placed, in order (only the newest ``keep_closed`` over calls are
            kept when that option is set).
    """

    def __init__(
        self, options: SimOptions, scenarios: ScenarioBook, changes: _Changes, drive: Drive
    ) -> None:
        self.options = options
        self.scenarios = scenarios
        self.changes = changes
        self.drive = drive
        self.calls: list[SimCall] = []
        self._sender: WebhookSender | None = None
        if options.webhook_url is not None and options.webhook_secret is not None:
            policy = DeliveryPolicy(
                options.webhook_attempts, options.webhook_backoff_s, options.webhook_timeout_s
            )
            self._sender = WebhookSender(options.webhook_url, options.webhook_secret, policy)

    def get(self, call_id: str) -> SimCall | None:
        """The call with that id, if the simulator placed it (and still remembers it)."""
        return next((c for c in self.calls if c.call_id == call_id), None)

    async def incoming_call(
        self,
        sip_headers: Sequence[Any] | None = None,
        *,
        media_security: str | None = "rtp",
        call_id: str | None = None,
        duplicates: int = 0,
        webhook_fault: WebhookFault | None = None,
        deliver: bool = True,
        scenario: str | None = None,
        rest_faults: Mapping[str, Sequence[int]] | None = None,
    ) -> SimCall:
        """See :meth:`gateway.sim.server.SimulatorServer.incoming_call`."""
        call_id = call_id or new_id("rtc")
        if not call_id.startswith("rtc_") or self.get(call_id) is not None:
            raise ValueError(f"call id must be a new 'rtc_...' id, got {call_id!r}")
        if duplicates < 0:
            raise ValueError("duplicates must not be negative")
        if webhook_fault is not None and webhook_fault not in FAULTS:
            raise ValueError(f"webhook_fault must be one of {', '.join(FAULTS)}")
        if scenario is not None and self.scenarios.get(scenario) is None:
            raise ValueError(f"unknown scenario {scenario!r}")
        if media_security is not None and not isinstance(media_security, str):
            raise ValueError("media_security must be a string ('rtp', 'srtp') or None")
        faults = RestFaults(rest_faults)
        headers = (
            default_sip_headers(call_id) if sip_headers is None
            else normalize_sip_headers(sip_headers)
        )
        record = RealtimeCall(
            call_id, headers, media_security, time.time(), self.options.ring_timeout_s,
            self.options.default_model,
        )
        call = SimCall(record, self, scenario, faults)
        self.calls.append(call)
        self._forget_over()
        call.start_ringing(self._sender if deliver else None, 1 + duplicates, webhook_fault)
        self.changes.notify()
        _log.info("sim call %s ringing", call_id)
        return call

    def _forget_over(self) -> None:
        keep = self.options.keep_closed
        if keep is None:
            return
        # A call still delivering webhooks (or finishing a task) stays until it is idle, so
        # that close() stops everything.
        over = [c for c in self.calls if c.record.over and not c.busy]
        if len(over) > keep:
            gone = {id(c) for c in over[: len(over) - keep]}
            self.calls[:] = [c for c in self.calls if id(c) not in gone]

    async def close(self) -> None:
        """End every task of every call and close the webhook client."""
        await asyncio.gather(*(c.stop() for c in self.calls))
        if self._sender is not None:
            await self._sender.close()

    # --- HTTP -----------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        """Mount ``/v1/realtime/calls/...`` and ``/sim/calls...`` on the simulator's app."""
        app.router.add_post(CALLS_PATH + "/{call_id}/{verb}", self._rest)
        app.router.add_post(SIM_CALLS_PATH, self._sim_create)
        app.router.add_get(SIM_CALLS_PATH, self._sim_list)
        app.router.add_get(SIM_CALLS_PATH + "/{call_id}", self._sim_get)
        app.router.add_post(SIM_CALLS_PATH + "/{call_id}/{action}", self._sim_action)

    async def _rest(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        verb = request.match_info["verb"]
        try:
            if not _has_credentials(request):
                raise missing_api_key()
            if verb not in VERBS:
                raise invalid_url(request.method, request.path)
            body = await request.read()
            call = self.get(call_id)
            if call is None:
                raise not_found(call_id)
            call.rest(verb, body)
        except CallError as exc:
            return web.json_response(exc.body(), status=exc.status)
        return web.Response(status=200)

    async def _sim_create(self, request: web.Request) -> web.Response:
        try:
            params = _object_body(parse_body(await request.read()))
            unknown = set(params) - _CREATE_KEYS
            if unknown:
                raise _control(400, f"unknown field(s): {', '.join(sorted(unknown))}")
            try:
                call = await self.incoming_call(
                    params.get("sip_headers"),
                    media_security=params.get("media_security", "rtp"),
                    call_id=params.get("call_id"),
                    duplicates=int(params.get("duplicates", 0)),
                    webhook_fault=params.get("webhook_fault"),
                    deliver=bool(params.get("deliver", True)),
                    scenario=params.get("scenario"),
                    rest_faults=params.get("rest_faults"),
                )
            except (TypeError, ValueError) as exc:
                raise _control(400, str(exc)) from None
        except CallError as exc:
            return web.json_response(exc.body(), status=exc.status)
        return web.json_response(call.to_json(), status=201)

    async def _sim_list(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": [c.to_json() for c in self.calls]})

    async def _sim_get(self, request: web.Request) -> web.Response:
        call = self.get(request.match_info["call_id"])
        if call is None:
            return web.json_response(not_found(request.match_info["call_id"]).body(), status=404)
        return web.json_response(call.to_json())

    async def _sim_action(self, request: web.Request) -> web.Response:
        call_id, action = request.match_info["call_id"], request.match_info["action"]
        try:
            call = self.get(call_id)
            if call is None:
                raise not_found(call_id)
            raw = await request.read()
            if action == "audio":
                if not call.feed_audio(raw):
                    raise _control(409, f"call {call_id} has no session ({call.state})")
            else:
                params = _object_body(parse_body(raw))
                await self._control_action(call, action, params)
        except CallError as exc:
            return web.json_response(exc.body(), status=exc.status)
        except CallControlError as exc:
            return web.json_response(_control(409, str(exc)).body(), status=409)
        return web.json_response(call.to_json())

    async def _control_action(self, call: SimCall, action: str, params: dict[str, Any]) -> None:
        if action == "say":
            text = params.get("text")
            if not isinstance(text, str) or not text.strip():
                raise _control(400, "'text' must be a non-empty string")
            silence = params.get("silence_ms", 1000)
            if not isinstance(silence, int) or silence < 0:
                raise _control(400, "'silence_ms' must be a non-negative integer")
            if not await call.say(text, trailing_silence_ms=silence):
                raise _control(409, f"call {call.call_id} has no session ({call.state})")
        elif action == "dtmf":
            digits = params.get("digits")
            if not isinstance(digits, str):
                raise _control(400, "'digits' must be a string of 0-9 * # A-D")
            call.send_dtmf(digits)
        elif action == "hangup":
            await call.hangup(abort=bool(params.get("abort", False)))
        elif action == "transfer":
            await call.transfer_result(bool(params.get("ok", True)))
        elif action == "drop_sideband":
            await call.drop_sideband(abort=bool(params.get("abort", True)))
        elif action == "refuse_sidebands":
            try:
                call.refuse_sidebands(params.get("status", 503))
            except ValueError as exc:
                raise _control(400, str(exc)) from None
        else:
            raise invalid_url("POST", f"{SIM_CALLS_PATH}/{call.call_id}/{action}")


def _has_credentials(request: web.Request) -> bool:
    auth = request.headers.get("Authorization", "")
    bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    return bool(bearer or request.headers.get("api-key", "").strip())


def _object_body(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _control(400, "the body must be a JSON object")
    return value


def _control(status: int, message: str) -> CallError:
    return CallError(status, message, type="sim_control_error")

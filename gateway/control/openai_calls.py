"""Calls OpenAI's SIP endpoint answered: routed with the dialplan, run in the control process.

Each verified ``realtime.call.incoming`` (:mod:`gateway.control.webhooks`) becomes a task of
:class:`OpenAICalls`, named after its ``call_id``. The dialplan routes it like a SIP call,
with ``ingress: openai`` and the INVITE's headers (:func:`~gateway.control.webhook_event.
call_info`):

* an agent route: accept with the agent's session, then its agent on the sideband
  (:class:`~gateway.calls.sideband.SidebandSession`);
* a reject route: ``reject`` with its status code;
* a refer route: accept (a minimal session), then ``refer`` to its URI;
* no route: ``reject`` with ``openai_calls.no_route_status`` (404);
* more than ``openai_calls.max_sessions`` calls at once: ``reject`` 486.

Every outcome is one ``call record:`` log line (no call content unless
``logging.call_content``). Sideband calls need no SIP worker and no call slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from gateway.calls.conversation import AgentServices
from gateway.calls.redact import log_view
from gateway.calls.sideband import SidebandRecord, SidebandSession
from gateway.config import EMBEDDED, Settings
from gateway.control.commands import CommandDesk
from gateway.control.relays import RelayDesk, WorkerLeg
from gateway.control.webhook_event import IncomingCallEvent, call_info
from gateway.control.webhooks import WebhookInbox
from gateway.dialplan.router import RouteDecision, decide, route_call, route_named
from gateway.dialplan.schema import AgentAction, Dialplan, ReferAction, RejectAction
from gateway.errors import ConfigError, ConfigErrors, NoRouteError
from gateway.ipc.from_worker import RELAY_HEADER
from gateway.realtime.calls import CallGone, CallsApiError, CallsClient
from gateway.realtime.client import RealtimeConnectOptions
from gateway.realtime.retry import RetryPolicy
from gateway.records.writer import RecordWriter

__all__ = ["BUSY_STATUS", "OpenAICalls", "WebhookEndpoint", "calls_api_base", "sideband_url"]

log = logging.getLogger("gateway.control")

#: SIP status for a call beyond ``openai_calls.max_sessions``.
BUSY_STATUS: Final = 486
#: After a drain's hang-ups, how long calls get to end (farewell, hangup request).
FINISH_GRACE_S: Final = 20.0


def sideband_url(realtime_url: str) -> str:
    """The sideband WebSocket base: the Realtime URL without its query (``?call_id=`` goes on)."""
    return realtime_url.split("?", 1)[0]


class OpenAICalls:
    """Runs webhook calls (see the module docstring).

    Args:
        settings: The gateway's settings.
        plan: The dialplan in force (read once per call).
        calls: The Calls REST client (open).
        services: Tools and HTTP tools for the agents.
        realtime_url: The Realtime WebSocket URL (the sideband attaches by ``call_id``).
        on_record: Called with each finished call's record.
        relays: Relay tokens from the SIP workers (``relay:`` routes); ``None``: no workers.
        commands: Commands to the workers' calls (a relayed call's transfer).
    """

    def __init__(self, settings: Settings, plan: Callable[[], Dialplan], calls: CallsClient,
                 services: AgentServices, realtime_url: str,
                 on_record: Callable[[SidebandRecord], None] | None = None,
                 relays: RelayDesk | None = None, commands: CommandDesk | None = None,
                 records: RecordWriter | None = None) -> None:
        self.settings = settings
        self._relays = relays
        self._commands = commands
        self._records = records
        self._plan = plan
        self._calls = calls
        self._services = services
        self._url = sideband_url(realtime_url)
        self._on_record = on_record
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sessions: dict[str, SidebandSession] = {}

    @property
    def active(self) -> int:
        """Webhook calls being handled or running."""
        return len(self._tasks)

    def session(self, call_id: str) -> SidebandSession | None:
        """The running sideband session of a direct call (``call_id`` is OpenAI's)."""
        session = self._sessions.get(call_id)
        return session if session is not None and session.leg is None else None

    def session_for_leg(self, sip_leg: str) -> SidebandSession | None:
        """The sideband session of the relayed call a SIP worker knows as ``sip_leg``."""
        return next((s for s in self._sessions.values()
                     if s.leg is not None and s.leg.call_id == sip_leg), None)

    def live(self) -> list[dict[str, Any]]:
        """The direct calls running now, as the control API lists them."""
        return [{"call_id": s.call_id, "kind": "direct", "live": True,
                 "route": s.record.route, "agent": s.actor.agent.name,
                 "state": "answered" if s.record.accepted else "accepting",
                 "started_at": s.record.started_at}
                for s in self._sessions.values() if s.leg is None]

    def on_call(self, event: IncomingCallEvent) -> None:
        """Take a new call (the webhook endpoint already answered 200); never blocks."""
        if event.call_id in self._tasks:
            return  # the inbox deduplicates; this is a second line
        task = asyncio.create_task(self._handle(event), name=f"openai-call:{event.call_id}")
        self._tasks[event.call_id] = task
        task.add_done_callback(functools.partial(self._done, event.call_id))

    def _done(self, call_id: str, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(call_id, None)

    async def finish(self, deadline_s: float) -> None:
        """Drain: live calls go on for up to ``deadline_s``, then are hung up.

        A hang-up waits for the agent's current sentence; then the calls get
        :data:`FINISH_GRACE_S` to end. None is left running without its agent unless
        OpenAI's API does not answer.
        """
        if not self._tasks:
            return
        log.info("draining: %d OpenAI call(s) may go on for %g s", len(self._tasks), deadline_s)
        await asyncio.wait(list(self._tasks.values()), timeout=deadline_s)
        for session in list(self._sessions.values()):
            session.end_call("the gateway is shutting down")
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=FINISH_GRACE_S)

    async def close(self) -> None:
        """Cancel every call task and wait for them (what is still up is left to OpenAI)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _handle(self, event: IncomingCallEvent) -> None:
        record: SidebandRecord | None = None
        try:
            record = await self._run(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook call %s failed", event.call_id)
        if record is not None:
            data = log_view(record.as_dict(), content=self.settings.logging.call_content)
            log.info("call record: %s", json.dumps(data, sort_keys=True, default=str))
            if self._on_record is not None:
                self._on_record(record)
            if self._records is not None:
                await self._records.sideband_ended(record.as_dict())

    async def _run(self, event: IncomingCallEvent) -> SidebandRecord:
        cfg = self.settings.openai_calls
        info = call_info(event)
        if len(self._tasks) > cfg.max_sessions:
            return await self._reject(event, "-", BUSY_STATUS, "too many calls")
        token = info.header(RELAY_HEADER)
        if token is not None:
            return await self._relayed(event, token)
        if self._records is not None:
            await self._records.offered(event.call_id, "direct", "inbound", time.time(),
                                        info.from_user, info.to_user,
                                        openai_call_id=event.call_id)
        try:
            decision = route_call(self._plan(), info)
        except NoRouteError:
            return await self._reject(event, "-", cfg.no_route_status, "no route")
        action = decision.action
        route = decision.route.name
        log.info("openai call %s -> route %s", event.call_id, route)
        if isinstance(action, RejectAction):
            return await self._reject(event, route, action.code, "rejected by the dialplan")
        if isinstance(action, ReferAction):
            return await self._refer(event, route, action.uri)
        assert isinstance(action, AgentAction)
        return await self._agent(event, decision)

    async def _relayed(self, event: IncomingCallEvent, token: str) -> SidebandRecord:
        """A relay leg a SIP worker placed: its route's agent, matched by the token."""
        relay = await self._relays.claim(token) if self._relays is not None else None
        if relay is None or self._commands is None:
            log.warning("openai call %s carries an unknown or spent relay token: 403",
                        event.call_id)
            return await self._reject(event, "-", 403, "unknown relay token")
        plan = self._plan()
        route = route_named(plan, relay.route)
        if route is None or not isinstance(route.action, AgentAction) \
                or route.action.relay is None:
            log.warning("openai call %s: relay route %s is no longer in the dialplan: 480",
                        event.call_id, relay.route)
            return await self._reject(event, relay.route, 480, "relay route gone")
        log.info("openai call %s -> relayed call %s, route %s", event.call_id, relay.call_id,
                 route.name)
        leg = WorkerLeg(self._commands, relay.worker_id, relay.call_id)
        return await self._agent(event, decide(plan, route, relay.info), leg)

    async def _agent(self, event: IncomingCallEvent, decision: RouteDecision,
                     leg: WorkerLeg | None = None) -> SidebandRecord:
        options = RealtimeConnectOptions(
            url=self._url, call_id=event.call_id,
            api_key=self.settings.realtime.api_key.value or (
                "local-simulator" if self.settings.realtime.embedded else None),
            headers={k: v.value for k, v in self.settings.realtime.headers.items()},
            open_timeout_s=self.settings.realtime.open_timeout_s,
            ping_interval_s=self.settings.realtime.ping_interval_s,
            retry=self.settings.realtime.retry)
        assert decision.agent is not None
        limit = decision.agent.max_duration_s or self.settings.calls.max_duration_s
        session = SidebandSession(
            event.call_id, decision, self._calls, options, self._services,
            model=self.settings.realtime.model, max_duration_s=float(limit),
            log_content=self.settings.logging.call_content, leg=leg)
        self._sessions[event.call_id] = session
        try:
            return await session.run()
        finally:
            self._sessions.pop(event.call_id, None)

    async def _reject(self, event: IncomingCallEvent, route: str, status: int,
                      why: str) -> SidebandRecord:
        record = SidebandRecord(event.call_id, route, None, rejected=status,
                                end_reason=f"{why}: {status}")
        try:
            await self._calls.reject(event.call_id, status)
        except CallGone:
            record.end_reason = "caller gone before reject"
        except CallsApiError as exc:
            record.end_reason = f"reject failed: {exc}"
        return record

    async def _refer(self, event: IncomingCallEvent, route: str, uri: str) -> SidebandRecord:
        record = SidebandRecord(event.call_id, route, None, referred_to=uri)
        try:
            # A call must be accepted before it can be referred.
            await self._calls.accept(event.call_id, {"model": self.settings.realtime.model,
                                                     "instructions": ""})
            record.accepted = True
            await self._calls.refer(event.call_id, uri)
            record.end_reason = "referred by the dialplan"
        except CallGone:
            record.end_reason = "caller gone"
        except CallsApiError as exc:
            record.end_reason = f"refer failed: {exc}"
        return record


def calls_api_base(api_url: str, embedded_ws_url: str | None) -> str:
    """The Calls REST base: ``api_url``, or the embedded simulator's (``http://host:port/v1``)."""
    if api_url != EMBEDDED:
        return api_url.rstrip("/")
    if embedded_ws_url is None:
        raise ValueError("openai_calls.api_url is embedded but no simulator runs")
    parts = urlsplit(embedded_ws_url)
    return f"http://{parts.netloc}/v1"


class WebhookEndpoint:
    """The webhook route and the calls behind it, in the control process's life cycle.

    The route is installed on the control application before the HTTP server starts; calls
    are taken once :meth:`start` has run (until then, and after :meth:`drain`, verified
    deliveries get ``503`` and OpenAI delivers them again later).

    Raises:
        ConfigErrors: From the constructor, when the signing secret is not a ``whsec_...`` one.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._calls: OpenAICalls | None = None
        self._draining = False
        try:
            self.inbox = WebhookInbox(settings.openai_calls.webhook_secret.value, self._on_call,
                                      ready=self._ready)
        except ValueError as exc:
            raise ConfigErrors([ConfigError(settings.source, None,
                                            "openai_calls.webhook_secret_env", str(exc))]
                               ) from None

    @property
    def calls(self) -> OpenAICalls | None:
        """The running calls, once started."""
        return self._calls

    def install(self, app: web.Application) -> None:
        """Add ``POST openai_calls.webhook_path`` to the control application."""
        app.router.add_post(self.settings.openai_calls.webhook_path, self.inbox.handle)

    async def start(self, stack: contextlib.AsyncExitStack, *, plan: Callable[[], Dialplan],
                    services: AgentServices, realtime_url: str,
                    embedded_ws_url: str | None, relays: RelayDesk | None = None,
                    commands: CommandDesk | None = None,
                    on_record: Callable[[SidebandRecord], None] | None = None,
                    records: RecordWriter | None = None) -> None:
        """Open the Calls REST client and start taking calls (closed with ``stack``)."""
        cfg = self.settings.openai_calls
        rt_settings = self.settings.realtime
        client = CallsClient(
            calls_api_base(cfg.api_url, embedded_ws_url),
            rt_settings.api_key.value or ("local-simulator" if rt_settings.embedded else ""),
            headers={k: v.value for k, v in rt_settings.headers.items()},
            timeout_s=cfg.request_timeout_s,
            retry=RetryPolicy(max_attempts=cfg.request_attempts, initial_delay_s=0.25,
                              max_delay_s=2.0))
        await stack.enter_async_context(client)
        calls = OpenAICalls(self.settings, plan, client, services, realtime_url,
                            on_record=on_record, relays=relays, commands=commands,
                            records=records)
        stack.push_async_callback(calls.close)
        self._calls = calls
        log.info("OpenAI webhook on POST %s (Calls API %s)", cfg.webhook_path,
                 calls_api_base(cfg.api_url, embedded_ws_url))

    def drain(self) -> None:
        """Take no new calls (verified deliveries get 503); running ones go on."""
        self._draining = True

    async def finish(self, deadline_s: float) -> None:
        """Drain the running calls (:meth:`OpenAICalls.finish`)."""
        if self._calls is not None:
            await self._calls.finish(deadline_s)

    def _ready(self) -> bool:
        return self._calls is not None and not self._draining

    def _on_call(self, event: IncomingCallEvent) -> None:
        if self._calls is not None:
            self._calls.on_call(event)

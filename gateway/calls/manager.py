"""Admission and bookkeeping of every call in this process.

The manager receives the SIP user agent's events on the loop, decides what each new INVITE gets
(allow-list for trunk calls -> 403, dialplan -> route, reject, redirect, or an agent), starts a
:class:`~gateway.calls.session.CallSession` per agent call as a named task it owns, forwards
later SIP events to that session, and runs the one shared media tick (one append chunk, 40
ms) that moves caller audio of every call (one timer per process instead of one per call,
perf-notes). Refusals are :class:`~gateway.errors.CallRejected` errors turned into SIP
responses by the user agent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from gateway.calls.conversation import AgentServices, TransferResult, say_exactly
from gateway.calls.record import CallRecord, OutboundCall
from gateway.calls.relay import RelayedCall, new_token
from gateway.calls.session import CallSession, SessionSettings, SipControl, continuity_policy
from gateway.config import Settings, recordings_dir
from gateway.dialplan.router import CallInfo, RouteDecision, decide, first_values, route_call
from gateway.dialplan.schema import (
    AgentAction,
    Dialplan,
    Match,
    ReferAction,
    RejectAction,
    Route,
)
from gateway.errors import CallRejected, NoRouteError
from gateway.realtime.client import RealtimeConnectOptions
from gateway.sip.events import (
    CallerRefer,
    CallRefused,
    IncomingCall,
    LegEnded,
    MediaActive,
    RegistrationState,
    SipEvent,
)
from gateway.sip.message import uri_user
from gateway.sip.sources import account_sources

log = logging.getLogger("gateway.calls")

#: Keep this many finished call records for the control API.
_RECENT_CALLS = 200
#: The media tick never runs slower than this: caller audio waits at most one tick.
_MAX_TICK_S = 0.04
#: On shutdown, how long calls get to say goodbye (BYE, record) before they are cancelled.
SHUTDOWN_GRACE_S = 5.0


class CallObserver(Protocol):
    """Told about every call's lifecycle (a SIP worker reports it to the control process).

    Called on the loop thread; must be quick and must not raise (errors are logged).
    """

    def call_offered(self, offer: IncomingCall) -> None:
        """An INVITE reached the manager."""

    def call_started(self, leg_id: int, route: str, agent: str, codec: str) -> None:
        """An agent call's media is up."""

    def call_ended(self, record: CallRecord) -> None:
        """A call is over (refused calls too); ``record`` is its final record."""

    def call_event(self, leg_id: int, kind: str, data: Mapping[str, Any]) -> None:
        """Something happened on a live call (a tool ran, a barge-in...; no call content)."""

    def relay_offered(self, offer: IncomingCall, decision: RouteDecision, token: str) -> None:
        """A relayed call is about to dial OpenAI with ``token`` (sent before the INVITE)."""


@dataclass
class CallStats:
    """Counters since start."""

    offered: int = 0
    rejected: dict[int, int] = field(default_factory=dict)
    redirected: int = 0
    sessions: int = 0
    ended: int = 0
    caller_refers_refused: int = 0


class CallManager:
    """Routes incoming calls and owns their sessions.

    Args:
        settings: The gateway configuration.
        sip: The SIP user agent's command side.
        dialplan: Returns the current dialplan (it may be reloaded at any time).
        realtime_url: WebSocket URL of the Realtime API (or the embedded simulator).
    """

    def __init__(self, settings: Settings, sip: SipControl, dialplan: Callable[[], Dialplan],
                 realtime_url: str, services: AgentServices | None = None) -> None:
        self.settings = settings
        self.sip = sip
        self._dialplan = dialplan
        self._realtime_url = realtime_url
        self.services = services or AgentServices()
        self._sessions: dict[int, CallSession] = {}
        #: Relayed calls (``relay:`` routes): OpenAI carries their media.
        self._relays: dict[int, RelayedCall] = {}
        self._tasks: dict[int, asyncio.Task[CallRecord]] = {}
        self.recent: list[CallRecord] = []
        self.registrations: dict[str, RegistrationState] = {}
        #: Registration account -> source addresses its INVITEs may come from.
        self._account_sources: dict[str, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                               ...]] = {}
        self.stats = CallStats()
        #: Where calls the gateway places may go (``sip.outbound_allow``, matched in full).
        self._outbound_allow = tuple(re.compile(p) for p in settings.sip.outbound_allow)
        #: Set by the worker when it drains: no new outbound calls.
        self.draining = False
        self._tick: asyncio.Task[None] | None = None
        #: Told about each call's lifecycle (set by a SIP worker before calls arrive).
        self.observer: CallObserver | None = None
        self._media_up: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        #: Set while a session exists: the media tick sleeps on it when there is no call.
        self._has_sessions = asyncio.Event()
        # One tick per append chunk (40 ms by default): each tick then sends one chunk per
        # call and exchanges audio with its port once, half the wake-ups of a 20 ms tick. Agent
        # audio does not wait for the tick (the native port is fed as it arrives, the Python
        # port pops per frame), and the caller's frames wait in the port's 1 s ring.
        self._tick_s = min(settings.calls.append_chunk_ms / 1000, _MAX_TICK_S)
        self._session_settings = SessionSettings(
            append_chunk_ms=settings.calls.append_chunk_ms,
            max_duration_s=settings.calls.max_duration_s,
            log_content=settings.logging.call_content,
            continuity=continuity_policy(settings),
            recordings_dir=recordings_dir(settings),
        )

    async def __aenter__(self) -> CallManager:
        await self._resolve_account_sources()
        self._tick = asyncio.create_task(self._media_tick(), name="calls:media-tick")
        return self

    async def _resolve_account_sources(self) -> None:
        """Where each registration account's INVITEs may come from (:mod:`gateway.sip.sources`)."""
        for account in self.settings.sip.accounts:
            self._account_sources[account.name] = await account_sources(account)

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def active(self) -> int:
        """Calls with a running session."""
        return len(self._tasks)

    def on_sip_event(self, event: SipEvent) -> None:
        """Entry point for every SIP event (on the loop thread)."""
        if isinstance(event, IncomingCall):
            self._offer(event)
        elif isinstance(event, CallRefused):
            self._count_rejected(event.status)
            self._refused_record(event.leg_id, event.sip_call_id, event.status, event.reason,
                                 event.detail)
        elif isinstance(event, RegistrationState):
            self.registrations[event.account] = event
            level = logging.INFO if event.active or event.expires_s == 0 else logging.WARNING
            log.log(level, "registration %s: %d %s (expires %d s)", event.account,
                    event.status, event.reason, event.expires_s)
        else:
            if isinstance(event, CallerRefer) and not event.allowed:
                self.stats.caller_refers_refused += 1
            relayed = self._relays.get(event.leg_id)
            if relayed is not None:
                if isinstance(event, MediaActive) and event.leg_id not in self._media_up:
                    self._media_up.add(event.leg_id)
                    route, agent = relayed.decision.route.name, relayed.record.agent or "-"
                    self._observe(lambda o: o.call_started(event.leg_id, route, agent,
                                                           event.codec))
                relayed.on_sip_event(event)
                return
            session = self._sessions.get(event.leg_id)
            if session is not None:
                if isinstance(event, MediaActive) and event.leg_id not in self._media_up:
                    self._media_up.add(event.leg_id)
                    route, agent = session.decision.route.name, session.agent.name
                    self._observe(lambda o: o.call_started(event.leg_id, route, agent,
                                                           event.codec))
                session.on_sip_event(event)
            elif not isinstance(event, LegEnded):
                log.debug("event for unknown leg %d: %s", event.leg_id, type(event).__name__)

    def _observe(self, notify: Callable[[CallObserver], None]) -> None:
        if self.observer is not None:
            try:
                notify(self.observer)
            except Exception:
                log.exception("call observer failed")

    def _offer(self, offer: IncomingCall) -> None:
        self.stats.offered += 1
        self._observe(lambda o: o.call_offered(offer))
        try:
            self._admit(offer)
        except CallRejected as err:
            self._count_rejected(err.sip_status)
            log.info("call %s refused: %d %s", offer.sip_call_id, err.sip_status, err.reason)
            self.sip.reject(offer.leg_id, err)
            self._refused_record(offer.leg_id, offer.sip_call_id, err.sip_status, err.reason,
                                 "refused by admission or dialplan")
        except Exception:
            log.exception("error admitting call %s", offer.sip_call_id)
            # Our failure, not the caller's: 503 lets a PBX or front try elsewhere.
            failure = CallRejected("Service Unavailable", sip_status=503)
            self._count_rejected(503)
            self.sip.reject(offer.leg_id, failure)
            self._refused_record(offer.leg_id, offer.sip_call_id, 503, failure.reason,
                                 "internal error while admitting the call")

    def _count_rejected(self, status: int) -> None:
        self.stats.rejected[status] = self.stats.rejected.get(status, 0) + 1

    def _refused_record(self, leg_id: int, sip_call_id: str, status: int, reason: str,
                        detail: str) -> None:
        record = CallRecord(leg_id, sip_call_id, route="", agent=None, sip_status=status,
                            end_reason=f"refused: {status} {reason} ({detail})")
        self.stats.ended += 1
        self.recent.append(record)
        del self.recent[:-_RECENT_CALLS]
        self._observe(lambda o: o.call_ended(record))
        log.info("call record: %s", record.as_json(),
                 extra={"call_id": f"leg{leg_id}", "sip_call_id": sip_call_id})

    def _admit(self, offer: IncomingCall) -> None:
        if offer.account == "trunk" and not self._trunk_allowed(offer.source_ip):
            raise CallRejected("Forbidden", sip_status=403)
        if offer.account != "trunk" and not self._account_allowed(offer.account,
                                                                  offer.source_ip):
            log.warning("call %s for account %s from %s, which is not its registrar/proxy "
                        "(accounts[].allow_from): 403", offer.sip_call_id, offer.account,
                        offer.source_ip)
            raise CallRejected("Forbidden", sip_status=403)
        info = CallInfo(to_user=offer.to_user, from_user=offer.from_user,
                        request_uri=offer.request_uri, headers=first_values(offer.headers),
                        account=offer.account, source_ip=offer.source_ip,
                        caller_name=offer.from_name)
        decision = route_call(self._dialplan(), info)  # NoRouteError -> 404
        action = decision.action
        if isinstance(action, RejectAction):
            raise CallRejected(action.reason, sip_status=action.code)
        if isinstance(action, ReferAction):
            # Before answer a redirect is a 302 with the target in Contact (RFC 3261 §21.3.3).
            self.stats.redirected += 1
            log.info("call %s redirected by route %s", offer.sip_call_id, decision.route.name)
            self.sip.answer(offer.leg_id, 302, "Moved Temporarily",
                            (("Contact", f"<{action.uri}>"),))
            return
        assert isinstance(action, AgentAction)
        if decision.agent is None:
            raise NoRouteError()
        if action.relay is not None:
            self._relay(offer, decision, action.relay.uri)
            return
        self._start_session(offer, decision, None)

    def _start_session(self, offer: IncomingCall, decision: RouteDecision,
                       outbound: OutboundCall | None, *, max_duration_s: float = 0.0) -> None:
        assert decision.agent is not None
        agent = decision.agent
        options = RealtimeConnectOptions(
            url=self._realtime_url,
            model=agent.model or self.settings.realtime.model,
            # No placeholder to a real API; only the embedded simulator wants some token.
            api_key=self.settings.realtime.api_key.value or (
                "local-simulator" if self.settings.realtime.embedded else None),
            headers={k: v.value for k, v in self.settings.realtime.headers.items()},
            open_timeout_s=self.settings.realtime.open_timeout_s,
            ping_interval_s=self.settings.realtime.ping_interval_s,
            retry=self.settings.realtime.retry,
        )
        settings = self._session_settings
        if max_duration_s:
            settings = dataclasses.replace(settings, max_duration_s=int(max_duration_s))
        session = CallSession(offer, decision, self.sip, options, settings, self.services,
                              outbound=outbound)
        self._sessions[offer.leg_id] = session
        self._has_sessions.set()
        observer = self.observer
        if observer is not None:
            session.actor.activity.listener = functools.partial(observer.call_event,
                                                                offer.leg_id)
        self.stats.sessions += 1
        content = self.settings.logging.call_content
        if outbound is not None:
            log.info("leg %d: calling %s with agent %s", offer.leg_id,
                     offer.to_uri if content else "***", agent.name)
        else:
            log.info("call %s from %s to %s -> route %s, agent %s", offer.sip_call_id,
                     offer.from_user if content else "***",
                     offer.to_user if content else "***", decision.route.name, agent.name)
        task = asyncio.create_task(session.run(), name=f"call:{offer.leg_id}:session")
        self._tasks[offer.leg_id] = task
        self._idle.clear()
        task.add_done_callback(functools.partial(self._session_done, offer.leg_id))

    def originate(self, to: str, agent: str, context: Mapping[str, str], *,
                  max_duration_s: float = 0.0, ring_timeout_s: float = 30.0) -> int:
        """Place a call to ``to`` with ``agent``; returns its leg id.

        ``context`` fills the agent's ``{var.NAME}`` variables. The call is refused (raises)
        unless ``to`` matches ``sip.outbound_allow`` and the agent exists (the worker checks
        for a free call slot first).

        Raises:
            CallRejected: Not allowed, unknown agent, or draining (``sip_status`` says).
        """
        if not any(p.fullmatch(to) for p in self._outbound_allow):
            raise CallRejected("outbound calls to this URI are not allowed "
                               "(sip.outbound_allow)", sip_status=403)
        plan = self._dialplan()
        if agent not in plan.agents:
            raise CallRejected(f"no agent {agent!r} in the dialplan", sip_status=404)
        sip = self.sip
        if self.draining:
            raise CallRejected("draining: no new calls", sip_status=503)
        leg_id = sip.new_leg_id()
        account = self.settings.sip.accounts[0].name if self.settings.sip.accounts else None
        offer = IncomingCall(
            leg_id=leg_id, sip_call_id="", from_uri="", from_user="", from_name=None,
            to_uri=to, to_user=uri_user(to), request_uri=to, headers=(), source_ip="0.0.0.0",
            source_port=0, transport="", account=account or "trunk", media=sip.new_channel())
        route = Route(name="outbound", match=Match(), action=AgentAction(agent),
                      variables=MappingProxyType(dict(context)))
        info = CallInfo(to_user=offer.to_user, from_user="", request_uri=to, headers={},
                        account=offer.account, source_ip=offer.source_ip)
        decision = decide(plan, route, info)
        self._observe(lambda o: o.call_offered(offer))
        self._start_session(offer, decision, OutboundCall(ring_timeout_s),
                            max_duration_s=max_duration_s)
        sip.originate(leg_id, offer.media, to, account)
        return leg_id

    def _relay(self, offer: IncomingCall, decision: RouteDecision, uri: str | None) -> None:
        """Start a relayed call (:mod:`gateway.calls.relay`)."""
        assert decision.agent is not None
        cfg = self.settings.openai_calls
        target = uri or cfg.sip_uri
        if self.observer is None or not cfg.enabled or target is None:
            # Refused, not half-done: nobody would run the agent for OpenAI's webhook.
            log.error("call %s: route %s relays, but %s", offer.sip_call_id,
                      decision.route.name, "openai_calls.sip_uri is not set" if target is None
                      else "relayed calls need the control process and openai_calls.enabled")
            raise CallRejected("Service Unavailable", sip_status=503)
        token = new_token()
        # The control process learns the token before OpenAI's webhook can bring it back.
        self._observe(lambda o: o.relay_offered(offer, decision, token))
        limit = decision.agent.max_duration_s or self.settings.calls.max_duration_s
        call = RelayedCall(offer, decision, self.sip, target, token,
                           answer_timeout_s=cfg.relay_answer_timeout_s,
                           max_duration_s=float(limit))
        self._relays[offer.leg_id] = call
        self.stats.sessions += 1
        log.info("call %s -> route %s, agent %s, relayed through %s", offer.sip_call_id,
                 decision.route.name, decision.agent.name, target)
        task = asyncio.create_task(call.run(), name=f"call:{offer.leg_id}:relay")
        self._tasks[offer.leg_id] = task
        self._idle.clear()
        task.add_done_callback(functools.partial(self._session_done, offer.leg_id))

    def _trunk_allowed(self, source_ip: str) -> bool:
        return _in_networks(source_ip, self.settings.sip.trunk_allow)

    def _account_allowed(self, account: str, source_ip: str) -> bool:
        return _in_networks(source_ip, self._account_sources.get(account, ()))

    def _session_done(self, leg_id: int, task: asyncio.Task[CallRecord]) -> None:
        relayed = self._relays.pop(leg_id, None)
        session: CallSession | RelayedCall | None = self._sessions.pop(leg_id, None) or relayed
        if not self._sessions:
            self._has_sessions.clear()
        self._tasks.pop(leg_id, None)
        if not self._tasks:
            self._idle.set()
        self._media_up.discard(leg_id)
        self.stats.ended += 1
        if task.cancelled() or task.exception() is not None:
            if session is not None:  # its record says why (cancelled, crashed)
                record = session.record
                record.end_reason = record.end_reason or "call session crashed"
                self._observe(lambda o: o.call_ended(record))
            if not task.cancelled():
                log.error("call session %d crashed", leg_id, exc_info=task.exception())
            return
        self.recent.append(task.result())
        del self.recent[:-_RECENT_CALLS]
        self._observe(lambda o: o.call_ended(task.result()))

    async def _media_tick(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            if not self._sessions:  # no call: no tick until one comes
                await self._has_sessions.wait()
                next_at = loop.time()
            for session in list(self._sessions.values()):
                try:
                    session.pump()
                except Exception:
                    log.exception("media pump failed for leg %d", session.leg_id)
            next_at += self._tick_s
            delay = next_at - loop.time()
            if delay < -0.2:  # fell far behind (e.g. the process was stopped): resync
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(max(0.0, delay))

    async def wait_idle(self) -> None:
        """Return once no call session is running."""
        await self._idle.wait()

    def end_call(self, leg_id: int, reason: str) -> bool:
        """End one call with BYE (its record says ``reason``); False if it is not live."""
        session: CallSession | RelayedCall | None = (self._sessions.get(leg_id)
                                                     or self._relays.get(leg_id))
        if session is None:
            return False
        session.end_call(reason)
        return True

    async def transfer_call(self, leg_id: int, uri: str,
                            timeout_s: float = 30.0) -> TransferResult | None:
        """Blind-transfer one call by REFER (``None`` if it is not live); BYE once it took."""
        relayed = self._relays.get(leg_id)
        if relayed is not None:
            return await relayed.transfer(uri, timeout_s)  # it ends the call itself
        session = self._sessions.get(leg_id)
        if session is None:
            return None
        result = await session.transfer(uri, timeout_s)
        if result.ok:
            session.end_call("transferred by the operator")
        return result

    async def say(self, leg_id: int, text: str) -> bool:
        """Have one call's agent say ``text`` word for word next; False if it is not live."""
        session = self._sessions.get(leg_id)
        if session is None:
            return False
        await session.actor.request_response(say_exactly(text))
        return True

    async def close(self, timeout_s: float = 10.0) -> None:
        """End every call (BYE, its record) and stop the media tick.

        Calls are asked to end first, as if the agent hung up, so each sends BYE and writes
        its record; only calls still running after :data:`SHUTDOWN_GRACE_S` are cancelled
        (a cancelled session still writes its record).
        """
        calls: list[CallSession | RelayedCall] = [*self._sessions.values(),
                                                  *self._relays.values()]
        for call in calls:
            call.end_call("gateway shutting down")
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=min(SHUTDOWN_GRACE_S, timeout_s))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=timeout_s)
        if self._tick is not None:
            self._tick.cancel()
            # wait() does not raise the tick's CancelledError, only a cancellation of close().
            await asyncio.wait((self._tick,))
            self._tick = None


def _in_networks(source_ip: str,
                 nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(source_ip)
    except ValueError:
        return False
    return any(ip in net for net in nets)

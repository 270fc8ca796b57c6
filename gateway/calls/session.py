"""One call's conversation: the SIP leg, its media bridge and its Realtime session.

The session owns the call from the routed INVITE to the end: it rings, opens the Realtime
session (a failure refuses the call with 503 before anyone answers), answers, configures the
session for the negotiated codec once media flows, lets the agent greet, and then moves audio
both ways: caller frames are drained by the manager's shared media tick (:meth:`pump`) and sent
as ``input_audio_buffer.append``; agent audio goes into the leg's playout buffer. On
``input_audio_buffer.speech_started`` (with ``interrupt_response`` on) the playout buffer is
flushed at once and the item is truncated at what the caller actually heard; with it off the
agent finishes its sentence. A Realtime WebSocket that drops is reconnected by the client; the
new session gets the session configuration and the conversation so far
(:mod:`gateway.calls.context`) before any audio, and the call carries on, with a short apology
if the caller noticed (:mod:`gateway.calls.continuity` decides). A session that cannot come
back within the budget transfers the caller to the fallback URI or hangs up; an old session is
rotated to a fresh one at a quiet moment. Either side can end the call: a caller BYE/CANCEL
closes the Realtime session; a Realtime session that closes or fails for good sends BYE; so does
the maximum call duration. The call record is logged exactly once however the call ends, even
when the session's task is cancelled. Every task is named ``call:{leg}:...`` and owned here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import math
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.calls import continuity
from gateway.calls.agent import session_config
from gateway.calls.context import ConversationContext
from gateway.calls.continuity import ContinuityPolicy, Gap, SpeechMeter
from gateway.calls.conversation import AgentServices, CallAgent, TransferResult, say_exactly
from gateway.calls.record import CallRecord, OutboundCall, media_counters, outbound_end
from gateway.calls.recording import CallRecording
from gateway.config import Settings
from gateway.dialplan.router import RouteDecision
from gateway.errors import AgentUnavailable, CallRejected, RealtimeError
from gateway.logs import CallLogger
from gateway.media.bridge import MediaBridge
from gateway.media.channel import MediaChannel
from gateway.media.playout import PlayedState
from gateway.realtime import events as rt
from gateway.realtime.client import (
    RealtimeClient,
    RealtimeClosed,
    RealtimeConnectError,
    RealtimeConnectOptions,
)
from gateway.sip.events import (
    CallState,
    DtmfReceived,
    IncomingCall,
    LegEnded,
    MediaActive,
    SipEvent,
    TransferProgress,
)

log = logging.getLogger("gateway.call")

#: How long to wait for media after answering before giving up on the call.
MEDIA_TIMEOUT_S = 10.0
#: How long to wait for the SIP side to confirm the end after we sent BYE.
HANGUP_WAIT_S = 5.0
#: How long a fallback transfer (after the Realtime session is lost) may take.
FALLBACK_TRANSFER_TIMEOUT_S = 15.0
#: Agent items of the current Realtime session remembered for truncation.
_LIVE_ITEMS = 16
_SIP_QUEUE_SIZE = 64
#: Realtime error codes that only say a race was lost (a cancel after response.done).
BENIGN_ERRORS = frozenset({"response_cancel_not_active"})
_event_ids = itertools.count(1)


class SipControl(Protocol):
    """What a session needs from the SIP user agent (commands run on the SIP thread)."""

    def answer(self, leg_id: int, status: int, reason: str = "",
               headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Send a provisional or final response to the leg's INVITE."""

    def reject(self, leg_id: int, err: CallRejected) -> None:
        """Refuse the leg's INVITE with ``err.sip_status``."""

    def hangup(self, leg_id: int, status: int = 603, reason: str = "") -> None:
        """End the leg (BYE once answered)."""

    def transfer(self, leg_id: int, target_uri: str) -> None:
        """Blind transfer by REFER; progress arrives as TransferProgress events."""

    def send_dtmf(self, leg_id: int, digits: str) -> None:
        """Send RFC 4733 digits."""

    def relay(self, leg_id: int, uri: str, headers: tuple[tuple[str, str], ...]) -> None:
        """Place the leg's relay call to OpenAI's SIP endpoint (a ``relay:`` route)."""

    def new_leg_id(self) -> int:
        """A leg id for a call the gateway places."""

    def new_channel(self) -> MediaChannel:
        """A media channel for a call the gateway places."""

    def originate(self, leg_id: int, channel: MediaChannel, uri: str,
                  account: str | None = None) -> None:
        """Call ``uri`` as leg ``leg_id`` (progress as SIP events of that leg)."""


@dataclass(frozen=True)
class SessionSettings:
    """What a call session needs from the configuration."""

    append_chunk_ms: int = 40
    max_duration_s: int = 3600
    log_content: bool = False
    continuity: ContinuityPolicy = ContinuityPolicy()
    #: Where ``recording:`` routes' files go (``calls.recordings_dir``, resolved).
    recordings_dir: str = "recordings"


@dataclass
class _Outage:
    """A Realtime connection that dropped and is being reconnected."""

    lost_at: float
    agent_was_speaking: bool
    meter: SpeechMeter = field(default_factory=SpeechMeter)


class CallSession:
    """Runs one routed call to an agent until either side ends it."""

    def __init__(self, offer: IncomingCall, decision: RouteDecision, sip: SipControl,
                 options: RealtimeConnectOptions, settings: SessionSettings,
                 services: AgentServices | None = None, *,
                 outbound: OutboundCall | None = None) -> None:
        assert decision.agent is not None
        #: For a call the gateway places: how long it rings; ``None`` for an INVITE received.
        self.outbound = outbound
        self._confirmed = asyncio.Event()
        self._rang = False
        self.offer = offer
        self.decision = decision
        self.agent = decision.agent
        self.sip = sip
        # Calls ride out dropped connections: the client reconnects, the session replays.
        self.options = dataclasses.replace(options, reconnect=True)
        self.settings = settings
        self.leg_id = offer.leg_id
        self.record = CallRecord(offer.leg_id, offer.sip_call_id, decision.route.name,
                                 self.agent.name,
                                 direction="outbound" if outbound is not None else "inbound")
        self.log = CallLogger(log, {"call_id": f"leg{offer.leg_id}",
                                    "sip_call_id": offer.sip_call_id})
        # SIP events are few per call; 64 never fills unless the session is stuck. LegEnded
        # always gets in (the oldest event makes room) and is also latched in _leg_ended.
        self._sip_events: asyncio.Queue[SipEvent] = asyncio.Queue(_SIP_QUEUE_SIZE)
        self._leg_ended: LegEnded | None = None
        self._media_active = asyncio.Event()
        self._codec: str | None = None
        self._bridge: MediaBridge | None = None
        self._client: RealtimeClient | None = None
        self._streaming = False
        self._session_update_id: str | None = None
        self._barge_in_enabled = _interrupt_response(self.agent.turn_detection)
        self.actor = CallAgent(decision, self, services or AgentServices(),
                               name=f"call:{offer.leg_id}", log_content=settings.log_content,
                               leg_id=offer.leg_id)
        self.context = ConversationContext(f"gw{offer.leg_id}i")
        self._continuity = settings.continuity
        self._fallback = decision.route.fallback or self.agent.fallback
        self._outage: _Outage | None = None
        self._session_opened_at = 0.0
        self._live_items: deque[str] = deque(maxlen=_LIVE_ITEMS)
        self._caller_speaking = False
        self._end_requested = asyncio.Event()
        self._playout_idle = asyncio.Event()
        self._playout_idle.set()
        self._transfer: asyncio.Future[TransferResult] | None = None
        self._record_logged = False
        rec = decision.route.recording
        self._recording = CallRecording(rec, settings.recordings_dir, offer.leg_id) \
            if rec is not None and outbound is None else None

    # Called by the manager ---------------------------------------------------------------

    def on_sip_event(self, event: SipEvent) -> None:
        """Deliver a SIP event for this leg (loop thread)."""
        if isinstance(event, LegEnded):
            self._leg_ended = event
            if event.rtp is not None:
                self.record.rtp = dict(event.rtp)
        if isinstance(event, MediaActive):
            self._codec = event.codec
            self._media_active.set()
        try:
            self._sip_events.put_nowait(event)
        except asyncio.QueueFull:
            if not isinstance(event, LegEnded):
                self.log.error("SIP event queue full; dropped %s", type(event).__name__)
                return
            # The caller's hangup must end the call: drop the oldest event to make room.
            dropped = self._sip_events.get_nowait()
            self.log.error("SIP event queue full; dropped %s to deliver LegEnded",
                           type(dropped).__name__)
            self._sip_events.put_nowait(event)

    def pump(self) -> None:
        """Move caller audio to the Realtime session; called once per media tick by the manager."""
        media = self.offer.media
        bridge, client, outage = self._bridge, self._client, self._outage
        live = self._streaming and bridge is not None and client is not None
        if live and outage is None:
            assert bridge is not None and client is not None
            chunks = media.caller_chunks(bridge)
            self._note_playout()
            for chunk in chunks:
                client.send_audio(chunk)
            return
        frames = media.tick()
        self._note_playout()
        if live and outage is not None:
            # Nobody is listening: measure whether the caller spoke, send nothing stale.
            for frame in frames:
                outage.meter.feed(frame)

    def _note_playout(self) -> None:
        if self.offer.media.playout.is_idle:
            self._playout_idle.set()
        else:
            self._playout_idle.clear()

    async def run(self) -> CallRecord:
        """Run the call to its end; returns what happened. Never raises except cancellation.

        The call record is logged exactly once, also when this task is cancelled (then the
        cancellation is re-raised after the record).
        """
        try:
            await self._run()
            if self._recording is not None:
                self.record.recording = await self._recording.finish(
                    leg_ended=self._leg_ended is not None)
        except asyncio.CancelledError:
            self.record.end_reason = self.record.end_reason or "cancelled"
            if self._recording is not None and self.record.recording is None:
                self.record.recording = {"error": "call cancelled before the recording was saved"}
            self._log_record()
            raise
        self._log_record()
        return self.record

    async def _run(self) -> None:
        tasks = {
            self._spawn(self._watch_sip(), "sip"),
            self._spawn(self._converse(), "converse"),
            self._spawn(self._limit_duration(), "max-duration"),
            self._spawn(self._wait_end_request(), "end-request"),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            reason = first.result() if not first.cancelled() and not first.exception() else None
            if first.exception() is not None:
                reason = f"internal error: {type(first.exception()).__name__}"
                self.log.error("call task %s failed", first.get_name(),
                               exc_info=first.exception())
            self.record.end_reason = self.record.end_reason or (reason or "ended")
        finally:
            try:
                await _cancel_all(tasks)
                await self.actor.close()
            finally:
                # Under a second cancellation too: hangup() is sent before the first await.
                await self._end_sip_leg()

    def _log_record(self) -> None:
        if self._record_logged:
            return
        self._record_logged = True
        self.actor.activity.fill_record(self.record, self.options.model)
        self.record.media = media_counters(self.offer.media)
        self.log.info("call ended: %s (SIP %s)", self.record.end_reason, self.record.sip_status)
        self.log.info("call record: %s", self.record.as_json(content=self.settings.log_content))

    # Tasks -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, str], what: str) -> asyncio.Task[str]:
        return asyncio.create_task(coro, name=f"call:{self.leg_id}:{what}")

    async def _watch_sip(self) -> str:
        while True:
            event = await self._sip_events.get()
            if isinstance(event, LegEnded):
                self.record.sip_status = event.status
                if event.cause:  # the SIP side ended it: no RTP, session timer
                    return event.cause
                if self.outbound is not None:
                    return outbound_end(event.status, event.reason, self.record.answered)
                return "caller hung up" if self.record.answered else "caller cancelled"
            if isinstance(event, CallState) and self.outbound is not None:
                self.record.sip_call_id = self.record.sip_call_id or event.sip_call_id
                if event.state == "EARLY" and not self._rang:
                    self._rang = True
                    self.actor.activity.note("state", {"state": "ringing"})
                elif event.state == "CONFIRMED":
                    self._confirmed.set()
            if isinstance(event, MediaActive) and self._bridge is not None \
                    and event.codec != self._bridge.codec:
                await self._configure(event.codec)  # re-INVITE changed the codec
            elif isinstance(event, DtmfReceived):
                self.log.info("DTMF %s (%s)", event.digit if self.settings.log_content else "*",
                              event.method)
                if self._streaming:
                    await self.actor.on_dtmf(event.digit)
            elif isinstance(event, TransferProgress):
                self.log.info("transfer progress: %d %s%s", event.status, event.reason,
                              " (final)" if event.final else "")
                if event.final and self._transfer is not None and not self._transfer.done():
                    self._transfer.set_result(TransferResult(200 <= event.status < 300,
                                                             event.status, event.reason))
            elif isinstance(event, (CallState, MediaActive, IncomingCall)):
                pass

    async def _wait_end_request(self) -> str:
        await self._end_requested.wait()
        return self.record.end_reason or "ended by the agent"

    async def _limit_duration(self) -> str:
        limit = self.agent.max_duration_s or self.settings.max_duration_s
        await asyncio.sleep(limit)
        return f"maximum call duration {limit} s reached"

    async def _converse(self) -> str:
        if self.outbound is None:
            self.sip.answer(self.leg_id, 180, "Ringing")
        try:
            async with RealtimeClient(self.options, name=f"call:{self.leg_id}",
                                      prelude=self.context.replay_items) as client:
                self._client = client
                try:
                    return await self._talk(client)
                finally:
                    self._streaming = False
                    self._client = None
        except RealtimeConnectError as exc:
            if self.record.answered:  # only the first connect refuses the call
                return f"Realtime session failed: {exc}"
            # Nobody has answered yet: refuse the call rather than answer into silence.
            self.log.error("Realtime session unavailable: %s", exc)
            if self.outbound is not None:
                self.sip.hangup(self.leg_id)  # CANCEL what we placed
                return f"agent unavailable: {exc}"
            self.sip.reject(self.leg_id, AgentUnavailable("Agent Unavailable"))
            self.record.sip_status = 503
            return f"agent unavailable: {exc}"

    async def _talk(self, client: RealtimeClient) -> str:
        if self._leg_ended is not None:
            return "caller cancelled"
        if self.outbound is not None:
            # The session is open before the callee answers: the agent can speak at once.
            try:
                await asyncio.wait_for(self._confirmed.wait(), self.outbound.ring_timeout_s)
            except TimeoutError:
                self.record.sip_status = 408
                return f"no answer within {self.outbound.ring_timeout_s:g} s"
        else:
            if self._recording is not None:
                await self._recording.start(self.sip, self.leg_id)
            self.sip.answer(self.leg_id, 200)
        self.record.answered = True
        self.actor.activity.note("state", {"state": "answered"})
        try:
            await asyncio.wait_for(self._media_active.wait(), MEDIA_TIMEOUT_S)
        except TimeoutError:
            return "no media after answer"
        assert self._codec is not None
        await self._configure(self._codec)
        if self._recording is not None and self._recording.consent:
            await self.actor.request_response(say_exactly(self._recording.consent))
        if self.decision.greeting:
            await self.actor.request_response(say_exactly(self.decision.greeting))
        self._streaming = True
        self._session_opened_at = asyncio.get_running_loop().time()
        rotation = asyncio.create_task(self._rotate_when_due(client),
                                       name=f"call:{self.leg_id}:rotate")
        try:
            return await self._receive(client)
        finally:
            rotation.cancel()
            await asyncio.gather(rotation, return_exceptions=True)

    async def _receive(self, client: RealtimeClient) -> str:
        loop = asyncio.get_running_loop()
        while True:
            outage = self._outage
            try:
                if outage is None:
                    event = await client.recv()
                else:
                    left = self._continuity.budget_left(outage.lost_at, loop.time())
                    async with asyncio.timeout(left):
                        event = await client.recv()
            except TimeoutError:
                return await self._session_lost(
                    client, f"no new session within {self._continuity.reconnect_budget_s:g} s")
            except RealtimeClosed as exc:
                if exc.close_code == 1000 and self._outage is None:
                    return "Realtime session closed"
                if self._outage is not None:
                    return await self._session_lost(client, str(exc))
                return f"Realtime session failed: {exc}"
            except RealtimeError as exc:
                if self._outage is not None:
                    return await self._session_lost(client, str(exc))
                return f"Realtime session failed: {exc}"
            if isinstance(event, rt.ConnectionLost):
                self._on_connection_lost(event)
                continue
            if isinstance(event, rt.Reconnected):
                await self._on_reconnected(event)
                continue
            self.context.on_server_event(event)
            stop = await self._on_server_event(client, event)
            if stop:
                return stop

    async def _configure(self, codec: str) -> None:
        client = self._client
        if client is None or not client.is_open:
            # The Realtime session is over (a re-INVITE raced the end of the call).
            self.log.debug("codec %s not configured: no Realtime session", codec)
            return
        self._bridge = MediaBridge(self.agent.media, "PCMA" if codec == "PCMA" else "PCMU",
                                   chunk_ms=self.settings.append_chunk_ms)
        self.record.codec = codec
        event_id = f"evt_gw_{next(_event_ids)}"
        self._session_update_id = event_id
        config = session_config(self.actor.agent, self.actor.instructions(), self._bridge,
                                tools=self.actor.tool_definitions())
        self._barge_in_enabled = _interrupt_response(self.actor.agent.turn_detection)
        try:
            await client.send(rt.SessionUpdate(session=config, event_id=event_id))
        except RealtimeError as exc:
            self.log.debug("session.update not sent: %s", exc)

    # Continuity: reconnects, rotation, giving up -----------------------------------------

    def _on_connection_lost(self, event: rt.ConnectionLost) -> None:
        speaking = not self.offer.media.playout.is_idle or self.actor.response_active
        self._outage = _Outage(asyncio.get_running_loop().time(), speaking)
        self.record.realtime["drops"] += 1
        self._caller_speaking = False
        self.log.warning("Realtime connection lost (code %d); reconnecting for up to %g s",
                         event.close_code, self._continuity.reconnect_budget_s)

    async def _on_reconnected(self, event: rt.Reconnected) -> None:
        loop = asyncio.get_running_loop()
        response_lost = self.actor.on_reconnected()
        outage, self._outage = self._outage, None
        if event.rotated or outage is None:
            gap = Gap(rotated=True, response_lost=response_lost)
            self.record.realtime["rotations"] += 1
            self.log.info("Realtime session rotated to a new one")
        else:
            gap = Gap(agent_was_speaking=outage.agent_was_speaking,
                      caller_speech_ms=outage.meter.speech_ms, response_lost=response_lost)
            self.record.realtime["reconnects"] += 1
            self.log.info("Realtime session back after %.1f s (attempt %d); context replayed",
                          loop.time() - outage.lost_at, event.attempt)
        self._session_opened_at = loop.time()
        self._live_items.clear()
        self._caller_speaking = False
        plan = self._continuity.resume(gap)
        if plan.apologise is not None:
            self.record.realtime["apologies"] += 1
            await self.actor.request_response(say_exactly(plan.apologise))
        elif plan.respond:
            await self.actor.request_response()

    async def _rotate_when_due(self, client: RealtimeClient) -> None:
        """Replace the Realtime session before the API's duration limit, at a quiet moment."""
        loop = asyncio.get_running_loop()
        while True:
            age = loop.time() - self._session_opened_at
            wait = self._continuity.rotation(age, self._quiet())
            if wait is not None and math.isinf(wait):
                return
            if wait is not None:
                await asyncio.sleep(wait)
                continue
            if self._outage is not None:
                await asyncio.sleep(continuity.ROTATE_POLL_S)  # the reconnect renews it
                continue
            try:
                await client.rotate()
            except RealtimeConnectError as exc:
                self.log.warning("Realtime session rotation failed (%s); retrying in %g s",
                                 exc, continuity.ROTATE_RETRY_S)
                await asyncio.sleep(continuity.ROTATE_RETRY_S)
                continue
            except RealtimeError:
                return  # the session is over
            self._session_opened_at = loop.time()

    def _quiet(self) -> bool:
        return (self.offer.media.playout.is_idle and not self.actor.responding
                and not self._caller_speaking and self._outage is None)

    async def _session_lost(self, client: RealtimeClient, why: str) -> str:
        """The Realtime session cannot come back: fallback transfer or a polite hangup."""
        self._streaming = False
        self._outage = None
        self.log.error("Realtime session lost for good: %s", why)
        await client.close()  # stop reconnecting
        action = self._continuity.when_lost(self._fallback)
        if isinstance(action, continuity.Transfer):
            result = await self.transfer(action.uri, FALLBACK_TRANSFER_TIMEOUT_S)
            if result.ok:
                return "Realtime session lost; transferred to the fallback"
            self.log.warning("fallback transfer failed: %d %s", result.status, result.reason)
        return "Realtime session lost"

    # Server events -----------------------------------------------------------------------

    async def _on_server_event(self, client: RealtimeClient, event: Any) -> str | None:
        playout = self.offer.media.playout
        bridge = self._bridge
        assert bridge is not None
        if isinstance(event, rt.ResponseOutputAudioDelta):
            if event.item_id not in self._live_items:
                self._live_items.append(event.item_id)
            pcm = bridge.agent_audio(event.audio())
            if pcm:
                playout.push(event.item_id, event.content_index, pcm)
                self.offer.media.feed()
        elif isinstance(event, rt.ResponseOutputAudioDone):
            tail = bridge.agent_audio_end()
            if tail:
                playout.push(event.item_id, event.content_index, tail)
            playout.mark_done(event.item_id)
        elif isinstance(event, rt.InputAudioBufferSpeechStarted):
            self._caller_speaking = True
            await self._barge_in(client)
        elif isinstance(event, rt.InputAudioBufferSpeechStopped):
            self._caller_speaking = False
        elif isinstance(event, rt.SessionCreated):
            self.record.rt_session_id = str(event.session.get("id", "")) or None
            self.log.extra = {**(self.log.extra or {}), "rt_session": self.record.rt_session_id}
        elif isinstance(event, rt.ResponseDone):
            self.record.responses += 1
        elif isinstance(event, rt.ErrorEvent):
            stop = self._on_error(event)
            if stop:
                return stop
        elif isinstance(event, rt.ResponseOutputAudioTranscriptDone) and self.settings.log_content:
            self.log.info("agent said: %s", event.transcript)
        await self.actor.on_event(event)
        return None

    # CallControl (what the agent may do to the call) ----------------------------------

    async def send(self, event: rt.ClientEvent) -> None:
        """Send a client event on this call's Realtime session.

        Conversation items get an id and go into the replay record. While the connection is
        down, items wait for the replay and events that only made sense on the old session
        (truncate, cancel, response.create: the resume plan asks again) are dropped. After
        the session ended, events are dropped.
        """
        client = self._client
        if client is None:
            return
        if isinstance(event, rt.ConversationItemCreate):
            if "id" not in event.item:
                event = dataclasses.replace(event, item={"id": self.context.new_id(),
                                                         **event.item})
            self.context.on_client_item(event.item)
            if self._outage is not None:
                return
        elif self._outage is not None and not isinstance(event, rt.SessionUpdate):
            return
        try:
            await client.send(event)
        except RealtimeError as exc:
            self.log.debug("%s not sent: %s", event.type, exc)

    def flush_playout(self) -> PlayedState | None:
        """Stop the agent's audio at once; what of the current item was heard."""
        played = self.offer.media.flush_playout()
        if self._bridge is not None:
            self._bridge.reset_agent_stream()
        return played

    async def wait_playout_idle(self, timeout_s: float) -> bool:
        """Wait until the caller has heard all the agent's audio."""
        self._playout_idle.clear()  # the next media tick says whether it is idle now
        try:
            await asyncio.wait_for(self._playout_idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def end_call(self, reason: str) -> None:
        """End the call with BYE, recording why."""
        if not self._end_requested.is_set():
            self.record.end_reason = reason
            self._end_requested.set()

    async def transfer(self, uri: str, timeout_s: float) -> TransferResult:
        """REFER the caller to ``uri`` and wait for the final NOTIFY.

        A second transfer while one is in progress is refused (491) rather than sent.
        """
        if self._transfer is not None:
            self.log.warning("transfer refused: another transfer is in progress")
            return TransferResult(False, 491, "another transfer is in progress")
        self._transfer = asyncio.get_running_loop().create_future()
        self.log.info("transferring the call by REFER")
        try:
            try:
                self.sip.transfer(self.leg_id, uri)
            except Exception as exc:  # e.g. the SIP command queue is full
                self.log.error("REFER not sent: %s", type(exc).__name__)
                return TransferResult(False, 500, "the transfer could not be started")
            result = await asyncio.wait_for(self._transfer, timeout_s)
        except TimeoutError:
            result = TransferResult(False, 408, "no final NOTIFY in time")
        finally:
            self._transfer = None
        self.actor.activity.note("transfer", {"ok": result.ok, "status": result.status})
        return result

    def send_dtmf(self, digits: str) -> None:
        """Send RFC 4733 digits to the caller."""
        self.sip.send_dtmf(self.leg_id, digits)

    async def _barge_in(self, client: RealtimeClient) -> None:
        """Stop the agent within one frame and truncate at what the caller heard."""
        if not self._barge_in_enabled:
            # interrupt_response: false: the agent finishes; the server keeps its response.
            return
        played = self.flush_playout()
        if played is None:
            return  # the caller spoke while the agent was quiet: nothing to interrupt
        self.record.barge_ins += 1
        self.actor.activity.note("barge_in", {"count": self.record.barge_ins})
        if played.item_id not in self._live_items:
            return  # audio of a replaced session: the new one has no such item
        # flush() reports the item still being played: its tail was cut, so the server's
        # copy must lose what the caller never heard. The server cancels the response itself
        # (interrupt_response: true).
        self.record.truncates += 1
        await self.send(rt.ConversationItemTruncate(
            item_id=played.item_id, content_index=played.content_index,
            audio_end_ms=played.audio_end_ms))
        self.log.info("barge-in: truncated agent item at %d ms of %d ms received",
                      played.audio_end_ms, played.received_ms)

    def _on_error(self, event: rt.ErrorEvent) -> str | None:
        err = event.error
        if err.code in BENIGN_ERRORS:
            # A cancel that crossed the response's own response.done on the wire.
            self.log.debug("Realtime error %s (benign race)", err.code)
            return None
        self.log.warning("Realtime error %s (%s) for %s", err.code, err.type, err.event_id)
        if err.event_id is not None and err.event_id == self._session_update_id:
            # The agent's configuration was refused: nothing useful can happen on this call.
            return f"agent configuration rejected by the Realtime API: {err.code}: {err.message}"
        return None

    async def _end_sip_leg(self) -> None:
        if self._leg_ended is not None:
            return
        # A call refused before answer is ended by pjsua itself; anything else gets BYE/CANCEL.
        if self.record.answered or self.record.sip_status is None:
            self.sip.hangup(self.leg_id)
        try:
            await asyncio.wait_for(self._wait_leg_end(), HANGUP_WAIT_S)
        except TimeoutError:
            self.log.error("SIP leg did not end within %.0f s of hangup", HANGUP_WAIT_S)

    async def _wait_leg_end(self) -> None:
        while self._leg_ended is None:
            event = await self._sip_events.get()
            if isinstance(event, LegEnded):
                break
        if self._leg_ended is not None and self.record.sip_status is None:
            self.record.sip_status = self._leg_ended.status


def continuity_policy(settings: Settings) -> ContinuityPolicy:
    """The calls' reconnect, rotation and fallback policy from the configuration."""
    rt_settings, calls = settings.realtime, settings.calls
    return ContinuityPolicy(reconnect_budget_s=rt_settings.reconnect_budget_s,
                            rotate_after_s=rt_settings.rotate_after_s or None,
                            apology=calls.reconnect_apology, on_lost=calls.on_realtime_lost)


def _interrupt_response(turn_detection: object) -> bool:
    """Whether the caller may talk over the agent (barge-in) with this turn detection."""
    return turn_detection is not None and bool(getattr(turn_detection, "interrupt_response",
                                                       False))


async def _cancel_all(tasks: set[asyncio.Task[str]]) -> None:
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.debug("call task ended with %r", result)

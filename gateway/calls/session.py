"""One call's conversation: the SIP leg, its media bridge and its Realtime session.

The session owns the call from the routed INVITE to the end: it rings, opens the Realtime
session (a failure refuses the call with 503 before anyone answers), answers, configures the
session for the negotiated codec once media flows, lets the agent greet, and then moves audio
both ways: caller frames are drained by the manager's shared 20 ms tick (:meth:`pump`) and sent
as ``input_audio_buffer.append``; agent audio goes into the leg's playout buffer. On
``input_audio_buffer.speech_started`` the playout buffer is flushed at once and the item is
truncated at what the caller actually heard. Either side can end the call: a caller BYE/CANCEL
closes the Realtime session; a Realtime session that closes or fails sends BYE; so does the
maximum call duration. Every task is named ``call:{leg}:...`` and owned here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.calls.agent import session_config
from gateway.calls.conversation import AgentServices, CallAgent, TransferResult
from gateway.dialplan.router import RouteDecision
from gateway.errors import AgentUnavailable, CallRejected, RealtimeError
from gateway.logs import CallLogger
from gateway.media.bridge import MediaBridge
from gateway.media.playout import PlayedState
from gateway.realtime import events as rt
from gateway.realtime.client import RealtimeClient, RealtimeConnectError, RealtimeConnectOptions
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
_SIP_QUEUE_SIZE = 64
_BENIGN_ERRORS = frozenset({"response_cancel_not_active"})
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


@dataclass(frozen=True)
class SessionSettings:
    """What a call session needs from the configuration."""

    append_chunk_ms: int = 40
    max_duration_s: int = 3600
    log_content: bool = False


@dataclass
class CallRecord:
    """What happened on a call (kept by the manager; later persisted)."""

    leg_id: int
    sip_call_id: str
    route: str
    agent: str | None
    answered: bool = False
    codec: str | None = None
    end_reason: str = ""
    sip_status: int | None = None
    rt_session_id: str | None = None
    barge_ins: int = 0
    truncates: int = 0
    responses: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    handoffs: list[dict[str, object]] = field(default_factory=list)
    guardrail_events: list[dict[str, object]] = field(default_factory=list)
    dtmf_digits: int = 0
    #: Media counters: caller frames received / dropped (loop behind), agent frames played,
    #: dropped (playout full), silence mid-item (audio late), discarded by barge-in.
    media: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON-able data."""
        return dataclasses.asdict(self)


class CallSession:
    """Runs one routed call to an agent until either side ends it."""

    def __init__(self, offer: IncomingCall, decision: RouteDecision, sip: SipControl,
                 options: RealtimeConnectOptions, settings: SessionSettings,
                 services: AgentServices | None = None) -> None:
        assert decision.agent is not None
        self.offer = offer
        self.decision = decision
        self.agent = decision.agent
        self.sip = sip
        self.options = options
        self.settings = settings
        self.leg_id = offer.leg_id
        self.record = CallRecord(offer.leg_id, offer.sip_call_id, decision.route.name,
                                 self.agent.name)
        self.log = CallLogger(log, {"call_id": f"leg{offer.leg_id}",
                                    "sip_call_id": offer.sip_call_id})
        # SIP events are few per call; 64 never fills unless the session is stuck, and then
        # only LegEnded matters, which is also latched in ``_leg_ended``.
        self._sip_events: asyncio.Queue[SipEvent] = asyncio.Queue(_SIP_QUEUE_SIZE)
        self._leg_ended: LegEnded | None = None
        self._media_active = asyncio.Event()
        self._codec: str | None = None
        self._bridge: MediaBridge | None = None
        self._client: RealtimeClient | None = None
        self._streaming = False
        self._session_update_id: str | None = None
        self._interrupt_response = _interrupt_response(self.agent.turn_detection)
        self.actor = CallAgent(decision, self, services or AgentServices(),
                               name=f"call:{offer.leg_id}", log_content=settings.log_content)
        self._end_requested = asyncio.Event()
        self._playout_idle = asyncio.Event()
        self._playout_idle.set()
        self._transfer: asyncio.Future[TransferResult] | None = None

    # Called by the manager ---------------------------------------------------------------

    def on_sip_event(self, event: SipEvent) -> None:
        """Deliver a SIP event for this leg (loop thread)."""
        if isinstance(event, LegEnded):
            self._leg_ended = event
        if isinstance(event, MediaActive):
            self._codec = event.codec
            self._media_active.set()
        try:
            self._sip_events.put_nowait(event)
        except asyncio.QueueFull:
            self.log.error("SIP event queue full; dropped %s", type(event).__name__)

    def pump(self) -> None:
        """Move caller audio to the Realtime session; called every 20 ms by the manager."""
        frames = self.offer.media.drain_caller_frames()
        if self.offer.media.playout.is_idle:
            self._playout_idle.set()
        else:
            self._playout_idle.clear()
        bridge, client = self._bridge, self._client
        if not frames or bridge is None or client is None or not self._streaming:
            return
        for chunk in bridge.caller_frames(frames):
            client.send_audio(chunk)

    async def run(self) -> CallRecord:
        """Run the call to its end; returns what happened. Never raises except cancellation."""
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
            await _cancel_all(tasks)
            await self.actor.close()
            await self._end_sip_leg()
        activity = self.actor.activity
        self.record.tool_calls = activity.tool_calls
        self.record.handoffs = activity.handoffs
        self.record.guardrail_events = activity.guardrail_events
        self.record.dtmf_digits = activity.dtmf_digits
        media = self.offer.media
        stats = media.playout.stats
        self.record.media = {
            "rx_frames": media.rx_frames, "rx_dropped": media.rx_dropped,
            "tx_frames_played": stats.frames_played, "tx_frames_dropped": stats.frames_dropped,
            "tx_underrun_frames": stats.silence_frames_underrun,
            "tx_frames_flushed": stats.frames_flushed}
        self.log.info("call ended: %s (SIP %s)", self.record.end_reason, self.record.sip_status)
        self.log.info("call record: %s", json.dumps(self.record.as_dict(), sort_keys=True))
        return self.record

    # Tasks -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, str], what: str) -> asyncio.Task[str]:
        return asyncio.create_task(coro, name=f"call:{self.leg_id}:{what}")

    async def _watch_sip(self) -> str:
        while True:
            event = await self._sip_events.get()
            if isinstance(event, LegEnded):
                self.record.sip_status = event.status
                return "caller hung up" if self.record.answered else "caller cancelled"
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
        self.sip.answer(self.leg_id, 180, "Ringing")
        try:
            async with RealtimeClient(self.options, name=f"call:{self.leg_id}") as client:
                self._client = client
                try:
                    return await self._talk(client)
                finally:
                    self._streaming = False
                    self._client = None
        except RealtimeConnectError as exc:
            # Nobody has answered yet: refuse the call rather than answer into silence.
            self.log.error("Realtime session unavailable: %s", exc)
            self.sip.reject(self.leg_id, AgentUnavailable("Agent Unavailable"))
            self.record.sip_status = 503
            return "agent unavailable"

    async def _talk(self, client: RealtimeClient) -> str:
        if self._leg_ended is not None:
            return "caller cancelled"
        self.sip.answer(self.leg_id, 200)
        self.record.answered = True
        try:
            await asyncio.wait_for(self._media_active.wait(), MEDIA_TIMEOUT_S)
        except TimeoutError:
            return "no media after answer"
        assert self._codec is not None
        await self._configure(self._codec)
        if self.decision.greeting:
            # Quotes delimit the line to say; ones inside it (e.g. from a caller's display
            # name) would end it early.
            line = " ".join(self.decision.greeting.replace('"', "'").split())
            await client.send(rt.ResponseCreate(response={
                "instructions": f'Greet the caller. Say exactly "{line}" now.'}))
        self._streaming = True
        try:
            async for event in client:
                stop = await self._on_server_event(client, event)
                if stop:
                    return stop
        except RealtimeError as exc:
            return f"Realtime session failed: {exc}"
        return "Realtime session closed"

    async def _configure(self, codec: str) -> None:
        assert self._client is not None
        self._bridge = MediaBridge(self.agent.media, "PCMA" if codec == "PCMA" else "PCMU",
                                   chunk_ms=self.settings.append_chunk_ms)
        self.record.codec = codec
        event_id = f"evt_gw_{next(_event_ids)}"
        self._session_update_id = event_id
        config = session_config(self.actor.agent, self.actor.instructions(), self._bridge,
                                tools=self.actor.tool_definitions())
        await self._client.send(rt.SessionUpdate(session=config, event_id=event_id))

    # Server events -----------------------------------------------------------------------

    async def _on_server_event(self, client: RealtimeClient, event: Any) -> str | None:
        playout = self.offer.media.playout
        bridge = self._bridge
        assert bridge is not None
        if isinstance(event, rt.ResponseOutputAudioDelta):
            pcm = bridge.agent_audio(event.audio())
            if pcm:
                playout.push(event.item_id, event.content_index, pcm)
        elif isinstance(event, rt.ResponseOutputAudioDone):
            tail = bridge.agent_audio_end()
            if tail:
                playout.push(event.item_id, event.content_index, tail)
            playout.mark_done(event.item_id)
        elif isinstance(event, rt.InputAudioBufferSpeechStarted):
            await self._barge_in(client)
        elif isinstance(event, rt.SessionCreated):
            self.record.rt_session_id = str(event.session.get("id", "")) or None
            self.log.extra = {**(self.log.extra or {}), "rt_session": self.record.rt_session_id}
        elif isinstance(event, rt.ResponseDone):
            self.record.responses += 1
        elif isinstance(event, rt.ErrorEvent):
            return self._on_error(event)
        elif isinstance(event, rt.ResponseOutputAudioTranscriptDone) and self.settings.log_content:
            self.log.info("agent said: %s", event.transcript)
        await self.actor.on_event(event)
        return None

    # CallControl (what the agent may do to the call) ----------------------------------

    async def send(self, event: rt.ClientEvent) -> None:
        """Send a client event on this call's Realtime session."""
        if self._client is not None:
            await self._client.send(event)

    def flush_playout(self) -> PlayedState | None:
        """Stop the agent's audio at once; what of the current item was heard."""
        played = self.offer.media.playout.flush()
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
        """REFER the caller to ``uri`` and wait for the final NOTIFY."""
        self._transfer = asyncio.get_running_loop().create_future()
        self.log.info("transferring the call by REFER")
        self.sip.transfer(self.leg_id, uri)
        try:
            return await asyncio.wait_for(self._transfer, timeout_s)
        except TimeoutError:
            return TransferResult(False, 408, "no final NOTIFY in time")
        finally:
            self._transfer = None

    def send_dtmf(self, digits: str) -> None:
        """Send RFC 4733 digits to the caller."""
        self.sip.send_dtmf(self.leg_id, digits)

    async def _barge_in(self, client: RealtimeClient) -> None:
        """Stop the agent within one frame and truncate at what the caller heard."""
        played = self.flush_playout()
        if played is None:
            return  # the caller spoke while the agent was quiet: nothing to interrupt
        self.record.barge_ins += 1
        if not self._interrupt_response:
            await client.send(rt.ResponseCancel())
        # flush() reports the item still being played: its tail was cut, so the server's
        # copy must lose what the caller never heard.
        self.record.truncates += 1
        await client.send(rt.ConversationItemTruncate(
            item_id=played.item_id, content_index=played.content_index,
            audio_end_ms=played.audio_end_ms))
        self.log.info("barge-in: truncated agent item at %d ms of %d ms received",
                      played.audio_end_ms, played.received_ms)

    def _on_error(self, event: rt.ErrorEvent) -> str | None:
        err = event.error
        if err.code in _BENIGN_ERRORS:
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


def _interrupt_response(turn_detection: object) -> bool:
    return bool(getattr(turn_detection, "interrupt_response", False))


async def _cancel_all(tasks: set[asyncio.Task[str]]) -> None:
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.debug("call task ended with %r", result)


"""A call OpenAI's SIP endpoint answered, run from the control process over a sideband.

OpenAI carries the audio (RTP between the caller's trunk and OpenAI); the gateway never sees
it. What the gateway does is the agent: :class:`SidebandSession` accepts the call over the
Calls REST API with the agent's session (no audio format: SDP decides), opens the sideband
WebSocket by ``call_id`` and runs the same :class:`~gateway.calls.conversation.CallAgent` as a
bridged call: the greeting, tools (the control process's pool), handoffs, output guardrails,
DTMF rules (from ``input_audio_buffer.dtmf_event_received``), ``end_call`` and
``transfer_call``. It is the agent's :class:`~gateway.calls.conversation.CallControl`:

* ``end_call`` hangs up over REST (after the farewell has played: the server's
  ``output_audio_buffer.stopped`` says when its audio ended, which is what
  :meth:`wait_playout_idle` waits for);
* ``transfer`` is ``POST .../refer``: the REST answer is all the gateway learns (the REFER's
  NOTIFYs stay between OpenAI and the caller), so a 200 counts as done and the gateway then
  leaves the call to OpenAI instead of hanging up;
* cutting the agent off (a guardrail) sends ``response.cancel`` then
  ``output_audio_buffer.clear``; the server knows what was played, so the gateway sends no
  ``conversation.item.truncate`` of its own;
* ``send_dtmf`` cannot work: the gateway has no media on this call (logged).

A sideband that drops is reopened by ``call_id`` (the client's reconnect, the effective
session re-sent); when it cannot be, the call goes to the route's or agent's ``fallback`` URI
by refer, or is hung up: never left running without its agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from gateway.calls.agent import sip_session_config
from gateway.calls.conversation import AgentServices, CallAgent, TransferResult, say_exactly
from gateway.calls.record import AgentActivity
from gateway.calls.session import BENIGN_ERRORS
from gateway.dialplan.router import RouteDecision
from gateway.errors import RealtimeError
from gateway.media.playout import PlayedState
from gateway.realtime import events as rt
from gateway.realtime.calls import CallGone, CallsApiError, CallsClient
from gateway.realtime.client import RealtimeClient, RealtimeClosed, RealtimeConnectOptions

__all__ = ["CallerLeg", "SidebandRecord", "SidebandSession"]

log = logging.getLogger("gateway.calls")

#: Longest wait for the farewell's audio to finish before hanging up anyway.
FAREWELL_WAIT_S: Final = 15.0


@dataclass
class SidebandRecord(AgentActivity):
    """What happened on a call run over a sideband (the ``call record:`` log line)."""

    call_id: str
    route: str
    agent: str | None
    ingress: str = "openai"
    #: ``direct`` (a call to OpenAI's SIP endpoint) or ``relayed`` (a PBX call a SIP worker
    #: relays there; ``sip_leg`` is that worker's call id).
    kind: str = "direct"
    sip_leg: str | None = None
    accepted: bool = False
    end_reason: str = ""
    rejected: int | None = None
    referred_to: str | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    #: For a ``recording:`` route: why there is no file (the audio never reaches us).
    recording: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON-able data."""
        return dataclasses.asdict(self)


class CallerLeg(Protocol):
    """The caller's SIP leg of a relayed call, on the SIP worker that relays it."""

    call_id: str

    async def transfer(self, uri: str, timeout_s: float) -> TransferResult:
        """REFER the caller to ``uri``; the worker ends the call once it took."""


class SidebandSession:
    """Accepts one webhook call and runs its agent on the sideband (module docstring).

    Args:
        call_id: OpenAI's ``call_id``.
        decision: The dialplan's agent route for it.
        calls: The Calls REST client.
        options: How to open the sideband (``call_id`` set, no ``model``).
        services: Tools (the control process's pool) and HTTP tools.
        model: Model when the agent names none.
        max_duration_s: The call is hung up after this long.
        log_content: Whether transcripts and tool arguments may be logged.
        leg: For a relayed call, the caller's leg on its SIP worker: transfers REFER it
            there instead of asking OpenAI to REFER its own leg.
    """

    def __init__(self, call_id: str, decision: RouteDecision, calls: CallsClient,
                 options: RealtimeConnectOptions, services: AgentServices, *, model: str,
                 max_duration_s: float = 3600.0, log_content: bool = False,
                 leg: CallerLeg | None = None) -> None:
        assert decision.agent is not None
        self.call_id = call_id
        self.decision = decision
        self.calls = calls
        self.options = dataclasses.replace(options, reconnect=True)
        self.model = model
        self.max_duration_s = max_duration_s
        self.leg = leg
        self.record = SidebandRecord(call_id, decision.route.name, decision.agent.name)
        if leg is not None:
            self.record.kind, self.record.sip_leg = "relayed", leg.call_id
        if decision.route.recording is not None:
            self.record.recording = {"error": "not recorded: a direct OpenAI SIP call's audio"
                                              " does not pass through the gateway"}
        self.actor = CallAgent(decision, self, services, name=f"openai:{call_id}",
                               log_content=log_content)
        self._client: RealtimeClient | None = None
        self._end = asyncio.Event()
        self._referred = False
        self._hangup = True
        self._playing: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._clear_pending = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> SidebandRecord:
        """Accept, run the agent until the call ends, hang up if the gateway ended it."""
        try:
            await self._run()
        finally:
            self.record.ended_at = time.time()
            self.actor.activity.fill_record(self.record, self.actor.agent.model or self.model)
            await self.actor.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks)
        return self.record

    async def _run(self) -> None:
        agent = self.actor.agent
        config = sip_session_config(agent, self.actor.instructions(), model=self.model,
                                    tools=self.actor.tool_definitions())
        try:
            await self.calls.accept(self.call_id, config.to_wire())
        except CallGone:
            self.record.end_reason = "caller gone before accept"
            return
        except CallsApiError as exc:
            self.record.end_reason = f"accept failed: {exc}"
            log.error("call %s: accept failed: %s", self.call_id, exc)
            # Not left ringing until OpenAI's timeout: the caller hears a refusal now if the
            # API takes one.
            with contextlib.suppress(CallsApiError):
                await self.calls.reject(self.call_id, 503)
            return
        self.record.accepted = True
        try:
            async with RealtimeClient(self.options, name=f"openai:{self.call_id}") as client:
                self._client = client
                try:
                    reason = await self._converse(client)
                finally:
                    self._client = None
        except RealtimeError as exc:
            reason = f"sideband failed: {exc}"
            await self._give_up(reason)
        self.record.end_reason = self.record.end_reason or reason
        if self._end.is_set() and self._hangup and not self._referred:
            await self._finish_speaking()
            with contextlib.suppress(CallsApiError):
                await self.calls.hangup(self.call_id)

    async def _converse(self, client: RealtimeClient) -> str:
        if self.decision.greeting:
            await self.actor.request_response(say_exactly(self.decision.greeting))
        receive = asyncio.create_task(self._receive(client), name=f"openai:{self.call_id}:recv")
        ended = asyncio.create_task(self._end.wait(), name=f"openai:{self.call_id}:end")
        try:
            done, _ = await asyncio.wait({receive, ended}, timeout=self.max_duration_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if receive in done:
            return receive.result()
        if not done:
            self.end_call(f"max duration {self.max_duration_s:g} s")
        # The gateway ends the call: keep reading while the farewell plays (stopped events),
        # but not past the sideband's end (a call ended mid-sentence sends no "stopped").
        speaking = asyncio.create_task(self._finish_speaking(),
                                       name=f"openai:{self.call_id}:farewell")
        try:
            await asyncio.wait({speaking, receive}, timeout=FAREWELL_WAIT_S,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            speaking.cancel()
        receive.cancel()
        await asyncio.gather(receive, return_exceptions=True)
        return self.record.end_reason

    async def _receive(self, client: RealtimeClient) -> str:
        while True:
            try:
                event = await client.recv()
            except RealtimeClosed as exc:
                if exc.close_code == 1000:  # the server ends the sideband with the call
                    return "call ended"
                await self._give_up(f"sideband lost: {exc}")
                return f"sideband lost: {exc}"
            except RealtimeError as exc:
                await self._give_up(f"sideband lost: {exc}")
                return f"sideband lost: {exc}"
            if isinstance(event, (rt.ConnectionLost, rt.Reconnected)):
                log.info("call %s: sideband %s", self.call_id, type(event).__name__)
                continue
            if isinstance(event, rt.OutputAudioBufferStarted):
                self._playing.add(event.response_id)
                self._idle.clear()
            elif isinstance(event, (rt.OutputAudioBufferStopped, rt.OutputAudioBufferCleared)):
                self._playing.discard(event.response_id)
                if not self._playing:
                    self._idle.set()
            elif isinstance(event, rt.InputAudioBufferDtmfEventReceived):
                await self.actor.on_dtmf(event.event)
                continue
            elif isinstance(event, rt.ResponseDone):
                self.record.responses += 1
            elif isinstance(event, rt.ErrorEvent):
                # A cancel that crossed the server's response.done: nothing left to cancel.
                level = (logging.DEBUG if event.error.code in BENIGN_ERRORS
                         else logging.WARNING)
                log.log(level, "call %s: Realtime error %s", self.call_id,
                        event.error.code or "")
            await self.actor.on_event(event)

    async def _give_up(self, why: str) -> None:
        """The sideband is gone for good: send the caller to the fallback, or hang up."""
        fallback = self.decision.route.fallback or self.actor.agent.fallback
        self._hangup = False
        try:
            if fallback and self.leg is not None:
                result = await self.leg.transfer(fallback, 30.0)
                if result.ok:
                    self._referred = True
                    self.record.referred_to = fallback
                    log.warning("call %s: %s; caller transferred to the fallback",
                                self.call_id, why)
                    return
                log.error("call %s: %s, and the transfer to the fallback failed (%s): "
                          "hanging up", self.call_id, why, result.reason)
                await self.calls.hangup(self.call_id)
            elif fallback:
                await self.calls.refer(self.call_id, fallback)
                self._referred = True
                self.record.referred_to = fallback
                log.warning("call %s: %s; referred to the fallback", self.call_id, why)
            else:
                await self.calls.hangup(self.call_id)
                log.warning("call %s: %s; hung up", self.call_id, why)
        except CallsApiError as exc:
            log.error("call %s: %s, and the call could not be ended: %s", self.call_id, why, exc)

    async def _finish_speaking(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), FAREWELL_WAIT_S)

    # CallControl --------------------------------------------------------------------------

    async def send(self, event: rt.ClientEvent) -> None:
        """Send a client event on the sideband (see the module docstring for what changes)."""
        client = self._client
        if client is None or isinstance(event, rt.ConversationItemTruncate):
            return
        try:
            await client.send(event)
            if isinstance(event, rt.ResponseCancel) and self._clear_pending:
                self._clear_pending = False
                await client.send(rt.OutputAudioBufferClear())
        except RealtimeError as exc:
            log.debug("call %s: %s not sent: %s", self.call_id, event.type, exc)

    def flush_playout(self) -> PlayedState | None:
        """Cut the agent's audio: ``output_audio_buffer.clear`` after the cancel, if any."""
        self._clear_pending = True
        self._spawn(self._clear_soon(), "clear")
        return None

    async def _clear_soon(self) -> None:
        await asyncio.sleep(0)  # a response.cancel sent right after the flush goes first
        if self._clear_pending:
            self._clear_pending = False
            await self.send(rt.OutputAudioBufferClear())

    async def wait_playout_idle(self, timeout_s: float) -> bool:
        """Wait for ``output_audio_buffer.stopped`` of every response playing."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def end_call(self, reason: str) -> None:
        """End the call (hang up over REST once the farewell has played)."""
        if not self._end.is_set():
            self.record.end_reason = reason
            self._end.set()

    async def transfer(self, uri: str, timeout_s: float) -> TransferResult:
        """``POST .../refer``; a 2xx is as far as the gateway can follow the transfer.

        A relayed call's caller is REFERred on its SIP worker instead, which follows the
        REFER to its final NOTIFY and then ends both legs.
        """
        if self.leg is not None:
            result = await self.leg.transfer(uri, timeout_s)
            if result.ok:
                self._referred = True
                self.record.referred_to = uri
            return result
        try:
            async with asyncio.timeout(timeout_s):
                await self.calls.refer(self.call_id, uri)
        except TimeoutError:
            return TransferResult(False, 408, "the refer request timed out")
        except CallsApiError as exc:
            return TransferResult(False, exc.status or 500, str(exc))
        self._referred = True
        self.record.referred_to = uri
        return TransferResult(True, 202, "refer accepted")

    def send_dtmf(self, digits: str) -> None:
        """Not possible: OpenAI carries this call's media."""
        log.warning("call %s: send_dtmf (%d digits) not possible on an OpenAI SIP call",
                    self.call_id, len(digits))

    def _spawn(self, coro: Any, what: str) -> None:
        task = asyncio.create_task(coro, name=f"openai:{self.call_id}:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

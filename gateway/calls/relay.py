"""A relayed call on the SIP worker's loop: OpenAI carries the media, the control process the agent.

A ``relay:`` route does not open a Realtime WebSocket here. :class:`RelayedCall` has the user
agent place the relay leg to OpenAI's SIP endpoint with a one-time random token in
``X-Gateway-Relay`` (the control process, told the token first, matches
OpenAI's webhook for that leg back to this call and runs the agent on the sideband), then
follows the call: answered when OpenAI answers, ended when either side hangs up, refused with
503 when OpenAI does not answer within ``openai_calls.relay_answer_timeout_s``, ended after
the agent's ``max_duration_s``. Transfers (the agent's, commanded by the control process, or a
REFER OpenAI sent) REFER the caller's leg and end the call once the transfer took. The record
is an ordinary :class:`~gateway.calls.record.CallRecord` with ``kind: relayed``; its media
counters are those of the caller's Python media channel, which a relayed call never uses
(pjsua's bridge moves its frames), so they stay zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Final, Protocol

from gateway.calls.conversation import TransferResult
from gateway.calls.record import CallRecord, media_counters
from gateway.dialplan.router import RouteDecision
from gateway.ipc.from_worker import RELAY_HEADER
from gateway.sip.events import (
    CallState,
    DtmfReceived,
    IncomingCall,
    LegEnded,
    MediaActive,
    RelayReferred,
    SipEvent,
    TransferProgress,
)

__all__ = ["RelayControl", "RelayedCall", "new_token"]

log = logging.getLogger("gateway.calls")

#: How long a transfer of a relayed call waits for its final NOTIFY.
TRANSFER_TIMEOUT_S: Final = 30.0
#: How long a transfer waits for the caller's leg to be established.
_ANSWER_WAIT_S: Final = 5.0
#: Events of one call waiting for its task (a few per second at most).
_EVENTS: Final = 256


class RelayControl(Protocol):
    """What a relayed call needs from the SIP user agent."""

    def relay(self, leg_id: int, uri: str, headers: tuple[tuple[str, str], ...]) -> None:
        """Place the leg's relay call."""

    def hangup(self, leg_id: int, status: int = 503, reason: str = "") -> None:
        """End the leg (BYE once answered, a final response before)."""

    def transfer(self, leg_id: int, target_uri: str) -> None:
        """Blind transfer by REFER."""


def new_token() -> str:
    """A one-time relay token: 192 random bits, URL-safe (fits a SIP header value)."""
    return secrets.token_urlsafe(24)


class RelayedCall:
    """Follows one relayed call until it ends (module docstring).

    Args:
        offer: The caller's INVITE.
        decision: Its route (an agent route with ``relay``).
        sip: The user agent's commands.
        uri: The SIP URI of OpenAI's endpoint the relay leg dials.
        token: The relay token (the control process already knows it).
        answer_timeout_s: How long OpenAI gets to answer the relay leg.
        max_duration_s: The call is ended after this long.
    """

    def __init__(self, offer: IncomingCall, decision: RouteDecision, sip: RelayControl,
                 uri: str, token: str, *, answer_timeout_s: float,
                 max_duration_s: float) -> None:
        assert decision.agent is not None
        self.offer = offer
        self.leg_id = offer.leg_id
        self.decision = decision
        self.sip = sip
        self.uri = uri
        self.token = token
        self.answer_timeout_s = answer_timeout_s
        self.max_duration_s = max_duration_s
        self.record = CallRecord(offer.leg_id, offer.sip_call_id, decision.route.name,
                                 decision.agent.name, kind="relayed")
        self._events: asyncio.Queue[SipEvent] = asyncio.Queue(_EVENTS)
        self._answered = asyncio.Event()
        self._ended = asyncio.Event()
        self._end_reason = ""
        self._transfer: asyncio.Future[TransferResult] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def on_sip_event(self, event: SipEvent) -> None:
        """A SIP event of this call (loop thread); never blocks."""
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("relayed call %d: event backlog full, %s dropped", self.leg_id,
                        type(event).__name__)

    async def run(self) -> CallRecord:
        """Place the relay leg and follow the call; returns its record."""
        watch = asyncio.create_task(self._watch(), name=f"call:{self.leg_id}:relay-sip")
        try:
            self.sip.relay(self.leg_id, self.uri, ((RELAY_HEADER, self.token),))
            await self._follow()
        finally:
            if not self._ended.is_set():
                self.sip.hangup(self.leg_id, 503, "Relay Ended")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ended.wait(), 5.0)
            watch.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(watch, *self._tasks, return_exceptions=True)
            self._close_record()
        return self.record

    async def _follow(self) -> None:
        try:
            await asyncio.wait_for(self._first(self._answered, self._ended),
                                   self.answer_timeout_s)
        except TimeoutError:
            log.warning("relayed call %d: OpenAI did not answer within %g s: 503", self.leg_id,
                        self.answer_timeout_s)
            self._end_reason = f"OpenAI did not answer within {self.answer_timeout_s:g} s"
            self.sip.hangup(self.leg_id, 503, "OpenAI Did Not Answer")
        if self._ended.is_set() or self._end_reason:
            await self._ended.wait()
            return
        try:
            await asyncio.wait_for(self._ended.wait(), self.max_duration_s)
        except TimeoutError:
            self.end_call(f"max duration {self.max_duration_s:g} s")
            await self._ended.wait()

    @staticmethod
    async def _first(*events: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _watch(self) -> None:
        while True:
            event = await self._events.get()
            if isinstance(event, CallState) and event.state == "CONFIRMED":
                self.record.answered = True
                self._answered.set()
            elif isinstance(event, MediaActive):
                self.record.codec = event.codec
            elif isinstance(event, DtmfReceived):
                self.record.dtmf_digits += 1
            elif isinstance(event, TransferProgress):
                self._transfer_progress(event)
            elif isinstance(event, RelayReferred):
                self._spawn_transfer(event.target)
            elif isinstance(event, LegEnded):
                self.record.sip_status = event.status
                if event.rtp is not None:
                    self.record.rtp = dict(event.rtp)
                if not self._end_reason:
                    self._end_reason = event.cause or (
                        "caller hung up" if self.record.answered else "caller cancelled")
                self._ended.set()

    # Commands ----------------------------------------------------------------------------

    def end_call(self, reason: str) -> None:
        """End the call (BYE to the caller; the relay leg follows)."""
        if not self._ended.is_set():
            self._end_reason = self._end_reason or reason
            self.sip.hangup(self.leg_id, 200 if self.record.answered else 503)

    async def transfer(self, uri: str, timeout_s: float = TRANSFER_TIMEOUT_S) -> TransferResult:
        """REFER the caller to ``uri``; once it took, the call ends (both legs)."""
        if self._transfer is not None:
            return TransferResult(False, 491, "another transfer is in progress")
        if not self._answered.is_set() and not self._ended.is_set():
            # OpenAI may refer the moment its leg is up, before the caller's ACK is in.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), _ANSWER_WAIT_S)
        if not self.record.answered or self._ended.is_set():
            log.warning("relayed call %d: transfer refused: the call is not established",
                        self.leg_id)
            return TransferResult(False, 481, "the call is not established")
        self._transfer = asyncio.get_running_loop().create_future()
        try:
            self.sip.transfer(self.leg_id, uri)
            result = await asyncio.wait_for(self._transfer, timeout_s)
        except TimeoutError:
            result = TransferResult(False, 408, "no final NOTIFY in time")
        finally:
            self._transfer = None
        if result.ok:
            self.end_call("transferred")
        log.info("relayed call %d: transfer %s (%d %s)", self.leg_id,
                 "done" if result.ok else "failed", result.status, result.reason)
        return result

    def _transfer_progress(self, event: TransferProgress) -> None:
        future = self._transfer
        if future is None or future.done() or not event.final:
            return
        future.set_result(TransferResult(200 <= event.status < 300, event.status, event.reason))

    def _spawn_transfer(self, target: str) -> None:
        log.info("relayed call %d: OpenAI's leg sent REFER: transferring the caller",
                 self.leg_id)

        async def go() -> None:
            await self.transfer(target)

        task = asyncio.create_task(go(), name=f"call:{self.leg_id}:relay-transfer")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_record(self) -> None:
        self.record.end_reason = self._end_reason or "ended"
        self.record.media = media_counters(self.offer.media)
        log.info("call record: %s", self.record.as_json(),
                 extra={"call_id": f"leg{self.leg_id}", "sip_call_id": self.offer.sip_call_id})

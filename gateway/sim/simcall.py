"""One simulated Realtime SIP call: OpenAI's side of it, and the caller, played by tests.

A :class:`SimCall` is placed by :class:`~gateway.sim.calldesk.CallDesk` (``sim.incoming_call``)
and rings: a timer times it out after ``ring_timeout_s`` and its ``realtime.call.incoming``
webhooks are delivered in the background (:mod:`gateway.sim.webhooks`). The REST verbs go
through its pure :class:`~gateway.sim.calls.RealtimeCall`. An ``accept`` starts the call's
:class:`~gateway.sim.core.SimSession`, which lives as long as the call whether or not a
sideband WebSocket is connected: caller audio (PCM16 8 kHz, as the SIP endpoint will feed it
from RTP) runs its VAD and scenario turns, keypad presses become
``input_audio_buffer.dtmf_event_received``. The agent's audio goes to the call's
:class:`~gateway.sim.playout.AgentPlayout` and is played in real time (times
``playout_speed``) to :attr:`SimCall.on_agent_audio` (the SIP endpoint's RTP); the sidebands get
``output_audio_buffer.started`` / ``.stopped`` / ``.cleared`` when that audio plays, never
``response.output_audio.delta`` (undocumented on a SIP sideband: the gateway must not rely on
it). A VAD barge-in, or ``output_audio_buffer.clear``, while the caller hears the agent stops
the audio and truncates the item to what was played, server side. Every session event is
broadcast to all the call's sidebands (an ``error`` only to the connection that caused it) and
kept in :attr:`SimCall.sent`. Ending the call cancels its tasks and closes its sidebands.
Faults for tests: scripted REST answers (:mod:`gateway.sim.restfaults`), a sideband dropped
mid-call while the call goes on, and sideband upgrades refused with an HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from gateway.sim.calls import (
    WITH_SESSION,
    CallControlError,
    CallError,
    CallState,
    EndedBy,
    RealtimeCall,
    incoming_event,
    new_id,
)
from gateway.sim.core import SimSession
from gateway.sim.playout import FRAME_BYTES, FRAME_MS, AgentPlayout, rtp_pcm
from gateway.sim.responses import ResponseRun
from gateway.sim.restfaults import RestFaults, fault_error
from gateway.sim.signing import WebhookFault
from gateway.sim.tts import synthesize_async
from gateway.sim.validate import BETA_CLOSE_CODE
from gateway.sim.webhooks import Delivery, WebhookSender

if TYPE_CHECKING:
    from gateway.sim.calldesk import CallDesk
    from gateway.sim.server import SimConnection
    from gateway.sim.turns import TurnTimer

_log = logging.getLogger(__name__)

#: Close code and reason for the sidebands of a call that ended.
CALL_ENDED_CLOSE: Final = (1000, "The call has ended.")
#: Events that close a cancelled response; a barge-in's clear and truncate come after them.
_CANCEL_CLOSING: Final = frozenset(
    {
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    }
)


class Outlet(Protocol):
    """Where a response's events go: a WebSocket connection or a call's sidebands."""

    turns: TurnTimer | None

    def send(self, events: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> None:
        """Send server events (order preserved)."""

    def close(self, code: int, reason: str) -> None:
        """End the session (a scenario ``hangup``)."""


#: Runs one response against an outlet: the simulator's pacing and speech synthesis.
Drive = Callable[[Outlet, ResponseRun], Coroutine[Any, Any, None]]


class CallOutcomeError(AssertionError):
    """A waited-for call outcome can no longer happen (e.g. waiting for accept, got rejected)."""


class SimCall:
    """One simulated Realtime SIP call: OpenAI's side, and the caller's controls for tests.

    Attributes:
        record: The pure state machine (state, accepted session, reject status, ...).
        core: The call's Realtime session, from ``accept`` on (kept after the end).
        playout: The agent audio playing to the caller, from ``accept`` on.
        sidebands: Every sideband connection of this call, in order.
        sent: Every server event of the session, as a sideband sees it, in order (also
            while none is connected).
        deliveries: The webhook deliveries announcing the call.
        on_agent_audio: Called with each 20 ms frame (PCM16 8 kHz) the caller hears, in real
            time; the SIP endpoint sends them as RTP. Must not block or raise.
        on_state_change: Called with the call after every change of :attr:`state` (the SIP
            endpoint answers, rejects, refers or hangs up the SIP leg on it). Must not block
            or raise.
        faults: The REST answers scripted for this call's next requests.
        requests: ``(verb, HTTP status answered)`` of every REST request on this call.
        sideband_refusal: HTTP status the call's sideband upgrades are refused with, or
            ``None`` (they attach); see :meth:`refuse_sidebands`.
    """

    turns: TurnTimer | None = None

    def __init__(self, record: RealtimeCall, desk: CallDesk, scenario: str | None,
                 faults: RestFaults | None = None) -> None:
        self.record = record
        self.core: SimSession | None = None
        self.playout: AgentPlayout | None = None
        self.sidebands: list[SimConnection] = []
        self.sent: list[dict[str, Any]] = []
        self.deliveries: list[Delivery] = []
        self.on_agent_audio: Callable[[bytes], None] | None = None
        self.on_state_change: Callable[[SimCall], None] | None = None
        self.faults = faults or RestFaults()
        self.requests: list[tuple[str, int]] = []
        self.sideband_refusal: int | None = None
        self._desk = desk
        self._scenario = scenario
        self._tasks: set[asyncio.Task[None]] = set()
        self._webhook_tasks: set[asyncio.Task[Any]] = set()
        self._ring: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._barge_pending = False
        self._formats: dict[str, dict[str, Any]] = {}

    # --- what the call is -----------------------------------------------------------------

    @property
    def call_id(self) -> str:
        """``rtc_...``."""
        return self.record.call_id

    @property
    def state(self) -> CallState:
        """Where the call is."""
        return self.record.state

    @property
    def session(self) -> dict[str, Any] | None:
        """The effective session now (after ``accept``), else ``None``."""
        return self.core.session if self.core is not None else None

    @property
    def busy(self) -> bool:
        """Whether any task of the call (webhook delivery, ring timer, session) still runs."""
        ring = self._ring is not None and not self._ring.done()
        return ring or bool(self._tasks) or bool(self._webhook_tasks)

    def to_json(self) -> dict[str, Any]:
        """The call's summary, as ``GET /sim/calls/{call_id}`` shows it."""
        summary = self.record.to_json()
        summary["sidebands"] = len([c for c in self.sidebands if not c.closed])
        summary["deliveries"] = [d.to_json() for d in self.deliveries]
        summary["agent_audio_ms"] = self.playout.played_total_ms if self.playout else 0.0
        summary["rest_requests"] = [{"verb": v, "status": s} for v, s in self.requests]
        summary["rest_faults"] = self.faults.pending()
        summary["sideband_refusal"] = self.sideband_refusal
        return summary

    # --- waiting for outcomes -------------------------------------------------------------

    async def wait_state(self, *states: CallState, timeout: float = 5.0) -> CallState:  # noqa: ASYNC109
        """Wait until the call is in one of ``states``; return it."""
        found: CallState = await self._desk.changes.wait_for(
            lambda: self.state if self.state in states else None,
            timeout,
            f"call {self.call_id} to be {'/'.join(states)}",
        )
        return found

    async def wait_accepted(self, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        """Wait for ``accept``; return the session it configured.

        Raises:
            CallOutcomeError: The call was rejected, timed out or cancelled instead.
        """

        def check() -> dict[str, Any] | None:
            if self.record.session is not None:
                return self.record.session
            self._fail_if(self.record.over, "accepted")
            return None

        found: dict[str, Any] = await self._desk.changes.wait_for(check, timeout, "accept")
        return found

    async def wait_rejected(self, timeout: float = 5.0) -> int:  # noqa: ASYNC109
        """Wait for ``reject``; return the SIP status the caller gets."""

        def check() -> int | None:
            if self.record.reject_status is not None:
                return self.record.reject_status
            self._fail_if(self.state is not CallState.INCOMING, "rejected")
            return None

        found: int = await self._desk.changes.wait_for(check, timeout, "reject")
        return found

    async def wait_referred(self, timeout: float = 5.0) -> str:  # noqa: ASYNC109
        """Wait for ``refer``; return its ``target_uri``."""

        def check() -> str | None:
            if self.record.refer_target is not None:
                return self.record.refer_target
            self._fail_if(self.record.over, "referred")
            return None

        found: str = await self._desk.changes.wait_for(check, timeout, "refer")
        return found

    async def wait_ended(self, timeout: float = 5.0) -> EndedBy:  # noqa: ASYNC109
        """Wait for the end of the call; return who ended it (``api``, ``caller``, ...)."""

        def check() -> EndedBy | None:
            if self.record.ended_by is not None:
                return self.record.ended_by
            self._fail_if(self.record.over, "ended")
            return None

        found: EndedBy = await self._desk.changes.wait_for(check, timeout, "the call to end")
        return found

    async def wait_timed_out(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until the call times out ringing."""

        def check() -> bool | None:
            if self.state is CallState.TIMED_OUT:
                return True
            self._fail_if(self.state is not CallState.INCOMING, "timed_out")
            return None

        await self._desk.changes.wait_for(check, timeout, "the ring timeout")

    async def wait_webhooks(self, timeout: float = 10.0) -> list[Delivery]:  # noqa: ASYNC109
        """Wait until every webhook delivery of the call is finished (delivered or given up)."""
        await self._desk.changes.wait_for(
            lambda: all(d.finished for d in self.deliveries), timeout, "webhook deliveries"
        )
        return list(self.deliveries)

    async def wait_sideband(self, index: int = 0, timeout: float = 5.0) -> SimConnection:  # noqa: ASYNC109
        """The ``index``-th sideband connection of this call, once it connected."""
        found: SimConnection = await self._desk.changes.wait_for(
            lambda: self.sidebands[index] if len(self.sidebands) > index else None,
            timeout,
            f"sideband {index} of call {self.call_id}",
        )
        return found

    async def wait_for_event(
        self,
        type_: str,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
        after: int = 0,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The first session event of ``type_`` in :attr:`sent` at index ``after`` or later."""

        def find() -> dict[str, Any] | None:
            for event in self.sent[after:]:
                if event["type"] == type_ and (predicate is None or predicate(event)):
                    return event
            return None

        found: dict[str, Any] = await self._desk.changes.wait_for(
            find, timeout, f"call event {type_}"
        )
        return found

    def _fail_if(self, impossible: bool, wanted: str) -> None:
        if impossible:
            raise CallOutcomeError(f"call {self.call_id} is {self.state}, it will not be {wanted}")

    # --- the caller -----------------------------------------------------------------------

    def feed_audio(self, pcm16: bytes) -> bool:
        """The caller's audio arrived (PCM16 LE mono 8 kHz, any length), as RTP would bring it.

        Returns:
            Whether it reached a session (audio before ``accept`` or after the end is dropped).
        """
        if self.core is None or not self.record.has_session:
            return False
        self.send(self.core.caller_audio(pcm16))
        self._start_responses()
        return True

    async def play_audio(self, pcm16: bytes, *, pace: float | None = None) -> bool:
        """Feed caller audio in 20 ms frames, ``pace`` times faster than real time.

        Args:
            pcm16: PCM16 LE mono at 8 kHz.
            pace: Real-time factor (1.0 = as a phone would); ``None`` feeds it all at once
                (the VAD counts audio, not wall-clock time).

        Returns:
            Whether all of it reached a session.
        """
        for start in range(0, len(pcm16), FRAME_BYTES):
            if not self.feed_audio(pcm16[start : start + FRAME_BYTES]):
                return False
            if pace is not None:
                await asyncio.sleep(FRAME_MS / 1000 / pace)
        return True

    async def say(
        self,
        text: str,
        *,
        voice: str = "echo",
        trailing_silence_ms: int = 1000,
        pace: float | None = None,
    ) -> bool:
        """The caller speaks ``text`` (synthesised with the simulator's TTS), then is silent.

        Returns:
            Whether the audio reached a session.
        """
        pcm = await synthesize_async(
            text, voice=voice, sample_rate=8000, engine=self._desk.options.tts_engine
        )
        return await self.play_audio(pcm + bytes(16 * trailing_silence_ms), pace=pace)

    def send_dtmf(self, digits: str, *, received_at: float | None = None) -> None:
        """The caller pressed keys (RFC 4733 telephone-events), one event per key.

        Each becomes ``input_audio_buffer.dtmf_event_received`` on the sidebands.

        Raises:
            CallControlError: No session (not accepted, or over), or not DTMF keys.
        """
        if self.core is None or not self.record.has_session:
            raise CallControlError(f"call {self.call_id} has no session ({self.state})")
        if not digits:
            raise CallControlError("no DTMF digits given")
        at = int(time.time() if received_at is None else received_at)
        try:
            events = [e for key in digits for e in self.core.dtmf(key, at)]
        except ValueError as exc:
            raise CallControlError(str(exc)) from None
        self.send(events)

    async def hangup(self, *, abort: bool = False) -> bool:
        """The caller hangs up (BYE), or cancels while it rings (CANCEL).

        Args:
            abort: Cut the sidebands' TCP connections instead of closing them (clients see
                1006, as after a real caller hang-up they sometimes do).

        Returns:
            Whether the call ended (``False`` if it was already over).
        """
        if not self.record.caller_hangup(time.time()):
            return False
        self._shutdown(*CALL_ENDED_CLOSE, abort=abort)
        self._state_changed()
        return True

    async def transfer_result(self, ok: bool = True) -> None:
        """The outcome of the pending REFER.

        Done: the call ends (``ended_by`` ``transfer``). Failed: it is back to ``accepted``
        and the gateway may refer again.

        Raises:
            CallControlError: No transfer is pending.
        """
        self.record.transfer_result(ok, time.time())
        if self.record.over:
            self._shutdown(*CALL_ENDED_CLOSE)
        self._state_changed()

    # --- OpenAI's side --------------------------------------------------------------------

    def rest(self, verb: str, body: bytes) -> None:
        """Handle a REST call-control request.

        Raises:
            CallError: What the API answers instead of 200.
        """
        fault = self.faults.take(verb)
        try:
            if fault is not None:
                raise fault_error(fault, self.call_id)
            self.record.request(verb, body, time.time())
        except CallError as exc:
            self.requests.append((verb, exc.status))
            self._desk.changes.notify()
            raise
        self.requests.append((verb, 200))
        if self.record.state is CallState.ACCEPTED and self.core is None:
            self._start_session()
        elif self.record.over:
            self._shutdown(*CALL_ENDED_CLOSE)
        self._state_changed()
        _log.info("sim call %s: %s -> %s", self.call_id, verb, self.state)

    def _start_session(self) -> None:
        session = self.record.session
        assert session is not None
        self._cancel_ring()
        options = self._desk.options
        self.core = SimSession(
            model=str(session["model"]),
            scenarios=self._desk.scenarios,
            scenario=self._scenario,
            sip=True,
            chunk_ms=options.chunk_ms,
            session=session,
            call_audio=True,
        )
        self.playout = AgentPlayout(self.core.events)
        self._spawn(self._play(), "playout")

    def start_ringing(self, sender: WebhookSender | None, deliveries: int,
                      fault: WebhookFault | None) -> None:
        """Start the ring timer and the webhook deliveries (``deliveries`` distinct ones)."""
        self._ring = asyncio.create_task(self._ring_timer(), name=f"sim:call:{self.call_id}:ring")
        if sender is None:
            return
        now = int(time.time())
        for n in range(deliveries):
            event = incoming_event(self.record, event_id=new_id("evt"), created_at=now)
            delivery = Delivery(new_id("wh"), event, fault)
            self.deliveries.append(delivery)
            task = asyncio.create_task(
                sender.deliver(delivery, self._desk.changes.notify),
                name=f"sim:call:{self.call_id}:webhook:{n}",
            )
            self._webhook_tasks.add(task)
            task.add_done_callback(self._webhook_tasks.discard)
            task.add_done_callback(log_failure)

    async def _ring_timer(self) -> None:
        await asyncio.sleep(max(0.0, self.record.ring_deadline - time.time()))
        if self.record.expire(max(time.time(), self.record.ring_deadline)):
            _log.info("sim call %s timed out ringing", self.call_id)
            self._state_changed()

    def _state_changed(self) -> None:
        self._desk.changes.notify()
        if self.on_state_change is not None:
            try:
                self.on_state_change(self)
            except Exception:  # the observer's bug must not break the call
                _log.exception("sim call %s: state change callback failed", self.call_id)

    def _cancel_ring(self) -> None:
        if self._ring is not None and self._ring is not asyncio.current_task():
            self._ring.cancel()

    # --- sidebands ------------------------------------------------------------------------

    def can_attach(self) -> bool:
        """Whether a sideband may connect now (the call has a running session)."""
        return self.core is not None and self.record.state in WITH_SESSION

    def attach(self, conn: SimConnection) -> list[dict[str, Any]]:
        """Bind a new sideband connection; return its ``session.created``.

        If the call ended while the connection was being upgraded, it is closed instead.
        """
        conn.call = self
        if self.core is None or not self.can_attach():
            conn.close(*CALL_ENDED_CLOSE)
            return []
        self.sidebands.append(conn)
        events = self.core.open()
        self._record(events)
        self._desk.changes.notify()
        return events

    def beta_rejection(self, conn: SimConnection) -> None:
        """Refuse a sideband that sent ``OpenAI-Beta``: the error, then close 4000.

        Only that connection closes; the call goes on.
        """
        assert self.core is not None
        conn.call = self  # not attached: it hears nothing of the session
        events = self.core.beta_rejection()
        request, self.core.close_request = self.core.close_request, None
        conn.send(events)
        conn.close(BETA_CLOSE_CODE, request.reason if request is not None else "")

    async def drop_sideband(self, *, abort: bool = True) -> int:
        """The API loses the call's sideband connections; the call and its session go on.

        Args:
            abort: Cut the TCP connections (clients see 1006, no close frame); ``False``
                closes them with 1011 (internal error). Both are worth a reconnect.

        Returns:
            How many connections were dropped.
        """
        live = [c for c in self.sidebands if not c.closing]
        await asyncio.gather(*(c.drop(1011, "Simulated sideband failure.", abort=abort)
                               for c in live))
        return len(live)

    def refuse_sidebands(self, status: int | None = 503) -> None:
        """Refuse the call's sideband upgrades with HTTP ``status`` from now on.

        Connections already open stay. ``None`` lets sidebands attach again.

        Raises:
            ValueError: ``status`` is not an HTTP error status (400-599).
        """
        if status is not None and not (type(status) is int and 400 <= status <= 599):
            raise ValueError(f"a sideband refusal is an HTTP status 400-599, got {status!r}")
        self.sideband_refusal = status

    def client_events(self, conn: SimConnection, events: list[dict[str, Any]]) -> bool:
        """Route the core's answer to a sideband's client event; False once ``conn`` closes."""
        self.send(events, origin=conn)
        self._start_responses()
        core = self.core
        if core is not None and core.close_request is not None:
            # A beta-shaped update: the API closes that socket (4000), the call goes on.
            request, core.close_request = core.close_request, None
            conn.close(request.code, request.reason)
            return False
        return not conn.closing

    # --- the outlet: every session event passes here --------------------------------------

    def send(
        self,
        events: list[dict[str, Any]] | tuple[dict[str, Any], ...],
        origin: SimConnection | None = None,
    ) -> None:
        """Route session events: audio deltas to the playout, the rest to the sidebands.

        An ``error`` goes only to ``origin`` (the connection whose event caused it); a
        barge-in adds the playout's ``output_audio_buffer.cleared`` and the truncation.
        """
        if self.core is None or self.playout is None or self.record.over:
            return
        batch: list[dict[str, Any]] = []
        for event in events:
            kind = event["type"]
            if self._barge_pending and kind not in _CANCEL_CLOSING:
                batch.extend(self._barge_in())
            if kind == "response.output_audio.delta":
                self._push_audio(event)
                continue
            if kind == "error" and origin is not None:
                self._broadcast(batch)
                batch = []
                self._record([event])
                origin.send([event])
                continue
            batch.append(event)
            if kind == "response.created":
                response = event["response"]
                self._formats[response["id"]] = response["audio"]["output"]["format"]
            elif kind == "input_audio_buffer.speech_started" and self._interrupts():
                self._barge_pending = True
            elif kind == "response.done":
                response_id = event["response"]["id"]
                self._formats.pop(response_id, None)
                batch.extend(self.playout.response_done(response_id))
            elif kind == "output_audio_buffer.cleared":
                # The client's output_audio_buffer.clear (the core sent the event): stop the
                # audio and, as on a barge-in, keep only what the caller heard.
                _, cut = self.playout.clear()
                if cut is not None:
                    batch.extend(self.core.truncate_played(cut.item_id, cut.played_ms))
        if self._barge_pending:
            batch.extend(self._barge_in())
        self._broadcast(batch)

    def close(self, code: int, reason: str) -> None:
        """A scenario ``hangup`` without an ``end_call`` tool: the session ends the call.

        It ends once the farewell has played.
        """
        self._spawn(self._end_after_playout(code, reason), "server-hangup")

    async def _end_after_playout(self, code: int, reason: str) -> None:
        await self._desk.changes.wait_for(
            lambda: self.playout is None or not self.playout.busy, 3600.0, "the playout"
        )
        if self.record.session_closed(time.time()):
            self._shutdown(code, reason)
            self._state_changed()

    def _interrupts(self) -> bool:
        assert self.core is not None
        td = (self.core.session.get("audio") or {}).get("input", {}).get("turn_detection")
        return isinstance(td, dict) and bool(td.get("interrupt_response", True))

    def _barge_in(self) -> list[dict[str, Any]]:
        assert self.core is not None and self.playout is not None
        self._barge_pending = False
        events, cut = self.playout.clear()
        if events and cut is not None:
            events.extend(self.core.truncate_played(cut.item_id, cut.played_ms))
        return events

    def _push_audio(self, event: dict[str, Any]) -> None:
        assert self.playout is not None
        fmt = self._formats.get(event["response_id"]) or {"type": "audio/pcmu"}
        self.playout.push(event["response_id"], event["item_id"], rtp_pcm(fmt, event["delta"]))
        self._wake.set()

    def _record(self, events: Sequence[dict[str, Any]]) -> None:
        self.sent.extend(events)

    def _broadcast(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        self._record(events)
        for conn in self.sidebands:
            if not conn.closed:
                conn.send(events)
        self._desk.changes.notify()

    async def _play(self) -> None:
        assert self.playout is not None
        playout = self.playout
        loop = asyncio.get_running_loop()
        frame_s = FRAME_MS / 1000 / self._desk.options.playout_speed
        deadline = loop.time()
        while True:
            frame, events = playout.take()
            if frame is None:
                self._wake.clear()
                await self._wake.wait()
                deadline = loop.time()
                continue
            self._broadcast(events)
            if self.on_agent_audio is not None:
                try:
                    self.on_agent_audio(frame.pcm16)
                except Exception:  # a broken sink must not stop the call's clock
                    _log.exception("sim call %s: agent audio sink failed", self.call_id)
            deadline += frame_s
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            self._broadcast(playout.frame_played())

    def _start_responses(self) -> None:
        if self.core is None:
            return
        for run in self.core.take_started_responses():
            self._spawn(self._desk.drive(self, run), f"response:{run.id}")

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.create_task(coro, name=f"sim:call:{self.call_id}:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(log_failure)

    def _shutdown(self, code: int, reason: str, *, abort: bool = False) -> None:
        """The call is over: stop its session's tasks and close its sidebands."""
        self._cancel_ring()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        for conn in self.sidebands:
            if not conn.closed:
                conn.end(code, reason, abort=abort)
        self._desk.changes.notify()

    async def stop(self) -> None:
        """Cancel every task of the call, webhooks included, and wait for them."""
        self._shutdown(1001, "The simulator is shutting down.")
        tasks = [*self._tasks, *self._webhook_tasks]
        if self._ring is not None:
            tasks.append(self._ring)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def log_failure(task: asyncio.Task[Any]) -> None:
    """Log the exception of a finished simulator task (done callback)."""
    if not task.cancelled() and task.exception() is not None:
        _log.error("simulator task %s failed", task.get_name(), exc_info=task.exception())

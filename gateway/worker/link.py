"""A SIP worker's link to its control process: reports calls and load, obeys commands.

The worker connects to the control process's Unix socket (:mod:`gateway.ipc`), says
``hello`` with its capacity and SIP address, then reports each call's lifecycle
(``call_offered``, ``call_started``, ``call_ended`` with the record) as the call manager sees
it, and its load every :data:`LOAD_INTERVAL_S` and on every change. From the control process it
takes ``drain`` (refuse new calls with 503, let live ones finish, then exit), ``shutdown``
(end every call now and exit), ``reload`` (a newer finished dialplan,
:class:`~gateway.worker.plan.PushedPlan`), ``tool_result`` (answers to the worker's tool
requests, :class:`~gateway.worker.tools.RemoteTools`) and the commands on one call:
``hangup``, ``transfer`` (REFER, then BYE once it took) and ``say`` (the agent says a line
word for word next), each answered by one ``command_result``. Commands run in tasks of their
own (a transfer waits up to 30 s for its NOTIFY), at most :data:`MAX_COMMANDS` at once; more
are answered at once with an error.

Overflow: lifecycle messages wait for room (the channel applies backpressure, and the manager's
callbacks hand them to a named sender task through a bounded queue that never drops them: when
it is full the worker logs and the record still goes to its own log); ``load`` is droppable.
The control process going away ends the worker: with no one to report to it drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, assert_never

from gateway.calls.manager import CallManager
from gateway.calls.record import CallRecord
from gateway.dialplan.router import RouteDecision, first_values
from gateway.errors import CallRejected, GatewayError
from gateway.ipc import messages as m
from gateway.ipc.channel import ChannelClosed, WorkerChannel
from gateway.sip.events import IncomingCall
from gateway.sip.levels import LevelSample
from gateway.sip.message import uri_user
from gateway.sip.ua import SipUserAgent
from gateway.worker.plan import PushedPlan
from gateway.worker.tools import RemoteTools

log = logging.getLogger("gateway.worker")

#: Seconds between load reports when nothing changes.
LOAD_INTERVAL_S: Final = 1.0
#: Lifecycle messages waiting for the channel (one call makes three).
_QUEUE_SIZE: Final = 4096
#: Largest ``call_event`` data sent (the protocol's bound is 16 KiB).
_MAX_EVENT_BYTES: Final = 8 * 1024
#: Headers of the caller's INVITE passed on with ``relay_offered`` (the protocol's bound).
_MAX_RELAY_HEADERS: Final = 64
#: Commands (hangup, transfer, say) running at once.
MAX_COMMANDS: Final = 256
#: How long a transfer commanded by the control process waits for its final NOTIFY.
TRANSFER_TIMEOUT_S: Final = 30.0


class WorkerLink:
    """Implements :class:`~gateway.calls.manager.CallObserver` over the IPC channel.

    Args:
        worker_id: This worker's id (given by the control process on the command line).
        channel: The connected channel.
        on_drain: Called once when the control process says ``drain`` (with its deadline) or
            the channel ends.
        on_shutdown: Called when the control process says ``shutdown``.
        plans: The worker's dialplan, switched by ``reload``.
    """

    def __init__(self, worker_id: str, channel: WorkerChannel, *,
                 on_drain: Callable[[float], None], on_shutdown: Callable[[], None],
                 plans: PushedPlan | None = None) -> None:
        self.worker_id = worker_id
        self.channel = channel
        self.plans = plans
        #: This worker's tools and guardrails, run by the control process's pool.
        self.tools = RemoteTools(self._tool_call_id, channel)
        self._commands: set[asyncio.Task[None]] = set()
        self._on_drain = on_drain
        self._on_shutdown = on_shutdown
        self._queue: asyncio.Queue[m.WorkerMessage] = asyncio.Queue(_QUEUE_SIZE)
        self._tasks: list[asyncio.Task[None]] = []
        self._ua: SipUserAgent | None = None
        self._manager: CallManager | None = None
        self._last_load: tuple[int, int, bool] | None = None
        self.draining = False

    def call_id(self, leg_id: int) -> str:
        """The id the control process knows a call by."""
        return f"{self.worker_id}:{leg_id}"

    async def start(self, ua: SipUserAgent, manager: CallManager) -> None:
        """Say hello and start reporting; call once the SIP endpoint listens."""
        self._ua, self._manager = ua, manager
        first = ua.transports[0]
        binding = ua.binding
        desc = (f"pjproject {binding.version} ({binding.kind}), {ua.media_port} media port"
                if binding is not None else "unknown")
        await self.channel.send(m.Hello(self.worker_id, os.getpid(), m.PROTOCOL_VERSION,
                                        desc[:256], ua.max_calls, first.host, first.port))
        manager.observer = self
        name = f"worker:{self.worker_id}"
        self._tasks = [asyncio.create_task(self._send_loop(), name=f"{name}:ipc-send"),
                       asyncio.create_task(self._load_loop(), name=f"{name}:load"),
                       asyncio.create_task(self._command_loop(), name=f"{name}:commands")]

    async def close(self) -> None:
        """Send what is queued (bounded), then stop the tasks and close the channel."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._queue.join(), 2.0)
        tasks = [*self._tasks, *self._commands]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self.tools.close("the worker is stopping")
        await self.channel.close()

    def _tool_call_id(self, leg_id: int | None) -> str:
        return self.worker_id if leg_id is None else self.call_id(leg_id)

    # CallObserver (loop thread) ------------------------------------------------------------

    def call_offered(self, offer: IncomingCall) -> None:
        """Report an INVITE."""
        self._put(m.CallOffered(self.call_id(offer.leg_id), offer.sip_call_id[:256] or "-",
                                offer.from_user[:128], offer.to_user[:128],
                                uri_user(offer.request_uri)[:128], offer.source_ip,
                                time.time()))
        self._send_load()

    def relay_offered(self, offer: IncomingCall, decision: RouteDecision, token: str) -> None:
        """Tell the control process a relay leg with ``token`` is about to dial OpenAI."""
        headers: dict[str, str] = {}
        for name, value in first_values(offer.headers).items():
            if len(headers) >= _MAX_RELAY_HEADERS:
                break
            if 0 < len(name) <= 128:
                headers[name] = value[:1024]
        self._put(m.RelayOffered(
            self.call_id(offer.leg_id), token, decision.route.name[:128],
            offer.from_user[:128], offer.to_user[:128], offer.request_uri[:1024],
            offer.source_ip, (offer.account or "trunk")[:128],
            offer.from_name[:128] if offer.from_name else None, headers))

    def call_started(self, leg_id: int, route: str, agent: str, codec: str) -> None:
        """Report an answered agent call."""
        self._put(m.CallStarted(self.call_id(leg_id), route[:128] or "-", agent[:128] or "-",
                                "PCMA" if codec == "PCMA" else "PCMU"))

    def call_ended(self, record: CallRecord) -> None:
        """Report a finished call with its record."""
        reason = (record.end_reason or "ended")[:512]
        self._put(m.CallEnded(self.call_id(record.leg_id), reason, record.as_dict()))
        self._send_load()

    def call_event(self, leg_id: int, kind: str, data: Mapping[str, Any]) -> None:
        """Report something that happened on a live call (droppable telemetry)."""
        if kind not in m.CALL_EVENT_KINDS:
            log.debug("call event %s not in the protocol: not reported", kind)
            return
        try:
            body = json.loads(json.dumps(dict(data), default=str))
        except (TypeError, ValueError):
            body = {}
        if len(json.dumps(body)) > _MAX_EVENT_BYTES:
            body = {"truncated": True}
        with contextlib.suppress(ChannelClosed, GatewayError):
            self.channel.send_nowait(m.CallEvent(self.call_id(leg_id),
                                                 typing.cast(m.CallEventKind, kind),
                                                 time.time(), body))

    # Internals ---------------------------------------------------------------------------

    def _put(self, msg: m.WorkerMessage) -> None:
        try:
            self._queue.put_nowait(msg)
        except asyncio.QueueFull:
            log.error("control link backlog full: %s not reported (the worker log has it)",
                      msg.type)

    async def _send_loop(self) -> None:
        while True:
            msg = await self._queue.get()
            try:
                await self.channel.send(msg)
            except ChannelClosed:
                pass  # the command loop sees the channel end and drains
            finally:
                self._queue.task_done()

    async def _load_loop(self) -> None:
        while True:
            self._send_load()
            await asyncio.sleep(LOAD_INTERVAL_S)

    def _send_load(self) -> None:
        ua = self._ua
        if ua is None:
            return
        load = (ua.active_calls, ua.max_calls, self.draining)
        self._last_load = load
        with contextlib.suppress(ChannelClosed):
            self.channel.send_nowait(m.Load(*load))

    async def _command_loop(self) -> None:
        try:
            async for msg in self.channel:
                await self._command(msg)
        except ChannelClosed:
            pass
        self.tools.close(self.channel.reason or "closed")
        if not self.draining:
            log.error("control process link lost (%s): draining",
                      self.channel.reason or "closed")
            self._drain(0.0)

    async def _command(self, msg: m.ControlMessage) -> None:
        if isinstance(msg, m.ToolResult):
            self.tools.resolve(msg)
        elif isinstance(msg, m.Reload):
            if self.plans is None:
                log.warning("reload ignored: this worker has no pushed dialplan")
            else:
                self.plans.switch(msg)
        elif isinstance(msg, m.Drain):
            self._drain(msg.deadline_s)
        elif isinstance(msg, m.Shutdown):
            log.info("control process: shutdown")
            self._on_shutdown()
        elif isinstance(msg, (m.Hangup, m.Transfer, m.Say)):
            self._start_command(msg)
        elif isinstance(msg, m.Originate):
            await self._originate(msg)
        elif isinstance(msg, m.WatchLevels):
            self._watch_levels(msg)
        elif isinstance(msg, m.Welcome):
            log.info("control process accepted worker %s (protocol %d)", self.worker_id,
                     msg.protocol)
        else:
            assert_never(msg)

    def _start_command(self, msg: m.Hangup | m.Transfer | m.Say) -> None:
        if len(self._commands) >= MAX_COMMANDS:
            work = self._answer(msg.request_id, f"busy: {MAX_COMMANDS} commands running")
        else:
            work = self._run_command(msg)
        task = asyncio.create_task(work, name=f"worker:{self.worker_id}:{msg.type}:"
                                              f"{msg.request_id}")
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    async def _run_command(self, msg: m.Hangup | m.Transfer | m.Say) -> None:
        leg_id = self._leg_id(msg.call_id)
        manager = self._manager
        error: str | None = "no such live call on this worker"
        if leg_id is not None and manager is not None:
            try:
                error = await self._on_call(manager, leg_id, msg)
            except Exception as exc:  # the call's state changed under the command
                log.warning("%s on call %s failed: %s", msg.type, msg.call_id,
                            type(exc).__name__)
                error = f"{msg.type} failed: {type(exc).__name__}"
        await self._answer(msg.request_id, error)

    @staticmethod
    async def _on_call(manager: CallManager, leg_id: int,
                       msg: m.Hangup | m.Transfer | m.Say) -> str | None:
        """Run one command on a call; the error, or ``None`` when it worked."""
        error: str | None = "no such live call on this worker"
        if isinstance(msg, m.Hangup):
            if manager.end_call(leg_id, msg.reason or "ended by the operator"):
                error = None
        elif isinstance(msg, m.Transfer):
            result = await manager.transfer_call(leg_id, msg.target, TRANSFER_TIMEOUT_S)
            if result is not None:
                error = None if result.ok else \
                    f"transfer failed: {result.status} {result.reason}"[:512]
        elif await manager.say(leg_id, msg.text):
            error = None
        return error

    async def _originate(self, msg: m.Originate) -> None:
        """Place an outbound call now; the answer carries its call id (or why not)."""
        ua, manager = self._ua, self._manager
        error: str | None = None
        call_id: str | None = None
        if ua is None or manager is None:
            error = "the worker is not ready"
        elif self.draining:
            error = "the worker is draining"
        elif ua.active_calls >= ua.max_calls:
            error = f"at capacity ({ua.max_calls} calls)"
        else:
            try:
                leg_id = manager.originate(msg.to, msg.agent, msg.context,
                                           max_duration_s=msg.max_duration_s,
                                           ring_timeout_s=msg.ring_timeout_s)
                call_id = self.call_id(leg_id)
            except CallRejected as exc:
                error = exc.reason
        with contextlib.suppress(ChannelClosed):
            await self.channel.send(m.CommandResult(msg.request_id, error is None,
                                                    error[:512] if error else None, call_id))

    async def _answer(self, request_id: int, error: str | None) -> None:
        with contextlib.suppress(ChannelClosed):
            await self.channel.send(m.CommandResult(request_id, error is None, error))

    def _drain(self, deadline_s: float) -> None:
        if self.draining:
            return
        self.draining = True
        if self._ua is not None:
            self._ua.drain()
        self._send_load()
        self._on_drain(deadline_s)

    def _watch_levels(self, msg: m.WatchLevels) -> None:
        if self._ua is None:
            return
        legs = tuple(leg for leg in map(self._leg_id, msg.call_ids) if leg is not None)
        with contextlib.suppress(GatewayError):  # the SIP thread is not keeping up: next time
            self._ua.watch_levels(msg.all_calls, legs, self._levels)

    def _levels(self, samples: list[LevelSample]) -> None:
        """One tick of watched calls' levels (loop thread), each a droppable call event."""
        for sample in samples:
            self.call_event(sample.leg_id, "levels",
                            {"caller": sample.caller, "agent": sample.agent})

    def _leg_id(self, call_id: str) -> int | None:
        prefix = f"{self.worker_id}:"
        if not call_id.startswith(prefix):
            return None
        try:
            return int(call_id[len(prefix):])
        except ValueError:
            return None

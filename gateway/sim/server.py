"""aiohttp adapter of the Realtime API simulator: sockets, pacing and speech synthesis.

:class:`SimulatorServer` listens on ``/v1/realtime`` like the real API: it checks the
``Authorization: Bearer`` (or ``api-key``) header and the ``?model=`` / ``?call_id=`` query,
upgrades to a WebSocket, and hands every client message to a pure
:class:`~gateway.sim.core.SimSession`. Everything the core returns goes through one bounded
outbox per connection, written by one writer task, so events reach the client in exactly the
order the core produced them. Each response runs in its own task that performs the run's
instructions: synthesise speech (:func:`gateway.sim.tts.synthesize_async`), send audio
``speed`` times faster than real time, pause for ``wait`` steps, close on ``hangup``. Tests
inspect :attr:`SimulatorServer.sessions` (every client and server event, in order), drop
connections with :meth:`SimulatorServer.close_all` and refuse upgrades with
:meth:`SimulatorServer.fail_next_connects`. With ``SimOptions.turn_log`` set, every VAD turn's
timing (:mod:`gateway.sim.turns`) is appended to that file as a JSON line, and an event-loop
lag probe runs, for benchmarks that subtract the simulator's own time. The Realtime Calls
side (OpenAI's SIP endpoint: webhooks, ``/v1/realtime/calls/...``, sidebands bound to a
call, ``/sim/calls`` test control) is :mod:`gateway.sim.calldesk`, mounted here; its
webhooks go out through :mod:`gateway.sim.webhooks`; with ``SimOptions.sip_port`` its SIP
endpoint process is started and stopped here too (:mod:`gateway.sim.siplink`). These three
are the simulator's only modules importing aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Final, TextIO

from aiohttp import WSMsgType, web

from gateway.sim.calldesk import CallDesk
from gateway.sim.core import SimSession
from gateway.sim.options import SimOptions
from gateway.sim.responses import Close, Emit, Pace, Pause, ResponseRun, Synthesize
from gateway.sim.scenario import ScenarioBook
from gateway.sim.signing import WebhookFault
from gateway.sim.simcall import Outlet, SimCall
from gateway.sim.siplink import SipLink, SipTransport
from gateway.sim.tts import MAX_TEXT_CHARS, synthesize, synthesize_async
from gateway.sim.turns import TurnRecord, TurnTimer, answer_lead_ms, max_lag_ms

__all__ = ["SERVICE_KEEP_CLOSED", "SimCall", "SimConnection", "SimOptions", "SimulatorServer",
           "serve"]

_log = logging.getLogger(__name__)

#: Path of the Realtime WebSocket endpoint.
REALTIME_PATH: Final = "/v1/realtime"
#: Most server events waiting for one client. Overflow policy: the client is not reading, so
#: the outbox is dropped and the connection closed with 1008, as a real server would drop it.
OUTBOX_LIMIT: Final = 20_000
#: Largest client message accepted (the API allows 15 MiB of audio per append, base64 grown).
MAX_MESSAGE_BYTES: Final = 24 * 1024 * 1024
#: How long a close handshake may take before the socket is just dropped.
CLOSE_TIMEOUT_S: Final = 2.0
_OUTBOX_OVERFLOW: Final = Close(1008, "Client is not reading server events.")
#: The options of a simulator built without any.
DEFAULT_OPTIONS: Final = SimOptions()
#: Closed sessions a long-running simulator keeps for inspection (``gateway sim`` and the
#: gateway's embedded simulator): enough to look at the last calls, bounded so memory is flat.
SERVICE_KEEP_CLOSED: Final = 16
#: Interval of the event-loop lag probe (on only with ``SimOptions.turn_log``).
LAG_PROBE_S: Final = 0.01
#: Lag probe wake-ups kept (10 s at 10 ms): enough to look around a turn's stop when its
#: answer's first audio, after synthesis, is written seconds later. Oldest dropped.
LAG_SAMPLES: Final = 1000


class _Changes:
    """Lets waiters block until a predicate over server state holds.

    Every change calls :meth:`notify`, which wakes all current waiters; they re-check their
    predicate and wait again on a fresh event if it is still false.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float,  # noqa: ASYNC109
        what: str,
    ) -> Any:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    event = self._event
                    result = predicate()
                    if result:
                        return result
                    await event.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}") from None


class SimConnection:
    """One client connection (a Realtime session) as the tests see it.

    Attributes:
        index: Connection number, from 0 in connection order (its position in
            :attr:`SimulatorServer.sessions` unless closed sessions are forgotten).
        core: The pure session state machine.
        query: Query parameters of the upgrade request.
        headers: Request headers, with ``Authorization`` and ``api-key`` removed.
        sent: Every server event sent, in order.
        sent_at: Wall-clock time (``time.time()``) each event of ``sent`` was written to the
            socket, for lining events up with packet captures.
        closed: Whether the WebSocket is closed.
        close_code: The close code, once closed: the one the simulator sent when it closed,
            else the client's.
        call: The Realtime call this sideband is bound to, or ``None`` (a ``?model=``
            session, or a detached ``?call_id=`` one).
    """

    def __init__(
        self,
        index: int,
        core: SimSession,
        query: dict[str, str],
        headers: dict[str, str],
        changes: _Changes,
    ) -> None:
        self.index = index
        self.core = core
        self.query = query
        self.headers = headers
        self.sent: list[dict[str, Any]] = []
        self.sent_at: list[float] = []
        self.closed = False
        self.close_code: int | None = None
        self._changes = changes
        self._outbox: asyncio.Queue[dict[str, Any] | Close] = asyncio.Queue(OUTBOX_LIMIT)
        self._closing = False
        self._close_started = False
        self._transport: asyncio.Transport | None = None
        self._responses: set[asyncio.Task[None]] = set()
        #: Turn timing, with ``SimOptions.turn_log`` only; ended turns go to ``_turn_sink``.
        self.turns: TurnTimer | None = None
        self._turn_sink: Callable[[TurnRecord], None] | None = None
        self.call: SimCall | None = None

    @property
    def closing(self) -> bool:
        """Whether a close has been queued (or has happened)."""
        return self._closing or self.closed

    def end(self, code: int, reason: str, *, abort: bool = False) -> None:
        """Close after what is queued, or with ``abort`` cut the TCP connection now."""
        if abort and self._transport is not None:
            self._transport.abort()
        self.close(code, reason)

    def _turns_ended(self, records: list[TurnRecord]) -> None:
        if self._turn_sink is not None:
            for record in records:
                self._turn_sink(record)

    @property
    def received(self) -> list[dict[str, Any]]:
        """Every client event received (parsed JSON), in order."""
        return self.core.received

    @property
    def session(self) -> dict[str, Any]:
        """The effective session object."""
        return self.core.session

    def sent_types(self) -> list[str]:
        """Types of the server events sent so far, in order."""
        return [e["type"] for e in self.sent]

    # Test helpers take a plain timeout, like the SimulatorServer contract's wait_for_session.
    async def wait_for_event(
        self,
        type_: str,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
        after: int = 0,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The first server event of ``type_`` sent at index ``after`` or later.

        Raises:
            TimeoutError: None was sent within ``timeout`` seconds.
        """

        def find() -> dict[str, Any] | None:
            for event in self.sent[after:]:
                if event["type"] == type_ and (predicate is None or predicate(event)):
                    return event
            return None

        found: dict[str, Any] = await self._changes.wait_for(find, timeout, f"server event {type_}")
        return found

    async def wait_for_received(
        self,
        type_: str,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
        after: int = 0,
    ) -> dict[str, Any]:
        """The first client event of ``type_`` received at index ``after`` or later.

        Raises:
            TimeoutError: None arrived within ``timeout`` seconds.
        """

        def find() -> dict[str, Any] | None:
            return next((e for e in self.received[after:] if e.get("type") == type_), None)

        found: dict[str, Any] = await self._changes.wait_for(find, timeout, f"client event {type_}")
        return found

    async def wait_closed(self, timeout: float = 5.0) -> int | None:  # noqa: ASYNC109
        """Wait until the connection is closed; return its close code."""
        await self._changes.wait_for(lambda: self.closed, timeout, "the session to close")
        return self.close_code

    # --- sending --------------------------------------------------------------------------

    def send(self, events: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> None:
        """Queue server events for the writer task (order preserved)."""
        for event in events:
            self._put(event)

    def close(self, code: int, reason: str) -> None:
        """Close after everything queued so far has been sent."""
        self._put(Close(code, reason))

    def _put(self, item: dict[str, Any] | Close) -> None:
        if self._closing:
            return
        if isinstance(item, Close):
            self._closing = True
        try:
            self._outbox.put_nowait(item)
        except asyncio.QueueFull:
            _log.warning("sim session %d: client not reading, dropping it", self.index)
            while not self._outbox.empty():
                self._outbox.get_nowait()
            self._closing = True
            self._outbox.put_nowait(_OUTBOX_OVERFLOW)

    async def _write(self, ws: web.WebSocketResponse) -> None:
        while True:
            item = await self._outbox.get()
            if isinstance(item, Close):
                self.close_code = item.code
                self._close_started = True
                self._changes.notify()
                await ws.close(code=item.code, message=item.reason.encode()[:123])
                return
            try:
                await ws.send_str(json.dumps(item))
            except ConnectionError:
                return
            at = time.time()
            self.sent.append(item)
            self.sent_at.append(at)
            if self.turns is not None:
                record = self.turns.sent(item, at)
                if record is not None:
                    self._turns_ended([record])
            self._changes.notify()

    async def drop(self, code: int, reason: str, *, abort: bool = False) -> None:
        """Start closing now, dropping queued events; return once the close frame is out.

        With ``abort`` the TCP connection is cut instead (the client sees 1006).
        """
        if self.closed:
            return
        if abort and self._transport is not None:
            self._transport.abort()
        self._closing = True
        while not self._outbox.empty():
            self._outbox.get_nowait()
        self._outbox.put_nowait(Close(code, reason))
        await self._changes.wait_for(
            lambda: self._close_started or self.closed, CLOSE_TIMEOUT_S, "the close to start"
        )


class SimulatorServer:
    """A local Realtime API on ``ws://HOST:PORT/v1/realtime``; use as an async context manager.

    Args:
        host: Interface to bind (tests use 127.0.0.1).
        port: Port to bind; 0 picks a free one.
        scenarios: What the simulated model says; the built-in default when ``None``.
        options: Speed, chunking, TTS engine, latency, default model, Realtime Calls.

    Attributes:
        sessions: Every accepted connection, live and closed, in connection order (only the
            newest ``options.keep_closed`` closed ones when that is set); sidebands of
            Realtime Calls included.
        connect_attempts: Upgrade requests seen, including refused ones.

    Realtime Calls (OpenAI's SIP side) are placed with :meth:`incoming_call` (or
    ``POST /sim/calls``) and listed in :attr:`calls`; see :mod:`gateway.sim.calldesk`.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        scenarios: ScenarioBook | None = None,
        options: SimOptions = DEFAULT_OPTIONS,
    ) -> None:
        self.host = host
        self.port = port
        self.scenarios = scenarios or ScenarioBook.default()
        self.options = options
        self.sessions: list[SimConnection] = []
        self._opened = 0
        self.connect_attempts = 0
        self._fail_next = 0
        self._fail_status = 503
        self._changes = _Changes()
        self._runner: web.AppRunner | None = None
        self._turn_file: TextIO | None = None
        self._lag: deque[tuple[float, float]] = deque(maxlen=LAG_SAMPLES)
        self._lag_probe: asyncio.Task[None] | None = None
        self._desk = CallDesk(options, self.scenarios, self._changes, self._drive)
        self._sip: SipLink | None = None

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT/v1/realtime``."""
        return f"ws://{self.host}:{self.port}{REALTIME_PATH}"

    @property
    def http_url(self) -> str:
        """``http://HOST:PORT/v1``: the ``base_url`` for ``AsyncOpenAI``."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def control_url(self) -> str:
        """``http://HOST:PORT/sim/calls``: the test-control API of Realtime Calls."""
        return f"http://{self.host}:{self.port}/sim/calls"

    @property
    def sip_transports(self) -> list[SipTransport]:
        """Where the SIP endpoint listens (empty without ``SimOptions.sip_port``)."""
        return self._sip.transports if self._sip is not None else []

    def sip_target(self, transport: str = "udp") -> str:
        """``host:port`` of the SIP endpoint's ``transport`` (as SIPp takes it).

        Raises:
            ValueError: The endpoint does not listen on ``transport`` (or does not run).
        """
        for t in self.sip_transports:
            if t.type == transport:
                return t.target
        raise ValueError(f"the simulator's SIP endpoint has no {transport} transport")

    @property
    def calls(self) -> list[SimCall]:
        """Every Realtime call placed, in order (the newest ``keep_closed`` over ones)."""
        return self._desk.calls

    def get_call(self, call_id: str) -> SimCall | None:
        """The call with that ``rtc_...`` id, or ``None``."""
        return self._desk.get(call_id)

    async def incoming_call(
        self,
        sip_headers: Sequence[tuple[str, str]] | Sequence[Mapping[str, str]] | None = None,
        *,
        media_security: str | None = "rtp",
        call_id: str | None = None,
        duplicates: int = 0,
        webhook_fault: WebhookFault | None = None,
        deliver: bool = True,
        scenario: str | None = None,
        rest_faults: Mapping[str, Sequence[int]] | None = None,
    ) -> SimCall:
        """A SIP INVITE reaches "OpenAI": place a ringing Realtime call and announce it.

        The ``realtime.call.incoming`` webhook is POSTed to ``options.webhook_url`` (if
        set) in the background, retried per the options; the call times out after
        ``options.ring_timeout_s`` unless accepted or rejected.

        Args:
            sip_headers: The INVITE's headers as ``(name, value)`` pairs or
                ``{"name", "value"}`` mappings; plausible From/To/Call-ID when ``None``.
            media_security: ``sip_media_security`` of the webhook (``rtp``, ``srtp``, any
                other string, or ``None`` to omit it).
            call_id: The ``rtc_...`` id; a fresh one when ``None``.
            duplicates: Extra deliveries of the call, each a separate event with its own
                ``evt_`` and ``webhook-id`` (all sent at once), to test deduplication on
                ``call_id``.
            webhook_fault: Spoil every delivery: ``bad_signature``, ``stale_timestamp`` or
                ``future_timestamp``.
            deliver: ``False`` sends no webhook even if a URL is configured.
            scenario: Scenario name for the call's session when no ``match`` selects one.
            rest_faults: HTTP statuses for the call's next REST requests, per verb
                (``{"accept": [503, 503]}``; :mod:`gateway.sim.restfaults`).

        Returns:
            The call, ringing.

        Raises:
            ValueError: A bad argument.
        """
        return await self._desk.incoming_call(
            sip_headers,
            media_security=media_security,
            call_id=call_id,
            duplicates=duplicates,
            webhook_fault=webhook_fault,
            deliver=deliver,
            scenario=scenario,
            rest_faults=rest_faults,
        )

    async def wait_for_call(self, index: int = 0, timeout: float = 5) -> SimCall:  # noqa: ASYNC109
        """The ``index``-th call placed (e.g. over ``POST /sim/calls``), waiting for it."""
        found: SimCall = await self._changes.wait_for(
            lambda: self._desk.calls[index] if len(self._desk.calls) > index else None,
            timeout,
            f"call {index}",
        )
        return found

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind and start serving."""
        app = web.Application()
        app.router.add_get(REALTIME_PATH, self._handle)
        self._desk.add_routes(app)
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        if self.options.sip_port is not None:
            sip = SipLink(self._desk, self.options)
            try:
                await sip.start()
            except BaseException:
                await self.stop()
                raise
            self._sip = sip
        if self.options.turn_log is not None:
            self._turn_file = _open_turn_log(self.options.turn_log)
            self._lag_probe = asyncio.create_task(self._probe_lag(), name="sim:lag-probe")
        _log.info("realtime simulator listening on %s", self.ws_url)

    async def stop(self) -> None:
        """End every call, close every live session (1001) and stop listening."""
        if self._sip is not None:
            sip, self._sip = self._sip, None
            await sip.stop()  # BYE to every SIP caller while the calls still exist
        await self._desk.close()
        await self.close_all(1001, "The simulator is shutting down.")
        with contextlib.suppress(TimeoutError):
            await self._changes.wait_for(
                lambda: all(s.closed for s in self.sessions),
                CLOSE_TIMEOUT_S * 2,
                "sessions to close",
            )
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._lag_probe is not None:
            probe, self._lag_probe = self._lag_probe, None
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
        if self._turn_file is not None:
            turn_file, self._turn_file = self._turn_file, None
            turn_file.close()

    async def wait_for_session(self, index: int = 0, timeout: float = 5) -> SimConnection:  # noqa: ASYNC109
        """The ``index``-th accepted session, waiting up to ``timeout`` s for it to connect."""
        found: SimConnection = await self._changes.wait_for(
            lambda: next((s for s in self.sessions if s.index == index), None),
            timeout,
            f"session {index}",
        )
        return found

    async def close_all(
        self, code: int = 1011, reason: str = "Simulated server failure.", *, abort: bool = False
    ) -> None:
        """Drop every live connection with ``code`` (or abort the TCP connections).

        Returns once every close frame is sent; use :meth:`SimConnection.wait_closed` to
        wait for the clients' replies.
        """
        live = [s for s in self.sessions if not s.closed]
        await asyncio.gather(*(s.drop(code, reason, abort=abort) for s in live))

    def fail_next_connects(self, n: int, status: int = 503) -> None:
        """Answer the next ``n`` upgrade requests with HTTP ``status`` and a JSON error."""
        self._fail_next = n
        self._fail_status = status

    # --- the endpoint ---------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.connect_attempts += 1
        if self._fail_next > 0:
            self._fail_next -= 1
            return _http_error(
                self._fail_status,
                "server_error",
                None,
                "The simulator was told to refuse this connection.",
            )
        refusal = self._check_request(request)
        if refusal is not None:
            return refusal
        ws = web.WebSocketResponse(
            timeout=CLOSE_TIMEOUT_S, max_msg_size=MAX_MESSAGE_BYTES, compress=False, autoping=True
        )
        if not ws.can_prepare(request).ok:
            return _http_error(
                426, "invalid_request_error", None, "This endpoint only accepts WebSocket upgrades."
            )
        query = dict(request.query)
        call_id = query.get("call_id")
        call = self._desk.get(call_id) if call_id else None
        if call is not None:
            if call.sideband_refusal is not None:
                return _http_error(call.sideband_refusal, "server_error", None,
                                   "The simulator was told to refuse this call's sidebands.")
            if not call.can_attach() or call.core is None:
                # Like the real API for a call with no running session: 404, empty body.
                return web.Response(status=404)
            core = call.core
        elif call_id and not self.options.detached_sidebands:
            return web.Response(status=404)
        else:
            core = SimSession(
                model=query.get("model") or self.options.default_model,
                scenarios=self.scenarios,
                scenario=query.get("scenario"),
                sip=call_id is not None,
                chunk_ms=self.options.chunk_ms,
            )
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("authorization", "api-key")
        }
        await ws.prepare(request)
        # Numbered once accepted, with no await before the append: indexes stay unique and, while
        # nothing is forgotten, equal to positions in ``sessions``.
        conn = SimConnection(self._opened, core, query, headers, self._changes)
        self._opened += 1
        conn._transport = request.transport
        if self._turn_file is not None:
            conn.turns = TurnTimer(str(core.session["id"]), conn.index,
                                   self.options.response_latency_ms)
            conn._turn_sink = self._write_turn
        self.sessions.append(conn)
        self._changes.notify()
        _log.info("sim session %d opened (scenario %s)", conn.index, core.scenario.name)
        writer = asyncio.create_task(conn._write(ws), name=f"sim:{conn.index}:writer")
        try:
            beta = "openai-beta" in (k.lower() for k in request.headers)
            if call is not None and beta:
                call.beta_rejection(conn)
            elif call is not None:
                conn.send(call.attach(conn))
                await self._serve(conn, ws)
            elif beta:
                conn.send(core.beta_rejection())
            else:
                conn.send(core.open())
                await self._serve(conn, ws)
            self._after_core(conn)
            if conn._closing:
                # We are closing: let the writer send what is queued, then the close frame.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(writer), CLOSE_TIMEOUT_S * 2)
        finally:
            await self._finish(conn, ws, writer)
        return ws

    def _check_request(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not bearer and not request.headers.get("api-key", "").strip():
            return _http_error(
                401,
                "invalid_request_error",
                "invalid_api_key",
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        has_model = bool(request.query.get("model"))
        has_call = bool(request.query.get("call_id"))
        if has_model == has_call:
            return _http_error(
                400,
                "invalid_request_error",
                "invalid_request",
                "Provide exactly one of the query parameters 'model' (new session) and "
                "'call_id' (attach to a call).",
            )
        name = request.query.get("scenario")
        if name is not None and self.scenarios.get(name) is None:
            return _http_error(
                400,
                "invalid_request_error",
                "unknown_scenario",
                f"Unknown scenario '{name}'. Known: {', '.join(self.scenarios.names())}.",
            )
        return None

    async def _serve(self, conn: SimConnection, ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                read_at = time.time()
                events = conn.core.receive_text(msg.data)
                if conn.call is not None:
                    if not conn.call.client_events(conn, events):
                        break
                    self._changes.notify()
                    continue
                conn.send(events)
                if conn.turns is not None:
                    conn._turns_ended(
                        conn.turns.received(read_at, events, _audio_input(conn.session))
                    )
            elif msg.type == WSMsgType.BINARY:
                conn.send(
                    [
                        conn.core.events.error(
                            "invalid_request", "Binary frames are not supported; send JSON text."
                        )
                    ]
                )
            else:
                break
            self._changes.notify()
            if not self._after_core(conn):
                break

    def _after_core(self, conn: SimConnection) -> bool:
        """Start new responses and honour a close request; False once closing."""
        if conn.call is not None:
            return not conn.closing  # the call owns its session's responses
        for run in conn.core.take_started_responses():
            task = asyncio.create_task(
                self._drive(conn, run), name=f"sim:{conn.index}:response:{run.id}"
            )
            conn._responses.add(task)
            task.add_done_callback(conn._responses.discard)
            task.add_done_callback(_log_failure)
        request = conn.core.close_request
        if request is not None:
            conn.close(request.code, request.reason)
            return False
        return not conn._closing

    async def _finish(
        self, conn: SimConnection, ws: web.WebSocketResponse, writer: asyncio.Task[None]
    ) -> None:
        tasks = [*conn._responses, writer]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not ws.closed:
            await ws.close(code=1000)
        conn.closed = True
        if conn.close_code is None:  # closed by the client (or the connection broke)
            conn.close_code = ws.close_code
        self._forget_closed()
        self._changes.notify()
        _log.info("sim session %d closed (code %s)", conn.index, ws.close_code)

    def _forget_closed(self) -> None:
        keep = self.options.keep_closed
        if keep is None:
            return
        closed = [s for s in self.sessions if s.closed]
        if len(closed) > keep:
            gone = {id(s) for s in closed[: len(closed) - keep]}
            self.sessions[:] = [s for s in self.sessions if id(s) not in gone]

    async def _drive(self, conn: Outlet, run: ResponseRun) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.options.response_latency_ms / 1000)
        deadline = loop.time()
        audio: bytes | None = None
        first_audio = True
        while True:
            instruction = run.advance(audio)
            audio = None
            if instruction is None:
                return
            if isinstance(instruction, Emit):
                conn.send(instruction.events)
            elif isinstance(instruction, Synthesize):
                audio = await self._speak(instruction)
                deadline = loop.time()
                if first_audio and conn.turns is not None:
                    conn.turns.lead(run.id, answer_lead_ms(audio, run.spec.output_format))
                first_audio = False
            elif isinstance(instruction, Pace):
                deadline += instruction.audio_ms / 1000 / self.options.speed
                delay = deadline - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif isinstance(instruction, Pause):
                await asyncio.sleep(instruction.ms / 1000)
                deadline = loop.time()
            elif isinstance(instruction, Close):
                conn.close(instruction.code, instruction.reason)
                return

    async def _speak(self, what: Synthesize) -> bytes:
        try:
            return await synthesize_async(
                what.text,
                voice=what.voice,
                sample_rate=24000,
                engine=self.options.tts_engine,
                speed=what.speed,
            )
        except (ValueError, RuntimeError) as exc:
            _log.warning("speech synthesis failed, using tones: %s", exc)
            return synthesize(what.text[:MAX_TEXT_CHARS], voice=what.voice, engine="tone")


    def _write_turn(self, record: TurnRecord) -> None:
        if self._turn_file is None:
            return
        record = replace(record, sim_lag_ms=max_lag_ms(self._lag, record.received_at))
        self._turn_file.write(json.dumps(record.to_json()) + "\n")

    async def _probe_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_PROBE_S
            await asyncio.sleep(LAG_PROBE_S)
            self._lag.append((time.time(), max(0.0, loop.time() - due)))


def _open_turn_log(path: str) -> TextIO:
    # Line-buffered: each turn is on disk as soon as it ends, even if the process is killed;
    # a few hundred bytes per turn, written from the loop.
    return open(path, "a", buffering=1, encoding="utf-8")


def _audio_input(session: dict[str, Any]) -> dict[str, Any]:
    value = (session.get("audio") or {}).get("input")
    return value if isinstance(value, dict) else {}


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        _log.error("simulator task %s failed", task.get_name(), exc_info=task.exception())


def _http_error(status: int, type_: str, code: str | None, message: str) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return web.json_response(body, status=status)


async def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    scenarios: ScenarioBook | None = None,
    options: SimOptions = DEFAULT_OPTIONS,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run a simulator until cancelled.

    Args:
        host: Interface to bind.
        port: Port to bind (0 = any free port).
        scenarios: Scenario book; the built-in default when ``None``.
        options: Simulator options.
        ready: Called with the WebSocket URL (``ws://HOST:PORT/v1/realtime``) once listening.
    """
    async with SimulatorServer(host, port, scenarios, options) as sim:
        if ready is not None:
            ready(sim.ws_url)
        await asyncio.Event().wait()

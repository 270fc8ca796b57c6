"""WebSocket client of the Realtime API: connection, queues, keepalive and reconnects.

This is the only module that imports ``websockets``. A :class:`RealtimeClient` opens one
WebSocket (retrying refused connections, timeouts and transient HTTP statuses per its
:class:`~gateway.realtime.retry.RetryPolicy`), then runs two owned, named tasks: ``rt-send``
drains a bounded outbox to the socket and ``rt-recv`` decodes every message into a bounded
inbox; when either ends, the other is cancelled. Control events apply backpressure, caller
audio never waits (see :meth:`RealtimeClient.send_audio`). With ``reconnect`` on, a retryable
close yields a :class:`~gateway.realtime.events.ConnectionLost` pseudo-event, opens a new
connection, sends the effective session configuration and then the caller's ``prelude`` events
(e.g. replayed conversation items) before anything else, and yields a
:class:`~gateway.realtime.events.Reconnected` pseudo-event. :meth:`RealtimeClient.rotate` does
the same on purpose while the old connection still works (a session nearing the API's duration
limit): the new connection is configured first, then takes over. The client speaks the wire
only: the call session above it owns the conversation. Nothing here logs or raises with
an API key, a header value, a URL query or call content.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Generic, Literal, Self, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    WebSocketException,
)
from websockets.protocol import State

from gateway import __version__
from gateway.errors import RealtimeError
from gateway.realtime.events import (
    ClientEvent,
    ConnectionLost,
    InputAudioBufferAppend,
    Reconnected,
    SessionConfig,
    SessionUpdate,
    StreamEvent,
)
from gateway.realtime.protocol import ProtocolError, append_message, decode, encode
from gateway.realtime.retry import RetryPolicy, is_retryable_close, is_retryable_status
from gateway.realtime.wsframe import TextFrames

__all__ = [
    "DEFAULT_URL",
    "RealtimeClient",
    "RealtimeClientStats",
    "RealtimeClosed",
    "RealtimeConnectError",
    "RealtimeConnectOptions",
]

log = logging.getLogger(__name__)

#: The GA Realtime WebSocket endpoint.
DEFAULT_URL: Final = "wss://api.openai.com/v1/realtime"

_T = TypeVar("_T")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one client TLS context of this process, for every ``wss://`` connection.

    ``ssl.create_default_context()`` loads the system CA store: about 40 ms of CPU and over a
    megabyte each time, which websockets would otherwise spend on every call's connect, on the
    event loop that carries every call's audio. Made on the first ``wss://`` connect.
    """
    return ssl.create_default_context()


class RealtimeConnectError(RealtimeError):
    """Opening the WebSocket failed (after any retries).

    Attributes:
        http_status: Status of the refused handshake, ``None`` for network failures.
    """

    def __init__(self, message: str, *, http_status: int | None, retryable: bool) -> None:
        self.http_status = http_status
        super().__init__(message, code=None, retryable=retryable)


class RealtimeClosed(RealtimeError):
    """The WebSocket closed abnormally (and was not, or could not be, reconnected).

    ``code`` (of :class:`~gateway.errors.RealtimeError`) is the close code as text, e.g.
    ``"1011"``; ``retryable`` follows :func:`~gateway.realtime.retry.is_retryable_close`.

    Attributes:
        close_code: WebSocket close code (1006 when the connection dropped without one).
        close_reason: Close reason sent by the server (may be empty).
    """

    def __init__(self, close_code: int, close_reason: str, *, retryable: bool) -> None:
        self.close_code = close_code
        self.close_reason = close_reason
        reason = f": {close_reason}" if close_reason else ""
        super().__init__(
            f"Realtime connection closed with code {close_code}{reason}",
            code=str(close_code),
            retryable=retryable,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RealtimeConnectOptions:
    """How to reach the Realtime API; validated on construction, secrets kept out of repr.

    Attributes:
        url: WebSocket endpoint; ``?model=`` or ``?call_id=`` is appended to its query.
        model: Model of a new session (exactly one of ``model`` and ``call_id``).
        call_id: Existing SIP/WebRTC call to attach to (a "sideband" connection).
        api_key: Sent as ``Authorization: Bearer``; ``None`` sends no Authorization header.
        headers: Further request headers, e.g. Azure's ``api-key``. ``OpenAI-Beta`` is refused:
            the beta interface is retired.
        open_timeout_s: Limit on TCP + TLS + HTTP upgrade of one attempt.
        close_timeout_s: Limit on the closing handshake.
        ping_interval_s: Keepalive ping period (``None`` disables keepalive).
        ping_timeout_s: Close with 1011 when a pong takes longer (``None``: wait forever).
        max_message_bytes: Largest accepted server message (``None``: unlimited).
        send_queue_size: Outbox capacity in events.
        recv_queue_size: Inbox capacity in events.
        retry: Backoff for connection attempts and reconnects.
        reconnect: Reconnect after a retryable close.
        proxy: HTTP/SOCKS proxy URL; ``None`` connects directly (the environment is not read).
        compression: Negotiate permessage-deflate (costs CPU on every audio message).

    Raises:
        ValueError: Both or neither of ``model``/``call_id``, a bad URL or size, or an
            ``OpenAI-Beta`` header.
    """

    url: str = DEFAULT_URL
    model: str | None = None
    call_id: str | None = None
    api_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    open_timeout_s: float = 10.0
    close_timeout_s: float = 5.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    max_message_bytes: int | None = 8 * 1024 * 1024
    send_queue_size: int = 128
    recv_queue_size: int = 512
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    reconnect: bool = False
    proxy: str | None = None
    compression: bool = False

    def __post_init__(self) -> None:
        if (self.model is None) == (self.call_id is None):
            raise ValueError("set exactly one of model and call_id")
        if not (self.model or self.call_id):
            raise ValueError("model or call_id must not be empty")
        parts = urlsplit(self.url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError("url must be a ws:// or wss:// URL")
        if any(name.lower() == "openai-beta" for name in self.headers):
            raise ValueError("the OpenAI-Beta header selects the retired beta interface")
        if self.open_timeout_s <= 0 or self.close_timeout_s <= 0:
            raise ValueError("timeouts must be > 0")
        if self.send_queue_size < 1 or self.recv_queue_size < 1:
            raise ValueError("queue sizes must be >= 1")
        if self.max_message_bytes is not None and self.max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be >= 1024")

    def __repr__(self) -> str:
        key = "None" if self.api_key is None else "<redacted>"
        headers = ", ".join(sorted(self.headers))
        return (
            f"RealtimeConnectOptions(url={self.log_url!r}, model={self.model!r}, "
            f"call_id={self.call_id!r}, api_key={key}, headers=<values redacted: {headers}>, "
            f"reconnect={self.reconnect}, retry={self.retry!r})"
        )

    @property
    def log_url(self) -> str:
        """The URL without query or credentials, fit for logs."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def connect_url(self) -> str:
        """The URL to open: ``url`` plus ``model=`` or ``call_id=`` in the query."""
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("model", "call_id")]
        if self.model is not None:
            query.append(("model", self.model))
        else:
            assert self.call_id is not None
            query.append(("call_id", self.call_id))
        return urlunsplit(parts._replace(query=urlencode(query)))

    def connect_headers(self) -> list[tuple[str, str]]:
        """Request headers: Bearer auth when ``api_key`` is set, then ``headers``."""
        pairs: list[tuple[str, str]] = []
        if self.api_key is not None:
            pairs.append(("Authorization", f"Bearer {self.api_key}"))
        pairs.extend(self.headers.items())
        return pairs


@dataclass(slots=True)
class RealtimeClientStats:
    """Counters of one client, for metrics and tests.

    Attributes:
        messages_sent: WebSocket messages written (including re-sent session updates).
        messages_received: WebSocket messages read (including undecodable ones).
        audio_chunks_sent: ``input_audio_buffer.append`` messages written.
        audio_chunks_dropped: Audio chunks refused by :meth:`RealtimeClient.send_audio`.
        protocol_errors: Received messages skipped because they could not be decoded.
        reconnects: Successful reconnects.
        rotations: Successful rotations to a new connection (:meth:`RealtimeClient.rotate`).
    """

    messages_sent: int = 0
    messages_received: int = 0
    audio_chunks_sent: int = 0
    audio_chunks_dropped: int = 0
    protocol_errors: int = 0
    reconnects: int = 0
    rotations: int = 0


class _Channel(Generic[_T]):
    """A bounded FIFO that can be ended: the end wakes every waiter on both sides.

    After :meth:`end`, :meth:`get` still returns what is queued, then ``None``; :meth:`put`
    and :meth:`try_put` refuse new items.
    """

    def __init__(self, maxsize: int) -> None:
        self._items: deque[_T] = deque()
        self._maxsize = maxsize
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.ended = False

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self._maxsize

    def try_put(self, item: _T) -> bool:
        if self.ended or len(self._items) >= self._maxsize:
            return False
        self._items.append(item)
        self._readable.set()
        return True

    async def put(self, item: _T) -> bool:
        while not self.try_put(item):
            if self.ended:
                return False
            self._writable.clear()
            await self._writable.wait()
        return True

    async def get(self) -> _T | None:
        while not self._items:
            if self.ended:
                return None
            self._readable.clear()
            await self._readable.wait()
        self._writable.set()
        return self._items.popleft()

    def end(self, *, discard: bool = False) -> None:
        self.ended = True
        if discard:
            self._items.clear()
        self._readable.set()
        self._writable.set()


_State = Literal["new", "connecting", "open", "closed"]


class RealtimeClient:
    """One Realtime API WebSocket with bounded queues, keepalive and optional reconnects.

    Use as ``async with RealtimeClient(options, name=f"call:{call_id}") as client:``; leaving
    the block closes the connection (code 1000) and stops both tasks. Events arrive through
    ``async for event in client`` or :meth:`recv`: a clean close ends the iteration, an
    abnormal one raises :class:`RealtimeClosed` (or :class:`RealtimeConnectError` when
    reconnecting failed) after the events already received.

    Args:
        options: Where and how to connect.
        name: Prefix of task names and log lines, e.g. ``call:1f3a``.
        rand: Source of uniform ``[0, 1)`` numbers for retry jitter.
        prelude: Called each time a new connection is configured (reconnect or rotation);
            its events are sent right after the session configuration and before anything
            queued, e.g. the conversation items the new server session needs.
    """

    def __init__(
        self,
        options: RealtimeConnectOptions,
        *,
        name: str,
        rand: Callable[[], float] = random.random,
        prelude: Callable[[], Sequence[ClientEvent]] | None = None,
    ) -> None:
        self.options = options
        self.name = name
        self.prelude = prelude
        self.stats = RealtimeClientStats()
        self._rand = rand
        self._state: _State = "new"
        # Outbox policy: control events wait for room (backpressure), audio is refused when
        # full (send_audio). Inbox policy: the receive task waits for room, so a slow reader
        # stops socket reads and TCP pushes back on the server.
        self._outbox: _Channel[tuple[ClientEvent, str]] = _Channel(options.send_queue_size)
        self._inbox: _Channel[StreamEvent] = _Channel(options.recv_queue_size)
        self._ws: ClientConnection | None = None  # the live connection, for close()
        self._send_ws: ClientConnection | None = None  # published to rt-send once configured
        self._send_busy = False  # rt-send holds a message it has taken from the outbox
        self._frames = TextFrames()  # caller audio's direct writes (_write_now)
        self._generation = 0
        self._published = asyncio.Condition()
        # Held while a connection is being replaced (reconnect or rotation), so the two never
        # replace the same connection twice.
        self._switching = asyncio.Lock()
        self._session: SessionConfig | None = None
        self._tasks: tuple[asyncio.Task[None], ...] = ()
        self._terminal: RealtimeError | None = None
        self._closing = False
        self._rotated_from: ClientConnection | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError("a RealtimeClient can be entered only once")
        self._state = "connecting"
        try:
            ws, _ = await self._connect_with_retry()
        except BaseException:
            self._finish()
            raise
        self._ws = self._send_ws = ws
        self._state = "open"
        self._tasks = (
            asyncio.create_task(self._send_loop(), name=f"{self.name}:rt-send"),
            asyncio.create_task(self._recv_loop(), name=f"{self.name}:rt-recv"),
        )
        for task in self._tasks:
            task.add_done_callback(self._on_task_done)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close with code 1000 and stop both tasks; idempotent.

        A reader blocked in :meth:`recv` or ``async for`` first gets the events already
        queued, then the end of the stream.
        """
        if self._closing:
            return
        self._closing = True
        closed = self._ws
        try:
            if closed is not None:
                await closed.close(1000)
        finally:
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._finish()
        # A reconnect may have opened a new connection while the old one was closing.
        if self._ws is not None and self._ws is not closed:
            await self._ws.close(1000)
        log.info("%s: Realtime connection closed", self.name)

    @property
    def effective_session(self) -> SessionConfig | None:
        """Every session configuration sent so far, merged; re-sent after a reconnect."""
        return self._session

    @property
    def is_open(self) -> bool:
        """Whether the client is running (possibly reconnecting)."""
        return self._state == "open"

    async def rotate(self) -> int:
        """Move to a new connection (a new server session) without losing queued events.

        Opens the new WebSocket (retrying per policy) while the current one keeps working,
        sends it the effective session and the ``prelude`` events, then hands it to the send
        task and closes the old connection with 1000. Events the old connection delivered
        before its close are still yielded, then a ``Reconnected(rotated=True)``, then the new
        connection's events. Caller audio sent during the hand-over goes to the new one.

        Returns:
            Connection attempts it took.

        Raises:
            RealtimeConnectError: No new connection could be opened; the current one stays.
            RealtimeError: The client has ended.
        """
        self._check_started()
        if self._state != "open" or self._closing:
            raise self._end_error()
        async with self._switching:
            new, attempt = await self._connect_with_retry()
            old = self._ws
            try:
                if not self.is_open or self._closing:
                    raise self._end_error()
                await self._publish(new)
            except BaseException:
                await new.close(1000)
                raise
            self._rotated_from = old
            self._ws = new
        self.stats.rotations += 1
        if old is not None:
            await old.close(1000)
        log.info("%s: Realtime session rotated to a new connection", self.name)
        return attempt

    # ------------------------------------------------------------------ sending

    async def send(self, event: ClientEvent) -> None:
        """Queue a client event; waits while the outbox is full (backpressure).

        Raises:
            RuntimeError: The client was not entered.
            RealtimeError: The connection has ended (the error that ended it).
            TypeError: The event holds a value JSON cannot represent.
        """
        self._check_started()
        text = encode(event)
        if not await self._outbox.put((event, text)):
            raise self._end_error()

    def send_audio(self, pcm: bytes) -> bool:
        """Queue caller audio (in the session's input format) without ever waiting.

        Overflow policy: when the outbox is full the new chunk is dropped, counted in
        ``stats.audio_chunks_dropped`` and ``False`` is returned. Queued audio is older and
        keeps its order relative to control events, and a full outbox means the socket is
        stalled or reconnecting, so waiting would only add latency the caller hears. Chunks
        offered after the client has ended are dropped the same way.

        Args:
            pcm: Audio bytes, e.g. 40 ms of μ-law (320 bytes) or PCM16 at 24 kHz.

        Returns:
            Whether the chunk was queued.
        """
        self._check_started()
        if self._outbox.ended or self._outbox.full():
            self.stats.audio_chunks_dropped += 1
            return False
        if not self._outbox and not self._send_busy:
            message = append_message(pcm)
            if self._write_now(message):
                self.stats.messages_sent += 1
                self.stats.audio_chunks_sent += 1
                return True
            return self._outbox.try_put((InputAudioBufferAppend(pcm), message.decode()))
        event = InputAudioBufferAppend(pcm)
        return self._outbox.try_put((event, encode(event)))

    def _write_now(self, message: bytes) -> bool:
        """Write one text message to the published connection now, if that needs no waiting.

        The hot path of caller audio: ``ClientConnection.send`` would cost a wake-up of the
        rt-send task and an async context per message, which measured a quarter of the
        event loop's time at 60 calls (docs/benchmarks.md). This does what ``send`` does when
        it would not wait: frame the message and write it to the transport. Only when the
        connection is open, is not under flow control (its transport's buffer above the
        high-water mark) and sends no fragmented message; otherwise the caller queues the
        message and rt-send takes the slow path, which knows how to wait, and how to fail.
        Callers also check that nothing is queued or being sent, so the order of messages is
        kept. With no extension negotiated and nothing of the protocol's own waiting to be
        written (a pong, say), the frame is built here (:mod:`gateway.realtime.wsframe`);
        otherwise by the connection's sans-I/O protocol, as ``send`` would.
        """
        ws = self._send_ws
        if ws is None:
            return False
        protocol = ws.protocol
        if (protocol.state is not State.OPEN or ws.paused or ws.fragmented_send_waiter is not None
                or protocol.expect_continuation_frame or ws.transport.is_closing()):
            return False
        try:
            if protocol.extensions or protocol.writes:
                protocol.send_text(message)
                ws.send_data()
            else:
                ws.transport.write(self._frames.frame(message))
        except OSError as exc:
            # What ClientConnection.send does on a write error: drop the connection; rt-recv
            # then sees it closed and reconnects or ends the client.
            log.warning("%s: Realtime write failed: %s", self.name, exc.strerror or exc)
            ws.transport.abort()
        return True

    # ------------------------------------------------------------------ receiving

    async def recv(self) -> StreamEvent:
        """The next event.

        Raises:
            RealtimeError: The stream has ended: :class:`RealtimeClosed` with code 1000 after
                a clean close, otherwise the error that ended it.
        """
        self._check_started()
        event = await self._inbox.get()
        if event is None:
            raise self._end_error()
        return event

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> StreamEvent:
        self._check_started()
        event = await self._inbox.get()
        if event is not None:
            return event
        if self._terminal is None:
            raise StopAsyncIteration
        raise self._terminal

    # ------------------------------------------------------------------ internals

    def _check_started(self) -> None:
        if self._state in ("new", "connecting"):
            raise RuntimeError("enter the RealtimeClient (async with) before using it")

    def _end_error(self) -> RealtimeError:
        if self._terminal is not None:
            return self._terminal
        return RealtimeClosed(1000, "", retryable=False)

    def _finish(self) -> None:
        self._state = "closed"
        self._inbox.end()
        self._outbox.end(discard=True)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s: task %s failed", self.name, task.get_name(), exc_info=exc)
            if self._terminal is None:
                self._terminal = RealtimeError(
                    f"Realtime client task {task.get_name()} failed", retryable=True
                )
        for other in self._tasks:
            if not other.done():
                other.cancel()
        if all(t.done() for t in self._tasks):
            self._finish()

    async def _open(self) -> ClientConnection:
        o = self.options
        try:
            url = o.connect_url()
            return await connect(
                url,
                ssl=tls_context() if url.startswith("wss://") else None,
                additional_headers=o.connect_headers(),
                user_agent_header=f"gateway/{__version__}",
                compression="deflate" if o.compression else None,
                proxy=o.proxy,
                open_timeout=o.open_timeout_s,
                close_timeout=o.close_timeout_s,
                ping_interval=o.ping_interval_s,
                ping_timeout=o.ping_timeout_s,
                max_size=o.max_message_bytes,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise RealtimeConnectError(
                f"Realtime handshake refused with HTTP {status}",
                http_status=status,
                retryable=is_retryable_status(status),
            ) from exc
        except TimeoutError as exc:
            raise RealtimeConnectError(
                f"Realtime connect timed out after {o.open_timeout_s:g}s",
                http_status=None,
                retryable=True,
            ) from exc
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise RealtimeConnectError(
                f"Realtime connect failed: {reason}", http_status=None, retryable=True
            ) from exc
        except InvalidHandshake as exc:  # e.g. the server hung up during the upgrade
            raise RealtimeConnectError(
                f"Realtime handshake failed: {type(exc).__name__}",
                http_status=None,
                retryable=True,
            ) from exc
        except WebSocketException as exc:  # InvalidURI, InvalidProxy: configuration
            raise RealtimeConnectError(
                f"Realtime connect impossible: {type(exc).__name__}",
                http_status=None,
                retryable=False,
            ) from exc

    async def _connect_with_retry(self) -> tuple[ClientConnection, int]:
        """Open a connection, retrying per policy; returns it and the attempts it took."""
        attempt = 0
        while True:
            attempt += 1
            try:
                ws = await self._open()
            except RealtimeConnectError as exc:
                wait = self.options.retry.delay(attempt, self._rand()) if exc.retryable else None
                if wait is None:
                    log.warning("%s: %s (attempt %d, giving up)", self.name, exc, attempt)
                    raise
                log.warning("%s: %s (attempt %d, retrying in %.2fs)", self.name, exc, attempt, wait)
                await asyncio.sleep(wait)
                continue
            log.info(
                "%s: Realtime connected to %s (attempt %d)",
                self.name,
                self.options.log_url,
                attempt,
            )
            return ws, attempt

    async def _send_loop(self) -> None:
        pending: tuple[ClientEvent, str] | None = None
        while True:
            if pending is None:
                self._send_busy = False
                pending = await self._outbox.get()
                if pending is None:
                    return
                self._send_busy = True  # send_audio must not write past this message
            # Read the connection and its generation together, with no await in between.
            ws, generation = self._send_ws, self._generation
            assert ws is not None
            event, text = pending
            try:
                await ws.send(text)
            except ConnectionClosed:
                # rt-recv owns the connection: wait until it publishes a new one, with the
                # session already re-sent. If it gives up instead, it cancels this task.
                async with self._published:
                    while self._generation == generation:
                        await self._published.wait()
                continue
            self.stats.messages_sent += 1
            if isinstance(event, InputAudioBufferAppend):
                self.stats.audio_chunks_sent += 1
            elif isinstance(event, SessionUpdate):
                prior = self._session
                self._session = event.session if prior is None else prior.merged(event.session)
            pending = None

    async def _recv_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        while True:
            try:
                async for message in ws:
                    self.stats.messages_received += 1
                    try:
                        event = decode(message)
                    except ProtocolError as exc:
                        self.stats.protocol_errors += 1
                        log.warning("%s: skipped a server message: %s", self.name, exc)
                        continue
                    if not await self._inbox.put(event):
                        return
            except ConnectionClosed:
                pass  # the close code below says whether it was clean
            if self._ws is not ws and self._ws is not None:
                # rotate() replaced this connection: everything it delivered is out.
                rotated = ws is self._rotated_from
                ws = self._ws
                if rotated and not await self._inbox.put(
                        Reconnected(attempt=1, close_code=None, rotated=True)):
                    return
                continue
            code = ws.close_code if ws.close_code is not None else 1006
            reason = ws.close_reason or ""
            if self._closing or code == 1000:
                return
            retryable = is_retryable_close(code)
            if not (retryable and self.options.reconnect):
                log.warning("%s: Realtime connection closed with code %d", self.name, code)
                self._terminal = RealtimeClosed(code, reason, retryable=retryable)
                return
            async with self._switching:
                if self._ws is not ws:
                    continue  # a rotation replaced it while we waited: read the new one
                log.warning("%s: Realtime connection lost (code %d), reconnecting",
                            self.name, code)
                if not await self._inbox.put(ConnectionLost(close_code=code)):
                    return
                try:
                    ws, attempt = await self._connect_with_retry()
                except RealtimeConnectError as exc:
                    self._terminal = exc
                    return
                self._ws = ws
                await self._publish(ws)
            self.stats.reconnects += 1
            if not await self._inbox.put(Reconnected(attempt=attempt, close_code=code)):
                return

    async def _publish(self, ws: ClientConnection) -> None:
        """Send the effective session and the prelude on ``ws``, then hand it to rt-send."""
        first: list[ClientEvent] = []
        if self._session is not None:
            first.append(SessionUpdate(self._session))
        if self.prelude is not None:
            first.extend(self.prelude())
        try:
            for event in first:
                await ws.send(encode(event))
                self.stats.messages_sent += 1
        except ConnectionClosed:
            pass  # the receive loop sees the close next and handles it
        async with self._published:
            self._send_ws = ws
            self._generation += 1
            self._published.notify_all()

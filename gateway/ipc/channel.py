"""The asyncio adapter of the control/worker protocol over one connected Unix stream.

An :class:`IpcChannel` owns two named tasks, ``{name}:ipc-read`` (frames to decoded messages
in a bounded inbox) and ``{name}:ipc-write`` (a bounded outbox to the socket), started on
construction and cancelled and awaited by :meth:`IpcChannel.close`. Messages are encoded and
validated in :meth:`IpcChannel.send` itself, so a bad message raises in the caller and never
reaches the wire. Any connected stream pair will do (a ``socketpair``, say);
:mod:`gateway.ipc.unix` opens the two ends over a Unix socket path.

Overflow policy of the outbox (``send_queue_size`` messages, each at most one frame):

* Lifecycle, request and command messages (everything but ``Load`` and ``CallEvent``) are
  never dropped. When the outbox is full, one first evicts the oldest queued droppable message
  if there is one; otherwise :meth:`IpcChannel.send` waits for room (backpressure) and
  :meth:`IpcChannel.send_nowait` raises :class:`SendQueueFull`.
* ``Load`` and ``CallEvent`` never wait: when the outbox is full the oldest queued droppable
  message is discarded (the new one, if none is queued) and counted in
  :attr:`IpcChannel.dropped`. A newer ``Load`` supersedes an older one anyway, and call events
  are telemetry the monitor can do without.

The inbox (``recv_queue_size`` messages) applies backpressure: while it is full the read task
stops reading, the socket buffer fills and the peer's outbox policy takes over.

The channel ends when the peer closes, on a framing or protocol error from the peer (a stream
that sent one bad frame cannot be trusted to be in sync), when the connection fails, or on
:meth:`IpcChannel.close`; :attr:`IpcChannel.reason` says which. Messages already received are
still delivered, then iteration stops and :meth:`IpcChannel.recv` raises
:class:`ChannelClosed`. The tasks never end with an exception. Reasons and logs name message
types and fields, never values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Final, Generic, Self, TypeAlias, TypeVar

from gateway.errors import GatewayError
from gateway.ipc.framing import MAX_FRAME_BYTES, FrameDecoder, FrameError, encode_frame
from gateway.ipc.messages import (
    CallEvent,
    ControlMessage,
    IpcError,
    Load,
    Message,
    WorkerMessage,
    decode_from_control,
    decode_from_worker,
    encode,
)

__all__ = [
    "DEFAULT_RECV_QUEUE", "DEFAULT_SEND_QUEUE", "ChannelClosed", "ControlChannel", "IpcChannel",
    "SendQueueFull", "WorkerChannel", "control_channel", "worker_channel",
]

log = logging.getLogger(__name__)

DEFAULT_SEND_QUEUE: Final = 256
DEFAULT_RECV_QUEUE: Final = 256
_READ_CHUNK: Final = 64 * 1024
_DROPPABLE: Final = (Load, CallEvent)

InT = TypeVar("InT", bound=Message)
OutT = TypeVar("OutT", bound=Message)


class ChannelClosed(GatewayError):
    """The channel has ended (or is closing) and takes no more messages.

    Attributes:
        reason: Why, e.g. ``peer closed the connection``.
    """

    def __init__(self, name: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"IPC channel {name}: {reason}")


class SendQueueFull(GatewayError):
    """:meth:`IpcChannel.send_nowait` found the outbox full of messages it may not drop."""


class IpcChannel(Generic[InT, OutT]):
    """One end of a connected stream: typed messages in (``InT``) and out (``OutT``).

    Create it inside a running loop (its tasks start at once), preferably through
    :func:`control_channel` or :func:`worker_channel`; use ``async with`` or call
    :meth:`close`.

    Args:
        reader: The stream's reader.
        writer: The stream's writer.
        name: Prefix of task names and log lines, e.g. ``worker-2``.
        decode: Turns a received JSON object into a message, raising
            :class:`~gateway.ipc.messages.IpcError` for one this end must not receive.
        send_queue_size: Outbox capacity in messages.
        recv_queue_size: Inbox capacity in messages.
        max_frame_bytes: Largest frame sent or accepted.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        name: str,
        decode: Callable[[Mapping[str, Any]], InT],
        send_queue_size: int = DEFAULT_SEND_QUEUE,
        recv_queue_size: int = DEFAULT_RECV_QUEUE,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        if send_queue_size < 1 or recv_queue_size < 1:
            raise ValueError("queue sizes must be at least 1")
        self.name = name
        self._reader = reader
        self._writer = writer
        self._decode = decode
        self._max_frame = max_frame_bytes
        self._decoder = FrameDecoder(max_frame_bytes)
        # Outbox: (frame, droppable); _droppable counts the droppable entries in it.
        self._outbox: deque[tuple[bytes, bool]] = deque()
        self._send_size = send_queue_size
        self._droppable = 0
        self._outbox_ready = asyncio.Event()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._inbox: deque[InT] = deque()
        self._recv_size = recv_queue_size
        self._inbox_ready = asyncio.Event()
        self._inbox_space = asyncio.Event()
        self._ended = asyncio.Event()
        self._reason: str | None = None
        self._closing = False
        self._close_done: asyncio.Event | None = None
        self._dropped = 0
        self._read_task = asyncio.create_task(self._read_loop(), name=f"{name}:ipc-read")
        self._write_task = asyncio.create_task(self._write_loop(), name=f"{name}:ipc-write")

    # ------------------------------------------------------------------ state

    @property
    def dropped(self) -> int:
        """Droppable messages (``Load``, ``CallEvent``) discarded because the outbox was full."""
        return self._dropped

    @property
    def queued(self) -> int:
        """Messages in the outbox now."""
        return len(self._outbox)

    @property
    def reason(self) -> str | None:
        """Why the channel ended; ``None`` while it runs."""
        return self._reason

    @property
    def closed(self) -> bool:
        """Whether the channel has ended."""
        return self._reason is not None

    async def wait_closed(self) -> str:
        """Wait until the channel ends; returns the reason."""
        await self._ended.wait()
        assert self._reason is not None
        return self._reason

    # ------------------------------------------------------------------ sending

    def _check_open(self) -> None:
        if self._reason is not None:
            raise ChannelClosed(self.name, self._reason)
        if self._closing:
            raise ChannelClosed(self.name, "closing")

    def _prepare(self, msg: OutT) -> tuple[bytes, bool]:
        self._check_open()
        return encode_frame(encode(msg), max_size=self._max_frame), isinstance(msg, _DROPPABLE)

    def _drop_oldest_droppable(self) -> bool:
        if not self._droppable:
            return False
        for index, (_, droppable) in enumerate(self._outbox):
            if droppable:
                del self._outbox[index]
                self._droppable -= 1
                self._count_drop()
                return True
        raise AssertionError("droppable count out of step")  # pragma: no cover

    def _count_drop(self) -> None:
        self._dropped += 1
        if self._dropped == 1 or self._dropped % 1000 == 0:
            log.warning("%s: IPC outbox full: %d droppable messages dropped so far",
                        self.name, self._dropped)

    def _full(self) -> bool:
        return len(self._outbox) >= self._send_size

    def _append(self, frame: bytes, droppable: bool) -> None:
        self._outbox.append((frame, droppable))
        self._droppable += droppable
        self._outbox_ready.set()

    def _offer_droppable(self, frame: bytes) -> None:
        if self._full() and not self._drop_oldest_droppable():
            self._count_drop()  # nothing older to discard: this one goes
            return
        self._append(frame, True)

    def send_nowait(self, msg: OutT) -> None:
        """Queue ``msg`` without waiting (see the module's overflow policy).

        Raises:
            SendQueueFull: ``msg`` may not be dropped and the outbox is full of messages that
                may not be dropped either.
            ChannelClosed: The channel has ended or is closing.
            IpcError: ``msg`` is invalid.
            FrameError: ``msg`` is larger than the frame limit.
        """
        frame, droppable = self._prepare(msg)
        if droppable:
            self._offer_droppable(frame)
            return
        if self._putters or (self._full() and not self._drop_oldest_droppable()):
            raise SendQueueFull(f"IPC channel {self.name}: outbox full ({self._send_size})")
        self._append(frame, False)

    async def send(self, msg: OutT) -> None:
        """Queue ``msg``, waiting for room if it may not be dropped (backpressure).

        Raises:
            ChannelClosed: The channel has ended or is closing (also while waiting).
            IpcError: ``msg`` is invalid.
            FrameError: ``msg`` is larger than the frame limit.
        """
        frame, droppable = self._prepare(msg)
        if droppable:
            self._offer_droppable(frame)
            return
        while self._full() and not self._drop_oldest_droppable():
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                await waiter
            except BaseException:
                woken = waiter.done() and not waiter.cancelled()
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._putters.remove(waiter)
                if woken:  # pass on the wake-up this cancelled sender took
                    self._wake_putter()
                raise
            self._check_open()
        self._append(frame, False)

    def _wake_putter(self) -> None:
        while self._putters:
            waiter = self._putters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # ------------------------------------------------------------------ receiving

    async def recv(self) -> InT:
        """The next received message.

        Raises:
            ChannelClosed: The channel has ended and every received message was returned.
        """
        while not self._inbox:
            if self._reason is not None:
                raise ChannelClosed(self.name, self._reason)
            self._inbox_ready.clear()
            await self._inbox_ready.wait()
        self._inbox_space.set()
        return self._inbox.popleft()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> InT:
        try:
            return await self.recv()
        except ChannelClosed:
            raise StopAsyncIteration from None

    # ------------------------------------------------------------------ tasks

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(_READ_CHUNK)
                if not data:
                    self._decoder.feed_eof()
                    self._fail("peer closed the connection", logging.INFO)
                    return
                self._decoder.feed(data)
                for raw in self._decoder:
                    message = self._decode(raw)
                    while len(self._inbox) >= self._recv_size:
                        self._inbox_space.clear()
                        await self._inbox_space.wait()
                    self._inbox.append(message)
                    self._inbox_ready.set()
        except (FrameError, IpcError) as exc:
            self._fail(f"protocol error from peer: {exc}", logging.WARNING)
        except (ConnectionError, OSError) as exc:
            self._fail(f"connection lost ({type(exc).__name__})", logging.WARNING)
        except Exception as exc:  # a bug here must end the channel, not leave a failed task
            log.exception("%s: IPC read task failed", self.name)
            self._fail(f"internal error while receiving ({type(exc).__name__})", logging.ERROR)

    async def _write_loop(self) -> None:
        try:
            while True:
                while not self._outbox:
                    if self._closing:
                        return  # flushed
                    self._outbox_ready.clear()
                    await self._outbox_ready.wait()
                frame, droppable = self._outbox.popleft()
                self._droppable -= droppable
                self._wake_putter()
                self._writer.write(frame)
                await self._writer.drain()
        except (ConnectionError, OSError) as exc:
            self._fail(f"connection lost while sending ({type(exc).__name__})", logging.WARNING)
        except Exception as exc:  # a bug here must end the channel, not leave a failed task
            log.exception("%s: IPC write task failed", self.name)
            self._fail(f"internal error while sending ({type(exc).__name__})", logging.ERROR)

    def _end(self, reason: str, level: int) -> None:
        """Record the first reason and wake every waiter; idempotent."""
        if self._reason is not None:
            return
        self._reason = reason
        log.log(level, "%s: IPC channel ended: %s", self.name, reason)
        self._ended.set()
        self._inbox_ready.set()
        self._outbox_ready.set()
        while self._putters:
            waiter = self._putters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, reason: str, level: int) -> None:
        """End from inside a task: stop the other task and drop the connection."""
        self._end(reason, level)
        current = asyncio.current_task()
        for task in (self._read_task, self._write_task):
            if task is not current:
                task.cancel()
        self._writer.transport.abort()

    # ------------------------------------------------------------------ closing

    async def close(self, *, flush_timeout_s: float = 1.0) -> None:
        """Write what is queued (for up to ``flush_timeout_s``), then end; idempotent.

        Sends are refused from the start; queued messages left after the timeout are
        discarded. Both tasks are cancelled and awaited, even if this call is cancelled.
        """
        if self._close_done is not None:
            await self._close_done.wait()
            return
        self._close_done = asyncio.Event()
        self._closing = True
        self._outbox_ready.set()
        flushed = False
        try:
            if self._reason is None and flush_timeout_s > 0:
                done, _ = await asyncio.wait({self._write_task}, timeout=flush_timeout_s)
                flushed = bool(done) and self._reason is None
        finally:
            self._end("closed by this side", logging.DEBUG)
            for task in (self._read_task, self._write_task):
                task.cancel()
            if not flushed:  # before any await: the socket goes even if we are cancelled
                self._writer.transport.abort()
            try:
                await asyncio.gather(self._read_task, self._write_task, return_exceptions=True)
                await self._close_transport(flush_timeout_s)
            finally:
                self._close_done.set()

    async def _close_transport(self, timeout_s: float) -> None:
        self._writer.close()
        try:
            async with asyncio.timeout(max(timeout_s, 0.1)):
                await self._writer.wait_closed()
        except TimeoutError:  # the peer stopped reading: give up on what the kernel holds
            self._writer.transport.abort()
        except (ConnectionError, OSError):
            pass

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


#: The control process's end: receives worker messages, sends control messages.
ControlChannel: TypeAlias = IpcChannel[WorkerMessage, ControlMessage]
#: A worker's end: receives control messages, sends worker messages.
WorkerChannel: TypeAlias = IpcChannel[ControlMessage, WorkerMessage]


def control_channel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, name: str, **options: Any
) -> ControlChannel:
    """The control process's end of a connected stream (``options`` as :class:`IpcChannel`)."""
    return IpcChannel(reader, writer, name=name, decode=decode_from_worker, **options)


def worker_channel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, name: str, **options: Any
) -> WorkerChannel:
    """A worker's end of a connected stream (``options`` as :class:`IpcChannel`)."""
    return IpcChannel(reader, writer, name=name, decode=decode_from_control, **options)

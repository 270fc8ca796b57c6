"""The control/worker channel over real Unix sockets: order, backpressure, drops and endings."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
import struct
import tempfile
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from gateway.ipc.channel import (
    ChannelClosed,
    ControlChannel,
    IpcChannel,
    SendQueueFull,
    WorkerChannel,
    control_channel,
    worker_channel,
)
from gateway.ipc.framing import FrameError
from gateway.ipc.messages import (
    PROTOCOL_VERSION,
    CallEnded,
    CallEvent,
    CallOffered,
    CallStarted,
    Hello,
    Load,
    Message,
    Shutdown,
    ToolRequest,
    Welcome,
    WorkerMessage,
    encode,
    negotiate,
)
from gateway.ipc.unix import IpcServer, connect_unix, serve_unix
from tests.conftest import scaled

pytestmark = pytest.mark.component

T = TypeVar("T")

HELLO = Hello(worker_id="w1", pid=os.getpid(), protocol=PROTOCOL_VERSION,
              binding="test", capacity=3,
              sip_host="127.0.0.1", sip_port=5071)


def _big(request_id: int) -> ToolRequest:
    """A message that may not be dropped, of ~200 kB: a few of them fill the socket buffers."""
    return ToolRequest(request_id, "w1-1", "guardrail", 5.0, path="m:check", text="x" * 200_000)


def _exists(path: Path) -> bool:
    return path.exists()


def _frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


async def _within(awaitable: Awaitable[T], seconds: float = 5.0) -> T:
    async with asyncio.timeout(scaled(seconds)):
        return await awaitable


@pytest.fixture
def socket_path() -> Iterator[Path]:
    # A short directory of its own: Unix socket paths are limited to ~107 bytes.
    with tempfile.TemporaryDirectory(prefix="ipc-") as directory:
        os.chmod(directory, 0o700)
        yield Path(directory) / "control.sock"


class Accepted:
    """A serve_unix handler that hands each control channel to the test."""

    def __init__(self) -> None:
        self._channels: asyncio.Queue[ControlChannel] = asyncio.Queue(maxsize=8)

    async def handler(self, channel: ControlChannel) -> None:
        await self._channels.put(channel)
        await channel.wait_closed()

    async def next(self) -> ControlChannel:
        return await _within(self._channels.get())


@asynccontextmanager
async def _serving(path: Path, **options: Any) -> AsyncIterator[tuple[IpcServer, Accepted]]:
    accepted = Accepted()
    async with await serve_unix(path, accepted.handler, name="ctl", **options) as server:
        yield server, accepted


async def _stall(worker: WorkerChannel) -> int:
    """Send big messages until the peer stops reading and one stays queued; returns how many."""
    for version in range(1, 500):
        worker.send_nowait(_big(version))
        await asyncio.sleep(0.02)
        if worker.queued:
            await asyncio.sleep(0.1)  # still there: the write task is stuck, not just slow
            if worker.queued:
                return version
    raise AssertionError("the socket never filled up")


async def _collect(channel: IpcChannel[Any, Any]) -> list[Message]:
    return [msg async for msg in channel]


async def _receive_until(channel: IpcChannel[Any, Any], last: type[Message]) -> list[Message]:
    received: list[Message] = []
    async with asyncio.timeout(scaled(10)):
        while not received or not isinstance(received[-1], last):
            received.append(await channel.recv())
    return received


async def test_round_trip_in_order_with_owned_named_tasks(socket_path: Path) -> None:
    async with _serving(socket_path) as (server, accepted):
        assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
        async with await connect_unix(socket_path, name="w1") as worker:
            control = await accepted.next()
            await worker.send(HELLO)
            hello = await _within(control.recv())
            assert hello == HELLO
            assert isinstance(hello, Hello)
            welcome = negotiate(hello, "0123abcd")
            await control.send(welcome)
            assert await _within(worker.recv()) == welcome
            sent: list[WorkerMessage] = [
                CallOffered("w1-1", "abc@pbx", "+15550100", "support", "support", "192.0.2.1",
                            1767225600.0),
                CallStarted("w1-1", "all", "concierge", "PCMA"),
                CallEvent("w1-1", "transcript", 1767225601.0, {"text": "grüß Gott"}),
                ToolRequest(1, "w1-1", "python", 5.0, path="m:f", arguments={"x": 1}),
                CallEnded("w1-1", "caller hung up", {"answered": True}),
            ]
            for msg in sent:
                await worker.send(msg)
            assert [await _within(control.recv()) for _ in sent] == sent
            assert server.connections == 1
            names = {task.get_name() for task in asyncio.all_tasks()}
            assert {"w1:ipc-read", "w1:ipc-write", "ctl:conn-1:handler", "ctl:conn-1:ipc-read",
                    "ctl:conn-1:ipc-write"} <= names
        assert await _within(control.wait_closed()) == "peer closed the connection"
        assert worker.reason == "closed by this side"
    assert not _exists(socket_path)
    assert not [t for t in asyncio.all_tasks() if ":ipc-" in t.get_name() and not t.done()]


async def test_close_flushes_the_outbox_and_iteration_then_stops(socket_path: Path) -> None:
    async with _serving(socket_path) as (_, accepted):
        worker = await connect_unix(socket_path, name="w1")
        control = await accepted.next()
        for active in range(20):
            worker.send_nowait(Load(active=active, capacity=20))
        worker.send_nowait(CallEnded("w1-1", "done"))
        await _within(worker.close())
        received = await _within(_collect(control))
        assert received == [*(Load(a, 20) for a in range(20)), CallEnded("w1-1", "done")]
        assert control.reason == "peer closed the connection"
        with pytest.raises(ChannelClosed, match="peer closed the connection"):
            await control.recv()
        with pytest.raises(ChannelClosed, match="peer closed the connection"):
            await control.send(Shutdown())
        with pytest.raises(ChannelClosed, match="closed by this side"):
            worker.send_nowait(HELLO)
        await worker.close()  # idempotent


async def test_lifecycle_messages_wait_for_room_and_are_never_dropped(socket_path: Path) -> None:
    async with _serving(socket_path, recv_queue_size=1) as (_, accepted):
        async with await connect_unix(socket_path, name="w1", send_queue_size=4) as worker:
            control = await accepted.next()
            version = 1
            while True:
                try:
                    worker.send_nowait(_big(version))
                except SendQueueFull as exc:
                    assert str(exc) == "IPC channel w1: outbox full (4)"
                    break
                version += 1
                assert version < 500, "the socket never filled up"
                await asyncio.sleep(0.01)
            assert worker.queued == 4
            blocked = asyncio.create_task(worker.send(_big(version)), name="test:blocked-send")
            await asyncio.sleep(0.2)
            assert not blocked.done()  # backpressure: the sender waits
            with pytest.raises(SendQueueFull):
                worker.send_nowait(CallEnded("w1-1", "x"))  # nor may it jump the queue
            # Droppable messages never wait: with nothing droppable queued, the new one goes.
            worker.send_nowait(Load(active=1, capacity=3))
            await _within(worker.send(CallEvent("w1-1", "state", 1.0)))
            assert worker.dropped == 2
            received = [await _within(control.recv()) for _ in range(version)]
            await _within(blocked)
            assert [m.request_id if isinstance(m, ToolRequest) else m for m in received] == list(
                range(1, version + 1))


async def test_oldest_droppable_message_is_dropped_and_counted(socket_path: Path) -> None:
    async with _serving(socket_path, recv_queue_size=1) as (_, accepted):
        async with await connect_unix(socket_path, name="w1", send_queue_size=8) as worker:
            control = await accepted.next()
            bigs = await _stall(worker)
            stuck = worker.queued
            assert stuck < 4
            for seq in range(20):
                worker.send_nowait(CallEvent("w1-1", "transcript", 1.0, {"seq": seq}))
            room = 8 - stuck
            assert worker.dropped == 20 - room
            # A lifecycle message finding the outbox full evicts the oldest droppable one.
            worker.send_nowait(CallEnded("w1-1", "caller hung up"))
            assert worker.dropped == 20 - room + 1
            received = await _receive_until(control, CallEnded)
            assert sum(isinstance(m, ToolRequest) for m in received) == bigs
            seqs = [m.data["seq"] for m in received if isinstance(m, CallEvent)]
            assert seqs == list(range(20 - room + 1, 20))
            assert received[-1] == CallEnded("w1-1", "caller hung up")


async def test_close_releases_a_blocked_sender_and_gives_up_flushing(socket_path: Path) -> None:
    async with _serving(socket_path, recv_queue_size=1) as (_, accepted):
        worker = await connect_unix(socket_path, name="w1", send_queue_size=1)
        await accepted.next()
        await _stall(worker)
        blocked = asyncio.create_task(worker.send(_big(999)), name="test:blocked-send")
        await asyncio.sleep(0.05)
        assert not blocked.done()
        await _within(worker.close(flush_timeout_s=0.2))
        with pytest.raises(ChannelClosed, match="closed by this side"):
            await _within(blocked)
        assert worker.closed


async def test_oversized_frame_from_peer_is_refused_before_its_body(socket_path: Path) -> None:
    async with _serving(socket_path) as (_, accepted):
        reader, writer = await asyncio.open_unix_connection(socket_path)
        try:
            writer.write(struct.pack("!I", 2 * 1024 * 1024))  # a header and no body at all
            await writer.drain()
            control = await accepted.next()
            assert await _within(control.wait_closed()) == (
                "protocol error from peer: frame of 2097152 bytes exceeds the 1048576-byte limit")
            try:
                assert await _within(reader.read()) == b""
            except ConnectionResetError:
                pass  # the channel aborts the connection
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


async def test_oversized_message_is_refused_in_the_sender(socket_path: Path) -> None:
    async with _serving(socket_path) as (_, accepted):
        async with await connect_unix(socket_path, name="w1") as worker:
            control = await accepted.next()
            with pytest.raises(FrameError, match="exceeds the 1048576-byte limit"):
                await worker.send(ToolRequest(1, "w1-1", "guardrail", 5.0, path="m:f",
                                              text="€" * 400_000))
            await worker.send(HELLO)  # nothing was queued; the channel still works
            assert await _within(control.recv()) == HELLO


GARBAGE = [
    ("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
     "protocol error from peer: frame of 1195725856 bytes exceeds the 1048576-byte limit"),
    ("not json", _frame(b"not json"),
     "protocol error from peer: frame is not valid JSON at offset 0"),
    ("not an object", _frame(b"[1]"),
     "protocol error from peer: frame is a JSON array, not an object"),
    ("unknown type", _frame(b'{"type":"dial"}'),
     "protocol error from peer: IPC message: unknown message type 'dial' (protocol version 4)"),
    ("missing field", _frame(b'{"type":"hello"}'),
     "protocol error from peer: IPC message 'hello': field 'worker_id' is missing"),
    ("wrong direction", _frame(json.dumps(encode(Welcome(1, "ab"))).encode()),
     "protocol error from peer: IPC message 'welcome': is not a message a worker sends"),
    ("cut short", _frame(b'{"type":"shutdown"}')[:10],
     "protocol error from peer: stream ended inside a frame (6 of 19 body bytes)"),
]


@pytest.mark.parametrize(("data", "reason"), [(d, r) for _, d, r in GARBAGE],
                         ids=[name for name, _, _ in GARBAGE])
async def test_garbage_ends_the_channel_after_what_came_before(
    socket_path: Path, data: bytes, reason: str
) -> None:
    async with _serving(socket_path) as (_, accepted):
        _, writer = await asyncio.open_unix_connection(socket_path)
        try:
            writer.write(_frame(json.dumps(encode(Load(1, 2))).encode()) + data)
            await writer.drain()
            control = await accepted.next()
            writer.write_eof()
            received = await _within(_collect(control))
            assert received == [Load(1, 2)]
            assert control.reason == reason
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


async def test_closing_the_server_ends_every_connection(socket_path: Path) -> None:
    async with _serving(socket_path) as (server, accepted):
        worker = await connect_unix(socket_path, name="w1")
        await accepted.next()
        await _within(server.close())
        assert await _within(worker.wait_closed()) == "peer closed the connection"
        assert server.connections == 0
        assert not _exists(socket_path)
        await worker.close()


async def test_a_stale_socket_file_is_replaced(socket_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path))
    stale.close()  # leaves the file behind, as a crashed control process would
    async with _serving(socket_path) as (_, accepted):
        async with await connect_unix(socket_path, name="w1") as worker:
            control = await accepted.next()
            await worker.send(HELLO)
            assert await _within(control.recv()) == HELLO


async def test_a_failing_handler_is_logged_and_its_connection_closed(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(channel: ControlChannel) -> None:
        await channel.recv()
        raise RuntimeError("handler bug")

    caplog.set_level(logging.ERROR, logger="gateway.ipc.unix")
    async with await serve_unix(socket_path, handler, name="ctl"):
        async with await connect_unix(socket_path, name="w1") as worker:
            await worker.send(HELLO)
            assert await _within(worker.wait_closed()) == "peer closed the connection"
    assert "ctl:conn-1: IPC connection handler failed" in caplog.text


async def test_channels_over_a_socketpair() -> None:
    left, right = socket.socketpair()
    control_rw = await asyncio.open_unix_connection(sock=left)
    worker_rw = await asyncio.open_unix_connection(sock=right)
    control = control_channel(*control_rw, name="ctl")
    async with worker_channel(*worker_rw, name="w1") as worker, control:
        worker.send_nowait(HELLO)
        control.send_nowait(Shutdown())
        assert await _within(control.recv()) == HELLO
        assert await _within(worker.recv()) == Shutdown()
    assert control.closed and worker.closed
    assert not [t for t in asyncio.all_tasks() if ":ipc-" in t.get_name() and not t.done()]

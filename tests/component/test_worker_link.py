"""A worker's link obeys the control process's commands on its calls, over a real channel.

The control side is a real :func:`serve_unix` server; the worker side a real
:class:`WorkerLink` on :func:`connect_unix`. The SIP user agent and the call manager are
stand-ins (no pjsua2 endpoint here: the call path itself is covered by the SIP tier); they
record what the link asked of them and answer as the real ones do (``None`` / ``False`` for a
call that is not live). What is asserted is what crossed the channel: one ``command_result``
per command, with the error texts the control API will show.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from gateway.calls.conversation import TransferResult
from gateway.calls.manager import CallManager
from gateway.ipc import messages as m
from gateway.ipc.channel import ControlChannel
from gateway.ipc.unix import connect_unix, serve_unix
from gateway.sip.levels import LevelSample
from gateway.sip.ua import SipUserAgent
from gateway.worker.link import WorkerLink
from tests.conftest import scaled

pytestmark = pytest.mark.component


@dataclass
class _Transport:
    host: str = "127.0.0.1"
    port: int = 5201


@dataclass
class FakeUa:
    """What the link reads of the user agent."""

    transports: list[_Transport] = field(default_factory=lambda: [_Transport()])
    binding: Any = None
    max_calls: int = 3
    media_port: str = "native"
    active_calls: int = 1
    draining: bool = False

    watched: list[tuple[bool, tuple[int, ...]]] = field(default_factory=list)
    on_levels: Callable[[list[LevelSample]], None] | None = None
    watch_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def drain(self) -> None:
        self.draining = True

    def watch_levels(self, all_calls: bool, leg_ids: tuple[int, ...],
                     on_levels: Callable[[list[LevelSample]], None]) -> None:
        self.watched.append((all_calls, leg_ids))
        self.on_levels = on_levels
        self.watch_changed.set()


@dataclass
class FakeManager:
    """A call manager with one live call, leg 7; records what it was asked."""

    observer: Any = None
    done: list[tuple[str, int, str]] = field(default_factory=list)
    transfer_result: TransferResult = TransferResult(True, 200, "OK")

    def end_call(self, leg_id: int, reason: str) -> bool:
        self.done.append(("hangup", leg_id, reason))
        return leg_id == 7

    async def transfer_call(self, leg_id: int, uri: str,
                            timeout_s: float = 30.0) -> TransferResult | None:
        self.done.append(("transfer", leg_id, uri))
        return self.transfer_result if leg_id == 7 else None

    async def say(self, leg_id: int, text: str) -> bool:
        self.done.append(("say", leg_id, text))
        if text == "boom":
            raise RuntimeError("the session has no Realtime connection")
        return leg_id == 7


@pytest.fixture
def socket_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="wl-") as directory:
        os.chmod(directory, 0o700)
        yield Path(directory) / "control.sock"


@asynccontextmanager
async def linked(socket_path: Path, manager: FakeManager, ua: FakeUa | None = None
                 ) -> AsyncIterator[tuple[ControlChannel, asyncio.Queue[m.WorkerMessage]]]:
    channels: asyncio.Queue[ControlChannel] = asyncio.Queue()
    received: asyncio.Queue[m.WorkerMessage] = asyncio.Queue()

    async def handler(channel: ControlChannel) -> None:
        await channels.put(channel)
        async for msg in channel:
            await received.put(msg)

    async with await serve_unix(socket_path, handler, name="ctl"):
        channel = await connect_unix(socket_path, name="w1")
        link = WorkerLink("w1", channel, on_drain=lambda _s: None, on_shutdown=lambda: None)
        await link.start(cast(SipUserAgent, ua or FakeUa()), cast(CallManager, manager))
        control = await asyncio.wait_for(channels.get(), scaled(5))
        try:
            yield control, received
        finally:
            await link.close()


async def _result(received: asyncio.Queue[m.WorkerMessage], request_id: int
                  ) -> m.CommandResult:
    async with asyncio.timeout(scaled(5)):
        while True:
            msg = await received.get()
            if isinstance(msg, m.CommandResult) and msg.request_id == request_id:
                return msg


async def test_each_command_gets_one_result_naming_what_went_wrong(socket_path: Path) -> None:
    manager = FakeManager()
    async with linked(socket_path, manager) as (control, received):
        await control.send(m.Hangup(1, "w1:7", "operator hung up"))
        await control.send(m.Transfer(2, "w1:7", "sip:queue@pbx.example.com"))
        await control.send(m.Say(3, "w1:7", "Please hold."))
        await control.send(m.Hangup(4, "w1:8", ""))
        await control.send(m.Say(5, "w2:7", "wrong worker"))
        await control.send(m.Say(6, "w1:7", "boom"))
        results = {i: await _result(received, i) for i in range(1, 7)}
    assert [(r.ok, r.error) for r in results.values()] == [
        (True, None), (True, None), (True, None),
        (False, "no such live call on this worker"),
        (False, "no such live call on this worker"),
        (False, "say failed: RuntimeError")]
    assert ("hangup", 7, "operator hung up") in manager.done
    assert ("transfer", 7, "sip:queue@pbx.example.com") in manager.done
    assert ("say", 7, "Please hold.") in manager.done
    assert not any(what == "say" and text == "wrong worker" for what, _, text in manager.done)


async def test_a_refused_transfer_reports_the_far_end_status(socket_path: Path) -> None:
    manager = FakeManager(transfer_result=TransferResult(False, 486, "Busy Here"))
    async with linked(socket_path, manager) as (control, received):
        await control.send(m.Transfer(9, "w1:7", "sip:sales@pbx.example.com"))
        result = await _result(received, 9)
    assert (result.ok, result.error) == (False, "transfer failed: 486 Busy Here")


async def test_watched_calls_are_sampled_and_their_levels_reported(socket_path: Path) -> None:
    ua = FakeUa()
    async with linked(socket_path, FakeManager(), ua) as (control, received):
        await control.send(m.WatchLevels(all_calls=False, call_ids=("w1:7", "w2:3", "w1:x")))
        await control.send(m.WatchLevels(all_calls=True))
        async with asyncio.timeout(scaled(5)):
            while len(ua.watched) < 2:
                ua.watch_changed.clear()
                await ua.watch_changed.wait()
        assert ua.on_levels is not None
        ua.on_levels([LevelSample(7, 0.2, 0.5)])  # one tick of the SIP thread's sampler
        async with asyncio.timeout(scaled(5)):
            while not isinstance(msg := await received.get(), m.CallEvent):
                pass
    assert ua.watched == [(False, (7,)), (True, ())]  # other workers' calls ignored
    assert (msg.call_id, msg.kind, msg.data) == ("w1:7", "levels", {"caller": 0.2, "agent": 0.5})

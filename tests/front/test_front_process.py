"""The front as a process: it refuses to share its port or run directory, explains a bad
config, and is always stopped by pid, by SIGKILL when SIGTERM is not enough."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest

from gateway.front import ports
from gateway.front.errors import FrontConfigInvalid, FrontPortBusy, KamailioNotFound
from gateway.front.kamailio import KamailioFront, check_config, find_kamailio
from tests.front.conftest import front_spec, running_front
from tests.support.frontsip import FakeWorker
from tests.support.procs import port_is_bound

pytestmark = [pytest.mark.sip, pytest.mark.timeout(60)]


async def test_the_front_refuses_to_share_its_udp_port(run_dir: Path) -> None:
    with FakeWorker("w1") as w1, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        # What a stale Kamailio does: SO_REUSEADDR, so a second one could bind next to it.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 0))
        spec = front_spec([w1], run_dir, port=squatter.getsockname()[1])
        front = KamailioFront(spec)
        with pytest.raises(FrontPortBusy, match=f"already in use by {os.getpid()} "):
            await front.start()
        assert not front.running
        # Nothing written, nothing started.
        assert await asyncio.to_thread(lambda: list(run_dir.iterdir())) == []


async def test_config_errors_quote_the_offending_line(run_dir: Path) -> None:
    cfg = run_dir / "bad.cfg"
    cfg.write_text('#!KAMAILIO\nloadmodule "sl.so"\nrequest_route {\n\tno_such_function();\n}\n')
    with pytest.raises(FrontConfigInvalid, match=r"line 4: no_such_function\(\);"):
        await check_config(find_kamailio(), cfg)
    with pytest.raises(KamailioNotFound, match="apt-get install kamailio"):
        find_kamailio(run_dir / "kamailio")


async def test_a_second_front_on_a_live_run_dir_is_refused(run_dir: Path) -> None:
    with FakeWorker("w1") as w1:
        async with running_front(front_spec([w1], run_dir)) as first:
            second = KamailioFront(front_spec([w1], run_dir))
            with pytest.raises(FrontPortBusy, match="a running Kamailio answers"):
                await second.start()
            assert await second.stop() is None  # a refused front touches nothing
            assert first.running
            assert (await first.worker("w1")).state == "active"


async def test_a_front_that_ignores_sigterm_is_killed_with_its_children(run_dir: Path) -> None:
    with FakeWorker("w1") as w1:
        spec = front_spec([w1], run_dir)
        front = KamailioFront(spec, stop_grace_s=0.5)
        await front.start()
        pid = front.pid
        os.kill(pid, signal.SIGSTOP)  # a hung main process: SIGTERM stays pending
        assert await front.stop() == -signal.SIGKILL
        # Its children got SIGKILL too: at most zombies (exited, no sockets) until reaped.
        assert await asyncio.to_thread(ports.live_group_members, pid) == []
        assert not port_is_bound(spec.listen[0].port)
        assert not await asyncio.to_thread(run_dir.exists)
        assert "main.c" in front.log_text()  # the log outlives the run directory

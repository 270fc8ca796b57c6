"""Front-test helpers: a spec for fake workers, a short run directory, a running front.

Kamailio's unix sockets live in the run directory and ``sun_path`` is short, so run
directories are made under ``/tmp`` rather than pytest's (long) ``tmp_path``. The front
removes its run directory when it stops; the fixture removes it too in case start-up failed
before the front owned it.
"""

from __future__ import annotations

import ipaddress
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.front.kamailio import KamailioFront
from gateway.front.spec import FrontSpec, Listen, Worker
from tests.conftest import scaled
from tests.support.frontsip import FakeWorker
from tests.support.ports import free_udp_port

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """An empty, short run directory under /tmp."""
    path = Path(tempfile.mkdtemp(prefix="front-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def front_spec(workers: Sequence[FakeWorker], run_dir: Path, *, port: int | None = None,
               **overrides: Any) -> FrontSpec:
    """A front on ``udp:127.0.0.1:port`` dispatching to ``workers`` (fast timers for tests)."""
    settings: dict[str, Any] = {
        "trunk_allow": LOOPBACK, "ping_interval_s": 1, "first_reply_timeout_ms": 1000,
        "answer_timeout_ms": 10000, "children": 2}
    settings.update(overrides)
    return FrontSpec(
        listen=(Listen("udp", "127.0.0.1", port or free_udp_port()),),
        workers=tuple(Worker(w.name, w.host, w.port, w.capacity) for w in workers),
        run_dir=run_dir, **settings)


def front_address(spec: FrontSpec) -> tuple[str, int]:
    """Where callers send to: the first listen address."""
    return spec.listen[0].host, spec.listen[0].port


@asynccontextmanager
async def running_front(spec: FrontSpec) -> AsyncIterator[KamailioFront]:
    """The front started, with every worker probed active; stopped (by pid) on exit."""
    front = KamailioFront(spec, start_timeout_s=scaled(15))
    await front.start()
    try:
        await front.wait_for_workers(lambda ss: all(s.state == "active" for s in ss),
                                     timeout_s=scaled(10))
        yield front
    finally:
        await front.stop()

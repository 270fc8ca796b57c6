"""The simulator forgets closed sessions beyond ``keep_closed``, so a long-running one stays flat.

Issue 7, finding 3: the embedded simulator kept every closed session with all its events, which
made ``gateway run`` grow by 50-63 kB per call. Tests keep every session (the default, ``None``);
``gateway sim`` and the embedded simulator keep ``SERVICE_KEEP_CLOSED``.
"""

from __future__ import annotations

import aiohttp
import pytest

from gateway.sim.server import SimOptions, SimulatorServer
from tests.conftest import scaled

pytestmark = pytest.mark.component

AUTH = {"Authorization": "Bearer test-key"}


async def _call(http: aiohttp.ClientSession, sim: SimulatorServer, index: int) -> None:
    async with http.ws_connect(f"{sim.ws_url}?model=gpt-realtime-2.1", headers=AUTH) as ws:
        msg = await ws.receive(timeout=scaled(10))
        assert "session.created" in msg.data
        conn = await sim.wait_for_session(index, timeout=scaled(5))  # live: still listed
    await conn.wait_closed(timeout=scaled(5))


@pytest.mark.parametrize(("keep", "kept"), [(None, [0, 1, 2, 3, 4]), (2, [3, 4]), (0, [])])
async def test_closed_sessions_beyond_keep_closed_are_forgotten(
    keep: int | None, kept: list[int]
) -> None:
    options = SimOptions(tts_engine="tone", keep_closed=keep)
    async with SimulatorServer(options=options) as sim, aiohttp.ClientSession() as http:
        for i in range(5):
            await _call(http, sim, i)
        assert [s.index for s in sim.sessions] == kept
        assert all(s.closed for s in sim.sessions)
        if kept:
            # Lookups are by connection number, not by position in the list.
            assert (await sim.wait_for_session(kept[-1])).index == kept[-1]


async def test_a_live_session_is_never_forgotten() -> None:
    options = SimOptions(tts_engine="tone", keep_closed=0)
    async with SimulatorServer(options=options) as sim, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{sim.ws_url}?model=gpt-realtime-2.1",
                                   headers=AUTH) as live:
            await live.receive(timeout=scaled(10))
            await _call(http, sim, 1)
            assert [s.index for s in sim.sessions] == [0]
            assert not sim.sessions[0].closed


def test_keep_closed_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="keep_closed"):
        SimOptions(keep_closed=-1)

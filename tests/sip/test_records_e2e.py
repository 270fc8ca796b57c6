"""Call records from a real gateway into its SQLite database, read back with ``gateway calls``.

Real processes on 127.0.0.1: ``gateway run`` (control process and a SIP worker; the database
is ``calls.db`` beside its config file, the default), SIPp as the caller, the simulator in the
test process, and the installed ``gateway calls`` command reading what was written.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.sim.server import SimulatorServer
from tests.sip.gateway import GATEWAY, QUIET_AGENT, Gateway, control_get, run_gateway, wait_until
from tests.support.audio import silence_pcm16, write_g711
from tests.support.sipp import run_sipp_async, start_sipp

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]


def _calls(gw: Gateway, *args: str) -> Any:
    out = subprocess.run([*GATEWAY, "calls", *args, "-c", str(gw.config_path)],
                         capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout) if args[0] == "show" else out.stdout


async def test_a_finished_call_is_in_the_database(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(3000))
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, QUIET_AGENT) as gw:
        result = await run_sipp_async("uac_pcmu", gw.target, log_dir=tmp_path / "sipp",
                                      hold_ms=3000, keys={"audio_file": str(audio)},
                                      timeout_s=30)
        await gw.wait_log("call record: ")
        shown = await asyncio.to_thread(wait_until, lambda: _try_show(gw, "w1:1"), 10.0,
                                        "the record in the database")
        listed = await asyncio.to_thread(_calls, gw, "list")
    assert result.ok, result.describe()
    assert shown["state"] == "ended" and shown["kind"] == "bridged"
    assert shown["direction"] == "inbound" and shown["route"] == "all"
    assert shown["end_reason"] == "caller hung up"
    assert "w1:1" in listed
    assert (tmp_path / "calls.db").exists()


async def test_a_call_live_when_the_control_process_is_killed_is_marked_unknown(
        tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(30000))
    database = {"records": {"database": str(tmp_path / "calls.db")}}
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    async with SimulatorServer() as sim:
        async with run_gateway(tmp_path / "first", sim, QUIET_AGENT, extra=database) as gw:
            with start_sipp("uac_pcmu", gw.target, log_dir=tmp_path / "sipp", hold_ms=30000,
                            keys={"audio_file": str(audio)}, timeout_s=45):
                await asyncio.to_thread(wait_until, lambda: control_get(gw, "/v1/calls")[
                    "calls"], 20.0, "a live call")
                await asyncio.to_thread(wait_until, lambda: _try_show(gw, "w1:1"), 10.0,
                                        "the live row")
                gw.signal(signal.SIGKILL)
                await asyncio.to_thread(gw.proc.wait, 20.0)
        async with run_gateway(tmp_path / "second", sim, QUIET_AGENT, extra=database) as again:
            row = await asyncio.to_thread(
                wait_until, lambda: (r := _try_show(again, "w1:1")) and r["state"] != "live"
                and r, 15.0, "the stale row marked")
            # The new control process knows the call only from its records, and says so.
            api = await asyncio.to_thread(control_get, again, "/v1/calls/w1:1")
            listed = await asyncio.to_thread(control_get, again,
                                             "/v1/calls?records=10&state=unknown")
    assert row["state"] == "unknown"
    assert api["call"]["live"] is False and api["call"]["state"] == "unknown"
    assert [r["call_id"] for r in listed["records"]] == ["w1:1"]
    assert row["end_reason"] == "unknown: the control process stopped before the call ended"


def _try_show(gw: Gateway, call_id: str) -> dict[str, Any] | None:
    try:
        shown: dict[str, Any] = _calls(gw, "show", call_id)
    except subprocess.CalledProcessError:
        return None
    return shown

"""One SIP address, several workers: the control process, pjsua2 workers and a Kamailio front.

Real processes only: ``gateway run`` starts its SIP workers (pjsua2, one endpoint each) and a
Kamailio front on 127.0.0.1; SIPp calls the front's address. With 4 workers of 3 calls each,
12 callers must all hear their agent (in the RTP each call's stream carried, captured by
tcpdump) while the front spreads them 3 per worker, and the 13th caller gets 503 with
``Retry-After`` from the front. A worker killed with SIGKILL mid-call has its call recorded as
ended by the control process with the reason, new calls go to the others, and the worker comes
back and takes calls again. SIGTERM drains: a live call goes on, a new INVITE gets 503, and the
process exits with nothing left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from gateway.sim.scenario import parse_scenarios
from gateway.sim.server import SimOptions, SimulatorServer
from tests.sip.gateway import (
    Gateway,
    control_get as _get,
    control_post,
    run_gateway,
    wait_until as _wait,
)
from tests.sip.test_capacity import GREETING_AGENT
from tests.support.audio import read_wav, rms_dbfs, silence_pcm16, speech_pcm16, write_g711
from tests.support.capture import Capture
from tests.support.ports import free_udp_port, free_udp_port_block
from tests.support.rtp import decode_stream, frame_dbfs, rtp_streams
from tests.support.sipp import run_sipp_async, start_sipp

pytestmark = [pytest.mark.sip, pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("kamailio") is None,
                                 reason="kamailio is installed by scripts/dev.sh setup")]

WORKERS = 4
PER_WORKER = 3

CLOSED_NINES = """
agents:
  greeter:
    instructions: You are a test agent that greets callers.
routes:
  - name: closed
    match: {to: {prefix: "9"}}
    reject: {code: 486}
  - name: all
    agent: greeter
"""


def _front_config(workers: int = WORKERS) -> dict[str, Any]:
    return {"workers": workers, "front": "kamailio", "max_calls": PER_WORKER,
            "worker_port_start": free_udp_port_block(workers),
            "rtp_port_start": free_udp_port_block(40 * workers),
            "rtp_port_range": 40 * workers}


def _worker_pids(gw: Gateway) -> dict[str, int]:
    return {w["worker_id"]: w["pid"] for w in _get(gw, "/v1/calls")["workers"]
            if w["state"] == "up"}


async def test_twelve_callers_over_four_workers_and_the_thirteenth_gets_503(
        tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(2000))
    media_port = free_udp_port_block(4)
    sip = _front_config()
    calls = WORKERS * PER_WORKER
    async with SimulatorServer(options=SimOptions(speed=4.0, tts_engine="tone")) as sim, \
            run_gateway(tmp_path, sim, GREETING_AGENT, sip=sip) as gw:
        rtp_low = gw.rtp_port_start
        with Capture(tmp_path / "rtp.pcap", f"udp and dst port {media_port}") as cap, \
                start_sipp("uac_pcmu", gw.target, log_dir=tmp_path / "many",
                           media_port=media_port, calls=calls, concurrent=calls, rate=10,
                           hold_ms=10_000, keys={"audio_file": str(audio)},
                           timeout_s=60) as many:
            live = await asyncio.to_thread(
                _wait, lambda: len(_get(gw, "/v1/calls")["calls"]) == calls or None, 40.0,
                "12 live calls")
            assert live
            workers = _get(gw, "/v1/calls")["workers"]
            refused = await run_sipp_async("uac_busy_retry_after", gw.target,
                                           log_dir=tmp_path / "extra", timeout_s=15)
            result = await asyncio.to_thread(many.result, 60.0)
        assert refused.ok, refused.describe()
        assert result.ok, result.describe()
        assert result.final_statuses() == [200] * calls
    # Kamailio's call-load dispatching filled every worker to its capacity.
    assert sorted(w["active"] for w in workers) == [PER_WORKER] * WORKERS, workers
    streams = [s for s in rtp_streams(cap.packets())
               if rtp_low <= s.sport < rtp_low + 40 * WORKERS]
    assert len(streams) == calls, f"{len(streams)} gateway RTP streams"
    heard = sum(sum(level > -45.0 for level in frame_dbfs(decode_stream(s))) >= 25
                for s in streams)
    assert heard == calls, f"only {heard} of {calls} callers heard their agent"


async def test_a_killed_worker_ends_its_calls_and_comes_back(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(2000))
    sip = _front_config(workers=2)
    async with SimulatorServer(options=SimOptions(speed=4.0, tts_engine="tone")) as sim, \
            run_gateway(tmp_path, sim, GREETING_AGENT, sip=sip) as gw:
        with start_sipp("uac_pcmu", gw.target, log_dir=tmp_path / "victim",
                        media_port=free_udp_port_block(4), calls=1, hold_ms=30_000,
                        keys={"audio_file": str(audio)}, timeout_s=40):
            call = await asyncio.to_thread(
                _wait, lambda: (_get(gw, "/v1/calls")["calls"] or [None])[0], 20.0,
                "the call to be live")
            before = _worker_pids(gw)
            victim = call["worker_id"]
            os.kill(before[victim], signal.SIGKILL)
            ended = await asyncio.to_thread(
                _wait, lambda: (c := _get(gw, f"/v1/calls/{call['call_id']}")["call"]).get(
                    "end_reason") and c, 10.0, "the call to be recorded ended")
            assert ended["end_reason"] == f"worker {victim} died: killed by SIGKILL", ended
            # New calls go to the other worker meanwhile.
            other = await run_sipp_async("uac_pcmu", gw.target, log_dir=tmp_path / "other",
                                         media_port=free_udp_port_block(4), hold_ms=2000,
                                         keys={"audio_file": str(audio)}, timeout_s=30)
            assert other.ok, other.describe()
        assert f"worker {victim} (pid {before[victim]}) went down: killed by SIGKILL" \
            in gw.log()
        # The worker is back (a new process) and the front sends it calls again.
        after = await asyncio.to_thread(
            _wait, lambda: (pids := _worker_pids(gw)).get(victim, before[victim])
            != before[victim] and len(pids) == 2 and pids, 30.0, "the worker to come back")
        assert after[victim] != before[victim]
        again = [await run_sipp_async("uac_pcmu", gw.target, log_dir=tmp_path / f"again{i}",
                                      media_port=free_udp_port_block(4), hold_ms=4000,
                                      keys={"audio_file": str(audio)}, timeout_s=30)
                 for i in range(3)]
        assert all(r.ok for r in again), [r.describe() for r in again if not r.ok]
        assert f"worker {victim} ready (pid {after[victim]})" in gw.log()


async def test_sigterm_drains_then_exits_with_nothing_left(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(2000))
    sip = _front_config(workers=2)
    async with SimulatorServer(options=SimOptions(speed=4.0, tts_engine="tone")) as sim, \
            run_gateway(tmp_path, sim, GREETING_AGENT, sip=sip, drain_timeout_s=20) as gw:
        with start_sipp("uac_pcmu", gw.target, log_dir=tmp_path / "live",
                        media_port=free_udp_port_block(4), calls=1, hold_ms=6000,
                        keys={"audio_file": str(audio)}, timeout_s=40) as live:
            await asyncio.to_thread(
                _wait, lambda: _get(gw, "/v1/calls")["calls"], 20.0, "the call to be live")
            pids = _worker_pids(gw)
            gw.signal(signal.SIGTERM)
            await gw.wait_log("draining: no new calls")
            refused = await run_sipp_async("uac_busy_retry_after", gw.target,
                                           log_dir=tmp_path / "new", timeout_s=15)
            assert refused.ok, refused.describe()
            result = await asyncio.to_thread(live.result, 30.0)
        # The live call ran to its end (SIPp hung up after 6 s), not cut by the drain.
        assert result.ok, result.describe()
        assert await asyncio.to_thread(gw.proc.wait, 30.0) == 0
        log, front_port = gw.log(), gw.port
    assert "drained: every worker has exited" in log
    run_dir = re.search(r"IPC at (\S+)/ipc/workers.sock", log)
    assert run_dir
    assert _left_behind(pids.values(), Path(run_dir.group(1)), front_port) == []


def _left_behind(pids: Any, run_dir: Path, front_port: int) -> list[str]:
    left = [f"worker {pid}" for pid in pids if Path(f"/proc/{pid}").exists()]
    if run_dir.exists():
        left.append(f"run directory {run_dir}")
    if _udp_bound(front_port):
        left.append(f"UDP port {front_port}")
    return left


def _udp_bound(port: int) -> bool:
    hexport = f":{port:04X} "
    return any(hexport in line for line in Path("/proc/net/udp").read_text().splitlines())


async def test_refer_and_dtmf_reach_the_call_through_the_front(tmp_path: Path) -> None:
    """In-dialog both ways: the worker's REFER out, the caller's NOTIFYs and RFC 4733 in."""
    from tests.sip.test_agents_voice_assistant import DIALPLAN, TRANSFER

    speech = write_g711(tmp_path / "caller.ulaw", silence_pcm16(3500)
                        + speech_pcm16("Operator please.") + silence_pcm16(20000))
    quiet = write_g711(tmp_path / "silence.ulaw", silence_pcm16(20000))
    async with SimulatorServer(scenarios=parse_scenarios(TRANSFER)) as sim, \
            run_gateway(tmp_path, sim, DIALPLAN, sip=_front_config(workers=2)) as gw:
        refer = await run_sipp_async("uac_transferee", gw.target, log_dir=tmp_path / "refer",
                                     keys={"audio_file": str(speech)}, timeout_s=40)
        dtmf = await run_sipp_async("uac_dtmf_transferee", gw.target,
                                    log_dir=tmp_path / "dtmf",
                                    keys={"audio_file": str(quiet), "dtmf_digit": "0",
                                          "dtmf_delay_ms": "1500"}, timeout_s=40)
        await gw.wait_log("DTMF rule 0 -> transfer")
        log = gw.log()
    assert refer.ok, refer.describe()
    assert "REFER Refer-To sip:operator@127.0.0.1" in refer.action_log
    assert dtmf.ok, dtmf.describe()
    assert "REFER Refer-To sip:operator@127.0.0.1" in dtmf.action_log
    assert "transferred to sip:operator@127.0.0.1" in log


async def test_sighup_reloads_every_worker_and_a_bad_plan_reaches_none(tmp_path: Path) -> None:
    async with SimulatorServer(options=SimOptions(tts_engine="tone")) as sim, \
            run_gateway(tmp_path, sim, GREETING_AGENT, sip=_front_config(workers=2)) as gw:
        gw.dialplan_path.write_text(CLOSED_NINES)
        gw.signal(signal.SIGHUP)
        await gw.wait_log("is valid (generation 2): pushed to 2 worker(s)")
        await asyncio.to_thread(
            _wait, lambda: gw.log().count("(generation 2) in force") == 2, 10.0,
            "both workers to switch")
        busy = await run_sipp_async("uac_expect_status", gw.target, service="900",
                                    log_dir=tmp_path / "busy",
                                    keys={"expected_status": "486"}, timeout_s=15)
        assert busy.ok, busy.describe()
        gw.dialplan_path.write_text("routes: [{name: broken, agent: nobody}]\n")
        gw.signal(signal.SIGHUP)
        await gw.wait_log("dialplan reload refused, keeping the old one (no worker gets it)")
        # The workers kept the good plan, and none was asked to read the bad one.
        still = await run_sipp_async("uac_expect_status", gw.target, service="901",
                                     log_dir=tmp_path / "still",
                                     keys={"expected_status": "486"}, timeout_s=15)
        assert still.ok, still.describe()
        assert gw.log().count("(generation 2) in force") == 2
        assert "generation 3" not in gw.log()


async def test_the_front_registers_once_and_survives_a_worker_killed(tmp_path: Path) -> None:
    """Registration mode: the extension registers once, with the front as its Contact."""
    from tests.support.kamailio import TEST_PASSWORD, Kamailio

    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(6000))
    media_port = free_udp_port_block(4)
    with Kamailio(tmp_path / "pbx", auth=True) as pbx:
        account = {"name": "pbx", "registrar": pbx.uri, "user": "gw",
                   "password_env": "GW_PBX_PASSWORD", "expires_s": 60}
        sip = {**_front_config(workers=2), "accounts": [account]}
        async with SimulatorServer(options=SimOptions(speed=4.0, tts_engine="tone")) as sim, \
                run_gateway(tmp_path, sim, GREETING_AGENT, sip=sip,
                            env={"GW_PBX_PASSWORD": TEST_PASSWORD}) as gw:
            contacts = await asyncio.to_thread(pbx.wait_registered, "gw", 15.0)
            # One registration, and it names the front's address, not a worker's.
            assert [c.uri.split(";")[0] for c in contacts] == [f"sip:gw@127.0.0.1:{gw.port}"]
            assert "registration pbx" not in gw.log()  # no worker registered by itself
            first = await _call_via_pbx(pbx, tmp_path / "first", media_port, audio)
            os.kill(_worker_pids(gw)["w1"], signal.SIGKILL)
            await gw.wait_log("worker w1 (pid")
            assert len(pbx.registered_contacts("gw")) == 1
            second = await _call_via_pbx(pbx, tmp_path / "second", media_port, audio)
            log = gw.log()
            assert TEST_PASSWORD not in log
    # Both calls the PBX routed reached an agent.
    assert log.count("-> route all, agent greeter") == 2
    for result in (first, second):
        assert result.ok, result.describe()


async def _call_via_pbx(pbx: Any, log_dir: Path, media_port: int, audio: Path) -> Any:
    return await run_sipp_async("uac_via_proxy", pbx.address, service="gw", log_dir=log_dir,
                                media_port=media_port, hold_ms=3000,
                                keys={"audio_file": str(audio)}, timeout_s=30)


async def test_a_killed_control_process_takes_its_workers_and_front_with_it(
        tmp_path: Path) -> None:
    async with SimulatorServer(options=SimOptions(tts_engine="tone")) as sim, \
            run_gateway(tmp_path, sim, GREETING_AGENT, sip=_front_config(workers=2)) as gw:
        children = list(_worker_pids(gw).values())
        front = re.search(r"front: kamailio pid (\d+)", gw.log())
        assert front
        children.append(int(front.group(1)))
        gw.signal(signal.SIGKILL)
        gone = await asyncio.to_thread(
            _wait, lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), 15.0,
            "the workers and Kamailio to exit")
        assert gone
        assert not _udp_bound(gw.port)
        # The killed process could not remove its run directory; the next start does.
        run_dir = re.search(r"IPC at (\S+)/ipc/workers.sock", gw.log())
        assert run_dir
    (tmp_path / "next").mkdir()
    async with SimulatorServer(options=SimOptions(tts_engine="tone")) as sim, \
            run_gateway(tmp_path / "next", sim, GREETING_AGENT,
                        sip=_front_config(workers=2)) as again:
        assert f"removing the run directory of a control process that is gone: " \
            f"{run_dir.group(1)}" in again.log()


TOOL_PLAN = """
tools:
  whoami: {python: "tests.fixtures.tools.import_marker:whoami"}
agents:
  tester:
    instructions: You are the tool tester of the gateway.
    tools: [whoami]
routes:
  - name: all
    agent: tester
"""

TOOL_BOOK = """
scenarios:
  tester:
    match: {instructions: "(?i)tool tester"}
    turns:
      - call: {name: whoami, arguments: {}}
      - say: "Process {tool_output} answered."
"""


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def test_tools_run_in_the_control_process_pool_never_in_a_worker(
        tmp_path: Path) -> None:
    """User code stays out of SIP workers: the control process's one pool runs every tool."""
    from tests.sip.observe import function_calls, output_of

    imports = tmp_path / "imports.log"
    audio = write_g711(tmp_path / "speech.ulaw", silence_pcm16(800)
                       + speech_pcm16("What is your process id?") + silence_pcm16(6000))
    async with SimulatorServer(scenarios=parse_scenarios(TOOL_BOOK),
                               options=SimOptions(tts_engine="tone")) as sim, \
            run_gateway(tmp_path, sim, TOOL_PLAN, sip=_front_config(workers=2),
                        env={"GATEWAY_TEST_IMPORT_LOG": str(imports)}) as gw:
        workers = _worker_pids(gw)
        control = gw.pid
        with start_sipp("uac_pcmu", gw.target, log_dir=tmp_path / "call",
                        media_port=free_udp_port_block(4), calls=1, hold_ms=7000,
                        keys={"audio_file": str(audio)}, timeout_s=30) as sipp:
            live = await asyncio.to_thread(
                _wait, lambda: (_get(gw, "/v1/calls")["calls"] or [None])[0], 20.0,
                "the call to be live")
            result = await asyncio.to_thread(sipp.result, 30.0)
        assert result.ok, result.describe()
        await gw.wait_log("tool worker process(es)")
        # The worker reported what happened on the call as it happened (call_event).
        ended = await asyncio.to_thread(
            _wait, lambda: (c := _get(gw, f"/v1/calls/{live['call_id']}")["call"]).get(
                "end_reason") and c, 10.0, "the call to be recorded ended")
        assert ended["events"].get("tool") == 1 and ended["events"].get("state") == 1, ended
        ran_in = output_of(function_calls(sim.sessions[0]), "whoami")
        assert isinstance(ran_in, int)
        parent = _parent_pid(ran_in)
    importers = {int(line) for line in imports.read_text().split()}
    assert ran_in not in workers.values()
    assert parent == control  # a tool worker of the control process's pool
    assert ran_in in importers and control in importers
    assert not importers & set(workers.values()), (importers, workers)


@pytest.mark.skipif(not Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so").exists(),
                    reason="kamailio-tls-modules is installed by scripts/dev.sh setup")
async def test_a_tls_caller_reaches_an_agent_through_the_front(tmp_path: Path) -> None:
    """The front listens on TLS (Kamailio's tls module) and relays to UDP workers."""
    from tests.sip.gateway import GATEWAY, REPO
    from tests.support.ports import free_tcp_port, free_udp_port
    from tests.support.tls import self_signed

    cert, key = await asyncio.to_thread(self_signed, tmp_path)
    tls_port = free_tcp_port()
    sip = {**_front_config(workers=2), "transports": [
        {"type": "udp", "host": "127.0.0.1", "port": free_udp_port()},
        {"type": "tls", "host": "127.0.0.1", "port": tls_port, "cert_file": str(cert),
         "key_file": str(key)}]}
    async with SimulatorServer(options=SimOptions(tts_engine="tone")) as sim, \
            run_gateway(tmp_path, sim, GREETING_AGENT, sip=sip) as gw:
        proc = await asyncio.create_subprocess_exec(
            *GATEWAY, "call", f"sip:100@127.0.0.1:{tls_port};transport=tls",
            "--transport", "tls", "--duration", "4", "--record", str(tmp_path / "heard.wav"),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(proc.communicate(), 40)
        assert proc.returncode == 0, out
        report = json.loads(out)
        assert report["status"] == 200, report
        await gw.wait_log("call record:")
        assert sim.sessions, "the call never reached the agent"
        assert f"tls:127.0.0.1:{tls_port}" in gw.log()
    heard, rate = read_wav(tmp_path / "heard.wav")
    # The greeting came back over the front's TLS leg: some 100 ms frames are far from silent.
    frames = [heard[i:i + rate // 5] for i in range(0, len(heard), rate // 5)]
    assert sum(rms_dbfs(f) > -35.0 for f in frames) >= 3, [round(rms_dbfs(f)) for f in frames]


async def test_a_call_the_gateway_places_leaves_through_the_front(tmp_path: Path) -> None:
    """``POST /v1/calls`` behind the front: the callee sees the front (its Via on top and its
    Record-Route), the whole dialog stays on that path, and the call completes."""
    sip = {**_front_config(workers=2), "outbound_allow": [r"sip:business@127\.0\.0\.1:\d+"]}
    audio = write_g711(tmp_path / "business.ulaw",
                       silence_pcm16(1000) + speech_pcm16("Acme Plumbing, hello.")
                       + silence_pcm16(20000))
    port = free_udp_port()
    async with SimulatorServer(options=SimOptions(tts_engine="tone")) as sim, \
            run_gateway(tmp_path, sim, GREETING_AGENT, sip=sip) as gw:
        with start_sipp("uas_answer_speak", None, log_dir=tmp_path / "business",
                        local_port=port, media_port=free_udp_port_block(4),
                        keys={"audio_file": str(audio)}, timeout_s=60) as business:
            status, placed = await asyncio.to_thread(control_post, gw, "/v1/calls", {
                "to": f"sip:business@127.0.0.1:{port}", "agent": "greeter",
                "max_duration_s": 4})
            assert status == 201, placed
            result = await asyncio.to_thread(business.result, 45.0)
        call = await asyncio.to_thread(
            _wait, lambda: _ended(gw, placed["call_id"]), 20.0, "the call's end")
    assert result.ok, result.describe()  # answered, then the gateway's BYE reached SIPp
    (invite,) = result.received(method="INVITE")
    front = f"127.0.0.1:{gw.port}"
    assert front in (invite.header("Via") or ""), invite.text
    assert front in (invite.header("Record-Route") or ""), invite.text
    (bye,) = result.received(method="BYE")
    assert front in (bye.header("Via") or ""), bye.text
    assert call["record"]["direction"] == "outbound" and call["record"]["answered"], call
    assert call["record"]["sip_call_id"] == invite.call_id
    rtp = call["record"]["rtp"]  # SIPp played its audio file: the gateway received it
    assert rtp["rx_packets"] > 50 and rtp["rx_lost"] == 0, rtp


def _ended(gw: Gateway, call_id: str) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = _get(gw, f"/v1/calls/{call_id}")["call"]
    except urllib.error.HTTPError:
        return None
    return body if body.get("live") is False else None

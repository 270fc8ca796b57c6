"""Ways calls reach the gateway: registration at a real Kamailio, TCP and TLS transports, and a
dialplan reloaded on SIGHUP while the gateway runs."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from gateway.sim.server import SimulatorServer
from tests.sip.gateway import GATEWAY, QUIET_AGENT, REPO, Gateway, place_call, run_gateway
from tests.support.audio import silence_pcm16, speech_like, write_g711
from tests.support.capture import Capture
from tests.support.kamailio import TEST_PASSWORD, Kamailio
from tests.support.ports import free_tcp_port, free_udp_port_block
from tests.support.rtp import decode_stream, rtp_streams
from tests.support.sipp import run_sipp_async
from tests.support.tls import self_signed

pytestmark = [pytest.mark.sip, pytest.mark.timeout(120)]

GREETING_AGENT = """
agents:
  greeter:
    instructions: You are a test agent that greets callers.
    greeting: Hello, you reached the gateway through the proxy.
routes:
  - name: all
    agent: greeter
"""


async def test_registers_at_kamailio_and_takes_the_call_it_routes(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(6000))
    media_port = free_udp_port_block(4)
    with Kamailio(tmp_path / "kam", auth=True) as kamailio:
        account = {"name": "pbx", "registrar": kamailio.uri, "user": "gw",
                   "password_env": "GW_PBX_PASSWORD", "expires_s": 60}
        async with SimulatorServer() as sim, run_gateway(
                tmp_path, sim, GREETING_AGENT, sip={"accounts": [account]},
                env={"GW_PBX_PASSWORD": TEST_PASSWORD}) as gw:
            await gw.wait_log("registration pbx: 200")
            contacts = await asyncio.to_thread(kamailio.wait_registered, "gw")
            assert contacts[0].uri.startswith(f"sip:gw@127.0.0.1:{gw.port}")
            assert "AUTH challenge REGISTER" in kamailio.log_text()
            with Capture(tmp_path / "rtp.pcap", f"udp and dst port {media_port}") as cap:
                result = await run_sipp_async("uac_via_proxy", kamailio.address, service="gw",
                                              log_dir=tmp_path, media_port=media_port,
                                              hold_ms=4000, keys={"audio_file": str(audio)},
                                              timeout_s=30)
            assert result.ok, result.describe()
            await gw.wait_log("route all, agent greeter")
            assert TEST_PASSWORD not in gw.log()
        # Stopping the gateway un-registers it.
        await asyncio.to_thread(kamailio.wait_unregistered, "gw", 5.0)
    back = decode_stream(rtp_streams(cap.packets())[0])
    assert speech_like(back)


async def test_bad_registration_password_is_reported_without_the_secret(tmp_path: Path) -> None:
    wrong = "definitely-not-the-password"
    with Kamailio(tmp_path / "kam", auth=True) as kamailio:
        account = {"name": "pbx", "registrar": kamailio.uri, "user": "gw",
                   "password_env": "GW_PBX_PASSWORD"}
        async with SimulatorServer() as sim, run_gateway(
                tmp_path, sim, sip={"accounts": [account]},
                env={"GW_PBX_PASSWORD": wrong}) as gw:
            await gw.wait_log("registration pbx: 401", timeout_s=15)
            assert wrong not in gw.log()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_tcp_and_tls_transports_take_calls(tmp_path: Path, transport: str) -> None:
    port = free_tcp_port()
    spec: dict[str, object] = {"type": transport, "host": "127.0.0.1", "port": port}
    if transport == "tls":
        cert, key = self_signed(tmp_path)
        spec.update(cert_file=str(cert), key_file=str(key))
    async with SimulatorServer() as sim, run_gateway(
            tmp_path, sim, GREETING_AGENT, sip={"transports": [
                {"type": "udp", "host": "127.0.0.1", "port": free_udp_port_block(1)}, spec]}) as gw:
        await gw.wait_log(f"{transport}:127.0.0.1:{port}")
        proc = await asyncio.create_subprocess_exec(
            *GATEWAY, "call", f"sip:100@127.0.0.1:{port}", "--transport", transport,
            "--duration", "2", cwd=REPO, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, out
        assert '"status": 200' in out.decode()
        await gw.wait_log("call ended")
        assert sim.sessions, "the call never reached the agent"


RELOADED = """
agents:
  quiet:
    instructions: You are a test agent.
routes:
  - name: closed
    reject: {code: 480, reason: Temporarily Unavailable}
"""


async def _expect(gw: Gateway, tmp_path: Path, status: int) -> None:
    result = await run_sipp_async("uac_expect_status", gw.target, log_dir=tmp_path,
                                  keys={"expected_status": str(status)}, timeout_s=15)
    assert result.ok, result.describe()


async def test_sighup_reloads_the_dialplan_and_refuses_a_broken_one(tmp_path: Path) -> None:
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, QUIET_AGENT) as gw:
        report = await place_call(gw, tmp_path, duration_s=1)
        assert report["status"] == 200
        gw.dialplan_path.write_text(RELOADED)
        gw.signal(signal.SIGHUP)
        await gw.wait_log("dialplan reloaded")
        await _expect(gw, tmp_path, 480)
        gw.dialplan_path.write_text("routes:\n  - name: x\n    agent: missing\n")
        gw.signal(signal.SIGHUP)
        await gw.wait_log("dialplan reload refused, keeping the old one")
        assert f"{gw.dialplan_path}:3" in gw.log()  # the error names file and line
        await _expect(gw, tmp_path, 480)


async def test_registration_is_refreshed_before_it_expires(tmp_path: Path) -> None:
    with Kamailio(tmp_path / "kam", auth=True) as kamailio:
        account = {"name": "pbx", "registrar": kamailio.uri, "user": "gw",
                   "password_env": "GW_PBX_PASSWORD", "expires_s": 30}
        async with SimulatorServer() as sim, run_gateway(
                tmp_path, sim, sip={"accounts": [account]},
                env={"GW_PBX_PASSWORD": TEST_PASSWORD}) as gw:
            await gw.wait_log("registration pbx: 200")
            # pjsua refreshes 5 s before expiry: a second 200 well within the 30 s lifetime.
            await asyncio.to_thread(
                gw.proc.wait_for_log, lambda log: log.count("registration pbx: 200") >= 2, 32.0)
            assert kamailio.registered_contacts("gw")

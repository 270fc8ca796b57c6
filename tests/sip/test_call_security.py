"""Encrypted and well-kept calls: SDES-SRTP, TLS server verification, RFC 4028 session timers,
and a caller REFER the operator allowed.

Real peers on 127.0.0.1: the pjsua2 caller (``gateway call --srtp``), a TLS registrar written
with Python's ``ssl`` (a real TLS 1.2 handshake against the wheel's OpenSSL), the raw SIP peer,
and the echo user agent as a transfer target.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from gateway.sim.server import SimulatorServer
from tests.sip.gateway import GATEWAY, REPO, run_gateway
from tests.sip.observe import call_record
from tests.support.audio import read_wav, speech_like
from tests.support.capture import Capture
from tests.support.echo_ua import EchoUa
from tests.support.ports import free_tcp_port, free_udp_port_block
from tests.support.rawsip import Dialog, RawSipPeer, RtpSender, SipMsg, media_address, sdp_offer
from tests.support.sipp import run_sipp_async

pytestmark = [pytest.mark.sip, pytest.mark.smoke, pytest.mark.timeout(120)]

GREETING_AGENT = """
agents:
  greeter:
    instructions: You are a test agent that greets callers.
    greeting: Hello, this line is encrypted.
routes:
  - name: all
    agent: greeter
"""


async def test_srtp_call_is_encrypted_and_plain_rtp_is_refused(tmp_path: Path) -> None:
    recording = tmp_path / "heard.wav"
    async with SimulatorServer() as sim, run_gateway(
            tmp_path, sim, GREETING_AGENT,
            sip={"srtp": "mandatory", "srtp_secure_signaling": 0}) as gw:
        with Capture(tmp_path / "sip.pcap", f"udp and port {gw.port}") as cap:
            proc = await asyncio.create_subprocess_exec(
                *GATEWAY, "call", gw.uri(), "--srtp", "mandatory", "--duration", "4",
                "--record", str(recording), cwd=REPO, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL)
            out, _ = await asyncio.wait_for(proc.communicate(), 40)
        assert proc.returncode == 0, out
        assert '"status": 200' in out.decode()
        answers = [p.payload.decode("utf-8", "replace") for p in cap.packets()
                   if p.payload.startswith(b"SIP/2.0 200") and b"m=audio" in p.payload]
        assert answers, "no SDP answer seen"
        assert "RTP/SAVP" in answers[0] and "a=crypto:" in answers[0]
        # The greeting reached the caller through the encrypted stream.
        assert speech_like(read_wav(recording)[0])
        # A caller offering plain RTP is refused while SRTP is mandatory.
        result = await run_sipp_async("uac_expect_status", gw.target, log_dir=tmp_path,
                                      keys={"expected_status": "488"}, timeout_s=15)
        assert result.ok, result.describe()


def _cert(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


class _TlsRegistrar:
    """Accepts TLS connections and answers every REGISTER with 200; records what it saw."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.registers: list[str] = []
        self.handshake_errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tls-registrar", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except TimeoutError:
                continue
            raw.settimeout(5)
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as conn:
                    self._serve(conn)
            except (ssl.SSLError, OSError) as exc:
                self.handshake_errors.append(type(exc).__name__)

    def _serve(self, conn: ssl.SSLSocket) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65535)
            except TimeoutError:
                continue
            if not chunk:
                return
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                text = head.decode()
                if not text.startswith("REGISTER"):
                    continue
                self.registers.append(text)
                msg = SipMsg(text + "\r\n\r\n", ("127.0.0.1", 0))
                lines = ["SIP/2.0 200 OK", *[f"Via: {v}" for v in msg.headers("Via")],
                         f"From: {msg.header('From')}", f"To: {msg.header('To')};tag=reg1",
                         f"Call-ID: {msg.header('Call-ID')}", f"CSeq: {msg.header('CSeq')}",
                         f"Contact: {msg.header('Contact')};expires=60", "Content-Length: 0",
                         "", ""]
                conn.sendall("\r\n".join(lines).encode())


@pytest.mark.parametrize("trusted", [True, False])
async def test_outgoing_tls_verifies_the_server_certificate(tmp_path: Path,
                                                            trusted: bool) -> None:
    server_cert, server_key = _cert(tmp_path, "registrar")
    other_cert, _ = _cert(tmp_path, "someone-else")
    own_cert, own_key = _cert(tmp_path, "gateway")
    registrar = _TlsRegistrar(server_cert, server_key)
    try:
        tls = {"type": "tls", "host": "127.0.0.1", "port": free_tcp_port(),
               "cert_file": str(own_cert), "key_file": str(own_key),
               "ca_file": str(server_cert if trusted else other_cert)}
        account = {"name": "pbx", "user": "gw", "expires_s": 60,
                   "registrar": f"sip:127.0.0.1:{registrar.port};transport=tls"}
        async with SimulatorServer() as sim, run_gateway(tmp_path, sim, sip={
                "transports": [{"type": "udp", "host": "127.0.0.1",
                                "port": free_udp_port_block(1)}, tls],
                "accounts": [account]}) as gw:
            if trusted:
                await gw.wait_log("registration pbx: 200", timeout_s=15)
                assert registrar.registers
            else:
                await gw.wait_log("registration pbx: ", timeout_s=15)
                assert "registration pbx: 200" not in gw.log()
                assert not registrar.registers, "REGISTER sent to an unverified server"
                assert "registration pbx: 503 SSL certificate verification error" in gw.log()
    finally:
        registrar.close()


def _timer_call(gw_port: int, headers: tuple[str, ...]) -> tuple[SipMsg, SipMsg]:
    media = free_udp_port_block(2)
    with RawSipPeer(("127.0.0.1", gw_port)) as peer:
        dialog = Dialog(peer, f"sip:100@127.0.0.1:{gw_port}")
        answer = dialog.invite(sdp_offer(media), headers=headers)
        assert answer.status == 200, answer.text
        with RtpSender(media, media_address(answer.body)):
            refresh = dialog.request("UPDATE", headers=headers)
            dialog.request("BYE")
    return answer, refresh


async def test_session_timers_are_negotiated_with_a_peer_that_supports_them(
        tmp_path: Path) -> None:
    timer = ("Supported: timer", "Session-Expires: 120;refresher=uac", "Min-SE: 90")
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        answer, refresh = await asyncio.to_thread(_timer_call, gw.port, timer)
    expires = answer.header("Session-Expires") or answer.header("x") or ""
    assert expires.startswith("120") and "refresher=uac" in expires, answer.text
    assert refresh.status == 200 and (refresh.header("Session-Expires") or "").startswith("120")


async def test_session_timers_off_leaves_them_out(tmp_path: Path) -> None:
    timer = ("Supported: timer", "Session-Expires: 120;refresher=uac", "Min-SE: 90")
    async with SimulatorServer() as sim, run_gateway(
            tmp_path, sim, sip={"session_timers": "off"}) as gw:
        answer, _ = await asyncio.to_thread(_timer_call, gw.port, timer)
    assert answer.header("Session-Expires") is None, answer.text


async def test_allowed_caller_refer_moves_the_conversation_to_the_target(
        tmp_path: Path) -> None:
    """A REFER the operator allowed: the gateway calls the target and the agent goes on there.

    The transferor (the raw peer) hangs up after the final NOTIFY; the conversation carries
    on with the echo user agent, and when that hangs up the call has one record.
    """
    with EchoUa(tmp_path / "target", max_calls=1) as target:
        target_uri = f"sip:echo@127.0.0.1:{target.port}"
        async with SimulatorServer() as sim, run_gateway(
                tmp_path, sim, sip={"caller_refer_allow": [re.escape(target_uri)]}) as gw:
            def transfer() -> tuple[SipMsg, SipMsg]:
                media = free_udp_port_block(2)
                with RawSipPeer(("127.0.0.1", gw.port)) as peer:
                    dialog = Dialog(peer, f"sip:100@127.0.0.1:{gw.port}")
                    answer = dialog.invite(sdp_offer(media))
                    with RtpSender(media, media_address(answer.body)):
                        accepted = dialog.request("REFER",
                                                  headers=(f"Refer-To: <{target_uri}>",))
                        done = peer.expect(lambda m: m.method == "NOTIFY"
                                           and "SIP/2.0 200" in m.body, 15)
                        dialog.request("BYE")
                return accepted, done
            accepted, _ = await asyncio.to_thread(transfer)
            assert accepted.status == 202, accepted.text
            await asyncio.to_thread(target.wait_event, "IncomingCall", 10)
            await gw.wait_log("the call continues on leg 2")
            session = sim.sessions[0]

            def appended() -> int:
                return sum(e.get("type") == "input_audio_buffer.append"
                           for e in session.received)
            before = appended()
            await asyncio.sleep(2.0)  # the transferor's BYE has been handled meanwhile
            assert not session.closed, "the conversation ended with the transferor"
            # The target's audio now reaches the agent (2 s at 40 ms per append).
            assert appended() - before >= 35
            assert gw.proc.running
            target.stop()  # the target hangs up
            await gw.wait_log("call record:", timeout_s=15)
            record = call_record(gw.log())
            assert record["end_reason"] == "caller hung up"
            assert gw.proc.running

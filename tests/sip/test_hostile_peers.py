"""A caller cannot defraud, crash or strand the gateway: hostile and broken peers on 127.0.0.1.

Each test runs the real gateway (pjsua2 wheel) against a hand-written SIP peer
(:mod:`tests.support.rawsip`) or SIPp, and checks what an operator would: the SIP status and
``Warning`` a refused caller gets, that no call leaves the gateway because a caller asked, that
a vanished caller's call and Realtime session end, that hold does not, and that the process is
still alive and takes a normal call afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.sim.server import SimulatorServer
from tests.sip.gateway import Gateway, place_call, run_gateway
from tests.sip.observe import call_record
from tests.support.audio import silence_pcm16, write_g711
from tests.support.ports import free_udp_port, free_udp_port_block
from tests.support.rawsip import Dialog, RawSipPeer, RtpSender, SipMsg, media_address, sdp_offer
from tests.support.sipp import run_sipp_async, start_sipp

pytestmark = [pytest.mark.sip, pytest.mark.smoke, pytest.mark.timeout(120)]


def _target(gw: Gateway) -> tuple[str, int]:
    return ("127.0.0.1", gw.port)


@contextmanager
def _raw_call(gw: Gateway, user: str = "100") -> Iterator[tuple[Dialog, RtpSender]]:
    """An answered call from a raw peer that keeps RTP flowing; hung up (BYE) at the end."""
    media_port = free_udp_port_block(2)
    with RawSipPeer(_target(gw)) as peer:
        dialog = Dialog(peer, f"sip:{user}@127.0.0.1:{gw.port}")
        final = dialog.invite(sdp_offer(media_port))
        assert final.status == 200, final.text
        with RtpSender(media_port, media_address(final.body)) as rtp:
            yield dialog, rtp
            if dialog.to_tag and not any(m.method == "BYE" and m.status is None
                                         for m in peer.received):
                dialog.request("BYE")


async def _still_takes_calls(gw: Gateway, tmp_path: Path) -> None:
    report = await place_call(gw, tmp_path, duration_s=1)
    assert report["status"] == 200, report
    assert gw.proc.running


async def test_caller_refer_is_refused_and_nothing_is_dialled(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(3.0)
    where = listener.getsockname()[1]
    try:
        async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
            def refer() -> SipMsg:
                with _raw_call(gw) as (dialog, _):
                    return dialog.request("REFER", headers=(
                        f"Refer-To: <sip:999@127.0.0.1:{where}>",
                        f"Referred-By: <sip:raw@127.0.0.1:{dialog.peer.port}>"))
            answer = await asyncio.to_thread(refer)
            assert answer.status == 403, answer.text
            # Nothing was dialled: not a single datagram reached the REFER target.
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(listener.recvfrom, 2048)
            await gw.wait_log("caller REFER to (hidden; logging.call_content shows it) "
                              "refused with 403")
            assert "999@" not in gw.log()  # the target is call content
            await _still_takes_calls(gw, tmp_path)
    finally:
        listener.close()


async def test_vanished_caller_is_hung_up_and_its_realtime_session_closed(
        tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(2000))
    async with SimulatorServer() as sim, run_gateway(
            tmp_path, sim, sip={"rtp_timeout_s": 3}) as gw:
        media_port = free_udp_port_block(4)
        with start_sipp("uac_pcmu", gw.target, log_dir=tmp_path / "sipp",
                        media_port=media_port, hold_ms=60_000,
                        keys={"audio_file": str(audio)}, timeout_s=90) as sipp:
            await asyncio.to_thread(lambda: _wait(lambda: _streaming(sim), 15))
            os.killpg(sipp.process.pid, signal.SIGKILL)  # SIPp dies: no BYE, RTP stops
            await gw.wait_log("no RTP from the caller for 3 s: hanging up", timeout_s=10)
            await gw.wait_log("call record:", timeout_s=10)  # after "call ended"
        record = call_record(gw.log())
        assert record["end_reason"] == "no RTP from the caller for 3 s"
        assert record["answered"] is True
        session = sim.sessions[0]
        await asyncio.to_thread(lambda: _wait(lambda: session.closed, 5))


def _streaming(sim: SimulatorServer, calls: int = 1) -> bool:
    """Whether ``calls`` sessions get caller audio (answered, ACKed, media flowing)."""
    return sum(any(e.get("type") == "input_audio_buffer.append" for e in s.received)
               for s in sim.sessions) >= calls


def _wait(predicate: object, timeout_s: float) -> None:
    import time

    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


async def test_hold_and_resume_do_not_trip_the_rtp_timeout(tmp_path: Path) -> None:
    async with SimulatorServer() as sim, run_gateway(
            tmp_path, sim, sip={"rtp_timeout_s": 2}) as gw:
        def hold_three_ways() -> list[str]:
            answers = []
            with _raw_call(gw) as (dialog, rtp):
                port = media_address(dialog.answer.body if dialog.answer else "")[1]
                del port
                media = free_udp_port_block(2)
                for connection, direction in (("IN IP4 127.0.0.1", "sendonly"),
                                              ("IN IP4 127.0.0.1", "inactive"),
                                              ("IN IP4 0.0.0.0", "sendrecv")):
                    rtp.pause()
                    held = dialog.invite(sdp_offer(media, connection=connection,
                                                   direction=direction))
                    assert held.status == 200, held.text
                    answers.append(held.body)
                    dialog.peer.quiet(3.5)  # longer than the timeout, no RTP: on hold
                    assert not any(m.method == "BYE" for m in dialog.peer.received)
                resumed = dialog.invite(sdp_offer(media))
                assert resumed.status == 200
                rtp.resume()
                dialog.peer.quiet(3.0)
                assert not any(m.method == "BYE" for m in dialog.peer.received)
                bye = dialog.request("BYE")
                assert bye.status == 200
            return answers
        answers = await asyncio.to_thread(hold_three_ways)
        assert "a=recvonly" in answers[0]
        assert "a=inactive" in answers[1]
        await gw.wait_log("call record:")  # logged after "call ended"
        assert call_record(gw.log())["end_reason"] == "caller hung up"
        assert "no RTP from the caller" not in gw.log()


#: Offers the gateway cannot serve: body, extra headers, status, the Warning code when the
#: gateway adds one (pjsua refuses the others itself before any callback, with its own).
BROKEN = {
    "ipv6-only offer": (sdp_offer(4000, connection="IN IP6 ::1"), (), 488, "301"),
    "no audio stream": (sdp_offer(4000).replace("m=audio", "m=video"), (), 488, None),
    "RTP/SAVP while srtp is off": (sdp_offer(4000, proto="RTP/SAVP"), (), 488, None),
    "unknown codec only": (sdp_offer(4000, formats="18").replace("a=rtpmap:0 PCMU/8000\r\n",
                                                                 ""), (), 488, None),
    "not SDP": ("hello", ("text/plain",), 415, None),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
async def test_an_offer_the_gateway_cannot_serve_is_refused_once_and_truthfully(
        tmp_path: Path, case: str) -> None:
    body, headers, status, warning = BROKEN[case]
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        def invite() -> list[SipMsg]:
            with RawSipPeer(_target(gw)) as peer:
                dialog = Dialog(peer, f"sip:100@127.0.0.1:{gw.port}")
                final = dialog.invite(body, content_type="text/plain" if headers
                                      else "application/sdp")
                peer.quiet(1.0)  # ACKed: no retransmission, nothing else may follow
                return [final, *[m for m in peer.received if m is not final]]
        final, *rest = await asyncio.to_thread(invite)
        assert final.status == status, final.text
        if warning:
            assert (final.header("Warning") or "").startswith(warning)
        # Refused at once: no ringing, no second final response, no agent session.
        assert not [m for m in rest if m.status is not None and m.status >= 180]
        assert not sim.sessions
        record = call_record(gw.log())
        assert record["answered"] is False and record["sip_status"] == status
        assert record["end_reason"].startswith(f"refused: {status}")
        assert "Traceback" not in gw.log()
        await _still_takes_calls(gw, tmp_path)


async def test_datagram_shorter_than_its_content_length_gets_400(tmp_path: Path) -> None:
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        def invite() -> SipMsg:
            with RawSipPeer(_target(gw)) as peer:
                dialog = Dialog(peer, f"sip:100@127.0.0.1:{gw.port}")
                text = peer.request_text("INVITE", dialog.request_uri, call_id=dialog.call_id,
                                         from_tag=dialog.from_tag, to=dialog.to, cseq=1,
                                         body=sdp_offer(4000))
                peer.send(text.replace(f"Content-Length: {len(sdp_offer(4000))}",
                                       "Content-Length: 5000").replace(
                    f"Content-Length: {len(text.split(chr(13) + chr(10) * 2)[-1])}",
                    "Content-Length: 5000"))
                return peer.final(dialog.call_id)
        final = await asyncio.to_thread(invite)
        assert final.status == 400, final.text
        assert not sim.sessions
        await _still_takes_calls(gw, tmp_path)


GARBAGE = [
    b"\x00" * 64,
    b"\xff\xfe garbage \r\n\r\n",
    b"INVITE\r\n\r\n",
    b"INVITE sip:100@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n",  # no Via/From/Call-ID
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n\r\n",
    b"\r\n\r\n",
    b"OPTIONS sip:100@127.0.0.1 SIP/2.0\r\n" + b"X-Long: " + b"a" * 6000 + b"\r\n\r\n",
]


async def test_garbage_and_headerless_requests_leave_the_gateway_alive(tmp_path: Path) -> None:
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        def spray() -> list[SipMsg]:
            with RawSipPeer(_target(gw)) as peer:
                for datagram in GARBAGE:
                    peer.send(datagram)
                return peer.quiet(1.0)
        answers = await asyncio.to_thread(spray)
        # Garbage gets silence or a 400, never a call.
        assert all(m.status in (None, 400) for m in answers), [m.first_line for m in answers]
        assert not sim.sessions
        await _still_takes_calls(gw, tmp_path)


async def test_offerless_invite_refused_at_capacity_survives_its_ack(tmp_path: Path) -> None:
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(2000))
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, sip={"max_calls": 3}) as gw:
        with start_sipp("uac_pcmu", gw.target, log_dir=tmp_path / "sipp",
                        media_port=free_udp_port_block(4), hold_ms=15_000, calls=3,
                        concurrent=3, keys={"audio_file": str(audio)}, timeout_s=60):
            await asyncio.to_thread(lambda: _wait(lambda: _streaming(sim, 3), 20))

            def offerless() -> SipMsg:
                with RawSipPeer(_target(gw)) as peer:
                    final = Dialog(peer, f"sip:100@127.0.0.1:{gw.port}").invite("")
                    peer.quiet(1.0)  # the ACK has been sent; the gateway must live on
                    return final
            final = await asyncio.to_thread(offerless)
            assert final.status == 503, final.text
            assert final.header("Retry-After")
            assert gw.proc.running
            await asyncio.to_thread(lambda: _wait(lambda: not gw.proc.running or
                                                  "at capacity" in gw.log(), 5))
            assert gw.proc.running


async def test_sigterm_with_calls_up_sends_bye_and_writes_every_record(tmp_path: Path) -> None:
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        def two_calls() -> list[list[SipMsg]]:
            byes = []
            with _raw_call(gw) as (first, _), _raw_call(gw) as (second, _):
                _wait(lambda: _streaming(sim, 2), 10)
                gw.signal(signal.SIGTERM)
                for dialog in (first, second):
                    bye = dialog.peer.expect(lambda m: m.method == "BYE" and m.status is None,
                                             10)
                    byes.append([bye])
            return byes
        byes = await asyncio.to_thread(two_calls)
        assert len(byes) == 2
        await asyncio.to_thread(gw.proc.wait, 20)
        log = gw.log()
        records = [line for line in log.splitlines() if "call record: " in line]
        assert len(records) == 2, records
        assert all('"end_reason": "gateway shutting down"' in r for r in records)


async def test_source_outside_a_registration_account_cannot_use_it(tmp_path: Path) -> None:
    """pjsua picks the account by the INVITE's user part; its source must be the PBX's."""
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim, sip={
            "trunk_allow": ["127.0.0.1/32"],
            "accounts": [{"name": "pbx", "registrar": "sip:127.0.0.1:9", "user": "gw",
                          "expires_s": 60}]}) as gw:
        def from_elsewhere(user: str) -> int | None:
            with RawSipPeer(_target(gw), bind="127.0.0.7") as peer:
                return Dialog(peer, f"sip:{user}@127.0.0.1:{gw.port}").invite(
                    sdp_offer(free_udp_port())).status
        assert await asyncio.to_thread(from_elsewhere, "100") == 403  # trunk_allow
        assert await asyncio.to_thread(from_elsewhere, "gw") == 403  # the account's user
        await gw.wait_log("which is not its registrar/proxy")
        assert not sim.sessions


@pytest.mark.parametrize(("method", "status"), [("FOOBAR", 501), ("INFO", 481), ("BYE", 481),
                                                ("PUBLISH", 405)])
async def test_requests_nobody_handles_are_answered(tmp_path: Path, method: str,
                                                    status: int) -> None:
    """RFC 3261 §8.2.1: an answer at once, not 32 s of retransmissions into silence."""
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        def send() -> SipMsg:
            with RawSipPeer(_target(gw)) as peer:
                dialog = Dialog(peer, f"sip:100@127.0.0.1:{gw.port}")
                return dialog.request(method, body="x" if method == "INFO" else "",
                                      content_type="application/dtmf-relay", timeout_s=3)
        final = await asyncio.to_thread(send)
        assert final.status == status, final.text
        if status in (405, 501):
            allow = final.header("Allow") or ""
            assert "INVITE" in allow and "BYE" in allow
        assert not sim.sessions
        assert gw.proc.running


async def test_a_slow_realtime_connect_refuses_with_503_and_says_why(tmp_path: Path) -> None:
    """A Realtime endpoint that accepts TCP and never answers the upgrade: the caller gets
    503 + Retry-After once the connect budget is spent (never 603, never a hang)."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(8)
    url = f"ws://127.0.0.1:{blackhole.getsockname()[1]}/v1/realtime"
    try:
        async with SimulatorServer() as sim, run_gateway(tmp_path, sim, realtime={
                "url": url, "open_timeout_s": 0.5, "connect_attempts": 2}) as gw:
            def invite() -> SipMsg:
                with RawSipPeer(_target(gw)) as peer:
                    return Dialog(peer, f"sip:100@127.0.0.1:{gw.port}").invite(
                        sdp_offer(free_udp_port()), timeout_s=15)
            final = await asyncio.to_thread(invite)
            assert final.status == 503, final.text
            assert final.header("Retry-After") == "5"
            await gw.wait_log("call record:")
            record = call_record(gw.log())
            assert record["sip_status"] == 503 and record["answered"] is False
            assert record["end_reason"].startswith("agent unavailable: Realtime connect timed "
                                                   "out")
    finally:
        blackhole.close()


async def test_a_taken_sip_port_is_named_without_a_traceback(tmp_path: Path) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    config = tmp_path / "gateway.yaml"
    config.write_text(f"sip:\n  transports: [{{type: udp, host: 127.0.0.1, port: {port}}}]\n")
    try:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "gateway"), "run", "-c", str(config),
            "--run-seconds", "10", cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        taken.close()
    text = err.decode()
    assert proc.returncode == 1
    assert f"error: cannot listen on udp:127.0.0.1:{port}: Address already in use" in text
    assert "Traceback" not in text


async def test_sipp_caller_refer_gets_403_and_the_sipp_target_never_rings(
        tmp_path: Path) -> None:
    """The same attack from SIPp: a SIPp UAS listens at the Refer-To address."""
    audio = write_g711(tmp_path / "silence.ulaw", silence_pcm16(2000))
    target_port = free_udp_port()
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        with start_sipp("uac_refer_target", None, local_port=target_port, service="999",
                        log_dir=tmp_path / "target", timeout_s=8) as target:
            caller = await run_sipp_async(
                "uac_caller_refer", gw.target, log_dir=tmp_path / "caller",
                media_port=free_udp_port_block(4),
                keys={"audio_file": str(audio), "refer_user": "999",
                      "refer_host": f"127.0.0.1:{target_port}"}, timeout_s=20)
            assert caller.ok, caller.describe()
            target.stop()
            seen = target.result(1.0)
        assert not seen.received(), "the gateway sent something to the REFER target"
        assert caller.received(method="REFER", status=403)
        assert gw.proc.running


async def test_an_ack_without_a_to_tag_is_absorbed(tmp_path: Path) -> None:
    """The ACK that aborted the wheel's process (pjsua took it for a merged request)."""
    async with SimulatorServer() as sim, run_gateway(tmp_path, sim) as gw:
        def stray_ack() -> int | None:
            media = free_udp_port_block(2)
            with RawSipPeer(_target(gw)) as peer:
                dialog = Dialog(peer, f"sip:100@127.0.0.1:{gw.port}")
                dialog.cseq += 1
                peer.send(peer.request_text("INVITE", dialog.request_uri,
                                            call_id=dialog.call_id, from_tag=dialog.from_tag,
                                            to=dialog.to, cseq=dialog.cseq,
                                            body=sdp_offer(media)))
                ok = peer.final(dialog.call_id)
                # The broken ACK: the dialog's Call-ID and CSeq, but a To without the tag.
                peer.send(peer.request_text("ACK", dialog.request_uri,
                                            call_id=dialog.call_id, from_tag=dialog.from_tag,
                                            to=dialog.to, cseq=dialog.cseq))
                peer.quiet(1.0)
                dialog.to_tag = ok.tag("To")
                dialog.ack(ok)  # now the real one
                peer.quiet(0.5)
                return dialog.request("BYE").status
        assert await asyncio.to_thread(stray_ack) == 200
        assert gw.proc.running
        await gw.wait_log("absorbed an ACK that matches no transaction or dialog")
        await _still_takes_calls(gw, tmp_path)

"""The SIP test harness against real peers on 127.0.0.1.

The gateway's own SIP user agent (in a subprocess: one pjsua2 endpoint per process) answers
and echoes calls that SIPp places; tcpdump captures what comes back; Kamailio registers the UA
and proxies a call to it. Each test checks what a caller would notice: the response code, the
tone or speech that came back and its packet rate, the Retry-After of a busy gateway.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sip import binding
from tests.support.audio import (
    dominant_frequency,
    rms_dbfs,
    speech_like,
    speech_pcm16,
    tone_pcm16,
    write_g711,
    write_wav,
)
from tests.support.capture import Capture
from tests.support.echo_ua import EchoUa
from tests.support.kamailio import TEST_PASSWORD, Kamailio
from tests.support.ports import free_udp_port, free_udp_port_block
from tests.support.procs import wait_for_port
from tests.support.rawsip import Dialog, RawSipPeer, sdp_offer
from tests.support.rtp import (
    RtpStream,
    decode_stream,
    inter_arrival_jitter,
    rtp_streams,
    silent_and_voiced_spans,
)
from tests.support.sipp import run_sipp, run_sipp_async, start_sipp

pytestmark = pytest.mark.sip

TONE_HZ = 440.0
TONE_AMPLITUDE = 0.3


@pytest.fixture
def echo_ua(tmp_path: Path) -> Iterator[EchoUa]:
    with EchoUa(tmp_path / "ua", max_calls=1) as ua:
        yield ua


@pytest.fixture
def tone_ulaw(tmp_path: Path) -> Path:
    return write_g711(tmp_path / "tone.ulaw", tone_pcm16(TONE_HZ, 2000, amplitude=TONE_AMPLITUDE))


def _only_stream_to(streams: list[RtpStream], port: int) -> RtpStream:
    to_port = [s for s in streams if s.dport == port]
    assert len(to_port) == 1, [(s.sport, s.dport, s.ssrc, len(s.packets)) for s in streams]
    return to_port[0]


def _voiced(pcm16: bytes) -> bytes:
    """The audio from the first voiced frame to the last (drops the echo's lead-in)."""
    spans = [s for s in silent_and_voiced_spans(pcm16) if s.voiced]
    assert spans, "no voiced audio came back"
    return pcm16[spans[0].start_ms * 16:spans[-1].end_ms * 16]


@pytest.mark.parametrize(("scenario", "law", "pt"), [("uac_pcmu", "ulaw", 0),
                                                      ("uac_pcma", "alaw", 8)])
def test_echo_returns_the_callers_tone(echo_ua: EchoUa, tmp_path: Path, scenario: str,
                                       law: str, pt: int) -> None:
    audio = write_g711(tmp_path / f"tone.{law}",
                       tone_pcm16(TONE_HZ, 2000, amplitude=TONE_AMPLITUDE),
                       "ulaw" if law == "ulaw" else "alaw")
    media_port = free_udp_port_block(4)
    with Capture(tmp_path / "echo.pcap", f"udp and dst port {media_port}") as capture:
        result = run_sipp(scenario, echo_ua.address, log_dir=tmp_path, media_port=media_port,
                          hold_ms=3000, keys={"audio_file": str(audio)}, timeout_s=20)
    assert result.ok, result.describe()
    assert result.final_statuses() == [200]
    echo_ua.wait_event("MediaActive", codec="PCMU" if pt == 0 else "PCMA")

    stream = _only_stream_to(rtp_streams(capture.packets()), media_port)
    assert stream.payload_type == pt
    assert stream.packet_rate == pytest.approx(50.0, abs=0.5)
    timing = inter_arrival_jitter(stream)
    assert timing.lost == 0
    assert timing.jitter_ms < 5.0
    pcm = decode_stream(stream)
    write_wav(tmp_path / "echo.wav", pcm)
    voiced = _voiced(pcm)
    assert len(voiced) >= 2 * 8000 * 2  # at least 2 of the 3 s came back as tone
    assert dominant_frequency(voiced) == pytest.approx(TONE_HZ, abs=3)
    sent_level = rms_dbfs(tone_pcm16(TONE_HZ, 1000, amplitude=TONE_AMPLITUDE))
    assert rms_dbfs(voiced) == pytest.approx(sent_level, abs=1.5)


def test_speech_comes_back_speech_like_with_a_late_offer(echo_ua: EchoUa,
                                                         tmp_path: Path) -> None:
    speech = speech_pcm16("Hello, you have reached the gateway test. Goodbye for now.")
    assert speech_like(speech)
    audio = write_g711(tmp_path / "speech.ulaw", speech)
    media_port = free_udp_port_block(4)
    with Capture(tmp_path / "late.pcap", f"udp and dst port {media_port}") as capture:
        result = run_sipp("uac_late_offer", echo_ua.address, log_dir=tmp_path,
                          media_port=media_port, hold_ms=3000,
                          keys={"audio_file": str(audio)}, timeout_s=20)
    assert result.ok, result.describe()
    (ok,) = result.received(method="INVITE", status=200)
    assert "m=audio" in ok.body  # the gateway made the offer
    assert "RTP/AVP 0" in result.sent(method="ACK")[0].body  # and took our PCMU answer
    stream = _only_stream_to(rtp_streams(capture.packets()), media_port)
    assert stream.payload_type == 0
    back = decode_stream(stream)
    write_wav(tmp_path / "late.wav", back)
    assert speech_like(_voiced(back))
    assert not speech_like(tone_pcm16(TONE_HZ, 2000))


async def test_unsupported_codec_gets_488(echo_ua: EchoUa, tmp_path: Path) -> None:
    result = await run_sipp_async("uac_no_codec", echo_ua.address, log_dir=tmp_path,
                                  timeout_s=10)
    assert result.ok, result.describe()
    assert result.final_statuses() == [488]
    assert result.sent(method="ACK")


def test_cancel_while_ringing_gets_487(echo_ua: EchoUa, tmp_path: Path) -> None:
    result = run_sipp("uac_cancel", echo_ua.address, service="ring", log_dir=tmp_path,
                      timeout_s=10)
    assert result.ok, result.describe()
    assert [m.status for m in result.received(method="CANCEL")] == [200]
    assert result.final_statuses() == [487]
    echo_ua.wait_event("LegEnded", status=487)


def test_an_invite_nobody_answers_gets_503_at_the_deadline(tmp_path: Path) -> None:
    # "ring" users get 180 and are never answered: the SIP thread's deadline must end them.
    with EchoUa(tmp_path / "ua", answer_deadline_s=1.0) as ua:
        result = run_sipp("uac_expect_status", ua.address, service="ring", log_dir=tmp_path,
                          keys={"expected_status": "503"}, timeout_s=15)
        assert result.ok, result.describe()
        assert result.final_statuses() == [503]
        ended = ua.wait_event("LegEnded", status=503)
        assert ended["status"] == 503
        ua.process.wait_for_log(lambda log: "not answered within 1 s: 503" in log)


@pytest.mark.smoke  # on both bindings: the wheel's pjsip must drop the rings too
def test_a_command_wakes_the_sip_thread_at_once(tmp_path: Path) -> None:
    # The SIP thread waits up to 5 s in libHandleEvents here. The INVITE wakes it; the answer
    # the loop then queues, and the UA's BYE 0.3 s later, are commands: without the doorbell
    # (gateway/sip/doorbell.py) each would wait for that 5 s timeout.
    with EchoUa(tmp_path / "ua", poll_ms=5000, pjsip_log_level=4) as ua, \
            RawSipPeer(("127.0.0.1", ua.port)) as peer:
        dialog = Dialog(peer, f"sip:bye-300@127.0.0.1:{ua.port}")
        final = dialog.invite(sdp_offer(free_udp_port_block(2)), timeout_s=2.0)
        assert final.status == 200
        bye = peer.expect(lambda m: m.method == "BYE" and m.status is None, timeout_s=2.0)
        peer.respond(bye, 200, "OK")
        ua.wait_event("LegEnded", timeout_s=2.0)
        log = ua.process.log_text()
    # pjsip took the rings for nothing: no dropped-packet or parse error in its own log.
    assert "Dropping" not in log
    assert "rror" not in log, log
    # The source build's ioqueues are plain level-triggered epoll (scripts/build-pjsua2.sh:
    # one poller each, so no EPOLLEXCLUSIVE and its DEL+ADD per re-arm); the wheel's is select().
    if binding.installed()[0] == "source":
        assert "epoll I/O Queue created (flags:0x0," in log
    else:
        assert "epoll I/O Queue created" not in log


def test_a_180_that_arrives_after_the_200_does_not_abort_the_caller(
        tone_ulaw: Path, tmp_path: Path) -> None:
    # The Kamailio front's UDP workers relay a worker's 180 and 200 in parallel, so the 180
    # can come second; SIPp took it for an unexpected message and aborted the call.
    with RawSipPeer(("127.0.0.1", 9), auto_answer=False) as uas, \
            start_sipp("uac_pcmu", f"127.0.0.1:{uas.port}", log_dir=tmp_path,
                       media_port=free_udp_port_block(4), hold_ms=1000,
                       keys={"audio_file": str(tone_ulaw)}, timeout_s=15) as sipp:
        invite = uas.expect(lambda m: m.method == "INVITE" and m.status is None)
        contact = (f"Contact: <sip:raw@{uas.host}:{uas.port}>",)
        uas.respond(invite, 200, "OK", to_tag="late180", headers=contact,
                    body=sdp_offer(free_udp_port_block(2)))
        uas.respond(invite, 180, "Ringing", to_tag="late180", headers=contact)
        uas.expect(lambda m: m.method == "ACK")
        bye = uas.expect(lambda m: m.method == "BYE" and m.status is None)
        uas.respond(bye, 200, "OK")
        result = sipp.result(15.0)
    assert result.ok, result.describe()
    assert result.final_statuses() == [200]


def test_caller_bye_ends_the_call(echo_ua: EchoUa, tone_ulaw: Path, tmp_path: Path) -> None:
    result = run_sipp("uac_caller_bye", echo_ua.address, log_dir=tmp_path,
                      keys={"audio_file": str(tone_ulaw)}, timeout_s=10)
    assert result.ok, result.describe()
    assert "200 to BYE" in result.action_log
    ended = echo_ua.wait_event("LegEnded")
    assert ended["status"] == 200
    echo_ua.process.wait_for_log(lambda log: "STATS " in log)
    (stats,) = echo_ua.call_stats()
    assert stats["rx_frames"] >= 40  # ~1 s of caller audio reached the UA


def test_expected_status_key_accepts_the_right_code_only(echo_ua: EchoUa,
                                                         tmp_path: Path) -> None:
    right = run_sipp("uac_expect_status", echo_ua.address, service="reject-404",
                     keys={"expected_status": "404"}, log_dir=tmp_path, timeout_s=10)
    assert right.ok, right.describe()
    wrong = run_sipp("uac_expect_status", echo_ua.address, service="reject-404",
                     keys={"expected_status": "403"}, log_dir=tmp_path, timeout_s=10)
    assert not wrong.ok
    assert wrong.failed == 1
    assert "unexpected message" in wrong.errors


def test_503_scenario_requires_retry_after(echo_ua: EchoUa, tmp_path: Path) -> None:
    # reject-503 answers a bare 503 (no Retry-After): the scenario's ereg must fail it.
    result = run_sipp("uac_busy_retry_after", echo_ua.address, service="reject-503",
                      log_dir=tmp_path, timeout_s=10)
    assert result.final_statuses() == [503]
    assert not result.ok
    assert "Retry-After" in result.errors


def test_call_over_capacity_gets_503_with_retry_after(echo_ua: EchoUa, tone_ulaw: Path,
                                                      tmp_path: Path) -> None:
    with start_sipp("uac_pcmu", echo_ua.address, log_dir=tmp_path, hold_ms=6000,
                    keys={"audio_file": str(tone_ulaw)}, timeout_s=20) as held:
        echo_ua.wait_event("CallState", state="CONFIRMED", timeout_s=10)
        busy = run_sipp("uac_busy_retry_after", echo_ua.address, log_dir=tmp_path,
                        timeout_s=10)
        first = held.result()
    assert busy.ok, busy.describe()
    (refusal,) = busy.received(method="INVITE", status=503)
    assert int(refusal.header("Retry-After") or "0") >= 1
    assert first.ok, first.describe()
    assert len(echo_ua.events("IncomingCall")) == 1  # the refused call never reached the app


def test_gateway_transfer_reaches_the_transferee(echo_ua: EchoUa, tone_ulaw: Path,
                                                 tmp_path: Path) -> None:
    result = run_sipp("uac_transferee", echo_ua.address, service="refer-300", log_dir=tmp_path,
                      keys={"audio_file": str(tone_ulaw)}, timeout_s=15)
    assert result.ok, result.describe()
    (refer,) = result.received(method="REFER")
    assert "sip:agent@127.0.0.1:5090" in (refer.header("Refer-To") or "")
    echo_ua.wait_event("TransferProgress", final=True, status=200)
    assert result.received(method="BYE")  # the UA hung up after the final NOTIFY


def test_refer_target_scenario_against_a_transferor(tmp_path: Path) -> None:
    port = free_udp_port()
    with start_sipp("uac_refer_target", None, local_port=port, service="agent",
                    log_dir=tmp_path, timeout_s=15) as target:
        wait_for_port(port, process=target.process)
        transferor = run_sipp("uac_transferor", f"127.0.0.1:{port}", service="agent",
                              keys={"refer_user": "sales", "refer_host": "127.0.0.1:5090"},
                              log_dir=tmp_path, timeout_s=10)
        answered = target.result()
    assert transferor.ok, transferor.describe()
    assert answered.ok, answered.describe()
    assert "REFER Refer-To sip:sales@127.0.0.1:5090" in answered.action_log
    frags = [m.body for m in transferor.received(method="NOTIFY")]
    assert frags == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]


def test_call_through_kamailio_reaches_the_registered_ua(tmp_path: Path,
                                                         tone_ulaw: Path) -> None:
    with Kamailio(tmp_path / "kamailio", auth=True) as kamailio:
        with EchoUa(tmp_path / "ua", registrar=kamailio.uri, user="gw",
                    password=TEST_PASSWORD) as ua:
            ua.wait_event("RegistrationState", status=200, active=True)
            (contact,) = kamailio.wait_registered("gw")
            assert contact.uri.startswith(f"sip:gw@127.0.0.1:{ua.port}")
            assert "AUTH challenge REGISTER" in kamailio.log_text()  # digest auth was used
            result = run_sipp("uac_via_proxy", kamailio.address, service="gw",
                              log_dir=tmp_path, hold_ms=1000,
                              keys={"audio_file": str(tone_ulaw)}, timeout_s=15)
            assert result.ok, result.describe()
            incoming = ua.wait_event("IncomingCall", to_user="gw")
            assert incoming["source_port"] == kamailio.port
            unknown = run_sipp("uac_expect_status", kamailio.address, service="nobody",
                               keys={"expected_status": "404"}, log_dir=tmp_path, timeout_s=10)
            assert unknown.ok, unknown.describe()
        kamailio.wait_unregistered("gw", timeout_s=5)  # the UA un-REGISTERed on stop

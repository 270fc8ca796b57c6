"""The pure parts of the SIP test harness, on fixtures built here.

RTP parsing and serialization (RFC 3550 §5.1), stream grouping and G.711 decoding, the
RFC 3550 jitter estimator on synthetic arrival times, the pcap reader on files written in the
test, the audio judges, and the parsers for what SIPp and Kamailio write (scenario rendering,
``-trace_msg`` logs, ``-trace_stat`` CSV, ``kamcmd ul.lookup`` output).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from gateway.media.g711 import alaw_encode, ulaw_encode
from tests.support.audio import (
    dominant_frequency,
    rms_dbfs,
    silence_pcm16,
    speech_like,
    tone_pcm16,
)
from tests.support.capture import LINKTYPE_LINUX_SLL, read_pcap, write_pcap
from tests.support.kamailio import parse_ul_lookup, render_config
from tests.support.rtp import (
    Packet,
    RtpPacket,
    RtpStream,
    TimedRtp,
    build_rtp,
    decode_stream,
    extended_seqs,
    inter_arrival_jitter,
    looks_like_rtp,
    parse_rtp,
    rtp_streams,
    silent_and_voiced_spans,
)
from tests.support.sipp import (
    ScenarioError,
    parse_message_log,
    parse_stat_csv,
    render_scenario,
    scenario_path,
)

pytestmark = pytest.mark.unit

ULAW_SILENCE = b"\xff" * 160


def _stream(pkts: list[tuple[float, RtpPacket]]) -> RtpStream:
    return RtpStream("127.0.0.1", 20000, "127.0.0.1", 16000, 0x1234,
                     tuple(TimedRtp(at, p) for at, p in pkts))


def _tone_packets(law: str, count: int, *, pt: int, start_seq: int = 0) -> list[RtpPacket]:
    pcm = tone_pcm16(440, 20 * count)
    enc = ulaw_encode(pcm) if law == "ulaw" else alaw_encode(pcm)
    return [RtpPacket(pt=pt, seq=(start_seq + i) & 0xFFFF, ts=160 * i, ssrc=0x1234,
                      marker=i == 0, payload=enc[160 * i:160 * (i + 1)]) for i in range(count)]


# RTP header -----------------------------------------------------------------------------

def test_parse_known_header_bytes() -> None:
    # V=2, P=0, X=0, CC=0 | M=1, PT=0 | seq 0x0102 | ts 0x03040506 | ssrc 0xDEADBEEF
    data = bytes.fromhex("80 80 0102 03040506 DEADBEEF") + ULAW_SILENCE
    pkt = parse_rtp(data)
    assert (pkt.pt, pkt.seq, pkt.ts, pkt.ssrc, pkt.marker) == (0, 0x0102, 0x03040506,
                                                                0xDEADBEEF, True)
    assert pkt.payload == ULAW_SILENCE


def test_build_then_parse_round_trips() -> None:
    pkt = RtpPacket(pt=8, seq=65535, ts=0xFFFFFF60, ssrc=1, marker=False, payload=b"\xd5" * 160,
                    csrcs=(7, 9))
    data = build_rtp(pkt)
    assert len(data) == 12 + 8 + 160
    assert data[0] == 0x82  # version 2, two CSRCs
    assert parse_rtp(data) == pkt


def test_parse_skips_extension_and_padding() -> None:
    ext = struct.pack("!HH", 0xBEDE, 1) + b"\x10\x00\x00\x00"  # one 32-bit word
    padding = b"\x00\x00\x03"
    data = bytes([0xB0, 0x00]) + struct.pack("!HII", 5, 800, 42) + ext + b"abcd" + padding
    pkt = parse_rtp(data)
    assert pkt.payload == b"abcd"
    assert pkt.seq == 5


@pytest.mark.parametrize("data", [b"", b"\x80\x00\x00", bytes.fromhex("40000001000000010000"
                                                                          "00010000")])
def test_parse_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_rtp(data)


def test_rtcp_and_sip_are_not_rtp() -> None:
    rtcp_rr = bytes([0x81, 201]) + bytes(30)
    assert not looks_like_rtp(rtcp_rr)
    assert not looks_like_rtp(b"SIP/2.0 200 OK\r\n")
    assert looks_like_rtp(build_rtp(_tone_packets("ulaw", 1, pt=0)[0]))


# Streams and decoding ---------------------------------------------------------------------

def test_rtp_streams_group_by_direction_and_ssrc() -> None:
    a = _tone_packets("ulaw", 3, pt=0)
    b = [RtpPacket(0, i, 160 * i, 0x9999, False, ULAW_SILENCE) for i in range(2)]
    packets = [Packet(1.0 + 0.02 * i, "127.0.0.1", 20000, "127.0.0.1", 16000, build_rtp(p))
               for i, p in enumerate(a)]
    packets += [Packet(1.01 + 0.02 * i, "127.0.0.1", 16000, "127.0.0.1", 20000, build_rtp(p))
                for i, p in enumerate(b)]
    packets.append(Packet(0.5, "127.0.0.1", 5060, "127.0.0.1", 5070, b"INVITE sip:x SIP/2.0"))
    streams = rtp_streams(packets)
    assert [(s.sport, s.dport, s.ssrc, len(s.packets)) for s in streams] == [
        (20000, 16000, 0x1234, 3), (16000, 20000, 0x9999, 2)]
    assert streams[0].packet_rate == pytest.approx(50.0)


def test_extended_seqs_unwraps() -> None:
    assert extended_seqs([65534, 65535, 0, 1]) == [65534, 65535, 65536, 65537]
    assert extended_seqs([1, 0, 65535]) == [1, 0, -1]
    assert extended_seqs([10, 12, 11]) == [10, 12, 11]


@pytest.mark.parametrize(("law", "pt"), [("ulaw", 0), ("alaw", 8)])
def test_decode_stream_orders_and_fills_gaps(law: str, pt: int) -> None:
    pkts = _tone_packets(law, 50, pt=pt, start_seq=65530)  # wraps around
    lost = pkts[20]
    arrival = [p for p in pkts if p is not lost]
    arrival[5], arrival[6] = arrival[6], arrival[5]  # reordered
    arrival.insert(10, arrival[9])  # duplicated
    stream = _stream([(0.02 * i, p) for i, p in enumerate(arrival)])
    pcm = decode_stream(stream)
    assert len(pcm) == 50 * 320  # the lost packet became 20 ms of silence
    assert pcm[20 * 320:21 * 320] == bytes(320)
    assert dominant_frequency(pcm[:20 * 320]) == pytest.approx(440, abs=2)
    assert rms_dbfs(pcm[:20 * 320]) == pytest.approx(rms_dbfs(tone_pcm16(440, 400)), abs=0.5)


def test_decode_stream_leaves_out_telephone_events() -> None:
    pkts = _tone_packets("ulaw", 4, pt=0)
    dtmf = RtpPacket(101, 4, 640, 0x1234, True, b"\x05\x0a\x00\xa0")
    tail = RtpPacket(0, 5, 800, 0x1234, False, ULAW_SILENCE)
    stream = _stream([(0.02 * i, p) for i, p in enumerate([*pkts, dtmf, tail])])
    assert stream.payload_type == 0
    assert len(decode_stream(stream)) == 5 * 320
    with pytest.raises(ValueError, match="payload type 101"):
        decode_stream(stream, payload_type=101)


# Jitter -------------------------------------------------------------------------------------

def test_jitter_of_a_perfect_stream_is_zero() -> None:
    pkts = _tone_packets("ulaw", 100, pt=0)
    stats = inter_arrival_jitter(_stream([(10 + 0.02 * i, p) for i, p in enumerate(pkts)]))
    assert stats.packets == 100
    assert stats.lost == 0
    assert stats.jitter_ms == pytest.approx(0, abs=1e-6)
    assert stats.delta_p50_ms == pytest.approx(20)
    assert stats.delta_max_ms == pytest.approx(20)


def test_jitter_follows_rfc3550_estimator() -> None:
    # Arrival gaps alternate 19 and 21 ms while timestamps step 20 ms: |D| is always 1 ms
    # (8 timestamp units), so J_n = 1 ms * (1 - (15/16)^n) after n differences.
    pkts = _tone_packets("ulaw", 41, pt=0)
    at, times = 0.0, []
    for i in range(41):
        times.append(at)
        at += 0.019 if i % 2 == 0 else 0.021
    stats = inter_arrival_jitter(_stream(list(zip(times, pkts, strict=True))))
    assert stats.jitter_ms == pytest.approx(1 - (15 / 16) ** 40, rel=1e-6)
    assert stats.max_jitter_ms == pytest.approx(stats.jitter_ms)
    assert stats.delta_p50_ms == pytest.approx(19)
    assert stats.delta_p99_ms == pytest.approx(21)


def test_jitter_counts_lost_packets_and_a_late_burst() -> None:
    pkts = _tone_packets("ulaw", 10, pt=0)
    del pkts[4:6]
    times = [0.02 * i for i in range(len(pkts))]
    times[-1] += 0.1  # 100 ms late
    stats = inter_arrival_jitter(_stream(list(zip(times, pkts, strict=True))))
    assert stats.lost == 2
    assert stats.delta_max_ms == pytest.approx(120)
    assert stats.jitter_ms > 0


# Audio judges ------------------------------------------------------------------------------

def test_spans_split_tone_and_silence() -> None:
    pcm = tone_pcm16(440, 200) + silence_pcm16(100) + tone_pcm16(600, 60)
    spans = silent_and_voiced_spans(pcm)
    assert [(s.start_ms, s.end_ms, s.voiced) for s in spans] == [
        (0, 200, True), (200, 300, False), (300, 360, True)]


def test_levels_and_frequency() -> None:
    assert rms_dbfs(silence_pcm16(100)) == -math.inf
    assert rms_dbfs(tone_pcm16(1000, 1000, amplitude=1.0)) == pytest.approx(-3.01, abs=0.05)
    assert dominant_frequency(tone_pcm16(1234, 500)) == pytest.approx(1234, abs=2)
    assert not speech_like(tone_pcm16(440, 2000))
    assert not speech_like(silence_pcm16(2000))


# pcap ---------------------------------------------------------------------------------------

def test_pcap_written_then_read_back(tmp_path: Path) -> None:
    packets = [Packet(1_700_000_000.25 + 0.02 * i, "127.0.0.1", 20000 + i, "127.0.0.2", 16000,
                      build_rtp(p)) for i, p in enumerate(_tone_packets("ulaw", 5, pt=0))]
    path = tmp_path / "x.pcap"
    write_pcap(path, packets)
    back = read_pcap(path)
    assert [(p.src, p.sport, p.dst, p.dport, p.payload) for p in back] == [
        (p.src, p.sport, p.dst, p.dport, p.payload) for p in packets]
    assert [p.ts for p in back] == pytest.approx([p.ts for p in packets], abs=1e-6)


def test_pcap_big_endian_nanosecond_linux_sll(tmp_path: Path) -> None:
    udp = struct.pack("!HHHH", 5060, 5070, 8 + 3, 0) + b"abc"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + udp
    sll = struct.pack("!HHH8sH", 0, 772, 0, bytes(8), 0x0800) + ip
    tcp = struct.pack("!HHH8sH", 0, 772, 0, bytes(8), 0x0800) + bytes([0x45]) + bytes(8) + \
        bytes([6]) + bytes(10)  # protocol 6: skipped
    head = struct.pack(">IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, LINKTYPE_LINUX_SLL)
    recs = b"".join(struct.pack(">IIII", 7, 500_000_000, len(f), len(f)) + f for f in (sll, tcp))
    path = tmp_path / "sll.pcap"
    path.write_bytes(head + recs + b"\x00\x00")  # plus a truncated record header
    assert read_pcap(path) == [Packet(7.5, "10.0.0.1", 5060, "10.0.0.2", 5070, b"abc")]


def test_pcapng_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    path.write_bytes(bytes.fromhex("0a0d0d0a") + bytes(40))
    with pytest.raises(ValueError, match="not a classic pcap"):
        read_pcap(path)


# SIPp and Kamailio outputs ------------------------------------------------------------------

def test_render_scenario_fills_attributes_but_not_cdata(tmp_path: Path) -> None:
    src = tmp_path / "s.xml"
    src.write_text('<scenario><send><![CDATA[INVITE [audio_file] [service]]]></send>\n'
                   '<recv response="[expected_status]"/>'
                   '<exec rtp_stream="[audio_file],-1,0"/></scenario>')
    out = render_scenario(src, tmp_path / "out.xml",
                          {"audio_file": '/tmp/a&b".ulaw', "expected_status": "503"})
    text = out.read_text()
    assert 'response="503"' in text
    assert 'rtp_stream="/tmp/a&amp;b&quot;.ulaw,-1,0"' in text
    assert "INVITE [audio_file] [service]" in text  # SIPp expands -key there itself


def test_render_scenario_names_a_missing_load_time_key(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="audio_file"):
        render_scenario(scenario_path("uac_pcmu"), tmp_path / "x.xml", {})


def test_every_scenario_renders_with_its_keys(tmp_path: Path) -> None:
    keys = {"audio_file": "/x.ulaw", "expected_status": "404", "refer_user": "u",
            "refer_host": "h", "dtmf_digit": "0", "dtmf_delay_ms": "1000"}
    names = sorted(p.stem for p in scenario_path("uac_pcmu").parent.glob("*.xml"))
    assert {"uac_pcmu", "uac_pcma", "uac_cancel", "uac_caller_bye", "uac_no_codec",
            "uac_late_offer", "uac_expect_status", "uac_busy_retry_after",
            "uac_refer_target", "uac_via_proxy"} <= set(names)
    for name in names:
        text = render_scenario(scenario_path(name), tmp_path / f"{name}.xml", keys).read_text()
        assert "<scenario" in text


MESSAGE_LOG = (
    "----------------------------------------------- 2026-01-01 10:00:00.000001\n"
    "UDP message sent (100 bytes):\n\n"
    "INVITE sip:echo@127.0.0.1:5070 SIP/2.0\r\nCall-ID: 1-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
    "Content-Length: 0\r\n\r\n\n"
    "----------------------------------------------- 2026-01-01 10:00:00.000002\n"
    "UDP message received [200] bytes :\n\n"
    "SIP/2.0 503 Service Unavailable\r\ni: 1-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
    "Retry-After: 5\r\nContent-Length: 0\r\n\r\n\n"
)


def test_parse_message_log() -> None:
    sent, received = parse_message_log(MESSAGE_LOG)
    assert sent.direction == "sent"
    assert (sent.method, sent.status, sent.call_id) == ("INVITE", None, "1-1@127.0.0.1")
    assert received.direction == "received"
    assert (received.status, received.method) == (503, "INVITE")
    assert received.header("retry-after") == "5"
    assert received.call_id == "1-1@127.0.0.1"  # compact form "i"


def test_parse_stat_csv_takes_the_last_row() -> None:
    text = ("StartTime;SuccessfulCall(C);FailedCall(C);\n"
            "t0;0;0;\n"
            "t1;3;1;\n")
    stats = parse_stat_csv(text)
    assert (stats["SuccessfulCall(C)"], stats["FailedCall(C)"]) == ("3", "1")


def test_kamailio_config_placeholders() -> None:
    assert render_config("listen=udp:127.0.0.1:{{PORT}}", {"PORT": "5099"}) == \
        "listen=udp:127.0.0.1:5099"
    with pytest.raises(ValueError, match="RUNDIR"):
        render_config("{{RUNDIR}}", {})


def test_parse_ul_lookup() -> None:
    text = """{
\tAoR: gw
\tContacts: {
\t\tContact: {
\t\t\tAddress: sip:gw@127.0.0.1:5399;ob
\t\t\tExpires: 59
\t\t\tUser-Agent: gateway
\t\t}
\t}
}"""
    contacts = parse_ul_lookup(text)
    assert [(c.uri, c.expires_s, c.user_agent) for c in contacts] == [
        ("sip:gw@127.0.0.1:5399;ob", 59, "gateway")]
    assert parse_ul_lookup("error: 500 - AOR not found in location table") == []

"""RTP analysis for captured traffic: parse packets, group streams, decode G.711, measure timing.

Pure: works on :class:`Packet` values (UDP datagrams with their capture time), which
:func:`tests.support.capture.read_pcap` produces from a tcpdump file or a test builds by hand.
Names follow RFC 3550: the fixed header (§5.1), the extended sequence number (§A.1) and the
interarrival jitter estimator (§6.4.1, computed as in §A.8). Only the static G.711 payload
types are decoded (0 PCMU, 8 PCMA, RFC 3551 §6); telephone-event and other dynamic types are
left out of the audio.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from gateway.media.g711 import alaw_decode, ulaw_decode

#: RFC 3551 static payload types we decode.
PT_PCMU = 0
PT_PCMA = 8
#: G.711 clock and the usual packet: 20 ms, 160 samples.
CLOCK_RATE = 8000
_HEADER = struct.Struct("!BBHII")
_RTP_VERSION = 2
_RTCP_TYPES = range(200, 208)  # second byte of an RTCP packet (SR, RR, SDES, BYE, APP, ...)


@dataclass(frozen=True)
class Packet:
    """One UDP datagram as captured: when, between which endpoints, and its payload."""

    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


@dataclass(frozen=True)
class RtpPacket:
    """The RTP fixed header fields we use (RFC 3550 §5.1) and the payload."""

    pt: int
    seq: int
    ts: int
    ssrc: int
    marker: bool
    payload: bytes
    csrcs: tuple[int, ...] = ()


@dataclass(frozen=True)
class TimedRtp:
    """An RTP packet with its capture (arrival) time in seconds."""

    at: float
    rtp: RtpPacket


@dataclass(frozen=True)
class RtpStream:
    """One direction of one RTP source: all packets from ``src:sport`` to ``dst:dport``
    with one SSRC, in arrival order."""

    src: str
    sport: int
    dst: str
    dport: int
    ssrc: int
    packets: tuple[TimedRtp, ...]

    @property
    def payload_type(self) -> int:
        """The most frequent payload type (telephone-event packets are the minority)."""
        counts: dict[int, int] = {}
        for p in self.packets:
            counts[p.rtp.pt] = counts.get(p.rtp.pt, 0) + 1
        return max(counts, key=lambda pt: counts[pt]) if counts else -1

    @property
    def duration_s(self) -> float:
        """Time from the first to the last packet's arrival."""
        return self.packets[-1].at - self.packets[0].at if len(self.packets) > 1 else 0.0

    @property
    def packet_rate(self) -> float:
        """Packets per second over the stream's duration (50.0 for 20 ms packets)."""
        d = self.duration_s
        return (len(self.packets) - 1) / d if d > 0 else 0.0


@dataclass(frozen=True)
class JitterStats:
    """Timing of one stream as its receiver saw it.

    ``jitter_ms`` is the RFC 3550 interarrival jitter estimate after the last packet and
    ``max_jitter_ms`` its largest value along the way; the ``delta_*`` fields describe the
    raw inter-packet arrival gaps (20 ms for a perfect 20 ms stream).
    """

    packets: int
    lost: int
    jitter_ms: float
    max_jitter_ms: float
    delta_p50_ms: float
    delta_p99_ms: float
    delta_max_ms: float


@dataclass(frozen=True)
class Span:
    """A run of consecutive frames that are all voiced or all silent, in milliseconds."""

    start_ms: int
    end_ms: int
    voiced: bool

    @property
    def duration_ms(self) -> int:
        """Length of the span."""
        return self.end_ms - self.start_ms


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP packet (RFC 3550 §5.1), skipping CSRCs, extension and padding.

    Raises:
        ValueError: Not an RTP version 2 packet, or truncated.
    """
    if len(data) < _HEADER.size:
        raise ValueError(f"RTP packet too short: {len(data)} bytes")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != _RTP_VERSION:
        raise ValueError(f"not RTP version 2 (version {b0 >> 6})")
    cc = b0 & 0x0F
    offset = _HEADER.size + 4 * cc
    if len(data) < offset:
        raise ValueError("RTP packet truncated in the CSRC list")
    csrcs = struct.unpack_from(f"!{cc}I", data, _HEADER.size) if cc else ()
    if b0 & 0x10:  # header extension: 16-bit profile, 16-bit length in 32-bit words
        if len(data) < offset + 4:
            raise ValueError("RTP packet truncated in the header extension")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if b0 & 0x20:  # padding: the last octet counts the padding octets, itself included
        pad = data[-1]
        if pad == 0 or offset + pad > end:
            raise ValueError("bad RTP padding length")
        end -= pad
    if offset > end:
        raise ValueError("RTP packet truncated")
    return RtpPacket(pt=b1 & 0x7F, seq=seq, ts=ts, ssrc=ssrc, marker=bool(b1 & 0x80),
                     payload=bytes(data[offset:end]), csrcs=tuple(csrcs))


def build_rtp(packet: RtpPacket) -> bytes:
    """Serialize ``packet`` (version 2, no padding or extension)."""
    b0 = (_RTP_VERSION << 6) | len(packet.csrcs)
    b1 = (0x80 if packet.marker else 0) | (packet.pt & 0x7F)
    head = _HEADER.pack(b0, b1, packet.seq & 0xFFFF, packet.ts & 0xFFFFFFFF,
                        packet.ssrc & 0xFFFFFFFF)
    csrc = struct.pack(f"!{len(packet.csrcs)}I", *packet.csrcs) if packet.csrcs else b""
    return head + csrc + packet.payload


def looks_like_rtp(data: bytes) -> bool:
    """Version 2, long enough, and not RTCP (whose second byte is a packet type 200-207)."""
    return (len(data) >= _HEADER.size and data[0] >> 6 == _RTP_VERSION
            and data[1] not in _RTCP_TYPES)


def rtp_in_order(packets: Iterable[Packet]) -> Iterator[tuple[Packet, TimedRtp]]:
    """The RTP packets among ``packets``, parsed, in arrival order (others are skipped)."""
    for pkt in sorted(packets, key=lambda p: p.ts):
        if not looks_like_rtp(pkt.payload):
            continue
        try:
            rtp = parse_rtp(pkt.payload)
        except ValueError:
            continue
        yield pkt, TimedRtp(pkt.ts, rtp)


def rtp_streams(packets: Iterable[Packet]) -> list[RtpStream]:
    """Group the RTP packets among ``packets`` by (src, sport, dst, dport, ssrc).

    Datagrams that are not RTP (SIP, RTCP, anything malformed) are ignored. Streams come out
    in the order their first packet arrived; packets within a stream in arrival order.
    """
    groups: dict[tuple[str, int, str, int, int], list[TimedRtp]] = {}
    for pkt, timed in rtp_in_order(packets):
        key = (pkt.src, pkt.sport, pkt.dst, pkt.dport, timed.rtp.ssrc)
        groups.setdefault(key, []).append(timed)
    return [RtpStream(src, sport, dst, dport, ssrc, tuple(items))
            for (src, sport, dst, dport, ssrc), items in groups.items()]


def extended_seqs(seqs: Sequence[int]) -> list[int]:
    """Unwrap 16-bit sequence numbers into a monotonic-ish sequence (RFC 3550 §A.1 idea).

    Each number is placed in the 65,536-cycle that puts it closest to the previous one, so
    reordering and wrap-around both come out right.
    """
    out: list[int] = []
    for seq in seqs:
        if not out:
            out.append(seq)
            continue
        prev = out[-1]
        cand = (prev & ~0xFFFF) | seq
        if cand - prev > 0x8000:
            cand -= 0x10000
        elif prev - cand > 0x8000:
            cand += 0x10000
        out.append(cand)
    return out


def decode_stream(stream: RtpStream, *, payload_type: int | None = None) -> bytes:
    """The stream's audio as PCM16 at 8 kHz, in sequence order, gaps filled with silence.

    Packets are ordered by extended sequence number, duplicates dropped, and each missing
    sequence number becomes silence as long as the packet before it. Packets of other payload
    types (telephone-event) are left out without leaving a gap.

    Args:
        stream: The stream to decode.
        payload_type: ``0`` (PCMU) or ``8`` (PCMA); default: the stream's main type.

    Raises:
        ValueError: The payload type is not G.711.
    """
    pt = stream.payload_type if payload_type is None else payload_type
    if pt not in (PT_PCMU, PT_PCMA):
        raise ValueError(f"cannot decode payload type {pt}: only 0 (PCMU) and 8 (PCMA)")
    decode = ulaw_decode if pt == PT_PCMU else alaw_decode
    audio = [p.rtp for p in stream.packets]
    ext = extended_seqs([p.seq for p in audio])
    by_seq: dict[int, RtpPacket] = {}
    for seq, rtp in zip(ext, audio, strict=True):
        by_seq.setdefault(seq, rtp)
    out: list[bytes] = []
    last_len = 160
    expected: int | None = None
    for seq in sorted(by_seq):
        rtp = by_seq[seq]
        if expected is not None and seq > expected:
            out.append(bytes(2 * last_len * (seq - expected)))
        expected = seq + 1
        if rtp.pt != pt:
            continue
        out.append(decode(rtp.payload))
        last_len = len(rtp.payload) or last_len
    return b"".join(out)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (``q`` in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def inter_arrival_jitter(stream: RtpStream, clock_rate: int = CLOCK_RATE) -> JitterStats:
    """RFC 3550 interarrival jitter and inter-packet arrival statistics of ``stream``.

    For packets i-1 and i in arrival order, with arrival times R and RTP timestamps S (both
    in timestamp units), ``D = (R_i - R_{i-1}) - (S_i - S_{i-1})`` and the estimate moves a
    sixteenth of the way towards ``|D|``: ``J += (|D| - J) / 16`` (§6.4.1, §A.8).
    ``lost`` counts sequence numbers never seen between the first and the last.
    """
    packets = stream.packets
    jitter = 0.0
    max_jitter = 0.0
    deltas: list[float] = []
    for prev, cur in zip(packets, packets[1:], strict=False):
        arrival = (cur.at - prev.at) * clock_rate
        sent = ((cur.rtp.ts - prev.rtp.ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        jitter += (abs(arrival - sent) - jitter) / 16
        max_jitter = max(max_jitter, jitter)
        deltas.append((cur.at - prev.at) * 1000)
    ext = extended_seqs([p.rtp.seq for p in packets])
    lost = (max(ext) - min(ext) + 1 - len(set(ext))) if ext else 0
    ordered = sorted(deltas)
    to_ms = 1000 / clock_rate
    return JitterStats(
        packets=len(packets), lost=lost,
        jitter_ms=jitter * to_ms, max_jitter_ms=max_jitter * to_ms,
        delta_p50_ms=_percentile(ordered, 50), delta_p99_ms=_percentile(ordered, 99),
        delta_max_ms=ordered[-1] if ordered else math.nan,
    )


def frame_dbfs(pcm16: bytes, frame_ms: int = 20, rate: int = CLOCK_RATE) -> list[float]:
    """RMS level of each whole frame in dBFS (full scale 32768; silence is ``-inf``)."""
    samples = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype="<i2").astype(np.float64)
    n = rate * frame_ms // 1000
    frames = samples[: len(samples) // n * n].reshape(-1, n)
    rms = np.sqrt(np.mean(frames * frames, axis=1)) if len(frames) else np.zeros(0)
    with np.errstate(divide="ignore"):
        return [float(v) for v in 20 * np.log10(rms / 32768.0)]


def silent_and_voiced_spans(pcm16: bytes, frame_ms: int = 20, *, rate: int = CLOCK_RATE,
                            threshold_dbfs: float = -45.0) -> list[Span]:
    """Split audio into alternating silent and voiced spans of whole frames.

    A frame is voiced when its RMS level is above ``threshold_dbfs`` (-45 dBFS by default:
    well above G.711 idle noise, well below speech at a normal level).
    """
    spans: list[Span] = []
    for i, level in enumerate(frame_dbfs(pcm16, frame_ms, rate)):
        voiced = level > threshold_dbfs
        start = i * frame_ms
        if spans and spans[-1].voiced == voiced:
            spans[-1] = Span(spans[-1].start_ms, start + frame_ms, voiced)
        else:
            spans.append(Span(start, start + frame_ms, voiced))
    return spans
